//! What the job store holds: jobs, tasks and failed models as records, and
//! the states and kinds they go through as enums.
//!
//! Every enum is stored (and serialized to JSON) as the lowercase name its
//! `as_str` gives, the same text the columns held when these were strings,
//! so databases written before stay readable. A stored name that does not
//! parse is reported as [`DbError::Corrupt`](super::DbError::Corrupt).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Names an enum is stored under, and their parsing: `as_str`, `Display`
/// (padded, so `{:<9}` lines up tables), `FromStr` (refusing any other
/// name, saying which it expected).
macro_rules! stored_names {
    ($ty:ident, $what:literal, $($variant:ident => $name:literal),+ $(,)?) => {
        impl $ty {
            /// The stored name (also its JSON).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }

            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(format!(
                        concat!("unknown ", $what, " {:?}: use one of {}"),
                        s,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
    };
}

/// A job's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to run.
    Queued,
    /// Running now.
    Running,
    /// Done, within its failure threshold.
    Succeeded,
    /// Done past its failure threshold, or an error stopped it.
    Failed,
    /// Stopped by a user.
    Cancelled,
    /// Not scored, and no failure: its window held no readings at all for
    /// the job's models (nothing to score), or it is a window missed
    /// beyond a schedule's catch-up limit (never run). `error` says which;
    /// a retry scores it (readings that arrived since included).
    Skipped,
}

stored_names!(JobState, "job state",
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
    Skipped => "skipped",
);

impl JobState {
    /// Whether the job is over.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// A task's life. A task is leased while `Running`; a failed attempt with
/// retries left goes back to `Queued` (with a `not_before`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a worker (a first attempt, or a retry).
    #[default]
    Queued,
    /// Leased to a worker, which runs it now.
    Running,
    /// Done: its output (if any) is written, its counts recorded.
    Succeeded,
    /// Out of attempts: its last error is recorded.
    Failed,
    /// Never to run: its job was cancelled, or ended without it (a map
    /// task failed).
    Cancelled,
}

stored_names!(TaskState, "task state",
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
);

impl TaskState {
    /// Whether the task is over.
    pub fn is_final(self) -> bool {
        !matches!(self, TaskState::Queued | TaskState::Running)
    }
}

/// What a task does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Scores some models (also an empty task, for the pairs the map tasks
    /// find without a model).
    #[default]
    Score,
    /// Reads a share of the window's raw row groups for the score tasks,
    /// which run once every map task has succeeded.
    Map,
}

stored_names!(TaskKind, "task kind",
    Score => "score",
    Map => "map",
);

/// How a job came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Created by a schedule.
    Scheduled,
    /// `fleetscore backfill`.
    Backfill,
    /// Triggered by hand (API or CLI).
    Manual,
}

stored_names!(JobKind, "job kind",
    Scheduled => "scheduled",
    Backfill => "backfill",
    Manual => "manual",
);

/// Whether jobs of one schedule may run at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// One at a time, oldest window first (the default).
    #[default]
    Forbid,
    /// Any number at once.
    Allow,
}

stored_names!(Concurrency, "concurrency",
    Forbid => "forbid",
    Allow => "allow",
);

/// When a job fails: more failed models than this.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Threshold {
    /// A number of models.
    Count(u64),
    /// A percentage of the job's models.
    Percent(f64),
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold::Percent(10.0)
    }
}

impl Threshold {
    /// Whether `failed` of `total` models is past it.
    pub fn exceeded(self, failed: u64, total: u64) -> bool {
        match self {
            Threshold::Count(n) => failed > n,
            Threshold::Percent(p) => total > 0 && failed as f64 * 100.0 > p * total as f64,
        }
    }
}

impl FromStr for Threshold {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = || format!("max_failed_models {s:?}: write a count (5) or a percentage (10%)");
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad());
            }
            Ok(Threshold::Percent(p))
        } else {
            t.parse().map(Threshold::Count).map_err(|_| bad())
        }
    }
}

impl TryFrom<String> for Threshold {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Threshold> for String {
    fn from(t: Threshold) -> String {
        t.to_string()
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Count(n) => write!(f, "{n}"),
            Threshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The schedule, for scheduled jobs.
    pub schedule: Option<String>,
    /// How it came to be.
    pub kind: JobKind,
    /// Window start (inclusive).
    pub window_start: i64,
    /// Window end (exclusive).
    pub window_end: i64,
    /// Model input mode (`raw`).
    pub mode: String,
    /// Only these `device/tag` keys; `None` = all.
    pub selection: Option<Vec<String>>,
    /// Models per task.
    pub batch_size: u32,
    /// Failure threshold.
    pub max_failed: Threshold,
    /// Attempts per task after the first.
    pub max_retries: u32,
    /// Overlap policy of its schedule.
    pub concurrency: Concurrency,
    /// `Queued`, or `Skipped` for a window past the catch-up limit.
    pub state: JobState,
    /// Why, for a skipped job.
    pub error: Option<String>,
}

/// What a task counted and timed, or a job, summed over its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Counters {
    /// Models scored or failed.
    pub models: u64,
    /// Rows scored.
    pub rows: u64,
    /// Anomalies found (outlier detectors' rows).
    pub anomalies: u64,
    /// Models that could not score.
    pub failed_models: u64,
    /// Time reading inputs, ms.
    pub load_ms: u64,
    /// Time scoring, ms.
    pub score_ms: u64,
    /// Time writing, ms.
    pub write_ms: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.models += o.models;
        self.rows += o.rows;
        self.anomalies += o.anomalies;
        self.failed_models += o.failed_models;
        self.load_ms += o.load_ms;
        self.score_ms += o.score_ms;
        self.write_ms += o.write_ms;
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    /// Id (1, 2, …).
    pub id: i64,
    /// Its schedule, if scheduled.
    pub schedule: Option<String>,
    /// How it came to be.
    pub kind: JobKind,
    /// Window start, ns.
    pub window_start: i64,
    /// Window end, ns.
    pub window_end: i64,
    /// Input mode.
    pub mode: String,
    /// Selected keys, `None` = all.
    pub selection: Option<Vec<String>>,
    /// State.
    pub state: JobState,
    /// Models per task.
    pub batch_size: u32,
    /// Failure threshold.
    pub max_failed: Threshold,
    /// Retries per task.
    pub max_retries: u32,
    /// Overlap policy.
    pub concurrency: Concurrency,
    /// Created, ns.
    pub created_at: i64,
    /// Started, ns.
    pub started_at: Option<i64>,
    /// Finished, ns.
    pub finished_at: Option<i64>,
    /// What its tasks counted and timed, summed (reading the window, its
    /// map tasks, counts as loading).
    #[serde(flatten)]
    pub counts: Counters,
    /// Tasks.
    pub tasks: u64,
    /// Why it failed, was cancelled or skipped.
    pub error: Option<String>,
    /// The manifest's key, once written.
    pub manifest: Option<String>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct TaskRecord {
    /// Its job.
    pub job_id: i64,
    /// 0, 1, … within the job: its score tasks first, then its map tasks.
    pub idx: u32,
    /// What it does.
    pub kind: TaskKind,
    /// Where it is in its life.
    pub state: TaskState,
    /// Attempts made.
    pub attempts: u32,
    /// First `device/tag` key of the task.
    pub first_key: String,
    /// Last key.
    pub last_key: String,
    /// Keys in it.
    pub n_keys: u64,
    /// Queued, ns.
    pub queued_at: i64,
    /// Started (last attempt), ns.
    pub started_at: Option<i64>,
    /// Finished, ns.
    pub finished_at: Option<i64>,
    /// What its last attempt counted and timed.
    #[serde(flatten)]
    pub counts: Counters,
    /// Its predictions object.
    pub output: Option<String>,
    /// Last error.
    pub error: Option<String>,
    /// The worker holding its lease while it runs.
    pub lease_owner: Option<String>,
    /// When that lease expires (the lease holders' clock, ns).
    pub lease_until: Option<i64>,
    /// A queued retry waits until then (the same clock, ns).
    pub not_before: Option<i64>,
    /// Rows and anomalies per device of its output, JSON (for the manifest).
    #[serde(skip)]
    pub devices: Option<String>,
    /// The job plan it belongs to: its inputs are staged under
    /// `staging/<job>/<plan>/`. `None` for tasks recorded before plans
    /// were named (such a job is retried to plan it again).
    pub plan_id: Option<String>,
}

/// [`TaskRecord::kind`] of a task that scores models (the stored name of
/// [`TaskKind::Score`]).
pub const TASK_SCORE: &str = "score";
/// [`TaskRecord::kind`] of a task that reads the window for the others
/// (the stored name of [`TaskKind::Map`]).
pub const TASK_MAP: &str = "map";

impl TaskRecord {
    /// Whether it is a map task (not one that scores models).
    pub fn is_map(&self) -> bool {
        self.kind == TaskKind::Map
    }
}

/// One model that did not score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureRecord {
    /// Task.
    pub task_idx: u32,
    /// Device.
    pub device: String,
    /// Tag.
    pub tag: String,
    /// `no_model`, `no_data`, `feature_mismatch`, `evaluation` (see
    /// [`FailureReason::code`](crate::FailureReason::code)).
    pub reason: String,
    /// Details.
    pub detail: String,
    /// Readings it had.
    pub rows: u64,
}

/// What a runner with no task to lease could do instead
/// ([`JobStore::idle_work`](super::JobStore::idle_work)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleWork {
    /// A planned running job has no task left to run: finalize it
    /// ([`JobStore::claim_finalize`](super::JobStore::claim_finalize)).
    pub finalize: bool,
    /// A job waits to be planned
    /// ([`JobStore::claim_job`](super::JobStore::claim_job); a job of a
    /// `forbid` schedule with a run still going counts here, the claim
    /// then finds nothing).
    pub plan: bool,
}

/// Totals over the job store, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobStats {
    /// Jobs per state (states without jobs are left out).
    pub jobs: Vec<(JobState, u64)>,
    /// Tasks per state (states without tasks are left out).
    pub tasks: Vec<(TaskState, u64)>,
    /// Task attempts beyond the first (retries).
    pub retries: u64,
    /// Rows scored by finished jobs.
    pub rows: u64,
    /// Anomalies found by finished jobs.
    pub anomalies: u64,
    /// Failed models in finished jobs.
    pub failed_models: u64,
    /// Seconds of finished jobs (start to finish), summed.
    pub job_seconds: f64,
    /// Finished jobs.
    pub finished: u64,
    /// Window end of the newest scheduled job that ran and did not fail:
    /// it succeeded, or found no readings in its window (skipped after it
    /// started; a window skipped past the catch-up limit never started),
    /// ns. A quiet fleet is not a stuck scheduler.
    pub last_success_window_end: Option<i64>,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this schedule.
    pub schedule: Option<String>,
    /// Only jobs whose window ends after this.
    pub window_from: Option<i64>,
    /// Only jobs whose window starts before this.
    pub window_to: Option<i64>,
    /// At most this many, newest first (default 100).
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are the columns' text of old: every value round-trips
    /// through its name, its JSON is that name, and the SQL in this crate
    /// that names states literally uses these very names.
    #[test]
    fn stored_names_round_trip_and_match_their_json() {
        fn check<T>(all: &[T], name: fn(&T) -> &'static str)
        where
            T: FromStr<Err = String> + Serialize + PartialEq + std::fmt::Debug,
        {
            for v in all {
                let n = name(v);
                assert_eq!(n.parse::<T>().as_ref(), Ok(v));
                assert_eq!(serde_json::to_value(v).unwrap(), n);
            }
        }
        check(JobState::ALL, |v| v.as_str());
        check(TaskState::ALL, |v| v.as_str());
        check(TaskKind::ALL, |v| v.as_str());
        check(JobKind::ALL, |v| v.as_str());
        check(Concurrency::ALL, |v| v.as_str());
        assert_eq!(TaskKind::Map.as_str(), TASK_MAP);
        assert_eq!(TaskKind::Score.as_str(), TASK_SCORE);
        let e = "done".parse::<TaskState>().unwrap_err();
        assert!(
            e.contains("\"done\"") && e.contains("queued, running, succeeded"),
            "{e}"
        );
        // Padded like text, for the CLI's tables.
        assert_eq!(format!("[{:<9}]", TaskState::Failed), "[failed   ]");
    }
}
