//! Planning: cut a job into score tasks and map tasks, stage the plan
//! (`staging/<job>/<plan>/plan.json`), and read it back for a task.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use fleetscore_store::lake::work::{plan_key, staging_prefix};
use fleetscore_store::lake::{self, RawInWindow};
use fleetscore_store::{ModelInput, Store};
use rustc_hash::FxHashMap;
use tracing::Instrument;

use crate::db::{JobRecord, JobState, TaskKind, TaskRecord, TaskState};
use crate::lease::{Held, Renewer};
use crate::stage::{JobPlan, MapPiece, PlanUnit};

use super::{persist, Result, RunError, Runner, Selection};

/// Deletes what a job staged (`staging/<job>/`: its plan and its map
/// outputs): for a cancelled job, which no runner finalizes. Returns the
/// number of objects deleted.
pub async fn drop_staging(store: &Store, job: i64) -> Result<usize> {
    let keys = store.list(&staging_prefix(job)).await?;
    for k in &keys {
        store.delete(k).await?;
    }
    Ok(keys.len())
}

/// A new plan's id, usable as one segment of an object key: the planner,
/// the time (ns) and a number this process gives each plan, so that two
/// plans of one planner at one clock time (a clock that stands still in a
/// test) still differ.
pub(super) fn new_plan_id(owner: &str, now: i64) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let owner: String = owner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{owner}-{now}-{n}")
}

/// Rows a map task reads at least (whole row groups, so often more).
pub(super) const MAP_ROWS: u64 = 400_000;
/// Map tasks a job is cut into at most.
pub(super) const MAX_MAPS: u64 = 64;

/// Each live model's input, by `(device, tag)`, borrowed from the index.
type Inputs<'a> = FxHashMap<(&'a str, &'a str), ModelInput>;

/// What a pair's model takes as rows: its own model's input, else its
/// fallback's (`*/tag`), else raw readings.
fn model_input(inputs: &Inputs<'_>, device: &str, tag: &str) -> ModelInput {
    inputs
        .get(&(device, tag))
        .or_else(|| inputs.get(&("*", tag)))
        .cloned()
        .unwrap_or_default()
}

/// A score task's pairs as its plan names them, each with its model's
/// input.
fn plan_units(inputs: &Inputs<'_>, pairs: &[(&str, &str)]) -> Vec<PlanUnit> {
    pairs
        .iter()
        .map(|&(d, t)| PlanUnit {
            device: d.to_string(),
            tag: t.to_string(),
            window: match model_input(inputs, d, t) {
                ModelInput::Raw => None,
                ModelInput::Window { size, features } => Some((size, features)),
            },
        })
        .collect()
}

/// Map tasks: the raw row groups that may hold readings of the window, in
/// order, in shares of about [`MAP_ROWS`] (no more than [`MAX_MAPS`]).
fn cut_maps(raw: &[RawInWindow]) -> Vec<Vec<MapPiece>> {
    let total: u64 = raw.iter().flat_map(|r| &r.groups).map(|&(_, n)| n).sum();
    let share = MAP_ROWS.max(total.div_ceil(MAX_MAPS));
    let mut maps: Vec<Vec<MapPiece>> = Vec::new();
    let mut rows = share;
    for RawInWindow { listed, groups, .. } in raw {
        let key = &listed.key;
        for &(g, n) in groups {
            if rows >= share {
                maps.push(Vec::new());
                rows = 0;
            }
            let pieces = maps.last_mut().expect("pushed above");
            match pieces.last_mut() {
                Some(p) if &p.key == key => p.row_groups.push(g),
                _ => pieces.push(MapPiece {
                    key: key.clone(),
                    row_groups: vec![g],
                    size: listed.size,
                    version: listed.version.clone(),
                }),
            }
            rows += n;
        }
    }
    maps
}

/// The records of a plan's tasks, queued at `now`: its score tasks (each
/// over its pairs), then its map tasks (each over its raw row groups).
fn task_records(plan: &JobPlan, now: i64) -> Vec<TaskRecord> {
    let key = |u: Option<&PlanUnit>| {
        u.map(|u| format!("{}/{}", u.device, u.tag))
            .unwrap_or_default()
    };
    let score = plan
        .task_units
        .iter()
        .enumerate()
        .map(|(i, units)| TaskRecord {
            job_id: plan.job,
            idx: i as u32,
            state: TaskState::Queued,
            first_key: key(units.first()),
            last_key: key(units.last()),
            n_keys: units.len() as u64,
            queued_at: now,
            plan_id: Some(plan.plan_id.clone()),
            ..TaskRecord::default()
        });
    let map = (0..plan.maps.len()).map(|m| {
        let (first_key, last_key, n_keys) = plan.map_summary(m).expect("a map has pieces");
        TaskRecord {
            job_id: plan.job,
            idx: plan.tasks + m as u32,
            kind: TaskKind::Map,
            state: TaskState::Queued,
            first_key,
            last_key,
            n_keys,
            queued_at: now,
            plan_id: Some(plan.plan_id.clone()),
            ..TaskRecord::default()
        }
    });
    score.chain(map).collect()
}

impl Runner {
    /// Plans a claimed job; a failure fails the job (an `Err` means the job
    /// store itself failed).
    pub(super) async fn plan(&self, job: JobRecord) -> Result<()> {
        let span = tracing::info_span!("plan", job_id = job.id);
        crate::trace::join(&span, &job);
        self.plan_claimed(job).instrument(span).await
    }

    async fn plan_claimed(&self, job: JobRecord) -> Result<()> {
        let id = job.id;
        let renew = self.leases.keep(Arc::clone(&self.db), Held::Job(id));
        match self.plan_inner(job.clone(), &renew).await {
            Ok(None) => {
                tracing::warn!(
                    job = id,
                    "planning lost its lease; another process plans it"
                );
                self.drop_staged(id);
                Ok(())
            }
            Ok(Some((job, tasks))) => {
                // Renewing stops before the plan ends the lease.
                drop(renew);
                let owner = self.owner.clone();
                let planned = persist("recording the plan", || {
                    self.db.plan_job(&job, &tasks, &owner)
                })
                .await?;
                if !planned {
                    tracing::warn!(
                        job = id,
                        "planning lost its lease; another process plans it"
                    );
                    self.drop_staged(id);
                }
                Ok(())
            }
            Err(e) => {
                drop(renew);
                tracing::error!(job = id, "job failed: {}", e.chain());
                self.drop_staged(id);
                let mut j = job;
                j.state = JobState::Failed;
                j.error = Some(e.chain());
                j.finished_at = Some(self.clock.now());
                let owner = self.owner.clone();
                let recorded =
                    persist("recording a failed job", || self.db.finish_job(&j, &owner)).await?;
                if recorded {
                    self.write_job_log(&j).await;
                    self.report(&j);
                }
                Ok(())
            }
        }
    }

    /// Cuts the job into score tasks and map tasks and stages their plans
    /// in the store; returns the job's figures and its tasks, for the
    /// caller to record.
    ///
    /// Planning reads the model index and the footers of the window's raw
    /// objects (their row groups, and the time span of each from its
    /// statistics). Its pairs are those with a live model (and, for
    /// window-input models, those with windows); the readings are read by
    /// the map tasks, which any worker runs, each over some of the raw row
    /// groups, and which also find the pairs that have readings but no
    /// model of their own (see [`JobPlan::route`]). Only when there are
    /// fallback models (`*/tag`), which score pairs the index does not
    /// name, does planning read the window's pairs too (the TS, Device and
    /// Tag columns, never the values), to cut them into tasks.
    pub(super) async fn plan_inner(
        &self,
        mut job: JobRecord,
        renew: &Renewer,
    ) -> Result<Option<(JobRecord, Vec<TaskRecord>)>> {
        if job.mode != "raw" {
            return Err(RunError::Unsupported(format!(
                "input mode {:?} is not supported by this runner (use raw)",
                job.mode
            )));
        }
        let t = Instant::now();
        let index = self.registry.index_shared().await?;
        let generation = index.generation;
        // Each live model's input, by (device, tag), borrowed from the
        // index (planning copies no pair it does not keep).
        let inputs: Inputs = index
            .models
            .iter()
            .filter_map(|(k, e)| Some((k.split_once('/')?, ModelInput::of(e.live_version()?))))
            .collect();
        let input_of = |d: &str, t: &str| model_input(&inputs, d, t);
        let (from, to) = (job.window_start, job.window_end);
        // A fallback model (`*/tag`) scores pairs the index does not name:
        // then planning reads the window's pairs (the TS, Device and Tag
        // columns), to cut them into tasks. Otherwise it reads no readings:
        // the map tasks find the pairs without a model.
        let fallbacks = inputs.keys().any(|(d, _)| *d == "*");
        let raw = lake::raw_in_window(&self.store, from, to, fallbacks).await?;
        let read_ms = t.elapsed().as_millis() as u64;
        let windowed = self.windowed_pairs(&inputs, from, to).await?;

        // Units: pairs with a live model, readings or windows, selected, sorted.
        let selection = Selection::of(&job);
        let selected = |d: &str, t: &str| selection.contains(d, t);
        let mut units: Vec<(&str, &str)> = inputs
            .keys()
            .copied()
            .filter(|&(d, t)| d != "*" && selected(d, t))
            .collect();
        for (d, t) in raw.iter().flat_map(|r| &r.keys).chain(&windowed) {
            if selected(d, t) {
                units.push((d, t));
            }
        }
        units.sort_unstable();
        units.dedup();
        // Map tasks read the raw readings if any pair of the job may take
        // them: a raw-input model's, or one the map tasks find with
        // readings but no model of its own (any pair, or a selected one
        // the units do not hold).
        let any_raw = units.iter().any(|(d, t)| input_of(d, t) == ModelInput::Raw)
            || selection.len().is_none_or(|n| n > units.len());
        let any_raw = any_raw && !raw.is_empty();
        let has_windows = windowed.iter().any(|(d, t)| selected(d, t));
        let batch = job.batch_size.max(1) as usize;
        // No row group may hold a reading of the window that a pair of the
        // job takes, and no pair has windows: nothing to score, no task
        // (finalizing skips the job).
        // A window-input pair whose windows are not written yet, while
        // raw/ holds row groups of the window: not an empty window (its
        // score task records `no_data`; see `attempt_staged`).
        let unwindowed =
            !raw.is_empty() && units.iter().any(|(d, t)| input_of(d, t) != ModelInput::Raw);
        let mut chunks: Vec<&[(&str, &str)]> = if any_raw || has_windows || unwindowed {
            units.chunks(batch).collect()
        } else {
            Vec::new()
        };
        if chunks.is_empty() && any_raw {
            // A task for the pairs the map tasks find.
            chunks.push(&[]);
        }
        let n_tasks = chunks.len() as u32;
        // Map tasks read the raw row groups only if a pair takes them.
        let maps = if any_raw { cut_maps(&raw) } else { Vec::new() };
        let plan_id = new_plan_id(&self.owner, self.clock.now());
        let plan = JobPlan {
            format: "fleetscore-job-plan".into(),
            job: job.id,
            plan_id: plan_id.clone(),
            window: (from, to),
            generation,
            tasks: n_tasks,
            task_units: chunks.iter().map(|c| plan_units(&inputs, c)).collect(),
            maps,
            window_tags: inputs
                .iter()
                .filter(|(_, i)| matches!(i, ModelInput::Window { .. }))
                .filter(|((d, _), _)| *d == "*")
                .map(|((_, t), _)| t.to_string())
                .collect(),
            has_windows,
        };
        let tasks = task_records(&plan, self.clock.now());
        let cut_ms = t.elapsed().as_millis() as u64 - read_ms;
        // Stage the plan, so any worker can run any task; not if the job
        // went to another planner meanwhile. (Were the lease lost during
        // the write, the plan's name is its own: no task record names it,
        // so no task reads it. It is deleted with the job's staging, or,
        // should the write land after that, left behind.)
        if renew.lost() {
            return Ok(None);
        }
        self.store
            .put(
                &plan_key(job.id, &plan_id),
                serde_json::to_vec(&plan).map_err(|error| RunError::Encode {
                    what: format!("the plan of job {}", job.id),
                    error,
                })?,
            )
            .await?;
        if let Ok(mut cache) = self.staged.lock() {
            cache.plans.insert(job.id, Arc::new(plan));
        }
        job.counts.load_ms = t.elapsed().as_millis() as u64;
        job.tasks = u64::from(n_tasks);
        // The pairs planned; finalizing counts those scored or failed.
        job.counts.models = units.len() as u64;
        tracing::info!(
            job = job.id,
            tasks = n_tasks,
            maps = tasks.len() - n_tasks as usize,
            models = units.len(),
            read_ms,
            cut_ms,
            stage_ms = job.counts.load_ms - read_ms - cut_ms,
            "job planned"
        );
        if renew.lost() {
            return Ok(None);
        }
        Ok(Some((job, tasks)))
    }

    /// The pairs with windows in `[from, to)` whose model takes windows of
    /// that size, reading every size a window-input model needs.
    async fn windowed_pairs(
        &self,
        inputs: &Inputs<'_>,
        from: i64,
        to: i64,
    ) -> Result<BTreeSet<(String, String)>> {
        let mut sizes: BTreeSet<String> = BTreeSet::new();
        for i in inputs.values() {
            if let ModelInput::Window { size, .. } = i {
                sizes.insert(size.clone());
            }
        }
        let mut windowed: BTreeSet<(String, String)> = BTreeSet::new();
        for size in &sizes {
            let w = lake::load_windows(&self.store, size, from, to).await?;
            for (d, t) in w.into_keys() {
                if matches!(model_input(inputs, &d, &t), ModelInput::Window { size: s, .. } if &s == size)
                {
                    windowed.insert((d, t));
                }
            }
        }
        Ok(windowed)
    }

    /// The job plan a task follows: from memory if this process planned or
    /// read it, else from the store; checked against the task.
    pub(super) async fn job_plan(&self, record: &TaskRecord) -> Result<Arc<JobPlan>> {
        let job = record.job_id;
        let fits = |plan: &JobPlan| {
            if record.is_map() {
                let m = record.idx.checked_sub(plan.tasks);
                m.and_then(|m| plan.map_summary(m as usize))
                    == Some((
                        record.first_key.clone(),
                        record.last_key.clone(),
                        record.n_keys,
                    ))
            } else {
                plan.fits_task(
                    record.idx,
                    record.n_keys,
                    &record.first_key,
                    &record.last_key,
                )
            }
        };
        let Some(plan_id) = record.plan_id.as_deref() else {
            return Err(RunError::Stale(format!(
                "task {} of job {job} names no plan (it was planned by an older fleetscore); \
                 retry the job to plan it again",
                record.idx
            )));
        };
        let cached = self
            .staged
            .lock()
            .ok()
            .and_then(|c| c.plans.get(&job).cloned());
        if let Some(p) = cached {
            if p.plan_id == plan_id && fits(&p) {
                return Ok(p);
            }
        }
        let key = plan_key(job, plan_id);
        let bytes = self.store.get(&key).await?.ok_or_else(|| {
            RunError::Stale(format!(
                "the job's plan {key} is missing from the store {}",
                self.store.url()
            ))
        })?;
        let plan: JobPlan = serde_json::from_slice(&bytes)
            .map_err(|e| RunError::Stale(format!("the job plan {key} does not read: {e}")))?;
        if plan.plan_id != plan_id || !fits(&plan) {
            return Err(RunError::Stale(format!(
                "the job plan {key} has no {} task {} over {}..{}",
                record.kind, record.idx, record.first_key, record.last_key
            )));
        }
        let plan = Arc::new(plan);
        if let Ok(mut c) = self.staged.lock() {
            c.plans.insert(job, Arc::clone(&plan));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscore_store::Listed;

    fn object(key: &str, groups: &[u64]) -> RawInWindow {
        RawInWindow {
            listed: Listed {
                key: key.into(),
                size: 1_000,
                version: Some(format!("v-{key}")),
            },
            groups: groups.iter().copied().enumerate().collect(),
            keys: Vec::new(),
        }
    }

    #[test]
    fn map_tasks_take_whole_row_groups_in_order_in_shares_of_map_rows() {
        let half = MAP_ROWS / 2;
        let raw = [
            object("raw/a", &[half, half, half]),
            object("raw/b", &[half]),
        ];
        let maps = cut_maps(&raw);
        let shape: Vec<Vec<(&str, Vec<usize>)>> = maps
            .iter()
            .map(|m| {
                m.iter()
                    .map(|p| (p.key.as_str(), p.row_groups.clone()))
                    .collect()
            })
            .collect();
        // A share ends once it holds MAP_ROWS; the next object's first
        // group joins the share the previous object left open.
        assert_eq!(
            shape,
            vec![
                vec![("raw/a", vec![0, 1])],
                vec![("raw/a", vec![2]), ("raw/b", vec![0])],
            ]
        );
        // Each piece names the version listed, so a replaced object is seen.
        assert_eq!(maps[1][1].version.as_deref(), Some("v-raw/b"));
        assert!(cut_maps(&[]).is_empty());
    }

    #[test]
    fn a_job_is_cut_into_at_most_max_maps_map_tasks() {
        let groups = vec![MAP_ROWS; 3 * MAX_MAPS as usize];
        let maps = cut_maps(&[object("raw/a", &groups)]);
        assert_eq!(maps.len() as u64, MAX_MAPS);
        assert!(maps.iter().all(|m| m[0].row_groups.len() == 3));
    }
}
