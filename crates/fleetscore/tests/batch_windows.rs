//! The batch path as a user runs it: `ingest` files into raw/, then
//! `aggregate` raw/ into windows/, read back from the store folder.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampNanosecondType, UInt64Type};
use fleetscore_core::parse_ts;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

mod common;
use common::run;

/// Every file under `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn batches(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn ts(s: &str) -> i64 {
    parse_ts(s).unwrap()
}

/// (device, tag, ts, value) of a raw object, in file order.
fn raw_rows(path: &Path) -> Vec<(String, String, i64, f64)> {
    let r = fleetscore_codecs::read_readings(path).unwrap();
    (0..r.len())
        .map(|i| {
            let x = r.row(i);
            (x.device.to_owned(), x.tag.to_owned(), x.ts, x.value)
        })
        .collect()
}

#[derive(Debug, PartialEq)]
struct W {
    device: String,
    tag: String,
    start: i64,
    end: i64,
    count: u64,
    sum: f64,
    mean: f64,
    min: f64,
    max: f64,
    std: Option<f64>,
    first: f64,
    last: f64,
}

fn windows(path: &Path) -> Vec<W> {
    let mut out = Vec::new();
    for b in batches(path) {
        let names: Vec<_> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "device", "tag", "start", "end", "count", "sum", "mean", "min", "max", "std",
                "first", "last"
            ]
        );
        let s = |i: usize| b.column(i).as_string::<i32>().clone();
        let t = |i: usize| {
            b.column(i)
                .as_primitive::<TimestampNanosecondType>()
                .clone()
        };
        let f = |i: usize| b.column(i).as_primitive::<Float64Type>().clone();
        let (device, tag, start, end) = (s(0), s(1), t(2), t(3));
        let count = b.column(4).as_primitive::<UInt64Type>().clone();
        let (sum, mean, min, max, std, first, last) = (f(5), f(6), f(7), f(8), f(9), f(10), f(11));
        for r in 0..b.num_rows() {
            out.push(W {
                device: device.value(r).into(),
                tag: tag.value(r).into(),
                start: start.value(r),
                end: end.value(r),
                count: count.value(r),
                sum: sum.value(r),
                mean: mean.value(r),
                min: min.value(r),
                max: max.value(r),
                std: (!std.is_null(r)).then(|| std.value(r)),
                first: first.value(r),
                last: last.value(r),
            });
        }
    }
    out
}

/// A window computed by hand from its values, in time order.
fn expect(device: &str, tag: &str, start: &str, size_s: i64, values: &[f64]) -> W {
    let n = values.len() as f64;
    let sum: f64 = values.iter().sum();
    let mean = sum / n;
    let std = (values.len() > 1)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    let start = ts(start);
    W {
        device: device.into(),
        tag: tag.into(),
        start,
        end: start + size_s * 1_000_000_000,
        count: values.len() as u64,
        sum,
        mean,
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        std,
        first: values[0],
        last: values[values.len() - 1],
    }
}

fn assert_windows(got: &[W], want: &[W]) {
    assert_eq!(got.len(), want.len(), "{got:#?}\nwant {want:#?}");
    for (g, w) in got.iter().zip(want) {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        assert_eq!(
            (&g.device, &g.tag, g.start, g.end, g.count, g.min, g.max, g.first, g.last),
            (&w.device, &w.tag, w.start, w.end, w.count, w.min, w.max, w.first, w.last),
        );
        assert!(
            close(g.sum, w.sum) && close(g.mean, w.mean),
            "{g:?} vs {w:?}"
        );
        match (g.std, w.std) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(close(a, b), "{g:?} vs {w:?}"),
            _ => panic!("std: {g:?} vs {w:?}"),
        }
    }
}

/// Two hours of readings, out of order in the file, one exactly on the
/// 11:00 boundary (of the hour and of the minute windows).
const READINGS: &str = "TS,Device,Tag,Value
2024-03-05 11:00:30,d1,temp,16
2024-03-05 10:58:30,d1,temp,1
2024-03-05 10:59:10,d1,temp,2
2024-03-05 10:59:50,d1,temp,4
2024-03-05 11:00:00,d1,temp,8
2024-03-05 10:59:20,d2,temp,5
2024-03-05 10:59:20,d1,pres,7
";

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("readings.csv");
    std::fs::write(&csv, READINGS).unwrap();
    (dir, csv)
}

#[test]
fn ingest_partitions_by_hour_sorted_and_reingest_overwrites() {
    let (dir, csv) = setup();
    let data = dir.path().join("data");
    let o = run(&data, &["ingest", csv.to_str().unwrap(), "--json"]);
    assert!(o.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&doc["files"], &doc["readings"], &doc["partitions"]),
        (&1.into(), &7.into(), &2.into())
    );

    let store = data.join("store");
    let raw = files(&store.join("raw"));
    assert_eq!(raw.len(), 2, "{raw:?}");
    assert!(raw[0].starts_with("date=2024-03-05/hour=10/part-"));
    assert!(raw[1].starts_with("date=2024-03-05/hour=11/part-"));
    assert!(raw.iter().all(|k| k.ends_with(".parquet")));

    // The stored schema, exactly.
    let b = batches(&store.join("raw").join(&raw[0]));
    let schema = b[0].schema();
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
            ),
            ("device", DataType::Utf8),
            ("tag", DataType::Utf8),
            ("value", DataType::Float64),
        ]
    );

    // Sorted by (ts, device, tag) within each hour; the 11:00:00 reading is
    // in hour 11.
    let row = |d: &str, t: &str, at: &str, v: f64| (d.to_string(), t.to_string(), ts(at), v);
    let hour10 = vec![
        row("d1", "temp", "2024-03-05 10:58:30", 1.0),
        row("d1", "temp", "2024-03-05 10:59:10", 2.0),
        row("d1", "pres", "2024-03-05 10:59:20", 7.0),
        row("d2", "temp", "2024-03-05 10:59:20", 5.0),
        row("d1", "temp", "2024-03-05 10:59:50", 4.0),
    ];
    let hour11 = vec![
        row("d1", "temp", "2024-03-05 11:00:00", 8.0),
        row("d1", "temp", "2024-03-05 11:00:30", 16.0),
    ];
    assert_eq!(raw_rows(&store.join("raw").join(&raw[0])), hour10);
    assert_eq!(raw_rows(&store.join("raw").join(&raw[1])), hour11);

    // Again: the same objects, no duplicates.
    let o = run(&data, &["ingest", csv.to_str().unwrap()]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("ingested 1 file(s), 7 reading(s)"),
        "{stdout}"
    );
    assert_eq!(files(&store.join("raw")), raw);
    assert_eq!(raw_rows(&store.join("raw").join(&raw[0])), hour10);
    assert_eq!(raw_rows(&store.join("raw").join(&raw[1])), hour11);
}

#[test]
fn aggregate_writes_tumbling_and_hopping_windows() {
    let (dir, csv) = setup();
    let data = dir.path().join("data");
    assert!(run(&data, &["ingest", csv.to_str().unwrap()])
        .status
        .success());
    let store = data.join("store");

    let args = [
        "aggregate",
        "--from",
        "2024-03-05 10:00:00",
        "--to",
        "2024-03-05T12:00:00Z",
        "--size",
        "1m",
        "--json",
    ];
    let o = run(&data, &args);
    assert!(o.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&doc["readings"], &doc["windows"], &doc["partitions"]),
        (&7.into(), &5.into(), &2.into())
    );
    let root = store.join("windows");
    let keys = files(&root);
    assert_eq!(
        keys,
        [
            "size=1m/date=2024-03-05/hour=10/part-0.parquet",
            "size=1m/date=2024-03-05/hour=11/part-0.parquet",
        ]
    );
    // The reading at 11:00:00 opens the 11:00 window, not the 10:59 one.
    let hour10 = [
        expect("d1", "pres", "2024-03-05 10:59:00", 60, &[7.0]),
        expect("d1", "temp", "2024-03-05 10:58:00", 60, &[1.0]),
        expect("d1", "temp", "2024-03-05 10:59:00", 60, &[2.0, 4.0]),
        expect("d2", "temp", "2024-03-05 10:59:00", 60, &[5.0]),
    ];
    let hour11 = [expect(
        "d1",
        "temp",
        "2024-03-05 11:00:00",
        60,
        &[8.0, 16.0],
    )];
    assert_windows(&windows(&root.join(&keys[0])), &hour10);
    assert_windows(&windows(&root.join(&keys[1])), &hour11);

    // A rerun overwrites the same objects, and replaces each partition of
    // its range: other parts there (the streaming path's) are deleted,
    // parts outside the range and other files stay.
    let other = |hour: &str, name: &str| {
        let dir = root.join(format!("size=1m/date=2024-03-05/hour={hour}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), b"not parquet").unwrap();
        format!("size=1m/date=2024-03-05/hour={hour}/{name}")
    };
    other("10", "part-3.parquet");
    other("11", "part-1.parquet");
    let kept = [other("10", "README"), other("12", "part-1.parquet")];
    assert!(run(&data, &args).status.success());
    let mut want: Vec<String> = keys.iter().cloned().chain(kept.iter().cloned()).collect();
    want.sort();
    assert_eq!(files(&root), want);
    assert_windows(&windows(&root.join(&keys[0])), &hour10);
    for k in &kept {
        std::fs::remove_file(root.join(k)).unwrap();
    }
    assert_eq!(files(&root), keys);

    // Hopping windows of 2m every 1m starting in hour 10; the 10:59 window
    // reads hour 11's raw partition too.
    let o = run(
        &data,
        &[
            "aggregate",
            "--from",
            "2024-03-05 10:00:00",
            "--to",
            "2024-03-05 11:00:00",
            "--size",
            "2m",
            "--hop",
            "1m",
        ],
    );
    assert!(o.status.success());
    let hop = root.join("size=2m_hop=1m");
    assert_eq!(
        files(&hop),
        ["date=2024-03-05/hour=10/part-0.parquet".to_string()]
    );
    let got: Vec<W> = windows(&hop.join("date=2024-03-05/hour=10/part-0.parquet"))
        .into_iter()
        .filter(|w| w.device == "d1" && w.tag == "temp")
        .collect();
    assert_windows(
        &got,
        &[
            expect("d1", "temp", "2024-03-05 10:57:00", 120, &[1.0]),
            expect("d1", "temp", "2024-03-05 10:58:00", 120, &[1.0, 2.0, 4.0]),
            expect(
                "d1",
                "temp",
                "2024-03-05 10:59:00",
                120,
                &[2.0, 4.0, 8.0, 16.0],
            ),
        ],
    );

    // Bad arguments are refused.
    let o = run(
        &data,
        &[
            "aggregate",
            "--from",
            "2024-03-05 10:00:00",
            "--to",
            "x",
            "--size",
            "1m",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let o = run(
        &data,
        &[
            "aggregate",
            "--from",
            "2024-03-05 10:00:00",
            "--to",
            "2024-03-05 11:00:00",
            "--size",
            "1q",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_bad_row_refuses_its_file_only() {
    let (dir, csv) = setup();
    let data = dir.path().join("data");
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "TS,Device,Tag,Value\n2024-03-06 10:00:00,d1,temp,1\n2024-03-06 10:00:01,d1,temp,abc\n",
    )
    .unwrap();
    let o = run(
        &data,
        &["ingest", bad.to_str().unwrap(), csv.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("bad.csv") && stderr.contains("line 3") && stderr.contains("Value"),
        "{stderr}"
    );
    let raw = files(&data.join("store").join("raw"));
    assert_eq!(raw.len(), 2, "{raw:?}");
    assert!(
        raw.iter().all(|k| k.starts_with("date=2024-03-05/")),
        "{raw:?}"
    );

    // Aggregating a range with no raw data writes nothing.
    let o = run(
        &data,
        &[
            "aggregate",
            "--from",
            "2024-03-06 10:00:00",
            "--to",
            "2024-03-06 11:00:00",
            "--size",
            "1m",
            "--json",
        ],
    );
    assert!(o.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((&doc["readings"], &doc["windows"]), (&0.into(), &0.into()));
    assert!(files(&data.join("store").join("windows")).is_empty());
}

#[test]
fn line_protocol_files_ingest_through_the_same_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 2024-03-05T10:00:00Z and one minute later, in nanoseconds.
    let lp = "# written by telegraf\n\
              sensors,device=pump-1,site=a temp=21.5,hum=40i 1709632800000000000\n\
              sensors,device=pump-2 temp=19.25,ok=true 1709632860000000000\n";
    let file = dir.path().join("telegraf.txt");
    std::fs::write(&file, lp).unwrap();
    let o = run(&data, &["ingest", file.to_str().unwrap(), "--json"]);
    assert!(o.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["readings"], 4);
    let raw = files(&data.join("store/raw"));
    assert_eq!(raw.len(), 1, "{raw:?}");
    let rows = raw_rows(&data.join("store/raw").join(&raw[0]));
    assert_eq!(
        rows,
        vec![
            (
                "pump-1".into(),
                "hum".into(),
                ts("2024-03-05T10:00:00Z"),
                40.0
            ),
            (
                "pump-1".into(),
                "temp".into(),
                ts("2024-03-05T10:00:00Z"),
                21.5
            ),
            (
                "pump-2".into(),
                "ok".into(),
                ts("2024-03-05T10:01:00Z"),
                1.0
            ),
            (
                "pump-2".into(),
                "temp".into(),
                ts("2024-03-05T10:01:00Z"),
                19.25
            ),
        ]
    );

    // A bad line refuses the file, naming the line.
    let bad = dir.path().join("bad.lp");
    std::fs::write(&bad, "m,device=d v=1 1\nm,device=d v= 2\n").unwrap();
    let o = run(&data, &["ingest", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.lp: line 2"), "{err}");
}
