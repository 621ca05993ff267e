//! Windows as an Arrow record batch, the form the store writes to Parquet.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::Window;

/// The column names, in order.
pub const WINDOW_COLUMNS: [&str; 12] = [
    "device", "tag", "start", "end", "count", "sum", "mean", "min", "max", "std", "first", "last",
];

/// The schema of window batches: `device`, `tag` Utf8; `start`, `end`
/// Timestamp(Nanosecond, "UTC") (nanoseconds, like every timestamp in
/// fleetscore, so bounds are exact whatever the window size); `count`
/// UInt64; the other features Float64. Only `std` is nullable: it is null
/// for a window of one reading.
pub fn window_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
            let f64_col = |name| Field::new(name, DataType::Float64, name == "std");
            Arc::new(Schema::new(vec![
                Field::new("device", DataType::Utf8, false),
                Field::new("tag", DataType::Utf8, false),
                Field::new("start", ts.clone(), false),
                Field::new("end", ts, false),
                Field::new("count", DataType::UInt64, false),
                f64_col("sum"),
                f64_col("mean"),
                f64_col("min"),
                f64_col("max"),
                f64_col("std"),
                f64_col("first"),
                f64_col("last"),
            ]))
        })
        .clone()
}

/// Lays windows out as one record batch with [`window_schema`], in the
/// order given.
pub fn windows_to_record_batch<'a>(
    windows: impl IntoIterator<Item = &'a Window>,
) -> Result<RecordBatch, ArrowError> {
    let windows = windows.into_iter();
    let n = windows.size_hint().0;
    let mut device = StringBuilder::with_capacity(n, n * 8);
    let mut tag = StringBuilder::with_capacity(n, n * 8);
    let mut start = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut end = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut count = UInt64Builder::with_capacity(n);
    let mut f: [Float64Builder; 7] = std::array::from_fn(|_| Float64Builder::with_capacity(n));
    for w in windows {
        device.append_value(&w.device);
        tag.append_value(&w.tag);
        start.append_value(w.start);
        end.append_value(w.end);
        count.append_value(w.count);
        f[0].append_value(w.sum);
        f[1].append_value(w.mean);
        f[2].append_value(w.min);
        f[3].append_value(w.max);
        f[4].append_option(w.std);
        f[5].append_value(w.first);
        f[6].append_value(w.last);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(device.finish()),
        Arc::new(tag.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(count.finish()),
    ];
    columns.extend(f.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    RecordBatch::try_new(window_schema(), columns)
}

/// The windows of a batch with [`window_schema`]'s columns (by name; other
/// columns are ignored), in row order.
pub fn windows_from_record_batch(batch: &RecordBatch) -> Result<Vec<Window>, ArrowError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampNanosecondType, UInt64Type};
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| ArrowError::SchemaError(format!("no column {name:?}")))
    };
    let text = |name: &str| -> Result<ArrayRef, ArrowError> {
        arrow::compute::cast(col(name)?, &DataType::Utf8)
    };
    let (device, tag) = (text("device")?, text("tag")?);
    let (device, tag) = (device.as_string::<i32>(), tag.as_string::<i32>());
    let ts = |name: &str| {
        col(name)?
            .as_primitive_opt::<TimestampNanosecondType>()
            .cloned()
            .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not a ns timestamp")))
    };
    let f = |name: &str| {
        col(name)?
            .as_primitive_opt::<Float64Type>()
            .cloned()
            .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not f64")))
    };
    let (start, end) = (ts("start")?, ts("end")?);
    let count = col("count")?
        .as_primitive_opt::<UInt64Type>()
        .cloned()
        .ok_or_else(|| ArrowError::SchemaError("count is not u64".into()))?;
    let (sum, mean, min, max, std, first, last) = (
        f("sum")?,
        f("mean")?,
        f("min")?,
        f("max")?,
        f("std")?,
        f("first")?,
        f("last")?,
    );
    Ok((0..batch.num_rows())
        .map(|i| Window {
            device: device.value(i).to_string(),
            tag: tag.value(i).to_string(),
            start: start.value(i),
            end: end.value(i),
            count: count.value(i),
            sum: sum.value(i),
            mean: mean.value(i),
            min: min.value(i),
            max: max.value(i),
            std: (!std.is_null(i)).then(|| std.value(i)),
            first: first.value(i),
            last: last.value(i),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampNanosecondType, UInt64Type};

    use super::*;

    #[test]
    fn columns_match_the_documented_schema() {
        let w = |std| Window {
            device: "1".into(),
            tag: "7".into(),
            start: 60_000_000_000,
            end: 120_000_000_000,
            count: 2,
            sum: 3.0,
            mean: 1.5,
            min: 1.0,
            max: 2.0,
            std,
            first: 1.0,
            last: 2.0,
        };
        let batch = windows_to_record_batch(&[w(Some(0.5)), w(None)]).unwrap();
        let names: Vec<_> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, WINDOW_COLUMNS);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            batch
                .column(3)
                .as_primitive::<TimestampNanosecondType>()
                .value(0),
            120_000_000_000
        );
        assert_eq!(batch.column(4).as_primitive::<UInt64Type>().value(1), 2);
        let std = batch.column(9).as_primitive::<Float64Type>();
        assert_eq!((std.value(0), std.is_null(1)), (0.5, true));
        assert_eq!(
            batch.schema().field(2).data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
        );
        let empty = windows_to_record_batch(&[]).unwrap();
        assert_eq!(empty.num_rows(), 0);
    }

    #[test]
    fn windows_round_trip_through_a_batch() {
        let w = Window {
            device: "d".into(),
            tag: "t".into(),
            start: 60,
            end: 120,
            count: 2,
            sum: 3.0,
            mean: 1.5,
            min: 1.0,
            max: 2.0,
            std: Some(0.5f64.sqrt()),
            first: 1.0,
            last: 2.0,
        };
        let single = Window {
            count: 1,
            std: None,
            ..w.clone()
        };
        let b = windows_to_record_batch([&w, &single]).unwrap();
        assert_eq!(windows_from_record_batch(&b).unwrap(), vec![w, single]);
    }
}
