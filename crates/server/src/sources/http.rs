//! The HTTP source: the ingest endpoints on the server's listener.
//!
//! * `POST /write` (InfluxDB 1.x) and `POST /api/v2/write` (InfluxDB 2.x):
//!   line protocol;
//! * `POST /v1/readings`: JSON, NDJSON or CSV.
//!
//! A request is answered with success only after the ingest log's append
//! returned `Ok`, i.e. once its readings are durable; then the batch goes
//! to the window thread (see [`crate::windows`]). A body is parsed once
//! into [`Readings`](fleetscore_core::Readings), which go to the log and
//! the windows as they are.
//!
//! Requests are bounded so that no client can take the server from the
//! others: connections and timeouts in [`crate::http`]; bytes of bodies in
//! memory across requests ([`crate::http::InFlight`]); a log that cannot
//! write (a full disk) answers 507/503 with `Retry-After` and recovers by
//! itself; an `Idempotency-Key` makes a resent batch a duplicate instead of
//! a second copy.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetscore_codecs::{
    parse_csv_body, parse_json, parse_line_protocol, parse_line_protocol_partial, Batch,
    BatchError, CsvBodyConfig, LineProtocolConfig, Location, Precision,
};
use fleetscore_ingest::LogError;
use sha2::{Digest, Sha256};

use crate::api::types::{
    Accepted, BatchRefused, BodyTimeout, DiskFull, ErrorBody, InfluxQuery, IngestHeaders,
    KeyReused, PartialWrite, PingVerbose, QueryAnswer, ReadingIn, ReadingsJson, Refused, Rejection,
    Series, StatementResult, TooLarge, Unauthorized, Unavailable, UnsupportedMedia, WriteV1Query,
    WriteV2Query, LINE_PROTOCOL,
};
use crate::config::{BadLines, Config};
use crate::metrics::{Metrics, Source};
use crate::windows::Ingestor;
use fleetscore_core::TsUnit;

/// The HTTP source's settings, from `[auth]`, `[server]` and `[ingest]`.
#[derive(Clone)]
pub struct HttpSource {
    /// Accepted bearer tokens (ingest and admin); empty: none needed.
    tokens: Vec<String>,
    max_body: usize,
    line_protocol: LineProtocolConfig,
    csv: CsvBodyConfig,
    /// Numeric times of JSON bodies.
    ts_unit: TsUnit,
    /// Line protocol with bad lines: refused whole, or the good lines kept.
    bad_lines: BadLines,
    /// Bytes of request bodies in memory, across requests (shared with the
    /// API's uploads).
    inflight: Arc<crate::http::InFlight>,
}

impl HttpSource {
    /// The source `config` asks for, holding body bytes under `inflight`.
    pub fn new(config: &Config, inflight: Arc<crate::http::InFlight>) -> HttpSource {
        HttpSource {
            tokens: config
                .auth
                .ingest_tokens
                .iter()
                .chain(&config.auth.admin_tokens)
                .filter(|t| !t.is_empty())
                .cloned()
                .collect(),
            max_body: config.server.max_body_bytes,
            line_protocol: config.ingest.line_protocol.clone(),
            csv: CsvBodyConfig {
                ts_unit: config.ingest.ts_unit,
                ..config.ingest.csv.clone()
            },
            ts_unit: config.ingest.ts_unit,
            bad_lines: config.ingest.bad_lines,
            inflight,
        }
    }
}

impl super::Source for HttpSource {
    fn name(&self) -> &'static str {
        Source::HTTP.name()
    }

    fn routes(&self, ctx: &super::Context) -> Option<Router> {
        let app = Arc::new(App {
            ingestor: Arc::clone(&ctx.ingestor),
            metrics: Arc::clone(&ctx.metrics),
            tokens: self.tokens.clone(),
            max_body: self.max_body,
            inflight: Arc::clone(&self.inflight),
            line_protocol: self.line_protocol.clone(),
            csv: self.csv.clone(),
            ts_unit: self.ts_unit,
            bad_lines: self.bad_lines,
            dead_letters: Arc::clone(&ctx.dead_letters),
        });
        Some(
            Router::new()
                .route("/write", post(write_v1))
                .route("/api/v2/write", post(write_v2))
                .route("/v1/readings", post(readings))
                .route("/ping", get(ping).head(ping_head))
                .route("/query", get(query).post(query_post))
                .with_state(app),
        )
    }
}

/// What the ingest handlers share.
struct App {
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
    /// Accepted bearer tokens; empty: none needed.
    tokens: Vec<String>,
    max_body: usize,
    /// Bytes of request bodies in memory, across requests.
    inflight: Arc<crate::http::InFlight>,
    line_protocol: LineProtocolConfig,
    csv: CsvBodyConfig,
    ts_unit: TsUnit,
    bad_lines: BadLines,
    dead_letters: Arc<crate::deadletter::DeadLetters>,
}

type Query2 = HashMap<String, String>;

use crate::http::answer as error;

fn rejections(e: &BatchError) -> Vec<Rejection> {
    e.errors
        .iter()
        .map(|r| {
            let (line, element) = match r.at {
                Location::Line(n) => (Some(n as u64), None),
                Location::Element(i) => (None, Some(i as u64)),
                Location::Body => (None, None),
            };
            Rejection {
                line,
                element,
                reason: r.reason.clone(),
            }
        })
        .collect()
}

fn refused(e: &BatchError) -> Response {
    let rejections = rejections(e);
    let body = Refused {
        error: format!(
            "batch refused, nothing stored: {} problem(s); fix them and resend the whole batch",
            e.total()
        ),
        rejections,
        omitted: e.omitted as u64,
    };
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn authorized(app: &App, headers: &HeaderMap, query: &Query2) -> Result<(), Response> {
    if app.tokens.is_empty() {
        return Ok(());
    }
    // InfluxDB 1.x order: `u`/`p` in the query, then the header.
    let header = crate::api::bearer(headers);
    let given = query
        .get("p")
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .or(header.as_deref());
    match given {
        Some(t) if crate::api::any_of(t, &app.tokens) => Ok(()),
        Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong ingest token")),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "an ingest token is required: Authorization: Bearer <token> (or Token <token>, HTTP Basic auth with the token as password, or ?p=<token>)",
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
    let now = crate::now_ns();
    let Some(doubt) = crate::plausible::check(earliest, latest, unit_ns, now) else {
        return r;
    };
    let m = &app.metrics;
    m.implausible_batches.inc();
    let message = say(&doubt);
    let last = m.implausible_logged.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000_000_000
        && m.implausible_logged
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            readings = i.readings,
            warning = %message,
            "a batch with implausible timestamps (logged at most every 10 s; fleetscore_ingest_implausible_batches_total counts them all)"
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
            app.metrics.log_unavailable.inc();
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
            tracing::error!(error = %other, "ingest log append failed");
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
                app.metrics.duplicate(Source::HTTP, i.readings as u64);
            } else {
                app.metrics.stored(Source::HTTP, i.readings as u64);
            }
            Ok(i)
        }
        Ok(Ok(Err(e))) => Err(log_refused(app, &e)),
        Ok(Err(e)) => {
            app.metrics.refused(Source::HTTP, e.total() as u64);
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

/// Counts an ingest answer in the HTTP source's telemetry: one message
/// received, and what became of it (from its status).
fn counted(app: &App, r: Response) -> Response {
    let duplicate = r.headers().contains_key("idempotent-replayed");
    app.metrics.answered(Source::HTTP, r.status(), duplicate);
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
    let now = crate::now_ns();
    let config = app.line_protocol.clone();
    let endpoint = if v2 { "/api/v2/write" } else { "/write" };
    let key = Keyed::new(key, &[endpoint, &format!("{precision:?}")], &body);
    if app.bad_lines == BadLines::Skip {
        return write_partial(app, key, body, precision, now, endpoint).await;
    }
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

/// `[ingest] bad_lines = "skip"`: stores the good lines, keeps the bad
/// ones as dead letters, and answers as InfluxDB answers a partial write
/// (400, naming the bad lines), or 204 when every line was good.
async fn write_partial(
    app: &App,
    key: Option<Keyed>,
    body: Bytes,
    precision: Precision,
    now: i64,
    endpoint: &'static str,
) -> Response {
    let config = app.line_protocol.clone();
    let bad_slot: Arc<std::sync::Mutex<Option<BatchError>>> = Arc::default();
    let slot = Arc::clone(&bad_slot);
    let text = body.clone();
    let parse = move || {
        let p = parse_line_protocol_partial(&text, precision, now, &config);
        *slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = p.bad;
        Ok(p.batch)
    };
    let stored = match ingest(app, key, parse).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let bad = bad_slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let Some(bad) = bad else {
        let r = replayed(StatusCode::NO_CONTENT.into_response(), stored.duplicate);
        return questioned(
            app,
            r,
            &stored,
            precision.nanos(),
            crate::plausible::Doubt::line_protocol,
        );
    };
    app.metrics.refused(Source::HTTP, bad.total() as u64);
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let line = |at: &Location| match at {
        Location::Line(n) => lines.get(n.wrapping_sub(1)).copied().unwrap_or_default(),
        _ => &b""[..],
    };
    let mut letters: Vec<_> = bad
        .errors
        .iter()
        .map(|r| {
            app.dead_letters.letter(
                Source::HTTP,
                r.problem,
                r.reason.clone(),
                format!("{endpoint} {}", r.at),
                trim_cr(line(&r.at)),
            )
        })
        .collect();
    if bad.omitted > 0 {
        letters.push(app.dead_letters.letter(
            Source::HTTP,
            fleetscore_codecs::Problem::Syntax,
            format!(
                "{} more bad lines in this body, not kept one by one (only the first {} are)",
                bad.omitted,
                bad.errors.len()
            ),
            endpoint.to_string(),
            b"",
        ));
    }
    app.dead_letters.keep(Source::HTTP, letters).await;
    // InfluxDB 1.x's wording, which clients and Telegraf log as they are:
    // `partial write: unable to parse '<line>': <reason> dropped=N` (without
    // `partial write:` when no line was good).
    let shown: Vec<String> = bad
        .errors
        .iter()
        .take(10)
        .map(|r| {
            format!(
                "unable to parse '{}' ({}): {}",
                String::from_utf8_lossy(trim_cr(line(&r.at)))
                    .chars()
                    .take(200)
                    .collect::<String>(),
                r.at,
                r.reason
            )
        })
        .collect();
    let mut message = shown.join("\n");
    if bad.total() > shown.len() {
        message.push_str(&format!("\n… and {} more", bad.total() - shown.len()));
    }
    let message = if stored.readings > 0 {
        format!("partial write: {message} dropped={}", bad.total())
    } else {
        format!("{message} dropped={}", bad.total())
    };
    let body = PartialWrite {
        error: message.clone(),
        code: "invalid".into(),
        message,
        stored: stored.readings as u64,
        dropped: bad.total() as u64,
        rejections: rejections(&bad),
        omitted: bad.omitted as u64,
    };
    replayed(
        (StatusCode::BAD_REQUEST, Json(body)).into_response(),
        stored.duplicate,
    )
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Ingest InfluxDB v1 line protocol; answered once the batch is durable
#[utoipa::path(
    post, path = "/write", tag = "ingest",
    params(WriteV1Query, IngestHeaders),
    request_body(content = String, content_type = "text/plain", description = LINE_PROTOCOL,
        example = json!("machine,device=pump-7 temp=21.5,rpm=1450i 1796439600000000000\n")),
    responses(
        (status = 204, description = "Stored (durable in the ingest log).", headers(
            ("Idempotent-Replayed" = String, description = "`true`: the batch was stored before under this Idempotency-Key; not stored again."),
            ("Fleetscore-Warning" = String, description = "The batch's timestamps are implausibly far from now (stored anyway); says which precision or unit would make them sensible."),
        )),
        (status = 400, response = BatchRefused),
        (status = 401, response = Unauthorized),
        (status = 408, response = BodyTimeout),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMedia),
        (status = 422, response = KeyReused),
        (status = 503, response = Unavailable),
        (status = 507, response = DiskFull),
    ),
    extensions(("x-auth" = json!("ingest"))),
)]
async fn write_v1(
    State(app): State<Arc<App>>,
    Query(query): Query<Query2>,
    req: Request,
) -> Response {
    let r = write_lp(&app, query, req, false).await;
    counted(&app, r)
}

/// Ingest InfluxDB v2 line protocol; answered once the batch is durable
#[utoipa::path(
    post, path = "/api/v2/write", tag = "ingest",
    params(WriteV2Query, IngestHeaders),
    request_body(content = String, content_type = "text/plain", description = LINE_PROTOCOL,
        example = json!("machine,device=pump-7 temp=21.5,rpm=1450i 1796439600000000000\n")),
    responses(
        (status = 204, description = "Stored (durable in the ingest log).", headers(
            ("Idempotent-Replayed" = String, description = "`true`: the batch was stored before under this Idempotency-Key; not stored again."),
            ("Fleetscore-Warning" = String, description = "The batch's timestamps are implausibly far from now (stored anyway); says which precision or unit would make them sensible."),
        )),
        (status = 400, response = BatchRefused),
        (status = 401, response = Unauthorized),
        (status = 408, response = BodyTimeout),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMedia),
        (status = 422, response = KeyReused),
        (status = 503, response = Unavailable),
        (status = 507, response = DiskFull),
    ),
    extensions(("x-auth" = json!("ingest"))),
)]
async fn write_v2(
    State(app): State<Arc<App>>,
    Query(query): Query<Query2>,
    req: Request,
) -> Response {
    let r = write_lp(&app, query, req, true).await;
    counted(&app, r)
}

/// What `X-Influxdb-Version` says: the InfluxDB API this server speaks, and
/// which server it is.
fn influx_version() -> String {
    format!("1.8.10-fleetscore.{}", env!("CARGO_PKG_VERSION"))
}

/// The query of `/ping`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PingQuery {
    /// `true`: answer 200 with the version in a JSON body (InfluxDB 1.x).
    verbose: Option<String>,
}

/// InfluxDB's liveness check: 204 with the version headers clients read
#[utoipa::path(
    get, path = "/ping", tag = "ingest", operation_id = "ping",
    params(PingQuery),
    responses(
        (status = 204, description = "Up. `X-Influxdb-Version` (read by InfluxDB clients' `ping()` and `version()`) and `X-Influxdb-Build` name the API and this server.", headers(
            ("X-Influxdb-Version" = String, description = "`1.8.10-fleetscore.<version>`: the InfluxDB 1.x write API, served by fleetscore."),
            ("X-Influxdb-Build" = String, description = "`fleetscore`."),
        )),
        (status = 200, description = "Up (`verbose=true`).", body = PingVerbose),
    ),
    extensions(("x-auth" = json!("open"))),
)]
async fn ping(q: Query<PingQuery>) -> Response {
    ping_answer(q).await
}

/// InfluxDB's liveness check, headers only
#[utoipa::path(
    head, path = "/ping", tag = "ingest", operation_id = "ping_head",
    responses(
        (status = 204, description = "Up, with the version headers of `GET /ping`.", headers(
            ("X-Influxdb-Version" = String, description = "`1.8.10-fleetscore.<version>`."),
            ("X-Influxdb-Build" = String, description = "`fleetscore`."),
        )),
    ),
    extensions(("x-auth" = json!("open"))),
)]
async fn ping_head() -> Response {
    ping_answer(Query(PingQuery { verbose: None })).await
}

async fn ping_answer(Query(q): Query<PingQuery>) -> Response {
    let version = influx_version();
    let mut r = if q
        .verbose
        .as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        Json(PingVerbose {
            version: version.clone(),
        })
        .into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    let h = r.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&version) {
        h.insert("x-influxdb-version", v);
    }
    h.insert(
        "x-influxdb-build",
        header::HeaderValue::from_static("fleetscore"),
    );
    r
}

/// The statements `/query` answers: what InfluxDB clients and Telegraf
/// send before they write.
enum Statement {
    CreateDatabase,
    ShowDatabases,
}

/// One InfluxQL statement, if it is one `/query` answers.
fn statement(text: &str) -> Option<Statement> {
    let words: Vec<String> = text
        .split_whitespace()
        .take(2)
        .map(str::to_ascii_uppercase)
        .collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["CREATE", "DATABASE"] => Some(Statement::CreateDatabase),
        ["SHOW", "DATABASES"] => Some(Statement::ShowDatabases),
        _ => None,
    }
}

/// InfluxDB's query endpoint, for the statements clients send before writing
#[utoipa::path(
    get, path = "/query", tag = "ingest", operation_id = "influx_query",
    params(InfluxQuery),
    responses(
        (status = 200, description = "Each statement answered: `CREATE DATABASE` succeeds and changes nothing (readings need no database); `SHOW DATABASES` lists `fleetscore`. As InfluxDB 1.x answers them, so Telegraf's `outputs.influxdb` and InfluxDB client libraries start cleanly.", body = QueryAnswer),
        (status = 400, description = "No `q`, or a statement other than those two: fleetscore stores readings, it does not answer InfluxQL (read them with `GET /v1/readings`).", body = ErrorBody),
        (status = 401, response = Unauthorized),
    ),
    extensions(("x-auth" = json!("ingest"))),
)]
async fn query(app: State<Arc<App>>, params: Query<Query2>, req: Request) -> Response {
    query_answer(app, params, req).await
}

/// InfluxDB's query endpoint with `q` in a form body (as Telegraf sends it)
#[utoipa::path(
    post, path = "/query", tag = "ingest", operation_id = "influx_query_post",
    params(InfluxQuery),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "`q=CREATE DATABASE \"telegraf\"` (or `q` in the query string)."),
    responses(
        (status = 200, description = "As `GET /query`.", body = QueryAnswer),
        (status = 400, description = "As `GET /query`; or the body is not a form.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 408, response = BodyTimeout),
        (status = 413, response = TooLarge),
        (status = 503, response = Unavailable),
    ),
    extensions(("x-auth" = json!("ingest"))),
)]
async fn query_post(app: State<Arc<App>>, params: Query<Query2>, req: Request) -> Response {
    query_answer(app, params, req).await
}

async fn query_answer(
    State(app): State<Arc<App>>,
    Query(params): Query<Query2>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    if let Err(r) = authorized(&app, &parts.headers, &params) {
        return r;
    }
    let mut q = params.get("q").cloned();
    if parts.method == axum::http::Method::POST && q.is_none() {
        // Telegraf sends `q` in a form body.
        let form = match crate::http::read_limited(&app.inflight, body, &parts.headers, 64 << 10, 1)
            .await
        {
            Ok(b) => b.bytes,
            Err(r) => return r,
        };
        match serde_urlencoded::from_bytes::<Query2>(&form) {
            Ok(f) => q = f.get("q").cloned(),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not a form (application/x-www-form-urlencoded): {e}"),
                )
            }
        }
    }
    let Some(q) = q.filter(|q| !q.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "missing required parameter \"q\"");
    };
    let mut results = Vec::new();
    for (i, text) in q
        .split(';')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        let series = match statement(text) {
            Some(Statement::CreateDatabase) => None,
            Some(Statement::ShowDatabases) => Some(vec![Series {
                name: "databases".into(),
                columns: vec!["name".into()],
                values: vec![vec!["fleetscore".into()]],
            }]),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "statement {} ({:?}): fleetscore answers only CREATE DATABASE and SHOW DATABASES here (so that InfluxDB clients start); read readings with GET /v1/readings",
                        i + 1,
                        text.chars().take(80).collect::<String>()
                    ),
                )
            }
        };
        results.push(StatementResult {
            statement_id: i as u32,
            series,
        });
    }
    Json(QueryAnswer { results }).into_response()
}

/// Ingest readings as JSON, NDJSON or CSV; answered once the batch is durable
#[utoipa::path(
    post, path = "/v1/readings", tag = "ingest", operation_id = "post_readings",
    params(IngestHeaders),
    request_body(
        description = "Readings as one JSON object, a JSON array of them, NDJSON (one object per line; `application/ndjson` is accepted too), or CSV: a header and rows, columns mapped by `[ingest.csv]` (default: the header names `TS`, `Device`, `Tag`, `Value`, in any case and order). All or nothing: one bad reading refuses the batch.",
        content(
            (ReadingsJson = "application/json",
                example = json!([{"ts": "2026-12-05T03:00:00Z", "device": "pump-7", "tag": "temp", "value": 21.5}])),
            (ReadingIn = "application/x-ndjson"),
            (String = "text/csv", example = json!("TS,Device,Tag,Value\n2026-12-05T03:00:00Z,pump-7,temp,21.5\n")),
        ),
    ),
    responses(
        (status = 200, description = "Stored (durable in the ingest log); `accepted` readings.", body = Accepted, headers(
            ("Idempotent-Replayed" = String, description = "`true`: the batch was stored before under this Idempotency-Key; not stored again."),
            ("Fleetscore-Warning" = String, description = "The batch's timestamps are implausibly far from now (stored anyway); says which unit would make them sensible."),
        )),
        (status = 400, response = BatchRefused),
        (status = 401, response = Unauthorized),
        (status = 408, response = BodyTimeout),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMedia),
        (status = 422, response = KeyReused),
        (status = 503, response = Unavailable),
        (status = 507, response = DiskFull),
    ),
    extensions(("x-auth" = json!("ingest"))),
)]
async fn readings(
    State(app): State<Arc<App>>,
    Query(query): Query<Query2>,
    req: Request,
) -> Response {
    let r = readings_inner(&app, query, req).await;
    counted(&app, r)
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
    let ts_unit = app.ts_unit;
    let key = Keyed::new(key, &["/v1/readings", &ctype], &body);
    let parse = move || {
        if csv {
            parse_csv_body(&body, &config)
        } else {
            parse_json(&body, ts_unit)
        }
    };
    match ingest(app, key, parse).await {
        Ok(i) => {
            let body = Accepted {
                accepted: i.readings as u64,
                duplicate: i.duplicate,
            };
            let r = replayed((StatusCode::OK, Json(body)).into_response(), i.duplicate);
            // CSV and JSON numeric times: in the configured unit, or
            // inferred (then no unit is in doubt).
            let unit_ns = app.ts_unit.nanos().unwrap_or(0);
            questioned(app, r, &i, unit_ns, crate::plausible::Doubt::integers)
        }
        Err(r) => r,
    }
}
