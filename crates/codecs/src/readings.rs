//! Reading readings from CSV and Parquet files.
//!
//! Files are a source like any other: device and tag names, timestamps and
//! values follow the one policy of `fleetscore_core` ([`validate_name`],
//! [`check_ts`], [`check_value`]), and the first reading that breaks it
//! fails the file with its line (CSV) or row (Parquet) and column. Columns
//! other than TS, Device, Tag and Value are ignored in files (exports
//! often carry an index or site column). Objects of the store's `raw/`
//! (read by `raw.rs`) were checked on the way in and are read as stored.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use fleetscore_core::{check_ts, check_value, parse_ts, validate_name, NameError, NameKind};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::CodecError;
pub use fleetscore_core::Readings;

/// The three row columns of readings being decoded, before their pairs
/// are known: what the file and Parquet readers fill, then turn into
/// [`Readings`] with the interner's pairs.
#[derive(Debug, Default)]
pub(crate) struct Columns {
    pub(crate) ts: Vec<i64>,
    pub(crate) value: Vec<f64>,
    pub(crate) key: Vec<u32>,
}

impl Columns {
    /// Room for `rows`.
    pub(crate) fn with_capacity(rows: usize) -> Columns {
        Columns {
            ts: Vec::with_capacity(rows),
            value: Vec::with_capacity(rows),
            key: Vec::with_capacity(rows),
        }
    }

    /// The readings, with `keys` the pairs the key ids name (an
    /// interner's, so every id is in range).
    pub(crate) fn into_readings(self, keys: &[(String, String)]) -> Readings {
        Readings::from_columns(self.ts, self.value, self.key, keys)
            .expect("an interner's key ids name its pairs")
    }
}

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// `TS,Device,Tag,Value` CSV.
    Csv,
    /// Parquet with the same columns.
    Parquet,
    /// InfluxDB line protocol (`.lp`, `.line`, `.influx`, or a first line
    /// with `=` in it), mapped as the HTTP endpoint maps it: the `device`
    /// tag is the device, each field a reading; nanosecond timestamps.
    LineProtocol,
}

impl InputFormat {
    /// Guesses the format from the file's first bytes (`PAR1`) or extension.
    pub fn detect(path: &Path) -> Result<InputFormat, CodecError> {
        use std::io::Read;
        let mut magic = [0u8; 4];
        let mut f = File::open(path).map_err(|source| CodecError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let n = f.read(&mut magic).map_err(|source| CodecError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 4 && &magic == b"PAR1" {
            return Ok(InputFormat::Parquet);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if matches!(ext.as_deref(), Some("lp" | "line" | "influx")) {
            return Ok(InputFormat::LineProtocol);
        }
        // A CSV header has no `=`; a line protocol line always does.
        let mut head = Vec::with_capacity(4096);
        f.take(4096)
            .read_to_end(&mut head)
            .map_err(|source| CodecError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let text = [&magic[..n], &head[..]].concat();
        let first = text
            .split(|&b| b == b'\n')
            .map(|l| l.trim_ascii())
            .find(|l| !l.is_empty() && !l.starts_with(b"#"));
        if first.is_some_and(|l| l.contains(&b'=')) {
            return Ok(InputFormat::LineProtocol);
        }
        Ok(InputFormat::Csv)
    }
}

/// Interns (device, tag) pairs; a [`checked`](Interner::checked) one also
/// checks each new name against the name rule.
#[derive(Default)]
pub(crate) struct Interner {
    check: bool,
    by_text: FxHashMap<Box<[u8]>, u32>,
    by_int: FxHashMap<(i64, i64), u32>,
    pub(crate) keys: Vec<(String, String)>,
    buf: Vec<u8>,
    dict: Option<DictCache>,
}

/// Ids of (device, tag) dictionary key pairs, for the dictionaries they
/// were made from (batches of one Parquet row group share them).
struct DictCache {
    device: arrow::array::ArrayData,
    tag: arrow::array::ArrayData,
    /// `device key * tag dictionary length + tag key` to id, `u32::MAX`
    /// for not yet seen; or, for very large dictionaries, `sparse`.
    table: Vec<u32>,
    sparse: FxHashMap<(i32, i32), u32>,
}

impl Interner {
    /// An interner that refuses names breaking the name rule (for files
    /// from outside the store).
    pub(crate) fn checked() -> Interner {
        Interner {
            check: true,
            ..Interner::default()
        }
    }

    /// The id of a pair; when checking, a pair seen for the first time has
    /// its names checked.
    pub(crate) fn text(&mut self, device: &str, tag: &str) -> Result<u32, NameError> {
        if !self.check {
            return Ok(self.insert(device, tag));
        }
        self.fill_buf(device, tag);
        if let Some(&id) = self.by_text.get(self.buf.as_slice()) {
            return Ok(id);
        }
        validate_name(NameKind::Device, device)?;
        validate_name(NameKind::Tag, tag)?;
        Ok(self.insert(device, tag))
    }

    fn fill_buf(&mut self, device: &str, tag: &str) {
        self.buf.clear();
        self.buf.extend_from_slice(device.as_bytes());
        self.buf.push(0);
        self.buf.extend_from_slice(tag.as_bytes());
    }

    /// The id of a pair, unchecked.
    fn insert(&mut self, device: &str, tag: &str) -> u32 {
        self.fill_buf(device, tag);
        if let Some(&id) = self.by_text.get(self.buf.as_slice()) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push((device.to_string(), tag.to_string()));
        self.by_text.insert(self.buf.clone().into_boxed_slice(), id);
        id
    }

    fn int(&mut self, device: i64, tag: i64) -> u32 {
        if let Some(&id) = self.by_int.get(&(device, tag)) {
            return id;
        }
        // Integer ids are strings in the data model ("1", "2", …); the same
        // pair written as text elsewhere must intern to the same id. An
        // integer's text always meets the name rule.
        let id = self.insert(&device.to_string(), &tag.to_string());
        self.by_int.insert((device, tag), id);
        id
    }
}

/// Reads a readings file (CSV, Parquet or line protocol, detected from its
/// content and extension).
pub fn read_readings(path: &Path) -> Result<Readings, CodecError> {
    match InputFormat::detect(path)? {
        InputFormat::Csv => read_csv(path),
        InputFormat::Parquet => read_parquet(path),
        InputFormat::LineProtocol => read_line_protocol(path),
    }
}

fn read_line_protocol(path: &Path) -> Result<Readings, CodecError> {
    let data = std::fs::read(path).map_err(|source| CodecError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    crate::parse_line_protocol(
        &data,
        crate::Precision::Nanoseconds,
        now,
        &crate::LineProtocolConfig::default(),
    )
    .map(|b| b.readings)
    .map_err(|e| {
        let Some(first) = e.errors.first() else {
            return CodecError::Schema {
                path: path.to_path_buf(),
                reason: "line protocol refused".into(),
            };
        };
        let more = e.total() - 1;
        CodecError::Row {
            path: path.to_path_buf(),
            location: first.at.to_string(),
            column: "line protocol".into(),
            reason: if more > 0 {
                format!("{} (and {more} more problem(s))", first.reason)
            } else {
                first.reason.clone()
            },
        }
    })
}

const COLUMNS: [&str; 4] = ["TS", "Device", "Tag", "Value"];

fn read_csv(path: &Path) -> Result<Readings, CodecError> {
    let io = |source| CodecError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, file));
    let header = rdr.headers().map_err(|e| csv_err(path, &e))?.clone();
    let mut idx = [usize::MAX; 4];
    for (i, name) in header.iter().enumerate() {
        if let Some(c) = COLUMNS
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name.trim()))
        {
            idx[c] = i;
        }
    }
    if let Some(missing) = idx.iter().position(|&i| i == usize::MAX) {
        return Err(CodecError::Schema {
            path: path.to_path_buf(),
            reason: format!(
                "line 1: the header has no `{}` column; expected the columns TS,Device,Tag,Value (found: {})",
                COLUMNS[missing],
                header.iter().collect::<Vec<_>>().join(",")
            ),
        });
    }
    let mut out = Columns::default();
    let mut interner = Interner::checked();
    let mut rec = csv::StringRecord::new();
    let mut line = 1usize;
    loop {
        match rdr.read_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_err(path, &e)),
        }
        line = rec.position().map_or(line + 1, |p| p.line() as usize);
        let row_err = |column: &str, reason: String| CodecError::Row {
            path: path.to_path_buf(),
            location: format!("line {line}"),
            column: column.to_string(),
            reason,
        };
        let ts = parse_ts(&rec[idx[0]]).map_err(|e| row_err("TS", e.to_string()))?;
        let ts = check_ts(ts).map_err(|e| row_err("TS", e.to_string()))?;
        let device = rec[idx[1]].trim();
        let tag = rec[idx[2]].trim();
        let key = interner
            .text(device, tag)
            .map_err(|e| row_err(name_column(&e), e.to_string()))?;
        let raw = rec[idx[3]].trim();
        let value: f64 = raw
            .parse()
            .map_err(|_| row_err("Value", format!("{raw:?} is not a number")))?;
        let value = check_value(value).map_err(|e| row_err("Value", e.to_string()))?;
        out.ts.push(ts);
        out.value.push(value);
        out.key.push(key);
    }
    Ok(out.into_readings(&interner.keys))
}

/// The column a refused name came from.
fn name_column(e: &NameError) -> &'static str {
    match e.kind {
        NameKind::Device => "Device",
        NameKind::Tag => "Tag",
    }
}

/// The first reading of a file whose timestamp or value breaks the policy,
/// as the error of its 0-based row.
fn check_rows(path: &Path, r: &Readings) -> Result<(), CodecError> {
    let row_err = |row: usize, column: &str, reason: String| CodecError::Row {
        path: path.to_path_buf(),
        location: format!("row {row}"),
        column: column.to_string(),
        reason,
    };
    let mut bad_ts = r.ts().iter().enumerate();
    if let Some((i, e)) = bad_ts.find_map(|(i, &t)| check_ts(t).err().map(|e| (i, e))) {
        return Err(row_err(i, "TS", e.to_string()));
    }
    let mut bad_value = r.values().iter().enumerate();
    if let Some((i, e)) = bad_value.find_map(|(i, &v)| check_value(v).err().map(|e| (i, e))) {
        return Err(row_err(i, "Value", e.to_string()));
    }
    Ok(())
}

fn csv_err(path: &Path, e: &csv::Error) -> CodecError {
    let location = e
        .position()
        .map_or_else(|| "line ?".to_string(), |p| format!("line {}", p.line()));
    CodecError::Row {
        path: path.to_path_buf(),
        location,
        column: "-".into(),
        reason: e.to_string(),
    }
}

fn read_parquet(path: &Path) -> Result<Readings, CodecError> {
    let pq = |e: &dyn std::fmt::Display| CodecError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = File::open(path).map_err(|source| CodecError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq(&e))?;
    let schema = builder.schema().clone();
    let idx = check_columns(path, &schema)?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
    let meta = builder.metadata().clone();
    drop(builder);
    let arrow_meta =
        ArrowReaderMetadata::try_new(meta.clone(), Default::default()).map_err(|e| pq(&e))?;

    // Row groups are decoded in parallel, each into its own columns with its
    // own key interner; the ids are then mapped to one interner, in file
    // order, so the result is the same as a sequential read.
    let groups: Vec<(usize, usize, usize)> = {
        let mut row0 = 0;
        meta.row_groups()
            .iter()
            .enumerate()
            .map(|(i, rg)| {
                let start = row0;
                let n = rg.num_rows().max(0) as usize;
                row0 += n;
                (i, start, n)
            })
            .collect()
    };
    // Decode straight into the final columns: each row group owns the
    // slice its metadata row count reserves, and goes through a small
    // reused batch buffer (fresh memory costs a page fault per 4 KiB).
    let total: usize = groups.iter().map(|g| g.2).sum();
    let mut ts = vec![0i64; total];
    let mut value = vec![0f64; total];
    let mut key = vec![0u32; total];
    let mut slices = Vec::with_capacity(groups.len());
    {
        let (mut t, mut v, mut k) = (&mut ts[..], &mut value[..], &mut key[..]);
        for &(rg, row0, rows) in &groups {
            let (t0, t1) = std::mem::take(&mut t).split_at_mut(rows);
            let (v0, v1) = std::mem::take(&mut v).split_at_mut(rows);
            let (k0, k1) = std::mem::take(&mut k).split_at_mut(rows);
            (t, v, k) = (t1, v1, k1);
            slices.push((rg, row0, t0, v0, k0));
        }
    }
    let local_keys: Vec<Result<Vec<(String, String)>, CodecError>> = slices
        .into_par_iter()
        .map(|(rg, row0, ts, value, key)| {
            let file = File::open(path).map_err(|source| CodecError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(file, arrow_meta.clone())
                    .with_row_groups(vec![rg])
                    .with_projection(mask.clone())
                    .with_batch_size(64 * 1024)
                    .build()
                    .map_err(|e| pq(&e))?;
            let mut buf = Columns::default();
            let mut interner = Interner::checked();
            let mut at = 0;
            for batch in reader {
                let batch = batch.map_err(|e| pq(&e))?;
                buf.ts.clear();
                buf.value.clear();
                buf.key.clear();
                append_batch(path, &batch, row0 + at, &mut buf, &mut interner)?;
                let n = buf.ts.len();
                if at + n > ts.len() {
                    return Err(pq(&"a row group holds more rows than its metadata says"));
                }
                ts[at..at + n].copy_from_slice(&buf.ts);
                value[at..at + n].copy_from_slice(&buf.value);
                key[at..at + n].copy_from_slice(&buf.key);
                at += n;
            }
            if at != ts.len() {
                return Err(pq(&"a row group holds fewer rows than its metadata says"));
            }
            Ok(interner.keys)
        })
        .collect();
    // One interner for the whole file, in row-group order, then map each
    // group's local ids to it.
    let mut interner = Interner::default();
    let mut maps = Vec::with_capacity(local_keys.len());
    for keys in local_keys {
        maps.push(
            keys?
                .iter()
                .map(|(d, t)| interner.insert(d, t))
                .collect::<Vec<u32>>(),
        );
    }
    let mut key_slices = Vec::with_capacity(groups.len());
    let mut rest = &mut key[..];
    for (g, map) in groups.iter().zip(&maps) {
        let (mine, tail) = std::mem::take(&mut rest).split_at_mut(g.2);
        rest = tail;
        key_slices.push((mine, map));
    }
    key_slices.into_par_iter().for_each(|(ks, map)| {
        for k in ks {
            *k = map[*k as usize];
        }
    });
    let out = Columns { ts, value, key }.into_readings(&interner.keys);
    check_rows(path, &out)?;
    Ok(out)
}

/// Finds the columns TS, Device, Tag, Value (any case) in a Parquet file's
/// schema; their positions, in that order.
pub(crate) fn check_columns(
    path: &Path,
    schema: &arrow::datatypes::Schema,
) -> Result<[usize; 4], CodecError> {
    let mut idx = [usize::MAX; 4];
    for (i, f) in schema.fields().iter().enumerate() {
        if let Some(c) = COLUMNS
            .iter()
            .position(|c| c.eq_ignore_ascii_case(f.name()))
        {
            idx[c] = i;
        }
    }
    if let Some(missing) = idx.iter().position(|&i| i == usize::MAX) {
        let found: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(CodecError::Schema {
            path: path.to_path_buf(),
            reason: format!(
                "no `{}` column; expected the columns TS, Device, Tag, Value (found: {})",
                COLUMNS[missing],
                found.join(", ")
            ),
        });
    }
    Ok(idx)
}

/// The schema to read a Parquet file with: `schema` with text Device and
/// Tag columns (any case) read as `Dictionary(Int32, Utf8)`, which
/// [`append_batch`] interns per distinct pair; `None` if there are none.
pub(crate) fn dictionary_hint(
    schema: &arrow::datatypes::SchemaRef,
) -> Option<arrow::datatypes::SchemaRef> {
    use arrow::datatypes::{Field, Schema};
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let mut changed = 0;
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name();
            if (name.eq_ignore_ascii_case("Device") || name.eq_ignore_ascii_case("Tag"))
                && f.data_type() == &DataType::Utf8
            {
                changed += 1;
                f.as_ref().clone().with_data_type(dict.clone())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    (changed == 2).then(|| Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())))
}

/// Column positions in a projected batch follow the file's order, so look
/// them up by name again.
pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    let i = batch
        .schema()
        .fields()
        .iter()
        .position(|f| f.name().eq_ignore_ascii_case(name))
        .expect("projected columns are present");
    batch.column(i)
}

pub(crate) fn append_batch(
    path: &Path,
    batch: &RecordBatch,
    row0: usize,
    out: &mut Columns,
    interner: &mut Interner,
) -> Result<(), CodecError> {
    let n = batch.num_rows();
    let row_err = |row: usize, column: &str, reason: String| CodecError::Row {
        path: path.to_path_buf(),
        location: format!("row {}", row0 + row),
        column: column.to_string(),
        reason,
    };
    let first_null = |a: &ArrayRef, name: &str| -> Result<(), CodecError> {
        if a.null_count() > 0 {
            let r = (0..a.len()).find(|&i| a.is_null(i)).unwrap_or(0);
            return Err(row_err(r, name, "is null".into()));
        }
        Ok(())
    };

    // TS
    let ts = column(batch, "TS");
    first_null(ts, "TS")?;
    match ts.data_type() {
        DataType::Timestamp(unit, _) => {
            let mul = match unit {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            };
            let raw = arrow::compute::cast(ts, &DataType::Int64)
                .map_err(|e| row_err(0, "TS", e.to_string()))?;
            for (r, &v) in raw.as_primitive::<Int64Type>().values().iter().enumerate() {
                out.ts.push(
                    v.checked_mul(mul)
                        .ok_or_else(|| row_err(r, "TS", "out of range".into()))?,
                );
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = arrow::compute::cast(ts, &DataType::Utf8)
                .map_err(|e| row_err(0, "TS", e.to_string()))?;
            for (r, v) in s.as_string::<i32>().iter().enumerate() {
                let v = v.unwrap_or_default();
                out.ts
                    .push(parse_ts(v).map_err(|e| row_err(r, "TS", e.to_string()))?);
            }
        }
        other => {
            return Err(CodecError::Schema {
                path: path.to_path_buf(),
                reason: format!(
                    "column TS has type {other}; expected a timestamp or RFC 3339 text"
                ),
            })
        }
    }

    // Value
    let v = column(batch, "Value");
    first_null(v, "Value")?;
    match v.data_type() {
        DataType::Float64 => out
            .value
            .extend_from_slice(v.as_primitive::<Float64Type>().values()),
        DataType::Float32 => out.value.extend(
            v.as_primitive::<Float32Type>()
                .values()
                .iter()
                .map(|&x| f64::from(x)),
        ),
        t if t.is_integer() => {
            let c = arrow::compute::cast(v, &DataType::Float64)
                .map_err(|e| row_err(0, "Value", e.to_string()))?;
            out.value
                .extend_from_slice(c.as_primitive::<Float64Type>().values());
        }
        other => {
            return Err(CodecError::Schema {
                path: path.to_path_buf(),
                reason: format!("column Value has type {other}; expected a float or integer"),
            })
        }
    }

    // Device, Tag
    let d = column(batch, "Device");
    let t = column(batch, "Tag");
    first_null(d, "Device")?;
    first_null(t, "Tag")?;
    if let (Some(dd), Some(td)) = (
        d.as_dictionary_opt::<Int32Type>(),
        t.as_dictionary_opt::<Int32Type>(),
    ) {
        if let (Some(dv), Some(tv)) = (
            dd.values().as_string_opt::<i32>(),
            td.values().as_string_opt::<i32>(),
        ) {
            // Each distinct (device, tag) key pair is interned at its first
            // row, as the row-by-row path would.
            // The mapping lives as long as the dictionaries: the batches
            // of one row group share them.
            let (dvd, tvd) = (dv.to_data(), tv.to_data());
            let fresh = match &interner.dict {
                Some(c) => !(c.device.ptr_eq(&dvd) && c.tag.ptr_eq(&tvd)),
                None => true,
            };
            let (nd, nt) = (dv.len(), tv.len());
            let dense = nd.checked_mul(nt).filter(|&n| n <= 1 << 22);
            if fresh {
                interner.dict = Some(DictCache {
                    device: dvd,
                    tag: tvd,
                    table: vec![u32::MAX; dense.unwrap_or(0)],
                    sparse: FxHashMap::default(),
                });
            }
            let cache = interner.dict.take().expect("set above");
            let DictCache {
                device,
                tag,
                mut table,
                mut sparse,
            } = cache;
            let (dk, tk) = (dd.keys().values(), td.keys().values());
            let mut result = Ok(());
            for r in 0..n {
                let (a, b) = (dk[r], tk[r]);
                let slot = match dense {
                    Some(_) => &mut table[a as usize * nt + b as usize],
                    None => sparse.entry((a, b)).or_insert(u32::MAX),
                };
                if *slot == u32::MAX {
                    let (dv, tv) = (dv.value(a as usize), tv.value(b as usize));
                    if dv.is_empty() || tv.is_empty() {
                        result = Err(row_err(
                            r,
                            if dv.is_empty() { "Device" } else { "Tag" },
                            "empty".into(),
                        ));
                        break;
                    }
                    match interner.text(dv, tv) {
                        Ok(id) => *slot = id,
                        Err(e) => {
                            result = Err(row_err(r, name_column(&e), e.to_string()));
                            break;
                        }
                    }
                }
                out.key.push(*slot);
            }
            interner.dict = Some(DictCache {
                device,
                tag,
                table,
                sparse,
            });
            return result;
        }
    }
    match (as_ints(d), as_ints(t)) {
        (Some(d), Some(t)) => {
            for (&d, &t) in d.iter().zip(&t) {
                out.key.push(interner.int(d, t));
            }
        }
        _ => {
            let d = as_strings(path, d, "Device")?;
            let t = as_strings(path, t, "Tag")?;
            let (ds, ts) = (d.as_string::<i32>(), t.as_string::<i32>());
            for r in 0..n {
                let (dv, tv) = (ds.value(r), ts.value(r));
                if dv.is_empty() || tv.is_empty() {
                    return Err(row_err(
                        r,
                        if dv.is_empty() { "Device" } else { "Tag" },
                        "empty".into(),
                    ));
                }
                let id = interner
                    .text(dv, tv)
                    .map_err(|e| row_err(r, name_column(&e), e.to_string()))?;
                out.key.push(id);
            }
        }
    }
    Ok(())
}

fn as_ints(a: &ArrayRef) -> Option<Vec<i64>> {
    macro_rules! ints {
        ($t:ty) => {
            a.as_primitive::<$t>()
                .values()
                .iter()
                .map(|&v| v as i64)
                .collect()
        };
    }
    Some(match a.data_type() {
        DataType::Int64 => a.as_primitive::<Int64Type>().values().to_vec(),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int8 => ints!(Int8Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => {
            let v = a.as_primitive::<UInt64Type>().values();
            if v.iter().any(|&x| x > i64::MAX as u64) {
                return None;
            }
            ints!(UInt64Type)
        }
        _ => return None,
    })
}

pub(crate) fn as_strings(path: &Path, a: &ArrayRef, name: &str) -> Result<ArrayRef, CodecError> {
    let ok = matches!(
        a.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)
    ) || a.data_type().is_integer();
    if !ok {
        return Err(CodecError::Schema {
            path: path.to_path_buf(),
            reason: format!(
                "column {name} has type {}; expected text or an integer",
                a.data_type()
            ),
        });
    }
    arrow::compute::cast(a, &DataType::Utf8)
        .map(|c| -> ArrayRef { Arc::clone(&c) })
        .map_err(|e| CodecError::Schema {
            path: path.to_path_buf(),
            reason: format!("column {name}: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    #[test]
    fn unused_keys_are_forgotten_and_the_rest_renumbered() {
        let keys = [("a", "x"), ("b", "x"), ("c", "x")];
        let mut r =
            Readings::from_columns(vec![1, 2, 3], vec![1.0, 2.0, 3.0], vec![2, 0, 2], &keys)
                .unwrap();
        r.drop_unused_keys();
        assert_eq!(r.keys().collect::<Vec<_>>(), [("a", "x"), ("c", "x")]);
        assert_eq!(r.key_ids(), [1, 0, 1]);
        assert_eq!(r.values(), [1.0, 2.0, 3.0]);
    }

    use super::*;
    use crate::{read_readings_parquet_bytes, write_readings_parquet};

    /// Text device and tag columns are read as dictionaries, interned per
    /// distinct pair across batches: the same readings and the same ids
    /// (order of first appearance) as the row-by-row path.
    #[test]
    fn dictionary_reads_equal_row_by_row_reads() {
        let n = 150_000; // three batches of 64 Ki rows
        let mut c = Columns::default();
        let keys: Vec<(String, String)> = (0..300)
            .map(|i| (format!("dev{}", (i * 7) % 101), format!("t{}", i % 3)))
            .collect();
        let mut interner = Interner::default();
        for i in 0..n {
            let (d, t) = &keys[(i * 31 + i / 1000) % keys.len()];
            c.ts.push(i as i64);
            c.value.push(i as f64 / 3.0);
            c.key.push(interner.text(d, t).unwrap());
        }
        let r = c.into_readings(&interner.keys);
        let rows: Vec<usize> = (0..n).collect();
        let bytes = Bytes::from(write_readings_parquet(&r, &rows, "x").unwrap());
        let back = read_readings_parquet_bytes(bytes.clone(), "x").unwrap();
        assert_eq!((back.ts(), back.values()), (r.ts(), r.values()));
        // Ids in order of first appearance, as the row-by-row path gives.
        let mut interner = Interner::default();
        let want: Vec<u32> = r
            .key_ids()
            .iter()
            .map(|&k| {
                let (d, t) = r.key(k);
                interner.text(d, t).unwrap()
            })
            .collect();
        assert_eq!(back.key_ids(), want);
        let back_keys: Vec<(String, String)> = back
            .keys()
            .map(|(d, t)| (d.to_string(), t.to_string()))
            .collect();
        assert_eq!(back_keys, interner.keys);
        let schema = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .schema()
            .clone();
        assert!(dictionary_hint(&schema).is_some());
    }

    #[test]
    fn an_empty_device_is_refused_with_its_row() {
        let r = Readings::from_columns(
            vec![1, 2, 3],
            vec![1.0, 2.0, 3.0],
            vec![0, 0, 1],
            &[("d", "t"), ("", "t")],
        )
        .unwrap();
        let bytes = write_readings_parquet(&r, &[0, 1, 2], "x").unwrap();
        let err = read_readings_parquet_bytes(Bytes::from(bytes), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 2") && err.contains("Device"), "{err}");
    }
}
