//! The HTTP API under `/v1` (JSON), `/readyz` and `/v1/openapi.json`
//! (the document of every route, in [`openapi`], derived from the
//! handlers' `#[utoipa::path]` attributes and the request and answer
//! types: the answers in [`types`], the requests beside their handlers).
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
use fleetscore_jobs::backfill::WindowJobs;
use fleetscore_jobs::db::{
    DbError, JobFilter, JobKind, JobRecord, JobState, JobStore, TaskKind, Threshold,
};
use fleetscore_jobs::schedule::ScheduleSpec;
use fleetscore_store::lake::{self, Area, DeviceCount, PredictionsPartition};
use fleetscore_store::{ImportRequest, Registry, Store, HOUR_NS};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::config::JobsConfig;

pub(crate) mod openapi;
pub(crate) mod types;

use types::{
    BadRequest, BodyTimeout, Conflict, Extent, ExtentOf, Failure, Forbidden, Job, JobAnswer,
    JobDetail, Jobs, LogDown, Model, ModelAnswer, ModelList, ModelSummary, NotFound, NotReady,
    Overview, PredictionRow, PredictionRows, Queued, ReadingRow, ReadingRows, Ready, Rfc3339,
    Schedule, Schedules, SlowTask, SlowTasks, Task, TooLarge, Unauthorized, Unavailable, Uploaded,
};

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
    pub compact: Option<crate::compactor::CompactNow>,
    /// Wakes this server's scheduler loop, so that a queued job starts now
    /// rather than at its next tick (`[jobs] tick_interval`).
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// The sources' dead letters, for `GET /v1/rejected`.
    pub dead_letters: Option<Arc<crate::deadletter::DeadLetters>>,
    /// The server's telemetry (dead-letter counts since start).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Whether the broker sources are connected, for `/readyz`.
    pub sources: Option<Arc<crate::sources::Health>>,
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
        // The database is restarting, busy, or lost a race: try again.
        e if e.retryable() => retry_later(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        other => err(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// A job record as the API gives it.
fn job_answer(j: &JobRecord) -> Response {
    Json(JobAnswer { job: Job::from(j) }).into_response()
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
/// clients send it), or the password of HTTP Basic auth
/// (`Basic base64(user:T)`, what Telegraf's InfluxDB output and InfluxDB
/// 1.x clients send for a username and password; the user name is not
/// checked, as InfluxDB 2.x's v1 compatibility does not). The scheme is
/// matched in any case, as HTTP says (RFC 9110, 11.1): `bearer T` and
/// `BEARER T` work too.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
    use base64::Engine as _;
    let v = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?
        .trim_start();
    let (scheme, token) = v.split_once([' ', '\t'])?;
    let token = token.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, password) = text.split_once(':').unwrap_or((&text, ""));
        let t = if password.is_empty() { user } else { password };
        return (!t.is_empty()).then(|| std::borrow::Cow::Owned(t.to_string()));
    }
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then_some(token)
        .filter(|t| !t.is_empty())
        .map(std::borrow::Cow::Borrowed)
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
        match bearer(headers).as_deref() {
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
        match bearer(headers).as_deref() {
            None => Err(err(
                StatusCode::UNAUTHORIZED,
                "a token is required to read: Authorization: Bearer <token>",
            )),
            Some(t) if any_of(t, &self.admin_tokens) || any_of(t, &self.ingest_tokens) => Ok(()),
            Some(_) => Err(err(StatusCode::FORBIDDEN, "unknown token")),
        }
    }
}

/// An extractor that lets a request through only with an admin token
/// (when tokens are configured): put first among a handler's arguments,
/// it answers 401 or 403 before anything else of the request is read.
struct MayAdmin;

impl axum::extract::FromRequestParts<Arc<Api>> for MayAdmin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Arc<Api>,
    ) -> Result<Self, Response> {
        api.admin(&parts.headers).map(|()| MayAdmin)
    }
}

/// Like [`MayAdmin`], for reads: any configured token when
/// `[auth] protect_reads` is on, none otherwise.
struct MayRead;

impl axum::extract::FromRequestParts<Arc<Api>> for MayRead {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Arc<Api>,
    ) -> Result<Self, Response> {
        api.read(&parts.headers).map(|()| MayRead)
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
        .route("/v1/rejected", get(rejected))
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

/// Readiness: the job store and the object store answer and the ingest log can write
#[utoipa::path(
    get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, description = "Not ready; the fields say what is down (and whether the log's disk is full).",
            body = NotReady,
            headers(("Retry-After" = u32, description = "Seconds to wait before asking again (1)."))),
    ),
    extensions(("x-auth" = json!("open"))),
)]
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
    let log_down = log.as_ref().filter(|h| !h.writable).map(|h| LogDown {
        reason: h.reason.clone(),
        disk_full: h.disk_full,
        since: h.since.map(|t| {
            Rfc3339::from_ns(
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i64),
            )
        }),
        failed_recoveries: h.failed_recoveries,
    });
    let sources_down = api
        .sources
        .as_ref()
        .map(|h| h.problems())
        .unwrap_or_default();
    match (db, store, log_down) {
        (Ok(_), Ok(_), None) if sources_down.is_empty() => {
            Json(Ready { ready: true }).into_response()
        }
        (db, store, log) => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(NotReady {
                    ready: false,
                    job_store: db.err().map(|e| e.to_string()),
                    object_store: store.err().map(|e| e.to_string()),
                    ingest_log: log,
                    sources: sources_down,
                }),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
    }
}

/// The query of `GET /v1/rejected`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RejectedQuery {
    /// Only this source's letters (`http`, `mqtt`, `kafka`).
    source: Option<String>,
    /// At most this many letters (50 by default, at most 1000).
    #[param(default = 50)]
    limit: Option<u32>,
}

/// What the sources could not read: counts and the newest dead letters
#[utoipa::path(
    get, path = "/v1/rejected", tag = "data",
    params(RejectedQuery),
    responses(
        (status = 200, description = "Counts since start, and the newest letters kept under rejected/ in the store.", body = types::Rejected),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn rejected(State(api): A, _: MayRead, Query(q): Query<RejectedQuery>) -> Response {
    let source = q.source.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = source {
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return err(
                StatusCode::BAD_REQUEST,
                format!("source {s:?}: a source name (http, mqtt, kafka)"),
            );
        }
    }
    let limit = q.limit.unwrap_or(50).min(1000) as usize;
    let counts = api
        .metrics
        .as_ref()
        .map(|m| m.dead_letter_counts())
        .unwrap_or_default()
        .into_iter()
        .filter(|(s, _, _)| source.is_none_or(|f| f == *s))
        .map(|(source, reason, count)| types::RejectedCount {
            source: source.to_string(),
            reason: reason.to_string(),
            count,
        })
        .collect();
    let letters = match &api.dead_letters {
        Some(d) => match d.recent(source, limit).await {
            Ok(l) => l.into_iter().map(types::DeadLetterOut::from).collect(),
            Err(e) => return retry_later(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        None => Vec::new(),
    };
    Json(types::Rejected { counts, letters }).into_response()
}

/// The query of `GET /v1/jobs`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<types::JobState>)]
    state: Option<String>,
    /// Only jobs of this schedule.
    schedule: Option<String>,
    /// At most this many jobs (100 by default; more than 10000 reads as
    /// 10000).
    #[param(default = 100)]
    limit: Option<u32>,
}

/// Jobs, newest first
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(JobsQuery),
    responses(
        (status = 200, description = "The jobs.", body = Jobs),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn list_jobs(State(api): A, _: MayRead, Query(q): Query<JobsQuery>) -> Response {
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
        Ok(jobs) => Json(Jobs {
            jobs: jobs.iter().map(Job::from).collect(),
        })
        .into_response(),
        Err(e) => db_err(e),
    }
}

/// A job with its tasks and the models that failed
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job.", body = JobDetail),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn get_job(State(api): A, _: MayRead, Path(id): Path<i64>) -> Response {
    let job = match api.db.job(id).await {
        Ok(j) => j,
        Err(e) => return db_err(e),
    };
    let (tasks, failures) = match (api.db.tasks(id).await, api.db.failures(id).await) {
        (Ok(t), Ok(f)) => (t, f),
        (Err(e), _) | (_, Err(e)) => return db_err(e),
    };
    let tasks = match tasks.iter().map(Task::try_from).collect::<Result<_, _>>() {
        Ok(t) => t,
        Err(e) => return internal(e),
    };
    Json(JobDetail {
        job: Job::from(&job),
        tasks,
        failures: failures.iter().map(Failure::from).collect(),
    })
    .into_response()
}

/// Jobs to create: one per window of `window` covering `[from, to)`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Trigger {
    /// Start, RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC); rounded down to a
    /// window boundary.
    from: String,
    /// End (exclusive), as `from`.
    to: String,
    /// Window length (`1h`, `15m`); one job per window, at most 10000.
    #[schema(default = "1h")]
    window: Option<String>,
    /// Only these `device/tag` keys (default: every model).
    models: Option<Vec<String>>,
    /// Models per task (default `[jobs] batch_size`).
    batch_size: Option<u32>,
    /// A count (`5`) or a percentage (`10%`); default `[jobs]
    /// max_failed_models`.
    max_failed_models: Option<String>,
    /// Retries per task (default `[jobs] max_retries`).
    max_retries: Option<u32>,
}

/// Trigger jobs: one per window of `window` covering [from, to), queued for the runner
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body = Trigger,
    responses(
        (status = 202, description = "Queued; the new jobs' ids, oldest window first.", body = Queued),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 408, response = BodyTimeout),
        (status = 413, response = TooLarge),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("admin"))),
)]
async fn trigger(
    State(api): A,
    _: MayAdmin,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
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
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) => return err(StatusCode::BAD_REQUEST, format!("from: {e}")),
        (_, Err(e)) => return err(StatusCode::BAD_REQUEST, format!("to: {e}")),
    };
    let window = match t
        .window
        .as_deref()
        .unwrap_or("1h")
        .parse::<fleetscore_stream::Span>()
    {
        Ok(s) => s.as_nanos(),
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("window: {e}")),
    };
    let max_failed: Threshold = match t.max_failed_models.as_deref().map(str::parse).transpose() {
        Ok(m) => m.unwrap_or(api.jobs.max_failed_models),
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let jobs = WindowJobs {
        from,
        to,
        window,
        kind: JobKind::Manual,
        selection: t.models,
        batch_size: t.batch_size.unwrap_or(api.jobs.batch_size),
        max_failed,
        max_retries: t.max_retries.unwrap_or(api.jobs.max_retries),
    };
    let jobs = match jobs.jobs() {
        Ok(jobs) => jobs,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Err(r) = compact_first(&api).await {
        return r;
    }
    let ids = match fleetscore_jobs::backfill::create_jobs(&*api.db, &jobs, crate::now_ns()).await {
        Ok(ids) => ids,
        Err(e) => return db_err(e),
    };
    api.wake_runner();
    (StatusCode::ACCEPTED, Json(Queued { jobs: ids })).into_response()
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

/// Queue a failed, cancelled or skipped job again
#[utoipa::path(
    post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = i64, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job, queued.", body = JobAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("admin"))),
)]
async fn retry(State(api): A, _: MayAdmin, Path(id): Path<i64>) -> Response {
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
            job_answer(&j)
        }
        Err(e) => db_err(e),
    }
}

/// Cancel a queued or running job (a running one stops before its next task)
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = i64, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job, cancelled.", body = JobAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
    extensions(("x-auth" = json!("admin"))),
)]
async fn cancel(State(api): A, _: MayAdmin, Path(id): Path<i64>) -> Response {
    match api.db.cancel(id, crate::now_ns()).await {
        Ok(j) => {
            // The job's own span (its phases' runners never send it).
            fleetscore_jobs::trace::ended(&j);
            // Its staged inputs are no longer needed (a retry plans again).
            if let Err(e) = fleetscore_jobs::run::drop_staging(&api.store, id).await {
                tracing::warn!(
                    job = id,
                    "deleting the cancelled job's staged inputs: {e:#}"
                );
            }
            job_answer(&j)
        }
        Err(e) => db_err(e),
    }
}

/// The query of `GET /v1/tasks/slowest`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SlowestQuery {
    /// At most this many tasks (10 by default; more than 1000 reads as
    /// 1000).
    #[param(default = 10)]
    limit: Option<u32>,
    /// Only tasks of this kind: map (they read the data) or score; both by
    /// default (also when empty).
    #[param(value_type = Option<types::TaskKind>)]
    kind: Option<String>,
}

/// The slowest finished tasks, slowest first
#[utoipa::path(
    get, path = "/v1/tasks/slowest", tag = "jobs",
    params(SlowestQuery),
    responses(
        (status = 200, description = "The tasks.", body = SlowTasks),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn slowest(State(api): A, _: MayRead, Query(q): Query<SlowestQuery>) -> Response {
    let kind = match q
        .kind
        .as_deref()
        .filter(|k| !k.is_empty())
        .map(str::parse::<TaskKind>)
    {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(_)) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!(
                    "kind {:?}: use map (tasks that read the data) or score",
                    q.kind.unwrap_or_default()
                ),
            )
        }
    };
    match api
        .db
        .slowest_tasks(q.limit.unwrap_or(10).min(1000), kind)
        .await
    {
        Ok(tasks) => match tasks.iter().map(SlowTask::try_from).collect() {
            Ok(tasks) => Json(SlowTasks { tasks }).into_response(),
            Err(e) => internal(e),
        },
        Err(e) => db_err(e),
    }
}

/// The configured schedules, with their last window and next run
#[utoipa::path(
    get, path = "/v1/schedules", tag = "jobs",
    responses(
        (status = 200, description = "The schedules.", body = Schedules),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn schedules(State(api): A, _: MayRead) -> Response {
    let mut out = Vec::new();
    for s in &api.schedules {
        let last = match api.db.last_fire(&s.name).await {
            Ok(l) => l,
            Err(e) => return db_err(e),
        };
        let next = fleetscore_jobs::schedule::next_run(s, crate::now_ns());
        out.push(Schedule {
            name: s.name.clone(),
            cron: s.cron.clone(),
            window_ns: s.window_ns,
            delay_ns: s.delay_ns,
            mode: s.mode.clone(),
            batch_size: s.batch_size,
            max_failed_models: s.max_failed.to_string(),
            max_retries: s.max_retries,
            concurrency: s.concurrency.into(),
            catch_up: s.catch_up,
            last_window_end: last.map(Rfc3339::from_ns),
            next_run: next.map(Rfc3339::from_ns),
        });
    }
    Json(Schedules { schedules: out }).into_response()
}

/// Registered models, each with its live version
#[utoipa::path(
    get, path = "/v1/models", tag = "models",
    responses(
        (status = 200, description = "The models.", body = ModelList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn models(State(api): A, _: MayRead) -> Response {
    match api.registry.index().await {
        Ok(index) => match index.models.values().map(ModelSummary::try_from).collect() {
            Ok(models) => Json(ModelList {
                generation: index.generation,
                models,
            })
            .into_response(),
            Err(e) => internal(e),
        },
        Err(e) => internal(e),
    }
}

fn key(device: &str, tag: &str) -> Result<ModelKey, Response> {
    ModelKey::new(device, tag).map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The path of a model's routes, `/v1/models/{device}/{tag}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct KeyPath {
    /// The device, or `*` for a tag's fallback model (URL-encode other
    /// special characters).
    device: String,
    /// The tag.
    tag: String,
}

/// A model's versions
#[utoipa::path(
    get, path = "/v1/models/{device}/{tag}", tag = "models",
    params(KeyPath),
    responses(
        (status = 200, description = "The model.", body = ModelAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn model(
    State(api): A,
    _: MayRead,
    Path(KeyPath { device, tag }): Path<KeyPath>,
) -> Response {
    let k = match key(&device, &tag) {
        Ok(k) => k,
        Err(r) => return r,
    };
    match api.registry.index().await {
        Ok(index) => match index.models.get(&format!("{}/{}", k.device, k.tag)) {
            Some(e) => model_answer(e),
            None => err(
                StatusCode::NOT_FOUND,
                format!("no model ({device}, {tag}) is registered"),
            ),
        },
        Err(e) => internal(e),
    }
}

/// A model as the API gives it.
fn model_answer(e: &fleetscore_store::KeyEntry) -> Response {
    match Model::try_from(e) {
        Ok(model) => Json(ModelAnswer { model }).into_response(),
        Err(e) => internal(e),
    }
}

/// The query of a model upload.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// `native` (default: compiled by fleetscore, never executed) or
    /// `python` (stored as given and run by the Python runtime of a
    /// deployment with `[python] enabled = true`, which executes its code).
    #[param(value_type = Option<String>, pattern = "^(native|python)$")]
    runtime: Option<String>,
    /// With `runtime=python`: `outlier`, `regressor` or `classifier`
    /// (default: the workers tell from the model).
    #[param(value_type = Option<String>, pattern = "^(outlier|regressor|classifier)$")]
    kind: Option<String>,
    /// With `runtime=python`: the methods to call, comma-separated.
    methods: Option<String>,
}

/// Upload a scikit-learn pickle or joblib file (the body, at most 2 MB) as the model's new live version
#[utoipa::path(
    post, path = "/v1/models/{device}/{tag}", tag = "models",
    params(KeyPath, UploadQuery),
    request_body(content = inline(types::Binary), content_type = "application/octet-stream",
        description = "The model file: a scikit-learn pickle or joblib file (gzip, bz2, xz or zlib compressed joblib files too)."),
    responses(
        (status = 201, description = "Imported (or unchanged: the same model as an existing version).", body = Uploaded),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 408, response = BodyTimeout),
        (status = 413, response = TooLarge),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("admin"))),
)]
async fn upload(
    State(api): A,
    _: MayAdmin,
    headers: HeaderMap,
    Path(KeyPath { device, tag }): Path<KeyPath>,
    Query(q): Query<UploadQuery>,
    body: axum::body::Body,
) -> Response {
    let k = match key(&device, &tag) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let python = match upload_runtime(&q) {
        Ok(p) => p,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
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
    if let Some((kind, methods)) = python {
        // Stored as given: nothing in it is read or run here.
        if body.len() as u64 > limits.max_decompressed_bytes {
            return err(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "not imported: {} bytes, more than the {} a model may have ([server] max_model_bytes)",
                    body.len(),
                    limits.max_decompressed_bytes
                ),
            );
        }
        let model = fleetscore_store::ModelBody::Python(fleetscore_store::PythonModel {
            bytes: body.to_vec().into(),
            kind,
            methods,
        });
        return register_upload(&api, k, model).await;
    }
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
        Ok(Err(e)) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("not imported: {e}. To run it in Python instead, upload it with ?runtime=python: its code will then be executed, by the Python runtime of a deployment with [python] enabled = true"),
            )
        }
        Err(e) => return internal(e),
    };
    register_upload(&api, k, model.into()).await
}

/// The Python runtime's settings of an upload (`None`: native).
#[allow(clippy::type_complexity)]
fn upload_runtime(
    q: &UploadQuery,
) -> Result<Option<(Option<fleetscore_models::Kind>, Vec<String>)>, String> {
    let runtime = fleetscore_store::Runtime::parse(q.runtime.as_deref().unwrap_or("native"))?;
    if runtime.is_native() {
        if q.kind.is_some() || q.methods.is_some() {
            return Err("kind and methods are for runtime=python (a native model knows its kind and methods)".into());
        }
        return Ok(None);
    }
    let kind = q
        .kind
        .as_deref()
        .map(fleetscore_models::Kind::parse)
        .transpose()?;
    let methods: Vec<String> = match &q.methods {
        None => Vec::new(),
        Some(m) => m.split(',').map(str::to_string).collect(),
    };
    let methods = fleetscore_store::PythonModel::check_methods(&methods)
        .map_err(|e| format!("methods: {e}"))?;
    Ok(Some((kind, methods)))
}

/// Registers an uploaded model; 201 with what it did.
async fn register_upload(api: &Api, k: ModelKey, model: fleetscore_store::ModelBody) -> Response {
    let req = ImportRequest {
        key: k,
        model,
        source: "uploaded over the API".into(),
        input: Default::default(),
    };
    match api
        .registry
        .import(vec![req], &format_ts(crate::now_ns()))
        .await
    {
        Ok(out) => match out.first() {
            Some(o) => (StatusCode::CREATED, Json(Uploaded { outcome: o.into() })).into_response(),
            None => internal("the registry reported no outcome for the uploaded model"),
        },
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

/// The version to make live.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Promote {
    /// The version to make live.
    version: u32,
}

/// Make a version of the model live
#[utoipa::path(
    post, path = "/v1/models/{device}/{tag}/promote", tag = "models",
    params(KeyPath),
    request_body = Promote,
    responses(
        (status = 200, description = "The model, with that version live.", body = ModelAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = BodyTimeout),
        (status = 413, response = TooLarge),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("admin"))),
)]
async fn promote(
    State(api): A,
    _: MayAdmin,
    headers: HeaderMap,
    Path(KeyPath { device, tag }): Path<KeyPath>,
    body: axum::body::Body,
) -> Response {
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
        Ok(e) => model_answer(&e),
        Err(fleetscore_store::StoreError::Invalid(m)) => err(StatusCode::NOT_FOUND, m),
        Err(e) => registry_err(e),
    }
}

/// What the reads of a time range were asked: the union of the queries
/// below, each the documented query of one route.
#[derive(Deserialize, Default)]
struct RangeQuery {
    device: Option<String>,
    tag: Option<String>,
    from: Option<String>,
    to: Option<String>,
    anomalies: Option<bool>,
    limit: Option<usize>,
}

/// The query of `GET /v1/readings`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReadingsQuery {
    /// Only this device (required: the readings of one device are read).
    #[param(required = true)]
    device: Option<String>,
    /// Only this tag.
    tag: Option<String>,
    /// Range start (inclusive), RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC).
    /// Default: 24 hours before `to`.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Range end (exclusive). Default: 24 hours after `from`, else the end
    /// of the newest job that scored readings (else now). At most 744
    /// hours after `from`.
    #[param(format = DateTime)]
    to: Option<String>,
    /// At most this many rows, the earliest (100000 by default; more than
    /// 1000000 reads as 1000000); `truncated` says whether more were left
    /// out.
    #[param(default = 100_000)]
    limit: Option<usize>,
}

impl From<ReadingsQuery> for RangeQuery {
    fn from(q: ReadingsQuery) -> RangeQuery {
        RangeQuery {
            device: q.device,
            tag: q.tag,
            from: q.from,
            to: q.to,
            anomalies: None,
            limit: q.limit,
        }
    }
}

/// The query of `GET /v1/anomalies`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AnomaliesQuery {
    /// Only this device.
    device: Option<String>,
    /// Only this tag.
    tag: Option<String>,
    /// Range start (inclusive), RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC).
    /// Default: 24 hours before `to`.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Range end (exclusive). Default: 24 hours after `from`, else the end
    /// of the newest job that scored readings (else now). At most 744
    /// hours after `from`.
    #[param(format = DateTime)]
    to: Option<String>,
    /// At most this many rows, the earliest (10000 by default; more than
    /// 1000000 reads as 1000000); `truncated` says whether more were left
    /// out.
    #[param(default = 10_000)]
    limit: Option<usize>,
}

impl From<AnomaliesQuery> for RangeQuery {
    fn from(q: AnomaliesQuery) -> RangeQuery {
        RangeQuery {
            device: q.device,
            tag: q.tag,
            from: q.from,
            to: q.to,
            anomalies: Some(true),
            limit: q.limit,
        }
    }
}

/// The query of `GET /v1/predictions`: that of `GET /v1/anomalies`, and
/// whether to keep only anomalies.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PredictionsQuery {
    /// Only this device.
    device: Option<String>,
    /// Only this tag.
    tag: Option<String>,
    /// Range start (inclusive), RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC).
    /// Default: 24 hours before `to`.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Range end (exclusive). Default: 24 hours after `from`, else the end
    /// of the newest job that scored readings (else now). At most 744
    /// hours after `from`.
    #[param(format = DateTime)]
    to: Option<String>,
    /// At most this many rows, the earliest (10000 by default; more than
    /// 1000000 reads as 1000000); `truncated` says whether more were left
    /// out.
    #[param(default = 10_000)]
    limit: Option<usize>,
    /// Only anomalies (prediction 1).
    #[param(default = false)]
    anomalies: Option<bool>,
}

impl From<PredictionsQuery> for RangeQuery {
    fn from(q: PredictionsQuery) -> RangeQuery {
        RangeQuery {
            device: q.device,
            tag: q.tag,
            from: q.from,
            to: q.to,
            anomalies: q.anomalies,
            limit: q.limit,
        }
    }
}

/// The query of `GET /v1/overview`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct OverviewQuery {
    /// Range start (inclusive), RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC).
    /// Default: 24 hours before `to`.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Range end (exclusive). Default: 24 hours after `from`, else the end
    /// of the newest job that scored readings (else now). At most 744
    /// hours after `from`.
    #[param(format = DateTime)]
    to: Option<String>,
}

impl From<OverviewQuery> for RangeQuery {
    fn from(q: OverviewQuery) -> RangeQuery {
        RangeQuery {
            from: q.from,
            to: q.to,
            ..RangeQuery::default()
        }
    }
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
        .filter(|j| j.counts.rows > 0)
        .map(|j| j.window_end)
        .max()
        .unwrap_or_else(crate::now_ns)
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
    'hours: for h in lake::hours(from, to) {
        // Only the parts a manifest names: not those of a job still
        // running, nor a shard's before its manifest.
        let partition = PredictionsPartition::list(&api.store, h)
            .await
            .map_err(internal)?;
        for k in partition.parts(&api.store).await.map_err(internal)? {
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
    Ok(Json(PredictionRows {
        from: Rfc3339::from_ns(from),
        to: Rfc3339::from_ns(to),
        rows: rows.into_iter().map(PredictionRow::from).collect(),
        truncated,
    })
    .into_response())
}

/// Predictions in a time range, by device and tag
#[utoipa::path(
    get, path = "/v1/predictions", tag = "data",
    params(PredictionsQuery),
    responses(
        (status = 200, description = "The predictions, oldest first.", body = PredictionRows),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn predictions(State(api): A, _: MayRead, Query(q): Query<PredictionsQuery>) -> Response {
    let q = RangeQuery::from(q);
    let only = q.anomalies.unwrap_or(false);
    prediction_rows(&api, &q, only).await.unwrap_or_else(|r| r)
}

/// Anomalous predictions (prediction 1) in a time range
#[utoipa::path(
    get, path = "/v1/anomalies", tag = "data",
    params(AnomaliesQuery),
    responses(
        (status = 200, description = "The anomalies, oldest first.", body = PredictionRows),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn anomalies(State(api): A, _: MayRead, Query(q): Query<AnomaliesQuery>) -> Response {
    let q = RangeQuery::from(q);
    prediction_rows(&api, &q, true).await.unwrap_or_else(|r| r)
}

/// Stored readings (raw/) of one device, and tag, in a time range
#[utoipa::path(
    get, path = "/v1/readings", tag = "data", operation_id = "get_readings",
    params(ReadingsQuery),
    responses(
        (status = 200, description = "The readings, oldest first.", body = ReadingRows),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn readings(State(api): A, _: MayRead, Query(q): Query<ReadingsQuery>) -> Response {
    let q = RangeQuery::from(q);
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
    let objects = match lake::list_raw(&api.store, from, to).await {
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
        let mut r = match lake::read_raw(&api.store, &o.key).await {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => return internal(e),
        };
        let (device, tag) = (device.clone(), q.tag.clone());
        let part = tokio::task::spawn_blocking(move || {
            r.retain_time(Some(from), Some(to));
            let wanted: Vec<bool> = r
                .keys()
                .map(|(d, t)| d == device && tag.as_deref().is_none_or(|x| x == t))
                .collect();
            r.iter()
                .zip(r.key_ids())
                .filter(|(_, &k)| wanted[k as usize])
                .map(|(x, _)| (x.ts, x.tag.to_owned(), x.value))
                .collect::<Vec<_>>()
        })
        .await;
        match part {
            Ok(p) => rows.extend(p),
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
    let rows = rows
        .into_iter()
        .map(|(ts, tag, value)| ReadingRow {
            ts: Rfc3339::from_ns(ts),
            device: device.clone(),
            tag,
            value,
        })
        .collect();
    Json(ReadingRows {
        from: Rfc3339::from_ns(from),
        to: Rfc3339::from_ns(to),
        rows,
        truncated,
    })
    .into_response()
}

/// Readings scored and anomalies per hour per device, from the jobs' manifests
#[utoipa::path(
    get, path = "/v1/overview", tag = "data",
    params(OverviewQuery),
    responses(
        (status = 200, description = "One row per device, one column per hour.", body = Overview),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn overview(State(api): A, _: MayRead, Query(q): Query<OverviewQuery>) -> Response {
    let q = RangeQuery::from(q);
    let (from, to) = match range(&api, &q).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let hours: Vec<i64> = lake::hours(from, to).collect();
    let mut per: BTreeMap<String, HashMap<usize, DeviceCount>> = BTreeMap::new();
    for (i, h) in hours.iter().enumerate() {
        let partition = match PredictionsPartition::list(&api.store, *h).await {
            Ok(p) => p,
            Err(e) => return internal(e),
        };
        let manifests = match partition.manifests(&api.store).await {
            Ok(m) => m,
            Err(e) => return internal(e),
        };
        for m in manifests {
            for (d, c) in m.devices {
                let e = per.entry(d).or_default().entry(i).or_default();
                e.rows += c.rows;
                e.anomalies += c.anomalies;
            }
        }
    }
    let grid = |f: fn(&DeviceCount) -> u64| -> Vec<Vec<u64>> {
        per.values()
            .map(|m| (0..hours.len()).map(|i| m.get(&i).map_or(0, f)).collect())
            .collect()
    };
    Json(Overview {
        from: Rfc3339::from_ns(from),
        to: Rfc3339::from_ns(to),
        hours: hours.iter().map(|h| Rfc3339::from_ns(*h)).collect(),
        anomalies: grid(|c| c.anomalies),
        rows: grid(|c| c.rows),
        devices: per.into_keys().collect(),
    })
    .into_response()
}

/// Listings and manifest reads [`extent`] makes from each end of a
/// folder before it stops looking (an idle schedule leaves hours of
/// manifests that scored nothing; a month of them is looked through).
const EXTENT_BUDGET: usize = 24 * 31 + 64;

/// Where the data is: the first and last hour holding scored predictions and stored readings
///
/// Predictions count where a manifest counts rows; readings where a `raw/`
/// object is. A reader moves its range there.
#[utoipa::path(
    get, path = "/v1/extent", tag = "data",
    responses(
        (status = 200, description = "The extent.", body = Extent),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("read"))),
)]
async fn extent(State(api): A, _: MayRead) -> Response {
    // Found from the partition folders (`predictions/date=…/hour=…`,
    // `raw/date=…/hour=…`): one listing of the dates, then the hours of
    // the dates at each end until one holds data; the cost follows the
    // hours looked at, not the number of objects stored.
    let mut complete = true;
    let mut found = [None, None];
    for (slot, area) in found.iter_mut().zip([Area::Predictions, Area::Raw]) {
        let days = match lake::partition_days(&api.store, area).await {
            Ok(d) => d,
            Err(e) => return internal(e),
        };
        let ((first, cut_first), (last, cut_last)) = match tokio::join!(
            data_end(&api.store, area, &days, false),
            data_end(&api.store, area, &days, true)
        ) {
            (Ok(f), Ok(l)) => (f, l),
            (Err(e), _) | (_, Err(e)) => return internal(e),
        };
        complete &= !cut_first && !cut_last;
        // A search cut at its budget from one end may still have found the
        // other: what was found is said (with `complete` false), as the
        // extent known so far.
        let (first, last, end) = match (first, last) {
            (Some((first, _)), Some((last, end))) => (first, last, end),
            (Some((hour, end)), None) | (None, Some((hour, end))) => (hour, hour, end),
            (None, None) => continue,
        };
        *slot = Some(ExtentOf {
            first_hour: Rfc3339::from_ns(first),
            last_hour: Rfc3339::from_ns(last),
            end: Rfc3339::from_ns(end),
        });
    }
    let [predictions, readings] = found;
    Json(Extent {
        predictions,
        readings,
        max_hours: MAX_HOURS as u64,
        complete,
    })
    .into_response()
}

/// The first (or, with `last`, the last) hour of `area` that holds data,
/// and where that data ends: for raw, an hour with a Parquet object
/// (ending with the hour); for predictions, an hour whose manifests count
/// rows (ending with their windows). `None` if there is none, or none
/// within [`EXTENT_BUDGET`]; then the flag says whether the search stopped
/// at the budget.
async fn data_end(
    store: &Store,
    area: Area,
    days: &[i64],
    last: bool,
) -> Result<(Option<(i64, i64)>, bool), lake::LakeError> {
    let mut budget = EXTENT_BUDGET;
    let ordered: Box<dyn Iterator<Item = &i64> + Send> = if last {
        Box::new(days.iter().rev())
    } else {
        Box::new(days.iter())
    };
    for &day in ordered {
        let mut hours = lake::partition_hours(store, area, day).await?;
        if last {
            hours.reverse();
        }
        for start in hours {
            if budget == 0 {
                return Ok((None, true));
            }
            budget -= 1;
            let hour_end = start.saturating_add(HOUR);
            if area == Area::Raw {
                if lake::list_raw(store, start, hour_end).await?.is_empty() {
                    continue;
                }
                return Ok((Some((start, hour_end)), false));
            }
            let partition = PredictionsPartition::list(store, start).await?;
            // An hour's predictions' parts: without them, no manifest
            // there counts rows.
            if !partition.has_parts() {
                continue;
            }
            let mut end = None;
            for k in partition.manifest_keys() {
                if budget == 0 {
                    return Ok((None, true));
                }
                budget -= 1;
                let Some(m) = lake::read_manifest(store, k).await? else {
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

/// This document
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "service",
    responses(
        (status = 200, description = "OpenAPI 3.1.", body = Object),
    ),
    extensions(("x-auth" = json!("open"))),
)]
async fn openapi() -> Response {
    // Built once: it is the same for the life of the process.
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(openapi::document)).into_response()
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
