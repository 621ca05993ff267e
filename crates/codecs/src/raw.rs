//! Parquet in memory, for the object store: readings (the `raw/` layout)
//! and any record batch (the `windows/` layout) to bytes, and readings back.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};

use crate::readings::{append_batch, Columns, Interner};
use crate::{CodecError, Readings};

/// The schema of stored raw readings: `ts` Timestamp(Nanosecond, "UTC"),
/// `device` Utf8, `tag` Utf8, `value` Float64, none nullable.
pub fn raw_readings_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new(
                    "ts",
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                    false,
                ),
                Field::new("device", DataType::Utf8, false),
                Field::new("tag", DataType::Utf8, false),
                Field::new("value", DataType::Float64, false),
            ]))
        })
        .clone()
}

/// Writes `rows` of `readings` (indices, in the order given) as a Parquet
/// file with [`raw_readings_schema`], in memory. `name` is only used in
/// error messages (e.g. the object key).
pub fn write_readings_parquet(
    readings: &Readings,
    rows: &[usize],
    name: &str,
) -> Result<Vec<u8>, CodecError> {
    let (ts_col, value_col, key_col) = (readings.ts(), readings.values(), readings.key_ids());
    let ts = TimestampNanosecondArray::from_iter_values(rows.iter().map(|&r| ts_col[r]))
        .with_timezone("UTC");
    let pair = |r: usize| readings.key(key_col[r]);
    let device = StringArray::from_iter_values(rows.iter().map(|&r| pair(r).0));
    let tag = StringArray::from_iter_values(rows.iter().map(|&r| pair(r).1));
    let value = Float64Array::from_iter_values(rows.iter().map(|&r| value_col[r]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ts),
        Arc::new(device),
        Arc::new(tag),
        Arc::new(value),
    ];
    let batch =
        RecordBatch::try_new(raw_readings_schema(), columns).map_err(|e| CodecError::Parquet {
            path: name.into(),
            reason: e.to_string(),
        })?;
    write_batch_parquet(&batch, name)
}

/// Writes one record batch as a Parquet file (Snappy), in memory. `name`
/// is only used in error messages.
pub fn write_batch_parquet(batch: &RecordBatch, name: &str) -> Result<Vec<u8>, CodecError> {
    let pq = |e: &dyn std::fmt::Display| CodecError::Parquet {
        path: name.into(),
        reason: e.to_string(),
    };
    // Row groups of at most 256k rows: a planner splits a window's reading
    // among workers by row group, and a reader can skip row groups by time.
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(256 * 1024))
        .build();
    let mut buf = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(|e| pq(&e))?;
    writer.write(batch).map_err(|e| pq(&e))?;
    writer.close().map_err(|e| pq(&e))?;
    Ok(buf)
}

/// Every record batch of a Parquet object, as stored. `name` is only used
/// in error messages.
pub fn read_batches_parquet_bytes(data: Bytes, name: &str) -> Result<Vec<RecordBatch>, CodecError> {
    let pq = |e: &dyn std::fmt::Display| CodecError::Parquet {
        path: name.into(),
        reason: e.to_string(),
    };
    ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| pq(&e))?
        .build()
        .map_err(|e| pq(&e))?
        .map(|b| b.map_err(|e| pq(&e)))
        .collect()
}

/// Reads readings from Parquet bytes (e.g. an object of the store's `raw/`
/// layout, or any Parquet file `read_readings` accepts). `name` is only
/// used in error messages.
pub fn read_readings_parquet_bytes(data: Bytes, name: &str) -> Result<Readings, CodecError> {
    read_readings_parquet_row_groups(data, name, None)
}

/// [`dictionary_reader`] over an object whose footer was read apart.
fn dictionary_reader_with_metadata<R: ChunkReader + 'static>(
    data: R,
    meta: Arc<ParquetMetaData>,
    path: &Path,
) -> Result<ParquetRecordBatchReaderBuilder<R>, CodecError> {
    let plain = ArrowReaderMetadata::try_new(Arc::clone(&meta), ArrowReaderOptions::new())
        .map_err(|e| CodecError::Parquet {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if let Some(schema) = crate::readings::dictionary_hint(plain.schema()) {
        let options = ArrowReaderOptions::new().with_schema(schema);
        if let Ok(hinted) = ArrowReaderMetadata::try_new(meta, options) {
            return Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(
                data, hinted,
            ));
        }
    }
    Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(
        data, plain,
    ))
}

/// A Parquet reader of readings whose text Device and Tag columns are read
/// as dictionaries (as Parquet stores them): each distinct pair is then
/// handled once per batch instead of once per row. The result is the same.
fn dictionary_reader(
    data: Bytes,
    path: &Path,
) -> Result<ParquetRecordBatchReaderBuilder<Bytes>, CodecError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(data.clone()).map_err(|e| {
        CodecError::Parquet {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    if let Some(schema) = crate::readings::dictionary_hint(builder.schema()) {
        let options = ArrowReaderOptions::new().with_schema(schema);
        if let Ok(meta) = ArrowReaderMetadata::try_new(builder.metadata().clone(), options) {
            return Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(
                data, meta,
            ));
        }
    }
    Ok(builder)
}

/// [`read_readings_parquet_bytes`] of only the row groups `groups` (by
/// index, in the order given; `None`: all of them).
pub fn read_readings_parquet_row_groups(
    data: Bytes,
    name: &str,
    groups: Option<&[usize]>,
) -> Result<Readings, CodecError> {
    let path = Path::new(name);
    read_readings_with(dictionary_reader(data, path)?, path, groups)
}

/// [`read_readings_parquet_row_groups`] from the parts of an object that
/// [`row_group_ranges`] named (fetched by range), with its footer's
/// metadata ([`decode_parquet_footer`]).
pub fn read_readings_parquet_sparse(
    object: SparseObject,
    meta: Arc<ParquetMetaData>,
    name: &str,
    groups: &[usize],
) -> Result<Readings, CodecError> {
    let path = Path::new(name);
    let builder = dictionary_reader_with_metadata(object, meta, path)?;
    read_readings_with(builder, path, Some(groups))
}

fn read_readings_with<R: ChunkReader + 'static>(
    mut builder: ParquetRecordBatchReaderBuilder<R>,
    path: &Path,
    groups: Option<&[usize]>,
) -> Result<Readings, CodecError> {
    let pq = |e: &dyn std::fmt::Display| CodecError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let meta = builder.metadata().clone();
    let rows = match groups {
        None => usize::try_from(meta.file_metadata().num_rows()).unwrap_or(0),
        Some(groups) => {
            let mut rows = 0usize;
            for &g in groups {
                let rg = meta.row_groups().get(g).ok_or_else(|| {
                    pq(&format_args!(
                        "it has {} row groups, not a row group {g}: the object changed",
                        meta.num_row_groups()
                    ))
                })?;
                rows += usize::try_from(rg.num_rows()).unwrap_or(0);
            }
            builder = builder.with_row_groups(groups.to_vec());
            rows
        }
    };
    // Room for every row up front (no regrowth copies), within reason.
    let rows = rows.min(1 << 26);
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| pq(&e))?;
    let mut out = Columns::with_capacity(rows);
    let mut interner = Interner::default();
    let mut row0 = 0;
    for batch in reader {
        let batch = batch.map_err(|e| pq(&e))?;
        crate::readings::check_columns(path, batch.schema().as_ref())?;
        append_batch(path, &batch, row0, &mut out, &mut interner)?;
        row0 += batch.num_rows();
    }
    Ok(out.into_readings(&interner.keys))
}

/// What planning needs of one Parquet object of readings: the row count of
/// each row group, and the distinct (device, tag) pairs of its rows with
/// `from <= ts < to`, in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawScan {
    /// Rows per row group, in file order.
    pub row_groups: Vec<u64>,
    /// Distinct pairs with a reading in the range.
    pub keys: Vec<(String, String)>,
    /// The object's length, bytes (for ranged reads of it later).
    pub size: u64,
}

/// Scans a Parquet object of readings for [`RawScan`]: only the TS, Device
/// and Tag columns are decoded (Device and Tag as dictionaries, so each
/// distinct pair of a dictionary is named once), not the values.
pub fn scan_raw_parquet_bytes(
    data: Bytes,
    name: &str,
    from: i64,
    to: i64,
) -> Result<RawScan, CodecError> {
    let path = Path::new(name);
    let size = data.len() as u64;
    scan_with(dictionary_reader(data, path)?, path, size, from, to)
}

/// [`scan_raw_parquet_bytes`] from the parts of an object that
/// [`scan_ranges`] named (fetched by range), with its footer's metadata.
pub fn scan_raw_parquet_sparse(
    object: SparseObject,
    meta: Arc<ParquetMetaData>,
    name: &str,
    from: i64,
    to: i64,
) -> Result<RawScan, CodecError> {
    let path = Path::new(name);
    let size = object.len();
    let builder = dictionary_reader_with_metadata(object, meta, path)?;
    scan_with(builder, path, size, from, to)
}

/// The Arrow view of a Parquet object's footer (its schema as Arrow reads
/// it); `path` names the object in errors.
fn arrow_metadata(
    meta: &Arc<ParquetMetaData>,
    path: &Path,
) -> Result<ArrowReaderMetadata, CodecError> {
    ArrowReaderMetadata::try_new(Arc::clone(meta), ArrowReaderOptions::new()).map_err(|e| {
        CodecError::Parquet {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })
}

/// The byte ranges a scan reads ([`scan_raw_parquet_sparse`]) of an
/// object of `size` bytes: the TS, Device and Tag column chunks of every
/// row group, not the values.
pub fn scan_ranges(
    meta: &Arc<ParquetMetaData>,
    size: u64,
    name: &str,
) -> Result<Vec<std::ops::Range<u64>>, CodecError> {
    let path = Path::new(name);
    let arrow = arrow_metadata(meta, path)?;
    let idx = crate::readings::check_columns(path, arrow.schema())?;
    let descr = meta.file_metadata().schema_descr();
    let groups: Vec<usize> = (0..meta.num_row_groups()).collect();
    chunk_ranges(meta, size, &groups, name, |leaf| {
        idx[..3].contains(&descr.get_column_root_idx(leaf))
    })
}

/// The row groups of a Parquet object of readings that may hold readings
/// with `from <= ts < to` (ns), with their row counts, in file order: from
/// the TS column's statistics in the footer, no data read. A row group
/// whose statistics are missing or of another kind is kept (whoever reads
/// it filters by time anyway); one they place wholly outside is not.
pub fn window_row_groups(
    meta: &Arc<ParquetMetaData>,
    name: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(usize, u64)>, CodecError> {
    use parquet::file::statistics::Statistics;
    let path = Path::new(name);
    let arrow = arrow_metadata(meta, path)?;
    let idx = crate::readings::check_columns(path, arrow.schema())?;
    // Nanoseconds per unit of the stored timestamps.
    let per = match arrow.schema().field(idx[0]).data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1,
        other => {
            return Err(CodecError::Schema {
                path: path.to_path_buf(),
                reason: format!("column TS has type {other}; expected a timestamp"),
            })
        }
    };
    let descr = meta.file_metadata().schema_descr();
    let leaf = (0..descr.num_columns()).find(|&c| descr.get_column_root_idx(c) == idx[0]);
    let mut out = Vec::new();
    for (g, rg) in meta.row_groups().iter().enumerate() {
        let rows = u64::try_from(rg.num_rows()).unwrap_or(0);
        if rows == 0 {
            continue;
        }
        let span = leaf
            .and_then(|c| match rg.column(c).statistics() {
                Some(Statistics::Int64(s)) => Some((*s.min_opt()?, *s.max_opt()?)),
                _ => None,
            })
            .and_then(|(lo, hi)| Some((lo.checked_mul(per)?, hi.checked_mul(per)?)));
        match span {
            Some((lo, hi)) if hi < from || lo >= to => {}
            _ => out.push((g, rows)),
        }
    }
    Ok(out)
}

fn scan_with<R: ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<R>,
    path: &Path,
    size: u64,
    from: i64,
    to: i64,
) -> Result<RawScan, CodecError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type};
    use parquet::arrow::ProjectionMask;

    let pq = |e: &dyn std::fmt::Display| CodecError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let row_groups = builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| u64::try_from(rg.num_rows()).unwrap_or(0))
        .collect();
    let idx = crate::readings::check_columns(path, builder.schema())?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), idx[..3].iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| pq(&e))?;
    let mut names = PairNames::default();
    let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
    // The pairs seen under the current dictionaries (those of a row group,
    // shared by its batches), by dictionary keys; named (interned) once
    // per dictionary, not once per batch: every batch of time-sorted
    // readings holds nearly every pair.
    let mut dict: Option<(arrow::array::ArrayData, arrow::array::ArrayData)> = None;
    let mut seen = SeenPairs::default();
    for batch in reader {
        let batch = batch.map_err(|e| pq(&e))?;
        let n = batch.num_rows();
        let ts = crate::readings::column(&batch, "TS");
        let ts = match ts.data_type() {
            DataType::Timestamp(..) => arrow::compute::cast(ts, &ns)
                .and_then(|t| arrow::compute::cast(&t, &DataType::Int64))
                .map_err(|e| pq(&e))?,
            other => {
                return Err(CodecError::Schema {
                    path: path.to_path_buf(),
                    reason: format!("column TS has type {other}; expected a timestamp"),
                })
            }
        };
        if ts.null_count() > 0 {
            return Err(pq(&"column TS holds nulls"));
        }
        let ts = ts.as_primitive::<Int64Type>().values();
        let inside = |r: usize| ts[r] >= from && ts[r] < to;
        let d = crate::readings::column(&batch, "Device");
        let t = crate::readings::column(&batch, "Tag");
        if let (Some(dd), Some(td)) = (
            d.as_dictionary_opt::<Int32Type>(),
            t.as_dictionary_opt::<Int32Type>(),
        ) {
            if let (Some(dv), Some(tv)) = (
                dd.values().as_string_opt::<i32>(),
                td.values().as_string_opt::<i32>(),
            ) {
                if dd.null_count() + td.null_count() > 0 {
                    return Err(pq(&"column Device or Tag holds nulls"));
                }
                let (dvd, tvd) = (dv.to_data(), tv.to_data());
                let same = dict
                    .as_ref()
                    .is_some_and(|(a, b)| a.ptr_eq(&dvd) && b.ptr_eq(&tvd));
                if !same {
                    if let Some((a, b)) = dict.take() {
                        seen.name(&a, &b, &mut names);
                    }
                    seen.reset(dv.len(), tv.len());
                    dict = Some((dvd, tvd));
                }
                let (dk, tk) = (dd.keys().values(), td.keys().values());
                for r in (0..n).filter(|&r| inside(r)) {
                    seen.mark(dk[r], tk[r]);
                }
                continue;
            }
        }
        let d = crate::readings::as_strings(path, d, "Device")?;
        let t = crate::readings::as_strings(path, t, "Tag")?;
        let (ds, tss) = (d.as_string::<i32>(), t.as_string::<i32>());
        for r in (0..n).filter(|&r| inside(r)) {
            let (d, t) = (names.device(ds.value(r)), names.tag(tss.value(r)));
            names.pair(d, t, || (ds.value(r).to_string(), tss.value(r).to_string()));
        }
    }
    if let Some((a, b)) = dict.take() {
        seen.name(&a, &b, &mut names);
    }
    Ok(RawScan {
        row_groups,
        keys: names.keys,
        size,
    })
}

/// Distinct (device, tag) pairs, in order of first occurrence, with the
/// devices and tags numbered so that a pair is looked up as two numbers.
#[derive(Default)]
struct PairNames {
    devices: rustc_hash::FxHashMap<String, u32>,
    tags: rustc_hash::FxHashMap<String, u32>,
    pairs: rustc_hash::FxHashSet<u64>,
    keys: Vec<(String, String)>,
}

impl PairNames {
    fn device(&mut self, d: &str) -> u32 {
        number(&mut self.devices, d)
    }

    fn tag(&mut self, t: &str) -> u32 {
        number(&mut self.tags, t)
    }

    fn pair(&mut self, d: u32, t: u32, name: impl FnOnce() -> (String, String)) {
        if self.pairs.insert(u64::from(d) << 32 | u64::from(t)) {
            self.keys.push(name());
        }
    }
}

fn number(map: &mut rustc_hash::FxHashMap<String, u32>, s: &str) -> u32 {
    if let Some(&n) = map.get(s) {
        return n;
    }
    let n = map.len() as u32;
    map.insert(s.to_string(), n);
    n
}

/// Which (device, tag) dictionary key pairs occur, in order of first
/// occurrence: a dense table for dictionaries of up to 4M cells, else a
/// hash set.
#[derive(Default)]
struct SeenPairs {
    tags: usize,
    dense: Vec<bool>,
    sparse: rustc_hash::FxHashSet<(i32, i32)>,
    dense_ok: bool,
    order: Vec<(i32, i32)>,
}

impl SeenPairs {
    fn reset(&mut self, devices: usize, tags: usize) {
        self.tags = tags;
        self.order.clear();
        self.sparse.clear();
        match devices.checked_mul(tags).filter(|&c| c <= 1 << 22) {
            Some(cells) => {
                self.dense.clear();
                self.dense.resize(cells, false);
                self.dense_ok = true;
            }
            None => self.dense_ok = false,
        }
    }

    fn mark(&mut self, d: i32, t: i32) {
        let new = if self.dense_ok {
            let cell = &mut self.dense[d as usize * self.tags + t as usize];
            !std::mem::replace(cell, true)
        } else {
            self.sparse.insert((d, t))
        };
        if new {
            self.order.push((d, t));
        }
    }

    /// Names the pairs seen, by their dictionaries' values: each distinct
    /// device and tag of the dictionaries is looked up once, each pair is
    /// then a pair of numbers.
    fn name(
        &self,
        devices: &arrow::array::ArrayData,
        tags: &arrow::array::ArrayData,
        names: &mut PairNames,
    ) {
        let dv = arrow::array::StringArray::from(devices.clone());
        let tv = arrow::array::StringArray::from(tags.clone());
        let mut dev = vec![u32::MAX; arrow::array::Array::len(&dv)];
        let mut tag = vec![u32::MAX; arrow::array::Array::len(&tv)];
        for &(d, t) in &self.order {
            let (d, t) = (d as usize, t as usize);
            if dev[d] == u32::MAX {
                dev[d] = names.device(dv.value(d));
            }
            if tag[t] == u32::MAX {
                tag[t] = names.tag(tv.value(t));
            }
            names.pair(dev[d], tag[t], || {
                (dv.value(d).to_string(), tv.value(t).to_string())
            });
        }
    }
}

/// Some byte ranges of a Parquet object, fetched apart (its footer, the
/// column chunks of some row groups): enough to read those row groups
/// without the rest of the object. Reading outside them is an error.
#[derive(Debug, Clone)]
pub struct SparseObject {
    len: u64,
    /// `(start, bytes)`, by start, not overlapping.
    parts: Arc<Vec<(u64, Bytes)>>,
}

impl SparseObject {
    /// An object of `len` bytes of which `parts` (`(start, bytes)`) are
    /// known.
    pub fn new(len: u64, mut parts: Vec<(u64, Bytes)>) -> SparseObject {
        parts.sort_by_key(|(start, _)| *start);
        SparseObject {
            len,
            parts: Arc::new(parts),
        }
    }

    /// The known bytes from `start` to the end of the part holding it,
    /// if that part holds `length` bytes from there.
    fn tail(&self, start: u64, length: u64) -> parquet::errors::Result<Bytes> {
        let i = self.parts.partition_point(|(s, _)| *s <= start);
        if let Some((s, b)) = i.checked_sub(1).map(|i| &self.parts[i]) {
            let off = (start - s) as usize;
            if off as u64 + length <= b.len() as u64 {
                return Ok(b.slice(off..));
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "bytes {start}..{} of the object were not fetched",
            start + length
        )))
    }
}

impl Length for SparseObject {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for SparseObject {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        // At least a byte: a reader of nothing is not what was asked for.
        Ok(self.tail(start, 1)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        Ok(self.tail(start, length as u64)?.slice(..length))
    }
}

/// Bytes read from the end of an object to find its Parquet footer: enough
/// for the metadata of most objects, so one ranged read does.
pub const FOOTER_GUESS: u64 = 64 * 1024;

/// The metadata of a Parquet object of `len` bytes from its last bytes
/// `tail`; `Err(Some(n))` when the metadata needs the last `n` bytes and
/// `tail` is shorter.
pub fn decode_parquet_footer(
    tail: &[u8],
    len: u64,
    name: &str,
) -> Result<Arc<ParquetMetaData>, Result<u64, CodecError>> {
    let bad = |reason: String| {
        Err(CodecError::Parquet {
            path: Path::new(name).to_path_buf(),
            reason,
        })
    };
    if tail.len() < 8 || len < 12 {
        return Err(bad(format!("{len} bytes are too short for a Parquet file")));
    }
    let last: &[u8; 8] = tail[tail.len() - 8..].try_into().expect("8 bytes");
    let footer = match FooterTail::try_new(last) {
        Ok(f) => f,
        Err(e) => return Err(bad(e.to_string())),
    };
    let need = footer.metadata_length() as u64 + 8;
    // Room for the leading magic too.
    if need + 4 > len {
        return Err(bad(format!(
            "its footer names {need} bytes of metadata in a {len}-byte file"
        )));
    }
    if need > tail.len() as u64 {
        return Err(Ok(need));
    }
    let meta = &tail[tail.len() - need as usize..tail.len() - 8];
    ParquetMetaDataReader::decode_metadata(meta)
        .map(Arc::new)
        .map_err(|e| bad(e.to_string()))
}

/// The byte ranges of every column chunk of row groups `groups` of an
/// object of `size` bytes, merged where they touch (a run of row groups is
/// one range).
pub fn row_group_ranges(
    meta: &ParquetMetaData,
    size: u64,
    groups: &[usize],
    name: &str,
) -> Result<Vec<std::ops::Range<u64>>, CodecError> {
    chunk_ranges(meta, size, groups, name, |_| true)
}

/// The byte ranges of the column chunks (leaf columns `keep`) of row
/// groups `groups`, merged where they touch. A chunk the metadata places
/// outside the object (before its leading magic, past its end, or at a
/// negative offset) is an error, not a read.
fn chunk_ranges(
    meta: &ParquetMetaData,
    size: u64,
    groups: &[usize],
    name: &str,
    keep: impl Fn(usize) -> bool,
) -> Result<Vec<std::ops::Range<u64>>, CodecError> {
    let bad = |reason: String| CodecError::Parquet {
        path: Path::new(name).to_path_buf(),
        reason,
    };
    let mut ranges = Vec::new();
    for &g in groups {
        let rg = meta
            .row_groups()
            .get(g)
            .ok_or_else(|| CodecError::Parquet {
                path: Path::new(name).to_path_buf(),
                reason: format!(
                    "it has {} row groups, not a row group {g}: the object changed",
                    meta.num_row_groups()
                ),
            })?;
        for (leaf, c) in rg.columns().iter().enumerate() {
            if !keep(leaf) {
                continue;
            }
            // As `byte_range()`, which asserts instead of erring.
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let range = u64::try_from(start)
                .ok()
                .zip(u64::try_from(c.compressed_size()).ok())
                .and_then(|(s, n)| Some(s..s.checked_add(n)?))
                .filter(|r| r.start >= 4 && r.end <= size);
            match range {
                Some(r) if r.is_empty() => {}
                Some(r) => ranges.push(r),
                None => {
                    return Err(bad(format!(
                        "its metadata places column {} of row group {g} at {start}+{} bytes, \
                         outside the {size}-byte object",
                        c.column_path(),
                        c.compressed_size()
                    )))
                }
            }
        }
    }
    Ok(merge_ranges(ranges, 0))
}

/// Byte ranges sorted and merged where they overlap or lie at most `gap`
/// bytes apart (the bytes between are then read too).
pub fn merge_ranges(mut ranges: Vec<std::ops::Range<u64>>, gap: u64) -> Vec<std::ops::Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(m) if r.start <= m.end.saturating_add(gap) => m.end = m.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_round_trip_through_bytes() {
        let r = Readings::from_columns(
            vec![3, 1, 2],
            vec![30.0, 10.0, 20.0],
            vec![0, 1, 0],
            &[("d1", "t"), ("d2", "t")],
        )
        .unwrap();
        let bytes = write_readings_parquet(&r, &[1, 2], "x").unwrap();
        let back = read_readings_parquet_bytes(Bytes::from(bytes), "x").unwrap();
        assert_eq!(back.ts(), [1, 2]);
        assert_eq!(back.values(), [10.0, 20.0]);
        assert_eq!(back.row(0).device, "d2");
        assert_eq!(back.row(1).device, "d1");
    }

    #[test]
    fn a_scan_names_the_pairs_in_range_and_the_row_groups() {
        let r = Readings::from_columns(
            vec![1, 2, 3, 4, 5],
            vec![1.0; 5],
            vec![0, 1, 0, 2, 1],
            &[("d1", "t"), ("d2", "t"), ("d3", "u")],
        )
        .unwrap();
        let rows: Vec<usize> = (0..5).collect();
        let bytes = Bytes::from(write_readings_parquet(&r, &rows, "x").unwrap());
        let all = scan_raw_parquet_bytes(bytes.clone(), "x", i64::MIN, i64::MAX).unwrap();
        assert_eq!(all.row_groups, vec![5]);
        assert_eq!(
            all.keys,
            vec![
                ("d1".to_string(), "t".to_string()),
                ("d2".into(), "t".into()),
                ("d3".into(), "u".into())
            ]
        );
        // ts 4 (d3) is outside [2, 4).
        let some = scan_raw_parquet_bytes(bytes.clone(), "x", 2, 4).unwrap();
        assert_eq!(
            some.keys,
            vec![
                ("d2".to_string(), "t".to_string()),
                ("d1".into(), "t".into())
            ]
        );
        assert!(scan_raw_parquet_bytes(bytes.clone(), "x", 6, 9)
            .unwrap()
            .keys
            .is_empty());
        // Row groups by index; one that is not there is named.
        let back = read_readings_parquet_row_groups(bytes.clone(), "x", Some(&[0])).unwrap();
        assert_eq!(back.ts(), r.ts());
        let err = read_readings_parquet_row_groups(bytes, "x", Some(&[1])).unwrap_err();
        assert!(err.to_string().contains("not a row group 1"), "{err}");
        assert!(scan_raw_parquet_bytes(Bytes::from_static(b"nope"), "x", 0, 1).is_err());
    }

    /// The footer of a Parquet file of raw readings whose TS column is
    /// `ts`, of type `ts_type`.
    fn footer_with_ts(
        ts_type: DataType,
        ts: arrow::array::ArrayRef,
        name: &str,
    ) -> Arc<parquet::file::metadata::ParquetMetaData> {
        let n = ts.len();
        let schema = Schema::new(vec![
            Field::new("TS", ts_type, false),
            Field::new("Device", DataType::Utf8, false),
            Field::new("Tag", DataType::Utf8, false),
            Field::new("Value", DataType::Float64, false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                ts,
                Arc::new(StringArray::from(vec!["d"; n])),
                Arc::new(StringArray::from(vec!["t"; n])),
                Arc::new(Float64Array::from(vec![1.0; n])),
            ],
        )
        .unwrap();
        let bytes = write_batch_parquet(&batch, name).unwrap();
        decode_parquet_footer(&bytes, bytes.len() as u64, name).unwrap()
    }

    #[test]
    fn the_window_row_groups_are_those_the_ts_statistics_place_in_it() {
        // 600k readings one per 10 ns from 0: row groups of 256k, 256k
        // and 88k rows, spanning [0, 2621430], [2621440, 5242870] and
        // [5242880, 5999990].
        let n = 600_000usize;
        let keys: Vec<(String, String)> =
            (0..3).map(|k| (format!("d{k}"), "t".to_string())).collect();
        let r = Readings::from_columns(
            (0..n as i64).map(|i| i * 10).collect(),
            vec![1.0; n],
            (0..n).map(|i| (i % 3) as u32).collect(),
            &keys,
        )
        .unwrap();
        let rows: Vec<usize> = (0..n).collect();
        let bytes = write_readings_parquet(&r, &rows, "x").unwrap();
        let size = bytes.len() as u64;
        let meta = decode_parquet_footer(&bytes, size, "x").unwrap();
        let groups = |from, to| window_row_groups(&meta, "x", from, to).unwrap();
        let all = vec![(0, 262_144), (1, 262_144), (2, 75_712)];
        assert_eq!(groups(i64::MIN, i64::MAX), all);
        assert_eq!(groups(0, 6_000_000), all);
        // Bounds: `from` inclusive, `to` exclusive.
        assert_eq!(groups(2_621_430, 2_621_440), vec![(0, 262_144)]);
        assert_eq!(groups(2_621_431, 2_621_441), vec![(1, 262_144)]);
        assert_eq!(groups(2_621_430, 2_621_441), all[..2].to_vec());
        assert_eq!(groups(5_999_990, 7_000_000), vec![(2, 75_712)]);
        assert!(groups(5_999_991, 7_000_000).is_empty());
        assert!(groups(-100, 0).is_empty());
        // Another timestamp unit (ms) is compared in ns.
        let meta = footer_with_ts(
            DataType::Timestamp(TimeUnit::Millisecond, None),
            Arc::new(arrow::array::TimestampMillisecondArray::from(vec![5, 7])),
            "ms",
        );
        let groups = |from, to| window_row_groups(&meta, "ms", from, to).unwrap();
        assert_eq!(groups(7_000_000, 8_000_000), vec![(0, 2)]);
        assert!(groups(7_000_001, 8_000_000).is_empty());
        // A TS column that holds no timestamps is named.
        let meta = footer_with_ts(
            DataType::Utf8,
            Arc::new(StringArray::from(vec!["noon"])),
            "text",
        );
        let err = window_row_groups(&meta, "text", 0, 1).unwrap_err();
        assert!(err.to_string().contains("column TS has type Utf8"), "{err}");
    }

    #[test]
    fn row_groups_read_by_range_equal_a_whole_read() {
        // 600k rows: row groups of 256k, 256k and 88k.
        let n = 600_000usize;
        let keys: Vec<(String, String)> =
            (0..7).map(|k| (format!("d{k}"), "t".to_string())).collect();
        let r = Readings::from_columns(
            (0..n as i64).collect(),
            (0..n).map(|i| i as f64 * 0.5).collect(),
            (0..n).map(|i| (i % 7) as u32).collect(),
            &keys,
        )
        .unwrap();
        let rows: Vec<usize> = (0..n).collect();
        let bytes = Bytes::from(write_readings_parquet(&r, &rows, "x").unwrap());
        let size = bytes.len() as u64;
        // A short tail asks for more; the whole metadata then decodes.
        let need = match decode_parquet_footer(&bytes[bytes.len() - 8..], size, "x") {
            Err(Ok(need)) => need,
            other => panic!("{:?}", other.map(|_| ())),
        };
        let meta = decode_parquet_footer(&bytes[(size - need) as usize..], size, "x").unwrap();
        assert_eq!(meta.num_row_groups(), 3);
        let fetch = |groups: &[usize]| {
            let ranges = row_group_ranges(&meta, size, groups, "x").unwrap();
            let parts = ranges
                .iter()
                .map(|r| (r.start, bytes.slice(r.start as usize..r.end as usize)))
                .collect();
            (ranges, SparseObject::new(size, parts))
        };
        for groups in [vec![0], vec![1, 2], vec![0, 1, 2], vec![2]] {
            let (ranges, object) = fetch(&groups);
            // Consecutive row groups are one range.
            assert_eq!(ranges.len(), 1, "{groups:?}: {ranges:?}");
            let fetched: u64 = ranges.iter().map(|r| r.end - r.start).sum();
            assert!(
                groups.len() > 1 || fetched < size / 2,
                "{fetched} of {size}"
            );
            let sparse =
                read_readings_parquet_sparse(object, Arc::clone(&meta), "x", &groups).unwrap();
            let whole =
                read_readings_parquet_row_groups(bytes.clone(), "x", Some(&groups)).unwrap();
            assert_eq!(sparse.into_columns(), whole.into_columns(), "{groups:?}");
        }
        // A scan by range fetches the TS, Device and Tag chunks, not the
        // values, and finds what a scan of the whole object finds.
        let ranges = scan_ranges(&meta, size, "x").unwrap();
        let fetched: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        let values: u64 = meta
            .row_groups()
            .iter()
            .map(|rg| rg.column(3).byte_range().1)
            .sum();
        assert!(fetched + values <= size, "{fetched} + {values} of {size}");
        let parts = ranges
            .iter()
            .map(|r| (r.start, bytes.slice(r.start as usize..r.end as usize)))
            .collect();
        let sparse = scan_raw_parquet_sparse(
            SparseObject::new(size, parts),
            Arc::clone(&meta),
            "x",
            10,
            300_000,
        )
        .unwrap();
        let whole = scan_raw_parquet_bytes(bytes.clone(), "x", 10, 300_000).unwrap();
        assert_eq!(sparse, whole);
        assert_eq!(sparse.row_groups, vec![262_144, 262_144, 75_712]);
        assert_eq!(sparse.size, size);
        // Row groups whose bytes were not fetched fail, saying so.
        let (_, object) = fetch(&[0]);
        let err = read_readings_parquet_sparse(object, Arc::clone(&meta), "x", &[1]).unwrap_err();
        assert!(err.to_string().contains("were not fetched"), "{err}");
        // A row group that is not there, and bytes that are no footer.
        let err = row_group_ranges(&meta, size, &[3], "x").unwrap_err();
        assert!(err.to_string().contains("not a row group 3"), "{err}");
        // Metadata that places chunks past the object's end (as after it
        // shrank, or in a corrupt footer) is an error, not a read.
        let err = row_group_ranges(&meta, size / 2, &[2], "x").unwrap_err();
        assert!(err.to_string().contains("outside the"), "{err}");
        assert!(matches!(
            decode_parquet_footer(b"not a parquet footer", 100, "x"),
            Err(Err(_))
        ));
        assert!(matches!(
            decode_parquet_footer(b"PAR1", 4, "x"),
            Err(Err(_))
        ));
    }
}
