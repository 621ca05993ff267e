//! Helpers shared by the integration tests that run the real binary.
#![allow(dead_code)] // each test file uses a subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A loopback port free now (for a service a test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `fleetscore` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetscore"))
}

/// Runs `fleetscore --data DATA --quiet ARGS…`, echoing what it printed.
pub fn run(data: &Path, args: &[&str]) -> Output {
    let out = bin()
        .arg("--data")
        .arg(data)
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "$ fleetscore {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `fleetscore models import FILE --device DEVICE --tag TAG` into `data`,
/// which must succeed.
pub fn import_as(data: &Path, file: &Path, device: &str, tag: &str) {
    let o = run(
        data,
        &[
            "models",
            "import",
            file.to_str().unwrap(),
            "--device",
            device,
            "--tag",
            tag,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

/// stdout then stderr of a finished command, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `../shared/reference` beside the checkout: the reference deployment's
/// models, readings and expected predictions. Only CI has it, so the tests
/// that use it are `#[ignore]`d and `.ci/run` runs them; run without it,
/// they fail (never pass) here.
pub fn reference() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference");
    assert!(
        p.is_dir(),
        "{} not found: this test needs the reference deployment beside the checkout (CI has \
         it); plain `cargo test` checks the same behaviours on examples/fleet",
        p.display()
    );
    p
}

/// A deployment in the reference layout (`models/model_{device}_{tag}`,
/// `data/sensor_data.csv`, `expected_predictions.csv`) and what the tests
/// know about it.
pub struct Fleet {
    pub root: PathBuf,
    pub models: usize,
    pub rows: usize,
    pub anomalies: usize,
    /// The whole hours the readings fall in, as `backfill --from/--to`
    /// take them, and how many there are.
    pub window: [&'static str; 2],
    pub hours: usize,
    /// One hour inside them, written as a user may (the two spellings of a
    /// time), and the readings in it.
    pub hour: [&'static str; 2],
    pub rows_in_hour: usize,
    /// The first row of model_1_1's per-model file: `TS,Device,Tag,Val,Prediction`.
    pub first_row: &'static str,
}

impl Fleet {
    /// `examples/fleet`, committed (written by
    /// `crates/models/tests/fixtures/sklearn/generate.py`).
    pub fn example() -> Fleet {
        Fleet {
            root: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/fleet"),
            models: 6,
            rows: 2_448,
            anomalies: 181,
            window: ["2026-01-15T00:00:00Z", "2026-01-15T04:00:00Z"],
            hours: 4,
            hour: ["2026-01-15 01:00:00", "2026-01-15T02:00:00Z"],
            rows_in_hour: 612,
            first_row: "2026-01-15 00:00:05.000,1,1,21.23,0",
        }
    }

    /// The reference deployment, [`reference`].
    pub fn reference() -> Fleet {
        Fleet {
            root: reference(),
            models: 15,
            rows: 17_768,
            anomalies: 6_757,
            window: ["2018-08-28T23:00:00Z", "2018-08-29T03:30:00Z"],
            hours: 5,
            hour: ["2018-08-29 00:00:00", "2018-08-29T01:00:00Z"],
            rows_in_hour: 4_203,
            first_row: "2018-08-28 23:00:05.000,1,1,10.16,0",
        }
    }

    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    pub fn readings(&self) -> PathBuf {
        self.root.join("data/sensor_data.csv")
    }

    /// `expected_predictions.csv`: (TS, Device, Tag) → (Val, Prediction,
    /// Decision), checking the header.
    pub fn expected(&self) -> HashMap<(String, String, String), (String, u8, f64)> {
        let text = std::fs::read_to_string(self.root.join("expected_predictions.csv")).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("TS,Device,Tag,Val,Prediction,Decision"));
        let mut out = HashMap::new();
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            let old = out.insert(
                (f[0].to_string(), f[1].to_string(), f[2].to_string()),
                (
                    f[3].to_string(),
                    f[4].parse().unwrap(),
                    f[5].parse().unwrap(),
                ),
            );
            assert!(old.is_none(), "{line}: twice in expected_predictions.csv");
        }
        assert_eq!(out.len(), self.rows);
        out
    }
}

/// Appends every `.parquet` file under `dir` (recursively) to `out`.
pub fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            parquet_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
}

/// A `fleetscore serve` child on a free port.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Server::start_with(bin(), data, extra)
    }

    /// [`Server::start`] from a prepared command (environment, say).
    pub fn start_with(mut cmd: Command, data: &Path, extra: &[&str]) -> Server {
        let mut child = cmd
            .arg("--data")
            .arg(data)
            .arg("serve")
            .args(if extra.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            .args(extra)
            .stdout(Stdio::piped())
            // FLEETSCORE_TEST_SERVE_LOG=1 shows the server's log (debugging).
            .stderr(if std::env::var_os("FLEETSCORE_TEST_SERVE_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, addr }
    }

    /// Sends a request; returns (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let (status, text) = self.exchange(method, path, headers, body);
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body)
    }

    /// Sends a request; returns the status and the whole answer (headers
    /// and body) as text.
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        // The server may answer (413) before reading a large body.
        let _ = s.write_all(body);
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad response {text:?}"));
        (status, text)
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        self.request("POST", path, headers, body.as_bytes())
    }

    pub fn terminate(mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }

    pub fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Expected = HashMap<(i64, String, String, u64), usize>;

/// Every reading under DATA/store/raw, counted.
pub fn raw_readings(data: &Path) -> Expected {
    let mut files = Vec::new();
    parquet_files(&data.join("store").join("raw"), &mut files);
    let mut out = HashMap::new();
    for f in files {
        let r = fleetscore_codecs::read_readings(&f).unwrap();
        for i in 0..r.len() {
            let x = r.row(i);
            *out.entry((
                x.ts,
                x.device.to_owned(),
                x.tag.to_owned(),
                x.value.to_bits(),
            ))
            .or_default() += 1;
        }
    }
    out
}

/// A small fleet in DATA's store: readings of 4 devices × 3 tags every
/// 30 s from 2024-05-01 08:00 to 10:00 UTC (a sine per pair, noise and a
/// few spikes) ingested into raw/, and a model per pair trained on the
/// first hour. 120 readings per pair per hour.
pub fn small_fleet(data: &Path) {
    let csv = data.join("fleet.csv");
    let mut s = String::from("TS,Device,Tag,Value\n");
    let mut x: u64 = 42;
    for sec in (0..7200u64).step_by(30) {
        for d in 0..4 {
            for t in 0..3 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let noise = (x >> 33) as f64 / (1u64 << 31) as f64 - 0.5;
                let spike = if (x >> 20).is_multiple_of(50) {
                    5.0
                } else {
                    0.0
                };
                let v = (sec as f64 / 600.0 + d as f64).sin() + t as f64 + 0.2 * noise + spike;
                s += &format!(
                    "2024-05-01 {:02}:{:02}:{:02},{d},{t},{v:.4}\n",
                    8 + sec / 3600,
                    (sec % 3600) / 60,
                    sec % 60
                );
            }
        }
    }
    std::fs::write(&csv, s).unwrap();
    let o = run(data, &["ingest", csv.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        data,
        &[
            "models",
            "train",
            "--from",
            "2024-05-01 08:00:00",
            "--to",
            "2024-05-01 09:00:00",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

/// (ts µs, device, tag) → (prediction, score) from every predictions part
/// under `store`, asserting that no row is there twice.
pub fn predictions(store: &Path) -> HashMap<(i64, String, String), (i32, f64)> {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Float64Type, Int32Type, TimestampMicrosecondType};
    let mut files = Vec::new();
    parquet_files(&store.join("predictions"), &mut files);
    let mut out = HashMap::new();
    for f in files {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for b in reader {
            let b = b.unwrap();
            let ts = b
                .column(0)
                .as_primitive::<TimestampMicrosecondType>()
                .clone();
            let dev = arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
            let tag = arrow::compute::cast(b.column(2), &DataType::Utf8).unwrap();
            let (dev, tag) = (dev.as_string::<i32>(), tag.as_string::<i32>());
            let pred = b.column(4).as_primitive::<Int32Type>().clone();
            let score = b.column(5).as_primitive::<Float64Type>().clone();
            for i in 0..b.num_rows() {
                let k = (
                    ts.value(i),
                    dev.value(i).to_string(),
                    tag.value(i).to_string(),
                );
                assert!(
                    out.insert(k.clone(), (pred.value(i), score.value(i)))
                        .is_none(),
                    "{k:?} predicted twice"
                );
            }
        }
    }
    out
}
