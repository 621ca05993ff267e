//! `fleetscore serve`: the HTTP ingest endpoints (and the MQTT source) over
//! the durable log, the streaming windows, `/metrics`, and the compactor
//! that moves closed log segments into the store's raw/ partitions.
//!
//! A request is answered with success only after [`Log::append`] returned
//! `Ok`, i.e. once its readings are durable; then the batch goes to the
//! window thread (see [`crate::windows`] for how windows are written
//! exactly once). Every `--compact-interval` the compactor closes the
//! active log segment ([`Log::roll`]), flushes the windows, writes each
//! closed segment as one Parquet object per UTC hour, named
//! `raw/date=…/hour=…/part-<id>.parquet` where `<id>` derives from the
//! segment's first batch (its sequence number and content) and the
//! partition, and deletes the segment once all its objects are stored and
//! the window checkpoint is past it. A re-run after a crash overwrites the
//! same objects instead of duplicating them. Jobs read raw/, so the same
//! compaction also runs on demand ([`CompactNow`]) before a schedule
//! creates its due jobs and before `POST /v1/jobs` (or a retry) queues
//! one: a job sees every reading acknowledged before it was created,
//! wherever it runs, not only those of the last timed compaction. On
//! SIGTERM or SIGINT the
//! server stops accepting, then does the same once more, so a stopped
//! server leaves an empty log behind (unless the disk or the store fails
//! then: the log keeps the readings for the next start, and the stop is
//! still clean).
//!
//! Requests are bounded so that no client can take the server from the
//! others: connections and timeouts in [`crate::http`]; bytes of bodies in
//! memory across requests ([`crate::http::InFlight`]); a log that cannot
//! write (a full disk) answers 507/503 with `Retry-After` and recovers by
//! itself; an `Idempotency-Key` makes a resent batch a duplicate instead of
//! a second copy.

// Handlers return `Result<_, Response>` so that `?`-style early answers
// stay readable; a Response is large but the error path is not hot.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetscore_codecs::{
    parse_csv_body, parse_json, parse_line_protocol, Batch, BatchError, CsvBodyConfig,
    LineProtocolConfig, Location, Precision, Readings,
};
use fleetscore_ingest::{Log, LogError, Seq};
use fleetscore_store::{raw_objects, Store};
use fleetscore_stream::WindowSpec;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cli::{Global, ServeArgs};
use crate::config::{self, Config};
use crate::metrics::{Metrics, Source};
use crate::util;
use crate::windows::{Ingestor, Windows};

struct App {
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
    /// Accepted bearer tokens; empty: none needed.
    tokens: Vec<String>,
    max_body: usize,
    /// Bytes of request bodies in memory, across requests.
    inflight: Arc<crate::http::InFlight>,
    /// The server loop's connection figures.
    conn_stats: Arc<crate::http::ConnStats>,
    line_protocol: LineProtocolConfig,
    csv: CsvBodyConfig,
    /// For the job figures on /metrics.
    db: Option<Arc<dyn fleetscore_jobs::db::JobStore>>,
    /// For the model count on /metrics.
    registry: Option<fleetscore_store::Registry>,
}

type Query2 = HashMap<String, String>;

/// The config file and environment, with the flags applied on top.
pub fn settings(g: &Global, args: &ServeArgs) -> anyhow::Result<Config> {
    let mut c = config::load(g.config.as_deref())?;
    let a = args;
    if a.no_workers {
        c.jobs.run_in_server = false;
    }
    if let Some(v) = &a.listen {
        c.server.listen = v.clone();
    }
    if let Some(t) = a.ingest_token.as_ref().filter(|t| !t.is_empty()) {
        c.auth.ingest_tokens.push(t.clone());
    }
    if let Some(v) = a.max_body_bytes {
        c.server.max_body_bytes = v;
    }
    if let Some(v) = a.compact_interval {
        c.ingest.compact_interval = v;
    }
    if let Some(v) = a.log_segment_bytes {
        c.ingest.log.max_segment_bytes = v;
    }
    if let Some(v) = &a.mqtt {
        c.mqtt.url = Some(v.clone());
    }
    if let Some(v) = &a.mqtt_topic {
        c.mqtt.topic = v.clone();
    }
    if let Some(v) = &a.mqtt_shared_group {
        c.mqtt.shared_group = Some(v.clone());
    }
    if let Some(v) = &a.mqtt_client_id {
        c.mqtt.client_id = Some(v.clone());
    }
    if let Some(v) = &a.lp_device_tag {
        c.ingest.line_protocol.device_tag = v.clone();
    }
    if a.lp_prefix_measurement {
        c.ingest.line_protocol.prefix_measurement = true;
    }
    if !a.window.is_empty() {
        c.stream.windows = a
            .window
            .iter()
            .map(|w| parse_window(w))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(v) = a.out_of_order {
        c.stream.out_of_order = v;
    }
    if let Some(v) = a.allowed_lateness {
        c.stream.allowed_lateness = v;
    }
    if let Some(v) = a.late_policy {
        c.stream.late_policy = v.into();
    }
    if let Some(v) = a.watermark {
        c.stream.watermark = v.into();
    }
    if let Some(v) = a.window_flush_interval {
        c.server.window_flush_interval = v;
    }
    if a.no_windows {
        c.server.windows = false;
    }
    if a.allow_unauthenticated_admin {
        c.auth.allow_unauthenticated_admin = true;
    }
    c.stream.validate().context("window settings")?;
    for (what, span) in [
        ("compact interval", c.ingest.compact_interval),
        ("window flush interval", c.server.window_flush_interval),
    ] {
        if span.as_nanos() < 1_000_000 {
            anyhow::bail!("the {what} must be at least 1ms, not {span}");
        }
    }
    Ok(c)
}

/// `fleetscore serve`: prints `listening on ADDR`, then a line for each
/// job it finishes.
pub async fn run(g: &Global, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let c = settings(g, &args)?;
    serve(g, c, None, None, true).await
}

/// Runs the server with settings `c`. `ready` receives the bound address
/// (besides the `listening on` line); `stop`, when it fires, shuts down as
/// SIGTERM does. Unlike `serve` it prints no line per finished job: its
/// caller (`demo`) reports the jobs itself.
pub async fn run_config(
    g: &Global,
    c: Config,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
) -> anyhow::Result<ExitCode> {
    serve(g, c, ready, stop, false).await
}

/// [`run_config`], printing a line for each finished job if `job_lines`.
async fn serve(
    g: &Global,
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
    let listener = util::bind(&c.server.listen).await?;
    let store = util::store(g)?;
    let dir = g.data.join("log");
    let config = c.ingest.log.clone();
    let windows_config = c.server.windows.then(|| c.stream.clone());
    // Checked before the log is touched: bad MQTT settings fail fast.
    let mqtt_source = match c.mqtt.url.clone() {
        Some(url) => {
            let config = crate::mqtt::MqttConfig {
                url,
                topic: c.mqtt.topic.clone(),
                shared_group: c.mqtt.shared_group.clone(),
                client_id: c.mqtt.client_id.clone(),
            };
            Some(crate::mqtt::check(config)?)
        }
        None => None,
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
            let (log, store, data) = (Arc::clone(&log), store.clone(), g.data.clone());
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
    let metrics = Arc::new(Metrics::default());
    let conn_stats = Arc::new(crate::http::ConnStats::default());
    let inflight = Arc::new(crate::http::InFlight::new(
        c.server.max_inflight_bytes,
        span_duration(c.server.max_inflight_wait),
    ));
    let mut compactor = Compactor {
        ingestor: Arc::clone(&ingestor),
        store: store.clone(),
        metrics: Arc::clone(&metrics),
        in_raw: BTreeSet::new(),
    };
    compactor
        .run(false)
        .await
        .context("compacting the ingest log at start-up")?;
    // Requests queue until the background task (below) takes them.
    let (compact_now, compact_requests) = CompactNow::channel();

    let db = util::job_store(g).await?;
    let app = Arc::new(App {
        db: Some(Arc::clone(&db)),
        registry: Some(fleetscore_store::Registry::new(store.clone())),
        ingestor: Arc::clone(&ingestor),
        metrics: Arc::clone(&metrics),
        tokens: c
            .auth
            .ingest_tokens
            .iter()
            .chain(&c.auth.admin_tokens)
            .filter(|t| !t.is_empty())
            .cloned()
            .collect(),
        max_body: c.server.max_body_bytes,
        conn_stats: Arc::clone(&conn_stats),
        inflight: Arc::clone(&inflight),
        line_protocol: c.ingest.line_protocol.clone(),
        csv: c.ingest.csv.clone(),
    });
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
    });
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .route("/write", post(write_v1))
        .route("/api/v2/write", post(write_v2))
        .route("/v1/readings", post(readings))
        .with_state(app)
        .merge(crate::api::routes(api))
        .merge(crate::dashboard::routes());

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
    let mqtt = mqtt_source.map(|source| {
        tokio::spawn(source.run(Arc::clone(&ingestor), Arc::clone(&metrics), stop_rx.clone()))
    });
    let clock: Arc<dyn fleetscore_jobs::schedule::Clock> =
        Arc::new(fleetscore_jobs::schedule::SystemClock);
    let (reports, finished) = tokio::sync::mpsc::unbounded_channel();
    let printer =
        job_lines.then(|| tokio::spawn(crate::jobs_cmd::print_finished(Arc::clone(&db), finished)));
    let scheduler = {
        let mut runner = fleetscore_jobs::run::Runner::new(
            Arc::clone(&db),
            store.clone(),
            Arc::clone(&clock),
            crate::jobs_cmd::runner_config(&c),
        );
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
                    Ok(rt) => rt.block_on(crate::jobs_cmd::scheduler_loop(
                        db,
                        run_jobs.then_some(runner),
                        specs,
                        every,
                        clock,
                        crate::jobs_cmd::Hooks {
                            compact: Some(compact_now),
                            wake: Some(wake),
                        },
                        stop,
                    )),
                    Err(e) => tracing::error!("the scheduler could not start: {e}"),
                }
            })
            .context("starting the scheduler thread")?
    };
    let background = spawn_background(
        compactor,
        span_duration(c.server.window_flush_interval),
        span_duration(c.ingest.compact_interval),
        compact_requests,
        stop_rx,
    );

    crate::http::serve(listener, router, limits, conn_stats, shutdown).await;
    tracing::info!("stopped accepting requests; writing windows and compacting the ingest log");
    let _ = stop_tx.send(true);
    let mut compactor = background.await.context("the background task failed")?;
    let _ = tokio::task::spawn_blocking(move || scheduler.join()).await;
    // The runner is gone with the scheduler: the last lines are printed.
    if let Some(printer) = printer {
        let _ = printer.await;
    }
    if let Some(mqtt) = mqtt {
        let _ = mqtt.await;
    }
    // What cannot be compacted now (a full disk, an unreachable store)
    // stays in the log, durable, and is compacted at the next start:
    // nothing acknowledged is lost, so this is a clean stop.
    if let Err(e) = compactor.run(true).await {
        tracing::warn!(
            "compacting the ingest log on shutdown failed; the log keeps the readings and the next start compacts them: {e:#}"
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
    if s.max_inflight_bytes / PARSE_FACTOR < s.max_body_bytes {
        anyhow::bail!(
            "invalid config: [server] max_inflight_bytes ({}) must be at least {PARSE_FACTOR} times max_body_bytes ({}): a body holds that much room while its readings are parsed and stored, so a body of the largest size could never be read",
            s.max_inflight_bytes,
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

async fn flush_windows(ingestor: &Arc<Ingestor>) -> anyhow::Result<()> {
    if ingestor.windows().is_none() {
        return Ok(());
    }
    let ing = Arc::clone(ingestor);
    let out = tokio::task::spawn_blocking(move || match ing.windows() {
        Some(w) => w.flush(),
        None => Ok(Default::default()),
    })
    .await??;
    if out.windows > 0 {
        tracing::info!(
            windows = out.windows,
            objects = out.objects,
            checkpoint = out.checkpoint,
            "windows written"
        );
    }
    Ok(())
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

// ---------------------------------------------------------------- compaction

/// A request for a compaction, answered with its outcome.
type CompactRequest = tokio::sync::oneshot::Sender<Result<(), Arc<anyhow::Error>>>;

/// Asks the background task of `serve` to compact the ingest log into
/// raw/ now, and waits for the outcome: what makes a job see every reading
/// acknowledged before it was created, not only those of the last timed
/// compaction (`[ingest] compact_interval`). Cheap to clone. One
/// compaction runs at a time; requests made while one runs share the next,
/// so each is answered by a compaction that began after it was made.
#[derive(Clone)]
pub struct CompactNow {
    requests: tokio::sync::mpsc::Sender<CompactRequest>,
}

impl CompactNow {
    /// A handle, and the receiving end for [`spawn_background`].
    fn channel() -> (CompactNow, tokio::sync::mpsc::Receiver<CompactRequest>) {
        let (requests, receiver) = tokio::sync::mpsc::channel(256);
        (CompactNow { requests }, receiver)
    }

    /// Compacts now; `Err` says why it could not (the store or the disk
    /// failed: the readings stay in the log; or the server is stopping).
    pub async fn run(&self) -> anyhow::Result<()> {
        let stopping = || {
            anyhow::anyhow!(
                "the server is stopping (it compacts its ingest log as it stops, or at the next start)"
            )
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.send(reply).await.map_err(|_| stopping())?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!(
                "compacting the ingest log into raw/ failed: {e:#}"
            )),
            Err(_) => Err(stopping()),
        }
    }
}

/// The background task of `serve`: writes the closed windows every
/// `flush_every`, and compacts the ingest log every `compact_every` and
/// whenever a [`CompactNow`] asks, until `stop` changes; returns the
/// compactor (for the last compaction, at shutdown).
fn spawn_background(
    mut compactor: Compactor,
    flush_every: Duration,
    compact_every: Duration,
    mut requests: tokio::sync::mpsc::Receiver<CompactRequest>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Compactor> {
    tokio::spawn(async move {
        let ingestor = Arc::clone(&compactor.ingestor);
        let mut flush_tick = tokio::time::interval(flush_every);
        let mut compact_tick = tokio::time::interval(compact_every);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        compact_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush_tick.tick().await;
        compact_tick.tick().await;
        loop {
            tokio::select! {
                _ = flush_tick.tick() => {
                    if let Err(e) = flush_windows(&ingestor).await {
                        tracing::error!("writing windows failed (retried at the next flush): {e:#}");
                    }
                }
                _ = compact_tick.tick() => {
                    let _ = compactor.run_counted().await;
                }
                Some(first) = requests.recv() => {
                    // Every request made so far shares this compaction.
                    let mut waiting = vec![first];
                    while let Ok(more) = requests.try_recv() {
                        waiting.push(more);
                    }
                    let outcome = compactor.run_counted().await.map_err(Arc::new);
                    for w in waiting {
                        let _ = w.send(outcome.clone());
                    }
                    // The log was just compacted: the cadence starts again.
                    compact_tick.reset();
                }
                _ = stop.changed() => break,
            }
        }
        compactor
    })
}

/// Moves closed log segments into raw/ and deletes those whose batches are
/// all behind the window checkpoint.
struct Compactor {
    ingestor: Arc<Ingestor>,
    store: Store,
    metrics: Arc<Metrics>,
    /// Closed segments already written to raw/ but kept for the windows.
    in_raw: BTreeSet<Seq>,
}

impl Compactor {
    /// [`Compactor::run`] with a roll, counting and logging a failure (the
    /// next compaction retries it).
    async fn run_counted(&mut self) -> anyhow::Result<()> {
        let outcome = self.run(true).await;
        if let Err(e) = &outcome {
            self.metrics
                .compaction_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!("compaction failed (retried later): {e:#}");
        }
        outcome
    }

    /// With `roll`, first closes the active segment (so a quiet log still
    /// reaches raw/) and flushes the windows (so the checkpoint covers it).
    async fn run(&mut self, roll: bool) -> anyhow::Result<()> {
        let log = Arc::clone(self.ingestor.log());
        if roll {
            let l = Arc::clone(&log);
            tokio::task::spawn_blocking(move || l.roll()).await??;
            flush_windows(&self.ingestor).await?;
        }
        let retain_from = self.ingestor.retain_from();
        for seg in log.closed_segments() {
            if !self.in_raw.contains(&seg.first_seq) {
                let objects = if seg.end_seq > seg.first_seq {
                    let log = Arc::clone(&log);
                    let (first, end) = (seg.first_seq, seg.end_seq);
                    tokio::task::spawn_blocking(move || segment_objects(&log, first, end)).await??
                } else {
                    Segment::default()
                };
                for (key, data) in &objects.objects {
                    self.store.put(key, data.clone()).await?;
                }
                let m = &self.metrics;
                m.raw_objects
                    .fetch_add(objects.objects.len() as u64, Ordering::Relaxed);
                m.readings_compacted
                    .fetch_add(objects.readings as u64, Ordering::Relaxed);
                tracing::info!(
                    segment = %seg.path.display(),
                    readings = objects.readings,
                    "compacted a closed log segment into raw/"
                );
                self.in_raw.insert(seg.first_seq);
            }
            if seg.end_seq <= retain_from {
                log.remove_segment(seg.first_seq)?;
                self.in_raw.remove(&seg.first_seq);
                self.metrics
                    .segments_compacted
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Segment {
    objects: Vec<(String, Vec<u8>)>,
    readings: usize,
}

/// The raw/ objects of the batches `from..end` of a closed segment.
fn segment_objects(log: &Log, from: Seq, end: Seq) -> anyhow::Result<Segment> {
    let mut batches: Vec<Readings> = Vec::new();
    let mut origin: Option<[u8; 32]> = None;
    for batch in log.replay(from) {
        let batch = batch?;
        if batch.seq >= end {
            break;
        }
        if origin.is_none() {
            // Names the segment: its first batch, by number and content.
            let mut h = Sha256::new();
            h.update(b"fleetscore ingest log segment\0");
            h.update(batch.seq.to_le_bytes());
            for r in batch.readings.iter() {
                h.update(r.ts.to_le_bytes());
                h.update(r.device.as_bytes());
                h.update([0]);
                h.update(r.tag.as_bytes());
                h.update([0]);
                h.update(r.value.to_bits().to_le_bytes());
            }
            origin = Some(h.finalize().into());
        }
        let last = batch.seq + 1 >= end;
        batches.push(batch.readings);
        if last {
            break;
        }
    }
    let Some(origin) = origin else {
        return Ok(Segment::default());
    };
    let readings = Readings::concat(&batches.iter().collect::<Vec<_>>());
    drop(batches);
    let objects = raw_objects(&readings, &origin)?;
    Ok(Segment {
        objects,
        readings: readings.len(),
    })
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let log = app.ingestor.log().stats();
    let mut body = app
        .metrics
        .render(&log, app.ingestor.windows().map(|w| w.stats().as_ref()));
    let jobs = match &app.db {
        Some(db) => db.stats().await.ok(),
        None => None,
    };
    let models = match &app.registry {
        Some(r) => r.index().await.ok().map(|i| i.models.len()),
        None => None,
    };
    body.push_str(&app.metrics.render_jobs(jobs.as_ref(), models));
    body.push_str(&render_limits(&app));
    if let Some(db) = &app.db {
        if let Ok(n) = db.pending(crate::util::now_ns()).await {
            body.push_str(
                "# HELP fleetscore_pending_work Tasks waiting for a worker (queued, or with an expired lease) plus jobs waiting to be planned.\n\
                 # TYPE fleetscore_pending_work gauge\n",
            );
            body.push_str(&format!("fleetscore_pending_work {n}\n"));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The connection and in-flight figures of `/metrics`.
fn render_limits(app: &App) -> String {
    use std::fmt::Write as _;
    let c = &app.conn_stats;
    let health = app.ingestor.log().health();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut o = String::new();
    for (name, kind, help, v) in [
        ("fleetscore_http_connections", "gauge", "Client connections open now.", load(&c.open)),
        ("fleetscore_http_connection_limit", "gauge", "Most client connections at once ([server] max_connections, bounded by the open-file limit).", load(&c.limit)),
        ("fleetscore_http_connections_accepted_total", "counter", "Client connections accepted.", load(&c.accepted)),
        ("fleetscore_http_connections_refused_total", "counter", "Connections answered 503 because every connection slot was busy with a request.", load(&c.refused)),
        ("fleetscore_http_connections_evicted_total", "counter", "Connections waiting for a request that were closed to make room for a new one.", load(&c.evicted)),
        ("fleetscore_http_connections_idle_closed_total", "counter", "Connections closed after [server] idle_timeout without a byte either way.", load(&c.idle_closed)),
        ("fleetscore_log_writable", "gauge", "1 while the ingest log can write; 0 after a failed write until it recovers by itself (appends get 503/507 meanwhile).", u64::from(health.writable)),
        ("fleetscore_log_idempotency_keys", "gauge", "Idempotency keys the ingest log remembers now.", app.ingestor.log().stats().keys),
        ("fleetscore_http_inflight_bytes", "gauge", "Bytes of request bodies held in memory now (bounded by [server] max_inflight_bytes).", app.inflight.held_bytes()),
        ("fleetscore_http_inflight_waits_total", "counter", "Requests that waited for room under [server] max_inflight_bytes.", load(&app.inflight.waited)),
        ("fleetscore_http_inflight_refused_total", "counter", "Requests answered 503 after waiting [server] max_inflight_wait for room.", load(&app.inflight.refused)),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    o
}

// ---------------------------------------------------------------- handlers

use crate::http::answer as error;

fn refused(e: &BatchError) -> Response {
    let rejections: Vec<_> = e
        .errors
        .iter()
        .map(|r| match r.at {
            Location::Line(n) => json!({"line": n, "reason": r.reason}),
            Location::Element(i) => json!({"element": i, "reason": r.reason}),
            Location::Body => json!({"reason": r.reason}),
        })
        .collect();
    let body = json!({
        "error": format!(
            "batch refused, nothing stored: {} problem(s); fix them and resend the whole batch",
            e.total()
        ),
        "rejections": rejections,
        "omitted": e.omitted,
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn authorized(app: &App, headers: &HeaderMap, query: &Query2) -> Result<(), Response> {
    if app.tokens.is_empty() {
        return Ok(());
    }
    let given = crate::api::bearer(headers).or(query.get("p").map(String::as_str));
    match given {
        Some(t) if crate::api::any_of(t, &app.tokens) => Ok(()),
        Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong ingest token")),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "an ingest token is required: Authorization: Bearer <token>",
        )),
    }
}

use crate::http::Held;

/// The room an ingest request holds under `[server] max_inflight_bytes`,
/// per byte of its (decompressed) body: the body itself and the readings
/// parsed from it, which take about three times its bytes of line
/// protocol (48 concurrent 30 MB bodies peaked at about 110 MB each).
pub const PARSE_FACTOR: usize = 4;

/// Reads (and decompresses) a body within the size limit and the body
/// timeout, holding room for it under the in-flight limit.
async fn read_body(app: &App, body: Body, headers: &HeaderMap) -> Result<(Bytes, Held), Response> {
    let raw =
        crate::http::read_limited(&app.inflight, body, headers, app.max_body, PARSE_FACTOR).await?;
    let (raw, mut held) = (raw.bytes, raw.held);
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok((raw, held)),
        // Telegraf's InfluxDB outputs send gzip by default. The limit holds
        // for the decompressed body too.
        "gzip" | "x-gzip" => {
            let limit = app.max_body;
            // The gzip trailer states the (last member's) size. Room is
            // taken without waiting: this request already holds some, and
            // waiting while holding could stall every request.
            let stated = raw
                .len()
                .checked_sub(4)
                .map(|at| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]))
                .map_or(limit, |n| (n as usize).min(limit));
            held.push(app.inflight.take_now(stated.saturating_mul(PARSE_FACTOR))?);
            let out = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut out = Vec::with_capacity(stated);
                let read = flate2::read::MultiGzDecoder::new(&raw[..])
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out);
                match read {
                    Ok(n) if n > limit => Err(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the decompressed body exceeds {limit} bytes"),
                    )),
                    Ok(_) => Ok(Bytes::from(out)),
                    Err(e) => Err(error(
                        StatusCode::BAD_REQUEST,
                        format!("Content-Encoding gzip: the body does not decompress: {e}"),
                    )),
                }
            })
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
            if out.len() > stated {
                held.push(
                    app.inflight
                        .take_now((out.len() - stated).saturating_mul(PARSE_FACTOR))?,
                );
            }
            Ok((out, held))
        }
        other => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {other:?} is not supported: send identity or gzip"),
        )),
    }
}

/// What an accepted batch did.
struct Ingested {
    /// Readings in the batch.
    readings: usize,
    /// Its idempotency key was seen before with the same readings: it was
    /// stored then, and not again now.
    duplicate: bool,
    /// Its earliest and latest timestamp (none for an empty batch).
    times: Option<(i64, i64)>,
}

/// Adds a `Fleetscore-Warning` header (and counts and logs, at most every
/// 10 s) when a stored batch's times are implausibly far from now; `say`
/// words the warning for the endpoint's timestamp format.
fn questioned(
    app: &App,
    mut r: Response,
    i: &Ingested,
    unit_ns: i64,
    say: fn(&crate::plausible::Doubt) -> String,
) -> Response {
    let Some((earliest, latest)) = i.times else {
        return r;
    };
    let now = util::now_ns();
    let Some(doubt) = crate::plausible::check(earliest, latest, unit_ns, now) else {
        return r;
    };
    let m = &app.metrics;
    m.implausible_batches.fetch_add(1, Ordering::Relaxed);
    let message = say(&doubt);
    let last = m.implausible_logged.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000_000_000
        && m.implausible_logged
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            readings = i.readings,
            "a batch with implausible timestamps: {message} (logged at most every 10 s; fleetscore_ingest_implausible_batches_total counts them all)"
        );
    }
    if let Ok(v) = header::HeaderValue::from_str(&message) {
        r.headers_mut().insert("fleetscore-warning", v);
    }
    r
}

/// The header that names a batch, so that a client may resend it after an
/// unknown outcome (a timeout, a reset connection) without storing it twice
/// (the IETF draft "The Idempotency-Key HTTP Header Field"). Either a bare
/// token or a quoted string.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` of a request, if any.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Response> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = v.to_str().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key: the value must be visible ASCII",
        )
    })?;
    let text = text.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    Ok(Some(text.to_string()))
}

/// The answer to an append the log refused.
fn log_refused(app: &App, e: &LogError) -> Response {
    match e {
        LogError::Unavailable { .. } => {
            app.metrics.log_unavailable.fetch_add(1, Ordering::Relaxed);
            // 507 says what an operator must fix; both ask the client to
            // come back.
            let status = if e.is_disk_full() {
                StatusCode::INSUFFICIENT_STORAGE
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let secs = e
                .retry_after()
                .map_or(1, |d| d.as_millis().div_ceil(1000).max(1) as u64);
            let mut r = error(status, format!("not stored: {e}"));
            if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        LogError::KeyReused { .. } => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not stored: {e}; send each batch under a key of its own"),
        ),
        LogError::BadKey { .. } => error(StatusCode::BAD_REQUEST, format!("not stored: {e}")),
        other => {
            tracing::error!("ingest log append failed: {other}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("not stored: {other}"),
            )
        }
    }
}

/// An idempotency key, and what makes a resent request the same one: a
/// hash of its endpoint, its parameters and its (decompressed) body. Not
/// its readings: line protocol lines without a timestamp take the arrival
/// time, which differs between a request and its retry.
struct Keyed {
    key: String,
    identity: [u8; 32],
}

impl Keyed {
    fn new(key: Option<String>, what: &[&str], body: &[u8]) -> Option<Keyed> {
        let key = key?;
        let mut h = Sha256::new();
        for part in what {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(body);
        Some(Keyed {
            key,
            identity: h.finalize().into(),
        })
    }
}

/// Parses (on a blocking thread) and appends under `key`; answers once
/// the batch is durable.
async fn ingest<F>(app: &App, key: Option<Keyed>, parse: F) -> Result<Ingested, Response>
where
    F: FnOnce() -> Result<Batch, BatchError> + Send + 'static,
{
    let ingestor = Arc::clone(&app.ingestor);
    let res =
        tokio::task::spawn_blocking(move || -> Result<Result<Ingested, LogError>, BatchError> {
            let readings = parse()?.readings;
            let times = readings.time_range();
            if readings.is_empty() {
                return Ok(Ok(Ingested {
                    readings: 0,
                    duplicate: false,
                    times: None,
                }));
            }
            let n = readings.len();
            Ok(ingestor
                .append_keyed(
                    key.as_ref().map(|k| k.key.as_str()),
                    key.as_ref().map(|k| &k.identity[..]),
                    Arc::new(readings),
                )
                .map(|a| Ingested {
                    readings: n,
                    duplicate: a.duplicate,
                    times,
                }))
        })
        .await;
    match res {
        Ok(Ok(Ok(i))) => {
            if i.duplicate {
                app.metrics
                    .duplicates
                    .fetch_add(i.readings as u64, Ordering::Relaxed);
            } else {
                app.metrics.stored(Source::Http, i.readings as u64);
            }
            Ok(i)
        }
        Ok(Ok(Err(e))) => Err(log_refused(app, &e)),
        Ok(Err(e)) => {
            app.metrics.refused(Source::Http, 1, e.total() as u64);
            Err(refused(&e))
        }
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("not stored: {e}"),
        )),
    }
}

/// Marks the answer to a batch that was stored before under its key.
fn replayed(mut r: Response, duplicate: bool) -> Response {
    if duplicate {
        r.headers_mut().insert(
            "idempotent-replayed",
            header::HeaderValue::from_static("true"),
        );
    }
    r
}

/// Counts the answer of `endpoint` in the metrics.
fn counted(app: &App, endpoint: &'static str, started: Instant, r: Response) -> Response {
    app.metrics
        .request(endpoint, r.status().as_u16(), started.elapsed());
    r
}

async fn write_lp(app: &App, query: Query2, req: Request, v2: bool) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(r) = authorized(app, &parts.headers, &query) {
        return r;
    }
    let precision = match query.get("precision").map(String::as_str) {
        None | Some("") => Precision::Nanoseconds,
        Some(p) if v2 && !matches!(p, "ns" | "us" | "ms" | "s") => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown precision {p:?}: use ns, us, ms or s"),
            )
        }
        Some(p) => match p.parse::<Precision>() {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        },
    };
    let key = match idempotency_key(&parts.headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let (body, _held) = match read_body(app, body, &parts.headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = util::now_ns();
    let config = app.line_protocol.clone();
    let endpoint = if v2 { "/api/v2/write" } else { "/write" };
    let key = Keyed::new(key, &[endpoint, &format!("{precision:?}")], &body);
    let parse = move || parse_line_protocol(&body, precision, now, &config);
    match ingest(app, key, parse).await {
        Ok(i) => {
            let r = replayed(StatusCode::NO_CONTENT.into_response(), i.duplicate);
            questioned(
                app,
                r,
                &i,
                precision.nanos(),
                crate::plausible::Doubt::line_protocol,
            )
        }
        Err(r) => r,
    }
}

async fn write_v1(
    State(app): State<Arc<App>>,
    Query(query): Query<Query2>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let r = write_lp(&app, query, req, false).await;
    counted(&app, "/write", started, r)
}

async fn write_v2(
    State(app): State<Arc<App>>,
    Query(query): Query<Query2>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let r = write_lp(&app, query, req, true).await;
    counted(&app, "/api/v2/write", started, r)
}

async fn readings(
    State(app): State<Arc<App>>,
    Query(query): Query<Query2>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let r = readings_inner(&app, query, req).await;
    counted(&app, "/v1/readings", started, r)
}

async fn readings_inner(app: &Arc<App>, query: Query2, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(r) = authorized(app, &parts.headers, &query) {
        return r;
    }
    let ctype = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let csv = match ctype.as_str() {
        "application/json" | "application/x-ndjson" | "application/ndjson" => false,
        "text/csv" => true,
        other => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Type {other:?}: use application/json, application/x-ndjson or text/csv"
                ),
            )
        }
    };
    let key = match idempotency_key(&parts.headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let (body, _held) = match read_body(app, body, &parts.headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let config = app.csv.clone();
    let key = Keyed::new(key, &["/v1/readings", &ctype], &body);
    let parse = move || {
        if csv {
            parse_csv_body(&body, &config)
        } else {
            parse_json(&body)
        }
    };
    match ingest(app, key, parse).await {
        Ok(i) => {
            let body = if i.duplicate {
                json!({ "accepted": i.readings, "duplicate": true })
            } else {
                json!({ "accepted": i.readings })
            };
            let r = replayed((StatusCode::OK, Json(body)).into_response(), i.duplicate);
            // CSV and JSON integer times are nanoseconds.
            questioned(app, r, &i, 1, crate::plausible::Doubt::integers)
        }
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscore_jobs::db::{JobRecord, JobState, JobStore, SqlStore, Threshold};
    use fleetscore_jobs::run::{Runner, RunnerConfig};
    use fleetscore_jobs::schedule::{Clock, ManualClock, ScheduleSpec};

    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200_000_000_000;
    const MIN: i64 = 60_000_000_000;
    const HOUR: i64 = 60 * MIN;

    /// An hourly schedule scoring each hour 5 minutes after it ends.
    fn hourly() -> ScheduleSpec {
        ScheduleSpec {
            name: "hourly".into(),
            cron: "0 * * * *".into(),
            window_ns: HOUR,
            delay_ns: 5 * MIN,
            mode: "raw".into(),
            batch_size: 10,
            max_failed: Threshold::Count(0),
            max_retries: 0,
            concurrency: Default::default(),
            catch_up: 1,
        }
    }

    /// The job the scheduler loop of `serve` creates and runs for 00:00 to
    /// 01:00 at 01:05 (an injected clock), right after readings of d1/1 for
    /// every minute of that hour were acknowledged into the ingest log
    /// (the timed compaction is an hour away), with `compact` or without
    /// a compaction before the jobs are created.
    async fn scheduled_right_after_readings(compact: bool) -> JobRecord {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store").to_str().unwrap()).unwrap();
        let model = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/demo/model_fallback_1.pkl"
        ))
        .unwrap();
        fleetscore_store::Registry::new(store.clone())
            .import(
                vec![fleetscore_store::ImportRequest {
                    key: fleetscore_core::ModelKey::new("d1", "1").unwrap(),
                    model: fleetscore_models::import_sklearn(&model).unwrap(),
                    source: "test".into(),
                    input: Default::default(),
                }],
                "2024-01-01T00:00:00Z",
            )
            .await
            .unwrap();
        let log = Arc::new(
            Log::open(
                dir.path().join("log"),
                fleetscore_ingest::LogConfig::default(),
            )
            .unwrap(),
        );
        let ingestor = Arc::new(Ingestor::new(Arc::clone(&log), None));
        let readings: Readings = (0..60).map(|m| (T0 + m * MIN, "d1", "1", 20.0)).collect();
        ingestor.append(Arc::new(readings)).unwrap();

        let compactor = Compactor {
            ingestor: Arc::clone(&ingestor),
            store: store.clone(),
            metrics: Arc::new(Metrics::default()),
            in_raw: BTreeSet::new(),
        };
        let (compact_now, requests) = CompactNow::channel();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let background = spawn_background(
            compactor,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            requests,
            stop_rx.clone(),
        );
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let db: Arc<dyn JobStore> = Arc::new(SqlStore::open(&url).await.unwrap());
        let clock = Arc::new(ManualClock::new(T0 + HOUR + 5 * MIN));
        let runner = Runner::new(
            Arc::clone(&db),
            store.clone(),
            clock.clone(),
            RunnerConfig {
                parallel_tasks: 2,
                poll: Duration::from_millis(10),
                ..RunnerConfig::default()
            },
        );
        let (reports, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let runner = runner.with_reports(reports);
        let lp = crate::jobs_cmd::scheduler_loop(
            Arc::clone(&db),
            Some(runner),
            vec![hourly()],
            Duration::from_millis(10),
            clock.clone() as Arc<dyn Clock>,
            crate::jobs_cmd::Hooks {
                compact: compact.then_some(compact_now),
                wake: None,
            },
            stop_rx,
        );
        let wait = async {
            let job = tokio::time::timeout(Duration::from_secs(60), finished.recv())
                .await
                .expect("a job within a minute")
                .expect("a job");
            stop_tx.send(true).unwrap();
            job
        };
        let ((), job) = tokio::join!(lp, wait);
        background.await.unwrap();
        assert_eq!((job.window_start, job.window_end), (T0, T0 + HOUR));
        job
    }

    /// Issue 17: a scheduled job read only raw/, which the compactor fills
    /// every `[ingest] compact_interval`: created right after readings were
    /// acknowledged, it found none of them (no_data for every model).
    #[tokio::test]
    async fn a_scheduled_job_sees_every_reading_acknowledged_before_it_was_created() {
        let job = scheduled_right_after_readings(true).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!((job.models, job.rows, job.failed_models), (1, 60, 0));
        // Without the compaction first: what the timed compactor had not
        // moved yet is missed.
        let job = scheduled_right_after_readings(false).await;
        assert_eq!(job.state, JobState::Skipped, "{job:?}");
        assert_eq!(job.rows, 0);
    }
}
