//! Regression tests for the defects a hostile-input and fault probe of
//! `fleetscore serve` found (issue 16), each named after its defect, run
//! against the real binary over real sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{bin, Server};

fn config(dir: &Path, text: &str) -> String {
    let path = dir.join("fleetscore.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Reads whatever the server sends until it closes the connection (or
/// `limit` passes); returns the text and how long it took.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept the connection open past {limit:?}: {e}"),
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Issue 16, defect 4: idle, slow-header, slow-body and never-ending
/// chunked connections stayed open forever, and with a 128-descriptor limit
/// 200 idle sockets blocked `/healthz` and `/write` for everyone.
#[test]
fn idle_and_slow_connections_are_bounded_and_do_not_block_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[server]\nheader_timeout = \"1s\"\nbody_timeout = \"2s\"\nidle_timeout = \"4s\"\n",
    );
    // The probe's setting: 128 open files.
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n 128 && exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_fleetscore"),
        "--config",
        &cfg,
    ]);
    let s = Server::start_with(cmd, dir.path(), &[]);

    // 200 idle sockets, more than the descriptors allow.
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&s.addr).ok())
        .collect();
    assert!(idle.len() >= 100, "only {} connected", idle.len());
    let started = Instant::now();
    let (st, body) = s.request("GET", "/healthz", &[], b"");
    assert_eq!((st, body.as_str()), (200, "ok"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "healthz took {:?}",
        started.elapsed()
    );
    let (st, body) = s.post("/write", &[], "m,device=d v=1 1700000000000000000");
    assert_eq!(st, 204, "{body}");
    drop(idle);

    // Headers a byte at a time, never finished: closed after the header
    // timeout.
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.write_all(b"POST /write HTTP/1.1\r\nHo").unwrap();
    let (_, took) = read_until_closed(&mut slow, Duration::from_secs(10));
    assert!(took < Duration::from_secs(4), "slow headers held {took:?}");

    // A body that stops coming: 408 after the body timeout.
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.write_all(
        format!(
            "POST /write HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\nm,device=d v=",
            s.addr
        )
        .as_bytes(),
    )
    .unwrap();
    let (text, took) = read_until_closed(&mut slow, Duration::from_secs(10));
    assert_eq!(status_of(&text), 408, "{text}");
    assert!(text.contains("body timeout"), "{text}");
    assert!(
        took < Duration::from_secs(5),
        "a stalled body held {took:?}"
    );

    // A chunked body that never ends, trickling a chunk every 300 ms: 408
    // although bytes keep coming.
    let mut chunked = TcpStream::connect(&s.addr).unwrap();
    chunked
        .write_all(
            format!(
                "POST /write HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
                s.addr
            )
            .as_bytes(),
        )
        .unwrap();
    let mut reader = chunked.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..40 {
            if chunked.write_all(b"1\r\nm\r\n").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let (text, took) = read_until_closed(&mut reader, Duration::from_secs(10));
    assert_eq!(status_of(&text), 408, "{text}");
    assert!(
        took < Duration::from_secs(5),
        "an endless body held {took:?}"
    );
    trickle.join().unwrap();

    // The figures are on /metrics.
    let (_, metrics) = s.request("GET", "/metrics", &[], b"");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(value("fleetscore_http_connection_limit"), 64);
    assert!(value("fleetscore_http_connections_evicted_total") > 0);
    s.terminate();
}

/// Issue 16, defect 6: `(to - from) / HOUR > MAX_HOURS` wrapped for ranges
/// over ~292 years, so one unauthenticated `GET /v1/readings` burned a core
/// for ten minutes.
#[test]
fn read_ranges_of_centuries_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    for path in [
        "/v1/readings?device=d&from=1678-01-01T00:00:00Z&to=2261-12-31T00:00:00Z",
        "/v1/predictions?from=1678-01-01T00:00:00Z&to=2261-12-31T00:00:00Z",
        "/v1/overview?from=1678-01-01T00:00:00Z&to=2261-12-31T00:00:00Z",
        "/v1/readings?device=d&from=1677-09-22T00:00:00Z&to=2262-04-11T00:00:00Z",
    ] {
        let started = Instant::now();
        let (st, body) = s.request("GET", path, &[], b"");
        assert_eq!(st, 400, "{path}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let (st, body) = s.request(
        "POST",
        "/v1/jobs",
        &[("Content-Type", "application/json")],
        br#"{"from": "1678-01-01T00:00:00Z", "to": "2261-12-31T00:00:00Z", "window": "1h"}"#,
    );
    assert_eq!(st, 400, "{body}");
    let (st, body) = s.request(
        "POST",
        "/v1/jobs",
        &[("Content-Type", "application/json")],
        br#"{"from": "2261-12-31T00:00:00Z", "to": "2261-12-31T23:00:00Z", "window": "100000d"}"#,
    );
    assert_eq!(st, 400, "{body}");
    s.terminate();
}

/// Issue 16, defect 10: with no tokens configured, model upload and job
/// triggers were open to anyone who could reach the port.
#[test]
fn serve_refuses_a_public_address_without_admin_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("--data")
        .arg(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("without admin tokens") && err.contains("--allow-unauthenticated-admin"),
        "{err}"
    );

    // With admin tokens, or the flag that names the risk, it starts.
    let mut cmd = bin();
    cmd.env("FLEETSCORE__AUTH__ADMIN_TOKENS", r#"["adm"]"#);
    let mut s = Server::start_with(cmd, dir.path(), &["--listen", "0.0.0.0:0"]);
    s.addr = s.addr.replace("0.0.0.0", "127.0.0.1");
    // `bearer` in any case.
    for auth in ["Bearer adm", "bearer adm", "BEARER adm"] {
        let (st, body) = s.request(
            "POST",
            "/v1/jobs",
            &[
                ("Authorization", auth),
                ("Content-Type", "application/json"),
            ],
            br#"{"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T01:00:00Z"}"#,
        );
        assert_eq!(st, 202, "{auth}: {body}");
    }
    let (st, _) = s.request("POST", "/v1/jobs", &[], b"{}");
    assert_eq!(st, 401);
    s.terminate();

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--listen", "0.0.0.0:0", "--allow-unauthenticated-admin"],
    );
    drop(s);
}

/// Issue 16, defect 9: there was no limit on bytes in flight across
/// concurrent requests (48 concurrent 30 MB bodies took 1.78 GB).
#[test]
fn bodies_in_flight_are_bounded_across_requests() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[server]\nmax_inflight_bytes = 1048576\nmax_inflight_wait = \"500ms\"\nbody_timeout = \"20s\"\n",
    );
    let s = Server::start(dir.path(), &["--config", &cfg]);
    // Two bodies of 600 KB cannot be held at once: the first is sent
    // slowly so it holds its room while the second waits, then gives up.
    let mut first = TcpStream::connect(&s.addr).unwrap();
    let line = "m,device=d v=1 1700000000000000000\n";
    let body = line.repeat(600_000 / line.len());
    first
        .write_all(
            format!(
                "POST /write HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                s.addr,
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    first.write_all(&body.as_bytes()[..1000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (st, text) = s.post("/write", &[], &body);
    assert_eq!(st, 503, "{text}");
    assert!(text.contains("max_inflight_bytes"), "{text}");
    // Larger than the whole budget: 413 at once.
    let huge = line.repeat(1_100_000 / line.len());
    let (st, text) = s.post("/write", &[], &huge);
    assert_eq!(st, 413, "{text}");
    // The first finishes, and then the second fits.
    first.write_all(&body.as_bytes()[1000..]).unwrap();
    let (text, _) = read_until_closed(&mut first, Duration::from_secs(10));
    assert_eq!(status_of(&text), 204, "{text}");
    let (st, text) = s.post("/write", &[], &body);
    assert_eq!(st, 204, "{text}");
    let (_, metrics) = s.request("GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("fleetscore_http_inflight_refused_total 1"),
        "{metrics}"
    );
    s.terminate();
}
