//! The lake: readings, their windows and their predictions as Parquet in
//! the store, partitioned by UTC date and hour. This module owns the
//! layout, for writing and for reading: every key under `raw/`,
//! `windows/` and `predictions/` is built here, and everyone else (the
//! compactor, `ingest` and `aggregate`, the job runner, `models train`,
//! `score`, the API) calls it.
//!
//! ```text
//! raw/date=YYYY-MM-DD/hour=HH/part-<id>.parquet
//!     ts (Timestamp(ns, UTC)), device, tag, value; sorted by (ts, device, tag)
//! windows/size=<size>/date=YYYY-MM-DD/hour=HH/part-0.parquet        batch recompute
//! windows/size=<size>/date=YYYY-MM-DD/hour=HH/part-<pos>.parquet    streaming (20 digits)
//! windows/size=<size>_hop=<hop>/date=…/hour=…/part-….parquet        hopping windows
//!     device, tag, start, end, count, sum, mean, min, max, std, first, last
//! predictions/date=D/hour=H/part-<mode>-<W>-<task>.parquet           a job's parts
//! predictions/date=D/hour=H/manifest-<mode>-<W>.json                 its manifest, last
//! predictions/date=D/hour=H/part-<mode>-<W>-shard-<I>-of-<N>.parquet `score --write-store`
//! predictions/date=D/hour=H/manifest-<mode>-<W>-shard-<I>-of-<N>.json
//!     TS, Device, Tag, Val, Prediction, Score, Label
//! rejected/source=<source>/date=YYYY-MM-DD/<time>-<unique>.jsonl     dead letters
//! staging/<job>/<plan>/…, logs/<job>/…                               the runner's ([`work`])
//! ```
//!
//! - raw: readings files and the ingest log become raw parts
//!   ([`raw_objects`], [`ingest_file`]); readers list them by time
//!   ([`list_raw`]) and read them whole ([`read_raw`], [`load_raw`],
//!   [`load_raw_objects`]) or only the row groups of a window, by ranged
//!   reads ([`raw_in_window`], [`read_raw_row_groups`]).
//! - windows: the batch recompute ([`aggregate`]) and the streaming path
//!   ([`window_part_key`]) write them; [`load_windows`] reads them.
//! - predictions: a job ([`JobOutput`]) or a `score --write-store` shard
//!   ([`ShardOutput`]) writes its parts, then a [`Manifest`] naming them;
//!   readers go through [`PredictionsPartition`].
//! - rejected: what sources could not read ([`write_rejected`],
//!   [`recent_rejected`], [`sweep_rejected`]).
//! - where data is: [`partition_days`] and [`partition_hours`] list the
//!   partition folders of an [`Area`] without listing their objects.
//!
//! # The manifest rule
//! **A reader sees a prediction part only if a manifest of its partition
//! names it.** A part is written before its manifest, so a partition may
//! hold parts of a job still running, of a shard that has not finished, or
//! left by a run that crashed; none of them is an answer yet. With several
//! manifests in a partition (windows shorter than an hour, a job and
//! shards of the same window) a reader sees the union of what they name.
//! The only ways to read predictions are [`PredictionsPartition`] and
//! [`predictions_parts`], which apply the rule.
//!
//! The partition of a reading or a window is the hour of its own time (a
//! window's start); a job's outputs sit in the partition of its window's
//! start. Keys are derived from the content or from the window and the task
//! number only, so a rerun overwrites instead of duplicating (see each
//! writer).

use fleetscore_codecs::CodecError;
use fleetscore_core::{format_ts, parse_ts, MIN_TS};

use crate::{Store, StoreError};

mod predictions;
mod raw;
mod rejected;
mod windows;
pub mod work;

pub use predictions::{
    predictions_parts, read_manifest, window_name, window_stem, DeviceCount, JobOutput, Manifest,
    PredictionsPartition, ShardOutput, MANIFEST_FORMAT,
};
pub use raw::{
    ingest_file, list_raw, load_raw, load_raw_objects, raw_in_window, raw_objects, read_raw,
    read_raw_row_groups, IngestOutcome, RawInWindow,
};
pub use rejected::{recent_rejected, sweep_rejected, write_rejected, DeadLetter};
pub use windows::{
    aggregate, load_windows, window_part_key, window_prefix, AggregateOutcome, WindowPart,
};

/// One hour in nanoseconds: the partition size of `raw/`, `windows/` and
/// `predictions/`.
pub const HOUR_NS: i64 = 3_600 * 1_000_000_000;

/// One day in nanoseconds: a `date=…` folder.
const DAY_NS: i64 = 24 * HOUR_NS;

/// Why reading or writing the lake failed.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// A file could not be read (with its line or row), or Parquet refused
    /// the data.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The window spec or the time range is invalid.
    #[error(transparent)]
    Window(#[from] fleetscore_stream::Error),
    /// An object is not what the lake writes there (too short for Parquet,
    /// a footer that does not fit, windows that do not decode).
    #[error("{key}: {reason}")]
    Object {
        /// The object key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// An object read by ranges is no longer the object that was listed
    /// (replaced, or cut short, since): list it again (a job: plan it
    /// again) to read what is there now.
    #[error("{key} changed since it was listed ({reason})")]
    Changed {
        /// The object key.
        key: String,
        /// How it differs, or the store's answer.
        reason: String,
    },
    /// A manifest could not be encoded.
    #[error("{key}: encoding the manifest: {source}")]
    Manifest {
        /// The manifest's key.
        key: String,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// Decoding an object on the blocking pool panicked or was cancelled
    /// (a bug, or the runtime shutting down).
    #[error("decoding {key} stopped: {source}")]
    Task {
        /// The object being decoded.
        key: String,
        /// The runtime's error.
        source: tokio::task::JoinError,
    },
}

/// The partition path of the hour holding `ts`: `date=YYYY-MM-DD/hour=HH`.
///
/// Read off `ts`'s own date and hour, with no arithmetic: rounding down to
/// the hour first overflowed for the first hour of `i64` (1677-09-21
/// 00:00 to 00:12), whose readings then landed in 2262. Every `i64` has
/// its partition; sources refuse readings outside 1678 to 2261 anyway
/// ([`fleetscore_core::check_ts`]).
pub fn hour_partition(ts: i64) -> String {
    let text = format_ts(ts);
    format!("date={}/hour={}", &text[..10], &text[11..13])
}

/// The start (ns) of the hour a key's `date=…/hour=…` segments name.
pub fn partition_start(key: &str) -> Option<i64> {
    let mut date = None;
    let mut hour = None;
    for seg in key.split('/') {
        if let Some(d) = seg.strip_prefix("date=") {
            date = Some(d);
        } else if let Some(h) = seg.strip_prefix("hour=") {
            hour = Some(h);
        }
    }
    let (date, hour) = (date?, hour?);
    if date.len() != 10 || hour.len() != 2 {
        return None;
    }
    parse_ts(&format!("{date}T{hour}:00:00Z")).ok()
}

/// The starts of the hours `[from, to)` touches, in order. No reading lies
/// before [`MIN_TS`], so an earlier `from` starts there (rounding it down
/// would overflow); the last hour an `i64` holds ends the range rather than
/// wrapping.
pub fn hours(from: i64, to: i64) -> impl Iterator<Item = i64> {
    let first = from.max(MIN_TS).div_euclid(HOUR_NS) * HOUR_NS;
    std::iter::successors(Some(first), |h| h.checked_add(HOUR_NS)).take_while(move |h| *h < to)
}

/// The start of the hour holding `ts`.
fn hour_of(ts: i64) -> i64 {
    ts.div_euclid(HOUR_NS) * HOUR_NS
}

/// The part of the lake a listing of partitions looks at (see
/// [`partition_days`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `raw/`: readings.
    Raw,
    /// `predictions/`: the outputs of jobs and shards.
    Predictions,
}

impl Area {
    fn root(self) -> &'static str {
        match self {
            Area::Raw => "raw",
            Area::Predictions => "predictions",
        }
    }
}

/// The days (their starts, ns) that have a partition folder in `area`, in
/// time order: one listing of folders, however many objects they hold.
pub async fn partition_days(store: &Store, area: Area) -> Result<Vec<i64>, LakeError> {
    Ok(day_folders(store, area.root())
        .await?
        .into_iter()
        .map(|(day, _)| day)
        .collect())
}

/// The hours (their starts) of the day starting at `day` that have a
/// partition folder in `area`, in time order.
pub async fn partition_hours(store: &Store, area: Area, day: i64) -> Result<Vec<i64>, LakeError> {
    let date = &hour_partition(day)[..15];
    Ok(store
        .list_folders(&format!("{}/{date}/", area.root()))
        .await?
        .into_iter()
        .filter_map(|h| partition_start(&format!("{date}/{h}")))
        .collect())
}

/// The `date=…` folders under `root`, with their days' starts, in order.
async fn day_folders(store: &Store, root: &str) -> Result<Vec<(i64, String)>, LakeError> {
    Ok(store
        .list_folders(&format!("{root}/"))
        .await?
        .into_iter()
        .filter_map(|d| {
            let day = d.strip_prefix("date=").filter(|d| d.len() == 10)?;
            Some((parse_ts(&format!("{day}T00:00:00Z")).ok()?, d))
        })
        .collect())
}

/// `tokio::task::spawn_blocking` for decoding `key`, its failure as a
/// [`LakeError`].
async fn blocking<T: Send + 'static>(
    key: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LakeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| LakeError::Task {
            key: key.to_string(),
            source,
        })
}

/// Readings from rows `(ts, device, tag, value)`, series interned in
/// order of appearance.
#[cfg(test)]
pub(crate) fn test_readings(rows: &[(i64, &str, &str, f64)]) -> fleetscore_codecs::Readings {
    rows.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscore_core::MAX_TS;

    #[test]
    fn readings_of_1677_are_refused_not_filed_in_2262() {
        // The partition of every i64 is its own hour: the first hour of
        // 1677 wrapped to 2262 when rounded down by multiplication.
        assert_eq!(hour_partition(i64::MIN), "date=1677-09-21/hour=00");
        assert_eq!(hour_partition(i64::MAX), "date=2262-04-11/hour=23");
        assert_eq!(hour_partition(MIN_TS), "date=1678-01-01/hour=00");
        assert_eq!(hour_partition(MAX_TS), "date=2261-12-31/hour=23");
        assert_eq!(hour_partition(-1), "date=1969-12-31/hour=23");
    }

    #[test]
    fn partitions_and_hours() {
        let ts = parse_ts("2024-03-05 07:59:59.999").unwrap();
        assert_eq!(hour_partition(ts), "date=2024-03-05/hour=07");
        let key = format!("raw/{}/part-x.parquet", hour_partition(ts));
        assert_eq!(
            partition_start(&key),
            Some(parse_ts("2024-03-05 07:00:00").unwrap())
        );
        assert_eq!(partition_start("raw/other.parquet"), None);
        assert_eq!(
            partition_start("raw/date=2018-08-28/hour=23/part-0123.parquet"),
            Some(parse_ts("2018-08-28T23:00:00Z").unwrap())
        );
        assert_eq!(partition_start("raw/other/part.parquet"), None);
        let h = parse_ts("2024-03-05 07:00:00").unwrap();
        assert_eq!(
            hours(h + 1, h + 2 * HOUR_NS + 1).collect::<Vec<_>>(),
            [h, h + HOUR_NS, h + 2 * HOUR_NS]
        );
        assert_eq!(hours(h, h).count(), 0);
        // The ends of time: no overflow, no wrap.
        assert_eq!(hours(i64::MIN, MIN_TS + 1).collect::<Vec<_>>(), [MIN_TS]);
        let last = hour_of(i64::MAX);
        assert_eq!(
            hours(last - 1, i64::MAX).collect::<Vec<_>>(),
            [last - HOUR_NS, last]
        );
    }

    #[tokio::test]
    async fn days_and_hours_with_partitions() {
        let store = Store::open("memory://").unwrap();
        let t = parse_ts("2024-03-05 07:00:00").unwrap();
        for (area, ts) in [
            ("raw", t),
            ("raw", t + 2 * HOUR_NS),
            ("raw", t + DAY_NS),
            ("predictions", t + HOUR_NS),
        ] {
            let key = format!("{area}/{}/part-a.parquet", hour_partition(ts));
            store.put(&key, b"x".to_vec()).await.unwrap();
        }
        store.put("raw/notes.txt", b"x".to_vec()).await.unwrap();
        let day = hour_of(t) - 7 * HOUR_NS;
        assert_eq!(
            partition_days(&store, Area::Raw).await.unwrap(),
            [day, day + DAY_NS]
        );
        assert_eq!(
            partition_hours(&store, Area::Raw, day).await.unwrap(),
            [t, t + 2 * HOUR_NS]
        );
        assert_eq!(
            partition_hours(&store, Area::Predictions, day)
                .await
                .unwrap(),
            [t + HOUR_NS]
        );
        assert!(partition_hours(&store, Area::Predictions, day + DAY_NS)
            .await
            .unwrap()
            .is_empty());
    }
}
