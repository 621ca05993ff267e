//! `fleetscore backfill` and `fleetscore jobs …`: the job store from the
//! command line.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fleetscore_core::{format_rfc3339, format_ts, parse_ts};
use fleetscore_jobs::backfill::WindowJobs;
use fleetscore_jobs::db::{JobFilter, JobKind, JobRecord, JobState, Threshold};
use fleetscore_jobs::run::Runner;
use fleetscore_jobs::schedule::SystemClock;
use serde_json::json;
use tracing::Instrument;

use crate::cli::{BackfillArgs, Global, JobsCommand, WorkerArgs};
use crate::config;
use crate::util;

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
    let mut rc = fleetscore_server::scheduler::runner_config(&c);
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
    let python = fleetscore_server::scheduler::python_pool(&c).await?;
    let mut runner = Runner::new(
        Arc::clone(&db),
        store.clone(),
        Arc::new(SystemClock),
        rc.clone(),
    )
    .with_python(python.clone());
    // On PostgreSQL, new work is announced (LISTEN/NOTIFY): an idle worker
    // wakes at once, and polls only as a fallback.
    if db.url().starts_with("postgres") {
        match fleetscore_jobs::db::listen_for_work(db.connection_url()).await {
            Ok(wake) => runner = runner.with_wake(wake),
            Err(e) => tracing::warn!(
                error = %e,
                poll_ms = rc.poll.as_millis() as u64,
                "not listening for new work; polling instead"
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
    let (tx, rx) = tokio::sync::watch::channel(false);
    let probes = match &args.listen {
        Some(listen) => {
            let (addr, task) = fleetscore_server::probe::serve_probes(
                listen,
                Arc::clone(&db),
                store.clone(),
                rx.clone(),
            )
            .await?;
            eprintln!(
                "worker {}: /healthz, /readyz and /metrics on {addr}",
                runner.owner()
            );
            tracing::info!(%addr, "probes listening");
            Some(task)
        }
        None => None,
    };
    // Every log line of the worker's jobs and tasks names the worker.
    let span = tracing::info_span!("worker", worker = %runner.owner());
    if args.exit_when_idle {
        let ids = runner.run_queued().instrument(span).await?;
        eprintln!(
            "worker {}: no work left; finished {} job(s)",
            runner.owner(),
            ids.len()
        );
        let _ = tx.send(true);
        if let Some(task) = probes {
            let _ = task.await;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let signal = fleetscore_server::serve::shutdown_signal()?;
    let stop = tx.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("stopping: no new work; the current task may finish");
        let _ = stop.send(true);
    });
    let worked = runner.work(rx, grace).instrument(span).await;
    let _ = tx.send(true);
    if let Some(task) = probes {
        let _ = task.await;
    }
    // Past the grace, a Python model still running is stopped (its task
    // was handed back).
    if let Some(pool) = &python {
        pool.shutdown();
    }
    worked?;
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
        j.counts.models,
        j.counts.rows,
        j.counts.anomalies,
        j.counts.failed_models,
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
    let runner = Runner::new(
        Arc::clone(&db),
        store,
        clock,
        fleetscore_server::scheduler::runner_config(&c),
    )
    .with_python(fleetscore_server::scheduler::python_pool(&c).await?);
    let pb = util::progress(g, ids.len() as u64, "backfill");
    let mut jobs = Vec::new();
    for id in &ids {
        // This very job (others may be queued by a running server); its
        // tasks may also be run by workers sharing the job store.
        let span = tracing::info_span!("backfill", job_id = *id);
        jobs.push(runner.run_job(*id).instrument(span).await?);
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
        let rows: u64 = jobs.iter().map(|j| j.counts.rows).sum();
        let anomalies: u64 = jobs.iter().map(|j| j.counts.anomalies).sum();
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
                    job.counts.load_ms,
                    job.counts.score_ms,
                    job.counts.write_ms,
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
                        t.counts.rows,
                        t.counts.load_ms,
                        t.counts.write_ms,
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
                        t.counts.models.max(t.n_keys),
                        t.first_key,
                        t.last_key,
                        t.counts.rows,
                        t.counts.anomalies,
                        t.counts.failed_models,
                        t.counts.score_ms,
                        t.counts.write_ms,
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
            let keys = store
                .list(&fleetscore_store::lake::work::logs_prefix(id))
                .await?;
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
            // The job's own span (its phases' runners never send it).
            fleetscore_jobs::trace::ended(&j);
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
                fleetscore_server::scheduler::runner_config(&c),
            )
            .with_python(fleetscore_server::scheduler::python_pool(&c).await?);
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
