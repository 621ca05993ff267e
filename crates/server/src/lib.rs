//! The running fleetscore service (`fleetscore serve`): one room per part
//! of the pipeline, wired together by [`serve`].
//!
//! ```text
//! sources ──► ingestor ──► ingest log (fleetscore-ingest) ──► compactor ──► raw/
//!  (HTTP,        │                                                          │
//!   MQTT)        └──► windows runtime ──► windows/            scheduler ──► jobs ──► predictions/
//!                                                                     (fleetscore-jobs)
//! API (/v1) and dashboard read raw/, windows/, predictions/ through the lake
//! ```
//!
//! * [`sources`]: where readings come from. A source is a config section
//!   that builds a running part behind one trait ([`sources::Source`]); the
//!   list of sources is in one place ([`sources::configured`]). HTTP and
//!   MQTT are its two implementations; a third (Kafka) is a new file there.
//!   Every source reports the same telemetry ([`metrics`]).
//! * [`windows`]: the ingestor every source appends through (the durable
//!   log, then the window aggregator), and the streaming-windows runtime
//!   with its checkpoints.
//! * [`serve`]: the service's wiring: the log, the windows, the compactor
//!   from the log to raw/, the scheduler, the HTTP server and shutdown.
//! * [`api`] and [`dashboard`]: the `/v1` API (its OpenAPI document in
//!   `api/openapi.rs`) and the browser dashboard.
//! * [`http`]: the HTTP server loop with its connection limits, timeouts
//!   and the in-flight byte budget.
//! * [`config`]: the deployment's configuration (defaults → TOML file →
//!   `FLEETSCORE__…` environment → flags), resolved once.

// Handlers return `Result<_, Response>` so that `?`-style early answers
// stay readable; a Response is large but the error path is not hot.
#![allow(clippy::result_large_err)]
// `unsafe` only where the OS is asked for limits (`http::raise_fd_limit`);
// each block says why it is sound.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod api;
pub mod compactor;
pub mod config;
pub mod dashboard;
pub mod deadletter;
pub mod http;
pub mod metrics;
pub mod plausible;
pub mod probe;
pub mod scheduler;
pub mod serve;
pub mod sources;
pub mod windows;

/// Now, in nanoseconds since the Unix epoch (the system clock).
pub(crate) fn now_ns() -> i64 {
    use fleetscore_core::Clock;
    fleetscore_core::SystemClock.now()
}
