//! Writing predictions: Parquet parts, one CSV, or one CSV per model.
//!
//! Columns follow the reference deployment so its consumers keep working:
//! `TS, Device, Tag, Val, Prediction, Score` (Prediction 1 = anomaly,
//! 0 = normal; Score = the estimator's decision function). In Parquet, TS is
//! a UTC timestamp in microseconds, Device and Tag are text (dictionary
//! encoded), Val and Score are f64 and Prediction is int32.
//!
//! Every file is written under a temporary name in the output folder and
//! renamed into place when complete, so a crash never leaves a truncated
//! file under a final name.
//!
//! Names are data, never paths or CSV syntax: CSV cells are quoted as RFC
//! 4180 says (a device `pump 7, "north"` is one cell), and per-model file
//! names encode the device and tag with [`file_name_part`], so no name can
//! make a file land outside the output folder, or two models share a file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use fleetscore_core::{file_name_part, format_ts_reference, NANOS_PER_SEC};
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::{Compression, Encoding};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::{DataType as ParquetType, DoubleType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::{
    SerializedFileWriter, SerializedPageWriter, SerializedRowGroupWriter, TrackedWrite,
};
use parquet::schema::types::{ColumnDescPtr, ColumnPath};
use rustc_hash::FxHashMap;

use crate::CodecError;

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Parquet parts `part-NNNNN.parquet`.
    Parquet,
    /// CSV.
    Csv,
}

/// How rows are spread over files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionLayout {
    /// All models together (Parquet: a few parts; CSV: `predictions.csv`).
    Combined,
    /// One CSV per model, `preds_{device}_{tag}_{yymmddHHMMSS}`, with the
    /// reference job's columns `TS,Device,Tag,Val,Prediction`. Device and
    /// tag are encoded for the file name ([`per_model_file_name`]).
    PerModel,
}

/// The predictions of one run, columnar, grouped by model: rows of model
/// `groups[i].0` are `groups[i].1`.
pub struct PredictionColumns<'a> {
    /// Timestamps, ns since the epoch.
    pub ts: &'a [i64],
    /// Values scored (`Val`).
    pub value: &'a [f64],
    /// 1 = anomaly, 0 = normal.
    pub prediction: &'a [u8],
    /// Decision function.
    pub score: &'a [f64],
    /// `(device, tag)` of each key id.
    pub keys: &'a [(String, String)],
    /// Per model: key id and its row range, in output order.
    pub groups: &'a [(u32, Range<usize>)],
}

/// A file that was written.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Its path.
    pub path: PathBuf,
    /// Rows in it.
    pub rows: usize,
}

/// Writes predictions into `dir` (created if missing). `parts` is the number
/// of Parquet files to write in parallel; `run_ts` (ns) names per-model CSV
/// files as the reference job did.
pub fn write_predictions(
    dir: &Path,
    format: OutputFormat,
    layout: PredictionLayout,
    cols: &PredictionColumns<'_>,
    parts: usize,
    run_ts: i64,
) -> Result<Vec<WrittenFile>, CodecError> {
    std::fs::create_dir_all(dir).map_err(|source| CodecError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    match (format, layout) {
        (OutputFormat::Parquet, PredictionLayout::Combined) => {
            write_parquet_parts(dir, cols, parts)
        }
        (OutputFormat::Csv, PredictionLayout::Combined) => {
            let path = dir.join("predictions.csv");
            let rows = atomic_write(&path, |w| {
                writeln!(w, "TS,Device,Tag,Val,Prediction,Score")?;
                let mut n = 0;
                for (k, r) in cols.groups {
                    n += write_csv_rows(w, cols, *k, r.clone(), true)?;
                }
                Ok(n)
            })?;
            Ok(vec![WrittenFile { path, rows }])
        }
        (OutputFormat::Csv, PredictionLayout::PerModel) => {
            let stamp = yymmddhhmmss(run_ts);
            let mut out = Vec::with_capacity(cols.groups.len());
            for (k, r) in cols.groups {
                let (d, t) = &cols.keys[*k as usize];
                let path = dir.join(per_model_file_name(d, t, *k, &stamp));
                let rows = atomic_write(&path, |w| {
                    writeln!(w, "TS,Device,Tag,Val,Prediction")?;
                    write_csv_rows(w, cols, *k, r.clone(), false)
                })?;
                out.push(WrittenFile { path, rows });
            }
            Ok(out)
        }
        (OutputFormat::Parquet, PredictionLayout::PerModel) => Err(CodecError::Schema {
            path: dir.to_path_buf(),
            reason:
                "the per-model layout is a CSV layout; use --format csv with --layout per-model"
                    .into(),
        }),
    }
}

/// Longest per-model file name written: file systems allow 255 bytes, and
/// the temporary name adds 5 (`.{name}.tmp`).
const MAX_FILE_NAME: usize = 240;

/// Bytes of each encoded name kept in a file name that had to be cut.
const CUT_NAME: usize = 100;

/// The reference job's per-model file name, `preds_{device}_{tag}_{stamp}`,
/// made safe: both names go through [`file_name_part`] (ASCII letters,
/// digits, `-` and `.` kept, anything else percent-encoded, so `../x`
/// becomes `..%2Fx`), the tag's `_` included, so that the last `_`-parts
/// are still tag and stamp, as the reference's readers split them (a
/// device's `_` is kept: `preds_pump_7_temp_…` is device `pump_7`).
///
/// A name is never a path: the result holds no `/` or `\`, and starts with
/// `preds_`. If the encoded names would make it longer than
/// [`MAX_FILE_NAME`], each is cut to [`CUT_NAME`] bytes and `~{key}` (the
/// model's key id, unique in the run; `~` is never part of an encoding) is
/// appended, so two models never share a file.
pub fn per_model_file_name(device: &str, tag: &str, key: u32, stamp: &str) -> String {
    let (d, t) = (file_name_part(device, true), file_name_part(tag, false));
    let name = format!("preds_{d}_{t}_{stamp}");
    if name.len() <= MAX_FILE_NAME {
        return name;
    }
    format!("preds_{}_{}~{key}_{stamp}", cut(&d), cut(&t))
}

/// The first [`CUT_NAME`] bytes of an encoded name, not splitting a `%XX`.
fn cut(encoded: &str) -> &str {
    if encoded.len() <= CUT_NAME {
        return encoded;
    }
    // Encoded names are ASCII, so any byte index is a char boundary.
    let mut end = CUT_NAME;
    let b = encoded.as_bytes();
    if b[end - 1] == b'%' {
        end -= 1;
    } else if b[end - 2] == b'%' {
        end -= 2;
    }
    &encoded[..end]
}

/// The Device and Tag cells of a CSV row, quoted as RFC 4180 says when
/// they hold a comma, a quote or a line break: `"a, b",t`.
fn csv_cells(device: &str, tag: &str) -> std::io::Result<String> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_field(device).map_err(std::io::Error::other)?;
    w.write_field(tag).map_err(std::io::Error::other)?;
    let bytes = w
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    String::from_utf8(bytes).map_err(std::io::Error::other)
}

fn yymmddhhmmss(ns: i64) -> String {
    // format_ts_reference gives `YYYY-MM-DD HH:MM:SS.fff`.
    let s = format_ts_reference(ns.div_euclid(NANOS_PER_SEC) * NANOS_PER_SEC);
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    digits[2..14].to_string()
}

fn write_csv_rows(
    w: &mut dyn Write,
    cols: &PredictionColumns<'_>,
    key: u32,
    rows: Range<usize>,
    with_score: bool,
) -> std::io::Result<usize> {
    let (d, t) = &cols.keys[key as usize];
    // Quoted once per model, not per row.
    let cells = csv_cells(d, t)?;
    let n = rows.len();
    for r in rows {
        write!(
            w,
            "{},{cells},{},{}",
            format_ts_reference(cols.ts[r]),
            cols.value[r],
            cols.prediction[r]
        )?;
        if with_score {
            write!(w, ",{:?}", cols.score[r])?;
        }
        w.write_all(b"\n")?;
    }
    Ok(n)
}

/// Writes through a temporary file renamed into place on success.
fn atomic_write(
    path: &Path,
    body: impl FnOnce(&mut dyn Write) -> std::io::Result<usize>,
) -> Result<usize, CodecError> {
    let io = |source| CodecError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = tmp_name(path);
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let n = body(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn schema() -> Arc<Schema> {
    let dict = DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new(
            "TS",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("Device", dict.clone(), false),
        Field::new("Tag", dict, false),
        Field::new("Val", DataType::Float64, false),
        Field::new("Prediction", DataType::Int32, false),
        Field::new("Score", DataType::Float64, false),
    ]))
}

/// Splits the groups into `parts` runs of about equal row counts, at model
/// boundaries, and writes each run as one Parquet file on its own thread.
fn write_parquet_parts(
    dir: &Path,
    cols: &PredictionColumns<'_>,
    parts: usize,
) -> Result<Vec<WrittenFile>, CodecError> {
    let total: usize = cols.groups.iter().map(|(_, r)| r.len()).sum();
    let parts = parts.max(1).min(cols.groups.len().max(1));
    let mut runs: Vec<&[(u32, Range<usize>)]> = Vec::with_capacity(parts);
    let mut start = 0;
    let mut acc = 0;
    for (i, (_, r)) in cols.groups.iter().enumerate() {
        acc += r.len();
        if acc * parts >= total * (runs.len() + 1) && runs.len() + 1 < parts {
            runs.push(&cols.groups[start..=i]);
            start = i + 1;
        }
    }
    runs.push(&cols.groups[start..]);
    let results: Vec<Result<WrittenFile, CodecError>> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .enumerate()
            .map(|(i, run)| {
                let path = dir.join(format!("part-{i:05}.parquet"));
                s.spawn(move || write_parquet_run(&path, cols, run))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("parquet writer thread panicked"))
            .collect()
    });
    results.into_iter().collect()
}

/// How a predictions file is cut: rows per row group (whole models, or
/// one model if larger) and the longest RLE run of Device and Tag indices
/// (readers decode a run's header, `count << 1`, as a u32).
#[derive(Clone, Copy)]
struct Layout {
    row_group: usize,
    max_run: usize,
}

const LAYOUT: Layout = Layout {
    row_group: 1 << 20,
    max_run: 1 << 30,
};

fn write_parquet_run(
    path: &Path,
    cols: &PredictionColumns<'_>,
    run: &[(u32, Range<usize>)],
) -> Result<WrittenFile, CodecError> {
    let pq = |e: &dyn std::fmt::Display| CodecError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let tmp = tmp_name(path);
    let file = File::create(&tmp).map_err(|source| CodecError::Io {
        path: tmp.clone(),
        source,
    })?;
    let result = (|| {
        let (inner, rows) = encode_run(BufWriter::with_capacity(1 << 20, file), cols, run, LAYOUT)
            .map_err(|e| pq(&e))?;
        let file = inner.into_inner().map_err(|e| pq(&e.into_error()))?;
        file.sync_all().map_err(|e| pq(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| pq(&e))?;
        Ok(rows)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(WrittenFile {
        path: path.to_path_buf(),
        rows: result?,
    })
}

/// The writer settings of every predictions file.
fn writer_props() -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        // Device and Tag are written by `dictionary_chunk`; the other
        // columns are numbers, for which a dictionary would only hash.
        .set_dictionary_enabled(false)
        // Min/max per chunk on TS only (time-range pruning); on the other
        // columns it cost a comparison per value for little use.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("TS"), EnabledStatistics::Chunk)
        // No page index: Device and Tag are one data page per row group,
        // and no reader of predictions selects pages.
        .set_offset_index_disabled(true)
        // Measured values and scores are nearly incompressible; snappy only
        // spent time on them.
        .set_column_compression(ColumnPath::from("Val"), Compression::UNCOMPRESSED)
        .set_column_compression(ColumnPath::from("Score"), Compression::UNCOMPRESSED)
        .build();
    // The Arrow schema rides along as ArrowWriter would put it, so Arrow
    // readers (pyarrow, pandas, DataFusion) see Device and Tag as
    // dictionaries and TS as UTC.
    parquet::arrow::add_encoded_arrow_schema_to_metadata(&schema(), &mut props);
    props
}

/// Writes the groups `run` as one Parquet file into `sink`, cut as `layout`
/// says; returns the sink and the row count.
///
/// The numeric columns go through parquet's column writers. Device and Tag
/// are written here as dictionary-encoded chunks ([`dictionary_chunk`]):
/// rows come grouped by model, so each column chunk is a dictionary of the
/// texts it holds and one run per model. Parquet's own writer would hash
/// every row's text to find its dictionary entry (a fifth of a scoring
/// job), or without a dictionary copy every text and compress them (a
/// quarter of a worker's time); this costs one lookup per model.
fn encode_run<W: Write + Send>(
    sink: W,
    cols: &PredictionColumns<'_>,
    run: &[(u32, Range<usize>)],
    layout: Layout,
) -> Result<(W, usize), ParquetError> {
    let row_group = layout.row_group;
    let parquet_schema = ArrowSchemaConverter::new().convert(&schema())?;
    let mut writer = SerializedFileWriter::new(
        sink,
        parquet_schema.root_schema_ptr(),
        Arc::new(writer_props()),
    )?;
    let groups: Vec<&(u32, Range<usize>)> = run.iter().filter(|(_, r)| !r.is_empty()).collect();
    let mut rows = 0;
    let mut i = 0;
    while i < groups.len() {
        let mut j = i;
        let mut n = 0;
        while j < groups.len() && (n == 0 || n + groups[j].1.len() <= row_group) {
            n += groups[j].1.len();
            j += 1;
        }
        let rg_groups = &groups[i..j];
        let mut rg = writer.next_row_group()?;
        let mut ts = Vec::with_capacity(n);
        for (_, r) in rg_groups {
            ts.extend(cols.ts[r.clone()].iter().map(|t| t.div_euclid(1_000)));
        }
        write_column::<Int64Type>(&mut rg, &[&ts])?;
        drop(ts);
        let device = |k: u32| cols.keys[k as usize].0.as_str();
        let (bytes, close) = dictionary_chunk(
            parquet_schema.column(1),
            rg_groups,
            n,
            layout.max_run,
            device,
        )?;
        rg.append_column(&bytes, close)?;
        let tag = |k: u32| cols.keys[k as usize].1.as_str();
        let (bytes, close) =
            dictionary_chunk(parquet_schema.column(2), rg_groups, n, layout.max_run, tag)?;
        rg.append_column(&bytes, close)?;
        write_column::<DoubleType>(&mut rg, &slices(cols.value, rg_groups))?;
        let pred: Vec<i32> = rg_groups
            .iter()
            .flat_map(|(_, r)| cols.prediction[r.clone()].iter().map(|&p| i32::from(p)))
            .collect();
        write_column::<Int32Type>(&mut rg, &[&pred])?;
        write_column::<DoubleType>(&mut rg, &slices(cols.score, rg_groups))?;
        rg.close()?;
        rows += n;
        i = j;
    }
    Ok((writer.into_inner()?, rows))
}

/// The parts of `column` the groups cover, as few slices as possible (the
/// groups of a run are usually one contiguous range).
fn slices<'a, T>(column: &'a [T], groups: &[&(u32, Range<usize>)]) -> Vec<&'a [T]> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for (_, r) in groups {
        match out.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.push(r.clone()),
        }
    }
    out.into_iter().map(|r| &column[r]).collect()
}

/// Writes `parts`, in order, as the row group's next column.
fn write_column<T: ParquetType>(
    rg: &mut SerializedRowGroupWriter<'_, impl Write + Send>,
    parts: &[&[T::T]],
) -> Result<(), ParquetError> {
    let mut col = rg
        .next_column()?
        .ok_or_else(|| ParquetError::General("more columns written than the schema has".into()))?;
    {
        let w = col.typed::<T>();
        for part in parts {
            w.write_batch(part, None, None)?;
        }
    }
    col.close()
}

/// A Device or Tag column chunk of one row group, encoded: a dictionary
/// page of the distinct texts (`text` of each group's key, in order of
/// first use) and one data page of RLE runs of their indices, one run per
/// model (merged when the next model has the same text). Uncompressed: it
/// is a few bytes a model. Returns the chunk's bytes and its metadata, for
/// `SerializedRowGroupWriter::append_column`.
fn dictionary_chunk<'a>(
    descr: ColumnDescPtr,
    groups: &[&(u32, Range<usize>)],
    rows: usize,
    max_run: usize,
    text: impl Fn(u32) -> &'a str,
) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
    let too_many = |what: &str| ParquetError::General(format!("{what} do not fit a Parquet page"));
    let mut index: FxHashMap<&str, u32> = FxHashMap::default();
    let mut dict = Vec::new();
    let mut unencoded = 0i64;
    let mut runs: Vec<(u32, usize)> = Vec::new();
    for (k, r) in groups {
        let s = text(*k);
        let next = index.len() as u32;
        let id = *index.entry(s).or_insert_with(|| {
            dict.extend_from_slice(&(s.len() as u32).to_le_bytes());
            dict.extend_from_slice(s.as_bytes());
            next
        });
        unencoded += (s.len() * r.len()) as i64;
        match runs.last_mut() {
            Some((v, n)) if *v == id => *n += r.len(),
            _ => runs.push((id, r.len())),
        }
    }
    let entries = u32::try_from(index.len()).map_err(|_| too_many("dictionary entries"))?;
    let values = u32::try_from(rows).map_err(|_| too_many("rows"))?;
    // RLE/bit-packing hybrid: the bit width, then per run a ULEB128 header
    // (count << 1) and the value in ceil(width / 8) little-endian bytes.
    let width = (32 - entries.saturating_sub(1).leading_zeros()).max(1) as u8;
    let value_bytes = usize::from(width.div_ceil(8));
    let mut data = Vec::with_capacity(1 + runs.len() * (5 + value_bytes));
    data.push(width);
    for (v, mut left) in runs {
        while left > 0 {
            let n = left.min(max_run);
            left -= n;
            let mut header = (n as u64) << 1;
            while header >= 0x80 {
                data.push((header as u8) | 0x80);
                header >>= 7;
            }
            data.push(header as u8);
            data.extend_from_slice(&v.to_le_bytes()[..value_bytes]);
        }
    }
    let mut sink = TrackedWrite::new(Vec::new());
    let mut pages = SerializedPageWriter::new(&mut sink);
    let dict_len = dict.len();
    let dict_page = pages.write_page(CompressedPage::new(
        Page::DictionaryPage {
            buf: dict.into(),
            num_values: entries,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        },
        dict_len,
    ))?;
    let data_len = data.len();
    let data_page = pages.write_page(CompressedPage::new(
        Page::DataPage {
            buf: data.into(),
            num_values: values,
            encoding: Encoding::RLE_DICTIONARY,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        },
        data_len,
    ))?;
    pages.close()?;
    let bytes = sink.into_inner()?;
    let size = bytes.len() as i64;
    let metadata = ColumnChunkMetaData::builder(descr)
        .set_compression(Compression::UNCOMPRESSED)
        .set_encodings(vec![
            Encoding::PLAIN,
            Encoding::RLE,
            Encoding::RLE_DICTIONARY,
        ])
        .set_num_values(i64::from(values))
        .set_total_compressed_size(size)
        .set_total_uncompressed_size(size)
        .set_dictionary_page_offset(Some(dict_page.offset as i64))
        .set_data_page_offset(data_page.offset as i64)
        .set_unencoded_byte_array_data_bytes(Some(unencoded))
        .build()?;
    let close = ColumnCloseResult {
        bytes_written: size as u64,
        rows_written: u64::from(values),
        metadata,
        bloom_filter: None,
        column_index: None,
        offset_index: None,
    };
    Ok((Bytes::from(bytes), close))
}

/// All of `cols` as one Parquet file in memory (the columns and settings
/// of [`write_predictions`]'s parts), for an object store. `name` is for
/// error messages.
pub fn predictions_parquet_bytes(
    cols: &PredictionColumns<'_>,
    name: &str,
) -> Result<Vec<u8>, CodecError> {
    // Sized for the uncompressed columns up front: growing the buffer by
    // doubling copied the file about once more.
    let rows: usize = cols.groups.iter().map(|(_, r)| r.len()).sum();
    let capacity = rows * (8 + 8 + 8 + 4) + 64 * 1024;
    encode_run(Vec::with_capacity(capacity), cols, cols.groups, LAYOUT)
        .map(|(bytes, _)| bytes)
        .map_err(|e| CodecError::Parquet {
            path: name.into(),
            reason: e.to_string(),
        })
}

/// One prediction row read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PredictionRow {
    /// Timestamp, ns since the epoch (stored in µs).
    pub ts: i64,
    /// Device.
    pub device: String,
    /// Tag.
    pub tag: String,
    /// The value scored.
    pub value: f64,
    /// 1 = anomaly.
    pub prediction: i32,
    /// Decision function.
    pub score: f64,
}

/// Reads a predictions Parquet object (as written by
/// [`predictions_parquet_bytes`] or [`write_predictions`]), keeping the
/// rows `keep` accepts. `name` is for error messages.
pub fn read_predictions_parquet_bytes(
    data: bytes::Bytes,
    name: &str,
    mut keep: impl FnMut(&PredictionRow) -> bool,
) -> Result<Vec<PredictionRow>, CodecError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int32Type, TimestampMicrosecondType};
    let pq = |e: &dyn std::fmt::Display| CodecError::Parquet {
        path: name.into(),
        reason: e.to_string(),
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| pq(&e))?
        .build()
        .map_err(|e| pq(&e))?;
    let mut out = Vec::new();
    for batch in reader {
        let b = batch.map_err(|e| pq(&e))?;
        if b.num_columns() != 6 {
            return Err(pq(&format!(
                "expected the 6 predictions columns, found {}",
                b.num_columns()
            )));
        }
        let text = |i: usize| arrow::compute::cast(b.column(i), &DataType::Utf8);
        let (dev, tag) = (text(1).map_err(|e| pq(&e))?, text(2).map_err(|e| pq(&e))?);
        let (dev, tag) = (dev.as_string::<i32>(), tag.as_string::<i32>());
        let ts = b
            .column(0)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| pq(&"TS is not a microsecond timestamp"))?;
        let val = b
            .column(3)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| pq(&"Val is not f64"))?;
        let pred = b
            .column(4)
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| pq(&"Prediction is not int32"))?;
        let score = b
            .column(5)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| pq(&"Score is not f64"))?;
        for i in 0..b.num_rows() {
            if dev.is_null(i) || tag.is_null(i) {
                continue;
            }
            let row = PredictionRow {
                ts: ts.value(i).saturating_mul(1_000),
                device: dev.value(i).to_string(),
                tag: tag.value(i).to_string(),
                value: val.value(i),
                prediction: pred.value(i),
                score: score.value(i),
            };
            if keep(&row) {
                out.push(row);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Owned predictions columns.
    struct Fleet {
        keys: Vec<(String, String)>,
        groups: Vec<(u32, Range<usize>)>,
        ts: Vec<i64>,
        value: Vec<f64>,
        prediction: Vec<u8>,
        score: Vec<f64>,
    }

    impl Fleet {
        fn cols(&self) -> PredictionColumns<'_> {
            PredictionColumns {
                ts: &self.ts,
                value: &self.value,
                prediction: &self.prediction,
                score: &self.score,
                keys: &self.keys,
                groups: &self.groups,
            }
        }
    }

    /// 300 devices (so Device indices need two bytes) with 1 to 3 tags,
    /// one of whose models has no rows, in an order where a device's
    /// models are not adjacent and the rows are not in group order.
    fn fleet() -> Fleet {
        let mut keys = Vec::new();
        for d in 0..300 {
            for t in 0..=(d % 3) {
                keys.push((format!("device-{d:03}"), format!("tag{t}")));
            }
        }
        let (mut ts, mut value, mut prediction, mut score) = (vec![], vec![], vec![], vec![]);
        let mut ranges = Vec::new();
        for (k, _) in keys.iter().enumerate() {
            let n = if k == 7 { 0 } else { 1 + k % 5 };
            let from = ts.len();
            for i in 0..n {
                ts.push(1_700_000_000_000_000_000 + (i as i64) * 10_000_000_000 + 123_456);
                value.push(k as f64 + i as f64 / 10.0);
                prediction.push(u8::from((k + i) % 7 == 0));
                score.push(-(k as f64) / 1000.0 + i as f64);
            }
            ranges.push((k as u32, from..ts.len()));
        }
        // Odd keys first, then even ones, so devices recur apart.
        let mut groups: Vec<_> = ranges.iter().skip(1).step_by(2).cloned().collect();
        groups.extend(ranges.iter().step_by(2).cloned());
        Fleet {
            keys,
            groups,
            ts,
            value,
            prediction,
            score,
        }
    }

    fn expected(cols: &PredictionColumns<'_>) -> Vec<PredictionRow> {
        cols.groups
            .iter()
            .flat_map(|(k, r)| {
                r.clone().map(move |i| PredictionRow {
                    ts: cols.ts[i].div_euclid(1_000) * 1_000,
                    device: cols.keys[*k as usize].0.clone(),
                    tag: cols.keys[*k as usize].1.clone(),
                    value: cols.value[i],
                    prediction: i32::from(cols.prediction[i]),
                    score: cols.score[i],
                })
            })
            .collect()
    }

    #[test]
    fn predictions_read_back_row_for_row_in_any_layout() {
        let fleet = fleet();
        let (cols, groups) = (fleet.cols(), &fleet.groups);
        let want = expected(&cols);
        // One row group; groups smaller than a model; a few models each.
        let layouts = [(LAYOUT.row_group, LAYOUT.max_run), (1, 1), (7, 2), (100, 3)];
        for (row_group, max_run) in layouts {
            let layout = Layout { row_group, max_run };
            let (bytes, rows) = encode_run(Vec::new(), &cols, groups, layout).unwrap();
            assert_eq!(rows, want.len());
            let got = read_predictions_parquet_bytes(bytes.clone().into(), "t", |_| true).unwrap();
            assert_eq!(got, want, "row groups of {row_group}, runs of {max_run}");

            let file = SerializedFileReader::new(Bytes::from(bytes.clone())).unwrap();
            let meta = file.metadata();
            if row_group == LAYOUT.row_group {
                assert_eq!(meta.num_row_groups(), 1);
            } else {
                assert!(meta.num_row_groups() > 10, "{}", meta.num_row_groups());
            }
            for rg in meta.row_groups() {
                for c in [1, 2] {
                    let chunk = rg.column(c);
                    assert!(chunk.dictionary_page_offset().is_some());
                    assert_eq!(chunk.num_values(), rg.num_rows());
                }
                // TS keeps its min/max for time pruning.
                assert!(rg.column(0).statistics().is_some());
            }
            // Arrow readers see the schema ArrowWriter would have written.
            let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                assert_eq!(batch.schema().as_ref(), schema().as_ref());
                assert_eq!(batch.column(1).as_any_dictionary().keys().null_count(), 0);
            }
        }
    }

    #[test]
    fn device_and_tag_cost_a_few_bytes_a_model() {
        let fleet = fleet();
        let (cols, groups) = (fleet.cols(), &fleet.groups);
        let (bytes, _) = encode_run(Vec::new(), &cols, groups, LAYOUT).unwrap();
        let file = SerializedFileReader::new(Bytes::from(bytes)).unwrap();
        let rg = file.metadata().row_group(0);
        let models = groups.iter().filter(|(_, r)| !r.is_empty()).count() as i64;
        // Dictionary: 300 devices of 10 bytes + 4 length bytes; runs: at
        // most 1 + 2 + 2 bytes a model; page headers.
        let device = rg.column(1).compressed_size();
        assert!(device < 300 * 14 + models * 5 + 100, "{device} bytes");
        let tag = rg.column(2).compressed_size();
        assert!(tag < 3 * 8 + models * 5 + 100, "{tag} bytes");
        assert_eq!(
            rg.column(1).unencoded_byte_array_data_bytes(),
            Some(10 * rg.num_rows())
        );
    }

    /// Names no source accepts today (a line break, `/`) are written
    /// safely all the same: the writers do not rely on validation.
    fn odd_fleet() -> Fleet {
        let keys: Vec<(String, String)> = [
            ("pump 7, \"north\"", "t"),
            ("evil\n2024-01-01 00:00:00.000,x,y,1,1,1.0", "t"),
            ("x/../../escaped", "t"),
            ("../../etc/x", "a_b"),
            ("..", "."),
            ("a_b", "c"),
            ("a", "b_c"),
            (&"é".repeat(64), &"%".repeat(128)),
            (&"é".repeat(64), &"%".repeat(127)),
        ]
        .iter()
        .map(|(d, t)| (d.to_string(), t.to_string()))
        .collect();
        let n = keys.len();
        Fleet {
            groups: (0..n).map(|k| (k as u32, k..k + 1)).collect(),
            keys,
            ts: vec![1_700_000_000_000_000_000; n],
            value: (0..n).map(|i| i as f64).collect(),
            prediction: vec![1; n],
            score: vec![-0.5; n],
        }
    }

    #[test]
    fn csv_output_quotes_names_with_commas_and_newlines() {
        let fleet = odd_fleet();
        let dir = tempfile::tempdir().unwrap();
        let files = write_predictions(
            dir.path(),
            OutputFormat::Csv,
            PredictionLayout::Combined,
            &fleet.cols(),
            1,
            0,
        )
        .unwrap();
        let mut rdr = csv::Reader::from_path(&files[0].path).unwrap();
        assert_eq!(
            rdr.headers().unwrap(),
            vec!["TS", "Device", "Tag", "Val", "Prediction", "Score"]
        );
        let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
        assert_eq!(
            rows.len(),
            fleet.keys.len(),
            "one row per reading, none injected"
        );
        for (row, (d, t)) in rows.iter().zip(&fleet.keys) {
            assert_eq!((&row[1], &row[2]), (d.as_str(), t.as_str()));
            assert_eq!(row.len(), 6);
        }
        // Per model, too.
        let out = dir.path().join("pm");
        let files = write_predictions(
            &out,
            OutputFormat::Csv,
            PredictionLayout::PerModel,
            &fleet.cols(),
            1,
            0,
        )
        .unwrap();
        for (f, (d, t)) in files.iter().zip(&fleet.keys) {
            let mut rdr = csv::Reader::from_path(&f.path).unwrap();
            let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
            assert_eq!(rows.len(), 1);
            assert_eq!((&rows[0][1], &rows[0][2]), (d.as_str(), t.as_str()));
        }
    }

    #[test]
    fn device_names_cannot_escape_the_out_folder() {
        let fleet = odd_fleet();
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("a").join("b").join("out");
        let files = write_predictions(
            &out,
            OutputFormat::Csv,
            PredictionLayout::PerModel,
            &fleet.cols(),
            1,
            0,
        )
        .unwrap();
        assert_eq!(files.len(), fleet.keys.len());
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert!(e.file_type().unwrap().is_file());
                e.file_name().into_string().unwrap()
            })
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            fleet.keys.len(),
            "one file per model: {names:?}"
        );
        for f in &files {
            assert_eq!(f.path.parent(), Some(out.as_path()), "{}", f.path.display());
            let name = f.path.file_name().unwrap().to_str().unwrap();
            assert!(
                name.starts_with("preds_") && name.len() <= MAX_FILE_NAME,
                "{name}"
            );
            assert!(!name.contains(['/', '\\', '\n', ':']), "{name}");
        }
        // Nothing beside or above the output folder.
        for dir in [
            root.path().to_path_buf(),
            root.path().join("a"),
            root.path().join("a/b"),
        ] {
            assert_eq!(
                std::fs::read_dir(&dir).unwrap().count(),
                1,
                "{}",
                dir.display()
            );
        }
        let stamp = "700101000000";
        assert_eq!(
            file_names(&files[..7]),
            [
                format!("preds_pump%207%2C%20%22north%22_t_{stamp}"),
                format!(
                    "preds_evil%0A2024-01-01%2000%3A00%3A00.000%2Cx%2Cy%2C1%2C1%2C1.0_t_{stamp}"
                ),
                format!("preds_x%2F..%2F..%2Fescaped_t_{stamp}"),
                format!("preds_..%2F..%2Fetc%2Fx_a%5Fb_{stamp}"),
                format!("preds_%2E%2E_%2E_{stamp}"),
                format!("preds_a_b_c_{stamp}"),
                format!("preds_a_b%5Fc_{stamp}"),
            ]
        );
        // Names too long for a file name are cut and told apart by key.
        let long = file_names(&files[7..]);
        assert!(long[0].ends_with(&format!("~7_{stamp}")), "{long:?}");
        assert!(long[1].ends_with(&format!("~8_{stamp}")), "{long:?}");
    }

    fn file_names(files: &[WrittenFile]) -> Vec<String> {
        files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn no_rows_make_a_file_with_no_row_groups() {
        let keys = vec![("d".to_string(), "t".to_string())];
        let groups = vec![(0, 0..0)];
        let cols = PredictionColumns {
            ts: &[],
            value: &[],
            prediction: &[],
            score: &[],
            keys: &keys,
            groups: &groups,
        };
        let bytes = predictions_parquet_bytes(&cols, "empty").unwrap();
        let file = SerializedFileReader::new(Bytes::from(bytes.clone())).unwrap();
        assert_eq!(file.metadata().num_row_groups(), 0);
        assert!(
            read_predictions_parquet_bytes(bytes.into(), "empty", |_| true)
                .unwrap()
                .is_empty()
        );
    }
}
