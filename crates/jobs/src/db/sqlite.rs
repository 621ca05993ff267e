//! SQLite, the embedded default: one file in the data folder (or a
//! database in memory, for tests), shared by the processes of one host.
//!
//! What differs from PostgreSQL: SQLite has one writer at a time, so a
//! single `UPDATE … RETURNING` claims a job or leases a task atomically (no
//! row locks to skip); waiting writers wait up to `busy_timeout`; there is
//! no `NOTIFY`, so workers on SQLite poll; `EXISTS` answers with an
//! integer; the larger of two values is `MAX(a, b)`.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{DbError, Result};

/// The schema's migrations (their own: types and defaults differ).
pub(super) static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Run on each new connection: write-ahead logging (readers do not block
/// the writer), a writer waits up to 10 s for another, and the foreign
/// keys (tasks of a job) hold.
pub(super) const SETUP: &str =
    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

/// The larger of two values.
pub(super) const GREATEST: &str = "MAX";

/// The driver's connection URL and the pool's size for `url`:
/// `sqlite://PATH`, a plain path (its folder is created), or
/// `sqlite://:memory:` (one connection: each would be its own database).
pub(super) fn connect_url(url: &str) -> Result<(String, u32)> {
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    if path.contains("://") {
        return Err(DbError::Url(url.to_string()));
    }
    if path == ":memory:" {
        return Ok(("sqlite::memory:".to_string(), 1));
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            // Opening the file says what is wrong if this failed.
            let _ = std::fs::create_dir_all(dir);
        }
    }
    Ok((format!("sqlite://{path}?mode=rwc"), 4))
}

/// Column `i` of an `EXISTS` (an integer on SQLite) as a flag.
pub(super) fn flag(row: &AnyRow, i: usize) -> std::result::Result<bool, sqlx::Error> {
    row.try_get::<i64, _>(i).map(|v| v != 0)
}

/// Whether an SQLite result code (extended or primary) is one that passes:
/// the database is busy or locked by another connection (a writer that
/// outlasted `busy_timeout`), or a WAL lock could not be taken at once
/// (`SQLITE_PROTOCOL`).
pub(super) fn retryable_code(code: i32) -> bool {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const PROTOCOL: i32 = 15;
    matches!(code & 0xff, BUSY | LOCKED | PROTOCOL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_file_or_memory() {
        assert_eq!(
            connect_url("sqlite://:memory:").unwrap(),
            ("sqlite::memory:".into(), 1)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/jobs.db");
        let (url, max) = connect_url(path.to_str().unwrap()).unwrap();
        assert_eq!(url, format!("sqlite://{}?mode=rwc", path.display()));
        assert_eq!(max, 4);
        assert!(path.parent().unwrap().is_dir(), "its folder is created");
        assert!(matches!(
            connect_url("mysql://localhost/jobs"),
            Err(DbError::Url(_))
        ));
    }

    #[test]
    fn busy_and_locked_pass_the_rest_does_not() {
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED_SHAREDCACHE.
        for code in [5, 517, 262] {
            assert!(retryable_code(code), "{code}");
        }
        // SQLITE_CONSTRAINT_UNIQUE, SQLITE_ERROR, SQLITE_READONLY.
        for code in [2067, 1, 8] {
            assert!(!retryable_code(code), "{code}");
        }
    }
}
