//! Streaming throughput on synthetic readings.
//!
//! ```text
//! cargo run --release -p fleetscore-stream --example throughput [-- READINGS]
//! ```
//!
//! 1,000 devices × 10 tags, one reading per pair per second, delivered
//! round-robin with up to 3 s of disorder (within the default 5 s
//! tolerance), 10 million readings by default. Runs three configurations
//! and prints readings per second for each: pushing by name (one hash
//! lookup per reading), by pre-interned id, and by name with a second,
//! hopping window spec. The target is 5 million readings/s per core.

use std::time::Instant;

use fleetscore_stream::{Aggregator, AggregatorConfig, Reading, Span, WindowSpec};

const DEVICES: usize = 1_000;
const TAGS: usize = 10;
const SEC: i64 = 1_000_000_000;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let names: Vec<(String, String)> = (0..DEVICES * TAGS)
        .map(|i| (format!("device-{}", i / TAGS), format!("tag-{}", i % TAGS)))
        .collect();
    let base = 1_700_000_000 * SEC;
    let pairs = names.len();
    let mut key = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut value = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % pairs;
        let round = (i / pairs) as i64;
        // disorder: 0 to 3 s behind, by a fixed pseudo-random pattern
        let lag = ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 62) as i64 * SEC;
        key.push(k as u32);
        ts.push(base + round * SEC - lag);
        value.push((i % 997) as f64 * 0.5);
    }

    let tumbling = AggregatorConfig::default();
    let two_specs = AggregatorConfig {
        windows: vec![
            WindowSpec::default(),
            WindowSpec::hopping(Span::from_secs(300), Span::from_secs(60)),
        ],
        ..AggregatorConfig::default()
    };

    let mut agg = Aggregator::new(tumbling.clone()).expect("valid config");
    let rate_names = timed("1m tumbling, push by name", n, &mut agg, |agg| {
        for i in 0..n {
            let (d, t) = &names[key[i] as usize];
            agg.push(Reading {
                ts: ts[i],
                device: d,
                tag: t,
                value: value[i],
            });
            drain_now_and_then(agg, i);
        }
    });

    let mut agg = Aggregator::new(tumbling).expect("valid config");
    let ids: Vec<_> = names
        .iter()
        .map(|(d, t)| agg.series(d, t).expect("within max_series"))
        .collect();
    timed("1m tumbling, push by id", n, &mut agg, |agg| {
        for i in 0..n {
            agg.push_series(ids[key[i] as usize], ts[i], value[i]);
            drain_now_and_then(agg, i);
        }
    });

    let mut agg = Aggregator::new(two_specs).expect("valid config");
    timed(
        "1m tumbling + 5m/1m hopping, push by name",
        n,
        &mut agg,
        |agg| {
            for i in 0..n {
                let (d, t) = &names[key[i] as usize];
                agg.push(Reading {
                    ts: ts[i],
                    device: d,
                    tag: t,
                    value: value[i],
                });
                drain_now_and_then(agg, i);
            }
        },
    );
    println!("push by name / 5M target: {:.2}", rate_names / 5_000_000.0);
}

/// Takes closed windows out every 4096 readings, as a sink would.
#[inline]
fn drain_now_and_then(agg: &mut Aggregator, i: usize) {
    if i.is_multiple_of(4096) {
        std::hint::black_box(agg.drain_closed().count());
    }
}

fn timed(label: &str, n: usize, agg: &mut Aggregator, f: impl FnOnce(&mut Aggregator)) -> f64 {
    let t0 = Instant::now();
    f(agg);
    agg.flush_all();
    let emitted = agg.drain_closed().count();
    let secs = t0.elapsed().as_secs_f64();
    let c = agg.counters();
    assert_eq!(
        c.accepted, n as u64,
        "synthetic readings are all in tolerance"
    );
    let rate = n as f64 / secs;
    println!(
        "{label}: {n} readings in {secs:.3} s = {:.2} M readings/s ({} windows, {emitted} in the last drain)",
        rate / 1e6,
        c.windows_emitted
    );
    rate
}
