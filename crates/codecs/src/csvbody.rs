//! CSV request bodies: the reference `TS,Device,Tag,Value` layout or a
//! configured column mapping.
//!
//! By default the first line is a header and the columns `TS`, `Device`,
//! `Tag` and `Value` are found by name, in any order and any case.
//! [`CsvBodyConfig`] names other columns (by header name or 0-based
//! position), reads bodies without a header, or fixes the device or tag for
//! the whole body (e.g. one device posting its own sensors). `TS` is read
//! by [`fleetscore_core::parse_ts`] (reference layout or RFC 3339) or as an
//! integer of nanoseconds since the epoch.
//!
//! A column the mapping does not use refuses the body, naming it, unless
//! [`CsvBodyConfig::extra_columns`] says to ignore such columns: a column
//! nobody reads is usually a mistake (a misspelt header, a name with an
//! unquoted comma) and dropping it silently loses data. A row with more
//! fields than the header is always refused. Cells are trimmed of ASCII
//! white space; names, timestamps and values then follow the one policy of
//! every source (`fleetscore_core`'s name rule, 1678 through 2261, finite
//! values: `nan` and `inf` are refused, as line protocol refuses them).
//!
//! Errors name the 1-based line (the header is line 1) and the column. All
//! or nothing, as for every ingest parser (see [`BatchError`]).

use serde::{Deserialize, Serialize};

use crate::ingest::{shorten, Batch, BatchError, Collector, Location, Part};
use fleetscore_core::{parse_ts, validate_name, NameKind, TsUnit};

/// A CSV column: a header name (matched case-insensitively) or a 0-based
/// position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Column {
    /// 0-based position.
    Index(usize),
    /// Header name.
    Name(String),
}

impl std::fmt::Display for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Column::Index(i) => write!(f, "#{i}"),
            Column::Name(n) => write!(f, "{n}"),
        }
    }
}

/// Which CSV columns hold what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvBodyConfig {
    /// Whether the first line is a header. Default true. Without a header,
    /// columns must be given by position.
    pub header: bool,
    /// The timestamp column. Default `TS`.
    pub ts: Column,
    /// The device column. Default `Device`. Unused when `fixed_device` is set.
    pub device: Column,
    /// The tag column. Default `Tag`. Unused when `fixed_tag` is set.
    pub tag: Column,
    /// The value column. Default `Value`.
    pub value: Column,
    /// One device for every row, instead of a column. Default none.
    pub fixed_device: Option<String>,
    /// One tag for every row, instead of a column. Default none.
    pub fixed_tag: Option<String>,
    /// What to do with columns the mapping does not use: `refuse` the body,
    /// naming them (the default), or `ignore` them.
    pub extra_columns: ExtraColumns,
    /// The unit of numeric timestamps (`auto`: by magnitude, see
    /// [`TsUnit`]); text is read as RFC 3339 or the reference layout. Set
    /// by the server from `[ingest] ts_unit`, not in this table.
    #[serde(skip)]
    pub ts_unit: TsUnit,
}

/// What becomes of CSV columns the mapping does not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraColumns {
    /// The body is refused with the columns' names (the default).
    #[default]
    Refuse,
    /// They are read past and dropped.
    Ignore,
}

impl Default for CsvBodyConfig {
    fn default() -> Self {
        CsvBodyConfig {
            header: true,
            ts: Column::Name("TS".into()),
            device: Column::Name("Device".into()),
            tag: Column::Name("Tag".into()),
            value: Column::Name("Value".into()),
            fixed_device: None,
            fixed_tag: None,
            extra_columns: ExtraColumns::Refuse,
            ts_unit: TsUnit::Auto,
        }
    }
}

/// Where a reading's part comes from.
enum Source<'a> {
    Col(usize, String),
    Fixed(&'a str),
}

/// Parses a CSV body into readings; all or nothing.
pub fn parse_csv_body<'c>(body: &[u8], config: &'c CsvBodyConfig) -> Result<Batch, BatchError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut rec = csv::ByteRecord::new();
    let header = if config.header {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => Some(rec.clone()),
            Ok(false) => return Ok(Batch::default()),
            Err(e) => return Err(BatchError::single(Location::Line(1), e.to_string())),
        }
    } else {
        None
    };
    let resolve = |c: &Column| -> Result<Source<'static>, String> {
        match (c, &header) {
            (Column::Index(i), _) => Ok(Source::Col(*i, format!("#{i}"))),
            (Column::Name(n), Some(h)) => h
                .iter()
                .position(|f| {
                    std::str::from_utf8(f).is_ok_and(|f| f.trim().eq_ignore_ascii_case(n))
                })
                .map(|i| Source::Col(i, n.clone()))
                .ok_or_else(|| {
                    let found: Vec<_> = h.iter().map(|f| String::from_utf8_lossy(f)).collect();
                    format!(
                        "the header has no `{n}` column (found: {}); expected TS,Device,Tag,Value or a column mapping",
                        shorten(found.join(",").as_bytes())
                    )
                }),
            (Column::Name(n), None) => Err(format!(
                "column `{n}` is given by name but the body has no header; give its 0-based position"
            )),
        }
    };
    let at = if config.header {
        Location::Line(1)
    } else {
        Location::Body
    };
    let mut errors = Collector::default();
    let mut pick = |c: &Column, fixed: Option<&'c str>, kind: Option<NameKind>| match (fixed, kind)
    {
        (Some(f), Some(kind)) => match validate_name(kind, f) {
            Ok(()) => Some(Source::Fixed(f)),
            Err(e) => {
                errors.reject(Location::Body, format!("the fixed {kind}: {e}"));
                None
            }
        },
        _ => resolve(c).map_err(|e| errors.reject(at, e)).ok(),
    };
    let ts = pick(&config.ts, None, None);
    let device = pick(
        &config.device,
        config.fixed_device.as_deref(),
        Some(NameKind::Device),
    );
    let tag = pick(
        &config.tag,
        config.fixed_tag.as_deref(),
        Some(NameKind::Tag),
    );
    let value = pick(&config.value, None, None);
    let (Some(ts), Some(device), Some(tag), Some(value)) = (ts, device, tag, value) else {
        return errors.finish();
    };
    // Which columns the mapping reads; with a header, the others are
    // refused here (all of them in one message), without one per row.
    let mut used = Vec::new();
    for s in [&ts, &device, &tag, &value] {
        if let Source::Col(i, _) = s {
            if used.len() <= *i {
                used.resize(i + 1, false);
            }
            used[*i] = true;
        }
    }
    let refuse_extra = config.extra_columns == ExtraColumns::Refuse;
    if let (Some(h), true) = (&header, refuse_extra) {
        let extra: Vec<String> = h
            .iter()
            .enumerate()
            .filter(|(i, _)| !used.get(*i).copied().unwrap_or(false))
            .map(|(i, f)| format!("`{}` (#{i})", shorten(f)))
            .collect();
        if !extra.is_empty() {
            errors.reject(Location::Line(1), format!(
                "column(s) {} are not mapped to TS, Device, Tag or Value; remove them, or set `extra_columns = \"ignore\"` under [ingest.csv] to drop such columns",
                extra.join(", ")
            ));
            return errors.finish();
        }
    }
    let header_len = header.as_ref().map(csv::ByteRecord::len);

    let mut out = Collector::default();
    let mut line = usize::from(config.header);
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let l = e.position().map_or(line + 1, |p| p.line() as usize);
                out.reject(Location::Line(l), e.to_string());
                break;
            }
        }
        line = rec.position().map_or(line + 1, |p| p.line() as usize);
        let extra = match header_len {
            Some(n) if rec.len() > n => Some(format!(
                "the row has {} fields but the header has {n}; quote fields that hold commas (\"a, b\")",
                rec.len()
            )),
            None if refuse_extra => (0..rec.len())
                .find(|&i| !used.get(i).copied().unwrap_or(false))
                .map(|i| format!(
                    "column #{i} is not mapped to TS, Device, Tag or Value; remove it, or set `extra_columns = \"ignore\"` under [ingest.csv] to drop such columns"
                )),
            _ => None,
        };
        let result = match extra {
            Some(reason) => Err(reason),
            None => row(&rec, &ts, &device, &tag, &value, config.ts_unit, &mut out),
        };
        if let Err(reason) = result {
            out.reject(Location::Line(line), reason);
        }
    }
    out.finish()
}

fn field<'r>(rec: &'r csv::ByteRecord, s: &'r Source<'_>) -> Result<&'r [u8], String> {
    match s {
        Source::Fixed(f) => Ok(f.as_bytes()),
        Source::Col(i, name) => rec.get(*i).map(<[u8]>::trim_ascii).ok_or_else(|| {
            format!(
                "column `{name}` is missing: the row has {} column(s)",
                rec.len()
            )
        }),
    }
}

/// `123.25` or `-0.5`: digits with one point (epoch seconds with a
/// fraction), not a date.
fn is_decimal(s: &str) -> bool {
    let t = s.strip_prefix('-').unwrap_or(s);
    let mut parts = t.splitn(2, '.');
    let (a, b) = (parts.next().unwrap_or(""), parts.next());
    matches!(b, Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()))
        && !a.is_empty()
        && a.bytes().all(|c| c.is_ascii_digit())
}

fn is_integer(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn col_name<'a>(s: &'a Source<'_>) -> &'a str {
    match s {
        Source::Col(_, n) => n,
        Source::Fixed(_) => "(fixed)",
    }
}

fn row(
    rec: &csv::ByteRecord,
    ts: &Source<'_>,
    device: &Source<'_>,
    tag: &Source<'_>,
    value: &Source<'_>,
    unit: TsUnit,
    out: &mut Collector,
) -> Result<(), String> {
    let raw_ts = field(rec, ts)?;
    let ts_ns = match std::str::from_utf8(raw_ts) {
        Ok(s) if is_integer(s) => {
            let n = s.parse::<i64>().map_err(|_| {
                format!(
                    "column `{}`: `{}` is out of range",
                    col_name(ts),
                    shorten(raw_ts)
                )
            })?;
            unit.int_to_ns(n)
                .map_err(|e| format!("column `{}`: {e}", col_name(ts)))?
        }
        Ok(s) if is_decimal(s) => s
            .parse::<f64>()
            .map_err(|e| e.to_string())
            .and_then(|f| unit.float_to_ns(f).map_err(|e| e.to_string()))
            .map_err(|e| format!("column `{}`: {e}", col_name(ts)))?,
        Ok(s) => parse_ts(s).map_err(|e| format!("column `{}`: {e}", col_name(ts)))?,
        Err(_) => return Err(format!("column `{}` is not UTF-8", col_name(ts))),
    };
    let d = field(rec, device)?;
    let t = field(rec, tag)?;
    let raw_v = field(rec, value)?;
    let v: f64 = std::str::from_utf8(raw_v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "column `{}`: `{}` is not a number",
                col_name(value),
                shorten(raw_v)
            )
        })?;
    out.push(ts_ns, d, t, v).map_err(|e| {
        e.in_field(|part| {
            let source = match part {
                Part::Ts => ts,
                Part::Device => device,
                Part::Tag => tag,
                Part::Value => value,
            };
            format!("column `{}`", col_name(source))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cfg` with integer times in nanoseconds, as these tests write them.
    fn ns(cfg: &CsvBodyConfig) -> CsvBodyConfig {
        CsvBodyConfig {
            ts_unit: TsUnit::Nanos,
            ..cfg.clone()
        }
    }

    fn ok(body: &str, cfg: &CsvBodyConfig) -> Vec<(i64, String, String, f64)> {
        parse_csv_body(body.as_bytes(), &ns(cfg))
            .unwrap()
            .iter()
            .map(|r| (r.ts, r.device.into(), r.tag.into(), r.value))
            .collect()
    }

    fn errs(body: &str, cfg: &CsvBodyConfig) -> Vec<String> {
        parse_csv_body(body.as_bytes(), &ns(cfg))
            .unwrap_err()
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn numeric_times_by_magnitude_or_unit() {
        let body = "TS,Device,Tag,Value\n1764887621.5,d,t,1\n1764887621500,d,t,2\n";
        let got = parse_csv_body(body.as_bytes(), &CsvBodyConfig::default()).unwrap();
        assert_eq!(got.readings.ts(), [1_764_887_621_500_000_000; 2]);
        let secs = CsvBodyConfig {
            ts_unit: TsUnit::Seconds,
            ..CsvBodyConfig::default()
        };
        let e = parse_csv_body(body.as_bytes(), &secs).unwrap_err();
        assert!(e.errors[0].reason.contains("read as seconds"), "{e}");
        assert_eq!(e.errors[0].at, Location::Line(3));
    }

    #[test]
    fn reference_header_any_order() {
        let r = ok(
            "value,tag,DEVICE,ts\n1.5,3,1,1970-01-01 00:00:01.000\n2,3,1,7\n",
            &CsvBodyConfig::default(),
        );
        assert_eq!(
            r,
            [
                (1_000_000_000, "1".into(), "3".into(), 1.5),
                (7, "1".into(), "3".into(), 2.0)
            ]
        );
    }

    #[test]
    fn mapping_by_position_and_fixed_device() {
        let cfg = CsvBodyConfig {
            header: false,
            ts: Column::Index(0),
            tag: Column::Index(1),
            value: Column::Index(2),
            fixed_device: Some("pump-1".into()),
            ..Default::default()
        };
        let r = ok("5,temp,20.5\n6,temp,21\n", &cfg);
        assert_eq!(r[1], (6, "pump-1".into(), "temp".into(), 21.0));
        let e = errs("5,temp\n", &cfg);
        assert_eq!(
            e,
            ["line 1: column `#2` is missing: the row has 2 column(s)"]
        );
        let named = CsvBodyConfig {
            header: false,
            ..Default::default()
        };
        assert!(errs("1,2,3,4\n", &named)[0].starts_with("body: column `TS` is given by name"));
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = errs(
            "TS,Device,Tag,Value\n1,d,t,1\n1,d,t,abc\nnope,d,t,1\n1,,t,1\n",
            &CsvBodyConfig::default(),
        );
        assert_eq!(e.len(), 3);
        assert_eq!(e[0], "line 3: column `Value`: `abc` is not a number");
        assert!(e[1].starts_with("line 4: column `TS`: invalid timestamp"));
        assert_eq!(
            e[2],
            "line 5: column `Device`: device name \"\": is empty; a name needs at least one character"
        );
        let e = errs("TS,Device,Value\n", &CsvBodyConfig::default());
        assert!(
            e[0].starts_with("line 1: the header has no `Tag` column"),
            "{e:?}"
        );
    }

    #[test]
    fn csv_ingest_refuses_nan_like_line_protocol() {
        let e = errs(
            "TS,Device,Tag,Value\n1,d,t,nan\n2,d,t,inf\n3,d,t,-Infinity\n4,d,t,NaN\n5,d,t,1.5\n",
            &CsvBodyConfig::default(),
        );
        assert_eq!(e.len(), 4, "{e:?}");
        assert_eq!(
            e[0],
            "line 2: column `Value`: value NaN is not a finite number; NaN and infinities are refused"
        );
        assert!(
            e[1].starts_with("line 3: column `Value`: value inf "),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("line 4: column `Value`: value -inf "),
            "{e:?}"
        );
    }

    #[test]
    fn extra_csv_columns_are_refused() {
        let body = "TS,site,Device,Tag,Value,note\n1,x,d,t,1.5,y\n";
        let e = errs(body, &CsvBodyConfig::default());
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("line 1: column(s) `site` (#1), `note` (#5) are not mapped to TS, Device, Tag or Value"),
            "{e:?}"
        );
        assert!(e[0].contains("extra_columns = \"ignore\""), "{e:?}");
        // Asked for: ignored.
        let ignore = CsvBodyConfig {
            extra_columns: ExtraColumns::Ignore,
            ..Default::default()
        };
        assert_eq!(ok(body, &ignore), [(1, "d".into(), "t".into(), 1.5)]);
        // A row longer than the header: refused whatever the setting (an
        // unquoted comma in a name, usually).
        let e = errs("TS,Device,Tag,Value\n1,pump 7, north,t,1.5\n", &ignore);
        assert_eq!(
            e,
            ["line 2: the row has 5 fields but the header has 4; quote fields that hold commas (\"a, b\")"]
        );
        // Without a header: positions the mapping does not name.
        let cfg = CsvBodyConfig {
            header: false,
            ts: Column::Index(0),
            device: Column::Index(1),
            tag: Column::Index(2),
            value: Column::Index(4),
            ..Default::default()
        };
        let e = errs("1,d,t,x,2\n1,d,t,x,2,3\n", &cfg);
        assert!(e[0].starts_with("line 1: column #3 is not mapped"), "{e:?}");
        assert!(e[1].starts_with("line 2: column #3 is not mapped"), "{e:?}");
        let cfg = CsvBodyConfig {
            extra_columns: ExtraColumns::Ignore,
            ..cfg
        };
        assert_eq!(ok("1,d,t,x,2,3\n", &cfg).len(), 1);
    }

    #[test]
    fn names_and_times_follow_the_one_policy() {
        let e = errs(
            "TS,Device,Tag,Value\n1,x/../../escaped,t,1\n2,\"a\nb\",t,1\n-9223372036854775808,d,t,1\n",
            &CsvBodyConfig::default(),
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with(
                "line 2: column `Device`: device name \"x/../../escaped\": contains `/`"
            ),
            "{e:?}"
        );
        assert!(e[1].starts_with("line 3: column `Device`: device name \"a\\nb\": contains a control character (U+000A)"), "{e:?}");
        assert!(
            e[2].starts_with("line 5: column `TS`: timestamp -9223372036854775808 read as nanoseconds since 1970 (1677-09-21"),
            "{e:?}"
        );
        let cfg = CsvBodyConfig {
            fixed_device: Some("..".into()),
            ..Default::default()
        };
        let e = errs("TS,Tag,Value\n1,t,1\n", &cfg);
        assert_eq!(e, ["body: the fixed device: device name \"..\": is `.` or `..`, which name folders; pick another name"]);
    }

    #[test]
    fn config_parses() {
        let c: CsvBodyConfig =
            serde_json::from_str(r#"{"ts": "time", "tag": 2, "fixed_device": "d"}"#).unwrap();
        assert_eq!(c.ts, Column::Name("time".into()));
        assert_eq!(c.tag, Column::Index(2));
        assert!(c.header);
        assert_eq!(c.extra_columns, ExtraColumns::Refuse);
        let c: CsvBodyConfig = serde_json::from_str(r#"{"extra_columns": "ignore"}"#).unwrap();
        assert_eq!(c.extra_columns, ExtraColumns::Ignore);
        assert!(serde_json::from_str::<CsvBodyConfig>(r#"{"tss": "x"}"#).is_err());
    }
}
