//! `fleetscore serve`: the HTTP ingest endpoints over the durable log, and
//! the compactor that moves closed log segments into the store's raw/
//! partitions.
//!
//! A request is answered with success only after [`Log::append`] returned
//! `Ok`, i.e. once its readings are durable. Compaction writes the readings
//! of one segment as one Parquet object per UTC hour, named
//! `raw/date=…/hour=…/part-<id>.parquet` where `<id>` derives from the
//! segment's first batch (its sequence number and content) and the
//! partition; the segment is removed only after all its objects are stored.
//! A re-run after a crash therefore overwrites instead of duplicating. The
//! log has no call to close its active segment, so on shutdown (and on
//! start) the active segment is written too but kept: its objects have the
//! same names as when it is compacted again later, now holding more
//! batches, and are overwritten then.

// Handlers return `Result<_, Response>` so that `?`-style early answers
// stay readable; a Response is large but the error path is not hot.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
use fleetscore_ingest::{Log, LogConfig, Reading, Seq};
use fleetscore_store::{raw_objects, Store};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cli::{Global, ServeArgs};
use crate::util;

struct App {
    log: Arc<Log>,
    token: Option<String>,
    max_body: usize,
}

type Query2 = HashMap<String, String>;

pub async fn run(g: &Global, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let store = util::store(g)?;
    let dir = g.data.join("log");
    let config = LogConfig {
        max_segment_bytes: args.log_segment_bytes,
        ..LogConfig::default()
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
    compact(&log, &store, true)
        .await
        .context("compacting the ingest log at start-up")?;

    let app = Arc::new(App {
        log: Arc::clone(&log),
        token: args.ingest_token.filter(|t| !t.is_empty()),
        max_body: args.max_body_bytes,
    });
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/write", post(write_v1))
        .route("/api/v2/write", post(write_v2))
        .route("/v1/readings", post(readings))
        .with_state(app);

    // Checked before the log is touched further: bad --mqtt* flags fail fast.
    let mqtt_source = match args.mqtt {
        Some(url) => {
            let config = crate::mqtt::MqttConfig {
                url,
                topic: args.mqtt_topic,
                shared_group: args.mqtt_shared_group,
                client_id: args.mqtt_client_id,
            };
            Some(crate::mqtt::check(config)?)
        }
        None => None,
    };
    let shutdown = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, "serving");

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mqtt =
        mqtt_source.map(|source| tokio::spawn(source.run(Arc::clone(&log), stop_rx.clone())));
    let compactor = {
        let log = Arc::clone(&log);
        let store = store.clone();
        let every = Duration::from_secs(args.compact_interval.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = compact(&log, &store, false).await {
                            tracing::error!("compaction failed (retried later): {e:#}");
                        }
                    }
                    _ = stop_rx.changed() => break,
                }
            }
        })
    };

    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving")?;
    tracing::info!("stopped accepting requests; compacting the ingest log");
    let _ = stop_tx.send(true);
    let _ = compactor.await;
    if let Some(mqtt) = mqtt {
        let _ = mqtt.await;
    }
    compact(&log, &store, true)
        .await
        .context("compacting the ingest log on shutdown")?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called (before the address is announced), so a signal sent right after
/// start-up is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
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

/// Moves the closed segments into raw/ and removes them; with
/// `include_active` also writes the active segment's batches (keeping it).
async fn compact(log: &Arc<Log>, store: &Store, include_active: bool) -> anyhow::Result<()> {
    let closed = log.closed_segments();
    for seg in &closed {
        let objects = if seg.end_seq > seg.first_seq {
            let log = Arc::clone(log);
            let (first, end) = (seg.first_seq, seg.end_seq);
            tokio::task::spawn_blocking(move || segment_objects(&log, first, Some(end))).await??
        } else {
            Segment::default()
        };
        for (key, data) in objects.objects {
            store.put(&key, data).await?;
        }
        log.remove_segment(seg.first_seq)?;
        tracing::info!(
            segment = %seg.path.display(),
            readings = objects.readings,
            "compacted a closed log segment into raw/"
        );
    }
    if include_active {
        let from = closed.last().map_or(0, |s| s.end_seq);
        let log = Arc::clone(log);
        let objects =
            tokio::task::spawn_blocking(move || segment_objects(&log, from, None)).await??;
        for (key, data) in objects.objects {
            store.put(&key, data).await?;
        }
        if objects.readings > 0 {
            tracing::info!(
                readings = objects.readings,
                "wrote the active log segment to raw/ (kept: the log cannot close it)"
            );
        }
    }
    Ok(())
}

#[derive(Default)]
struct Segment {
    objects: Vec<(String, Vec<u8>)>,
    readings: usize,
}

/// The raw/ objects of the batches `from..end` (to the durable end when
/// `end` is `None`).
fn segment_objects(log: &Log, from: Seq, end: Option<Seq>) -> anyhow::Result<Segment> {
    let mut readings = Readings::default();
    let mut ids: HashMap<(String, String), u32> = HashMap::new();
    let mut origin: Option<[u8; 32]> = None;
    for batch in log.replay(from) {
        let batch = batch?;
        if end.is_some_and(|e| batch.seq >= e) {
            break;
        }
        if origin.is_none() {
            // Names the segment: its first batch, by number and content.
            let mut h = Sha256::new();
            h.update(b"fleetscore ingest log segment\0");
            h.update(batch.seq.to_le_bytes());
            for r in &batch.readings {
                h.update(r.ts.to_le_bytes());
                h.update(r.device.as_bytes());
                h.update([0]);
                h.update(r.tag.as_bytes());
                h.update([0]);
                h.update(r.value.to_bits().to_le_bytes());
            }
            origin = Some(h.finalize().into());
        }
        for r in batch.readings {
            let next = readings.keys.len() as u32;
            let id = *ids.entry((r.device, r.tag)).or_insert_with_key(|k| {
                readings.keys.push(k.clone());
                next
            });
            readings.ts.push(r.ts);
            readings.value.push(r.value);
            readings.key.push(id);
        }
        if end.is_some_and(|e| batch.seq + 1 >= e) {
            break;
        }
    }
    let Some(origin) = origin else {
        return Ok(Segment::default());
    };
    let objects = raw_objects(&readings, &origin)?;
    Ok(Segment {
        objects,
        readings: readings.len(),
    })
}

// ---------------------------------------------------------------- handlers

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

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

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn authorized(app: &App, headers: &HeaderMap, query: &Query2) -> Result<(), Response> {
    let Some(token) = &app.token else {
        return Ok(());
    };
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("Token "))
        })
        .map(str::trim);
    let given = from_header.or(query.get("p").map(String::as_str));
    match given {
        Some(t) if same(t, token) => Ok(()),
        Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong ingest token")),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "an ingest token is required: Authorization: Bearer <token>",
        )),
    }
}

async fn read_body(app: &App, body: Body, headers: &HeaderMap) -> Result<Bytes, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body exceeds {} bytes", app.max_body),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, app.max_body).await.map_err(|e| {
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = src {
            if s.to_string().contains("length limit") {
                return too_large();
            }
            src = s.source();
        }
        error(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
    })
}

/// Parses (on a blocking thread) and appends; `Ok(n)` once durable.
async fn ingest<F>(app: &App, parse: F) -> Result<usize, Response>
where
    F: FnOnce() -> Result<Batch, BatchError> + Send + 'static,
{
    let log = Arc::clone(&app.log);
    let res = tokio::task::spawn_blocking(move || {
        let batch = parse()?;
        let readings: Vec<Reading> = batch
            .iter()
            .map(|r| Reading::new(r.ts, r.device, r.tag, r.value))
            .collect();
        if readings.is_empty() {
            return Ok(Ok(0));
        }
        Ok(log.append(&readings).map(|_| readings.len()))
    })
    .await;
    match res {
        Ok(Ok(Ok(n))) => Ok(n),
        Ok(Ok(Err(e))) => {
            tracing::error!("ingest log append failed: {e}");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("not stored: {e}"),
            ))
        }
        Ok(Err(e)) => Err(refused(&e)),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("not stored: {e}"),
        )),
    }
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
    let body = match read_body(app, body, &parts.headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let now = util::now_ns();
    let parse = move || parse_line_protocol(&body, precision, now, &LineProtocolConfig::default());
    match ingest(app, parse).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

async fn write_v1(
    State(app): State<Arc<App>>,
    Query(query): Query<Query2>,
    req: Request,
) -> Response {
    write_lp(&app, query, req, false).await
}

async fn write_v2(
    State(app): State<Arc<App>>,
    Query(query): Query<Query2>,
    req: Request,
) -> Response {
    write_lp(&app, query, req, true).await
}

async fn readings(
    State(app): State<Arc<App>>,
    Query(query): Query<Query2>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(r) = authorized(&app, &parts.headers, &query) {
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
    let body = match read_body(&app, body, &parts.headers).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parse = move || {
        if csv {
            parse_csv_body(&body, &CsvBodyConfig::default())
        } else {
            parse_json(&body)
        }
    };
    match ingest(&app, parse).await {
        Ok(n) => (StatusCode::OK, Json(json!({ "accepted": n }))).into_response(),
        Err(r) => r,
    }
}
