//! `/metrics`: the server's telemetry in the Prometheus text format
//! (version 0.0.4), kept with `prometheus-client`: typed counters, gauges
//! and histograms in a [`Registry`] of the server's own. There is no global
//! recorder, so tests run several servers in one process.
//!
//! Where the figures come from:
//! - **As things happen.** Every HTTP request is counted and timed by
//!   [`crate::http::observe`] through [`Metrics::request`]. Every source of
//!   readings reports through [`Metrics::received`], [`Metrics::outcome`],
//!   [`Metrics::stored`] and the like. The compactor and the ingest
//!   endpoints' checks update their counters.
//! - **Read at scrape time** by collectors over the parts that keep their
//!   own figures: the ingest log ([`LogStats`] and its health), the window
//!   thread ([`WindowStats`]), the server loop's connections and in-flight
//!   bytes, and this process (`process_*`, from `/proc`).
//! - **Queried for each scrape** by the `/metrics` handler: the job store's
//!   and the model registry's figures ([`JobFigures`]), passed to
//!   [`Metrics::render`].
//!
//! Names follow Prometheus' rules: counters end in `_total` (the encoder
//! adds it, so names are registered without it), units are part of names
//! (`_seconds`, `_bytes`), a histogram has cumulative `_bucket{le}` series
//! with `_sum` and `_count`, and `fleetscore_build_info` is 1 with the build
//! in its labels. The README lists every family.
//!
//! # One telemetry for every source
//!
//! Each source of readings (the HTTP ingest endpoints, the MQTT subscriber,
//! any source added later) reports the same families under its `source`
//! label, so that a dashboard or an alert written for one works for all.
//! A *message* is what a client sends and gets an answer for: an HTTP
//! request, an MQTT message.
//!
//! | family | counts |
//! | --- | --- |
//! | `fleetscore_source_received_total` | messages received (a redelivered one counts again) |
//! | `fleetscore_source_stored_total` | messages whose readings are durable and acknowledged |
//! | `fleetscore_source_duplicates_total` | messages acknowledged as resends of stored ones, not stored again |
//! | `fleetscore_source_refused_total{reason}` | messages refused as bad input, nothing of them stored ([`Refusal`]) |
//! | `fleetscore_source_failed_total{reason}` | attempts to store messages that failed on the server's side; the client or the source retries ([`Failure`]) |
//! | `fleetscore_source_batches_total` | batches appended to the ingest log |
//! | `fleetscore_source_readings_stored_total` | readings durable and acknowledged |
//! | `fleetscore_source_readings_refused_total` | bad readings (lines, rows, elements, messages) in refused input |
//! | `fleetscore_source_readings_duplicate_total` | readings of duplicate messages |
//!
//! A source names itself ([`Source::new`]) and registers at start
//! ([`Metrics::register_source`]), so that its series exist from zero; a new
//! source needs no change here.

mod process;

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use fleetscore_ingest::{Log, LogError};
use fleetscore_jobs::db::JobStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet,
    EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::http::{ConnStats, InFlight};
use crate::windows::WindowStats;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A source of readings, by the name it reports under (`source="…"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(&'static str);

impl Source {
    /// The HTTP ingest endpoints (`/write`, `/api/v2/write`, `/v1/readings`).
    pub const HTTP: Source = Source("http");
    /// The MQTT subscriber (`--mqtt`).
    pub const MQTT: Source = Source("mqtt");
    /// The Kafka-protocol consumer (`[kafka]`).
    pub const KAFKA: Source = Source("kafka");

    /// A source named `name`: lowercase, as its configuration calls it.
    pub const fn new(name: &'static str) -> Source {
        Source(name)
    }

    /// Its `source` label.
    pub fn name(self) -> &'static str {
        self.0
    }
}

/// Why a source refused a message as bad input: the `reason` of
/// `fleetscore_source_refused_total`. Nothing of a refused message is
/// stored; resending it unchanged fails again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// It does not parse, or breaks the rules for readings (a bad line,
    /// row, payload or topic; a bad parameter or idempotency key).
    Invalid,
    /// It came without a valid token.
    Unauthorized,
    /// It is over the body limit.
    TooLarge,
    /// Its content type or encoding is not one the source reads.
    Unsupported,
    /// Its idempotency key was used before for other readings.
    Conflict,
    /// Its body did not arrive in time.
    Timeout,
}

impl Refusal {
    /// Every reason, so that their series exist from zero.
    pub const ALL: [Refusal; 6] = [
        Refusal::Invalid,
        Refusal::Unauthorized,
        Refusal::TooLarge,
        Refusal::Unsupported,
        Refusal::Conflict,
        Refusal::Timeout,
    ];

    /// Its `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid",
            Refusal::Unauthorized => "unauthorized",
            Refusal::TooLarge => "too_large",
            Refusal::Unsupported => "unsupported",
            Refusal::Conflict => "conflict",
            Refusal::Timeout => "timeout",
        }
    }
}

/// Why storing a message failed on the server's side: the `reason` of
/// `fleetscore_source_failed_total`. The message was not stored; the
/// client (HTTP) or the source (MQTT) retries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The ingest log could not write, or the server had no room for the
    /// request under its in-flight limit (HTTP 503).
    Unavailable,
    /// The disk under the ingest log is full (HTTP 507).
    DiskFull,
    /// Anything else: an I/O error, a bug (HTTP 500).
    Internal,
}

impl Failure {
    /// Every reason, so that their series exist from zero.
    pub const ALL: [Failure; 3] = [Failure::Unavailable, Failure::DiskFull, Failure::Internal];

    /// Its `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Unavailable => "unavailable",
            Failure::DiskFull => "disk_full",
            Failure::Internal => "internal",
        }
    }

    /// What a failed append to the ingest log means for its messages.
    pub fn of_append(e: &LogError) -> Failure {
        match e {
            LogError::Unavailable { .. } if e.is_disk_full() => Failure::DiskFull,
            LogError::Unavailable { .. } => Failure::Unavailable,
            _ => Failure::Internal,
        }
    }
}

/// What became of received messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Their readings are durable and acknowledged.
    Stored,
    /// Acknowledged as resends of stored messages, not stored again.
    Duplicate,
    /// Refused as bad input.
    Refused(Refusal),
    /// Not stored because of the server; to be retried.
    Failed(Failure),
}

impl Outcome {
    /// What the answer `status` of an HTTP ingest endpoint says became of
    /// its request; `duplicate`: it was answered as a resend of a stored
    /// batch (`Idempotent-Replayed`).
    pub fn of_http(status: StatusCode, duplicate: bool) -> Outcome {
        if status.is_success() {
            return if duplicate {
                Outcome::Duplicate
            } else {
                Outcome::Stored
            };
        }
        match status.as_u16() {
            401 | 403 => Outcome::Refused(Refusal::Unauthorized),
            408 => Outcome::Refused(Refusal::Timeout),
            409 | 422 => Outcome::Refused(Refusal::Conflict),
            413 => Outcome::Refused(Refusal::TooLarge),
            415 => Outcome::Refused(Refusal::Unsupported),
            400..=499 => Outcome::Refused(Refusal::Invalid),
            503 => Outcome::Failed(Failure::Unavailable),
            507 => Outcome::Failed(Failure::DiskFull),
            _ => Outcome::Failed(Failure::Internal),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    source: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    endpoint: String,
    method: &'static str,
}

/// Upper bounds (seconds) of the request-duration histogram's buckets:
/// from a health check to a large ingest batch waiting for its fsync.
const REQUEST_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// The per-source families (see the module docs).
#[derive(Default)]
struct SourceFamilies {
    received: Family<SourceLabels, Counter>,
    stored: Family<SourceLabels, Counter>,
    duplicates: Family<SourceLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    failed: Family<ReasonLabels, Counter>,
    batches: Family<SourceLabels, Counter>,
    readings_stored: Family<SourceLabels, Counter>,
    readings_refused: Family<SourceLabels, Counter>,
    readings_duplicate: Family<SourceLabels, Counter>,
    dead_letters: Family<ReasonLabels, Counter>,
    dead_letters_lost: Family<SourceLabels, Counter>,
    lag: Family<LagLabels, prometheus_client::metrics::gauge::Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    source: &'static str,
    topic: String,
    partition: i64,
}

impl SourceFamilies {
    fn register(&self, r: &mut Registry) {
        let by_source: [(&str, &str, &Family<SourceLabels, Counter>); 7] = [
            ("fleetscore_source_received", "Messages received by a source (an HTTP ingest request, an MQTT message; a redelivered message counts again)", &self.received),
            ("fleetscore_source_stored", "Messages whose readings were made durable and acknowledged", &self.stored),
            ("fleetscore_source_duplicates", "Messages acknowledged as resends of stored ones (same idempotency key and content), not stored again", &self.duplicates),
            ("fleetscore_source_batches", "Batches a source appended to the ingest log (HTTP: one per stored request; MQTT: the messages that arrived together)", &self.batches),
            ("fleetscore_source_readings_stored", "Readings made durable and acknowledged", &self.readings_stored),
            ("fleetscore_source_readings_refused", "Bad readings (lines, rows, elements, messages) found in refused input", &self.readings_refused),
            ("fleetscore_source_readings_duplicate", "Readings of duplicate messages (acknowledged, not stored again)", &self.readings_duplicate),
        ];
        for (name, help, family) in by_source {
            r.register(name, help, family.clone());
        }
        r.register(
            "fleetscore_source_refused",
            "Messages refused as bad input, nothing of them stored (HTTP: answered 4xx; MQTT: acknowledged and dropped), by reason: invalid, unauthorized, too_large, unsupported, conflict, timeout",
            self.refused.clone(),
        );
        r.register(
            "fleetscore_source_dead_letters",
            "Messages (or lines) a source could not read and kept under rejected/ in the store, by reason: syntax, missing, name, time, value",
            self.dead_letters.clone(),
        );
        r.register(
            "fleetscore_source_lag_messages",
            "Messages of a partition not yet stored: the partition's end offset minus the next offset to store (Kafka), by topic and partition",
            self.lag.clone(),
        );
        r.register(
            "fleetscore_source_dead_letters_lost",
            "Dead letters that could not be written to the store (after retries): the message was acknowledged without its copy; see the log",
            self.dead_letters_lost.clone(),
        );
        r.register(
            "fleetscore_source_failed",
            "Attempts to store messages that failed on the server's side (HTTP: answered 5xx, for the client to retry; MQTT: a failed append, retried), by reason: unavailable, disk_full, internal",
            self.failed.clone(),
        );
    }
}

/// The server's telemetry: its instruments and its registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    sources: SourceFamilies,
    /// The sources registered ([`Metrics::register_source`]).
    registered: std::sync::Mutex<Vec<Source>>,
    /// Log segments moved into raw/ and deleted.
    pub segments_compacted: Counter,
    /// Readings written to raw/ by compaction.
    pub readings_compacted: Counter,
    /// raw/ objects written by compaction.
    pub raw_objects: Counter,
    /// Compaction runs that failed (retried later).
    pub compaction_errors: Counter,
    /// Batches answered "retry later" because the log could not write.
    pub log_unavailable: Counter,
    /// Batches stored with times implausibly far from now (see
    /// [`crate::plausible`]).
    pub implausible_batches: Counter,
    /// When such a batch was last logged (ns since the epoch), so that a
    /// client sending thousands logs one line per 10 s.
    pub implausible_logged: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The server's instruments, with the process figures and the build
    /// info; the parts that keep their own figures are added with the
    /// `watch_*` methods.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        r.register(
            "fleetscore_build",
            "The running build: fleetscore's version, the Rust compiler that built it and the commit (FLEETSCORE_COMMIT at build time)",
            Info::new(build_labels()),
        );
        r.register_collector(Box::new(process::ProcessCollector));
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            durations: Family::new_with_constructor(request_histogram),
            sources: SourceFamilies::default(),
            registered: std::sync::Mutex::new(Vec::new()),
            segments_compacted: Counter::default(),
            readings_compacted: Counter::default(),
            raw_objects: Counter::default(),
            compaction_errors: Counter::default(),
            log_unavailable: Counter::default(),
            implausible_batches: Counter::default(),
            implausible_logged: AtomicI64::new(i64::MIN),
        };
        r.register(
            "fleetscore_http_requests",
            "HTTP requests answered, by endpoint (the route), method and status",
            m.requests.clone(),
        );
        r.register_with_unit(
            "fleetscore_http_request_duration",
            "Time from a request's headers to its answer, by endpoint and method (ingest: including the durable append)",
            Unit::Seconds,
            m.durations.clone(),
        );
        m.sources.register(&mut r);
        r.register(
            "fleetscore_ingest_implausible_batches",
            "Batches stored with timestamps more than 30 years before or a day after now (usually a wrong unit, such as seconds sent without precision=s); their answers carry a Fleetscore-Warning header",
            m.implausible_batches.clone(),
        );
        r.register(
            "fleetscore_log_unavailable_answers",
            "Batches answered 503/507 with Retry-After because the log could not write",
            m.log_unavailable.clone(),
        );
        let compaction: [(&str, &str, &Counter); 4] = [
            (
                "fleetscore_compaction_segments",
                "Log segments compacted into raw/ and deleted",
                &m.segments_compacted,
            ),
            (
                "fleetscore_compaction_readings",
                "Readings written to raw/ by compaction",
                &m.readings_compacted,
            ),
            (
                "fleetscore_compaction_objects",
                "raw/ objects written by compaction",
                &m.raw_objects,
            ),
            (
                "fleetscore_compaction_errors",
                "Compaction runs that failed (retried later)",
                &m.compaction_errors,
            ),
        ];
        for (name, help, counter) in compaction {
            r.register(name, help, counter.clone());
        }
        Metrics { registry: r, ..m }
    }

    /// Reports the ingest log's figures (counters since it was opened, its
    /// health, the idempotency keys it holds), read at each scrape.
    pub fn watch_log(&mut self, log: Arc<Log>) {
        self.registry
            .register_collector(Box::new(LogCollector(log)));
    }

    /// Reports the window thread's figures, read at each scrape.
    pub fn watch_windows(&mut self, stats: Arc<WindowStats>) {
        self.registry
            .register_collector(Box::new(WindowCollector(stats)));
    }

    /// Reports the server loop's connections and the bytes of request
    /// bodies in memory, read at each scrape.
    pub fn watch_connections(&mut self, conns: Arc<ConnStats>, inflight: Arc<InFlight>) {
        self.registry
            .register_collector(Box::new(ConnCollector { conns, inflight }));
    }

    /// Creates the series of `source` at zero, so that a source that has
    /// seen nothing yet still shows (and `rate()` sees its first message).
    pub fn register_source(&self, source: Source) {
        {
            let mut known = self
                .registered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !known.contains(&source) {
                known.push(source);
            }
        }
        let s = &self.sources;
        let labels = SourceLabels {
            source: source.name(),
        };
        for family in [
            &s.received,
            &s.stored,
            &s.duplicates,
            &s.batches,
            &s.readings_stored,
            &s.readings_refused,
            &s.readings_duplicate,
            &s.dead_letters_lost,
        ] {
            family.get_or_create_owned(&labels);
        }
        for p in fleetscore_codecs::Problem::ALL {
            s.dead_letters
                .get_or_create_owned(&reason(source, p.as_str()));
        }
        for r in Refusal::ALL {
            s.refused.get_or_create_owned(&reason(source, r.as_str()));
        }
        for f in Failure::ALL {
            s.failed.get_or_create_owned(&reason(source, f.as_str()));
        }
    }

    /// One answered HTTP request: `endpoint` is the route it matched (or
    /// `unmatched`), `method` one of the standard methods (or `other`).
    pub fn request(&self, endpoint: &str, method: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_owned(),
                method,
                status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                endpoint: endpoint.to_owned(),
                method,
            })
            .observe(took.as_secs_f64());
    }

    /// `messages` messages received by `source`.
    pub fn received(&self, source: Source, messages: u64) {
        self.sources
            .received
            .get_or_create(&by(source))
            .inc_by(messages);
    }

    /// What became of `messages` messages of `source`.
    pub fn outcome(&self, source: Source, outcome: Outcome, messages: u64) {
        let s = &self.sources;
        match outcome {
            Outcome::Stored => s.stored.get_or_create(&by(source)).inc_by(messages),
            Outcome::Duplicate => s.duplicates.get_or_create(&by(source)).inc_by(messages),
            Outcome::Refused(r) => s
                .refused
                .get_or_create(&reason(source, r.as_str()))
                .inc_by(messages),
            Outcome::Failed(f) => s
                .failed
                .get_or_create(&reason(source, f.as_str()))
                .inc_by(messages),
        };
    }

    /// An HTTP ingest request answered with `status` (`duplicate`: as a
    /// resend of a stored batch): one message received, and its outcome.
    pub fn answered(&self, source: Source, status: StatusCode, duplicate: bool) {
        self.received(source, 1);
        self.outcome(source, Outcome::of_http(status, duplicate), 1);
    }

    /// One batch of `readings` readings of `source` made durable.
    pub fn stored(&self, source: Source, readings: u64) {
        let s = &self.sources;
        s.batches.get_or_create(&by(source)).inc();
        s.readings_stored
            .get_or_create(&by(source))
            .inc_by(readings);
    }

    /// `readings` readings of `source` acknowledged as duplicates of stored
    /// ones (not stored again).
    pub fn duplicate(&self, source: Source, readings: u64) {
        self.sources
            .readings_duplicate
            .get_or_create(&by(source))
            .inc_by(readings);
    }

    /// `readings` bad readings (lines, rows, elements, messages) of
    /// `source` found in refused input.
    pub fn refused(&self, source: Source, readings: u64) {
        self.sources
            .readings_refused
            .get_or_create(&by(source))
            .inc_by(readings);
    }

    /// `n` dead letters of `source` kept, for `problem`.
    pub fn dead_letters(&self, source: Source, problem: &'static str, n: u64) {
        self.sources
            .dead_letters
            .get_or_create(&reason(source, problem))
            .inc_by(n);
    }

    /// The lag of a partition of `source`: messages not yet stored.
    pub fn lag(&self, source: Source, topic: &str, partition: i32, messages: i64) {
        self.sources
            .lag
            .get_or_create(&LagLabels {
                source: source.name(),
                topic: topic.to_string(),
                partition: i64::from(partition),
            })
            .set(messages);
    }

    /// `n` dead letters of `source` that could not be written.
    pub fn dead_letters_lost(&self, source: Source, n: u64) {
        self.sources
            .dead_letters_lost
            .get_or_create(&by(source))
            .inc_by(n);
    }

    /// Dead letters kept since start, by source and reason (non-zero only),
    /// for the API.
    pub fn dead_letter_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        let known = self
            .registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for source in known {
            for p in fleetscore_codecs::Problem::ALL {
                let n = self
                    .sources
                    .dead_letters
                    .get_or_create(&reason(source, p.as_str()))
                    .get();
                if n > 0 {
                    out.push((source.name(), p.as_str(), n));
                }
            }
        }
        out
    }

    /// The exposition text: the server's instruments and watched parts,
    /// then the job store's figures of this scrape.
    pub fn render(&self, jobs: JobFigures) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(32 * 1024);
        prometheus_text::encode(&mut out, &self.registry)?;
        let mut scrape = Registry::default();
        scrape.register_collector(Box::new(jobs));
        prometheus_text::encode(&mut out, &scrape)?;
        Ok(out)
    }
}

fn by(source: Source) -> SourceLabels {
    SourceLabels {
        source: source.name(),
    }
}

fn reason(source: Source, reason: &'static str) -> ReasonLabels {
    ReasonLabels {
        source: source.name(),
        reason,
    }
}

/// The labels of `fleetscore_build_info`.
fn build_labels() -> [(&'static str, &'static str); 3] {
    [
        ("version", env!("CARGO_PKG_VERSION")),
        ("rustc", env!("FLEETSCORE_RUSTC_VERSION")),
        (
            "commit",
            match option_env!("FLEETSCORE_COMMIT") {
                Some(c) if !c.is_empty() => c,
                _ => "unknown",
            },
        ),
    ]
}

// ---------------------------------------------------------- scrape-time

/// Writes figures read at scrape time, family by family.
struct Figures<'a>(DescriptorEncoder<'a>);

impl Figures<'_> {
    fn counter(
        &mut self,
        name: &str,
        help: &str,
        v: impl EncodeCounterValue,
    ) -> Result<(), fmt::Error> {
        ConstCounter::new(v).encode(self.0.encode_descriptor(
            name,
            help,
            None,
            MetricType::Counter,
        )?)
    }

    fn gauge(&mut self, name: &str, help: &str, v: impl EncodeGaugeValue) -> fmt::Result {
        ConstGauge::new(v).encode(
            self.0
                .encode_descriptor(name, help, None, MetricType::Gauge)?,
        )
    }

    /// A family with one label, `label`, and a sample per value of it.
    fn by<V: Copy>(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (impl AsRef<str>, V)>,
    ) -> fmt::Result
    where
        ConstCounter<V>: EncodeMetric,
        ConstGauge<V>: EncodeMetric,
    {
        let mut family = self.0.encode_descriptor(name, help, None, kind)?;
        for (value, v) in samples {
            let labels = [(label, value.as_ref())];
            let sample = family.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(v).encode(sample)?,
                _ => ConstGauge::new(v).encode(sample)?,
            }
        }
        Ok(())
    }
}

/// The ingest log's figures.
struct LogCollector(Arc<Log>);

impl fmt::Debug for LogCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogCollector")
    }
}

impl Collector for LogCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let log = self.0.stats();
        let health = self.0.health();
        let mut o = Figures(encoder);
        let counters: [(&str, &str, u64); 13] = [
            ("fleetscore_log_batches", "Batches made durable in the ingest log.", log.batches),
            ("fleetscore_log_readings", "Readings made durable in the ingest log.", log.readings),
            ("fleetscore_log_bytes", "Bytes written to the ingest log.", log.bytes),
            ("fleetscore_log_commits", "Group commits of the ingest log.", log.commits),
            ("fleetscore_log_fsyncs", "fdatasync calls of the ingest log.", log.fsyncs),
            ("fleetscore_log_segments_created", "Ingest log segments started.", log.segments_created),
            ("fleetscore_log_append_failures", "Appends that failed (nothing acknowledged).", log.failed),
            ("fleetscore_log_write_failures", "Writes, fsyncs or segment rolls of the ingest log that failed (disk full, I/O error); the log then refuses appends until it recovers.", log.write_failures),
            ("fleetscore_log_recoveries", "Times the ingest log restored a writable state by itself after a failure.", log.recoveries),
            ("fleetscore_log_failed_recoveries", "Recovery attempts that failed (the disk was still full, say).", log.failed_recoveries),
            ("fleetscore_log_duplicates", "Batches resent under an idempotency key already stored: acknowledged, not stored again.", log.duplicates),
            ("fleetscore_log_key_conflicts", "Batches refused because their idempotency key was stored with other readings.", log.key_conflicts),
            ("fleetscore_log_keys_evicted", "Idempotency keys forgotten before their horizon because [ingest] log.idempotency_max_keys was reached.", log.keys_evicted),
        ];
        for (name, help, v) in counters {
            o.counter(name, help, v)?;
        }
        o.gauge(
            "fleetscore_log_writable",
            "1 while the ingest log can write; 0 after a failed write until it recovers by itself (appends get 503/507 meanwhile).",
            u64::from(health.writable),
        )?;
        o.gauge(
            "fleetscore_log_idempotency_keys",
            "Idempotency keys the ingest log remembers now.",
            log.keys,
        )
    }
}

/// The window thread's figures.
struct WindowCollector(Arc<WindowStats>);

impl fmt::Debug for WindowCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WindowCollector")
    }
}

impl Collector for WindowCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let w = &self.0;
        let c = w.counters();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut o = Figures(encoder);
        o.by(
            MetricType::Counter,
            "fleetscore_window_readings",
            "Readings through the window aggregator, by what became of them.",
            "disposition",
            [
                ("accepted", c.accepted),
                ("adjusted", c.adjusted),
                ("dropped", c.dropped()),
            ],
        )?;
        o.by(
            MetricType::Counter,
            "fleetscore_window_dropped",
            "Readings the window aggregator dropped, by reason (they stay in raw/).",
            "reason",
            c.drop_reasons().into_iter().map(|(r, v)| (r.as_str(), v)),
        )?;
        let counters: [(&str, &str, u64); 7] = [
            ("fleetscore_window_series_shed", "Readings not windowed because they would have started a series past [stream] max_series (also in fleetscore_window_dropped_total{reason=\"series_limit\"}; they stay in raw/).", c.shed),
            ("fleetscore_window_series_released", "Series whose windows had all closed, released from memory.", c.series_released),
            ("fleetscore_window_out_of_order", "Accepted readings older than their clock's newest.", c.out_of_order),
            ("fleetscore_window_late_accepted", "Accepted readings behind the watermark (within allowed lateness).", c.late_accepted),
            ("fleetscore_windows_emitted", "Windows closed by the aggregator.", c.windows_emitted),
            ("fleetscore_windows_written", "Windows written to windows/.", load(&w.windows_written)),
            ("fleetscore_window_flushes", "Window flushes (windows, then checkpoint).", load(&w.flushes)),
        ];
        for (name, help, v) in counters {
            o.counter(name, help, v)?;
        }
        o.counter(
            "fleetscore_window_flush_errors",
            "Window flushes that failed (retried at the next).",
            load(&w.flush_errors),
        )?;
        o.counter(
            "fleetscore_window_flush_seconds",
            "Time spent in successful window flushes.",
            load(&w.flush_micros) as f64 / 1e6,
        )?;
        let gauges: [(&str, &str, u64); 5] = [
            (
                "fleetscore_window_series_max",
                "The most live series ([stream] max_series).",
                load(&w.max_series),
            ),
            (
                "fleetscore_window_idle_clocks",
                "Clocks kept for devices without live series (bounded by max_series).",
                load(&w.idle_clocks),
            ),
            (
                "fleetscore_window_open_panes",
                "Open window panes held in memory.",
                load(&w.open_panes),
            ),
            (
                "fleetscore_window_series",
                "Live (device, tag) series: those with open windows.",
                load(&w.series),
            ),
            (
                "fleetscore_window_checkpoint_position",
                "Ingest log position of the last window checkpoint.",
                load(&w.checkpoint),
            ),
        ];
        for (name, help, v) in gauges {
            o.gauge(name, help, v)?;
        }
        Ok(())
    }
}

/// The server loop's connections and the in-flight bytes.
#[derive(Debug)]
struct ConnCollector {
    conns: Arc<ConnStats>,
    inflight: Arc<InFlight>,
}

impl Collector for ConnCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let (c, i) = (&self.conns, &self.inflight);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut o = Figures(encoder);
        let gauges: [(&str, &str, u64); 3] = [
            ("fleetscore_http_connections", "Client connections open now.", load(&c.open)),
            ("fleetscore_http_connection_limit", "Most client connections at once ([server] max_connections, bounded by the open-file limit).", load(&c.limit)),
            ("fleetscore_http_inflight_bytes", "Bytes of request bodies held in memory now (bounded by [server] max_inflight_bytes).", i.held_bytes()),
        ];
        for (name, help, v) in gauges {
            o.gauge(name, help, v)?;
        }
        let counters: [(&str, &str, u64); 6] = [
            (
                "fleetscore_http_connections_accepted",
                "Client connections accepted.",
                load(&c.accepted),
            ),
            (
                "fleetscore_http_connections_refused",
                "Connections answered 503 because every connection slot was busy with a request.",
                load(&c.refused),
            ),
            (
                "fleetscore_http_connections_evicted",
                "Connections waiting for a request that were closed to make room for a new one.",
                load(&c.evicted),
            ),
            (
                "fleetscore_http_connections_idle_closed",
                "Connections closed after [server] idle_timeout without a byte either way.",
                load(&c.idle_closed),
            ),
            (
                "fleetscore_http_inflight_waits",
                "Requests that waited for room under [server] max_inflight_bytes.",
                load(&i.waited),
            ),
            (
                "fleetscore_http_inflight_refused",
                "Requests answered 503 after waiting [server] max_inflight_wait for room.",
                load(&i.refused),
            ),
        ];
        for (name, help, v) in counters {
            o.counter(name, help, v)?;
        }
        Ok(())
    }
}

/// The job store's and the model registry's figures, queried for one
/// scrape. A part that could not be read is left out of that scrape.
#[derive(Debug, Default)]
pub struct JobFigures {
    /// The job store's totals.
    pub jobs: Option<JobStats>,
    /// Registered (device, tag) models.
    pub models: Option<usize>,
    /// Tasks waiting for a worker plus jobs waiting to be planned.
    pub pending_work: Option<u64>,
}

impl Collector for JobFigures {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut o = Figures(encoder);
        if let Some(j) = &self.jobs {
            o.by(
                MetricType::Gauge,
                "fleetscore_jobs",
                "Jobs in the job store, by state.",
                "state",
                j.jobs.iter().map(|(s, n)| (s.as_str(), *n)),
            )?;
            o.by(
                MetricType::Gauge,
                "fleetscore_tasks",
                "Tasks in the job store, by state.",
                "state",
                j.tasks.iter().map(|(s, n)| (s.as_str(), *n)),
            )?;
            let counters: [(&str, &str, u64); 4] = [
                ("fleetscore_task_retries", "Task attempts beyond the first.", j.retries),
                ("fleetscore_job_rows", "Rows scored by finished jobs.", j.rows),
                ("fleetscore_job_anomalies", "Anomalies found by finished jobs.", j.anomalies),
                ("fleetscore_job_failed_models", "Models that failed in finished jobs (no model, no data, feature mismatch, evaluation).", j.failed_models),
            ];
            for (name, help, v) in counters {
                o.counter(name, help, v)?;
            }
            // The job store keeps the sum and the count, not a
            // distribution: a histogram with only its +Inf bucket.
            o.0.encode_descriptor(
                "fleetscore_job_duration_seconds",
                "Start-to-finish seconds of finished jobs.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(j.job_seconds, j.finished, &[], None)?;
            o.gauge(
                "fleetscore_job_last_success_window_end_seconds",
                "Window end of the newest scheduled job that succeeded or found no readings in its window (skipped after it ran), Unix seconds; alert when it lags.",
                j.last_success_window_end.map_or(0.0, |t| t as f64 / 1e9),
            )?;
        }
        if let Some(m) = self.models {
            o.gauge("fleetscore_models", "Registered (device, tag) models.", m)?;
        }
        if let Some(n) = self.pending_work {
            o.gauge(
                "fleetscore_pending_work",
                "Tasks waiting for a worker (queued, or with an expired lease) plus jobs waiting to be planned.",
                n,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_map_to_one_outcome_each() {
        let of = |code: u16, dup: bool| Outcome::of_http(StatusCode::from_u16(code).unwrap(), dup);
        assert_eq!(of(204, false), Outcome::Stored);
        assert_eq!(of(200, true), Outcome::Duplicate);
        assert_eq!(of(400, false), Outcome::Refused(Refusal::Invalid));
        assert_eq!(of(401, false), Outcome::Refused(Refusal::Unauthorized));
        assert_eq!(of(408, false), Outcome::Refused(Refusal::Timeout));
        assert_eq!(of(413, false), Outcome::Refused(Refusal::TooLarge));
        assert_eq!(of(415, false), Outcome::Refused(Refusal::Unsupported));
        assert_eq!(of(422, false), Outcome::Refused(Refusal::Conflict));
        assert_eq!(of(503, false), Outcome::Failed(Failure::Unavailable));
        assert_eq!(of(507, false), Outcome::Failed(Failure::DiskFull));
        assert_eq!(of(500, false), Outcome::Failed(Failure::Internal));
    }

    /// The value of the sample written exactly as `series` (name and
    /// labels), if there is one.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn every_source_reports_the_same_families_from_zero() {
        let m = Metrics::new();
        m.register_source(Source::HTTP);
        m.register_source(Source::MQTT);
        // A third source needs nothing here but its name.
        m.register_source(Source::new("kafka"));
        m.answered(Source::HTTP, StatusCode::NO_CONTENT, false);
        m.stored(Source::HTTP, 3);
        m.answered(Source::HTTP, StatusCode::BAD_REQUEST, false);
        m.refused(Source::HTTP, 2);
        m.answered(Source::HTTP, StatusCode::OK, true);
        m.duplicate(Source::HTTP, 3);
        m.received(Source::MQTT, 5);
        m.outcome(Source::MQTT, Outcome::Stored, 4);
        m.stored(Source::MQTT, 4);
        m.outcome(Source::MQTT, Outcome::Refused(Refusal::Invalid), 1);
        m.refused(Source::MQTT, 1);
        m.outcome(Source::MQTT, Outcome::Failed(Failure::DiskFull), 4);
        let text = m.render(JobFigures::default()).unwrap();
        let at = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
        for (series, v) in [
            ("fleetscore_source_received_total{source=\"http\"}", 3.0),
            ("fleetscore_source_stored_total{source=\"http\"}", 1.0),
            ("fleetscore_source_duplicates_total{source=\"http\"}", 1.0),
            (
                "fleetscore_source_refused_total{source=\"http\",reason=\"invalid\"}",
                1.0,
            ),
            ("fleetscore_source_batches_total{source=\"http\"}", 1.0),
            (
                "fleetscore_source_readings_stored_total{source=\"http\"}",
                3.0,
            ),
            (
                "fleetscore_source_readings_refused_total{source=\"http\"}",
                2.0,
            ),
            (
                "fleetscore_source_readings_duplicate_total{source=\"http\"}",
                3.0,
            ),
            ("fleetscore_source_received_total{source=\"mqtt\"}", 5.0),
            ("fleetscore_source_stored_total{source=\"mqtt\"}", 4.0),
            (
                "fleetscore_source_refused_total{source=\"mqtt\",reason=\"invalid\"}",
                1.0,
            ),
            (
                "fleetscore_source_failed_total{source=\"mqtt\",reason=\"disk_full\"}",
                4.0,
            ),
            (
                "fleetscore_source_readings_stored_total{source=\"mqtt\"}",
                4.0,
            ),
            ("fleetscore_source_received_total{source=\"kafka\"}", 0.0),
            (
                "fleetscore_source_refused_total{source=\"kafka\",reason=\"timeout\"}",
                0.0,
            ),
            (
                "fleetscore_source_failed_total{source=\"kafka\",reason=\"internal\"}",
                0.0,
            ),
        ] {
            assert_eq!(at(series), v, "{series}");
        }
    }

    #[test]
    fn request_durations_are_a_histogram_in_seconds() {
        let m = Metrics::new();
        m.request("/write", "POST", 204, Duration::from_millis(3));
        m.request("/write", "POST", 204, Duration::from_millis(30));
        m.request("/write", "POST", 400, Duration::from_secs(20));
        let text = m.render(JobFigures::default()).unwrap();
        assert!(
            text.contains("# TYPE fleetscore_http_request_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fleetscore_http_requests_total counter\n"),
            "{text}"
        );
        let at = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
        let h = "fleetscore_http_request_duration_seconds";
        let l = "endpoint=\"/write\",method=\"POST\"";
        assert_eq!(at(&format!("{h}_bucket{{{l},le=\"0.001\"}}")), 0.0);
        assert_eq!(at(&format!("{h}_bucket{{{l},le=\"0.005\"}}")), 1.0);
        assert_eq!(at(&format!("{h}_bucket{{{l},le=\"0.05\"}}")), 2.0);
        assert_eq!(at(&format!("{h}_bucket{{{l},le=\"10\"}}")), 2.0);
        assert_eq!(at(&format!("{h}_bucket{{{l},le=\"+Inf\"}}")), 3.0);
        assert_eq!(at(&format!("{h}_count{{{l}}}")), 3.0);
        assert!((at(&format!("{h}_sum{{{l}}}")) - 20.033).abs() < 1e-9);
        assert_eq!(
            at("fleetscore_http_requests_total{endpoint=\"/write\",method=\"POST\",status=\"204\"}"),
            2.0
        );
    }

    #[test]
    fn job_figures_are_typed() {
        let figures = JobFigures {
            jobs: Some(JobStats {
                jobs: vec![(fleetscore_jobs::db::JobState::Succeeded, 2)],
                tasks: vec![(fleetscore_jobs::db::TaskState::Succeeded, 4)],
                job_seconds: 3.5,
                finished: 2,
                last_success_window_end: Some(1_700_000_000_000_000_000),
                ..JobStats::default()
            }),
            models: Some(7),
            pending_work: Some(1),
        };
        let text = Metrics::new().render(figures).unwrap();
        for line in [
            "# TYPE fleetscore_jobs gauge\nfleetscore_jobs{state=\"succeeded\"} 2\n",
            "# TYPE fleetscore_job_duration_seconds histogram\nfleetscore_job_duration_seconds_bucket{le=\"+Inf\"} 2\nfleetscore_job_duration_seconds_sum 3.5\nfleetscore_job_duration_seconds_count 2\n",
            "# TYPE fleetscore_job_rows_total counter\nfleetscore_job_rows_total 0\n",
            "fleetscore_job_last_success_window_end_seconds 1700000000",
            "fleetscore_models 7\n",
            "fleetscore_pending_work 1\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn build_info_names_the_build() {
        let text = Metrics::new().render(JobFigures::default()).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("fleetscore_build_info{"))
            .unwrap_or_else(|| panic!("no build info in\n{text}"));
        assert!(
            line.starts_with(&format!(
                "fleetscore_build_info{{version=\"{}\",rustc=\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{line}"
        );
        assert!(line.ends_with("} 1"), "{line}");
        assert!(
            text.contains("# TYPE fleetscore_build_info gauge\n"),
            "{text}"
        );
    }
}
