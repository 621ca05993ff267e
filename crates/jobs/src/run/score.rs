//! Running a task attempt and recording it; score tasks: load the
//! task's readings and windows, score them, write the part.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use fleetscore_codecs::{predictions_parquet_bytes, Readings};
use fleetscore_core::format_ts;
use fleetscore_models::Pack;
use fleetscore_store::lake::{self, DeviceCount, JobOutput};
use fleetscore_stream::Window;
use tracing::Instrument;

use crate::db::{FailureRecord, JobRecord, JobState, TaskRecord, TaskState};
use crate::lease::Held;
use crate::python::{score_units, score_with_python, PythonModels, PythonUnit};
use crate::stage::PlanUnit;
use crate::FailureReason;

use super::{persist, Result, RunError, Runner};

/// A window-input pair of a task: its model's features and its windows.
#[derive(Debug, Clone)]
pub(super) struct WindowUnit {
    pub(super) device: String,
    pub(super) tag: String,
    pub(super) features: Vec<String>,
    pub(super) windows: Vec<Window>,
}

/// One window feature by name.
pub(super) fn feature(w: &Window, name: &str) -> f64 {
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

/// What a score task's attempt found: its failed models, and its rows and
/// anomalies by device.
type Scoring = (Vec<FailureRecord>, BTreeMap<String, DeviceCount>);

/// A score task's share of its job's plan.
pub(super) struct TaskPlan {
    pub(super) job: i64,
    pub(super) idx: u32,
    /// The model pack generation the plan was made with.
    pub(super) generation: u64,
    /// The job plan it belongs to (see [`JobPlan::plan_id`]).
    pub(super) plan_id: String,
    /// The job's score tasks and map tasks: the task's readings are its
    /// section of each map task's output.
    pub(super) tasks: u32,
    pub(super) maps: u32,
    /// The task's pairs, in order, with their model's input.
    pub(super) units: Vec<PlanUnit>,
    /// Whether planning found windows for any window-input pair of the job.
    pub(super) has_windows: bool,
}

impl Runner {
    /// The record of a job this runner leased a task of (so running: the
    /// lease is only given for running jobs), read once per plan: what a
    /// task needs of it (window, mode, retries) does not change.
    pub(super) async fn job_for(&self, id: i64) -> Result<JobRecord> {
        let cached = self
            .staged
            .lock()
            .ok()
            .and_then(|c| c.jobs.get(&id).cloned());
        if let Some(j) = cached {
            return Ok(j);
        }
        let job = self.db.job(id).await?;
        if job.state == JobState::Running {
            if let Ok(mut c) = self.staged.lock() {
                c.jobs.insert(id, job.clone());
            }
        }
        Ok(job)
    }

    /// A score task's share of its job's plan.
    pub(super) async fn staged(&self, record: &TaskRecord) -> Result<TaskPlan> {
        let plan = self.job_plan(record).await?;
        Ok(TaskPlan {
            job: plan.job,
            idx: record.idx,
            generation: plan.generation,
            plan_id: plan.plan_id.clone(),
            tasks: plan.tasks,
            maps: plan.maps.len() as u32,
            units: plan.task_units[record.idx as usize].clone(),
            has_windows: plan.has_windows,
        })
    }

    /// The model pack of `generation` (cached across tasks).
    pub(super) async fn pack_for(&self, generation: u64) -> Result<Arc<Pack>> {
        let mut cached = self.pack.lock().await;
        if let Some(p) = cached.as_ref() {
            if p.generation == generation {
                return Ok(Arc::clone(p));
            }
        }
        let p = Arc::new(self.registry.pack().await?);
        if p.generation != generation {
            tracing::warn!(
                planned = generation,
                live = p.generation,
                "the models changed since the job was planned; scoring with the live ones"
            );
        }
        *cached = Some(Arc::clone(&p));
        Ok(p)
    }

    /// Runs one leased attempt of a task and records it.
    pub(super) async fn run_task(&self, record: TaskRecord) -> Result<()> {
        let job = self.job_for(record.job_id).await?;
        let span = tracing::info_span!(
            "task",
            job_id = record.job_id,
            task = record.idx,
            kind = %record.kind,
            attempt = record.attempts,
            state = tracing::field::Empty,
            models = tracing::field::Empty,
            rows = tracing::field::Empty,
        );
        crate::trace::join(&span, &job);
        self.run_leased(job, record).instrument(span).await
    }

    async fn run_leased(&self, job: JobRecord, mut record: TaskRecord) -> Result<()> {
        let renew = self.leases.keep(
            Arc::clone(&self.db),
            Held::Task {
                job: record.job_id,
                idx: record.idx,
            },
        );
        let log_key = lake::work::task_log_key(job.id, record.idx);
        let mut log = self.task_log(&log_key, &record).await;
        let mut failures = Vec::new();
        if job.state != JobState::Running {
            record.state = TaskState::Cancelled;
            let _ = writeln!(log, "cancelled: the job is {}", job.state);
        } else {
            let outcome = if record.is_map() {
                self.attempt_map(&job, &mut record).await.map(|()| None)
            } else {
                self.attempt_staged(&job, &mut record).await.map(Some)
            };
            failures = self.record_outcome(&job, &mut record, outcome, &mut log)?;
        }
        record.finished_at = Some(self.clock.now());
        let span = tracing::Span::current();
        span.record("state", record.state.as_str());
        span.record("models", record.counts.models);
        span.record("rows", record.counts.rows);
        if renew.lost() {
            let _ = writeln!(log, "lease lost before the end: another worker runs it");
        }
        if let Err(e) = self.store.put(&log_key, log).await {
            tracing::warn!(
                job = job.id,
                task = record.idx,
                "writing the task log failed: {e}"
            );
        }
        drop(renew);
        let owner = self.owner.clone();
        let kept = persist("recording a task", || {
            self.db.finish_task(&record, &failures, &owner)
        })
        .await?;
        if !kept {
            tracing::warn!(
                job = job.id,
                task = record.idx,
                "the task's lease expired while it ran; the worker that took over records it"
            );
        }
        Ok(())
    }

    /// A task's log so far (its earlier attempts', if any can be read),
    /// with this attempt's first line.
    async fn task_log(&self, log_key: &str, record: &TaskRecord) -> String {
        let mut log = if record.attempts > 1 {
            match self.store.get(log_key).await {
                Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                _ => String::new(),
            }
        } else {
            String::new()
        };
        let _ = writeln!(
            log,
            "attempt {} at {} by {}: {} {} {}..{}",
            record.attempts,
            format_ts(self.clock.now()),
            self.owner,
            record.n_keys,
            if record.is_map() {
                "raw row groups (map task) of"
            } else {
                "models"
            },
            record.first_key,
            record.last_key,
        );
        log
    }

    /// Records the outcome of a task's attempt on its record and in its
    /// log: success (with a score task's failed models, returned), or an
    /// error, which queues the task again after a backoff until the job's
    /// `max_retries`, then fails it.
    fn record_outcome(
        &self,
        job: &JobRecord,
        record: &mut TaskRecord,
        outcome: Result<Option<Scoring>>,
        log: &mut String,
    ) -> Result<Vec<FailureRecord>> {
        match outcome {
            Ok(None) => {
                record.state = TaskState::Succeeded;
                record.error = None;
                record.not_before = None;
                let _ = writeln!(
                    log,
                    "succeeded: {} readings for {} score tasks; read {} ms, write {} ms -> {}",
                    record.counts.rows,
                    job.tasks,
                    record.counts.load_ms,
                    record.counts.write_ms,
                    record.output.as_deref().unwrap_or("")
                );
            }
            Ok(Some((failures, devices))) => {
                record.state = TaskState::Succeeded;
                record.error = None;
                record.not_before = None;
                record.devices =
                    Some(
                        serde_json::to_string(&devices).map_err(|error| RunError::Encode {
                            what: format!("the device counts of task {}", record.idx),
                            error,
                        })?,
                    );
                if record.output.is_none() {
                    let _ = writeln!(
                        log,
                        "succeeded: no readings in the job's window for any pair of the job \
                         ({} models here): nothing to score, nothing written",
                        record.counts.models
                    );
                } else {
                    let _ = writeln!(
                        log,
                        "succeeded: {} models, {} rows, {} anomalies, {} failed models; load {} ms, score {} ms, write {} ms -> {}",
                        record.counts.models, record.counts.rows, record.counts.anomalies, record.counts.failed_models,
                        record.counts.load_ms, record.counts.score_ms, record.counts.write_ms,
                        record.output.as_deref().unwrap_or("")
                    );
                }
                for f in &failures {
                    let _ = writeln!(
                        log,
                        "model ({}, {}) failed: {}: {} ({} readings)",
                        f.device, f.tag, f.reason, f.detail, f.rows
                    );
                }
                return Ok(failures);
            }
            Err(e) => {
                let msg = e.chain();
                let _ = writeln!(log, "failed: {msg}");
                record.error = Some(msg);
                if record.attempts > job.max_retries {
                    record.state = TaskState::Failed;
                } else {
                    let wait = self
                        .config
                        .retry_backoff
                        .saturating_mul(2u32.pow((record.attempts - 1).min(10)));
                    let _ = writeln!(log, "retrying in {wait:?}");
                    record.state = TaskState::Queued;
                    record.not_before = Some(self.leases.after(wait));
                }
            }
        }
        Ok(Vec::new())
    }

    /// One attempt from the staged input: load, score, write the part.
    pub(super) async fn attempt_staged(
        &self,
        job: &JobRecord,
        record: &mut TaskRecord,
    ) -> Result<Scoring> {
        let t = Instant::now();
        let plan = self.staged(record).await?;
        let readings = self.gather(&plan).await?;
        let pack = self.pack_for(plan.generation).await?;
        // Window-input pairs read their windows.
        let mut wunits = Vec::new();
        let mut by_size: BTreeMap<&str, Vec<&PlanUnit>> = BTreeMap::new();
        for u in &plan.units {
            if let Some((size, _)) = &u.window {
                by_size.entry(size.as_str()).or_default().push(u);
            }
        }
        for (size, us) in by_size {
            let mut w =
                lake::load_windows(&self.store, size, job.window_start, job.window_end).await?;
            for u in us {
                wunits.push(WindowUnit {
                    device: u.device.clone(),
                    tag: u.tag.clone(),
                    features: u.window.clone().map(|(_, f)| f).unwrap_or_default(),
                    windows: w
                        .remove(&(u.device.clone(), u.tag.clone()))
                        .unwrap_or_default(),
                });
            }
        }
        let mine_empty = readings.is_empty() && wunits.iter().all(|u| u.windows.is_empty());
        // Map tasks count only the readings they route, and they route
        // none to a window-input pair: with such pairs in the plan, no
        // routed reading does not mean no reading (their windows may not
        // be written yet), so those pairs fail `no_data` as usual. (A
        // window without a raw row group and without windows plans no
        // task at all, and is skipped at finalizing.)
        let raw_input_only = plan.units.iter().all(|u| u.window.is_none());
        if mine_empty && raw_input_only && !plan.has_windows && self.window_rows(&plan).await? == 0
        {
            // The whole window is empty: no part, no `no_data` failures
            // (finalizing skips the job; see the module docs).
            record.counts.load_ms = t.elapsed().as_millis() as u64;
            record.counts.models = plan.units.len() as u64;
            (
                record.counts.rows,
                record.counts.anomalies,
                record.counts.failed_models,
            ) = (0, 0, 0);
            (record.counts.score_ms, record.counts.write_ms) = (0, 0);
            record.output = None;
            return Ok((Vec::new(), BTreeMap::new()));
        }
        record.counts.load_ms = t.elapsed().as_millis() as u64;
        let mut units: Vec<(String, String)> = plan
            .units
            .iter()
            .map(|u| (u.device.clone(), u.tag.clone()))
            .collect();
        // With the pairs the map tasks found (readings, no model of their
        // own), in order.
        let named: BTreeSet<&(String, String)> = units.iter().collect();
        let mut extra: Vec<(String, String)> = readings
            .owned_keys()
            .into_iter()
            .filter(|k| !named.contains(k))
            .collect();
        if !extra.is_empty() {
            units.append(&mut extra);
            units.sort();
        }
        let key = JobOutput::new(&job.mode, job.window_start, job.window_end).part_key(record.idx);
        let index = self.registry.index_shared().await?;
        let python = PythonModels::resolve(
            &index,
            units.iter().map(|(d, t)| (d.as_str(), t.as_str())),
            self.python.clone(),
            &self.store,
        );
        drop(index);
        let readings = Arc::new(readings);
        let models = TaskModels { pack, python };
        self.attempt(record, &readings, &units, &Arc::new(wunits), &models, &key)
            .await
    }

    /// The readings the map tasks of a score task's plan found in the
    /// window for the job's pairs (they have all succeeded when a score
    /// task runs).
    pub(super) async fn window_rows(&self, plan: &TaskPlan) -> Result<u64> {
        if plan.maps == 0 {
            return Ok(0);
        }
        Ok(self
            .db
            .tasks(plan.job)
            .await?
            .iter()
            .filter(|t| t.is_map() && t.plan_id.as_deref() == Some(plan.plan_id.as_str()))
            .map(|t| t.counts.rows)
            .sum())
    }

    /// One attempt: score, write the part. Model failures are results, not
    /// errors; an `Err` is worth a retry.
    pub(super) async fn attempt(
        &self,
        record: &mut TaskRecord,
        readings: &Arc<Readings>,
        units: &[(String, String)],
        wunits: &Arc<Vec<WindowUnit>>,
        models: &TaskModels,
        key: &str,
    ) -> Result<Scoring> {
        let t = Instant::now();
        let (r, p, k) = (
            Arc::clone(readings),
            Arc::clone(&models.pack),
            key.to_string(),
        );
        let wu = Arc::clone(wunits);
        let units = units.to_vec();
        let units_n = units.len();
        let idx = record.idx;
        let py = models.python.clone();
        let part =
            tokio::task::spawn_blocking(move || score_part(idx, &r, &p, &py, &units, &wu, &k))
                .await??;
        let ScoredPart {
            bytes,
            failures,
            rows,
            anomalies,
            devices,
        } = part;
        let models = units_n;
        record.counts.score_ms = t.elapsed().as_millis() as u64;
        let t = Instant::now();
        self.store.put(key, bytes).await?;
        record.counts.write_ms = t.elapsed().as_millis() as u64;
        record.counts.rows = rows as u64;
        record.counts.anomalies = anomalies as u64;
        record.counts.models = models as u64;
        record.counts.failed_models = failures.len() as u64;
        record.output = Some(key.to_string());
        Ok((failures, devices))
    }
}

/// What a score task scores with: the native models' pack, and the
/// Python models of its pairs.
pub(super) struct TaskModels {
    pack: Arc<Pack>,
    python: PythonModels,
}

/// A score task's part, scored and encoded, with what its record counts.
struct ScoredPart {
    /// The part's Parquet bytes.
    bytes: Vec<u8>,
    /// The task's pairs that failed, sorted by pair.
    failures: Vec<FailureRecord>,
    rows: usize,
    anomalies: usize,
    /// Rows and anomalies by device, for the manifest.
    devices: BTreeMap<String, DeviceCount>,
}

/// Scores a task's readings (raw-input pairs) and windows (window-input
/// pairs, each window a row of its features), notes the pairs of `units`
/// without data as `no_data`, and encodes the part named `name` (CPU work:
/// on the blocking pool).
fn score_part(
    idx: u32,
    r: &Readings,
    p: &Pack,
    python: &PythonModels,
    units: &[(String, String)],
    wu: &[WindowUnit],
    name: &str,
) -> Result<ScoredPart> {
    let mut scored = score_with_python(r.clone(), p, python, &|_| {})?;
    let mut failures: Vec<FailureRecord> = scored
        .failures
        .iter()
        .map(|f| failure_record(idx, f))
        .collect();
    // Pairs with data: readings, or windows for window input.
    let mut seen = vec![false; r.key_count()];
    for &k in r.key_ids() {
        seen[k as usize] = true;
    }
    let mut with_data: BTreeSet<(&str, &str)> = r
        .keys()
        .zip(&seen)
        .filter(|(_, &s)| s)
        .map(|(pair, _)| pair)
        .collect();
    // Window-input pairs: each window is a row of its features.
    let mut anomalies = scored.anomalies;
    let mut python_windows = Vec::new();
    for u in wu.iter() {
        if u.windows.is_empty() {
            continue;
        }
        with_data.insert((u.device.as_str(), u.tag.as_str()));
        if let Some(model) = python.get(&u.device, &u.tag) {
            python_windows.push(PythonUnit {
                device: u.device.clone(),
                tag: u.tag.clone(),
                model: Arc::clone(model),
                ts: u.windows.iter().map(|w| w.start).collect(),
                value: u
                    .windows
                    .iter()
                    .map(|w| feature(w, &u.features[0]))
                    .collect(),
                rows: u
                    .windows
                    .iter()
                    .flat_map(|w| u.features.iter().map(move |f| feature(w, f)))
                    .collect(),
                width: u.features.len(),
            });
            continue;
        }
        match score_windows(idx, &mut scored, p, u) {
            Ok(found) => anomalies += found,
            Err(failure) => failures.push(failure),
        }
    }
    if !python_windows.is_empty() {
        let (before, failed_before) = (scored.anomalies, scored.failures.len());
        score_units(&mut scored, python_windows, python, &|_| {})?;
        anomalies += scored.anomalies - before;
        failures.extend(
            scored
                .failures
                .iter()
                .skip(failed_before)
                .map(|f| failure_record(idx, f)),
        );
    }
    for (d, t) in units {
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
    let outputs = scored.outputs();
    let rows = scored.rows();
    let devices = scored.device_counts();
    let bytes = predictions_parquet_bytes(&scored.columns(&outputs), name)?;
    Ok(ScoredPart {
        bytes,
        failures,
        rows,
        anomalies,
        devices,
    })
}

/// A model failure as the job store records it.
fn failure_record(idx: u32, f: &crate::ModelFailure) -> FailureRecord {
    FailureRecord {
        task_idx: idx,
        device: f.device.clone(),
        tag: f.tag.clone(),
        reason: f.reason.code().to_string(),
        detail: f.reason.to_string(),
        rows: f.rows as u64,
    }
}

/// Scores one window-input pair's windows, each a row of its model's
/// features, and appends them to `scored` (`TS` = the window's start,
/// `Val` = its first feature); returns the anomalies found, or the pair's
/// `evaluation` failure.
fn score_windows(
    idx: u32,
    scored: &mut crate::Scored,
    p: &Pack,
    u: &WindowUnit,
) -> std::result::Result<usize, FailureRecord> {
    let Some(entry) = p.get(&u.device, &u.tag) else {
        // No model in the live pack (it changed since planning): nothing
        // scores these windows.
        return Ok(0);
    };
    let width = u.features.len();
    let rows: Vec<f64> = u
        .windows
        .iter()
        .flat_map(|w| u.features.iter().map(move |f| feature(w, f)))
        .collect();
    let n = u.windows.len();
    let (mut score, mut label) = (vec![0.0; n], vec![0u32; n]);
    let found = match entry
        .model
        .evaluate_into(&rows, width, &mut score, &mut label)
        .map_err(|e| e.to_string())
        .and_then(|a| crate::check_labels(&entry.model, &label).map(|()| a))
    {
        Ok(found) => found,
        Err(message) => {
            let reason = FailureReason::Evaluation { message };
            return Err(FailureRecord {
                task_idx: idx,
                device: u.device.clone(),
                tag: u.tag.clone(),
                reason: reason.code().to_string(),
                detail: reason.to_string(),
                rows: n as u64,
            });
        }
    };
    let k = scored.keys.len() as u32;
    scored.keys.push((u.device.clone(), u.tag.clone()));
    scored.kinds.push(entry.model.kind());
    scored.classes.push(entry.model.classes().to_vec());
    let from = scored.ts.len();
    for w in &u.windows {
        scored.ts.push(w.start);
        scored.value.push(feature(w, &u.features[0]));
    }
    scored.label.extend_from_slice(&label);
    scored.score.extend_from_slice(&score);
    scored.groups.push((k, from..scored.ts.len()));
    Ok(found)
}
