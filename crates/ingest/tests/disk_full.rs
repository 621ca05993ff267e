//! Regression test for issue 16, defect 5: after the disk filled, the log
//! refused every write until a restart and said nothing about it.
//!
//! The test mounts a small tmpfs of its own (it needs root or
//! `CAP_SYS_ADMIN`; elsewhere it prints why it is skipped and passes), fills
//! it from several appending threads until the log cannot write, frees the
//! space and checks that the log recovers by itself, without losing,
//! duplicating or renumbering an acknowledged batch.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fleetscore_core::Readings;
use fleetscore_ingest::{Log, LogConfig, LogError};

/// A reading as these tests spell it, for collecting into [`Readings`].
fn owned(
    ts: i64,
    device: impl Into<String>,
    tag: impl Into<String>,
    value: f64,
) -> (i64, String, String, f64) {
    (ts, device.into(), tag.into(), value)
}

/// A tmpfs mounted for the test, unmounted (lazily, so an open file cannot
/// stop it) when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("fleetscore-ingest-test")
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: dir.path().to_owned(),
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Batch `i` of thread `t`: about 1.5 KB on disk, named by its device so
/// replay can tell which batch a record is.
fn batch(t: usize, i: u64) -> Readings {
    (0..60)
        .map(|k| owned(i as i64, format!("t{t}"), format!("k{}", k % 5), k as f64))
        .collect()
}

/// Thread 0 gives its batches idempotency keys.
fn key(t: usize, i: u64) -> Option<String> {
    (t == 0).then(|| format!("t{t}-{i}"))
}

/// Writes `path` in 4 KiB chunks until the disk is full (or `limit` bytes).
fn fill(path: &Path, limit: usize) -> usize {
    let mut f = fs::File::create(path).expect("create filler");
    let chunk = [0xA5u8; 4096];
    let mut written = 0;
    while written < limit {
        match f.write(&chunk) {
            Ok(n) => written += n,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filler: {e}");
                break;
            }
        }
    }
    written
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_disk_full(e: &LogError) {
    assert!(
        matches!(e, LogError::Unavailable { disk_full: true, reason, .. }
            if reason.contains("No space left on device")),
        "expected a disk-full Unavailable, got {e:?}"
    );
    assert!(e.is_disk_full());
    assert_eq!(e.retry_after(), Some(Duration::from_millis(100)));
    assert!(e.to_string().contains("retry later"), "{e}");
}

#[test]
fn log_recovers_after_the_disk_fills() {
    let tmpfs = match Tmpfs::mount("1m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "SKIPPED log_recovers_after_the_disk_fills: cannot mount a tmpfs ({why}); \
                 run the test as root (or with CAP_SYS_ADMIN) to check disk-full recovery"
            );
            return;
        }
    };
    // Where the disk fills moves by a page with each size: over one
    // segment's worth of sizes it fills once while a roll creates the next
    // segment, the rest of the time while records are written.
    let mut roll_failures = 0;
    for filler_kib in (540..588).step_by(4) {
        let reason = fill_and_recover(&tmpfs.path, filler_kib << 10);
        if reason.contains("write header") {
            roll_failures += 1;
        }
    }
    assert!(
        roll_failures > 0,
        "no run filled the disk during a segment roll; adjust the sizes"
    );
    drop(tmpfs);
}

/// Fills the tmpfs at `root` with `filler_bytes` and then from appending
/// threads, frees it, checks the recovery and the log's contents, and
/// returns the failure that made the log unwritable.
fn fill_and_recover(root: &Path, filler_bytes: usize) -> String {
    let dir = root.join("log");
    let config = LogConfig {
        // Small segments, so the disk also fills during segment rolls.
        max_segment_bytes: 48 << 10,
        recovery_interval_ms: 100,
        ..LogConfig::default()
    };
    let filler = root.join("filler");
    fill(&filler, filler_bytes);

    const THREADS: usize = 4;
    // seq -> (thread, batch index), for every acknowledged batch.
    let acked: Mutex<BTreeMap<u64, (usize, u64)>> = Mutex::new(BTreeMap::new());
    let mut next_index = [0u64; THREADS];
    let reason;
    {
        let log = Log::open(&dir, config.clone()).expect("open");
        let first_errors: Vec<LogError> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (log, acked) = (&log, &acked);
                    s.spawn(move || {
                        for i in 0.. {
                            match log.append_keyed(key(t, i).as_deref(), &batch(t, i)) {
                                Ok(a) => {
                                    assert!(!a.duplicate);
                                    let seq = a.seq;
                                    let prev = acked.lock().unwrap().insert(seq, (t, i));
                                    assert!(prev.is_none(), "seq {seq} acknowledged twice");
                                }
                                Err(e) => return (i, e),
                            }
                        }
                        unreachable!()
                    })
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(t, h)| {
                    let (i, e) = h.join().expect("appender");
                    next_index[t] = i + 1;
                    e
                })
                .collect()
        });
        for e in &first_errors {
            assert_disk_full(e);
        }
        reason = first_errors[0].to_string();
        let before = acked.lock().unwrap().len();
        assert!(before > 100, "only {before} batches fit");

        // Take the rest of the space (what a recovery's truncation freed
        // too), so the log stays unwritable until the operator acts.
        fill(&root.join("filler-2"), usize::MAX);
        let e = log.append(&batch(0, 999_999)).expect_err("disk is full");
        assert_disk_full(&e);
        let h = log.health();
        assert!(!h.writable && h.disk_full, "{h:?}");
        assert!(
            h.reason
                .as_deref()
                .is_some_and(|r| r.contains("No space left")),
            "{h:?}"
        );
        assert!(h.since.is_some());
        // A retry of an acknowledged keyed batch needs no write: answered.
        let (&seq, &(_, i)) = acked
            .lock()
            .unwrap()
            .iter()
            .rfind(|(_, (t, _))| *t == 0)
            .expect("thread 0 acked");
        let again = log
            .append_keyed(key(0, i).as_deref(), &batch(0, i))
            .expect("a duplicate is answered while the disk is full");
        assert_eq!((again.seq, again.duplicate), (seq, true));

        // Refused at once, not after a timeout, and with the reason.
        let start = Instant::now();
        for i in 0..50 {
            assert_disk_full(&log.append(&batch(0, 1_000_000 + i)).expect_err("full"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "50 refusals took {:?}",
            start.elapsed()
        );
        // The writer keeps trying by itself, and keeps failing.
        wait_until("recoveries fail", Duration::from_secs(5), || {
            log.health().failed_recoveries >= 2
        });
        assert!(!log.health().writable);
        assert!(log.roll().expect_err("roll while full").is_disk_full());
        assert!(log.stats().write_failures >= 1, "{:?}", log.stats());

        // The operator frees space: the log recovers without any append.
        fs::remove_file(&filler).expect("remove filler");
        fs::remove_file(root.join("filler-2")).expect("remove filler");
        wait_until("the log is writable again", Duration::from_secs(5), || {
            log.health().writable
        });
        let h = log.try_recover();
        assert!(
            h.writable && h.reason.is_none() && h.since.is_none(),
            "{h:?}"
        );
        assert!(log.stats().recoveries >= 1, "{:?}", log.stats());

        // Numbering goes on right after the last acknowledged batch: every
        // durable batch was acknowledged, the rest was cut.
        let acked_seqs: Vec<u64> = acked.lock().unwrap().keys().copied().collect();
        assert_eq!(
            acked_seqs,
            (0..acked_seqs.len() as u64).collect::<Vec<_>>(),
            "acknowledged numbers are consecutive"
        );
        std::thread::scope(|s| {
            for (t, first) in next_index.iter().enumerate() {
                let (log, acked) = (&log, &acked);
                s.spawn(move || {
                    for i in *first..*first + 20 {
                        let seq = log
                            .append_keyed(key(t, i).as_deref(), &batch(t, i))
                            .expect("append after recovery")
                            .seq;
                        assert!(acked.lock().unwrap().insert(seq, (t, i)).is_none());
                    }
                });
            }
        });
        let n = acked.lock().unwrap().len() as u64;
        assert_eq!(
            acked.lock().unwrap().keys().copied().collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>()
        );
        // Compaction works again: roll, and remove a closed segment.
        log.roll().expect("roll after recovery");
        let closed = log.closed_segments();
        assert!(closed.len() >= 3, "{closed:?}");
        log.remove_segment(closed[0].first_seq)
            .expect("remove after recovery");
        acked
            .lock()
            .unwrap()
            .retain(|&seq, _| seq >= closed[0].end_seq);
        eprintln!(
            "filler {filler_bytes}: {before} batches acknowledged before the disk filled, \
             then: {reason}; {:?}",
            log.stats()
        );
    }

    // Every acknowledged batch exactly once, in order, with its number; and
    // nothing else (what was never acknowledged was cut by the recovery).
    let log = Log::open(&dir, config).expect("reopen");
    assert_eq!(log.recovery().truncated_bytes, 0, "{:?}", log.recovery());
    let acked = acked.into_inner().unwrap();
    let (&seq, &(_, i)) = acked.iter().rfind(|(_, (t, _))| *t == 0).expect("keyed");
    let again = log
        .append_keyed(key(0, i).as_deref(), &batch(0, i))
        .expect("resend after reopen");
    assert_eq!((again.seq, again.duplicate), (seq, true));
    let replayed: Vec<_> = log
        .replay(0)
        .map(|b| b.expect("replay"))
        .map(|b| {
            let t: usize = b.readings.row(0).device[1..].parse().expect("thread");
            let i = b.readings.row(0).ts as u64;
            assert_eq!(b.readings, batch(t, i), "batch {} intact", b.seq);
            assert_eq!(b.key, key(t, i));
            (b.seq, (t, i))
        })
        .collect();
    assert_eq!(replayed, acked.into_iter().collect::<Vec<_>>());
    drop(log);
    fs::remove_dir_all(&dir).expect("clean up");
    reason
}
