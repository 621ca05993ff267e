//! Line protocol parsing of the ingest benchmark's requests, one at a time.
//!
//! ```text
//! cargo run --release -p fleetscore-codecs --example lineproto_fleet [-- BATCHES]
//! ```
//!
//! The bodies `bench/ingest.py` posts (crates/fleetscore/examples/ingest_load.rs):
//! 10,000 devices, lines of 5 float fields with nanosecond timestamps, 5,000
//! lines (25,000 readings, each (device, tag) pair once) per request. Parses
//! BATCHES different bodies (default 40) a few times each on one thread and
//! prints the best time per request, which is robust to other load on the
//! machine, and the readings/s that makes.

use std::fmt::Write;
use std::time::Instant;

use fleetscore_codecs::{parse_line_protocol, LineProtocolConfig, Precision};

const LINES: usize = 5_000;
const DEVICES: usize = 10_000;
const FIELDS: [&str; 5] = ["temp", "hum", "pres", "vib", "volt"];

fn body(k: usize) -> String {
    let mut out = String::with_capacity(LINES * 100);
    for i in k * LINES..(k + 1) * LINES {
        let ts = 1_700_000_000_000_000_000i64 + (i / DEVICES) as i64 * 1_000_000_000;
        let _ = write!(out, "sensors,device=d{}", i % DEVICES);
        for (f, name) in FIELDS.iter().enumerate() {
            let x = (i * 7 + f * 13) % 500;
            let _ = write!(
                out,
                "{}{name}={}.{:02}",
                if f == 0 { ' ' } else { ',' },
                20 + f * 100 + x / 100,
                x % 100
            );
        }
        let _ = writeln!(out, " {ts}");
    }
    out
}

fn main() {
    let batches: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(40);
    let bodies: Vec<String> = (0..batches).map(body).collect();
    let cfg = LineProtocolConfig::default();
    let mut best = vec![f64::INFINITY; batches];
    let mut readings = 0;
    for _ in 0..5 {
        for (b, body) in bodies.iter().enumerate() {
            let start = Instant::now();
            let batch = parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, 0, &cfg)
                .expect("the generated body is valid");
            best[b] = best[b].min(start.elapsed().as_secs_f64());
            readings = batch.readings.len();
            assert_eq!(batch.readings.key_count(), LINES * FIELDS.len());
        }
    }
    best.sort_by(f64::total_cmp);
    let median = best[batches / 2];
    println!(
        "{batches} requests of {LINES} lines, {readings} readings, {:.0} kB each; \
         best-of-5 per request, median over requests: {:.3} ms, {:.0} ns/reading, \
         {:.2} M readings/s (one thread)",
        bodies[0].len() as f64 / 1e3,
        median * 1e3,
        median * 1e9 / readings as f64,
        readings as f64 / median / 1e6
    );
}
