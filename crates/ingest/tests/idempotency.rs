//! Regression tests for issue 16, defect 12: a client that resent a batch
//! after an unknown outcome (timeout, connection reset) had it stored
//! twice. With an idempotency key, a retry within the horizon is
//! acknowledged with the first append's sequence number and stored once,
//! also across restarts and after its segment was compacted away.
//!
//! Also: format version 1 segments (written before keys existed) still open
//! and replay.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use fleetscore_core::Readings;
use fleetscore_ingest::{format, Appended, Batch, Clock, Log, LogConfig, LogError};

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
        .map(|i| owned(salt * 1000 + i as i64, "dev", "temp", salt as f64))
        .collect()
}

fn replay_all(log: &Log) -> Vec<Batch> {
    log.replay(0)
        .collect::<Result<Vec<_>, _>>()
        .expect("replay succeeds")
}

const fn stored(seq: u64) -> Appended {
    Appended {
        seq,
        duplicate: false,
    }
}

const fn duplicate(seq: u64) -> Appended {
    Appended {
        seq,
        duplicate: true,
    }
}

/// A wall clock the test moves by hand.
struct ManualClock(fleetscore_core::ManualClock);

impl ManualClock {
    fn at(t: SystemTime) -> Arc<ManualClock> {
        let ns = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos();
        Arc::new(ManualClock(fleetscore_core::ManualClock::new(ns as i64)))
    }

    fn advance(&self, by: Duration) {
        self.0.advance(by.as_nanos() as i64);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.now()
    }
}

#[test]
fn retried_batch_with_the_same_key_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig::default();
    let key = Some("client-7/request-0001");
    {
        let log = Log::open(dir.path(), config.clone()).expect("open");
        assert_eq!(
            log.append_keyed(key, &batch(3, 1)).expect("append"),
            stored(0)
        );
        assert_eq!(
            log.append_keyed(key, &batch(3, 1)).expect("retry"),
            duplicate(0)
        );
        assert_eq!(log.append(&batch(2, 2)).expect("append"), 1);
        assert_eq!(
            log.append_keyed(key, &batch(3, 1)).expect("retry"),
            duplicate(0)
        );
        let stats = log.stats();
        assert_eq!((stats.batches, stats.duplicates, stats.keys), (2, 2, 1));
        let all = replay_all(&log);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].key.as_deref(), key);
        assert_eq!(all[0].readings, batch(3, 1));
        assert_eq!(all[1].key, None);
    }
    // After a restart: the key is read back from its record.
    {
        let log = Log::open(dir.path(), config.clone()).expect("reopen");
        assert_eq!(log.recovery().keys_loaded, 1);
        assert_eq!(
            log.append_keyed(key, &batch(3, 1)).expect("retry"),
            duplicate(0)
        );
        // Compaction removes the segment: the key outlives it.
        log.roll().expect("roll");
        assert_eq!(log.append(&batch(1, 3)).expect("append"), 2);
        log.remove_segment(0).expect("remove");
        assert!(dir.path().join(fleetscore_ingest::KEYS_FILE).exists());
        assert_eq!(replay_all(&log).len(), 1);
        assert_eq!(
            log.append_keyed(key, &batch(3, 1)).expect("retry"),
            duplicate(0)
        );
    }
    // And a restart after the removal: the key comes from the keys file.
    let log = Log::open(dir.path(), config).expect("reopen");
    assert_eq!(log.recovery().keys_loaded, 1);
    assert_eq!(log.recovery().keys_file_error, None);
    assert_eq!(
        log.append_keyed(key, &batch(3, 1)).expect("retry"),
        duplicate(0)
    );
    assert_eq!(
        log.append_keyed(Some("client-7/request-0002"), &batch(3, 1))
            .expect("a new key is stored"),
        stored(3)
    );
    assert_eq!(
        replay_all(&log).iter().map(|b| b.seq).collect::<Vec<_>>(),
        [2, 3]
    );
}

#[test]
fn same_key_different_batch_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogConfig::default()).expect("open");
    assert_eq!(
        log.append_keyed(Some("k"), &batch(3, 1)).expect("append"),
        stored(0)
    );
    let refused = |log: &Log| match log.append_keyed(Some("k"), &batch(3, 2)) {
        Err(e @ LogError::KeyReused { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("\"k\"") && msg.contains("new key"), "{msg}");
            assert!(matches!(e, LogError::KeyReused { seq: 0, .. }));
            assert_eq!(e.retry_after(), None);
        }
        other => panic!("expected KeyReused, got {other:?}"),
    };
    refused(&log);
    assert_eq!(replay_all(&log).len(), 1, "nothing stored");
    assert_eq!(log.stats().key_conflicts, 1);
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
    refused(&log);
    // Keys that break the rules are refused before anything is written.
    for bad in ["", "tab\there", &"x".repeat(format::MAX_KEY_LEN + 1)] {
        match log.append_keyed(Some(bad), &batch(1, 0)) {
            Err(LogError::BadKey { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!("key {bad:?}: expected BadKey, got {other:?}"),
        }
    }
    let longest = "x".repeat(format::MAX_KEY_LEN);
    assert_eq!(
        log.append_keyed(Some(&longest), &batch(1, 0))
            .expect("append"),
        stored(1)
    );
    assert_eq!(replay_all(&log).len(), 2);
}

#[test]
fn concurrent_appends_with_one_key_store_one_batch() {
    const THREADS: usize = 12;
    const ROUNDS: usize = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), LogConfig::default()).expect("open");
    let barrier = Barrier::new(THREADS);
    // answers[round] = what each thread was told.
    let answers: Vec<Vec<Appended>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (log, barrier) = (&log, &barrier);
                s.spawn(move || {
                    (0..ROUNDS)
                        .map(|r| {
                            barrier.wait();
                            // Unkeyed traffic in between, so groups mix.
                            if t % 3 == 0 {
                                log.append(&batch(2, 10_000 + r as i64)).expect("append");
                            }
                            let key = format!("round-{r}");
                            log.append_keyed(Some(&key), &batch(5, r as i64))
                                .expect("append")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let per_thread: Vec<Vec<Appended>> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        (0..ROUNDS)
            .map(|r| per_thread.iter().map(|v| v[r]).collect())
            .collect()
    });
    let replayed = replay_all(&log);
    for (r, round) in answers.iter().enumerate() {
        let seq = round[0].seq;
        assert!(round.iter().all(|a| a.seq == seq), "round {r}: {round:?}");
        assert_eq!(
            round.iter().filter(|a| !a.duplicate).count(),
            1,
            "round {r}: exactly one append stores the batch: {round:?}"
        );
        let key = format!("round-{r}");
        let with_key: Vec<_> = replayed
            .iter()
            .filter(|b| b.key.as_deref() == Some(&key))
            .collect();
        assert_eq!(with_key.len(), 1, "round {r} stored once");
        assert_eq!(
            (with_key[0].seq, &with_key[0].readings),
            (seq, &batch(5, r as i64))
        );
    }
    let stats = log.stats();
    assert_eq!(stats.duplicates as usize, ROUNDS * (THREADS - 1));
    assert_eq!(stats.batches as usize, ROUNDS * (1 + THREADS / 3));
}

#[test]
fn keys_expire_after_the_horizon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let config = LogConfig {
        idempotency_horizon_secs: 60,
        idempotency_max_keys: 3,
        ..LogConfig::default()
    };
    let open = || Log::open_with_clock(dir.path(), config.clone(), clock.clone()).expect("open");
    let log = open();
    assert_eq!(
        log.append_keyed(Some("k"), &batch(1, 1)).expect("append"),
        stored(0)
    );
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        log.append_keyed(Some("k"), &batch(1, 1)).expect("retry"),
        duplicate(0)
    );
    clock.advance(Duration::from_secs(1));
    // 60 s after the first append the key is forgotten: stored again.
    assert_eq!(
        log.append_keyed(Some("k"), &batch(1, 1)).expect("append"),
        stored(1)
    );
    assert_eq!(
        log.append_keyed(Some("k"), &batch(1, 1)).expect("retry"),
        duplicate(1)
    );
    // Also for different readings: past the horizon the key is free.
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        log.append_keyed(Some("k"), &batch(1, 2)).expect("append"),
        stored(2)
    );
    drop(log);

    // Reopened 30 s later: the key of seq 2 is live, read from the log.
    clock.advance(Duration::from_secs(30));
    let log = open();
    assert_eq!(log.recovery().keys_loaded, 1);
    assert_eq!(
        log.append_keyed(Some("k"), &batch(1, 2)).expect("retry"),
        duplicate(2)
    );
    // Bounded memory: beyond 3 keys the oldest is forgotten early.
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        log.append_keyed(Some(key), &batch(1, 10 + i as i64))
            .expect("append");
    }
    let stats = log.stats();
    assert_eq!((stats.keys, stats.keys_evicted), (3, 1));
    assert_eq!(
        log.append_keyed(Some("k"), &batch(1, 2)).expect("append"),
        stored(6)
    );
    // Compaction saves live keys; once past the horizon they are not
    // loaded again.
    log.roll().expect("roll");
    log.append(&batch(1, 99)).expect("append");
    log.remove_segment(0).expect("remove");
    drop(log);
    let log = open();
    assert_eq!(log.recovery().keys_loaded, 3, "{:?}", log.recovery());
    drop(log);
    clock.advance(Duration::from_secs(61));
    let log = open();
    assert_eq!(log.recovery().keys_loaded, 0, "{:?}", log.recovery());
    assert_eq!(
        log.append_keyed(Some("a"), &batch(1, 10)).expect("append"),
        stored(8)
    );
}

/// A version 1 segment, byte by byte as the first format wrote it: each
/// record is `seq | payload`, without the key and time of version 2.
fn v1_segment(first_seq: u64, batches: &[Readings]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"FSINGLOG");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    for (i, readings) in batches.iter().enumerate() {
        let mut strings: Vec<&str> = Vec::new();
        let mut index = |s: &str| -> u32 {
            match strings.iter().position(|x| *x == s) {
                Some(i) => i as u32,
                None => {
                    strings.push(
                        readings
                            .iter()
                            .flat_map(|r| [r.device, r.tag])
                            .find(|x| *x == s)
                            .expect("own string"),
                    );
                    strings.len() as u32 - 1
                }
            }
        };
        let ids: Vec<(u32, u32)> = readings
            .iter()
            .map(|r| (index(r.device), index(r.tag)))
            .collect();
        let mut body = Vec::new();
        body.extend_from_slice(&(first_seq + i as u64).to_le_bytes());
        body.extend_from_slice(&(readings.len() as u32).to_le_bytes());
        body.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        for s in &strings {
            body.extend_from_slice(&(s.len() as u32).to_le_bytes());
            body.extend_from_slice(s.as_bytes());
        }
        for (r, (d, t)) in readings.iter().zip(ids) {
            body.extend_from_slice(&r.ts.to_le_bytes());
            body.extend_from_slice(&d.to_le_bytes());
            body.extend_from_slice(&t.to_le_bytes());
            body.extend_from_slice(&r.value.to_bits().to_le_bytes());
        }
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

fn header_version(path: &Path) -> u32 {
    let data = fs::read(path).expect("read");
    u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"))
}

#[test]
fn version_1_segments_still_open_and_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = |first: u64| dir.path().join(format!("segment-{first:020}.wal"));
    let old: Vec<Readings> = (0..3).map(|i| batch(4, i)).collect();
    fs::write(seg(0), v1_segment(0, &old[..2])).expect("write");
    // The active segment is version 1 too, with a torn record at its end.
    let mut active = v1_segment(2, &old[2..]);
    active.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
    fs::write(seg(2), &active).expect("write");

    let log = Log::open(dir.path(), LogConfig::default()).expect("open v1");
    assert_eq!(log.recovery().next_seq, 3);
    assert_eq!(log.recovery().truncated_bytes, 6);
    let got = replay_all(&log);
    assert_eq!(got.iter().map(|b| b.seq).collect::<Vec<_>>(), [0, 1, 2]);
    for (b, readings) in got.iter().zip(&old) {
        assert_eq!((&b.readings, &b.key), (readings, &None));
    }
    // New records never go into a version 1 segment: it was closed.
    let closed = log.closed_segments();
    assert_eq!(
        closed
            .iter()
            .map(|s| (s.first_seq, s.end_seq))
            .collect::<Vec<_>>(),
        [(0, 2), (2, 3)]
    );
    assert_eq!(
        log.append_keyed(Some("new"), &batch(2, 7)).expect("append"),
        stored(3)
    );
    assert_eq!(header_version(&seg(3)), format::VERSION);
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
    let got = replay_all(&log);
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].key.as_deref(), Some("new"));
    assert_eq!(
        log.append_keyed(Some("new"), &batch(2, 7)).expect("retry"),
        duplicate(3)
    );
    log.remove_segment(0).expect("remove a v1 segment");
    drop(log);

    // An empty version 1 active segment is started again as version 2.
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = |first: u64| dir.path().join(format!("segment-{first:020}.wal"));
    fs::write(seg(0), v1_segment(0, &old[..2])).expect("write");
    fs::write(seg(2), v1_segment(2, &[])).expect("write");
    let log = Log::open(dir.path(), LogConfig::default()).expect("open v1");
    assert_eq!(header_version(&seg(2)), format::VERSION);
    assert_eq!(log.append(&batch(1, 5)).expect("append"), 2);
    assert_eq!(replay_all(&log).len(), 3);
}
