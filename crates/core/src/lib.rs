//! Core types shared by every part of fleetscore.
//!
//! The pipeline (`docs/ARCHITECTURE.md`) moves three kinds of things between its
//! stages: readings `(ts, device, tag, value)`, model keys `(device, tag)`
//! and predictions. This crate holds the small value types for them and the
//! timestamp codec, so that the codecs, the model registry and the scoring
//! job agree on one definition.
//!
//! Timestamps are `i64` nanoseconds since the Unix epoch, UTC. That covers
//! the years 1677 to 2262, carries line protocol's nanoseconds and the
//! reference data's milliseconds without loss, and sorts as an integer.
//!
//! # What a reading may hold
//!
//! One policy, here, for every source (HTTP line protocol, JSON and CSV,
//! MQTT, readings files) and for model keys; each parser calls these
//! checks and reports the line or element and the field that broke them:
//!
//! * device and tag names: [`validate_name`] (non-empty, at most
//!   [`MAX_NAME_BYTES`] bytes, no control characters, no `/`, not `.`,
//!   `..` or `*`, no white space at either end; see the `name` module);
//! * timestamps: [`check_ts`], from 1678-01-01T00:00:00Z through
//!   2261-12-31T23:59:59.999999999Z ([`MIN_TS`], [`MAX_TS`]), so that
//!   partition and window arithmetic never overflows;
//! * values: [`check_value`], any finite `f64` (no NaN, no infinities).
//!
//! File names built from names go through [`file_name_part`], which
//! percent-encodes everything but ASCII letters, digits, `-`, `.` (and
//! optionally `_`).
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// A library reports through return values and `tracing`, never by printing.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod clock;
mod key;
mod name;
mod readings;
mod time;
mod value;

pub use clock::{Clock, ManualClock, SystemClock};
pub use key::{KeyError, ModelKey, FALLBACK_DEVICE};
pub use name::{
    file_name_part, validate_name, validate_name_bytes, NameError, NameKind, NameRule,
    MAX_NAME_BYTES,
};
pub use readings::{drop_unused_keys, Columns, Reading, Readings, ReadingsBuilder, TooManyNames};
pub use time::{
    check_ts, format_rfc3339, format_ts, format_ts_reference, parse_ts, TimeError,
    TimestampRangeError, TsNumberError, TsUnit, MAX_TS, MIN_TS, NANOS_PER_SEC,
};
pub use value::{check_value, ValueError};
