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
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
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
    // Room for every row up front (no regrowth copies), within reason.
    let rows = usize::try_from(builder.metadata().file_metadata().num_rows())
        .unwrap_or(0)
        .min(1 << 26);
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
