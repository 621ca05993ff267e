//! Lengths of time as the config writes them: `"1m"`, `"90s"`, `"1h30m"`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A non-negative length of event time, in nanoseconds.
///
/// Written in config files as one or more `<integer><unit>` groups with no
/// spaces, units `d`, `h`, `m`, `s`, `ms`, `us` (or `µs`), `ns`: `"1m"`,
/// `"90s"`, `"1h30m"`, `"250ms"`, `"0s"`. A bare `"0"` is also accepted.
/// It prints in the same form, largest units first (`90s` prints as
/// `1m30s`), so the printed text parses back to the same value.
///
/// Nanoseconds, like the timestamps, so that any span the timestamps can
/// express is exact; a span never exceeds `i64::MAX` ns (about 292 years).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span(i64);

const UNITS: [(&str, i64); 8] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("ns", 1),
];

impl Span {
    /// The empty span.
    pub const ZERO: Span = Span(0);

    /// A span of `secs` seconds.
    pub const fn from_secs(secs: u32) -> Span {
        Span(secs as i64 * 1_000_000_000)
    }

    /// A span of `millis` milliseconds.
    pub const fn from_millis(millis: u32) -> Span {
        Span(millis as i64 * 1_000_000)
    }

    /// A span of `nanos` nanoseconds; refuses a negative count.
    pub fn from_nanos(nanos: i64) -> Result<Span, Error> {
        if nanos < 0 {
            return Err(Error::Span {
                value: nanos.to_string(),
                reason: "a span cannot be negative",
            });
        }
        Ok(Span(nanos))
    }

    /// The length in nanoseconds (never negative).
    pub const fn as_nanos(self) -> i64 {
        self.0
    }
}

impl FromStr for Span {
    type Err = Error;

    fn from_str(s: &str) -> Result<Span, Error> {
        let err = |reason| Error::Span {
            value: s.chars().take(64).collect(),
            reason,
        };
        let text = s.trim();
        if text == "0" {
            return Ok(Span::ZERO);
        }
        if text.is_empty() {
            return Err(err("it is empty"));
        }
        let mut rest = text;
        let mut total: i64 = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("expected a number before each unit"));
            }
            let mut n: i64 = 0;
            for b in rest[..digits].bytes() {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(i64::from(b - b'0')))
                    .ok_or_else(|| err("too long (at most about 292 years)"))?;
            }
            rest = &rest[digits..];
            let unit_len = rest
                .char_indices()
                .find(|(_, c)| c.is_ascii_digit())
                .map_or(rest.len(), |(i, _)| i);
            let unit = &rest[..unit_len];
            let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
                return Err(if unit.is_empty() {
                    err("a number needs a unit (d, h, m, s, ms, us, ns)")
                } else {
                    err("unknown unit (use d, h, m, s, ms, us or ns)")
                });
            };
            total = n
                .checked_mul(scale)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("too long (at most about 292 years)"))?;
            rest = &rest[unit_len..];
        }
        Ok(Span(total))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, scale) in UNITS {
            if unit == "µs" {
                continue;
            }
            if rest >= scale {
                write!(f, "{}{unit}", rest / scale)?;
                rest %= scale;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Span;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"1m\", \"30s\", \"500ms\" or \"1h30m\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Span, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let s = |t: &str| t.parse::<Span>().unwrap().as_nanos();
        assert_eq!(s("1m"), 60_000_000_000);
        assert_eq!(s("90s"), 90_000_000_000);
        assert_eq!(s("1h30m"), 5_400_000_000_000);
        assert_eq!(s("250ms"), 250_000_000);
        assert_eq!(s("3us"), 3_000);
        assert_eq!(s("3µs"), 3_000);
        assert_eq!(s("7ns"), 7);
        assert_eq!(s("1d"), 86_400_000_000_000);
        assert_eq!(s("0"), 0);
        assert_eq!(s("0s"), 0);
    }

    #[test]
    fn prints_largest_units_first_and_round_trips() {
        for (text, printed) in [
            ("90s", "1m30s"),
            ("1m", "1m"),
            ("0", "0s"),
            ("1500ms", "1s500ms"),
            ("25h", "1d1h"),
            ("1001ns", "1us1ns"),
        ] {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.to_string(), printed);
            assert_eq!(printed.parse::<Span>().unwrap(), span);
        }
    }

    #[test]
    fn bad_spans_say_why() {
        for bad in [
            "",
            "1",
            "m",
            "1x",
            "-1s",
            "1.5s",
            "1 m",
            "99999999999999999999s",
            "300y",
        ] {
            let e = bad.parse::<Span>().unwrap_err();
            assert!(matches!(e, Error::Span { .. }), "{bad}: {e}");
        }
        assert!(Span::from_nanos(-1).is_err());
        assert_eq!(Span::from_nanos(5).unwrap().as_nanos(), 5);
    }
}
