//! `fleetscore serve` end to end: the real binary on a free port, spoken to
//! with raw HTTP/1.1 over a TcpStream.

use std::collections::HashMap;
use std::time::Duration;

mod common;
use common::{raw_readings, Expected, Server};

#[test]
fn endpoints_answer_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--ingest-token", "sekret", "--max-body-bytes", "4096"],
    );
    let auth = [("Authorization", "Bearer sekret")];
    assert_eq!(s.request("GET", "/healthz", &[], b"").0, 200);

    // Line protocol, v1 and v2, with the token in each accepted form.
    let (st, _) = s.post(
        "/write?db=x&precision=s",
        &[("Authorization", "Token sekret")],
        "cpu,device=d1 temp=1.5 1700000000\ncpu,device=d2 temp=2 1700000001\n",
    );
    assert_eq!(st, 204);
    assert_eq!(
        s.post(
            "/write?u=me&p=sekret&precision=ms",
            &[],
            "m,device=d3 v=3 1700000002000"
        )
        .0,
        204
    );
    assert_eq!(
        s.post(
            "/api/v2/write?org=o&bucket=b&precision=ns",
            &auth,
            "m,device=d4 v=4 1700000003000000000"
        )
        .0,
        204
    );

    // 401 without or with a wrong token.
    let (st, body) = s.post("/write", &[], "m,device=d v=1 1");
    assert_eq!(st, 401, "{body}");
    assert_eq!(
        s.post(
            "/write",
            &[("Authorization", "Bearer nope")],
            "m,device=d v=1 1"
        )
        .0,
        401
    );
    assert_eq!(s.post("/write?p=nope", &[], "m,device=d v=1 1").0, 401);

    // A mixed batch: 400 naming the bad lines, nothing stored.
    let (st, body) = s.post(
        "/write",
        &auth,
        "m,device=ok v=100 1\nthis is bad\nm,device=ok v=101 2\nm,device=ok v=x 3\n",
    );
    assert_eq!(st, 400, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let lines: Vec<u64> = doc["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 4]);
    assert_eq!(doc["omitted"], 0);

    // Unknown precision: 400 (v2 has no `h`).
    assert_eq!(
        s.post("/write?precision=d", &auth, "m,device=d v=1 1").0,
        400
    );
    assert_eq!(
        s.post("/api/v2/write?precision=h", &auth, "m,device=d v=1 1")
            .0,
        400
    );

    // Over the body limit: 413.
    let big = "m,device=big v=1 1\n".repeat(400);
    assert_eq!(s.post("/write", &auth, &big).0, 413);

    // JSON, NDJSON and CSV on /v1/readings.
    let json = [
        ("Authorization", "Bearer sekret"),
        ("Content-Type", "application/json"),
    ];
    let (st, body) = s.post(
        "/v1/readings",
        &json,
        r#"[{"ts": "2024-01-01T00:00:00Z", "device": "j", "tag": "t", "value": 1},
            {"ts": 1704067201000000000, "device": "j", "tag": "t", "value": 2}]"#,
    );
    assert_eq!((st, body.as_str()), (200, r#"{"accepted":2}"#));
    let ndjson = [
        ("Authorization", "Bearer sekret"),
        ("Content-Type", "application/x-ndjson"),
    ];
    let (st, body) = s.post(
        "/v1/readings",
        &ndjson,
        "{\"ts\":5,\"device\":\"n\",\"tag\":\"t\",\"value\":5}\n{\"ts\":6,\"device\":\"n\",\"tag\":\"t\",\"value\":6}\n",
    );
    assert_eq!((st, body.as_str()), (200, r#"{"accepted":2}"#));
    let csv = [
        ("Authorization", "Bearer sekret"),
        ("Content-Type", "text/csv; charset=utf-8"),
    ];
    let (st, body) = s.post(
        "/v1/readings",
        &csv,
        "TS,Device,Tag,Value\n2024-01-01 01:00:00,c,t,7\n",
    );
    assert_eq!((st, body.as_str()), (200, r#"{"accepted":1}"#));
    let (st, body) = s.post(
        "/v1/readings",
        &csv,
        "TS,Device,Tag,Value\n2024-01-01 01:00:00,c,t,oops\n",
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains(r#""line":2"#), "{body}");
    let text = [
        ("Authorization", "Bearer sekret"),
        ("Content-Type", "text/plain"),
    ];
    assert_eq!(s.post("/v1/readings", &text, "x").0, 415);

    // gzip, as Telegraf sends by default; the size limit holds after
    // decompression too.
    let gz = |data: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let zipped = [
        ("Authorization", "Bearer sekret"),
        ("Content-Encoding", "gzip"),
    ];
    let body = gz(b"cpu,device=g temp=3 1700000000000000000\n");
    assert_eq!(s.request("POST", "/api/v2/write", &zipped, &body).0, 204);
    let (st, body) = s.request("POST", "/write", &zipped, b"not gzip at all");
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("does not decompress"), "{body}");
    let bomb = gz(&vec![b'#'; 100_000]);
    assert!(bomb.len() < 4096);
    let (st, body) = s.request("POST", "/write", &zipped, &bomb);
    assert_eq!(st, 413, "{body}");
    let br = [
        ("Authorization", "Bearer sekret"),
        ("Content-Encoding", "br"),
    ];
    assert_eq!(s.request("POST", "/write", &br, b"x").0, 415);

    s.terminate();
    let raw = raw_readings(dir.path());
    let devices: std::collections::BTreeSet<&str> =
        raw.keys().map(|(_, d, _, _)| d.as_str()).collect();
    assert_eq!(
        devices.into_iter().collect::<Vec<_>>(),
        ["c", "d1", "d2", "d3", "d4", "g", "j", "n"]
    );
    assert_eq!(raw.values().sum::<usize>(), 10);
    assert!(raw.values().all(|&n| n == 1));
}

#[test]
fn acknowledged_readings_reach_raw_exactly_once_across_crashes() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments, so that closed ones are compacted as well.
    let args = ["--log-segment-bytes", "2048", "--compact-interval", "1s"];
    let mut state = (HashMap::new(), 0i64);
    let send = |s: &Server, batches: usize, (expected, next): &mut (Expected, i64)| {
        for _ in 0..batches {
            let mut body = String::new();
            for _ in 0..10 {
                let n = *next;
                // Spread over a few hours.
                let ts = 1_700_000_000_000_000_000 + n * 600_000_000_000;
                body.push_str(&format!("m,device=d{} v={n} {ts}\n", n % 7));
                expected.insert(
                    (
                        ts,
                        format!("d{}", n % 7),
                        "v".to_string(),
                        (n as f64).to_bits(),
                    ),
                    1usize,
                );
                *next += 1;
            }
            assert_eq!(s.post("/write", &[], &body).0, 204);
        }
    };

    let s = Server::start(dir.path(), &args);
    send(&s, 30, &mut state);
    s.crash();

    let s = Server::start(dir.path(), &args);
    send(&s, 5, &mut state);
    std::thread::sleep(Duration::from_millis(1500));
    send(&s, 5, &mut state);
    s.terminate();
    assert_eq!(raw_readings(dir.path()), state.0);

    // The kept active segment is written again later: still once each.
    let s = Server::start(dir.path(), &args);
    send(&s, 20, &mut state);
    s.crash();
    let s = Server::start(dir.path(), &args);
    s.terminate();
    assert_eq!(raw_readings(dir.path()), state.0);
}

/// Epoch seconds sent without `precision=s` are valid nanoseconds of 1970:
/// stored, but the answer, the log and a counter say so and name the
/// precision that was meant; a sensible batch gets no warning.
#[test]
fn implausible_timestamps_are_stored_with_a_warning_naming_the_precision() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = format!("m,device=d v=1 {now_s}\nm,device=d v=2 {}\n", now_s + 30);
    let (st, answer) = s.exchange("POST", "/write", &[], body.as_bytes());
    assert_eq!(st, 204, "{answer}");
    let warning = answer
        .lines()
        .find_map(|l| l.strip_prefix("fleetscore-warning: "))
        .unwrap_or_else(|| panic!("no warning header in {answer:?}"));
    assert!(warning.contains("1970-01-01T00:00:0"), "{warning}");
    assert!(warning.contains("years before now"), "{warning}");
    assert!(warning.contains("?precision=s"), "{warning}");

    // The same numbers with the precision they were: no warning.
    let (st, answer) = s.exchange("POST", "/write?precision=s", &[], body.as_bytes());
    assert_eq!(st, 204, "{answer}");
    assert!(!answer.contains("fleetscore-warning"), "{answer}");
    // Milliseconds as JSON integers (nanoseconds there).
    let json = format!(
        r#"{{"ts": {}, "device": "d", "tag": "t", "value": 1}}"#,
        now_s * 1000
    );
    let (st, answer) = s.exchange(
        "POST",
        "/v1/readings",
        &[("Content-Type", "application/json")],
        json.as_bytes(),
    );
    assert_eq!(st, 200, "{answer}");
    assert!(answer.contains("as milliseconds"), "{answer}");

    let (_, metrics) = s.request("GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("fleetscore_ingest_implausible_batches_total 2"),
        "{metrics}"
    );
    s.terminate();
}
