//! Durable ingest throughput: several threads append batches of readings
//! to a fresh log and wait for each acknowledgement (group commit).
//!
//! ```text
//! cargo run --release -p fleetscore-ingest --example log_throughput -- \
//!     [threads=8] [batch=5000] [seconds=5] [dir=./target/log_throughput]
//! ```
//!
//! The directory should be on the disk the service would use: a `tmpfs`
//! makes fsync free and the figure meaningless.

use std::time::{Duration, Instant};

use fleetscore_core::Readings;
use fleetscore_ingest::{Log, LogConfig};

/// A reading as these tests spell it, for collecting into [`Readings`].
fn owned(
    ts: i64,
    device: impl Into<String>,
    tag: impl Into<String>,
    value: f64,
) -> (i64, String, String, f64) {
    (ts, device.into(), tag.into(), value)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(args
            .get(i)
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let threads = arg(0, 8)? as usize;
    let batch_len = arg(1, 5000)? as usize;
    let seconds = arg(2, 5)?;
    let dir = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "target/log_throughput".into());
    let _ = std::fs::remove_dir_all(&dir);
    let log = Log::open(&dir, LogConfig::default())?;
    // 100 devices x 4 tags, a realistic spread for one HTTP body.
    let batches: Vec<Readings> = (0..threads)
        .map(|t| {
            (0..batch_len)
                .map(|i| {
                    owned(
                        1_700_000_000_000_000_000 + i as i64,
                        format!("device-{}", (t * 31 + i) % 100),
                        ["temp", "hum", "pressure", "vibration"][i % 4],
                        i as f64 * 0.5,
                    )
                })
                .collect()
        })
        .collect();
    let run_for = Duration::from_secs(seconds);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<(), fleetscore_ingest::LogError> {
        let handles: Vec<_> = batches
            .iter()
            .map(|batch| {
                let log = &log;
                s.spawn(move || {
                    while start.elapsed() < run_for {
                        log.append(batch)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("appender thread panicked")?;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let st = log.stats();
    println!(
        "threads={threads} batch={batch_len} secs={secs:.2} batches={} readings={} bytes={} commits={} fsyncs={} segments={}",
        st.batches, st.readings, st.bytes, st.commits, st.fsyncs, st.segments_created
    );
    println!(
        "durable readings/s: {:.0}  MB/s: {:.1}  fsyncs/s: {:.0}  batches/commit: {:.1}",
        st.readings as f64 / secs,
        st.bytes as f64 / secs / 1e6,
        st.fsyncs as f64 / secs,
        st.batches as f64 / st.commits.max(1) as f64
    );
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
