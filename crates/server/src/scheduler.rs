//! What `serve` adds to the scheduler of `fleetscore-jobs`
//! ([`fleetscore_jobs::scheduler::Scheduler`], which creates due jobs and
//! runs queued work on the injected clock): the runner settings from the
//! config, and the line printed for each job the server finishes.

use std::sync::Arc;
use std::time::Duration;

use fleetscore_core::format_rfc3339;
use fleetscore_jobs::db::{JobRecord, JobState, JobStore};
use fleetscore_jobs::run::RunnerConfig;

use crate::config::Config;

/// The runner settings from the config.
pub fn runner_config(c: &Config) -> RunnerConfig {
    let mut rc = RunnerConfig {
        retry_backoff: Duration::from_nanos(c.jobs.retry_backoff.as_nanos().max(0) as u64),
        ..RunnerConfig::default()
    };
    if c.jobs.parallel_tasks > 0 {
        rc.parallel_tasks = c.jobs.parallel_tasks;
    }
    rc.lease = Duration::from_nanos(c.jobs.lease.as_nanos().max(1_000_000) as u64);
    rc
}

/// The Python runtime's pool when `[python] enabled = true`, its worker
/// processes starting (the first one's hello checks the interpreter: a
/// missing package is an error naming it), else `None`, and no Python
/// process is ever started.
pub async fn python_pool(c: &Config) -> anyhow::Result<Option<Arc<fleetscore_python::Pool>>> {
    let Some(config) = c.python.runtime()? else {
        return Ok(None);
    };
    let workers = config.worker_count();
    let interpreter = config.interpreter.clone();
    // The workers start now (the first one's hello checks the interpreter),
    // while the caller goes on.
    let (pool, hello) = tokio::task::spawn_blocking(move || fleetscore_python::Pool::start(config))
        .await
        .map_err(|e| anyhow::anyhow!("starting the Python runtime: {e}"))??;
    tracing::info!(
        interpreter = %interpreter.display(),
        python = %hello.python,
        numpy = %hello.numpy,
        pyarrow = %hello.pyarrow,
        joblib = %hello.joblib,
        workers,
        "the Python runtime is enabled: models registered with --runtime python run in Python worker processes"
    );
    Ok(Some(Arc::new(pool)))
}

/// Prints a line for each job record that comes from `jobs` (a runner's
/// reports, see [`Runner::with_reports`]) as it comes, until the runner is
/// gone: what `serve` says on stdout about the jobs it finishes.
///
/// The writing happens on a thread of its own: stdout may be a pipe that
/// nobody reads (a parent that ignores it), and a write to a full pipe
/// blocks, which must stall neither the runtime nor the shutdown (the
/// last lines get two seconds to go out).
pub async fn print_finished(
    db: Arc<dyn JobStore>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<JobRecord>,
) {
    let (lines, to_write) = std::sync::mpsc::channel::<String>();
    let (written, all_written) = tokio::sync::oneshot::channel::<()>();
    let writer = std::thread::Builder::new()
        .name("job-lines".into())
        .spawn(move || {
            use std::io::Write as _;
            for line in to_write {
                let mut out = std::io::stdout().lock();
                // A closed stdout (a parent that stopped reading) is no
                // reason to stop serving.
                let _ = writeln!(out, "{line}").and_then(|()| out.flush());
            }
            let _ = written.send(());
        });
    if let Err(e) = writer {
        tracing::warn!(error = %e, "no line per finished job on stdout: starting its thread failed");
        return;
    }
    while let Some(j) = jobs.recv().await {
        let reasons = if j.counts.failed_models > 0 {
            match db.failures(j.id).await {
                Ok(f) => failure_counts(&f),
                Err(e) => {
                    tracing::warn!(job_id = j.id, error = %e, "reading the job's failed models failed");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        if lines.send(finished_line(&j, &reasons)).is_err() {
            break;
        }
    }
    drop(lines);
    let _ = tokio::time::timeout(Duration::from_secs(2), all_written).await;
}

/// Failed models by reason (`no_data`, …), most frequent first.
fn failure_counts(failures: &[fleetscore_jobs::db::FailureRecord]) -> Vec<(String, u64)> {
    let mut counts: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for f in failures {
        *counts.entry(f.reason.as_str()).or_default() += 1;
    }
    let mut out: Vec<(String, u64)> = counts
        .into_iter()
        .map(|(r, n)| (r.to_string(), n))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// `[2026-12-05T02:00:00Z, 03:00:00Z)`: the end without its date when it
/// is the start's.
fn window_text(from: i64, to: i64) -> String {
    let (a, b) = (format_rfc3339(from), format_rfc3339(to));
    match (a.split_once('T'), b.split_once('T')) {
        (Some((day, _)), Some((same, time))) if day == same => format!("[{a}, {time})"),
        _ => format!("[{a}, {b})"),
    }
}

/// One line about a finished job, with its failed models by reason
/// (`reasons`): its outcome, and for a failure where to look.
pub fn finished_line(j: &JobRecord, reasons: &[(String, u64)]) -> String {
    let id = j.id;
    let window = window_text(j.window_start, j.window_end);
    let by_reason = if reasons.is_empty() {
        String::new()
    } else {
        let each: Vec<String> = reasons.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        format!(" ({})", each.join(", "))
    };
    let error = j.error.as_deref().unwrap_or("");
    match j.state {
        JobState::Succeeded => format!(
            "job {id} succeeded {window}: {} models, {} rows, {} anomalies, {} failed{by_reason}, {}",
            j.counts.models,
            j.counts.rows,
            j.counts.anomalies,
            j.counts.failed_models,
            match (j.started_at, j.finished_at) {
                (Some(s), Some(f)) => format!("{:.2}s", (f - s) as f64 / 1e9),
                _ => "-".into(),
            }
        ),
        JobState::Failed => format!(
            "job {id} failed {window}: {error}{by_reason}; see `fleetscore jobs show {id}`"
        ),
        other => format!("job {id} {other} {window}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscore_core::parse_ts;
    use fleetscore_jobs::db::{Concurrency, Counters, JobKind, Threshold};

    fn job(state: JobState, error: Option<&str>) -> JobRecord {
        let start = parse_ts("2026-12-05T02:00:00Z").unwrap();
        JobRecord {
            id: 2,
            schedule: Some("hourly".into()),
            kind: JobKind::Scheduled,
            window_start: start,
            window_end: start + 3_600_000_000_000,
            mode: "raw".into(),
            selection: None,
            state,
            batch_size: 1000,
            max_failed: Threshold::Percent(10.0),
            max_retries: 2,
            concurrency: Concurrency::Forbid,
            created_at: start,
            started_at: Some(start + 1_000_000_000),
            finished_at: Some(start + 1_210_000_000),
            counts: Counters {
                models: 15,
                rows: 1800,
                anomalies: 12,
                ..Counters::default()
            },
            tasks: 1,
            error: error.map(str::to_string),
            manifest: None,
        }
    }

    #[test]
    fn a_finished_job_is_one_line_saying_its_outcome() {
        assert_eq!(
            finished_line(&job(JobState::Succeeded, None), &[]),
            "job 2 succeeded [2026-12-05T02:00:00Z, 03:00:00Z): 15 models, 1800 rows, 12 anomalies, 0 failed, 0.21s"
        );
        let mut failed = job(
            JobState::Failed,
            Some("15 of 15 models failed, more than max_failed_models = 10%"),
        );
        failed.counts.failed_models = 15;
        assert_eq!(
            finished_line(&failed, &[("no_data".into(), 15)]),
            "job 2 failed [2026-12-05T02:00:00Z, 03:00:00Z): 15 of 15 models failed, more than \
             max_failed_models = 10% (no_data: 15); see `fleetscore jobs show 2`"
        );
        let skipped = job(JobState::Skipped, Some("no readings in the window"));
        assert_eq!(
            finished_line(&skipped, &[]),
            "job 2 skipped [2026-12-05T02:00:00Z, 03:00:00Z): no readings in the window"
        );
        // A window across midnight keeps the end's date.
        let mut late = job(JobState::Skipped, Some("no readings in the window"));
        late.window_start += 21 * 3_600_000_000_000;
        late.window_end += 21 * 3_600_000_000_000;
        assert!(finished_line(&late, &[])
            .starts_with("job 2 skipped [2026-12-05T23:00:00Z, 2026-12-06T00:00:00Z): "));
    }

    #[test]
    fn failed_models_are_counted_by_reason_most_first() {
        let f = |reason: &str| fleetscore_jobs::db::FailureRecord {
            task_idx: 0,
            device: "d".into(),
            tag: "1".into(),
            reason: reason.into(),
            detail: String::new(),
            rows: 0,
        };
        let counts = failure_counts(&[f("no_model"), f("no_data"), f("no_data")]);
        assert_eq!(
            counts,
            [("no_data".to_string(), 2), ("no_model".to_string(), 1)]
        );
    }
}
