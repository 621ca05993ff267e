//! Property tests: the streaming aggregator and the batch recompute give the
//! same windows.
//!
//! Timestamps here are small integers (nanoseconds) and windows a few dozen
//! ns long, so that a hundred readings hit plenty of boundaries, ties,
//! hopping overlaps and closings.

use std::collections::HashSet;

use fleetscore_stream::{
    batch_aggregate, Aggregator, AggregatorConfig, Disposition, LatePolicy, Reading, Span,
    WatermarkMode, Window, WindowSpec,
};
use proptest::prelude::*;

const DEVICES: [&str; 3] = ["1", "2", "pump-7"];
const TAGS: [&str; 2] = ["7", "temp"];

#[derive(Debug, Clone)]
struct Raw {
    ts: i64,
    device: usize,
    tag: usize,
    value: f64,
    /// Delivery delay, within the tolerance.
    jitter: i64,
}

impl Raw {
    fn reading(&self) -> Reading<'static> {
        Reading {
            ts: self.ts,
            device: DEVICES[self.device],
            tag: TAGS[self.tag],
            value: self.value,
        }
    }
}

fn spec() -> impl Strategy<Value = WindowSpec> {
    (1i64..=60, 1i64..=8).prop_map(|(size, hops)| {
        // hop = size / hops (at least 1): tumbling when hops == 1, and hops
        // that do not divide size give windows of two different phases
        let hop = (size / hops).max(1);
        WindowSpec::hopping(
            Span::from_nanos(size).unwrap(),
            Span::from_nanos(hop).unwrap(),
        )
    })
}

fn config() -> impl Strategy<Value = AggregatorConfig> {
    (
        prop::collection::vec(spec(), 1..=3),
        0i64..40,
        0i64..40,
        prop::bool::ANY,
        prop::bool::ANY,
        prop_oneof![Just(usize::MAX), 1usize..=4],
    )
        .prop_map(|(mut windows, ooo, lateness, adjust, global, max_series)| {
            let mut unique: Vec<WindowSpec> = Vec::new();
            for w in windows.drain(..) {
                if !unique
                    .iter()
                    .any(|u| u.size == w.size && u.hop_nanos() == w.hop_nanos())
                {
                    unique.push(w);
                }
            }
            AggregatorConfig {
                windows: unique,
                out_of_order: Span::from_nanos(ooo).unwrap(),
                allowed_lateness: Span::from_nanos(lateness).unwrap(),
                late_policy: if adjust {
                    LatePolicy::Adjust
                } else {
                    LatePolicy::Drop
                },
                watermark: if global {
                    WatermarkMode::Global
                } else {
                    WatermarkMode::PerDevice
                },
                // Often small: series are shed, released and started again
                // mid-stream.
                max_series,
                ..AggregatorConfig::default()
            }
        })
}

fn raws(max: usize) -> impl Strategy<Value = Vec<Raw>> {
    prop::collection::vec(
        (
            -200i64..400,
            0..DEVICES.len(),
            0..TAGS.len(),
            prop_oneof![
                // few distinct values: duplicates and ties
                (-3i32..4).prop_map(f64::from),
                -1000.0f64..1000.0,
            ],
            0i64..=1000,
        )
            .prop_map(|(ts, device, tag, value, jitter)| Raw {
                ts,
                device,
                tag,
                value,
                jitter,
            }),
        0..max,
    )
}

/// Streams `arrival`, flushes, and returns the windows of each spec sorted
/// by (device, tag, start), plus each reading's effective timestamp.
fn stream(cfg: &AggregatorConfig, arrival: &[Reading]) -> (Vec<Vec<Window>>, Vec<Option<i64>>) {
    let mut agg = Aggregator::new(cfg.clone()).unwrap();
    let mut effective = Vec::new();
    let mut out: Vec<Vec<Window>> = vec![Vec::new(); cfg.windows.len()];
    let mut seen = HashSet::new();
    let mut take = |agg: &mut Aggregator| {
        for c in agg.drain_closed() {
            let k = cfg.windows.iter().position(|s| *s == c.spec).unwrap();
            assert!(
                seen.insert((
                    k,
                    c.window.device.clone(),
                    c.window.tag.clone(),
                    c.window.start
                )),
                "window emitted twice: {c:?}"
            );
            out[k].push(c.window);
        }
    };
    for r in arrival {
        effective.push(match agg.push(*r) {
            Disposition::Accepted => Some(r.ts),
            Disposition::Adjusted { ts } => Some(ts),
            Disposition::Dropped(_) => None,
        });
        take(&mut agg);
    }
    agg.flush_all();
    take(&mut agg);
    assert_eq!(agg.open_panes(), 0);
    let c = agg.counters();
    assert_eq!(
        c.received,
        c.accepted + c.adjusted + c.too_late + c.non_finite + c.out_of_range + c.shed
    );
    // Everything closed: every series was released.
    assert_eq!(agg.series_count(), 0);
    assert_eq!(c.windows_emitted, out.iter().map(|w| w.len() as u64).sum());
    for w in &mut out {
        w.sort_by(|a, b| (&a.device, &a.tag, a.start).cmp(&(&b.device, &b.tag, b.start)));
    }
    (out, effective)
}

fn batch(cfg: &AggregatorConfig, readings: &[Reading]) -> Vec<Vec<Window>> {
    cfg.windows
        .iter()
        .map(|spec| batch_aggregate(readings.iter().copied(), *spec, i64::MIN, i64::MAX).unwrap())
        .collect()
}

/// The windows of `spec` the simplest way, sharing nothing with the crate:
/// every window start a reading falls into, then each window's features
/// from its list of readings. Sorted by (device, tag, start).
fn naive(spec: &WindowSpec, readings: &[Reading]) -> Vec<Window> {
    use std::collections::BTreeMap;
    let (size, hop) = (spec.size.as_nanos(), spec.hop_nanos());
    let mut groups: BTreeMap<(String, String, i64), Vec<(i64, f64)>> = BTreeMap::new();
    for r in readings {
        let mut s = r.ts.div_euclid(hop) * hop;
        while s > r.ts - size {
            groups
                .entry((r.device.to_string(), r.tag.to_string(), s))
                .or_default()
                .push((r.ts, r.value));
            s -= hop;
        }
    }
    groups
        .into_iter()
        .map(|((device, tag, start), rows)| {
            let n = rows.len();
            let values: Vec<f64> = rows.iter().map(|r| r.1).collect();
            let sum: f64 = values.iter().sum();
            let mean = sum / n as f64;
            let var =
                values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n as f64 - 1.0);
            let min_ts = rows.iter().map(|r| r.0).min().unwrap();
            let max_ts = rows.iter().map(|r| r.0).max().unwrap();
            Window {
                device,
                tag,
                start,
                end: start + size,
                count: n as u64,
                sum,
                mean,
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                std: (n > 1).then(|| var.sqrt()),
                first: rows.iter().find(|r| r.0 == min_ts).unwrap().1,
                last: rows.iter().rev().find(|r| r.0 == max_ts).unwrap().1,
            }
        })
        .collect()
}

/// Exact on bounds, counts, min, max, first, last; 1e-9 relative on the
/// rest (the naive sums and variance round differently). The std tolerance
/// is relative to the values' spread, as cancellation makes a tiny std
/// only absolutely accurate.
fn assert_close(got: &[Window], want: &[Window]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        prop_assert_eq!(
            (&g.device, &g.tag, g.start, g.end, g.count),
            (&w.device, &w.tag, w.start, w.end, w.count)
        );
        prop_assert_eq!(
            (g.min, g.max, g.first, g.last),
            (w.min, w.max, w.first, w.last)
        );
        let scale = g.max.abs().max(g.min.abs()).max(1.0);
        prop_assert!(
            (g.sum - w.sum).abs() <= 1e-9 * scale * g.count as f64
                && (g.mean - w.mean).abs() <= 1e-9 * scale,
            "{:?} vs {:?}",
            g,
            w
        );
        match (g.std, w.std) {
            (None, None) => {}
            (Some(x), Some(y)) => prop_assert!((x - y).abs() <= 1e-9 * scale, "{:?} vs {:?}", g, w),
            _ => prop_assert!(false, "std presence differs: {:?} vs {:?}", g, w),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Readings that arrive no later than the tolerances allow (each one
    /// delayed by at most out-of-order + lateness relative to any other)
    /// are all accepted, whatever the order, and the streamed windows equal
    /// the batch recompute over the same readings in arrival order, bit for
    /// bit; over the readings sorted by time, and a naive recomputation,
    /// within 1e-9 for sum, mean and std and exactly for the rest.
    #[test]
    fn within_tolerance_streaming_equals_batch(cfg in config(), mut raws in raws(120)) {
        // No shedding here: every reading must be accepted.
        let cfg = AggregatorConfig { max_series: usize::MAX, ..cfg };
        let tol = cfg.tolerance_nanos();
        for r in &mut raws {
            r.jitter %= tol + 1;
        }
        // Delivery order: by ts + delay. A reading then trails any reading
        // delivered before it by at most `tol`, so none is late.
        let mut order: Vec<usize> = (0..raws.len()).collect();
        order.sort_by_key(|&i| (raws[i].ts + raws[i].jitter, i));
        let arrival: Vec<Reading> = order.iter().map(|&i| raws[i].reading()).collect();

        let (streamed, effective) = stream(&cfg, &arrival);
        prop_assert!(effective.iter().zip(&arrival).all(|(e, r)| *e == Some(r.ts)));
        prop_assert_eq!(&streamed, &batch(&cfg, &arrival));
        for (spec, windows) in cfg.windows.iter().zip(&streamed) {
            assert_close(windows, &naive(spec, &arrival))?;
        }

        let mut by_time = arrival.clone();
        by_time.sort_by_key(|r| r.ts); // stable: ties keep arrival order
        for (s, b) in streamed.iter().zip(batch(&cfg, &by_time)) {
            assert_close(s, &b)?;
        }
    }

    /// In any arrival order, late readings included, the streamed windows
    /// equal the batch recompute over the readings the stream kept, at the
    /// timestamps it kept them at (adjusted ones moved), in arrival order,
    /// and (within 1e-9) the naive recomputation; for tumbling specs the
    /// counts add up to the readings kept.
    #[test]
    fn any_order_streaming_equals_batch_of_kept_readings(
        cfg in config(),
        raws in raws(120),
        seed in any::<u64>(),
    ) {
        let mut arrival: Vec<Reading> = raws.iter().map(Raw::reading).collect();
        shuffle(&mut arrival, seed);
        let (streamed, effective) = stream(&cfg, &arrival);
        let kept: Vec<Reading> = arrival
            .iter()
            .zip(&effective)
            .filter_map(|(r, e)| e.map(|ts| Reading { ts, ..*r }))
            .collect();
        prop_assert_eq!(&streamed, &batch(&cfg, &kept));
        for (spec, windows) in cfg.windows.iter().zip(&streamed) {
            assert_close(windows, &naive(spec, &kept))?;
            if !spec.is_hopping() {
                prop_assert_eq!(windows.iter().map(|w| w.count).sum::<u64>(), kept.len() as u64);
            }
        }
    }

    /// Stopping after any reading and rebuilding a fresh aggregator from the
    /// log so far loses and repeats nothing.
    #[test]
    fn restart_anywhere_gives_the_same_windows(
        cfg in config(),
        raws in raws(60),
        seed in any::<u64>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut arrival: Vec<Reading> = raws.iter().map(Raw::reading).collect();
        shuffle(&mut arrival, seed);
        let k = cut.index(arrival.len() + 1);
        let (straight, _) = stream(&cfg, &arrival);

        let mut first = Aggregator::new(cfg.clone()).unwrap();
        let mut out: Vec<Vec<Window>> = vec![Vec::new(); cfg.windows.len()];
        let mut sink = |agg: &mut Aggregator| {
            for c in agg.drain_closed() {
                let k = cfg.windows.iter().position(|s| *s == c.spec).unwrap();
                out[k].push(c.window);
            }
        };
        for r in &arrival[..k] {
            first.push(*r);
            sink(&mut first);
        }
        drop(first);
        let mut second = Aggregator::rebuild(cfg.clone(), arrival[..k].iter().copied()).unwrap();
        for r in &arrival[k..] {
            second.push(*r);
            sink(&mut second);
        }
        second.flush_all();
        sink(&mut second);
        for w in &mut out {
            w.sort_by(|a, b| (&a.device, &a.tag, a.start).cmp(&(&b.device, &b.tag, b.start)));
        }
        prop_assert_eq!(out, straight);
    }
}

/// A deterministic Fisher-Yates shuffle (splitmix64), so a failing case is
/// reproduced from its seed.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        v.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

/// Every window emitted, in emission order, with its spec index.
fn emitted(agg: &mut Aggregator, cfg: &AggregatorConfig, out: &mut Vec<(usize, Window)>) {
    for c in agg.drain_closed() {
        let k = cfg.windows.iter().position(|s| *s == c.spec).unwrap();
        out.push((k, c.window));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A service that checkpoints (snapshot, drop the aggregator, restore)
    /// every `every` readings emits exactly the windows, in exactly the
    /// order, with exactly the counters, of one that never stopped: any
    /// arrival order, late readings included.
    #[test]
    fn snapshot_and_restore_continue_exactly(
        cfg in config(),
        raws in raws(120),
        every in 1usize..40,
    ) {
        let arrival: Vec<Reading> = raws.iter().map(Raw::reading).collect();
        let mut straight = Aggregator::new(cfg.clone()).unwrap();
        let mut want = Vec::new();
        for r in &arrival {
            straight.push(*r);
            emitted(&mut straight, &cfg, &mut want);
        }

        let mut agg = Aggregator::new(cfg.clone()).unwrap();
        let mut got = Vec::new();
        for (i, r) in arrival.iter().enumerate() {
            agg.push(*r);
            emitted(&mut agg, &cfg, &mut got);
            if i % every == 0 {
                let bytes = agg.snapshot();
                agg = Aggregator::restore(cfg.clone(), &bytes).unwrap();
                prop_assert_eq!(agg.snapshot(), bytes);
            }
        }
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(agg.counters(), straight.counters());
        prop_assert_eq!(agg.open_panes(), straight.open_panes());
        straight.flush_all();
        agg.flush_all();
        emitted(&mut straight, &cfg, &mut want);
        emitted(&mut agg, &cfg, &mut got);
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_damaged_or_foreign_snapshot_is_refused_with_the_reason() {
    let cfg = AggregatorConfig::default();
    let mut agg = Aggregator::new(cfg.clone()).unwrap();
    for i in 0..50 {
        agg.push(Reading {
            ts: i * 7_000_000_000,
            device: DEVICES[i as usize % 3],
            tag: TAGS[i as usize % 2],
            value: i as f64,
        });
    }
    agg.drain_closed();
    let bytes = agg.snapshot();
    for cut in [0, 7, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let e = Aggregator::restore(cfg.clone(), &bytes[..cut]).unwrap_err();
        assert!(
            e.to_string().contains("unreadable aggregator snapshot"),
            "{e}"
        );
    }
    for i in (0..bytes.len()).step_by(13) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x20;
        assert!(
            Aggregator::restore(cfg.clone(), &bad).is_err(),
            "flip at {i}"
        );
    }
    let other = AggregatorConfig {
        windows: vec![WindowSpec::tumbling(Span::from_secs(300))],
        ..cfg
    };
    let e = Aggregator::restore(other, &bytes).unwrap_err();
    assert!(
        e.to_string().contains("windows=1m") && e.to_string().contains("windows=5m"),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Series are released as soon as their windows have closed (often,
    /// here: tiny windows, and `flush_all` at random points), yet every
    /// reading is judged exactly as by a clock that is never released:
    /// a naive model that keeps every device's newest time for ever
    /// predicts each reading's disposition, and no window comes out twice.
    #[test]
    fn released_series_judge_readings_as_if_kept(
        cfg in config(),
        raws in raws(120),
        seed in any::<u64>(),
        flushes in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let cfg = AggregatorConfig { max_series: usize::MAX, ..cfg };
        let mut arrival: Vec<Reading> = raws.iter().map(Raw::reading).collect();
        shuffle(&mut arrival, seed);
        let flush_at: HashSet<usize> =
            flushes.iter().map(|i| i.index(arrival.len() + 1)).collect();
        let tol = cfg.tolerance_nanos();
        let global = cfg.watermark == WatermarkMode::Global;
        let mut clocks: std::collections::HashMap<&str, i64> = Default::default();
        let mut open: std::collections::HashMap<&str, i64> = Default::default();
        let mut agg = Aggregator::new(cfg.clone()).unwrap();
        let mut seen = HashSet::new();
        for (i, r) in arrival.iter().enumerate() {
            if flush_at.contains(&i) {
                agg.flush_all();
                // The model: every clock with open windows moves past them.
                for (dev, last_end) in open.drain() {
                    let c = clocks.entry(dev).or_insert(i64::MIN);
                    *c = (*c).max(last_end.saturating_add(tol));
                }
            }
            let key = if global { "" } else { r.device };
            let max_ts = clocks.get(key).copied().unwrap_or(i64::MIN);
            let horizon = max_ts.saturating_sub(tol);
            let want = if r.ts >= horizon {
                Disposition::Accepted
            } else if cfg.late_policy == LatePolicy::Adjust {
                Disposition::Adjusted { ts: horizon }
            } else {
                Disposition::Dropped(fleetscore_stream::DropReason::TooLate)
            };
            let got = agg.push(*r);
            prop_assert_eq!(got, want, "reading {} {:?}", i, r);
            let eff = match got {
                Disposition::Accepted => r.ts,
                Disposition::Adjusted { ts } => ts,
                Disposition::Dropped(_) => continue,
            };
            if eff > max_ts {
                clocks.insert(key, eff);
            }
            let last_end = cfg
                .windows
                .iter()
                .map(|w| {
                    let hop = w.hop_nanos();
                    eff.div_euclid(hop) * hop + w.size.as_nanos()
                })
                .max()
                .unwrap();
            let e = open.entry(key).or_insert(i64::MIN);
            *e = (*e).max(last_end);
            for c in agg.drain_closed() {
                prop_assert!(
                    seen.insert((c.spec, c.window.device.clone(), c.window.tag.clone(), c.window.start)),
                    "emitted twice: {:?}", c
                );
            }
        }
        agg.flush_all();
        for c in agg.drain_closed() {
            prop_assert!(
                seen.insert((c.spec, c.window.device.clone(), c.window.tag.clone(), c.window.start)),
                "emitted twice: {:?}", c
            );
        }
        prop_assert_eq!(agg.series_count(), 0);
    }
}
