//! Rows to records, and records to statement parameters: the one place
//! that knows the columns (both dialects share them).
//!
//! Stored states and kinds are their enums' names (see
//! [`records`](super::records)); a name that does not parse, or a count
//! out of its type's range, is a [`RowError::Corrupt`], which the store
//! reports as [`DbError::Corrupt`](super::DbError::Corrupt) naming the
//! column, the value and the job.

use std::str::FromStr;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Counters, FailureRecord, JobRecord, NewJob, TaskRecord};

/// The columns [`job_from_row`] reads, for `SELECT` and `RETURNING`.
pub(super) const JOB_COLUMNS: &str = "id, schedule, kind, window_start, window_end, mode, \
    selection, state, batch_size, max_failed, max_retries, concurrency, created_at, started_at, \
    finished_at, models, rows, anomalies, failed_models, tasks, load_ms, score_ms, write_ms, \
    error, manifest";

/// The columns [`task_from_row`] reads, for `SELECT` and `RETURNING`.
pub(super) const TASK_COLUMNS: &str =
    "job_id, idx, kind, state, attempts, first_key, last_key, n_keys, queued_at, \
    started_at, finished_at, models, rows, anomalies, failed_models, load_ms, score_ms, write_ms, \
    output, error, lease_owner, lease_until, not_before, devices, plan_id";

/// The columns [`failure_from_row`] reads.
pub(super) const FAILURE_COLUMNS: &str = "task_idx, device, tag, reason, detail, rows";

/// Inserts a job; [`bind_job`] binds its `$1..$13`.
pub(super) const INSERT_JOB: &str = "INSERT INTO jobs (schedule, kind, window_start, window_end, \
    mode, selection, state, batch_size, max_failed, max_retries, concurrency, created_at, error) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// A statement of the `Any` driver with its parameters.
pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Why a row could not be read.
#[derive(Debug)]
pub(super) enum RowError {
    /// The driver could not read a column.
    Sql(sqlx::Error),
    /// A column holds a value this build does not know.
    Corrupt {
        /// The column.
        what: &'static str,
        /// Its value.
        value: String,
        /// The row's job.
        job: Option<i64>,
    },
}

impl From<sqlx::Error> for RowError {
    fn from(e: sqlx::Error) -> RowError {
        RowError::Sql(e)
    }
}

/// A count as stored (never negative; a negative one reads as 0).
pub(super) fn u(v: i64) -> u64 {
    v.max(0) as u64
}

/// A stored name parsed into its enum.
fn parse<T: FromStr>(what: &'static str, value: String, job: Option<i64>) -> Result<T, RowError> {
    value
        .parse()
        .map_err(|_| RowError::Corrupt { what, value, job })
}

/// A small stored integer (an index, a count of attempts) as a `u32`.
fn small(r: &AnyRow, column: &'static str, job: Option<i64>) -> Result<u32, RowError> {
    let v: i64 = r.try_get(column)?;
    u32::try_from(v).map_err(|_| RowError::Corrupt {
        what: column,
        value: v.to_string(),
        job,
    })
}

/// A `jobs` row of [`JOB_COLUMNS`].
pub(super) fn job_from_row(r: &AnyRow) -> Result<JobRecord, RowError> {
    let id: i64 = r.try_get("id")?;
    let job = Some(id);
    let selection: Option<String> = r.try_get("selection")?;
    Ok(JobRecord {
        id,
        schedule: r.try_get("schedule")?,
        kind: parse("job kind", r.try_get("kind")?, job)?,
        window_start: r.try_get("window_start")?,
        window_end: r.try_get("window_end")?,
        mode: r.try_get("mode")?,
        selection: match selection {
            None => None,
            Some(s) => Some(serde_json::from_str(&s).map_err(|_| RowError::Corrupt {
                what: "selection",
                value: s,
                job,
            })?),
        },
        state: parse("job state", r.try_get("state")?, job)?,
        batch_size: small(r, "batch_size", job)?,
        max_failed: parse("max_failed", r.try_get("max_failed")?, job)?,
        max_retries: small(r, "max_retries", job)?,
        concurrency: parse("concurrency", r.try_get("concurrency")?, job)?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        counts: counters_from_row(r)?,
        tasks: u(r.try_get("tasks")?),
        error: r.try_get("error")?,
        manifest: r.try_get("manifest")?,
    })
}

/// The counters of a `jobs` or `tasks` row (the same column names in
/// both tables).
fn counters_from_row(r: &AnyRow) -> Result<Counters, RowError> {
    Ok(Counters {
        models: u(r.try_get("models")?),
        rows: u(r.try_get("rows")?),
        anomalies: u(r.try_get("anomalies")?),
        failed_models: u(r.try_get("failed_models")?),
        load_ms: u(r.try_get("load_ms")?),
        score_ms: u(r.try_get("score_ms")?),
        write_ms: u(r.try_get("write_ms")?),
    })
}

/// A `tasks` row of [`TASK_COLUMNS`].
pub(super) fn task_from_row(r: &AnyRow) -> Result<TaskRecord, RowError> {
    let job_id: i64 = r.try_get("job_id")?;
    let job = Some(job_id);
    Ok(TaskRecord {
        job_id,
        idx: small(r, "idx", job)?,
        kind: parse("task kind", r.try_get("kind")?, job)?,
        state: parse("task state", r.try_get("state")?, job)?,
        attempts: small(r, "attempts", job)?,
        first_key: r.try_get("first_key")?,
        last_key: r.try_get("last_key")?,
        n_keys: u(r.try_get("n_keys")?),
        queued_at: r.try_get("queued_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        counts: counters_from_row(r)?,
        output: r.try_get("output")?,
        error: r.try_get("error")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_until: r.try_get("lease_until")?,
        not_before: r.try_get("not_before")?,
        devices: r.try_get("devices")?,
        plan_id: r.try_get("plan_id")?,
    })
}

/// A `model_failures` row of [`FAILURE_COLUMNS`] (of `job`).
pub(super) fn failure_from_row(r: &AnyRow, job: i64) -> Result<FailureRecord, RowError> {
    Ok(FailureRecord {
        task_idx: small(r, "task_idx", Some(job))?,
        device: r.try_get("device")?,
        tag: r.try_get("tag")?,
        reason: r.try_get("reason")?,
        detail: r.try_get("detail")?,
        rows: u(r.try_get("rows")?),
    })
}

/// A `(name, count)` row of a `GROUP BY state` query, its name parsed as
/// `what`.
pub(super) fn count_from_row<T: FromStr>(
    r: &AnyRow,
    what: &'static str,
) -> Result<(T, u64), RowError> {
    Ok((parse(what, r.try_get(0)?, None)?, u(r.try_get(1)?)))
}

/// Binds a job's state and figures as `$1..$13` (state, started, finished,
/// models, rows, anomalies, failed models, tasks, load/score/write ms,
/// error, manifest).
pub(super) fn bind_outcome<'q>(q: AnyQuery<'q>, j: &'q JobRecord) -> AnyQuery<'q> {
    q.bind(j.state.as_str())
        .bind(j.started_at)
        .bind(j.finished_at)
        .bind(j.counts.models as i64)
        .bind(j.counts.rows as i64)
        .bind(j.counts.anomalies as i64)
        .bind(j.counts.failed_models as i64)
        .bind(j.tasks as i64)
        .bind(j.counts.load_ms as i64)
        .bind(j.counts.score_ms as i64)
        .bind(j.counts.write_ms as i64)
        .bind(j.error.as_deref())
        .bind(j.manifest.as_deref())
}

/// Binds the end of a task's attempt as `$1..$16` for
/// [`FINISH_TASK`](super::sql::FINISH_TASK): state, finished, models,
/// rows, anomalies, failed models, load/score/write ms, output, error,
/// not before, devices; then the job, the index and the lease `owner`.
pub(super) fn bind_finish<'q>(q: AnyQuery<'q>, t: &'q TaskRecord, owner: &'q str) -> AnyQuery<'q> {
    q.bind(t.state.as_str())
        .bind(t.finished_at)
        .bind(t.counts.models as i64)
        .bind(t.counts.rows as i64)
        .bind(t.counts.anomalies as i64)
        .bind(t.counts.failed_models as i64)
        .bind(t.counts.load_ms as i64)
        .bind(t.counts.score_ms as i64)
        .bind(t.counts.write_ms as i64)
        .bind(t.output.as_deref())
        .bind(t.error.as_deref())
        .bind(t.not_before)
        .bind(t.devices.as_deref())
        .bind(t.job_id)
        .bind(i64::from(t.idx))
        .bind(owner)
}

/// Binds a new job as `$1..$13` of [`INSERT_JOB`], created at `now`.
pub(super) fn bind_job<'q>(q: AnyQuery<'q>, j: &'q NewJob, now: i64) -> AnyQuery<'q> {
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

/// `rows` rows of `cols` parameters each for a multi-row `VALUES`:
/// `($1, $2), ($3, $4)` for 2 and 2.
pub(super) fn value_rows(rows: usize, cols: usize) -> String {
    let row = |r: usize| {
        let params: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
        format!("({})", params.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
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
