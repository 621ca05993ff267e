//! PostgreSQL (`postgres://…`): one job store shared by any number of
//! `fleetscore worker` processes on any hosts.
//!
//! What differs from SQLite: concurrent claimers skip each other's rows
//! (`FOR UPDATE … SKIP LOCKED`) and take turns at claiming jobs (an
//! advisory lock, so two cannot start jobs of one `forbid` schedule); new
//! work is announced on [`WORK_CHANNEL`] (`LISTEN`/`NOTIFY`), so idle
//! workers wake at once; a worker's connections may commit without waiting
//! for the disk ([`Commits::Relaxed`](super::Commits::Relaxed)); `EXISTS`
//! answers with a boolean; the larger of two values is `GREATEST(a, b)`.

use std::sync::LazyLock;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AssertSqlSafe, Executor, Row};

use super::sql::FINISH_TASK;
use super::{DbError, Result, SqlStore};

/// The PostgreSQL `LISTEN`/`NOTIFY` channel on which the job store
/// announces new work: a queued job, a planned job's tasks, a job's score
/// tasks once its last map task succeeded, a task handed back.
pub const WORK_CHANNEL: &str = "fleetscore_work";

/// The schema's migrations (their own: types and defaults differ).
pub(super) static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections in a store's pool.
pub(super) const POOL_SIZE: u32 = 8;

/// Run on each new connection of a store whose commits need not wait
/// for the disk.
pub(super) const RELAXED_COMMITS: &str = "SET synchronous_commit = off";

/// The larger of two values.
pub(super) const GREATEST: &str = "GREATEST";

/// Taken (until the transaction ends) by each claim of a job, so that
/// claims take turns: `SKIP LOCKED` alone would let two claimers start two
/// jobs of one `forbid` schedule at once.
pub(super) const CLAIM_LOCK: &str = "SELECT pg_advisory_xact_lock(7100001)";

/// Announces new work on channel `$1`.
pub(super) const NOTIFY: &str = "SELECT pg_notify($1, '')";

/// [`FINISH_TASK`] that also announces work on channel `$17` if it
/// recorded the task; its one row says how many it recorded. The
/// notification goes out when the statement commits: one round trip.
pub(super) static FINISH_TASK_ANNOUNCED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH f AS ({FINISH_TASK} RETURNING 1) SELECT (SELECT COUNT(*) FROM f), \
         (SELECT COUNT(*) FROM (SELECT pg_notify($17, '') FROM f) n)"
    )
});

/// Whether `url` names a PostgreSQL database.
pub(super) fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// ` FOR UPDATE OF table SKIP LOCKED`: a claim passes over rows another
/// claimer is taking.
pub(super) fn skip_locked(table: &str) -> String {
    format!(" FOR UPDATE OF {table} SKIP LOCKED")
}

/// Column `i` of an `EXISTS` (a boolean on PostgreSQL) as a flag.
pub(super) fn flag(row: &AnyRow, i: usize) -> std::result::Result<bool, sqlx::Error> {
    row.try_get::<bool, _>(i)
}

/// Connects once, directly, before the pool does: the pool would only say
/// it timed out, this says why (refused, unknown host, authentication, a
/// certificate not trusted). `shown` is the URL for messages.
pub(super) async fn check_reachable(url: &str, shown: &str) -> Result<()> {
    use sqlx::Connection as _;
    let sql = |error| DbError::Sql {
        url: shown.to_string(),
        error,
    };
    match tokio::time::timeout(
        std::time::Duration::from_secs(15),
        sqlx::AnyConnection::connect(url),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(sql(tls_hint(e))),
        Err(_) => Err(sql(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer within 15s; is PostgreSQL running there, and the URL's host and port right?",
        )))),
    }
}

/// A TLS failure with what to change in the URL.
fn tls_hint(e: sqlx::Error) -> sqlx::Error {
    let text = e.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("certificate") {
        "the server's certificate is not trusted or does not name this host: give its CA with sslrootcert=/path/to/ca.pem in the URL (sslmode=verify-ca checks the CA, verify-full the host name too), or sslmode=require to encrypt without checking"
    } else if text.contains("does not support TLS") || text.contains("not support SSL") {
        "the server does not offer TLS: turn ssl on in its postgresql.conf, or leave sslmode out of the URL"
    } else {
        return e;
    };
    sqlx::Error::Tls(format!("{text}; {hint}").into())
}

/// Whether a PostgreSQL SQLSTATE is one that passes: a connection
/// exception (class `08`), a transaction that lost a race (serialization
/// failure, deadlock), too many connections or too little memory, a lock
/// not available, a server starting, stopping or restarting (`57P01`
/// to `57P03`), a statement cancelled by its timeout.
pub(super) fn retryable_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "53300" | "53200" | "55P03" | "57P01" | "57P02" | "57P03" | "57014"
        )
}

/// Listens on [`WORK_CHANNEL`] of the PostgreSQL job store at `url`: the
/// value of the returned receiver changes at each announcement, so an idle
/// worker wakes at once instead of at its next poll. The listener
/// reconnects by itself after a connection loss (announcements made
/// meanwhile are missed: workers still poll).
pub async fn listen_for_work(url: &str) -> Result<tokio::sync::watch::Receiver<u64>> {
    let err = |error: sqlx::Error| DbError::Sql {
        url: super::redact_url(url),
        error,
    };
    if !is_url(url) {
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

/// Creates the PostgreSQL database `name` on the server of `server_url`
/// (any database URL of that server) unless it exists; returns its URL.
/// For tests and benchmarks that want a database of their own.
pub async fn ensure_database(server_url: &str, name: &str) -> Result<String> {
    sqlx::any::install_default_drivers();
    let sql = |error| DbError::Sql {
        url: super::redact_url(server_url),
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

impl SqlStore {
    /// The value of a PostgreSQL setting on one of the store's connections
    /// (`SHOW`); [`DbError::NotPostgres`] on SQLite.
    pub async fn setting(&self, name: &str) -> Result<String> {
        if self.dialect != super::Dialect::Postgres {
            return Err(DbError::NotPostgres(self.url.clone()));
        }
        let row = sqlx::query("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.try_get::<String, _>(0).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_races_and_restarts_pass_the_callers_mistakes_do_not() {
        for code in ["08006", "08001", "40001", "40P01", "57P01", "53300"] {
            assert!(retryable_code(code), "{code}");
        }
        // unique_violation, syntax_error, undefined_table, invalid_text.
        for code in ["23505", "42601", "42P01", "22P02"] {
            assert!(!retryable_code(code), "{code}");
        }
    }

    #[test]
    fn the_announcing_finish_builds_on_the_plain_one() {
        assert!(
            FINISH_TASK_ANNOUNCED.starts_with(&format!("WITH f AS ({FINISH_TASK} RETURNING 1)"))
        );
        assert!(FINISH_TASK_ANNOUNCED.contains("pg_notify($17, '')"));
    }
}
