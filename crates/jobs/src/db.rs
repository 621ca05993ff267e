//! The job store: schedules' progress, jobs, tasks and per-model failures.
//!
//! [`JobStore`] is what the scheduler, the runner, the workers, the CLI and
//! the API need; [`SqlStore`] implements it over SQLite (a file in the data
//! folder, the embedded default) or PostgreSQL (`postgres://…`, shared by
//! any number of `fleetscore worker` processes on any hosts). Both run the
//! same SQL but for a few dialect differences; each has its own migrations.
//! Times are `i64` nanoseconds since the epoch, UTC.
//!
//! # Leases
//! Work is handed out in leases so that a process that vanishes loses its
//! work to others after `lease_until` (wall-clock ns): a queued job is
//! claimed for planning ([`JobStore::claim_job`]), its tasks are leased one
//! at a time ([`JobStore::lease_task`], `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL) and renewed while they run, and once every task is done one
//! process claims the job again to finalize it ([`JobStore::claim_finalize`]).
//! Every write that ends a leased step is conditional on still holding the
//! lease, so a slow process whose lease expired cannot overwrite the
//! outcome recorded by the process that took over.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
// Dynamic SQL here only splices constant column lists and dialect words.
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database refused or failed.
    // The driver's message is part of this one (not a `source`), so a
    // report shows it once.
    #[error("job store {url}: {error}")]
    Sql {
        /// The database.
        url: String,
        /// The driver's error.
        error: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("job store {url}: migrating the schema: {error}")]
    Migrate {
        /// The database.
        url: String,
        /// The migrator's error.
        error: sqlx::migrate::MigrateError,
    },
    /// A URL this build cannot open.
    #[error("job store URL {0:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE")]
    Url(String),
    /// Listening for new work needs PostgreSQL.
    #[error(
        "job store {0}: only a PostgreSQL job store announces new work; workers on SQLite poll"
    )]
    NotPostgres(String),
    /// A stored value that does not parse (a newer schema, or an edit by hand).
    #[error("job store: bad {what} {value:?} in job {job}")]
    Corrupt {
        /// The column.
        what: &'static str,
        /// Its value.
        value: String,
        /// The job.
        job: i64,
    },
    /// The job does not exist.
    #[error("no job {0}")]
    NoJob(i64),
    /// The job is not in a state that allows the call.
    #[error("job {id} is {state}: {why}")]
    State {
        /// The job.
        id: i64,
        /// Its state.
        state: JobState,
        /// What the call needs.
        why: &'static str,
    },
}

/// Shorthand.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// A job's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl JobState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Skipped => "skipped",
        }
    }

    /// Whether the job is over.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            "skipped" => JobState::Skipped,
            _ => return Err(format!("unknown job state {s:?}")),
        })
    }
}

/// How a job came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Created by a schedule.
    Scheduled,
    /// `fleetscore backfill`.
    Backfill,
    /// Triggered by hand (API or CLI).
    Manual,
}

impl JobKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Scheduled => "scheduled",
            JobKind::Backfill => "backfill",
            JobKind::Manual => "manual",
        }
    }
}

impl FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "scheduled" => JobKind::Scheduled,
            "backfill" => JobKind::Backfill,
            "manual" => JobKind::Manual,
            _ => return Err(format!("unknown job kind {s:?}")),
        })
    }
}

/// Whether jobs of one schedule may run at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// One at a time, oldest window first (the default).
    #[default]
    Forbid,
    /// Any number at once.
    Allow,
}

impl Concurrency {
    fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Allow => "allow",
        }
    }
}

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
    /// Models scored or failed.
    pub models: u64,
    /// Rows scored.
    pub rows: u64,
    /// Anomalies found.
    pub anomalies: u64,
    /// Failed models.
    pub failed_models: u64,
    /// Tasks.
    pub tasks: u64,
    /// Time reading the window, ms.
    pub load_ms: u64,
    /// Time scoring (summed over tasks), ms.
    pub score_ms: u64,
    /// Time writing (summed over tasks), ms.
    pub write_ms: u64,
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
    /// `score` (scores some models; also an empty kind) or `map` (reads a share
    /// of the window's raw row groups for the score tasks; they run once
    /// every map task has succeeded).
    pub kind: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub state: String,
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
    /// Models scored or failed.
    pub models: u64,
    /// Rows.
    pub rows: u64,
    /// Anomalies.
    pub anomalies: u64,
    /// Failed models.
    pub failed_models: u64,
    /// Load time, ms.
    pub load_ms: u64,
    /// Score time, ms.
    pub score_ms: u64,
    /// Write time, ms.
    pub write_ms: u64,
    /// Its predictions object.
    pub output: Option<String>,
    /// Last error.
    pub error: Option<String>,
    /// The worker holding its lease while it runs.
    pub lease_owner: Option<String>,
    /// When that lease expires (wall clock, ns).
    pub lease_until: Option<i64>,
    /// A queued retry waits until then (wall clock, ns).
    pub not_before: Option<i64>,
    /// Rows and anomalies per device of its output, JSON (for the manifest).
    #[serde(skip)]
    pub devices: Option<String>,
    /// The job plan it belongs to: its inputs are staged under
    /// `staging/<job>/<plan>/`. `None` for tasks recorded before plans
    /// were named (such a job is retried to plan it again).
    pub plan_id: Option<String>,
}

/// [`TaskRecord::kind`] of a task that scores models.
pub const TASK_SCORE: &str = "score";
/// [`TaskRecord::kind`] of a task that reads the window for the others.
pub const TASK_MAP: &str = "map";

impl TaskRecord {
    /// Whether it is a map task (not one that scores models).
    pub fn is_map(&self) -> bool {
        self.kind == TASK_MAP
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
    /// `no_model`, `no_data`, `feature_mismatch`, `evaluation`.
    pub reason: String,
    /// Details.
    pub detail: String,
    /// Readings it had.
    pub rows: u64,
}

/// What a runner with no task to lease could do instead
/// ([`JobStore::idle_work`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleWork {
    /// A planned running job has no task left to run: finalize it
    /// ([`JobStore::claim_finalize`]).
    pub finalize: bool,
    /// A job waits to be planned ([`JobStore::claim_job`]; a job of a
    /// `forbid` schedule with a run still going counts here, the claim
    /// then finds nothing).
    pub plan: bool,
}

/// Totals over the job store, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobStats {
    /// Jobs per state.
    pub jobs: Vec<(String, u64)>,
    /// Tasks per state.
    pub tasks: Vec<(String, u64)>,
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

/// What the scheduler, the runner, the workers, the CLI and the API need
/// from a job store.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Where it is, for messages.
    fn url(&self) -> &str;
    /// The newest fire time jobs were created for, per schedule.
    async fn last_fire(&self, schedule: &str) -> Result<Option<i64>>;
    /// Creates a schedule's jobs (a window already scheduled is left alone)
    /// and records `last_fire`, in one transaction. Returns each job's new
    /// id, `None` where the window already had its job.
    async fn schedule_jobs(
        &self,
        schedule: &str,
        jobs: &[NewJob],
        last_fire: i64,
        now: i64,
    ) -> Result<Vec<Option<i64>>>;
    /// Creates one job (backfill, manual).
    async fn create_job(&self, job: &NewJob, now: i64) -> Result<i64>;
    /// Takes the oldest runnable queued job (respecting `forbid`), or a
    /// running job whose planner's lease expired before it was planned,
    /// marks it running and leases it to `owner` until `until` (wall clock)
    /// for planning. `now` is the job clock's time, `wall` the wall clock's;
    /// `only` limits the claim to one job (this and the other claims).
    async fn claim_job(
        &self,
        now: i64,
        wall: i64,
        owner: &str,
        until: i64,
        only: Option<i64>,
    ) -> Result<Option<JobRecord>>;
    /// One job.
    async fn job(&self, id: i64) -> Result<JobRecord>;
    /// Jobs, newest first.
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>>;
    /// Records a claimed job's plan: replaces its tasks (and failures) with
    /// `tasks`, stores its figures so far (`tasks`, `load_ms`, `models`:
    /// the pairs planned), marks it planned and ends `owner`'s lease. `false` (nothing written) if
    /// `owner` no longer holds the job.
    async fn plan_job(&self, job: &JobRecord, tasks: &[TaskRecord], owner: &str) -> Result<bool>;
    /// Leases the next runnable task of a planned running job (queued and
    /// past its `not_before`, or running with an expired lease) to `owner`
    /// until `until`: marks it running and counts the attempt.
    async fn lease_task(
        &self,
        now: i64,
        wall: i64,
        owner: &str,
        until: i64,
        only: Option<i64>,
    ) -> Result<Option<TaskRecord>>;
    /// When the earliest queued retry of a running job may run (its
    /// `not_before`), if any: a runner going idle waits for it.
    async fn next_retry(&self) -> Result<Option<i64>>;
    /// Whether [`JobStore::claim_finalize`] and [`JobStore::claim_job`]
    /// could find a job now (at `wall`; `only` limits it to one job), in
    /// one round trip: a runner without a task asks this instead of
    /// trying both claims, which mostly find nothing while other runners
    /// finish a job's tasks. Advisory: a claim still decides.
    async fn idle_work(&self, wall: i64, only: Option<i64>) -> Result<IdleWork>;
    /// Extends a task's lease; `false` if `owner` lost it.
    async fn renew_task(&self, job: i64, idx: u32, owner: &str, until: i64) -> Result<bool>;
    /// Extends a job's planning or finalizing lease; `false` if lost.
    async fn renew_job(&self, job: i64, owner: &str, until: i64) -> Result<bool>;
    /// Records the end of a leased attempt (`succeeded`, `failed`, or
    /// `queued` again for a retry after `not_before`) with its failed
    /// models, and ends the lease, in one transaction. `false` (nothing
    /// written) if `owner` no longer holds the task.
    async fn finish_task(
        &self,
        task: &TaskRecord,
        failures: &[FailureRecord],
        owner: &str,
    ) -> Result<bool>;
    /// Hands a leased task back unfinished (a worker stopping): queued
    /// again, the attempt not counted.
    async fn release_task(&self, job: i64, idx: u32, owner: &str) -> Result<bool>;
    /// Takes a planned running job whose tasks have all ended, for
    /// finalizing (the manifest, the outcome), leased to `owner`.
    async fn claim_finalize(
        &self,
        wall: i64,
        owner: &str,
        until: i64,
        only: Option<i64>,
    ) -> Result<Option<JobRecord>>;
    /// Records a job's outcome and ends `owner`'s lease; `false` (nothing
    /// written) if the job is no longer running under `owner`'s lease (a
    /// cancel, or another process took over).
    async fn finish_job(&self, job: &JobRecord, owner: &str) -> Result<bool>;
    /// The job's tasks.
    async fn tasks(&self, job: i64) -> Result<Vec<TaskRecord>>;
    /// The job's failed models.
    async fn failures(&self, job: i64) -> Result<Vec<FailureRecord>>;
    /// Stores a job's figures and state (unconditionally).
    async fn update_job(&self, job: &JobRecord) -> Result<()>;
    /// Cancels a queued or running job: its queued tasks are cancelled,
    /// running ones finish their attempt.
    async fn cancel(&self, id: i64, now: i64) -> Result<JobRecord>;
    /// Queues a failed, cancelled or skipped job again.
    async fn retry(&self, id: i64) -> Result<JobRecord>;
    /// The finished tasks that took longest, slowest first; only those of
    /// `kind` ([`TASK_MAP`] or [`TASK_SCORE`]) if given.
    async fn slowest_tasks(&self, limit: u32, kind: Option<&str>) -> Result<Vec<TaskRecord>>;
    /// Totals for `/metrics`.
    async fn stats(&self) -> Result<JobStats>;
    /// Tasks waiting for a worker (queued, or with an expired lease) plus
    /// jobs waiting to be planned: what an autoscaler scales workers on.
    async fn pending(&self, wall: i64) -> Result<u64>;
    /// Sets a schedule's last window end, also backwards: the next tick
    /// then catches up from there (windows already scheduled stay as they
    /// are, so none is scored twice).
    async fn rewind_schedule(&self, schedule: &str, last_fire: i64, now: i64) -> Result<()>;
}

/// The PostgreSQL `LISTEN`/`NOTIFY` channel on which the job store
/// announces new work: a queued job, a planned job's tasks, a job's score
/// tasks once its last map task succeeded, a task handed back.
pub const WORK_CHANNEL: &str = "fleetscore_work";

/// Listens on [`WORK_CHANNEL`] of the PostgreSQL job store at `url`: the
/// value of the returned receiver changes at each announcement, so an idle
/// worker wakes at once instead of at its next poll. The listener
/// reconnects by itself after a connection loss (announcements made
/// meanwhile are missed: workers still poll).
pub async fn listen_for_work(url: &str) -> Result<tokio::sync::watch::Receiver<u64>> {
    let err = |error: sqlx::Error| DbError::Sql {
        url: url.to_string(),
        error,
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(DbError::NotPostgres(url.to_string()));
    }
    let mut listener = sqlx::postgres::PgListener::connect(url)
        .await
        .map_err(err)?;
    listener.listen(WORK_CHANNEL).await.map_err(err)?;
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        loop {
            match listener.recv().await {
                Ok(_) => {
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(e) => {
                    tracing::warn!("listening for work: {e}; polling meanwhile");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Whether a PostgreSQL job store's commits wait until the database has
/// written them to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commits {
    /// They do (PostgreSQL's default): what the server, the CLI and the
    /// scheduler record (a queued job, a cancel) survives a crash of the
    /// database server once it is acknowledged.
    Durable,
    /// They do not (`synchronous_commit = off`): a crash of the database
    /// server (not of the worker) may lose the last fraction of a second
    /// of commits, never corrupting anything. For `fleetscore worker`,
    /// whose every write is redone if lost: a lost lease expires, a lost
    /// task outcome has its task run again (its output names are its own,
    /// so it rewrites the same objects), a lost plan or job outcome is
    /// planned or finalized again. Saves a wait for the disk per
    /// statement, which workers otherwise queue on one after the other.
    Relaxed,
}

/// Which SQL the store speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: one writer at a time, so a single `UPDATE … RETURNING`
    /// claims atomically.
    Sqlite,
    /// PostgreSQL: concurrent claimers skip each other's rows
    /// (`FOR UPDATE SKIP LOCKED`).
    Postgres,
}

/// The job store over SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pool: AnyPool,
    url: String,
    dialect: Dialect,
    /// The pool's size limit.
    max: u32,
    /// Connections a worker's frequent statements reuse (see
    /// [`SqlStore::take`]), with when each was last put back.
    kept: Arc<std::sync::Mutex<Vec<Kept>>>,
}

/// A connection kept for reuse, and when it was put back.
type Kept = (Instant, Taken);

/// A connection from [`SqlStore::take`] (it derefs to the connection).
#[derive(Debug)]
struct Taken {
    conn: PoolConnection<Any>,
    /// Since when it has been reused outside the pool.
    since: Instant,
}

impl std::ops::Deref for Taken {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Taken {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.conn
    }
}

/// Failed models recorded per `INSERT` (7 parameters each: 700, below
/// SQLite's oldest limit of 999).
const FAILURES_PER_INSERT: usize = 100;

/// How long a kept connection may sit unused and still be reused without
/// the pool's check that it is alive.
const KEPT_FRESH: Duration = Duration::from_secs(20);

/// How long a connection is reused outside the pool before it goes back,
/// so that the pool's own rules (its connections' maximum lifetime) apply
/// to it too.
const KEPT_LIFE: Duration = Duration::from_secs(300);

/// The embedded default's former name.
pub type SqliteStore = SqlStore;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const JOB_COLUMNS: &str = "id, schedule, kind, window_start, window_end, mode, selection, state, \
    batch_size, max_failed, max_retries, concurrency, created_at, started_at, finished_at, models, \
    rows, anomalies, failed_models, tasks, load_ms, score_ms, write_ms, error, manifest";

const TASK_COLUMNS: &str =
    "job_id, idx, kind, state, attempts, first_key, last_key, n_keys, queued_at, \
    started_at, finished_at, models, rows, anomalies, failed_models, load_ms, score_ms, write_ms, \
    output, error, lease_owner, lease_until, not_before, devices, plan_id";

impl SqlStore {
    /// Opens (creating it if needed) the database at `url` and migrates
    /// it: `sqlite://PATH`, a plain path, `sqlite://:memory:`, or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (also
    /// `postgresql://`).
    pub async fn open(url: &str) -> Result<SqlStore> {
        SqlStore::open_with(url, Commits::Durable).await
    }

    /// [`SqlStore::open`], with commits that wait for the disk or not
    /// (PostgreSQL; SQLite's always do).
    pub async fn open_with(url: &str, commits: Commits) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let sql = |error| DbError::Sql {
            url: url.to_string(),
            error,
        };
        let (dialect, connect, max) =
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                (Dialect::Postgres, url.to_string(), 8)
            } else {
                let path = url.strip_prefix("sqlite://").unwrap_or(url);
                if path.contains("://") {
                    return Err(DbError::Url(url.to_string()));
                }
                if path == ":memory:" {
                    // One connection: each is its own database.
                    (Dialect::Sqlite, "sqlite::memory:".to_string(), 1)
                } else {
                    if let Some(dir) = std::path::Path::new(path).parent() {
                        if !dir.as_os_str().is_empty() {
                            let _ = std::fs::create_dir_all(dir);
                        }
                    }
                    (Dialect::Sqlite, format!("sqlite://{path}?mode=rwc"), 4)
                }
            };
        if dialect == Dialect::Postgres {
            // One direct connection first: the pool would only say it timed
            // out, this says why (refused, unknown host, authentication).
            use sqlx::Connection as _;
            match tokio::time::timeout(
                std::time::Duration::from_secs(15),
                sqlx::AnyConnection::connect(&connect),
            )
            .await
            {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                }
                Ok(Err(source)) => return Err(sql(source)),
                Err(_) => {
                    return Err(sql(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no answer within 15s; is PostgreSQL running there, and the URL's host and port right?",
                    ))))
                }
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    } else if commits == Commits::Relaxed {
                        conn.execute("SET synchronous_commit = off").await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect)
            .await
            .map_err(sql)?;
        let migrations = match dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrations
            .run(&pool)
            .await
            .map_err(|error| DbError::Migrate {
                url: url.to_string(),
                error,
            })?;
        Ok(SqlStore {
            pool,
            url: url.to_string(),
            dialect,
            max,
            kept: Arc::default(),
        })
    }

    /// A connection for the statements of one store call, to give back
    /// with [`SqlStore::put`] once they succeeded (dropping it instead, as
    /// `?` does on an error, returns it to the pool).
    ///
    /// The pool checks a connection with a round trip to the database
    /// when it is taken and another when it is returned, which for the
    /// single short statements a worker runs per task (lease, record)
    /// tripled the round trips, each waking a database backend and the
    /// worker. A connection put back after a success is reused without
    /// either check while it is fresh (used in the last
    /// [`KEPT_FRESH`]); one that has since broken (the database restarted)
    /// fails its statement, which the callers retry, and every kept
    /// connection is dropped then.
    async fn take(&self) -> Result<Taken> {
        if let Ok(mut kept) = self.kept.lock() {
            while let Some((at, conn)) = kept.pop() {
                if at.elapsed() < KEPT_FRESH {
                    return Ok(conn);
                }
                // Stale: back to the pool, which checks it when taken.
                drop(conn);
            }
        }
        let conn = self.pool.acquire().await.map_err(|e| self.err(e))?;
        Ok(Taken {
            conn,
            since: Instant::now(),
        })
    }

    /// Gives back a connection from [`SqlStore::take`] whose statements
    /// succeeded (and whose transaction, if any, ended). It is kept for
    /// reuse unless the pool is at its limit with none idle (then someone
    /// may be waiting for the pool, so it goes back there) or half the
    /// pool is kept already, or it has been reused for [`KEPT_LIFE`].
    fn put(&self, conn: Taken) {
        if self.pool.size() >= self.max && self.pool.num_idle() == 0
            || conn.since.elapsed() >= KEPT_LIFE
        {
            return;
        }
        if let Ok(mut kept) = self.kept.lock() {
            // At most half the pool: the calls that take connections from
            // the pool itself keep the other half.
            if kept.len() < (self.max / 2) as usize {
                kept.push((Instant::now(), conn));
            }
        }
    }

    /// [`SqlStore::err`] for a failed statement on a taken connection:
    /// the kept connections may be as broken as that one, so they go.
    fn failed(&self, error: sqlx::Error) -> DbError {
        if let Ok(mut kept) = self.kept.lock() {
            kept.clear();
        }
        self.err(error)
    }

    /// Tells listening workers there is new work (PostgreSQL `NOTIFY` on
    /// [`WORK_CHANNEL`]; nothing on SQLite, whose workers poll). Best
    /// effort: a worker that misses it finds the work at its next poll.
    async fn announce(&self) {
        if self.dialect == Dialect::Postgres {
            let sent = async {
                let mut conn = self.take().await?;
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(WORK_CHANNEL)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| self.failed(e))?;
                self.put(conn);
                Ok::<_, DbError>(())
            };
            if let Err(e) = sent.await {
                tracing::debug!("announcing work: {e}");
            }
        }
    }

    /// Which SQL it speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The value of a PostgreSQL setting on one of the store's connections
    /// (`SHOW`); [`DbError::NotPostgres`] on SQLite.
    pub async fn setting(&self, name: &str) -> Result<String> {
        if self.dialect != Dialect::Postgres {
            return Err(DbError::NotPostgres(self.url.clone()));
        }
        let row = sqlx::query("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.try_get::<String, _>(0).map_err(|e| self.err(e))
    }

    fn err(&self, error: sqlx::Error) -> DbError {
        DbError::Sql {
            url: self.url.clone(),
            error,
        }
    }

    /// ` FOR UPDATE SKIP LOCKED` on PostgreSQL (of `table`), nothing on
    /// SQLite.
    fn skip_locked(&self, table: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => String::new(),
            Dialect::Postgres => format!(" FOR UPDATE OF {table} SKIP LOCKED"),
        }
    }
}

/// `rows` rows of `cols` parameters each for a multi-row `VALUES`:
/// `($1, $2), ($3, $4)` for 2 and 2.
fn value_rows(rows: usize, cols: usize) -> String {
    let row = |r: usize| {
        let params: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
        format!("({})", params.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// The condition on `jobs j` of a job to finalize: planned, running,
/// not leased (or its lease expired before `wall`), and with no task left
/// to run (none running, none queued unless a map task failed, which
/// fails the job).
fn finalizable(wall: &str) -> String {
    format!(
        "j.state = 'running' AND j.planned_at IS NOT NULL \
         AND (j.lease_owner IS NULL OR COALESCE(j.lease_until, 0) < {wall}) \
         AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id \
                         AND (t.state = 'running' OR (t.state = 'queued' \
                           AND NOT EXISTS (SELECT 1 FROM tasks m WHERE m.job_id = j.id \
                             AND m.kind = 'map' AND m.state = 'failed'))))"
    )
}

/// Creates the PostgreSQL database `name` on the server of `server_url`
/// (any database URL of that server) unless it exists; returns its URL.
/// For tests and benchmarks that want a database of their own.
pub async fn ensure_database(server_url: &str, name: &str) -> Result<String> {
    sqlx::any::install_default_drivers();
    let sql = |error| DbError::Sql {
        url: server_url.to_string(),
        error,
    };
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(DbError::Url(format!(
            "{server_url} (database name {name:?})"
        )));
    }
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(server_url)
        .await
        .map_err(sql)?;
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&pool)
        .await
        .map_err(sql)?
        .is_some();
    if !exists {
        let create = pool
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await;
        // A concurrent creator may have won.
        if let Err(e) = create {
            let dup = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04" || c == "23505");
            if !dup {
                return Err(sql(e));
            }
        }
    }
    pool.close().await;
    // Same server, user and options; another database.
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server_url, String::new()),
    };
    let root = match base.rfind('/') {
        Some(i) if i > base.find("://").map(|j| j + 2).unwrap_or(0) => &base[..i],
        _ => base,
    };
    Ok(format!("{root}/{name}{query}"))
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn job_from_row(r: &AnyRow) -> Result<JobRecord, sqlx::Error> {
    let id: i64 = r.try_get("id")?;
    let corrupt = |what: &'static str, value: String| {
        sqlx::Error::Decode(Box::new(DbError::Corrupt {
            what,
            value,
            job: id,
        }))
    };
    let kind: String = r.try_get("kind")?;
    let state: String = r.try_get("state")?;
    let max_failed: String = r.try_get("max_failed")?;
    let concurrency: String = r.try_get("concurrency")?;
    let selection: Option<String> = r.try_get("selection")?;
    Ok(JobRecord {
        id,
        schedule: r.try_get("schedule")?,
        kind: kind.parse().map_err(|_| corrupt("kind", kind.clone()))?,
        window_start: r.try_get("window_start")?,
        window_end: r.try_get("window_end")?,
        mode: r.try_get("mode")?,
        selection: match selection {
            None => None,
            Some(s) => Some(serde_json::from_str(&s).map_err(|_| corrupt("selection", s))?),
        },
        state: state.parse().map_err(|_| corrupt("state", state.clone()))?,
        batch_size: r.try_get::<i64, _>("batch_size")? as u32,
        max_failed: max_failed
            .parse()
            .map_err(|_| corrupt("max_failed", max_failed.clone()))?,
        max_retries: r.try_get::<i64, _>("max_retries")? as u32,
        concurrency: match concurrency.as_str() {
            "forbid" => Concurrency::Forbid,
            "allow" => Concurrency::Allow,
            _ => return Err(corrupt("concurrency", concurrency)),
        },
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        models: u(r.try_get("models")?),
        rows: u(r.try_get("rows")?),
        anomalies: u(r.try_get("anomalies")?),
        failed_models: u(r.try_get("failed_models")?),
        tasks: u(r.try_get("tasks")?),
        load_ms: u(r.try_get("load_ms")?),
        score_ms: u(r.try_get("score_ms")?),
        write_ms: u(r.try_get("write_ms")?),
        error: r.try_get("error")?,
        manifest: r.try_get("manifest")?,
    })
}

fn task_from_row(r: &AnyRow) -> Result<TaskRecord, sqlx::Error> {
    Ok(TaskRecord {
        job_id: r.try_get("job_id")?,
        idx: r.try_get::<i64, _>("idx")? as u32,
        kind: r.try_get("kind")?,
        state: r.try_get("state")?,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        first_key: r.try_get("first_key")?,
        last_key: r.try_get("last_key")?,
        n_keys: u(r.try_get("n_keys")?),
        queued_at: r.try_get("queued_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        models: u(r.try_get("models")?),
        rows: u(r.try_get("rows")?),
        anomalies: u(r.try_get("anomalies")?),
        failed_models: u(r.try_get("failed_models")?),
        load_ms: u(r.try_get("load_ms")?),
        score_ms: u(r.try_get("score_ms")?),
        write_ms: u(r.try_get("write_ms")?),
        output: r.try_get("output")?,
        error: r.try_get("error")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_until: r.try_get("lease_until")?,
        not_before: r.try_get("not_before")?,
        devices: r.try_get("devices")?,
        plan_id: r.try_get("plan_id")?,
    })
}

const INSERT_JOB: &str = "INSERT INTO jobs (schedule, kind, window_start, window_end, mode, \
    selection, state, batch_size, max_failed, max_retries, concurrency, created_at, error) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds a job's state and figures as `$1..$13` (state, started, finished,
/// models, rows, anomalies, failed models, tasks, load/score/write ms,
/// error, manifest).
fn bind_outcome<'q>(q: AnyQuery<'q>, j: &'q JobRecord) -> AnyQuery<'q> {
    q.bind(j.state.as_str())
        .bind(j.started_at)
        .bind(j.finished_at)
        .bind(j.models as i64)
        .bind(j.rows as i64)
        .bind(j.anomalies as i64)
        .bind(j.failed_models as i64)
        .bind(j.tasks as i64)
        .bind(j.load_ms as i64)
        .bind(j.score_ms as i64)
        .bind(j.write_ms as i64)
        .bind(j.error.as_deref())
        .bind(j.manifest.as_deref())
}

/// Ends a leased task attempt: applies only while `owner` holds the lease.
/// (A macro, so that [`FINISH_TASK_ANNOUNCED`] can build on its text.)
macro_rules! finish_task_sql {
    () => {
        "UPDATE tasks SET state = $1, finished_at = $2, models = $3, rows = $4, \
    anomalies = $5, failed_models = $6, load_ms = $7, score_ms = $8, write_ms = $9, \
    output = $10, error = $11, not_before = $12, devices = $13, \
    lease_owner = NULL, lease_until = NULL \
    WHERE job_id = $14 AND idx = $15 AND lease_owner = $16 AND state = 'running'"
    };
}

/// Ends a leased task attempt: applies only while `owner` holds the lease.
const FINISH_TASK: &str = finish_task_sql!();

/// [`FINISH_TASK`] that also announces work on channel `$17` if it
/// recorded the task (PostgreSQL); its one row says how many it recorded.
/// The notification goes out when the statement commits.
const FINISH_TASK_ANNOUNCED: &str = concat!(
    "WITH f AS (",
    finish_task_sql!(),
    " RETURNING 1) SELECT (SELECT COUNT(*) FROM f), \
    (SELECT COUNT(*) FROM (SELECT pg_notify($17, '') FROM f) n)"
);

fn bind_finish<'q>(q: AnyQuery<'q>, t: &'q TaskRecord, owner: &'q str) -> AnyQuery<'q> {
    q.bind(&t.state)
        .bind(t.finished_at)
        .bind(t.models as i64)
        .bind(t.rows as i64)
        .bind(t.anomalies as i64)
        .bind(t.failed_models as i64)
        .bind(t.load_ms as i64)
        .bind(t.score_ms as i64)
        .bind(t.write_ms as i64)
        .bind(t.output.as_deref())
        .bind(t.error.as_deref())
        .bind(t.not_before)
        .bind(t.devices.as_deref())
        .bind(t.job_id)
        .bind(i64::from(t.idx))
        .bind(owner)
}

fn bind_job<'q>(q: AnyQuery<'q>, j: &'q NewJob, now: i64) -> AnyQuery<'q> {
    q.bind(j.schedule.as_deref())
        .bind(j.kind.as_str())
        .bind(j.window_start)
        .bind(j.window_end)
        .bind(j.mode.as_str())
        .bind(
            j.selection
                .as_ref()
                .map(|s| serde_json::to_string(s).unwrap_or_default()),
        )
        .bind(j.state.as_str())
        .bind(i64::from(j.batch_size))
        .bind(j.max_failed.to_string())
        .bind(i64::from(j.max_retries))
        .bind(j.concurrency.as_str())
        .bind(now)
        .bind(j.error.as_deref())
}

#[async_trait]
impl JobStore for SqlStore {
    fn url(&self) -> &str {
        &self.url
    }

    async fn last_fire(&self, schedule: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT last_fire FROM schedules WHERE name = $1")
            .bind(schedule)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        match row {
            None => Ok(None),
            Some(r) => r.try_get("last_fire").map_err(|e| self.err(e)),
        }
    }

    async fn schedule_jobs(
        &self,
        schedule: &str,
        jobs: &[NewJob],
        last_fire: i64,
        now: i64,
    ) -> Result<Vec<Option<i64>>> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let mut ids = Vec::new();
        let sql = format!("{INSERT_JOB} ON CONFLICT DO NOTHING RETURNING id");
        for j in jobs {
            let row = bind_job(sqlx::query(AssertSqlSafe(sql.clone())), j, now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            ids.push(match row {
                Some(r) => Some(r.try_get::<i64, _>(0).map_err(|e| self.err(e))?),
                None => None,
            });
        }
        let greatest = match self.dialect {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        };
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO schedules (name, last_fire, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET last_fire = \
             {greatest}(COALESCE(schedules.last_fire, excluded.last_fire), excluded.last_fire), \
             updated_at = excluded.updated_at"
        )))
        .bind(schedule)
        .bind(last_fire)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        if ids.iter().any(Option::is_some) {
            self.announce().await;
        }
        Ok(ids)
    }

    async fn create_job(&self, job: &NewJob, now: i64) -> Result<i64> {
        let sql = format!("{INSERT_JOB} RETURNING id");
        let row = bind_job(sqlx::query(AssertSqlSafe(sql)), job, now)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        let id = row.try_get::<i64, _>(0).map_err(|e| self.err(e))?;
        if job.state == JobState::Queued {
            self.announce().await;
        }
        Ok(id)
    }

    async fn claim_job(
        &self,
        now: i64,
        wall: i64,
        owner: &str,
        until: i64,
        only: Option<i64>,
    ) -> Result<Option<JobRecord>> {
        let sql = format!(
            "UPDATE jobs SET state = 'running', started_at = COALESCE(started_at, $1), \
               error = NULL, lease_owner = $2, lease_until = $3 WHERE id = (\
               SELECT j.id FROM jobs j WHERE ((j.state = 'queued' AND (\
                 j.concurrency = 'allow' OR j.schedule IS NULL OR NOT EXISTS (\
                   SELECT 1 FROM jobs r WHERE r.schedule = j.schedule AND r.state = 'running'))) \
               OR (j.state = 'running' AND j.planned_at IS NULL \
                   AND COALESCE(j.lease_until, 0) < $4)) AND ($5 IS NULL OR j.id = $5) \
               ORDER BY j.window_start, j.id LIMIT 1{}) \
             RETURNING {JOB_COLUMNS}",
            self.skip_locked("j")
        );
        let mut conn = self.take().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(|e| self.failed(e))?;
        if self.dialect == Dialect::Postgres {
            // Claims take turns, so two claimers cannot both start jobs of
            // one `forbid` schedule (SKIP LOCKED alone would let them).
            // A statement of its own inside the transaction (not sent with
            // the BEGIN), so that a failed or abandoned wait for the lock
            // rolls the transaction back and releases the lock.
            sqlx::query("SELECT pg_advisory_xact_lock(7100001)")
                .execute(&mut *tx)
                .await
                .map_err(|e| self.failed(e))?;
        }
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(owner)
            .bind(until)
            .bind(wall)
            .bind(only)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        self.put(conn);
        row.map(|r| job_from_row(&r))
            .transpose()
            .map_err(|e| self.err(e))
    }

    async fn job(&self, id: i64) -> Result<JobRecord> {
        let mut conn = self.take().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.failed(e))?;
        self.put(conn);
        job_from_row(&row.ok_or(DbError::NoJob(id))?).map_err(|e| self.err(e))
    }

    async fn jobs(&self, f: &JobFilter) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1 IS NULL OR state = $1) \
             AND ($2 IS NULL OR schedule = $2) AND ($3 IS NULL OR window_end > $3) \
             AND ($4 IS NULL OR window_start < $4) ORDER BY id DESC LIMIT $5"
        );
        let state = f.state.map(|s| s.as_str());
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(state)
            .bind(f.schedule.as_deref())
            .bind(f.window_from)
            .bind(f.window_to)
            .bind(i64::from(f.limit.unwrap_or(100)))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(job_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    async fn plan_job(&self, job: &JobRecord, tasks: &[TaskRecord], owner: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let res = sqlx::query(
            "UPDATE jobs SET planned_at = $1, tasks = $2, load_ms = $3, models = $6, rows = 0, \
             anomalies = 0, failed_models = 0, score_ms = 0, write_ms = 0, manifest = NULL, \
             lease_owner = NULL, lease_until = NULL \
             WHERE id = $4 AND state = 'running' AND lease_owner = $5",
        )
        .bind(job.started_at.unwrap_or(job.created_at))
        .bind(tasks.iter().filter(|t| !t.is_map()).count() as i64)
        .bind(job.load_ms as i64)
        .bind(job.id)
        .bind(owner)
        .bind(job.models as i64)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        if res.rows_affected() != 1 {
            return Ok(false);
        }
        for sql in [
            "DELETE FROM tasks WHERE job_id = $1",
            "DELETE FROM model_failures WHERE job_id = $1",
        ] {
            sqlx::query(sql)
                .bind(job.id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        // Many rows per statement: a job's tasks are inserted in a few
        // round trips, not one per task.
        for chunk in tasks.chunks(500) {
            // `attempts` starts at its default, 0.
            let sql = format!(
                "INSERT INTO tasks (job_id, idx, state, first_key, last_key, n_keys, \
                 queued_at, kind, plan_id) VALUES {}",
                value_rows(chunk.len(), 9)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for t in chunk {
                q = q
                    .bind(job.id)
                    .bind(i64::from(t.idx))
                    .bind(t.state.clone())
                    .bind(t.first_key.clone())
                    .bind(t.last_key.clone())
                    .bind(t.n_keys as i64)
                    .bind(t.queued_at)
                    .bind(if t.is_map() { TASK_MAP } else { TASK_SCORE })
                    .bind(t.plan_id.clone());
            }
            q.execute(&mut *tx).await.map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        self.announce().await;
        Ok(true)
    }

    async fn lease_task(
        &self,
        now: i64,
        wall: i64,
        owner: &str,
        until: i64,
        only: Option<i64>,
    ) -> Result<Option<TaskRecord>> {
        let sql = format!(
            "UPDATE tasks SET state = 'running', attempts = attempts + 1, started_at = $1, \
               finished_at = NULL, lease_owner = $2, lease_until = $3 \
             WHERE (job_id, idx) = (\
               WITH ready AS MATERIALIZED (\
                 SELECT j.id, j.max_retries, NOT EXISTS (SELECT 1 FROM tasks m \
                   WHERE m.job_id = j.id AND m.kind = 'map' AND m.state <> 'succeeded') AS mapped \
                 FROM jobs j WHERE j.state = 'running' AND j.planned_at IS NOT NULL \
                 AND ($5 IS NULL OR j.id = $5)) \
               SELECT t.job_id, t.idx FROM tasks t JOIN ready r ON r.id = t.job_id \
               WHERE ((t.state = 'queued' AND COALESCE(t.not_before, 0) <= $4) \
                 OR (t.state = 'running' AND COALESCE(t.lease_until, 0) < $4 \
                     AND t.attempts <= r.max_retries)) \
               AND (t.kind = 'map' OR r.mapped) \
               ORDER BY t.job_id, t.idx LIMIT 1{}) \
             RETURNING {TASK_COLUMNS}",
            self.skip_locked("t")
        );
        let mut conn = self.take().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(owner)
            .bind(until)
            .bind(wall)
            .bind(only)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.failed(e))?;
        // A task whose workers keep vanishing (one that kills its worker,
        // say) fails once it has had every attempt its job allows: it is
        // not leased again (above), and is recorded as failed when there
        // is nothing else to lease (so a busy worker pays no extra query).
        if row.is_none() {
            sqlx::query(
                "UPDATE tasks SET state = 'failed', finished_at = $1, lease_owner = NULL, \
                   lease_until = NULL, error = 'its worker vanished during attempt ' \
                   || CAST(attempts AS TEXT) || ' (the lease expired), the last one allowed' \
                 WHERE state = 'running' AND COALESCE(lease_until, 0) < $2 \
                   AND attempts > (SELECT j.max_retries FROM jobs j WHERE j.id = tasks.job_id)",
            )
            .bind(now)
            .bind(wall)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.failed(e))?;
        }
        self.put(conn);
        row.map(|r| task_from_row(&r))
            .transpose()
            .map_err(|e| self.err(e))
    }

    async fn next_retry(&self) -> Result<Option<i64>> {
        let mut conn = self.take().await?;
        let r = sqlx::query(
            "SELECT MIN(t.not_before) FROM tasks t JOIN jobs j ON j.id = t.job_id \
             WHERE j.state = 'running' AND t.state = 'queued' AND t.not_before IS NOT NULL",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| self.failed(e))?;
        self.put(conn);
        r.try_get::<Option<i64>, _>(0).map_err(|e| self.err(e))
    }

    async fn idle_work(&self, wall: i64, only: Option<i64>) -> Result<IdleWork> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM jobs j WHERE {} AND ($2 IS NULL OR j.id = $2)), \
               EXISTS (SELECT 1 FROM jobs j WHERE (j.state = 'queued' \
                 OR (j.state = 'running' AND j.planned_at IS NULL \
                     AND COALESCE(j.lease_until, 0) < $1)) AND ($2 IS NULL OR j.id = $2))",
            finalizable("$1")
        );
        let mut conn = self.take().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(wall)
            .bind(only)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.put(conn);
        // SQLite answers EXISTS with an integer, PostgreSQL with a boolean.
        let flag = |i: usize| -> std::result::Result<bool, sqlx::Error> {
            match self.dialect {
                Dialect::Sqlite => row.try_get::<i64, _>(i).map(|v| v != 0),
                Dialect::Postgres => row.try_get::<bool, _>(i),
            }
        };
        Ok(IdleWork {
            finalize: flag(0).map_err(|e| self.err(e))?,
            plan: flag(1).map_err(|e| self.err(e))?,
        })
    }

    async fn renew_task(&self, job: i64, idx: u32, owner: &str, until: i64) -> Result<bool> {
        let mut conn = self.take().await?;
        let res = sqlx::query(
            "UPDATE tasks SET lease_until = $1 WHERE job_id = $2 AND idx = $3 \
             AND lease_owner = $4 AND state = 'running'",
        )
        .bind(until)
        .bind(job)
        .bind(i64::from(idx))
        .bind(owner)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.failed(e))?;
        self.put(conn);
        Ok(res.rows_affected() == 1)
    }

    async fn renew_job(&self, job: i64, owner: &str, until: i64) -> Result<bool> {
        let mut conn = self.take().await?;
        let res = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 \
             AND state = 'running'",
        )
        .bind(until)
        .bind(job)
        .bind(owner)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.failed(e))?;
        self.put(conn);
        Ok(res.rows_affected() == 1)
    }

    async fn finish_task(
        &self,
        t: &TaskRecord,
        failures: &[FailureRecord],
        owner: &str,
    ) -> Result<bool> {
        // A first attempt without failed models is one statement (nothing
        // of an earlier attempt to replace); else a transaction.
        // The last map task of a job makes its score tasks leasable: a map
        // task's success is announced.
        let announce = t.is_map() && t.state == "succeeded";
        let mut conn = self.take().await?;
        if failures.is_empty() && t.attempts <= 1 {
            let kept = if announce && self.dialect == Dialect::Postgres {
                // With the announcement, sent when the statement commits:
                // one round trip.
                let row = bind_finish(sqlx::query(FINISH_TASK_ANNOUNCED), t, owner)
                    .bind(WORK_CHANNEL)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| self.failed(e))?;
                row.try_get::<i64, _>(0).map_err(|e| self.err(e))? == 1
            } else {
                let res = bind_finish(sqlx::query(FINISH_TASK), t, owner)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| self.failed(e))?;
                let kept = res.rows_affected() == 1;
                if kept && announce {
                    self.announce().await;
                }
                kept
            };
            self.put(conn);
            return Ok(kept);
        }
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(|e| self.failed(e))?;
        let res = bind_finish(sqlx::query(FINISH_TASK), t, owner)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.failed(e))?;
        if res.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM model_failures WHERE job_id = $1 AND task_idx = $2")
            .bind(t.job_id)
            .bind(i64::from(t.idx))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.failed(e))?;
        // Many rows per statement (a task of a thousand models without a
        // model of their own fails a thousand): one round trip per
        // FAILURES_PER_INSERT, not per failure.
        for chunk in failures.chunks(FAILURES_PER_INSERT) {
            let sql = format!(
                "INSERT INTO model_failures (job_id, task_idx, device, tag, reason, detail, rows) \
                 VALUES {}",
                value_rows(chunk.len(), 7)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for f in chunk {
                q = q
                    .bind(t.job_id)
                    .bind(i64::from(t.idx))
                    .bind(&f.device)
                    .bind(&f.tag)
                    .bind(&f.reason)
                    .bind(&f.detail)
                    .bind(f.rows as i64);
            }
            q.execute(&mut *tx).await.map_err(|e| self.failed(e))?;
        }
        tx.commit().await.map_err(|e| self.failed(e))?;
        self.put(conn);
        if announce {
            self.announce().await;
        }
        Ok(true)
    }

    async fn release_task(&self, job: i64, idx: u32, owner: &str) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE tasks SET state = 'queued', attempts = attempts - 1, started_at = NULL, \
             lease_owner = NULL, lease_until = NULL \
             WHERE job_id = $1 AND idx = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(job)
        .bind(i64::from(idx))
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let released = res.rows_affected() == 1;
        if released {
            self.announce().await;
        }
        Ok(released)
    }

    async fn claim_finalize(
        &self,
        wall: i64,
        owner: &str,
        until: i64,
        only: Option<i64>,
    ) -> Result<Option<JobRecord>> {
        let sql = format!(
            "UPDATE jobs SET lease_owner = $1, lease_until = $2 WHERE id = (\
               SELECT j.id FROM jobs j WHERE {} AND ($4 IS NULL OR j.id = $4) \
               ORDER BY j.id LIMIT 1{}) \
             RETURNING {JOB_COLUMNS}",
            finalizable("$3"),
            self.skip_locked("j")
        );
        let mut conn = self.take().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(until)
            .bind(wall)
            .bind(only)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.put(conn);
        row.map(|r| job_from_row(&r))
            .transpose()
            .map_err(|e| self.err(e))
    }

    async fn finish_job(&self, j: &JobRecord, owner: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        let res = bind_outcome(
            sqlx::query(
                "UPDATE jobs SET state = $1, started_at = $2, finished_at = $3, models = $4, \
                 rows = $5, anomalies = $6, failed_models = $7, tasks = $8, load_ms = $9, \
                 score_ms = $10, write_ms = $11, error = $12, manifest = $13, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE id = $14 AND state = 'running' AND lease_owner = $15",
            ),
            j,
        )
        .bind(j.id)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        if res.rows_affected() != 1 {
            return Ok(false);
        }
        // Tasks that will not run now (the score tasks of a job whose
        // reading failed) end with it.
        if j.state.is_final() {
            sqlx::query(
                "UPDATE tasks SET state = 'cancelled', finished_at = $1 \
                 WHERE job_id = $2 AND state = 'queued'",
            )
            .bind(j.finished_at)
            .bind(j.id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(res.rows_affected() == 1)
    }

    async fn tasks(&self, job: i64) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 ORDER BY idx"
        )))
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(task_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    async fn failures(&self, job: i64) -> Result<Vec<FailureRecord>> {
        let rows = sqlx::query(
            "SELECT task_idx, device, tag, reason, detail, rows FROM model_failures \
             WHERE job_id = $1 ORDER BY device, tag",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(FailureRecord {
                    task_idx: r.try_get::<i64, _>("task_idx")? as u32,
                    device: r.try_get("device")?,
                    tag: r.try_get("tag")?,
                    reason: r.try_get("reason")?,
                    detail: r.try_get("detail")?,
                    rows: u(r.try_get("rows")?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    async fn update_job(&self, j: &JobRecord) -> Result<()> {
        bind_outcome(
            sqlx::query(
                "UPDATE jobs SET state = $1, started_at = $2, finished_at = $3, models = $4, \
                 rows = $5, anomalies = $6, failed_models = $7, tasks = $8, load_ms = $9, \
                 score_ms = $10, write_ms = $11, error = $12, manifest = $13 WHERE id = $14",
            ),
            j,
        )
        .bind(j.id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn cancel(&self, id: i64, now: i64) -> Result<JobRecord> {
        let job = self.job(id).await?;
        if job.state.is_final() {
            return Err(DbError::State {
                id,
                state: job.state,
                why: "only a queued or running job can be cancelled",
            });
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = $1, error = 'cancelled by a user', \
             lease_owner = NULL, lease_until = NULL \
             WHERE id = $2 AND state IN ('queued', 'running')",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        sqlx::query(
            "UPDATE tasks SET state = 'cancelled', finished_at = $1 \
             WHERE job_id = $2 AND state = 'queued'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        self.job(id).await
    }

    async fn stats(&self) -> Result<JobStats> {
        let by_state = |sql: &'static str| async move {
            let rows = sqlx::query(sql)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, u(r.try_get(1)?))))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(|e| self.err(e))
        };
        let jobs =
            by_state("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state").await?;
        let tasks =
            by_state("SELECT state, COUNT(*) FROM tasks GROUP BY state ORDER BY state").await?;
        // Sums are cast back to integers (PostgreSQL sums bigints as numeric).
        let r = sqlx::query(
            "SELECT CAST(COALESCE(SUM(rows), 0) AS BIGINT), \
             CAST(COALESCE(SUM(anomalies), 0) AS BIGINT), \
             CAST(COALESCE(SUM(failed_models), 0) AS BIGINT), \
             CAST(COALESCE(SUM(finished_at - started_at), 0) AS BIGINT), COUNT(*), \
             (SELECT CAST(COALESCE(SUM(attempts - 1), 0) AS BIGINT) FROM tasks WHERE attempts > 1), \
             (SELECT MAX(window_end) FROM jobs WHERE kind = 'scheduled' AND (state = 'succeeded' \
              OR (state = 'skipped' AND started_at IS NOT NULL))) \
             FROM jobs WHERE finished_at IS NOT NULL AND started_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let get = |i: usize| r.try_get::<i64, _>(i).map_err(|e| self.err(e));
        Ok(JobStats {
            jobs,
            tasks,
            rows: u(get(0)?),
            anomalies: u(get(1)?),
            failed_models: u(get(2)?),
            job_seconds: get(3)? as f64 / 1e9,
            finished: u(get(4)?),
            retries: u(get(5)?),
            last_success_window_end: r.try_get::<Option<i64>, _>(6).map_err(|e| self.err(e))?,
        })
    }

    async fn pending(&self, wall: i64) -> Result<u64> {
        let r = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id \
                     WHERE j.state = 'running' AND (t.state = 'queued' \
                     OR (t.state = 'running' AND COALESCE(t.lease_until, 0) < $1))) \
                  + (SELECT COUNT(*) FROM jobs WHERE state = 'queued')",
        )
        .bind(wall)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(u(r.try_get::<i64, _>(0).map_err(|e| self.err(e))?))
    }

    async fn rewind_schedule(&self, schedule: &str, last_fire: i64, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedules (name, last_fire, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET last_fire = excluded.last_fire, \
             updated_at = excluded.updated_at",
        )
        .bind(schedule)
        .bind(last_fire)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn slowest_tasks(&self, limit: u32, kind: Option<&str>) -> Result<Vec<TaskRecord>> {
        let of_kind = if kind.is_some() { "AND kind = $2 " } else { "" };
        let query = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE finished_at IS NOT NULL \
             AND started_at IS NOT NULL {of_kind}\
             ORDER BY finished_at - started_at DESC, job_id DESC LIMIT $1"
        );
        let mut q = sqlx::query(AssertSqlSafe(query)).bind(i64::from(limit));
        if let Some(kind) = kind {
            q = q.bind(kind.to_string());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.iter()
            .map(task_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    async fn retry(&self, id: i64) -> Result<JobRecord> {
        let job = self.job(id).await?;
        if !matches!(
            job.state,
            JobState::Failed | JobState::Cancelled | JobState::Skipped
        ) {
            return Err(DbError::State {
                id,
                state: job.state,
                why: "only a failed, cancelled or skipped job can be retried",
            });
        }
        sqlx::query(
            "UPDATE jobs SET state = 'queued', started_at = NULL, finished_at = NULL, error = NULL, \
             planned_at = NULL, lease_owner = NULL, lease_until = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        self.announce().await;
        self.job(id).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn value_rows_number_parameters_row_by_row() {
        assert_eq!(super::value_rows(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(super::value_rows(1, 3), "($1, $2, $3)");
        assert_eq!(super::value_rows(0, 3), "");
    }
}
