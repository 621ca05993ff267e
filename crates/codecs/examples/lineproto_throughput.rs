//! Line protocol parsing throughput on a Telegraf-like body.
//!
//! ```text
//! cargo run --release -p fleetscore-codecs --example lineproto_throughput [-- LINES]
//! ```
//!
//! 1,000 hosts, each writing `cpu` (4 float fields), `mem` (2 integer and
//! 1 float field), `disk` (2 unsigned fields, a string and a tag set) and
//! `net` (a boolean and 2 integer fields) lines with nanosecond timestamps,
//! 1 million lines by default (≈ 3 readings per line). Parses the body a
//! few times on one thread and prints the best lines/s and readings/s; the
//! later target is 1 million readings/s through the whole HTTP path on
//! two cores.

use std::fmt::Write;
use std::time::Instant;

use fleetscore_codecs::{parse_line_protocol, LineProtocolConfig, Precision};

fn main() {
    let lines: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut body = String::with_capacity(lines * 110);
    let t0: i64 = 1_700_000_000_000_000_000;
    for i in 0..lines {
        let host = i / 4 % 1_000;
        let ts = t0 + (i / 4_000) as i64 * 10_000_000_000;
        let x = (i % 997) as f64 / 7.0;
        let _ = match i % 4 {
            0 => writeln!(
                body,
                "cpu,cpu=cpu-total,device=host-{host} usage_idle={:.3},usage_user={:.3},usage_system={:.3},usage_iowait=0.25 {ts}",
                100.0 - x,
                x / 2.0,
                x / 3.0
            ),
            1 => writeln!(
                body,
                "mem,device=host-{host} available={}i,used={}i,used_percent={x:.4} {ts}",
                8_000_000_000u64 + i as u64,
                1_000_000 + i
            ),
            2 => writeln!(
                body,
                "disk,device=host-{host},fstype=ext4,mode=rw,path=/var/lib\\ data free={}u,used={}u,label=\"data, main\" {ts}",
                500_000_000 + i,
                i * 3
            ),
            _ => writeln!(
                body,
                "net,device=host-{host},interface=eth0 up=true,bytes_recv={}i,bytes_sent={}i {ts}",
                i * 1_500,
                i * 700
            ),
        };
    }
    let cfg = LineProtocolConfig {
        prefix_measurement: true,
        ..Default::default()
    };
    let mut best = f64::INFINITY;
    let mut readings = 0;
    for _ in 0..3 {
        let start = Instant::now();
        let batch = parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, 0, &cfg)
            .expect("the generated body is valid");
        best = best.min(start.elapsed().as_secs_f64());
        readings = batch.readings.len();
        assert_eq!(batch.readings.key_count(), 1_000 * 12);
    }
    println!(
        "body: {lines} lines, {:.1} MB, {readings} readings",
        body.len() as f64 / 1e6
    );
    println!(
        "best of 3: {:.3} s, {:.2} M lines/s, {:.2} M readings/s, {:.0} MB/s (one thread)",
        best,
        lines as f64 / best / 1e6,
        readings as f64 / best / 1e6,
        body.len() as f64 / best / 1e6
    );
}
