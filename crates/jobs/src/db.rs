//! The job store: schedules' progress, jobs, tasks and per-model failures.
//!
//! [`JobStore`] is what the scheduler, the runner, the CLI and the API
//! need; [`SqliteStore`] implements it over a SQLite file in the data
//! folder (the embedded default). A PostgreSQL implementation fills the same
//! trait for several processes. Times are `i64` nanoseconds since the epoch,
//! UTC.

use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
// Dynamic SQL here only splices the constant column list.
use sqlx::{AssertSqlSafe, Row, SqlitePool};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database refused or failed.
    #[error("job store {url}: {source}")]
    Sql {
        /// The database.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("job store {url}: migrating the schema: {source}")]
    Migrate {
        /// The database.
        url: String,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A URL this build cannot open.
    #[error("job store URL {0:?}: use sqlite://PATH (postgres:// comes with the scale-out build)")]
    Url(String),
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
    /// Not run: a missed window beyond the catch-up limit (backfill it to
    /// score it).
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
    /// 0, 1, … within the job.
    pub idx: u32,
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
    /// Window end of the newest succeeded scheduled job, ns.
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

/// What the scheduler, runner, CLI and API need from a job store.
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
    /// Takes the oldest runnable queued job (respecting `forbid`) and marks
    /// it running.
    async fn claim_job(&self, now: i64) -> Result<Option<JobRecord>>;
    /// Marks jobs left running by a process that died as queued again.
    async fn requeue_running(&self) -> Result<u64>;
    /// One job.
    async fn job(&self, id: i64) -> Result<JobRecord>;
    /// Jobs, newest first.
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>>;
    /// Replaces the job's tasks (a fresh run).
    async fn set_tasks(&self, job: i64, tasks: &[TaskRecord]) -> Result<()>;
    /// Updates one task.
    async fn update_task(&self, task: &TaskRecord) -> Result<()>;
    /// The job's tasks.
    async fn tasks(&self, job: i64) -> Result<Vec<TaskRecord>>;
    /// Records the failed models of a task (replacing earlier attempts').
    async fn set_failures(&self, job: i64, task: u32, failures: &[FailureRecord]) -> Result<()>;
    /// The job's failed models.
    async fn failures(&self, job: i64) -> Result<Vec<FailureRecord>>;
    /// Stores a finished (or progressing) job's figures and state.
    async fn update_job(&self, job: &JobRecord) -> Result<()>;
    /// Cancels a queued or running job (a running one stops after its
    /// current tasks).
    async fn cancel(&self, id: i64, now: i64) -> Result<JobRecord>;
    /// Queues a failed, cancelled or skipped job again.
    async fn retry(&self, id: i64) -> Result<JobRecord>;
    /// The finished tasks that took longest, slowest first.
    async fn slowest_tasks(&self, limit: u32) -> Result<Vec<TaskRecord>>;
    /// Totals for `/metrics`.
    async fn stats(&self) -> Result<JobStats>;
    /// Sets a schedule's last window end, also backwards: the next tick
    /// then catches up from there (windows already scheduled stay as they
    /// are, so none is scored twice).
    async fn rewind_schedule(&self, schedule: &str, last_fire: i64, now: i64) -> Result<()>;
}

/// The SQLite job store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    url: String,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const JOB_COLUMNS: &str = "id, schedule, kind, window_start, window_end, mode, selection, state, \
    batch_size, max_failed, max_retries, concurrency, created_at, started_at, finished_at, models, \
    rows, anomalies, failed_models, tasks, load_ms, score_ms, write_ms, error, manifest";

impl SqliteStore {
    /// Opens (creating it if needed) the database at `url`
    /// (`sqlite://PATH` or a plain path) and migrates it.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if path.contains("://") {
            return Err(DbError::Url(url.to_string()));
        }
        let sql = |source| DbError::Sql {
            url: url.to_string(),
            source,
        };
        let opts = if path == ":memory:" {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(sql)?
        } else {
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    let _ = std::fs::create_dir_all(dir);
                }
            }
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(std::time::Duration::from_secs(10))
        }
        .foreign_keys(true);
        // One connection for :memory: (each connection is its own database).
        let max = if path == ":memory:" { 1 } else { 4 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await
            .map_err(sql)?;
        SQLITE_MIGRATIONS
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate {
                url: url.to_string(),
                source,
            })?;
        Ok(SqliteStore {
            pool,
            url: url.to_string(),
        })
    }

    fn err(&self, source: sqlx::Error) -> DbError {
        DbError::Sql {
            url: self.url.clone(),
            source,
        }
    }
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

fn job_from_row(r: &SqliteRow) -> Result<JobRecord, sqlx::Error> {
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

fn task_from_row(r: &SqliteRow) -> Result<TaskRecord, sqlx::Error> {
    Ok(TaskRecord {
        job_id: r.try_get("job_id")?,
        idx: r.try_get::<i64, _>("idx")? as u32,
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
    })
}

const INSERT_JOB: &str = "INSERT INTO jobs (schedule, kind, window_start, window_end, mode, \
    selection, state, batch_size, max_failed, max_retries, concurrency, created_at, error) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

fn bind_job<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    j: &'q NewJob,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
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
impl JobStore for SqliteStore {
    fn url(&self) -> &str {
        &self.url
    }

    async fn last_fire(&self, schedule: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT last_fire FROM schedules WHERE name = ?")
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
        for j in jobs {
            let sql = INSERT_JOB.replace("INSERT INTO", "INSERT OR IGNORE INTO");
            let res = bind_job(sqlx::query(AssertSqlSafe(sql)), j, now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            ids.push((res.rows_affected() == 1).then(|| res.last_insert_rowid()));
        }
        sqlx::query(
            "INSERT INTO schedules (name, last_fire, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET last_fire = MAX(COALESCE(last_fire, excluded.last_fire), excluded.last_fire), \
             updated_at = excluded.updated_at",
        )
        .bind(schedule)
        .bind(last_fire)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(ids)
    }

    async fn create_job(&self, job: &NewJob, now: i64) -> Result<i64> {
        let res = bind_job(sqlx::query(INSERT_JOB), job, now)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(res.last_insert_rowid())
    }

    async fn claim_job(&self, now: i64) -> Result<Option<JobRecord>> {
        let sql = format!(
            "UPDATE jobs SET state = 'running', started_at = ?, error = NULL WHERE id = (\
               SELECT j.id FROM jobs j WHERE j.state = 'queued' AND (\
                 j.concurrency = 'allow' OR j.schedule IS NULL OR NOT EXISTS (\
                   SELECT 1 FROM jobs r WHERE r.schedule = j.schedule AND r.state = 'running')) \
               ORDER BY j.window_start, j.id LIMIT 1) \
             RETURNING {JOB_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| job_from_row(&r))
            .transpose()
            .map_err(|e| self.err(e))
    }

    async fn requeue_running(&self) -> Result<u64> {
        let res = sqlx::query("UPDATE jobs SET state = 'queued' WHERE state = 'running'")
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(res.rows_affected())
    }

    async fn job(&self, id: i64) -> Result<JobRecord> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?
        .ok_or(DbError::NoJob(id))?;
        job_from_row(&row).map_err(|e| self.err(e))
    }

    async fn jobs(&self, f: &JobFilter) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (? IS NULL OR state = ?) \
             AND (? IS NULL OR schedule = ?) AND (? IS NULL OR window_end > ?) \
             AND (? IS NULL OR window_start < ?) ORDER BY id DESC LIMIT ?"
        );
        let state = f.state.map(|s| s.as_str());
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(state)
            .bind(state)
            .bind(f.schedule.as_deref())
            .bind(f.schedule.as_deref())
            .bind(f.window_from)
            .bind(f.window_from)
            .bind(f.window_to)
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

    async fn set_tasks(&self, job: i64, tasks: &[TaskRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for sql in [
            "DELETE FROM tasks WHERE job_id = ?",
            "DELETE FROM model_failures WHERE job_id = ?",
        ] {
            sqlx::query(sql)
                .bind(job)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        for t in tasks {
            sqlx::query(
                "INSERT INTO tasks (job_id, idx, state, attempts, first_key, last_key, n_keys, queued_at) \
                 VALUES (?, ?, ?, 0, ?, ?, ?, ?)",
            )
            .bind(job)
            .bind(i64::from(t.idx))
            .bind(&t.state)
            .bind(&t.first_key)
            .bind(&t.last_key)
            .bind(t.n_keys as i64)
            .bind(t.queued_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn update_task(&self, t: &TaskRecord) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET state = ?, attempts = ?, started_at = ?, finished_at = ?, models = ?, \
             rows = ?, anomalies = ?, failed_models = ?, load_ms = ?, score_ms = ?, write_ms = ?, \
             output = ?, error = ? WHERE job_id = ? AND idx = ?",
        )
        .bind(&t.state)
        .bind(i64::from(t.attempts))
        .bind(t.started_at)
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
        .bind(t.job_id)
        .bind(i64::from(t.idx))
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn tasks(&self, job: i64) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query("SELECT * FROM tasks WHERE job_id = ? ORDER BY idx")
            .bind(job)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(task_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    async fn set_failures(&self, job: i64, task: u32, failures: &[FailureRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        sqlx::query("DELETE FROM model_failures WHERE job_id = ? AND task_idx = ?")
            .bind(job)
            .bind(i64::from(task))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        for f in failures {
            sqlx::query(
                "INSERT INTO model_failures (job_id, task_idx, device, tag, reason, detail, rows) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(job)
            .bind(i64::from(task))
            .bind(&f.device)
            .bind(&f.tag)
            .bind(&f.reason)
            .bind(&f.detail)
            .bind(f.rows as i64)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    async fn failures(&self, job: i64) -> Result<Vec<FailureRecord>> {
        let rows = sqlx::query(
            "SELECT task_idx, device, tag, reason, detail, rows FROM model_failures \
             WHERE job_id = ? ORDER BY device, tag",
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
        sqlx::query(
            "UPDATE jobs SET state = ?, started_at = ?, finished_at = ?, models = ?, rows = ?, \
             anomalies = ?, failed_models = ?, tasks = ?, load_ms = ?, score_ms = ?, write_ms = ?, \
             error = ?, manifest = ? WHERE id = ?",
        )
        .bind(j.state.as_str())
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
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?, error = 'cancelled by a user' \
             WHERE id = ? AND state IN ('queued', 'running')",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
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
        let r = sqlx::query(
            "SELECT COALESCE(SUM(rows), 0), COALESCE(SUM(anomalies), 0), \
             COALESCE(SUM(failed_models), 0), COALESCE(SUM(finished_at - started_at), 0), COUNT(*), \
             (SELECT COALESCE(SUM(attempts - 1), 0) FROM tasks WHERE attempts > 1), \
             (SELECT MAX(window_end) FROM jobs WHERE state = 'succeeded' AND kind = 'scheduled') \
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

    async fn rewind_schedule(&self, schedule: &str, last_fire: i64, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedules (name, last_fire, updated_at) VALUES (?, ?, ?) \
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

    async fn slowest_tasks(&self, limit: u32) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE finished_at IS NOT NULL AND started_at IS NOT NULL \
             ORDER BY finished_at - started_at DESC, job_id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
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
            "UPDATE jobs SET state = 'queued', started_at = NULL, finished_at = NULL, error = NULL \
             WHERE id = ?",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        self.job(id).await
    }
}
