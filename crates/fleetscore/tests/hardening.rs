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
    // The probe's setting: 128 open files, and the default timeouts.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n 128 && exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_fleetscore"),
    ]);
    let s = Server::start_with(cmd, dir.path(), &[]);
    // 200 idle sockets, more than the descriptors allow, a few of them
    // halfway through their headers.
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&s.addr).ok())
        .collect();
    assert!(idle.len() >= 100, "only {} connected", idle.len());
    for c in idle.iter().take(10) {
        let _ = (&*c).write_all(b"GET /healthz HTTP/1.1\r\nHo");
    }
    for _ in 0..3 {
        let started = Instant::now();
        let (st, body) = s.request("GET", "/healthz", &[], b"");
        assert_eq!((st, body.as_str()), (200, "ok"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "healthz took {:?}",
            started.elapsed()
        );
    }
    let (st, body) = s.post("/write", &[], "m,device=d v=1 1700000000000000000");
    assert_eq!(st, 204, "{body}");
    // The waiting sockets were closed to make room (EOF), long before the
    // 30 s header timeout.
    let closed = idle
        .iter()
        .filter(|c| {
            c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut r: &TcpStream = c;
            // A timeout is an open socket; EOF or a reset is closed.
            match r.read(&mut [0u8; 64]) {
                Ok(_n) => true,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        })
        .count();
    assert!(
        closed >= 10,
        "only {closed} of the waiting sockets were closed"
    );
    drop(idle);
    s.terminate();

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[server]\nheader_timeout = \"1s\"\nbody_timeout = \"2s\"\nidle_timeout = \"4s\"\n",
    );
    let s = Server::start(dir.path(), &["--config", &cfg]);

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
    assert_eq!(value("fleetscore_http_connection_limit"), 1024);
    assert_eq!(value("fleetscore_http_connections_accepted_total"), 4);
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
        // Rounded down to its hour, this `from` is before the first i64.
        "/v1/predictions?from=1677-09-21T00:05:00Z&to=1677-09-21T02:00:00Z",
        "/v1/overview?to=1677-09-21T00:30:00Z",
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
    // A long window rounds the first one down past the earliest i64.
    let (st, body) = s.request(
        "POST",
        "/v1/jobs",
        &[("Content-Type", "application/json")],
        br#"{"from": "1678-01-01T00:00:00Z", "to": "1678-02-01T00:00:00Z", "window": "200d"}"#,
    );
    assert_eq!(st, 400, "{body}");
    s.terminate();
}

/// Issue 16, defect 10: with no tokens configured, model upload and job
/// triggers were open to anyone who could reach the port.
#[test]
fn serve_refuses_a_public_address_without_admin_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .arg("--data")
        .arg(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("serve started on 0.0.0.0 without admin tokens");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
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
        "[server]\nmax_inflight_bytes = 4194304\nmax_body_bytes = 1048576\nmax_inflight_wait = \"500ms\"\nbody_timeout = \"20s\"\n",
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
    // A chunked body takes its room as it comes.
    let mut chunked = TcpStream::connect(&s.addr).unwrap();
    let mut req = format!(
        "POST /write HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        s.addr
    );
    for part in body.as_bytes().chunks(50_000) {
        req.push_str(&format!(
            "{:x}\r\n{}\r\n",
            part.len(),
            std::str::from_utf8(part).unwrap()
        ));
    }
    req.push_str("0\r\n\r\n");
    chunked.write_all(req.as_bytes()).unwrap();
    let (text, _) = read_until_closed(&mut chunked, Duration::from_secs(10));
    assert_eq!(status_of(&text), 204, "{text}");
    let (_, metrics) = s.request("GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("fleetscore_http_inflight_refused_total 1"),
        "{metrics}"
    );
    s.terminate();
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Issue 16, defect 5: once the log was poisoned by ENOSPC every write
/// answered 500 even after space was freed, `/readyz` said ready, and
/// SIGTERM exited with an error.
#[test]
fn a_full_disk_answers_507_and_recovers_without_a_restart() {
    let tmpfs = match Tmpfs::mount("8m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIPPED a_full_disk_answers_507_and_recovers_without_a_restart: cannot mount a tmpfs here (needs root): {e}");
            return;
        }
    };
    let data = tmpfs.0.path().join("data");
    let s = Server::start(&data, &["--compact-interval", "1h", "--no-windows"]);
    // Most of the disk taken by something else.
    let filler = tmpfs.0.path().join("filler");
    std::fs::write(&filler, vec![0u8; 7 << 20]).unwrap();

    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    let mut answer = String::new();
    for batch in 0..2000u64 {
        let lines: String = (0..200)
            .map(|i| {
                format!(
                    "m,device=d{batch} v={i} {}\n",
                    1_700_000_000_000_000_000u64 + i
                )
            })
            .collect();
        let (st, text) = s.exchange("POST", "/write", &[], lines.as_bytes());
        match st {
            204 => acknowledged.push(batch),
            507 => {
                refused.push(batch);
                answer = text;
                if refused.len() >= 3 {
                    break;
                }
            }
            other => panic!("batch {batch}: {other}: {text}"),
        }
    }
    assert!(refused.len() >= 3, "the disk never filled");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );
    assert!(answer.contains("free space"), "{answer}");
    let (st, ready) = s.exchange("GET", "/readyz", &[], b"");
    assert_eq!(st, 503, "{ready}");
    assert!(ready.contains("\"disk_full\":true"), "{ready}");
    let (_, metrics) = s.exchange("GET", "/metrics", &[], b"");
    assert!(metrics.contains("fleetscore_log_writable 0"), "{metrics}");
    assert!(
        metrics.contains("fleetscore_log_unavailable_answers_total 3"),
        "{metrics}"
    );

    // Space comes back: the server recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    loop {
        let (st, body) = s.exchange("GET", "/readyz", &[], b"");
        if st == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still not ready: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for batch in 5000..5010u64 {
        let line = format!("m,device=d{batch} v=1 1700000000000000000\n");
        let (st, text) = s.exchange("POST", "/write", &[], line.as_bytes());
        assert_eq!(st, 204, "after recovery: {text}");
        acknowledged.push(batch);
    }
    let (_, metrics) = s.exchange("GET", "/metrics", &[], b"");
    assert!(metrics.contains("fleetscore_log_writable 1"), "{metrics}");
    // SIGTERM: a clean stop (exit 0), the log compacted into raw/.
    s.terminate();

    // Every acknowledged reading exactly once; nothing of the refused.
    let stored = common::raw_readings(&data);
    for b in &acknowledged {
        let n = if *b >= 5000 { 1 } else { 200 };
        for i in 0..n {
            let ts = 1_700_000_000_000_000_000i64 + if *b >= 5000 { 0 } else { i as i64 };
            let v = if *b >= 5000 { 1.0f64 } else { i as f64 };
            let k = (ts, format!("d{b}"), "v".to_string(), v.to_bits());
            assert_eq!(stored.get(&k), Some(&1), "batch {b} reading {i}");
        }
    }
    let expected: usize = acknowledged
        .iter()
        .map(|b| if *b >= 5000 { 1 } else { 200 })
        .sum();
    assert_eq!(
        stored.values().sum::<usize>(),
        expected,
        "readings of refused batches were stored"
    );
}

/// Issue 16, defect 12: a client that resent a batch after an unknown
/// outcome stored it twice.
#[test]
fn a_retried_batch_with_an_idempotency_key_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--no-windows"]);
    let lp = "m,device=k1 v=1 1700000000000000000\nm,device=k1 v=2 1700000001000000000\n";
    let key = [("Idempotency-Key", "batch-0001")];
    let (st, first) = s.exchange("POST", "/write", &key, lp.as_bytes());
    assert_eq!(st, 204, "{first}");
    assert!(!first.contains("idempotent-replayed"), "{first}");
    let (st, again) = s.exchange("POST", "/write", &key, lp.as_bytes());
    assert_eq!(st, 204, "{again}");
    assert!(again.contains("idempotent-replayed: true"), "{again}");
    // Lines without a timestamp take the arrival time, which differs on
    // the retry: still the same request.
    let untimed = [("Idempotency-Key", "untimed-1")];
    let (st, text) = s.exchange("POST", "/write", &untimed, b"m,device=k3 v=5\n");
    assert_eq!(st, 204, "{text}");
    std::thread::sleep(Duration::from_millis(20));
    let (st, text) = s.exchange("POST", "/write", &untimed, b"m,device=k3 v=5\n");
    assert_eq!(st, 204, "{text}");
    assert!(text.contains("idempotent-replayed: true"), "{text}");
    // The same key with other readings: refused, nothing stored.
    let (st, text) = s.exchange(
        "POST",
        "/write",
        &key,
        b"m,device=k1 v=3 1700000002000000000\n",
    );
    assert_eq!(st, 422, "{text}");
    // JSON, and across a crash and restart.
    let json = r#"[{"ts": 1700000003000000000, "device": "k2", "tag": "t", "value": 4}]"#;
    let headers = [
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "\"json-7\""),
    ];
    let (st, text) = s.exchange("POST", "/v1/readings", &headers, json.as_bytes());
    assert_eq!(st, 200, "{text}");
    s.crash();
    let s = Server::start(dir.path(), &["--no-windows"]);
    let (st, text) = s.exchange("POST", "/v1/readings", &headers, json.as_bytes());
    assert_eq!(st, 200, "{text}");
    assert!(text.contains("\"duplicate\":true"), "{text}");
    let (st, text) = s.exchange("POST", "/write", &key, lp.as_bytes());
    assert_eq!(st, 204, "{text}");
    assert!(text.contains("idempotent-replayed: true"), "{text}");
    let (_, metrics) = s.exchange("GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("fleetscore_log_duplicates_total 2"),
        "{metrics}"
    );
    s.terminate();
    let stored = common::raw_readings(dir.path());
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert!(stored.values().all(|n| *n == 1), "{stored:?}");
}
