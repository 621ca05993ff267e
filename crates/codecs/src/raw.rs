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
use parquet::file::properties::WriterProperties;

use crate::readings::{append_batch, Interner};
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
    let ts = TimestampNanosecondArray::from_iter_values(rows.iter().map(|&r| readings.ts[r]))
        .with_timezone("UTC");
    let pair = |r: usize| &readings.keys[readings.key[r] as usize];
    let device = StringArray::from_iter_values(rows.iter().map(|&r| pair(r).0.as_str()));
    let tag = StringArray::from_iter_values(rows.iter().map(|&r| pair(r).1.as_str()));
    let value = Float64Array::from_iter_values(rows.iter().map(|&r| readings.value[r]));
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

/// [`read_readings_parquet_bytes`] of only the row groups `groups` (by
/// index, in the order given; `None`: all of them).
pub fn read_readings_parquet_row_groups(
    data: Bytes,
    name: &str,
    groups: Option<&[usize]>,
) -> Result<Readings, CodecError> {
    let path = Path::new(name);
    let pq = |e: &dyn std::fmt::Display| CodecError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(data.clone()).map_err(|e| pq(&e))?;
    // Text device and tag columns are read as dictionaries (as Parquet
    // stores them): each distinct pair is then interned once per batch
    // instead of once per row. The result is the same.
    if let Some(schema) = crate::readings::dictionary_hint(builder.schema()) {
        let options = ArrowReaderOptions::new().with_schema(schema);
        if let Ok(meta) = ArrowReaderMetadata::try_new(builder.metadata().clone(), options) {
            builder = ParquetRecordBatchReaderBuilder::new_with_metadata(data, meta);
        }
    }
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
    let mut out = Readings {
        ts: Vec::with_capacity(rows),
        value: Vec::with_capacity(rows),
        key: Vec::with_capacity(rows),
        keys: Vec::new(),
    };
    let mut interner = Interner::default();
    let mut row0 = 0;
    for batch in reader {
        let batch = batch.map_err(|e| pq(&e))?;
        crate::readings::check_columns(path, batch.schema().as_ref())?;
        append_batch(path, &batch, row0, &mut out, &mut interner)?;
        row0 += batch.num_rows();
    }
    out.keys = interner.keys;
    Ok(out)
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
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type};
    use parquet::arrow::ProjectionMask;

    let path = Path::new(name);
    let pq = |e: &dyn std::fmt::Display| CodecError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(data.clone()).map_err(|e| pq(&e))?;
    if let Some(schema) = crate::readings::dictionary_hint(builder.schema()) {
        let options = ArrowReaderOptions::new().with_schema(schema);
        if let Ok(meta) = ArrowReaderMetadata::try_new(builder.metadata().clone(), options) {
            builder = ParquetRecordBatchReaderBuilder::new_with_metadata(data, meta);
        }
    }
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
    let mut interner = Interner::default();
    let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
    let mut seen: Vec<bool> = Vec::new();
    let mut seen_sparse: rustc_hash::FxHashSet<(i32, i32)> = Default::default();
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
                // Mark the pairs of the batch, then name each once.
                let (dk, tk) = (dd.keys().values(), td.keys().values());
                let nt = tv.len();
                let mut pairs: Vec<(i32, i32)> = Vec::new();
                match dv.len().checked_mul(nt).filter(|&c| c <= 1 << 22) {
                    Some(cells) => {
                        seen.clear();
                        seen.resize(cells, false);
                        for r in (0..n).filter(|&r| inside(r)) {
                            let cell = &mut seen[dk[r] as usize * nt + tk[r] as usize];
                            if !*cell {
                                *cell = true;
                                pairs.push((dk[r], tk[r]));
                            }
                        }
                    }
                    None => {
                        seen_sparse.clear();
                        for r in (0..n).filter(|&r| inside(r)) {
                            if seen_sparse.insert((dk[r], tk[r])) {
                                pairs.push((dk[r], tk[r]));
                            }
                        }
                    }
                }
                for (a, b) in pairs {
                    interner.text(dv.value(a as usize), tv.value(b as usize));
                }
                continue;
            }
        }
        let d = crate::readings::as_strings(path, d, "Device")?;
        let t = crate::readings::as_strings(path, t, "Tag")?;
        let (ds, tss) = (d.as_string::<i32>(), t.as_string::<i32>());
        for r in (0..n).filter(|&r| inside(r)) {
            interner.text(ds.value(r), tss.value(r));
        }
    }
    Ok(RawScan {
        row_groups,
        keys: interner.keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_round_trip_through_bytes() {
        let r = Readings {
            ts: vec![3, 1, 2],
            value: vec![30.0, 10.0, 20.0],
            key: vec![0, 1, 0],
            keys: vec![("d1".into(), "t".into()), ("d2".into(), "t".into())],
        };
        let bytes = write_readings_parquet(&r, &[1, 2], "x").unwrap();
        let back = read_readings_parquet_bytes(Bytes::from(bytes), "x").unwrap();
        assert_eq!(back.ts, vec![1, 2]);
        assert_eq!(back.value, vec![10.0, 20.0]);
        assert_eq!(back.keys[back.key[0] as usize].0, "d2");
        assert_eq!(back.keys[back.key[1] as usize].0, "d1");
    }
}
