//! Jobs in a running `fleetscore serve`, as a new user meets them (issue
//! 17): a job triggered right after readings were acknowledged scores
//! every one of them (with the default 60 s compaction interval: the job
//! must not wait for the compactor), and a fresh server with models but no
//! readings records its first window as skipped, not failed, and says so
//! on its console.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{run, text, Server};

fn demo_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo/model_fallback_1.pkl")
}

/// Imports the demo model for `device`/1.
fn import(data: &Path, device: &str) {
    common::import_as(data, &demo_model(), device, "1");
}

/// `fleetscore serve` with `config`, and the lines it prints on stdout
/// after `listening on …` (the finished jobs), as they come.
fn serve(data: &Path, config: &str) -> (Server, Receiver<String>) {
    let path = data.join("serve.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = common::bin()
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            eprintln!("serve: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    (Server { child, addr }, rx)
}

/// The first console line starting with `prefix`, within a minute.
fn console_line(console: &Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match console.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("no console line starting {prefix:?}: {e}"),
        }
    }
}

fn get(s: &Server, path: &str) -> Value {
    let (status, body) = s.request("GET", path, &[], b"");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The job's record once it has ended.
fn ended(s: &Server, id: i64) -> Value {
    let started = Instant::now();
    loop {
        let j = get(s, &format!("/v1/jobs/{id}"));
        let state = j["job"]["state"].as_str().unwrap().to_string();
        if state != "queued" && state != "running" {
            return j;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{j}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 17: readings answered 200 by `serve`, then a job over their hour
/// triggered at once, failed "no readings for this (device, tag)" for
/// every model: jobs read raw/, which the compactor filled only every 60 s.
#[test]
fn a_job_triggered_right_after_readings_are_acknowledged_scores_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    import(data, "d1");
    import(data, "d2");
    // The default [ingest] compact_interval (60 s): nothing reaches raw/
    // by itself during this test. And an hour between the scheduler's
    // ticks: a triggered job must start at once, not at the next tick.
    let (s, console) = serve(data, "[jobs]\ntick_interval = \"1h\"\n");
    // The first tick's job (the last hour, without readings) has ended:
    // the scheduler now sleeps until its next tick.
    let first = console_line(&console, "job 1 ");
    assert!(first.starts_with("job 1 skipped"), "{first}");
    // (Its runner looks for more work once more after reporting it.)
    std::thread::sleep(Duration::from_secs(1));
    let mut body = Vec::new();
    for m in 0..60 {
        for d in ["d1", "d2"] {
            body.push(serde_json::json!({
                "ts": format!("2024-03-01T10:{m:02}:00Z"),
                "device": d,
                "tag": "1",
                "value": 20.0 + (m % 7) as f64 * 0.1,
            }));
        }
    }
    let (status, answer) = s.post(
        "/v1/readings",
        &[("Content-Type", "application/json")],
        &Value::Array(body).to_string(),
    );
    assert_eq!((status, answer.as_str()), (200, r#"{"accepted":120}"#));

    let (status, answer) = s.post(
        "/v1/jobs",
        &[],
        r#"{"from": "2024-03-01T10:00:00Z", "to": "2024-03-01T11:00:00Z"}"#,
    );
    assert_eq!(status, 202, "{answer}");
    let ids: Value = serde_json::from_str(&answer).unwrap();
    let id = ids["jobs"][0].as_i64().unwrap();
    let triggered = Instant::now();
    let j = ended(&s, id);
    assert!(
        triggered.elapsed() < Duration::from_secs(20),
        "the job waited {:?} for the scheduler's tick",
        triggered.elapsed()
    );
    let job = &j["job"];
    assert_eq!(job["state"], "succeeded", "{j}");
    assert_eq!(
        (
            job["models"].as_u64(),
            job["rows"].as_u64(),
            job["failed_models"].as_u64()
        ),
        (Some(2), Some(120), Some(0)),
        "{j}"
    );
    let line = console_line(&console, &format!("job {id} "));
    assert!(
        line.starts_with(&format!(
            "job {id} succeeded [2024-03-01T10:00:00Z, 11:00:00Z): 2 models, 120 rows, "
        )),
        "{line}"
    );
    s.terminate();
}

/// If the acknowledged readings cannot be moved to raw/ (here raw/ cannot
/// be written), a triggered job would miss them: the trigger is refused
/// with 503 and says why, and no job is queued; once the store is writable
/// again the same trigger scores them all.
#[test]
fn a_trigger_that_cannot_compact_first_queues_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    import(data, "d1");
    // No schedule: nothing but the trigger compacts during the test.
    let (s, _console) = serve(data, "schedules = []\n[jobs]\ntick_interval = \"100ms\"\n");
    let body: Vec<Value> = (0..30)
        .map(|m| {
            serde_json::json!({"ts": format!("2024-03-01T10:{m:02}:00Z"), "device": "d1", "tag": "1", "value": 20.0})
        })
        .collect();
    let (status, _) = s.post(
        "/v1/readings",
        &[("Content-Type", "application/json")],
        &Value::Array(body).to_string(),
    );
    assert_eq!(status, 200);
    // A file where the raw/ folder should be: nothing can be written there.
    let raw = data.join("store").join("raw");
    std::fs::write(&raw, b"in the way").unwrap();
    let trigger = r#"{"from": "2024-03-01T10:00:00Z", "to": "2024-03-01T11:00:00Z"}"#;
    let (status, answer) = s.exchange("POST", "/v1/jobs", &[], trigger.as_bytes());
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(
        answer.contains("no job queued: it would miss the readings not yet in raw/"),
        "{answer}"
    );
    let jobs = get(&s, "/v1/jobs");
    assert!(
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["kind"] != "manual"),
        "{jobs}"
    );

    std::fs::remove_file(&raw).unwrap();
    let (status, answer) = s.post("/v1/jobs", &[], trigger);
    assert_eq!(status, 202, "{answer}");
    let id = serde_json::from_str::<Value>(&answer).unwrap()["jobs"][0]
        .as_i64()
        .unwrap();
    let j = ended(&s, id);
    assert_eq!(j["job"]["state"], "succeeded", "{j}");
    assert_eq!(j["job"]["rows"], 30, "{j}");
    s.terminate();
}

/// Issue 17: a fresh `serve` with models but no readings scored the
/// previous hour at its first tick and recorded a failed job ("15 of 15
/// models failed"), printing nothing. A window without any reading is no
/// failure of the models: the job is skipped with its reason, and the
/// console says so.
#[test]
fn a_fresh_server_with_models_and_no_readings_skips_its_first_window_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for d in ["d1", "d2", "d3"] {
        import(data, d);
    }
    let (s, console) = serve(data, "[jobs]\ntick_interval = \"100ms\"\n");
    // The default hourly schedule's first window.
    let line = console_line(&console, "job 1 ");
    let window_and_reason = line
        .strip_prefix("job 1 skipped [")
        .unwrap_or_else(|| panic!("{line}"));
    let (window, reason) = window_and_reason.split_once("): ").unwrap();
    let (from, to) = window.split_once(", ").unwrap();
    assert!(
        from.ends_with(":00:00Z") && to.ends_with(":00:00Z"),
        "{line}"
    );
    assert!(reason.starts_with("no readings in the window"), "{line}");

    let j = ended(&s, 1);
    let job = &j["job"];
    assert_eq!(job["state"], "skipped", "{j}");
    assert_eq!(job["kind"], "scheduled", "{j}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .starts_with("no readings in the window"),
        "{j}"
    );
    assert_eq!(
        (
            job["models"].as_u64(),
            job["rows"].as_u64(),
            job["failed_models"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "{j}"
    );
    assert_eq!(j["failures"], serde_json::json!([]), "{j}");
    assert_eq!(job["manifest"], Value::Null, "nothing written: {j}");

    let (status, metrics) = s.request("GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("fleetscore_jobs{state=\"skipped\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nfleetscore_job_failed_models_total 0\n"),
        "{metrics}"
    );
    let o = run(data, &["jobs", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(
        list.lines()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains(" skipped ")),
        "{list}"
    );
    let o = run(data, &["jobs", "show", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no readings in the window"),
        "{}",
        text(&o)
    );
    s.terminate();
}

/// `serve`'s stdout may be a pipe its parent never reads (benchmark
/// scripts start it so). Once the pipe is full, lines about finished jobs
/// must neither stall the server nor its stop: 600 jobs (about 100 KB of
/// lines, past a 64 KB pipe) run, `/healthz` answers, SIGTERM ends it.
#[test]
fn a_stdout_nobody_reads_stalls_neither_jobs_nor_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    import(data, "d1");
    let config = data.join("serve.toml");
    std::fs::write(&config, "schedules = []\n").unwrap();
    let mut child = common::bin()
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read the first line only, then never again (the pipe stays open).
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let mut s = Server { child, addr };
    let (status, answer) = s.post(
        "/v1/jobs",
        &[],
        r#"{"from": "2024-01-01T00:00:00Z", "to": "2024-01-26T00:00:00Z"}"#,
    );
    assert_eq!(status, 202, "{answer}");
    let ids: Value = serde_json::from_str(&answer).unwrap();
    let last = ids["jobs"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_i64()
        .unwrap();
    assert_eq!(ids["jobs"].as_array().unwrap().len(), 600);
    // Every one ends (skipped: no readings), though nobody reads the lines.
    let j = ended(&s, last);
    assert_eq!(j["job"]["state"], "skipped", "{j}");
    assert_eq!(s.request("GET", "/healthz", &[], b"").0, 200);
    // SIGTERM; it must exit (cleanly) within 20 s, else it is killed and
    // the test fails instead of hanging.
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(s.child.id() as libc::pid_t, libc::SIGTERM);
    }
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        if stopped.elapsed() > Duration::from_secs(20) {
            // (Dropping the server kills it.)
            panic!("serve did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "serve exited with {status}");
    drop(stdout);
}
