//! Behaviour of the log through its public API: replay, recovery from torn
//! tails, corruption reports, segment rolling and removal, group commit.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Barrier;

use fleetscore_core::Readings;
use fleetscore_ingest::{format, Batch, Log, LogConfig, LogError};

/// A reading as these tests spell it, for collecting into [`Readings`].
fn owned(
    ts: i64,
    device: impl Into<String>,
    tag: impl Into<String>,
    value: f64,
) -> (i64, String, String, f64) {
    (ts, device.into(), tag.into(), value)
}

fn batch(n: usize, salt: i64) -> Readings {
    (0..n)
        .map(|i| {
            owned(
                salt * 1_000_000 + i as i64,
                format!("dev-{}", i % 3),
                if i % 2 == 0 { "temp" } else { "hum" },
                salt as f64 + i as f64 / 10.0,
            )
        })
        .collect()
}

fn replay_all(log: &Log, from: u64) -> Vec<Batch> {
    log.replay(from)
        .collect::<Result<Vec<_>, _>>()
        .expect("replay succeeds")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    for p in segments(from) {
        fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
    }
}

#[test]
fn appended_batches_replay_in_order_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(dir.path(), LogConfig::default()).expect("open");
        for i in 0..10 {
            assert_eq!(log.append(&batch(5, i)).expect("append"), i as u64);
        }
        assert_eq!(replay_all(&log, 0).len(), 10);
    }
    let log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
    assert_eq!(log.recovery().truncated_bytes, 0);
    assert_eq!(log.recovery().next_seq, 10);
    let got = replay_all(&log, 3);
    assert_eq!(got.len(), 7);
    for (b, i) in got.iter().zip(3..) {
        assert_eq!(b.seq, i as u64);
        assert_eq!(b.readings, batch(5, i));
    }
    assert_eq!(log.append(&batch(1, 10)).expect("append"), 10);
}

/// Records with idempotency keys (format version 2), so every cut also
/// lands inside a key, its digest or its time.
#[test]
fn torn_last_record_is_cut_at_every_byte_offset_and_appends_continue() {
    let src = tempfile::tempdir().expect("tempdir");
    let key = |i: i64| format!("request-{i}");
    let (before_last, full) = {
        let log = Log::open(src.path(), LogConfig::default()).expect("open");
        for i in 0..4 {
            log.append_keyed(Some(&key(i)), &batch(3, i))
                .expect("append");
        }
        let before = log.stats().bytes;
        log.append_keyed(Some(&key(4)), &batch(3, 4))
            .expect("append");
        (before, log.stats().bytes)
    };
    let seg = segments(src.path()).remove(0);
    let header = format::HEADER_LEN as u64;
    assert_eq!(fs::metadata(&seg).expect("stat").len(), header + full);
    for cut in header + before_last..header + full {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(src.path(), dir.path());
        let path = dir.path().join(seg.file_name().expect("name"));
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(cut))
            .expect("cut");
        let log = Log::open(dir.path(), LogConfig::default()).expect("open torn");
        assert_eq!(
            log.recovery().truncated_bytes,
            cut - header - before_last,
            "cut {cut}"
        );
        assert_eq!(log.recovery().next_seq, 4, "cut {cut}");
        let got = replay_all(&log, 0);
        assert_eq!(got.iter().map(|b| b.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(got[3].key, Some(key(3)));
        assert_eq!(log.recovery().keys_loaded, 4, "cut {cut}");
        // The intact batches' keys are known, the cut one's is not.
        let retry = log
            .append_keyed(Some(&key(3)), &batch(3, 3))
            .expect("retry");
        assert_eq!((retry.seq, retry.duplicate), (3, true), "cut {cut}");
        let again = log
            .append_keyed(Some(&key(4)), &batch(3, 4))
            .expect("append after recovery");
        assert_eq!((again.seq, again.duplicate), (4, false), "cut {cut}");
        let got = replay_all(&log, 4);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].readings, batch(3, 4));
        drop(log);
        let log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
        assert_eq!(log.recovery().truncated_bytes, 0);
        assert_eq!(replay_all(&log, 0).len(), 5);
    }
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(dir.path(), LogConfig::default()).expect("open");
        log.append(&batch(3, 0)).expect("append");
    }
    let seg = segments(dir.path()).remove(0);
    let mut data = fs::read(&seg).expect("read");
    // A file extended by the crash but whose pages were never written.
    data.extend_from_slice(&[0u8; 4096]);
    fs::write(&seg, &data).expect("write");
    let log = Log::open(dir.path(), LogConfig::default()).expect("open");
    assert_eq!(log.recovery().truncated_bytes, 4096);
    assert_eq!(replay_all(&log, 0).len(), 1);
}

fn small_segments() -> LogConfig {
    LogConfig {
        max_segment_bytes: 2048,
        ..LogConfig::default()
    }
}

#[test]
fn corruption_in_a_closed_segment_names_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(dir.path(), small_segments()).expect("open");
        for i in 0..30 {
            log.append(&batch(10, i)).expect("append");
        }
        assert!(log.closed_segments().len() >= 2);
    }
    let first = segments(dir.path()).remove(0);
    let mut data = fs::read(&first).expect("read");
    data[format::HEADER_LEN + 40] ^= 0x01;
    fs::write(&first, &data).expect("write");
    let log = Log::open(dir.path(), small_segments()).expect("open");
    match replay_all_result(&log) {
        Err(LogError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(path, first);
            assert_eq!(offset, format::HEADER_LEN as u64);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let msg = replay_all_result(&log).expect_err("corrupt").to_string();
    assert!(
        msg.contains("segment-00000000000000000000.wal") && msg.contains("offset 24"),
        "{msg}"
    );
}

fn replay_all_result(log: &Log) -> Result<Vec<Batch>, LogError> {
    log.replay(0).collect()
}

#[test]
fn a_bad_header_is_refused_with_the_file_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("segment-00000000000000000000.wal");
    fs::write(&path, b"not a segment at all, just some text").expect("write");
    match Log::open(dir.path(), LogConfig::default()) {
        Err(LogError::BadHeader { path: p, .. }) => assert_eq!(p, path),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a bad segment"),
    }
}

#[test]
fn segments_roll_replay_across_them_and_can_be_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), small_segments()).expect("open");
    for i in 0..100 {
        log.append(&batch(10, i)).expect("append");
    }
    let closed = log.closed_segments();
    assert!(closed.len() >= 5, "{closed:?}");
    assert_eq!(closed[0].first_seq, 0);
    for pair in closed.windows(2) {
        assert_eq!(pair[0].end_seq, pair[1].first_seq);
    }
    for s in &closed {
        assert!(s.bytes <= 2048, "{s:?}");
        assert_eq!(fs::metadata(&s.path).expect("stat").len(), s.bytes);
    }
    assert_eq!(log.stats().segments_created as usize, closed.len() + 1);
    let all = replay_all(&log, 0);
    assert_eq!(
        all.iter().map(|b| b.seq).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
    assert_eq!(all[57].readings, batch(10, 57));
    assert_eq!(replay_all(&log, 50).first().map(|b| b.seq), Some(50));

    log.remove_segment(closed[0].first_seq).expect("remove");
    log.remove_segment(closed[1].first_seq).expect("remove");
    assert!(!closed[0].path.exists());
    assert!(matches!(
        log.remove_segment(closed[0].first_seq),
        Err(LogError::NoSuchSegment(0))
    ));
    let active = closed.last().expect("closed").end_seq;
    assert!(matches!(
        log.remove_segment(active),
        Err(LogError::ActiveSegment(_))
    ));
    assert_eq!(
        replay_all(&log, 0).first().map(|b| b.seq),
        Some(closed[2].first_seq)
    );
    drop(log);

    let log = Log::open(dir.path(), small_segments()).expect("reopen");
    assert_eq!(log.closed_segments(), closed[2..].to_vec());
    assert_eq!(log.append(&batch(1, 100)).expect("append"), 100);
    assert_eq!(replay_all(&log, 99).len(), 2);
}

#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), small_segments()).expect("open");
    log.append(&batch(1, 0)).expect("append");
    log.append(&batch(500, 1)).expect("append big");
    log.append(&batch(1, 2)).expect("append");
    let closed = log.closed_segments();
    assert_eq!(closed.len(), 2);
    assert_eq!((closed[1].first_seq, closed[1].end_seq), (1, 2));
    assert_eq!(replay_all(&log, 0)[1].readings, batch(500, 1));
}

#[test]
fn concurrent_appenders_share_fsyncs() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogConfig::default()).expect("open");
    let barrier = Barrier::new(THREADS);
    let mut seqs: Vec<(usize, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (log, barrier) = (&log, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    (0..PER_THREAD)
                        .map(|i| {
                            let seq = log
                                .append(&batch(50, (t * 1000 + i) as i64))
                                .expect("append");
                            (t * 1000 + i, seq)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let n = (THREADS * PER_THREAD) as u64;
    let stats = log.stats();
    assert_eq!(stats.batches, n);
    assert_eq!(stats.readings, n * 50);
    assert!(stats.fsyncs < n, "{stats:?}");
    assert!(stats.commits <= stats.fsyncs, "{stats:?}");
    // Each acknowledged sequence number holds the batch that got it.
    seqs.sort_by_key(|&(_, seq)| seq);
    let replayed = replay_all(&log, 0);
    assert_eq!(replayed.len() as u64, n);
    for ((salt, seq), b) in seqs.iter().zip(&replayed) {
        assert_eq!(*seq, b.seq);
        assert_eq!(b.readings, batch(50, *salt as i64));
    }
}

#[test]
fn config_defaults_commit_a_lone_batch_at_once() {
    let config = LogConfig::default();
    assert_eq!(config.max_wait_us, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), config).expect("open");
    log.append(&batch(1, 0)).expect("append");
    let stats = log.stats();
    assert_eq!((stats.commits, stats.fsyncs, stats.batches), (1, 1, 1));
}

#[test]
fn a_segment_with_a_torn_header_is_started_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(dir.path(), small_segments()).expect("open");
        for i in 0..10 {
            log.append(&batch(10, i)).expect("append");
        }
    }
    // A crash while the next segment was being created leaves a file
    // shorter than its header.
    let next = dir.path().join("segment-00000000000000000010.wal");
    let last = segments(dir.path()).pop().expect("segment");
    assert!(last < next);
    fs::write(&next, b"FSING").expect("write");
    let log = Log::open(dir.path(), small_segments()).expect("open");
    assert_eq!(log.recovery().truncated_bytes, 5);
    assert_eq!(log.recovery().next_seq, 10);
    assert_eq!(log.append(&batch(1, 10)).expect("append"), 10);
    assert_eq!(replay_all(&log, 0).len(), 11);
    assert_eq!(log.closed_segments().last().map(|s| s.end_seq), Some(10));
}

#[test]
fn roll_closes_the_active_segment_only_when_it_holds_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogConfig::default()).expect("open");
    // Empty: nothing to close.
    log.roll().expect("roll");
    assert!(log.closed_segments().is_empty());
    for i in 0..3 {
        log.append(&batch(4, i)).expect("append");
    }
    log.roll().expect("roll");
    let closed = log.closed_segments();
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].first_seq, closed[0].end_seq), (0, 3));
    // Twice in a row: the new active segment is empty.
    log.roll().expect("roll again");
    assert_eq!(log.closed_segments().len(), 1);
    assert_eq!(log.append(&batch(2, 9)).expect("append"), 3);
    log.remove_segment(0).expect("remove the rolled segment");
    let left = replay_all(&log, 0);
    assert_eq!(left.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![3]);
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
    assert_eq!(log.recovery().next_seq, 4);
    assert_eq!(replay_all(&log, 0).len(), 1);
}

#[test]
fn roll_waits_for_appends_queued_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogConfig::default()).expect("open");
    std::thread::scope(|s| {
        for t in 0..4 {
            let log = &log;
            s.spawn(move || {
                for i in 0..50 {
                    log.append(&batch(3, t * 100 + i)).expect("append");
                    if i % 10 == 0 {
                        log.roll().expect("roll");
                    }
                }
            });
        }
    });
    log.roll().expect("final roll");
    let closed = log.closed_segments();
    assert_eq!(closed.last().expect("closed").end_seq, 200);
    for pair in closed.windows(2) {
        assert_eq!(pair[0].end_seq, pair[1].first_seq);
        assert!(pair[0].end_seq > pair[0].first_seq, "no empty segment");
    }
    assert_eq!(replay_all(&log, 0).len(), 200);
}
