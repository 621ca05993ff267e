//! Streaming windows in `fleetscore serve`: every batch the ingest log
//! acknowledges goes through the window aggregator, and closed windows are
//! written to the store's `windows/` folder, each exactly once, across
//! crashes and restarts.
//!
//! # How exactly-once works
//!
//! One thread owns the [`Aggregator`] and feeds it the log's batches in
//! sequence order (sources hand it each batch right after the durable
//! append; a batch that arrives early waits for the ones before it, and a
//! gap is filled from the log itself). Every `flush_interval` it *flushes*:
//!
//! 1. the windows closed since the last flush are written to
//!    `windows/size=…/date=…/hour=…/part-<C>.parquet` (partitioned by window
//!    start, as `fleetscore aggregate` does), where `C` is the log position of
//!    the previous checkpoint, zero-padded to 20 digits;
//! 2. then a *checkpoint* is written atomically to `DATA/windows/checkpoint`:
//!    the log position `S` up to which every batch has been aggregated, and a
//!    snapshot of the aggregator (its open windows and clocks, see
//!    [`Aggregator::snapshot`]).
//!
//! The compactor deletes a log segment only once its batches are in `raw/`
//! *and* before the checkpoint. On start the checkpoint is restored and the
//! log is replayed from `S` (rebuilding the open windows from the log, as
//! the crashed process had them), and the first flush is done before
//! anything new is accepted. The aggregator is deterministic, so that flush
//! produces every window the crashed process may have written after `S`
//! (plus those of the later batches) under the same name `part-<S>`: files
//! written before the crash are overwritten with a superset, nothing is
//! written twice and nothing is lost. Windows still open at shutdown are
//! kept in the checkpoint, not emitted half-full.
//!
//! # Bounded memory
//!
//! The aggregator releases a series once all of its windows are closed and
//! keeps at most `[stream] max_series` live; readings that would start one
//! more are shed (counted as dropped, reason `series_limit`, and logged at
//! each flush; they are in the log and `raw/`, so `fleetscore aggregate`
//! recomputes their windows). A device that stops sending would keep its
//! last windows open for ever, so each flush first closes the windows of
//! devices that sent nothing for `[stream] close_idle_after` (processing
//! time, counted from this process's start: after a restart every device
//! gets a full period again) with [`Aggregator::close_quiet`]. That call
//! depends on the wall clock, which a replay of the log cannot repeat; it
//! is made only in a flush that has new batches, right before the
//! checkpoint, so its effect is either in the checkpoint or, after a crash
//! before the checkpoint, not made at all: the rebuilt aggregator keeps
//! those windows open, and the first flush overwrites `part-<S>` without
//! them. Either way each window is written once. (A flush without new
//! batches would name its objects like the previous flush and overwrite
//! them, so it closes nothing.)
//!
//! If the window settings change between runs, the snapshot no longer fits:
//! the open windows of the old settings are dropped (a warning says how
//! many) and the new ones start from the log position of the checkpoint.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{bail, Context};
use fleetscore_codecs::write_batch_parquet;
use fleetscore_core::Readings;
use fleetscore_ingest::{Log, LogError, Seq};
use fleetscore_store::lake::{window_part_key, WindowPart};
use fleetscore_store::{Store, HOUR_NS};
use fleetscore_stream::{
    windows_to_record_batch, Aggregator, AggregatorConfig, ClosedWindow, Counters, Error, Window,
};

/// Magic of the checkpoint file, then the log position (u64 LE), then the
/// aggregator snapshot.
const CHECKPOINT_MAGIC: &[u8; 8] = b"FSWCKPT1";

/// The path of the checkpoint under the data folder.
pub fn checkpoint_path(data: &Path) -> PathBuf {
    data.join("windows").join("checkpoint")
}

/// What the window thread reports, for `/metrics` and logs.
#[derive(Default)]
pub struct WindowStats {
    counters: Mutex<Counters>,
    /// Open panes (a gauge).
    pub open_panes: AtomicU64,
    /// Live (device, tag) series: those with open windows (a gauge).
    pub series: AtomicU64,
    /// The most live series (`[stream] max_series`).
    pub max_series: AtomicU64,
    /// Clocks kept for devices without live series (a gauge).
    pub idle_clocks: AtomicU64,
    /// The log position of the last durable checkpoint: every batch before
    /// it is aggregated and its closed windows are in the store.
    pub checkpoint: AtomicU64,
    /// Windows written to the store.
    pub windows_written: AtomicU64,
    /// Window objects written to the store.
    pub objects_written: AtomicU64,
    /// Flushes that succeeded.
    pub flushes: AtomicU64,
    /// Flushes that failed (retried at the next one).
    pub flush_errors: AtomicU64,
    /// Microseconds spent in successful flushes.
    pub flush_micros: AtomicU64,
}

impl WindowStats {
    /// The aggregator's counters as of its last batch.
    pub fn counters(&self) -> Counters {
        *self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Msg {
    Batch(Seq, Arc<Readings>),
    Flush(SyncSender<anyhow::Result<FlushOutcome>>),
}

/// What one flush wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlushOutcome {
    /// Windows written.
    pub windows: usize,
    /// Objects written.
    pub objects: usize,
    /// The checkpoint's log position afterwards.
    pub checkpoint: Seq,
}

/// The running window thread.
pub struct Windows {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WindowStats>,
}

/// How [`Windows::start`] found things.
#[derive(Debug, Clone, Default)]
pub struct Started {
    /// The checkpoint it restored from, if any.
    pub restored_from: Option<Seq>,
    /// Batches and readings replayed from the log past the checkpoint.
    pub replayed_batches: u64,
    /// Readings in them.
    pub replayed_readings: u64,
    /// What the first flush wrote.
    pub first_flush: FlushOutcome,
    /// Set when the snapshot did not fit the settings and was dropped.
    pub dropped_snapshot: Option<String>,
}

impl Windows {
    /// Restores the checkpoint under `data` (if any), replays the log past
    /// it, flushes, and starts the window thread. Call before anything is
    /// appended to `log`. Must be called inside a tokio runtime (the thread
    /// writes to the store through it).
    pub fn start(
        config: AggregatorConfig,
        log: Arc<Log>,
        store: Store,
        data: &Path,
    ) -> anyhow::Result<(Windows, Started)> {
        let path = checkpoint_path(data);
        let mut started = Started::default();
        let (agg, checkpoint) = match read_checkpoint(&path)? {
            None => (Aggregator::new(config)?, 0),
            Some((seq, snapshot)) => {
                started.restored_from = Some(seq);
                match Aggregator::restore(config.clone(), &snapshot) {
                    Ok(agg) => (agg, seq),
                    Err(e @ Error::SnapshotConfig { .. }) => {
                        tracing::warn!(
                            error = %e,
                            log_position = seq,
                            "the window checkpoint does not fit the settings: the windows open \
                             under the old ones are dropped; the new ones start at the \
                             checkpoint's log position"
                        );
                        started.dropped_snapshot = Some(e.to_string());
                        (Aggregator::new(config)?, seq)
                    }
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!(
                                "reading the window checkpoint {}; move it away to start the \
                                 windows afresh (their open windows are then lost)",
                                path.display()
                            )
                        })
                    }
                }
            }
        };
        let log_end = log.recovery().next_seq;
        if checkpoint > log_end {
            bail!(
                "the ingest log in {} ends at position {log_end}, before the window checkpoint \
                 {} at {checkpoint}: the log was removed or replaced. Move the checkpoint away \
                 to start the windows afresh",
                log.dir().display(),
                path.display()
            );
        }
        let stats = Arc::new(WindowStats::default());
        stats.checkpoint.store(checkpoint, Ordering::Relaxed);
        stats
            .max_series
            .store(agg.config().max_series as u64, Ordering::Relaxed);
        let idle_secs = agg.config().close_idle_after.as_nanos() / 1_000_000_000;
        let mut worker = Worker {
            agg,
            log,
            store,
            rt: tokio::runtime::Handle::current(),
            path,
            next_seq: checkpoint,
            checkpoint,
            early: BTreeMap::new(),
            pending: Vec::new(),
            stats: Arc::clone(&stats),
            started: Instant::now(),
            idle_secs: u64::try_from(idle_secs).unwrap_or(0),
            shed_logged: 0,
        };
        // Rebuild: the batches after the checkpoint, as the crashed (or
        // stopped) process pushed them.
        for batch in worker.log.replay(checkpoint) {
            let batch = batch.context("replaying the ingest log into the windows")?;
            if batch.seq != worker.next_seq {
                bail!(
                    "the ingest log lacks positions {}..{} after the window checkpoint; \
                     move {} away to start the windows afresh",
                    worker.next_seq,
                    batch.seq,
                    worker.path.display()
                );
            }
            started.replayed_batches += 1;
            started.replayed_readings += batch.readings.len() as u64;
            worker.push(&batch.readings);
            worker.next_seq += 1;
        }
        worker.next_seq = worker.next_seq.max(log_end);
        started.first_flush = worker
            .flush()
            .context("writing the windows closed by the replayed log")?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("windows".into())
            .spawn(move || {
                // The thread's log lines say whose they are.
                let _span = tracing::info_span!("windows").entered();
                worker.run(rx);
            })
            .context("starting the window thread")?;
        Ok((
            Windows {
                tx,
                thread: Some(thread),
                stats,
            },
            started,
        ))
    }

    /// Hands a durable batch to the aggregator (in any order; it sorts them
    /// by position).
    pub fn push(&self, seq: Seq, readings: Arc<Readings>) {
        let _ = self.tx.send(Msg::Batch(seq, readings));
    }

    /// Writes the windows closed so far and a checkpoint, after every batch
    /// handed over before this call (blocking: call from a blocking thread).
    pub fn flush(&self) -> anyhow::Result<FlushOutcome> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Flush(reply))
            .map_err(|_| anyhow::anyhow!("the window thread has stopped"))?;
        answer
            .recv()
            .map_err(|_| anyhow::anyhow!("the window thread has stopped"))?
    }

    /// The thread's figures.
    pub fn stats(&self) -> &Arc<WindowStats> {
        &self.stats
    }
}

impl Drop for Windows {
    fn drop(&mut self) {
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    agg: Aggregator,
    log: Arc<Log>,
    store: Store,
    rt: tokio::runtime::Handle,
    path: PathBuf,
    /// The position of the next batch to aggregate.
    next_seq: Seq,
    /// The position of the last durable checkpoint; names the next flush's
    /// objects.
    checkpoint: Seq,
    /// Batches that arrived before an earlier one.
    early: BTreeMap<Seq, Arc<Readings>>,
    /// Closed windows not yet in the store.
    pending: Vec<ClosedWindow>,
    stats: Arc<WindowStats>,
    /// Arrival times are seconds since this.
    started: Instant,
    /// `close_idle_after` in seconds; 0: quiet devices are not closed.
    idle_secs: u64,
    /// The shed count last logged.
    shed_logged: u64,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Batch(seq, readings) => {
                    if seq == self.next_seq {
                        self.push(&readings);
                        self.next_seq += 1;
                        while let Some(r) = self.early.remove(&self.next_seq) {
                            self.push(&r);
                            self.next_seq += 1;
                        }
                    } else if seq > self.next_seq {
                        self.early.insert(seq, readings);
                    }
                    self.publish();
                }
                Msg::Flush(reply) => {
                    let res = self.fill_gap().and_then(|()| self.flush());
                    let _ = reply.send(res);
                }
            }
        }
    }

    fn push(&mut self, readings: &Readings) {
        self.agg.set_arrival_time(self.started.elapsed().as_secs());
        self.agg.push_batch(readings);
        self.pending.extend(self.agg.drain_closed());
    }

    fn publish(&self) {
        *self
            .stats
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.agg.counters();
        self.stats
            .open_panes
            .store(self.agg.open_panes(), Ordering::Relaxed);
        self.stats
            .series
            .store(self.agg.series_count() as u64, Ordering::Relaxed);
        self.stats
            .idle_clocks
            .store(self.agg.idle_clocks() as u64, Ordering::Relaxed);
    }

    /// Closes the windows of devices quiet for `close_idle_after` (see the
    /// module docs for why only here), and says when readings were shed.
    fn close_quiet(&mut self) {
        let now = self.started.elapsed().as_secs();
        if self.idle_secs > 0 && self.next_seq > self.checkpoint && now > self.idle_secs {
            self.agg.close_quiet(now - self.idle_secs);
        }
        let shed = self.agg.counters().shed;
        if shed > self.shed_logged {
            tracing::warn!(
                shed = shed - self.shed_logged,
                live_series = self.agg.series_count(),
                max_series = self.agg.config().max_series,
                "window series limit reached: readings of new series were not windowed; they \
                 are stored in raw/ (recompute their windows with `fleetscore aggregate`), or \
                 raise [stream] max_series if memory allows"
            );
            self.shed_logged = shed;
        }
    }

    /// Batches that were appended but never handed over (a source that
    /// failed between the append and the hand-over) are read from the log,
    /// so that a flush never waits forever.
    fn fill_gap(&mut self) -> anyhow::Result<()> {
        let Some(&first_early) = self.early.keys().next() else {
            return Ok(());
        };
        tracing::warn!(
            from = self.next_seq,
            to = first_early,
            "batches missing in the window thread; reading them from the log"
        );
        for batch in self.log.replay(self.next_seq) {
            let batch = batch?;
            if batch.seq >= first_early {
                break;
            }
            self.push(&batch.readings);
            self.next_seq = batch.seq + 1;
        }
        while let Some(r) = self.early.remove(&self.next_seq) {
            self.push(&r);
            self.next_seq += 1;
        }
        self.publish();
        Ok(())
    }

    /// Writes the pending windows, then the checkpoint. On failure the
    /// windows stay pending and go out with the next flush, under the same
    /// name.
    fn flush(&mut self) -> anyhow::Result<FlushOutcome> {
        let started = Instant::now();
        self.close_quiet();
        self.pending.extend(self.agg.drain_closed());
        if self.pending.is_empty() && self.next_seq == self.checkpoint {
            return Ok(FlushOutcome {
                checkpoint: self.checkpoint,
                ..FlushOutcome::default()
            });
        }
        let res = self.write();
        let s = &self.stats;
        match res {
            Ok(objects) => {
                let windows = self.pending.len();
                self.pending.clear();
                self.checkpoint = self.next_seq;
                s.checkpoint.store(self.checkpoint, Ordering::Relaxed);
                s.windows_written
                    .fetch_add(windows as u64, Ordering::Relaxed);
                s.objects_written
                    .fetch_add(objects as u64, Ordering::Relaxed);
                s.flushes.fetch_add(1, Ordering::Relaxed);
                s.flush_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                self.publish();
                Ok(FlushOutcome {
                    windows,
                    objects,
                    checkpoint: self.checkpoint,
                })
            }
            Err(e) => {
                s.flush_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn write(&mut self) -> anyhow::Result<usize> {
        let objects = window_objects(&self.agg.config().windows, &self.pending, self.checkpoint)?;
        let n = objects.len();
        for (key, data) in objects {
            self.rt
                .block_on(self.store.put(&key, data))
                .with_context(|| format!("writing {key}"))?;
        }
        write_checkpoint(&self.path, self.next_seq, &self.agg.snapshot())?;
        Ok(n)
    }
}

/// The objects of `windows`: one per spec and hour of window start, named
/// `part-<name>`, rows sorted by (start, device, tag).
fn window_objects(
    specs: &[fleetscore_stream::WindowSpec],
    windows: &[ClosedWindow],
    name: Seq,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut groups: BTreeMap<(usize, i64), Vec<&Window>> = BTreeMap::new();
    for c in windows {
        let k = specs
            .iter()
            .position(|s| *s == c.spec)
            .context("a window of an unknown spec")?;
        groups
            .entry((k, c.window.start.div_euclid(HOUR_NS)))
            .or_default()
            .push(&c.window);
    }
    let mut out = Vec::with_capacity(groups.len());
    for ((k, hour), mut ws) in groups {
        ws.sort_by(|a, b| (a.start, &a.device, &a.tag).cmp(&(b.start, &b.device, &b.tag)));
        let key = window_part_key(&specs[k], hour * HOUR_NS, WindowPart::Stream(name));
        let batch = windows_to_record_batch(ws).with_context(|| format!("encoding {key}"))?;
        let data = write_batch_parquet(&batch, &key)?;
        out.push((key, data));
    }
    Ok(out)
}

fn read_checkpoint(path: &Path) -> anyhow::Result<Option<(Seq, Vec<u8>)>> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if data.len() < 16 || &data[..8] != CHECKPOINT_MAGIC {
        bail!(
            "{} is not a window checkpoint (no {} header); move it away to start the windows \
             afresh",
            path.display(),
            String::from_utf8_lossy(CHECKPOINT_MAGIC)
        );
    }
    let seq = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    Ok(Some((seq, data[16..].to_vec())))
}

/// Writes the checkpoint durably: a temporary file, fsync, rename, fsync of
/// the folder.
fn write_checkpoint(path: &Path, seq: Seq, snapshot: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("checkpoint path has no folder")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let io = |what: &str, e: std::io::Error| {
        anyhow::Error::new(e).context(format!("{what} {}", tmp.display()))
    };
    {
        let mut f = File::create(&tmp).map_err(|e| io("creating", e))?;
        f.write_all(CHECKPOINT_MAGIC)
            .and_then(|()| f.write_all(&seq.to_le_bytes()))
            .and_then(|()| f.write_all(snapshot))
            .map_err(|e| io("writing", e))?;
        f.sync_all().map_err(|e| io("syncing", e))?;
    }
    fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Where sources put readings: the durable log, then the windows.
pub struct Ingestor {
    log: Arc<Log>,
    windows: Option<Windows>,
}

impl Ingestor {
    /// Over `log`, feeding `windows` if any.
    pub fn new(log: Arc<Log>, windows: Option<Windows>) -> Ingestor {
        Ingestor { log, windows }
    }

    /// Appends one batch durably (blocking), then hands it to the windows.
    pub fn append(&self, readings: Arc<Readings>) -> Result<Seq, LogError> {
        self.append_keyed(None, None, readings).map(|a| a.seq)
    }

    /// [`Ingestor::append`] under an idempotency key: a batch already
    /// stored under `key` (within the log's horizon) from the same request
    /// (`identity`, see [`Log::append_keyed_as`]) is answered as a
    /// duplicate and neither stored nor windowed again.
    pub fn append_keyed(
        &self,
        key: Option<&str>,
        identity: Option<&[u8]>,
        readings: Arc<Readings>,
    ) -> Result<fleetscore_ingest::Appended, LogError> {
        let appended = self.log.append_keyed_as(key, identity, &readings)?;
        if !appended.duplicate {
            if let Some(w) = &self.windows {
                w.push(appended.seq, readings);
            }
        }
        Ok(appended)
    }

    /// The log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The windows, when enabled.
    pub fn windows(&self) -> Option<&Windows> {
        self.windows.as_ref()
    }

    /// The log position before which segments may be deleted once in raw/:
    /// the window checkpoint, or everything without windows.
    pub fn retain_from(&self) -> Seq {
        match &self.windows {
            Some(w) => w.stats.checkpoint.load(Ordering::Relaxed),
            None => Seq::MAX,
        }
    }
}
