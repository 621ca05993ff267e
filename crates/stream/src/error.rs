//! What can go wrong: all of it is a configuration or call mistake that
//! retrying cannot fix; the message says what to change.

use crate::WindowSpec;

/// Why a setting or a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A duration could not be read.
    #[error(
        "invalid duration {value:?}: {reason} (write e.g. \"1m\", \"30s\", \"500ms\" or \"1h30m\")"
    )]
    Span {
        /// The refused text (cut to 64 characters).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A window spec breaks a rule.
    #[error("invalid window spec `{spec}` (size/hop): {reason}")]
    Window {
        /// The refused spec.
        spec: WindowSpec,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The config lists no window spec.
    #[error("no windows configured: list at least one, e.g. `windows = [{{ size = \"1m\" }}]`")]
    NoWindows,
    /// `max_series` is zero.
    #[error("max_series must be at least 1 (it bounds the live series; the default is 2000000)")]
    MaxSeries,
    /// The same windows are configured twice.
    #[error("window spec `{spec}` is listed twice; remove one")]
    DuplicateWindow {
        /// The repeated spec.
        spec: WindowSpec,
    },
    /// A batch recompute was asked for a reversed time range.
    #[error(
        "invalid time range [{from}, {to}) (ns since the epoch): `from` must not be after `to`"
    )]
    Range {
        /// Start of the range, ns since the epoch.
        from: i64,
        /// End of the range, ns since the epoch.
        to: i64,
    },
    /// A snapshot could not be read: damaged, truncated, or from another
    /// format version.
    #[error("unreadable aggregator snapshot: {reason}")]
    Snapshot {
        /// What is wrong with it.
        reason: String,
    },
    /// A snapshot was taken under other window settings than the ones it is
    /// restored with; its open windows do not fit them.
    #[error("the aggregator snapshot was taken with other window settings ({was}); now: {now}")]
    SnapshotConfig {
        /// The settings in the snapshot.
        was: String,
        /// The settings asked for.
        now: String,
    },
}
