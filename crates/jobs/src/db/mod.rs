//! The job store: schedules' progress, jobs, tasks and per-model failures.
//!
//! [`JobStore`] is what the scheduler, the runner, the workers, the CLI and
//! the API need; [`SqlStore`] implements it over SQLite (a file in the data
//! folder, the embedded default) or PostgreSQL (`postgres://…`, shared by
//! any number of `fleetscore worker` processes on any hosts). Both run the
//! same SQL but for a few dialect differences; each has its own migrations.
//! Times are `i64` nanoseconds since the epoch, UTC.
//!
//! The module's files: the records and their states ([`records`]:
//! [`JobRecord`], [`TaskRecord`], [`JobState`], [`TaskState`],
//! [`TaskKind`], …), the trait (`store.rs`: [`JobStore`]), the errors
//! (`error.rs`: [`DbError`], which says whether a retry can help), the
//! shared SQL (`sql.rs`: [`SqlStore`]), each dialect's words (`sqlite.rs`,
//! `postgres.rs`: migrations, connection setup, row locks, `NOTIFY`) and
//! the row mapping (`rows.rs`).
//!
//! # Leases
//! Work is handed out in leases so that a process that vanishes loses its
//! work to others after `lease_until`: a queued job is claimed for
//! planning ([`JobStore::claim_job`]), its tasks are leased one at a time
//! ([`JobStore::lease_task`], `FOR UPDATE SKIP LOCKED` on PostgreSQL) and
//! renewed while they run, and once every task is done one process claims
//! the job again to finalize it ([`JobStore::claim_finalize`]). Every
//! write that ends a leased step is conditional on still holding the
//! lease, so a slow process whose lease expired cannot overwrite the
//! outcome recorded by the process that took over.
//!
//! Lease times (`lease_until`, a retry's `not_before`) are the lease
//! holders' clock, passed in by the caller with every call (`now`,
//! `until`); the store reads no clock of its own. The runner takes them
//! from its injected [`Clock`](crate::schedule::Clock) (see
//! [`crate::lease`]): the system clock in production, where the processes
//! sharing a store compare wall-clock times across hosts, and a
//! [`ManualClock`](crate::schedule::ManualClock) in tests, which expire a
//! lease by moving the clock past it.

mod error;
mod postgres;
pub mod records;
mod rows;
mod sql;
mod sqlite;
mod store;

pub use error::{retrying, DbError, Result};

/// `url` for messages and logs: a password in `scheme://user:password@host`
/// (or a `password=` parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let (Some(scheme), Some(at)) = (out.find("://"), out.find('@')) {
        let userinfo = &out[scheme + 3..at];
        if let Some(colon) = userinfo.find(':') {
            out.replace_range(scheme + 3 + colon + 1..at, "***");
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

pub use postgres::{ensure_database, listen_for_work, WORK_CHANNEL};
pub use records::{
    Concurrency, Counters, FailureRecord, IdleWork, JobFilter, JobKind, JobRecord, JobState,
    JobStats, NewJob, TaskKind, TaskRecord, TaskState, Threshold, TASK_MAP, TASK_SCORE,
};
pub use sql::{Commits, Dialect, SqlStore, SqliteStore};
pub use store::JobStore;

#[cfg(test)]
mod url_tests {
    #[test]
    fn passwords_are_redacted() {
        use super::redact_url;
        assert_eq!(
            redact_url("postgres://fleet:s3cret@db:5432/fs?sslmode=require"),
            "postgres://fleet:***@db:5432/fs?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://fleet@db/fs"),
            "postgres://fleet@db/fs"
        );
        assert_eq!(
            redact_url("postgres://db/fs?user=a&password=x&sslmode=verify-full"),
            "postgres://db/fs?user=a&password=***&sslmode=verify-full"
        );
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
