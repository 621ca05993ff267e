//! The compactor: moves closed ingest-log segments into the store's raw/
//! partitions, and the background task of `serve` that runs it (and
//! flushes the windows) on a cadence and on demand.
//!
//! Every `[ingest] compact_interval` the compactor closes the active log
//! segment ([`Log::roll`]), flushes the windows, writes each closed segment
//! as one Parquet object per UTC hour through the lake's raw/ layout
//! ([`raw_objects`]: `raw/date=…/hour=…/part-<id>.parquet`, where `<id>`
//! derives from the segment's first batch, by sequence number and content,
//! and the partition), and deletes the segment once all its objects are
//! stored and the window checkpoint is past it. A re-run after a crash
//! overwrites the same objects instead of duplicating them. Jobs read
//! raw/, so the same compaction also runs on demand ([`CompactNow`])
//! before a schedule creates its due jobs and before `POST /v1/jobs` (or a
//! retry) queues one: a job sees every reading acknowledged before it was
//! created, wherever it runs, not only those of the last timed compaction.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fleetscore_core::Readings;
use fleetscore_ingest::{Log, Seq};
use fleetscore_store::{raw_objects, Store};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::windows::Ingestor;

pub(crate) async fn flush_windows(ingestor: &Arc<Ingestor>) -> anyhow::Result<()> {
    if ingestor.windows().is_none() {
        return Ok(());
    }
    let ing = Arc::clone(ingestor);
    let out = tokio::task::spawn_blocking(move || match ing.windows() {
        Some(w) => w.flush(),
        None => Ok(Default::default()),
    })
    .await??;
    if out.windows > 0 {
        tracing::info!(
            windows = out.windows,
            objects = out.objects,
            checkpoint = out.checkpoint,
            "windows written"
        );
    }
    Ok(())
}

/// A request for a compaction, answered with its outcome.
type CompactRequest = tokio::sync::oneshot::Sender<Result<(), Arc<anyhow::Error>>>;

/// Asks the background task of `serve` to compact the ingest log into
/// raw/ now, and waits for the outcome: what makes a job see every reading
/// acknowledged before it was created, not only those of the last timed
/// compaction (`[ingest] compact_interval`). Cheap to clone. One
/// compaction runs at a time; requests made while one runs share the next,
/// so each is answered by a compaction that began after it was made.
#[derive(Clone)]
pub struct CompactNow {
    requests: tokio::sync::mpsc::Sender<CompactRequest>,
}

impl CompactNow {
    /// A handle, and the receiving end for [`spawn_background`].
    pub(crate) fn channel() -> (CompactNow, tokio::sync::mpsc::Receiver<CompactRequest>) {
        let (requests, receiver) = tokio::sync::mpsc::channel(256);
        (CompactNow { requests }, receiver)
    }

    /// Compacts now; `Err` says why it could not (the store or the disk
    /// failed: the readings stay in the log; or the server is stopping).
    pub async fn run(&self) -> anyhow::Result<()> {
        let stopping = || {
            anyhow::anyhow!(
                "the server is stopping (it compacts its ingest log as it stops, or at the next start)"
            )
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.send(reply).await.map_err(|_| stopping())?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!(
                "compacting the ingest log into raw/ failed: {e:#}"
            )),
            Err(_) => Err(stopping()),
        }
    }
}

/// `serve` compacts its ingest log into raw/ before the scheduler creates
/// due jobs (see [`fleetscore_jobs::scheduler::Prepare`]), so that the
/// jobs see every reading acknowledged until then, whichever process runs
/// them.
impl fleetscore_jobs::scheduler::Prepare for CompactNow {
    fn prepare(&self) -> fleetscore_jobs::scheduler::Preparing<'_> {
        Box::pin(async move { self.run().await.map_err(Into::into) })
    }
}

/// The background task of `serve`: writes the closed windows every
/// `flush_every`, and compacts the ingest log every `compact_every` and
/// whenever a [`CompactNow`] asks, until `stop` changes; returns the
/// compactor (for the last compaction, at shutdown).
pub(crate) fn spawn_background(
    mut compactor: Compactor,
    flush_every: Duration,
    compact_every: Duration,
    mut requests: tokio::sync::mpsc::Receiver<CompactRequest>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Compactor> {
    tokio::spawn(async move {
        let ingestor = Arc::clone(&compactor.ingestor);
        let mut flush_tick = tokio::time::interval(flush_every);
        let mut compact_tick = tokio::time::interval(compact_every);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        compact_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush_tick.tick().await;
        compact_tick.tick().await;
        loop {
            tokio::select! {
                _ = flush_tick.tick() => {
                    if let Err(e) = flush_windows(&ingestor).await {
                        tracing::error!(error = format!("{e:#}"), "writing windows failed; retried at the next flush");
                    }
                }
                _ = compact_tick.tick() => {
                    let _ = compactor.run_counted().await;
                }
                Some(first) = requests.recv() => {
                    // Every request made so far shares this compaction.
                    let mut waiting = vec![first];
                    while let Ok(more) = requests.try_recv() {
                        waiting.push(more);
                    }
                    let outcome = compactor.run_counted().await.map_err(Arc::new);
                    for w in waiting {
                        let _ = w.send(outcome.clone());
                    }
                    // The log was just compacted: the cadence starts again.
                    compact_tick.reset();
                }
                _ = stop.changed() => break,
            }
        }
        compactor
    })
}

/// Moves closed log segments into raw/ and deletes those whose batches are
/// all behind the window checkpoint.
pub(crate) struct Compactor {
    ingestor: Arc<Ingestor>,
    store: Store,
    metrics: Arc<Metrics>,
    /// Closed segments already written to raw/ but kept for the windows.
    in_raw: BTreeSet<Seq>,
}

impl Compactor {
    /// A compactor of `ingestor`'s log into `store`'s raw/.
    pub(crate) fn new(ingestor: Arc<Ingestor>, store: Store, metrics: Arc<Metrics>) -> Compactor {
        Compactor {
            ingestor,
            store,
            metrics,
            in_raw: BTreeSet::new(),
        }
    }

    /// [`Compactor::run`] with a roll, counting and logging a failure (the
    /// next compaction retries it).
    async fn run_counted(&mut self) -> anyhow::Result<()> {
        let outcome = self.run(true).await;
        if let Err(e) = &outcome {
            self.metrics.compaction_errors.inc();
            tracing::error!(error = format!("{e:#}"), "compaction failed; retried later");
        }
        outcome
    }

    /// With `roll`, first closes the active segment (so a quiet log still
    /// reaches raw/) and flushes the windows (so the checkpoint covers it).
    #[tracing::instrument(name = "compaction", skip(self))]
    pub(crate) async fn run(&mut self, roll: bool) -> anyhow::Result<()> {
        let log = Arc::clone(self.ingestor.log());
        if roll {
            let l = Arc::clone(&log);
            tokio::task::spawn_blocking(move || l.roll()).await??;
            flush_windows(&self.ingestor).await?;
        }
        let retain_from = self.ingestor.retain_from();
        for seg in log.closed_segments() {
            if !self.in_raw.contains(&seg.first_seq) {
                let objects = if seg.end_seq > seg.first_seq {
                    let log = Arc::clone(&log);
                    let (first, end) = (seg.first_seq, seg.end_seq);
                    tokio::task::spawn_blocking(move || segment_objects(&log, first, end)).await??
                } else {
                    Segment::default()
                };
                for (key, data) in &objects.objects {
                    self.store.put(key, data.clone()).await?;
                }
                let m = &self.metrics;
                m.raw_objects.inc_by(objects.objects.len() as u64);
                m.readings_compacted.inc_by(objects.readings as u64);
                tracing::info!(
                    segment = %seg.path.display(),
                    readings = objects.readings,
                    "compacted a closed log segment into raw/"
                );
                self.in_raw.insert(seg.first_seq);
            }
            if seg.end_seq <= retain_from {
                log.remove_segment(seg.first_seq)?;
                self.in_raw.remove(&seg.first_seq);
                self.metrics.segments_compacted.inc();
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Segment {
    objects: Vec<(String, Vec<u8>)>,
    readings: usize,
}

/// The raw/ objects of the batches `from..end` of a closed segment.
fn segment_objects(log: &Log, from: Seq, end: Seq) -> anyhow::Result<Segment> {
    let mut batches: Vec<Readings> = Vec::new();
    let mut origin: Option<[u8; 32]> = None;
    for batch in log.replay(from) {
        let batch = batch?;
        if batch.seq >= end {
            break;
        }
        if origin.is_none() {
            // Names the segment: its first batch, by number and content.
            let mut h = Sha256::new();
            h.update(b"fleetscore ingest log segment\0");
            h.update(batch.seq.to_le_bytes());
            for r in batch.readings.iter() {
                h.update(r.ts.to_le_bytes());
                h.update(r.device.as_bytes());
                h.update([0]);
                h.update(r.tag.as_bytes());
                h.update([0]);
                h.update(r.value.to_bits().to_le_bytes());
            }
            origin = Some(h.finalize().into());
        }
        let last = batch.seq + 1 >= end;
        batches.push(batch.readings);
        if last {
            break;
        }
    }
    let Some(origin) = origin else {
        return Ok(Segment::default());
    };
    let readings = Readings::concat(&batches.iter().collect::<Vec<_>>());
    drop(batches);
    let objects = raw_objects(&readings, &origin)?;
    Ok(Segment {
        objects,
        readings: readings.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscore_jobs::db::{JobRecord, JobState, JobStore, SqlStore, Threshold};
    use fleetscore_jobs::run::{Runner, RunnerConfig};
    use fleetscore_jobs::schedule::{Clock, ManualClock, ScheduleSpec};

    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200_000_000_000;
    const MIN: i64 = 60_000_000_000;
    const HOUR: i64 = 60 * MIN;

    /// An hourly schedule scoring each hour 5 minutes after it ends.
    fn hourly() -> ScheduleSpec {
        ScheduleSpec {
            name: "hourly".into(),
            cron: "0 * * * *".into(),
            window_ns: HOUR,
            delay_ns: 5 * MIN,
            mode: "raw".into(),
            batch_size: 10,
            max_failed: Threshold::Count(0),
            max_retries: 0,
            concurrency: Default::default(),
            catch_up: 1,
        }
    }

    /// The job the scheduler loop of `serve` creates and runs for 00:00 to
    /// 01:00 at 01:05 (an injected clock), right after readings of d1/1 for
    /// every minute of that hour were acknowledged into the ingest log
    /// (the timed compaction is an hour away), with `compact` or without
    /// a compaction before the jobs are created.
    async fn scheduled_right_after_readings(compact: bool) -> JobRecord {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store").to_str().unwrap()).unwrap();
        let model = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fleetscore/demo/model_fallback_1.pkl"
        ))
        .unwrap();
        fleetscore_store::Registry::new(store.clone())
            .import(
                vec![fleetscore_store::ImportRequest {
                    key: fleetscore_core::ModelKey::new("d1", "1").unwrap(),
                    model: fleetscore_models::import_sklearn(&model).unwrap().into(),
                    source: "test".into(),
                    input: Default::default(),
                }],
                "2024-01-01T00:00:00Z",
            )
            .await
            .unwrap();
        let log = Arc::new(
            Log::open(
                dir.path().join("log"),
                fleetscore_ingest::LogConfig::default(),
            )
            .unwrap(),
        );
        let ingestor = Arc::new(Ingestor::new(Arc::clone(&log), None));
        let readings: Readings = (0..60).map(|m| (T0 + m * MIN, "d1", "1", 20.0)).collect();
        ingestor.append(Arc::new(readings)).unwrap();

        let compactor = Compactor {
            ingestor: Arc::clone(&ingestor),
            store: store.clone(),
            metrics: Arc::new(Metrics::default()),
            in_raw: BTreeSet::new(),
        };
        let (compact_now, requests) = CompactNow::channel();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let background = spawn_background(
            compactor,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            requests,
            stop_rx.clone(),
        );
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let db: Arc<dyn JobStore> = Arc::new(SqlStore::open(&url).await.unwrap());
        let clock = Arc::new(ManualClock::new(T0 + HOUR + 5 * MIN));
        let runner = Runner::new(
            Arc::clone(&db),
            store.clone(),
            clock.clone(),
            RunnerConfig {
                parallel_tasks: 2,
                poll: Duration::from_millis(10),
                ..RunnerConfig::default()
            },
        );
        let (reports, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let runner = runner.with_reports(reports);
        let mut scheduler = fleetscore_jobs::scheduler::Scheduler::new(
            Arc::clone(&db),
            vec![hourly()],
            clock.clone() as Arc<dyn Clock>,
            Duration::from_millis(10),
        )
        .with_runner(runner);
        if compact {
            scheduler = scheduler.with_prepare(Arc::new(compact_now));
        }
        let lp = scheduler.run(stop_rx);
        let wait = async {
            let job = tokio::time::timeout(Duration::from_secs(60), finished.recv())
                .await
                .expect("a job within a minute")
                .expect("a job");
            stop_tx.send(true).unwrap();
            job
        };
        let ((), job) = tokio::join!(lp, wait);
        background.await.unwrap();
        assert_eq!((job.window_start, job.window_end), (T0, T0 + HOUR));
        job
    }

    /// Issue 17: a scheduled job read only raw/, which the compactor fills
    /// every `[ingest] compact_interval`: created right after readings were
    /// acknowledged, it found none of them (no_data for every model).
    #[tokio::test]
    async fn a_scheduled_job_sees_every_reading_acknowledged_before_it_was_created() {
        let job = scheduled_right_after_readings(true).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!(
            (job.counts.models, job.counts.rows, job.counts.failed_models),
            (1, 60, 0)
        );
        // Without the compaction first: what the timed compactor had not
        // moved yet is missed.
        let job = scheduled_right_after_readings(false).await;
        assert_eq!(job.state, JobState::Skipped, "{job:?}");
        assert_eq!(job.counts.rows, 0);
    }
}
