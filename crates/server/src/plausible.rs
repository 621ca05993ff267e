//! Timestamps a client probably did not mean: a batch stored at times far
//! from now, most often numbers in one unit read as another (epoch seconds
//! sent as line protocol without `precision=s` are nanoseconds of the first
//! two seconds of 1970). Such a batch is valid and stored, but its answer
//! says so (a header), the log says so, and a counter counts it, naming the
//! unit that would have made the times sensible.

use fleetscore_core::format_rfc3339 as format_ts;

const DAY: i64 = 86_400_000_000_000;
const YEAR: i64 = 365 * DAY + DAY / 4;

/// Times further back than this are questioned: old enough that no live
/// device sends them, recent enough that a real backfill (decades of
/// history are rare in sensor fleets) is not.
pub const PAST: i64 = 30 * YEAR;

/// Times further ahead than this are questioned (clocks drift, but not by
/// days).
pub const FUTURE: i64 = DAY;

/// The units a client may have meant, as (nanoseconds per unit, line
/// protocol `precision`), coarsest first.
const UNITS: [(i64, &str); 4] = [
    (1_000_000_000, "s"),
    (1_000_000, "ms"),
    (1_000, "us"),
    (1, "ns"),
];

/// A batch whose times look wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doubt {
    /// The batch's earliest and latest time as stored.
    pub earliest: i64,
    pub latest: i64,
    /// Now, when it was checked.
    pub now: i64,
    /// The line-protocol precision that would have put every time of the
    /// batch near now, with the earliest time it would have given.
    pub meant: Option<(&'static str, i64)>,
}

fn plausible(t: i64, now: i64) -> bool {
    t >= now.saturating_sub(PAST) && t <= now.saturating_add(FUTURE)
}

/// Checks a batch stored with times `earliest..=latest`, which came as
/// integers in units of `unit_ns` nanoseconds (1 for nanoseconds).
pub fn check(earliest: i64, latest: i64, unit_ns: i64, now: i64) -> Option<Doubt> {
    if plausible(earliest, now) && plausible(latest, now) {
        return None;
    }
    // `unit_ns` 0: the unit was inferred from the magnitude, so no other
    // unit would be read differently.
    let meant = UNITS.iter().find_map(|&(ns, name)| {
        if ns == unit_ns || unit_ns <= 0 {
            return None;
        }
        // The integers the client sent, read in the other unit.
        let scale = |t: i64| (t / unit_ns).checked_mul(ns);
        match (scale(earliest), scale(latest)) {
            (Some(a), Some(b)) if plausible(a, now) && plausible(b, now) => Some((name, a)),
            _ => None,
        }
    });
    Some(Doubt {
        earliest,
        latest,
        now,
        meant,
    })
}

impl Doubt {
    /// How far from now the batch reaches, in words: "56 years before
    /// now". Measured from its end that is out of range (the earliest
    /// time, if that is too old; else the latest), in i128: a batch may
    /// hold any times from 1678 to 2261.
    fn distance(&self) -> String {
        let (now, earliest, latest) = (
            i128::from(self.now),
            i128::from(self.earliest),
            i128::from(self.latest),
        );
        let (d, side) = if !plausible(self.earliest, self.now) && earliest < now {
            (now - earliest, "before")
        } else {
            (latest - now, "after")
        };
        let (year, day) = (i128::from(YEAR), i128::from(DAY));
        if d >= 2 * year {
            format!("{} years {side} now", d / year)
        } else {
            format!("{} days {side} now", d / day)
        }
    }

    /// The warning for a line-protocol batch: what was stored, and the
    /// `precision` that was probably meant. ASCII, for a header.
    pub fn line_protocol(&self) -> String {
        let mut s = format!(
            "stored, but the batch's timestamps ({} .. {}) reach {}",
            format_ts(self.earliest),
            format_ts(self.latest),
            self.distance()
        );
        if let Some((precision, at)) = self.meant {
            s.push_str(&format!(
                "; read with precision={precision} they would start at {}: if that was meant, send ?precision={precision}",
                format_ts(at)
            ));
        }
        s
    }

    /// The warning for a JSON or CSV batch, whose numeric times are in
    /// `[ingest] ts_unit` (or inferred from their magnitude).
    pub fn integers(&self) -> String {
        let mut s = format!(
            "stored, but the batch's timestamps ({} .. {}) reach {}",
            format_ts(self.earliest),
            format_ts(self.latest),
            self.distance()
        );
        if let Some((unit, at)) = self.meant {
            let unit = match unit {
                "s" => "seconds",
                "ms" => "milliseconds",
                "us" => "microseconds",
                _ => "nanoseconds",
            };
            s.push_str(&format!(
                "; numeric timestamps are read in [ingest] ts_unit here, and as {unit} these would start at {}: set ts_unit = \"auto\" (or the unit sent), or send RFC 3339 text",
                format_ts(at)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-05T00:00:00Z
    const NOW: i64 = 1_796_428_800_000_000_000;

    #[test]
    fn seconds_sent_as_nanoseconds_suggest_precision_s() {
        let secs = NOW / 1_000_000_000;
        let d = check(secs, secs + 30, 1, NOW).expect("doubted");
        assert_eq!(d.meant, Some(("s", NOW)));
        let m = d.line_protocol();
        assert!(m.contains("1970-01-01T00:00:01.796428800Z"), "{m}");
        assert!(m.contains("56 years before now"), "{m}");
        assert!(m.contains("?precision=s"), "{m}");
    }

    #[test]
    fn milliseconds_and_microseconds_are_recognised() {
        let ms = NOW / 1_000_000;
        assert_eq!(check(ms, ms, 1, NOW).unwrap().meant, Some(("ms", NOW)));
        let us = NOW / 1_000;
        assert_eq!(check(us, us, 1, NOW).unwrap().meant, Some(("us", NOW)));
        // Milliseconds sent with precision=s-like units are refused before
        // this check (outside 1678..2261); seconds sent as ms are not:
        let secs = NOW / 1_000_000_000;
        let d = check(secs * 1_000_000, secs * 1_000_000, 1_000_000, NOW).unwrap();
        assert_eq!(d.meant, Some(("s", NOW)));
    }

    #[test]
    fn recent_history_and_arrival_times_pass() {
        assert_eq!(check(NOW - 10 * YEAR, NOW, 1, NOW), None);
        assert_eq!(check(NOW, NOW + DAY / 2, 1, NOW), None);
        // The reference deployment's 2018 readings.
        assert_eq!(check(NOW - 8 * YEAR, NOW - 8 * YEAR + DAY, 1, NOW), None);
    }

    /// The ends of what a reading may hold, and batches mixing a far time
    /// with a recent one, are described from their far end without
    /// overflowing.
    #[test]
    fn the_ends_of_time_and_mixed_batches_are_measured_from_the_far_end() {
        use fleetscore_core::{MAX_TS, MIN_TS};
        let d = check(MIN_TS, MIN_TS, 1, NOW).expect("doubted");
        assert!(
            d.line_protocol().contains("348 years before now"),
            "{}",
            d.line_protocol()
        );
        let d = check(MIN_TS, MAX_TS, 1, NOW).expect("doubted");
        assert!(
            d.line_protocol().contains("years before now"),
            "{}",
            d.line_protocol()
        );
        let d = check(NOW, MAX_TS, 1, NOW).expect("doubted");
        assert!(
            d.integers().contains("235 years after now"),
            "{}",
            d.integers()
        );
        // 1970 and now in one batch: 56 years, not 0 days.
        let d = check(NOW / 1_000_000_000, NOW, 1, NOW).expect("doubted");
        assert!(
            d.line_protocol().contains("56 years before now"),
            "{}",
            d.line_protocol()
        );
        assert_eq!(d.meant, None);
        let d = check(NOW, NOW + 3 * DAY, 1, NOW).expect("doubted");
        assert!(
            d.integers().contains("3 days after now"),
            "{}",
            d.integers()
        );
    }

    #[test]
    fn far_times_without_a_sensible_unit_still_warn() {
        let d = check(NOW - 40 * YEAR, NOW - 40 * YEAR, 1, NOW).expect("doubted");
        assert_eq!(d.meant, None);
        assert!(d.line_protocol().contains("40 years before now"));
        let d = check(NOW + 3 * DAY, NOW + 3 * DAY, 1, NOW).expect("doubted");
        assert!(
            d.integers().contains("3 days after now"),
            "{}",
            d.integers()
        );
    }

    #[test]
    fn an_inferred_unit_suggests_no_other() {
        // 1970 readings whose unit was inferred: doubtful, but no unit
        // would read them differently (and no division by zero).
        let d = check(5_000_000_000, 6_000_000_000, 0, 1_764_887_621_000_000_000).unwrap();
        assert!(d.meant.is_none());
        assert!(d.integers().contains("years before now"));
    }
}
