//! `raw/`: readings as Parquet, one object per source and UTC hour.
//!
//! ```text
//! raw/date=YYYY-MM-DD/hour=HH/part-<id>.parquet
//!     ts (Timestamp(ns, UTC)), device, tag, value; sorted by (ts, device, tag)
//! ```
//!
//! A raw part's `<id>` is derived from the content: the first 16 hex digits
//! of SHA-256 over its origin (the SHA-256 of an input file's bytes, a log
//! segment's first batch) and the partition (`date=…/hour=…`). Writing the
//! same origin again writes the same keys with the same content, so it
//! overwrites instead of duplicating; a changed file is a new set of parts
//! beside the old ones.
//!
//! Readers list a time range's objects ([`list_raw`]) and read them whole
//! ([`read_raw`], [`load_raw`], [`load_raw_objects`]) or, for a job's window, only what they need
//! by ranged reads: the footers first ([`raw_in_window`]: the row groups
//! whose TS statistics touch the window, and with a scan the TS, Device and
//! Tag column chunks, never the values), then only those row groups
//! ([`read_raw_row_groups`]).

use std::path::Path;
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use fleetscore_codecs::{
    decode_parquet_footer, merge_ranges, read_readings, read_readings_parquet_bytes,
    read_readings_parquet_sparse, row_group_ranges, scan_ranges, scan_raw_parquet_sparse,
    window_row_groups, write_readings_parquet, CodecError, ParquetMetaData, Readings, SparseObject,
    FOOTER_GUESS,
};

use super::{
    blocking, day_folders, hour_partition, hours, partition_start, LakeError, DAY_NS, HOUR_NS,
};
use crate::{Listed, Store, StoreError};

/// The folder of readings.
const RAW: &str = "raw";

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
            "{RAW}/{partition}/part-{}.parquet",
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

/// Ranges of at most this many hours are listed hour by hour (one request
/// per hour, each listing only that hour's objects); longer ones day by
/// day, after one listing of the day folders (days without readings cost
/// nothing).
const LIST_BY_HOUR: usize = 24;

/// The raw objects (Parquet) of the hours `[from, to)` touches, with their
/// lengths and versions, in time order (by hour, then key). An object's
/// readings are expected in its own hour, as [`raw_objects`] writes them;
/// readers filter by time anyway.
pub async fn list_raw(store: &Store, from: i64, to: i64) -> Result<Vec<Listed>, LakeError> {
    let parquet = |l: &Listed| l.key.ends_with(".parquet");
    let mut out = Vec::new();
    if hours(from, to).nth(LIST_BY_HOUR).is_none() {
        for hour in hours(from, to) {
            let prefix = format!("{RAW}/{}/", hour_partition(hour));
            out.extend(store.list_sizes(&prefix).await?.into_iter().filter(parquet));
        }
        return Ok(out);
    }
    let first = hours(from, to).next().unwrap_or(from);
    for (day, folder) in day_folders(store, RAW).await? {
        if day.saturating_add(DAY_NS) <= first || day >= to {
            continue;
        }
        // The objects of the day's hours in the range, as the listing of
        // each hour's folder would give them.
        out.extend(
            store
                .list_sizes(&format!("{RAW}/{folder}/"))
                .await?
                .into_iter()
                .filter(parquet)
                .filter(|l| {
                    partition_start(&l.key).is_some_and(|h| {
                        h >= first
                            && h < to
                            && l.key.starts_with(&format!("{RAW}/{}/", hour_partition(h)))
                    })
                }),
        );
    }
    Ok(out)
}

/// The readings of one raw object, all of them; `None` if it is gone.
pub async fn read_raw(store: &Store, key: &str) -> Result<Option<Readings>, LakeError> {
    let Some(data) = store.get(key).await? else {
        return Ok(None);
    };
    let name = key.to_string();
    Ok(Some(
        blocking(key, move || read_readings_parquet_bytes(data, &name)).await??,
    ))
}

/// The readings of `[from, to)` from `raw/`, one batch per object: the
/// objects of those hours in [`list_raw`]'s order (fetched and decoded a
/// few at a time; one gone since the listing is left out), each cut to the
/// range, rows in file order.
pub async fn load_raw_objects(
    store: &Store,
    from: i64,
    to: i64,
) -> Result<Vec<Readings>, LakeError> {
    let listed = list_raw(store, from, to).await?;
    let mut files: Vec<Readings> = stream::iter(listed)
        .map(|l| async move { read_raw(store, &l.key).await })
        .buffered(8)
        .try_collect::<Vec<Option<Readings>>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
    for f in &mut files {
        f.retain_time(Some(from), Some(to));
    }
    Ok(files)
}

/// The readings of `[from, to)` from `raw/` in one batch (series interned
/// once): [`load_raw_objects`] one after the other.
pub async fn load_raw(store: &Store, from: i64, to: i64) -> Result<Readings, LakeError> {
    let files = load_raw_objects(store, from, to).await?;
    let refs: Vec<&Readings> = files.iter().collect();
    Ok(Readings::concat(&refs))
}

/// A raw object of a window, as [`raw_in_window`] found it.
#[derive(Debug, Clone)]
pub struct RawInWindow {
    /// The object as listed (its version is what later reads ask for).
    pub listed: Listed,
    /// Its row groups that may hold readings of the window, with their
    /// row counts (see [`window_row_groups`]).
    pub groups: Vec<(usize, u64)>,
    /// Its pairs with readings in the window, if asked for (see
    /// [`scan_raw_parquet_sparse`]).
    pub keys: Vec<(String, String)>,
}

/// The raw objects of `[from, to)` with row groups that may hold its
/// readings, in key order; with `scan`, also the pairs they hold readings
/// of. Only the objects' footers are fetched, by range, and with `scan` the
/// TS, Device and Tag column chunks of those objects: never the values.
pub async fn raw_in_window(
    store: &Store,
    from: i64,
    to: i64,
    scan: bool,
) -> Result<Vec<RawInWindow>, LakeError> {
    let objects = list_raw(store, from, to).await?;
    let found: Vec<Option<RawInWindow>> = stream::iter(objects)
        .map(|listed| async move {
            let (key, size) = (listed.key.clone(), listed.size);
            let version = listed.version.as_deref();
            // Gone since it was listed: not part of the window. (Errors
            // name the object.)
            let Some(footer) = read_footer(store, &key, size, version).await? else {
                return Ok::<_, LakeError>(None);
            };
            let groups = window_row_groups(&footer.meta, &key, from, to)?;
            if groups.is_empty() || !scan {
                return Ok(Some(RawInWindow {
                    listed,
                    groups,
                    keys: Vec::new(),
                }));
            }
            let ranges = scan_ranges(&footer.meta, size, &key)?;
            let Some(object) = fetch_ranges(store, &key, size, version, &footer, &ranges).await?
            else {
                return Ok(None);
            };
            let meta = footer.meta;
            let name = key.clone();
            let keys = blocking(&key, move || {
                scan_raw_parquet_sparse(object, meta, &name, from, to)
            })
            .await??
            .keys;
            Ok(Some(RawInWindow {
                listed,
                groups,
                keys,
            }))
        })
        .buffered(8)
        .try_collect()
        .await?;
    Ok(found
        .into_iter()
        .flatten()
        .filter(|r| !r.groups.is_empty())
        .collect())
}

/// Reads row groups `groups` of the raw object `listed` by ranged reads:
/// its footer, then those row groups' column chunks (the rest of the
/// object is not fetched). Each read asks for the version listed.
///
/// `None` if the object is gone. [`LakeError::Changed`] if it is no longer
/// the object listed (replaced, cut short, or without those row groups);
/// a store that fails to answer fails with [`LakeError::Store`] (retrying
/// may help).
pub async fn read_raw_row_groups(
    store: &Store,
    listed: &Listed,
    groups: &[usize],
) -> Result<Option<Readings>, LakeError> {
    let (key, size) = (listed.key.as_str(), listed.size);
    let version = listed.version.as_deref();
    // What the object says does not fit what was listed (or it was
    // replaced since); a store that fails to answer says so itself.
    let changed = |why: LakeError| match why {
        LakeError::Store(e) if !matches!(e, StoreError::Changed { .. }) => LakeError::Store(e),
        why => LakeError::Changed {
            key: key.to_string(),
            reason: why.to_string(),
        },
    };
    let Some(footer) = read_footer(store, key, size, version)
        .await
        .map_err(changed)?
    else {
        return Ok(None);
    };
    let ranges =
        row_group_ranges(&footer.meta, size, groups, key).map_err(|e| changed(e.into()))?;
    let Some(object) = fetch_ranges(store, key, size, version, &footer, &ranges)
        .await
        .map_err(changed)?
    else {
        return Ok(None);
    };
    let (name, meta, groups) = (key.to_string(), footer.meta, groups.to_vec());
    Ok(Some(
        blocking(key, move || {
            read_readings_parquet_sparse(object, meta, &name, &groups)
        })
        .await??,
    ))
}

/// Byte ranges of a raw object at most this far apart are fetched in one
/// request.
const COALESCE_GAP: u64 = 1 << 20;

/// A raw object's footer: its Parquet metadata, and the bytes read from its
/// end to find it (which may hold some column chunks too).
struct Footer {
    meta: Arc<ParquetMetaData>,
    tail: (u64, bytes::Bytes),
}

/// The footer of a raw object of `size` bytes, from a ranged read of its
/// end (two when its metadata is longer than [`FOOTER_GUESS`]); `None` if
/// the object is gone.
async fn read_footer(
    store: &Store,
    key: &str,
    size: u64,
    version: Option<&str>,
) -> Result<Option<Footer>, LakeError> {
    let bad = |reason: String| LakeError::Object {
        key: key.to_string(),
        reason,
    };
    if size < 12 {
        return Err(bad(format!(
            "{size} bytes are too short for a Parquet file"
        )));
    }
    let mut from = size.saturating_sub(FOOTER_GUESS);
    loop {
        let Some(tail) = store
            .get_ranges_if(key, std::slice::from_ref(&(from..size)), version)
            .await?
            .and_then(|mut parts| parts.pop())
        else {
            return Ok(None);
        };
        if tail.len() as u64 != size - from {
            return Err(bad(format!(
                "it has {} bytes, not {size}",
                from + tail.len() as u64
            )));
        }
        match decode_parquet_footer(&tail, size, key) {
            Ok(meta) => {
                return Ok(Some(Footer {
                    meta,
                    tail: (from, tail),
                }))
            }
            // Longer metadata: read it whole, once.
            Err(Ok(need)) if size - need < from => from = size - need,
            Err(Ok(n)) => {
                return Err(bad(format!(
                    "its footer names {n} bytes of metadata, then more"
                )))
            }
            Err(Err(e)) => return Err(e.into()),
        }
    }
}

/// Byte `ranges` of an object of `size` bytes as a [`SparseObject`], with
/// its footer's tail: ranges the tail holds are not fetched again, the
/// others are (those close together in one request). `None` if the object
/// is gone.
async fn fetch_ranges(
    store: &Store,
    key: &str,
    size: u64,
    version: Option<&str>,
    footer: &Footer,
    ranges: &[std::ops::Range<u64>],
) -> Result<Option<SparseObject>, LakeError> {
    let (tail_start, tail) = &footer.tail;
    // Ranges close together are one request (the bytes between them are
    // read too), as object_store's own `get_ranges` does.
    let missing = merge_ranges(
        ranges
            .iter()
            .filter(|r| r.start < *tail_start)
            .cloned()
            .collect(),
        COALESCE_GAP,
    );
    let mut known = vec![(*tail_start, tail.clone())];
    if !missing.is_empty() {
        let Some(parts) = store.get_ranges_if(key, &missing, version).await? else {
            return Ok(None);
        };
        for (r, b) in missing.iter().zip(parts) {
            if (b.len() as u64) < r.end - r.start {
                return Err(LakeError::Object {
                    key: key.to_string(),
                    reason: format!("bytes {}..{} are not all there", r.start, r.end),
                });
            }
            known.push((r.start, b));
        }
    }
    Ok(Some(SparseObject::new(size, known)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::test_readings as readings;
    use fleetscore_core::{parse_ts, MAX_TS, MIN_TS};

    #[test]
    fn readings_of_1677_are_refused_not_filed_in_2262() {
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

    /// A range listed hour by hour and one listed day by day give the
    /// objects a listing of each hour's folder gives, in time order; other
    /// files, and objects outside the range, are left out.
    #[tokio::test]
    async fn listing_by_hour_and_by_day_agree() {
        let store = Store::open("memory://").unwrap();
        let t0 = parse_ts("2024-03-05 00:00:00").unwrap();
        let mut want = Vec::new();
        for h in [0i64, 1, 5, 23, 24, 30, 71] {
            let r = readings(&[(t0 + h * HOUR_NS + 7, "d", "t", h as f64)]);
            for origin in [&b"a"[..], b"b"] {
                for (key, data) in raw_objects(&r, origin).unwrap() {
                    store.put(&key, data).await.unwrap();
                    want.push((h, key));
                }
            }
        }
        store
            .put("raw/date=2024-03-05/hour=01/notes.txt", b"x".to_vec())
            .await
            .unwrap();
        store
            .put("raw/date=2024-03-05/hour=1/part-x.parquet", b"x".to_vec())
            .await
            .unwrap();
        store
            .put("raw/date=oops/x.parquet", b"x".to_vec())
            .await
            .unwrap();
        want.sort();
        let keys = |from: i64, to: i64| -> Vec<String> {
            want.iter()
                .filter(|(h, _)| t0 + h * HOUR_NS + HOUR_NS > from && t0 + h * HOUR_NS < to)
                .map(|(_, k)| k.clone())
                .collect()
        };
        for (from, to) in [
            (t0, t0 + 2 * HOUR_NS),
            (t0 + HOUR_NS + 1, t0 + 24 * HOUR_NS + 1),
            (t0 + 30 * 60 * 1_000_000_000, t0 + 72 * HOUR_NS),
            (t0 - 1000 * HOUR_NS, t0 + 31 * HOUR_NS),
            (MIN_TS - 5, MAX_TS),
            (t0 + 2 * HOUR_NS, t0 + 5 * HOUR_NS),
        ] {
            let got: Vec<String> = list_raw(&store, from, to)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.key)
                .collect();
            assert_eq!(got, keys(from, to), "[{from}, {to})");
        }
    }

    /// `load_raw` keeps the range's readings, objects in time order then
    /// key order, rows in file order; `read_raw_row_groups` reads the
    /// row groups `raw_in_window` found, and refuses an object replaced
    /// since it was listed.
    #[tokio::test]
    async fn reading_a_range_whole_and_by_row_groups() {
        let store = Store::open("memory://").unwrap();
        let t0 = parse_ts("2024-03-05 10:00:00").unwrap();
        let m = 60_000_000_000i64;
        let rows = [
            (t0 + m, "d1", "a", 1.0),
            (t0 + 2 * m, "d2", "a", 2.0),
            (t0 + 61 * m, "d1", "a", 3.0),
            (t0 + 125 * m, "d1", "b", 4.0),
        ];
        for (key, data) in raw_objects(&readings(&rows), b"x").unwrap() {
            store.put(&key, data).await.unwrap();
        }
        let r = load_raw(&store, t0 + 2 * m, t0 + 125 * m).await.unwrap();
        assert_eq!(r.ts(), [t0 + 2 * m, t0 + 61 * m]);
        assert_eq!(r.values(), [2.0, 3.0]);
        assert!(load_raw(&store, t0 - HOUR_NS, t0).await.unwrap().is_empty());

        let found = raw_in_window(&store, t0 + 60 * m, t0 + 120 * m, true)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].keys, [("d1".to_string(), "a".to_string())]);
        let groups: Vec<usize> = found[0].groups.iter().map(|g| g.0).collect();
        let listed = &found[0].listed;
        let got = read_raw_row_groups(&store, listed, &groups)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.ts(), got.values()), (&[t0 + 61 * m][..], &[3.0][..]));
        // Replaced since it was listed (same bytes, another version), or
        // cut short: refused, naming the object.
        let data = store.get(&listed.key).await.unwrap().unwrap();
        for again in [data.clone(), data.slice(..data.len() / 2)] {
            store.put(&listed.key, again).await.unwrap();
            match read_raw_row_groups(&store, listed, &groups).await {
                Err(LakeError::Changed { key, .. }) => assert_eq!(key, listed.key),
                other => panic!("{other:?}"),
            }
        }
        store.delete(&listed.key).await.unwrap();
        assert!(read_raw_row_groups(&store, listed, &groups)
            .await
            .unwrap()
            .is_none());
    }
}
