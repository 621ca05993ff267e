//! The aggregator's settings: which windows, how much disorder to tolerate,
//! what to do with readings beyond that.
//!
//! Every default lives in the `Default` impls of this module and nowhere
//! else.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Span};

/// The most windows one reading may fall into for one spec
/// (`ceil(size / hop)`), so that a typo such as `hop = "1ns"` is refused
/// instead of making every reading update billions of windows.
pub const MAX_WINDOWS_PER_READING: i64 = 10_000;

/// One window layout: tumbling (`hop` absent or equal to `size`) or hopping
/// (`hop < size`, so windows overlap and each reading falls into about
/// `size / hop` of them).
///
/// Window starts are the multiples of the hop counted from the Unix epoch,
/// so `{ size = "1m" }` gives windows `[10:00, 10:01)`, `[10:01, 10:02)`…
/// and `{ size = "1m", hop = "20s" }` gives `[10:00:00, 10:01:00)`,
/// `[10:00:20, 10:01:20)`, `[10:00:40, 10:01:40)`…
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Length of each window, e.g. `"1m"`. Must be more than zero.
    pub size: Span,
    /// Distance between the starts of consecutive windows; absent means
    /// `size` (tumbling windows). Must be more than zero and at most `size`
    /// (a larger hop would leave readings in no window), and `size / hop`
    /// at most [`MAX_WINDOWS_PER_READING`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<Span>,
}

impl WindowSpec {
    /// Tumbling windows of `size`.
    pub const fn tumbling(size: Span) -> WindowSpec {
        WindowSpec { size, hop: None }
    }

    /// Hopping windows of `size` starting every `hop`.
    pub const fn hopping(size: Span, hop: Span) -> WindowSpec {
        WindowSpec {
            size,
            hop: Some(hop),
        }
    }

    /// The hop in nanoseconds (`size` for tumbling windows).
    pub fn hop_nanos(&self) -> i64 {
        self.hop.unwrap_or(self.size).as_nanos()
    }

    /// Whether windows overlap.
    pub fn is_hopping(&self) -> bool {
        self.hop_nanos() != self.size.as_nanos()
    }

    /// Checks the rules on the fields' documentation.
    pub fn validate(&self) -> Result<(), Error> {
        let err = |reason| {
            Err(Error::Window {
                spec: *self,
                reason,
            })
        };
        let (size, hop) = (self.size.as_nanos(), self.hop_nanos());
        if size <= 0 {
            return err("size must be more than zero");
        }
        if hop <= 0 {
            return err("hop must be more than zero");
        }
        if hop > size {
            return err("hop must not exceed size (readings between windows would be lost)");
        }
        if (size - 1) / hop + 1 > MAX_WINDOWS_PER_READING {
            return err("size / hop is above 10000 windows per reading; use a larger hop");
        }
        Ok(())
    }

    /// Two specs that make the same windows are the same spec.
    pub(crate) fn same_windows(&self, other: &WindowSpec) -> bool {
        self.size == other.size && self.hop_nanos() == other.hop_nanos()
    }
}

impl Default for WindowSpec {
    /// One-minute tumbling windows.
    fn default() -> WindowSpec {
        WindowSpec::tumbling(Span::from_secs(60))
    }
}

impl fmt::Display for WindowSpec {
    /// `1m` for tumbling windows, `1m/20s` (size/hop) for hopping ones.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.hop {
            Some(hop) if hop != self.size => write!(f, "{}/{hop}", self.size),
            _ => write!(f, "{}", self.size),
        }
    }
}

/// What happens to a reading older than the aggregator still accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Discard it and count it as `too_late`.
    #[default]
    Drop,
    /// Move its timestamp forward to the oldest time still accepted (see the
    /// crate docs) and aggregate it there; count it as `adjusted`.
    Adjust,
}

/// Whose clock closes windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatermarkMode {
    /// Each device has its own watermark, driven by its own readings: a
    /// device whose clock lags (or that sends in large delayed batches)
    /// neither holds back nor loses readings to the others.
    #[default]
    #[serde(alias = "per-device")]
    PerDevice,
    /// One watermark for the whole fleet, driven by the newest reading of
    /// any device: windows close in step everywhere, and readings of a
    /// lagging device may count as late.
    Global,
}

/// Settings of an [`Aggregator`](crate::Aggregator).
///
/// As TOML (the `[stream]` table of the service config, say):
///
/// ```toml
/// windows = [{ size = "1m" }, { size = "1h", hop = "15m" }]
/// out_of_order = "5s"
/// allowed_lateness = "0s"
/// late_policy = "drop"        # or "adjust"
/// watermark = "per_device"    # or "global"; "per-device" (as the CLI spells it) too
/// max_series = 2000000        # live (device, tag) pairs; new ones past it are shed
/// close_idle_after = "1h"     # the service closes a quiet device's windows; "0s": never
/// ```
///
/// Every field is optional; the defaults are those of
/// [`AggregatorConfig::default`]: one-minute tumbling windows, 5 s
/// out-of-order tolerance, no extra lateness, drop, per-device watermarks,
/// at most 2,000,000 live series, quiet devices closed after an hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorConfig {
    /// The window layouts computed side by side, each over every reading.
    /// At least one; no layout twice.
    pub windows: Vec<WindowSpec>,
    /// How far behind the newest reading of its device (of the fleet, in
    /// global mode) a reading may be and still count as in order. The
    /// watermark is the newest event time minus this.
    pub out_of_order: Span,
    /// How far behind the watermark a reading may still be accepted. Because
    /// each window is emitted exactly once, windows wait for this too: a
    /// window closes when the watermark passes its end plus this lateness.
    pub allowed_lateness: Span,
    /// What to do with readings older than out-of-order plus lateness allow.
    pub late_policy: LatePolicy,
    /// Per-device or fleet-wide watermark.
    pub watermark: WatermarkMode,
    /// The most (device, tag) series the aggregator keeps window state for
    /// at once. A series is live from its first reading until all of its
    /// windows have closed and been emitted; then its memory is released.
    /// A reading that would start a new series while this many are live is
    /// *shed*: not aggregated, counted as dropped with reason
    /// `series_limit`. It is still in the ingest log and `raw/`, so its
    /// windows can be recomputed with `fleetscore aggregate`.
    ///
    /// Memory: about 0.5 KB per live series with one tumbling spec (its
    /// names, one open pane of 88 bytes, its clock and table entries; more
    /// with long names, hopping specs or many open windows), so the default
    /// of 2,000,000 is about 1 GB. The same number bounds the clocks kept
    /// for devices with no live series (about 100 bytes each; see the crate
    /// docs, "Releasing series"). Changing it does not invalidate a
    /// checkpoint. At least 1.
    pub max_series: usize,
    /// How long a device (the fleet, with a global watermark) may send
    /// nothing, in processing time, before the service closes its open
    /// windows as if its input had ended (see
    /// [`Aggregator::close_quiet`](crate::Aggregator::close_quiet)), so
    /// that a device that stops sending releases its memory instead of
    /// keeping its last windows open for ever. `"0s"` turns this off. The
    /// aggregator itself reads no clock: this is for the caller.
    pub close_idle_after: Span,
}

impl Default for AggregatorConfig {
    fn default() -> AggregatorConfig {
        AggregatorConfig {
            windows: vec![WindowSpec::default()],
            out_of_order: Span::from_secs(5),
            allowed_lateness: Span::ZERO,
            late_policy: LatePolicy::Drop,
            watermark: WatermarkMode::PerDevice,
            max_series: 2_000_000,
            close_idle_after: Span::from_secs(3600),
        }
    }
}

impl AggregatorConfig {
    /// Checks every window spec, that there is at least one, and that none
    /// is listed twice.
    pub fn validate(&self) -> Result<(), Error> {
        if self.windows.is_empty() {
            return Err(Error::NoWindows);
        }
        if self.max_series == 0 {
            return Err(Error::MaxSeries);
        }
        for (i, spec) in self.windows.iter().enumerate() {
            spec.validate()?;
            if self.windows[..i].iter().any(|s| s.same_windows(spec)) {
                return Err(Error::DuplicateWindow { spec: *spec });
            }
        }
        Ok(())
    }

    /// How far behind its clock's newest reading a reading may be and still
    /// be accepted: out-of-order tolerance plus allowed lateness, in ns.
    pub fn tolerance_nanos(&self) -> i64 {
        self.out_of_order
            .as_nanos()
            .saturating_add(self.allowed_lateness.as_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        // The TOML example above, as JSON (the workspace has no TOML parser
        // yet); the field names and value forms are the same.
        let cfg: AggregatorConfig = serde_json::from_str(
            r#"{
                "windows": [{ "size": "1m" }, { "size": "1h", "hop": "15m" }],
                "out_of_order": "5s",
                "allowed_lateness": "0s",
                "late_policy": "drop",
                "watermark": "per_device",
                "max_series": 2000000,
                "close_idle_after": "1h"
            }"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.windows[1].hop_nanos(), 900 * 1_000_000_000);
        assert_eq!(cfg.windows[1].to_string(), "1h/15m");
        assert_eq!(cfg.max_series, 2_000_000);
        assert_eq!(cfg.close_idle_after, Span::from_secs(3600));
        let empty: AggregatorConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, AggregatorConfig::default());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        for bad in [
            r#"{ "window": [] }"#,
            r#"{ "windows": [{ "size": "1m", "step": "1s" }] }"#,
            r#"{ "out_of_order": 5 }"#,
            r#"{ "late_policy": "keep" }"#,
            r#"{ "watermark": "perdevice" }"#,
            r#"{ "max_series": -1 }"#,
            r#"{ "max_series": "many" }"#,
        ] {
            assert!(
                serde_json::from_str::<AggregatorConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn invalid_specs_say_why() {
        let m = Span::from_secs(60);
        let cases = [
            AggregatorConfig {
                windows: vec![],
                ..Default::default()
            },
            AggregatorConfig {
                windows: vec![WindowSpec::tumbling(Span::ZERO)],
                ..Default::default()
            },
            AggregatorConfig {
                windows: vec![WindowSpec::hopping(m, Span::ZERO)],
                ..Default::default()
            },
            AggregatorConfig {
                windows: vec![WindowSpec::hopping(m, Span::from_secs(61))],
                ..Default::default()
            },
            AggregatorConfig {
                windows: vec![WindowSpec::hopping(m, Span::from_millis(1))],
                ..Default::default()
            },
            AggregatorConfig {
                windows: vec![WindowSpec::tumbling(m), WindowSpec::hopping(m, m)],
                ..Default::default()
            },
            AggregatorConfig {
                max_series: 0,
                ..Default::default()
            },
        ];
        for cfg in cases {
            let e = cfg.validate().unwrap_err();
            assert!(!e.to_string().is_empty());
        }
        AggregatorConfig::default().validate().unwrap();
    }
}
