//! One trace per job, whichever processes run it.
//!
//! A job's planning, its tasks and its finalizing are separate spans
//! (`plan`, `task`, `map_task`, `finalize`), often on different workers.
//! With the `otel` feature each joins the job's trace: its trace id and the
//! id of a `job` span are derived from the job's identity (its id and the
//! time it was created), so every process names the same trace without
//! telling the others. The `job` span itself is sent once, by the process
//! that records the job's end, with the job's own start and end times and
//! its figures as attributes. Without the feature (or without an OTLP
//! endpoint configured) these are no-ops.

use crate::db::JobRecord;

/// The trace id and `job` span id of one run of a job: a hash of its id,
/// creation time and start (a retried job runs again under a new start,
/// in a trace of its own); splitmix64 steps, the same on every build and
/// platform, never zero (an invalid id in OpenTelemetry).
pub fn job_ids(job_id: i64, created_at: i64, started_at: i64) -> (u128, u64) {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let a = mix(job_id as u64 ^ 0x6a6f_625f_7472_6163);
    let b = mix(a ^ created_at as u64);
    let c = mix(b ^ started_at as u64 ^ 0x666c_6565_7473_636f);
    let b = mix(b ^ started_at as u64);
    let trace = (u128::from(a) << 64 | u128::from(b)).max(1);
    (trace, c.max(1))
}

#[cfg(feature = "otel")]
mod otel {
    use std::cell::Cell;

    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
        Tracer,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::job_ids;
    use crate::db::{JobRecord, JobState};

    thread_local! {
        /// The ids the next span built on this thread takes (a job's span).
        static NEXT_TRACE: Cell<Option<u128>> = const { Cell::new(None) };
        static NEXT_SPAN: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// The trace provider's id generator: random ids, except for a job's
    /// own span, which takes the ids derived from the job
    /// ([`job_ids`](super::job_ids)) so that its phases, sent by other
    /// processes, find it as their parent.
    #[derive(Debug, Default)]
    pub struct JobIds(RandomIdGenerator);

    impl IdGenerator for JobIds {
        fn new_trace_id(&self) -> TraceId {
            NEXT_TRACE
                .with(Cell::take)
                .map_or_else(|| self.0.new_trace_id(), TraceId::from)
        }

        fn new_span_id(&self) -> SpanId {
            NEXT_SPAN
                .with(Cell::take)
                .map_or_else(|| self.0.new_span_id(), SpanId::from)
        }
    }

    fn context(job: &JobRecord) -> Context {
        let (trace, span) = job_ids(job.id, job.created_at, job.started_at.unwrap_or(0));
        let cx = SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(cx)
    }

    pub fn join(span: &tracing::Span, job: &JobRecord) {
        // Refused only if the span is not traced (no OpenTelemetry layer,
        // or filtered out) or has started (it is new here): nothing to do.
        let _ = span.set_parent(context(job));
    }

    fn time(ns: i64) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64)
    }

    pub fn ended(job: &JobRecord) {
        let (trace, span) = job_ids(job.id, job.created_at, job.started_at.unwrap_or(0));
        let tracer = opentelemetry::global::tracer("fleetscore_jobs");
        let end = job.finished_at.unwrap_or(job.created_at);
        let mut attributes = vec![
            KeyValue::new("job_id", job.id),
            KeyValue::new("kind", job.kind.to_string()),
            KeyValue::new("state", job.state.to_string()),
            KeyValue::new("window_start", fleetscore_core::format_ts(job.window_start)),
            KeyValue::new("window_end", fleetscore_core::format_ts(job.window_end)),
            KeyValue::new("mode", job.mode.clone()),
            KeyValue::new("tasks", job.tasks as i64),
            KeyValue::new("models", job.counts.models as i64),
            KeyValue::new("rows", job.counts.rows as i64),
            KeyValue::new("anomalies", job.counts.anomalies as i64),
            KeyValue::new("failed_models", job.counts.failed_models as i64),
        ];
        if let Some(s) = &job.schedule {
            attributes.push(KeyValue::new("schedule", s.clone()));
        }
        if let Some(e) = &job.error {
            attributes.push(KeyValue::new("error", e.clone()));
        }
        let status = match job.state {
            JobState::Failed => Status::error(job.error.clone().unwrap_or_default()),
            _ => Status::Ok,
        };
        NEXT_TRACE.with(|c| c.set(Some(trace)));
        NEXT_SPAN.with(|c| c.set(Some(span)));
        let mut s = tracer
            .span_builder("job")
            .with_kind(SpanKind::Internal)
            .with_start_time(time(job.started_at.unwrap_or(job.created_at).min(end)))
            .with_attributes(attributes)
            .start_with_context(&tracer, &Context::new());
        // Not taken if no provider is installed (nothing is sent then).
        NEXT_TRACE.with(|c| c.set(None));
        NEXT_SPAN.with(|c| c.set(None));
        opentelemetry::trace::Span::set_status(&mut s, status);
        opentelemetry::trace::Span::end_with_timestamp(&mut s, time(end));
    }
}

#[cfg(feature = "otel")]
pub use otel::JobIds;

/// Makes `span` (a job's `plan`, `task` or `finalize`, not yet entered)
/// part of the job's trace.
pub fn join(span: &tracing::Span, job: &JobRecord) {
    #[cfg(feature = "otel")]
    otel::join(span, job);
    #[cfg(not(feature = "otel"))]
    let _ = (span, job);
}

/// Sends the job's own span, now that it has ended (succeeded, failed or
/// skipped).
pub fn ended(job: &JobRecord) {
    #[cfg(feature = "otel")]
    otel::ended(job);
    #[cfg(not(feature = "otel"))]
    let _ = job;
}

#[cfg(test)]
mod tests {
    use super::job_ids;

    #[test]
    fn a_job_names_the_same_trace_everywhere_and_jobs_differ() {
        assert_eq!(job_ids(7, 1_000, 5), job_ids(7, 1_000, 5));
        assert_ne!(job_ids(7, 1_000, 5).0, job_ids(8, 1_000, 5).0);
        // A job store started anew reuses ids, not creation times.
        assert_ne!(job_ids(7, 1_000, 5).0, job_ids(7, 2_000, 5).0);
        // A retry starts again: a trace of its own.
        assert_ne!(job_ids(7, 1_000, 5), job_ids(7, 1_000, 6));
        let (t, s) = job_ids(0, 0, 0);
        assert!(t != 0 && s != 0);
    }
}
