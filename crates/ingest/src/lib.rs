//! The durable ingest log of fleetscore.
//!
//! Sources (HTTP, MQTT, Kafka) hand batches of readings to this log and
//! acknowledge them to the sender only once [`Log::append`] has returned.
//! The window aggregator consumes the log; on start-up the log is replayed
//! ([`Log::replay`]) from the last sequence number the aggregator had
//! processed; closed segments are compacted into the store
//! ([`Log::closed_segments`]) and then deleted ([`Log::remove_segment`]).
//!
//! # Durability contract
//!
//! * When [`Log::append`] returns `Ok(seq)`, the batch has been written to
//!   its segment file and an `fdatasync` of that file has completed after the
//!   write, and the segment's directory entry was made durable (`fsync` of
//!   the directory) when the segment was created, before any record went in.
//!   So the batch survives a process crash, a kernel crash and a power loss,
//!   as far as the disk honours flushes. Every later [`Log::replay`] (after
//!   any crash and [`Log::open`]) yields it exactly once, with that `seq`,
//!   until its segment is removed by [`Log::remove_segment`].
//! * When `append` returns an error, the batch may or may not be in the log:
//!   a write may have reached the disk before a later step failed. A caller
//!   that retries may therefore store a batch twice, unless it gives the
//!   batch an idempotency key ([`Log::append_keyed`], below).
//! * A batch appended with an idempotency key is stored at most once within
//!   the horizon ([`LogConfig::idempotency_horizon_secs`], from its first
//!   append, by the log's wall clock): a resend with the same key and the
//!   same readings is answered with the first append's sequence number and
//!   `duplicate: true` and writes nothing, also when appends of one key
//!   race, after a crash and [`Log::open`], and after
//!   [`Log::remove_segment`] removed the batch's segment. The key is part
//!   of the batch's record, so it is exactly as durable as the batch: a key
//!   is only remembered for a batch that was made durable. Past the horizon,
//!   or once [`LogConfig::idempotency_max_keys`] newer keys pushed it out,
//!   the key is forgotten and a resend is stored again.
//! * A failed write, `fdatasync` or segment roll makes the log *unwritable*
//!   ([`Log::health`]); appends are then refused at once with
//!   [`LogError::Unavailable`], which means "retry later". The log recovers
//!   in place, without a restart, at most once per
//!   [`LogConfig::recovery_interval_ms`] (on its own timer, or when an
//!   append, [`Log::roll`] or [`Log::try_recover`] comes): it removes a
//!   segment file a failed roll created, reopens the active segment with a
//!   new file descriptor (after a failed fsync the old descriptor and the
//!   page cache no longer tell what is on disk), truncates it to the extent
//!   of the last successful `fdatasync`, checks with a synced probe write
//!   that the disk takes data again, and gives out sequence numbers again
//!   from one past the last durable record. Everything it cuts was never
//!   acknowledged; everything acknowledged is before the cut. Until a
//!   recovery succeeds nothing is written, so a crash meanwhile leaves the
//!   same log [`Log::open`] would recover.
//! * A group commit that rolled a segment midway and then failed answers
//!   the batches that were synced before the roll with `Ok` (they are
//!   durable, with their numbers) and the rest with the error.
//! * Batches are atomic: a batch is one record with one checksum, so replay
//!   yields all of its readings or none of them.
//! * Sequence numbers are consecutive and start at 0 for a new log. The
//!   number of an acknowledged batch is never reused, also across crashes
//!   and segment removal. A batch that was written but not acknowledged may
//!   be cut by recovery, and its number then goes to the next batch: a
//!   sequence number identifies a batch only once it was acknowledged.
//! * Order: batches are replayed in sequence-number order, which is the order
//!   in which the writer took them; appends from one thread keep their order.
//!
//! # Idempotency keys
//!
//! Deduplication happens on the writer thread, which alone assigns sequence
//! numbers, so there is no window between "not seen" and "stored" for a
//! second append of the same key to slip through. The index of recent keys
//! is in memory, bounded by the horizon and a maximum count (the
//! crate's `keys` module); [`Log::open`] rebuilds it from the segments and from a
//! small keys file that [`Log::remove_segment`] writes (atomically) before
//! deleting a segment that holds live keys. Appends without a key skip all
//! of it: they pay 10 bytes per record and one clock read.
//!
//! # Group commit
//!
//! One writer thread owns the active segment. [`Log::append`] encodes and
//! checksums the batch on the caller's thread, queues it and waits. The
//! writer takes everything that queued up while it was busy (up to
//! [`LogConfig::max_group_bytes`]), writes it with one `write` call and makes
//! it durable with one `fdatasync`, then wakes all those appenders. An idle
//! log commits a lone batch at once ([`LogConfig::max_wait_us`] = 0); under
//! load, the batches that arrive during one `fdatasync` share the next, so
//! the number of fsyncs per second stays bounded by the disk's flush latency
//! while throughput grows with the number of appenders.
//!
//! The API is blocking, with a dedicated writer thread, rather than `async`:
//! the file calls block anyway (an async version would put them on a
//! blocking pool), the log has no dependency on a runtime, and tests and
//! tools can use it from plain threads. Async sources call `append` through
//! `tokio::task::spawn_blocking`.
//!
//! # Recovery
//!
//! [`Log::open`] scans the last segment. Records written after the last
//! `fdatasync` can be partly on disk after a crash, with any of their pages
//! missing, so the first record there that is incomplete or fails its
//! length, checksum or sequence check marks the end of the durable log: it
//! and everything after it are truncated, logged (`tracing` warning) and
//! reported in [`Log::recovery`]. None of those bytes belonged to an
//! acknowledged batch. In the last segment a damaged record cannot be told
//! apart from a torn write, so media damage there is also cut (and
//! reported); in a closed segment, which was fully synced before the next one
//! began, any bad record is [`LogError::Corrupt`] with the file and offset,
//! raised by [`Log::replay`].
//!
//! The same reasoning makes the in-place recovery after a failed write
//! (above) safe: it cuts the active segment at the extent of the last
//! successful `fdatasync`. Everything acknowledged lies before that point;
//! everything after it was answered with an error, so cutting it is what
//! `open` is allowed to do after a crash, and no later record is written
//! until the cut is durable.
//!
//! # Format
//!
//! See the [`format`](mod@format) module for the byte layout of segments and records.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// A library reports through return values and `tracing`, never by printing.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod error;
pub mod format;
mod keys;
mod log;

pub use error::{LogError, Result};
pub use keys::{Clock, SystemClock, KEYS_FILE};
pub use log::{Appended, Batch, Health, Log, LogConfig, LogStats, Recovery, Replay, SegmentInfo};

/// Sequence number of a batch in the log.
pub type Seq = u64;
