//! JSON request bodies: one object, an array of objects, or NDJSON.
//!
//! ```json
//! {"ts": "2018-08-28T23:00:05Z", "device": "1", "tag": "3", "value": 0.5}
//! ```
//!
//! * The shape is detected: a body whose first non-blank byte is `[` is an
//!   array; otherwise a body that is exactly one JSON value is one object;
//!   otherwise it is newline-delimited JSON, one object per non-blank line.
//! * Field names are matched case-insensitively, so the reference names
//!   `TS`, `Device`, `Tag`, `Value` work; other fields are ignored; a field
//!   given twice (e.g. `ts` and `TS`) is an error.
//! * `ts` (required) is an RFC 3339 / reference-layout string (see
//!   [`fleetscore_core::parse_ts`]) or an integer of nanoseconds since the
//!   epoch. `device` and `tag` are strings or integers (`1` is read as
//!   `"1"`). `value` is a JSON number (a string is refused).
//! * Names, timestamps and values follow the one policy of every source
//!   (`fleetscore_core`'s name rule, 1678 through 2261, finite values).
//!
//! Errors name the array element (0-based), the NDJSON line (1-based) or
//! the body, and the field. All or nothing, as for every ingest parser (see
//! [`BatchError`]).

use serde_json::{Map, Value};

use crate::ingest::{shorten, Batch, BatchError, Collector, Location};
use fleetscore_core::parse_ts;

/// Parses a JSON, JSON array or NDJSON body into readings; all or nothing.
pub fn parse_json(body: &[u8]) -> Result<Batch, BatchError> {
    let mut out = Collector::default();
    let Some(first) = body.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Ok(Batch::default());
    };
    if body[first] == b'[' {
        let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| {
            BatchError::single(Location::Line(e.line()), format!("invalid JSON array: {e}"))
        })?;
        for (i, item) in items.iter().enumerate() {
            add(&mut out, Location::Element(i), item);
        }
        return out.finish();
    }
    if let Ok(item) = serde_json::from_slice::<Value>(body) {
        add(&mut out, Location::Body, &item);
        return out.finish();
    }
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = Location::Line(n + 1);
        match serde_json::from_slice::<Value>(line) {
            Ok(item) => add(&mut out, at, &item),
            Err(e) => out.reject(at, format!("invalid JSON: {e}")),
        }
    }
    out.finish()
}

fn add(out: &mut Collector, at: Location, item: &Value) {
    let r = match item {
        Value::Object(m) => reading(m),
        other => Err(format!("expected an object, found {}", kind(other))),
    };
    match r {
        Ok((ts, device, tag, value)) => {
            if let Err(e) = out.push(ts, device.as_bytes(), tag.as_bytes(), value) {
                out.reject(at, e.in_field(|part| format!("field `{}`", part.name())));
            }
        }
        Err(reason) => out.reject(at, reason),
    }
}

const FIELDS: [&str; 4] = ["ts", "device", "tag", "value"];

fn reading(m: &Map<String, Value>) -> Result<(i64, String, String, f64), String> {
    let mut found: [Option<(&str, &Value)>; 4] = [None; 4];
    for (k, v) in m {
        if let Some(i) = FIELDS.iter().position(|f| f.eq_ignore_ascii_case(k)) {
            if let Some((prev, _)) = found[i] {
                return Err(format!(
                    "field `{}` is given twice (as `{prev}` and `{k}`)",
                    FIELDS[i]
                ));
            }
            found[i] = Some((k, v));
        }
    }
    let get = |i: usize| found[i].ok_or_else(|| format!("missing field `{}`", FIELDS[i]));
    let (k, ts) = get(0)?;
    let ts = match ts {
        Value::String(s) => parse_ts(s).map_err(|e| format!("field `{k}`: {e}"))?,
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            format!("field `{k}`: {n} is not an integer of nanoseconds since the epoch (readings are accepted from 1678 through 2261)")
        })?,
        other => {
            return Err(format!(
                "field `{k}` must be an RFC 3339 string or integer nanoseconds, found {}",
                kind(other)
            ))
        }
    };
    let (dk, device) = get(1)?;
    let device = name(dk, device)?;
    let (tk, tag) = get(2)?;
    let tag = name(tk, tag)?;
    let (vk, value) = get(3)?;
    let value = match value {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("field `{vk}`: {n} is not a number"))?,
        other => {
            return Err(format!(
                "field `{vk}` must be a number, found {}",
                kind(other)
            ))
        }
    };
    Ok((ts, device, tag, value))
}

fn name(k: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Value::Number(n) => Err(format!(
            "field `{k}` must be a string or an integer, found {}",
            shorten(n.to_string().as_bytes())
        )),
        other => Err(format!(
            "field `{k}` must be a string or an integer, found {}",
            kind(other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Vec<(i64, String, String, f64)> {
        parse_json(body.as_bytes())
            .unwrap()
            .iter()
            .map(|r| (r.ts, r.device.into(), r.tag.into(), r.value))
            .collect()
    }

    fn errs(body: &str) -> Vec<String> {
        parse_json(body.as_bytes())
            .unwrap_err()
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn shapes() {
        let one = ok(r#"{"TS": "1970-01-01T00:00:01Z", "Device": 1, "Tag": "3", "Value": 2}"#);
        assert_eq!(one, [(1_000_000_000, "1".into(), "3".into(), 2.0)]);
        let arr = ok(r#"[{"ts": 5, "device": "a", "tag": "t", "value": 1.5, "extra": true}]"#);
        assert_eq!(arr, [(5, "a".into(), "t".into(), 1.5)]);
        let nd = ok("{\"ts\":1,\"device\":\"a\",\"tag\":\"t\",\"value\":1}\n\n{\"ts\":2,\"device\":\"a\",\"tag\":\"t\",\"value\":2}\n");
        assert_eq!(nd.len(), 2);
        assert!(ok("  \n").is_empty());
    }

    #[test]
    fn errors_name_place_and_field() {
        let e = errs(r#"[{"ts": 1, "device": "a", "tag": "t", "value": "1"}, 3]"#);
        assert_eq!(
            e,
            [
                "element 0: field `value` must be a number, found a string",
                "element 1: expected an object, found a number"
            ]
        );
        let e = errs("{\"ts\":1,\"device\":\"a\",\"tag\":\"t\",\"value\":1}\n{\"ts\":\"x\"\n{\"ts\":1,\"TS\":2}");
        assert_eq!(e.len(), 2);
        assert!(e[0].starts_with("line 2: invalid JSON"), "{e:?}");
        assert!(e[1].contains("line 3: field `ts` is given twice"), "{e:?}");
        let e = errs(r#"{"ts": 1.5, "device": "", "tag": "t", "value": 1}"#);
        assert!(e[0].starts_with("body: field `ts`"), "{e:?}");
        let e = errs(r#"{"ts": 1, "device": "", "tag": "t", "value": 1}"#);
        assert_eq!(
            e,
            ["body: field `device`: device name \"\": is empty; a name needs at least one character"]
        );
        let e = errs(r#"{"ts": 1, "device": "d", "value": 1}"#);
        assert_eq!(e, ["body: missing field `tag`"]);
        let e = errs(
            r#"[{"ts": -9223372036854775808, "device": "d", "tag": "t", "value": 1},
                {"ts": 1, "device": "d", "tag": "a\nb", "value": 1},
                {"ts": 1, "device": "x/../../escaped", "tag": "t", "value": 1}]"#,
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("element 0: field `ts`: timestamp 1677-09-21"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with(
                "element 1: field `tag`: tag name \"a\\nb\": contains a control character (U+000A)"
            ),
            "{e:?}"
        );
        assert!(
            e[2].starts_with(
                "element 2: field `device`: device name \"x/../../escaped\": contains `/`"
            ),
            "{e:?}"
        );
        let e = errs(r#"[{"ts": 1,]"#);
        assert!(e[0].starts_with("line 1: invalid JSON array"), "{e:?}");
    }
}
