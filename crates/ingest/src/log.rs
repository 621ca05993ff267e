//! The log: opening and recovery, the group-commit writer thread, segment
//! rolling, listing and removal, and replay.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::format::{self, EncodedBatch, RecordFault, HEADER_LEN};
use crate::keys::{self, Clock, KeyEntry, KeyIndex, SystemClock};
use fleetscore_core::Readings;

use crate::Seq;

/// Settings of the ingest log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A segment is closed, and a new one started, before a record would
    /// take it past this many bytes. A single record larger than this gets a
    /// segment of its own. Default 64 MiB.
    pub max_segment_bytes: u64,
    /// The writer stops gathering batches into one commit (one write, one
    /// fdatasync) once it holds this many bytes. Default 8 MiB.
    pub max_group_bytes: usize,
    /// How long the writer waits for more batches to join a commit once the
    /// queue is empty, in microseconds. The default, 0, commits as soon as
    /// the queue is drained: a lone request is never delayed, and under load
    /// the batches that arrive during one fdatasync form the next commit.
    pub max_wait_us: u64,
    /// While the log cannot write (disk full, I/O error), it tries to
    /// restore a writable state at most this often, in milliseconds: on a
    /// timer of its own, and when an append, a roll or
    /// [`Log::try_recover`] asks in between. Appends in between are refused
    /// at once. Default 500: recovery follows freed space within half a
    /// second, while a full disk sees at most two probe writes per second.
    pub recovery_interval_ms: u64,
    /// How long an idempotency key is remembered, in seconds of wall time
    /// from the append that stored its batch: a batch resent with the same
    /// key within this time is acknowledged again without being stored
    /// again ([`Log::append_keyed`]). Default 3600 (one hour): long enough
    /// for clients retrying with backoff, a restart or an outage of the
    /// server in between, and a Kafka consumer resuming from its last
    /// committed offset; short enough that the keys of a busy log fit in
    /// memory. 0 turns deduplication off (keys are still stored).
    pub idempotency_horizon_secs: u64,
    /// At most this many keys are remembered; beyond it the oldest are
    /// forgotten before their horizon (counted in
    /// [`LogStats::keys_evicted`]). Default 250,000: about 40 MB at most
    /// with 36-byte keys, only reached when clients send keys.
    pub idempotency_max_keys: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_segment_bytes: 64 << 20,
            max_group_bytes: 8 << 20,
            max_wait_us: 0,
            recovery_interval_ms: 500,
            idempotency_horizon_secs: 3600,
            idempotency_max_keys: 250_000,
        }
    }
}

/// A segment that is no longer written to, listed for compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// Sequence number of its first record.
    pub first_seq: Seq,
    /// One past the sequence number of its last record (the next segment's
    /// `first_seq`); equal to `first_seq` if it holds no record.
    pub end_seq: Seq,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// What recovery did when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from the end of the last segment: a record torn by a crash
    /// mid-write, and anything after it. Such records were never
    /// acknowledged.
    pub truncated_bytes: u64,
    /// Why the tail was cut, if it was.
    pub reason: Option<String>,
    /// The sequence number the next appended batch will get.
    pub next_seq: Seq,
    /// Idempotency keys within the horizon found in the keys file and the
    /// segments.
    pub keys_loaded: usize,
    /// Why the keys file of removed segments was not used, if it could not
    /// be read (the log opens anyway; those keys' retries may be stored
    /// again).
    pub keys_file_error: Option<String>,
}

/// Counters of the log since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Batches acknowledged as durable.
    pub batches: u64,
    /// Readings in those batches.
    pub readings: u64,
    /// Record bytes written.
    pub bytes: u64,
    /// Group commits: each wrote the gathered batches and made them durable.
    pub commits: u64,
    /// fdatasync/fsync calls on segment files (a commit that rolls a segment
    /// syncs twice).
    pub fsyncs: u64,
    /// Segments created (rolls, plus the first segment of a new log).
    pub segments_created: u64,
    /// Appends refused with an error.
    pub failed: u64,
    /// Writes, fsyncs or segment rolls that failed and made the log
    /// unwritable (each starts an episode that ends with a recovery).
    pub write_failures: u64,
    /// Successful in-place recoveries: the log became writable again.
    pub recoveries: u64,
    /// Recovery attempts that failed (the disk was still full or broken).
    pub failed_recoveries: u64,
    /// Keyed appends answered as duplicates, without storing them again.
    pub duplicates: u64,
    /// Keyed appends refused because their key was used for a different
    /// batch ([`LogError::KeyReused`]).
    pub key_conflicts: u64,
    /// Keys forgotten before their horizon to stay within
    /// [`LogConfig::idempotency_max_keys`].
    pub keys_evicted: u64,
    /// Keys remembered now (a gauge, not a counter).
    pub keys: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    readings: AtomicU64,
    bytes: AtomicU64,
    commits: AtomicU64,
    fsyncs: AtomicU64,
    segments_created: AtomicU64,
    failed: AtomicU64,
    write_failures: AtomicU64,
    recoveries: AtomicU64,
    failed_recoveries: AtomicU64,
    duplicates: AtomicU64,
    key_conflicts: AtomicU64,
    keys_evicted: AtomicU64,
    keys: AtomicU64,
}

/// Whether the log can write, from [`Log::health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Appends can be written. `false` from a failed write, fsync or roll
    /// until a recovery succeeds; appends are refused with
    /// [`LogError::Unavailable`] meanwhile.
    pub writable: bool,
    /// Why the log cannot write: the failure, or the latest failed recovery
    /// attempt (file and operating system error). `None` when writable.
    pub reason: Option<String>,
    /// The failure is a full disk or an exceeded quota.
    pub disk_full: bool,
    /// When the log became unwritable (wall time, from the log's clock).
    /// `None` when writable.
    pub since: Option<SystemTime>,
    /// Recovery attempts that failed since the log became unwritable.
    pub failed_recoveries: u64,
    /// How often the log tries to recover ([`LogConfig::recovery_interval_ms`]).
    pub retry_after: Duration,
}

/// Why and since when the log cannot write.
#[derive(Debug, Clone)]
struct Unwritable {
    reason: String,
    disk_full: bool,
    /// Nanoseconds since the Unix epoch, from the log's clock.
    since: i64,
    failed_recoveries: u64,
}

/// What the writer publishes for readers: the durable extent of the log.
struct State {
    closed: Vec<SegmentInfo>,
    active_path: PathBuf,
    active_first_seq: Seq,
    /// Bytes of the active segment covered by the last fdatasync.
    active_durable_len: u64,
    /// Set by a failed write, fsync or roll; cleared by a recovery.
    unwritable: Option<Unwritable>,
}

struct Shared {
    dir: PathBuf,
    retry_after: Duration,
    state: Mutex<State>,
    counters: Counters,
    clock: Arc<dyn Clock + 'static>,
    /// Locked by the writer only for groups that hold a key, and by
    /// `remove_segment`.
    keys: Mutex<KeyIndex>,
    /// Serializes `remove_segment` calls (each may rewrite the keys file).
    removing: Mutex<()>,
    /// Non-zero when the keys file lacks live keys of batches before this
    /// sequence number (it could not be written on a full disk): the next
    /// removal rewrites it.
    keys_file_stale_upto: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is updated in single assignments, so it is consistent
        // even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keys(&self) -> MutexGuard<'_, KeyIndex> {
        // Each index operation leaves it consistent.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ns(&self) -> i64 {
        self.clock.now()
    }
}

/// The answer to [`Log::append_keyed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The batch's sequence number; for a duplicate, the number the batch
    /// got when it was first stored.
    pub seq: Seq,
    /// The key was seen within the horizon with the same readings: nothing
    /// was written, the batch is durable under `seq` since its first append.
    pub duplicate: bool,
}

struct Request {
    batch: EncodedBatch,
    reply: SyncSender<Result<Appended>>,
}

/// What the writer thread is asked to do.
enum Msg {
    Append(Request),
    /// Close the active segment if it holds records ([`Log::roll`]).
    Roll(SyncSender<Result<()>>),
    /// Try to recover now if unwritable and due ([`Log::try_recover`]).
    Recover(SyncSender<Health>),
}

/// The durable ingest log. See the [crate documentation](crate) for the
/// durability contract.
///
/// `Log` is `Sync`: share it (`&Log` or `Arc<Log>`) among any number of
/// appending threads. Dropping it finishes the commit in progress, answers
/// every queued append and joins the writer thread.
pub struct Log {
    shared: Arc<Shared>,
    tx: Option<Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    recovery: Recovery,
}

fn segment_name(first_seq: Seq) -> String {
    format!("segment-{first_seq:020}.wal")
}

fn parse_segment_name(name: &str) -> Option<Seq> {
    let digits = name.strip_prefix("segment-")?.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, sorted by first sequence number.
fn list_segments(dir: &Path) -> Result<Vec<(Seq, PathBuf)>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| LogError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("list", dir, e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

/// Creates (or recreates, empty) the segment starting at `first_seq` and
/// makes its header and directory entry durable before any record goes in,
/// so a crash never leaves a record in a file whose name is not durable.
fn create_segment(dir: &Path, first_seq: Seq) -> Result<(File, PathBuf)> {
    let path = dir.join(segment_name(first_seq));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| LogError::io("create", &path, e))?;
    file.write_all(&format::encode_header(first_seq))
        .map_err(|e| LogError::io("write header", &path, e))?;
    file.sync_all()
        .map_err(|e| LogError::io("fsync", &path, e))?;
    sync_dir(dir)?;
    Ok((file, path))
}

fn read_file(path: &Path, limit: Option<u64>) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| LogError::io("open", path, e))?;
    let mut data = Vec::new();
    let res = match limit {
        Some(n) => file.take(n).read_to_end(&mut data),
        None => (&file).read_to_end(&mut data),
    };
    res.map_err(|e| LogError::io("read", path, e))?;
    Ok(data)
}

fn check_header(path: &Path, data: &[u8], name_seq: Seq) -> Result<format::Header> {
    let header = format::decode_header(data).map_err(|reason| LogError::BadHeader {
        path: path.to_owned(),
        reason,
    })?;
    if header.first_seq != name_seq {
        return Err(LogError::BadHeader {
            path: path.to_owned(),
            reason: format!(
                "header says first seq {}, file name says {name_seq}",
                header.first_seq
            ),
        });
    }
    Ok(header)
}

impl Log {
    /// Opens the log in `dir` (created if missing), running recovery: a torn
    /// record at the end of the last segment, and anything after it, is cut
    /// away (see [`Log::recovery`]). Loads the idempotency keys within the
    /// horizon (from the keys file, then from the segments, newest first,
    /// until one holds only batches past the horizon). Starts the writer
    /// thread. Reads wall time from the system clock.
    ///
    /// Only one `Log` may have a directory open at a time; this is not
    /// checked.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        Log::open_with_clock(dir, config, Arc::new(SystemClock))
    }

    /// [`Log::open`] with the wall clock to use for the times recorded with
    /// batches and the age of idempotency keys (tests move it).
    pub fn open_with_clock(
        dir: impl AsRef<Path>,
        config: LogConfig,
        clock: Arc<dyn Clock + 'static>,
    ) -> Result<Log> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(|e| LogError::io("create directory", &dir, e))?;
        let counters = Counters::default();
        let segments = list_segments(&dir)?;
        let mut recovery = Recovery::default();
        let mut closed = Vec::new();
        for pair in segments.windows(2) {
            let (first_seq, path) = &pair[0];
            let header = read_file(path, Some(HEADER_LEN as u64))?;
            check_header(path, &header, *first_seq)?;
            let bytes = fs::metadata(path)
                .map_err(|e| LogError::io("stat", path, e))?
                .len();
            closed.push(SegmentInfo {
                path: path.clone(),
                first_seq: *first_seq,
                end_seq: pair[1].0,
                bytes,
            });
        }
        let mut index = KeyIndex::new(config.idempotency_horizon_secs, config.idempotency_max_keys);
        let now_ns = clock.now();
        let mut found: Vec<(String, KeyEntry)> = Vec::new();
        let (mut file, mut path, mut first_seq, mut len, next_seq, version) = match segments.last()
        {
            None => {
                let (file, path) = create_segment(&dir, 0)?;
                counters.segments_created.fetch_add(1, Ordering::Relaxed);
                (file, path, 0, HEADER_LEN as u64, 0, format::VERSION)
            }
            Some((first_seq, path)) => {
                let (file, len, next, version) =
                    recover_last(&dir, path, *first_seq, &mut recovery, &mut found)?;
                (file, path.clone(), *first_seq, len, next, version)
            }
        };
        if version != format::VERSION {
            // A segment's records all have its header's version: new
            // records go to a new segment (or a fresh start of this one).
            if len > HEADER_LEN as u64 {
                closed.push(SegmentInfo {
                    path: path.clone(),
                    first_seq,
                    end_seq: next_seq,
                    bytes: len,
                });
                first_seq = next_seq;
                counters.segments_created.fetch_add(1, Ordering::Relaxed);
            }
            (file, path) = create_segment(&dir, first_seq)?;
            len = HEADER_LEN as u64;
        }
        for seg in closed.iter().rev() {
            if !scan_keys(seg, |t| index.is_live(t, now_ns), &mut found) {
                break;
            }
        }
        match keys::read_keys_file(&dir) {
            Ok(saved) => found.extend(saved),
            Err(why) => {
                tracing::warn!(error = %why, "ingest log: ignoring the idempotency keys file; retries of batches in removed segments may be stored again");
                recovery.keys_file_error = Some(why);
            }
        }
        // In sequence order, so the newest batch of a key wins; a key in
        // both the file and its segment counts once.
        found.retain(|(_, e)| e.seq < next_seq && index.is_live(e.time_ns, now_ns));
        found.sort_unstable_by(|a, b| (a.1.seq, &a.0).cmp(&(b.1.seq, &b.0)));
        found.dedup_by(|a, b| a.1.seq == b.1.seq && a.0 == b.0);
        let mut evicted = 0;
        for (key, entry) in &found {
            evicted += index.insert(key, *entry, now_ns);
        }
        counters.keys_evicted.store(evicted, Ordering::Relaxed);
        counters.keys.store(index.len() as u64, Ordering::Relaxed);
        recovery.keys_loaded = index.len();
        recovery.next_seq = next_seq;
        let retry_after = Duration::from_millis(config.recovery_interval_ms);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            retry_after,
            state: Mutex::new(State {
                closed,
                active_path: path.clone(),
                active_first_seq: first_seq,
                active_durable_len: len,
                unwritable: None,
            }),
            counters,
            clock,
            keys: Mutex::new(index),
            removing: Mutex::new(()),
            keys_file_stale_upto: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            shared: Arc::clone(&shared),
            config,
            file,
            path,
            first_seq,
            len,
            next_seq,
            durable_next: next_seq,
            buf: Vec::new(),
            plans: Vec::new(),
            broken: false,
            last_attempt: Instant::now(),
            failed_write_len: 0,
        };
        let handle = std::thread::Builder::new()
            .name("ingest-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::io("spawn writer thread for", &dir, e))?;
        Ok(Log {
            shared,
            tx: Some(tx),
            writer: Some(handle),
            recovery,
        })
    }

    /// Appends `readings` as one batch and returns its sequence number once
    /// the batch is durable (written and covered by an fdatasync). The same
    /// as [`Log::append_keyed`] without a key.
    ///
    /// Blocks the calling thread until then; from async code call it through
    /// `tokio::task::spawn_blocking`. Encoding and checksumming run on the
    /// calling thread. An error means the batch may or may not be on disk
    /// (see the crate documentation).
    pub fn append(&self, readings: &Readings) -> Result<Seq> {
        self.append_keyed(None, readings).map(|a| a.seq)
    }

    /// Appends `readings` as one batch under an optional idempotency key,
    /// and answers once the batch is durable, like [`Log::append`].
    ///
    /// A key makes a retry safe. If a batch with the same key and the same
    /// readings was stored within [`LogConfig::idempotency_horizon_secs`]
    /// (counted from its first append, by the log's wall clock), nothing is
    /// written and the answer is that batch's `seq` with
    /// [`Appended::duplicate`] set; this also holds across restarts and
    /// after the batch's segment was removed, and for concurrent appends
    /// of one key (one stores, the others are duplicates of it). The same
    /// key with different readings is refused with
    /// [`LogError::KeyReused`]. A key must be 1 to
    /// [`MAX_KEY_LEN`](format::MAX_KEY_LEN) bytes without control
    /// characters ([`LogError::BadKey`]). A duplicate is answered even while
    /// the log cannot write. Only keyed appends pay for the digest (a
    /// SHA-256 of the encoded batch, on the calling thread).
    pub fn append_keyed(&self, key: Option<&str>, readings: &Readings) -> Result<Appended> {
        self.append_keyed_as(key, None, readings)
    }

    /// [`Log::append_keyed`], where a resent batch is recognised by
    /// `identity` (the bytes of the request as the source received it)
    /// rather than by its readings: the same key with the same identity is
    /// a duplicate, with another identity [`LogError::KeyReused`]. For
    /// sources whose readings of one request may differ between attempts
    /// (line protocol without timestamps takes the arrival time).
    pub fn append_keyed_as(
        &self,
        key: Option<&str>,
        identity: Option<&[u8]>,
        readings: &Readings,
    ) -> Result<Appended> {
        let res = self.append_inner(key, identity, readings);
        if res.is_err() {
            self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn append_inner(
        &self,
        key: Option<&str>,
        identity: Option<&[u8]>,
        readings: &Readings,
    ) -> Result<Appended> {
        if let Some(key) = key {
            keys::check_key(key)?;
        }
        let batch = format::encode_batch_as(key, identity, self.shared.now_ns(), readings)
            .map_err(|bytes| LogError::BatchTooLarge {
                bytes,
                max: format::MAX_BODY_LEN,
            })?;
        let (reply, answer) = mpsc::sync_channel(1);
        let closed = || LogError::WriterStopped("its channel is closed".into());
        self.tx
            .as_ref()
            .ok_or_else(closed)?
            .send(Msg::Append(Request { batch, reply }))
            .map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
    }

    /// Closes the active segment and starts a new one, after every append
    /// queued before this call has been committed, so that the records
    /// written so far can be compacted and removed like any closed segment.
    /// Does nothing when the active segment holds no record. Used at
    /// shutdown and by compaction on a timer, so that a quiet log does not
    /// keep its last readings in the active segment forever.
    pub fn roll(&self) -> Result<()> {
        let (reply, answer) = mpsc::sync_channel(1);
        let closed = || LogError::WriterStopped("its channel is closed".into());
        self.tx
            .as_ref()
            .ok_or_else(closed)?
            .send(Msg::Roll(reply))
            .map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
    }

    /// Whether the log can write now, and if not why and since when. Cheap
    /// (reads shared state): meant for readiness checks and metrics.
    pub fn health(&self) -> Health {
        let state = self.shared.state();
        health_of(state.unwritable.as_ref(), self.shared.retry_after)
    }

    /// If the log is unwritable, tries to recover now (unless an attempt
    /// was made less than [`LogConfig::recovery_interval_ms`] ago), and
    /// returns the health afterwards. The writer also retries on its own
    /// timer; this lets a readiness check see freed space at once, without
    /// traffic. Waits for the commit in progress, so call it through
    /// `spawn_blocking` from async code.
    pub fn try_recover(&self) -> Health {
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Recover(reply)).is_ok());
        match sent.then(|| answer.recv().ok()).flatten() {
            Some(h) => h,
            None => Health {
                writable: false,
                reason: Some("the writer thread has stopped".into()),
                disk_full: false,
                since: None,
                failed_recoveries: 0,
                retry_after: self.shared.retry_after,
            },
        }
    }

    /// What recovery did when the log was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// A snapshot of the log's counters.
    pub fn stats(&self) -> LogStats {
        let c = &self.shared.counters;
        LogStats {
            batches: c.batches.load(Ordering::Relaxed),
            readings: c.readings.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            segments_created: c.segments_created.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
            recoveries: c.recoveries.load(Ordering::Relaxed),
            failed_recoveries: c.failed_recoveries.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            key_conflicts: c.key_conflicts.load(Ordering::Relaxed),
            keys_evicted: c.keys_evicted.load(Ordering::Relaxed),
            keys: c.keys.load(Ordering::Relaxed),
        }
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The closed segments, oldest first: complete, durable and never
    /// written again, so a compactor may read them and then call
    /// [`Log::remove_segment`].
    pub fn closed_segments(&self) -> Vec<SegmentInfo> {
        self.shared.state().closed.clone()
    }

    /// Deletes the closed segment that starts at `first_seq` (after its
    /// readings were compacted elsewhere), and makes the deletion durable.
    /// The active segment cannot be removed.
    ///
    /// If the segment holds idempotency keys within the horizon, the live
    /// keys of it and of every older batch are first saved to the keys file
    /// (atomically: temporary file, fsync, rename, fsync of the directory),
    /// so retries are still recognised after a restart. On a full disk the
    /// segment is deleted first (that frees space) and the file written
    /// after; if that still fails the keys stay in memory, the next removal
    /// saves them, and only a restart in between would forget them (logged).
    pub fn remove_segment(&self, first_seq: Seq) -> Result<()> {
        let _one_at_a_time = self
            .shared
            .removing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (path, end_seq) = {
            let state = self.shared.state();
            if state.active_first_seq == first_seq {
                return Err(LogError::ActiveSegment(first_seq));
            }
            let seg = state
                .closed
                .iter()
                .find(|s| s.first_seq == first_seq)
                .ok_or(LogError::NoSuchSegment(first_seq))?;
            (seg.path.clone(), seg.end_seq)
        };
        let dir = &self.shared.dir;
        let stale_upto = self.shared.keys_file_stale_upto.load(Ordering::Relaxed);
        let now = self.shared.now_ns();
        let keep = {
            let index = self.shared.keys();
            (stale_upto > 0 || index.any_in(first_seq, end_seq, now))
                .then(|| index.live_before(end_seq.max(stale_upto), now))
        };
        let mut deferred = false;
        if let Some(keep) = &keep {
            match keys::write_keys_file(dir, keep) {
                Ok(()) => self.shared.keys_file_stale_upto.store(0, Ordering::Relaxed),
                Err(e) if describe(&e).1 => deferred = true,
                Err(e) => return Err(e),
            }
        }
        fs::remove_file(&path).map_err(|e| LogError::io("remove", &path, e))?;
        self.shared
            .state()
            .closed
            .retain(|s| s.first_seq != first_seq);
        sync_dir(dir)?;
        if let (true, Some(keep)) = (deferred, &keep) {
            // The segment's space is free now, so a second try usually fits.
            match keys::write_keys_file(dir, keep) {
                Ok(()) => self.shared.keys_file_stale_upto.store(0, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(error = %e, "ingest log: could not save the idempotency keys of a removed segment; they stay in memory and the next removal saves them, a restart before then forgets them");
                    self.shared
                        .keys_file_stale_upto
                        .store(end_seq.max(stale_upto), Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Reads back every durable batch with a sequence number `>= from_seq`,
    /// in order, across segments. Meant for start-up (open, then replay from
    /// the last sequence number the consumer had processed); it is also
    /// safe while appends go on, and then stops at the durable end as of
    /// this call.
    ///
    /// A record that fails its checks yields [`LogError::Corrupt`] naming
    /// the file and offset, and ends the iteration.
    pub fn replay(&self, from_seq: Seq) -> Replay {
        let state = self.shared.state();
        let mut segments: VecDeque<(PathBuf, Seq, Option<u64>)> = state
            .closed
            .iter()
            // A segment whose records all precede `from_seq` is not read.
            .filter(|s| s.end_seq > from_seq)
            .map(|s| (s.path.clone(), s.first_seq, None))
            .collect();
        segments.push_back((
            state.active_path.clone(),
            state.active_first_seq,
            Some(state.active_durable_len),
        ));
        Replay {
            segments,
            current: None,
            from_seq,
            done: false,
        }
    }
}

/// Scans the last segment, cuts a torn tail, and opens it for appending.
/// Returns the file, its length, the next sequence number and the
/// segment's format version, and adds the keys of its records to `keys`.
fn recover_last(
    dir: &Path,
    path: &Path,
    first_seq: Seq,
    recovery: &mut Recovery,
    keys: &mut Vec<(String, KeyEntry)>,
) -> Result<(File, u64, Seq, u32)> {
    let data = read_file(path, None)?;
    if data.len() < HEADER_LEN {
        // A crash while the segment was being created: its header was never
        // made durable, so no record can be in it. Its name is the first
        // sequence number it was meant for; start it again.
        tracing::warn!(path = %path.display(), bytes = data.len(), "ingest log: recreating a segment with a torn header");
        recovery.truncated_bytes = data.len() as u64;
        recovery.reason = Some("torn segment header".into());
        let (file, _) = create_segment(dir, first_seq)?;
        return Ok((file, HEADER_LEN as u64, first_seq, format::VERSION));
    }
    let version = check_header(path, &data, first_seq)?.version;
    let mut pos = HEADER_LEN;
    let mut expected = first_seq;
    loop {
        match format::read_record(&data, pos) {
            Ok(None) => break,
            Ok(Some(rec)) => {
                if rec.seq != expected {
                    return Err(LogError::Corrupt {
                        path: path.to_owned(),
                        offset: pos as u64,
                        reason: format!(
                            "sequence number {} where {expected} was expected",
                            rec.seq
                        ),
                    });
                }
                let (meta, _) = format::split_meta(version, rec.payload).map_err(|reason| {
                    LogError::Corrupt {
                        path: path.to_owned(),
                        offset: pos as u64,
                        reason,
                    }
                })?;
                if let Some(entry) = key_entry(rec.seq, &meta) {
                    keys.push(entry);
                }
                expected += 1;
                pos = rec.end;
            }
            Err(fault) => {
                // Records after the last fdatasync may be partly on disk, in
                // any order of pages; none of them was acknowledged. The
                // first record that fails its checks is where the durable
                // log ends.
                let cut = (data.len() - pos) as u64;
                tracing::warn!(
                    path = %path.display(),
                    offset = pos,
                    truncated_bytes = cut,
                    reason = fault.reason(),
                    "ingest log: truncating a torn tail"
                );
                recovery.truncated_bytes = cut;
                recovery.reason = Some(format!(
                    "{} at offset {pos} of {}",
                    fault.reason(),
                    path.display()
                ));
                break;
            }
        }
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LogError::io("open", path, e))?;
    if pos < data.len() {
        file.set_len(pos as u64)
            .map_err(|e| LogError::io("truncate", path, e))?;
        file.sync_all()
            .map_err(|e| LogError::io("fsync", path, e))?;
    }
    let mut file = file;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(pos as u64))
        .map_err(|e| LogError::io("seek", path, e))?;
    Ok((file, pos as u64, expected, version))
}

/// The key of a record, if it has one.
fn key_entry(seq: Seq, meta: &format::Meta<'_>) -> Option<(String, KeyEntry)> {
    match (meta.key, meta.digest, meta.time_ns) {
        (Some(key), Some(digest), Some(time_ns)) => Some((
            key.to_owned(),
            KeyEntry {
                seq,
                time_ns,
                digest,
            },
        )),
        _ => None,
    }
}

/// Adds the live keys of a closed segment to `keys`. Returns whether older
/// segments may hold live keys too: not once this one holds only batches
/// past the horizon (times grow with sequence numbers, as long as the
/// clock is not set back), nor before version 2. A damaged segment is
/// scanned up to the damage (replay reports it).
fn scan_keys(
    seg: &SegmentInfo,
    live: impl Fn(i64) -> bool,
    keys: &mut Vec<(String, KeyEntry)>,
) -> bool {
    let warn = |e: &dyn std::fmt::Display| {
        tracing::warn!(path = %seg.path.display(), error = %e, "ingest log: cannot read idempotency keys from a segment");
    };
    let data = match read_file(&seg.path, None) {
        Ok(d) => d,
        Err(e) => {
            warn(&e);
            return false;
        }
    };
    let version = match check_header(&seg.path, &data, seg.first_seq) {
        Ok(h) => h.version,
        Err(e) => {
            warn(&e);
            return false;
        }
    };
    if version == format::VERSION_1 {
        return false;
    }
    let mut newest: Option<i64> = None;
    let mut pos = HEADER_LEN;
    loop {
        let rec = match format::read_record(&data, pos) {
            Ok(Some(rec)) => rec,
            Ok(None) => break,
            Err(fault) => {
                warn(&fault.reason());
                break;
            }
        };
        match format::split_meta(version, rec.payload) {
            Ok((meta, _)) => {
                newest = newest.max(meta.time_ns);
                if let Some((key, entry)) = key_entry(rec.seq, &meta) {
                    if live(entry.time_ns) {
                        keys.push((key, entry));
                    }
                }
            }
            Err(e) => {
                warn(&e);
                break;
            }
        }
        pos = rec.end;
    }
    newest.is_none_or(live)
}

fn health_of(u: Option<&Unwritable>, retry_after: Duration) -> Health {
    Health {
        writable: u.is_none(),
        reason: u.map(|u| u.reason.clone()),
        disk_full: u.is_some_and(|u| u.disk_full),
        since: u.map(|u| SystemTime::UNIX_EPOCH + Duration::from_nanos(u.since.max(0) as u64)),
        failed_recoveries: u.map_or(0, |u| u.failed_recoveries),
        retry_after,
    }
}

/// The text of a failure for [`Health::reason`] (without the crate prefix
/// of the error's `Display`), and whether it is a full disk.
fn describe(e: &LogError) -> (String, bool) {
    match e {
        LogError::Io { op, path, source } => (
            format!("{op} {}: {source}", path.display()),
            matches!(
                source.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            ),
        ),
        other => (other.to_string(), false),
    }
}

/// Bounds of the probe write a recovery makes: the size of the write that
/// failed, so that "writable again" means the next such write fits, within
/// limits that keep a probe cheap.
const MIN_PROBE_BYTES: usize = 4096;
const MAX_PROBE_BYTES: usize = 1 << 20;

/// The shortest pause between recovery attempts on the writer's own timer,
/// so a zero [`LogConfig::recovery_interval_ms`] cannot make it spin.
const MIN_TIMER: Duration = Duration::from_millis(10);

/// What the writer does with one request of a group.
enum Plan {
    /// To be written (or not reached, if the group failed before it).
    Write,
    /// Framed with this sequence number: durable if it is below
    /// `Writer::durable_next`.
    Written(Seq),
    /// A duplicate of the durable batch with this sequence number.
    Duplicate(Seq),
    /// A duplicate of request `i` of the same group: answered as that one.
    DuplicateOf(usize),
    /// The key of request `i` of the same group, with different readings.
    ConflictWith(usize),
    /// Refused before writing.
    Refuse(LogError),
}

/// The writer thread: gathers queued batches, writes them with one write
/// call and makes them durable with one fdatasync, then answers them all.
///
/// After a failed write, fsync or roll it is "broken": it refuses appends
/// and restores a known-good state ([`Writer::recover`]) on a timer and when
/// asked, at most once per [`LogConfig::recovery_interval_ms`].
struct Writer {
    shared: Arc<Shared>,
    config: LogConfig,
    file: File,
    path: PathBuf,
    /// First sequence number of the active segment.
    first_seq: Seq,
    /// Bytes of the active segment covered by the last successful
    /// fdatasync; nothing after it was acknowledged.
    len: u64,
    /// The sequence number the next framed record gets.
    next_seq: Seq,
    /// One past the last durable record (`next_seq` as of the last
    /// successful fdatasync). Recovery resets `next_seq` to it: the numbers
    /// of records that never became durable were never acknowledged and are
    /// given out again.
    durable_next: Seq,
    buf: Vec<u8>,
    /// What to do with each request of the current group, and what was
    /// done.
    plans: Vec<Plan>,
    /// The log cannot write. Mirrors `State::unwritable`, which only this
    /// thread changes, so the hot path checks it without a lock.
    broken: bool,
    /// When the log broke or a recovery was last attempted.
    last_attempt: Instant,
    /// Bytes of the write that failed, to size the recovery's probe.
    failed_write_len: usize,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        let max_wait = Duration::from_micros(self.config.max_wait_us);
        let mut group: Vec<Request> = Vec::new();
        loop {
            let msg = if self.broken {
                // Recover by itself, also when no append comes to ask.
                let due = self.last_attempt + self.shared.retry_after.max(MIN_TIMER);
                match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        self.recover_if_due();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                // `recv` fails once the `Log` is dropped and the queue is
                // empty.
                match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                }
            };
            let first = match msg {
                Msg::Append(r) => r,
                other => {
                    self.control(other);
                    continue;
                }
            };
            let mut bytes = first.batch.record_len();
            group.push(first);
            let mut after = None;
            let deadline = Instant::now() + max_wait;
            while bytes < self.config.max_group_bytes {
                let next = match rx.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        match rx.recv_timeout(deadline - now) {
                            Ok(r) => r,
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                break
                            }
                        }
                    }
                };
                match next {
                    Msg::Append(next) => {
                        bytes += next.batch.record_len();
                        group.push(next);
                    }
                    // Everything queued before a roll goes in first.
                    other => {
                        after = Some(other);
                        break;
                    }
                }
            }
            self.commit(&mut group);
            if let Some(msg) = after {
                self.control(msg);
            }
        }
    }

    /// A request other than an append.
    fn control(&mut self, msg: Msg) {
        match msg {
            Msg::Append(_) => unreachable!("appends are committed in groups"),
            Msg::Roll(reply) => {
                let _ = reply.send(self.roll_request());
            }
            Msg::Recover(reply) => {
                self.recover_if_due();
                let state = self.shared.state();
                let _ = reply.send(health_of(
                    state.unwritable.as_ref(),
                    self.shared.retry_after,
                ));
            }
        }
    }

    /// [`Log::roll`] on the writer thread: a no-op for an empty segment,
    /// refused while the log cannot write.
    fn roll_request(&mut self) -> Result<()> {
        self.recover_if_due();
        if self.broken {
            return Err(self.unavailable());
        }
        if self.len <= HEADER_LEN as u64 {
            return Ok(());
        }
        self.roll().map_err(|e| self.fail(e))
    }

    fn commit(&mut self, group: &mut Vec<Request>) {
        self.recover_if_due();
        self.plans.clear();
        let keyed = group.iter().any(|r| r.batch.key.is_some());
        if keyed {
            self.plan_keys(group);
        } else {
            self.plans.extend(group.iter().map(|_| Plan::Write));
        }
        let to_write = self.plans.iter().any(|p| matches!(p, Plan::Write));
        let failed = if self.broken {
            to_write
        } else if !to_write {
            false
        } else if let Err(e) = self.write_group(group) {
            self.fail(e);
            true
        } else {
            false
        };
        if keyed {
            self.remember_keys(group);
        }
        let c = &self.shared.counters;
        if to_write && !failed {
            c.commits.fetch_add(1, Ordering::Relaxed);
        }
        let durable = |plan: &Plan| match plan {
            Plan::Written(seq) if *seq < self.durable_next => Some(*seq),
            _ => None,
        };
        // A request that repeats another of its group gets that one's fate.
        for (i, req) in group.iter().enumerate() {
            let resolved = match self.plans[i] {
                Plan::DuplicateOf(j) => Some(match durable(&self.plans[j]) {
                    Some(seq) => Plan::Duplicate(seq),
                    None => Plan::Write,
                }),
                Plan::ConflictWith(j) => Some(match durable(&self.plans[j]) {
                    Some(seq) => Plan::Refuse(LogError::KeyReused {
                        key: req.batch.key.as_deref().unwrap_or_default().into(),
                        seq,
                    }),
                    None => Plan::Write,
                }),
                _ => None,
            };
            if let Some(plan) = resolved {
                self.plans[i] = plan;
            }
        }
        let mut plans = std::mem::take(&mut self.plans);
        for (req, plan) in group.drain(..).zip(plans.drain(..)) {
            let answer = match plan {
                // Durable: also in a group that failed after a roll, whose
                // records before the roll were synced. Answering them `Ok`
                // is the truth, and spares their senders a retry.
                Plan::Written(seq) if seq < self.durable_next => {
                    c.batches.fetch_add(1, Ordering::Relaxed);
                    c.readings
                        .fetch_add(req.batch.readings as u64, Ordering::Relaxed);
                    Ok(Appended {
                        seq,
                        duplicate: false,
                    })
                }
                Plan::Duplicate(seq) => {
                    c.duplicates.fetch_add(1, Ordering::Relaxed);
                    Ok(Appended {
                        seq,
                        duplicate: true,
                    })
                }
                Plan::Refuse(e) => {
                    if matches!(e, LogError::KeyReused { .. }) {
                        c.key_conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e)
                }
                _ => Err(self.unavailable()),
            };
            // The appender may have gone away; a durable batch stays
            // durable all the same.
            let _ = req.reply.send(answer);
        }
        self.plans = plans;
    }

    /// Decides, for a group holding keyed requests, which requests are
    /// duplicates (of a stored batch, or of an earlier request of the group)
    /// and which reuse a key for different readings. Deduplicating here, on
    /// the single writer thread, means two concurrent appends of one key can
    /// never both be written.
    fn plan_keys(&mut self, group: &[Request]) {
        let now = self.shared.now_ns();
        let index = self.shared.keys();
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, req) in group.iter().enumerate() {
            let (Some(key), Some(digest)) = (req.batch.key.as_deref(), req.batch.digest) else {
                self.plans.push(Plan::Write);
                continue;
            };
            let plan = if let Some(&j) = first.get(key) {
                if group[j].batch.digest == Some(digest) {
                    Plan::DuplicateOf(j)
                } else {
                    Plan::ConflictWith(j)
                }
            } else {
                match index.get(key, now) {
                    Some(e) if e.digest == digest => Plan::Duplicate(e.seq),
                    Some(e) => Plan::Refuse(LogError::KeyReused {
                        key: key.into(),
                        seq: e.seq,
                    }),
                    None => {
                        first.insert(key, i);
                        Plan::Write
                    }
                }
            };
            self.plans.push(plan);
        }
    }

    /// Remembers the keys of the group's batches that became durable.
    fn remember_keys(&mut self, group: &[Request]) {
        let now = self.shared.now_ns();
        let mut index = self.shared.keys();
        let mut evicted = 0;
        for (req, plan) in group.iter().zip(&self.plans) {
            if let (Plan::Written(seq), Some(key), Some(digest)) =
                (plan, req.batch.key.as_deref(), req.batch.digest)
            {
                if *seq < self.durable_next {
                    let entry = KeyEntry {
                        seq: *seq,
                        time_ns: req.batch.time_ns,
                        digest,
                    };
                    evicted += index.insert(key, entry, now);
                }
            }
        }
        let c = &self.shared.counters;
        c.keys_evicted.fetch_add(evicted, Ordering::Relaxed);
        c.keys.store(index.len() as u64, Ordering::Relaxed);
    }

    /// Writes the requests planned for writing, rolling segments as needed,
    /// and syncs, recording each one's sequence number in its plan.
    fn write_group(&mut self, group: &[Request]) -> Result<()> {
        self.buf.clear();
        for (i, req) in group.iter().enumerate() {
            if !matches!(self.plans[i], Plan::Write) {
                continue;
            }
            let rec_len = req.batch.record_len() as u64;
            let filled = self.len + self.buf.len() as u64;
            if filled + rec_len > self.config.max_segment_bytes && filled > HEADER_LEN as u64 {
                self.flush_and_sync()?;
                self.roll()?;
            }
            self.plans[i] = Plan::Written(self.next_seq);
            format::frame_record(&mut self.buf, self.next_seq, &req.batch);
            self.next_seq += 1;
        }
        self.flush_and_sync()
    }

    fn flush_and_sync(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| LogError::io("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| LogError::io("fdatasync", &self.path, e))?;
        let c = &self.shared.counters;
        c.fsyncs.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.len += self.buf.len() as u64;
        self.durable_next = self.next_seq;
        self.buf.clear();
        self.shared.state().active_durable_len = self.len;
        Ok(())
    }

    /// Closes the active segment (already synced) and starts the next one.
    fn roll(&mut self) -> Result<()> {
        let (file, path) = create_segment(&self.shared.dir, self.next_seq)?;
        self.shared
            .counters
            .segments_created
            .fetch_add(1, Ordering::Relaxed);
        let old_path = std::mem::replace(&mut self.path, path.clone());
        self.file = file;
        let old_len = std::mem::replace(&mut self.len, HEADER_LEN as u64);
        let old_first = std::mem::replace(&mut self.first_seq, self.next_seq);
        let mut state = self.shared.state();
        state.closed.push(SegmentInfo {
            path: old_path,
            first_seq: old_first,
            end_seq: self.next_seq,
            bytes: old_len,
        });
        state.active_path = path;
        state.active_first_seq = self.next_seq;
        state.active_durable_len = HEADER_LEN as u64;
        Ok(())
    }

    /// Marks the log unwritable after a failed write, fsync or roll, and
    /// returns the error for the appenders.
    fn fail(&mut self, e: LogError) -> LogError {
        let (reason, disk_full) = describe(&e);
        tracing::error!(
            error = %reason,
            disk_full,
            "ingest log: cannot write; refusing appends until a recovery succeeds"
        );
        self.broken = true;
        self.last_attempt = Instant::now();
        self.failed_write_len = self.buf.len();
        self.buf.clear();
        self.shared
            .counters
            .write_failures
            .fetch_add(1, Ordering::Relaxed);
        self.shared.state().unwritable = Some(Unwritable {
            reason,
            disk_full,
            since: self.shared.clock.now(),
            failed_recoveries: 0,
        });
        self.unavailable()
    }

    /// The error for an append refused while the log cannot write.
    fn unavailable(&self) -> LogError {
        let state = self.shared.state();
        let u = state.unwritable.as_ref();
        LogError::Unavailable {
            reason: u.map_or_else(|| "unknown failure".into(), |u| u.reason.clone()),
            disk_full: u.is_some_and(|u| u.disk_full),
            retry_after: self.shared.retry_after,
        }
    }

    /// Attempts a recovery if the log is unwritable and the last attempt is
    /// at least [`LogConfig::recovery_interval_ms`] old, so a full disk is
    /// not hammered.
    fn recover_if_due(&mut self) {
        if !self.broken || self.last_attempt.elapsed() < self.shared.retry_after {
            return;
        }
        self.last_attempt = Instant::now();
        let outcome = self.recover();
        let c = &self.shared.counters;
        match outcome {
            Ok(()) => {
                self.broken = false;
                let was = self.shared.state().unwritable.take();
                c.recoveries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    next_seq = self.next_seq,
                    failed_attempts = was.as_ref().map_or(0, |u| u.failed_recoveries),
                    unwritable_for_ms =
                        was.map_or(0, |u| (self.shared.clock.now().saturating_sub(u.since))
                            .max(0)
                            / 1_000_000),
                    "ingest log: writable again"
                );
            }
            Err(e) => {
                let (reason, disk_full) = describe(&e);
                c.failed_recoveries.fetch_add(1, Ordering::Relaxed);
                let mut state = self.shared.state();
                if let Some(u) = state.unwritable.as_mut() {
                    u.failed_recoveries += 1;
                    // A warning on the 1st, 2nd, 4th, 8th… failure: the
                    // state is visible in `health` anyway.
                    if u.failed_recoveries.is_power_of_two() {
                        tracing::warn!(error = %reason, attempts = u.failed_recoveries, "ingest log: still cannot write");
                    }
                    u.reason = reason;
                    u.disk_full = disk_full;
                }
            }
        }
    }

    /// Restores a known-good state in place after a failed write, fsync or
    /// roll, and checks that the disk takes a write again:
    ///
    /// 1. a segment file created by a failed roll (any segment after the
    ///    active one) is removed: no record was written to it;
    /// 2. the active segment is reopened with a new descriptor (after a
    ///    failed fsync the old one's error state and the page cache no
    ///    longer tell what is on disk) and truncated to `len`, the extent
    ///    of the last successful fdatasync: everything after it was never
    ///    acknowledged;
    /// 3. a probe of zeros, as large as the failed write (within bounds), is
    ///    written after `len` and synced, then cut again: a full disk fails
    ///    here, so "writable" means a write of that size fits;
    /// 4. file and directory are synced, and `next_seq` goes back to one
    ///    past the last durable record.
    ///
    /// A crash in the middle leaves at most zeros or a torn record after the
    /// durable end, which [`Log::open`] cuts like any torn tail.
    fn recover(&mut self) -> Result<()> {
        let dir = self.shared.dir.clone();
        for (seq, path) in list_segments(&dir)? {
            if seq > self.first_seq {
                fs::remove_file(&path).map_err(|e| LogError::io("remove", &path, e))?;
                tracing::warn!(path = %path.display(), "ingest log: removed the segment of a failed roll");
            }
        }
        let path = self.path.clone();
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io("reopen", &path, e))?;
        file.set_len(self.len)
            .map_err(|e| LogError::io("truncate", &path, e))?;
        file.seek(SeekFrom::Start(self.len))
            .map_err(|e| LogError::io("seek", &path, e))?;
        let probe = vec![
            0u8;
            self.failed_write_len
                .clamp(MIN_PROBE_BYTES, MAX_PROBE_BYTES)
        ];
        let probed = file.write_all(&probe).and_then(|()| file.sync_data());
        file.set_len(self.len)
            .map_err(|e| LogError::io("truncate", &path, e))?;
        file.sync_all()
            .map_err(|e| LogError::io("fsync", &path, e))?;
        probed.map_err(|e| LogError::io("write a recovery probe to", &path, e))?;
        sync_dir(&dir)?;
        file.seek(SeekFrom::Start(self.len))
            .map_err(|e| LogError::io("seek", &path, e))?;
        self.file = file;
        self.next_seq = self.durable_next;
        self.buf.clear();
        self.shared.state().active_durable_len = self.len;
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// A batch read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Its sequence number.
    pub seq: Seq,
    /// Its readings, in the order they were appended.
    pub readings: Readings,
    /// The idempotency key it was appended with, if any (always `None` in
    /// a format version 1 segment).
    pub key: Option<String>,
}

/// Iterator over durable batches, from [`Log::replay`].
pub struct Replay {
    segments: VecDeque<(PathBuf, Seq, Option<u64>)>,
    current: Option<Current>,
    from_seq: Seq,
    done: bool,
}

struct Current {
    path: PathBuf,
    version: u32,
    data: Vec<u8>,
    pos: usize,
    expected: Seq,
}

impl Replay {
    fn fail(&mut self, e: LogError) -> Option<Result<Batch>> {
        self.done = true;
        Some(Err(e))
    }
}

impl Iterator for Replay {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        while !self.done {
            let Some(cur) = self.current.as_mut() else {
                let (path, first_seq, limit) = self.segments.pop_front()?;
                let data = match read_file(&path, limit) {
                    Ok(d) => d,
                    Err(e) => return self.fail(e),
                };
                let version = match check_header(&path, &data, first_seq) {
                    Ok(h) => h.version,
                    Err(e) => return self.fail(e),
                };
                self.current = Some(Current {
                    path,
                    version,
                    data,
                    pos: HEADER_LEN,
                    expected: first_seq,
                });
                continue;
            };
            let corrupt = |reason: String| LogError::Corrupt {
                path: cur.path.clone(),
                offset: cur.pos as u64,
                reason,
            };
            let rec = match format::read_record(&cur.data, cur.pos) {
                Ok(None) => {
                    self.current = None;
                    continue;
                }
                Ok(Some(rec)) => rec,
                Err(RecordFault::Incomplete(r) | RecordFault::Invalid(r)) => {
                    let e = corrupt(r);
                    return self.fail(e);
                }
            };
            if rec.seq != cur.expected {
                let e = corrupt(format!(
                    "sequence number {} where {} was expected",
                    rec.seq, cur.expected
                ));
                return self.fail(e);
            }
            let (seq, end) = (rec.seq, rec.end);
            if seq < self.from_seq {
                cur.expected += 1;
                cur.pos = end;
                continue;
            }
            let decoded =
                format::split_meta(cur.version, rec.payload).and_then(|(meta, payload)| {
                    Ok((
                        meta.key.map(str::to_owned),
                        format::decode_payload(payload)?,
                    ))
                });
            let (key, readings) = match decoded {
                Ok(d) => d,
                Err(reason) => {
                    let e = corrupt(reason);
                    return self.fail(e);
                }
            };
            cur.expected += 1;
            cur.pos = end;
            return Some(Ok(Batch { seq, readings, key }));
        }
        None
    }
}
