//! The HTTP API under `/v1` (JSON), `/readyz` and `/v1/openapi.json`
//! (the document of every route, in [`openapi`]).
//!
//! Read endpoints are open unless `[auth] protect_reads = true` (then any
//! ingest or admin token reads); endpoints that change things (trigger,
//! retry, cancel, model upload and promote) need an admin token whenever
//! any token is configured: none gives 401, a token that is not an admin
//! token 403. Every failure answers `{"error": "…"}`, also a query or path
//! value of the wrong type ([`json_errors`]).
//!
//! One vocabulary, so that a client reads every answer the same way:
//! - Times in answers are RFC 3339 UTC strings ([`rfc3339`]:
//!   `2026-12-05T03:00:00Z`, a fraction only when the instant has one).
//!   Job and task records, which scripts compute with, also give each
//!   instant as integer nanoseconds under `<name>_ns` (`created` and
//!   `created_ns`); their older integer fields (`window_start`,
//!   `created_at`, …) stay, deprecated, for clients written before.
//!   Durations are integers named with their unit (`duration_ms`,
//!   `window_ns`). Times in queries are RFC 3339 or `YYYY-MM-DD HH:MM:SS`.
//! - Rows use the `raw/` column names, `ts, device, tag, value`, and for
//!   predictions `prediction, score`: the predictions files' `Val` is
//!   `value` here, their `Score` (the reference deployment's `Decision`)
//!   is `score`. The README's vocabulary table maps every file's names.

// Handlers return `Result<_, Response>` for early answers.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetscore_codecs::read_predictions_parquet_bytes;
use fleetscore_core::{format_ts, parse_ts, ModelKey};
use fleetscore_jobs::db::{
    Concurrency, DbError, JobFilter, JobKind, JobRecord, JobState, JobStore, NewJob, TaskRecord,
    Threshold,
};
use fleetscore_jobs::run::{raw_objects_of, DeviceCount, Manifest};
use fleetscore_jobs::schedule::ScheduleSpec;
use fleetscore_store::{hour_partition, ImportRequest, Registry, Store, HOUR_NS};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::JobsConfig;

mod openapi;

/// What the API handlers share.
pub struct Api {
    /// The job store.
    pub db: Arc<dyn JobStore>,
    /// The object store.
    pub store: Store,
    /// The model registry.
    pub registry: Registry,
    /// The configured schedules.
    pub schedules: Vec<ScheduleSpec>,
    /// Defaults for triggered jobs.
    pub jobs: JobsConfig,
    /// Admin tokens.
    pub admin_tokens: Vec<String>,
    /// Ingest tokens (they may read when reads are protected).
    pub ingest_tokens: Vec<String>,
    /// Whether reads need a token.
    pub protect_reads: bool,
    /// How long a read endpoint may work on one request.
    pub query_timeout: std::time::Duration,
    /// Largest model file accepted once decompressed.
    pub max_model_bytes: usize,
    /// The ingest log, whose health `/readyz` reports.
    pub log: Option<Arc<fleetscore_ingest::Log>>,
    /// Request bodies in memory, shared with the ingest endpoints.
    pub inflight: Arc<crate::http::InFlight>,
    /// Model uploads decoded at once: each may take up to a few times
    /// `max_model_bytes` of memory while it is read.
    pub uploads: tokio::sync::Semaphore,
    /// Compacts this server's ingest log into raw/ before a job is queued
    /// (trigger, retry), so that it sees every reading acknowledged so far.
    pub compact: Option<crate::serve::CompactNow>,
    /// Wakes this server's scheduler loop, so that a queued job starts now
    /// rather than at its next tick (`[jobs] tick_interval`).
    pub wake: Option<Arc<tokio::sync::Notify>>,
}

/// Model uploads decoded at once (see [`Api::uploads`]).
pub const PARALLEL_UPLOADS: usize = 2;
/// Largest model upload (the file as sent).
const MAX_UPLOAD: usize = 2 << 20;
/// Largest JSON body of the other endpoints that change things.
const SMALL_BODY: usize = 64 << 10;

const HOUR: i64 = HOUR_NS;
/// Longest range a query may read, in hours.
const MAX_HOURS: i64 = 24 * 31;

use crate::http::{answer as err, retry_later};
/// Instants as the API gives them: RFC 3339, UTC, a fraction only when
/// there is one (`2026-12-05T03:00:00Z`, `…00.250Z`).
pub(crate) use fleetscore_core::format_rfc3339 as rfc3339;

fn db_err(e: DbError) -> Response {
    match e {
        DbError::NoJob(_) => err(StatusCode::NOT_FOUND, e.to_string()),
        DbError::State { .. } => err(StatusCode::CONFLICT, e.to_string()),
        other => err(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Sets `name` to the instant as RFC 3339 and `name_ns` to its integer.
fn put_instant(record: &mut Value, name: &str, ns: Option<i64>) {
    record[name] = json!(ns.map(rfc3339));
    record[format!("{name}_ns")] = json!(ns);
}

/// A job record as the API gives it: the stored record, with its instants
/// also as `from`, `to`, `created`, `started`, `finished` (RFC 3339) and
/// their `_ns` integers.
fn job_json(j: &JobRecord) -> Value {
    let mut v = json!(j);
    put_instant(&mut v, "from", Some(j.window_start));
    put_instant(&mut v, "to", Some(j.window_end));
    put_instant(&mut v, "created", Some(j.created_at));
    put_instant(&mut v, "started", j.started_at);
    put_instant(&mut v, "finished", j.finished_at);
    v
}

/// A task record as the API gives it: instants also as `queued`,
/// `started`, `finished` (RFC 3339) and `_ns` integers; `lease_until` and
/// `not_before` become RFC 3339, with `_ns` integers.
fn task_json(t: &TaskRecord) -> Value {
    let mut v = json!(t);
    put_instant(&mut v, "queued", Some(t.queued_at));
    put_instant(&mut v, "started", t.started_at);
    put_instant(&mut v, "finished", t.finished_at);
    put_instant(&mut v, "lease_until", t.lease_until);
    put_instant(&mut v, "not_before", t.not_before);
    v
}

/// Turns the plain-text answers of axum's extractors (a query or path
/// value of the wrong type: `limit=ten`, `/v1/jobs/x`) into the API's
/// `{"error": …}`, so that every failure reads the same.
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let r = next.run(req).await;
    let plain = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !r.status().is_client_error() || !plain {
        return r;
    }
    let status = r.status();
    // Small: an extractor's message; anything longer is replaced by a
    // general one.
    match axum::body::to_bytes(r.into_body(), 4096).await {
        Ok(text) => err(status, String::from_utf8_lossy(&text).into_owned()),
        Err(_) => err(status, "the request was refused"),
    }
}

/// Constant-time comparison, so a token cannot be guessed byte by byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The token of `Authorization: Bearer T` (or `Token T`, as InfluxDB v2
/// clients send it). The scheme is matched in any case, as HTTP says
/// (RFC 9110, 11.1): `bearer T` and `BEARER T` work too.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?
        .trim_start();
    let (scheme, token) = v.split_once([' ', '\t'])?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `t` is one of `tokens`; every one is compared, so timing tells
/// nothing about which.
pub(crate) fn any_of(t: &str, tokens: &[String]) -> bool {
    tokens.iter().fold(false, |ok, k| same(t, k) | ok)
}

impl Api {
    /// Tells this server's runner that a job was queued.
    fn wake_runner(&self) {
        if let Some(w) = &self.wake {
            w.notify_one();
        }
    }

    /// A request body of at most `max` bytes, read under the in-flight
    /// limit and the body timeout.
    async fn body(
        &self,
        body: axum::body::Body,
        headers: &HeaderMap,
        max: usize,
    ) -> Result<(Bytes, crate::http::Held), Response> {
        let r = crate::http::read_limited(&self.inflight, body, headers, max, 1).await?;
        Ok((r.bytes, r.held))
    }

    fn inflight_wait(&self) -> std::time::Duration {
        self.inflight.wait()
    }

    fn tokens_configured(&self) -> bool {
        !self.admin_tokens.is_empty() || !self.ingest_tokens.is_empty()
    }

    fn admin(&self, headers: &HeaderMap) -> Result<(), Response> {
        if !self.tokens_configured() {
            return Ok(());
        }
        match bearer(headers) {
            None => Err(err(
                StatusCode::UNAUTHORIZED,
                "an admin token is required: Authorization: Bearer <token>",
            )),
            Some(t) if any_of(t, &self.admin_tokens) => Ok(()),
            Some(_) => Err(err(
                StatusCode::FORBIDDEN,
                "this token may not change jobs or models; use an admin token",
            )),
        }
    }

    fn read(&self, headers: &HeaderMap) -> Result<(), Response> {
        if !self.protect_reads || !self.tokens_configured() {
            return Ok(());
        }
        match bearer(headers) {
            None => Err(err(
                StatusCode::UNAUTHORIZED,
                "a token is required to read: Authorization: Bearer <token>",
            )),
            Some(t) if any_of(t, &self.admin_tokens) || any_of(t, &self.ingest_tokens) => Ok(()),
            Some(_) => Err(err(StatusCode::FORBIDDEN, "unknown token")),
        }
    }
}

/// The `/v1` routes, `/readyz` and the OpenAPI document.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/jobs", get(list_jobs).post(trigger))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/retry", post(retry))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/tasks/slowest", get(slowest))
        .route("/v1/schedules", get(schedules))
        .route("/v1/models", get(models))
        .route("/v1/models/{device}/{tag}", get(model).post(upload))
        .route("/v1/models/{device}/{tag}/promote", post(promote))
        .route("/v1/predictions", get(predictions))
        .route("/v1/anomalies", get(anomalies))
        .route("/v1/readings", get(readings))
        .route("/v1/overview", get(overview))
        .route("/v1/extent", get(extent))
        .layer(axum::middleware::from_fn_with_state(
            api.query_timeout,
            bounded_reads,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(api)
}

/// Bounds the time of every read (`GET`): past `[server] query_timeout`
/// the work is dropped and the client is asked for a narrower query.
async fn bounded_reads(
    State(limit): State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() != axum::http::Method::GET {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the query took longer than {limit:?} ([server] query_timeout); narrow it (a shorter from/to range, a device, a smaller limit)"
            ),
        ),
    }
}

type A = State<Arc<Api>>;

async fn readyz(State(api): A) -> Response {
    let db = api
        .db
        .jobs(&JobFilter {
            limit: Some(1),
            ..JobFilter::default()
        })
        .await;
    let store = api.store.list("models/").await;
    // A log that cannot write (a full disk) cannot take readings: not
    // ready, with why, until it recovers by itself.
    // Tries a recovery now if one is due, so that freed space shows at
    // once rather than at the log's next timed attempt.
    let log = match &api.log {
        Some(l) if !l.health().writable => {
            let l = Arc::clone(l);
            tokio::task::spawn_blocking(move || l.try_recover())
                .await
                .ok()
        }
        Some(l) => Some(l.health()),
        None => None,
    };
    let log_down = log.as_ref().filter(|h| !h.writable).map(|h| {
        json!({
            "reason": h.reason,
            "disk_full": h.disk_full,
            "since": h.since.map(|t| rfc3339(
                t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
            )),
            "failed_recoveries": h.failed_recoveries,
        })
    });
    match (db, store, log_down) {
        (Ok(_), Ok(_), None) => Json(json!({"ready": true})).into_response(),
        (db, store, log) => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "ready": false,
                    "job_store": db.err().map(|e| e.to_string()),
                    "object_store": store.err().map(|e| e.to_string()),
                    "ingest_log": log,
                })),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
    }
}

#[derive(Deserialize)]
struct JobsQuery {
    state: Option<String>,
    schedule: Option<String>,
    limit: Option<u32>,
}

async fn list_jobs(State(api): A, headers: HeaderMap, Query(q): Query<JobsQuery>) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    let state = match q.state.as_deref().map(str::parse::<JobState>).transpose() {
        Ok(s) => s,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("state: {e}")),
    };
    let filter = JobFilter {
        state,
        schedule: q.schedule,
        limit: Some(q.limit.unwrap_or(100).min(10_000)),
        ..JobFilter::default()
    };
    match api.db.jobs(&filter).await {
        Ok(jobs) => {
            Json(json!({ "jobs": jobs.iter().map(job_json).collect::<Vec<_>>() })).into_response()
        }
        Err(e) => db_err(e),
    }
}

async fn get_job(State(api): A, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    let job = match api.db.job(id).await {
        Ok(j) => j,
        Err(e) => return db_err(e),
    };
    let (tasks, failures) = match (api.db.tasks(id).await, api.db.failures(id).await) {
        (Ok(t), Ok(f)) => (t, f),
        (Err(e), _) | (_, Err(e)) => return db_err(e),
    };
    let tasks: Vec<Value> = tasks.iter().map(task_json).collect();
    Json(json!({"job": job_json(&job), "tasks": tasks, "failures": failures})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Trigger {
    from: String,
    to: String,
    window: Option<String>,
    models: Option<Vec<String>>,
    batch_size: Option<u32>,
    max_failed_models: Option<String>,
    max_retries: Option<u32>,
}

async fn trigger(State(api): A, headers: HeaderMap, body: axum::body::Body) -> Response {
    if let Err(r) = api.admin(&headers) {
        return r;
    }
    let (body, _held) = match api.body(body, &headers, SMALL_BODY).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let t: Trigger = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("body: {e}; expected {{\"from\": T, \"to\": T, \"window\"?: \"1h\", \"models\"?: [\"device/tag\"], \"batch_size\"?: n}}"),
            )
        }
    };
    let (from, to) = match (request_ts(&t.from), request_ts(&t.to)) {
        (Ok(f), Ok(t)) if f < t => (f, t),
        (Ok(_), Ok(_)) => return err(StatusCode::BAD_REQUEST, "from must be before to"),
        (Err(e), _) => return err(StatusCode::BAD_REQUEST, format!("from: {e}")),
        (_, Err(e)) => return err(StatusCode::BAD_REQUEST, format!("to: {e}")),
    };
    let w = match t
        .window
        .as_deref()
        .unwrap_or("1h")
        .parse::<fleetscore_stream::Span>()
    {
        Ok(s) if s.as_nanos() > 0 => s.as_nanos(),
        Ok(_) => return err(StatusCode::BAD_REQUEST, "window must be longer than zero"),
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("window: {e}")),
    };
    let max_failed: Threshold = match t.max_failed_models.as_deref().map(str::parse).transpose() {
        Ok(m) => m.unwrap_or(api.jobs.max_failed_models),
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    if let Some(m) = t.models.iter().flatten().find(|m| {
        m.split_once('/')
            .is_none_or(|(d, t)| d.is_empty() || t.is_empty())
    }) {
        return err(
            StatusCode::BAD_REQUEST,
            format!("models: {m:?} is not DEVICE/TAG"),
        );
    }
    // In i128: from, to and the window come from the request, and the
    // window boundaries around them may not fit an i64.
    let (from128, to128, w128) = (from as i128, to as i128, w as i128);
    let start128 = from128.div_euclid(w128) * w128;
    let windows = (to128 - start128 + w128 - 1) / w128;
    if windows > 10_000 {
        return err(
            StatusCode::BAD_REQUEST,
            format!("{windows} windows: at most 10000 at a time"),
        );
    }
    let (Ok(start), Ok(_)) = (
        i64::try_from(start128),
        i64::try_from(start128 + windows * w128),
    ) else {
        return err(
            StatusCode::BAD_REQUEST,
            "window: the windows around from/to reach past the times fleetscore represents; use a shorter window",
        );
    };
    let windows = windows as i64;
    if let Err(r) = compact_first(&api).await {
        return r;
    }
    let now = crate::util::now_ns();
    let mut ids = Vec::new();
    for i in 0..windows {
        let job = NewJob {
            schedule: None,
            kind: JobKind::Manual,
            window_start: start + i * w,
            window_end: start + (i + 1) * w,
            mode: "raw".into(),
            selection: t.models.clone(),
            batch_size: t.batch_size.unwrap_or(api.jobs.batch_size).max(1),
            max_failed,
            max_retries: t.max_retries.unwrap_or(api.jobs.max_retries),
            concurrency: Concurrency::Allow,
            state: JobState::Queued,
            error: None,
        };
        match api.db.create_job(&job, now).await {
            Ok(id) => ids.push(id),
            Err(e) => return db_err(e),
        }
    }
    api.wake_runner();
    (StatusCode::ACCEPTED, Json(json!({ "jobs": ids }))).into_response()
}

/// Compacts the ingest log into raw/ before a job is queued, so that it
/// reads every reading acknowledged until now (wherever it runs); if that
/// fails, no job is queued: it would miss readings.
async fn compact_first(api: &Api) -> Result<(), Response> {
    let Some(compact) = &api.compact else {
        return Ok(());
    };
    compact.run().await.map_err(|e| {
        retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no job queued: it would miss the readings not yet in raw/ ({e:#}); retry once the store is reachable and the data folder writable"
            ),
        )
    })
}

async fn retry(State(api): A, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    if let Err(r) = api.admin(&headers) {
        return r;
    }
    // An unknown job is 404 at once, without compacting for nothing (or
    // 503 while the store is down).
    if let Err(e) = api.db.job(id).await {
        return db_err(e);
    }
    if let Err(r) = compact_first(&api).await {
        return r;
    }
    match api.db.retry(id).await {
        Ok(j) => {
            api.wake_runner();
            Json(json!({ "job": job_json(&j) })).into_response()
        }
        Err(e) => db_err(e),
    }
}

async fn cancel(State(api): A, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    if let Err(r) = api.admin(&headers) {
        return r;
    }
    match api.db.cancel(id, crate::util::now_ns()).await {
        Ok(j) => {
            // Its staged inputs are no longer needed (a retry plans again).
            if let Err(e) = fleetscore_jobs::run::drop_staging(&api.store, id).await {
                tracing::warn!(
                    job = id,
                    "deleting the cancelled job's staged inputs: {e:#}"
                );
            }
            Json(json!({ "job": job_json(&j) })).into_response()
        }
        Err(e) => db_err(e),
    }
}

#[derive(Deserialize)]
struct SlowestQuery {
    limit: Option<u32>,
    kind: Option<String>,
}

async fn slowest(State(api): A, headers: HeaderMap, Query(q): Query<SlowestQuery>) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    let kind = match q.kind.as_deref() {
        None | Some("") => None,
        Some(k @ (fleetscore_jobs::db::TASK_MAP | fleetscore_jobs::db::TASK_SCORE)) => Some(k),
        Some(other) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("kind {other:?}: use map (tasks that read the data) or score"),
            )
        }
    };
    match api
        .db
        .slowest_tasks(q.limit.unwrap_or(10).min(1000), kind)
        .await
    {
        Ok(tasks) => {
            let tasks: Vec<Value> = tasks
                .into_iter()
                .map(|t| {
                    json!({
                        "job_id": t.job_id,
                        "idx": t.idx,
                        "kind": t.kind,
                        "state": t.state,
                        "attempts": t.attempts,
                        "duration_ms": match (t.started_at, t.finished_at) {
                            (Some(a), Some(b)) => (b - a) / 1_000_000,
                            _ => 0,
                        },
                        "n_keys": t.n_keys,
                        "rows": t.rows,
                        "first_key": t.first_key,
                        "last_key": t.last_key,
                        "score_ms": t.score_ms,
                        "write_ms": t.write_ms,
                    })
                })
                .collect();
            Json(json!({ "tasks": tasks })).into_response()
        }
        Err(e) => db_err(e),
    }
}

async fn schedules(State(api): A, headers: HeaderMap) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    let mut out = Vec::new();
    for s in &api.schedules {
        let last = match api.db.last_fire(&s.name).await {
            Ok(l) => l,
            Err(e) => return db_err(e),
        };
        let next = fleetscore_jobs::schedule::next_run(s, crate::util::now_ns());
        out.push(json!({
            "name": s.name,
            "cron": s.cron,
            "window_ns": s.window_ns,
            "delay_ns": s.delay_ns,
            "mode": s.mode,
            "batch_size": s.batch_size,
            "max_failed_models": s.max_failed.to_string(),
            "max_retries": s.max_retries,
            "concurrency": s.concurrency,
            "catch_up": s.catch_up,
            "last_window_end": last.map(rfc3339),
            "next_run": next.map(rfc3339),
        }));
    }
    Json(json!({ "schedules": out })).into_response()
}

async fn models(State(api): A, headers: HeaderMap) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    match api.registry.index().await {
        Ok(index) => {
            let models: Vec<Value> = index
                .models
                .values()
                .map(|e| {
                    let live = e.live_version();
                    json!({
                        "device": e.device,
                        "tag": e.tag,
                        "live": e.live,
                        "versions": e.versions.len(),
                        "description": live.map(|v| v.description.clone()),
                        "n_features": live.map(|v| v.n_features),
                        "input_mode": live.map(|v| v.input_mode.clone()),
                        "kind": live.map(|v| v.kind.clone()),
                    })
                })
                .collect();
            Json(json!({"generation": index.generation, "models": models})).into_response()
        }
        Err(e) => internal(e),
    }
}

fn key(device: &str, tag: &str) -> Result<ModelKey, Response> {
    ModelKey::new(device, tag).map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn model(
    State(api): A,
    headers: HeaderMap,
    Path((device, tag)): Path<(String, String)>,
) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    let k = match key(&device, &tag) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match api.registry.index().await {
        Ok(index) => match index.models.get(&format!("{}/{}", k.device, k.tag)) {
            Some(e) => Json(json!({ "model": e })).into_response(),
            None => err(
                StatusCode::NOT_FOUND,
                format!("no model ({device}, {tag}) is registered"),
            ),
        },
        Err(e) => internal(e),
    }
}

async fn upload(
    State(api): A,
    headers: HeaderMap,
    Path((device, tag)): Path<(String, String)>,
    body: axum::body::Body,
) -> Response {
    if let Err(r) = api.admin(&headers) {
        return r;
    }
    let k = match key(&device, &tag) {
        Ok(k) => k,
        Err(r) => return r,
    };
    // Read only once the token is checked, under the in-flight limit.
    let (body, _held) = match api.body(body, &headers, MAX_UPLOAD).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.is_empty() {
        return err(
            StatusCode::BAD_REQUEST,
            "the body must be the model file (a scikit-learn pickle or joblib file)",
        );
    }
    // Bounded: a 2 MB upload may decompress to the model size limit, and
    // the reader builds values of a few times that.
    let slot = tokio::time::timeout(api.inflight_wait(), api.uploads.acquire()).await;
    let Ok(Ok(_slot)) = slot else {
        return retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{PARALLEL_UPLOADS} model uploads are being read; retry shortly"),
        );
    };
    let limits = fleetscore_models::ImportLimits::new(api.max_model_bytes as u64);
    let model = match tokio::task::spawn_blocking(move || {
        fleetscore_models::import_with_limits(&body, &limits)
    })
    .await
    {
        Ok(Ok(m)) => m,
        Ok(Err(e @ fleetscore_models::ImportError::TooLarge { .. })) => {
            return err(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("not imported: {e} ([server] max_model_bytes)"),
            )
        }
        Ok(Err(e)) => return err(StatusCode::BAD_REQUEST, format!("not imported: {e}")),
        Err(e) => return internal(e),
    };
    let req = ImportRequest {
        key: k,
        model,
        source: "uploaded over the API".into(),
        input: Default::default(),
    };
    match api
        .registry
        .import(vec![req], &format_ts(crate::util::now_ns()))
        .await
    {
        Ok(mut out) => {
            let o = out.pop();
            (StatusCode::CREATED, Json(json!({ "outcome": o }))).into_response()
        }
        Err(e) => registry_err(e),
    }
}

/// A registry error as an answer: lost races (many writers at once) ask
/// the client to retry; nothing was registered.
fn registry_err(e: fleetscore_store::StoreError) -> Response {
    match e {
        fleetscore_store::StoreError::Contended { .. } => {
            retry_later(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        e => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Promote {
    version: u32,
}

async fn promote(
    State(api): A,
    headers: HeaderMap,
    Path((device, tag)): Path<(String, String)>,
    body: axum::body::Body,
) -> Response {
    if let Err(r) = api.admin(&headers) {
        return r;
    }
    let k = match key(&device, &tag) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let (body, _held) = match api.body(body, &headers, SMALL_BODY).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let p: Promote = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("body: {e}; expected {{\"version\": n}}"),
            )
        }
    };
    match api.registry.promote(&k, p.version).await {
        Ok(e) => Json(json!({ "model": e })).into_response(),
        Err(fleetscore_store::StoreError::Invalid(m)) => err(StatusCode::NOT_FOUND, m),
        Err(e) => registry_err(e),
    }
}

#[derive(Deserialize, Default)]
struct RangeQuery {
    device: Option<String>,
    tag: Option<String>,
    from: Option<String>,
    to: Option<String>,
    anomalies: Option<bool>,
    limit: Option<usize>,
}

/// A time of a request: one a reading may carry (see
/// [`fleetscore_core::check_ts`]), so that rounding it to an hour or a
/// window never overflows.
fn request_ts(text: &str) -> Result<i64, String> {
    let ns = parse_ts(text).map_err(|e| e.to_string())?;
    fleetscore_core::check_ts(ns).map_err(|e| e.to_string())
}

/// `[from, to)` from the query; by default the 24 hours up to the newest
/// window end of a recent job that scored rows (or now).
async fn range(api: &Api, q: &RangeQuery) -> Result<(i64, i64), Response> {
    let parse = |what: &str, v: &Option<String>| -> Result<Option<i64>, Response> {
        v.as_deref()
            .map(request_ts)
            .transpose()
            .map_err(|e| err(StatusCode::BAD_REQUEST, format!("{what}: {e}")))
    };
    let (from, to) = (parse("from", &q.from)?, parse("to", &q.to)?);
    let out_of_range = || {
        err(
            StatusCode::BAD_REQUEST,
            "from/to: the range reaches past the times fleetscore represents",
        )
    };
    let to = match to {
        Some(t) => t,
        None => match from {
            Some(f) => f.checked_add(24 * HOUR).ok_or_else(out_of_range)?,
            None => newest_window_end(api).await,
        },
    };
    let from = match from {
        Some(f) => f,
        None => to
            .checked_sub(24 * HOUR)
            .ok_or_else(out_of_range)?
            .max(fleetscore_core::MIN_TS),
    };
    if from >= to {
        return Err(err(StatusCode::BAD_REQUEST, "from must be before to"));
    }
    // Checked: a range of centuries does not fit an i64 of nanoseconds.
    let too_long = to
        .checked_sub(from)
        .is_none_or(|span| span > MAX_HOURS * HOUR);
    if too_long {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_HOURS} hours per query; narrow from/to"),
        ));
    }
    Ok((from, to))
}

async fn newest_window_end(api: &Api) -> i64 {
    let jobs = api
        .db
        .jobs(&JobFilter {
            state: Some(JobState::Succeeded),
            limit: Some(50),
            ..JobFilter::default()
        })
        .await
        .unwrap_or_default();
    // Jobs that scored something: an hourly job over an idle hour would
    // otherwise move the view away from the data.
    jobs.iter()
        .filter(|j| j.rows > 0)
        .map(|j| j.window_end)
        .max()
        .unwrap_or_else(crate::util::now_ns)
}

/// The starts of the hours `[from, to)` touches; ends, never wraps, at the
/// last hour an i64 holds.
fn hours(from: i64, to: i64) -> impl Iterator<Item = i64> {
    let first = from.div_euclid(HOUR) * HOUR;
    (0i64..)
        .map_while(move |i| i.checked_mul(HOUR).and_then(|d| first.checked_add(d)))
        .take_while(move |h| *h < to)
}

async fn prediction_rows(
    api: &Api,
    q: &RangeQuery,
    only_anomalies: bool,
) -> Result<Response, Response> {
    let (from, to) = range(api, q).await?;
    let limit = q.limit.unwrap_or(10_000).min(1_000_000);
    let mut rows = Vec::new();
    let mut truncated = false;
    'hours: for h in hours(from, to) {
        let prefix = format!("predictions/{}/", hour_partition(h));
        let keys = api.store.list(&prefix).await.map_err(internal)?;
        for k in keys.into_iter().filter(|k| k.ends_with(".parquet")) {
            let Some(data) = api.store.get(&k).await.map_err(internal)? else {
                continue;
            };
            let (d, t) = (q.device.clone(), q.tag.clone());
            let part = tokio::task::spawn_blocking(move || {
                read_predictions_parquet_bytes(data, &k, |r| {
                    r.ts >= from
                        && r.ts < to
                        && d.as_deref().is_none_or(|d| d == r.device)
                        && t.as_deref().is_none_or(|t| t == r.tag)
                        && (!only_anomalies || r.prediction == Some(1))
                })
            })
            .await
            .map_err(internal)?
            .map_err(internal)?;
            rows.extend(part);
            if rows.len() > 2 * limit {
                // Bounded memory within a large hour; the earliest kept.
                rows.sort_by(|a, b| (a.ts, &a.device, &a.tag).cmp(&(b.ts, &b.device, &b.tag)));
                rows.truncate(limit + 1);
            }
        }
        // An hour's parts are in no time order: only whole hours are
        // cut, so the rows kept are the earliest.
        if rows.len() > limit {
            truncated = true;
            break 'hours;
        }
    }
    rows.sort_by(|a, b| (a.ts, &a.device, &a.tag).cmp(&(b.ts, &b.device, &b.tag)));
    rows.truncate(limit);
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({"ts": rfc3339(r.ts), "device": r.device, "tag": r.tag, "value": r.value,
                   "prediction": r.prediction, "score": r.score, "label": r.label})
        })
        .collect();
    Ok(Json(json!({
        "from": rfc3339(from), "to": rfc3339(to), "rows": rows, "truncated": truncated
    }))
    .into_response())
}

async fn predictions(State(api): A, headers: HeaderMap, Query(q): Query<RangeQuery>) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    let only = q.anomalies.unwrap_or(false);
    prediction_rows(&api, &q, only).await.unwrap_or_else(|r| r)
}

async fn anomalies(State(api): A, headers: HeaderMap, Query(q): Query<RangeQuery>) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    prediction_rows(&api, &q, true).await.unwrap_or_else(|r| r)
}

async fn readings(State(api): A, headers: HeaderMap, Query(q): Query<RangeQuery>) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    let (from, to) = match range(&api, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(device) = q.device.clone() else {
        return err(StatusCode::BAD_REQUEST, "device is required");
    };
    let limit = q.limit.unwrap_or(100_000).min(1_000_000);
    // One object at a time, keeping only the device's rows, and stopping
    // past the limit: memory is one object plus the answer, whatever the
    // range (the whole fleet's readings of a month would not fit).
    let objects = match raw_objects_of(&api.store, from, to).await {
        Ok(o) => o,
        Err(e) => return internal(format!("{e:#}")),
    };
    let mut rows: Vec<(i64, String, f64)> = Vec::new();
    let mut truncated = false;
    // Objects come hour by hour, but within an hour in no time order: past
    // the limit, the rest of that hour is still read (later hours hold
    // only later readings), keeping the earliest rows.
    let mut full_in_hour: Option<Option<i64>> = None;
    for o in objects {
        let hour = fleetscore_store::partition_start(&o.key);
        if full_in_hour.is_some_and(|h| h != hour) {
            truncated = true;
            break;
        }
        let data = match api.store.get(&o.key).await {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => return internal(e),
        };
        let (device, tag, key) = (device.clone(), q.tag.clone(), o.key.clone());
        let part = tokio::task::spawn_blocking(move || {
            let mut r = fleetscore_codecs::read_readings_parquet_bytes(data, &key)?;
            r.retain_time(Some(from), Some(to));
            let wanted: Vec<bool> = r
                .keys()
                .map(|(d, t)| d == device && tag.as_deref().is_none_or(|x| x == t))
                .collect();
            Ok::<_, fleetscore_codecs::CodecError>(
                r.iter()
                    .zip(r.key_ids())
                    .filter(|(_, &k)| wanted[k as usize])
                    .map(|(x, _)| (x.ts, x.tag.to_owned(), x.value))
                    .collect::<Vec<_>>(),
            )
        })
        .await;
        match part {
            Ok(Ok(p)) => rows.extend(p),
            Ok(Err(e)) => return internal(e),
            Err(e) => return internal(e),
        }
        if rows.len() > limit {
            full_in_hour.get_or_insert(hour);
            if rows.len() > 2 * limit {
                // Bounded memory within a large hour.
                rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                rows.truncate(limit + 1);
            }
        }
    }
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    truncated |= rows.len() > limit;
    rows.truncate(limit);
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(ts, tag, v)| json!({"ts": rfc3339(ts), "device": device, "tag": tag, "value": v}))
        .collect();
    Json(json!({"from": rfc3339(from), "to": rfc3339(to), "rows": rows, "truncated": truncated}))
        .into_response()
}

/// Anomalies per hour per device, from the jobs' manifests.
async fn overview(State(api): A, headers: HeaderMap, Query(q): Query<RangeQuery>) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    let (from, to) = match range(&api, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let hours: Vec<i64> = hours(from, to).collect();
    let mut per: BTreeMap<String, HashMap<usize, DeviceCount>> = BTreeMap::new();
    for (i, h) in hours.iter().enumerate() {
        let prefix = format!("predictions/{}/", hour_partition(*h));
        let keys = match api.store.list(&prefix).await {
            Ok(k) => k,
            Err(e) => return internal(e),
        };
        for k in keys.into_iter().filter(|k| k.contains("/manifest-")) {
            let Ok(Some(data)) = api.store.get(&k).await else {
                continue;
            };
            let Ok(m) = serde_json::from_slice::<Manifest>(&data) else {
                continue;
            };
            for (d, c) in m.devices {
                let e = per.entry(d).or_default().entry(i).or_default();
                e.rows += c.rows;
                e.anomalies += c.anomalies;
            }
        }
    }
    let devices: Vec<&String> = per.keys().collect();
    let grid = |f: fn(&DeviceCount) -> u64| -> Vec<Vec<u64>> {
        per.values()
            .map(|m| (0..hours.len()).map(|i| m.get(&i).map_or(0, f)).collect())
            .collect()
    };
    Json(json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "hours": hours.iter().map(|h| rfc3339(*h)).collect::<Vec<_>>(),
        "devices": devices,
        "anomalies": grid(|c| c.anomalies),
        "rows": grid(|c| c.rows),
    }))
    .into_response()
}

/// Listings and manifest reads [`extent`] makes from each end of a
/// folder before it stops looking (an idle schedule leaves hours of
/// manifests that scored nothing; a month of them is looked through).
const EXTENT_BUDGET: usize = 24 * 31 + 64;

/// Where the data is: the first and the last hour holding scored
/// predictions (a manifest that counts rows) and stored readings (a `raw/`
/// object), so that a reader can move its range there. Found from the
/// partition folders (`predictions/date=…/hour=…`, `raw/date=…/hour=…`):
/// one listing of the dates, then the hours of the dates at each end until
/// one holds data; the cost follows the hours looked at, not the number of
/// objects stored.
async fn extent(State(api): A, headers: HeaderMap) -> Response {
    if let Err(r) = api.read(&headers) {
        return r;
    }
    let mut complete = true;
    let mut out = serde_json::Map::new();
    for (name, root) in [("predictions", "predictions"), ("readings", "raw")] {
        let dates = match data_dates(&api.store, root).await {
            Ok(d) => d,
            Err(e) => return internal(e),
        };
        let ((first, cut_first), (last, cut_last)) = match tokio::join!(
            data_end(&api.store, root, &dates, false),
            data_end(&api.store, root, &dates, true)
        ) {
            (Ok(f), Ok(l)) => (f, l),
            (Err(e), _) | (_, Err(e)) => return internal(e),
        };
        complete &= !cut_first && !cut_last;
        out.insert(
            name.into(),
            // A search cut at its budget from one end may still have found
            // the other: what was found is said (with `complete` false),
            // as the extent known so far.
            match (first, last) {
                (Some((first, _)), Some((last, end))) => json!({
                    "first_hour": rfc3339(first),
                    "last_hour": rfc3339(last),
                    "end": rfc3339(end),
                }),
                (Some((hour, end)), None) | (None, Some((hour, end))) => json!({
                    "first_hour": rfc3339(hour),
                    "last_hour": rfc3339(hour),
                    "end": rfc3339(end),
                }),
                (None, None) => Value::Null,
            },
        );
    }
    out.insert("max_hours".into(), json!(MAX_HOURS));
    out.insert("complete".into(), json!(complete));
    Json(Value::Object(out)).into_response()
}

/// The `date=YYYY-MM-DD` folders under `root`, in time order.
async fn data_dates(
    store: &Store,
    root: &str,
) -> Result<Vec<String>, fleetscore_store::StoreError> {
    Ok(store
        .list_folders(&format!("{root}/"))
        .await?
        .into_iter()
        .filter(|d| d.strip_prefix("date=").is_some_and(|d| d.len() == 10))
        .collect())
}

/// The first (or, with `last`, the last) hour under `root` that holds
/// data, and where that data ends: for `raw`, an hour with a Parquet
/// object (ending with the hour); for `predictions`, an hour whose
/// manifests count rows (ending with their windows). `None` if there is
/// none, or none within [`EXTENT_BUDGET`]; then the flag says whether the
/// search stopped at the budget.
async fn data_end(
    store: &Store,
    root: &str,
    dates: &[String],
    last: bool,
) -> Result<(Option<(i64, i64)>, bool), fleetscore_store::StoreError> {
    let mut budget = EXTENT_BUDGET;
    let ordered: Box<dyn Iterator<Item = &String> + Send> = if last {
        Box::new(dates.iter().rev())
    } else {
        Box::new(dates.iter())
    };
    for date in ordered {
        let mut hours: Vec<(i64, String)> = store
            .list_folders(&format!("{root}/{date}/"))
            .await?
            .into_iter()
            .filter_map(|h| {
                let prefix = format!("{root}/{date}/{h}/");
                fleetscore_store::partition_start(&prefix).map(|t| (t, prefix))
            })
            .collect();
        if last {
            hours.reverse();
        }
        for (start, prefix) in hours {
            if budget == 0 {
                return Ok((None, true));
            }
            budget -= 1;
            let keys = store.list(&prefix).await?;
            // An hour's readings, or its predictions' parts: without
            // them, no manifest there counts rows.
            if !keys.iter().any(|k| k.ends_with(".parquet")) {
                continue;
            }
            let hour_end = start.saturating_add(HOUR);
            if root == "raw" {
                return Ok((Some((start, hour_end)), false));
            }
            let mut end = None;
            for k in keys.iter().filter(|k| k.contains("/manifest-")) {
                if budget == 0 {
                    return Ok((None, true));
                }
                budget -= 1;
                let Some(data) = store.get(k).await? else {
                    continue;
                };
                let Ok(m) = serde_json::from_slice::<Manifest>(&data) else {
                    continue;
                };
                if m.rows > 0 {
                    let window_end = parse_ts(&m.window_end).unwrap_or(hour_end);
                    end = Some(end.unwrap_or(hour_end).max(window_end));
                }
            }
            if let Some(end) = end {
                return Ok((Some((start, end)), false));
            }
        }
    }
    Ok((None, false))
}

async fn openapi() -> Response {
    Json(openapi::document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn instants_carry_a_fraction_only_when_they_have_one() {
        let hour = 1_796_439_600_000_000_000; // 2026-12-05T03:00:00Z
        assert_eq!(rfc3339(hour), "2026-12-05T03:00:00Z");
        assert_eq!(rfc3339(hour + 250_000_000), "2026-12-05T03:00:00.250Z");
        assert_eq!(rfc3339(hour + 1_000), "2026-12-05T03:00:00.000001Z");
        assert_eq!(rfc3339(hour + 120_000), "2026-12-05T03:00:00.000120Z");
        assert_eq!(rfc3339(hour + 7), "2026-12-05T03:00:00.000000007Z");
        assert_eq!(
            rfc3339(hour + 999_999_999),
            "2026-12-05T03:00:00.999999999Z"
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
