//! Why a job-store call failed, and whether trying again can help.

use super::{postgres, sqlite, JobState};

/// Why a store call failed.
///
/// [`DbError::retryable`] tells a caller whether the same call may succeed
/// later (the database restarting, busy, a transaction that lost a race)
/// or will fail the same way (a bad URL, a constraint, a job in the wrong
/// state): the runner retries the first kind a few times, and the API
/// answers it with `503` and `Retry-After` rather than `500`.
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
    #[error(
        "job store {url}: bad {what} {value:?}{}; was the database written by a newer fleetscore?",
        in_job(*job)
    )]
    Corrupt {
        /// The database.
        url: String,
        /// The column.
        what: &'static str,
        /// Its value.
        value: String,
        /// The job of the row, if the row belongs to one.
        job: Option<i64>,
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

fn in_job(job: Option<i64>) -> String {
    job.map(|j| format!(" in job {j}")).unwrap_or_default()
}

/// Shorthand.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

impl DbError {
    /// Whether the same call may succeed if tried again later: the
    /// connection was lost or could not be made, the pool or the database
    /// was busy, a transaction lost to a concurrent one (PostgreSQL's
    /// serialization failures and deadlocks), the server is starting or
    /// stopping. Not for what is wrong with the call or the data: a bad
    /// URL, a constraint, a value that does not parse, an unknown job, a
    /// job in the wrong state, a schema the migrations do not know.
    pub fn retryable(&self) -> bool {
        match self {
            DbError::Sql { error, .. } => sql_retryable(error),
            DbError::Migrate { error, .. } => match error {
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => sql_retryable(e),
                _ => false,
            },
            DbError::Url(_)
            | DbError::NotPostgres(_)
            | DbError::Corrupt { .. }
            | DbError::NoJob(_)
            | DbError::State { .. } => false,
        }
    }
}

/// Whether a driver error is one that passes (see [`DbError::retryable`]).
fn sql_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => match d.code() {
            // SQLite's codes are numbers, PostgreSQL's SQLSTATEs five
            // characters that are never all digits in the classes below.
            Some(code) => match code.parse::<i32>() {
                Ok(n) => sqlite::retryable_code(n),
                Err(_) => postgres::retryable_code(&code),
            },
            None => false,
        },
        // A statement on a closed pool (the process is stopping), a bad
        // configuration, a type or protocol mismatch: the same again.
        _ => false,
    }
}

/// Calls `f` until it succeeds, trying again while its error is
/// [retryable](DbError::retryable) (a database restarting, busy, a lost
/// race): up to 8 more times, waiting 200 ms, then twice as long each
/// time up to 5 s (about half a minute in all). Any other error, or the
/// last retryable one, is returned at once. `what` names the call in the
/// log.
pub async fn retrying<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut wait = std::time::Duration::from_millis(200);
    let mut tries = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tries < 8 && e.retryable() => {
                tracing::warn!("{what}: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(error: sqlx::Error) -> DbError {
        DbError::Sql {
            url: "sqlite://t.db".into(),
            error,
        }
    }

    #[test]
    fn lost_connections_and_busy_pools_are_retryable_the_callers_mistakes_are_not() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(sql(sqlx::Error::Io(io)).retryable());
        assert!(sql(sqlx::Error::PoolTimedOut).retryable());
        assert!(!sql(sqlx::Error::PoolClosed).retryable());
        assert!(!sql(sqlx::Error::RowNotFound).retryable());
        assert!(!DbError::Url("ftp://x".into()).retryable());
        assert!(!DbError::NoJob(3).retryable());
        assert!(!DbError::State {
            id: 3,
            state: JobState::Succeeded,
            why: "only a failed job can be retried",
        }
        .retryable());
        let corrupt = DbError::Corrupt {
            url: "sqlite://t.db".into(),
            what: "task state",
            value: "done".into(),
            job: Some(4),
        };
        assert!(!corrupt.retryable());
        assert_eq!(
            corrupt.to_string(),
            "job store sqlite://t.db: bad task state \"done\" in job 4; was the database \
             written by a newer fleetscore?"
        );
    }

    /// Real SQLite errors: a database locked by another writer is worth
    /// another try, a constraint or a syntax error is not.
    #[tokio::test]
    async fn sqlite_busy_is_retryable_a_constraint_is_not() {
        use sqlx::{ConnectOptions as _, Connection as _, Executor as _};
        let dir = tempfile::tempdir().unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut a = options.connect().await.unwrap();
        let mut b = options.connect().await.unwrap();
        a.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            .await
            .unwrap();
        let mut tx = a.begin().await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)").await.unwrap();
        let busy = b.execute("INSERT INTO t VALUES (2)").await.unwrap_err();
        assert!(
            sql(busy).retryable(),
            "a write while another holds the lock"
        );
        tx.commit().await.unwrap();
        let unique = b.execute("INSERT INTO t VALUES (1)").await.unwrap_err();
        assert!(!sql(unique).retryable());
        let syntax = b
            .execute("INSERT INTO nowhere VALUES (1)")
            .await
            .unwrap_err();
        assert!(!sql(syntax).retryable());
    }

    /// A store call that fails while the database restarts is tried
    /// again until it succeeds; one that can never succeed is not.
    #[tokio::test(start_paused = true)]
    async fn store_calls_are_retried_only_while_retrying_can_help() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let restarting = || async {
            match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0..=2 => Err(sql(sqlx::Error::PoolTimedOut)),
                n => Ok(n),
            }
        };
        assert_eq!(retrying("a call", restarting).await.unwrap(), 3);
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let gone = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err::<(), _>(DbError::NoJob(7))
        };
        assert!(matches!(
            retrying("a call", gone).await,
            Err(DbError::NoJob(7))
        ));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Down for good: given up after 8 retries.
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let down = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err::<(), _>(sql(sqlx::Error::PoolTimedOut))
        };
        assert!(retrying("a call", down).await.unwrap_err().retryable());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 9);
    }
}
