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

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, UInt32Type};
use fleetscore_core::{format_ts_reference, NANOS_PER_SEC};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

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
    /// reference job's columns `TS,Device,Tag,Val,Prediction`.
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
                let path = dir.join(format!("preds_{d}_{t}_{stamp}"));
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
    let n = rows.len();
    for r in rows {
        write!(
            w,
            "{},{d},{t},{},{}",
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
    let device_dict = Arc::new(StringArray::from_iter_values(
        cols.keys.iter().map(|(d, _)| d.as_str()),
    ));
    let tag_dict = Arc::new(StringArray::from_iter_values(
        cols.keys.iter().map(|(_, t)| t.as_str()),
    ));
    let results: Vec<Result<WrittenFile, CodecError>> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .enumerate()
            .map(|(i, run)| {
                let path = dir.join(format!("part-{i:05}.parquet"));
                let (dd, td) = (device_dict.clone(), tag_dict.clone());
                s.spawn(move || write_parquet_run(&path, cols, run, dd, td))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("parquet writer thread panicked"))
            .collect()
    });
    results.into_iter().collect()
}

const ROW_GROUP: usize = 1 << 20;

fn write_parquet_run(
    path: &Path,
    cols: &PredictionColumns<'_>,
    run: &[(u32, Range<usize>)],
    device_dict: Arc<StringArray>,
    tag_dict: Arc<StringArray>,
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
        let (inner, rows) = encode_run(
            BufWriter::with_capacity(1 << 20, file),
            cols,
            run,
            &device_dict,
            &tag_dict,
        )
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
    // No Parquet dictionary encoding: it hashes every value, which was a
    // fifth of the whole job's time. Rows come grouped by model, so
    // Device and Tag are long runs that snappy compresses as well.
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .set_dictionary_enabled(false)
        // Min/max per chunk on TS only (time-range pruning); on the other
        // columns it cost a comparison per value for little use.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("TS"), EnabledStatistics::Chunk)
        // Measured values and scores are nearly incompressible; snappy only
        // spent time on them.
        .set_column_compression(ColumnPath::from("Val"), Compression::UNCOMPRESSED)
        .set_column_compression(ColumnPath::from("Score"), Compression::UNCOMPRESSED)
        .build()
}

/// Writes the groups `run` as one Parquet file into `sink`; returns the
/// sink and the row count.
fn encode_run<W: Write + Send>(
    sink: W,
    cols: &PredictionColumns<'_>,
    run: &[(u32, Range<usize>)],
    device_dict: &Arc<StringArray>,
    tag_dict: &Arc<StringArray>,
) -> Result<(W, usize), parquet::errors::ParquetError> {
    let schema = schema();
    let mut writer = ArrowWriter::try_new(sink, schema.clone(), Some(writer_props()))?;
    let mut rows = 0;
    // Batches of whole models, about ROW_GROUP rows each.
    let mut i = 0;
    while i < run.len() {
        let mut j = i;
        let mut n = 0;
        while j < run.len() && (n == 0 || n + run[j].1.len() <= ROW_GROUP) {
            n += run[j].1.len();
            j += 1;
        }
        let batch = batch_of(cols, &run[i..j], n, &schema, device_dict, tag_dict)?;
        writer.write(&batch)?;
        rows += n;
        i = j;
    }
    Ok((writer.into_inner()?, rows))
}

/// All of `cols` as one Parquet file in memory (the columns and settings
/// of [`write_predictions`]'s parts), for an object store. `name` is for
/// error messages.
pub fn predictions_parquet_bytes(
    cols: &PredictionColumns<'_>,
    name: &str,
) -> Result<Vec<u8>, CodecError> {
    let device_dict = Arc::new(StringArray::from_iter_values(
        cols.keys.iter().map(|(d, _)| d.as_str()),
    ));
    let tag_dict = Arc::new(StringArray::from_iter_values(
        cols.keys.iter().map(|(_, t)| t.as_str()),
    ));
    encode_run(Vec::new(), cols, cols.groups, &device_dict, &tag_dict)
        .map(|(bytes, _)| bytes)
        .map_err(|e| CodecError::Parquet {
            path: name.into(),
            reason: e.to_string(),
        })
}

fn batch_of(
    cols: &PredictionColumns<'_>,
    groups: &[(u32, Range<usize>)],
    n: usize,
    schema: &Arc<Schema>,
    device_dict: &Arc<StringArray>,
    tag_dict: &Arc<StringArray>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut ts = Vec::with_capacity(n);
    let mut key = Vec::with_capacity(n);
    let mut val = Vec::with_capacity(n);
    let mut pred = Vec::with_capacity(n);
    let mut score = Vec::with_capacity(n);
    for (k, r) in groups {
        ts.extend(cols.ts[r.clone()].iter().map(|t| t.div_euclid(1_000)));
        key.extend(std::iter::repeat_n(*k, r.len()));
        val.extend_from_slice(&cols.value[r.clone()]);
        pred.extend(cols.prediction[r.clone()].iter().map(|&p| i32::from(p)));
        score.extend_from_slice(&cols.score[r.clone()]);
    }
    let keys = UInt32Array::from(key);
    let device = DictionaryArray::<UInt32Type>::try_new(keys.clone(), device_dict.clone())?;
    let tag = DictionaryArray::<UInt32Type>::try_new(keys, tag_dict.clone())?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(device),
        Arc::new(tag),
        Arc::new(Float64Array::from(val)),
        Arc::new(Int32Array::from(pred)),
        Arc::new(Float64Array::from(score)),
    ];
    RecordBatch::try_new(schema.clone(), columns)
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
