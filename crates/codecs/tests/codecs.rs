//! Readers and writers against real files: the column types users bring,
//! and errors that name the row and column.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Field, Schema, UInt32Type};
use fleetscore_codecs::{
    read_predictions_parquet_bytes, read_readings, write_predictions, CodecError, ModelOutput,
    OutputFormat, PredictionColumns, PredictionLayout, PredictionRow,
};
use fleetscore_core::parse_ts;
use parquet::arrow::ArrowWriter;

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), a.null_count() > 0))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn ts_us(s: &str) -> i64 {
    parse_ts(s).unwrap() / 1_000
}

#[test]
fn parquet_with_text_keys_microsecond_times_and_f32_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.parquet");
    write_parquet(
        &p,
        vec![
            // Lowercase names (the raw/ layout) are accepted too.
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        ts_us("2024-01-01 00:00:00"),
                        ts_us("2024-01-01 00:00:05"),
                        ts_us("2024-01-01 00:00:10"),
                    ])
                    .with_timezone("UTC"),
                ),
            ),
            (
                "device",
                Arc::new(StringArray::from(vec!["pump-1", "pump-2", "pump-1"])),
            ),
            (
                "tag",
                Arc::new(StringArray::from(vec!["temp", "temp", "temp"])),
            ),
            (
                "value",
                Arc::new(Float32Array::from(vec![1.5f32, 2.5, 3.5])),
            ),
        ],
    );
    let r = read_readings(&p).unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(
        r.owned_keys(),
        vec![
            ("pump-1".to_string(), "temp".to_string()),
            ("pump-2".to_string(), "temp".to_string())
        ]
    );
    assert_eq!(r.key_ids(), vec![0, 1, 0]);
    assert_eq!(r.values(), vec![1.5, 2.5, 3.5]);
    assert_eq!(r.ts()[1], parse_ts("2024-01-01T00:00:05Z").unwrap());
}

#[test]
fn parquet_with_text_times_and_integer_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.parquet");
    write_parquet(
        &p,
        vec![
            (
                "TS",
                Arc::new(StringArray::from(vec![
                    "2018-08-28 23:00:05.000",
                    "2018-08-28T23:00:10+00:00",
                ])),
            ),
            ("Device", Arc::new(Int32Array::from(vec![1, 1]))),
            ("Tag", Arc::new(Int32Array::from(vec![3, 3]))),
            ("Value", Arc::new(Float64Array::from(vec![10.16, 12.46]))),
        ],
    );
    let r = read_readings(&p).unwrap();
    assert_eq!(r.owned_keys(), vec![("1".to_string(), "3".to_string())]);
    assert_eq!(r.ts()[1] - r.ts()[0], 5_000_000_000);
}

#[test]
fn parquet_nulls_bad_types_and_missing_columns_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.parquet");
    let ts: ArrayRef =
        Arc::new(TimestampMicrosecondArray::from(vec![0, 1, 2]).with_timezone("UTC"));
    let dev: ArrayRef = Arc::new(StringArray::from(vec!["a", "a", "a"]));
    write_parquet(
        &p,
        vec![
            ("TS", ts.clone()),
            ("Device", dev.clone()),
            ("Tag", dev.clone()),
            (
                "Value",
                Arc::new(Float64Array::from(vec![Some(1.0), None, Some(3.0)])),
            ),
        ],
    );
    let e = read_readings(&p).unwrap_err().to_string();
    assert!(
        e.contains("row 1") && e.contains("Value") && e.contains("null"),
        "{e}"
    );

    write_parquet(
        &p,
        vec![
            ("TS", ts.clone()),
            ("Device", dev.clone()),
            ("Tag", dev.clone()),
            ("Value", dev.clone()),
        ],
    );
    let e = read_readings(&p).unwrap_err().to_string();
    assert!(e.contains("column Value has type Utf8"), "{e}");

    write_parquet(
        &p,
        vec![
            ("TS", ts),
            ("Device", dev.clone()),
            ("Value", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]))),
        ],
    );
    let e = read_readings(&p).unwrap_err();
    assert!(matches!(e, CodecError::Schema { .. }), "{e:?}");
    assert!(e.to_string().contains("no `Tag` column"), "{e}");
}

#[test]
fn csv_columns_in_any_order_with_extra_columns() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.csv");
    std::fs::write(&p, "Value,site,Tag,TS,Device\n1.5,x,t,2024-01-01 00:00:00,d\n-2e3,y,t,2024-01-01T00:00:05Z,d\n").unwrap();
    let r = read_readings(&p).unwrap();
    assert_eq!(r.values(), vec![1.5, -2000.0]);
    assert_eq!(r.owned_keys(), vec![("d".to_string(), "t".to_string())]);
}

#[test]
fn csv_ragged_rows_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.csv");
    std::fs::write(
        &p,
        "TS,Device,Tag,Value\n2024-01-01 00:00:00,d,t,1\n2024-01-01 00:00:05,d,t\n",
    )
    .unwrap();
    let e = read_readings(&p).unwrap_err().to_string();
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn per_model_csv_files_are_named_like_the_reference_and_leave_no_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let keys = vec![
        ("1".to_string(), "2".to_string()),
        ("3".to_string(), "4".to_string()),
    ];
    let ts = [parse_ts("2018-08-28 23:00:05").unwrap(); 3];
    let cols = PredictionColumns {
        ts: &ts,
        value: &[10.16, 1.0, 2.0],
        label: &[0, 1, 1],
        score: &[0.5, -0.5, 0.0],
        keys: &keys,
        outputs: &[ModelOutput::Outlier, ModelOutput::Outlier],
        groups: &[(0, 0..1), (1, 1..3)],
    };
    let run = parse_ts("2026-11-28 04:05:06").unwrap();
    let files = write_predictions(
        dir.path(),
        OutputFormat::Csv,
        PredictionLayout::PerModel,
        &cols,
        1,
        run,
    )
    .unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["preds_1_2_261128040506", "preds_3_4_261128040506"]
    );
    assert_eq!(files[1].rows, 2);
    let text = std::fs::read_to_string(&files[0].path).unwrap();
    assert_eq!(
        text,
        "TS,Device,Tag,Val,Prediction\n2018-08-28 23:00:05.000,1,2,10.16,0\n"
    );
    let all: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(all.len(), 2, "no temporary files left: {all:?}");

    let files = write_predictions(
        dir.path(),
        OutputFormat::Parquet,
        PredictionLayout::Combined,
        &cols,
        2,
        run,
    )
    .unwrap();
    assert_eq!(files.iter().map(|f| f.rows).sum::<usize>(), 3);
}

/// `score --input` and `ingest` read files: the same names, times and
/// values are refused as on every other source, naming the line or row.
#[test]
fn readings_files_follow_the_one_policy() {
    let dir = tempfile::tempdir().unwrap();
    let csv = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        read_readings(&p).unwrap_err().to_string()
    };
    let e = csv(
        "nan.csv",
        "TS,Device,Tag,Value\n2024-01-01 00:00:00,d,t,1\n2024-01-01 00:00:01,d,t,NaN\n",
    );
    assert!(
        e.contains("line 3, column Value: value NaN is not a finite number"),
        "{e}"
    );
    let e = csv(
        "slash.csv",
        "TS,Device,Tag,Value\n2024-01-01 00:00:00,x/../../escaped,t,1\n",
    );
    assert!(
        e.contains("line 2, column Device: device name \"x/../../escaped\": contains `/`"),
        "{e}"
    );
    let e = csv(
        "tab.csv",
        "TS,Device,Tag,Value\n2024-01-01 00:00:00,d,\"a\tb\",1\n",
    );
    assert!(
        e.contains("line 2, column Tag: tag name \"a\\tb\": contains a control character (U+0009)"),
        "{e}"
    );
    let e = csv(
        "old.csv",
        "TS,Device,Tag,Value\n1677-09-21 00:30:00,d,t,1\n",
    );
    assert!(
        e.contains("line 2, column TS: timestamp 1677-09-21T00:30:00.000Z"),
        "{e}"
    );
    let e = csv("lp.lp", "m,device=d x=1 1\nm,device=.. x=1 2\n");
    assert!(
        e.contains("line 2") && e.contains("device name \"..\": is `.` or `..`"),
        "{e}"
    );

    // Parquet: the row (0-based) and the column.
    let p = dir.path().join("bad.parquet");
    let ts = || -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(vec![ts_us("2024-01-01 00:00:00"); 3])
                .with_timezone("UTC"),
        )
    };
    write_parquet(
        &p,
        vec![
            ("TS", ts()),
            ("Device", Arc::new(StringArray::from(vec!["d", "d", "d"]))),
            ("Tag", Arc::new(StringArray::from(vec!["t", "t", "t"]))),
            (
                "Value",
                Arc::new(Float64Array::from(vec![1.0, 2.0, f64::INFINITY])),
            ),
        ],
    );
    let e = read_readings(&p).unwrap_err().to_string();
    assert!(
        e.contains("row 2, column Value: value inf is not a finite number"),
        "{e}"
    );
    write_parquet(
        &p,
        vec![
            ("TS", ts()),
            ("Device", Arc::new(StringArray::from(vec!["d", "d\n", "d"]))),
            ("Tag", Arc::new(StringArray::from(vec!["t", "t", "t"]))),
            ("Value", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]))),
        ],
    );
    let e = read_readings(&p).unwrap_err().to_string();
    assert!(
        e.contains("row 1, column Device: device name \"d\\n\": contains a control character"),
        "{e}"
    );
    write_parquet(
        &p,
        vec![
            (
                "TS",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![0, i64::MIN / 1_000 + 1])
                        .with_timezone("UTC"),
                ),
            ),
            ("Device", Arc::new(StringArray::from(vec!["d", "d"]))),
            ("Tag", Arc::new(StringArray::from(vec!["t", "t"]))),
            ("Value", Arc::new(Float64Array::from(vec![1.0, 2.0]))),
        ],
    );
    let e = read_readings(&p).unwrap_err().to_string();
    assert!(e.contains("row 1, column TS: timestamp 1677-09-21"), "{e}");
}

/// A fleet of every kind of model in every layout: a detector's per-model
/// file stays the reference job's, the others carry Score and Label, and
/// the Parquet file reads back with nulls where a model has no Prediction
/// or no Label.
#[test]
fn mixed_fleet_in_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<(String, String)> = ["iforest", "ridge", "svc", "tree"]
        .iter()
        .map(|t| ("pump 1".to_string(), t.to_string()))
        .collect();
    let ints = vec!["0".to_string(), "1".to_string()];
    let texts = vec!["ok".to_string(), "worn, \"soon\"\nreplace".to_string()];
    let outputs = [
        ModelOutput::Outlier,
        ModelOutput::Regressor,
        ModelOutput::Classifier(&ints),
        ModelOutput::Classifier(&texts),
    ];
    let t = parse_ts("2018-08-28 23:00:05").unwrap();
    let cols = PredictionColumns {
        ts: &[t, t, t, t, t],
        value: &[1.0, 2.0, 3.0, 4.0, 5.0],
        label: &[1, 99, 1, 0, 1],
        score: &[-0.5, 7.25, 0.75, 0.5, 0.875],
        keys: &keys,
        outputs: &outputs,
        groups: &[(0, 0..1), (1, 1..2), (2, 2..3), (3, 3..5)],
    };
    let write = |name: &str, format, layout| {
        write_predictions(&dir.path().join(name), format, layout, &cols, 1, t).unwrap()
    };
    let ts = "2018-08-28 23:00:05.000";
    let files = write("csv", OutputFormat::Csv, PredictionLayout::Combined);
    assert_eq!(
        std::fs::read_to_string(&files[0].path).unwrap(),
        format!(
            "TS,Device,Tag,Val,Prediction,Score,Label\n\
             {ts},pump 1,iforest,1,1,-0.5,\n\
             {ts},pump 1,ridge,2,,7.25,\n\
             {ts},pump 1,svc,3,,0.75,1\n\
             {ts},pump 1,tree,4,,0.5,ok\n\
             {ts},pump 1,tree,5,,0.875,\"worn, \"\"soon\"\"\nreplace\"\n"
        )
    );
    let files = write("pm", OutputFormat::Csv, PredictionLayout::PerModel);
    let text: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(&f.path).unwrap())
        .collect();
    assert_eq!(
        text,
        [
            format!("TS,Device,Tag,Val,Prediction\n{ts},pump 1,iforest,1,1\n"),
            format!("TS,Device,Tag,Val,Prediction,Score,Label\n{ts},pump 1,ridge,2,,7.25,\n"),
            format!("TS,Device,Tag,Val,Prediction,Score,Label\n{ts},pump 1,svc,3,,0.75,1\n"),
            format!(
                "TS,Device,Tag,Val,Prediction,Score,Label\n{ts},pump 1,tree,4,,0.5,ok\n\
                 {ts},pump 1,tree,5,,0.875,\"worn, \"\"soon\"\"\nreplace\"\n"
            ),
        ]
    );
    let files = write("pq", OutputFormat::Parquet, PredictionLayout::Combined);
    let data = std::fs::read(&files[0].path).unwrap();
    let rows = read_predictions_parquet_bytes(data.into(), "pq", |_| true).unwrap();
    let row = |tag: &str, value, prediction, score, label: Option<&str>| PredictionRow {
        ts: t,
        device: "pump 1".into(),
        tag: tag.into(),
        value,
        prediction,
        score,
        label: label.map(str::to_string),
    };
    assert_eq!(
        rows,
        [
            row("iforest", 1.0, Some(1), -0.5, None),
            row("ridge", 2.0, None, 7.25, None),
            row("svc", 3.0, None, 0.75, Some("1")),
            row("tree", 4.0, None, 0.5, Some("ok")),
            row("tree", 5.0, None, 0.875, Some("worn, \"soon\"\nreplace")),
        ]
    );
}

/// Files written before the Label column (six columns, Prediction never
/// null) still read: every row has its Prediction and no Label.
#[test]
fn predictions_files_without_label_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("old.parquet");
    let dict = |v: Vec<&str>| -> ArrayRef {
        Arc::new(v.into_iter().collect::<DictionaryArray<UInt32Type>>())
    };
    let t = ts_us("2024-01-01 00:00:00");
    write_parquet(
        &p,
        vec![
            (
                "TS",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![t, t + 5_000_000]).with_timezone("UTC"),
                ),
            ),
            ("Device", dict(vec!["d", "d"])),
            ("Tag", dict(vec!["t", "t"])),
            ("Val", Arc::new(Float64Array::from(vec![1.5, 2.5]))),
            ("Prediction", Arc::new(Int32Array::from(vec![0, 1]))),
            ("Score", Arc::new(Float64Array::from(vec![0.25, -0.125]))),
        ],
    );
    let rows =
        read_predictions_parquet_bytes(std::fs::read(&p).unwrap().into(), "old", |_| true).unwrap();
    let row = |ts: i64, value, prediction, score| PredictionRow {
        ts: ts * 1_000,
        device: "d".into(),
        tag: "t".into(),
        value,
        prediction: Some(prediction),
        score,
        label: None,
    };
    assert_eq!(
        rows,
        [row(t, 1.5, 0, 0.25), row(t + 5_000_000, 2.5, 1, -0.125)]
    );

    // A missing or mistyped column is named.
    let read = |columns: Vec<(&str, ArrayRef)>| {
        write_parquet(&p, columns);
        read_predictions_parquet_bytes(std::fs::read(&p).unwrap().into(), "bad", |_| true)
            .unwrap_err()
            .to_string()
    };
    let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![t]).with_timezone("UTC"));
    let f64s = || -> ArrayRef { Arc::new(Float64Array::from(vec![1.0])) };
    let e = read(vec![
        ("TS", ts.clone()),
        ("Device", dict(vec!["d"])),
        ("Tag", dict(vec!["t"])),
        ("Val", f64s()),
        ("Prediction", Arc::new(Int32Array::from(vec![0]))),
    ]);
    assert!(e.contains("no `Score` column"), "{e}");
    let e = read(vec![
        ("TS", ts.clone()),
        ("Device", dict(vec!["d"])),
        ("Tag", dict(vec!["t"])),
        ("Val", f64s()),
        ("Prediction", Arc::new(Int64Array::from(vec![0]))),
        ("Score", f64s()),
    ]);
    assert!(
        e.contains("column Prediction has type Int64, expected Int32"),
        "{e}"
    );
    let e = read(vec![
        ("TS", ts),
        ("Device", dict(vec!["d"])),
        ("Tag", dict(vec!["t"])),
        ("Val", f64s()),
        ("Prediction", Arc::new(Int32Array::from(vec![0]))),
        ("Score", Arc::new(Float64Array::from(vec![None]))),
    ]);
    assert!(e.contains("row 0, column Score: null"), "{e}");
}
