//! `fleetscore backfill` and `fleetscore jobs …`: the job store from the
//! command line.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fleetscore_core::{format_rfc3339, format_ts, parse_ts};
use fleetscore_jobs::backfill::WindowJobs;
use fleetscore_jobs::db::{JobFilter, JobKind, JobRecord, JobState, JobStore, Threshold};
use fleetscore_jobs::run::{Runner, RunnerConfig};
use fleetscore_jobs::schedule::SystemClock;
use serde_json::json;

use crate::cli::{BackfillArgs, Global, JobsCommand, WorkerArgs};
use crate::config::{self, Config};
use crate::util;

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

/// `fleetscore worker`: runs work from the job store until SIGTERM/Ctrl-C
/// (or, with --exit-when-idle, until none is left).
pub async fn worker(g: &Global, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let c = config::load(g.config.as_deref())?;
    if let Some(n) = args.threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting the scoring threads")?;
    }
    let dur = |s: fleetscore_stream::Span, flag: &str| -> anyhow::Result<Duration> {
        anyhow::ensure!(s.as_nanos() > 0, "{flag} must be more than zero");
        Ok(Duration::from_nanos(s.as_nanos() as u64))
    };
    let mut rc = runner_config(&c);
    anyhow::ensure!(args.slots > 0, "--slots must be at least 1");
    rc.parallel_tasks = args.slots;
    rc.lease = dur(args.lease, "--lease")?;
    rc.poll = dur(args.poll, "--poll")?;
    let grace = dur(args.grace, "--grace")?;
    // A worker's every write is redone if a database crash loses it, so
    // its commits do not wait for the disk (see `Commits::Relaxed`).
    let db = util::job_store_with(g, fleetscore_jobs::db::Commits::Relaxed).await?;
    if !db.url().starts_with("postgres") {
        tracing::warn!(
            db = db.url(),
            "a worker on a SQLite job store only shares work with processes on this host; use --db postgres://… to spread work over hosts"
        );
    }
    let store = util::store(g)?;
    let mut runner = Runner::new(
        Arc::clone(&db),
        store.clone(),
        Arc::new(SystemClock),
        rc.clone(),
    );
    // On PostgreSQL, new work is announced (LISTEN/NOTIFY): an idle worker
    // wakes at once, and polls only as a fallback.
    if db.url().starts_with("postgres") {
        match fleetscore_jobs::db::listen_for_work(db.url()).await {
            Ok(wake) => runner = runner.with_wake(wake),
            Err(e) => tracing::warn!(
                "not listening for new work ({e}); polling every {:?}",
                rc.poll
            ),
        }
    }
    tracing::info!(
        worker = runner.owner(),
        db = db.url(),
        store = store.url(),
        slots = rc.parallel_tasks,
        lease = ?rc.lease,
        "worker started"
    );
    let pinned = match &args.cpus {
        Some(list) => format!(", on CPU(s) {list}"),
        None => String::new(),
    };
    eprintln!(
        "worker {} on {} and {}: {} slot(s), lease {:?}{pinned}",
        runner.owner(),
        db.url(),
        store.url(),
        rc.parallel_tasks,
        rc.lease
    );
    if args.exit_when_idle {
        let ids = runner.run_queued().await?;
        eprintln!(
            "worker {}: no work left; finished {} job(s)",
            runner.owner(),
            ids.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signal = crate::serve::shutdown_signal()?;
    tokio::spawn(async move {
        signal.await;
        tracing::info!("stopping: no new work; the current task may finish");
        let _ = tx.send(true);
    });
    runner.work(rx, grace).await?;
    eprintln!("worker {} stopped", runner.owner());
    Ok(ExitCode::SUCCESS)
}

fn ms(v: Option<i64>, w: Option<i64>) -> String {
    match (v, w) {
        (Some(a), Some(b)) => format!("{:.3}s", (b - a) as f64 / 1e9),
        _ => "-".into(),
    }
}

/// The column titles of [`line`].
fn header() -> String {
    format!(
        "{:>6}  {:<10} {:<9} {:<44}  {:>6} {:>9} {:>9} {:>6}  {}",
        "id",
        "state",
        "schedule",
        "window [from .. to)",
        "models",
        "rows",
        "anomalies",
        "failed",
        "took"
    )
}

/// One job as a row of the table [`header`] titles.
fn line(j: &JobRecord) -> String {
    format!(
        "{:>6}  {:<10} {:<9} {:<44}  {:>6} {:>9} {:>9} {:>6}  {}",
        j.id,
        j.state.as_str(),
        j.schedule.as_deref().unwrap_or(j.kind.as_str()),
        format!(
            "{} .. {}",
            format_rfc3339(j.window_start),
            format_rfc3339(j.window_end)
        ),
        j.models,
        j.rows,
        j.anomalies,
        j.failed_models,
        ms(j.started_at, j.finished_at)
    )
}

pub async fn backfill(g: &Global, args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let c = config::load(g.config.as_deref())?;
    let from = parse_ts(&args.from)
        .map_err(anyhow::Error::from)
        .and_then(|t| Ok(fleetscore_core::check_ts(t)?))
        .context("--from")?;
    let to = parse_ts(&args.to)
        .map_err(anyhow::Error::from)
        .and_then(|t| Ok(fleetscore_core::check_ts(t)?))
        .context("--to")?;
    let max_failed: Threshold = match &args.max_failed_models {
        Some(t) => t
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))
            .context("--max-failed-models")?,
        None => c.jobs.max_failed_models,
    };
    let jobs = WindowJobs {
        from,
        to,
        window: args.window.as_nanos(),
        kind: JobKind::Backfill,
        selection: (!args.models.is_empty()).then(|| args.models.clone()),
        batch_size: args.batch_size.unwrap_or(c.jobs.batch_size),
        max_failed,
        max_retries: args.max_retries.unwrap_or(c.jobs.max_retries),
    }
    .jobs()
    // The refusal names the value at fault (`from`, `to`, `window`,
    // `models`), as the flags do.
    .context("no job queued: check --from, --to, --window and --model")?;
    let db = util::job_store(g).await?;
    let store = util::store(g)?;
    let clock = Arc::new(SystemClock);
    let ids = fleetscore_jobs::backfill::create_jobs(&*db, &jobs, util::now_ns()).await?;
    if args.queue {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "queued": ids }))?
            );
        } else {
            for id in &ids {
                println!("{id}");
            }
            eprintln!(
                "queued {} job(s); `fleetscore worker` processes or a running server run them",
                ids.len()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runner = Runner::new(Arc::clone(&db), store, clock, runner_config(&c));
    let pb = util::progress(g, ids.len() as u64, "backfill");
    let mut jobs = Vec::new();
    for id in &ids {
        // This very job (others may be queued by a running server); its
        // tasks may also be run by workers sharing the job store.
        jobs.push(runner.run_job(*id).await?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    // A window without readings is skipped, which is no failure.
    let skipped = jobs.iter().filter(|j| j.state == JobState::Skipped).count();
    let failed = jobs
        .iter()
        .filter(|j| !matches!(j.state, JobState::Succeeded | JobState::Skipped))
        .count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
    } else {
        println!("{}", header());
        for j in &jobs {
            println!("{}", line(j));
            if let Some(e) = &j.error {
                println!("        {e}");
            }
        }
        let rows: u64 = jobs.iter().map(|j| j.rows).sum();
        let anomalies: u64 = jobs.iter().map(|j| j.anomalies).sum();
        let skipped = match skipped {
            0 => String::new(),
            n => format!(", {n} skipped (no readings in the window)"),
        };
        println!(
            "backfilled {} window(s) of {}: {rows} rows, {anomalies} anomalies, {failed} failed job(s){skipped}; `fleetscore jobs show ID` for details",
            jobs.len(),
            args.window
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

pub async fn jobs(g: &Global, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let db = util::job_store(g).await?;
    match command {
        JobsCommand::List {
            state,
            schedule,
            limit,
            json,
        } => {
            let state = state
                .map(|s| s.parse::<JobState>().map_err(|e| anyhow::anyhow!(e)))
                .transpose()
                .context("--state")?;
            let list = db
                .jobs(&JobFilter {
                    state,
                    schedule,
                    limit: Some(limit),
                    ..JobFilter::default()
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no jobs in {}", db.url());
            } else {
                println!("{}", header());
                for j in &list {
                    println!("{}", line(j));
                }
            }
        }
        JobsCommand::Show { id, json } => {
            let job = db.job(id).await?;
            let tasks = db.tasks(id).await?;
            let failures = db.failures(id).await?;
            if json {
                let doc = json!({"job": job, "tasks": tasks, "failures": failures});
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("{}", header());
                println!("{}", line(&job));
                println!(
                    "  kind {}, mode {}, batch size {}, max failed {}, max retries {}, created {}",
                    job.kind.as_str(),
                    job.mode,
                    job.batch_size,
                    job.max_failed,
                    job.max_retries,
                    format_ts(job.created_at)
                );
                println!(
                    "  load {} ms, score {} ms, write {} ms (summed over tasks); manifest {}",
                    job.load_ms,
                    job.score_ms,
                    job.write_ms,
                    job.manifest.as_deref().unwrap_or("-")
                );
                if let Some(e) = &job.error {
                    // A skipped job's is why it was not scored.
                    let label = match job.state {
                        JobState::Skipped => "reason",
                        _ => "error",
                    };
                    println!("  {label}: {e}");
                }
                for t in tasks.iter().filter(|t| t.is_map()) {
                    println!(
                        "  map  {:>4} {:<9} attempts {} row groups {:>3} of {} readings {:>8} read {} ms write {} ms{}",
                        t.idx,
                        t.state,
                        t.attempts,
                        t.n_keys,
                        if t.first_key == t.last_key {
                            t.first_key.clone()
                        } else {
                            format!("{}..{}", t.first_key, t.last_key)
                        },
                        t.rows,
                        t.load_ms,
                        t.write_ms,
                        t.error.as_deref().map(|e| format!(" error: {e}")).unwrap_or_default()
                    );
                }
                for t in tasks.iter().filter(|t| !t.is_map()) {
                    println!(
                        "  task {:>4} {:<9} attempts {} models {:>5} ({}..{}) rows {:>8} anomalies {:>6} failed {:>4} score {} ms write {} ms{}",
                        t.idx,
                        t.state,
                        t.attempts,
                        // Once run: the pairs it scored, with any the map
                        // tasks found without a model; before: its plan's.
                        t.models.max(t.n_keys),
                        t.first_key,
                        t.last_key,
                        t.rows,
                        t.anomalies,
                        t.failed_models,
                        t.score_ms,
                        t.write_ms,
                        t.error.as_deref().map(|e| format!(" error: {e}")).unwrap_or_default()
                    );
                }
                for f in &failures {
                    println!(
                        "  failed model ({}, {}): {} ({} readings)",
                        f.device, f.tag, f.detail, f.rows
                    );
                }
            }
        }
        JobsCommand::Logs { id } => {
            db.job(id).await?;
            let store = util::store(g)?;
            let keys = store.list(&format!("logs/{id}/")).await?;
            if keys.is_empty() {
                println!("no logs for job {id} yet (it has not run)");
            }
            for key in keys {
                if let Some(data) = store.get(&key).await? {
                    println!("==> {key} <==");
                    print!("{}", String::from_utf8_lossy(&data));
                }
            }
        }
        JobsCommand::Retry { id } => {
            let j = db.retry(id).await?;
            println!(
                "job {} queued again; a running `fleetscore serve` picks it up, or run it now with `fleetscore jobs run`",
                j.id
            );
        }
        JobsCommand::Cancel { id } => {
            let j = db.cancel(id, util::now_ns()).await?;
            println!("job {} cancelled", j.id);
            // Its staged inputs are no longer needed (a retry plans again).
            match util::store(g) {
                Ok(store) => {
                    if let Err(e) = fleetscore_jobs::run::drop_staging(&store, id).await {
                        eprintln!("warning: deleting the job's staged inputs: {e:#}");
                    }
                }
                Err(e) => eprintln!("warning: deleting the job's staged inputs: {e:#}"),
            }
        }
        JobsCommand::Run { json } => {
            let c = config::load(g.config.as_deref())?;
            let runner = Runner::new(
                Arc::clone(&db),
                util::store(g)?,
                Arc::new(SystemClock),
                runner_config(&c),
            );
            let ids = runner.run_queued().await?;
            let mut jobs = Vec::new();
            for id in ids {
                jobs.push(db.job(id).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                println!("{}", header());
                for j in &jobs {
                    println!("{}", line(j));
                }
                println!("ran {} queued job(s)", jobs.len());
            }
            if jobs.iter().any(|j| j.state == JobState::Failed) {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `serve` compacts its ingest log into raw/ before the scheduler creates
/// due jobs (see [`fleetscore_jobs::scheduler::Prepare`]), so that the
/// jobs see every reading acknowledged until then, whichever process runs
/// them.
impl fleetscore_jobs::scheduler::Prepare for crate::serve::CompactNow {
    fn prepare(&self) -> fleetscore_jobs::scheduler::Preparing<'_> {
        Box::pin(async move { self.run().await.map_err(Into::into) })
    }
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
        tracing::warn!("no line per finished job on stdout: starting its thread failed: {e}");
        return;
    }
    while let Some(j) = jobs.recv().await {
        let reasons = if j.failed_models > 0 {
            match db.failures(j.id).await {
                Ok(f) => failure_counts(&f),
                Err(e) => {
                    tracing::warn!(job = j.id, "reading the job's failed models: {e}");
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
            j.models,
            j.rows,
            j.anomalies,
            j.failed_models,
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
    use fleetscore_jobs::db::Concurrency;

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
            models: 15,
            rows: 1800,
            anomalies: 12,
            failed_models: 0,
            tasks: 1,
            load_ms: 0,
            score_ms: 0,
            write_ms: 0,
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
        failed.failed_models = 15;
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
