//! The errors of the ingest log.

use std::io;
use std::path::PathBuf;

use crate::Seq;

/// Why an operation on the ingest log failed.
///
/// Every variant that concerns data on disk names the file and, where it
/// makes sense, the byte offset inside it, so an operator can inspect it.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O call failed. Retrying may help for transient conditions (disk
    /// full, permissions fixed), but a failed write or fsync poisons the open
    /// log: see [`LogError::Poisoned`].
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
    /// An earlier write or fsync failed, so what is on disk is unknown and
    /// the log refuses further appends. Nothing unacknowledged may be assumed
    /// durable; reopen the log (which runs recovery) to continue.
    #[error("ingest log is poisoned by an earlier failure ({0}); reopen it to recover")]
    Poisoned(String),
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
