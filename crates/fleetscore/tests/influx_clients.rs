//! InfluxDB's own client libraries (PyPI `influxdb` for 1.x, as Telegraf's
//! `outputs.influxdb` talks, and `influxdb-client` for 2.x) against the
//! real server: `/ping`, `/query` (`CREATE DATABASE`, `SHOW DATABASES`),
//! writes with HTTP Basic auth and with `Token`, gzip, and partial writes
//! (`[ingest] bad_lines = "skip"`), whose bad lines become dead letters.
//!
//! The clients run in the virtualenv of `tests/influx/requirements.txt`
//! that `.ci/run` makes (`FLEETSCORE_TEST_INFLUX_PYTHON` names its
//! interpreter), so the test is ignored by a plain `cargo test`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Server;

fn interpreter() -> PathBuf {
    match std::env::var_os("FLEETSCORE_TEST_INFLUX_PYTHON") {
        Some(p) => p.into(),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/fleetscore-ci/influx-venv/bin/python"),
    }
}

#[test]
#[ignore = "needs the InfluxDB client libraries (tests/influx/requirements.txt); .ci/run makes their virtualenv and runs this"]
fn influxdb_clients_write_ping_and_query() {
    let python = interpreter();
    assert!(
        python.exists(),
        "{} is missing: make it with `python3 -m venv DIR && DIR/bin/pip install -r crates/fleetscore/tests/influx/requirements.txt` and set FLEETSCORE_TEST_INFLUX_PYTHON=DIR/bin/python",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[auth]\ningest_tokens = [\"ingest-secret\"]\nadmin_tokens = [\"admin-secret\"]\n\
         [ingest]\nbad_lines = \"skip\"\n",
    )
    .unwrap();
    let s = Server::start(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--compact-interval",
            "200ms",
        ],
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/influx/clients.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("FLEETSCORE_URL", format!("http://{}", s.addr))
        .env("FLEETSCORE_TOKEN", "ingest-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the clients failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The bad lines of the partial writes are dead letters, with their text.
    let (status, body) = s.request(
        "GET",
        "/v1/rejected?source=http",
        &[("Authorization", "Basic dGVsZWdyYWY6YWRtaW4tc2VjcmV0")],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let letters = v["letters"].as_array().unwrap();
    let payloads: Vec<&str> = letters
        .iter()
        .map(|l| l["payload"].as_str().unwrap_or_default())
        .collect();
    assert!(payloads.contains(&"not line protocol"), "{body}");
    assert!(
        payloads
            .iter()
            .any(|p| p.starts_with("pump,device=v1-partial temp=oops")),
        "{body}"
    );
    let origins: Vec<&str> = letters
        .iter()
        .map(|l| l["origin"].as_str().unwrap_or_default())
        .collect();
    assert!(origins.contains(&"/api/v2/write line 2"), "{body}");
    s.terminate();

    let got = common::raw_readings(dir.path());
    let mut stored: Vec<(String, String)> = got
        .keys()
        .map(|(_, d, t, _)| (d.clone(), t.clone()))
        .collect();
    stored.sort();
    let want: Vec<(String, String)> = [
        ("v1-gzip", "temp"),
        ("v1-partial", "temp"),
        ("v1-pump", "rpm"),
        ("v1-pump", "temp"),
        ("v2-gzip", "temp"),
        ("v2-gzip", "vib"),
        ("v2-partial", "ok"),
        ("v2-pump", "temp"),
        ("v2-pump", "vib"),
    ]
    .iter()
    .map(|(d, t)| (d.to_string(), t.to_string()))
    .collect();
    assert_eq!(stored, want);
    assert_eq!(got.values().sum::<usize>(), want.len(), "each reading once");
}
