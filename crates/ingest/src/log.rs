//! The log: opening and recovery, the group-commit writer thread, segment
//! rolling, listing and removal, and replay.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::format::{self, EncodedBatch, RecordFault, HEADER_LEN};
use crate::{Reading, Seq};

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
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_segment_bytes: 64 << 20,
            max_group_bytes: 8 << 20,
            max_wait_us: 0,
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
}

/// What the writer publishes for readers: the durable extent of the log.
struct State {
    closed: Vec<SegmentInfo>,
    active_path: PathBuf,
    active_first_seq: Seq,
    /// Bytes of the active segment covered by the last fdatasync.
    active_durable_len: u64,
    /// Set by the first failed write or fsync.
    poisoned: Option<String>,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    counters: Counters,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is updated in single assignments, so it is consistent
        // even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Request {
    batch: EncodedBatch,
    reply: SyncSender<Result<Seq>>,
}

/// What the writer thread is asked to do.
enum Msg {
    Append(Request),
    /// Close the active segment if it holds records ([`Log::roll`]).
    Roll(SyncSender<Result<()>>),
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

fn check_header(path: &Path, data: &[u8], name_seq: Seq) -> Result<()> {
    let first = format::decode_header(data).map_err(|reason| LogError::BadHeader {
        path: path.to_owned(),
        reason,
    })?;
    if first != name_seq {
        return Err(LogError::BadHeader {
            path: path.to_owned(),
            reason: format!("header says first seq {first}, file name says {name_seq}"),
        });
    }
    Ok(())
}

impl Log {
    /// Opens the log in `dir` (created if missing), running recovery: a torn
    /// record at the end of the last segment, and anything after it, is cut
    /// away (see [`Log::recovery`]). Starts the writer thread.
    ///
    /// Only one `Log` may have a directory open at a time; this is not
    /// checked.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
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
        let (file, path, first_seq, len, next_seq) = match segments.last() {
            None => {
                let (file, path) = create_segment(&dir, 0)?;
                counters.segments_created.fetch_add(1, Ordering::Relaxed);
                (file, path, 0, HEADER_LEN as u64, 0)
            }
            Some((first_seq, path)) => {
                let (file, len, next) = recover_last(&dir, path, *first_seq, &mut recovery)?;
                (file, path.clone(), *first_seq, len, next)
            }
        };
        recovery.next_seq = next_seq;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            state: Mutex::new(State {
                closed,
                active_path: path.clone(),
                active_first_seq: first_seq,
                active_durable_len: len,
                poisoned: None,
            }),
            counters,
        });
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            shared: Arc::clone(&shared),
            config,
            file,
            path,
            len,
            next_seq,
            buf: Vec::new(),
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
    /// the batch is durable (written and covered by an fdatasync).
    ///
    /// Blocks the calling thread until then; from async code call it through
    /// `tokio::task::spawn_blocking`. Encoding and checksumming run on the
    /// calling thread. An error means the batch may or may not be on disk
    /// (see the crate documentation).
    pub fn append(&self, readings: &[Reading]) -> Result<Seq> {
        let res = self.append_inner(readings);
        if res.is_err() {
            self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn append_inner(&self, readings: &[Reading]) -> Result<Seq> {
        let batch = format::encode_payload(readings).map_err(|bytes| LogError::BatchTooLarge {
            bytes,
            max: format::MAX_BODY_LEN,
        })?;
        let (reply, answer) = mpsc::sync_channel(1);
        let closed = || LogError::Poisoned("the writer thread has stopped".into());
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
        let closed = || LogError::Poisoned("the writer thread has stopped".into());
        self.tx
            .as_ref()
            .ok_or_else(closed)?
            .send(Msg::Roll(reply))
            .map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
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
    pub fn remove_segment(&self, first_seq: Seq) -> Result<()> {
        let mut state = self.shared.state();
        if state.active_first_seq == first_seq {
            return Err(LogError::ActiveSegment(first_seq));
        }
        let i = state
            .closed
            .iter()
            .position(|s| s.first_seq == first_seq)
            .ok_or(LogError::NoSuchSegment(first_seq))?;
        let path = state.closed[i].path.clone();
        fs::remove_file(&path).map_err(|e| LogError::io("remove", &path, e))?;
        state.closed.remove(i);
        drop(state);
        sync_dir(&self.shared.dir)
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
/// Returns the file, its length and the next sequence number.
fn recover_last(
    dir: &Path,
    path: &Path,
    first_seq: Seq,
    recovery: &mut Recovery,
) -> Result<(File, u64, Seq)> {
    let data = read_file(path, None)?;
    if data.len() < HEADER_LEN {
        // A crash while the segment was being created: its header was never
        // made durable, so no record can be in it. Its name is the first
        // sequence number it was meant for; start it again.
        tracing::warn!(path = %path.display(), bytes = data.len(), "ingest log: recreating a segment with a torn header");
        recovery.truncated_bytes = data.len() as u64;
        recovery.reason = Some("torn segment header".into());
        let (file, _) = create_segment(dir, first_seq)?;
        return Ok((file, HEADER_LEN as u64, first_seq));
    }
    check_header(path, &data, first_seq)?;
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
    Ok((file, pos as u64, expected))
}

/// The writer thread: gathers queued batches, writes them with one write
/// call and makes them durable with one fdatasync, then answers them all.
struct Writer {
    shared: Arc<Shared>,
    config: LogConfig,
    file: File,
    path: PathBuf,
    len: u64,
    next_seq: Seq,
    buf: Vec<u8>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        let max_wait = Duration::from_micros(self.config.max_wait_us);
        let mut group: Vec<Request> = Vec::new();
        // `recv` fails once the `Log` is dropped and the queue is empty.
        while let Ok(msg) = rx.recv() {
            let first = match msg {
                Msg::Append(r) => r,
                Msg::Roll(reply) => {
                    let _ = reply.send(self.roll_request());
                    continue;
                }
            };
            let mut bytes = first.batch.record_len();
            group.push(first);
            let mut roll = None;
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
                    // Everything queued before the roll goes in first.
                    Msg::Roll(reply) => {
                        roll = Some(reply);
                        break;
                    }
                }
            }
            self.commit(&mut group);
            if let Some(reply) = roll {
                let _ = reply.send(self.roll_request());
            }
        }
    }

    /// [`Log::roll`] on the writer thread: a no-op for an empty segment,
    /// refused once poisoned.
    fn roll_request(&mut self) -> Result<()> {
        if let Some(why) = self.shared.state().poisoned.clone() {
            return Err(LogError::Poisoned(why));
        }
        if self.len <= HEADER_LEN as u64 {
            return Ok(());
        }
        self.roll().inspect_err(|e| {
            let why = e.to_string();
            tracing::error!(error = %why, "ingest log: roll failed, refusing further appends");
            self.shared.state().poisoned = Some(why);
        })
    }

    fn commit(&mut self, group: &mut Vec<Request>) {
        let poisoned = self.shared.state().poisoned.clone();
        let result = match poisoned {
            Some(why) => Err(why),
            None => self.write_group(group).map_err(|e| {
                let why = e.to_string();
                tracing::error!(error = %why, "ingest log: write failed, refusing further appends");
                self.shared.state().poisoned = Some(why.clone());
                why
            }),
        };
        let c = &self.shared.counters;
        match result {
            Ok(first_seq) => {
                c.commits.fetch_add(1, Ordering::Relaxed);
                c.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
                for (i, req) in group.drain(..).enumerate() {
                    c.readings
                        .fetch_add(req.batch.readings as u64, Ordering::Relaxed);
                    // The appender may have gone away; its batch is durable
                    // all the same.
                    let _ = req.reply.send(Ok(first_seq + i as u64));
                }
            }
            Err(why) => {
                for req in group.drain(..) {
                    let _ = req.reply.send(Err(LogError::Poisoned(why.clone())));
                }
            }
        }
    }

    /// Writes the group, rolling segments as needed, and syncs. Returns the
    /// first sequence number of the group.
    fn write_group(&mut self, group: &[Request]) -> Result<Seq> {
        let first_seq = self.next_seq;
        self.buf.clear();
        for req in group {
            let rec_len = req.batch.record_len() as u64;
            let filled = self.len + self.buf.len() as u64;
            if filled + rec_len > self.config.max_segment_bytes && filled > HEADER_LEN as u64 {
                self.flush_and_sync()?;
                self.roll()?;
            }
            format::frame_record(&mut self.buf, self.next_seq, &req.batch);
            self.next_seq += 1;
        }
        self.flush_and_sync()?;
        Ok(first_seq)
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
        let mut state = self.shared.state();
        let old_first = state.active_first_seq;
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
    pub readings: Vec<Reading>,
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
                if let Err(e) = check_header(&path, &data, first_seq) {
                    return self.fail(e);
                }
                self.current = Some(Current {
                    path,
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
            let readings = match format::decode_payload(rec.payload) {
                Ok(r) => r,
                Err(reason) => {
                    let e = corrupt(reason);
                    return self.fail(e);
                }
            };
            cur.expected += 1;
            cur.pos = end;
            return Some(Ok(Batch { seq, readings }));
        }
        None
    }
}
