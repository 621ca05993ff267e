//! Jobs from the command line: a deployment's readings scored as hourly
//! backfill jobs give the predictions scikit-learn gave (examples/fleet,
//! always; the reference deployment when ../shared is beside the checkout);
//! `jobs list|show|logs|retry|cancel`; `serve` runs its schedule.

use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;
use common::{import_as, predictions, run, text, Fleet, Server};

/// A deployment's readings ingested and scored as hourly backfill jobs of
/// `batch_size` models a task: every reading predicted once, as
/// scikit-learn did; running the windows again overwrites; `jobs
/// list|show|logs|retry|cancel` on the jobs.
fn hourly_backfill_jobs_give_the_expected_predictions(fleet: &Fleet, batch_size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let o = run(
        data,
        &["models", "import", fleet.models_dir().to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(data, &["ingest", fleet.readings().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let window = ["--from", fleet.window[0], "--to", fleet.window[1]];
    let batch = batch_size.to_string();
    let o = run(
        data,
        &[
            &["backfill"][..],
            &window[..],
            &["--batch-size", &batch, "--json"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let jobs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), fleet.hours, "one job an hour");
    let rows: u64 = jobs.iter().map(|j| j["rows"].as_u64().unwrap()).sum();
    let anomalies: u64 = jobs.iter().map(|j| j["anomalies"].as_u64().unwrap()).sum();
    assert_eq!(
        (rows, anomalies),
        (fleet.rows as u64, fleet.anomalies as u64)
    );
    let tasks = fleet.models.div_ceil(batch_size);
    assert!(tasks > 1);
    assert!(jobs
        .iter()
        .all(|j| j["state"] == "succeeded" && j["tasks"] == tasks));

    // Row for row what scikit-learn predicted.
    let got = predictions(&data.join("store"));
    let mut n = 0;
    for ((ts, device, tag), (_, pred, dec)) in fleet.expected() {
        let us = fleetscore_core::parse_ts(&ts).unwrap() / 1_000;
        let (p, score) = got[&(us, device.clone(), tag.clone())];
        assert_eq!(p, i32::from(pred), "{ts},{device},{tag}");
        assert!(
            (score - dec).abs() < 1e-9,
            "{ts},{device},{tag}: {score} vs {dec}"
        );
        n += 1;
    }
    assert_eq!(n, got.len());

    // Running the same windows again overwrites: still once each.
    let o = run(data, &[&["backfill"][..], &window[..]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let said = format!(
        "backfilled {} window(s) of 1h: {} rows, {} anomalies, 0 failed",
        fleet.hours, fleet.rows, fleet.anomalies
    );
    assert!(text(&o).contains(&said), "{}", text(&o));
    assert_eq!(predictions(&data.join("store")).len(), fleet.rows);

    let o = run(data, &["jobs", "list"]);
    assert!(text(&o).contains("succeeded"), "{}", text(&o));
    assert_eq!(
        text(&o).lines().count(),
        1 + 2 * fleet.hours,
        "a header and both backfills' jobs"
    );
    let id = jobs[0]["id"].as_i64().unwrap().to_string();
    let o = run(data, &["jobs", "show", &id, "--json"]);
    let show: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let shown = show["tasks"].as_array().unwrap();
    let score = shown.iter().filter(|t| t["kind"] == "score").count();
    assert_eq!(score, tasks, "{show}");
    assert!(shown.iter().any(|t| t["kind"] == "map"), "{show}");
    let o = run(data, &["jobs", "logs", &id]);
    let t = text(&o);
    let last_task = format!("task-{:05}.log", tasks - 1);
    assert!(
        t.contains("job.log") && t.contains(&last_task) && t.contains("succeeded"),
        "{t}"
    );
    let o = run(data, &["jobs", "retry", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("only a failed, cancelled or skipped job can be retried"));
    let o = run(data, &["jobs", "cancel", &id]);
    assert!(text(&o).contains("only a queued or running job can be cancelled"));
    let o = run(data, &["jobs", "show", "999"]);
    assert!(text(&o).contains("no job 999"), "{}", text(&o));
}

#[test]
fn example_fleet_as_hourly_backfill_jobs() {
    hourly_backfill_jobs_give_the_expected_predictions(&Fleet::example(), 2);
}

#[test]
#[ignore = "needs ../shared/reference beside the checkout (CI has it; .ci/run runs this with --ignored)"]
fn the_reference_job_as_hourly_backfill_jobs() {
    hourly_backfill_jobs_give_the_expected_predictions(&Fleet::reference(), 4);
}

#[test]
fn serve_runs_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo/model_fallback_1.pkl");
    import_as(data, &demo, "*", "1");
    // Readings in the last minute, already in raw/ (not too close to the
    // next minute, so that the server's first tick scores that minute).
    let secs = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    if secs() % 60 >= 45 {
        std::thread::sleep(Duration::from_secs((61 - secs() % 60) as u64));
    }
    let now = secs();
    let minute = now - now % 60 - 60;
    let mut csv = String::from("TS,Device,Tag,Value\n");
    for i in 0..30 {
        csv.push_str(&format!(
            "{},d{},1,{}\n",
            fleetscore_core::format_ts((minute + i * 2) * 1_000_000_000),
            i % 3,
            10.0 + i as f64
        ));
    }
    std::fs::write(data.join("r.csv"), csv).unwrap();
    assert!(run(data, &["ingest", data.join("r.csv").to_str().unwrap()])
        .status
        .success());
    let config = data.join("fleetscore.toml");
    std::fs::write(
        &config,
        "[jobs]\ntick_interval = \"200ms\"\n\n[[schedules]]\nname = \"minutely\"\ncron = \"* * * * *\"\nwindow = \"1m\"\ndelay = \"0s\"\n",
    )
    .unwrap();
    let s = Server::start(data, &["--config", config.to_str().unwrap()]);
    let started = Instant::now();
    let job = loop {
        let o = run(data, &["jobs", "list", "--json", "--state", "succeeded"]);
        let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(j) = list
            .as_array()
            .and_then(|a| a.iter().find(|j| j["rows"] == 30))
        {
            break j.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no job ran: {list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    s.terminate();
    assert_eq!(job["schedule"], "minutely");
    assert_eq!(job["models"], 3);
    assert_eq!(
        job["window_start"].as_i64().unwrap(),
        minute * 1_000_000_000
    );
}

/// Issue 19: a window near the longest span an i64 of nanoseconds holds
/// (`9223372036854775807ns`, `106751d`) was accepted by `backfill` and by
/// `POST /v1/jobs`, which built the same jobs each in its own way: one job
/// from 1970 to past 2262, beyond the last time fleetscore represents, for
/// a runner to list millions of hours of. Both now build the jobs with one
/// function, which refuses such a window with a 400 / an error saying what
/// to change, and queues nothing.
#[test]
fn windows_near_the_longest_span_are_refused_by_backfill_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let said = "reach past the times fleetscore represents";
    for window in ["9223372036854775807ns", "106751d"] {
        let o = run(
            data,
            &[
                "backfill",
                "--from",
                "2024-01-01T00:00:00Z",
                "--to",
                "2024-01-01T01:00:00Z",
                "--window",
                window,
                "--queue",
            ],
        );
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{window}: {t}");
        assert!(t.contains(said) && t.contains("--window"), "{window}: {t}");
        assert!(!t.contains("panicked"), "{t}");
    }
    // Rounded up to whole windows, the last hours there are reach past the
    // last i64; the range itself past the last time a reading may carry.
    for (from, to, window) in [
        ("2261-12-31T00:00:00Z", "2261-12-31T23:00:00Z", "100000d"),
        ("1678-01-01T00:00:00Z", "1678-02-01T00:00:00Z", "200d"),
    ] {
        let o = run(
            data,
            &[
                "backfill", "--from", from, "--to", to, "--window", window, "--queue",
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains(said), "{}", text(&o));
    }
    let o = run(data, &["jobs", "list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap(),
        serde_json::json!([]),
        "nothing queued"
    );

    let s = Server::start(data, &[]);
    for window in ["9223372036854775807ns", "106751d"] {
        let body = format!(
            r#"{{"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T01:00:00Z", "window": "{window}"}}"#
        );
        let (status, answer) = s.post("/v1/jobs", &[], &body);
        assert_eq!(status, 400, "{window}: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with("window: ") && error.contains(said),
            "{error}"
        );
    }
    // The same checks, the same words: a selection that is not DEVICE/TAG.
    let (status, answer) = s.post(
        "/v1/jobs",
        &[],
        r#"{"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T01:00:00Z", "models": ["d1"]}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains(r#"models: \"d1\" is not DEVICE/TAG"#),
        "{answer}"
    );
    s.terminate();
    let o = run(
        data,
        &[
            "backfill",
            "--from",
            "2024-01-01T00:00:00Z",
            "--to",
            "2024-01-01T01:00:00Z",
            "--model",
            "d1",
            "--queue",
        ],
    );
    assert!(
        text(&o).contains(r#"models: "d1" is not DEVICE/TAG"#),
        "{}",
        text(&o)
    );
}

/// Issue 19: `score --schedule NAME --now T` took the window `[T - window,
/// T)` unchecked: a schedule's window of centuries before a time before
/// 1970 overflowed (a panic in a debug build, a window in the far future
/// in a release build). It is refused, saying so.
#[test]
fn a_scheduled_window_before_the_first_instant_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let config = data.join("fleetscore.toml");
    std::fs::write(
        &config,
        "[[schedules]]\nname = \"ages\"\ncron = \"0 * * * *\"\nwindow = \"106751d\"\ndelay = \"0s\"\n",
    )
    .unwrap();
    let o = run(
        data,
        &[
            "--config",
            config.to_str().unwrap(),
            "score",
            "--schedule",
            "ages",
            "--now",
            "1900-01-01T00:30:00Z",
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("use a shorter window") && !t.contains("panicked"),
        "{t}"
    );
}
