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
