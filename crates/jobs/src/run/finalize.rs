//! Finalizing: once every task of a job has ended, write the manifest,
//! record the outcome and the job log, delete the staged inputs.

use std::collections::BTreeMap;

use fleetscore_core::format_ts;
use fleetscore_store::lake::{self, DeviceCount, JobOutput, Manifest};
use tracing::Instrument;

use crate::db::{Counters, JobRecord, JobState, TaskRecord, TaskState};

use super::{persist, Result, Runner};
use fleetscore_store::lake::work::staging_prefix;

/// The reason of a job skipped because its window held no readings for
/// any of its `models` pairs (see the module docs); starts with
/// `no readings in the window`.
pub fn no_readings(job: i64, models: u64) -> String {
    let whose = match models {
        0 => String::new(),
        1 => " for its model".to_string(),
        n => format!(" for any of its {n} models"),
    };
    format!(
        "no readings in the window{whose}: nothing to score; `fleetscore jobs retry {job}` \
         scores it if readings for it arrive later"
    )
}

/// Sums the job's figures and device counts over its tasks (the map
/// tasks' times count as loading), and finds the first task that did not
/// succeed: the job's failure, if any.
fn tally(
    job: &mut JobRecord,
    maps: &[TaskRecord],
    tasks: &[TaskRecord],
) -> (Option<String>, BTreeMap<String, DeviceCount>) {
    // The planning's load time stays; the rest is summed anew.
    job.counts = Counters {
        load_ms: job.counts.load_ms,
        ..Counters::default()
    };
    job.tasks = tasks.len() as u64;
    let mut task_error = maps
        .iter()
        .find(|m| m.state != TaskState::Succeeded)
        .map(|m| {
            format!(
                "reading the window failed: map task {} ({} raw row groups of {}..{}) {}: {}",
                m.idx,
                m.n_keys,
                m.first_key,
                m.last_key,
                m.state,
                m.error.as_deref().unwrap_or("")
            )
        });
    // Reading the window (the map tasks) counts as loading.
    job.counts.load_ms += maps
        .iter()
        .map(|m| m.counts.load_ms + m.counts.write_ms)
        .sum::<u64>();
    let mut devices: BTreeMap<String, DeviceCount> = BTreeMap::new();
    for r in tasks {
        // A score task's load time is the window's, counted above.
        job.counts += Counters {
            load_ms: 0,
            ..r.counts
        };
        if r.state != TaskState::Succeeded && task_error.is_none() {
            task_error = Some(format!(
                "task {} {}: {}",
                r.idx,
                r.state,
                r.error.as_deref().unwrap_or("")
            ));
        }
        if let Some(d) = &r.devices {
            match serde_json::from_str::<BTreeMap<String, DeviceCount>>(d) {
                Ok(d) => {
                    for (k, c) in d {
                        let e = devices.entry(k).or_default();
                        e.rows += c.rows;
                        e.anomalies += c.anomalies;
                    }
                }
                // Recorded as the job's failure, not retried for ever.
                Err(e) => {
                    if task_error.is_none() {
                        task_error = Some(format!(
                            "task {}: its recorded device counts do not read back: {e}",
                            r.idx
                        ));
                    }
                }
            }
        }
    }
    (task_error, devices)
}

impl Runner {
    /// Writes the manifest and records the outcome of a job whose tasks
    /// have all ended.
    pub(super) async fn finalize(&self, job: JobRecord) -> Result<()> {
        let span = tracing::info_span!("finalize", job_id = job.id);
        crate::trace::join(&span, &job);
        self.finalize_claimed(job).instrument(span).await
    }

    async fn finalize_claimed(&self, mut job: JobRecord) -> Result<()> {
        let id = job.id;
        let (maps, tasks): (Vec<TaskRecord>, Vec<TaskRecord>) = self
            .db
            .tasks(id)
            .await?
            .into_iter()
            .partition(|t| t.is_map());
        // As planned (see `plan_inner`): what a job without tasks reports.
        let planned_models = job.counts.models;
        let (task_error, devices) = tally(&mut job, &maps, &tasks);
        // Planning found nothing to read (no task), or every score task
        // found the window empty (see `attempt_staged`): no part, no model
        // failed.
        let empty = task_error.is_none() && tasks.iter().all(|t| t.output.is_none());
        if tasks.is_empty() {
            job.counts.models = planned_models;
        }
        let outcome = match task_error {
            Some(e) => Err(e),
            None if empty => Ok(None),
            None => self
                .write_manifest(&job, &tasks, devices)
                .await
                .map(Some)
                .map_err(|e| e.to_string()),
        };
        match outcome {
            Ok(None) => {
                job.manifest = None;
                job.state = JobState::Skipped;
                job.error = Some(no_readings(id, job.counts.models));
            }
            Ok(Some(key)) => {
                job.manifest = Some(key);
                if job
                    .max_failed
                    .exceeded(job.counts.failed_models, job.counts.models)
                {
                    job.state = JobState::Failed;
                    job.error = Some(format!(
                        "{} of {} models failed, more than max_failed_models = {}",
                        job.counts.failed_models, job.counts.models, job.max_failed
                    ));
                } else {
                    job.state = JobState::Succeeded;
                    job.error = None;
                }
            }
            Err(e) => {
                job.state = JobState::Failed;
                job.error = Some(e);
            }
        }
        job.finished_at = Some(self.clock.now());
        let owner = self.owner.clone();
        let recorded = persist("recording a job", || self.db.finish_job(&job, &owner)).await?;
        if !recorded {
            tracing::warn!(
                job = id,
                "the job was cancelled or taken over while finalizing"
            );
            return Ok(());
        }
        self.write_job_log(&job).await;
        self.report(&job);
        if let Ok(mut f) = self.finished.lock() {
            f.push(id);
        }
        // The staged inputs are no longer needed.
        self.drop_staged(id);
        self.delete_staging(id).await;
        tracing::info!(
            job = id,
            state = %job.state,
            models = job.counts.models,
            rows = job.counts.rows,
            anomalies = job.counts.anomalies,
            failed = job.counts.failed_models,
            "job finished"
        );
        Ok(())
    }

    /// Deletes a finalized job's staged inputs (its plans and map
    /// outputs); a failure is only logged: they are no longer read.
    async fn delete_staging(&self, id: i64) {
        match self.store.list(&staging_prefix(id)).await {
            Ok(keys) => {
                for k in keys {
                    if let Err(e) = self.store.delete(&k).await {
                        tracing::warn!(job = id, "deleting {k}: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!(job = id, "listing the staged inputs: {e}"),
        }
    }

    /// Deletes parts of an earlier, larger run of the window, then writes
    /// the manifest (last); returns its key.
    pub(super) async fn write_manifest(
        &self,
        job: &JobRecord,
        tasks: &[TaskRecord],
        devices: BTreeMap<String, DeviceCount>,
    ) -> Result<String> {
        let manifest = Manifest {
            format: lake::MANIFEST_FORMAT.into(),
            job: job.id,
            window_start: format_ts(job.window_start),
            window_end: format_ts(job.window_end),
            mode: job.mode.clone(),
            parts: tasks.iter().filter_map(|t| t.output.clone()).collect(),
            models: job.counts.models,
            rows: job.counts.rows,
            anomalies: job.counts.anomalies,
            failed_models: job.counts.failed_models,
            devices,
        };
        let output = JobOutput::new(&job.mode, job.window_start, job.window_end);
        Ok(output.finish(&self.store, job.tasks, &manifest).await?)
    }

    pub(super) async fn write_job_log(&self, job: &JobRecord) {
        let id = job.id;
        let log = format!(
            "job {id} {}: window [{}, {}) mode {} — {} models, {} rows, {} anomalies, {} failed models, {} tasks; load {} ms, score {} ms, write {} ms{}\n",
            job.state,
            format_ts(job.window_start),
            format_ts(job.window_end),
            job.mode,
            job.counts.models,
            job.counts.rows,
            job.counts.anomalies,
            job.counts.failed_models,
            job.tasks,
            job.counts.load_ms,
            job.counts.score_ms,
            job.counts.write_ms,
            job.error
                .as_deref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        );
        if let Err(e) = self.store.put(&lake::work::job_log_key(id), log).await {
            tracing::warn!(job = id, "writing the job log failed: {e}");
        }
    }
}
