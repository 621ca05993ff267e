//! What the HTTP ingest body parsers ([`parse_line_protocol`],
//! [`parse_json`], [`parse_csv_body`]) share: the result, the error list and
//! the key interner.
//!
//! # Batch policy: all or nothing
//!
//! A request body is one batch. If any line, row or element of it is bad,
//! the parser returns a [`BatchError`] listing the problems — each with its
//! [`Location`] (1-based line, or 0-based array element) and the reason — and
//! **no readings**: the caller refuses the whole batch (HTTP 400) and the
//! client fixes and resends it. No reading of a refused batch is stored, so
//! a resend never duplicates half a batch. At most
//! [`MAX_REPORTED_ERRORS`] problems are listed; [`BatchError::omitted`]
//! counts the rest, so a body with a million bad lines still yields a
//! short answer. Retrying the same body cannot help.
//!
//! Parsing goes on after the first problem (without keeping readings) so
//! that the client learns about every bad line in one round trip.
//!
//! # What a reading may hold
//!
//! Every reading goes through [`Collector`], which enforces the one policy
//! of `fleetscore-core` for all three parsers: device and tag names by
//! [`validate_name`] (each distinct name once per batch, when interned),
//! timestamps by [`check_ts`] and values by [`check_value`]. The parsers
//! add where (line, element) and which field or column.
//!
//! [`parse_line_protocol`]: crate::parse_line_protocol
//! [`parse_json`]: crate::parse_json
//! [`parse_csv_body`]: crate::parse_csv_body

use std::fmt;

use fleetscore_core::{
    check_ts, check_value, validate_name_bytes, NameError, NameKind, TimestampRangeError, TsUnit,
    ValueError,
};
use rustc_hash::FxHashMap;

use crate::Readings;

/// Why [`Collector`] refused a reading: the part that breaks the policy.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The device or tag name (the error says which).
    #[error(transparent)]
    Name(#[from] NameError),
    /// The timestamp.
    #[error(transparent)]
    Ts(#[from] TimestampRangeError),
    /// The value.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// More than 2^32 distinct names or pairs.
    #[error("too many distinct devices, tags or pairs in one batch; send smaller batches")]
    TooMany,
}

impl Refused {
    /// The kind of problem.
    pub(crate) fn problem(&self) -> crate::Problem {
        match self {
            Refused::Name(_) => crate::Problem::Name,
            Refused::Ts(_) => crate::Problem::Time,
            Refused::Value(_) => crate::Problem::Value,
            Refused::TooMany => crate::Problem::Syntax,
        }
    }

    /// The message, after `field(part)` when the parser names its fields
    /// (`column `Device`: device name …`).
    pub(crate) fn in_field(&self, field: impl Fn(Part) -> String) -> String {
        let part = match self {
            Refused::Name(e) if e.kind == NameKind::Device => Part::Device,
            Refused::Name(_) => Part::Tag,
            Refused::Ts(_) => Part::Ts,
            Refused::Value(_) => Part::Value,
            Refused::TooMany => return self.to_string(),
        };
        format!("{}: {self}", field(part))
    }
}

/// The four parts of a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Ts,
    Device,
    Tag,
    Value,
}

impl Part {
    /// Its lowercase name, as JSON fields and raw columns spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Part::Ts => "ts",
            Part::Device => "device",
            Part::Tag => "tag",
            Part::Value => "value",
        }
    }
}

/// How many problems a [`BatchError`] lists at most; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Where in a body a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The body as a whole (e.g. a single JSON object, or a bad setting).
    Body,
    /// A line, 1-based, counting every line of the body (comments, blank
    /// lines and a CSV header included).
    Line(usize),
    /// An element of a JSON array, 0-based.
    Element(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Body => f.write_str("body"),
            Location::Line(n) => write!(f, "line {n}"),
            Location::Element(i) => write!(f, "element {i}"),
        }
    }
}

/// One refused line, row or element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct Rejection {
    /// Where.
    pub at: Location,
    /// What is wrong, naming the field or column.
    pub reason: String,
    /// The kind of problem (a syntax error unless a part of a reading
    /// broke the rules).
    pub problem: crate::Problem,
}

/// A refused batch: the problems found, none of its readings kept.
///
/// Policy: a request body is one batch, all or nothing. If any line, row or
/// element is bad the parser returns this error and no readings; the
/// server answers HTTP 400 with the list and stores nothing, so the client
/// fixes the body and resends it whole (resending never duplicates half a
/// batch; resending it unchanged cannot help). Parsing goes on after the
/// first problem so that every bad line is reported in one round trip; at
/// most [`MAX_REPORTED_ERRORS`] are listed and the rest counted in
/// [`omitted`](BatchError::omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// The first [`MAX_REPORTED_ERRORS`] problems, in body order.
    pub errors: Vec<Rejection>,
    /// How many further problems were found but not listed.
    pub omitted: usize,
}

impl BatchError {
    /// Total number of problems found.
    pub fn total(&self) -> usize {
        self.errors.len() + self.omitted
    }

    pub(crate) fn single(at: Location, reason: impl Into<String>) -> Self {
        BatchError {
            errors: vec![Rejection {
                at,
                reason: reason.into(),
                problem: crate::Problem::Syntax,
            }],
            omitted: 0,
        }
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch refused, nothing stored: {} problem(s); fix them and resend the whole batch",
            self.total()
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        if self.omitted > 0 {
            write!(f, "\n  … and {} more", self.omitted)?;
        }
        Ok(())
    }
}

impl std::error::Error for BatchError {}

/// An accepted batch.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// The readings, in body order, (device, tag) pairs interned.
    pub readings: Readings,
    /// Line protocol string fields, skipped (not an error).
    pub skipped_strings: usize,
    /// Line protocol boolean fields skipped because the configuration says so.
    pub skipped_bools: usize,
}

/// What a partial write keeps: the readings of the good lines, and the
/// problems of the bad ones (`None`: every line was good). Only line
/// protocol has this mode (InfluxDB's partial write; see
/// [`crate::parse_line_protocol_partial`]).
#[derive(Debug, Default, Clone)]
pub struct PartialBatch {
    /// The good lines' readings.
    pub batch: Batch,
    /// The bad lines, each with its line number and reason.
    pub bad: Option<BatchError>,
}

/// One reading of a [`Batch`], borrowed (the one row view of
/// [`Readings`]).
pub use fleetscore_core::Reading;

impl Batch {
    /// The readings one by one, in body order.
    pub fn iter(&self) -> impl Iterator<Item = Reading<'_>> + '_ {
        self.readings.iter()
    }
}

/// Builds a [`Batch`] or collects the problems of a refused one.
///
/// Devices and tags are interned apart (each name hashed and checked
/// against the name rule once per batch, when first seen), and a (device,
/// tag) pair by its two ids; every reading's timestamp and value are
/// checked as it is pushed, so a parser that knows a line's device ([`Collector::device`])
/// pays for the device name once per line, not once per reading.
#[derive(Default)]
pub(crate) struct Collector {
    devices: Names,
    tags: Names,
    /// (device id << 32 | tag id) → key id.
    pairs: FxHashMap<u64, u32>,
    pub(crate) batch: Batch,
    errors: Vec<Rejection>,
    omitted: usize,
    /// Partial mode: a bad line's readings are dropped and the good ones
    /// kept (InfluxDB's partial write), instead of all or nothing.
    keep_good: bool,
}

impl Collector {
    /// A collector for a partial write: bad lines are dropped (and
    /// listed), good ones kept; see [`Collector::finish_partial`].
    pub(crate) fn partial() -> Collector {
        Collector {
            keep_good: true,
            ..Collector::default()
        }
    }

    /// Whether readings are no longer kept: a problem was found and the
    /// batch is all or nothing.
    pub(crate) fn failed(&self) -> bool {
        !self.keep_good && !self.errors.is_empty()
    }

    /// How many readings are kept so far: the mark a line's readings start
    /// at, for [`Collector::reject_since`].
    pub(crate) fn mark(&self) -> usize {
        self.batch.readings.len()
    }

    /// Refuses a line whose readings from `mark` on were pushed already:
    /// in partial mode they are dropped again.
    pub(crate) fn reject_since(&mut self, mark: usize, at: Location, refused: &Refused) {
        if self.keep_good {
            self.batch.readings.truncate(mark);
        }
        self.reject_as(at, refused.problem(), refused.to_string());
    }

    pub(crate) fn reject(&mut self, at: Location, reason: impl Into<String>) {
        self.reject_as(at, crate::Problem::Syntax, reason);
    }

    /// [`Collector::reject`] for a problem of a kind other than syntax.
    pub(crate) fn reject_as(
        &mut self,
        at: Location,
        problem: crate::Problem,
        reason: impl Into<String>,
    ) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(Rejection {
                at,
                reason: reason.into(),
                problem,
            });
        } else {
            self.omitted += 1;
        }
    }

    /// Room for `readings` more readings from up to `devices` devices
    /// (the interning tables are sized for at most 65,536 entries; they
    /// grow beyond as needed).
    pub(crate) fn reserve(&mut self, readings: usize, devices: usize) {
        self.batch.readings.reserve(readings);
        self.pairs.reserve(readings.min(1 << 16));
        self.devices.ids.reserve(devices.min(1 << 16));
    }

    /// The id of a device name, checked against the name rule the first
    /// time it is seen.
    pub(crate) fn device(&mut self, device: &[u8]) -> Result<u32, Refused> {
        self.devices
            .intern(device, NameKind::Device, &mut self.batch.readings)
    }

    /// The id of a tag name, checked against the name rule the first time
    /// it is seen.
    pub(crate) fn tag(&mut self, tag: &[u8]) -> Result<u32, Refused> {
        self.tags
            .intern(tag, NameKind::Tag, &mut self.batch.readings)
    }

    /// The bytes of the tag with id `id` (from [`Collector::tag`]).
    pub(crate) fn tag_name(&self, id: u32) -> &[u8] {
        self.batch.readings.name(id).as_bytes()
    }

    /// Adds a reading. Device and tag are bytes of the body; they are
    /// checked against the name rule only the first time each is seen.
    pub(crate) fn push(
        &mut self,
        ts: i64,
        device: &[u8],
        tag: &[u8],
        value: f64,
    ) -> Result<(), Refused> {
        // Checked even once the batch is refused, so that every bad line
        // is reported.
        let d = self.device(device)?;
        let t = self.tag(tag)?;
        self.push_ids(ts, d, t, value)
    }

    /// [`Collector::push`] with a device and tag already interned; the
    /// timestamp and value are checked here, for every parser.
    pub(crate) fn push_ids(
        &mut self,
        ts: i64,
        device: u32,
        tag: u32,
        value: f64,
    ) -> Result<(), Refused> {
        check_ts(ts)?;
        check_value(value)?;
        if self.failed() {
            return Ok(());
        }
        let pair = u64::from(device) << 32 | u64::from(tag);
        let id = match self.pairs.get(&pair) {
            Some(&id) => id,
            None => {
                let id = self
                    .batch
                    .readings
                    .add_key(device, tag)
                    .map_err(|_| Refused::TooMany)?;
                self.pairs.insert(pair, id);
                id
            }
        };
        self.batch.readings.push(ts, id, value);
        Ok(())
    }

    /// The good readings, and the problems of the bad lines if any (a
    /// collector made by [`Collector::partial`]).
    pub(crate) fn finish_partial(mut self) -> PartialBatch {
        let bad = if self.errors.is_empty() {
            None
        } else {
            // Renumbered: pairs of dropped lines only would be scored with
            // no rows, and a pair first seen on a dropped line must not
            // keep an id before the pairs of the lines kept (ids are in
            // order of first use).
            let kept = std::mem::take(&mut self.batch.readings);
            let mut fresh = fleetscore_core::ReadingsBuilder::new();
            for r in kept.iter() {
                fresh.push(r.ts, r.device, r.tag, r.value);
            }
            self.batch.readings = fresh.finish();
            Some(BatchError {
                errors: self.errors,
                omitted: self.omitted,
            })
        };
        PartialBatch {
            batch: self.batch,
            bad,
        }
    }

    pub(crate) fn finish(self) -> Result<Batch, BatchError> {
        if self.errors.is_empty() {
            Ok(self.batch)
        } else {
            Err(BatchError {
                errors: self.errors,
                omitted: self.omitted,
            })
        }
    }
}

/// Interned names of one kind (devices or tags): their ids in the batch's
/// name table, by bytes.
#[derive(Default)]
struct Names {
    ids: FxHashMap<Box<[u8]>, u32>,
}

impl Names {
    /// The id in `table` of `name`, checked against the name rule and
    /// added to the table when first seen.
    fn intern(
        &mut self,
        name: &[u8],
        kind: NameKind,
        table: &mut Readings,
    ) -> Result<u32, Refused> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let s = validate_name_bytes(kind, name)?;
        let id = table.add_name(s).map_err(|_| Refused::TooMany)?;
        self.ids.insert(name.into(), id);
        Ok(id)
    }
}

/// A JSON number as a timestamp in `unit` (see [`TsUnit`]), in
/// nanoseconds since the epoch; the error names neither field nor place.
pub fn json_ts(n: &serde_json::Number, unit: TsUnit) -> Result<i64, String> {
    let r = if let Some(i) = n.as_i64() {
        unit.int_to_ns(i)
    } else if let Some(f) = n.as_f64() {
        unit.float_to_ns(f)
    } else {
        return Err(format!("{n} is not a number"));
    };
    r.map_err(|e| e.to_string())
}

/// Cuts user text for an error message (at most 64 characters).
pub(crate) fn shorten(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 64 {
        let mut t: String = s.chars().take(64).collect();
        t.push('…');
        t
    } else {
        s.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_capped_and_counted() {
        let mut c = Collector::default();
        c.push(1, b"d", b"t", 1.0).unwrap();
        for i in 0..250 {
            c.reject(Location::Line(i + 1), "bad");
        }
        let e = c.finish().unwrap_err();
        assert_eq!(e.errors.len(), MAX_REPORTED_ERRORS);
        assert_eq!(e.omitted, 150);
        assert_eq!(e.total(), 250);
        assert!(e.to_string().contains("and 150 more"));
    }

    #[test]
    fn every_reading_meets_the_one_policy() {
        let mut c = Collector::default();
        let msg = |r: Result<(), Refused>| r.unwrap_err().to_string();
        assert!(msg(c.push(1, b"d", b"t", f64::NAN)).starts_with("value NaN is not a finite"));
        assert!(msg(c.push(1, b"d", b"t", f64::INFINITY)).starts_with("value inf"));
        assert!(msg(c.push(i64::MIN, b"d", b"t", 1.0)).contains("outside the accepted range"));
        assert!(msg(c.push(1, b"d\n", b"t", 1.0))
            .starts_with("device name \"d\\n\": contains a control"));
        assert!(msg(c.push(1, b"d", &[b'x'; 129], 1.0)).contains("is 129 bytes; the limit is 128"));
        // Names are checked when first seen only: a refused name is not
        // interned, so it is refused again.
        assert!(c.push(2, b"d\n", b"t", 1.0).is_err());
    }

    #[test]
    fn a_partial_batch_drops_bad_lines_only() {
        let mut c = Collector::partial();
        c.push(1, b"d", b"t", 1.0).unwrap();
        let mark = c.mark();
        c.push(2, b"d", b"u", 2.0).unwrap();
        let refused = c.push(2, b"d", b"v", f64::NAN).unwrap_err();
        c.reject_since(mark, Location::Line(2), &refused);
        c.push(3, b"e", b"t", 3.0).unwrap();
        let p = c.finish_partial();
        let rows: Vec<_> = p.batch.iter().map(|r| (r.ts, r.device, r.tag)).collect();
        assert_eq!(rows, [(1, "d", "t"), (3, "e", "t")]);
        // The pair (d, u) of the dropped line is gone.
        assert_eq!(p.batch.readings.key_count(), 2);
        let bad = p.bad.unwrap();
        assert_eq!(bad.errors[0].at, Location::Line(2));
        assert_eq!(bad.errors[0].problem, crate::Problem::Value);
    }

    #[test]
    fn keys_are_interned() {
        let mut c = Collector::default();
        c.push(1, b"d", b"t", 1.0).unwrap();
        c.push(2, b"d", b"u", 2.0).unwrap();
        c.push(3, b"d", b"t", 3.0).unwrap();
        assert!(c.push(3, b"\xff", b"t", 3.0).is_err());
        assert!(c.push(3, b"a/b", b"t", 3.0).is_err());
        let b = c.finish().unwrap();
        assert_eq!(b.readings.key_ids(), [0, 1, 0]);
        let v: Vec<_> = b.iter().map(|r| (r.ts, r.tag)).collect();
        assert_eq!(v, [(1, "t"), (2, "u"), (3, "t")]);
    }
}
