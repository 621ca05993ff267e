//! Dead letters: every source keeps what it could not read.
//!
//! A message (or a line of a partial write) that a source cannot turn into
//! readings is not dropped silently: the source hands it here with why,
//! and it is written under `rejected/` in the store (see
//! [`fleetscore_store::lake::write_rejected`]) **before** the message is
//! acknowledged, counted in `fleetscore_source_dead_letters_total{source,
//! reason}`, readable at `GET /v1/rejected` and on the dashboard. Each
//! letter keeps the first `[ingest] dead_letters.max_bytes` bytes of the
//! message; the days older than `dead_letters.retention` are deleted
//! ([`DeadLetters::sweep`], hourly).
//!
//! If the store cannot take them (after a few tries), the letters are
//! logged at `error` with their reasons and counted in
//! `fleetscore_source_dead_letters_lost_total`, and the messages are
//! acknowledged all the same: a bad message must never block a partition
//! or a session.

use std::sync::Arc;
use std::time::Duration;

use fleetscore_codecs::Problem;
use fleetscore_store::lake::{recent_rejected, sweep_rejected, write_rejected, DeadLetter};
use fleetscore_store::Store;

use crate::config::DeadLetterConfig;
use crate::metrics::{Metrics, Source};

/// Where the sources' dead letters go.
pub struct DeadLetters {
    store: Store,
    metrics: Arc<Metrics>,
    max_bytes: usize,
    retention_ns: i64,
}

/// A letter to keep: the message and why it was refused.
pub struct Letter {
    /// The kind of problem.
    pub problem: Problem,
    /// The letter.
    pub letter: DeadLetter,
}

/// Tries at writing one batch of letters.
const ATTEMPTS: u32 = 3;

impl DeadLetters {
    /// Letters written to `store`, counted in `metrics`.
    pub fn new(store: Store, metrics: Arc<Metrics>, config: &DeadLetterConfig) -> DeadLetters {
        DeadLetters {
            store,
            metrics,
            max_bytes: config.max_bytes,
            retention_ns: config.retention.as_nanos(),
        }
    }

    /// A letter for `payload`, received by `source` now from `origin`,
    /// refused for `problem` with `error`.
    pub fn letter(
        &self,
        source: Source,
        problem: Problem,
        error: impl Into<String>,
        origin: impl Into<String>,
        payload: &[u8],
    ) -> Letter {
        Letter {
            problem,
            letter: DeadLetter::new(
                crate::now_ns(),
                source.name(),
                problem.as_str(),
                error,
                origin,
                payload,
                self.max_bytes,
            ),
        }
    }

    /// Writes `letters` of `source` as one object, retrying a few times;
    /// counts them kept, or lost (logged) if the store would not take
    /// them. Returns whether they were kept.
    pub async fn keep(&self, source: Source, letters: Vec<Letter>) -> bool {
        if letters.is_empty() {
            return true;
        }
        let (problems, letters): (Vec<Problem>, Vec<DeadLetter>) =
            letters.into_iter().map(|l| (l.problem, l.letter)).unzip();
        let mut wait = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match write_rejected(&self.store, source.name(), crate::now_ns(), &letters).await {
                Ok(key) => {
                    for p in &problems {
                        self.metrics.dead_letters(source, p.as_str(), 1);
                    }
                    tracing::warn!(
                        source = source.name(),
                        letters = letters.len(),
                        key = key.as_deref().unwrap_or(""),
                        first_error = %letters[0].error,
                        "messages refused and kept as dead letters (GET /v1/rejected)"
                    );
                    return true;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(source = source.name(), error = %e, attempt, "dead letters not written; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                    attempt += 1;
                }
                Err(e) => {
                    self.metrics.dead_letters_lost(source, letters.len() as u64);
                    for l in &letters {
                        tracing::error!(
                            source = source.name(),
                            origin = %l.origin,
                            reason = %l.reason,
                            error = %l.error,
                            "a refused message could not be kept as a dead letter: {e}"
                        );
                    }
                    return false;
                }
            }
        }
    }

    /// Deletes the days of letters older than the retention.
    pub async fn sweep(&self) {
        match sweep_rejected(&self.store, crate::now_ns(), self.retention_ns).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(objects = n, "old dead letters deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "sweeping old dead letters failed; tried again in an hour");
            }
        }
    }

    /// Sweeps every hour until `stop`.
    pub async fn sweep_hourly(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.sweep().await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// The newest letters (of `source`, or of all), newest first.
    pub async fn recent(
        &self,
        source: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, fleetscore_store::lake::LakeError> {
        recent_rejected(&self.store, source, limit).await
    }
}
