//! InfluxDB line protocol request bodies (`/write`, `/api/v2/write`), as
//! Telegraf's `outputs.influxdb` and `outputs.influxdb_v2` send them.
//!
//! ```text
//! measurement[,tag=value...] field=value[,field=value...] [timestamp]
//! ```
//!
//! # Mapping to readings
//!
//! * The tag named [`LineProtocolConfig::device_tag`] (default `device`)
//!   gives the device; a line without it is refused.
//! * Every numeric field (float, `123i`, `123u`) becomes one reading whose
//!   tag is the field key, or `measurement.field` when
//!   [`LineProtocolConfig::prefix_measurement`] is on (off by default, so
//!   that `sensors,device=1 3=0.5` gives the reference deployment's
//!   `(1, 3)`; turn it on when several measurements share field names, as
//!   Telegraf's `cpu`/`mem` `usage_*` fields do).
//! * Boolean fields give 1.0 / 0.0, or are skipped
//!   ([`LineProtocolConfig::booleans`]).
//! * String fields are skipped and counted ([`Batch::skipped_strings`]);
//!   they are not an error. Other tags are ignored.
//! * The timestamp is read in the request's [`Precision`]; a line without
//!   one takes the `arrival_ns` the caller passes (the time the request
//!   arrived, so all lines of a request agree).
//!
//! # Syntax accepted
//!
//! As the InfluxDB line protocol reference: in the measurement, tag keys,
//! tag values and field keys a backslash escapes `,`, space, `=` and `\`
//! (a backslash before anything else is itself); string field values are
//! in double quotes, where `\"` and `\\` are escapes. Blank lines and lines
//! starting with `#` are skipped; `\r\n` line ends are accepted. A newline
//! always ends a line, even inside a string field (Telegraf never writes
//! one). NaN and infinite floats are refused, as InfluxDB does.
//!
//! Device and tag names, timestamps and values follow the one policy of
//! every source (`fleetscore_core`'s name rule, 1678 through 2261, finite
//! values); a line that breaks it is refused with its line number.
//!
//! # Speed
//!
//! The parser walks the body's bytes once; keys and values are slices of
//! the body (copied only when they hold escapes), and a (device, tag) pair
//! is allocated once per batch, when it is first seen.
//!
//! A bad line refuses the whole batch; see [`BatchError`] for the policy.

use std::borrow::Cow;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ingest::{shorten, Batch, BatchError, Collector, Location, PartialBatch};

/// How line protocol lines become readings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LineProtocolConfig {
    /// The tag whose value is the device. Default `device`.
    pub device_tag: String,
    /// Name readings `measurement.field` instead of `field`. Default off.
    pub prefix_measurement: bool,
    /// What to do with boolean fields. Default `number` (true → 1.0,
    /// false → 0.0).
    pub booleans: BoolFields,
}

impl Default for LineProtocolConfig {
    fn default() -> Self {
        LineProtocolConfig {
            device_tag: "device".into(),
            prefix_measurement: false,
            booleans: BoolFields::Number,
        }
    }
}

/// What becomes of boolean fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoolFields {
    /// A reading of 1.0 (true) or 0.0 (false).
    Number,
    /// Skipped and counted in [`Batch::skipped_bools`].
    Skip,
}

/// The unit of line protocol timestamps, the `precision` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// `ns` or `n` (the default).
    #[default]
    Nanoseconds,
    /// `us` or `u`.
    Microseconds,
    /// `ms`.
    Milliseconds,
    /// `s`.
    Seconds,
    /// `m` (v1 only).
    Minutes,
    /// `h` (v1 only).
    Hours,
}

impl Precision {
    /// Nanoseconds per unit.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60_000_000_000,
            Precision::Hours => 3_600_000_000_000,
        }
    }
}

/// An unknown `precision` parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision {0:?}: use ns, us, ms or s (v1 also n, u, m, h)")]
pub struct PrecisionError(pub String);

impl FromStr for Precision {
    type Err = PrecisionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ns" | "n" => Precision::Nanoseconds,
            "us" | "u" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => return Err(PrecisionError(s.chars().take(16).collect())),
        })
    }
}

enum Value {
    Number(f64),
    Bool(bool),
    Str,
}

struct Field<'a> {
    key: Cow<'a, [u8]>,
    value: Value,
}

/// Parses a line protocol body into readings; all or nothing (see the
/// module docs).
pub fn parse_line_protocol(
    body: &[u8],
    precision: Precision,
    arrival_ns: i64,
    config: &LineProtocolConfig,
) -> Result<Batch, BatchError> {
    parse_into(Collector::default(), body, precision, arrival_ns, config).finish()
}

/// Parses a line protocol body keeping the good lines: InfluxDB's partial
/// write (`[ingest] bad_lines = "skip"`). A line is kept or dropped whole
/// (all its fields); the bad lines are listed, with their numbers, as
/// [`parse_line_protocol`] lists them.
pub fn parse_line_protocol_partial(
    body: &[u8],
    precision: Precision,
    arrival_ns: i64,
    config: &LineProtocolConfig,
) -> PartialBatch {
    parse_into(Collector::partial(), body, precision, arrival_ns, config).finish_partial()
}

fn parse_into(
    mut out: Collector,
    body: &[u8],
    precision: Precision,
    arrival_ns: i64,
    config: &LineProtocolConfig,
) -> Collector {
    let mut fields: Vec<Field<'_>> = Vec::with_capacity(16);
    let mut tag_buf: Vec<u8> = Vec::new();
    // The tag id of the field at each position of the previous line: lines
    // of one batch usually list the same fields in the same order, so a
    // field key is compared with one name instead of hashed.
    let mut tag_at: Vec<u32> = Vec::new();
    let mut reserved = false;
    let device_tag = config.device_tag.as_bytes();
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        let line_no = n + 1;
        fields.clear();
        match parse_line(line, &mut fields, device_tag, precision, arrival_ns) {
            Ok(None) => {}
            Ok(Some((measurement, device, ts))) => {
                let mark = out.mark();
                if !reserved {
                    // Room for the whole body if its lines look like this
                    // one: as many lines of this length as the body holds
                    // (not its count of newlines, so that a long first line
                    // and many blank ones cannot reserve memory out of
                    // proportion to the body, which is what the server's
                    // in-flight budget counts).
                    reserved = true;
                    let like_this = body.len() / (line.len() + 1) + 1;
                    out.reserve(
                        like_this.saturating_mul(fields.len()).min(1 << 24),
                        like_this,
                    );
                }
                // Interned at the first numeric field, so that a line of
                // string fields only is not checked.
                let mut device_id = None;
                for (pos, f) in fields.iter().enumerate() {
                    let v = match f.value {
                        Value::Number(v) => v,
                        Value::Bool(b) => match config.booleans {
                            BoolFields::Number => f64::from(u8::from(b)),
                            BoolFields::Skip => {
                                out.batch.skipped_bools += 1;
                                continue;
                            }
                        },
                        Value::Str => {
                            out.batch.skipped_strings += 1;
                            continue;
                        }
                    };
                    let tag: &[u8] = if config.prefix_measurement {
                        tag_buf.clear();
                        tag_buf.extend_from_slice(&measurement);
                        tag_buf.push(b'.');
                        tag_buf.extend_from_slice(&f.key);
                        &tag_buf
                    } else {
                        &f.key
                    };
                    let ids = (|| {
                        let d = match device_id {
                            Some(d) => d,
                            None => *device_id.insert(out.device(&device)?),
                        };
                        let t = match tag_at.get(pos) {
                            Some(&t) if out.tag_name(t) == tag => t,
                            _ => {
                                let t = out.tag(tag)?;
                                if pos < tag_at.len() {
                                    tag_at[pos] = t;
                                } else if pos == tag_at.len() {
                                    tag_at.push(t);
                                }
                                t
                            }
                        };
                        Ok((d, t))
                    })();
                    // Checked (names, time, value) even once the batch is
                    // refused, so that every bad line is reported.
                    if let Err(reason) = ids.and_then(|(d, t)| out.push_ids(ts, d, t, v)) {
                        out.reject_since(mark, Location::Line(line_no), &reason);
                        break;
                    }
                }
            }
            Err(reason) => out.reject(Location::Line(line_no), reason),
        }
    }
    out
}

type Parsed<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>, i64);

/// One line: `None` for a blank or comment line, else (measurement,
/// device, timestamp) with the fields in `fields`.
fn parse_line<'a>(
    line: &'a [u8],
    fields: &mut Vec<Field<'a>>,
    device_tag: &[u8],
    precision: Precision,
    arrival_ns: i64,
) -> Result<Option<Parsed<'a>>, String> {
    let line = trim(line);
    if line.is_empty() || line[0] == b'#' {
        return Ok(None);
    }
    let len = line.len();
    // Measurement.
    let (end, esc) = scan(line, 0, |b| b == b',' || b == b' ');
    if end == 0 {
        return Err("missing measurement".into());
    }
    let measurement = unescape(&line[..end], esc);
    let mut p = end;
    // Tag set.
    let mut device = None;
    while p < len && line[p] == b',' {
        let k0 = p + 1;
        let (k1, kesc) = scan(line, k0, |b| b == b'=' || b == b',' || b == b' ');
        let key = unescape(&line[k0..k1], kesc);
        if k1 == k0 {
            return Err("empty tag key".into());
        }
        if k1 >= len || line[k1] != b'=' {
            return Err(format!("tag `{}` has no `=value`", shorten(&key)));
        }
        let v0 = k1 + 1;
        let (v1, vesc) = scan(line, v0, |b| b == b',' || b == b' ');
        if v1 == v0 {
            return Err(format!("tag `{}` has an empty value", shorten(&key)));
        }
        if *key == *device_tag {
            device = Some(unescape(&line[v0..v1], vesc));
        }
        p = v1;
    }
    // Field set.
    let f0 = skip_spaces(line, p);
    if f0 == p || f0 >= len {
        return Err("missing field set".into());
    }
    p = f0;
    loop {
        let (k1, kesc) = scan(line, p, |b| b == b'=' || b == b',' || b == b' ');
        let key = unescape(&line[p..k1], kesc);
        if k1 == p {
            return Err("empty field key".into());
        }
        if k1 >= len || line[k1] != b'=' {
            return Err(format!("field `{}` has no `=value`", shorten(&key)));
        }
        let v0 = k1 + 1;
        let (value, v1) = if v0 < len && line[v0] == b'"' {
            let mut i = v0 + 1;
            loop {
                match line.get(i) {
                    None => return Err(format!("field `{}`: unterminated string", shorten(&key))),
                    Some(b'\\') => i += 2,
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            (Value::Str, i + 1)
        } else {
            let (v1, _) = scan(line, v0, |b| b == b',' || b == b' ');
            (field_value(&key, &line[v0..v1])?, v1)
        };
        fields.push(Field { key, value });
        p = v1;
        if p < len && line[p] == b',' {
            p += 1;
            continue;
        }
        if p < len && line[p] != b' ' {
            return Err(format!(
                "unexpected `{}` after field `{}`",
                shorten(&line[p..p + 1]),
                shorten(&fields[fields.len() - 1].key)
            ));
        }
        break;
    }
    // Timestamp.
    let t0 = skip_spaces(line, p);
    let ts = if t0 >= len {
        arrival_ns
    } else {
        let t1 = t0
            + line[t0..]
                .iter()
                .position(|&b| b == b' ')
                .unwrap_or(len - t0);
        if skip_spaces(line, t1) < len {
            return Err(format!(
                "unexpected text `{}` after the timestamp",
                shorten(&line[t1..]).trim()
            ));
        }
        let raw = &line[t0..t1];
        let t: i64 = parse_i64(raw)
            .ok_or_else(|| format!("timestamp `{}` is not an integer", shorten(raw)))?;
        t.checked_mul(precision.nanos()).ok_or_else(|| {
            format!(
                "timestamp `{}` out of range for precision {:?} (readings are accepted from 1678 through 2261)",
                shorten(raw),
                precision
            )
        })?
    };
    let Some(device) = device else {
        return Err(format!(
            "no `{}` tag: cannot tell which device this is",
            shorten(device_tag)
        ));
    };
    Ok(Some((measurement, device, ts)))
}

fn field_value(key: &[u8], raw: &[u8]) -> Result<Value, String> {
    let bad = |what: &str| {
        format!(
            "field `{}` value `{}` is not {what}",
            shorten(key),
            shorten(raw)
        )
    };
    let Some((&last, head)) = raw.split_last() else {
        return Err(format!("field `{}` has an empty value", shorten(key)));
    };
    match raw {
        b"t" | b"T" | b"true" | b"True" | b"TRUE" => return Ok(Value::Bool(true)),
        b"f" | b"F" | b"false" | b"False" | b"FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    match last {
        b'i' => parse_i64(head)
            .map(|v| Value::Number(v as f64))
            .ok_or_else(|| bad("an integer")),
        b'u' => std::str::from_utf8(head)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(|v| Value::Number(v as f64))
            .ok_or_else(|| bad("an unsigned integer")),
        _ => {
            if let Some(v) = fast_float(raw) {
                return Ok(Value::Number(v));
            }
            // Rust's float parser also takes "inf" and "NaN"; line protocol
            // does not.
            if !raw
                .iter()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
            {
                return Err(bad("a number"));
            }
            std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .map(Value::Number)
                .ok_or_else(|| bad("a number"))
        }
    }
}

/// `raw` as an `i64`, exactly as `str::parse::<i64>` reads it (an optional
/// sign, then ASCII digits; `None` if anything else or out of range),
/// without the UTF-8 check.
#[inline]
fn parse_i64(raw: &[u8]) -> Option<i64> {
    let (neg, digits) = match raw {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, raw),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulated negative, so that i64::MIN is in range.
    let mut v: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(d))?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// The common float spellings, `[-+]digits[.digits]` with at most 19
/// significant digits, read exactly: when the digits form an integer
/// `m < 2^53` and there are `k <= 22` of them after the point, `m` and
/// `10^k` are exact doubles and one IEEE division gives the correctly
/// rounded quotient, the value `str::parse::<f64>` returns. Anything else
/// (exponents, longer mantissas, bad syntax) gives `None`, for the general
/// path.
#[inline]
fn fast_float(raw: &[u8]) -> Option<f64> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let (neg, rest) = match raw {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, raw),
    };
    if rest.len() > 20 {
        return None;
    }
    let mut m: u64 = 0;
    let mut digits = 0usize;
    let mut point: Option<usize> = None;
    for (i, &b) in rest.iter().enumerate() {
        let d = b.wrapping_sub(b'0');
        if d <= 9 {
            // Wraps only past 19 digits, which are refused below.
            m = m.wrapping_mul(10).wrapping_add(u64::from(d));
            digits += 1;
        } else if b == b'.' && point.is_none() {
            point = Some(i);
        } else {
            return None;
        }
    }
    // At most 20 bytes, so at most 20 digits; 19 always fit in a u64.
    if digits == 0 || digits > 19 || m >= 1 << 53 {
        return None;
    }
    let frac = point.map_or(0, |p| rest.len() - p - 1);
    let v = m as f64 / POW10[frac];
    Some(if neg { -v } else { v })
}

/// Index of the first unescaped byte at or after `from` that `stop`
/// accepts (or the length), and whether a backslash was seen.
#[inline]
fn scan(line: &[u8], from: usize, stop: impl Fn(u8) -> bool) -> (usize, bool) {
    let mut i = from;
    let mut esc = false;
    while i < line.len() {
        let b = line[i];
        if b == b'\\' {
            esc = true;
            i += 2;
            continue;
        }
        if stop(b) {
            return (i, esc);
        }
        i += 1;
    }
    (line.len(), esc)
}

fn unescape(b: &[u8], esc: bool) -> Cow<'_, [u8]> {
    if !esc {
        return Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && matches!(b[i + 1], b',' | b' ' | b'=' | b'\\') {
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn skip_spaces(line: &[u8], mut p: usize) -> usize {
    while p < line.len() && line[p] == b' ' {
        p += 1;
    }
    p
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<(i64, String, String, f64)>, BatchError> {
        parse_with(body, &LineProtocolConfig::default())
    }

    fn parse_with(
        body: &str,
        cfg: &LineProtocolConfig,
    ) -> Result<Vec<(i64, String, String, f64)>, BatchError> {
        let b = parse_line_protocol(body.as_bytes(), Precision::Nanoseconds, 7, cfg)?;
        Ok(b.iter()
            .map(|r| (r.ts, r.device.to_string(), r.tag.to_string(), r.value))
            .collect())
    }

    fn reasons(body: &str) -> Vec<String> {
        parse(body)
            .unwrap_err()
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn field_types() {
        let r = parse(r#"m,device=d a=1.5,b=-2i,c=3u,d=t,e=FALSE,s="x, y" 100"#).unwrap();
        let got: Vec<_> = r.iter().map(|r| (r.2.as_str(), r.3)).collect();
        assert_eq!(
            got,
            [("a", 1.5), ("b", -2.0), ("c", 3.0), ("d", 1.0), ("e", 0.0)]
        );
        assert!(r.iter().all(|r| r.0 == 100 && r.1 == "d"));
        // Only string fields: nothing to keep, but not an error.
        let b = parse_line_protocol(
            b"log,device=d msg=\"hi\"",
            Precision::Nanoseconds,
            0,
            &LineProtocolConfig::default(),
        )
        .unwrap();
        assert_eq!((b.readings.len(), b.skipped_strings), (0, 1));
    }

    #[test]
    fn options() {
        let cfg = LineProtocolConfig {
            device_tag: "host".into(),
            prefix_measurement: true,
            booleans: BoolFields::Skip,
        };
        let b = parse_line_protocol(
            b"cpu,host=h1 usage=1,up=true,s=\"a\"",
            Precision::Seconds,
            42,
            &cfg,
        )
        .unwrap();
        let r: Vec<_> = b.iter().collect();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].ts, r[0].device, r[0].tag), (42, "h1", "cpu.usage"));
        assert_eq!((b.skipped_bools, b.skipped_strings), (1, 1));
    }

    #[test]
    fn bad_lines_say_why() {
        for (body, want) in [
            ("m,device=d", "missing field set"),
            ("m,device=d ", "missing field set"),
            ("m,device=d x=abc", "field `x` value `abc` is not a number"),
            ("m,device=d x=1.5i", "is not an integer"),
            ("m,device=d x=-1u", "is not an unsigned integer"),
            ("m,device=d x=NaN", "is not a number"),
            ("m,device=d x=\"abc", "unterminated string"),
            ("m,device=d x=1 99999999999999999999", "is not an integer"),
            ("m,device=d x=1 1x", "is not an integer"),
            ("m,device=d x=1 1 2", "after the timestamp"),
            ("m x=1", "no `device` tag"),
            ("m,device x=1", "tag `device` has no `=value`"),
            ("m,device= x=1", "empty value"),
            ("m,device=d x", "field `x` has no `=value`"),
            ("m,device=d x=", "field `x` has an empty value"),
            ("m,device=d =1", "empty field key"),
            ("m,device=d x=\"a\"b", "unexpected `b`"),
            (",device=d x=1", "missing measurement"),
        ] {
            let r = reasons(body);
            assert_eq!(r.len(), 1, "{body}");
            assert!(r[0].starts_with("line 1: "), "{body}: {r:?}");
            assert!(r[0].contains(want), "{body}: {r:?} lacks {want}");
        }
    }

    #[test]
    fn precision_scales_and_overflows() {
        let cfg = LineProtocolConfig::default();
        let one = |p: &str, body: &[u8]| {
            parse_line_protocol(body, p.parse().unwrap(), 0, &cfg).map(|b| b.readings.ts()[0])
        };
        assert_eq!(one("s", b"m,device=d x=1 2").unwrap(), 2_000_000_000);
        assert_eq!(one("m", b"m,device=d x=1 1").unwrap(), 60_000_000_000);
        assert_eq!(one("u", b"m,device=d x=1 -3").unwrap(), -3_000);
        let e = one("h", b"m,device=d x=1 9999999").unwrap_err();
        assert!(e.errors[0].reason.contains("out of range"), "{e}");
        assert!("x".parse::<Precision>().is_err());
    }

    #[test]
    fn config_parses_and_refuses_unknown_keys() {
        let c: LineProtocolConfig =
            serde_json::from_str(r#"{"device_tag": "host", "booleans": "skip"}"#).unwrap();
        assert_eq!(c.device_tag, "host");
        assert_eq!(c.booleans, BoolFields::Skip);
        assert!(!c.prefix_measurement);
        assert!(serde_json::from_str::<LineProtocolConfig>(r#"{"devise": "x"}"#).is_err());
    }

    #[test]
    fn fast_number_paths_agree_with_std() {
        // Every spelling the fast paths take or refuse, against std.
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "+0",
            "1.",
            ".5",
            "-.5",
            "+.5",
            ".",
            "-",
            "+",
            "",
            "1.2.3",
            "--1",
            "+-1",
            "1e5",
            "1E-3",
            "00012.50",
            "9007199254740991",
            "9007199254740992",
            "9007199254740993",
            "0.1",
            "0.3",
            "123456789.123456789",
            "1234567890123456789",
            "12345678901234567890",
            "99999999999999999999",
            "1.7976931348623157",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "-9223372036854775808",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "1_0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let int = x % 10u64.pow((x >> 40) as u32 % 20);
            let frac_digits = (x >> 50) as usize % 24;
            let mut s = if x & 1 == 0 {
                "-".to_string()
            } else {
                String::new()
            };
            let digits = format!("{int:0>width$}", width = frac_digits + 1);
            let (a, b) = digits.split_at(digits.len() - frac_digits);
            s.push_str(a);
            if frac_digits > 0 || x & 2 == 0 {
                s.push('.');
                s.push_str(b);
            }
            cases.push(s);
        }
        for c in &cases {
            let fast = fast_float(c.as_bytes());
            let std = c.parse::<f64>().ok();
            if let Some(v) = fast {
                let want = std.unwrap_or_else(|| panic!("fast path took {c:?}, std refuses it"));
                assert_eq!(v.to_bits(), want.to_bits(), "{c:?}");
            }
            assert_eq!(parse_i64(c.as_bytes()), c.parse::<i64>().ok(), "{c:?}");
        }
        // The fast path is taken for the usual spellings.
        assert_eq!(fast_float(b"21.53"), Some(21.53));
        assert_eq!(fast_float(b"-0.031"), Some(-0.031));
        assert_eq!(fast_float(b"1e5"), None);
    }

    #[test]
    fn field_order_may_change_between_lines() {
        let r = parse(
            "m,device=a x=1,y=2 1\nm,device=b y=3,x=4 2\nm,device=a y=5 3\nm,device=b z=6,x=7 4",
        )
        .unwrap();
        let got: Vec<_> = r
            .iter()
            .map(|r| (r.1.as_str(), r.2.as_str(), r.3))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "x", 1.0),
                ("a", "y", 2.0),
                ("b", "y", 3.0),
                ("b", "x", 4.0),
                ("a", "y", 5.0),
                ("b", "z", 6.0),
                ("b", "x", 7.0)
            ]
        );
        let b = parse_line_protocol(
            b"m,device=a x=1,y=2 1\nm,device=b y=3,x=4 2\nm,device=a y=5 3",
            Precision::Nanoseconds,
            0,
            &LineProtocolConfig::default(),
        )
        .unwrap();
        // (a,x) (a,y) (b,y) (b,x): each pair once.
        assert_eq!(b.readings.key_count(), 4);
        assert_eq!(b.readings.key_ids(), [0, 1, 2, 3, 1]);
    }

    #[test]
    fn names_break_the_name_rule_with_their_line() {
        let r = reasons(
            "m,device=ok x=1 1\nm,device=a/b x=1 2\nm,device=ok x\ty=1 3\nm,device=.. x=1 4\nm,device=ok x=1 5",
        );
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(
            r[0].starts_with("line 2: device name \"a/b\": contains `/`"),
            "{r:?}"
        );
        assert!(
            r[1].starts_with("line 3: tag name \"x\\ty\": contains a control character (U+0009)"),
            "{r:?}"
        );
        assert!(
            r[2].starts_with("line 4: device name \"..\": is `.` or `..`"),
            "{r:?}"
        );
        let long = format!("m,device={} x=1 1", "d".repeat(129));
        assert!(reasons(&long)[0].contains("is 129 bytes; the limit is 128"));
    }

    #[test]
    fn readings_of_1677_are_refused_not_filed_in_2262() {
        // The first hour of 1677-09-21 and the last of 2262-04-11: in i64,
        // outside the accepted range.
        for body in [
            "m,device=d x=1 -9223372036854775808",
            "m,device=d x=1 -9223372036000000000",
            "m,device=d x=1 9223372036854775807",
        ] {
            let r = reasons(body);
            assert_eq!(r.len(), 1, "{body}");
            assert!(
                r[0].starts_with("line 1: timestamp 16")
                    || r[0].starts_with("line 1: timestamp 22"),
                "{r:?}"
            );
            assert!(r[0].contains("is outside the accepted range, 1678-01-01T00:00:00Z to 2261-12-31T23:59:59.999999999Z"), "{r:?}");
        }
        assert!(parse("m,device=d x=1 -9214560000000000000").is_ok());
    }

    #[test]
    fn names_that_are_not_utf8_refuse_the_line() {
        let cfg = LineProtocolConfig::default();
        let e =
            parse_line_protocol(b"m,device=\xff x=1", Precision::Nanoseconds, 0, &cfg).unwrap_err();
        assert_eq!(
            e.errors[0].to_string(),
            "line 1: device name \"\u{fffd}\": is not UTF-8"
        );
        let e = parse_line_protocol(
            b"m,device=d x=1\nm,device=d \xfe=1",
            Precision::Nanoseconds,
            0,
            &cfg,
        )
        .unwrap_err();
        assert_eq!(
            e.errors[0].to_string(),
            "line 2: tag name \"\u{fffd}\": is not UTF-8"
        );
        // A line of string fields only is not checked, as before.
        let b =
            parse_line_protocol(b"m,device=\xff s=\"x\"", Precision::Nanoseconds, 0, &cfg).unwrap();
        assert_eq!((b.readings.len(), b.skipped_strings), (0, 1));
    }
}
