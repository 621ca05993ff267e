//! `fleetscore serve` under sustained load with SIGKILLs: every acknowledged
//! reading reaches raw/ exactly once, and every window is written to
//! windows/ exactly once with the features the batch recompute gives over
//! raw/. Also `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, TimestampNanosecondType, UInt64Type};
use fleetscore_stream::{batch_aggregate, Reading, Span, Window, WindowSpec};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

mod common;
use common::{parquet_files, raw_readings, Expected, Server};

/// 2023-11-14T22:13:00Z, on a minute boundary.
const T0: i64 = 1_699_999_980_000_000_000;
const SEC: i64 = 1_000_000_000;

/// POSTs `body` to `/write` on a fresh connection; the status, or `None`
/// when the server is gone.
fn try_post(addr: &str, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let req = format!(
        "POST /write HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp);
    text.split(' ').nth(1)?.parse().ok()
}

/// One load thread: its own devices, each sending in time order, one
/// second of event time per request, two fields per line.
struct Loader {
    devices: Vec<String>,
    next: i64,
}

impl Loader {
    fn body(&self) -> (String, Vec<(i64, String, String, u64)>) {
        let ts = T0 + self.next * SEC;
        let mut body = String::new();
        let mut rows = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            let a = ((self.next * 7 + i as i64) % 100) as f64 / 4.0;
            let b = -((self.next + 3 * i as i64) % 50) as f64;
            body.push_str(&format!("m,device={d} a={a},b={b} {ts}\n"));
            rows.push((ts, d.clone(), "a".to_string(), a.to_bits()));
            rows.push((ts, d.clone(), "b".to_string(), b.to_bits()));
        }
        (body, rows)
    }
}

/// Sends until `stop`; records what was acknowledged. A request that got
/// no answer is not resent (its readings may or may not be stored), and
/// the clock moves on, so each device stays in time order.
fn load(addr: &str, loader: &mut Loader, acked: &Mutex<Expected>, stop: &AtomicBool) -> usize {
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        let (body, rows) = loader.body();
        loader.next += 1;
        match try_post(addr, &body) {
            Some(204) => {
                let mut a = acked.lock().unwrap();
                for r in rows {
                    *a.entry(r).or_default() += 1;
                }
                sent += 1;
            }
            Some(other) => panic!("unexpected status {other}"),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    sent
}

/// Runs `threads` loaders against `server` for `for_ms`, then SIGKILLs or
/// SIGTERMs it.
fn run_phase(
    server: Server,
    loaders: &mut [Loader],
    acked: &Arc<Mutex<Expected>>,
    for_ms: u64,
    kill: bool,
) -> usize {
    let stop = AtomicBool::new(false);
    let addr = server.addr.clone();
    let sent = std::thread::scope(|s| {
        let handles: Vec<_> = loaders
            .iter_mut()
            .map(|l| {
                let (addr, acked, stop) = (&addr, &**acked, &stop);
                s.spawn(move || load(addr, l, acked, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(for_ms));
        if kill {
            // Mid-load: requests are in flight.
            let mut server = server;
            server.child.kill().unwrap();
            server.child.wait().unwrap();
            stop.store(true, Ordering::Relaxed);
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        } else {
            stop.store(true, Ordering::Relaxed);
            let n = handles.into_iter().map(|h| h.join().unwrap()).sum();
            server.terminate();
            n
        }
    });
    eprintln!("phase: {sent} requests acknowledged");
    sent
}

type Key = (String, String, i64);

/// Every window row under DATA/store/windows/size=1m, with how often each
/// (device, tag, start) occurs.
fn stored_windows(data: &Path) -> (BTreeMap<Key, Window>, HashMap<Key, usize>) {
    let mut files = Vec::new();
    parquet_files(&data.join("store/windows/size=1m"), &mut files);
    let mut out = BTreeMap::new();
    let mut seen: HashMap<Key, usize> = HashMap::new();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            let (device, tag) = (col("device"), col("tag"));
            let (device, tag) = (device.as_string::<i32>(), tag.as_string::<i32>());
            let start = col("start");
            let start = start.as_primitive::<TimestampNanosecondType>();
            let end = col("end");
            let end = end.as_primitive::<TimestampNanosecondType>();
            let count = col("count");
            let count = count.as_primitive::<UInt64Type>();
            let f64s: Vec<_> = ["sum", "mean", "min", "max", "std", "first", "last"]
                .iter()
                .map(|n| col(n))
                .collect();
            let f = |k: usize, i: usize| {
                let a = f64s[k].as_primitive::<Float64Type>();
                (!a.is_null(i)).then(|| a.value(i))
            };
            for i in 0..b.num_rows() {
                let w = Window {
                    device: device.value(i).to_string(),
                    tag: tag.value(i).to_string(),
                    start: start.value(i),
                    end: end.value(i),
                    count: count.value(i),
                    sum: f(0, i).unwrap(),
                    mean: f(1, i).unwrap(),
                    min: f(2, i).unwrap(),
                    max: f(3, i).unwrap(),
                    std: f(4, i),
                    first: f(5, i).unwrap(),
                    last: f(6, i).unwrap(),
                };
                let k = (w.device.clone(), w.tag.clone(), w.start);
                *seen.entry(k.clone()).or_default() += 1;
                out.insert(k, w);
            }
        }
    }
    (out, seen)
}

/// The 1-minute windows of everything in raw/, by the batch recompute.
fn recomputed(raw: &Expected) -> BTreeMap<Key, Window> {
    let mut rows: Vec<(i64, &str, &str, f64)> = Vec::new();
    for ((ts, d, t, v), n) in raw {
        for _ in 0..*n {
            rows.push((*ts, d, t, f64::from_bits(*v)));
        }
    }
    rows.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    let readings = rows.iter().map(|r| Reading {
        ts: r.0,
        device: r.1,
        tag: r.2,
        value: r.3,
    });
    let spec = WindowSpec::tumbling(Span::from_secs(60));
    batch_aggregate(readings, spec, i64::MIN / 2, i64::MAX / 2)
        .unwrap()
        .into_iter()
        .map(|w| ((w.device.clone(), w.tag.clone(), w.start), w))
        .collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[test]
fn sustained_load_with_sigkills_keeps_readings_and_windows_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--log-segment-bytes",
        "65536",
        "--compact-interval",
        "1s",
        "--window-flush-interval",
        "150ms",
    ];
    let acked = Arc::new(Mutex::new(Expected::new()));
    let mut loaders: Vec<Loader> = (0..4)
        .map(|t| Loader {
            devices: (0..20).map(|i| format!("t{t}-d{i}")).collect(),
            next: 0,
        })
        .collect();

    let mut total = 0;
    total += run_phase(
        Server::start(dir.path(), &args),
        &mut loaders,
        &acked,
        1500,
        true,
    );
    total += run_phase(
        Server::start(dir.path(), &args),
        &mut loaders,
        &acked,
        1500,
        true,
    );
    total += run_phase(
        Server::start(dir.path(), &args),
        &mut loaders,
        &acked,
        1000,
        false,
    );
    assert!(
        total > 100,
        "too little load to mean anything: {total} requests"
    );

    // Close every window still open: one reading an hour later per device.
    let s = Server::start(dir.path(), &args);
    let last = loaders.iter().map(|l| l.next).max().unwrap();
    let close_ts = T0 + (last + 3600) * SEC;
    let mut body = String::new();
    for l in &loaders {
        for d in &l.devices {
            body.push_str(&format!("m,device={d} a=0,b=0 {close_ts}\n"));
        }
    }
    assert_eq!(s.post("/write", &[], &body).0, 204);
    let (status, text) = s.request("GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(
        metric(
            &text,
            "fleetscore_source_readings_stored_total{source=\"http\"}"
        ) >= 160.0
    );
    s.terminate();

    // raw/: every acknowledged reading exactly once; anything else there
    // was stored but never acknowledged (in flight at a SIGKILL).
    let raw = raw_readings(dir.path());
    let acked = acked.lock().unwrap();
    for (k, n) in acked.iter() {
        assert_eq!(raw.get(k), Some(n), "acknowledged reading {k:?}");
    }
    assert!(raw.values().all(|&n| n == 1), "a reading stored twice");
    let unacked = raw.len() - acked.len() - 160;
    eprintln!(
        "{} readings acknowledged, {unacked} stored without acknowledgement",
        acked.len()
    );

    // windows/: each window once, equal to the recompute over raw/; only
    // the windows holding the closing readings are still open.
    let (stored, seen) = stored_windows(dir.path());
    assert!(seen.values().all(|&n| n == 1), "a window written twice");
    let mut want = recomputed(&raw);
    want.retain(|k, _| k.2 < close_ts - close_ts.rem_euclid(60 * SEC));
    assert_eq!(stored.len(), want.len(), "windows written vs recomputed");
    for (k, w) in &want {
        let got = &stored[k];
        assert_eq!(
            (got.count, got.min, got.max, got.first, got.last, got.end),
            (w.count, w.min, w.max, w.first, w.last, w.end),
            "{k:?}"
        );
        assert!(
            (got.sum - w.sum).abs() <= 1e-9 * w.sum.abs().max(1.0),
            "{k:?}"
        );
        assert!(
            (got.mean - w.mean).abs() <= 1e-9 * w.mean.abs().max(1.0),
            "{k:?}"
        );
        match (got.std, w.std) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{k:?}"),
            (a, b) => assert_eq!(a, b, "{k:?}"),
        }
    }
    // A stopped server leaves an empty log: everything is in raw/.
    let segments: Vec<_> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
        .collect();
    assert_eq!(segments.len(), 1, "only the empty active segment is left");
}

#[test]
fn open_windows_survive_a_clean_restart_and_late_readings_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    // 10:00:00–10:00:50 of one device, then a stop: the window is open.
    let mut body = String::new();
    for i in 0..6 {
        body.push_str(&format!("m,device=p v={i} {}\n", T0 + i * 10 * SEC));
    }
    assert_eq!(s.post("/write", &[], &body).0, 204);
    s.terminate();
    let (stored, _) = stored_windows(dir.path());
    assert!(stored.is_empty(), "an open window was written: {stored:?}");

    // After the restart the same window goes on, and closes.
    let s = Server::start(dir.path(), &[]);
    let late = T0 - 3600 * SEC;
    let body = format!(
        "m,device=p v=100 {}\nm,device=p v=7 {}\nm,device=p v=1 {late}\n",
        T0 + 55 * SEC,
        T0 + 200 * SEC
    );
    assert_eq!(s.post("/write", &[], &body).0, 204);
    std::thread::sleep(Duration::from_millis(300));
    let (_, text) = s.request("GET", "/metrics", &[], b"");
    assert_eq!(
        metric(
            &text,
            "fleetscore_window_dropped_total{reason=\"too_late\"}"
        ),
        1.0
    );
    // Counters continue from the checkpoint: 6 before the restart, 2 after.
    assert_eq!(
        metric(
            &text,
            "fleetscore_window_readings_total{disposition=\"accepted\"}"
        ),
        8.0
    );
    s.terminate();
    let (stored, seen) = stored_windows(dir.path());
    assert!(seen.values().all(|&n| n == 1));
    let start = T0 - T0.rem_euclid(60 * SEC);
    let w = &stored[&("p".to_string(), "v".to_string(), start)];
    // 0..5 before the restart, 100 after it.
    assert_eq!((w.count, w.sum, w.max, w.last), (7, 115.0, 100.0, 100.0));
    assert_eq!(stored.len(), 1, "the window at +200 s is still open");
}
