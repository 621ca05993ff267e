//! The service's wiring (`fleetscore serve`): checks the settings, opens
//! the ingest log, rebuilds the windows, compacts what an earlier run left
//! in the log, starts the sources, the scheduler and the background tasks,
//! serves HTTP until SIGTERM or SIGINT, then stops in order: stop
//! accepting, stop the sources and the scheduler, write the windows and
//! compact the log once more, so a stopped server leaves an empty log
//! behind (unless the disk or the store fails then: the log keeps the
//! readings for the next start, and the stop is still clean).
//!
//! Each part lives in its own room: the sources in [`crate::sources`], the
//! ingestor and the windows runtime in [`crate::windows`], the compactor
//! in [`crate::compactor`], the scheduler in [`crate::scheduler`], the API
//! in [`crate::api`], the HTTP loop and its limits in [`crate::http`].

// Handlers return `Result<_, Response>` so that `?`-style early answers
// stay readable; a Response is large but the error path is not hot.
#![allow(clippy::result_large_err)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use fleetscore_ingest::Log;
use fleetscore_store::Store;
use fleetscore_stream::WindowSpec;

use crate::config::{self, Config};
use crate::http::answer as error;
use crate::metrics::{JobFigures, Metrics, Source};
use crate::windows::{Ingestor, Windows};

/// Where the server keeps and finds things, resolved by its caller.
pub struct Env {
    /// The data folder: the ingest log (`log/`) and the window checkpoint
    /// (`windows/`) live under it.
    pub data: std::path::PathBuf,
    /// The object store (raw/, windows/, predictions/, models/).
    pub store: Store,
    /// The job store.
    pub db: Arc<dyn fleetscore_jobs::db::JobStore>,
}

/// Runs the server with settings `c`. `ready` receives the bound address
/// (besides the `listening on` line); `stop`, when it fires, shuts down as
/// SIGTERM does. Unlike `serve` it prints no line per finished job: its
/// caller (`demo`) reports the jobs itself.
pub async fn run_config(
    env: Env,
    c: Config,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
) -> anyhow::Result<ExitCode> {
    serve(env, c, ready, stop, false).await
}

/// [`run_config`], printing a line for each finished job if `job_lines`.
pub async fn serve(
    env: Env,
    c: Config,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
    job_lines: bool,
) -> anyhow::Result<ExitCode> {
    check_limits(&c.server)?;
    // Before anything is opened: a refused address fails fast.
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&c.server.listen)
        .await
        .with_context(|| format!("--listen {}: not an address to listen on", c.server.listen))?
        .collect();
    for addr in &addrs {
        check_exposure(*addr, &c.auth)?;
    }
    // Bound before the log is replayed and the windows rebuilt, so that a
    // taken port fails in a moment, not after the start-up work (requests
    // arriving meanwhile wait in the backlog).
    let listener = crate::http::bind(&c.server.listen).await?;
    let Env { data, store, db } = env;
    let dir = data.join("log");
    let config = c.ingest.log.clone();
    let windows_config = c.server.windows.then(|| c.stream.clone());
    // Bytes of request bodies in memory, shared by the HTTP source and the
    // API's uploads.
    let inflight = Arc::new(crate::http::InFlight::new(
        c.server.max_inflight_bytes,
        span_duration(c.server.max_inflight_wait),
    ));
    // Checked before the log is touched: bad source settings fail fast.
    let sources = crate::sources::configured(&c, Arc::clone(&inflight), &data)?;
    // So does a Python interpreter that cannot run the runtime (when on).
    let python = if c.jobs.run_in_server {
        crate::scheduler::python_pool(&c).await?
    } else {
        None
    };
    let log = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Log::open(&dir, config)).await?
    }
    .with_context(|| format!("opening the ingest log {}", dir.display()))?;
    let r = log.recovery();
    tracing::info!(
        dir = %dir.display(),
        truncated_bytes = r.truncated_bytes,
        reason = r.reason.as_deref().unwrap_or("none"),
        next_seq = r.next_seq,
        closed_segments = log.closed_segments().len(),
        "ingest log opened"
    );
    let log = Arc::new(log);
    let windows = match windows_config {
        None => None,
        Some(config) => {
            let (log, store, data) = (Arc::clone(&log), store.clone(), data.clone());
            let specs: Vec<String> = config.windows.iter().map(|w| w.to_string()).collect();
            let (w, started) =
                tokio::task::spawn_blocking(move || Windows::start(config, log, store, &data))
                    .await??;
            tracing::info!(
                windows = %specs.join(","),
                restored_from = ?started.restored_from,
                replayed_batches = started.replayed_batches,
                replayed_readings = started.replayed_readings,
                written = started.first_flush.windows,
                checkpoint = started.first_flush.checkpoint,
                "windows rebuilt from the checkpoint and the ingest log"
            );
            Some(w)
        }
    };
    let ingestor = Arc::new(Ingestor::new(Arc::clone(&log), windows));
    let conn_stats = Arc::new(crate::http::ConnStats::default());
    let metrics = {
        let mut m = Metrics::new();
        m.watch_log(Arc::clone(&log));
        if let Some(w) = ingestor.windows() {
            m.watch_windows(Arc::clone(w.stats()));
        }
        m.watch_connections(Arc::clone(&conn_stats), Arc::clone(&inflight));
        for source in &sources {
            m.register_source(Source::new(source.name()));
        }
        Arc::new(m)
    };
    let mut compactor = crate::compactor::Compactor::new(
        Arc::clone(&ingestor),
        store.clone(),
        Arc::clone(&metrics),
    );
    compactor
        .run(false)
        .await
        .context("compacting the ingest log at start-up")?;
    // Requests queue until the background task (below) takes them.
    let (compact_now, compact_requests) = crate::compactor::CompactNow::channel();

    let scrape = Arc::new(Scrape {
        db: Some(Arc::clone(&db)),
        registry: Some(fleetscore_store::Registry::new(store.clone())),
        metrics: Arc::clone(&metrics),
    });
    let dead_letters = Arc::new(crate::deadletter::DeadLetters::new(
        store.clone(),
        Arc::clone(&metrics),
        &c.ingest.dead_letters,
    ));
    let health = Arc::new(crate::sources::Health::default());
    let ctx = crate::sources::Context {
        ingestor: Arc::clone(&ingestor),
        metrics: Arc::clone(&metrics),
        dead_letters: Arc::clone(&dead_letters),
        health: Arc::clone(&health),
    };
    let specs = c.schedule_specs()?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let api = Arc::new(crate::api::Api {
        db: Arc::clone(&db),
        store: store.clone(),
        registry: fleetscore_store::Registry::new(store.clone()),
        schedules: specs.clone(),
        jobs: c.jobs.clone(),
        admin_tokens: c.auth.admin_tokens.clone(),
        ingest_tokens: c.auth.ingest_tokens.clone(),
        protect_reads: c.auth.protect_reads,
        query_timeout: span_duration(c.server.query_timeout),
        max_model_bytes: c.server.max_model_bytes,
        log: Some(Arc::clone(&log)),
        inflight: Arc::clone(&inflight),
        uploads: tokio::sync::Semaphore::new(crate::api::PARALLEL_UPLOADS),
        compact: Some(compact_now.clone()),
        wake: Some(Arc::clone(&wake)),
        dead_letters: Some(Arc::clone(&dead_letters)),
        metrics: Some(Arc::clone(&metrics)),
        sources: Some(Arc::clone(&health)),
    });
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(scrape);
    for source in &sources {
        if let Some(routes) = source.routes(&ctx) {
            router = router.merge(routes);
        }
    }
    let router = router
        .merge(crate::api::routes(api))
        .merge(crate::dashboard::routes())
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&metrics),
            crate::http::observe,
        ));

    let signal = shutdown_signal()?;
    let shutdown = async move {
        match stop {
            Some(stop) => {
                tokio::select! {
                    _ = signal => {}
                    _ = stop => {}
                }
            }
            None => signal.await,
        }
    };
    let addr: SocketAddr = listener.local_addr()?;
    let nofile = crate::http::raise_fd_limit();
    let limits = crate::http::Limits {
        max_connections: crate::http::effective_limit(c.server.max_connections, nofile),
        header_timeout: span_duration(c.server.header_timeout),
        body_timeout: span_duration(c.server.body_timeout),
        idle_timeout: span_duration(c.server.idle_timeout),
        drain_timeout: Duration::from_secs(10),
    };
    if limits.max_connections < c.server.max_connections {
        tracing::warn!(
            configured = c.server.max_connections,
            in_force = limits.max_connections,
            open_files = nofile.unwrap_or(0),
            "the open-file limit allows fewer connections than configured; raise it (ulimit -n) to allow more"
        );
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, "serving");
    if let Some(ready) = ready {
        let _ = ready.send(addr);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut running: Vec<tokio::task::JoinHandle<()>> = sources
        .into_iter()
        .filter_map(|source| source.start(ctx.clone(), stop_rx.clone()))
        .collect();
    running.push(tokio::spawn(
        Arc::clone(&dead_letters).sweep_hourly(stop_rx.clone()),
    ));
    let clock: Arc<dyn fleetscore_jobs::schedule::Clock> =
        Arc::new(fleetscore_jobs::schedule::SystemClock);
    let (reports, finished) = tokio::sync::mpsc::unbounded_channel();
    let printer = job_lines
        .then(|| tokio::spawn(crate::scheduler::print_finished(Arc::clone(&db), finished)));
    let scheduler = {
        let mut runner = fleetscore_jobs::run::Runner::new(
            Arc::clone(&db),
            store.clone(),
            Arc::clone(&clock),
            crate::scheduler::runner_config(&c),
        )
        .with_python(python.clone());
        if job_lines {
            runner = runner.with_reports(reports);
        }
        let every = Duration::from_nanos(c.jobs.tick_interval.as_nanos().max(1_000_000) as u64);
        let run_jobs = c.jobs.run_in_server;
        tracing::info!(
            schedules = %specs.iter().map(|s| format!("{} ({})", s.name, s.cron)).collect::<Vec<_>>().join(", "),
            db = db.url(),
            runs_jobs = run_jobs,
            "scheduler started"
        );
        let mut scheduler = fleetscore_jobs::scheduler::Scheduler::new(db, specs, clock, every)
            .with_prepare(Arc::new(compact_now))
            .with_wake(wake);
        if run_jobs {
            scheduler = scheduler.with_runner(runner);
        }
        // On a thread of its own with a one-thread runtime: the runner's
        // futures are not `Send` (object_store streams), and scoring is
        // CPU work on the blocking pool anyway.
        let stop = stop_rx.clone();
        std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(scheduler.run(stop)),
                    Err(e) => tracing::error!(error = %e, "the scheduler could not start"),
                }
            })
            .context("starting the scheduler thread")?
    };
    let background = crate::compactor::spawn_background(
        compactor,
        span_duration(c.server.window_flush_interval),
        span_duration(c.ingest.compact_interval),
        compact_requests,
        stop_rx,
    );

    crate::http::serve(listener, router, limits, conn_stats, shutdown).await;
    tracing::info!("stopped accepting requests; writing windows and compacting the ingest log");
    let _ = stop_tx.send(true);
    // A Python model may run for its whole time limit: its processes are
    // stopped now, and its task is tried again after the restart.
    if let Some(pool) = &python {
        pool.shutdown();
    }
    let mut compactor = background.await.context("the background task failed")?;
    let _ = tokio::task::spawn_blocking(move || scheduler.join()).await;
    // The runner is gone with the scheduler: the last lines are printed.
    if let Some(printer) = printer {
        let _ = printer.await;
    }
    for source in running {
        let _ = source.await;
    }
    // What cannot be compacted now (a full disk, an unreachable store)
    // stays in the log, durable, and is compacted at the next start:
    // nothing acknowledged is lost, so this is a clean stop.
    if let Err(e) = compactor.run(true).await {
        tracing::warn!(
            error = format!("{e:#}"),
            "compacting the ingest log on shutdown failed; the log keeps the readings and the next start compacts them"
        );
    }
    let left = log.closed_segments().len();
    tracing::info!(
        segments_left = left,
        checkpoint = ingestor.retain_from(),
        "stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// `1m` (tumbling) or `5m/1m` (size/hop).
pub fn parse_window(text: &str) -> anyhow::Result<WindowSpec> {
    let spec = match text.split_once('/') {
        None => WindowSpec::tumbling(
            text.trim()
                .parse()
                .with_context(|| format!("--window {text:?}"))?,
        ),
        Some((size, hop)) => WindowSpec::hopping(
            size.trim()
                .parse()
                .with_context(|| format!("--window {text:?}: size"))?,
            hop.trim()
                .parse()
                .with_context(|| format!("--window {text:?}: hop"))?,
        ),
    };
    spec.validate()
        .with_context(|| format!("--window {text:?}"))?;
    Ok(spec)
}

/// The `[server]` limits, checked before anything starts.
fn check_limits(s: &config::ServerConfig) -> anyhow::Result<()> {
    for (name, span) in [
        ("header_timeout", s.header_timeout),
        ("body_timeout", s.body_timeout),
        ("idle_timeout", s.idle_timeout),
        ("query_timeout", s.query_timeout),
    ] {
        if span.as_nanos() < 1_000_000 {
            anyhow::bail!("invalid config: [server] {name} must be at least 1ms, not {span}");
        }
    }
    if s.max_connections == 0 {
        anyhow::bail!("invalid config: [server] max_connections must be at least 1");
    }
    if s.max_inflight_bytes / crate::sources::http::PARSE_FACTOR < s.max_body_bytes {
        anyhow::bail!(
            "invalid config: [server] max_inflight_bytes ({}) must be at least {} times max_body_bytes ({}): a body holds that much room while its readings are parsed and stored, so a body of the largest size could never be read",
            s.max_inflight_bytes,
            crate::sources::http::PARSE_FACTOR,
            s.max_body_bytes
        );
    }
    Ok(())
}

/// A config span as a `Duration` (negative spans count as zero).
pub fn span_duration(s: fleetscore_stream::Span) -> Duration {
    Duration::from_nanos(u64::try_from(s.as_nanos()).unwrap_or(0))
}

/// Refuses to serve on a non-loopback address without admin tokens (anyone
/// reaching the port could upload models and trigger jobs) unless the
/// operator allowed it explicitly.
fn check_exposure(addr: SocketAddr, auth: &config::AuthConfig) -> anyhow::Result<()> {
    let has_admin = auth.admin_tokens.iter().any(|t| !t.is_empty());
    if addr.ip().is_loopback() || has_admin {
        return Ok(());
    }
    if auth.allow_unauthenticated_admin {
        tracing::warn!(
            %addr,
            "serving on a non-loopback address without admin tokens: anyone who can reach it may upload models and trigger jobs"
        );
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve on {addr} without admin tokens: anyone who can reach it could upload models and trigger jobs. \
         Set admin tokens ([auth] admin_tokens, or FLEETSCORE__AUTH__ADMIN_TOKENS='[\"<token>\"]'), \
         listen on a loopback address (--listen 127.0.0.1:8080), \
         or accept the risk with --allow-unauthenticated-admin"
    )
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called (before the address is announced), so a signal sent right after
/// start-up is not lost.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Liveness: answers `ok` while the process serves
#[utoipa::path(
    get, path = "/healthz", tag = "service",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")),
    extensions(("x-auth" = json!("open"))),
)]
async fn healthz() -> &'static str {
    "ok"
}

/// What `/metrics` reads besides the server's own figures.
struct Scrape {
    metrics: Arc<Metrics>,
    /// For the job figures.
    db: Option<Arc<dyn fleetscore_jobs::db::JobStore>>,
    /// For the model count.
    registry: Option<fleetscore_store::Registry>,
}

/// Prometheus metrics (text exposition format)
#[utoipa::path(
    get, path = "/metrics", tag = "service", operation_id = "metrics",
    responses((status = 200, description = "Counters, gauges and histograms; see the README's `/metrics` list.",
        body = String, content_type = "text/plain")),
    extensions(("x-auth" = json!("open"))),
)]
async fn metrics_text(State(app): State<Arc<Scrape>>) -> Response {
    let mut figures = JobFigures::default();
    if let Some(db) = &app.db {
        figures.jobs = db.stats().await.ok();
        figures.pending_work = db.pending(crate::now_ns()).await.ok();
    }
    if let Some(r) = &app.registry {
        figures.models = r.index().await.ok().map(|i| i.models.len());
    }
    match app.metrics.render(figures) {
        Ok(body) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing the metrics failed: {e}"),
        ),
    }
}
