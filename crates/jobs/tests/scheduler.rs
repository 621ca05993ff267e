//! The scheduler and the runner against a real SQLite job store and an
//! object store, on an injected clock: a day of hourly schedule with a
//! restart in the middle, catch-up after downtime, retries, reruns that
//! overwrite, the overlap policy and the failure threshold.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetscore_codecs::Readings;
use fleetscore_core::ModelKey;
use fleetscore_jobs::db::{
    Concurrency, JobFilter, JobKind, JobState, JobStore, NewJob, SqliteStore, Threshold,
};
use fleetscore_jobs::run::{Runner, RunnerConfig};
use fleetscore_jobs::schedule::{tick, Clock, ManualClock, ScheduleSpec};
use fleetscore_store::{raw_objects, ImportRequest, Registry, Store, HOUR_NS};

/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000_000_000;
const MIN: i64 = 60_000_000_000;
const DEVICES: usize = 6;

fn demo_model(n: usize) -> fleetscore_models::Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../fleetscore/demo/model_fallback_{n}.pkl"));
    fleetscore_models::import_sklearn(&std::fs::read(path).unwrap()).unwrap()
}

/// A store with models for d0..d5 on tag 1 (d5 has none: no_model) and one
/// for `ghost` (no readings: no_data), and readings every 10 minutes for
/// `hours` hours from T0.
async fn fleet(root: &Path, hours: i64) -> (Store, usize) {
    let store = Store::open(root.to_str().unwrap()).unwrap();
    let registry = Registry::new(store.clone());
    let mut reqs: Vec<ImportRequest> = (0..DEVICES - 1)
        .map(|d| ImportRequest {
            key: ModelKey::new(format!("d{d}"), "1").unwrap(),
            model: demo_model(1),
            source: "test".into(),
            input: Default::default(),
        })
        .collect();
    reqs.push(ImportRequest {
        key: ModelKey::new("ghost", "1").unwrap(),
        model: demo_model(1),
        source: "test".into(),
        input: Default::default(),
    });
    registry.import(reqs, "2024-01-01T00:00:00Z").await.unwrap();
    let mut r = Readings {
        keys: (0..DEVICES)
            .map(|d| (format!("d{d}"), "1".to_string()))
            .collect(),
        ..Readings::default()
    };
    for h in 0..hours {
        for m in (0..60).step_by(10) {
            for d in 0..DEVICES {
                r.ts.push(T0 + h * HOUR_NS + m * MIN);
                r.value.push(20.0 + (d as f64) + (m as f64) / 10.0);
                r.key.push(d as u32);
            }
        }
    }
    for (key, data) in raw_objects(&r, b"test fleet").unwrap() {
        store.put(&key, data).await.unwrap();
    }
    (store, r.len())
}

fn hourly(name: &str) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        cron: "0 * * * *".into(),
        window_ns: HOUR_NS,
        delay_ns: 5 * MIN,
        mode: "raw".into(),
        batch_size: 2,
        // ghost (no_data) and d5 (no_model) fail in every hour: 2 of 7.
        max_failed: Threshold::Count(2),
        max_retries: 2,
        concurrency: Concurrency::Forbid,
        catch_up: 3,
    }
}

fn quick() -> RunnerConfig {
    RunnerConfig {
        parallel_tasks: 2,
        retry_backoff: Duration::from_millis(1),
    }
}

async fn open(db: &Path) -> Arc<dyn JobStore> {
    Arc::new(
        SqliteStore::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_hourly_schedule_with_a_restart_scores_each_hour_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, readings) = fleet(&dir.path().join("store"), 24).await;
    let db_path = dir.path().join("jobs.db");
    let clock = Arc::new(ManualClock::new(T0));
    let spec = hourly("hourly");
    let started = Instant::now();

    let mut db = open(&db_path).await;
    let mut runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    // The first tick at 01:05 scores 00:00–01:00; then every hour.
    for h in 1..=24 {
        if h == 13 {
            // A restart: everything from the job store again.
            drop(runner);
            drop(db);
            db = open(&db_path).await;
            runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
        }
        if h > 1 {
            // Ticks before the delay has passed create nothing.
            clock.set(T0 + h * HOUR_NS + 4 * MIN);
            assert!(tick(&*db, &spec, clock.now())
                .await
                .unwrap()
                .queued
                .is_empty());
        }
        clock.set(T0 + h * HOUR_NS + 5 * MIN);
        let out = tick(&*db, &spec, clock.now()).await.unwrap();
        assert_eq!(out.queued.len(), 1, "hour {h}");
        // A second tick at the same time is a no-op.
        assert!(tick(&*db, &spec, clock.now())
            .await
            .unwrap()
            .queued
            .is_empty());
        assert_eq!(runner.run_queued().await.unwrap().len(), 1);
    }
    let elapsed = started.elapsed();
    eprintln!("24 hourly jobs with a restart in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    let jobs = db
        .jobs(&JobFilter {
            limit: Some(1000),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 24);
    let mut windows: Vec<i64> = jobs.iter().map(|j| j.window_start).collect();
    windows.sort();
    assert_eq!(
        windows,
        (0..24).map(|h| T0 + h * HOUR_NS).collect::<Vec<_>>()
    );
    let mut rows = 0;
    for j in &jobs {
        assert_eq!(j.state, JobState::Succeeded, "{j:?}");
        assert_eq!((j.models, j.failed_models, j.tasks), (7, 2, 4), "{j:?}");
        assert_eq!(j.window_end - j.window_start, HOUR_NS);
        rows += j.rows;
        let failures = db.failures(j.id).await.unwrap();
        let reasons: Vec<(&str, &str)> = failures
            .iter()
            .map(|f| (f.device.as_str(), f.reason.as_str()))
            .collect();
        assert_eq!(reasons, [("d5", "no_model"), ("ghost", "no_data")]);
        assert!(store
            .get(&format!("logs/{}/job.log", j.id))
            .await
            .unwrap()
            .is_some());
    }
    // Every reading of d0..d4 scored once (d5 has no model).
    assert_eq!(rows as usize, readings / DEVICES * (DEVICES - 1));
    let manifests = store.list("predictions/").await.unwrap();
    assert_eq!(
        manifests
            .iter()
            .filter(|k| k.contains("/manifest-raw-1h.json"))
            .count(),
        24
    );
    assert_eq!(
        manifests.iter().filter(|k| k.ends_with(".parquet")).count(),
        24 * 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtime_is_caught_up_oldest_first_and_the_rest_recorded_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = fleet(&dir.path().join("store"), 12).await;
    let db = open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + HOUR_NS + 5 * MIN));
    let spec = hourly("hourly");
    assert_eq!(
        tick(&*db, &spec, clock.now()).await.unwrap().queued.len(),
        1
    );
    // Down from 01:05 to 11:30: windows ending 02:00..11:00 were missed.
    clock.set(T0 + 11 * HOUR_NS + 30 * MIN);
    let out = tick(&*db, &spec, clock.now()).await.unwrap();
    assert_eq!((out.queued.len(), out.skipped), (3, 7));
    let runner = Runner::new(db.clone(), store, clock.clone(), quick());
    let ran = runner.run_queued().await.unwrap();
    let mut order = Vec::new();
    for id in &ran {
        order.push(db.job(*id).await.unwrap().window_end);
    }
    assert_eq!(
        order,
        [1, 9, 10, 11].map(|h| T0 + h * HOUR_NS),
        "oldest first"
    );
    let skipped = db
        .jobs(&JobFilter {
            state: Some(JobState::Skipped),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(skipped.len(), 7);
    assert!(skipped[0]
        .error
        .as_deref()
        .unwrap()
        .contains("catch_up = 3"));
    // A skipped window can still be scored, once.
    let again = db.retry(skipped[0].id).await.unwrap();
    assert_eq!(again.state, JobState::Queued);
    assert_eq!(runner.run_queued().await.unwrap(), vec![again.id]);
    assert_eq!(db.job(again.id).await.unwrap().state, JobState::Succeeded);
}

fn manual(start: i64, batch: u32) -> NewJob {
    NewJob {
        schedule: None,
        kind: JobKind::Backfill,
        window_start: start,
        window_end: start + HOUR_NS,
        mode: "raw".into(),
        selection: None,
        batch_size: batch,
        max_failed: Threshold::Percent(50.0),
        max_retries: 2,
        concurrency: Concurrency::Allow,
        state: JobState::Queued,
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_are_retried_then_fail_the_job_and_a_retry_then_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (store, _) = fleet(&root, 1).await;
    let db = open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    // A file where the predictions folder should be: every put fails.
    std::fs::write(root.join("predictions"), b"in the way").unwrap();
    let id = db.create_job(&manual(T0, 3), clock.now()).await.unwrap();
    runner.run_queued().await.unwrap();
    let job = db.job(id).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.error.as_deref().unwrap().contains("task 0 failed"),
        "{job:?}"
    );
    let tasks = db.tasks(id).await.unwrap();
    assert!(tasks.iter().all(|t| t.attempts == 3 && t.state == "failed"));
    let log = store
        .get(&format!("logs/{id}/task-00000.log"))
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&log);
    assert_eq!(log.matches("retrying in").count(), 2, "{log}");

    std::fs::remove_file(root.join("predictions")).unwrap();
    db.retry(id).await.unwrap();
    runner.run_queued().await.unwrap();
    let job = db.job(id).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert!(db.tasks(id).await.unwrap().iter().all(|t| t.attempts == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_with_fewer_tasks_overwrites_and_removes_stale_parts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = fleet(&dir.path().join("store"), 1).await;
    let db = open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    db.create_job(&manual(T0, 1), clock.now()).await.unwrap();
    runner.run_queued().await.unwrap();
    let parts = |keys: Vec<String>| keys.into_iter().filter(|k| k.ends_with(".parquet")).count();
    assert_eq!(parts(store.list("predictions/").await.unwrap()), 7);
    let id = db.create_job(&manual(T0, 4), clock.now()).await.unwrap();
    runner.run_queued().await.unwrap();
    assert_eq!(parts(store.list("predictions/").await.unwrap()), 2);
    let manifest = store
        .get("predictions/date=2024-01-01/hour=00/manifest-raw-1h.json")
        .await
        .unwrap()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(m["job"], id);
    assert_eq!(m["parts"].as_array().unwrap().len(), 2);
    assert_eq!(m["rows"], 5 * 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_runs_a_schedules_jobs_one_at_a_time_allow_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("jobs.db")).await;
    let job = |s: &str, h: i64, c: Concurrency| NewJob {
        schedule: Some(s.into()),
        kind: JobKind::Scheduled,
        concurrency: c,
        ..manual(T0 + h * HOUR_NS, 10)
    };
    let jobs = [
        job("a", 0, Concurrency::Forbid),
        job("a", 1, Concurrency::Forbid),
    ];
    db.schedule_jobs("a", &jobs, T0, 0).await.unwrap();
    let jobs = [
        job("b", 0, Concurrency::Allow),
        job("b", 1, Concurrency::Allow),
    ];
    db.schedule_jobs("b", &jobs, T0, 0).await.unwrap();
    let mut claimed = Vec::new();
    while let Some(j) = db.claim_job(1).await.unwrap() {
        claimed.push((j.schedule.unwrap(), j.window_start));
    }
    claimed.sort();
    assert_eq!(
        claimed,
        [
            ("a".to_string(), T0),
            ("b".to_string(), T0),
            ("b".to_string(), T0 + HOUR_NS)
        ]
    );
    // The same window twice for one schedule is refused quietly.
    let ids = db
        .schedule_jobs("a", &[job("a", 0, Concurrency::Forbid)], T0, 0)
        .await
        .unwrap();
    assert_eq!(ids, [None]);
    // Cancelling: a queued job, then retrying it.
    let queued = db
        .jobs(&JobFilter {
            state: Some(JobState::Queued),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    let c = db.cancel(queued[0].id, 2).await.unwrap();
    assert_eq!(c.state, JobState::Cancelled);
    assert!(db.cancel(queued[0].id, 3).await.is_err());
}

#[test]
fn thresholds_parse_and_apply() {
    let t: Threshold = "10%".parse().unwrap();
    assert!(!t.exceeded(1, 10));
    assert!(t.exceeded(2, 10));
    let t: Threshold = "3".parse().unwrap();
    assert!(!t.exceeded(3, 5));
    assert!(t.exceeded(4, 5));
    assert!("ten".parse::<Threshold>().is_err());
    assert!("120%".parse::<Threshold>().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_input_models_score_each_window_on_its_named_features() {
    use fleetscore_store::ModelInput;
    use fleetscore_stream::{Span, WindowSpec};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = fleet(&dir.path().join("store"), 1).await;
    // w0/1: a reading every 10 s for the hour, windowed into 1m windows.
    let mut r = Readings {
        keys: vec![("w0".into(), "1".into())],
        ..Readings::default()
    };
    for i in 0..360 {
        r.ts.push(T0 + i * 10_000_000_000);
        r.value.push(20.0 + ((i * 7) % 13) as f64 * 0.3);
        r.key.push(0);
    }
    for (k, d) in raw_objects(&r, b"w0").unwrap() {
        store.put(&k, d).await.unwrap();
    }
    let spec = WindowSpec::tumbling(Span::from_secs(60));
    fleetscore_store::aggregate(&store, spec, T0, T0 + HOUR_NS)
        .await
        .unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/sklearn/models/bare_rbf_f3.p4.pkl");
    let model = fleetscore_models::import_sklearn(&std::fs::read(path).unwrap()).unwrap();
    let registry = Registry::new(store.clone());
    let request = |features: &[&str]| ImportRequest {
        key: ModelKey::new("w0", "1").unwrap(),
        model: model.clone(),
        source: "test".into(),
        input: ModelInput::Window {
            size: "1m".into(),
            features: features.iter().map(|f| f.to_string()).collect(),
        },
    };
    // The feature list must fit the model.
    let e = registry
        .import(vec![request(&["mean", "std"])], "t")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("takes 3 features"), "{e}");
    registry
        .import(vec![request(&["mean", "min", "max"])], "t")
        .await
        .unwrap();
    assert_eq!(
        ModelInput::parse("window:60s:mean,min,max").unwrap(),
        ModelInput::Window {
            size: "1m".into(),
            features: vec!["mean".into(), "min".into(), "max".into()]
        }
    );
    assert!(ModelInput::parse("window:1m:median").is_err());

    let db = open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    let id = db.create_job(&manual(T0, 3), clock.now()).await.unwrap();
    runner.run_queued().await.unwrap();
    let job = db.job(id).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    // 5 raw models x 6 readings, and 60 windows of w0.
    assert_eq!((job.models, job.rows), (8, 5 * 6 + 60));

    // Each window's decision is the model's on (mean, min, max).
    let windows = fleetscore_jobs::run::load_windows(&store, "1m", T0, T0 + HOUR_NS)
        .await
        .unwrap();
    let ws = &windows[&("w0".to_string(), "1".to_string())];
    assert_eq!(ws.len(), 60);
    let rows: Vec<f64> = ws.iter().flat_map(|w| [w.mean, w.min, w.max]).collect();
    let mut want = Vec::new();
    model.decision_function(&rows, 3, &mut want).unwrap();
    let mut got = Vec::new();
    for key in store.list("predictions/").await.unwrap() {
        if key.ends_with(".parquet") {
            let data = store.get(&key).await.unwrap().unwrap();
            got.extend(
                fleetscore_codecs::read_predictions_parquet_bytes(data, &key, |r| r.device == "w0")
                    .unwrap(),
            );
        }
    }
    assert_eq!(got.len(), 60);
    for ((g, w), d) in got.iter().zip(ws).zip(&want) {
        assert_eq!((g.ts, g.value, g.score), (w.start, w.mean, *d));
        assert_eq!(g.prediction, i32::from(!fleetscore_models::is_inlier(*d)));
    }
}
