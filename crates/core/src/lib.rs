//! Core types shared by every part of fleetscore.
//!
//! The pipeline in `DESIGN.md` moves three kinds of things between its
//! stages: readings `(ts, device, tag, value)`, model keys `(device, tag)`
//! and predictions. This crate holds the small value types for them and the
//! timestamp codec, so that the codecs, the model registry and the scoring
//! job agree on one definition.
//!
//! Timestamps are `i64` nanoseconds since the Unix epoch, UTC. That covers
//! the years 1677 to 2262, carries line protocol's nanoseconds and the
//! reference data's milliseconds without loss, and sorts as an integer.
#![deny(missing_docs)]

mod key;
mod time;

pub use key::{KeyError, ModelKey, FALLBACK_DEVICE};
pub use time::{format_ts, format_ts_reference, parse_ts, TimeError, NANOS_PER_SEC};
