//! Message payloads of the broker sources (MQTT, Kafka): one message, its
//! readings, all or nothing.
//!
//! A broker message carries one reading, several, or a batch; where its
//! device and tag come from depends on the deployment. [`decode_payload`]
//! reads one message with what the source knows besides the payload
//! ([`MessageMeta`]: a device and tag from the topic or the message key,
//! the arrival time) and the source's [`PayloadConfig`]:
//!
//! * `format = "auto"` (the default): a payload starting with `{` or `[` is
//!   JSON, anything else a plain number (`21.5`, the reading of the
//!   topic's device and tag at its arrival time). `json`, `number`,
//!   `line_protocol` and `csv` fix the format (line protocol and CSV are
//!   read as the HTTP bodies are, with `[ingest] line_protocol` and `csv`).
//! * A JSON object with a `value` field is one reading:
//!   `{"value": 21.5, "ts": 1764887621.5}`; its tag is the `tag` field or
//!   the topic's, its device the `device` field or the topic's (or key's).
//! * A JSON object without a `value` field holds several sensors, one tag
//!   each: `{"ts": 1764887621, "temp": 21.3, "vib": 0.02}` gives the tags
//!   `temp` and `vib`. Every numeric field but `ts`, `device` and `tag` is
//!   a reading, unless `fields` maps the fields to read to their tags
//!   (`fields = { temp = "temperature" }`: only those, renamed). Other
//!   fields (strings, booleans, nulls, nested values) are metadata and
//!   skipped.
//! * A JSON array holds objects of either shape.
//! * Field names are configurable (`ts_field`, `value_field`,
//!   `device_field`, `tag_field`). `ts` is an RFC 3339 string or a number
//!   in `ts_unit` (`auto` by magnitude: seconds, milliseconds,
//!   microseconds or nanoseconds, see [`TsUnit`]); absent, the reading
//!   takes its arrival time.
//!
//! A message is decoded whole or refused whole ([`PayloadError`], with
//! the field and the reason): a refused message is dead-lettered by its
//! source, never half stored.

use std::borrow::Cow;
use std::collections::BTreeMap;

use fleetscore_core::{
    check_ts, check_value, parse_ts, validate_name, NameKind, ReadingsBuilder, TsUnit,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ingest::{json_ts, shorten};
use crate::{parse_csv_body, parse_line_protocol, CsvBodyConfig, LineProtocolConfig, Precision};

/// How the payload of a message is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// JSON when it starts with `{` or `[`, else a plain number.
    #[default]
    Auto,
    /// JSON: an object, or an array of objects.
    Json,
    /// A plain number: one reading of the topic's device and tag.
    Number,
    /// InfluxDB line protocol, as `POST /write` reads it.
    LineProtocol,
    /// CSV with a header, as `POST /v1/readings` reads it.
    Csv,
}

/// A source's payload settings (`[mqtt.payload]`, `[kafka.payload]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayloadConfig {
    /// The format (default `auto`).
    pub format: PayloadFormat,
    /// The field holding the time (default `ts`).
    pub ts_field: String,
    /// The unit of numeric times (default `auto`: by magnitude).
    pub ts_unit: TsUnit,
    /// The field of a one-reading object (default `value`).
    pub value_field: String,
    /// The field naming the device, if the payload names it (default
    /// `device`); else the topic's or the key's device.
    pub device_field: String,
    /// The field naming the tag of a one-reading object (default `tag`);
    /// else the topic's tag.
    pub tag_field: String,
    /// Several-sensor objects: the fields to read and their tags. Empty
    /// (the default): every numeric field, its name as the tag.
    pub fields: BTreeMap<String, String>,
}

impl Default for PayloadConfig {
    fn default() -> Self {
        PayloadConfig {
            format: PayloadFormat::Auto,
            ts_field: "ts".into(),
            ts_unit: TsUnit::Auto,
            value_field: "value".into(),
            device_field: "device".into(),
            tag_field: "tag".into(),
            fields: BTreeMap::new(),
        }
    }
}

impl PayloadConfig {
    /// Checks the settings: field names non-empty and distinct, mapped
    /// tags valid names.
    pub fn check(&self) -> Result<(), String> {
        let named = [
            ("ts_field", &self.ts_field),
            ("value_field", &self.value_field),
            ("device_field", &self.device_field),
            ("tag_field", &self.tag_field),
        ];
        for (i, (key, v)) in named.iter().enumerate() {
            if v.is_empty() {
                return Err(format!("{key} must not be empty"));
            }
            if let Some((other, _)) = named[..i].iter().find(|(_, w)| w == v) {
                return Err(format!("{key} and {other} are both {v:?}"));
            }
        }
        for (field, tag) in &self.fields {
            validate_name(NameKind::Tag, tag).map_err(|e| format!("fields.{field}: {e}"))?;
        }
        Ok(())
    }
}

/// What a source knows of a message besides its payload.
#[derive(Debug, Clone, Copy)]
pub struct MessageMeta<'a> {
    /// The device its topic or key names, if any.
    pub device: Option<&'a str>,
    /// The tag its topic names, if any.
    pub tag: Option<&'a str>,
    /// When it arrived (ns since the epoch): the time of a reading without
    /// one.
    pub arrival_ns: i64,
}

/// What kind of problem refused a message: the `reason` label of the
/// dead-letter counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// It does not parse in its format (not JSON, not a number, a bad
    /// line).
    Syntax,
    /// A part of a reading is missing (no device, no tag, no value).
    Missing,
    /// A device or tag name breaks the name rule.
    Name,
    /// A time is not a time, or outside 1678 to 2261.
    Time,
    /// A value is not a finite number.
    Value,
}

impl Problem {
    /// Every kind, so that their series exist from zero.
    pub const ALL: [Problem; 5] = [
        Problem::Syntax,
        Problem::Missing,
        Problem::Name,
        Problem::Time,
        Problem::Value,
    ];

    /// Its label.
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Syntax => "syntax",
            Problem::Missing => "missing",
            Problem::Name => "name",
            Problem::Time => "time",
            Problem::Value => "value",
        }
    }
}

/// Why a message was refused: its kind and what is wrong, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PayloadError {
    /// The kind of problem.
    pub problem: Problem,
    /// What is wrong.
    pub message: String,
}

fn fail<T>(problem: Problem, message: impl Into<String>) -> Result<T, PayloadError> {
    Err(PayloadError {
        problem,
        message: message.into(),
    })
}

/// One reading found in a message, checked, before it is pushed.
type Row<'a> = (i64, Cow<'a, str>, Cow<'a, str>, f64);

/// Reads one message's payload and pushes its readings onto `out`; all or
/// nothing (on an error nothing was pushed). Returns how many readings it
/// held (zero is an error: a message with no reading is refused).
pub fn decode_payload(
    payload: &[u8],
    meta: &MessageMeta<'_>,
    config: &PayloadConfig,
    line_protocol: &LineProtocolConfig,
    csv: &CsvBodyConfig,
    out: &mut ReadingsBuilder,
) -> Result<usize, PayloadError> {
    let format = match config.format {
        PayloadFormat::Auto => match payload.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => PayloadFormat::Json,
            _ => PayloadFormat::Number,
        },
        f => f,
    };
    let rows: Vec<Row<'_>> = match format {
        PayloadFormat::LineProtocol | PayloadFormat::Csv => {
            let precision = match config.ts_unit {
                TsUnit::Seconds => Precision::Seconds,
                TsUnit::Millis => Precision::Milliseconds,
                TsUnit::Micros => Precision::Microseconds,
                TsUnit::Auto | TsUnit::Nanos => Precision::Nanoseconds,
            };
            let batch = if format == PayloadFormat::Csv {
                let mut csv = csv.clone();
                csv.ts_unit = config.ts_unit;
                parse_csv_body(payload, &csv)
            } else {
                parse_line_protocol(payload, precision, meta.arrival_ns, line_protocol)
            };
            let batch = batch.map_err(|e| PayloadError {
                problem: Problem::Syntax,
                message: e
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
            if batch.readings.is_empty() {
                return fail(Problem::Missing, "the payload holds no reading");
            }
            let n = batch.readings.len();
            for r in batch.iter() {
                out.push(r.ts, r.device, r.tag, r.value);
            }
            return Ok(n);
        }
        PayloadFormat::Number | PayloadFormat::Auto => {
            let text = std::str::from_utf8(payload)
                .map_err(|_| PayloadError {
                    problem: Problem::Syntax,
                    message: "the payload is not UTF-8".into(),
                })?
                .trim();
            let Ok(value) = text.parse::<f64>() else {
                return fail(
                    Problem::Syntax,
                    format!(
                        "not a number or a JSON object: {:?}",
                        shorten(text.as_bytes())
                    ),
                );
            };
            let (device, tag) = topic_names(meta)?;
            vec![(meta.arrival_ns, device.into(), tag.into(), value)]
        }
        PayloadFormat::Json => {
            let v: Value = serde_json::from_slice(payload).map_err(|e| PayloadError {
                problem: Problem::Syntax,
                message: format!("bad JSON: {e}"),
            })?;
            let mut rows = Vec::new();
            match &v {
                Value::Object(o) => object(o, meta, config, &mut rows)?,
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let Value::Object(o) = item else {
                            return fail(
                                Problem::Syntax,
                                format!("element {i}: expected an object, found {}", kind(item)),
                            );
                        };
                        object(o, meta, config, &mut rows).map_err(|e| PayloadError {
                            problem: e.problem,
                            message: format!("element {i}: {}", e.message),
                        })?;
                    }
                    if rows.is_empty() {
                        return fail(Problem::Missing, "an empty array: no reading");
                    }
                }
                other => {
                    return fail(
                        Problem::Syntax,
                        format!("expected a JSON object or array, found {}", kind(other)),
                    )
                }
            }
            return push_all(rows, out);
        }
    };
    push_all(rows, out)
}

fn push_all(rows: Vec<Row<'_>>, out: &mut ReadingsBuilder) -> Result<usize, PayloadError> {
    for (ts, device, tag, value) in &rows {
        check_names(device, tag)?;
        check_ts(*ts).map_err(|e| PayloadError {
            problem: Problem::Time,
            message: e.to_string(),
        })?;
        check_value(*value).map_err(|e| PayloadError {
            problem: Problem::Value,
            message: e.to_string(),
        })?;
    }
    for (ts, device, tag, value) in &rows {
        out.push(*ts, device, tag, *value);
    }
    Ok(rows.len())
}

fn check_names(device: &str, tag: &str) -> Result<(), PayloadError> {
    let name = |e: fleetscore_core::NameError| PayloadError {
        problem: Problem::Name,
        message: e.to_string(),
    };
    validate_name(NameKind::Device, device).map_err(name)?;
    validate_name(NameKind::Tag, tag).map_err(name)?;
    Ok(())
}

/// The device and tag of a plain-number message: the topic's.
fn topic_names<'a>(meta: &MessageMeta<'a>) -> Result<(&'a str, &'a str), PayloadError> {
    match (meta.device, meta.tag) {
        (Some(d), Some(t)) => Ok((d, t)),
        (None, _) => fail(
            Problem::Missing,
            "a plain number needs its device from the topic or the message key",
        ),
        (_, None) => fail(
            Problem::Missing,
            "a plain number needs its tag from the topic (or send a JSON object)",
        ),
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

/// A device or tag name from a field: a string, or an integer (`7` is
/// read as `"7"`).
fn name_field<'v>(key: &str, v: &'v Value) -> Result<Cow<'v, str>, PayloadError> {
    match v {
        Value::String(s) => Ok(Cow::Borrowed(s)),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Cow::Owned(n.to_string())),
        other => fail(
            Problem::Name,
            format!(
                "field `{key}` must be a string or an integer, found {}",
                kind(other)
            ),
        ),
    }
}

/// The readings of one JSON object (one reading, or several sensors).
fn object<'v>(
    o: &'v serde_json::Map<String, Value>,
    meta: &MessageMeta<'v>,
    config: &'v PayloadConfig,
    rows: &mut Vec<Row<'v>>,
) -> Result<(), PayloadError> {
    let device: Cow<'v, str> = match o.get(&config.device_field) {
        Some(v) => name_field(&config.device_field, v)?,
        None => match meta.device {
            Some(d) => Cow::Borrowed(d),
            None => {
                return fail(
                    Problem::Missing,
                    format!(
                        "no device: the object has no `{}` field and the topic or key names none",
                        config.device_field
                    ),
                )
            }
        },
    };
    let ts = match o.get(&config.ts_field) {
        None | Some(Value::Null) => meta.arrival_ns,
        Some(Value::String(s)) => parse_ts(s).map_err(|e| PayloadError {
            problem: Problem::Time,
            message: format!("field `{}`: {e}", config.ts_field),
        })?,
        Some(Value::Number(n)) => json_ts(n, config.ts_unit).map_err(|e| PayloadError {
            problem: Problem::Time,
            message: format!("field `{}`: {e}", config.ts_field),
        })?,
        Some(other) => {
            return fail(
                Problem::Time,
                format!(
                    "field `{}` must be an RFC 3339 string or a number since the epoch, found {}",
                    config.ts_field,
                    kind(other)
                ),
            )
        }
    };
    let number = |key: &str, v: &Value| -> Result<f64, PayloadError> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| PayloadError {
                problem: Problem::Value,
                message: format!("field `{key}`: {n} is not a number"),
            }),
            other => fail(
                Problem::Value,
                format!("field `{key}` must be a number, found {}", kind(other)),
            ),
        }
    };
    if let Some(v) = o.get(&config.value_field) {
        let value = number(&config.value_field, v)?;
        let tag: Cow<'v, str> = match o.get(&config.tag_field) {
            Some(t) => name_field(&config.tag_field, t)?,
            None => match meta.tag {
                Some(t) => Cow::Borrowed(t),
                None => {
                    return fail(
                        Problem::Missing,
                        format!(
                            "no tag: the object has no `{}` field and the topic names none",
                            config.tag_field
                        ),
                    )
                }
            },
        };
        rows.push((ts, device, tag, value));
        return Ok(());
    }
    let before = rows.len();
    let reserved = [&config.ts_field, &config.device_field, &config.tag_field];
    for (key, v) in o {
        if reserved.contains(&key) {
            continue;
        }
        if config.fields.is_empty() {
            if let Value::Number(n) = v {
                let value = n.as_f64().ok_or_else(|| PayloadError {
                    problem: Problem::Value,
                    message: format!("field `{key}`: {n} is not a number"),
                })?;
                rows.push((ts, device.clone(), Cow::Borrowed(key), value));
            }
        } else if let Some(tag) = config.fields.get(key) {
            let value = number(key, v)?;
            rows.push((ts, device.clone(), Cow::Borrowed(tag), value));
        }
    }
    if rows.len() == before {
        let what = if config.fields.is_empty() {
            "no numeric field".to_string()
        } else {
            format!(
                "none of the fields {:?}",
                config.fields.keys().collect::<Vec<_>>()
            )
        };
        return fail(
            Problem::Missing,
            format!(
                "no reading: the object has no `{}` field and {what}",
                config.value_field
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(
        payload: &str,
        device: Option<&str>,
        tag: Option<&str>,
        config: &PayloadConfig,
    ) -> Result<Vec<(i64, String, String, f64)>, PayloadError> {
        let meta = MessageMeta {
            device,
            tag,
            arrival_ns: 7,
        };
        let mut out = ReadingsBuilder::new();
        let n = decode_payload(
            payload.as_bytes(),
            &meta,
            config,
            &LineProtocolConfig::default(),
            &CsvBodyConfig::default(),
            &mut out,
        )?;
        let r = out.finish();
        assert_eq!(r.len(), n);
        Ok(r.iter()
            .map(|r| (r.ts, r.device.to_string(), r.tag.to_string(), r.value))
            .collect())
    }

    fn row(ts: i64, d: &str, t: &str, v: f64) -> (i64, String, String, f64) {
        (ts, d.into(), t.into(), v)
    }

    const T: i64 = 1_764_887_621_500_000_000;

    #[test]
    fn one_reading_shapes() {
        let c = PayloadConfig::default();
        let (d, t) = (Some("d1"), Some("temp"));
        assert_eq!(
            decode("21.5", d, t, &c).unwrap(),
            [row(7, "d1", "temp", 21.5)]
        );
        assert_eq!(
            decode(r#"{"value": 20, "ts": 1764887621.5}"#, d, t, &c).unwrap(),
            [row(T, "d1", "temp", 20.0)]
        );
        assert_eq!(
            decode(r#"{"value": 20, "ts": 1764887621500}"#, d, t, &c).unwrap(),
            [row(T, "d1", "temp", 20.0)]
        );
        assert_eq!(
            decode(r#"{"value": 20, "ts": "2025-12-04T22:33:41.5Z"}"#, d, t, &c).unwrap(),
            [row(T, "d1", "temp", 20.0)]
        );
        assert_eq!(
            decode(r#"{"value": 3, "device": "d2", "tag": 5}"#, None, None, &c).unwrap(),
            [row(7, "d2", "5", 3.0)]
        );
        let ns = PayloadConfig {
            ts_unit: TsUnit::Nanos,
            ..PayloadConfig::default()
        };
        assert_eq!(
            decode(r#"{"value": 2, "ts": 5}"#, d, t, &ns).unwrap(),
            [row(5, "d1", "temp", 2.0)]
        );
    }

    #[test]
    fn several_sensors_in_one_object() {
        let c = PayloadConfig::default();
        let got = decode(
            r#"{"ts": 1764887621.5, "temp": 21.3, "vib": 0.02, "status": "ok", "on": true}"#,
            Some("pump-7"),
            None,
            &c,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                row(T, "pump-7", "temp", 21.3),
                row(T, "pump-7", "vib", 0.02)
            ]
        );
        let mapped = PayloadConfig {
            fields: [("temp".to_string(), "temperature".to_string())].into(),
            ..PayloadConfig::default()
        };
        let got = decode(r#"{"temp": 21.3, "vib": 0.02}"#, Some("p"), None, &mapped).unwrap();
        assert_eq!(got, [row(7, "p", "temperature", 21.3)]);
        let e = decode(r#"{"vib": 0.02}"#, Some("p"), None, &mapped).unwrap_err();
        assert_eq!(e.problem, Problem::Missing);
        // An array of objects, each of either shape, device from the payload.
        let got = decode(
            r#"[{"device": "a", "t": 1}, {"device": "b", "tag": "x", "value": 2, "ts": 1764887621.5}]"#,
            None,
            None,
            &c,
        )
        .unwrap();
        assert_eq!(got, [row(7, "a", "t", 1.0), row(T, "b", "x", 2.0)]);
    }

    #[test]
    fn a_bad_message_is_refused_whole_with_its_reason() {
        let c = PayloadConfig::default();
        let err = |p: &str, d: Option<&str>, t: Option<&str>| decode(p, d, t, &c).unwrap_err();
        let (d, t) = (Some("d"), Some("t"));
        assert_eq!(err("warm", d, t).problem, Problem::Syntax);
        assert_eq!(err("{\"value\": 1", d, t).problem, Problem::Syntax);
        assert_eq!(err("21.5", None, t).problem, Problem::Missing);
        assert_eq!(err("{\"ts\": 5}", d, t).problem, Problem::Missing);
        assert_eq!(err("{\"value\": \"x\"}", d, t).problem, Problem::Value);
        assert_eq!(err("NaN", d, t).problem, Problem::Value);
        assert_eq!(
            err("{\"value\": 1, \"ts\": \"yesterday\"}", d, t).problem,
            Problem::Time
        );
        assert_eq!(
            err("{\"value\": 1, \"ts\": true}", d, t).problem,
            Problem::Time
        );
        assert_eq!(
            err("{\"value\": 1, \"device\": \"a/b\"}", d, t).problem,
            Problem::Name
        );
        // All or nothing: the second element's bad name refuses the first.
        let e = err(r#"[{"a": 1}, {"device": "..", "b": 2}]"#, d, t);
        assert_eq!(e.problem, Problem::Name);
        assert!(e.message.contains(".."), "{e}");
        let secs = PayloadConfig {
            ts_unit: TsUnit::Seconds,
            ..PayloadConfig::default()
        };
        let e = decode(r#"{"value": 1, "ts": 1764887621500}"#, d, t, &secs).unwrap_err();
        assert!(e.message.contains("read as seconds"), "{e}");
    }

    #[test]
    fn line_protocol_and_csv_payloads() {
        let lp = PayloadConfig {
            format: PayloadFormat::LineProtocol,
            ..PayloadConfig::default()
        };
        let got = decode("m,device=d1 temp=1,vib=2 5", None, None, &lp).unwrap();
        assert_eq!(got, [row(5, "d1", "temp", 1.0), row(5, "d1", "vib", 2.0)]);
        assert_eq!(
            decode("m,device=d1 temp=x 5", None, None, &lp)
                .unwrap_err()
                .problem,
            Problem::Syntax
        );
        let csv = PayloadConfig {
            format: PayloadFormat::Csv,
            ..PayloadConfig::default()
        };
        let got = decode(
            "TS,Device,Tag,Value\n1764887621.5,d,t,3\n",
            None,
            None,
            &csv,
        )
        .unwrap();
        assert_eq!(got, [row(T, "d", "t", 3.0)]);
    }

    #[test]
    fn settings_are_checked() {
        assert!(PayloadConfig::default().check().is_ok());
        let c = PayloadConfig {
            tag_field: "ts".into(),
            ..PayloadConfig::default()
        };
        assert!(c.check().unwrap_err().contains("tag_field and ts_field"));
        let c = PayloadConfig {
            fields: [("a".to_string(), "x/y".to_string())].into(),
            ..PayloadConfig::default()
        };
        assert!(c.check().unwrap_err().starts_with("fields.a"));
    }
}
