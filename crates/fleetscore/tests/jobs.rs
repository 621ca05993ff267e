//! Jobs from the command line: the reference job run as hourly backfill
//! jobs gives the reference predictions; `jobs list|show|logs|retry|cancel`;
//! `serve` runs its schedule.

use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;
use common::{predictions, reference, run, text, Server};

#[test]
fn the_reference_job_as_hourly_backfill_jobs() {
    let Some(root) = reference() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let o = run(
        data,
        &["models", "import", root.join("models").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let input = root.join("data/sensor_data.csv");
    let o = run(data, &["ingest", input.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let window = [
        "--from",
        "2018-08-28T23:00:00Z",
        "--to",
        "2018-08-29T03:30:00Z",
    ];
    let o = run(
        data,
        &[
            &["backfill"][..],
            &window[..],
            &["--batch-size", "4", "--json"],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let jobs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 5, "23:00..04:00 hourly");
    let rows: u64 = jobs.iter().map(|j| j["rows"].as_u64().unwrap()).sum();
    let anomalies: u64 = jobs.iter().map(|j| j["anomalies"].as_u64().unwrap()).sum();
    assert_eq!((rows, anomalies), (17_768, 6_757));
    assert!(jobs
        .iter()
        .all(|j| j["state"] == "succeeded" && j["tasks"] == 4));

    // Row for row what the reference job predicted.
    let got = predictions(&data.join("store"));
    let exp = std::fs::read_to_string(root.join("expected_predictions.csv")).unwrap();
    let mut n = 0;
    for line in exp.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let ts = fleetscore_core::parse_ts(f[0]).unwrap() / 1_000;
        let (pred, score) = got[&(ts, f[1].to_string(), f[2].to_string())];
        assert_eq!(pred, f[4].parse::<i32>().unwrap(), "{line}");
        assert!(
            (score - f[5].parse::<f64>().unwrap()).abs() < 1e-9,
            "{line}"
        );
        n += 1;
    }
    assert_eq!(n, got.len());

    // Running the same windows again overwrites: still once each.
    let o = run(data, &[&["backfill"][..], &window[..]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("backfilled 5 window(s) of 1h: 17768 rows, 6757 anomalies, 0 failed"));
    assert_eq!(predictions(&data.join("store")).len(), 17_768);

    let o = run(data, &["jobs", "list"]);
    assert!(text(&o).contains("succeeded"), "{}", text(&o));
    assert_eq!(text(&o).lines().count(), 11, "a header and 10 jobs");
    let id = jobs[0]["id"].as_i64().unwrap().to_string();
    let o = run(data, &["jobs", "show", &id, "--json"]);
    let show: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tasks = show["tasks"].as_array().unwrap();
    let score = tasks.iter().filter(|t| t["kind"] == "score").count();
    assert_eq!(score, 4, "{show}");
    assert!(tasks.iter().any(|t| t["kind"] == "map"), "{show}");
    let o = run(data, &["jobs", "logs", &id]);
    let t = text(&o);
    assert!(
        t.contains("job.log") && t.contains("task-00003.log") && t.contains("succeeded"),
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
fn serve_runs_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo/model_fallback_1.pkl");
    let o = run(
        data,
        &[
            "models",
            "import",
            demo.to_str().unwrap(),
            "--device",
            "*",
            "--tag",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
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
