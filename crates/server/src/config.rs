//! The service config: built-in defaults, then the TOML file of `--config`,
//! then `FLEETSCORE__SECTION__KEY` environment variables, then flags.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! max_body_bytes = 33554432          # larger bodies get 413
//! windows = true                     # streaming windows into windows/
//! window_flush_interval = "10s"
//! max_connections = 1024             # fewer if the open-file limit is lower
//! header_timeout = "30s"             # also the keep-alive idle time
//! body_timeout = "60s"               # a slower body gets 408
//! idle_timeout = "120s"              # no byte either way: closed
//! query_timeout = "30s"              # a GET /v1/… working longer gets 503
//! max_inflight_bytes = 268435456     # bodies and their readings in memory at once
//! max_inflight_wait = "10s"          # then 503 with Retry-After
//! max_model_bytes = 67108864         # a model file, decompressed
//!
//! [ingest]
//! compact_interval = "60s"           # log segments into raw/ (and before a job is created)
//! # A failed write is retried every recovery_interval_ms; a batch resent
//! # under the same Idempotency-Key within the horizon is stored once.
//! log = { max_segment_bytes = 67108864, max_group_bytes = 8388608, max_wait_us = 0, recovery_interval_ms = 500, idempotency_horizon_secs = 3600, idempotency_max_keys = 250000 }
//! line_protocol = { device_tag = "device", prefix_measurement = false, booleans = "number" }
//! csv = { header = true, ts = "TS", device = "Device", tag = "Tag", value = "Value" }
//! ts_unit = "auto"                   # numeric times of JSON/CSV bodies: auto (by magnitude), s, ms, us, ns
//! bad_lines = "reject"               # line protocol: "skip" stores the good lines (InfluxDB's partial write)
//! dead_letters = { max_bytes = 65536, retention = "7d" }  # what sources could not read, under rejected/
//!
//! [stream]                           # the window aggregator
//! windows = [{ size = "1m" }, { size = "1h", hop = "15m" }]
//! out_of_order = "5s"
//! allowed_lateness = "0s"
//! late_policy = "drop"               # or "adjust"
//! watermark = "per_device"           # or "global" ("per-device", as the CLI spells it, too)
//! max_series = 2000000              # live (device, tag) series, ~0.5 KB each; more are shed
//! close_idle_after = "1h"            # a device silent this long has its windows closed
//!
//! [mqtt]                             # absent url: no MQTT source
//! url = "mqtt://127.0.0.1:1883"      # mqtts://host:8883 for TLS
//! topic = "fleet/{device}/{tag}"     # or "fleet/{device}" for several sensors per message
//! shared_group = "ingest"
//! client_id = "fleetscore-1"
//! username = "fleetscore"
//! password_env = "MQTT_PASSWORD"     # the variable holding the password (or password = "…")
//! ca_file = "/etc/fleetscore/ca.pem" # mqtts://: CAs to trust (default: the system's)
//! client_cert = "/etc/fleetscore/client.pem"  # with client_key, for brokers that ask
//! client_key = "/etc/fleetscore/client.key"
//! payload = { format = "auto", ts_field = "ts", ts_unit = "auto", value_field = "value" }
//! # payload.fields = { temp = "temperature" }  # several-sensor objects: fields to read, their tags
//!
//! [kafka]                            # absent brokers: no Kafka source
//! brokers = "127.0.0.1:9092"
//! topics = ["fleet"]
//! group_id = "fleetscore"
//! client_id = "fleetscore-1"         # stable: static group membership
//! security_protocol = "sasl_ssl"     # plaintext, ssl, sasl_plaintext, sasl_ssl
//! sasl_mechanism = "SCRAM-SHA-512"   # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
//! username = "fleetscore"
//! password_env = "KAFKA_PASSWORD"
//! ca_file = "/etc/fleetscore/kafka-ca.pem"
//! # event_hubs_connection_string_env = "EVENTHUBS_CONNECTION_STRING"  # Azure Event Hubs
//! key = "device"                     # the message key names the device ("ignore")
//! start = "earliest"                 # a new group starts at the oldest message
//! payload = { format = "auto", ts_field = "ts", ts_unit = "auto" }
//! options = { "fetch.min.bytes" = "1" }  # more librdkafka settings
//!
//! [auth]
//! ingest_tokens = ["…"]              # any of them is accepted on ingest
//! admin_tokens = ["…"]
//! protect_reads = false              # true: GET /v1/… needs a token too
//! allow_unauthenticated_admin = false  # true: serve on a non-loopback address
//!                                    # without admin tokens (anyone may upload
//!                                    # models and trigger jobs)
//!
//! [store]                            # requests to s3://, az://, gs:// stores
//! max_retries = 10                   # per request, on 5xx, 429, timeouts, drops
//! retry_timeout = "3m"               # no retry starts later than this
//! backoff = "200ms"                  # before the first retry; doubles…
//! max_backoff = "20s"                # …up to this
//! timeout = "1m"                     # one whole request, body included
//! connect_timeout = "5s"
//!
//! [jobs]
//! parallel_tasks = 0                 # tasks of a job at once; 0 = cores
//! retry_backoff = "1s"               # doubles per attempt
//! tick_interval = "5s"               # longest wait between schedule checks
//! batch_size = 1000                  # models per task
//! max_failed_models = "10%"          # or a count: 5
//! max_retries = 2
//! # db = "postgres://fleetscore@db:5432/fleetscore"  # job store; --db/FLEETSCORE_DB win
//! run_in_server = true               # false = `serve --no-workers`: workers run the jobs
//! lease = "30s"                      # a vanished worker's task is taken over after this
//!
//! [python]                           # the opt-in Python runtime (off: no Python process, ever)
//! enabled = false                    # true: run models registered with --runtime python
//! interpreter = "/opt/venv/bin/python"  # needs numpy, pyarrow, joblib + what the models import
//! path = ["/opt/models/lib"]         # added to the workers' PYTHONPATH
//! workers = 0                        # processes; 0 = cores
//! timeout = "5m"                     # per request (a load, or one model's rows); then killed
//! memory_limit = 4294967296          # RLIMIT_AS per worker process, bytes; 0 = none
//! cache_bytes = 1073741824           # model files kept loaded per worker, by size
//! pass_env = []                      # more variables the workers may see
//!
//! [[schedules]]                      # default: this one
//! name = "hourly"
//! cron = "0 * * * *"                 # UTC; nominal window ends
//! window = "1h"                      # scores [T - window, T)
//! delay = "5m"                       # at T + delay, for late data
//! mode = "raw"
//! concurrency = "forbid"             # or "allow"
//! catch_up = 24                      # missed windows scored after downtime
//! ```
//!
//! An environment variable names the section and key with double
//! underscores, e.g. `FLEETSCORE__AUTH__INGEST_TOKENS='["t1","t2"]'` or
//! `FLEETSCORE__STREAM__OUT_OF_ORDER=30s`. The `[store]` settings are also
//! read by the object store itself from `FLEETSCORE_STORE_MAX_RETRIES`,
//! `…_RETRY_TIMEOUT`, `…_BACKOFF`, `…_MAX_BACKOFF`, `…_TIMEOUT` and
//! `…_CONNECT_TIMEOUT` (one underscore), which override everything else, so
//! that they work for every command. Unknown keys are refused with
//! their name and where they came from. `fleetscore config` prints the
//! result.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use fleetscore_codecs::{CsvBodyConfig, LineProtocolConfig, PayloadConfig};
use fleetscore_core::TsUnit;
use fleetscore_ingest::LogConfig;
use fleetscore_jobs::db::{Concurrency, Threshold};
use fleetscore_jobs::schedule::ScheduleSpec;
use fleetscore_store::RetrySettings;
use fleetscore_stream::{AggregatorConfig, Span};
use serde::{Deserialize, Serialize};

/// Everything `serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[ingest]`.
    pub ingest: IngestConfig,
    /// `[stream]`: the window aggregator.
    pub stream: AggregatorConfig,
    /// `[mqtt]`.
    pub mqtt: MqttSection,
    /// `[kafka]`.
    pub kafka: KafkaSection,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[jobs]`: how jobs run.
    pub jobs: JobsConfig,
    /// `[store]`: how requests to a cloud object store retry.
    pub store: StoreConfig,
    /// `[python]`: the opt-in Python runtime.
    pub python: PythonSection,
    /// `[[schedules]]`: when jobs are created. Default: `hourly`.
    pub schedules: Vec<ScheduleConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            ingest: IngestConfig::default(),
            stream: AggregatorConfig::default(),
            mqtt: MqttSection::default(),
            kafka: KafkaSection::default(),
            auth: AuthConfig::default(),
            jobs: JobsConfig::default(),
            store: StoreConfig::default(),
            python: PythonSection::default(),
            schedules: vec![ScheduleConfig::default()],
        }
    }
}

/// `[jobs]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Tasks of one job run at once; 0 = the number of cores.
    pub parallel_tasks: usize,
    /// First delay before a failed task is retried; doubles per attempt.
    pub retry_backoff: Span,
    /// Longest wait between two checks of the schedules by `serve` (it also
    /// wakes when a schedule is due, and when its API queues a job): how
    /// soon it runs jobs queued by other processes.
    pub tick_interval: Span,
    /// Models per task, unless a schedule says otherwise.
    pub batch_size: u32,
    /// A job fails past this many failed models: a count (`5`) or a
    /// percentage (`"10%"`).
    pub max_failed_models: Threshold,
    /// Retries per task.
    pub max_retries: u32,
    /// The job store's URL when `--db`/`FLEETSCORE_DB` is not given:
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DATABASE` [default:
    /// sqlite://DATA/fleetscore.db].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    /// `serve` runs the jobs it schedules itself. `false` (`serve
    /// --no-workers`): it only creates them, for `fleetscore worker`
    /// processes sharing a PostgreSQL job store.
    pub run_in_server: bool,
    /// How long a worker's lease on a task lasts without renewal.
    pub lease: Span,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            parallel_tasks: 0,
            retry_backoff: Span::from_secs(1),
            tick_interval: Span::from_secs(5),
            batch_size: 1000,
            max_failed_models: Threshold::Percent(10.0),
            max_retries: 2,
            db: None,
            run_in_server: true,
            lease: Span::from_secs(30),
        }
    }
}

/// `[python]`: the opt-in Python runtime, for models registered with
/// `--runtime python` (see `fleetscore_python`). Off by default: then no
/// Python process is ever started, whatever is registered, and such
/// models fail `python_disabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PythonSection {
    /// Run Python models (their files' code is executed).
    pub enabled: bool,
    /// The Python to run, e.g. a virtualenv's `bin/python`, with numpy,
    /// pyarrow, joblib and what the models import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// Folders added to the workers' `PYTHONPATH` (a team's own modules).
    pub path: Vec<String>,
    /// Worker processes at most; 0 = the number of cores.
    pub workers: usize,
    /// Wall-clock limit of one request to a worker (loading a model, or
    /// scoring one model's rows); past it the process is killed and the
    /// model fails.
    pub timeout: Span,
    /// Address-space limit (`RLIMIT_AS`) of each worker process, bytes; 0 =
    /// none.
    pub memory_limit: u64,
    /// Model files each worker keeps loaded, by their size in bytes.
    pub cache_bytes: u64,
    /// More environment variables the workers may see (all others but
    /// `PATH`, `HOME`, the locale, `PYTHONPATH`, `PYTHONHOME`,
    /// `VIRTUAL_ENV`, `CONDA_PREFIX`, `LD_LIBRARY_PATH` and `SSL_CERT_FILE`
    /// are removed: they never see fleetscore's tokens or credentials).
    pub pass_env: Vec<String>,
}

impl Default for PythonSection {
    fn default() -> Self {
        let d = fleetscore_python::PythonConfig::default();
        PythonSection {
            enabled: false,
            interpreter: None,
            path: Vec::new(),
            workers: 0,
            timeout: Span::from_secs(d.timeout.as_secs() as u32),
            memory_limit: d.memory_limit,
            cache_bytes: d.cache_bytes,
            pass_env: Vec::new(),
        }
    }
}

impl PythonSection {
    /// The runtime's config, if `enabled` (an error if it has no
    /// interpreter).
    pub fn runtime(&self) -> anyhow::Result<Option<fleetscore_python::PythonConfig>> {
        if !self.enabled {
            return Ok(None);
        }
        let Some(interpreter) = &self.interpreter else {
            anyhow::bail!(
                "invalid config: [python] enabled = true needs [python] interpreter, the Python to run (e.g. interpreter = \"/opt/venv/bin/python\", a virtualenv with numpy, pyarrow, joblib and what your models import)"
            );
        };
        Ok(Some(fleetscore_python::PythonConfig {
            interpreter: interpreter.into(),
            path: self.path.iter().map(Into::into).collect(),
            workers: self.workers,
            timeout: Duration::from_nanos(self.timeout.as_nanos().max(1) as u64),
            memory_limit: self.memory_limit,
            cache_bytes: self.cache_bytes,
            pass_env: self.pass_env.clone(),
        }))
    }
}

/// `[store]`: retries and timeouts of requests to a cloud object store
/// (`s3://`, `az://`, `gs://`). The defaults and why they suit batch jobs:
/// [`fleetscore_store::RetrySettings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Retries of one request after its first attempt (0: none).
    pub max_retries: usize,
    /// No retry starts later than this after the request's first attempt.
    pub retry_timeout: Span,
    /// Wait before the first retry; doubles (with jitter) per retry.
    pub backoff: Span,
    /// Longest wait between two retries.
    pub max_backoff: Span,
    /// Time for one whole request, body included.
    pub timeout: Span,
    /// Time to open a connection.
    pub connect_timeout: Span,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let r = RetrySettings::default();
        let span = |d: Duration| Span::from_nanos(d.as_nanos() as i64).unwrap_or(Span::ZERO);
        StoreConfig {
            max_retries: r.max_retries,
            retry_timeout: span(r.retry_timeout),
            backoff: span(r.backoff),
            max_backoff: span(r.max_backoff),
            timeout: span(r.request_timeout),
            connect_timeout: span(r.connect_timeout),
        }
    }
}

impl StoreConfig {
    /// As the object store takes them.
    pub fn retry_settings(&self) -> RetrySettings {
        let d = |s: Span| Duration::from_nanos(s.as_nanos().max(0) as u64);
        RetrySettings {
            max_retries: self.max_retries,
            retry_timeout: d(self.retry_timeout),
            backoff: d(self.backoff),
            max_backoff: d(self.max_backoff),
            request_timeout: d(self.timeout),
            connect_timeout: d(self.connect_timeout),
        }
    }
}

/// One `[[schedules]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique name.
    pub name: String,
    /// Cron expression, five fields, UTC: the nominal window ends.
    pub cron: String,
    /// Window length: each nominal time `T` scores `[T - window, T)`.
    pub window: Span,
    /// Wait after `T` for late data before scoring.
    pub delay: Span,
    /// Model input: `raw` (each reading is a row).
    pub mode: String,
    /// Models per task (default: `[jobs] batch_size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Failure threshold (default: `[jobs] max_failed_models`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failed_models: Option<Threshold>,
    /// Retries per task (default: `[jobs] max_retries`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// `forbid` (one job of this schedule at a time) or `allow`.
    pub concurrency: Concurrency,
    /// After downtime, at most this many missed windows are scored; older
    /// ones are recorded as skipped.
    pub catch_up: u32,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            name: "hourly".into(),
            cron: "0 * * * *".into(),
            window: Span::from_secs(3600),
            delay: Span::from_secs(300),
            mode: "raw".into(),
            batch_size: None,
            max_failed_models: None,
            max_retries: None,
            concurrency: Concurrency::Forbid,
            catch_up: 24,
        }
    }
}

impl Config {
    /// The schedules, checked, with the `[jobs]` defaults filled in.
    pub fn schedule_specs(&self) -> anyhow::Result<Vec<ScheduleSpec>> {
        let mut out: Vec<ScheduleSpec> = Vec::new();
        for s in &self.schedules {
            let spec = ScheduleSpec {
                name: s.name.clone(),
                cron: s.cron.clone(),
                window_ns: s.window.as_nanos(),
                delay_ns: s.delay.as_nanos(),
                mode: s.mode.clone(),
                batch_size: s.batch_size.unwrap_or(self.jobs.batch_size),
                max_failed: s.max_failed_models.unwrap_or(self.jobs.max_failed_models),
                max_retries: s.max_retries.unwrap_or(self.jobs.max_retries),
                concurrency: s.concurrency,
                catch_up: s.catch_up,
            };
            spec.check().context("invalid config: [[schedules]]")?;
            if out.iter().any(|o| o.name == spec.name) {
                anyhow::bail!("invalid config: two schedules are named {:?}", spec.name);
            }
            out.push(spec);
        }
        Ok(out)
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: String,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Whether closed windows are computed and written to windows/.
    pub windows: bool,
    /// How often closed windows are written, with a checkpoint.
    pub window_flush_interval: Span,
    /// Most client connections at once; fewer if the open-file limit
    /// (raised to its hard limit at start) leaves room for fewer. At the
    /// limit the connection that waited longest for a request is closed;
    /// if all are busy, a newcomer gets 503 with `Retry-After`.
    pub max_connections: usize,
    /// Time for a request's headers to arrive, counted from when the
    /// connection starts waiting for them: also how long an idle
    /// keep-alive connection stays open.
    pub header_timeout: Span,
    /// Time for a request's whole body to arrive, from its headers; a
    /// slower (or never-ending) body gets 408.
    pub body_timeout: Span,
    /// A connection on which no byte moves either way for this long,
    /// while no request on it is being worked on, is closed (a client
    /// that stops reading its answer, say).
    pub idle_timeout: Span,
    /// Time a read endpoint (`GET /v1/…`) may work on one request before
    /// it answers 503 and asks for a narrower query.
    pub query_timeout: Span,
    /// Bytes of request bodies, and of the readings parsed from them,
    /// held in memory at once across all requests: an ingest request holds
    /// four times its body's bytes (a gzip body: its compressed bytes, and
    /// four times the decompressed ones) until its readings are durable.
    /// A request with a `Content-Length` waits up to
    /// `max_inflight_wait` for room before its body is read, then gets 503
    /// with `Retry-After`; room for a chunked body, and for a body's
    /// decompressed bytes, is taken as they come, and a request that finds
    /// none gets 503 at once (it never waits while holding room). At least
    /// four times `max_body_bytes`.
    pub max_inflight_bytes: usize,
    /// How long a request may wait for room under `max_inflight_bytes`.
    pub max_inflight_wait: Span,
    /// Largest model file accepted by upload (`POST /v1/models/…`) or
    /// `models import` once decompressed (joblib files are often
    /// compressed).
    pub max_model_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 32 << 20,
            windows: true,
            window_flush_interval: Span::from_secs(10),
            max_connections: 1024,
            header_timeout: Span::from_secs(30),
            body_timeout: Span::from_secs(60),
            idle_timeout: Span::from_secs(120),
            query_timeout: Span::from_secs(30),
            max_inflight_bytes: 256 << 20,
            max_inflight_wait: Span::from_secs(10),
            max_model_bytes: fleetscore_models::ImportLimits::DEFAULT_MAX_DECOMPRESSED_BYTES
                as usize,
        }
    }
}

/// `[ingest]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// How often the active log segment is closed and closed segments are
    /// compacted into raw/ (`serve` also compacts before it creates a job).
    pub compact_interval: Span,
    /// The durable ingest log.
    pub log: LogConfig,
    /// How line protocol maps to readings.
    pub line_protocol: LineProtocolConfig,
    /// How CSV bodies map to readings.
    pub csv: CsvBodyConfig,
    /// The unit of numeric timestamps in JSON and CSV bodies (`auto`: by
    /// magnitude; see [`TsUnit`]).
    pub ts_unit: TsUnit,
    /// Line protocol with bad lines: `reject` the batch (all or nothing,
    /// the default) or `skip` them (InfluxDB's partial write: the good
    /// lines are stored, the answer is a 400 naming the bad ones, which
    /// are kept as dead letters).
    pub bad_lines: BadLines,
    /// What the sources could not read, kept under rejected/.
    pub dead_letters: DeadLetterConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            compact_interval: Span::from_secs(60),
            log: LogConfig::default(),
            line_protocol: LineProtocolConfig::default(),
            csv: CsvBodyConfig::default(),
            ts_unit: TsUnit::Auto,
            bad_lines: BadLines::Reject,
            dead_letters: DeadLetterConfig::default(),
        }
    }
}

/// `[ingest] bad_lines`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadLines {
    /// One bad line refuses the batch (400, nothing stored).
    #[default]
    Reject,
    /// The good lines are stored; the answer is InfluxDB's partial-write
    /// 400 naming the bad ones.
    Skip,
}

/// `[ingest] dead_letters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Bytes of each refused message kept (the rest is cut, and the
    /// letter says so).
    pub max_bytes: usize,
    /// How long letters are kept (whole days, by the day they were
    /// written).
    pub retention: Span,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            max_bytes: 64 << 10,
            retention: Span::from_secs(7 * 86_400),
        }
    }
}

/// A password or key: read from the config, never printed (`fleetscore
/// config` and logs show `<redacted>`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A password given in the config or, better, by the name of the
/// environment variable that holds it.
pub fn password(
    section: &str,
    password: Option<&Secret>,
    password_env: Option<&str>,
) -> anyhow::Result<Option<String>> {
    match (password, password_env) {
        (Some(_), Some(_)) => anyhow::bail!(
            "[{section}] password and password_env are both set; keep one (password_env names the variable that holds it)"
        ),
        (Some(p), None) => Ok(Some(p.expose().to_string())),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => anyhow::bail!(
                "[{section}] password_env = {var:?}: that environment variable is not set (or empty)"
            ),
        },
        (None, None) => Ok(None),
    }
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSection {
    /// `mqtt://host[:port]` or `mqtts://host[:port]` (TLS); none means no
    /// MQTT source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The topic: a template whose `{device}` and `{tag}` levels name a
    /// reading's device and tag (`fleet/{device}/{tag}`, or
    /// `fleet/{device}` for objects with several sensors), or a plain
    /// filter whose last two levels are device and tag (`fleet/+/+`).
    pub topic: String,
    /// MQTT 5 shared-subscription group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_group: Option<String>,
    /// Client id (default `fleetscore-<pid>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The login's user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The login's password (prefer `password_env`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The environment variable holding the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// PEM file of the CA certificates to trust (`mqtts://`); default: the
    /// system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM file of a client certificate (with `client_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// PEM file of the client certificate's private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// How payloads are read.
    pub payload: PayloadConfig,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            url: None,
            topic: "fleet/{device}/{tag}".into(),
            shared_group: None,
            client_id: None,
            username: None,
            password: None,
            password_env: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            payload: PayloadConfig::default(),
        }
    }
}

/// `[kafka]`: the Kafka-protocol source (Kafka, Azure Event Hubs,
/// Redpanda, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap brokers, `host:port[,host:port…]`; none (and no
    /// `event_hubs_connection_string_env`) means no Kafka source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// The topics to consume (default `["fleet"]`; an Event Hubs
    /// connection string's `EntityPath` when it has one).
    pub topics: Vec<String>,
    /// The consumer group (default `fleetscore`).
    pub group_id: String,
    /// A stable id of this consumer (`client.id`, and the group's static
    /// membership `group.instance.id`, so a restart keeps its partitions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (with `sasl_*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// The SASL user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The SASL password (prefer `password_env`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The environment variable holding the SASL password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// PEM file of the CA certificates to trust (`ssl`, `sasl_ssl`);
    /// default: the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM file of a client certificate (with `client_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// PEM file of the client certificate's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// Azure Event Hubs: the environment variable holding the namespace's
    /// connection string (`Endpoint=sb://NS.servicebus.windows.net/;…`);
    /// sets the brokers (`NS.servicebus.windows.net:9093`), `sasl_ssl` with
    /// `PLAIN`, user `$ConnectionString` and the string as the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_hubs_connection_string_env: Option<String>,
    /// The message key: `device` (default: a key names the device, unless
    /// the payload names one) or `ignore`.
    pub key: String,
    /// Where a group with no committed offset starts: `earliest`
    /// (default) or `latest`.
    pub start: String,
    /// Most messages read into one batch (default 10,000).
    pub max_batch: usize,
    /// How payloads are read (as `[mqtt.payload]`).
    pub payload: PayloadConfig,
    /// More librdkafka settings, passed as they are (`"fetch.min.bytes" =
    /// "1"`); they win over the settings above.
    pub options: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: None,
            topics: vec!["fleet".into()],
            group_id: "fleetscore".into(),
            client_id: None,
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            username: None,
            password: None,
            password_env: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            event_hubs_connection_string_env: None,
            key: "device".into(),
            start: "earliest".into(),
            max_batch: 10_000,
            payload: PayloadConfig::default(),
            options: std::collections::BTreeMap::new(),
        }
    }
}

impl KafkaSection {
    /// Whether a Kafka source is configured.
    pub fn enabled(&self) -> bool {
        self.brokers.is_some() || self.event_hubs_connection_string_env.is_some()
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens accepted on the ingest endpoints; empty: no token
    /// needed.
    pub ingest_tokens: Vec<String>,
    /// Bearer tokens for admin endpoints (they also may ingest).
    pub admin_tokens: Vec<String>,
    /// Whether the read endpoints (`GET /v1/…`) need a token too (any
    /// ingest or admin token). Default false.
    pub protect_reads: bool,
    /// Serve on a non-loopback address without admin tokens, so that
    /// anyone who can reach the port may upload models and trigger jobs.
    /// Off: `serve` refuses to start that way.
    pub allow_unauthenticated_admin: bool,
}

/// The prefix of config environment variables.
pub const ENV_PREFIX: &str = "FLEETSCORE__";

/// Defaults, then `file` (if given), then the environment.
pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.is_file() {
            anyhow::bail!(
                "--config {}: no such file (write one from `fleetscore config`)",
                path.display()
            );
        }
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed(ENV_PREFIX).split("__"));
    let config: Config = fig.extract().map_err(|e| {
        // figment names the key and its source; list every problem.
        let all: Vec<String> = e.into_iter().map(|e| describe(&e)).collect();
        anyhow::anyhow!("invalid config: {}", all.join("; "))
    })?;
    config
        .stream
        .validate()
        .context("invalid config: [stream]")?;
    config.schedule_specs()?;
    config.python.runtime()?;
    Ok(config)
}

/// One config mistake: what is wrong, the key as the user wrote it
/// (`server.listne`, or `FLEETSCORE__SERVER__LISTNE` from the
/// environment; figment's own message prefixes file keys with its profile,
/// `default.`, a word that appears nowhere in the user's file), and where.
fn describe(e: &figment::Error) -> String {
    let mut out = e.kind.to_string();
    if let (Some(profile), Some(md)) = (&e.profile, &e.metadata) {
        if !e.path.is_empty() {
            let key = if md.name.contains("environment") {
                // As the user set it: FLEETSCORE__SERVER__LISTEN.
                format!("{ENV_PREFIX}{}", e.path.join("__").to_uppercase())
            } else {
                let key = md.interpolate(profile, &e.path);
                key.strip_prefix(&format!("{profile}."))
                    .unwrap_or(&key)
                    .to_string()
            };
            out.push_str(&format!(" for key `{key}`"));
        }
    }
    if let Some(md) = &e.metadata {
        match &md.source {
            Some(source) => out.push_str(&format!(" in {source} {}", md.name)),
            None => out.push_str(&format!(" in {}", md.name)),
        }
    }
    out
}

/// The config as TOML, for `fleetscore config`.
pub fn to_toml(config: &Config) -> anyhow::Result<String> {
    toml::to_string_pretty(config).context("writing the config as TOML")
}

#[cfg(test)]
// figment's Jail closures return its (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use fleetscore_stream::WindowSpec;

    #[test]
    fn file_then_env_override_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "f.toml",
                r#"
                [server]
                listen = "0.0.0.0:9000"
                [ingest.line_protocol]
                device_tag = "host"
                [ingest.csv]
                ts = "time"
                value = 3
                [stream]
                windows = [{ size = "5m", hop = "1m" }]
                max_series = 123
                "#,
            )?;
            jail.set_env("FLEETSCORE__AUTH__INGEST_TOKENS", r#"["a","b"]"#);
            jail.set_env("FLEETSCORE__STREAM__OUT_OF_ORDER", "30s");
            jail.set_env("FLEETSCORE__STORE__MAX_RETRIES", "3");
            let c = load(Some(Path::new("f.toml"))).expect("loads");
            assert_eq!(c.server.listen, "0.0.0.0:9000");
            assert_eq!(c.server.max_body_bytes, 32 << 20);
            assert_eq!(c.ingest.line_protocol.device_tag, "host");
            assert_eq!(c.ingest.csv.value, fleetscore_codecs::Column::Index(3));
            assert_eq!(
                c.stream.windows,
                vec![WindowSpec::hopping(
                    Span::from_secs(300),
                    Span::from_secs(60)
                )]
            );
            assert_eq!(c.stream.out_of_order, Span::from_secs(30));
            assert_eq!(c.stream.max_series, 123);
            assert_eq!(c.auth.ingest_tokens, vec!["a", "b"]);
            assert_eq!(c.store.max_retries, 3);
            assert_eq!(
                c.store.retry_settings(),
                RetrySettings {
                    max_retries: 3,
                    ..RetrySettings::default()
                }
            );
            // What `fleetscore config` prints loads back to the same.
            jail.create_file("out.toml", &to_toml(&c).expect("toml"))?;
            jail.clear_env();
            assert_eq!(load(Some(Path::new("out.toml"))).expect("reloads"), c);
            Ok(())
        });
    }

    /// The example at the top of this module is a config that loads, with
    /// the values it shows.
    #[test]
    fn the_documented_example_parses() {
        let source = include_str!("config.rs");
        let example: String = source
            .lines()
            .skip_while(|l| *l != "//! ```toml")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| l.strip_prefix("//!").unwrap_or(l).trim_start_matches(' '))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(example.contains("[server]") && example.contains("[[schedules]]"));
        figment::Jail::expect_with(|jail| {
            jail.create_file("example.toml", &example)?;
            let c = load(Some(Path::new("example.toml"))).expect("the example loads");
            assert_eq!(c.server.max_connections, 1024);
            assert_eq!(c.ingest.log.idempotency_horizon_secs, 3600);
            assert_eq!(c.stream.max_series, 2_000_000);
            assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1883"));
            Ok(())
        });
    }

    /// The CLI's spelling (`--watermark per-device`) works in the file too.
    #[test]
    fn watermark_takes_the_cli_spelling() {
        figment::Jail::expect_with(|jail| {
            for (text, mode) in [
                ("per-device", fleetscore_stream::WatermarkMode::PerDevice),
                ("per_device", fleetscore_stream::WatermarkMode::PerDevice),
                ("global", fleetscore_stream::WatermarkMode::Global),
            ] {
                jail.create_file("w.toml", &format!("[stream]\nwatermark = \"{text}\"\n"))?;
                let c = load(Some(Path::new("w.toml"))).expect("loads");
                assert_eq!(c.stream.watermark, mode, "{text}");
            }
            Ok(())
        });
    }

    #[test]
    fn mistakes_name_the_key_and_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[server]\nlisen = \"x\"\n")?;
            let e = load(Some(Path::new("bad.toml"))).unwrap_err().to_string();
            assert!(e.contains("lisen") && e.contains("bad.toml"), "{e}");
            // The key as written in the file, without figment's profile.
            assert!(
                e.contains("`server.lisen`") && !e.contains("default."),
                "{e}"
            );
            jail.set_env("FLEETSCORE__SERVER__MAX_CONNECTIONS", "many");
            let e = load(None).unwrap_err().to_string();
            assert!(e.contains("FLEETSCORE__SERVER__MAX_CONNECTIONS"), "{e}");
            jail.clear_env();
            jail.create_file("bad2.toml", "[stream]\nout_of_order = \"5 parsecs\"\n")?;
            let e = load(Some(Path::new("bad2.toml"))).unwrap_err().to_string();
            assert!(e.contains("out_of_order") && e.contains("unit"), "{e}");
            let e = load(Some(Path::new("missing.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("no such file"), "{e}");
            jail.create_file("bad3.toml", "[stream]\nwindows = []\n")?;
            let e = format!("{:#}", load(Some(Path::new("bad3.toml"))).unwrap_err());
            assert!(e.contains("no windows configured"), "{e}");
            Ok(())
        });
    }
}
