//! [`SqlStore`]: the job store over SQL, one set of statements for both
//! dialects (through sqlx's `Any` driver), with the few words that differ
//! supplied by [`sqlite`] and [`postgres`], and the columns mapped in
//! [`rows`](super::rows).
//!
//! Every time in a statement is a parameter (the caller's clock, see
//! [`JobStore`]); no statement reads the database server's clock
//! (`now()`, `CURRENT_TIMESTAMP`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
// Dynamic SQL here only splices constant column lists and dialect words.
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row};

use super::rows::{
    bind_finish, bind_job, bind_outcome, count_from_row, failure_from_row, job_from_row,
    task_from_row, u, value_rows, RowError, FAILURE_COLUMNS, INSERT_JOB, JOB_COLUMNS, TASK_COLUMNS,
};
use super::{postgres, sqlite, WORK_CHANNEL};
use super::{
    DbError, FailureRecord, IdleWork, JobFilter, JobRecord, JobState, JobStats, JobStore, NewJob,
    Result, TaskKind, TaskRecord, TaskState,
};

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

/// Which SQL the store speaks: the same statements but for the few words
/// each dialect's module (`db/sqlite.rs`, `db/postgres.rs`) supplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: one writer at a time, so a single `UPDATE … RETURNING`
    /// claims atomically.
    Sqlite,
    /// PostgreSQL: concurrent claimers skip each other's rows
    /// (`FOR UPDATE SKIP LOCKED`).
    Postgres,
}

impl Dialect {
    /// Its schema's migrations.
    fn migrations(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Dialect::Sqlite => &sqlite::MIGRATIONS,
            Dialect::Postgres => &postgres::MIGRATIONS,
        }
    }

    /// The function that gives the larger of two values.
    fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite::GREATEST,
            Dialect::Postgres => postgres::GREATEST,
        }
    }

    /// What a claim's subquery ends with so that concurrent claimers pass
    /// over each other's rows of `table` (nothing on SQLite, whose writers
    /// take turns anyway).
    fn skip_locked(self, table: &str) -> String {
        match self {
            Dialect::Sqlite => String::new(),
            Dialect::Postgres => postgres::skip_locked(table),
        }
    }

    /// Column `i` of an `EXISTS` as a flag.
    fn flag(self, row: &AnyRow, i: usize) -> std::result::Result<bool, sqlx::Error> {
        match self {
            Dialect::Sqlite => sqlite::flag(row, i),
            Dialect::Postgres => postgres::flag(row, i),
        }
    }
}

/// The job store over SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pub(super) pool: AnyPool,
    /// The URL for messages: its password replaced by `***`.
    pub(super) url: String,
    /// The URL as given, to connect with.
    connect: String,
    pub(super) dialect: Dialect,
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
    pub async fn open_with(given: &str, commits: Commits) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let shown = super::redact_url(given);
        let url = shown.as_str();
        let sql = |error| DbError::Sql {
            url: url.to_string(),
            error,
        };
        let (dialect, connect, max) = if postgres::is_url(given) {
            postgres::check_reachable(given, url).await?;
            (Dialect::Postgres, given.to_string(), postgres::POOL_SIZE)
        } else {
            let (connect, max) = sqlite::connect_url(given)?;
            (Dialect::Sqlite, connect, max)
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    match dialect {
                        Dialect::Sqlite => {
                            conn.execute(sqlite::SETUP).await?;
                        }
                        Dialect::Postgres if commits == Commits::Relaxed => {
                            conn.execute(postgres::RELAXED_COMMITS).await?;
                        }
                        Dialect::Postgres => {}
                    }
                    Ok(())
                })
            })
            .connect(&connect)
            .await
            .map_err(sql)?;
        dialect
            .migrations()
            .run(&pool)
            .await
            .map_err(|error| DbError::Migrate {
                url: url.to_string(),
                error,
            })?;
        Ok(SqlStore {
            pool,
            url: url.to_string(),
            connect: given.to_string(),
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
                sqlx::query(postgres::NOTIFY)
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

    /// A driver error of this store.
    pub(super) fn err(&self, error: sqlx::Error) -> DbError {
        DbError::Sql {
            url: self.url.clone(),
            error,
        }
    }

    /// A row that could not be read, as an error of this store.
    fn row_err(&self, error: RowError) -> DbError {
        match error {
            RowError::Sql(e) => self.err(e),
            RowError::Corrupt { what, value, job } => DbError::Corrupt {
                url: self.url.clone(),
                what,
                value,
                job,
            },
        }
    }
}

/// The condition on `jobs j` of a job to finalize: planned, running,
/// not leased (or its lease expired before `now`), and with no task left
/// to run (none running, none queued unless a map task failed, which
/// fails the job).
fn finalizable(now: &str) -> String {
    format!(
        "j.state = 'running' AND j.planned_at IS NOT NULL \
         AND (j.lease_owner IS NULL OR COALESCE(j.lease_until, 0) < {now}) \
         AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id \
                         AND (t.state = 'running' OR (t.state = 'queued' \
                           AND NOT EXISTS (SELECT 1 FROM tasks m WHERE m.job_id = j.id \
                             AND m.kind = 'map' AND m.state = 'failed'))))"
    )
}

/// Ends a leased task attempt: applies only while `owner` holds the lease
/// ([`bind_finish`] binds its `$1..$16`).
pub(super) const FINISH_TASK: &str = "UPDATE tasks SET state = $1, finished_at = $2, \
    models = $3, rows = $4, anomalies = $5, failed_models = $6, load_ms = $7, score_ms = $8, \
    write_ms = $9, output = $10, error = $11, not_before = $12, devices = $13, \
    lease_owner = NULL, lease_until = NULL \
    WHERE job_id = $14 AND idx = $15 AND lease_owner = $16 AND state = 'running'";

#[async_trait]
impl JobStore for SqlStore {
    fn url(&self) -> &str {
        &self.url
    }

    fn connection_url(&self) -> &str {
        &self.connect
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
        let greatest = self.dialect.greatest();
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
                   AND COALESCE(j.lease_until, 0) < $1)) AND ($4 IS NULL OR j.id = $4) \
               ORDER BY j.window_start, j.id LIMIT 1{}) \
             RETURNING {JOB_COLUMNS}",
            self.dialect.skip_locked("j")
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
            sqlx::query(postgres::CLAIM_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.failed(e))?;
        }
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(owner)
            .bind(until)
            .bind(only)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        self.put(conn);
        row.map(|r| job_from_row(&r))
            .transpose()
            .map_err(|e| self.row_err(e))
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
        job_from_row(&row.ok_or(DbError::NoJob(id))?).map_err(|e| self.row_err(e))
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
            .map_err(|e| self.row_err(e))
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
        .bind(job.counts.load_ms as i64)
        .bind(job.id)
        .bind(owner)
        .bind(job.counts.models as i64)
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
                    .bind(t.state.as_str())
                    .bind(t.first_key.clone())
                    .bind(t.last_key.clone())
                    .bind(t.n_keys as i64)
                    .bind(t.queued_at)
                    .bind(t.kind.as_str())
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
                 AND ($4 IS NULL OR j.id = $4)) \
               SELECT t.job_id, t.idx FROM tasks t JOIN ready r ON r.id = t.job_id \
               WHERE ((t.state = 'queued' AND COALESCE(t.not_before, 0) <= $1) \
                 OR (t.state = 'running' AND COALESCE(t.lease_until, 0) < $1 \
                     AND t.attempts <= r.max_retries)) \
               AND (t.kind = 'map' OR r.mapped) \
               ORDER BY t.job_id, t.idx LIMIT 1{}) \
             RETURNING {TASK_COLUMNS}",
            self.dialect.skip_locked("t")
        );
        let mut conn = self.take().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(owner)
            .bind(until)
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
                 WHERE state = 'running' AND COALESCE(lease_until, 0) < $1 \
                   AND attempts > (SELECT j.max_retries FROM jobs j WHERE j.id = tasks.job_id)",
            )
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(|e| self.failed(e))?;
        }
        self.put(conn);
        row.map(|r| task_from_row(&r))
            .transpose()
            .map_err(|e| self.row_err(e))
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

    async fn idle_work(&self, now: i64, only: Option<i64>) -> Result<IdleWork> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM jobs j WHERE {} AND ($2 IS NULL OR j.id = $2)), \
               EXISTS (SELECT 1 FROM jobs j WHERE (j.state = 'queued' \
                 OR (j.state = 'running' AND j.planned_at IS NULL \
                     AND COALESCE(j.lease_until, 0) < $1)) AND ($2 IS NULL OR j.id = $2))",
            finalizable("$1")
        );
        let mut conn = self.take().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .bind(only)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.put(conn);
        let flag = |i: usize| self.dialect.flag(&row, i).map_err(|e| self.err(e));
        Ok(IdleWork {
            finalize: flag(0)?,
            plan: flag(1)?,
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
        let announce = t.is_map() && t.state == TaskState::Succeeded;
        let mut conn = self.take().await?;
        if failures.is_empty() && t.attempts <= 1 {
            let kept = if announce && self.dialect == Dialect::Postgres {
                // With the announcement, sent when the statement commits:
                // one round trip.
                let row = bind_finish(
                    sqlx::query(postgres::FINISH_TASK_ANNOUNCED.as_str()),
                    t,
                    owner,
                )
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
        now: i64,
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
            self.dialect.skip_locked("j")
        );
        let mut conn = self.take().await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(until)
            .bind(now)
            .bind(only)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.put(conn);
        row.map(|r| job_from_row(&r))
            .transpose()
            .map_err(|e| self.row_err(e))
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
            .map_err(|e| self.row_err(e))
    }

    async fn failures(&self, job: i64) -> Result<Vec<FailureRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {FAILURE_COLUMNS} FROM model_failures WHERE job_id = $1 ORDER BY device, tag"
        )))
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| failure_from_row(r, job))
            .collect::<Result<_, _>>()
            .map_err(|e| self.row_err(e))
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
            sqlx::query(sql)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.err(e))
        };
        let jobs = by_state("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
            .await?
            .iter()
            .map(|r| count_from_row(r, "job state"))
            .collect::<Result<_, _>>()
            .map_err(|e| self.row_err(e))?;
        let tasks = by_state("SELECT state, COUNT(*) FROM tasks GROUP BY state ORDER BY state")
            .await?
            .iter()
            .map(|r| count_from_row(r, "task state"))
            .collect::<Result<_, _>>()
            .map_err(|e| self.row_err(e))?;
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

    async fn pending(&self, now: i64) -> Result<u64> {
        let r = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id \
                     WHERE j.state = 'running' AND (t.state = 'queued' \
                     OR (t.state = 'running' AND COALESCE(t.lease_until, 0) < $1))) \
                  + (SELECT COUNT(*) FROM jobs WHERE state = 'queued')",
        )
        .bind(now)
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

    async fn slowest_tasks(&self, limit: u32, kind: Option<TaskKind>) -> Result<Vec<TaskRecord>> {
        let of_kind = if kind.is_some() { "AND kind = $2 " } else { "" };
        let query = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE finished_at IS NOT NULL \
             AND started_at IS NOT NULL {of_kind}\
             ORDER BY finished_at - started_at DESC, job_id DESC LIMIT $1"
        );
        let mut q = sqlx::query(AssertSqlSafe(query)).bind(i64::from(limit));
        if let Some(kind) = kind {
            q = q.bind(kind.as_str());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| self.err(e))?;
        rows.iter()
            .map(task_from_row)
            .collect::<Result<_, _>>()
            .map_err(|e| self.row_err(e))
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
