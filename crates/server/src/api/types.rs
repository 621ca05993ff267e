//! The bodies the HTTP API answers with, as types: each handler builds
//! one of these and serializes it, and the OpenAPI document
//! ([`super::openapi`]) takes its schemas from the same types, so the
//! document cannot say one thing while the server answers another. (The
//! request types the `/v1` handlers extract sit beside them in `api.rs`.)
//! Some types here only document what a handler reads by itself: the
//! ingest routes' headers, queries and bodies (read by hand, or by the
//! codecs' parsers, so that every refusal names what was wrong), the
//! reusable failure answers, a model file; each says so.
//!
//! Conventions, so that generated clients get precise types:
//! - every answer object is closed: `#[serde(deny_unknown_fields)]` is
//!   there for the schema (`additionalProperties: false`), not for serde,
//!   which only serializes these;
//! - a field that is always present but may be `null` is an `Option`
//!   marked `#[schema(required)]`; a field that may be absent has
//!   `skip_serializing_if` (and so is not required);
//! - the job store's, the registry's and the codecs' records are not
//!   serialized directly: their API shape is a mirror here, converted
//!   field by field (a field added to a record changes no answer until it
//!   is added here, with its documentation), and their enums are mirrored
//!   with exhaustive conversions, so a new state fails the build here
//!   rather than surprising a client. This keeps `utoipa` out of the
//!   library crates.

use fleetscore_codecs::PredictionRow as StoredPrediction;
use fleetscore_jobs::db::{self, FailureRecord, JobRecord, TaskRecord};
use fleetscore_store::{ImportOutcome, KeyEntry, VersionInfo};
use serde::Serialize;
use utoipa::{IntoParams, ToResponse, ToSchema};

use super::rfc3339;

/// An instant: RFC 3339, UTC, with a fraction of 3, 6 or 9 digits only
/// when it has one (`2026-12-05T03:00:00Z`, `2026-12-05T03:00:00.250Z`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(format = DateTime, examples("2026-12-05T03:00:00Z"))]
pub struct Rfc3339(String);

impl Rfc3339 {
    /// The instant `ns` nanoseconds after 1970-01-01T00:00:00Z.
    pub fn from_ns(ns: i64) -> Rfc3339 {
        Rfc3339(rfc3339(ns))
    }

    /// An instant stored as text (the registry's `imported_at`), in the
    /// API's form when it parses; as stored otherwise.
    pub fn from_text(text: &str) -> Rfc3339 {
        fleetscore_core::parse_ts(text).map_or_else(|_| Rfc3339(text.to_string()), Rfc3339::from_ns)
    }
}

/// The instant of `ns`, if any.
fn instant(ns: Option<i64>) -> Option<Rfc3339> {
    ns.map(Rfc3339::from_ns)
}

// ------------------------------------------------------------- failures

/// A failure: what was wrong and what to do.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What was wrong, on which input, and what to do.
    pub error: String,
}

/// A batch refused whole: nothing stored; fix the readings named and
/// resend the whole batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refused {
    /// Summary: how many problems.
    pub error: String,
    /// The problems, in the order of the body (at most a few hundred).
    pub rejections: Vec<Rejection>,
    /// Problems beyond those listed.
    pub omitted: u64,
}

/// One problem of a refused batch: where, and what.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// 1-based line (line protocol, NDJSON, CSV, a JSON syntax error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// 0-based element of a JSON array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element: Option<u64>,
    /// The field or column and the rule it breaks.
    pub reason: String,
}

/// Some lines of a line protocol batch were bad and dropped, the good ones
/// stored (`[ingest] bad_lines = "skip"`): InfluxDB's partial write. The
/// bad lines are kept as dead letters (`GET /v1/rejected`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartialWrite {
    /// InfluxDB 1.x's wording, which its clients and Telegraf show:
    /// `partial write: unable to parse '<line>' (line N): <reason> dropped=N`
    /// (without `partial write:` when no line was good).
    pub error: String,
    /// InfluxDB 2.x's error code: `invalid`.
    pub code: String,
    /// The same text as `error`, where InfluxDB 2.x clients read it.
    pub message: String,
    /// Readings stored from the good lines.
    pub stored: u64,
    /// Lines dropped.
    pub dropped: u64,
    /// The bad lines, in the order of the body (at most a few hundred).
    pub rejections: Vec<Rejection>,
    /// Bad lines beyond those listed.
    pub omitted: u64,
}

/// What an ingest route answers with `400`: a refused batch, a partial
/// write, or a refused request (a bad parameter or header, a body that
/// does not decompress).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // a document type: the handlers answer with its variants' types
pub enum IngestFailure {
    /// The batch's readings: nothing stored.
    Refused(Refused),
    /// The good lines stored, the bad ones not (line protocol with
    /// `[ingest] bad_lines = "skip"`).
    Partial(PartialWrite),
    /// The request itself.
    Error(ErrorBody),
}

/// Bad request: `error` says which parameter or field is wrong and why;
/// nothing was changed.
#[derive(ToResponse)]
#[allow(dead_code)] // a document type: its schema is the answer's
pub struct BadRequest(ErrorBody);

/// Bad request: a refused batch (`rejections` names each bad reading) or a
/// bad parameter, header or body encoding; nothing stored.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct BatchRefused(IngestFailure);

/// A token is required: `Authorization: Bearer TOKEN` (on the ingest
/// routes also a token that is not one of theirs).
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Unauthorized(ErrorBody);

/// The token may not do this: an ingest token on an admin route, or an
/// unknown token on a protected read.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Forbidden(ErrorBody);

/// No such job or model.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct NotFound(ErrorBody);

/// The body did not arrive within `[server] body_timeout`.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct BodyTimeout(ErrorBody);

/// The job's state does not allow this (retrying a job that succeeded,
/// cancelling one that ended).
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Conflict(ErrorBody);

/// The body (decompressed) is too large: `[server] max_body_bytes` on
/// ingest, 2 MB for a model file (which may decompress to `[server]
/// max_model_bytes`), 64 KiB for other JSON bodies; or more than `[server]
/// max_inflight_bytes` at once.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct TooLarge(ErrorBody);

/// Unsupported `Content-Type` (POST /v1/readings) or `Content-Encoding`
/// (identity or gzip).
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct UnsupportedMedia(ErrorBody);

/// The `Idempotency-Key` was used before with other readings; nothing
/// stored.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct KeyReused(ErrorBody);

/// Not now; retry (after `Retry-After` seconds when given). `error` says
/// why: a read past `[server] query_timeout` (narrow the range), no room
/// under `[server] max_inflight_bytes`, the ingest log unavailable or not
/// compacted before a job was queued, busy model uploads or registry
/// writers.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u32, description = "Seconds to wait before retrying.")))]
#[allow(dead_code)]
pub struct Unavailable(ErrorBody);

/// The ingest log's disk is full; nothing stored; retry after
/// `Retry-After` (the log recovers by itself once space is freed).
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u32, description = "Seconds to wait before retrying.")))]
#[allow(dead_code)]
pub struct DiskFull(ErrorBody);

// --------------------------------------------------------------- ingest

/// A file's bytes, as a request body.
#[derive(ToSchema)]
#[schema(value_type = String, content_media_type = "application/octet-stream")]
#[allow(dead_code)] // a document type: the handler reads the body itself
pub struct Binary(Vec<u8>);

/// The headers an ingest request may carry. (This and the queries below are
/// document types: the handlers read headers and queries themselves, so
/// that a bad value gets the API's error answer; each is optional.)
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // a document type: the handlers read the headers themselves
pub struct IngestHeaders {
    /// Names the batch so that it may be resent after an unknown outcome
    /// without being stored twice (a bare token or a quoted string, no
    /// control characters).
    #[param(rename = "Idempotency-Key", max_length = 256, required = false)]
    idempotency_key: String,
    /// A gzip body is decompressed; `[server] max_body_bytes` holds for the
    /// decompressed size.
    #[param(rename = "Content-Encoding", inline, required = false)]
    content_encoding: ContentEncoding,
}

/// The encodings an ingest body may have.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum ContentEncoding {
    #[schema(rename = "identity")]
    Identity,
    #[schema(rename = "gzip")]
    Gzip,
    #[schema(rename = "x-gzip")]
    XGzip,
}

/// The body of `GET /ping?verbose=true`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PingVerbose {
    /// As `X-Influxdb-Version`.
    pub version: String,
}

/// The query of `/query`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct InfluxQuery {
    /// InfluxQL statements, separated by `;`: `CREATE DATABASE …` and
    /// `SHOW DATABASES` are answered.
    #[param(required = false)]
    q: String,
    /// Accepted and ignored.
    #[param(required = false)]
    db: String,
}

/// The answer of `/query`, as InfluxDB 1.x gives it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryAnswer {
    /// One result per statement, in order.
    pub results: Vec<StatementResult>,
}

/// One statement's result.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatementResult {
    /// The statement's position, from 0.
    pub statement_id: u32,
    /// Its rows (`SHOW DATABASES`); absent for `CREATE DATABASE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<Series>>,
}

/// Rows of a statement's result.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// `databases`.
    pub name: String,
    /// `["name"]`.
    pub columns: Vec<String>,
    /// One row per database: `[["fleetscore"]]`.
    pub values: Vec<Vec<String>>,
}

/// The query of `POST /write`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct WriteV1Query {
    /// Unit of the line timestamps (`ns` by default).
    #[param(inline, required = false)]
    precision: PrecisionV1,
    /// Accepted and ignored (InfluxDB clients send it).
    #[param(required = false)]
    db: String,
}

/// The timestamp units of `POST /write`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum PrecisionV1 {
    #[schema(rename = "ns")]
    Ns,
    #[schema(rename = "n")]
    N,
    #[schema(rename = "us")]
    Us,
    #[schema(rename = "u")]
    U,
    #[schema(rename = "µs")]
    MicroSign,
    #[schema(rename = "ms")]
    Ms,
    #[schema(rename = "s")]
    S,
    #[schema(rename = "m")]
    M,
    #[schema(rename = "h")]
    H,
}

/// The query of `POST /api/v2/write`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct WriteV2Query {
    /// Unit of the line timestamps (`ns` by default).
    #[param(inline, required = false)]
    precision: PrecisionV2,
    /// Accepted and ignored.
    #[param(required = false)]
    org: String,
    /// Accepted and ignored.
    #[param(required = false)]
    bucket: String,
}

/// The timestamp units of `POST /api/v2/write`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum PrecisionV2 {
    #[schema(rename = "ns")]
    Ns,
    #[schema(rename = "us")]
    Us,
    #[schema(rename = "ms")]
    Ms,
    #[schema(rename = "s")]
    S,
}

/// What the document says of a line-protocol body.
pub const LINE_PROTOCOL: &str = "InfluxDB line protocol. The `device` tag names the device (`[ingest.line_protocol] device_tag`); each numeric or boolean field is one reading whose tag is the field key; string fields and other tags are skipped; a line without a timestamp gets the arrival time.";

/// One reading to store. Field names match in any case (`TS`, `Device`,
/// `Tag`, `Value` work); other fields are ignored; the same field twice in
/// different cases is an error. Names, times and values follow the
/// README's "What a reading may hold". (The ingest parser,
/// `fleetscore_codecs::parse_json`, reads bodies without this type: it
/// only documents them.)
#[derive(ToSchema)]
#[schema(as = Reading)]
#[allow(dead_code)]
pub struct ReadingIn {
    /// When it was measured.
    ts: TsIn,
    /// Device name; an integer is read as its decimal text (`1` is `"1"`).
    device: NameIn,
    /// Tag (sensor) name; an integer is read as its decimal text.
    tag: NameIn,
    /// A finite JSON number (a string is refused).
    value: f64,
}

/// A JSON body of readings: one reading, or an array of them.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
#[schema(as = Readings)]
pub enum ReadingsJson {
    /// One reading.
    One(ReadingIn),
    /// Readings.
    Many(Vec<ReadingIn>),
}

/// A reading's time.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
#[schema(as = ReadingTime)]
pub enum TsIn {
    /// RFC 3339 (`2026-12-05T03:00:00Z`, `2026-12-05T04:00:00.250+01:00`;
    /// up to 9 fraction digits) or `YYYY-MM-DD HH:MM:SS[.fraction]` (UTC).
    Text(String),
    /// Nanoseconds since 1970-01-01T00:00:00Z.
    Nanos(i64),
}

/// A device or tag name: text, or an integer read as its decimal text.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
#[schema(as = ReadingName)]
pub enum NameIn {
    /// The name.
    Text(String),
    /// A name written as a number.
    Number(i64),
}

/// A stored batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// Readings in the batch.
    pub accepted: u64,
    /// Present (true) when the batch was stored before under its
    /// Idempotency-Key and not stored again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

// -------------------------------------------------------------- service

/// Ready: the job store and the object store answer, and the ingest log
/// can write.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// Always true here.
    pub ready: bool,
}

/// Not ready: the fields say what is down.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotReady {
    /// Always false here.
    pub ready: bool,
    /// Why the job store does not answer; null when it does.
    #[schema(required)]
    pub job_store: Option<String>,
    /// Why the object store does not answer; null when it does.
    #[schema(required)]
    pub object_store: Option<String>,
    /// Why the ingest log cannot write; null when it can.
    #[schema(required)]
    pub ingest_log: Option<LogDown>,
    /// The sources not connected to their broker (`mqtt`, `kafka`), each
    /// with why and the setting to check; empty when all are.
    pub sources: std::collections::BTreeMap<String, String>,
}

/// The ingest log cannot write.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogDown {
    /// Why.
    #[schema(required)]
    pub reason: Option<String>,
    /// Whether its disk is full.
    pub disk_full: bool,
    /// Since when.
    #[schema(required)]
    pub since: Option<Rfc3339>,
    /// Recoveries tried in vain.
    pub failed_recoveries: u64,
}

// ----------------------------------------------------------------- jobs

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to run.
    Queued,
    /// Running now.
    Running,
    /// Done, within its failure threshold.
    Succeeded,
    /// Done past its failure threshold, or an error stopped it.
    Failed,
    /// Stopped by a user.
    Cancelled,
    /// Not scored, and no failure: no readings in its window for its
    /// models, or a window missed beyond its schedule's catch-up limit.
    Skipped,
}

impl From<db::JobState> for JobState {
    fn from(s: db::JobState) -> JobState {
        match s {
            db::JobState::Queued => JobState::Queued,
            db::JobState::Running => JobState::Running,
            db::JobState::Succeeded => JobState::Succeeded,
            db::JobState::Failed => JobState::Failed,
            db::JobState::Cancelled => JobState::Cancelled,
            db::JobState::Skipped => JobState::Skipped,
        }
    }
}

/// How a job came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Created by a schedule.
    Scheduled,
    /// `fleetscore backfill`.
    Backfill,
    /// Triggered by hand (API or CLI).
    Manual,
}

impl From<db::JobKind> for JobKind {
    fn from(k: db::JobKind) -> JobKind {
        match k {
            db::JobKind::Scheduled => JobKind::Scheduled,
            db::JobKind::Backfill => JobKind::Backfill,
            db::JobKind::Manual => JobKind::Manual,
        }
    }
}

/// Whether jobs of a schedule may overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// One at a time, oldest window first.
    Forbid,
    /// Any number at once.
    Allow,
}

impl From<db::Concurrency> for Concurrency {
    fn from(c: db::Concurrency) -> Concurrency {
        match c {
            db::Concurrency::Forbid => Concurrency::Forbid,
            db::Concurrency::Allow => Concurrency::Allow,
        }
    }
}

/// A job: the scoring of one window.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Id (1, 2, …).
    pub id: i64,
    /// Its schedule, if scheduled.
    #[schema(required)]
    pub schedule: Option<String>,
    /// How it came to be.
    pub kind: JobKind,
    /// Window start (inclusive).
    pub from: Rfc3339,
    /// Window start, nanoseconds since the epoch.
    pub from_ns: i64,
    /// Window end (exclusive).
    pub to: Rfc3339,
    /// Window end, nanoseconds since the epoch.
    pub to_ns: i64,
    /// Input mode (`raw`).
    pub mode: String,
    /// The `device/tag` keys it scores; null: every model.
    #[schema(required)]
    pub selection: Option<Vec<String>>,
    /// State.
    pub state: JobState,
    /// Models per task.
    pub batch_size: u32,
    /// Failure threshold: a count (`5`) or a percentage (`10%`) of models.
    pub max_failed: String,
    /// Retries per task.
    pub max_retries: u32,
    /// Overlap policy of its schedule.
    pub concurrency: Concurrency,
    /// When it was created.
    pub created: Rfc3339,
    /// The same, nanoseconds.
    pub created_ns: i64,
    /// When it started.
    #[schema(required)]
    pub started: Option<Rfc3339>,
    /// The same, nanoseconds.
    #[schema(required)]
    pub started_ns: Option<i64>,
    /// When it ended.
    #[schema(required)]
    pub finished: Option<Rfc3339>,
    /// The same, nanoseconds.
    #[schema(required)]
    pub finished_ns: Option<i64>,
    /// Models scored or failed.
    pub models: u64,
    /// Readings scored.
    pub rows: u64,
    /// Anomalies found.
    pub anomalies: u64,
    /// Models that did not score.
    pub failed_models: u64,
    /// Tasks.
    pub tasks: u64,
    /// Time reading the window, ms.
    pub load_ms: u64,
    /// Time scoring, summed over tasks, ms.
    pub score_ms: u64,
    /// Time writing, summed over tasks, ms.
    pub write_ms: u64,
    /// Why it failed, was cancelled or skipped.
    #[schema(required)]
    pub error: Option<String>,
    /// The key of its predictions manifest, once written.
    #[schema(required)]
    pub manifest: Option<String>,
    /// The same as `from_ns`; kept for clients written before the `_ns`
    /// fields.
    #[schema(deprecated)]
    pub window_start: i64,
    /// The same as `to_ns`; kept for clients written before the `_ns`
    /// fields.
    #[schema(deprecated)]
    pub window_end: i64,
    /// The same as `created_ns`; kept for clients written before the
    /// `_ns` fields.
    #[schema(deprecated)]
    pub created_at: i64,
    /// The same as `started_ns`; kept for clients written before the
    /// `_ns` fields.
    #[schema(deprecated, required)]
    pub started_at: Option<i64>,
    /// The same as `finished_ns`; kept for clients written before the
    /// `_ns` fields.
    #[schema(deprecated, required)]
    pub finished_at: Option<i64>,
}

impl From<&JobRecord> for Job {
    fn from(j: &JobRecord) -> Job {
        Job {
            id: j.id,
            schedule: j.schedule.clone(),
            kind: j.kind.into(),
            from: Rfc3339::from_ns(j.window_start),
            from_ns: j.window_start,
            to: Rfc3339::from_ns(j.window_end),
            to_ns: j.window_end,
            mode: j.mode.clone(),
            selection: j.selection.clone(),
            state: j.state.into(),
            batch_size: j.batch_size,
            max_failed: j.max_failed.to_string(),
            max_retries: j.max_retries,
            concurrency: j.concurrency.into(),
            created: Rfc3339::from_ns(j.created_at),
            created_ns: j.created_at,
            started: instant(j.started_at),
            started_ns: j.started_at,
            finished: instant(j.finished_at),
            finished_ns: j.finished_at,
            models: j.counts.models,
            rows: j.counts.rows,
            anomalies: j.counts.anomalies,
            failed_models: j.counts.failed_models,
            tasks: j.tasks,
            load_ms: j.counts.load_ms,
            score_ms: j.counts.score_ms,
            write_ms: j.counts.write_ms,
            error: j.error.clone(),
            manifest: j.manifest.clone(),
            window_start: j.window_start,
            window_end: j.window_end,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
        }
    }
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a worker (or for `not_before`).
    Queued,
    /// A worker holds its lease.
    Running,
    /// Done.
    Succeeded,
    /// Failed past its retries.
    Failed,
    /// Its job was cancelled.
    Cancelled,
}

impl From<db::TaskState> for TaskState {
    fn from(s: db::TaskState) -> TaskState {
        // Exhaustive: a new state in the job store breaks the build here.
        match s {
            db::TaskState::Queued => TaskState::Queued,
            db::TaskState::Running => TaskState::Running,
            db::TaskState::Succeeded => TaskState::Succeeded,
            db::TaskState::Failed => TaskState::Failed,
            db::TaskState::Cancelled => TaskState::Cancelled,
        }
    }
}

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Scores some models.
    Score,
    /// Reads a share of the window's raw row groups for the score tasks.
    Map,
}

impl From<db::TaskKind> for TaskKind {
    fn from(k: db::TaskKind) -> TaskKind {
        match k {
            db::TaskKind::Score => TaskKind::Score,
            db::TaskKind::Map => TaskKind::Map,
        }
    }
}

/// A task of a job: a share of its models (`score`) or of its window's
/// readings (`map`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Its job.
    pub job_id: i64,
    /// 0, 1, … within the job: score tasks first, then map tasks.
    pub idx: u32,
    /// What it does.
    pub kind: TaskKind,
    /// State.
    pub state: TaskState,
    /// Attempts made.
    pub attempts: u32,
    /// First `device/tag` key.
    pub first_key: String,
    /// Last key.
    pub last_key: String,
    /// Keys in it.
    pub n_keys: u64,
    /// When it was queued.
    pub queued: Rfc3339,
    /// The same, nanoseconds.
    pub queued_ns: i64,
    /// When its last attempt started.
    #[schema(required)]
    pub started: Option<Rfc3339>,
    /// The same, nanoseconds.
    #[schema(required)]
    pub started_ns: Option<i64>,
    /// When it ended.
    #[schema(required)]
    pub finished: Option<Rfc3339>,
    /// The same, nanoseconds.
    #[schema(required)]
    pub finished_ns: Option<i64>,
    /// Models scored or failed.
    pub models: u64,
    /// Readings.
    pub rows: u64,
    /// Anomalies.
    pub anomalies: u64,
    /// Failed models.
    pub failed_models: u64,
    /// Load time, ms.
    pub load_ms: u64,
    /// Score time, ms.
    pub score_ms: u64,
    /// Write time, ms.
    pub write_ms: u64,
    /// Its predictions object.
    #[schema(required)]
    pub output: Option<String>,
    /// Last error.
    #[schema(required)]
    pub error: Option<String>,
    /// The worker holding its lease while it runs.
    #[schema(required)]
    pub lease_owner: Option<String>,
    /// When that lease expires.
    #[schema(required)]
    pub lease_until: Option<Rfc3339>,
    /// The same, nanoseconds.
    #[schema(required)]
    pub lease_until_ns: Option<i64>,
    /// A queued retry waits until then.
    #[schema(required)]
    pub not_before: Option<Rfc3339>,
    /// The same, nanoseconds.
    #[schema(required)]
    pub not_before_ns: Option<i64>,
    /// The job plan it belongs to.
    #[schema(required)]
    pub plan_id: Option<String>,
    /// The same as `queued_ns`; kept for clients written before the `_ns`
    /// fields.
    #[schema(deprecated)]
    pub queued_at: i64,
    /// The same as `started_ns`; kept for clients written before the
    /// `_ns` fields.
    #[schema(deprecated, required)]
    pub started_at: Option<i64>,
    /// The same as `finished_ns`; kept for clients written before the
    /// `_ns` fields.
    #[schema(deprecated, required)]
    pub finished_at: Option<i64>,
}

impl TryFrom<&TaskRecord> for Task {
    type Error = String;
    fn try_from(t: &TaskRecord) -> Result<Task, String> {
        Ok(Task {
            job_id: t.job_id,
            idx: t.idx,
            kind: t.kind.into(),
            state: t.state.into(),
            attempts: t.attempts,
            first_key: t.first_key.clone(),
            last_key: t.last_key.clone(),
            n_keys: t.n_keys,
            queued: Rfc3339::from_ns(t.queued_at),
            queued_ns: t.queued_at,
            started: instant(t.started_at),
            started_ns: t.started_at,
            finished: instant(t.finished_at),
            finished_ns: t.finished_at,
            models: t.counts.models,
            rows: t.counts.rows,
            anomalies: t.counts.anomalies,
            failed_models: t.counts.failed_models,
            load_ms: t.counts.load_ms,
            score_ms: t.counts.score_ms,
            write_ms: t.counts.write_ms,
            output: t.output.clone(),
            error: t.error.clone(),
            lease_owner: t.lease_owner.clone(),
            lease_until: instant(t.lease_until),
            lease_until_ns: t.lease_until,
            not_before: instant(t.not_before),
            not_before_ns: t.not_before,
            plan_id: t.plan_id.clone(),
            queued_at: t.queued_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
        })
    }
}

/// A model that did not score.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// Its task.
    pub task_idx: u32,
    /// Device.
    pub device: String,
    /// Tag.
    pub tag: String,
    /// `no_model`, `no_data` (a model but no readings in the window),
    /// `feature_mismatch`, `evaluation`.
    pub reason: String,
    /// Details.
    pub detail: String,
    /// Readings it had.
    pub rows: u64,
}

impl From<&FailureRecord> for Failure {
    fn from(f: &FailureRecord) -> Failure {
        Failure {
            task_idx: f.task_idx,
            device: f.device.clone(),
            tag: f.tag.clone(),
            reason: f.reason.clone(),
            detail: f.detail.clone(),
            rows: f.rows,
        }
    }
}

/// Jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Jobs {
    /// The jobs.
    pub jobs: Vec<Job>,
}

/// The jobs a trigger queued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Queued {
    /// The new jobs' ids, oldest window first.
    pub jobs: Vec<i64>,
}

/// One job.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobAnswer {
    /// The job.
    pub job: Job,
}

/// A job with its tasks and the models that failed.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobDetail {
    /// The job.
    pub job: Job,
    /// Its tasks.
    pub tasks: Vec<Task>,
    /// Its models that did not score.
    pub failures: Vec<Failure>,
}

/// A finished task and its timings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowTask {
    /// Its job.
    pub job_id: i64,
    /// Its index in the job.
    pub idx: u32,
    /// What it does.
    pub kind: TaskKind,
    /// State.
    pub state: TaskState,
    /// Attempts made.
    pub attempts: u32,
    /// Start of its last attempt to its end, ms.
    pub duration_ms: u64,
    /// Keys in it.
    pub n_keys: u64,
    /// Readings.
    pub rows: u64,
    /// First `device/tag` key.
    pub first_key: String,
    /// Last key.
    pub last_key: String,
    /// Score time, ms.
    pub score_ms: u64,
    /// Write time, ms.
    pub write_ms: u64,
}

impl TryFrom<&TaskRecord> for SlowTask {
    type Error = String;
    fn try_from(t: &TaskRecord) -> Result<SlowTask, String> {
        Ok(SlowTask {
            job_id: t.job_id,
            idx: t.idx,
            kind: t.kind.into(),
            state: t.state.into(),
            attempts: t.attempts,
            // Never negative: two workers' clocks may disagree a little.
            duration_ms: match (t.started_at, t.finished_at) {
                (Some(a), Some(b)) => u64::try_from(b.saturating_sub(a)).unwrap_or(0) / 1_000_000,
                _ => 0,
            },
            n_keys: t.n_keys,
            rows: t.counts.rows,
            first_key: t.first_key.clone(),
            last_key: t.last_key.clone(),
            score_ms: t.counts.score_ms,
            write_ms: t.counts.write_ms,
        })
    }
}

/// The slowest finished tasks, slowest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlowTasks {
    /// The tasks.
    pub tasks: Vec<SlowTask>,
}

/// A `[[schedules]]` entry of the config.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Name.
    pub name: String,
    /// Five-field cron, UTC.
    pub cron: String,
    /// Window length, nanoseconds.
    pub window_ns: i64,
    /// How long after a window's end its job is created, nanoseconds.
    pub delay_ns: i64,
    /// Input mode.
    pub mode: String,
    /// Models per task.
    pub batch_size: u32,
    /// Failure threshold: a count or a percentage.
    pub max_failed_models: String,
    /// Retries per task.
    pub max_retries: u32,
    /// Whether its jobs may overlap.
    pub concurrency: Concurrency,
    /// Missed windows scored after downtime, at most.
    pub catch_up: u32,
    /// End of the last window it created a job for.
    #[schema(required)]
    pub last_window_end: Option<Rfc3339>,
    /// When it next creates a job.
    #[schema(required)]
    pub next_run: Option<Rfc3339>,
}

/// The configured schedules.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedules {
    /// The schedules.
    pub schedules: Vec<Schedule>,
}

// --------------------------------------------------------------- models

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Anomalies (an outlier detector).
    Outlier,
    /// A number.
    Regressor,
    /// A class.
    Classifier,
    /// Not declared: a Python model whose workers tell its kind from the
    /// model when they score it.
    Auto,
}

/// How a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelRuntime {
    /// Compiled by fleetscore (never executed).
    Native,
    /// Its file runs in the opt-in Python runtime (its code is executed).
    Python,
}

impl From<fleetscore_store::Runtime> for ModelRuntime {
    fn from(r: fleetscore_store::Runtime) -> ModelRuntime {
        match r {
            fleetscore_store::Runtime::Native => ModelRuntime::Native,
            fleetscore_store::Runtime::Python => ModelRuntime::Python,
        }
    }
}

impl From<fleetscore_models::Kind> for ModelKind {
    fn from(k: fleetscore_models::Kind) -> ModelKind {
        match k {
            fleetscore_models::Kind::Outlier => ModelKind::Outlier,
            fleetscore_models::Kind::Regressor => ModelKind::Regressor,
            fleetscore_models::Kind::Classifier => ModelKind::Classifier,
        }
    }
}

impl ModelKind {
    /// The kind the registry records as `name`.
    fn stored(name: &str) -> Result<ModelKind, String> {
        use fleetscore_models::Kind;
        if name == fleetscore_store::KIND_AUTO {
            return Ok(ModelKind::Auto);
        }
        [Kind::Outlier, Kind::Regressor, Kind::Classifier]
            .into_iter()
            .find(|k| k.name() == name)
            .map(ModelKind::from)
            .ok_or_else(|| format!("the registry holds a model of an unknown kind {name:?}"))
    }
}

/// A model key and its live version.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSummary {
    /// Device, or `*` for a tag's fallback.
    pub device: String,
    /// Tag.
    pub tag: String,
    /// The version that scores.
    pub live: u32,
    /// How many versions it has.
    pub versions: u64,
    /// The live version, e.g. `Pipeline(StandardScaler, OneClassSVM(…))`.
    #[schema(required)]
    pub description: Option<String>,
    /// Its input features.
    #[schema(required)]
    pub n_features: Option<u64>,
    /// `raw` or `window`.
    #[schema(required)]
    pub input_mode: Option<String>,
    /// What the live version predicts.
    #[schema(required)]
    pub kind: Option<ModelKind>,
    /// How the live version runs.
    #[schema(required)]
    pub runtime: Option<ModelRuntime>,
}

impl TryFrom<&KeyEntry> for ModelSummary {
    type Error = String;
    fn try_from(e: &KeyEntry) -> Result<ModelSummary, String> {
        let live = e.live_version();
        Ok(ModelSummary {
            device: e.device.clone(),
            tag: e.tag.clone(),
            live: e.live,
            versions: e.versions.len() as u64,
            description: live.map(|v| v.description.clone()),
            n_features: live.map(|v| v.n_features as u64),
            input_mode: live.map(|v| v.input_mode.clone()),
            kind: live.map(|v| ModelKind::stored(&v.kind)).transpose()?,
            runtime: live.map(|v| v.runtime.into()),
        })
    }
}

/// The registry.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelList {
    /// Increases with every change of the registry.
    pub generation: u64,
    /// Every model key, in `device/tag` order.
    pub models: Vec<ModelSummary>,
}

/// One version of a model.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelVersion {
    /// 1, 2, 3, …
    pub version: u32,
    /// SHA-256 of its binary encoding.
    pub sha256: String,
    /// When it was imported.
    pub imported_at: Rfc3339,
    /// Where it came from.
    pub source: String,
    /// One line, e.g. `Pipeline(StandardScaler, OneClassSVM(…))`.
    pub description: String,
    /// Input features.
    pub n_features: u64,
    /// What it predicts.
    pub kind: ModelKind,
    /// A classifier's classes as text, in `classes_` order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// `raw`: each reading is a row; `window`: each window is a row of
    /// `features`.
    pub input_mode: String,
    /// The window size of `window` input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The window features, in the model's column order, of `window`
    /// input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// How it runs.
    pub runtime: ModelRuntime,
    /// The methods a Python model is called with (empty: its kind's
    /// defaults).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

impl TryFrom<&VersionInfo> for ModelVersion {
    type Error = String;
    fn try_from(v: &VersionInfo) -> Result<ModelVersion, String> {
        Ok(ModelVersion {
            version: v.version,
            sha256: v.sha256.clone(),
            imported_at: Rfc3339::from_text(&v.imported_at),
            source: v.source.clone(),
            description: v.description.clone(),
            n_features: v.n_features as u64,
            kind: ModelKind::stored(&v.kind)?,
            classes: v.classes.clone(),
            input_mode: v.input_mode.clone(),
            window: v.window.clone(),
            features: v.features.clone(),
            runtime: v.runtime.into(),
            methods: v.methods.clone(),
        })
    }
}

/// A model key and every version.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Device, or `*`.
    pub device: String,
    /// Tag.
    pub tag: String,
    /// The version that scores.
    pub live: u32,
    /// Every version, oldest first.
    pub versions: Vec<ModelVersion>,
}

impl TryFrom<&KeyEntry> for Model {
    type Error = String;
    fn try_from(e: &KeyEntry) -> Result<Model, String> {
        let at = |err: String| format!("model ({}, {}): {err}", e.device, e.tag);
        Ok(Model {
            device: e.device.clone(),
            tag: e.tag.clone(),
            live: e.live,
            versions: e
                .versions
                .iter()
                .map(ModelVersion::try_from)
                .collect::<Result<_, _>>()
                .map_err(at)?,
        })
    }
}

/// One model.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelAnswer {
    /// The model.
    pub model: Model,
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new key, registered as version 1.
    Added,
    /// A changed model for a known key: a new live version.
    NewVersion,
    /// The same model as an existing version: nothing written.
    Unchanged,
}

/// A model key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// Device, or `*`.
    pub device: String,
    /// Tag.
    pub tag: String,
}

/// What an upload did, and to which version.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportResult {
    /// A new key (version 1), a new live version, or the same model as an
    /// existing version (nothing written).
    pub outcome: Outcome,
    /// The model key.
    pub key: Key,
    /// The version added, or the existing one.
    pub version: u32,
}

impl From<&ImportOutcome> for ImportResult {
    fn from(o: &ImportOutcome) -> ImportResult {
        let (outcome, key, version) = match o {
            ImportOutcome::Added { key, version } => (Outcome::Added, key, version),
            ImportOutcome::NewVersion { key, version } => (Outcome::NewVersion, key, version),
            ImportOutcome::Unchanged { key, version } => (Outcome::Unchanged, key, version),
        };
        ImportResult {
            outcome,
            key: Key {
                device: key.device.clone(),
                tag: key.tag.clone(),
            },
            version: *version,
        }
    }
}

/// An upload's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Uploaded {
    /// What it did.
    pub outcome: ImportResult,
}

// ----------------------------------------------------------------- data

/// A stored reading.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadingRow {
    /// When it was measured.
    pub ts: Rfc3339,
    /// Device.
    pub device: String,
    /// Tag.
    pub tag: String,
    /// The reading (`value` in raw/, `Value` in input files).
    pub value: f64,
}

/// Readings of a range, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadingRows {
    /// Range start (inclusive).
    pub from: Rfc3339,
    /// Range end (exclusive).
    pub to: Rfc3339,
    /// The readings.
    pub rows: Vec<ReadingRow>,
    /// More rows than `limit`: the earliest were kept.
    pub truncated: bool,
}

/// A scored reading.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictionRow {
    /// When the reading was measured (`TS`).
    pub ts: Rfc3339,
    /// Device (`Device`).
    pub device: String,
    /// Tag (`Tag`).
    pub tag: String,
    /// The value scored (`Val` in predictions files).
    pub value: f64,
    /// An outlier detector's verdict: 1 = anomaly, 0 = normal
    /// (`Prediction`); null for regressors and classifiers.
    #[schema(required, minimum = 0, maximum = 1)]
    pub prediction: Option<i32>,
    /// `Score`: a detector's decision function (`Decision` in the
    /// reference's files; an anomaly below its threshold), a regressor's
    /// prediction, or a classifier's probability of its predicted class
    /// (its decision function when it has no predict_proba). Null when the
    /// file holds NaN there: a row the model could not score (see the
    /// README on missing values).
    #[schema(required)]
    pub score: Option<f64>,
    /// A classifier's predicted class as text (`Label`); null for
    /// detectors and regressors.
    #[schema(required)]
    pub label: Option<String>,
}

impl From<StoredPrediction> for PredictionRow {
    fn from(r: StoredPrediction) -> PredictionRow {
        PredictionRow {
            ts: Rfc3339::from_ns(r.ts),
            device: r.device,
            tag: r.tag,
            value: r.value,
            prediction: r.prediction,
            // JSON has no NaN: it is said as null, and documented so.
            score: Some(r.score).filter(|s| s.is_finite()),
            label: r.label,
        }
    }
}

/// Predictions of a range, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictionRows {
    /// Range start (inclusive).
    pub from: Rfc3339,
    /// Range end (exclusive).
    pub to: Rfc3339,
    /// The predictions.
    pub rows: Vec<PredictionRow>,
    /// More rows than `limit`: the earliest were kept.
    pub truncated: bool,
}

/// Readings scored and anomalies per device per hour, from the jobs'
/// manifests: one row per device, one column per hour.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Overview {
    /// Range start.
    pub from: Rfc3339,
    /// Range end.
    pub to: Rfc3339,
    /// The hours' starts: the columns.
    pub hours: Vec<Rfc3339>,
    /// The devices: the rows.
    pub devices: Vec<String>,
    /// Anomalies, per device (row) and hour (column).
    pub anomalies: Vec<Vec<u64>>,
    /// Readings scored, per device (row) and hour (column).
    pub rows: Vec<Vec<u64>>,
}

/// Where some data is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtentOf {
    /// Start of the first hour holding some.
    pub first_hour: Rfc3339,
    /// Start of the last hour holding some.
    pub last_hour: Rfc3339,
    /// Where the newest end: the last hour's end, or the end of its newest
    /// scored window.
    pub end: Rfc3339,
}

/// Where the data is: the first and the last hour holding scored
/// predictions and stored readings.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extent {
    /// Where the scored predictions are; null: none (or none found within
    /// the search budget).
    #[schema(required)]
    pub predictions: Option<ExtentOf>,
    /// Where the stored readings are; null: none (or none found within
    /// the search budget).
    #[schema(required)]
    pub readings: Option<ExtentOf>,
    /// The longest from/to range one query may read, hours.
    pub max_hours: u64,
    /// False when the search stopped at its budget before finding both
    /// ends.
    pub complete: bool,
}

// ------------------------------------------------------------- rejected

/// `GET /v1/rejected`: what the sources could not read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejected {
    /// Dead letters kept since this server started, by source and reason.
    pub counts: Vec<RejectedCount>,
    /// The newest letters in the store (of every server), newest first.
    pub letters: Vec<DeadLetterOut>,
}

/// How many dead letters of a source, for a reason.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectedCount {
    /// `http`, `mqtt`, `kafka`.
    pub source: String,
    /// `syntax`, `missing`, `name`, `time` or `value`.
    pub reason: String,
    /// Since this server started.
    pub count: u64,
}

/// A message (or line) a source could not read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterOut {
    /// When it was received.
    pub time: String,
    /// The source that received it.
    pub source: String,
    /// The kind of problem.
    pub reason: String,
    /// What is wrong, naming the field or line.
    pub error: String,
    /// Where it came from: an MQTT topic, a Kafka `topic/partition@offset`,
    /// an HTTP endpoint and line.
    pub origin: String,
    /// Its length in bytes.
    pub size: u64,
    /// Its bytes as text (when UTF-8), cut to `[ingest] dead_letters.max_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Its bytes in base64 (when not UTF-8), cut likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Whether the payload was cut.
    pub truncated: bool,
}

impl From<fleetscore_store::lake::DeadLetter> for DeadLetterOut {
    fn from(l: fleetscore_store::lake::DeadLetter) -> Self {
        DeadLetterOut {
            time: l.time,
            source: l.source,
            reason: l.reason,
            error: l.error,
            origin: l.origin,
            size: l.size,
            payload: l.payload,
            payload_base64: l.payload_base64,
            truncated: l.truncated,
        }
    }
}
