//! The batch path into the store: readings files to `raw/`, and `raw/` to
//! `windows/`, both as Parquet partitioned by UTC date and hour.
//!
//! ```text
//! raw/date=YYYY-MM-DD/hour=HH/part-<id>.parquet
//!     ts (Timestamp(ns, UTC)), device, tag, value; sorted by (ts, device, tag)
//! windows/size=<size>/date=YYYY-MM-DD/hour=HH/part-0.parquet
//! windows/size=<size>_hop=<hop>/date=YYYY-MM-DD/hour=HH/part-0.parquet
//!     device, tag, start, end, count, sum, mean, min, max, std, first, last
//! ```
//!
//! A raw part's `<id>` is derived from the content: the first 16 hex digits
//! of SHA-256 over the SHA-256 of the input file's bytes and the partition
//! (`date=…/hour=…`). Ingesting the same file again writes the same keys
//! with the same content, so it overwrites instead of duplicating; a
//! changed file is a new set of parts beside the old ones. Windows are
//! partitioned by their start; `<size>` and `<hop>` are spans as the config
//! writes them (`1m`, `1h30m`). Rerunning an aggregation overwrites its
//! partitions.

use std::collections::BTreeMap;
use std::path::Path;

use fleetscore_codecs::{
    read_readings, read_readings_parquet_bytes, write_batch_parquet, write_readings_parquet,
    CodecError, Readings,
};
use fleetscore_core::{format_ts, parse_ts};
use fleetscore_stream::{batch_aggregate, windows_to_record_batch, Reading, Window, WindowSpec};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Store, StoreError};

/// One hour in nanoseconds: the partition size of `raw/` and `windows/`.
pub const HOUR_NS: i64 = 3_600 * 1_000_000_000;

/// Why ingesting or aggregating failed.
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
}

/// What [`ingest_file`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct IngestOutcome {
    /// The input file.
    pub path: String,
    /// Readings written.
    pub readings: usize,
    /// Keys of the objects written, one per hour partition, in time order.
    pub keys: Vec<String>,
}

/// What [`aggregate`] read and wrote.
#[derive(Debug, Clone, Serialize)]
pub struct AggregateOutcome {
    /// Start of the computed range (window starts), widened to the hour.
    pub from: String,
    /// End of the computed range (exclusive), widened to the hour.
    pub to: String,
    /// Raw objects read.
    pub raw_files: usize,
    /// Readings read in `[from, to + size)`.
    pub readings: usize,
    /// Windows written.
    pub windows: usize,
    /// Keys of the objects written, one per hour partition, in time order.
    pub keys: Vec<String>,
}

/// The partition path of the hour holding `ts`: `date=YYYY-MM-DD/hour=HH`.
pub fn hour_partition(ts: i64) -> String {
    let text = format_ts(ts.div_euclid(HOUR_NS) * HOUR_NS);
    format!("date={}/hour={}", &text[..10], &text[11..13])
}

/// The start (ns) of the hour a key's `date=…/hour=…` segments name.
fn partition_start(key: &str) -> Option<i64> {
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

/// The folder of a window spec's windows: `windows/size=1m`, or
/// `windows/size=5m_hop=1m` for hopping windows.
pub fn window_prefix(spec: &WindowSpec) -> String {
    match spec.hop {
        Some(hop) if hop != spec.size => format!("windows/size={}_hop={hop}", spec.size),
        _ => format!("windows/size={}", spec.size),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes readings as `raw/` objects, one per UTC hour, rows sorted by
/// (ts, device, tag) (stable, so equal rows keep their input order). Each
/// key is `raw/date=…/hour=…/part-<id>.parquet` where `<id>` is the first 16
/// hex digits of SHA-256(`origin` + partition): the same origin (a file's
/// hash, a log segment's first batch) always gives the same keys, so writing
/// again overwrites instead of duplicating.
pub fn raw_objects(
    readings: &Readings,
    origin: &[u8],
) -> Result<Vec<(String, Vec<u8>)>, LakeError> {
    let pair = |r: usize| &readings.keys[readings.key[r] as usize];
    let mut rows: Vec<usize> = (0..readings.len()).collect();
    rows.sort_by(|&a, &b| {
        readings.ts[a]
            .cmp(&readings.ts[b])
            .then_with(|| pair(a).cmp(pair(b)))
    });
    let mut objects = Vec::new();
    let mut rest = &rows[..];
    while let Some(&first) = rest.first() {
        let hour = readings.ts[first].div_euclid(HOUR_NS);
        let n = rest
            .iter()
            .take_while(|&&r| readings.ts[r].div_euclid(HOUR_NS) == hour)
            .count();
        let (part, tail) = rest.split_at(n);
        rest = tail;
        let partition = hour_partition(hour * HOUR_NS);
        let mut id = Sha256::new();
        id.update(origin);
        id.update(partition.as_bytes());
        let key = format!(
            "raw/{partition}/part-{}.parquet",
            &hex(&id.finalize())[..16]
        );
        let data = write_readings_parquet(readings, part, &key)?;
        objects.push((key, data));
    }
    Ok(objects)
}

/// Ingests one readings file (CSV or Parquet, as `read_readings` takes
/// them) into `raw/`, one object per UTC hour its readings fall in.
///
/// The whole file is read and checked first: a bad row fails the call with
/// its line (CSV) or row (Parquet) and nothing is written. Objects are then
/// written one by one; if a write fails, ingesting the file again completes
/// it (same keys, same content).
pub async fn ingest_file(store: &Store, path: &Path) -> Result<IngestOutcome, LakeError> {
    let io = |source| CodecError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).map_err(io)?, &mut hasher).map_err(io)?;
    let file_hash = hasher.finalize();
    let readings = read_readings(path)?;
    let objects = raw_objects(&readings, &file_hash)?;
    let mut keys = Vec::with_capacity(objects.len());
    for (key, data) in objects {
        store.put(&key, data).await?;
        keys.push(key);
    }
    Ok(IngestOutcome {
        path: path.display().to_string(),
        readings: readings.len(),
        keys,
    })
}

/// Computes the windows of `spec` starting in `[from, to)` from the
/// readings in `raw/` and writes them to `windows/`, one object per UTC
/// hour of window starts (see [`window_prefix`]).
///
/// Partitions are whole hours, so `from` is rounded down and `to` up to
/// the hour: every object written holds all of its hour's windows, and a
/// rerun overwrites it. Reads the raw partitions that can hold readings in
/// `[from, to + size)`; readings are folded in (ts, device, tag) order, so
/// the result does not depend on which files they came from.
pub async fn aggregate(
    store: &Store,
    spec: WindowSpec,
    from: i64,
    to: i64,
) -> Result<AggregateOutcome, LakeError> {
    spec.validate()?;
    if from > to {
        return Err(fleetscore_stream::Error::Range { from, to }.into());
    }
    let from = from.div_euclid(HOUR_NS) * HOUR_NS;
    let to = match to.rem_euclid(HOUR_NS) {
        0 => to,
        r => to.saturating_add(HOUR_NS - r),
    };
    let read_to = to.saturating_add(spec.size.as_nanos());

    let mut files = Vec::new();
    for key in store.list("raw/").await? {
        let Some(start) = partition_start(&key) else {
            continue;
        };
        if !key.ends_with(".parquet") || start >= read_to || start.saturating_add(HOUR_NS) <= from {
            continue;
        }
        // Gone since the listing (a concurrent cleanup): nothing to read.
        if let Some(data) = store.get(&key).await? {
            files.push(read_readings_parquet_bytes(data, &key)?);
        }
    }
    let mut readings: Vec<Reading<'_>> = files
        .iter()
        .flat_map(|r| {
            (0..r.len()).map(move |i| {
                let (device, tag) = &r.keys[r.key[i] as usize];
                Reading {
                    ts: r.ts[i],
                    device,
                    tag,
                    value: r.value[i],
                }
            })
        })
        .filter(|r| r.ts >= from && r.ts < read_to)
        .collect();
    readings.sort_by(|a, b| (a.ts, a.device, a.tag).cmp(&(b.ts, b.device, b.tag)));

    let windows = batch_aggregate(readings.iter().copied(), spec, from, to)?;
    let mut by_hour: BTreeMap<i64, Vec<&Window>> = BTreeMap::new();
    for w in &windows {
        by_hour
            .entry(w.start.div_euclid(HOUR_NS))
            .or_default()
            .push(w);
    }
    let prefix = window_prefix(&spec);
    let mut keys = Vec::with_capacity(by_hour.len());
    for (hour, ws) in by_hour {
        let key = format!("{prefix}/{}/part-0.parquet", hour_partition(hour * HOUR_NS));
        let batch = windows_to_record_batch(ws).map_err(|e| CodecError::Parquet {
            path: key.clone().into(),
            reason: e.to_string(),
        })?;
        let data = write_batch_parquet(&batch, &key)?;
        store.put(&key, data).await?;
        keys.push(key);
    }
    Ok(AggregateOutcome {
        from: format_ts(from),
        to: format_ts(to),
        raw_files: files.len(),
        readings: readings.len(),
        windows: windows.len(),
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscore_stream::Span;

    #[test]
    fn partitions_and_prefixes() {
        let ts = parse_ts("2024-03-05 07:59:59.999").unwrap();
        assert_eq!(hour_partition(ts), "date=2024-03-05/hour=07");
        let key = format!("raw/{}/part-x.parquet", hour_partition(ts));
        assert_eq!(
            partition_start(&key),
            Some(parse_ts("2024-03-05 07:00:00").unwrap())
        );
        assert_eq!(partition_start("raw/other.parquet"), None);
        let m = |s: &str| s.parse::<Span>().unwrap();
        assert_eq!(
            window_prefix(&WindowSpec::tumbling(m("1m"))),
            "windows/size=1m"
        );
        assert_eq!(
            window_prefix(&WindowSpec::hopping(m("5m"), m("1m"))),
            "windows/size=5m_hop=1m"
        );
        assert_eq!(
            window_prefix(&WindowSpec::hopping(m("5m"), m("5m"))),
            "windows/size=5m"
        );
    }
}
