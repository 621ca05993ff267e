//! The errors of the ingest log.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::Seq;

/// Why an operation on the ingest log failed.
///
/// Every variant that concerns data on disk names the file and, where it
/// makes sense, the byte offset inside it, so an operator can inspect it.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O call failed while opening, listing, replaying or removing
    /// segments. Retrying may help for transient conditions (disk full,
    /// permissions fixed). A failed write, fsync or segment roll of an
    /// append is reported as [`LogError::Unavailable`] instead.
    #[error("ingest log: {op} {path}: {source}")]
    Io {
        /// What was being done (`"open"`, `"write"`, `"fdatasync"`, …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A record inside a segment failed its length, checksum, sequence or
    /// decoding check where a crash cannot explain it: in a closed segment
    /// (found by replay), or a valid record with an unexpected sequence
    /// number. Retrying does not help: the file must be inspected, restored
    /// from a copy, or removed by an operator.
    #[error("ingest log: corrupt record in {path} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the start of the bad record.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A segment's header is not one this version can read (wrong magic,
    /// unknown format version, or a first sequence number that does not match
    /// the file name). Retrying does not help.
    #[error("ingest log: bad segment header in {path}: {reason}")]
    BadHeader {
        /// The segment file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The batch encodes to more bytes than one record may hold. Split it.
    #[error("ingest log: batch of {bytes} bytes is larger than the record limit of {max} bytes; split it")]
    BatchTooLarge {
        /// Encoded size of the batch.
        bytes: usize,
        /// The record size limit.
        max: usize,
    },
    /// The log cannot write at the moment: a write, fsync or segment roll
    /// failed (disk full, I/O error, read-only file system) and the log has
    /// not yet restored a writable state. The batch of the append that hit
    /// the failure may or may not be in the log (see the durability
    /// contract); a batch refused while the log was already unwritable was
    /// not stored. Acknowledged batches are unaffected.
    ///
    /// This is transient by design: the log retries by itself every
    /// `retry_after` (truncating what was never acknowledged, reopening the
    /// segment and probing that a write succeeds), so the caller should
    /// answer "try again later" (HTTP 503, or 507 when `disk_full`) and the
    /// client retry, ideally with an idempotency key. An operator frees
    /// space or repairs the disk; no restart is needed.
    #[error("ingest log cannot write: {reason}; it retries by itself every {} ms, retry later{}", retry_after.as_millis(), if *disk_full { " (free space on the log's disk)" } else { "" })]
    Unavailable {
        /// The failure that made the log unwritable, or the latest failed
        /// attempt to recover, with the file and the operating system's
        /// error.
        reason: String,
        /// The failure was "no space left on device" or "disk quota
        /// exceeded".
        disk_full: bool,
        /// How often the log retries; a fair `Retry-After` for the client.
        retry_after: Duration,
    },
    /// The idempotency key breaks a rule (empty, longer than
    /// [`MAX_KEY_LEN`](crate::format::MAX_KEY_LEN) bytes, or with a control
    /// character). Nothing was stored; send a valid key.
    #[error("ingest log: idempotency key {key:?} refused: {reason}")]
    BadKey {
        /// The key (its first 64 characters).
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The idempotency key was already used, within the horizon, for a
    /// batch with different readings. Nothing was stored. Retrying does not
    /// help: a retry must resend the same batch, and new data needs a new
    /// key.
    #[error("ingest log: idempotency key {key:?} was already used for a different batch (seq {seq}); send new data under a new key")]
    KeyReused {
        /// The key.
        key: String,
        /// The batch stored under it.
        seq: Seq,
    },
    /// The writer thread is gone (it panicked, which is a bug), so nothing
    /// can be appended; reopen the log. Never returned while the writer
    /// runs.
    #[error("ingest log: the writer thread has stopped ({0}); reopen the log")]
    WriterStopped(String),
    /// [`Log::remove_segment`](crate::Log::remove_segment) was asked to
    /// remove the active segment, which is still being written.
    #[error("ingest log: segment starting at seq {0} is the active segment and cannot be removed")]
    ActiveSegment(Seq),
    /// [`Log::remove_segment`](crate::Log::remove_segment) was given a first
    /// sequence number that names no closed segment.
    #[error("ingest log: no closed segment starts at seq {0}")]
    NoSuchSegment(Seq),
}

impl LogError {
    /// How long a caller should wait before retrying, when retrying the
    /// same call can succeed without anyone changing the request: `Some`
    /// only for [`LogError::Unavailable`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LogError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether this is [`LogError::Unavailable`] caused by a full disk (or
    /// an exceeded quota), for callers that answer those differently (e.g.
    /// HTTP 507).
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            LogError::Unavailable {
                disk_full: true,
                ..
            }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
