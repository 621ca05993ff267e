//! Why running a job failed, and whether trying again can help.
//!
//! The runner's public calls ([`Runner::step`], [`Runner::run_queued`],
//! [`Runner::run_job`], [`Runner::work`], [`drop_staging`]) fail only when
//! the job store or the object store does: a task or a plan that fails is
//! recorded on its job, with this error's message, not returned. The same
//! type carries those recorded failures on their way, so
//! [`RunError::retryable`] answers for both.
//!
//! [`Runner::step`]: super::Runner::step
//! [`Runner::run_queued`]: super::Runner::run_queued
//! [`Runner::run_job`]: super::Runner::run_job
//! [`Runner::work`]: super::Runner::work
//! [`drop_staging`]: super::drop_staging

use fleetscore_codecs::CodecError;
use fleetscore_store::lake::LakeError;
use fleetscore_store::StoreError;

use crate::db::DbError;

/// Why a step of the runner failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The job store failed (after [`crate::db::retrying`]'s own retries,
    /// where the call was retried).
    // The store's message is part of this one (not a `source`), as
    // `DbError` does with its driver's: a report shows it once.
    #[error("{what}: {error}")]
    JobStore {
        /// What the runner was doing (`recording a task`).
        what: String,
        /// The job store's error.
        error: DbError,
    },
    /// The object store failed (a read, write, list or delete).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing the lake (raw/, windows/, predictions/ and
    /// their manifests) failed.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// Writing a part of predictions failed (the Parquet encoder refused).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// What the job was planned from is gone or no longer what the plan
    /// names (a raw object replaced or deleted, a staged plan or map
    /// output missing, short or corrupt): the message says what, and
    /// retrying the job (which plans it again) is what helps.
    #[error("{0}")]
    Stale(String),
    /// The job asks for something this runner does not do (an input mode
    /// it does not support); the message says what to use instead.
    #[error("{0}")]
    Unsupported(String),
    /// Work on the blocking pool (decoding, cutting, scoring) panicked or
    /// was cancelled: a bug, or the runtime shutting down.
    #[error("{what} stopped: {error}")]
    Blocking {
        /// The work.
        what: &'static str,
        /// The runtime's error.
        error: tokio::task::JoinError,
    },
    /// The Python runtime stopped while it scored the task's Python models
    /// (the service is stopping): tried again, no model failed.
    #[error(transparent)]
    Interrupted(#[from] crate::python::Interrupted),
    /// A record the runner writes (a plan, device counts) did not encode.
    #[error("encoding {what}: {error}")]
    Encode {
        /// What was encoded.
        what: String,
        /// The encoder's error.
        error: serde_json::Error,
    },
}

impl RunError {
    /// Whether the same call may succeed if tried again later: a job store
    /// or object store that did not answer (see [`DbError::retryable`]),
    /// an object replaced while it was read. Bad data, a plan that no
    /// longer fits the lake, an unsupported job and a bug are not: trying
    /// again fails the same way.
    pub fn retryable(&self) -> bool {
        match self {
            RunError::JobStore { error, .. } => error.retryable(),
            RunError::Store(e) => store_retryable(e),
            RunError::Lake(LakeError::Store(e)) => store_retryable(e),
            RunError::Interrupted(_) => true,
            RunError::Lake(_)
            | RunError::Codec(_)
            | RunError::Stale(_)
            | RunError::Unsupported(_)
            | RunError::Blocking { .. }
            | RunError::Encode { .. } => false,
        }
    }

    /// The message with its causes, each after a `: ` (as `anyhow` shows
    /// an error with `{:#}`): what a failed task or job records.
    pub fn chain(&self) -> String {
        use std::fmt::Write as _;
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            let _ = write!(out, ": {c}");
            cause = c.source();
        }
        out
    }

    /// A job-store error, saying what the runner was doing.
    pub(super) fn job_store(what: impl Into<String>, error: DbError) -> RunError {
        RunError::JobStore {
            what: what.into(),
            error,
        }
    }
}

/// Object-store I/O (and a lost race or a replaced object, which the next
/// try sees afresh) may pass; a bad URL, a corrupt object or an invalid
/// request do not.
fn store_retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Backend { .. } | StoreError::Contended { .. } | StoreError::Changed { .. } => {
            true
        }
        StoreError::Url { .. } | StoreError::Corrupt { .. } | StoreError::Invalid(_) => false,
    }
}

impl From<DbError> for RunError {
    fn from(error: DbError) -> RunError {
        RunError::job_store("the job store", error)
    }
}

impl From<tokio::task::JoinError> for RunError {
    fn from(error: tokio::task::JoinError) -> RunError {
        RunError::Blocking {
            what: "work on the blocking pool",
            error,
        }
    }
}

/// The runner's results.
pub type Result<T, E = RunError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> StoreError {
        // What a store that did not answer gives.
        StoreError::Backend {
            url: "memory://".into(),
            op: "get",
            key: "raw/x.parquet".into(),
            error: Box::new(object_store::Error::Generic {
                store: "S3",
                source: "connection reset by peer".into(),
            }),
            hint: "",
        }
    }

    #[test]
    fn object_store_io_is_worth_a_retry_and_bad_data_is_not() {
        assert!(RunError::Store(backend()).retryable());
        assert!(RunError::Lake(LakeError::Store(backend())).retryable());
        let corrupt = StoreError::Corrupt {
            url: "memory://".into(),
            key: "models/index.json".into(),
            reason: "not JSON".into(),
        };
        assert!(!RunError::Store(corrupt).retryable());
        let object = LakeError::Object {
            key: "raw/x.parquet".into(),
            reason: "too short for Parquet".into(),
        };
        assert!(!RunError::Lake(object).retryable());
        assert!(!RunError::Stale("the job plan is missing".into()).retryable());
        assert!(!RunError::Unsupported("input mode \"x\"".into()).retryable());
    }

    #[test]
    fn a_job_store_error_says_what_the_runner_was_doing() {
        let e = RunError::job_store("recording a task", DbError::NoJob(7));
        assert!(e.to_string().starts_with("recording a task: "), "{e}");
        assert_eq!(e.retryable(), DbError::NoJob(7).retryable());
    }
}
