//! The crash test: a child process appends from several threads and prints
//! each acknowledged sequence number; the parent SIGKILLs it mid-stream,
//! reopens the log and checks that every acknowledged batch is there exactly
//! once.
//!
//! Odd-numbered batches carry an idempotency key (format version 2 records
//! with keys): after each kill, replay shows each key with its batch, and
//! resending an acknowledged keyed batch is answered as a duplicate with
//! its first sequence number.
//!
//! The child is this test binary re-invoked with `--exact crash_child` and
//! the log directory in `FLEETSCORE_INGEST_CRASH_CHILD`; without that
//! variable `crash_child` does nothing.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

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

const CHILD_DIR: &str = "FLEETSCORE_INGEST_CRASH_CHILD";
const CHILD_ROUND: &str = "FLEETSCORE_INGEST_CRASH_ROUND";
const THREADS: usize = 4;

fn config() -> LogConfig {
    // Small segments, so kills also land around segment rolls.
    LogConfig {
        max_segment_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

/// The idempotency key of batch `i` of thread `t` in round `round`, if it
/// has one.
fn batch_key(round: u32, t: usize, i: u64) -> Option<String> {
    (i % 2 == 1).then(|| format!("r{round}-t{t}-i{i}"))
}

/// The readings of batch `i` of thread `t` in round `round`: the device
/// names the writer, so the parent can tell which batch a record is.
fn batch(round: u32, t: usize, i: u64) -> Readings {
    let n = 1 + (i % 7) as usize * 20;
    (0..n)
        .map(|k| {
            owned(
                i as i64,
                format!("r{round}-t{t}"),
                format!("k{k}"),
                i as f64,
            )
        })
        .collect()
}

#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let round: u32 = std::env::var(CHILD_ROUND)
        .ok()
        .and_then(|r| r.parse().ok())
        .expect("round");
    let log = Log::open(&dir, config()).expect("child opens the log");
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let log = &log;
            s.spawn(move || {
                for i in 0.. {
                    let appended = log
                        .append_keyed(batch_key(round, t, i).as_deref(), &batch(round, t, i))
                        .expect("append");
                    assert!(!appended.duplicate, "a fresh key");
                    let seq = appended.seq;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {seq} {t} {i}").expect("stdout");
                    out.flush().expect("flush");
                }
            });
        }
    });
}

/// Kills the child if the parent panics before it does, so a failed test
/// does not leave a process appending forever.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    // (round, t, i) -> seq, over all rounds: each round appends to the log
    // the previous rounds left behind.
    let mut acked: HashMap<(u32, usize, u64), u64> = HashMap::new();
    for (round, kill_after) in [(0u32, 40usize), (1, 400), (2, 1500), (3, 7)] {
        let mut child = KillOnDrop(
            Command::new(&exe)
                .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
                .env(CHILD_DIR, dir.path())
                .env(CHILD_ROUND, round.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn child"),
        );
        let stdout = child.0.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut record = |line: &str| {
            let mut f = line.split(' ');
            if f.next() != Some("ack") {
                return false;
            }
            let mut num = || {
                f.next()
                    .and_then(|x| x.parse::<u64>().ok())
                    .expect("ack line")
            };
            let (seq, t, i) = (num(), num() as usize, num());
            assert!(
                acked.insert((round, t, i), seq).is_none(),
                "acked twice: {line}"
            );
            true
        };
        let mut n = 0;
        while n < kill_after {
            let line = lines
                .next()
                .expect("child exited early")
                .expect("read line");
            if record(&line) {
                n += 1;
            }
        }
        child.0.kill().expect("SIGKILL");
        // Acknowledgements printed before the kill count too.
        for line in lines {
            record(&line.expect("read line"));
        }
        child.0.wait().expect("reap child");

        let log = Log::open(dir.path(), config()).expect("reopen after kill");
        let mut found: HashMap<(u32, usize, u64), u64> = HashMap::new();
        for (next, b) in (0u64..).zip(log.replay(0)) {
            let b = b.expect("replay");
            assert_eq!(b.seq, next, "sequence numbers are consecutive");
            let first = b.readings.iter().next().expect("non-empty batch");
            let (r, t) = first
                .device
                .strip_prefix('r')
                .and_then(|d| d.split_once("-t"))
                .expect("device name");
            let key = (
                r.parse().expect("round"),
                t.parse().expect("thread"),
                first.ts as u64,
            );
            assert_eq!(
                b.readings,
                batch(key.0, key.1, key.2),
                "batch {} intact",
                b.seq
            );
            assert_eq!(
                b.key,
                batch_key(key.0, key.1, key.2),
                "batch {} has its key",
                b.seq
            );
            assert!(
                found.insert(key, b.seq).is_none(),
                "batch {key:?} replayed twice"
            );
        }
        for (key, seq) in &acked {
            assert_eq!(found.get(key), Some(seq), "acknowledged batch {key:?} lost");
        }
        // A client resending acknowledged keyed batches after the crash
        // gets their numbers back, and nothing is stored again.
        let before = log.stats().batches;
        let mut resent = 0;
        for (&(r, t, i), &seq) in acked.iter().filter(|(k, _)| k.2 % 2 == 1).take(50) {
            let again = log
                .append_keyed(batch_key(r, t, i).as_deref(), &batch(r, t, i))
                .expect("resend");
            assert_eq!(
                (again.seq, again.duplicate),
                (seq, true),
                "resent {r} {t} {i}"
            );
            resent += 1;
        }
        assert!(resent > 0);
        assert_eq!(log.stats().batches, before);
        let rounds: HashSet<_> = found.keys().map(|k| k.0).collect();
        assert!(rounds.contains(&round));
        eprintln!(
            "round {round}: {} acked in total, {} replayed, recovery {:?}",
            acked.len(),
            found.len(),
            log.recovery()
        );
    }
}
