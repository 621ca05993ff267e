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
    // Milliseconds as JSON integers: read by their magnitude (`[ingest]
    // ts_unit = "auto"`, the default), so nothing to warn about.
    let json = format!(
        r#"{{"ts": {}, "device": "d", "tag": "t", "value": 1}}"#,
        now_s * 1000
    );
    let post_json = |s: &Server| {
        s.exchange(
            "POST",
            "/v1/readings",
            &[("Content-Type", "application/json")],
            json.as_bytes(),
        )
    };
    let (st, answer) = post_json(&s);
    assert_eq!(st, 200, "{answer}");
    assert!(!answer.contains("fleetscore-warning"), "{answer}");
    // Epoch seconds as a float: the same.
    let (st, answer) = s.exchange(
        "POST",
        "/v1/readings",
        &[("Content-Type", "application/json")],
        format!(r#"{{"ts": {now_s}.25, "device": "d", "tag": "t", "value": 1}}"#).as_bytes(),
    );
    assert_eq!(st, 200, "{answer}");
    assert!(!answer.contains("fleetscore-warning"), "{answer}");

    let (_, metrics) = s.request("GET", "/metrics", &[], b"");
    assert!(
        metrics.contains("fleetscore_ingest_implausible_batches_total 1"),
        "{metrics}"
    );
    s.terminate();

    // With the unit fixed to nanoseconds, the same milliseconds are times
    // of 1970: stored, with a warning naming the unit that was meant.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::bin();
    cmd.env("FLEETSCORE__INGEST__TS_UNIT", "ns");
    let s = Server::start_with(cmd, dir.path(), &[]);
    let (st, answer) = post_json(&s);
    assert_eq!(st, 200, "{answer}");
    assert!(answer.contains("as milliseconds"), "{answer}");
    assert!(answer.contains("ts_unit"), "{answer}");
    s.terminate();
}

/// A sample's labels, in their order.
type Labels = Vec<(String, String)>;

/// One sample of a Prometheus text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `{k="v",…}` at the start of `s`: the labels and the rest of `s`.
fn parse_labels(s: &str) -> (Labels, &str) {
    let Some(mut rest) = s.strip_prefix('{') else {
        return (Vec::new(), s);
    };
    let mut labels = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let (key, r) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels {s:?}"));
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape in {s:?}"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {s:?}"),
            }
        };
        labels.push((key.to_string(), value));
        rest = &r[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses a Prometheus text exposition (version 0.0.4) as a scraper
/// would, and checks its rules: every sample belongs to a family declared
/// (once, before its samples) with a TYPE; names are valid; no series
/// twice; counters end in `_total` and no counter or gauge is named as a
/// histogram's part (`_sum`, `_count`, `_bucket`); each histogram's
/// buckets are cumulative, in increasing `le`, end at `+Inf` and agree
/// with `_count`. Returns each family's type and the samples.
fn parse_exposition(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
    let valid = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut sampled: std::collections::HashSet<String> = Default::default();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            assert!(valid(name), "bad family name {name:?}");
            assert!(
                matches!(
                    kind,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ),
                "{line:?}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE of {name} twice"
            );
            assert!(!sampled.contains(name), "TYPE of {name} after its samples");
            match kind {
                "counter" => assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                ),
                "gauge" => assert!(!name.ends_with("_total"), "gauge {name} ends in _total"),
                _ => {}
            }
            if kind != "histogram" && kind != "summary" {
                for part in ["_sum", "_count", "_bucket"] {
                    assert!(
                        !name.ends_with(part),
                        "{kind} {name} is named as a histogram's part"
                    );
                }
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("bad sample {line:?}"));
        let name = &line[..end];
        assert!(valid(name), "bad sample name in {line:?}");
        let (labels, rest) = parse_labels(&line[end..]);
        let value = match rest.trim() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let family = if types.contains_key(name) {
            name.to_string()
        } else {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|part| {
                    let base = name.strip_suffix(part)?;
                    matches!(
                        types.get(base).map(String::as_str),
                        Some("histogram" | "summary")
                    )
                    .then(|| base.to_string())
                })
                .unwrap_or_else(|| panic!("sample {name} has no TYPE before it"))
        };
        sampled.insert(family);
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // No series twice.
    let mut series: Vec<String> = samples
        .iter()
        .map(|s| format!("{}{:?}", s.name, s.labels))
        .collect();
    let n = series.len();
    series.sort();
    series.dedup();
    assert_eq!(series.len(), n, "a series appears twice");
    // Histograms, per label set (without `le`).
    for (family, _) in types.iter().filter(|(_, k)| *k == "histogram") {
        let mut buckets: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let le = s
                .label("le")
                .unwrap_or_else(|| panic!("{family} bucket without le"));
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let rest: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            buckets.entry(rest).or_default().push((le, s.value));
        }
        for (labels, b) in &buckets {
            assert!(
                b.windows(2).all(|w| w[0].0 < w[1].0),
                "{family}{labels:?}: le not increasing"
            );
            assert!(
                b.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family}{labels:?}: buckets not cumulative: {b:?}"
            );
            assert_eq!(
                b.last().unwrap().0,
                f64::INFINITY,
                "{family}{labels:?}: no +Inf bucket"
            );
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == *labels)
                .unwrap_or_else(|| panic!("{family}{labels:?}: no _count"));
            assert_eq!(
                count.value,
                b.last().unwrap().1,
                "{family}{labels:?}: +Inf bucket != _count"
            );
            assert!(
                samples
                    .iter()
                    .any(|s| s.name == format!("{family}_sum") && s.labels == *labels),
                "{family}{labels:?}: no _sum"
            );
        }
    }
    (types, samples)
}

/// `/metrics` parses as the Prometheus text format by its rules, every
/// family typed (the job durations were `_sum`/`_count` declared as
/// counters), with the process figures, the build info, the request
/// histogram, and one telemetry set per source, HTTP and MQTT alike.
#[test]
fn metrics_are_a_valid_exposition_with_one_telemetry_per_source() {
    let dir = tempfile::tempdir().unwrap();
    // The MQTT source reports from its start, before it ever connects
    // (nothing listens on port 1: it keeps retrying).
    let s = Server::start(dir.path(), &["--mqtt", "mqtt://127.0.0.1:1"]);
    assert_eq!(s.request("GET", "/healthz", &[], b"").0, 200);
    assert_eq!(s.request("GET", "/no/such/page", &[], b"").0, 404);
    let (st, body) = s.post(
        "/write",
        &[],
        "m,device=d1 v=1 1700000000000000000\nm,device=d2 v=2 1700000000000000000\n",
    );
    assert_eq!(st, 204, "{body}");
    let (st, body) = s.post("/write", &[], "m,device=d1 v=1 1\nnot line protocol\n");
    assert_eq!(st, 400, "{body}");
    let (st, body) = s.post("/v1/readings", &[("Content-Type", "text/plain")], "x");
    assert_eq!(st, 415, "{body}");

    let (st, answer) = s.exchange("GET", "/metrics", &[], b"");
    assert_eq!(st, 200, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{answer}"
    );
    let text = answer.split_once("\r\n\r\n").unwrap().1;
    let (types, samples) = parse_exposition(text);
    let kind = |name: &str| types.get(name).map(String::as_str);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels.len() == s.labels.len()
                    && labels.iter().all(|(k, v)| s.label(k) == Some(v))
            })
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
            .value
    };

    // The process, as every Prometheus client reports it.
    assert_eq!(kind("process_cpu_seconds_total"), Some("counter"));
    for g in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert_eq!(kind(g), Some("gauge"), "{g}");
    }
    assert!(value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(value("process_open_fds", &[]) >= 3.0);
    assert!(value("process_max_fds", &[]) >= value("process_open_fds", &[]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds", &[]);
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );

    // The build.
    let build = samples
        .iter()
        .find(|s| s.name == "fleetscore_build_info")
        .unwrap_or_else(|| panic!("no build info in\n{text}"));
    assert_eq!(kind("fleetscore_build_info"), Some("gauge"));
    assert_eq!(build.value, 1.0);
    assert_eq!(build.label("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(
        build.label("rustc").is_some_and(|v| v.starts_with("1.")),
        "{build:?}"
    );
    assert!(build.label("commit").is_some(), "{build:?}");

    // Every request, by route (never the raw path), method and status.
    assert_eq!(
        kind("fleetscore_http_request_duration_seconds"),
        Some("histogram")
    );
    let req = |ep: &str, method: &str, status: &str| {
        value(
            "fleetscore_http_requests_total",
            &[("endpoint", ep), ("method", method), ("status", status)],
        )
    };
    assert_eq!(req("/healthz", "GET", "200"), 1.0);
    assert_eq!(req("unmatched", "GET", "404"), 1.0);
    assert_eq!(req("/write", "POST", "204"), 1.0);
    assert_eq!(req("/write", "POST", "400"), 1.0);
    assert_eq!(req("/v1/readings", "POST", "415"), 1.0);
    let write = [("endpoint", "/write"), ("method", "POST")];
    assert_eq!(
        value("fleetscore_http_request_duration_seconds_count", &write),
        2.0
    );
    assert!(value("fleetscore_http_request_duration_seconds_sum", &write) > 0.0);

    // One telemetry set per source, from zero for one that saw nothing.
    for family in [
        "fleetscore_source_received_total",
        "fleetscore_source_stored_total",
        "fleetscore_source_duplicates_total",
        "fleetscore_source_batches_total",
        "fleetscore_source_readings_stored_total",
        "fleetscore_source_readings_refused_total",
        "fleetscore_source_readings_duplicate_total",
        "fleetscore_source_refused_total",
        "fleetscore_source_failed_total",
    ] {
        assert_eq!(kind(family), Some("counter"), "{family}");
        for source in ["http", "mqtt"] {
            assert!(
                samples
                    .iter()
                    .any(|s| s.name == family && s.label("source") == Some(source)),
                "no {family}{{source=\"{source}\"}} in\n{text}"
            );
        }
    }
    let http = |family: &str| value(family, &[("source", "http")]);
    assert_eq!(http("fleetscore_source_received_total"), 3.0);
    assert_eq!(http("fleetscore_source_stored_total"), 1.0);
    assert_eq!(http("fleetscore_source_batches_total"), 1.0);
    assert_eq!(http("fleetscore_source_readings_stored_total"), 2.0);
    assert_eq!(http("fleetscore_source_readings_refused_total"), 1.0);
    let refused = |source: &str, reason: &str| {
        value(
            "fleetscore_source_refused_total",
            &[("source", source), ("reason", reason)],
        )
    };
    assert_eq!(refused("http", "invalid"), 1.0);
    assert_eq!(refused("http", "unsupported"), 1.0);
    assert_eq!(refused("mqtt", "invalid"), 0.0);
    assert_eq!(
        value(
            "fleetscore_source_failed_total",
            &[("source", "http"), ("reason", "unavailable")]
        ),
        0.0
    );
    assert_eq!(
        value("fleetscore_source_received_total", &[("source", "mqtt")]),
        0.0
    );

    // The parts read at scrape time, typed.
    assert_eq!(kind("fleetscore_log_readings_total"), Some("counter"));
    assert_eq!(value("fleetscore_log_readings_total", &[]), 2.0);
    assert_eq!(kind("fleetscore_log_writable"), Some("gauge"));
    assert_eq!(kind("fleetscore_window_series"), Some("gauge"));
    assert_eq!(kind("fleetscore_job_duration_seconds"), Some("histogram"));
    assert_eq!(kind("fleetscore_pending_work"), Some("gauge"));
    s.terminate();
}

/// The exposition checker refuses what a scraper would, so that the test
/// above cannot pass on a broken checker.
#[test]
fn the_exposition_checker_refuses_broken_text() {
    let good = "# TYPE a_total counter\na_total{x=\"1\"} 2\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    let (types, samples) = parse_exposition(good);
    assert_eq!((types.len(), samples.len()), (2, 5));
    for bad in [
        // No TYPE.
        "a_total 1\n",
        // A counter without _total; a sum declared as a counter.
        "# TYPE a counter\na 1\n",
        "# TYPE d_seconds_sum counter\nd_seconds_sum 1\n",
        // TYPE after the samples, or twice.
        "# TYPE a_total counter\na_total 1\n# TYPE a_total counter\n",
        // The same series twice.
        "# TYPE g gauge\ng{x=\"1\"} 1\ng{x=\"1\"} 2\n",
        // Buckets not cumulative; no +Inf; +Inf != count.
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n",
    ] {
        let refused = std::panic::catch_unwind(|| parse_exposition(bad)).is_err();
        assert!(refused, "accepted {bad:?}");
    }
}
