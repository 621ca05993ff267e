//! Timestamp parsing and formatting, UTC, in nanoseconds since the epoch.
//!
//! Hand-written rather than chrono-based because it sits on the hot path of
//! every CSV reading: the reference format `2018-08-28 23:00:05.000` parses
//! here without allocation.

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The earliest timestamp a reading may have: 1678-01-01T00:00:00Z.
///
/// Readings are accepted from 1678-01-01T00:00:00Z through
/// 2261-12-31T23:59:59.999999999Z ([`check_ts`]). That is the `i64`
/// nanosecond range (1677-09-21 to 2262-04-11) less about 100 days at
/// each end, so that rounding a reading's time down to its hour, day or
/// window start, or adding a window's length to it, can never overflow.
pub const MIN_TS: i64 = -9_214_560_000_000_000_000;

/// The latest timestamp a reading may have: 2261-12-31T23:59:59.999999999Z
/// (see [`MIN_TS`]).
pub const MAX_TS: i64 = 9_214_646_399_999_999_999;

/// A reading's timestamp outside [`MIN_TS`]..=[`MAX_TS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timestamp {} ({ns} ns since 1970) is outside the accepted range, 1678-01-01T00:00:00Z to 2261-12-31T23:59:59.999999999Z; check its unit (e.g. seconds sent as nanoseconds)", format_ts(*.ns))]
pub struct TimestampRangeError {
    /// The refused timestamp, ns since the epoch.
    pub ns: i64,
}

/// `ns` if a reading may carry it (see [`MIN_TS`]), else the error.
#[inline]
pub fn check_ts(ns: i64) -> Result<i64, TimestampRangeError> {
    if (MIN_TS..=MAX_TS).contains(&ns) {
        Ok(ns)
    } else {
        Err(TimestampRangeError { ns })
    }
}

/// Why a timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {value:?}: {reason} (expected e.g. `2018-08-28 23:00:05.000` (UTC) or RFC 3339 `2018-08-28T23:00:05Z`)")]
pub struct TimeError {
    /// The text that was refused (cut to 64 characters).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fraction]` (UTC) or RFC 3339
/// (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`) into nanoseconds since the
/// Unix epoch. Up to nine fraction digits are kept.
pub fn parse_ts(s: &str) -> Result<i64, TimeError> {
    let err = |reason| TimeError {
        value: s.chars().take(64).collect(),
        reason,
    };
    let b = s.trim().as_bytes();
    if b.len() < 19 {
        return Err(err("too short"));
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, TimeError> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return Err(err("expected a digit"));
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Ok(v)
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T' | b't') {
        return Err(err("expected `YYYY-MM-DD` then a space or `T`"));
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(err("expected `HH:MM:SS`"));
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(err("no such date"));
    }
    if hour > 23 || min > 59 || sec > 60 {
        return Err(err("no such time of day"));
    }
    let mut i = 19;
    let mut frac = 0i64;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                frac = frac * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return Err(err("expected digits after `.`"));
        }
        for _ in digits..9 {
            frac *= 10;
        }
    }
    let offset_secs = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(err("bad UTC offset"));
            }
            let h = i64::from(h1 - b'0') * 10 + i64::from(h2 - b'0');
            let m = i64::from(m1 - b'0') * 10 + i64::from(m2 - b'0');
            let o = h * 3600 + m * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => {
            return Err(err(
                "unexpected text after the time (only `Z` or `±HH:MM` may follow)",
            ))
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    secs.checked_mul(NANOS_PER_SEC)
        .and_then(|n| n.checked_add(frac))
        .ok_or_else(|| err("out of range (years 1677 to 2262)"))
}

/// Formats as RFC 3339 with millisecond precision or finer when needed,
/// e.g. `2018-08-28T23:00:05.000Z`.
pub fn format_ts(ns: i64) -> String {
    let (date, time, frac) = split(ns);
    if frac % 1_000_000 == 0 {
        format!("{date}T{time}.{:03}Z", frac / 1_000_000)
    } else {
        format!("{date}T{time}.{frac:09}Z")
    }
}

/// Formats as RFC 3339 with a fraction only when the instant has one, in
/// groups of 3 digits: `2026-12-05T03:00:00Z`, `…00.250Z`, `…00.000001Z`.
/// What the HTTP API and the console say.
pub fn format_rfc3339(ns: i64) -> String {
    let (date, time, frac) = split(ns);
    match frac {
        0 => format!("{date}T{time}Z"),
        f if f % 1_000_000 == 0 => format!("{date}T{time}.{:03}Z", f / 1_000_000),
        f if f % 1_000 == 0 => format!("{date}T{time}.{:06}Z", f / 1_000),
        f => format!("{date}T{time}.{f:09}Z"),
    }
}

/// Formats in the reference deployment's layout, `2018-08-28 23:00:05.000`
/// (UTC, milliseconds; finer precision is kept when present).
pub fn format_ts_reference(ns: i64) -> String {
    let (date, time, frac) = split(ns);
    if frac % 1_000_000 == 0 {
        format!("{date} {time}.{:03}", frac / 1_000_000)
    } else {
        format!("{date} {time}.{frac:09}")
    }
}

fn split(ns: i64) -> (String, String, i64) {
    let secs = ns.div_euclid(NANOS_PER_SEC);
    let frac = ns.rem_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60),
        frac,
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (public domain).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The unit of a numeric timestamp, as a source is told (`ts_unit`) or
/// [`TsUnit::Auto`]: inferred from its magnitude.
///
/// | unit | a number means | `auto` picks it when the magnitude is |
/// | --- | --- | --- |
/// | `s` | seconds since 1970 (a fraction is kept to the nanosecond) | below 10^11 (before year 5138) |
/// | `ms` | milliseconds | 10^11 to below 10^14 |
/// | `us` | microseconds | 10^14 to below 10^17 |
/// | `ns` | nanoseconds | 10^17 and above (after 1973-03-03) |
///
/// So with `auto`, nanoseconds before March 1973 are misread (as
/// microseconds); configure the unit if devices send such times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum TsUnit {
    /// Inferred from the magnitude (see the table).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Seconds.
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds.
    #[serde(rename = "ms")]
    Millis,
    /// Microseconds.
    #[serde(rename = "us")]
    Micros,
    /// Nanoseconds.
    #[serde(rename = "ns")]
    Nanos,
}

impl TsUnit {
    /// Nanoseconds in one unit (`Auto`: none).
    pub fn nanos(self) -> Option<i64> {
        match self {
            TsUnit::Auto => None,
            TsUnit::Seconds => Some(NANOS_PER_SEC),
            TsUnit::Millis => Some(1_000_000),
            TsUnit::Micros => Some(1_000),
            TsUnit::Nanos => Some(1),
        }
    }

    /// The unit `auto` takes a number of magnitude `abs` to be in.
    fn infer(abs: f64) -> TsUnit {
        if abs < 1e11 {
            TsUnit::Seconds
        } else if abs < 1e14 {
            TsUnit::Millis
        } else if abs < 1e17 {
            TsUnit::Micros
        } else {
            TsUnit::Nanos
        }
    }

    /// The unit this one is for the number `abs` (itself unless `Auto`).
    fn resolve(self, abs: f64) -> TsUnit {
        match self {
            TsUnit::Auto => TsUnit::infer(abs),
            u => u,
        }
    }

    /// Its name in the configuration (`auto`, `s`, `ms`, `us`, `ns`).
    pub fn as_str(self) -> &'static str {
        match self {
            TsUnit::Auto => "auto",
            TsUnit::Seconds => "s",
            TsUnit::Millis => "ms",
            TsUnit::Micros => "us",
            TsUnit::Nanos => "ns",
        }
    }

    /// An integer timestamp in this unit, in nanoseconds, checked against
    /// the accepted range ([`check_ts`]).
    pub fn int_to_ns(self, v: i64) -> Result<i64, TsNumberError> {
        // i64 magnitudes are exact in f64 up to 2^53; beyond, only the
        // unit choice uses the float, and those are nanoseconds anyway.
        let unit = self.resolve((v as f64).abs());
        let scale = unit.nanos().unwrap_or(1);
        let ns = v.checked_mul(scale).ok_or(TsNumberError {
            value: v.to_string(),
            unit,
            ns: None,
        })?;
        check_ts(ns).map_err(|_| TsNumberError {
            value: v.to_string(),
            unit,
            ns: Some(ns),
        })
    }

    /// A timestamp number with a fraction in this unit, in nanoseconds
    /// (rounded to the nearest; an f64 of seconds around now carries about
    /// a quarter of a microsecond), checked against the accepted range.
    pub fn float_to_ns(self, v: f64) -> Result<i64, TsNumberError> {
        let unit = self.resolve(v.abs());
        let err = |ns| TsNumberError {
            value: v.to_string(),
            unit,
            ns,
        };
        if !v.is_finite() {
            return Err(err(None));
        }
        let ns = (v * unit.nanos().unwrap_or(1) as f64).round();
        if !(MIN_TS as f64..=MAX_TS as f64).contains(&ns) {
            return Err(err(None));
        }
        check_ts(ns as i64).map_err(|_| err(Some(ns as i64)))
    }
}

impl std::str::FromStr for TsUnit {
    type Err = String;

    fn from_str(s: &str) -> Result<TsUnit, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => TsUnit::Auto,
            "s" | "sec" | "secs" | "seconds" => TsUnit::Seconds,
            "ms" | "millis" | "milliseconds" => TsUnit::Millis,
            "us" | "µs" | "micros" | "microseconds" => TsUnit::Micros,
            "ns" | "nanos" | "nanoseconds" => TsUnit::Nanos,
            _ => {
                return Err(format!(
                    "unknown timestamp unit {s:?}: use auto, s, ms, us or ns"
                ))
            }
        })
    }
}

impl std::fmt::Display for TsUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A numeric timestamp that is not a time a reading may carry in its unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timestamp {value} read as {} since 1970{} is outside the accepted range, 1678-01-01T00:00:00Z to 2261-12-31T23:59:59.999999999Z; check its unit (ts_unit; `auto` infers it from the magnitude)", unit_words(*.unit), date(*.ns))]
pub struct TsNumberError {
    /// The number as given.
    pub value: String,
    /// The unit it was read in.
    pub unit: TsUnit,
    /// The instant it names, when that fits in an `i64` of nanoseconds.
    pub ns: Option<i64>,
}

fn date(ns: Option<i64>) -> String {
    ns.map(|ns| format!(" ({})", format_ts(ns)))
        .unwrap_or_default()
}

fn unit_words(u: TsUnit) -> &'static str {
    match u {
        TsUnit::Seconds => "seconds",
        TsUnit::Millis => "milliseconds",
        TsUnit::Micros => "microseconds",
        TsUnit::Nanos | TsUnit::Auto => "nanoseconds",
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn rfc3339_carries_a_fraction_only_when_there_is_one() {
        let t = parse_ts("2026-12-05T03:00:00Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-12-05T03:00:00Z");
        assert_eq!(format_rfc3339(t + 250_000_000), "2026-12-05T03:00:00.250Z");
        assert_eq!(format_rfc3339(t + 1_000), "2026-12-05T03:00:00.000001Z");
        assert_eq!(format_rfc3339(t + 7), "2026-12-05T03:00:00.000000007Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        for ns in [t, t + 250_000_000, t + 1_000, t + 7, -1, MIN_TS, MAX_TS] {
            assert_eq!(parse_ts(&format_rfc3339(ns)).unwrap(), ns);
        }
    }

    use super::*;

    #[test]
    fn numeric_timestamps_in_every_unit() {
        let t = parse_ts("2025-12-04T22:33:41.5Z").unwrap();
        let auto = TsUnit::Auto;
        assert_eq!(auto.float_to_ns(1_764_887_621.5).unwrap(), t);
        assert_eq!(auto.int_to_ns(1_764_887_621).unwrap(), t - 500_000_000);
        assert_eq!(auto.int_to_ns(1_764_887_621_500).unwrap(), t);
        assert_eq!(auto.int_to_ns(1_764_887_621_500_000).unwrap(), t);
        assert_eq!(auto.int_to_ns(1_764_887_621_500_000_000).unwrap(), t);
        assert_eq!(auto.float_to_ns(1_764_887_621_500.0).unwrap(), t);
        // Configured units win over the magnitude.
        assert_eq!(TsUnit::Nanos.int_to_ns(5).unwrap(), 5);
        assert_eq!(TsUnit::Millis.int_to_ns(5).unwrap(), 5_000_000);
        assert_eq!(TsUnit::Seconds.float_to_ns(-0.5).unwrap(), -500_000_000);
        // Out of range in the unit: the error names the unit.
        let e = TsUnit::Seconds.int_to_ns(1_764_887_621_500).unwrap_err();
        assert!(e.to_string().contains("read as seconds"), "{e}");
        assert!(TsUnit::Seconds.int_to_ns(i64::MAX).is_err());
        assert!(auto.float_to_ns(f64::NAN).is_err());
        assert!(auto.float_to_ns(1e300).is_err());
        for (text, unit) in [
            ("auto", auto),
            ("s", TsUnit::Seconds),
            ("ms", TsUnit::Millis),
            ("us", TsUnit::Micros),
            ("ns", TsUnit::Nanos),
        ] {
            assert_eq!(text.parse::<TsUnit>().unwrap(), unit);
            assert_eq!(unit.to_string(), text);
        }
        assert!("minutes".parse::<TsUnit>().is_err());
    }

    #[test]
    fn reference_format_round_trips() {
        let ns = parse_ts("2018-08-28 23:00:05.000").unwrap();
        assert_eq!(ns, 1_535_497_205 * NANOS_PER_SEC);
        assert_eq!(format_ts_reference(ns), "2018-08-28 23:00:05.000");
        assert_eq!(format_ts(ns), "2018-08-28T23:00:05.000Z");
    }

    #[test]
    fn rfc3339_with_offsets_and_nanos() {
        let a = parse_ts("2018-08-28T23:00:05Z").unwrap();
        let b = parse_ts("2018-08-29T01:00:05+02:00").unwrap();
        assert_eq!(a, b);
        let n = parse_ts("1970-01-01T00:00:00.000000001Z").unwrap();
        assert_eq!(n, 1);
        assert_eq!(format_ts(n), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(
            parse_ts("1969-12-31 23:59:59.5").unwrap(),
            -NANOS_PER_SEC / 2
        );
        assert_eq!(format_ts(-NANOS_PER_SEC / 2), "1969-12-31T23:59:59.500Z");
    }

    #[test]
    fn the_accepted_range_is_1678_to_2261() {
        assert_eq!(MIN_TS, parse_ts("1678-01-01T00:00:00Z").unwrap());
        assert_eq!(MAX_TS + 1, parse_ts("2262-01-01T00:00:00Z").unwrap());
        assert_eq!(check_ts(MIN_TS), Ok(MIN_TS));
        assert_eq!(check_ts(MAX_TS), Ok(MAX_TS));
        assert!(check_ts(MIN_TS - 1).is_err());
        assert!(check_ts(MAX_TS + 1).is_err());
        let e = check_ts(i64::MIN).unwrap_err().to_string();
        assert!(
            e.starts_with("timestamp 1677-09-21T00:12:43.145224192Z (-9223372036854775808 ns since 1970) is outside the accepted range"),
            "{e}"
        );
        // The headroom: an hour, a day and 90 days either side stay in i64.
        for t in [MIN_TS, MAX_TS] {
            for span in [
                3_600 * NANOS_PER_SEC,
                86_400 * NANOS_PER_SEC,
                90 * 86_400 * NANOS_PER_SEC,
            ] {
                assert!(t.div_euclid(span).checked_mul(span).is_some());
                assert!(t.checked_add(span).is_some() && t.checked_sub(span).is_some());
            }
        }
    }

    #[test]
    fn bad_input_says_why() {
        for bad in [
            "",
            "2018-13-01 00:00:00",
            "2018-02-30 00:00:00",
            "2018-08-28 25:00:00",
            "2018-08-28 23:00:05 UTC",
            "2018/08/28 23:00:05",
            "2018-08-28 23:00:05.",
            "9999-12-31 23:59:59",
        ] {
            let e = parse_ts(bad).unwrap_err();
            assert!(!e.reason.is_empty(), "{bad}");
        }
    }
}
