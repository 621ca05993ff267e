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
//!   `TS`, `Device`, `Tag`, `Value` work; other fields are ignored (skipped
//!   unread); a field given twice (`ts` and `TS`, or `ts` twice) is an
//!   error.
//! * `ts` (required) is an RFC 3339 / reference-layout string (see
//!   [`fleetscore_core::parse_ts`]) or a number since the epoch in the
//!   configured unit (`[ingest] ts_unit`, default `auto`: seconds,
//!   milliseconds, microseconds or nanoseconds by magnitude, see
//!   [`TsUnit`]); seconds may have a fraction. `device` and `tag` are strings or integers (`1` is read as
//!   `"1"`). `value` is a JSON number (a string is refused).
//! * Names, timestamps and values follow the one policy of every source
//!   (`fleetscore_core`'s name rule, 1678 through 2261, finite values).
//!
//! Errors name the array element (0-based), the NDJSON line (1-based) or
//! the body, and the field. All or nothing, as for every ingest parser (see
//! [`BatchError`]).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use crate::ingest::{json_ts, shorten, Batch, BatchError, Collector, Location};
use fleetscore_core::{parse_ts, TsUnit};

/// Parses a JSON, JSON array or NDJSON body into readings; all or nothing.
///
/// The body is read in one pass, element by element, keeping only the four
/// fields of a reading: no tree of the whole body is built, so the memory a
/// body costs is its readings, not ten or more times its bytes (which is
/// what the server's in-flight budget assumes).
///
/// Numeric timestamps are in `ts_unit` ([`TsUnit::Auto`]: by magnitude).
pub fn parse_json(body: &[u8], ts_unit: TsUnit) -> Result<Batch, BatchError> {
    let mut out = Collector::default();
    let Some(first) = body.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Ok(Batch::default());
    };
    if body[first] == b'[' {
        let mut de = serde_json::Deserializer::from_slice(body);
        let read = de
            .deserialize_seq(Elements {
                out: &mut out,
                unit: ts_unit,
            })
            .and_then(|()| de.end());
        if let Err(e) = read {
            return Err(BatchError::single(
                Location::Line(e.line()),
                format!("invalid JSON array: {e}"),
            ));
        }
        return out.finish();
    }
    if let Ok(item) = serde_json::from_slice::<Item>(body) {
        add(&mut out, Location::Body, item, ts_unit);
        return out.finish();
    }
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = Location::Line(n + 1);
        match serde_json::from_slice::<Item>(line) {
            Ok(item) => add(&mut out, at, item, ts_unit),
            Err(e) => out.reject(at, format!("invalid JSON: {e}")),
        }
    }
    out.finish()
}

/// The elements of a top-level array, each added as it is read.
struct Elements<'a> {
    out: &'a mut Collector,
    unit: TsUnit,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of readings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while let Some(item) = seq.next_element::<Item>()? {
            add(self.out, Location::Element(i), item, self.unit);
            i += 1;
        }
        Ok(())
    }
}

/// One top-level value: an object's reading fields, or the kind of
/// anything else (for the error).
enum Item {
    Object(Fields),
    Other(&'static str),
}

/// The fields of an object that name a reading's parts (matched
/// case-insensitively, in `FIELDS` order), each with the key as written;
/// other fields are skipped unread.
#[derive(Default)]
struct Fields {
    found: [Option<(String, Scalar)>; 4],
    /// The first field given twice, as the error names it.
    twice: Option<String>,
}

/// A field's value as far as a reading needs it: scalars kept, arrays and
/// objects only named (and skipped unread).
enum Scalar {
    Null,
    Bool,
    Number(Number),
    String(String),
    Array,
    Object,
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reading")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut fields = Fields::default();
        while let Some(k) = map.next_key::<String>()? {
            let Some(i) = FIELDS.iter().position(|f| f.eq_ignore_ascii_case(&k)) else {
                map.next_value::<Skip>()?;
                continue;
            };
            match &fields.found[i] {
                Some((prev, _)) => {
                    if fields.twice.is_none() {
                        fields.twice = Some(format!(
                            "field `{}` is given twice (as `{prev}` and `{k}`)",
                            FIELDS[i]
                        ));
                    }
                    map.next_value::<Skip>()?;
                }
                None => fields.found[i] = Some((k, map.next_value::<Scalar>()?)),
            }
        }
        Ok(Item::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Item, A::Error> {
        skip_seq(seq)?;
        Ok(Item::Other(Scalar::Array.kind()))
    }

    fn visit_unit<E>(self) -> Result<Item, E> {
        Ok(Item::Other(Scalar::Null.kind()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Item, E> {
        Ok(Item::Other(Scalar::Bool.kind()))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Item, E> {
        Ok(Item::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Item, E> {
        Ok(Item::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Item, E> {
        Ok(Item::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Item, E> {
        Ok(Item::Other("a string"))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool)
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
        Number::from_f64(v)
            .map(Scalar::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
        skip_seq(seq)?;
        Ok(Scalar::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

/// A value read and dropped. Unlike serde's `IgnoredAny` it is read
/// through `deserialize_any`, so that serde_json checks it as it checks
/// every value (its strings are UTF-8, for one: `IgnoredAny` skips a
/// string's bytes unchecked, and a body that is not JSON would pass).
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
        skip_seq(seq)?;
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

impl Scalar {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Number(_) => "a number",
            Scalar::String(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

fn add(out: &mut Collector, at: Location, item: Item, unit: TsUnit) {
    let r = match item {
        Item::Object(fields) => reading(fields, unit),
        Item::Other(kind) => Err(format!("expected an object, found {kind}")),
    };
    match r {
        Ok((ts, device, tag, value)) => {
            if let Err(e) = out.push(ts, device.as_bytes(), tag.as_bytes(), value) {
                out.reject_as(
                    at,
                    e.problem(),
                    e.in_field(|part| format!("field `{}`", part.name())),
                );
            }
        }
        Err(reason) => out.reject(at, reason),
    }
}

const FIELDS: [&str; 4] = ["ts", "device", "tag", "value"];

fn reading(fields: Fields, unit: TsUnit) -> Result<(i64, String, String, f64), String> {
    if let Some(twice) = fields.twice {
        return Err(twice);
    }
    let [ts, device, tag, value] = fields.found;
    let get = |f: Option<(String, Scalar)>, i: usize| {
        f.ok_or_else(|| format!("missing field `{}`", FIELDS[i]))
    };
    let (k, ts) = get(ts, 0)?;
    let ts = match ts {
        Scalar::String(s) => parse_ts(&s).map_err(|e| format!("field `{k}`: {e}"))?,
        Scalar::Number(n) => json_ts(&n, unit).map_err(|e| format!("field `{k}`: {e}"))?,
        other => {
            return Err(format!(
                "field `{k}` must be an RFC 3339 string or a number since the epoch, found {}",
                other.kind()
            ))
        }
    };
    let (dk, device) = get(device, 1)?;
    let device = name(&dk, device)?;
    let (tk, tag) = get(tag, 2)?;
    let tag = name(&tk, tag)?;
    let (vk, value) = get(value, 3)?;
    let value = match value {
        Scalar::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("field `{vk}`: {n} is not a number"))?,
        other => {
            return Err(format!(
                "field `{vk}` must be a number, found {}",
                other.kind()
            ))
        }
    };
    Ok((ts, device, tag, value))
}

fn name(k: &str, v: Scalar) -> Result<String, String> {
    match v {
        Scalar::String(s) => Ok(s),
        Scalar::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Scalar::Number(n) => Err(format!(
            "field `{k}` must be a string or an integer, found {}",
            shorten(n.to_string().as_bytes())
        )),
        other => Err(format!(
            "field `{k}` must be a string or an integer, found {}",
            other.kind()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Vec<(i64, String, String, f64)> {
        parse_json(body.as_bytes(), TsUnit::Nanos)
            .unwrap()
            .iter()
            .map(|r| (r.ts, r.device.into(), r.tag.into(), r.value))
            .collect()
    }

    fn errs(body: &str) -> Vec<String> {
        parse_json(body.as_bytes(), TsUnit::Nanos)
            .unwrap_err()
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn numeric_times_in_the_configured_unit_or_by_magnitude() {
        let at = |body: &str, unit| {
            parse_json(body.as_bytes(), unit)
                .unwrap()
                .iter()
                .map(|r| r.ts)
                .collect::<Vec<_>>()
        };
        let t = 1_764_887_621_500_000_000;
        let body = r#"[{"ts": 1764887621.5, "device": "d", "tag": "t", "value": 1},
            {"ts": 1764887621500, "device": "d", "tag": "t", "value": 1},
            {"ts": 1764887621500000, "device": "d", "tag": "t", "value": 1},
            {"ts": 1764887621500000000, "device": "d", "tag": "t", "value": 1}]"#;
        assert_eq!(at(body, TsUnit::Auto), [t, t, t, t]);
        assert_eq!(
            at(
                r#"{"ts": 5, "device": "d", "tag": "t", "value": 1}"#,
                TsUnit::Millis
            ),
            [5_000_000]
        );
        let e = parse_json(
            br#"{"ts": 1764887621500, "device": "d", "tag": "t", "value": 1}"#,
            TsUnit::Seconds,
        )
        .unwrap_err();
        assert!(e.errors[0].reason.contains("read as seconds"), "{e}");
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
        let e = errs(r#"{"ts": 1e300, "device": "", "tag": "t", "value": 1}"#);
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
            e[0].starts_with("element 0: field `ts`: timestamp -9223372036854775808 read as nanoseconds since 1970 (1677-09-21"),
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

    #[test]
    fn a_body_that_is_not_json_is_refused_even_in_fields_nobody_reads() {
        // Found by the `json` fuzz target: skipped with serde's
        // `IgnoredAny`, an unread field's string was not checked for UTF-8,
        // so a body that is not JSON gave readings (or element errors).
        let body = b"[{\"x\": \"\xca\xab\xcd\xcc\", \"ts\": 1, \"device\": \"d\", \"tag\": \"t\", \"value\": 1}]";
        let e = parse_json(body, TsUnit::Nanos).unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
        assert!(
            e.errors[0]
                .to_string()
                .starts_with("line 1: invalid JSON array: invalid unicode code point"),
            "{e}"
        );
        let body = b"{\"ts\": 1, \"device\": \"d\", \"tag\": \"t\", \"value\": 1, \"x\": [{\"y\": \"\xff\"}]}";
        let e = parse_json(body, TsUnit::Nanos).unwrap_err();
        assert!(
            e.errors[0].to_string().starts_with("line 1: invalid JSON"),
            "{e}"
        );
    }

    #[test]
    fn a_field_given_twice_with_one_spelling_is_refused() {
        // Read as a tree, the second `ts` silently replaced the first.
        let e = errs(r#"{"ts": 1, "device": "d", "tag": "t", "value": 1, "ts": 2}"#);
        assert_eq!(e, ["body: field `ts` is given twice (as `ts` and `ts`)"]);
        // Nested values of other fields are skipped, whatever they hold.
        let r = ok(
            r#"[{"ts": 1, "x": {"ts": [2, {"a": null}]}, "device": "d", "tag": "t", "value": 1}]"#,
        );
        assert_eq!(r, [(1, "d".into(), "t".into(), 1.0)]);
        let e = errs(r#"[{"ts": [1], "device": {"a": 1}, "tag": "t", "value": 1}, [1, 2]]"#);
        assert_eq!(
            e,
            [
                "element 0: field `ts` must be an RFC 3339 string or a number since the epoch, found an array",
                "element 1: expected an object, found an array"
            ]
        );
    }
}
