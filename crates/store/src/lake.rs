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
//! writes them (`1m`, `1h30m`).
//!
//! A window partition may hold several parts: the batch recompute writes
//! `part-0.parquet`, the streaming path writes `part-<n>.parquet` beside
//! it. A batch recompute ([`aggregate`]) replaces the content of every
//! partition of its range: after writing an hour's `part-0.parquet` it
//! deletes every other `part-*.parquet` of that partition, and it deletes
//! every `part-*.parquet` of the hours of its range that have no windows
//! (the parts there when the recompute started: the window prefix is
//! listed once). Rerunning an aggregation therefore leaves the same
//! objects. Other files in a partition, and partitions outside the range,
//! are left alone. Deleting is after writing, so a reader never finds a
//! partition empty that has windows.
//!
//! The recompute computes hours in parallel, a few at a time, holding only
//! their raw partitions in memory, decoded to plain columns with (device,
//! tag) interned to dense ids; each series is folded in timestamp order
//! (equal timestamps in object key order, then row order), which is what
//! [`batch_aggregate`](fleetscore_stream::batch_aggregate) gives over all
//! readings sorted by (ts, device, tag) with a stable sort. Raw objects are
//! expected to hold the readings of their own hour, as [`raw_objects`]
//! writes them; readings an object holds from other hours still count
//! where their timestamps fall, provided the object's partition is one the
//! range reads (the hours of the windows' readings).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use fleetscore_codecs::{
    read_readings, read_readings_parquet_bytes, write_batch_parquet, write_readings_parquet,
    CodecError, Readings,
};
use fleetscore_core::{format_ts, parse_ts, MAX_TS, MIN_TS};
use fleetscore_stream::{SeriesWindows, WindowColumns, WindowSpec};
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
    /// Readings read with timestamps from the first window start to the
    /// last window end (`[from, to)`, or `[from, to + size)` when windows
    /// cross hours).
    pub readings: usize,
    /// Windows written.
    pub windows: usize,
    /// Keys of the objects written, one per hour partition, in time order.
    pub keys: Vec<String>,
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
    let (ts, ids) = (readings.ts(), readings.key_ids());
    let pair = |r: usize| readings.key(ids[r]);
    let mut rows: Vec<usize> = (0..readings.len()).collect();
    rows.sort_by(|&a, &b| ts[a].cmp(&ts[b]).then_with(|| pair(a).cmp(&pair(b))));
    let mut objects = Vec::new();
    let mut rest = &rows[..];
    while let Some(&first) = rest.first() {
        let hour = ts[first].div_euclid(HOUR_NS);
        let n = rest
            .iter()
            .take_while(|&&r| ts[r].div_euclid(HOUR_NS) == hour)
            .count();
        let (part, tail) = rest.split_at(n);
        rest = tail;
        let partition = hour_partition(ts[first]);
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
/// rerun overwrites it. The range is first cut to the timestamps readings
/// may have ([`MIN_TS`] to [`MAX_TS`]), so the rounding cannot overflow. A recompute replaces each partition's content:
/// after writing an hour's `part-0.parquet`, every other `part-*.parquet`
/// object in that partition (such as the parts the streaming path writes)
/// is deleted, and so is every `part-*.parquet` of an hour in the range
/// that now has no windows (those listed when the call starts).
///
/// The windows are those [`batch_aggregate`](fleetscore_stream::batch_aggregate)
/// gives over the readings of the raw partitions that can hold readings
/// in `[from, to + size)`, sorted by (ts, device, tag) with a stable sort
/// over the objects in key order, rows in file order: each series is folded
/// in timestamp order, equal timestamps in object and row order, so the
/// result does not depend on how readings are split into objects.
///
/// Hours are computed in parallel, a few at a time: an hour's windows need
/// the readings from its first window start to its last window end (for
/// tumbling windows that divide the hour, the hour itself), so only the raw
/// partitions of the hours in flight are held in memory, decoded to plain
/// columns with the series interned to dense ids.
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
    // No reading lies outside; both bounds are then a whole hour away from
    // the ends of i64.
    let (from, to) = (from.clamp(MIN_TS, MAX_TS), to.clamp(MIN_TS, MAX_TS));
    let from = from.div_euclid(HOUR_NS) * HOUR_NS;
    let to = match to.rem_euclid(HOUR_NS) {
        0 => to,
        r => to.saturating_add(HOUR_NS - r),
    };
    let read_to = to.saturating_add(spec.size.as_nanos());
    let hours: Vec<HourPlan> = (from.div_euclid(HOUR_NS)..to.div_euclid(HOUR_NS))
        .map(|h| HourPlan::new(&spec, h * HOUR_NS))
        .collect();

    let mut raw: Vec<(String, i64)> = Vec::new();
    for key in store.list("raw/").await? {
        let Some(start) = partition_start(&key) else {
            continue;
        };
        if !key.ends_with(".parquet") || start >= read_to || start.saturating_add(HOUR_NS) <= from {
            continue;
        }
        raw.push((key, start));
    }
    // In time order; hour tasks read objects in key order.
    raw.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));

    // Objects holding readings before their own hour (not what ingest
    // writes) may belong to hours computed before they are read: if any
    // turns up, compute again with them read first.
    let mut run = Run::new(store, spec, &hours, &raw);
    run.go(&[]).await?;
    if !run.early.is_empty() {
        let early = std::mem::take(&mut run.early);
        let mut again = Run::new(store, spec, &hours, &raw);
        again.go(&early).await?;
        run = again;
    }
    let mut keys: Vec<String> = run.written.into_iter().collect();
    keys.sort();
    Ok(AggregateOutcome {
        from: format_ts(from),
        to: format_ts(to),
        raw_files: run.raw_files,
        readings: run.readings,
        windows: run.windows,
        keys,
    })
}

/// What one output hour needs: its windows start in `[from, to)` (the hour)
/// and hold readings in `[lo, hi)` (empty when no window starts in it).
#[derive(Debug, Clone, Copy)]
struct HourPlan {
    from: i64,
    to: i64,
    lo: i64,
    hi: i64,
}

impl HourPlan {
    fn new(spec: &WindowSpec, from: i64) -> HourPlan {
        let hop = spec.hop_nanos();
        let to = from.saturating_add(HOUR_NS);
        // first window start >= from, last one < to
        let first = match from.rem_euclid(hop) {
            0 => from,
            r => from.saturating_add(hop - r),
        };
        let last = (to - 1) - (to - 1).rem_euclid(hop);
        let (lo, hi) = if first > last {
            (from, from)
        } else {
            (first, last.saturating_add(spec.size.as_nanos()))
        };
        HourPlan { from, to, lo, hi }
    }
}

/// One raw object, decoded: rows in file order, series as global ids.
struct Part {
    key: String,
    ts: Vec<i64>,
    value: Vec<f64>,
    series: Vec<u32>,
    min_ts: i64,
    max_ts: i64,
    /// Whether `ts` is non-decreasing (raw objects are sorted by time).
    sorted: bool,
}

impl Part {
    /// Rows with `lo <= ts < hi`: a range when sorted, else a filter.
    fn rows(&self, lo: i64, hi: i64) -> Rows<'_> {
        if self.sorted {
            let a = self.ts.partition_point(|&t| t < lo);
            let b = self.ts.partition_point(|&t| t < hi);
            Rows::Range(a..b.max(a))
        } else {
            Rows::Filter(self, lo, hi)
        }
    }
}

enum Rows<'a> {
    Range(std::ops::Range<usize>),
    Filter(&'a Part, i64, i64),
}

impl Rows<'_> {
    fn for_each(&self, mut f: impl FnMut(usize)) {
        match self {
            Rows::Range(r) => r.clone().for_each(f),
            Rows::Filter(p, lo, hi) => {
                for (i, &t) in p.ts.iter().enumerate() {
                    if t >= *lo && t < *hi {
                        f(i);
                    }
                }
            }
        }
    }
}

/// The (device, tag) pairs seen in a run, as dense ids.
#[derive(Default)]
struct SeriesTable {
    ids: FxHashMap<(String, String), u32>,
    names: Vec<(String, String)>,
}

impl SeriesTable {
    fn id(&mut self, pair: &(String, String)) -> u32 {
        if let Some(&id) = self.ids.get(pair) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(pair.clone());
        self.ids.insert(pair.clone(), id);
        id
    }
}

/// One pass over the hours of an [`aggregate`] call.
struct Run<'a> {
    store: &'a Store,
    spec: WindowSpec,
    hours: &'a [HourPlan],
    raw: &'a [(String, i64)],
    series: SeriesTable,
    raw_files: usize,
    readings: usize,
    windows: usize,
    written: std::collections::BTreeSet<String>,
    /// Keys of objects holding readings before their partition's hour.
    early: Vec<String>,
    /// The `part-*.parquet` window objects of the range's partitions, by
    /// partition start, when the recompute started.
    existing: std::collections::BTreeSet<(i64, String)>,
}

impl<'a> Run<'a> {
    fn new(
        store: &'a Store,
        spec: WindowSpec,
        hours: &'a [HourPlan],
        raw: &'a [(String, i64)],
    ) -> Run<'a> {
        Run {
            store,
            spec,
            hours,
            raw,
            series: SeriesTable::default(),
            raw_files: 0,
            readings: 0,
            windows: 0,
            written: Default::default(),
            early: Vec::new(),
            existing: Default::default(),
        }
    }

    /// Fetches and decodes `keys` (in parallel), in key order; an object
    /// with readings before `done` (the end of what the hours already
    /// computed could use) and before its own hour is noted in `early`.
    async fn load(
        &mut self,
        keys: &[&(String, i64)],
        done: i64,
    ) -> Result<Vec<Arc<Part>>, LakeError> {
        let store = self.store;
        let fetched =
            futures::future::try_join_all(keys.iter().map(|(key, _)| store.get(key))).await?;
        let jobs: Vec<(&(String, i64), Bytes)> = keys
            .iter()
            .copied()
            .zip(fetched)
            // Gone since the listing (a concurrent cleanup): nothing to read.
            .filter_map(|(k, d)| d.map(|d| (k, d)))
            .collect();
        let decoded: Vec<Result<Readings, CodecError>> = jobs
            .par_iter()
            .map(|((key, _), data)| read_readings_parquet_bytes(data.clone(), key))
            .collect();
        let (lo, hi) = (
            self.hours.first().map_or(0, |h| h.lo),
            self.hours.last().map_or(0, |h| h.hi),
        );
        let mut parts = Vec::with_capacity(jobs.len());
        for (((key, partition), _), r) in jobs.into_iter().zip(decoded) {
            let r = r?;
            let map: Vec<u32> = r
                .owned_keys()
                .iter()
                .map(|pair| self.series.id(pair))
                .collect();
            let (ts, value, mut series, _) = r.into_columns();
            for s in &mut series {
                *s = map[*s as usize];
            }
            let (mut min_ts, mut max_ts, mut sorted, mut prev) =
                (i64::MAX, i64::MIN, true, i64::MIN);
            for &t in &ts {
                min_ts = min_ts.min(t);
                max_ts = max_ts.max(t);
                sorted &= t >= prev;
                prev = t;
                self.readings += usize::from(t >= lo && t < hi);
            }
            self.raw_files += 1;
            if min_ts < *partition && min_ts < done {
                self.early.push(key.clone());
            }
            parts.push(Arc::new(Part {
                key: key.clone(),
                ts,
                value,
                series,
                min_ts,
                max_ts,
                sorted,
            }));
        }
        Ok(parts)
    }

    /// Computes and writes every hour, `threads` hours at a time; `early`
    /// objects are read first and kept throughout.
    async fn go(&mut self, early: &[String]) -> Result<(), LakeError> {
        let prefix = window_prefix(&self.spec);
        let (from, to) = (
            self.hours.first().map_or(0, |h| h.from),
            self.hours.last().map_or(0, |h| h.to),
        );
        for key in self.store.list(&format!("{prefix}/")).await? {
            let Some(start) = partition_start(&key) else {
                continue;
            };
            let name = key.rsplit('/').next().unwrap_or("");
            let in_partition = key == format!("{prefix}/{}/{name}", hour_partition(start));
            if start >= from
                && start < to
                && in_partition
                && name.starts_with("part-")
                && name.ends_with(".parquet")
            {
                self.existing.insert((start, key));
            }
        }
        let threads = rayon::current_num_threads().max(1);
        let early_keys: Vec<&(String, i64)> =
            self.raw.iter().filter(|(k, _)| early.contains(k)).collect();
        let sticky = self.load(&early_keys, i64::MIN).await?;
        let mut loaded: Vec<Arc<Part>> = Vec::new();
        let mut next_raw = 0;
        let mut done = i64::MIN;
        let pool = Buffers::default();
        for batch in self.hours.chunks(threads) {
            let need_to = batch.iter().map(|h| h.hi).max().unwrap_or(i64::MIN);
            let need_from = batch.iter().map(|h| h.lo).min().unwrap_or(i64::MAX);
            // Drop what no hour from here on can use.
            loaded.retain(|p| p.max_ts >= need_from);
            let mut fetch = Vec::new();
            while next_raw < self.raw.len() && self.raw[next_raw].1 < need_to {
                let k = &self.raw[next_raw];
                next_raw += 1;
                if !early.contains(&k.0) {
                    fetch.push(k);
                }
            }
            let new = if fetch.is_empty() {
                Vec::new()
            } else {
                self.load(&fetch, done).await?
            };
            done = done.max(need_to);
            loaded.extend(new);
            let (first, last) = (batch[0].from, batch[batch.len() - 1].from);
            let stale = (first, String::new())..(last.saturating_add(1), String::new());
            if loaded.is_empty() && sticky.is_empty() && self.existing.range(stale).next().is_none()
            {
                // Nothing to read or replace in these hours (a quick way
                // through long empty ranges).
                continue;
            }
            let mut parts: Vec<&Part> = loaded.iter().chain(&sticky).map(|p| &**p).collect();
            parts.sort_by(|a, b| a.key.cmp(&b.key));
            let names = &self.series.names;
            let spec = self.spec;
            let results: Vec<Result<Option<Encoded>, LakeError>> = batch
                .par_iter()
                .map(|h| {
                    let cols = hour_windows(spec, h, &parts, names, &pool)?;
                    if cols.is_empty() {
                        return Ok(None);
                    }
                    let n = cols.len();
                    let key = format!("{prefix}/{}/part-0.parquet", hour_partition(h.from));
                    let batch = cols.finish().map_err(|e| CodecError::Parquet {
                        path: key.clone().into(),
                        reason: e.to_string(),
                    })?;
                    let data = write_batch_parquet(&batch, &key)?;
                    Ok(Some((key, data, n)))
                })
                .collect();
            let mut written = Vec::new();
            for r in results {
                if let Some((key, data, n)) = r? {
                    self.store.put(&key, data).await?;
                    self.windows += n;
                    written.push(key.clone());
                    self.written.insert(key);
                }
            }
            self.clean(batch).await?;
        }
        Ok(())
    }

    /// Deletes every `part-*.parquet` that was in the partitions of `batch`
    /// when the recompute started (see [`Run::existing`]) but the ones this
    /// run wrote.
    async fn clean(&self, batch: &[HourPlan]) -> Result<(), LakeError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let hours = (first.from, String::new())..(last.from.saturating_add(1), String::new());
        for (_, key) in self.existing.range(hours) {
            if !self.written.contains(key) {
                self.store.delete(key).await?;
            }
        }
        Ok(())
    }
}

/// The windows of one hour, rows sorted by (device, tag, start), from the
/// `parts` (in key order) rows with timestamps in the hour's `[lo, hi)`.
fn hour_windows(
    spec: WindowSpec,
    h: &HourPlan,
    parts: &[&Part],
    names: &[(String, String)],
    pool: &Buffers,
) -> Result<WindowColumns, LakeError> {
    let parts: Vec<(&Part, Rows<'_>)> = parts
        .iter()
        .filter(|p| h.lo < h.hi && p.max_ts >= h.lo && p.min_ts < h.hi)
        .map(|p| (*p, p.rows(h.lo, h.hi)))
        .collect();
    // Group rows by series (a stable counting sort: object order, then row
    // order), then fold each series in timestamp order.
    let mut offsets = vec![0usize; names.len() + 1];
    for (p, rows) in &parts {
        rows.for_each(|i| offsets[p.series[i] as usize + 1] += 1);
    }
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
    let total = offsets[names.len()];
    // The buffer is reused across hours: fresh memory costs a page fault
    // per page.
    let mut buf = pool
        .lock()
        .map(|mut p| p.pop())
        .ok()
        .flatten()
        .unwrap_or_default();
    buf.clear();
    buf.resize(total, (0, 0.0));
    let mut at = offsets.clone();
    for (p, rows) in &parts {
        rows.for_each(|i| {
            let s = p.series[i] as usize;
            buf[at[s]] = (p.ts[i], p.value[i]);
            at[s] += 1;
        });
    }
    let mut present: Vec<u32> = (0..names.len() as u32)
        .filter(|&s| offsets[s as usize + 1] > offsets[s as usize])
        .collect();
    present.sort_unstable_by(|&a, &b| names[a as usize].cmp(&names[b as usize]));
    let mut sw = SeriesWindows::new(spec, h.from, h.to)?;
    // At most one window per reading, and per series one per hop.
    let per_series =
        usize::try_from(h.hi.saturating_sub(h.lo) / spec.hop_nanos().max(1) + 1).unwrap_or(1);
    let mut cols =
        WindowColumns::with_capacity(total.min(present.len().saturating_mul(per_series)));
    for s in present {
        let (a, b) = (offsets[s as usize], offsets[s as usize + 1]);
        let (device, tag) = &names[s as usize];
        let series = &mut buf[a..b];
        if !series.is_sorted_by_key(|r| r.0) {
            // Stable: equal timestamps keep object and row order.
            series.sort_by_key(|r| r.0);
        }
        sw.series(series, |w| cols.push(device, tag, &w));
    }
    if let Ok(mut p) = pool.lock() {
        p.push(buf);
    }
    Ok(cols)
}

/// An hour's windows object: key, Parquet bytes, windows.
type Encoded = (String, Vec<u8>, usize);

/// Scatter buffers for [`hour_windows`], kept for the next hours.
type Buffers = std::sync::Mutex<Vec<Vec<(i64, f64)>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use fleetscore_stream::{batch_aggregate, windows_to_record_batch, Reading, Span, Window};
    use std::collections::BTreeMap;

    fn span(s: &str) -> Span {
        s.parse().unwrap()
    }

    /// The windows objects as the first implementation wrote them: every
    /// raw object of `[from, to + size)` in key order, all readings sorted
    /// by (ts, device, tag) with a stable sort, `batch_aggregate`, one
    /// object per hour of window starts.
    async fn reference(
        store: &Store,
        spec: WindowSpec,
        from: i64,
        to: i64,
    ) -> BTreeMap<String, Vec<u8>> {
        let from = from.div_euclid(HOUR_NS) * HOUR_NS;
        let to = (to + HOUR_NS - 1).div_euclid(HOUR_NS) * HOUR_NS;
        let read_to = to + spec.size.as_nanos();
        let mut files = Vec::new();
        for key in store.list("raw/").await.unwrap() {
            let start = partition_start(&key).unwrap();
            if start >= read_to || start + HOUR_NS <= from {
                continue;
            }
            let data = store.get(&key).await.unwrap().unwrap();
            files.push(read_readings_parquet_bytes(data, &key).unwrap());
        }
        let mut readings: Vec<Reading<'_>> = files
            .iter()
            .flat_map(|r| r.iter())
            .filter(|r| r.ts >= from && r.ts < read_to)
            .collect();
        readings.sort_by(|a, b| (a.ts, a.device, a.tag).cmp(&(b.ts, b.device, b.tag)));
        let windows = batch_aggregate(readings.iter().copied(), spec, from, to).unwrap();
        let mut by_hour: BTreeMap<i64, Vec<&Window>> = BTreeMap::new();
        for w in &windows {
            by_hour
                .entry(w.start.div_euclid(HOUR_NS))
                .or_default()
                .push(w);
        }
        by_hour
            .into_iter()
            .map(|(hour, ws)| {
                let key = format!(
                    "{}/{}/part-0.parquet",
                    window_prefix(&spec),
                    hour_partition(hour * HOUR_NS)
                );
                let data =
                    write_batch_parquet(&windows_to_record_batch(ws).unwrap(), &key).unwrap();
                (key, data)
            })
            .collect()
    }

    async fn objects(store: &Store, prefix: &str) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for key in store.list(prefix).await.unwrap() {
            let data = store.get(&key).await.unwrap().unwrap();
            out.insert(key, data.to_vec());
        }
        out
    }

    fn readings(rows: &[(i64, &str, &str, f64)]) -> Readings {
        rows.iter().copied().collect()
    }

    /// Several raw parts per hour (sorted, as ingest writes them), one
    /// unsorted part, one part holding readings of other hours, equal
    /// timestamps across parts, non-finite values: the windows are exactly
    /// the first implementation's, for tumbling windows, hopping windows
    /// crossing the hour and panes straddling it.
    #[tokio::test]
    async fn windows_equal_the_sorted_batch_recompute() {
        let store = Store::open("memory://").unwrap();
        let t0 = parse_ts("2024-03-05 10:00:00").unwrap();
        let s = 1_000_000_000i64;
        let mut x = 99u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let devices = ["1", "2", "10", "d"];
        let tags = ["a", "b"];
        let mut row = |span_s: i64, base: i64| {
            let ts = t0 + base + (next() % (span_s as u64 * 4)) as i64 * s / 4;
            let d = devices[(next() % 4) as usize];
            let t = tags[(next() % 2) as usize];
            let v = match next() % 97 {
                0 => f64::NAN,
                _ => (next() % 100_000) as f64 / 13.0 - 3000.0,
            };
            (ts, d, t, v)
        };
        // Three ingests over hours 10..13 (raw_objects sorts and splits
        // them by hour).
        for origin in [b"a".as_slice(), b"b", b"c"] {
            let rows: Vec<_> = (0..3000).map(|_| row(4 * 3600, 0)).collect();
            for (key, data) in raw_objects(&readings(&rows), origin).unwrap() {
                store.put(&key, data).await.unwrap();
            }
        }
        // Equal timestamps in two parts of one hour, different values.
        let tie = t0 + 3600 * s + 30 * s;
        for (origin, v) in [(b"tie1".as_slice(), 1.5), (b"tie2", -7.25)] {
            for (key, data) in raw_objects(&readings(&[(tie, "d", "a", v)]), origin).unwrap() {
                store.put(&key, data).await.unwrap();
            }
        }
        // An unsorted part in hour 11, and a part in hour 12 holding
        // readings of hours 10, 12 and 13 (not what ingest writes).
        let unsorted: Vec<_> = (0..500).map(|_| row(3600, 3600 * s)).collect();
        let r = readings(&unsorted);
        let rows: Vec<usize> = (0..r.len()).collect();
        let key = format!(
            "raw/{}/part-unsorted.parquet",
            hour_partition(t0 + 3600 * s)
        );
        store
            .put(&key, write_readings_parquet(&r, &rows, &key).unwrap())
            .await
            .unwrap();
        let stray: Vec<_> = (0..300).map(|_| row(4 * 3600, 0)).collect();
        let r = readings(&stray);
        let rows: Vec<usize> = (0..r.len()).collect();
        let key = format!(
            "raw/{}/part-stray.parquet",
            hour_partition(t0 + 2 * 3600 * s)
        );
        store
            .put(&key, write_readings_parquet(&r, &rows, &key).unwrap())
            .await
            .unwrap();

        let specs = [
            WindowSpec::tumbling(span("1m")),
            WindowSpec::tumbling(span("7m")),
            WindowSpec::hopping(span("5m"), span("2m")),
            WindowSpec::hopping(span("90m"), span("1h")),
            WindowSpec::tumbling(span("2h")),
        ];
        for spec in specs {
            for (from, to) in [
                (t0, t0 + 4 * 3600 * s),
                (t0 + 3600 * s, t0 + 2 * 3600 * s + 1),
            ] {
                let want = reference(&store, spec, from, to).await;
                let out = aggregate(&store, spec, from, to).await.unwrap();
                let got = objects(&store, &window_prefix(&spec)).await;
                assert_eq!(
                    got.keys().collect::<Vec<_>>(),
                    want.keys().collect::<Vec<_>>(),
                    "{spec}"
                );
                assert!(got == want, "{spec} [{from}, {to}): windows differ");
                assert_eq!(out.keys, want.keys().cloned().collect::<Vec<_>>());
                assert!(
                    out.windows > 0 && out.readings > 0 && out.raw_files > 0,
                    "{spec} {out:?}"
                );
                for key in got.keys() {
                    store.delete(key).await.unwrap();
                }
            }
        }
    }

    /// A recompute replaces each partition of its range: other parts (the
    /// streaming path's) go, in hours with windows and without; partitions
    /// outside the range and other sizes are left alone.
    #[tokio::test]
    async fn a_recompute_deletes_other_parts_of_its_partitions() {
        let store = Store::open("memory://").unwrap();
        let t0 = parse_ts("2024-03-05 10:00:00").unwrap();
        let m = 60_000_000_000i64;
        let rows = [(t0 + m, "d", "t", 1.0), (t0 + m + 1, "d", "t", 2.0)];
        for (key, data) in raw_objects(&readings(&rows), b"x").unwrap() {
            store.put(&key, data).await.unwrap();
        }
        let put = |key: &str| {
            let store = store.clone();
            let key = key.to_string();
            async move { store.put(&key, b"stale".to_vec()).await.unwrap() }
        };
        let stale = [
            "windows/size=1m/date=2024-03-05/hour=10/part-0.parquet",
            "windows/size=1m/date=2024-03-05/hour=10/part-1.parquet",
            "windows/size=1m/date=2024-03-05/hour=10/part-7.parquet",
            "windows/size=1m/date=2024-03-05/hour=11/part-0.parquet",
            "windows/size=1m/date=2024-03-05/hour=11/part-3.parquet",
        ];
        let kept = [
            "windows/size=1m/date=2024-03-05/hour=10/notes.txt",
            "windows/size=1m/date=2024-03-05/hour=12/part-2.parquet",
            "windows/size=1m/date=2024-03-05/hour=09/part-2.parquet",
            "windows/size=2m/date=2024-03-05/hour=10/part-2.parquet",
        ];
        for k in stale.iter().chain(&kept) {
            put(k).await;
        }
        let out = aggregate(
            &store,
            WindowSpec::tumbling(span("1m")),
            t0,
            t0 + 2 * 60 * m,
        )
        .await
        .unwrap();
        assert_eq!(out.keys, [stale[0]]);
        assert_eq!(out.windows, 1);
        let mut want: Vec<String> = kept.iter().map(|k| k.to_string()).collect();
        want.push(stale[0].to_string());
        want.sort();
        assert_eq!(store.list("windows/").await.unwrap(), want);
        assert_ne!(
            store.get(stale[0]).await.unwrap().unwrap().as_ref(),
            b"stale"
        );
        // Deleting what is not there is fine.
        store.delete(stale[1]).await.unwrap();
        // Ten years with nothing in them go by quickly and touch nothing.
        let year = 365 * 24 * 60 * m;
        let started = std::time::Instant::now();
        let out = aggregate(
            &store,
            WindowSpec::tumbling(span("1m")),
            t0 - 10 * year,
            t0 - 2 * 60 * m,
        )
        .await
        .unwrap();
        assert_eq!((out.windows, out.readings, out.raw_files), (0, 0, 0));
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
        assert_eq!(store.list("windows/").await.unwrap(), want);
    }

    #[test]
    fn readings_of_1677_are_refused_not_filed_in_2262() {
        // The partition of every i64 is its own hour: the first hour of
        // 1677 wrapped to 2262 when rounded down by multiplication.
        assert_eq!(hour_partition(i64::MIN), "date=1677-09-21/hour=00");
        assert_eq!(hour_partition(i64::MAX), "date=2262-04-11/hour=23");
        assert_eq!(hour_partition(MIN_TS), "date=1678-01-01/hour=00");
        assert_eq!(hour_partition(MAX_TS), "date=2261-12-31/hour=23");
        assert_eq!(hour_partition(-1), "date=1969-12-31/hour=23");
        let r = readings(&[(i64::MIN, "d", "t", 1.0), (i64::MAX - 1, "d", "t", 2.0)]);
        let keys: Vec<String> = raw_objects(&r, b"x")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys.len(), 2);
        assert!(
            keys[0].starts_with("raw/date=1677-09-21/hour=00/"),
            "{keys:?}"
        );
        assert!(
            keys[1].starts_with("raw/date=2262-04-11/hour=23/"),
            "{keys:?}"
        );
    }

    #[tokio::test]
    async fn aggregating_the_ends_of_time_does_not_overflow() {
        let store = Store::open("memory://").unwrap();
        let spec = WindowSpec::tumbling(span("1h"));
        let out = aggregate(&store, spec, i64::MIN, i64::MIN + 1)
            .await
            .unwrap();
        assert_eq!(out.windows, 0);
        let out = aggregate(&store, spec, i64::MAX - 1, i64::MAX)
            .await
            .unwrap();
        assert_eq!(out.windows, 0);
    }

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
