//! Writing predictions: Parquet parts, one CSV, or one CSV per model.
//!
//! One schema holds the rows of every kind of model, the same in Parquet
//! and CSV, so that one query reads a fleet of detectors, regressors and
//! classifiers:
//!
//! | column | Parquet type | outlier detector | regressor | classifier |
//! |---|---|---|---|---|
//! | `TS` | timestamp (µs, UTC) | reading's time | same | same |
//! | `Device`, `Tag` | text (dictionary) | the model's names | same | same |
//! | `Val` | f64 | the value scored | same | same |
//! | `Prediction` | int32, nullable | 1 = anomaly (`predict` said -1), 0 = normal | null | null |
//! | `Score` | f64 | `decision_function` | `predict` | the predicted class's probability, or `decision_function` |
//! | `Label` | text (dictionary), nullable | null | null | the predicted class, as text |
//!
//! The first six columns are the reference deployment's, in its order, so
//! its consumers (and readers that index the first six columns) keep
//! working; `Label` comes last. Null is an empty cell in CSV (a class that
//! is the empty text is written `""`).
//!
//! Every file is written under a temporary name in the output folder and
//! renamed into place when complete, so a crash never leaves a truncated
//! file under a final name.
//!
//! Names are data, never paths or CSV syntax: CSV cells are quoted as RFC
//! 4180 says (a device `pump 7, "north"` or a class `a, b` is one cell), and
//! per-model file names encode the device and tag with [`file_name_part`],
//! so no name can make a file land outside the output folder, or two models
//! share a file.

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
use parquet::data_type::{DataType as ParquetType, DoubleType, Int64Type};
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
    /// All models together (Parquet: a few parts; CSV: `predictions.csv`
    /// with the header `TS,Device,Tag,Val,Prediction,Score,Label`).
    Combined,
    /// One CSV per model, `preds_{device}_{tag}_{yymmddHHMMSS}`. Device and
    /// tag are encoded for the file name ([`per_model_file_name`]). An
    /// outlier detector's file has the reference job's columns
    /// `TS,Device,Tag,Val,Prediction`, byte for byte as that job wrote
    /// them; a regressor's or classifier's file has the combined layout's
    /// `TS,Device,Tag,Val,Prediction,Score,Label` (Prediction empty), since
    /// its Score and Label are its prediction.
    PerModel,
}

/// What one model's rows hold ([`PredictionColumns::outputs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelOutput<'a> {
    /// Outlier detector: `label` is 1 (anomaly) or 0 (normal); Prediction
    /// = label, Label null. Any other label is refused.
    Outlier,
    /// Regressor: `label` is ignored; Prediction and Label null (Score is
    /// the prediction).
    Regressor,
    /// Classifier: `label` indexes these class texts; Label =
    /// `classes[label]`, Prediction null. A label out of range is refused.
    Classifier(&'a [String]),
}

/// The predictions of one run, columnar, grouped by model: rows of model
/// `groups[i].0` are `groups[i].1`.
pub struct PredictionColumns<'a> {
    /// Timestamps, ns since the epoch.
    pub ts: &'a [i64],
    /// Values scored (`Val`).
    pub value: &'a [f64],
    /// Per row, what its model said: see [`ModelOutput`].
    pub label: &'a [u32],
    /// `Score`: decision function, regressor's prediction or class
    /// probability (see the module docs).
    pub score: &'a [f64],
    /// `(device, tag)` of each key id.
    pub keys: &'a [(String, String)],
    /// Per key id (as long as `keys`): what its model outputs.
    pub outputs: &'a [ModelOutput<'a>],
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
///
/// Refuses, before writing anything, columns that do not fit together and
/// labels its model cannot have (an outlier label other than 0 or 1, a
/// class index out of range of the classifier's classes).
pub fn write_predictions(
    dir: &Path,
    format: OutputFormat,
    layout: PredictionLayout,
    cols: &PredictionColumns<'_>,
    parts: usize,
    run_ts: i64,
) -> Result<Vec<WrittenFile>, CodecError> {
    check_columns(cols, dir)?;
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
                writeln!(w, "{WIDE_HEADER}")?;
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
                // A detector's file is the reference job's; the others need
                // Score and Label to say anything.
                let wide = cols.outputs[*k as usize] != ModelOutput::Outlier;
                let rows = atomic_write(&path, |w| {
                    if wide {
                        writeln!(w, "{WIDE_HEADER}")?;
                    } else {
                        writeln!(w, "TS,Device,Tag,Val,Prediction")?;
                    }
                    write_csv_rows(w, cols, *k, r.clone(), wide)
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

/// The header of the combined CSV, and of a regressor's or classifier's
/// per-model CSV.
const WIDE_HEADER: &str = "TS,Device,Tag,Val,Prediction,Score,Label";

/// Refuses columns that do not fit together (a caller's mistake, said as
/// an error rather than a panic while writing) and labels a model cannot
/// have, naming the row (an index into the columns), the column and the
/// model. `path` is the output, for the message.
fn check_columns(cols: &PredictionColumns<'_>, path: &Path) -> Result<(), CodecError> {
    let schema = |reason: String| CodecError::Schema {
        path: path.to_path_buf(),
        reason: format!("predictions columns: {reason}"),
    };
    if cols.outputs.len() != cols.keys.len() {
        return Err(schema(format!(
            "{} keys but {} model outputs; every key needs its output",
            cols.keys.len(),
            cols.outputs.len()
        )));
    }
    let rows = [
        ("ts", cols.ts.len()),
        ("value", cols.value.len()),
        ("label", cols.label.len()),
        ("score", cols.score.len()),
    ];
    for (k, r) in cols.groups {
        let Some((device, tag)) = cols.keys.get(*k as usize) else {
            return Err(schema(format!(
                "group of key {k}, but there are {} keys",
                cols.keys.len()
            )));
        };
        for (name, len) in rows {
            if r.start > r.end || r.end > len {
                return Err(schema(format!(
                    "rows {r:?} of model (device {device:?}, tag {tag:?}), but {name} has {len}"
                )));
            }
        }
        let labels = &cols.label[r.clone()];
        let (column, limit, what) = match cols.outputs[*k as usize] {
            ModelOutput::Regressor => continue,
            ModelOutput::Outlier => (
                "Prediction",
                2,
                "an outlier detector's label is 0 (normal) or 1 (anomaly)".to_string(),
            ),
            ModelOutput::Classifier(classes) => (
                "Label",
                classes.len(),
                format!(
                    "the class index is out of range: the classifier has {} classes",
                    classes.len()
                ),
            ),
        };
        // The maximum first: it vectorizes; the search only on failure.
        if labels.iter().max().is_some_and(|&m| m as usize >= limit) {
            let i = labels
                .iter()
                .position(|&l| l as usize >= limit)
                .unwrap_or(0);
            return Err(CodecError::Row {
                path: path.to_path_buf(),
                location: format!("row {}", r.start + i),
                column: column.into(),
                reason: format!(
                    "label {} of model (device {device:?}, tag {tag:?}): {what}",
                    labels[i]
                ),
            });
        }
    }
    Ok(())
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

/// Text fields as CSV cells, comma-separated, each quoted as RFC 4180 says
/// when it holds a comma, a quote or a line break: `"a, b",t`. A lone
/// empty field is `""` (an empty text, not a null).
fn csv_cells(fields: &[&str]) -> std::io::Result<String> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // A whole record: the writer closes a quoted field only when the
    // record ends.
    w.write_record(fields).map_err(std::io::Error::other)?;
    let mut bytes = w
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    bytes.pop();
    String::from_utf8(bytes).map_err(std::io::Error::other)
}

fn yymmddhhmmss(ns: i64) -> String {
    // format_ts_reference gives `YYYY-MM-DD HH:MM:SS.fff`.
    let s = format_ts_reference(ns.div_euclid(NANOS_PER_SEC) * NANOS_PER_SEC);
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    digits[2..14].to_string()
}

/// Writes the rows of one model; `wide` adds the Score and Label cells
/// (every layout but a detector's per-model file).
fn write_csv_rows(
    w: &mut dyn Write,
    cols: &PredictionColumns<'_>,
    key: u32,
    rows: Range<usize>,
    wide: bool,
) -> std::io::Result<usize> {
    let (d, t) = &cols.keys[key as usize];
    let output = cols.outputs[key as usize];
    // Quoted once per model (and class), not per row.
    let cells = csv_cells(&[d, t])?;
    let mut classes: Vec<Option<String>> = match output {
        ModelOutput::Classifier(c) => vec![None; c.len()],
        _ => Vec::new(),
    };
    let n = rows.len();
    for r in rows {
        write!(
            w,
            "{},{cells},{},",
            format_ts_reference(cols.ts[r]),
            cols.value[r]
        )?;
        if output == ModelOutput::Outlier {
            write!(w, "{}", cols.label[r])?;
        }
        if wide {
            write!(w, ",{:?},", cols.score[r])?;
            if let ModelOutput::Classifier(texts) = output {
                // check_columns has refused labels out of range.
                let c = cols.label[r] as usize;
                let cell = match &mut classes[c] {
                    Some(cell) => cell,
                    slot => slot.insert(csv_cells(&[&texts[c]])?),
                };
                w.write_all(cell.as_bytes())?;
            }
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
        Field::new("Tag", dict.clone(), false),
        Field::new("Val", DataType::Float64, false),
        Field::new("Prediction", DataType::Int32, true),
        Field::new("Score", DataType::Float64, false),
        Field::new("Label", dict, true),
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
        // Device, Tag, Prediction and Label are written by
        // `dictionary_chunk`; the other columns are numbers, for which a
        // dictionary would only hash.
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
/// says; returns the sink and the row count. The columns must have passed
/// [`check_columns`].
///
/// The numeric columns TS, Val and Score go through parquet's column
/// writers. Device, Tag, Prediction and Label are written here as
/// dictionary-encoded chunks ([`dictionary_chunk`]): rows come grouped by
/// model, so Device and Tag are a dictionary of the texts a chunk holds and
/// one run per model, and the nullable Prediction and Label have one run of
/// validity per model (only a detector's rows have a Prediction, only a
/// classifier's a Label) and their values bit-packed: 1 bit a detector's
/// row, a few bits a classifier's. Parquet's own writer would hash every
/// row's text to find its dictionary entry (a fifth of a scoring job), or
/// without a dictionary copy every text and compress them (a quarter of a
/// worker's time), and encode a validity level per row; this costs one
/// lookup per model, and per classifier row an index into its classes.
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
        for (c, chunk) in [
            (
                1,
                name_chunk(rg_groups, layout.max_run, |k| &cols.keys[k as usize].0),
            ),
            (
                2,
                name_chunk(rg_groups, layout.max_run, |k| &cols.keys[k as usize].1),
            ),
        ] {
            let (bytes, close) = dictionary_chunk(parquet_schema.column(c), chunk?)?;
            rg.append_column(&bytes, close)?;
        }
        write_column::<DoubleType>(&mut rg, &slices(cols.value, rg_groups))?;
        let chunk = prediction_chunk(cols, rg_groups, layout.max_run)?;
        let (bytes, close) = dictionary_chunk(parquet_schema.column(4), chunk)?;
        rg.append_column(&bytes, close)?;
        write_column::<DoubleType>(&mut rg, &slices(cols.score, rg_groups))?;
        let chunk = label_chunk(cols, rg_groups, layout.max_run)?;
        let (bytes, close) = dictionary_chunk(parquet_schema.column(6), chunk)?;
        rg.append_column(&bytes, close)?;
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

/// A column chunk of one row group, encoded by hand: a PLAIN dictionary
/// page and one data page of the values' indices into it.
struct DictionaryChunk {
    /// The dictionary page: the distinct values, PLAIN encoded.
    dict: Vec<u8>,
    /// How many values `dict` holds.
    entries: usize,
    /// A nullable column's definition levels (1 = a value, 0 = null),
    /// RLE/bit-packing hybrid encoded at width 1; `None` for a required
    /// column.
    levels: Option<Vec<u8>>,
    /// The bit width (one byte) and the RLE/bit-packing hybrid encoded
    /// indices of the non-null values.
    indices: Vec<u8>,
    /// Rows, nulls included.
    rows: usize,
    /// A text column's bytes before encoding (the sum of its values'
    /// lengths), for the chunk's metadata.
    unencoded: Option<i64>,
}

/// Why a chunk does not fit a Parquet page.
fn too_many(what: &str) -> ParquetError {
    ParquetError::General(format!("{what} do not fit a Parquet page"))
}

/// The bit width of indices into a dictionary of `entries` values.
fn index_width(entries: usize) -> Result<u8, ParquetError> {
    let entries = u32::try_from(entries).map_err(|_| too_many("dictionary entries"))?;
    Ok((32 - entries.saturating_sub(1).leading_zeros()).max(1) as u8)
}

/// Texts interned in order of first use, as a PLAIN dictionary page.
#[derive(Default)]
struct TextDictionary<'a> {
    index: FxHashMap<&'a str, u32>,
    plain: Vec<u8>,
}

impl<'a> TextDictionary<'a> {
    /// The index of `s`, added if new.
    fn id(&mut self, s: &'a str) -> u32 {
        let next = self.index.len() as u32;
        *self.index.entry(s).or_insert_with(|| {
            self.plain
                .extend_from_slice(&(s.len() as u32).to_le_bytes());
            self.plain.extend_from_slice(s.as_bytes());
            next
        })
    }
}

/// Appends RLE runs of `value` (`count` times) in the RLE/bit-packing
/// hybrid at `width` bits, no run longer than `max_run` (readers decode a
/// run's header, `count << 1`, as a u32).
fn rle_run(out: &mut Vec<u8>, width: u8, value: u32, count: usize, max_run: usize) {
    let value_bytes = usize::from(width.div_ceil(8));
    let mut left = count;
    while left > 0 {
        let n = left.min(max_run);
        left -= n;
        uleb128(out, (n as u64) << 1);
        out.extend_from_slice(&value.to_le_bytes()[..value_bytes]);
    }
}

/// Appends values as bit-packed runs of the RLE/bit-packing hybrid at
/// `width` bits (each value below 2^width), least significant bit first,
/// in groups of 8 (the last one padded with zeros, which readers ignore as
/// they know the count), no run longer than `max_run` values rounded down
/// to a group. The values come in slices of any length (a model's rows);
/// a group that straddles two is carried over.
struct BitPacker<'o> {
    out: &'o mut Vec<u8>,
    width: usize,
    /// Groups per run.
    per_run: usize,
    /// Groups not yet started, in later runs.
    groups_left: usize,
    /// Groups left in the current run.
    run_left: usize,
    carry: [u32; 8],
    carried: usize,
}

impl<'o> BitPacker<'o> {
    /// A packer of `values` values in all.
    fn new(out: &'o mut Vec<u8>, width: u8, values: usize, max_run: usize) -> Self {
        let width = usize::from(width);
        let groups = values.div_ceil(8);
        out.reserve(groups * width + groups.div_ceil(max_run / 8 + 1) * 5);
        BitPacker {
            out,
            width,
            per_run: (max_run / 8).max(1),
            groups_left: groups,
            run_left: 0,
            carry: [0; 8],
            carried: 0,
        }
    }

    fn extend(&mut self, mut values: &[u32]) {
        if self.carried > 0 {
            let take = (8 - self.carried).min(values.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&values[..take]);
            self.carried += take;
            values = &values[take..];
            if self.carried < 8 {
                return;
            }
            self.group(self.carry);
            self.carried = 0;
        }
        let mut groups = values.chunks_exact(8);
        for g in &mut groups {
            let g: [u32; 8] = g.try_into().unwrap_or_default();
            self.group(g);
        }
        let rest = groups.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }

    fn finish(mut self) {
        if self.carried > 0 {
            self.carry[self.carried..].fill(0);
            self.group(self.carry);
        }
    }

    fn group(&mut self, g: [u32; 8]) {
        if self.run_left == 0 {
            let n = self.per_run.min(self.groups_left);
            self.groups_left -= n;
            self.run_left = n;
            uleb128(self.out, ((n as u64) << 1) | 1);
        }
        self.run_left -= 1;
        let w = self.width;
        match w {
            // A detector's Prediction.
            1 => {
                let b = g.iter().enumerate().fold(0, |b, (i, &v)| b | (v << i));
                self.out.push(b as u8);
            }
            2..=8 => {
                let acc = g
                    .iter()
                    .enumerate()
                    .fold(0u64, |a, (i, &v)| a | u64::from(v) << (i * w));
                self.out.extend_from_slice(&acc.to_le_bytes()[..w]);
            }
            9..=16 => {
                let acc = g
                    .iter()
                    .enumerate()
                    .fold(0u128, |a, (i, &v)| a | u128::from(v) << (i * w));
                self.out.extend_from_slice(&acc.to_le_bytes()[..w]);
            }
            _ => {
                // Up to 32 bits a value, each spread over up to 5 bytes.
                let mut bytes = [0u8; 36];
                for (i, &v) in g.iter().enumerate() {
                    let bit = i * w;
                    let shifted = u64::from(v) << (bit % 8);
                    for (b, byte) in bytes[bit / 8..bit / 8 + 5].iter_mut().enumerate() {
                        *byte |= (shifted >> (8 * b)) as u8;
                    }
                }
                self.out.extend_from_slice(&bytes[..w]);
            }
        }
    }
}

/// Appends `v` as ULEB128.
fn uleb128(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Definition levels with one run per model (merged when the next model
/// has the same): 1 where `valid(key)`, else 0.
fn group_levels(
    groups: &[&(u32, Range<usize>)],
    max_run: usize,
    valid: impl Fn(u32) -> bool,
) -> Vec<u8> {
    let mut runs: Vec<(u32, usize)> = Vec::new();
    for (k, r) in groups {
        let level = u32::from(valid(*k));
        match runs.last_mut() {
            Some((v, n)) if *v == level => *n += r.len(),
            _ => runs.push((level, r.len())),
        }
    }
    let mut out = Vec::with_capacity(runs.len() * 6);
    for (level, n) in runs {
        rle_run(&mut out, 1, level, n, max_run);
    }
    out
}

/// A Device or Tag chunk: a dictionary of the distinct texts (`text` of
/// each group's key, in order of first use) and one RLE run of their
/// indices per model (merged when the next model has the same text).
fn name_chunk<'a>(
    groups: &[&(u32, Range<usize>)],
    max_run: usize,
    text: impl Fn(u32) -> &'a str,
) -> Result<DictionaryChunk, ParquetError> {
    let mut dict = TextDictionary::default();
    let mut unencoded = 0i64;
    let mut runs: Vec<(u32, usize)> = Vec::new();
    let mut rows = 0;
    for (k, r) in groups {
        let s = text(*k);
        let id = dict.id(s);
        unencoded += (s.len() * r.len()) as i64;
        rows += r.len();
        match runs.last_mut() {
            Some((v, n)) if *v == id => *n += r.len(),
            _ => runs.push((id, r.len())),
        }
    }
    let width = index_width(dict.index.len())?;
    let mut indices = Vec::with_capacity(1 + runs.len() * (5 + usize::from(width.div_ceil(8))));
    indices.push(width);
    for (v, n) in runs {
        rle_run(&mut indices, width, v, n, max_run);
    }
    Ok(DictionaryChunk {
        entries: dict.index.len(),
        dict: dict.plain,
        levels: None,
        indices,
        rows,
        unencoded: Some(unencoded),
    })
}

/// The Prediction chunk: a dictionary `[0, 1]`, a detector's rows valid
/// and bit-packed at 1 bit (their labels, which [`check_columns`] has held
/// to 0 and 1), the other models' rows null.
fn prediction_chunk(
    cols: &PredictionColumns<'_>,
    groups: &[&(u32, Range<usize>)],
    max_run: usize,
) -> Result<DictionaryChunk, ParquetError> {
    let outlier = |k: u32| cols.outputs[k as usize] == ModelOutput::Outlier;
    let valid = groups.iter().filter(|(k, _)| outlier(*k));
    let mut indices = vec![1];
    let mut packer = BitPacker::new(
        &mut indices,
        1,
        valid.clone().map(|(_, r)| r.len()).sum(),
        max_run,
    );
    for (_, r) in valid {
        packer.extend(&cols.label[r.clone()]);
    }
    packer.finish();
    Ok(DictionaryChunk {
        dict: [0i32.to_le_bytes(), 1i32.to_le_bytes()].concat(),
        entries: 2,
        levels: Some(group_levels(groups, max_run, outlier)),
        indices,
        rows: groups.iter().map(|(_, r)| r.len()).sum(),
        unencoded: None,
    })
}

/// The Label chunk: a dictionary of the class texts the chunk's classifier
/// rows hold (in order of first use, one entry for a text several models
/// share), those rows valid with their text's index bit-packed, the other
/// models' rows null.
fn label_chunk(
    cols: &PredictionColumns<'_>,
    groups: &[&(u32, Range<usize>)],
    max_run: usize,
) -> Result<DictionaryChunk, ParquetError> {
    let mut dict = TextDictionary::default();
    let mut unencoded = 0i64;
    let mut ids: Vec<u32> = Vec::new();
    // Per class of the current model: its dictionary index, once used.
    let mut class_ids: Vec<u32> = Vec::new();
    let mut lens: Vec<i64> = Vec::new();
    for (k, r) in groups {
        let ModelOutput::Classifier(classes) = cols.outputs[*k as usize] else {
            continue;
        };
        class_ids.clear();
        class_ids.resize(classes.len(), u32::MAX);
        ids.reserve(r.len());
        for &l in &cols.label[r.clone()] {
            let c = l as usize;
            // check_columns has refused labels out of range; refuse again
            // rather than panic if a caller skipped it.
            let slot = class_ids
                .get_mut(c)
                .ok_or_else(|| ParquetError::General(format!("class index {c} out of range")))?;
            if *slot == u32::MAX {
                *slot = dict.id(&classes[c]);
                if *slot as usize == lens.len() {
                    lens.push(classes[c].len() as i64);
                }
            }
            unencoded += lens[*slot as usize];
            ids.push(*slot);
        }
    }
    let width = index_width(dict.index.len())?;
    let mut indices = vec![width];
    let mut packer = BitPacker::new(&mut indices, width, ids.len(), max_run);
    packer.extend(&ids);
    packer.finish();
    Ok(DictionaryChunk {
        entries: dict.index.len(),
        dict: dict.plain,
        levels: Some(group_levels(groups, max_run, |k| {
            matches!(cols.outputs[k as usize], ModelOutput::Classifier(_))
        })),
        indices,
        rows: groups.iter().map(|(_, r)| r.len()).sum(),
        unencoded: Some(unencoded),
    })
}

/// Writes `chunk` as a dictionary page and one data page (V1: the
/// definition levels with their 4-byte length, then the indices).
/// Uncompressed: it is a few bytes a model, or a few bits a row. Returns
/// the chunk's bytes and its metadata, for
/// `SerializedRowGroupWriter::append_column`.
fn dictionary_chunk(
    descr: ColumnDescPtr,
    chunk: DictionaryChunk,
) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
    let entries = u32::try_from(chunk.entries).map_err(|_| too_many("dictionary entries"))?;
    let values = u32::try_from(chunk.rows).map_err(|_| too_many("rows"))?;
    let data = match chunk.levels {
        Some(levels) => {
            let len = u32::try_from(levels.len()).map_err(|_| too_many("levels"))?;
            let mut data = Vec::with_capacity(4 + levels.len() + chunk.indices.len());
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(&levels);
            data.extend_from_slice(&chunk.indices);
            data
        }
        None => chunk.indices,
    };
    let mut sink = TrackedWrite::new(Vec::new());
    let mut pages = SerializedPageWriter::new(&mut sink);
    let dict_len = chunk.dict.len();
    let dict_page = pages.write_page(CompressedPage::new(
        Page::DictionaryPage {
            buf: chunk.dict.into(),
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
        .set_unencoded_byte_array_data_bytes(chunk.unencoded)
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
/// error messages. Refuses what [`write_predictions`] refuses.
pub fn predictions_parquet_bytes(
    cols: &PredictionColumns<'_>,
    name: &str,
) -> Result<Vec<u8>, CodecError> {
    // Sized for the uncompressed columns up front: growing the buffer by
    // doubling copied the file about once more.
    check_columns(cols, Path::new(name))?;
    let rows: usize = cols.groups.iter().map(|(_, r)| r.len()).sum();
    let capacity = rows * (8 + 8 + 8 + 1) + 64 * 1024;
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
    /// An outlier detector's verdict: 1 = anomaly, 0 = normal; `None` for
    /// the other models.
    pub prediction: Option<i32>,
    /// Decision function, regressor's prediction or class probability.
    pub score: f64,
    /// A classifier's predicted class, as text; `None` for the other
    /// models, and in files written before the column existed.
    pub label: Option<String>,
}

/// Reads a predictions Parquet object (as written by
/// [`predictions_parquet_bytes`] or [`write_predictions`], or an older
/// file without the Label column), keeping the rows `keep` accepts. `name`
/// is for error messages, which name the column (and row) at fault.
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
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| pq(&e))?;
    let file_schema = builder.schema().clone();
    let column = |c: &str| {
        file_schema.index_of(c).map_err(|_| CodecError::Schema {
            path: name.into(),
            reason: format!(
                "no `{c}` column; predictions have TS, Device, Tag, Val, Prediction, \
                 Score and (since the Label column) Label"
            ),
        })
    };
    let [ts_i, dev_i, tag_i, val_i, pred_i, score_i] =
        ["TS", "Device", "Tag", "Val", "Prediction", "Score"].map(column);
    let (ts_i, dev_i, tag_i, val_i, pred_i, score_i) =
        (ts_i?, dev_i?, tag_i?, val_i?, pred_i?, score_i?);
    let label_i = file_schema.index_of("Label").ok();
    let bad_type = |i: usize, want: &str| CodecError::Schema {
        path: name.into(),
        reason: format!(
            "column {} has type {}, expected {want}",
            file_schema.field(i).name(),
            file_schema.field(i).data_type()
        ),
    };
    let reader = builder.build().map_err(|e| pq(&e))?;
    let mut out = Vec::new();
    let mut first = 0usize;
    for batch in reader {
        let b = batch.map_err(|e| pq(&e))?;
        let text = |i: usize| {
            arrow::compute::cast(b.column(i), &DataType::Utf8).map_err(|_| bad_type(i, "text"))
        };
        let (dev, tag) = (text(dev_i)?, text(tag_i)?);
        let (dev, tag) = (dev.as_string::<i32>(), tag.as_string::<i32>());
        let label = label_i.map(text).transpose()?;
        let label = label.as_ref().map(|l| l.as_string::<i32>());
        let ts = b
            .column(ts_i)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| bad_type(ts_i, "a microsecond timestamp"))?;
        let val = b
            .column(val_i)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| bad_type(val_i, "Float64"))?;
        let pred = b
            .column(pred_i)
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| bad_type(pred_i, "Int32"))?;
        let score = b
            .column(score_i)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| bad_type(score_i, "Float64"))?;
        for (i, c) in [
            (ts_i, ts.nulls()),
            (val_i, val.nulls()),
            (score_i, score.nulls()),
        ] {
            if let Some(row) = c
                .filter(|n| n.null_count() > 0)
                .and_then(|n| (0..n.len()).find(|&r| n.is_null(r)))
            {
                return Err(CodecError::Row {
                    path: name.into(),
                    location: format!("row {}", first + row),
                    column: file_schema.field(i).name().clone(),
                    reason: "null; every prediction has one".into(),
                });
            }
        }
        for i in 0..b.num_rows() {
            if dev.is_null(i) || tag.is_null(i) {
                continue;
            }
            let row = PredictionRow {
                ts: ts.value(i).saturating_mul(1_000),
                device: dev.value(i).to_string(),
                tag: tag.value(i).to_string(),
                value: val.value(i),
                prediction: pred.is_valid(i).then(|| pred.value(i)),
                score: score.value(i),
                label: label
                    .filter(|l| l.is_valid(i))
                    .map(|l| l.value(i).to_string()),
            };
            if keep(&row) {
                out.push(row);
            }
        }
        first += b.num_rows();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// What a test model outputs; a classifier's classes are
    /// `Fleet::classes[i]`.
    #[derive(Clone, Copy)]
    enum Kind {
        Outlier,
        Regressor,
        Classifier(usize),
    }

    /// Owned predictions columns.
    struct Fleet {
        keys: Vec<(String, String)>,
        kinds: Vec<Kind>,
        classes: Vec<Vec<String>>,
        groups: Vec<(u32, Range<usize>)>,
        ts: Vec<i64>,
        value: Vec<f64>,
        label: Vec<u32>,
        score: Vec<f64>,
    }

    impl Fleet {
        fn outputs(&self) -> Vec<ModelOutput<'_>> {
            self.kinds
                .iter()
                .map(|k| match k {
                    Kind::Outlier => ModelOutput::Outlier,
                    Kind::Regressor => ModelOutput::Regressor,
                    Kind::Classifier(c) => ModelOutput::Classifier(&self.classes[*c]),
                })
                .collect()
        }

        fn cols<'a>(&'a self, outputs: &'a [ModelOutput<'a>]) -> PredictionColumns<'a> {
            PredictionColumns {
                ts: &self.ts,
                value: &self.value,
                label: &self.label,
                score: &self.score,
                keys: &self.keys,
                outputs,
                groups: &self.groups,
            }
        }
    }

    fn texts(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    /// Class sets of the test classifiers: int-like, texts a CSV must
    /// quote (shared in part with the next set), and 300 classes (indices
    /// of 9 bits).
    fn class_sets() -> Vec<Vec<String>> {
        vec![
            texts(&["0", "1", "2"]),
            texts(&["normal", "a, b", "x\ny", "say \"hi\""]),
            texts(&["normal", "é", "-1"]),
            (0..300).map(|c| format!("c{c:03}")).collect(),
        ]
    }

    /// 300 devices (so Device indices need two bytes) with 1 to 3 tags,
    /// one of whose models has no rows, in an order where a device's
    /// models are not adjacent and the rows are not in group order. Models
    /// are outlier detectors, regressors and classifiers in turn, so
    /// neighbours differ in kind (and in a few places do not).
    fn fleet() -> Fleet {
        let mut keys = Vec::new();
        for d in 0..300 {
            for t in 0..=(d % 3) {
                keys.push((format!("device-{d:03}"), format!("tag{t}")));
            }
        }
        let classes = class_sets();
        let kinds: Vec<Kind> = (0..keys.len())
            .map(|k| match k % 5 {
                0 | 3 => Kind::Outlier,
                1 => Kind::Regressor,
                _ => Kind::Classifier(k / 5 % classes.len()),
            })
            .collect();
        let (mut ts, mut value, mut label, mut score) = (vec![], vec![], vec![], vec![]);
        let mut ranges = Vec::new();
        for (k, kind) in kinds.iter().enumerate() {
            let n = if k == 7 { 0 } else { 1 + k % 5 + k % 17 };
            let from = ts.len();
            for i in 0..n {
                ts.push(1_700_000_000_000_000_000 + (i as i64) * 10_000_000_000 + 123_456);
                value.push(k as f64 + i as f64 / 10.0);
                label.push(match kind {
                    Kind::Outlier => u32::from((k + i) % 7 == 0),
                    // Ignored.
                    Kind::Regressor => 12_345,
                    Kind::Classifier(c) => ((k * 3 + i * i) % classes[*c].len()) as u32,
                });
                score.push(-(k as f64) / 1000.0 + i as f64);
            }
            ranges.push((k as u32, from..ts.len()));
        }
        // Odd keys first, then even ones, so devices recur apart.
        let mut groups: Vec<_> = ranges.iter().skip(1).step_by(2).cloned().collect();
        groups.extend(ranges.iter().step_by(2).cloned());
        Fleet {
            keys,
            kinds,
            classes,
            groups,
            ts,
            value,
            label,
            score,
        }
    }

    /// The rows `cols` should read back as, TS cut to `ts_unit` ns.
    fn expected(cols: &PredictionColumns<'_>, ts_unit: i64) -> Vec<PredictionRow> {
        cols.groups
            .iter()
            .flat_map(|(k, r)| {
                r.clone().map(move |i| {
                    let output = cols.outputs[*k as usize];
                    PredictionRow {
                        ts: cols.ts[i].div_euclid(ts_unit) * ts_unit,
                        device: cols.keys[*k as usize].0.clone(),
                        tag: cols.keys[*k as usize].1.clone(),
                        value: cols.value[i],
                        prediction: (output == ModelOutput::Outlier).then(|| cols.label[i] as i32),
                        score: cols.score[i],
                        label: match output {
                            ModelOutput::Classifier(c) => Some(c[cols.label[i] as usize].clone()),
                            _ => None,
                        },
                    }
                })
            })
            .collect()
    }

    /// Rows of a predictions CSV with a header, in either width.
    fn read_csv(path: &Path) -> Vec<PredictionRow> {
        let mut rdr = csv::Reader::from_path(path).unwrap();
        let wide = rdr.headers().unwrap().len() == 7;
        rdr.records()
            .map(|r| {
                let r = r.unwrap();
                assert_eq!(r.len(), if wide { 7 } else { 5 }, "{r:?}");
                let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
                PredictionRow {
                    ts: fleetscore_core::parse_ts(&r[0]).unwrap(),
                    device: r[1].to_string(),
                    tag: r[2].to_string(),
                    value: r[3].parse().unwrap(),
                    prediction: opt(&r[4]).map(|p| p.parse().unwrap()),
                    score: if wide { r[5].parse().unwrap() } else { 0.0 },
                    label: if wide { opt(&r[6]) } else { None },
                }
            })
            .collect()
    }

    #[test]
    fn predictions_read_back_row_for_row_in_any_layout() {
        let fleet = fleet();
        let outputs = fleet.outputs();
        let (cols, groups) = (fleet.cols(&outputs), &fleet.groups);
        let want = expected(&cols, 1_000);
        assert!(want.iter().any(|r| r.label.as_deref() == Some("x\ny")));
        assert!(want.iter().any(|r| r.label.as_deref() > Some("c255")));
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
                for c in [1, 2, 4, 6] {
                    let chunk = rg.column(c);
                    assert!(chunk.dictionary_page_offset().is_some());
                    assert_eq!(chunk.num_values(), rg.num_rows());
                }
                // TS keeps its min/max for time pruning.
                assert!(rg.column(0).statistics().is_some());
            }
            // Arrow readers see the schema ArrowWriter would have written,
            // with a null where a model has no Prediction or no Label.
            let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap();
            let (mut predictions, mut labels, mut n) = (0, 0, 0);
            for batch in reader {
                let batch = batch.unwrap();
                assert_eq!(batch.schema().as_ref(), schema().as_ref());
                assert_eq!(batch.column(1).as_any_dictionary().keys().null_count(), 0);
                predictions += batch.column(4).len() - batch.column(4).null_count();
                labels += batch.column(6).len() - batch.column(6).null_count();
                n += batch.num_rows();
            }
            assert_eq!(n, want.len());
            assert_eq!(
                predictions,
                want.iter().filter(|r| r.prediction.is_some()).count()
            );
            assert_eq!(labels, want.iter().filter(|r| r.label.is_some()).count());
        }
    }

    #[test]
    fn csv_reads_back_row_for_row_in_both_layouts() {
        let fleet = fleet();
        let outputs = fleet.outputs();
        let cols = fleet.cols(&outputs);
        let want = expected(&cols, 1);
        let dir = tempfile::tempdir().unwrap();
        let write =
            |layout| write_predictions(dir.path(), OutputFormat::Csv, layout, &cols, 1, 0).unwrap();
        let files = write(PredictionLayout::Combined);
        let header = csv::Reader::from_path(&files[0].path)
            .unwrap()
            .headers()
            .unwrap()
            .clone();
        assert_eq!(
            header,
            vec!["TS", "Device", "Tag", "Val", "Prediction", "Score", "Label"]
        );
        assert_eq!(read_csv(&files[0].path), want);
        assert_eq!(files[0].rows, want.len());

        let files = write(PredictionLayout::PerModel);
        let got: Vec<PredictionRow> = files
            .iter()
            .flat_map(|f| {
                let rows = read_csv(&f.path);
                assert_eq!(rows.len(), f.rows);
                rows
            })
            .collect();
        // A detector's file has no Score.
        let want: Vec<PredictionRow> = want
            .into_iter()
            .map(|r| PredictionRow {
                score: if r.prediction.is_some() { 0.0 } else { r.score },
                ..r
            })
            .collect();
        assert_eq!(got, want);
        for (f, (k, _)) in files.iter().zip(&fleet.groups) {
            let text = std::fs::read_to_string(&f.path).unwrap();
            let header = text.lines().next().unwrap();
            match fleet.kinds[*k as usize] {
                Kind::Outlier => assert_eq!(header, "TS,Device,Tag,Val,Prediction"),
                _ => assert_eq!(header, WIDE_HEADER),
            }
        }
    }

    /// The cells of each model kind, byte for byte: a detector's
    /// per-model file is the reference job's.
    #[test]
    fn csv_cells_per_model_kind() {
        let classes = texts(&["ok", "a, b", "x\ny"]);
        let keys = vec![
            ("d".to_string(), "outlier".to_string()),
            ("d".to_string(), "regressor".to_string()),
            ("d".to_string(), "classifier".to_string()),
        ];
        let outputs = [
            ModelOutput::Outlier,
            ModelOutput::Regressor,
            ModelOutput::Classifier(&classes),
        ];
        let cols = PredictionColumns {
            ts: &[0; 6],
            value: &[1.5, 2.0, 3.0, 4.0, 5.0, 6.0],
            label: &[1, 0, 7, 0, 1, 2],
            score: &[-0.25, 0.5, 42.0, 0.9, 0.75, 1.0],
            keys: &keys,
            outputs: &outputs,
            groups: &[(0, 0..2), (1, 2..3), (2, 3..6)],
        };
        let dir = tempfile::tempdir().unwrap();
        let t = "1970-01-01 00:00:00.000";
        let files = write_predictions(
            dir.path(),
            OutputFormat::Csv,
            PredictionLayout::Combined,
            &cols,
            1,
            0,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&files[0].path).unwrap(),
            format!(
                "{WIDE_HEADER}\n\
                 {t},d,outlier,1.5,1,-0.25,\n\
                 {t},d,outlier,2,0,0.5,\n\
                 {t},d,regressor,3,,42.0,\n\
                 {t},d,classifier,4,,0.9,ok\n\
                 {t},d,classifier,5,,0.75,\"a, b\"\n\
                 {t},d,classifier,6,,1.0,\"x\ny\"\n"
            )
        );
        let files = write_predictions(
            &dir.path().join("pm"),
            OutputFormat::Csv,
            PredictionLayout::PerModel,
            &cols,
            1,
            0,
        )
        .unwrap();
        let text: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(&f.path).unwrap())
            .collect();
        assert_eq!(
            text,
            [
                format!("TS,Device,Tag,Val,Prediction\n{t},d,outlier,1.5,1\n{t},d,outlier,2,0\n"),
                format!("{WIDE_HEADER}\n{t},d,regressor,3,,42.0,\n"),
                format!(
                    "{WIDE_HEADER}\n{t},d,classifier,4,,0.9,ok\n\
                     {t},d,classifier,5,,0.75,\"a, b\"\n\
                     {t},d,classifier,6,,1.0,\"x\ny\"\n"
                ),
            ]
        );
    }

    /// A class that is the empty text is not a null.
    #[test]
    fn csv_cells_quote_what_needs_it() {
        assert_eq!(csv_cells(&[""]).unwrap(), "\"\"");
        assert_eq!(csv_cells(&["a, b"]).unwrap(), "\"a, b\"");
        assert_eq!(csv_cells(&["d", "x\"y"]).unwrap(), "d,\"x\"\"y\"");
        assert_eq!(csv_cells(&["ok"]).unwrap(), "ok");
    }

    /// A label its model cannot have is refused in every layout, naming
    /// the row, the column and the model, and nothing is written.
    #[test]
    fn labels_out_of_range_are_refused() {
        let classes = texts(&["a", "b", "c"]);
        let keys = vec![
            ("d".to_string(), "t".to_string()),
            ("d".to_string(), "u".to_string()),
        ];
        let outputs = [ModelOutput::Outlier, ModelOutput::Classifier(&classes)];
        let cases: [(&[u32], &str); 3] = [
            (
                &[0, 1, 0, 2, 3],
                "row 4, column Label: label 3 of model (device \"d\", tag \"u\"): \
                 the class index is out of range: the classifier has 3 classes",
            ),
            (
                &[0, 2, 0, 1, 2],
                "row 1, column Prediction: label 2 of model (device \"d\", tag \"t\"): \
                 an outlier detector's label is 0 (normal) or 1 (anomaly)",
            ),
            (
                &[1, 1, u32::MAX, 0, 0],
                "row 2, column Label: label 4294967295",
            ),
        ];
        for (label, want) in cases {
            let cols = PredictionColumns {
                ts: &[0; 5],
                value: &[0.0; 5],
                label,
                score: &[0.0; 5],
                keys: &keys,
                outputs: &outputs,
                groups: &[(0, 0..2), (1, 2..5)],
            };
            let e = predictions_parquet_bytes(&cols, "p").unwrap_err();
            assert!(matches!(e, CodecError::Row { .. }), "{e:?}");
            assert!(e.to_string().contains(want), "{e}");
            let dir = tempfile::tempdir().unwrap();
            for (format, layout) in [
                (OutputFormat::Parquet, PredictionLayout::Combined),
                (OutputFormat::Csv, PredictionLayout::Combined),
                (OutputFormat::Csv, PredictionLayout::PerModel),
            ] {
                let out = dir.path().join("out");
                let e = write_predictions(&out, format, layout, &cols, 2, 0).unwrap_err();
                assert!(e.to_string().contains(want), "{e}");
                assert!(!out.exists(), "nothing written");
            }
        }
        // An empty class list has no valid label; a regressor's label is
        // never looked at.
        let none: Vec<String> = Vec::new();
        let outputs = [ModelOutput::Regressor, ModelOutput::Classifier(&none)];
        let cols = PredictionColumns {
            ts: &[0; 2],
            value: &[0.0; 2],
            label: &[u32::MAX, 0],
            score: &[0.0; 2],
            keys: &keys,
            outputs: &outputs,
            groups: &[(0, 0..1), (1, 1..2)],
        };
        let e = predictions_parquet_bytes(&cols, "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1, column Label: label 0"), "{e}");
        let cols = PredictionColumns {
            groups: &[(0, 0..1), (1, 1..1)],
            ..cols
        };
        assert!(predictions_parquet_bytes(&cols, "p").is_ok());
    }

    /// Columns that do not fit together are an error, not a panic.
    #[test]
    fn mismatched_columns_are_refused() {
        let keys = vec![("d".to_string(), "t".to_string())];
        let ok = PredictionColumns {
            ts: &[0; 2],
            value: &[0.0; 2],
            label: &[0; 2],
            score: &[0.0; 2],
            keys: &keys,
            outputs: &[ModelOutput::Regressor],
            groups: &[(0, 0..2)],
        };
        assert!(predictions_parquet_bytes(&ok, "p").is_ok());
        let cases = [
            (
                PredictionColumns { outputs: &[], ..ok },
                "1 keys but 0 model outputs",
            ),
            (
                PredictionColumns { label: &[0], ..ok },
                "rows 0..2 of model (device \"d\", tag \"t\"), but label has 1",
            ),
            (
                PredictionColumns {
                    groups: &[(1, 0..1)],
                    ..ok
                },
                "group of key 1, but there are 1 keys",
            ),
        ];
        for (cols, want) in cases {
            let e = predictions_parquet_bytes(&cols, "p").unwrap_err();
            assert!(matches!(e, CodecError::Schema { .. }), "{e:?}");
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    /// Indices wider than 16 bits take the packer's other path: a
    /// classifier of 70,000 classes, every one used.
    #[test]
    fn many_classes_read_back() {
        let classes: Vec<String> = (0..70_000).map(|c| format!("k{c}")).collect();
        let keys = vec![("d".to_string(), "t".to_string())];
        let outputs = [ModelOutput::Classifier(&classes)];
        let n = 70_003;
        let label: Vec<u32> = (0..n).map(|i| (i * 7_919 % 70_000) as u32).collect();
        let groups = [(0, 0..n)];
        let cols = PredictionColumns {
            ts: &vec![0; n],
            value: &vec![1.0; n],
            label: &label,
            score: &vec![0.5; n],
            keys: &keys,
            outputs: &outputs,
            groups: &groups,
        };
        for max_run in [LAYOUT.max_run, 20] {
            let layout = Layout {
                row_group: LAYOUT.row_group,
                max_run,
            };
            let (bytes, _) = encode_run(Vec::new(), &cols, &groups, layout).unwrap();
            let got = read_predictions_parquet_bytes(bytes.into(), "t", |_| true).unwrap();
            assert_eq!(got, expected(&cols, 1_000));
        }
    }

    #[test]
    fn device_and_tag_cost_a_few_bytes_a_model() {
        let fleet = fleet();
        let outputs = fleet.outputs();
        let (cols, groups) = (fleet.cols(&outputs), &fleet.groups);
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
        // Prediction and Label: a validity run a model (3 bytes), and a bit
        // a detector's row, at most 9 bits a classifier's.
        let prediction = rg.column(4).compressed_size();
        assert!(
            prediction < models * 3 + rg.num_rows() / 8 + 100,
            "{prediction} bytes"
        );
        let label = rg.column(6).compressed_size();
        let dict: i64 = fleet
            .classes
            .iter()
            .flatten()
            .map(|c| 4 + c.len() as i64)
            .sum();
        assert!(
            label < dict + models * 3 + rg.num_rows() * 9 / 8 + 100,
            "{label} bytes"
        );
        let texts: i64 = expected(&cols, 1)
            .iter()
            .filter_map(|r| r.label.as_ref())
            .map(|l| l.len() as i64)
            .sum();
        assert_eq!(rg.column(6).unencoded_byte_array_data_bytes(), Some(texts));
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
            kinds: vec![Kind::Outlier; n],
            classes: Vec::new(),
            ts: vec![1_700_000_000_000_000_000; n],
            value: (0..n).map(|i| i as f64).collect(),
            label: vec![1; n],
            score: vec![-0.5; n],
        }
    }

    #[test]
    fn csv_output_quotes_names_with_commas_and_newlines() {
        let fleet = odd_fleet();
        let outputs = fleet.outputs();
        let dir = tempfile::tempdir().unwrap();
        let files = write_predictions(
            dir.path(),
            OutputFormat::Csv,
            PredictionLayout::Combined,
            &fleet.cols(&outputs),
            1,
            0,
        )
        .unwrap();
        let mut rdr = csv::Reader::from_path(&files[0].path).unwrap();
        assert_eq!(
            rdr.headers().unwrap(),
            vec!["TS", "Device", "Tag", "Val", "Prediction", "Score", "Label"]
        );
        let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
        assert_eq!(
            rows.len(),
            fleet.keys.len(),
            "one row per reading, none injected"
        );
        for (row, (d, t)) in rows.iter().zip(&fleet.keys) {
            assert_eq!((&row[1], &row[2]), (d.as_str(), t.as_str()));
            assert_eq!(row.len(), 7);
        }
        // Per model, too.
        let out = dir.path().join("pm");
        let files = write_predictions(
            &out,
            OutputFormat::Csv,
            PredictionLayout::PerModel,
            &fleet.cols(&outputs),
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
        let outputs = fleet.outputs();
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("a").join("b").join("out");
        let files = write_predictions(
            &out,
            OutputFormat::Csv,
            PredictionLayout::PerModel,
            &fleet.cols(&outputs),
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
            label: &[],
            score: &[],
            keys: &keys,
            outputs: &[ModelOutput::Outlier],
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
