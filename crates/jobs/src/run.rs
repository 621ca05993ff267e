//! Running a job: one window `[start, end)`, its models in tasks of about
//! `batch_size`, each task with retries, outputs keyed so that a rerun
//! overwrites instead of duplicating, the manifest last.
//!
//! # Outputs
//! For a job of mode `raw` and window length `W` (e.g. `1h`) starting at
//! hour `date=D/hour=H`:
//!
//! ```text
//! predictions/date=D/hour=H/part-raw-W-<task>.parquet   TS, Device, Tag, Val, Prediction, Score
//! predictions/date=D/hour=H/manifest-raw-W.json         written last: job, window, parts, counts
//! logs/<job-id>/task-<task>.log                         what each task did, every attempt
//! logs/<job-id>/job.log                                 the job's summary
//! ```
//!
//! The names derive from the window and the task number only, so scoring
//! the same window again (a retry, a backfill) overwrites the same objects;
//! parts numbered beyond the new run's tasks are deleted before the
//! manifest is written. A reader should trust a partition's parts only as
//! listed in its manifest.
//!
//! # Units, input modes and failures
//! The job's units are the `(device, tag)` pairs that have a live model,
//! readings, or (for window-input models) windows in the window (narrowed
//! by the job's selection), sorted, and cut into tasks of `batch_size`.
//! A pair's model (its own, else the fallback `(*, tag)`) says what it
//! takes as rows, from its registry metadata: `raw`, each reading's value
//! (the reference job), or `window`, each window of its size starting in
//! the job's window, as a row of its named features read from
//! `windows/size=…/` (`std` of a one-reading window counts as 0). Window
//! rows are written with `TS` = the window's start and `Val` = its first
//! named feature. Each pair either scores, or fails with a
//! reason: `no_model` (readings but no model, not even a `(*, tag)`
//! fallback), `no_data` (a model but no readings in the window),
//! `feature_mismatch`, `evaluation`. The job fails when more pairs fail than
//! `max_failed_models` allows, or when a task still errs (say, the store
//! is down) after `max_retries` retries with exponential backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetscore_codecs::{
    predictions_parquet_bytes, read_batches_parquet_bytes, read_readings_parquet_bytes,
    PredictionColumns, Readings,
};
use fleetscore_core::format_ts;
use fleetscore_models::Pack;
use fleetscore_store::{hour_partition, ModelInput, Registry, Store, HOUR_NS};
use fleetscore_stream::{windows_from_record_batch, Window};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::db::{FailureRecord, JobRecord, JobState, JobStore, TaskRecord};
use crate::schedule::Clock;
use crate::FailureReason;

/// How the runner behaves.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Tasks of one job run at the same time.
    pub parallel_tasks: usize,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            parallel_tasks: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            retry_backoff: Duration::from_secs(1),
        }
    }
}

/// Runs jobs from a job store against an object store.
#[derive(Clone)]
pub struct Runner {
    db: Arc<dyn JobStore>,
    store: Store,
    registry: Registry,
    clock: Arc<dyn Clock>,
    config: RunnerConfig,
}

/// The manifest of one job's output partition.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Manifest {
    /// `fleetscore-predictions-manifest`.
    pub format: String,
    /// The job that wrote it.
    pub job: i64,
    /// Window start, RFC 3339.
    pub window_start: String,
    /// Window end, RFC 3339.
    pub window_end: String,
    /// Input mode.
    pub mode: String,
    /// The parts, in task order.
    pub parts: Vec<String>,
    /// Pairs scored or failed.
    pub models: u64,
    /// Rows.
    pub rows: u64,
    /// Anomalies.
    pub anomalies: u64,
    /// Failed pairs.
    pub failed_models: u64,
    /// Rows and anomalies per device (what the dashboard's heat map reads).
    pub devices: BTreeMap<String, DeviceCount>,
}

/// Rows and anomalies of one device in one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct DeviceCount {
    /// Rows scored.
    pub rows: u64,
    /// Anomalies among them.
    pub anomalies: u64,
}

/// A window length as a short name: `1h`, `15m`, `30s`, `1d`.
pub fn window_name(ns: i64) -> String {
    const S: i64 = 1_000_000_000;
    if ns % (86_400 * S) == 0 {
        format!("{}d", ns / (86_400 * S))
    } else if ns % (3_600 * S) == 0 {
        format!("{}h", ns / (3_600 * S))
    } else if ns % (60 * S) == 0 {
        format!("{}m", ns / (60 * S))
    } else if ns % S == 0 {
        format!("{}s", ns / S)
    } else {
        format!("{ns}ns")
    }
}

/// The output folder and name stem of a job: `predictions/date=…/hour=…`
/// and `raw-1h`.
pub fn output_prefix(job: &JobRecord) -> (String, String) {
    (
        format!("predictions/{}", hour_partition(job.window_start)),
        format!(
            "{}-{}",
            job.mode,
            window_name(job.window_end - job.window_start)
        ),
    )
}

/// The readings of `[from, to)` from the store's raw/ partitions.
pub async fn load_raw(store: &Store, from: i64, to: i64) -> anyhow::Result<Readings> {
    let mut keys = Vec::new();
    let mut hour = from.div_euclid(HOUR_NS) * HOUR_NS;
    while hour < to {
        let prefix = format!("raw/{}/", hour_partition(hour));
        keys.extend(
            store
                .list(&prefix)
                .await?
                .into_iter()
                .filter(|k| k.ends_with(".parquet")),
        );
        hour += HOUR_NS;
    }
    let files: Vec<Readings> = stream::iter(keys)
        .map(|key| {
            // Owned, so the future is Send for any caller.
            let store = store.clone();
            async move {
                match store.get(&key).await? {
                    None => Ok::<_, anyhow::Error>(None),
                    Some(data) => Ok(Some(
                        tokio::task::spawn_blocking(move || {
                            read_readings_parquet_bytes(data, &key)
                        })
                        .await??,
                    )),
                }
            }
        })
        .buffered(8)
        .try_collect::<Vec<Option<Readings>>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
    let mut out = Readings::default();
    let mut ids: HashMap<(String, String), u32> = HashMap::new();
    for f in files {
        let map: Vec<u32> = f
            .keys
            .iter()
            .map(|k| {
                let next = out.keys.len() as u32;
                *ids.entry(k.clone()).or_insert_with(|| {
                    out.keys.push(k.clone());
                    next
                })
            })
            .collect();
        for i in 0..f.len() {
            let ts = f.ts[i];
            if ts >= from && ts < to {
                out.ts.push(ts);
                out.value.push(f.value[i]);
                out.key.push(map[f.key[i] as usize]);
            }
        }
    }
    Ok(out)
}

/// A task's record, readings, pairs and output key.
type TaskInput = (
    TaskRecord,
    Readings,
    Vec<(String, String)>,
    String,
    Vec<WindowUnit>,
);

/// A window-input pair of a task: its model's features and its windows.
#[derive(Debug, Clone)]
struct WindowUnit {
    device: String,
    tag: String,
    features: Vec<String>,
    windows: Vec<Window>,
}

/// The windows of `size` starting in `[from, to)`, by (device, tag), in
/// start order, from the store's `windows/size=SIZE/` partitions.
pub async fn load_windows(
    store: &Store,
    size: &str,
    from: i64,
    to: i64,
) -> anyhow::Result<BTreeMap<(String, String), Vec<Window>>> {
    let mut out: BTreeMap<(String, String), Vec<Window>> = BTreeMap::new();
    let mut hour = from.div_euclid(HOUR_NS) * HOUR_NS;
    while hour < to {
        let prefix = format!("windows/size={size}/{}/", hour_partition(hour));
        for key in store.list(&prefix).await? {
            if !key.ends_with(".parquet") {
                continue;
            }
            let Some(data) = store.get(&key).await? else {
                continue;
            };
            let k = key.clone();
            let ws = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Window>> {
                let mut all = Vec::new();
                for b in read_batches_parquet_bytes(data, &k)? {
                    all.extend(
                        windows_from_record_batch(&b).map_err(|e| anyhow::anyhow!("{k}: {e}"))?,
                    );
                }
                Ok(all)
            })
            .await??;
            for w in ws {
                if w.start >= from && w.start < to {
                    out.entry((w.device.clone(), w.tag.clone()))
                        .or_default()
                        .push(w);
                }
            }
        }
        hour += HOUR_NS;
    }
    for ws in out.values_mut() {
        ws.sort_by_key(|w| w.start);
    }
    Ok(out)
}

/// One window feature by name.
fn feature(w: &Window, name: &str) -> f64 {
    match name {
        "count" => w.count as f64,
        "sum" => w.sum,
        "mean" => w.mean,
        "min" => w.min,
        "max" => w.max,
        // Sample std of one reading: 0, as a model needs a number.
        "std" => w.std.unwrap_or(0.0),
        "first" => w.first,
        _ => w.last,
    }
}

/// What one task produced.
struct TaskOutput {
    record: TaskRecord,
    devices: BTreeMap<String, DeviceCount>,
}

impl Runner {
    /// A runner.
    pub fn new(
        db: Arc<dyn JobStore>,
        store: Store,
        clock: Arc<dyn Clock>,
        config: RunnerConfig,
    ) -> Runner {
        Runner {
            db,
            registry: Registry::new(store.clone()),
            store,
            clock,
            config,
        }
    }

    /// The job store.
    pub fn db(&self) -> &Arc<dyn JobStore> {
        &self.db
    }

    /// Claims and runs queued jobs until none is runnable; returns the ids
    /// run.
    pub async fn run_queued(&self) -> anyhow::Result<Vec<i64>> {
        let mut done = Vec::new();
        while let Some(job) = self.db.claim_job(self.clock.now()).await? {
            let id = job.id;
            self.run_claimed(job).await?;
            done.push(id);
        }
        Ok(done)
    }

    /// Runs a job already marked running; records its outcome. An `Err`
    /// means the job store itself failed.
    pub async fn run_claimed(&self, job: JobRecord) -> anyhow::Result<JobRecord> {
        let id = job.id;
        let mut job = match self.run_inner(job.clone()).await {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(job = id, "job failed: {e:#}");
                let mut j = self.db.job(id).await.unwrap_or(job);
                if j.state == JobState::Running {
                    j.state = JobState::Failed;
                    j.error = Some(format!("{e:#}"));
                }
                j
            }
        };
        if job.finished_at.is_none() {
            job.finished_at = Some(self.clock.now());
        }
        // A cancel that landed while it ran wins.
        if self.db.job(id).await?.state == JobState::Cancelled {
            job.state = JobState::Cancelled;
            job.error = Some("cancelled by a user".into());
        }
        self.db.update_job(&job).await?;
        let log = format!(
            "job {id} {}: window [{}, {}) mode {} — {} models, {} rows, {} anomalies, {} failed models, {} tasks; load {} ms, score {} ms, write {} ms{}\n",
            job.state,
            format_ts(job.window_start),
            format_ts(job.window_end),
            job.mode,
            job.models,
            job.rows,
            job.anomalies,
            job.failed_models,
            job.tasks,
            job.load_ms,
            job.score_ms,
            job.write_ms,
            job.error
                .as_deref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        );
        if let Err(e) = self.store.put(&format!("logs/{id}/job.log"), log).await {
            tracing::warn!(job = id, "writing the job log failed: {e}");
        }
        tracing::info!(
            job = id,
            state = %job.state,
            models = job.models,
            rows = job.rows,
            anomalies = job.anomalies,
            failed = job.failed_models,
            "job finished"
        );
        Ok(job)
    }

    async fn run_inner(&self, mut job: JobRecord) -> anyhow::Result<JobRecord> {
        anyhow::ensure!(
            job.mode == "raw",
            "input mode {:?} is not supported by this runner (use raw)",
            job.mode
        );
        let t = Instant::now();
        let pack = self.registry.pack().await?;
        let index = self.registry.index().await?;
        // Each live model's input, by `device/tag`.
        let inputs: HashMap<String, ModelInput> = index
            .models
            .iter()
            .filter_map(|(k, e)| e.live_version().map(|v| (k.clone(), ModelInput::of(v))))
            .collect();
        let input_of = |d: &str, t: &str| -> ModelInput {
            inputs
                .get(&format!("{d}/{t}"))
                .or_else(|| inputs.get(&format!("*/{t}")))
                .cloned()
                .unwrap_or_default()
        };
        let readings = load_raw(&self.store, job.window_start, job.window_end).await?;
        // Windows of every size a window-input model needs.
        let mut sizes: BTreeSet<String> = BTreeSet::new();
        for i in inputs.values() {
            if let ModelInput::Window { size, .. } = i {
                sizes.insert(size.clone());
            }
        }
        let mut windows: HashMap<String, BTreeMap<(String, String), Vec<Window>>> = HashMap::new();
        for size in sizes {
            let w = load_windows(&self.store, &size, job.window_start, job.window_end).await?;
            windows.insert(size, w);
        }
        job.load_ms = t.elapsed().as_millis() as u64;

        // Units: pairs with a live model or with readings, selected, sorted.
        let selection: Option<BTreeSet<&str>> = job
            .selection
            .as_ref()
            .map(|s| s.iter().map(String::as_str).collect());
        let selected = |d: &str, t: &str| {
            selection
                .as_ref()
                .is_none_or(|s| s.contains(format!("{d}/{t}").as_str()))
        };
        let mut units: BTreeSet<(String, String)> = BTreeSet::new();
        for e in pack.entries() {
            if !e.key.is_fallback() && selected(&e.key.device, &e.key.tag) {
                units.insert((e.key.device.clone(), e.key.tag.clone()));
            }
        }
        for (d, t) in &readings.keys {
            if selected(d, t) {
                units.insert((d.clone(), t.clone()));
            }
        }
        for (size, by_key) in &windows {
            for (d, t) in by_key.keys() {
                let wants =
                    matches!(input_of(d, t), ModelInput::Window { size: s, .. } if &s == size);
                if wants && selected(d, t) {
                    units.insert((d.clone(), t.clone()));
                }
            }
        }
        let units: Vec<(String, String)> = units.into_iter().collect();
        let batch = job.batch_size.max(1) as usize;
        let chunks: Vec<&[(String, String)]> = units.chunks(batch).collect();
        let now = self.clock.now();
        let tasks: Vec<TaskRecord> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| TaskRecord {
                job_id: job.id,
                idx: i as u32,
                state: "queued".into(),
                first_key: format!("{}/{}", c[0].0, c[0].1),
                last_key: format!("{}/{}", c[c.len() - 1].0, c[c.len() - 1].1),
                n_keys: c.len() as u64,
                queued_at: now,
                ..TaskRecord::default()
            })
            .collect();
        self.db.set_tasks(job.id, &tasks).await?;
        job.tasks = tasks.len() as u64;

        // Rows per task, in one pass.
        // Readings go to the tasks of raw-input units only.
        let unit_task: HashMap<(&str, &str), u32> = units
            .iter()
            .enumerate()
            .filter(|(_, (d, t))| input_of(d, t) == ModelInput::Raw)
            .map(|(i, (d, t))| ((d.as_str(), t.as_str()), (i / batch) as u32))
            .collect();
        let key_task: Vec<Option<u32>> = readings
            .keys
            .iter()
            .map(|(d, t)| unit_task.get(&(d.as_str(), t.as_str())).copied())
            .collect();
        // Each task's readings with its own key list (only its pairs).
        let mut parts: Vec<Readings> = (0..tasks.len()).map(|_| Readings::default()).collect();
        let mut local: Vec<Option<u32>> = vec![None; readings.keys.len()];
        for (k, t) in key_task.iter().enumerate() {
            if let Some(t) = t {
                let p = &mut parts[*t as usize];
                local[k] = Some(p.keys.len() as u32);
                p.keys.push(readings.keys[k].clone());
            }
        }
        for i in 0..readings.len() {
            let k = readings.key[i] as usize;
            if let (Some(t), Some(l)) = (key_task[k], local[k]) {
                let p = &mut parts[t as usize];
                p.ts.push(readings.ts[i]);
                p.value.push(readings.value[i]);
                p.key.push(l);
            }
        }
        drop(readings);

        let pack = Arc::new(pack);
        let (prefix, stem) = output_prefix(&job);
        let mut runs: Vec<TaskInput> = Vec::new();
        for ((record, readings), c) in tasks.into_iter().zip(parts).zip(&chunks) {
            let key = format!("{prefix}/part-{stem}-{:05}.parquet", record.idx);
            let mut wunits = Vec::new();
            for (d, t) in c.iter() {
                if let ModelInput::Window { size, features } = input_of(d, t) {
                    let rows = windows
                        .get(&size)
                        .and_then(|m| m.get(&(d.clone(), t.clone())))
                        .cloned()
                        .unwrap_or_default();
                    wunits.push(WindowUnit {
                        device: d.clone(),
                        tag: t.clone(),
                        features,
                        windows: rows,
                    });
                }
            }
            runs.push((record, readings, c.to_vec(), key, wunits));
        }
        let job_ref = job.clone();
        let outputs: Vec<TaskOutput> = stream::iter(runs)
            .map(|work| {
                let pack = Arc::clone(&pack);
                let job = job_ref.clone();
                async move { self.run_task(&job, work, pack).await }
            })
            .buffer_unordered(self.config.parallel_tasks.max(1))
            .try_collect()
            .await?;

        let mut outputs = outputs;
        outputs.sort_by_key(|o| o.record.idx);
        let mut task_error = None;
        for o in &outputs {
            let r = &o.record;
            job.models += r.models;
            job.rows += r.rows;
            job.anomalies += r.anomalies;
            job.failed_models += r.failed_models;
            job.score_ms += r.score_ms;
            job.write_ms += r.write_ms;
            if r.state != "succeeded" && task_error.is_none() {
                task_error = Some(format!(
                    "task {} {}: {}",
                    r.idx,
                    r.state,
                    r.error.as_deref().unwrap_or("")
                ));
            }
        }
        job.finished_at = Some(self.clock.now());
        if let Some(e) = task_error {
            job.state = JobState::Failed;
            job.error = Some(e);
            return Ok(job);
        }
        if self.db.job(job.id).await?.state == JobState::Cancelled {
            job.state = JobState::Cancelled;
            return Ok(job);
        }

        // Parts of an earlier, larger run of the same window go away; the
        // manifest goes last.
        let stale_prefix = format!("{prefix}/part-{stem}-");
        for key in self.store.list(&format!("{prefix}/")).await? {
            if let Some(n) = key
                .strip_prefix(&stale_prefix)
                .and_then(|r| r.strip_suffix(".parquet"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                if n >= job.tasks {
                    self.store.delete(&key).await?;
                }
            }
        }
        let manifest = Manifest {
            format: "fleetscore-predictions-manifest".into(),
            job: job.id,
            window_start: format_ts(job.window_start),
            window_end: format_ts(job.window_end),
            mode: job.mode.clone(),
            parts: outputs
                .iter()
                .filter_map(|o| o.record.output.clone())
                .collect(),
            models: job.models,
            rows: job.rows,
            anomalies: job.anomalies,
            failed_models: job.failed_models,
            devices: {
                let mut all: BTreeMap<String, DeviceCount> = BTreeMap::new();
                for o in &outputs {
                    for (d, c) in &o.devices {
                        let e = all.entry(d.clone()).or_default();
                        e.rows += c.rows;
                        e.anomalies += c.anomalies;
                    }
                }
                all
            },
        };
        let key = format!("{prefix}/manifest-{stem}.json");
        self.store
            .put(&key, serde_json::to_vec_pretty(&manifest)?)
            .await?;
        job.manifest = Some(key);
        if job.max_failed.exceeded(job.failed_models, job.models) {
            job.state = JobState::Failed;
            job.error = Some(format!(
                "{} of {} models failed, more than max_failed_models = {}",
                job.failed_models, job.models, job.max_failed
            ));
        } else {
            job.state = JobState::Succeeded;
        }
        Ok(job)
    }

    async fn run_task(
        &self,
        job: &JobRecord,
        work: TaskInput,
        pack: Arc<Pack>,
    ) -> anyhow::Result<TaskOutput> {
        let (mut record, readings, units, key, wunits) = work;
        let wunits = Arc::new(wunits);
        let readings = Arc::new(readings);
        let mut log = String::new();
        let mut failures = Vec::new();
        let mut devices = BTreeMap::new();
        loop {
            if self.db.job(job.id).await?.state == JobState::Cancelled {
                record.state = "cancelled".into();
                let _ = writeln!(log, "cancelled before attempt {}", record.attempts + 1);
                break;
            }
            record.attempts += 1;
            record.started_at = Some(self.clock.now());
            record.state = "running".into();
            self.db.update_task(&record).await?;
            let _ = writeln!(
                log,
                "attempt {} at {}: {} models {}..{}, {} readings",
                record.attempts,
                format_ts(self.clock.now()),
                record.n_keys,
                record.first_key,
                record.last_key,
                readings.len()
            );
            match self
                .attempt(&mut record, &readings, &units, &wunits, &pack, &key)
                .await
            {
                Ok((f, d)) => {
                    failures = f;
                    devices = d;
                    record.state = "succeeded".into();
                    record.error = None;
                    let _ = writeln!(
                        log,
                        "succeeded: {} models, {} rows, {} anomalies, {} failed models; score {} ms, write {} ms -> {key}",
                        record.models, record.rows, record.anomalies, record.failed_models,
                        record.score_ms, record.write_ms
                    );
                    for f in &failures {
                        let _ = writeln!(
                            log,
                            "model ({}, {}) failed: {}: {} ({} readings)",
                            f.device, f.tag, f.reason, f.detail, f.rows
                        );
                    }
                    break;
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    let _ = writeln!(log, "failed: {msg}");
                    record.error = Some(msg);
                    if record.attempts > job.max_retries {
                        record.state = "failed".into();
                        break;
                    }
                    let wait = self.config.retry_backoff * 2u32.pow((record.attempts - 1).min(10));
                    let _ = writeln!(log, "retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        record.finished_at = Some(self.clock.now());
        self.db.update_task(&record).await?;
        self.db.set_failures(job.id, record.idx, &failures).await?;
        if let Err(e) = self
            .store
            .put(&format!("logs/{}/task-{:05}.log", job.id, record.idx), log)
            .await
        {
            tracing::warn!(
                job = job.id,
                task = record.idx,
                "writing the task log failed: {e}"
            );
        }
        Ok(TaskOutput { record, devices })
    }

    /// One attempt: score, write the part. Model failures are results, not
    /// errors; an `Err` is worth a retry.
    async fn attempt(
        &self,
        record: &mut TaskRecord,
        readings: &Arc<Readings>,
        units: &[(String, String)],
        wunits: &Arc<Vec<WindowUnit>>,
        pack: &Arc<Pack>,
        key: &str,
    ) -> anyhow::Result<(Vec<FailureRecord>, BTreeMap<String, DeviceCount>)> {
        let t = Instant::now();
        let (r, p, k) = (Arc::clone(readings), Arc::clone(pack), key.to_string());
        let wu = Arc::clone(wunits);
        let units = units.to_vec();
        let idx = record.idx;
        let (bytes, failures, rows, anomalies, models, devices) =
            tokio::task::spawn_blocking(move || {
                let mut scored = crate::score((*r).clone(), &p, &|_| {});
                let mut failures: Vec<FailureRecord> = scored
                    .failures
                    .iter()
                    .map(|f| FailureRecord {
                        task_idx: idx,
                        device: f.device.clone(),
                        tag: f.tag.clone(),
                        reason: f.reason.code().to_string(),
                        detail: f.reason.to_string(),
                        rows: f.rows as u64,
                    })
                    .collect();
                // Pairs with data: readings, or windows for window input.
                let mut seen = vec![false; r.keys.len()];
                for &k in &r.key {
                    seen[k as usize] = true;
                }
                let mut with_data: BTreeSet<(&str, &str)> = r
                    .keys
                    .iter()
                    .zip(&seen)
                    .filter(|(_, &s)| s)
                    .map(|((d, t), _)| (d.as_str(), t.as_str()))
                    .collect();
                // Window-input pairs: each window is a row of its features.
                let mut anomalies = scored.anomalies;
                for u in wu.iter() {
                    if u.windows.is_empty() {
                        continue;
                    }
                    with_data.insert((u.device.as_str(), u.tag.as_str()));
                    let Some(entry) = p.get(&u.device, &u.tag) else {
                        continue;
                    };
                    let width = u.features.len();
                    let rows: Vec<f64> = u
                        .windows
                        .iter()
                        .flat_map(|w| u.features.iter().map(move |f| feature(w, f)))
                        .collect();
                    let mut dec = Vec::new();
                    if let Err(e) = entry.model.decision_function(&rows, width, &mut dec) {
                        let reason = FailureReason::Evaluation {
                            message: e.to_string(),
                        };
                        failures.push(FailureRecord {
                            task_idx: idx,
                            device: u.device.clone(),
                            tag: u.tag.clone(),
                            reason: reason.code().to_string(),
                            detail: reason.to_string(),
                            rows: u.windows.len() as u64,
                        });
                        continue;
                    }
                    let k = scored.keys.len() as u32;
                    scored.keys.push((u.device.clone(), u.tag.clone()));
                    let from = scored.ts.len();
                    for (w, d) in u.windows.iter().zip(&dec) {
                        scored.ts.push(w.start);
                        scored.value.push(feature(w, &u.features[0]));
                        let anomaly = !fleetscore_models::is_inlier(*d);
                        scored.prediction.push(u8::from(anomaly));
                        anomalies += usize::from(anomaly);
                        scored.score.push(*d);
                    }
                    scored.groups.push((k, from..scored.ts.len()));
                }
                for (d, t) in &units {
                    if !with_data.contains(&(d.as_str(), t.as_str())) {
                        failures.push(FailureRecord {
                            task_idx: idx,
                            device: d.clone(),
                            tag: t.clone(),
                            reason: FailureReason::NoData.code().to_string(),
                            detail: FailureReason::NoData.to_string(),
                            rows: 0,
                        });
                    }
                }
                failures.sort_by(|a, b| (&a.device, &a.tag).cmp(&(&b.device, &b.tag)));
                let cols = PredictionColumns {
                    ts: &scored.ts,
                    value: &scored.value,
                    prediction: &scored.prediction,
                    score: &scored.score,
                    keys: &scored.keys,
                    groups: &scored.groups,
                };
                let rows: usize = scored.groups.iter().map(|(_, g)| g.len()).sum();
                let mut devices: BTreeMap<String, DeviceCount> = BTreeMap::new();
                for (k, g) in &scored.groups {
                    let c = devices
                        .entry(scored.keys[*k as usize].0.clone())
                        .or_default();
                    c.rows += g.len() as u64;
                    c.anomalies += scored.prediction[g.clone()]
                        .iter()
                        .filter(|&&p| p == 1)
                        .count() as u64;
                }
                let bytes = predictions_parquet_bytes(&cols, &k)?;
                Ok::<_, anyhow::Error>((bytes, failures, rows, anomalies, units.len(), devices))
            })
            .await??;
        record.score_ms = t.elapsed().as_millis() as u64;
        let t = Instant::now();
        self.store.put(key, bytes).await?;
        record.write_ms = t.elapsed().as_millis() as u64;
        record.rows = rows as u64;
        record.anomalies = anomalies as u64;
        record.models = models as u64;
        record.failed_models = failures.len() as u64;
        record.output = Some(key.to_string());
        Ok((failures, devices))
    }
}
