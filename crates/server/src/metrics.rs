//! `/metrics` in the Prometheus text format (version 0.0.4): counters kept
//! by the server, plus the figures of the ingest log and the window thread
//! read at scrape time. Metric names are documented in the README.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fleetscore_ingest::LogStats;
use fleetscore_stream::DropReason;

use crate::windows::WindowStats;

/// Where readings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// An HTTP endpoint.
    Http,
    /// The MQTT subscriber.
    Mqtt,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Mqtt => "mqtt",
        }
    }
}

/// Upper bounds (seconds) of the request-duration histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| s <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The server's own counters.
pub struct Metrics {
    started: Instant,
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    durations: Mutex<BTreeMap<&'static str, std::sync::Arc<Histogram>>>,
    readings: [AtomicU64; 2],
    refused_batches: [AtomicU64; 2],
    refused_items: [AtomicU64; 2],
    /// Log segments moved into raw/ and deleted.
    pub segments_compacted: AtomicU64,
    /// Readings written to raw/ by compaction.
    pub readings_compacted: AtomicU64,
    /// raw/ objects written by compaction.
    pub raw_objects: AtomicU64,
    /// Compaction runs that failed (retried later).
    pub compaction_errors: AtomicU64,
    /// Batches answered "retry later" because the log could not write.
    pub log_unavailable: AtomicU64,
    /// Readings of batches resent under an idempotency key already stored.
    pub duplicates: AtomicU64,
    /// Batches stored with times implausibly far from now (see
    /// [`crate::plausible`]).
    pub implausible_batches: AtomicU64,
    /// When such a batch was last logged (ns since the epoch), so that a
    /// client sending thousands logs one line per 10 s.
    pub implausible_logged: std::sync::atomic::AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            requests: Mutex::default(),
            durations: Mutex::default(),
            readings: Default::default(),
            refused_batches: Default::default(),
            refused_items: Default::default(),
            segments_compacted: AtomicU64::new(0),
            readings_compacted: AtomicU64::new(0),
            raw_objects: AtomicU64::new(0),
            compaction_errors: AtomicU64::new(0),
            log_unavailable: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            implausible_batches: AtomicU64::new(0),
            implausible_logged: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }
}

fn idx(s: Source) -> usize {
    s as usize
}

impl Metrics {
    /// One answered request of `endpoint` (a route such as `/write`).
    pub fn request(&self, endpoint: &'static str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((endpoint, status))
            .or_default() += 1;
        let h = std::sync::Arc::clone(
            self.durations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(endpoint)
                .or_default(),
        );
        h.observe(took);
    }

    /// Readings stored durably.
    pub fn stored(&self, source: Source, readings: u64) {
        self.readings[idx(source)].fetch_add(readings, Ordering::Relaxed);
    }

    /// A refused batch (HTTP) or messages (MQTT), with the number of bad
    /// lines, rows or messages.
    pub fn refused(&self, source: Source, batches: u64, items: u64) {
        self.refused_batches[idx(source)].fetch_add(batches, Ordering::Relaxed);
        self.refused_items[idx(source)].fetch_add(items, Ordering::Relaxed);
    }

    /// The job store's and registry's part of the exposition text.
    pub fn render_jobs(
        &self,
        jobs: Option<&fleetscore_jobs::db::JobStats>,
        models: Option<usize>,
    ) -> String {
        let mut o = String::new();
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        if let Some(j) = jobs {
            head(
                &mut o,
                "fleetscore_jobs",
                "gauge",
                "Jobs in the job store, by state.",
            );
            for (state, n) in &j.jobs {
                let _ = writeln!(o, "fleetscore_jobs{{state=\"{state}\"}} {n}");
            }
            head(
                &mut o,
                "fleetscore_tasks",
                "gauge",
                "Tasks in the job store, by state.",
            );
            for (state, n) in &j.tasks {
                let _ = writeln!(o, "fleetscore_tasks{{state=\"{state}\"}} {n}");
            }
            let more: [(&str, &str, &str, f64); 7] = [
                ("fleetscore_task_retries_total", "counter", "Task attempts beyond the first.", j.retries as f64),
                ("fleetscore_job_rows_total", "counter", "Rows scored by finished jobs.", j.rows as f64),
                ("fleetscore_job_anomalies_total", "counter", "Anomalies found by finished jobs.", j.anomalies as f64),
                ("fleetscore_job_failed_models_total", "counter", "Models that failed in finished jobs (no model, no data, feature mismatch, evaluation).", j.failed_models as f64),
                ("fleetscore_job_duration_seconds_sum", "counter", "Start-to-finish seconds of finished jobs, summed.", j.job_seconds),
                ("fleetscore_job_duration_seconds_count", "counter", "Finished jobs.", j.finished as f64),
                ("fleetscore_job_last_success_window_end_seconds", "gauge", "Window end of the newest scheduled job that succeeded or found no readings in its window (skipped after it ran), Unix seconds; alert when it lags.", j.last_success_window_end.map_or(0.0, |t| t as f64 / 1e9)),
            ];
            for (name, kind, help, v) in more {
                head(&mut o, name, kind, help);
                let _ = writeln!(o, "{name} {v}");
            }
        }
        if let Some(m) = models {
            head(
                &mut o,
                "fleetscore_models",
                "gauge",
                "Registered (device, tag) models.",
            );
            let _ = writeln!(o, "fleetscore_models {m}");
        }
        o
    }

    /// The exposition text.
    pub fn render(&self, log: &LogStats, windows: Option<&WindowStats>) -> String {
        let mut o = String::with_capacity(4096);
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut o,
            "fleetscore_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
        );
        let _ = writeln!(
            o,
            "fleetscore_uptime_seconds {:.3}",
            self.started.elapsed().as_secs_f64()
        );

        head(
            &mut o,
            "fleetscore_http_requests_total",
            "counter",
            "HTTP requests answered, by endpoint and status.",
        );
        for ((ep, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "fleetscore_http_requests_total{{endpoint=\"{ep}\",status=\"{status}\"}} {n}"
            );
        }
        head(
            &mut o,
            "fleetscore_http_request_duration_seconds",
            "histogram",
            "Time from request to answer, by endpoint (ingest: including the durable append).",
        );
        for (ep, h) in self
            .durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let mut cum = 0;
            for (b, c) in BUCKETS.iter().zip(&h.counts) {
                cum += c.load(Ordering::Relaxed);
                let _ = writeln!(
                    o,
                    "fleetscore_http_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"{b}\"}} {cum}"
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "fleetscore_http_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"+Inf\"}} {count}\n\
                 fleetscore_http_request_duration_seconds_sum{{endpoint=\"{ep}\"}} {:.6}\n\
                 fleetscore_http_request_duration_seconds_count{{endpoint=\"{ep}\"}} {count}",
                h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
        }

        head(
            &mut o,
            "fleetscore_ingest_readings_total",
            "counter",
            "Readings acknowledged after their durable append, by source.",
        );
        for s in [Source::Http, Source::Mqtt] {
            let _ = writeln!(
                o,
                "fleetscore_ingest_readings_total{{source=\"{}\"}} {}",
                s.label(),
                self.readings[idx(s)].load(Ordering::Relaxed)
            );
        }
        head(
            &mut o,
            "fleetscore_ingest_refused_batches_total",
            "counter",
            "Requests (HTTP) or messages (MQTT) refused as bad input; nothing of them was stored.",
        );
        for s in [Source::Http, Source::Mqtt] {
            let _ = writeln!(
                o,
                "fleetscore_ingest_refused_batches_total{{source=\"{}\"}} {}",
                s.label(),
                self.refused_batches[idx(s)].load(Ordering::Relaxed)
            );
        }
        head(
            &mut o,
            "fleetscore_ingest_refused_items_total",
            "counter",
            "Bad lines, rows, elements or messages found in refused input.",
        );
        for s in [Source::Http, Source::Mqtt] {
            let _ = writeln!(
                o,
                "fleetscore_ingest_refused_items_total{{source=\"{}\"}} {}",
                s.label(),
                self.refused_items[idx(s)].load(Ordering::Relaxed)
            );
        }

        let counters: [(&str, &str, u64); 16] = [
            (
                "fleetscore_log_write_failures_total",
                "Writes, fsyncs or segment rolls of the ingest log that failed (disk full, I/O error); the log then refuses appends until it recovers.",
                log.write_failures,
            ),
            (
                "fleetscore_log_recoveries_total",
                "Times the ingest log restored a writable state by itself after a failure.",
                log.recoveries,
            ),
            (
                "fleetscore_log_failed_recoveries_total",
                "Recovery attempts that failed (the disk was still full, say).",
                log.failed_recoveries,
            ),
            (
                "fleetscore_log_unavailable_answers_total",
                "Batches answered 503/507 with Retry-After because the log could not write.",
                self.log_unavailable.load(Ordering::Relaxed),
            ),
            (
                "fleetscore_log_duplicates_total",
                "Batches resent under an idempotency key already stored: acknowledged, not stored again.",
                log.duplicates,
            ),
            (
                "fleetscore_ingest_duplicate_readings_total",
                "Readings of such resent batches.",
                self.duplicates.load(Ordering::Relaxed),
            ),
            (
                "fleetscore_ingest_implausible_batches_total",
                "Batches stored with timestamps more than 30 years before or a day after now (usually a wrong unit, such as seconds sent without precision=s); their answers carry a Fleetscore-Warning header.",
                self.implausible_batches.load(Ordering::Relaxed),
            ),
            (
                "fleetscore_log_key_conflicts_total",
                "Batches refused because their idempotency key was stored with other readings.",
                log.key_conflicts,
            ),
            (
                "fleetscore_log_keys_evicted_total",
                "Idempotency keys forgotten before their horizon because [ingest] log.idempotency_max_keys was reached.",
                log.keys_evicted,
            ),
            (
                "fleetscore_log_batches_total",
                "Batches made durable in the ingest log.",
                log.batches,
            ),
            (
                "fleetscore_log_readings_total",
                "Readings made durable in the ingest log.",
                log.readings,
            ),
            (
                "fleetscore_log_bytes_total",
                "Bytes written to the ingest log.",
                log.bytes,
            ),
            (
                "fleetscore_log_commits_total",
                "Group commits of the ingest log.",
                log.commits,
            ),
            (
                "fleetscore_log_fsyncs_total",
                "fdatasync calls of the ingest log.",
                log.fsyncs,
            ),
            (
                "fleetscore_log_segments_created_total",
                "Ingest log segments started.",
                log.segments_created,
            ),
            (
                "fleetscore_log_append_failures_total",
                "Appends that failed (nothing acknowledged).",
                log.failed,
            ),
        ];
        for (name, help, v) in counters {
            head(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {v}");
        }
        let compaction: [(&str, &str, &AtomicU64); 4] = [
            (
                "fleetscore_compaction_segments_total",
                "Log segments compacted into raw/ and deleted.",
                &self.segments_compacted,
            ),
            (
                "fleetscore_compaction_readings_total",
                "Readings written to raw/ by compaction.",
                &self.readings_compacted,
            ),
            (
                "fleetscore_compaction_objects_total",
                "raw/ objects written by compaction.",
                &self.raw_objects,
            ),
            (
                "fleetscore_compaction_errors_total",
                "Compaction runs that failed (retried later).",
                &self.compaction_errors,
            ),
        ];
        for (name, help, v) in compaction {
            head(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", v.load(Ordering::Relaxed));
        }

        if let Some(w) = windows {
            let c = w.counters();
            head(
                &mut o,
                "fleetscore_window_readings_total",
                "counter",
                "Readings through the window aggregator, by what became of them.",
            );
            for (d, v) in [
                ("accepted", c.accepted),
                ("adjusted", c.adjusted),
                ("dropped", c.dropped()),
            ] {
                let _ = writeln!(
                    o,
                    "fleetscore_window_readings_total{{disposition=\"{d}\"}} {v}"
                );
            }
            head(
                &mut o,
                "fleetscore_window_dropped_total",
                "counter",
                "Readings the window aggregator dropped, by reason (they stay in raw/).",
            );
            for (r, v) in c.drop_reasons() {
                let _ = writeln!(
                    o,
                    "fleetscore_window_dropped_total{{reason=\"{}\"}} {v}",
                    r.as_str()
                );
            }
            debug_assert_eq!(DropReason::ALL.len(), 4);
            let more: [(&str, &str, &str, u64); 13] = [
                (
                    "fleetscore_window_series_shed_total",
                    "counter",
                    "Readings not windowed because they would have started a series past [stream] max_series (also in fleetscore_window_dropped_total{reason=\"series_limit\"}; they stay in raw/).",
                    c.shed,
                ),
                (
                    "fleetscore_window_series_released_total",
                    "counter",
                    "Series whose windows had all closed, released from memory.",
                    c.series_released,
                ),
                (
                    "fleetscore_window_series_max",
                    "gauge",
                    "The most live series ([stream] max_series).",
                    w.max_series.load(Ordering::Relaxed),
                ),
                (
                    "fleetscore_window_idle_clocks",
                    "gauge",
                    "Clocks kept for devices without live series (bounded by max_series).",
                    w.idle_clocks.load(Ordering::Relaxed),
                ),
                (
                    "fleetscore_window_out_of_order_total",
                    "counter",
                    "Accepted readings older than their clock's newest.",
                    c.out_of_order,
                ),
                (
                    "fleetscore_window_late_accepted_total",
                    "counter",
                    "Accepted readings behind the watermark (within allowed lateness).",
                    c.late_accepted,
                ),
                (
                    "fleetscore_windows_emitted_total",
                    "counter",
                    "Windows closed by the aggregator.",
                    c.windows_emitted,
                ),
                (
                    "fleetscore_windows_written_total",
                    "counter",
                    "Windows written to windows/.",
                    w.windows_written.load(Ordering::Relaxed),
                ),
                (
                    "fleetscore_window_flushes_total",
                    "counter",
                    "Window flushes (windows, then checkpoint).",
                    w.flushes.load(Ordering::Relaxed),
                ),
                (
                    "fleetscore_window_flush_errors_total",
                    "counter",
                    "Window flushes that failed (retried at the next).",
                    w.flush_errors.load(Ordering::Relaxed),
                ),
                (
                    "fleetscore_window_open_panes",
                    "gauge",
                    "Open window panes held in memory.",
                    w.open_panes.load(Ordering::Relaxed),
                ),
                (
                    "fleetscore_window_series",
                    "gauge",
                    "Live (device, tag) series: those with open windows.",
                    w.series.load(Ordering::Relaxed),
                ),
                (
                    "fleetscore_window_checkpoint_position",
                    "gauge",
                    "Ingest log position of the last window checkpoint.",
                    w.checkpoint.load(Ordering::Relaxed),
                ),
            ];
            for (name, kind, help, v) in more {
                head(&mut o, name, kind, help);
                let _ = writeln!(o, "{name} {v}");
            }
            head(
                &mut o,
                "fleetscore_window_flush_seconds_total",
                "counter",
                "Time spent in successful window flushes.",
            );
            let _ = writeln!(
                o,
                "fleetscore_window_flush_seconds_total {:.6}",
                w.flush_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
        o
    }
}
