//! Traces over OTLP to a real OpenTelemetry collector (issue 21): `serve`
//! built with `--features otel` and pointed at the collector by the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` sends its requests and its jobs
//! as spans. A request continues the trace of the client's `traceparent`;
//! a job is one trace (the `job` span, with `plan`, `task` and `finalize`
//! under it), whichever process runs its parts.
//!
//! The collector is rotel (`rotel-agent`, from the PyPI package `rotel`),
//! receiving OTLP/HTTP and printing every span it receives (its debug
//! log, detailed); `.ci/run` installs it in a cached virtualenv and names
//! the binary in `FLEETSCORE_TEST_ROTEL`.

#![cfg(feature = "otel")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{free_port, small_fleet, Server};

/// One span as the collector printed it.
#[derive(Debug, Default, Clone)]
struct Span {
    service: String,
    trace: String,
    parent: String,
    id: String,
    name: String,
    kind: String,
    attributes: BTreeMap<String, String>,
}

/// The spans in rotel's detailed debug output: `Resource attributes:`
/// (whose `service.name` applies to the spans after it), then per span
/// `Trace ID`, `Parent ID`, `ID`, `Name`, `Kind` and `Attributes:` lines
/// of `-> key: Type(value)`.
fn parse_spans(text: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut service = String::new();
    let mut current: Option<Span> = None;
    let mut in_resource = false;
    // Past a span's `Events:` or `Links:`: their attributes are not the span's.
    let mut in_events = false;
    for line in text.lines() {
        let t = line.trim();
        if t == "Events:" || t == "Links:" {
            in_events = true;
            continue;
        }
        if t == "Attributes:" && !in_resource {
            in_events = false;
            continue;
        }
        if t.starts_with("ResourceSpans #") {
            spans.extend(current.take());
            in_resource = false;
            continue;
        }
        if t == "Resource attributes:" {
            in_resource = true;
            continue;
        }
        if t.starts_with("Span #") {
            spans.extend(current.take());
            in_resource = false;
            in_events = false;
            current = Some(Span {
                service: service.clone(),
                ..Span::default()
            });
            continue;
        }
        if let Some(kv) = t.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(": ") else {
                continue;
            };
            // `Str(x)`, `Int(7)`, …: the value inside.
            let v = v
                .split_once('(')
                .and_then(|(_, rest)| rest.strip_suffix(')'))
                .unwrap_or(v)
                .to_string();
            if in_resource {
                if k == "service.name" {
                    service = v;
                }
            } else if let Some(s) = current.as_mut().filter(|_| !in_events) {
                s.attributes.insert(k.to_string(), v);
            }
            continue;
        }
        let Some(s) = current.as_mut() else { continue };
        let Some((k, v)) = t.split_once(':') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim() {
            "Trace ID" => s.trace = v,
            "Parent ID" => s.parent = v,
            "ID" => s.id = v,
            "Name" => s.name = v,
            "Kind" => s.kind = v,
            _ => {}
        }
    }
    spans.extend(current);
    spans
}

#[test]
fn the_parser_reads_rotels_span_dump() {
    let dump = "\
ResourceSpans #0
Resource attributes:
     -> service.name: Str(svc)
ScopeSpans #0
Span #0
    Trace ID       : 0b9d7d4c6284d035fce478d5bb19b7ae
    Parent ID      : 96b59c6d7173039a
    ID             : fdf7375e1f2b2f00
    Name           : inner
    Kind           : SPAN_KIND_INTERNAL
Start time: 1796547286662870262
Attributes:
     -> job.id: Int(7)
Events:
SpanEvent #0
     -> Name: job planned
     -> job.id: Int(8)
Span #1
    Trace ID       : 0b9d7d4c6284d035fce478d5bb19b7ae
    Parent ID      : 
    ID             : 96b59c6d7173039a
    Name           : outer
    Kind           : SPAN_KIND_SERVER
";
    let spans = parse_spans(dump);
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(spans[0].name, "inner");
    assert_eq!(spans[0].service, "svc");
    assert_eq!(spans[0].parent, "96b59c6d7173039a");
    assert_eq!(spans[0].attributes["job.id"], "7");
    assert_eq!(spans[1].parent, "");
    assert_eq!(spans[1].kind, "SPAN_KIND_SERVER");
}

/// A rotel collector on a free port, printing what it receives to a file.
struct Collector {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Collector {
    fn start(dir: &Path) -> Collector {
        let bin = std::env::var("FLEETSCORE_TEST_ROTEL")
            .expect("FLEETSCORE_TEST_ROTEL names rotel-agent (pip install rotel; .ci/run does)");
        let port = free_port();
        let grpc = free_port();
        let out = dir.join("rotel.out");
        let child = Command::new(bin)
            .args(["start", "--otlp-http-endpoint"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--otlp-grpc-endpoint")
            .arg(format!("127.0.0.1:{grpc}"))
            .args([
                "--exporter",
                "blackhole",
                "--debug-log",
                "traces",
                "--debug-log-verbosity",
                "detailed",
            ])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "rotel does not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Collector { child, out, port }
    }

    /// The spans received so far.
    fn spans(&self) -> Vec<Span> {
        parse_spans(&std::fs::read_to_string(&self.out).unwrap_or_default())
    }

    /// Waits until `done` holds of the spans received (30 s at most).
    fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let started = Instant::now();
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {what} among the {} spans received: {spans:#?}",
                spans.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(s: &Server, path: &str) -> Value {
    let (status, body) = s.request("GET", path, &[], b"");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
#[ignore = "needs rotel (FLEETSCORE_TEST_ROTEL) and --features otel; .ci/run runs it"]
fn requests_and_jobs_reach_a_real_collector_as_traces() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    small_fleet(data);
    let collector = Collector::start(data);
    let config = data.join("serve.toml");
    // No scheduled jobs: only the triggered one.
    std::fs::write(&config, "[jobs]\ntick_interval = \"1h\"\n").unwrap();
    let mut cmd = common::bin();
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{}", collector.port),
    )
    .env("OTEL_SERVICE_NAME", "fleetscore-under-test")
    .env("OTEL_BSP_SCHEDULE_DELAY", "100")
    .env_remove("OTEL_SDK_DISABLED")
    .env_remove("FLEETSCORE_TRACE_FILTER");
    let s = Server::start_with(cmd, data, &["--config", config.to_str().unwrap()]);

    // A client's trace: the request's span continues it.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{client_trace}-{client_span}-01");
    let (status, answer) = s.post(
        "/v1/jobs",
        &[("traceparent", traceparent.as_str())],
        r#"{"from": "2024-05-01T09:00:00Z", "to": "2024-05-01T10:00:00Z"}"#,
    );
    assert_eq!(status, 202, "{answer}");
    let ids: Value = serde_json::from_str(&answer).unwrap();
    let id = ids["jobs"][0].as_i64().unwrap();
    let started = Instant::now();
    let job = loop {
        let j = get(&s, &format!("/v1/jobs/{id}"));
        let state = j["job"]["state"].as_str().unwrap().to_string();
        if state != "queued" && state != "running" {
            break j["job"].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{j}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(job["state"], "succeeded", "{job}");
    // Probes and scrapes are not traced.
    assert_eq!(s.request("GET", "/readyz", &[], b"").0, 200);
    assert_eq!(s.request("GET", "/metrics", &[], b"").0, 200);
    // SIGTERM: the last spans are flushed on the way out.
    s.terminate();

    let job_id = id.to_string();
    let score_tasks = job["tasks"].as_u64().unwrap() as usize;
    // Every span of the job and the request: they come in batches.
    let spans = collector.wait_for("job's spans", |spans| {
        let of_job = |name: &str| {
            spans
                .iter()
                .filter(|s| s.name == name && s.attributes.get("job_id") == Some(&job_id))
                .count()
        };
        of_job("job") == 1
            && of_job("plan") == 1
            && of_job("finalize") == 1
            && of_job("task") >= score_tasks
            && spans.iter().any(|s| s.name == "POST /v1/jobs")
    });
    assert!(
        spans.iter().all(|s| s.service == "fleetscore-under-test"),
        "{spans:#?}"
    );
    assert!(
        !spans
            .iter()
            .any(|s| s.name == "GET /readyz" || s.name == "GET /metrics"),
        "probes traced: {spans:#?}"
    );
    // The job's status polls are.
    assert!(spans.iter().any(|s| s.name == "GET /v1/jobs/{id}"));

    // The request, in the client's trace, as a server span named by its route.
    let request = spans
        .iter()
        .find(|s| s.name == "POST /v1/jobs")
        .unwrap_or_else(|| panic!("no request span: {spans:#?}"));
    assert_eq!(request.trace, client_trace, "{request:#?}");
    assert_eq!(request.parent, client_span, "{request:#?}");
    assert_eq!(request.kind, "SPAN_KIND_SERVER", "{request:#?}");
    assert_eq!(request.attributes["route"], "/v1/jobs", "{request:#?}");
    assert_eq!(request.attributes["status"], "202", "{request:#?}");

    // The job: one trace, its phases under its span, its figures on it.
    let job_span = spans
        .iter()
        .find(|s| s.name == "job" && s.attributes["job_id"] == job_id)
        .unwrap();
    assert_eq!(job_span.parent, "", "{job_span:#?}");
    // Its ids are the job's own: any process derives them.
    let (trace, span) = fleetscore_jobs::trace::job_ids(
        id,
        job["created_ns"].as_i64().unwrap(),
        job["started_ns"].as_i64().unwrap(),
    );
    assert_eq!(job_span.trace, format!("{trace:032x}"), "{job_span:#?}");
    assert_eq!(job_span.id, format!("{span:016x}"), "{job_span:#?}");
    assert_eq!(job_span.attributes["state"], "succeeded");
    for (k, v) in [("rows", "rows"), ("models", "models"), ("tasks", "tasks")] {
        assert_eq!(
            job_span.attributes[k],
            job[v].to_string(),
            "{k}: {job_span:#?} vs {job}"
        );
    }
    assert_eq!(
        job_span.attributes["window_start"],
        "2024-05-01T09:00:00.000Z"
    );
    let in_job: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace == job_span.trace && s.id != job_span.id)
        .collect();
    let names: Vec<&str> = in_job.iter().map(|s| s.name.as_str()).collect();
    for phase in ["plan", "task", "finalize"] {
        let s = in_job.iter().find(|s| s.name == phase).unwrap_or_else(|| {
            panic!(
                "no {phase} span in the job's trace: {names:?}; all: {:?}",
                spans
                    .iter()
                    .map(|s| (&s.name, &s.trace, &s.parent, &s.id))
                    .collect::<Vec<_>>()
            )
        });
        assert_eq!(s.parent, job_span.id, "{s:#?}");
        assert_eq!(s.attributes["job_id"], job_id, "{s:#?}");
    }
    // Score tasks (the job's `tasks`); map tasks, if any, read the window.
    let tasks: Vec<&&Span> = in_job
        .iter()
        .filter(|s| s.name == "task" && s.attributes["kind"] == "score")
        .collect();
    assert_eq!(
        tasks.len().to_string(),
        job["tasks"].to_string(),
        "{names:?}"
    );
    let task_rows: u64 = tasks
        .iter()
        .map(|t| t.attributes["rows"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(Some(task_rows), job["rows"].as_u64(), "{tasks:#?}");
    assert!(
        tasks.iter().all(|t| t.attributes["state"] == "succeeded"),
        "{tasks:#?}"
    );

    // A job cancelled from the command line: its span comes from there.
    let otel = |cmd: &mut std::process::Command| {
        cmd.env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", collector.port),
        )
        .env("OTEL_SERVICE_NAME", "fleetscore-under-test")
        .env_remove("OTEL_SDK_DISABLED");
    };
    let mut queue = common::bin();
    otel(&mut queue);
    let o = queue
        .arg("--data")
        .arg(data)
        .args([
            "backfill",
            "--from",
            "2024-05-01T08:00:00Z",
            "--to",
            "2024-05-01T09:00:00Z",
        ])
        .arg("--queue")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    let queued: i64 = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut cancel = common::bin();
    otel(&mut cancel);
    let o = cancel
        .arg("--data")
        .arg(data)
        .args(["jobs", "cancel", &queued.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    let queued = queued.to_string();
    let spans = collector.wait_for("the cancelled job's span", |spans| {
        spans
            .iter()
            .any(|s| s.name == "job" && s.attributes.get("job_id") == Some(&queued))
    });
    let cancelled = spans
        .iter()
        .find(|s| s.name == "job" && s.attributes["job_id"] == queued)
        .unwrap();
    assert_eq!(cancelled.attributes["state"], "cancelled", "{cancelled:#?}");
    // A map task's reading of the window sits under its task.
    for m in in_job.iter().filter(|s| s.name == "map_task") {
        let parent = in_job.iter().find(|s| s.id == m.parent);
        assert!(
            parent.is_some_and(|p| p.name == "task" && p.attributes["kind"] == "map"),
            "{m:#?} under {parent:#?}"
        );
    }
}
