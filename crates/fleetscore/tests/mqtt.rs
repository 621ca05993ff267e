//! `fleetscore serve --mqtt` end to end: the real binary against the
//! Mosquitto broker on 127.0.0.1:1883, fed with `mosquitto_pub`.
//!
//! These tests need the broker: they fail (never skip) when it is not
//! running. Start it with `mosquitto -d -c /etc/mosquitto/mosquitto.conf`
//! (`.ci/run` does).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::parquet_files;

const BROKER: &str = "127.0.0.1:1883";

fn require_broker() {
    let addr: SocketAddr = BROKER.parse().unwrap();
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        panic!(
            "no MQTT broker answers on {BROKER} ({e}). These tests need Mosquitto: start it with \
             `mosquitto -d -c /etc/mosquitto/mosquitto.conf` (.ci/run does this)"
        );
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A topic prefix no other test run uses.
fn unique_prefix(name: &str) -> String {
    format!("fleet-test-{name}-{}-{}", std::process::id(), now_ns())
}

struct Server {
    child: Child,
    /// The server's JSON log events (stderr).
    events: mpsc::Receiver<serde_json::Value>,
}

impl Server {
    fn start(data: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleetscore"))
            .arg("--data")
            .arg(data)
            .args(["-v", "--log-format", "json"])
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--mqtt", &format!("mqtt://{BROKER}")])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening on "), "unexpected {line:?}");
        let stderr = child.stderr.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let mut s = Server { child, events };
        s.wait_for("the MQTT subscription", |f| {
            f["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("MQTT subscribed"))
        });
        s
    }

    /// Waits (up to 30 s) for a log event whose fields satisfy `pred`.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if pred(&v["fields"]) => return,
                Ok(_) => {}
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits until the server has stored `stored` and refused `refused`
    /// messages in total.
    fn wait_totals(&mut self, stored: u64, refused: u64) {
        self.wait_for(
            &format!("{stored} stored and {refused} refused MQTT messages"),
            |f| {
                f["stored_total"].as_u64() >= Some(stored)
                    && f["refused_total"].as_u64() >= Some(refused)
            },
        );
    }

    fn terminate(mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish(topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "1883",
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .output()
        .expect("running mosquitto_pub (apt install mosquitto-clients)");
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every reading under DATA/store/raw as (ts, device, tag, value), sorted
/// by device, tag, value.
fn raw_readings(data: &Path) -> Vec<(i64, String, String, f64)> {
    let mut files = Vec::new();
    parquet_files(&data.join("store").join("raw"), &mut files);
    let mut out = Vec::new();
    for f in files {
        let r = fleetscore_codecs::read_readings(&f).unwrap();
        for i in 0..r.len() {
            let x = r.row(i);
            out.push((x.ts, x.device.to_owned(), x.tag.to_owned(), x.value));
        }
    }
    out.sort_by(|a, b| {
        (&a.1, &a.2, a.3, a.0)
            .partial_cmp(&(&b.1, &b.2, b.3, b.0))
            .unwrap()
    });
    out
}

#[test]
#[ignore = "service-backed: needs Mosquitto on 127.0.0.1:1883; .ci/run starts it and runs `cargo test --test mqtt -- --include-ignored`"]
fn mqtt_messages_land_in_raw() {
    require_broker();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique_prefix("raw");
    let filter = format!("{prefix}/+/+");
    let mut s = Server::start(dir.path(), &["--mqtt-topic", &filter]);

    let before = now_ns();
    publish(&format!("{prefix}/pump-1/temp"), "21.5");
    publish(&format!("{prefix}/pump-1/temp"), "warm");
    publish(
        &format!("{prefix}/pump-2/pressure"),
        r#"{"value": 3.25, "ts": "2024-05-01T12:00:00Z"}"#,
    );
    publish(
        &format!("{prefix}/pump-3/temp"),
        r#"{"value": -1.5, "ts": 1700000000123456789}"#,
    );
    publish(&format!("{prefix}/pump-1/temp"), r#"{"value": 22}"#);
    s.wait_totals(4, 1);
    let after = now_ns();
    s.terminate();

    let got = raw_readings(dir.path());
    assert_eq!(got.len(), 4, "exactly the good readings: {got:?}");
    let key = |i: usize| (got[i].1.as_str(), got[i].2.as_str(), got[i].3);
    assert_eq!(key(0), ("pump-1", "temp", 21.5));
    assert_eq!(key(1), ("pump-1", "temp", 22.0));
    assert_eq!(key(2), ("pump-2", "pressure", 3.25));
    assert_eq!(key(3), ("pump-3", "temp", -1.5));
    // Arrival time for the plain number and for JSON without ts.
    for i in [0, 1] {
        assert!(
            (before..=after).contains(&got[i].0),
            "ts {} not within the test's run",
            got[i].0
        );
    }
    assert_eq!(got[2].0, 1_714_564_800_000_000_000);
    assert_eq!(got[3].0, 1_700_000_000_123_456_789);
}

#[test]
#[ignore = "service-backed: needs Mosquitto on 127.0.0.1:1883; .ci/run starts it and runs `cargo test --test mqtt -- --include-ignored`"]
fn a_shared_group_splits_messages_between_nodes() {
    require_broker();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let prefix = unique_prefix("shared");
    let filter = format!("{prefix}/+/+");
    let group = format!("g{}", std::process::id());
    let args = ["--mqtt-topic", &filter, "--mqtt-shared-group", &group];
    let mut sa = Server::start(a.path(), &args);
    let mut sb = Server::start(b.path(), &args);

    let n = 20;
    for i in 0..n {
        publish(&format!("{prefix}/dev-{i}/temp"), &format!("{i}"));
    }
    // Wait until both nodes together stored all messages.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut na, mut nb) = (0u64, 0u64);
    while na + nb < n {
        assert!(
            Instant::now() < deadline,
            "timed out: {na} + {nb} of {n} stored"
        );
        for (s, count) in [(&mut sa, &mut na), (&mut sb, &mut nb)] {
            while let Ok(v) = s.events.try_recv() {
                if let Some(t) = v["fields"]["stored_total"].as_u64() {
                    *count = t;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sa.terminate();
    sb.terminate();

    let mut values: HashMap<String, f64> = HashMap::new();
    for dir in [a.path(), b.path()] {
        for (_, d, t, v) in raw_readings(dir) {
            assert_eq!(t, "temp");
            assert!(values.insert(d, v).is_none(), "a message stored twice");
        }
    }
    assert_eq!(values.len(), n as usize);
    for i in 0..n {
        assert_eq!(values[&format!("dev-{i}")], i as f64);
    }
}

#[test]
fn bad_mqtt_flags_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--mqtt", "http://127.0.0.1:1883"][..],
        &["--mqtt", "mqtts://127.0.0.1:8883"],
        &[
            "--mqtt",
            "mqtt://127.0.0.1:1883",
            "--mqtt-shared-group",
            "a/b",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetscore"))
            .arg("--data")
            .arg(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--mqtt"), "{args:?}: {err}");
    }
}
