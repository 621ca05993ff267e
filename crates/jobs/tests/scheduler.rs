//! The scheduler, the runner and the leases against a real job store
//! (SQLite, and PostgreSQL with `--include-ignored`: every test runs on
//! both) and an object store, on an injected clock: a day of hourly
//! schedule with a restart in the middle, catch-up after downtime,
//! retries, reruns that overwrite, the overlap policy, the failure
//! threshold, leases that expire and pass on, and several runners sharing
//! one job.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetscore_codecs::Readings;
use fleetscore_core::ModelKey;
use fleetscore_jobs::db::{
    Commits, Concurrency, DbError, FailureRecord, IdleWork, JobFilter, JobKind, JobState, JobStore,
    NewJob, SqlStore, TaskRecord, TaskState, Threshold,
};
use fleetscore_jobs::lease::{Held, Leases};
use fleetscore_jobs::run::{no_readings, Runner, RunnerConfig, Step};
use fleetscore_jobs::schedule::{due, tick, Clock, ManualClock, ScheduleSpec};
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
            model: demo_model(1).into(),
            source: "test".into(),
            input: Default::default(),
        })
        .collect();
    reqs.push(ImportRequest {
        key: ModelKey::new("ghost", "1").unwrap(),
        model: demo_model(1).into(),
        source: "test".into(),
        input: Default::default(),
    });
    registry.import(reqs, "2024-01-01T00:00:00Z").await.unwrap();
    let n = put_readings(&store, hours).await;
    (store, n)
}

/// Readings of d0..d5 on tag 1 every 10 minutes for `hours` hours from T0,
/// as raw objects; returns their count.
async fn put_readings(store: &Store, hours: i64) -> usize {
    let mut r = Readings::with_keys(
        &(0..DEVICES)
            .map(|d| (format!("d{d}"), "1".to_string()))
            .collect::<Vec<_>>(),
    );
    for h in 0..hours {
        for m in (0..60).step_by(10) {
            for d in 0..DEVICES {
                r.push(
                    T0 + h * HOUR_NS + m * MIN,
                    d as u32,
                    20.0 + (d as f64) + (m as f64) / 10.0,
                );
            }
        }
    }
    for (key, data) in raw_objects(&r, b"test fleet").unwrap() {
        store.put(&key, data).await.unwrap();
    }
    r.len()
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

/// A runner's settings for the tests. Its backoff is none: a retry's
/// `not_before` is a time on the runner's clock, which stands still in
/// these tests unless one moves it, so a retry is due at once (the test
/// of the backoff itself moves the clock past it).
fn quick() -> RunnerConfig {
    RunnerConfig {
        parallel_tasks: 2,
        retry_backoff: Duration::ZERO,
        lease: Duration::from_secs(30),
        poll: Duration::from_millis(20),
    }
}

/// The job store a test runs against: every behavioural test runs on both.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The store for `path` (a file in the test's temp folder): the SQLite
    /// file, or a PostgreSQL database named after it, created on first use,
    /// so opening the same path again is a restart.
    async fn open(self, path: &Path) -> Arc<dyn JobStore> {
        Arc::new(SqlStore::open(&self.url(path).await).await.unwrap())
    }

    /// The URL of the store for `path` (see [`Backend::open`]).
    async fn url(self, path: &Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}", path.display()),
            Backend::Postgres => {
                let server = std::env::var("FLEETSCORE_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let name = format!("fs_test_{:016x}", fnv(path.to_string_lossy().as_bytes()));
                fleetscore_jobs::db::ensure_database(&server, &name)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL at {server}: {e} (set FLEETSCORE_TEST_POSTGRES)")
                    })
            }
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Each test once per backend; PostgreSQL's need the server (`.ci/run`
/// runs them with `--include-ignored`).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL (FLEETSCORE_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/postgres); .ci/run runs it"]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

async fn a_day_of_hourly_schedule_with_a_restart_scores_each_hour_once(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, readings) = fleet(&dir.path().join("store"), 24).await;
    let db_path = dir.path().join("jobs.db");
    let clock = Arc::new(ManualClock::new(T0));
    let spec = hourly("hourly");
    let started = Instant::now();

    let mut db = b.open(&db_path).await;
    let mut runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    // The first tick at 01:05 scores 00:00–01:00; then every hour.
    for h in 1..=24 {
        if h == 13 {
            // A restart: everything from the job store again.
            drop(runner);
            drop(db);
            db = b.open(&db_path).await;
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
        // Three tasks of two: d0 d1, d2 d3, d4 ghost. d5 has readings but
        // no model: planning reads no readings, so the map tasks find it
        // and put it with the task whose range holds it (the third).
        assert_eq!(
            (j.counts.models, j.counts.failed_models, j.tasks),
            (7, 2, 3),
            "{j:?}"
        );
        assert_eq!(j.window_end - j.window_start, HOUR_NS);
        rows += j.counts.rows;
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
        24 * 3
    );
}

async fn downtime_is_caught_up_oldest_first_and_the_rest_recorded_as_skipped(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = fleet(&dir.path().join("store"), 12).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
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

async fn failing_writes_are_retried_then_fail_the_job_and_a_retry_then_succeeds(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (store, _) = fleet(&root, 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
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
    // The map task read the window; every score task failed its writes.
    let (maps, scores): (Vec<_>, Vec<_>) = tasks.iter().partition(|t| t.is_map());
    assert_eq!(maps.len(), 1, "{tasks:?}");
    assert!(maps
        .iter()
        .all(|t| t.attempts == 1 && t.state == TaskState::Succeeded));
    assert!(scores
        .iter()
        .all(|t| t.attempts == 3 && t.state == TaskState::Failed));
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

async fn a_rerun_with_fewer_tasks_overwrites_and_removes_stale_parts(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = fleet(&dir.path().join("store"), 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    db.create_job(&manual(T0, 1), clock.now()).await.unwrap();
    runner.run_queued().await.unwrap();
    let parts = |keys: Vec<String>| keys.into_iter().filter(|k| k.ends_with(".parquet")).count();
    // One task per pair with a model (d5, without, goes with d4).
    assert_eq!(parts(store.list("predictions/").await.unwrap()), 6);
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

async fn forbid_runs_a_schedules_jobs_one_at_a_time_allow_does_not(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = b.open(&dir.path().join("jobs.db")).await;
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
    while let Some(j) = db.claim_job(1, "test", i64::MAX, None).await.unwrap() {
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

async fn window_input_models_score_each_window_on_its_named_features(b: Backend) {
    use fleetscore_store::ModelInput;
    use fleetscore_stream::{Span, WindowSpec};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = fleet(&dir.path().join("store"), 1).await;
    // w0/1: a reading every 10 s for the hour, windowed into 1m windows.
    let mut r = Readings::with_keys(&[("w0", "1")]);
    for i in 0..360 {
        r.push(
            T0 + i * 10_000_000_000,
            0,
            20.0 + ((i * 7) % 13) as f64 * 0.3,
        );
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
        model: model.clone().into(),
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

    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    let id = db.create_job(&manual(T0, 3), clock.now()).await.unwrap();
    runner.run_queued().await.unwrap();
    let job = db.job(id).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    // 5 raw models x 6 readings, and 60 windows of w0.
    assert_eq!((job.counts.models, job.counts.rows), (8, 5 * 6 + 60));

    // Each window's decision is the model's on (mean, min, max).
    let windows = fleetscore_store::lake::load_windows(&store, "1m", T0, T0 + HOUR_NS)
        .await
        .unwrap();
    let ws = &windows[&("w0".to_string(), "1".to_string())];
    assert_eq!(ws.len(), 60);
    let rows: Vec<f64> = ws.iter().flat_map(|w| [w.mean, w.min, w.max]).collect();
    let (mut want, mut labels) = (vec![0.0; 60], vec![0u32; 60]);
    model
        .evaluate_into(&rows, 3, &mut want, &mut labels)
        .unwrap();
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
    for (((g, w), d), l) in got.iter().zip(ws).zip(&want).zip(&labels) {
        assert_eq!((g.ts, g.value, g.score), (w.start, w.mean, *d));
        assert_eq!(g.prediction, Some(*l as i32));
    }
}

/// Every prediction row of the store, as (device, tag, ts), sorted.
async fn prediction_rows(store: &Store) -> Vec<(String, String, i64)> {
    let mut rows = Vec::new();
    for key in store.list("predictions/").await.unwrap() {
        if key.ends_with(".parquet") {
            let data = store.get(&key).await.unwrap().unwrap();
            for r in
                fleetscore_codecs::read_predictions_parquet_bytes(data, &key, |_| true).unwrap()
            {
                rows.push((r.device, r.tag, r.ts));
            }
        }
    }
    rows.sort();
    rows
}

/// A job claimed and planned into `n` tasks by `owner`, straight through
/// the store's calls.
async fn planned(db: &Arc<dyn JobStore>, n: u32, owner: &str) -> i64 {
    let id = db.create_job(&manual(T0, 1), 0).await.unwrap();
    let job = db
        .claim_job(1, owner, i64::MAX, Some(id))
        .await
        .unwrap()
        .expect("the queued job is claimed");
    let tasks: Vec<TaskRecord> = (0..n)
        .map(|i| TaskRecord {
            job_id: id,
            idx: i,
            state: TaskState::Queued,
            first_key: format!("d{i}/1"),
            last_key: format!("d{i}/1"),
            n_keys: 1,
            ..TaskRecord::default()
        })
        .collect();
    assert!(db.plan_job(&job, &tasks, owner).await.unwrap());
    id
}

async fn leases_expire_and_pass_to_another_worker_whose_record_wins(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = b.open(&dir.path().join("jobs.db")).await;
    let id = planned(&db, 1, "planner").await;
    // Planning's lease is over once the plan is recorded.
    assert!(!db.renew_job(id, "planner", 10).await.unwrap());
    // Worker a leases the task until t=1000, then goes quiet.
    let a = db.lease_task(100, "a", 1_000, None).await.unwrap().unwrap();
    assert_eq!((a.job_id, a.idx, a.attempts), (id, 0, 1));
    assert_eq!(a.lease_owner.as_deref(), Some("a"));
    // Before expiry nobody else gets it; after, b does.
    assert!(db
        .lease_task(999, "b", 5_000, None)
        .await
        .unwrap()
        .is_none());
    assert_eq!(db.pending(999).await.unwrap(), 0);
    assert_eq!(db.pending(1_001).await.unwrap(), 1);
    let t = db
        .lease_task(1_001, "b", 5_000, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.idx, t.attempts, t.lease_owner.as_deref()),
        (0, 2, Some("b"))
    );
    // a's lease is gone: it cannot renew, finish or hand back.
    assert!(!db.renew_task(id, 0, "a", 9_000).await.unwrap());
    let mut done = t.clone();
    done.state = TaskState::Succeeded;
    done.counts.rows = 7;
    assert!(!db.finish_task(&done, &[], "a").await.unwrap());
    assert!(!db.release_task(id, 0, "a").await.unwrap());
    // Not finalizable while b runs it; nothing to plan either.
    let nothing = IdleWork {
        finalize: false,
        plan: false,
    };
    assert_eq!(db.idle_work(2_000, None).await.unwrap(), nothing);
    assert!(db
        .claim_finalize(2_000, "f", 9_000, None)
        .await
        .unwrap()
        .is_none());
    assert!(db.renew_task(id, 0, "b", 9_000).await.unwrap());
    assert!(db.finish_task(&done, &[], "b").await.unwrap());
    let tasks = db.tasks(id).await.unwrap();
    assert_eq!(
        (tasks[0].state.as_str(), tasks[0].counts.rows),
        ("succeeded", 7)
    );
    assert_eq!(tasks[0].lease_owner, None);
    // Now one finalizer gets it, and only one.
    let finalize = IdleWork {
        finalize: true,
        plan: false,
    };
    assert_eq!(db.idle_work(2_000, None).await.unwrap(), finalize);
    assert_eq!(db.idle_work(2_000, Some(id)).await.unwrap(), finalize);
    assert_eq!(db.idle_work(2_000, Some(id + 1)).await.unwrap(), nothing);
    let queued = db.create_job(&manual(T0 + HOUR_NS, 2), 0).await.unwrap();
    assert_eq!(
        db.idle_work(2_000, None).await.unwrap(),
        IdleWork {
            finalize: true,
            plan: true
        }
    );
    assert_eq!(
        db.idle_work(2_000, Some(queued)).await.unwrap(),
        IdleWork {
            finalize: false,
            plan: true
        }
    );
    let f = db
        .claim_finalize(2_000, "f", 9_000, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.id, id);
    assert!(db
        .claim_finalize(2_001, "g", 9_000, None)
        .await
        .unwrap()
        .is_none());
    // Leased for finalizing until 9,000: not to be finalized by another.
    assert!(!db.idle_work(2_001, Some(id)).await.unwrap().finalize);
    let mut job = f.clone();
    job.state = JobState::Succeeded;
    assert!(!db.finish_job(&job, "g").await.unwrap());
    assert!(db.finish_job(&job, "f").await.unwrap());
    assert_eq!(db.job(id).await.unwrap().state, JobState::Succeeded);
}

/// A task that fails many models records every one (in statements of
/// many rows), and its next attempt's record replaces them.
async fn every_failed_model_of_a_task_is_recorded(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = b.open(&dir.path().join("jobs.db")).await;
    let id = planned(&db, 1, "planner").await;
    let failures = |n: usize, reason: &str| -> Vec<FailureRecord> {
        (0..n)
            .map(|i| FailureRecord {
                task_idx: 0,
                device: format!("d{i:04}"),
                tag: "7".into(),
                reason: reason.into(),
                detail: format!("detail of d{i:04}, with 'quotes'"),
                rows: i as u64,
            })
            .collect()
    };
    let t = db.lease_task(1, "a", 1_000, None).await.unwrap().unwrap();
    let mut first = t.clone();
    first.state = TaskState::Queued;
    first.error = Some("write failed".into());
    let many = failures(250, "no_model");
    assert!(db.finish_task(&first, &many, "a").await.unwrap());
    assert_eq!(db.failures(id).await.unwrap(), many);
    // The retry fails fewer: only its own are left.
    let t = db.lease_task(2, "b", 1_000, None).await.unwrap().unwrap();
    assert_eq!(t.attempts, 2);
    let mut second = t.clone();
    second.state = TaskState::Succeeded;
    let few = failures(3, "evaluation");
    assert!(db.finish_task(&second, &few, "b").await.unwrap());
    assert_eq!(db.failures(id).await.unwrap(), few);
}

async fn a_task_handed_back_or_retried_waits_its_turn(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = b.open(&dir.path().join("jobs.db")).await;
    let id = planned(&db, 2, "planner").await;
    let t = db.lease_task(10, "a", 1_000, None).await.unwrap().unwrap();
    assert_eq!(t.idx, 0);
    // Handed back on a stop: queued again, the attempt not counted.
    assert!(db.release_task(id, 0, "a").await.unwrap());
    let t = db.lease_task(11, "b", 1_000, None).await.unwrap().unwrap();
    assert_eq!((t.idx, t.attempts), (0, 1));
    // A failed attempt queued for a retry after t=500.
    let mut retry = t.clone();
    retry.state = TaskState::Queued;
    retry.error = Some("store down".into());
    retry.not_before = Some(500);
    assert!(db.finish_task(&retry, &[], "b").await.unwrap());
    // Task 1 comes first; task 0 only once its backoff is over.
    let t1 = db.lease_task(12, "c", 1_000, None).await.unwrap().unwrap();
    assert_eq!(t1.idx, 1);
    assert!(db
        .lease_task(499, "c", 1_000, None)
        .await
        .unwrap()
        .is_none());
    let t0 = db.lease_task(501, "c", 1_000, None).await.unwrap().unwrap();
    assert_eq!((t0.idx, t0.attempts), (0, 2));
    assert_eq!(
        db.pending(2_000).await.unwrap(),
        2,
        "two expired leases count as pending"
    );
    // A cancel cancels what is queued; running tasks end their attempt.
    db.cancel(id, 600).await.unwrap();
    assert!(db
        .lease_task(2_000, "d", 9_000, None)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        db.pending(2_000).await.unwrap(),
        0,
        "a cancelled job's expired leases are no work: nobody leases them"
    );
}

async fn concurrent_workers_never_lease_one_task_twice(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = b.open(&dir.path().join("jobs.db")).await;
    let id = planned(&db, 60, "planner").await;
    let mut all = Vec::new();
    for w in 0..6 {
        let db = Arc::clone(&db);
        all.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let owner = format!("w{w}");
            while let Some(t) = db.lease_task(10, &owner, i64::MAX, None).await.unwrap() {
                got.push(t.idx);
                let mut done = t.clone();
                done.state = TaskState::Succeeded;
                assert!(db.finish_task(&done, &[], &owner).await.unwrap());
            }
            got
        }));
    }
    let mut leased: Vec<u32> = Vec::new();
    for h in all {
        leased.extend(h.await.unwrap());
    }
    leased.sort_unstable();
    assert_eq!(leased, (0..60).collect::<Vec<_>>());
    assert!(db
        .tasks(id)
        .await
        .unwrap()
        .iter()
        .all(|t| t.state == TaskState::Succeeded && t.attempts == 1));
}

/// A worker's store (`Commits::Relaxed`) commits without waiting for the
/// disk on PostgreSQL, on every connection of its pool, and leases and
/// records tasks like any other; the default store's commits wait.
async fn a_workers_store_commits_without_waiting_for_the_disk(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = b.url(&dir.path().join("jobs.db")).await;
    let durable = SqlStore::open(&url).await.unwrap();
    let relaxed = SqlStore::open_with(&url, Commits::Relaxed).await.unwrap();
    match b {
        Backend::Sqlite => {
            // SQLite has no such setting: asking says so.
            let e = relaxed.setting("synchronous_commit").await.unwrap_err();
            assert!(matches!(e, DbError::NotPostgres(_)), "{e}");
        }
        Backend::Postgres => {
            assert_eq!(durable.setting("synchronous_commit").await.unwrap(), "on");
            // Several at once, so that the pool opens several connections.
            let all =
                futures::future::join_all((0..6).map(|_| relaxed.setting("synchronous_commit")))
                    .await;
            for v in all {
                assert_eq!(v.unwrap(), "off");
            }
        }
    }
    // Work done through the relaxed store is seen by the durable one.
    let relaxed: Arc<dyn JobStore> = Arc::new(relaxed);
    let id = planned(&relaxed, 5, "planner").await;
    while let Some(t) = relaxed.lease_task(10, "w", i64::MAX, None).await.unwrap() {
        let mut done = t.clone();
        done.state = TaskState::Succeeded;
        assert!(relaxed.finish_task(&done, &[], "w").await.unwrap());
    }
    let tasks = durable.tasks(id).await.unwrap();
    assert_eq!(tasks.len(), 5);
    assert!(tasks
        .iter()
        .all(|t| t.state == TaskState::Succeeded && t.attempts == 1));
}

async fn runners_share_a_job_and_take_over_a_vanished_workers_task(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, readings) = fleet(&dir.path().join("store"), 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let cfg = RunnerConfig {
        parallel_tasks: 1,
        lease: Duration::from_millis(300),
        ..quick()
    };
    let planner = Runner::new(db.clone(), store.clone(), clock.clone(), cfg.clone());
    let id = db.create_job(&manual(T0, 1), clock.now()).await.unwrap();
    // Plan only.
    assert_eq!(
        planner.step(Some(id)).await.unwrap(),
        fleetscore_jobs::run::Step::Planned(id)
    );
    let tasks = db.tasks(id).await.unwrap();
    // A task per pair with a model (d5, without one, goes with d4).
    assert_eq!(tasks.iter().filter(|t| !t.is_map()).count(), 6);
    assert_eq!(tasks.iter().filter(|t| t.is_map()).count(), 1);
    // Score tasks wait for the map task (the window's one raw row group).
    let first = db
        .lease_task(clock.now(), "probe", clock.now() + 1, Some(id))
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_map(), "{first:?}");
    assert!(db.release_task(id, first.idx, "probe").await.unwrap());
    assert_eq!(
        planner.step(Some(id)).await.unwrap(),
        fleetscore_jobs::run::Step::Task(id)
    );
    // A worker leases task 0 and vanishes (its lease is never renewed).
    let ghost = db
        .lease_task(clock.now(), "ghost", clock.now() + 200_000_000, Some(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ghost.idx, 0);
    // Two fresh runners (not the planner: they read the staged inputs from
    // the store) share the rest, and take task 0 over once the clock passes
    // its lease: on the runners' clock, standing still, it never ends by
    // itself.
    let r1 = Runner::new(db.clone(), store.clone(), clock.clone(), cfg.clone());
    let r2 = Runner::new(db.clone(), store.clone(), clock.clone(), cfg.clone());
    let pass_the_lease = async {
        let started = Instant::now();
        loop {
            let tasks = db.tasks(id).await.unwrap();
            if tasks.iter().all(|t| t.idx == 0 || t.state.is_final()) {
                assert_eq!(
                    (tasks[0].state, tasks[0].lease_owner.as_deref()),
                    (TaskState::Running, Some("ghost")),
                    "nobody takes a task whose lease has not ended"
                );
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{tasks:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        clock.advance(200_000_001);
    };
    let (a, b2, ()) = tokio::join!(r1.run_job(id), r2.run_job(id), pass_the_lease);
    let (a, b2) = (a.unwrap(), b2.unwrap());
    assert_eq!(a.state, JobState::Succeeded, "{a:?}");
    assert_eq!(b2.state, JobState::Succeeded);
    let tasks = db.tasks(id).await.unwrap();
    assert!(
        tasks.iter().all(|t| t.state == TaskState::Succeeded),
        "{tasks:?}"
    );
    assert_eq!(
        tasks[0].attempts, 2,
        "the vanished worker's attempt and the takeover"
    );
    // The ghost's late record is refused.
    let mut late = ghost.clone();
    late.state = TaskState::Failed;
    assert!(!db.finish_task(&late, &[], "ghost").await.unwrap());
    // Both runners worked, each task's log names who ran it.
    let mut owners = std::collections::BTreeSet::new();
    for t in &tasks {
        let log = store
            .get(&format!("logs/{id}/task-{:05}.log", t.idx))
            .await
            .unwrap()
            .unwrap();
        let log = String::from_utf8_lossy(&log).to_string();
        for o in [r1.owner(), r2.owner()] {
            if log.contains(&format!("by {o}")) {
                owners.insert(o.to_string());
            }
        }
    }
    assert_eq!(owners.len(), 2, "both runners ran tasks");
    // Every reading of a pair with a model is predicted exactly once.
    let rows = prediction_rows(&store).await;
    let mut unique = rows.clone();
    unique.dedup();
    assert_eq!(rows.len(), unique.len(), "no prediction row twice");
    // d5 has no model: its readings are not predicted.
    assert_eq!(rows.len(), readings / DEVICES * (DEVICES - 1));
    // The staged inputs are gone; the manifest lists the parts.
    assert!(store
        .list(&format!("staging/{id}/"))
        .await
        .unwrap()
        .is_empty());
    let job = db.job(id).await.unwrap();
    assert_eq!(job.counts.rows as usize, rows.len());
}

async fn sub_hour_windows_of_one_hour_keep_apart(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, readings) = fleet(&dir.path().join("store"), 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    for q in 0..4 {
        let job = NewJob {
            window_start: T0 + q * 15 * MIN,
            window_end: T0 + (q + 1) * 15 * MIN,
            ..manual(T0, 3)
        };
        db.create_job(&job, clock.now()).await.unwrap();
    }
    assert_eq!(runner.run_queued().await.unwrap().len(), 4);
    let mut manifests: Vec<String> = store
        .list("predictions/")
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.contains("/manifest-"))
        .collect();
    manifests.sort();
    assert_eq!(
        manifests,
        [
            "predictions/date=2024-01-01/hour=00/manifest-raw-15m-001500.json",
            "predictions/date=2024-01-01/hour=00/manifest-raw-15m-003000.json",
            "predictions/date=2024-01-01/hour=00/manifest-raw-15m-004500.json",
            "predictions/date=2024-01-01/hour=00/manifest-raw-15m.json",
        ]
    );
    // Each quarter's predictions are its own: together every reading of a
    // pair with a model, once.
    let rows = prediction_rows(&store).await;
    assert_eq!(rows.len(), readings / DEVICES * (DEVICES - 1));
}

/// Issue 17: a window without any reading failed every model (`no_data`)
/// and with them the job. It is skipped instead, with its reason, no
/// failed models and nothing written, whether planning sees it (no raw
/// object of the hour) or the map tasks find it (row groups that span the
/// window, none of whose readings lie in it; a selection whose pairs are
/// silent). A silent device among reporting ones stays `no_data` (see
/// the hourly test: `ghost`).
async fn a_window_without_readings_is_skipped_not_failed(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    // Readings in 00:00-01:00 only, at :00, :10, ... :50.
    let (store, _) = fleet(&dir.path().join("store"), 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 3 * HOUR_NS + 5 * MIN));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    let outputs = || async { store.list("predictions/").await.unwrap() };

    // The schedule's window 02:00-03:00: planning finds no raw object.
    let spec = hourly("hourly");
    assert!(due(&*db, &spec, clock.now()).await.unwrap());
    let out = tick(&*db, &spec, clock.now()).await.unwrap();
    assert!(!due(&*db, &spec, clock.now()).await.unwrap());
    let id = out.queued[0];
    let j = runner.run_job(id).await.unwrap();
    assert_eq!(j.state, JobState::Skipped, "{j:?}");
    assert_eq!(
        (j.window_start, j.window_end),
        (T0 + 2 * HOUR_NS, T0 + 3 * HOUR_NS)
    );
    assert_eq!(
        j.error.as_deref(),
        Some(no_readings(id, 6).as_str()),
        "d0..d4 and ghost have models"
    );
    assert!(
        j.error
            .as_deref()
            .unwrap()
            .starts_with("no readings in the window for any of its 6 models"),
        "{j:?}"
    );
    assert_eq!(
        (
            j.counts.models,
            j.counts.rows,
            j.counts.failed_models,
            j.tasks
        ),
        (6, 0, 0, 0)
    );
    assert_eq!(j.manifest, None);
    assert!(db.failures(id).await.unwrap().is_empty());
    assert!(db.tasks(id).await.unwrap().is_empty());
    assert!(outputs().await.is_empty());
    let log = store
        .get(&format!("logs/{id}/job.log"))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&log).contains("no readings in the window"));
    // A quiet fleet is not a stuck scheduler; it is no failure either.
    let stats = db.stats().await.unwrap();
    assert_eq!(stats.last_success_window_end, Some(T0 + 3 * HOUR_NS));
    assert_eq!(stats.failed_models, 0);
    // Retried, it is planned again (and, still without readings, skipped).
    db.retry(id).await.unwrap();
    assert_eq!(runner.run_job(id).await.unwrap().state, JobState::Skipped);

    // 00:01-00:09: the hour's row groups span it, but hold no reading in
    // it; the map tasks find nothing.
    let job = NewJob {
        window_start: T0 + MIN,
        window_end: T0 + 9 * MIN,
        ..manual(T0, 2)
    };
    let id = db.create_job(&job, clock.now()).await.unwrap();
    let j = runner.run_job(id).await.unwrap();
    assert_eq!(j.state, JobState::Skipped, "{j:?}");
    assert_eq!(j.error.as_deref(), Some(no_readings(id, 6).as_str()));
    assert_eq!(
        (
            j.counts.models,
            j.counts.rows,
            j.counts.failed_models,
            j.tasks
        ),
        (6, 0, 0, 3)
    );
    let tasks = db.tasks(id).await.unwrap();
    assert!(tasks.iter().any(|t| t.is_map()), "{tasks:?}");
    assert!(
        tasks.iter().all(|t| t.state == TaskState::Succeeded
            && t.counts.failed_models == 0
            && t.counts.rows == 0),
        "{tasks:?}"
    );
    assert!(db.failures(id).await.unwrap().is_empty());
    assert_eq!(j.manifest, None);
    assert!(outputs().await.is_empty(), "a skipped job writes nothing");

    // A selection of a silent pair, while the others report: nothing of
    // the job's pairs in the window.
    let mut job = manual(T0, 2);
    job.selection = Some(vec!["ghost/1".into()]);
    let id = db.create_job(&job, clock.now()).await.unwrap();
    let j = runner.run_job(id).await.unwrap();
    assert_eq!(j.state, JobState::Skipped, "{j:?}");
    assert_eq!(j.error.as_deref(), Some(no_readings(id, 1).as_str()));
    assert!(j
        .error
        .as_deref()
        .unwrap()
        .starts_with("no readings in the window for its model:"));

    // The same hour for every pair: ghost alone is silent, so no_data.
    let id = db.create_job(&manual(T0, 2), clock.now()).await.unwrap();
    let j = runner.run_job(id).await.unwrap();
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    let failures = db.failures(id).await.unwrap();
    let reasons: Vec<(&str, &str)> = failures
        .iter()
        .map(|f| (f.device.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(reasons, [("d5", "no_model"), ("ghost", "no_data")]);

    // A job that failed (its parts could not be written), retried once its
    // readings are gone: skipped, and nothing of its failed run is left.
    let root = dir.path().join("store");
    // A file where the predictions folder should be: every put fails.
    std::fs::rename(root.join("predictions"), root.join("predictions-kept")).unwrap();
    std::fs::write(root.join("predictions"), b"in the way").unwrap();
    let mut job = manual(T0, 2);
    job.max_retries = 0;
    let id = db.create_job(&job, clock.now()).await.unwrap();
    let j = runner.run_job(id).await.unwrap();
    assert_eq!(j.state, JobState::Failed, "{j:?}");
    assert!(!db.tasks(id).await.unwrap().is_empty());
    for key in store.list("raw/").await.unwrap() {
        store.delete(&key).await.unwrap();
    }
    db.retry(id).await.unwrap();
    let j = runner.run_job(id).await.unwrap();
    assert_eq!(j.state, JobState::Skipped, "{j:?}");
    assert_eq!(
        (j.counts.models, j.counts.failed_models, j.tasks),
        (6, 0, 0)
    );
    assert!(db.tasks(id).await.unwrap().is_empty());
    assert!(db.failures(id).await.unwrap().is_empty());

    // A window-input model whose pair has readings in the window but no
    // windows yet (say, they were never aggregated): not an empty window,
    // so not skipped; the pair fails `no_data` as it always did.
    std::fs::remove_file(root.join("predictions")).unwrap();
    std::fs::rename(root.join("predictions-kept"), root.join("predictions")).unwrap();
    let mut r = Readings::with_keys(&[("w0", "1")]);
    for m in 0..60 {
        r.push(T0 + HOUR_NS + m * MIN, 0, 20.0 + (m % 7) as f64);
    }
    for (k, d) in raw_objects(&r, b"w0 unwindowed").unwrap() {
        store.put(&k, d).await.unwrap();
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/sklearn/models/bare_rbf_f3.p4.pkl");
    let model = fleetscore_models::import_sklearn(&std::fs::read(path).unwrap()).unwrap();
    Registry::new(store.clone())
        .import(
            vec![ImportRequest {
                key: ModelKey::new("w0", "1").unwrap(),
                model: model.into(),
                source: "test".into(),
                input: fleetscore_store::ModelInput::Window {
                    size: "1m".into(),
                    features: vec!["mean".into(), "min".into(), "max".into()],
                },
            }],
            "t",
        )
        .await
        .unwrap();
    let mut job = NewJob {
        window_start: T0 + HOUR_NS,
        window_end: T0 + 2 * HOUR_NS,
        ..manual(T0, 2)
    };
    job.selection = Some(vec!["w0/1".into()]);
    let id = db.create_job(&job, clock.now()).await.unwrap();
    let j = runner.run_job(id).await.unwrap();
    assert_ne!(j.state, JobState::Skipped, "readings but no windows: {j:?}");
    let failures = db.failures(id).await.unwrap();
    let reasons: Vec<(&str, &str)> = failures
        .iter()
        .map(|f| (f.device.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(reasons, [("w0", "no_data")], "{j:?}");
}

async fn a_task_whose_workers_keep_vanishing_fails_after_its_attempts(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = b.open(&dir.path().join("jobs.db")).await;
    // manual() allows 2 retries: three attempts in all.
    let id = planned(&db, 1, "planner").await;
    for (n, wall) in [(1, 10), (2, 2_000), (3, 4_000)] {
        let t = db
            .lease_task(wall, &format!("w{n}"), wall + 1_000, None)
            .await
            .unwrap()
            .expect("the expired task is leased again");
        assert_eq!(t.attempts, n);
    }
    // The third worker vanished too: no fourth lease, the task failed.
    assert!(db
        .lease_task(6_000, "w4", 7_000, None)
        .await
        .unwrap()
        .is_none());
    let t = &db.tasks(id).await.unwrap()[0];
    assert_eq!(t.state, TaskState::Failed);
    assert!(
        t.error
            .as_deref()
            .unwrap()
            .contains("vanished during attempt 3"),
        "{t:?}"
    );
    // So the job can be finalized (as failed, by the runner).
    let f = db.claim_finalize(6_001, "f", 9_000, None).await.unwrap();
    assert_eq!(f.map(|j| j.id), Some(id));
}

async fn score_tasks_wait_for_the_map_tasks_and_a_failed_map_fails_the_job(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = fleet(&dir.path().join("store"), 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    let id = db.create_job(&manual(T0, 2), clock.now()).await.unwrap();
    assert_eq!(
        runner.step(Some(id)).await.unwrap(),
        fleetscore_jobs::run::Step::Planned(id)
    );
    let tasks = db.tasks(id).await.unwrap();
    let maps: Vec<&TaskRecord> = tasks.iter().filter(|t| t.is_map()).collect();
    assert_eq!(maps.len(), 1, "{tasks:?}");
    assert_eq!(db.job(id).await.unwrap().tasks, 3, "score tasks only");
    // The map task's raw object vanishes before it runs: the map fails
    // after its attempts, the score tasks never run, and the job fails
    // saying why.
    store.delete(&maps[0].first_key).await.unwrap();
    let job = runner.run_job(id).await.unwrap();
    assert_eq!(job.state, JobState::Failed);
    let err = job.error.clone().unwrap();
    assert!(
        err.contains("reading the window failed: map task 3")
            && err.contains("is gone from the store")
            && err.contains("retry the job"),
        "{err}"
    );
    let tasks = db.tasks(id).await.unwrap();
    for t in &tasks {
        if t.is_map() {
            assert_eq!((t.state.as_str(), t.attempts), ("failed", 3), "{t:?}");
        } else {
            assert_eq!((t.state.as_str(), t.attempts), ("cancelled", 0), "{t:?}");
        }
    }
    assert!(store
        .list(&format!("staging/{id}/"))
        .await
        .unwrap()
        .is_empty());
}

async fn a_raw_object_rewritten_after_planning_fails_its_map_saying_so(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = fleet(&dir.path().join("store"), 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    // The map task reads the object by range (footer, then its row
    // groups), of the version planned: rewritten since, with the same
    // bytes (another version of the same size) or shorter, it refuses.
    for (how, why) in [
        ("same size", "replaced since it was listed"),
        ("shorter", ""),
    ] {
        let id = db.create_job(&manual(T0, 2), clock.now()).await.unwrap();
        assert_eq!(
            runner.step(Some(id)).await.unwrap(),
            fleetscore_jobs::run::Step::Planned(id)
        );
        let tasks = db.tasks(id).await.unwrap();
        let map = tasks.iter().find(|t| t.is_map()).unwrap();
        let key = map.first_key.clone();
        let data = store.get(&key).await.unwrap().unwrap();
        let again = if how == "shorter" {
            data.slice(..data.len() / 2)
        } else {
            data.clone()
        };
        store.put(&key, again).await.unwrap();
        let job = runner.run_job(id).await.unwrap();
        assert_eq!(job.state, JobState::Failed, "{how}");
        let err = job.error.clone().unwrap();
        assert!(
            err.contains("reading the window failed")
                && err.contains("changed since the job was planned")
                && err.contains(why)
                && err.contains("retry the job"),
            "{how}: {err}"
        );
        store.put(&key, data).await.unwrap();
    }
}

async fn a_broken_raw_object_fails_planning_naming_it(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = fleet(&dir.path().join("store"), 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    let first = store.list("raw/").await.unwrap()[0].clone();
    let folder = &first[..first.rfind('/').unwrap() + 1];
    for (name, data) in [
        ("part-zz-short.parquet", &b"PAR1"[..]),
        (
            "part-zz-text.parquet",
            &b"these are not the bytes of a Parquet file"[..],
        ),
    ] {
        let key = format!("{folder}{name}");
        store.put(&key, data.to_vec()).await.unwrap();
        let id = db.create_job(&manual(T0, 2), clock.now()).await.unwrap();
        let job = runner.run_job(id).await.unwrap();
        assert_eq!(job.state, JobState::Failed, "{name}");
        let err = job.error.clone().unwrap();
        assert!(err.contains(&key), "{name}: {err}");
        store.delete(&key).await.unwrap();
    }
}

async fn pairs_with_readings_but_no_model_are_found_by_the_map_tasks(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = fleet(&dir.path().join("store"), 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    let reasons = |f: Vec<fleetscore_jobs::db::FailureRecord>| -> Vec<(String, String)> {
        f.into_iter().map(|f| (f.device, f.reason)).collect()
    };
    // A selection: d1 (a model), d5 (readings, no model), nobody (neither).
    let mut job = manual(T0, 2);
    job.selection = Some(vec!["d1/1".into(), "d5/1".into(), "nobody/1".into()]);
    let id = db.create_job(&job, clock.now()).await.unwrap();
    let j = runner.run_job(id).await.unwrap();
    assert_eq!(
        (
            j.counts.models,
            j.counts.failed_models,
            j.counts.rows,
            j.tasks
        ),
        (2, 1, 6, 1),
        "{j:?}"
    );
    assert_eq!(
        reasons(db.failures(id).await.unwrap()),
        [("d5".to_string(), "no_model".to_string())]
    );
    let rows = prediction_rows(&store).await;
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|(d, _, _)| d == "d1"), "{rows:?}");

    // Readings and no model at all: one task holds what the map tasks find.
    let bare = Store::open(dir.path().join("bare").to_str().unwrap()).unwrap();
    put_readings(&bare, 2).await;
    let runner = Runner::new(db.clone(), bare.clone(), clock.clone(), quick());
    let id = db
        .create_job(&manual(T0 + HOUR_NS, 4), clock.now())
        .await
        .unwrap();
    let j = runner.run_job(id).await.unwrap();
    assert_eq!(
        (
            j.counts.models,
            j.counts.failed_models,
            j.counts.rows,
            j.tasks
        ),
        (6, 6, 0, 1),
        "{j:?}"
    );
    let failed = reasons(db.failures(id).await.unwrap());
    let expected: Vec<(String, String)> = (0..DEVICES)
        .map(|d| (format!("d{d}"), "no_model".to_string()))
        .collect();
    assert_eq!(failed, expected);
    // No readings in the window (the hour after them): nothing to read.
    let id = db
        .create_job(&manual(T0 + 2 * HOUR_NS, 4), clock.now())
        .await
        .unwrap();
    let j = runner.run_job(id).await.unwrap();
    assert_eq!((j.counts.models, j.tasks), (0, 0), "{j:?}");
    assert!(db.tasks(id).await.unwrap().is_empty());
}

async fn a_runner_that_kept_an_old_plan_reads_the_new_one(b: Backend) {
    use fleetscore_jobs::run::Step;
    let dir = tempfile::tempdir().unwrap();
    let (store, readings) = fleet(&dir.path().join("store"), 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let a = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    let other = Runner::new(db.clone(), store.clone(), clock.clone(), quick());
    let id = db.create_job(&manual(T0, 2), clock.now()).await.unwrap();
    // `a` plans the job (and keeps the plan in memory); the job is then
    // cancelled and queued again, and `other` plans it anew (the same
    // tasks under another plan) and runs its map task.
    assert_eq!(a.step(Some(id)).await.unwrap(), Step::Planned(id));
    let plan_of = |tasks: &[TaskRecord]| {
        let ids: std::collections::BTreeSet<Option<String>> =
            tasks.iter().map(|t| t.plan_id.clone()).collect();
        assert_eq!(ids.len(), 1, "one plan for all tasks: {tasks:?}");
        ids.into_iter()
            .next()
            .unwrap()
            .expect("tasks name their plan")
    };
    let first = plan_of(&db.tasks(id).await.unwrap());
    let staged = format!("staging/{id}/");
    assert_eq!(
        store.list(&staged).await.unwrap(),
        vec![format!("staging/{id}/{first}/plan.json")]
    );
    // A cancel (the API's and the CLI's) drops what the job staged.
    db.cancel(id, clock.now()).await.unwrap();
    assert_eq!(
        fleetscore_jobs::run::drop_staging(&store, id)
            .await
            .unwrap(),
        1
    );
    assert!(store.list(&staged).await.unwrap().is_empty());
    db.retry(id).await.unwrap();
    assert_eq!(other.step(Some(id)).await.unwrap(), Step::Planned(id));
    assert_eq!(other.step(Some(id)).await.unwrap(), Step::Task(id));
    // The new plan has its own name and folder: nothing of the first
    // (a late writer of it) could overwrite what its tasks read.
    let second = plan_of(&db.tasks(id).await.unwrap());
    assert_ne!(first, second);
    let keys = store.list(&staged).await.unwrap();
    assert!(
        keys.iter()
            .all(|k| k.starts_with(&format!("staging/{id}/{second}/"))),
        "{keys:?}"
    );
    // `a` runs the score tasks: its tasks name the new plan, which it
    // reads instead of the one it kept.
    let job = a.run_job(id).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let tasks = db.tasks(id).await.unwrap();
    assert!(
        tasks
            .iter()
            .all(|t| t.state == TaskState::Succeeded && t.attempts == 1),
        "{tasks:?}"
    );
    let rows = prediction_rows(&store).await;
    assert_eq!(rows.len(), readings / DEVICES * (DEVICES - 1));
}

async fn idle_workers_wake_when_work_is_announced(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, readings) = fleet(&dir.path().join("store"), 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let wake = match b {
        Backend::Sqlite => {
            let e = fleetscore_jobs::db::listen_for_work(db.url())
                .await
                .unwrap_err();
            assert!(e.to_string().contains("workers on SQLite poll"), "{e}");
            return;
        }
        Backend::Postgres => fleetscore_jobs::db::listen_for_work(db.url())
            .await
            .unwrap(),
    };
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    // A poll far longer than the test: only an announcement wakes it.
    let cfg = RunnerConfig {
        poll: Duration::from_secs(60),
        ..quick()
    };
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), cfg).with_wake(wake);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = {
        let r = runner.clone();
        tokio::spawn(async move { r.work(stopped, Duration::from_secs(5)).await })
    };
    // The worker found nothing and waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = std::time::Instant::now();
    let id = db.create_job(&manual(T0, 2), clock.now()).await.unwrap();
    loop {
        let j = db.job(id).await.unwrap();
        if j.state.is_final() {
            assert_eq!(j.state, JobState::Succeeded, "{j:?}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the idle worker did not wake for the new job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = prediction_rows(&store).await;
    assert_eq!(rows.len(), readings / DEVICES * (DEVICES - 1));
    // A stop ends it at once (not after a slot's poll).
    stop.send(true).unwrap();
    let t = std::time::Instant::now();
    worker.await.unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// Lease expiry driven by the clock: a worker's lease ends when the clock
/// passes it, not when time passes; a renewal before then moves its end
/// (on the clock); once the clock passes that, another worker takes the
/// task over, and the first can neither renew nor record it.
async fn a_lease_expires_on_the_clock_and_a_renewal_before_expiry_keeps_it(b: Backend) {
    const SEC: i64 = 1_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let db = b.open(&dir.path().join("jobs.db")).await;
    let id = planned(&db, 1, "planner").await;
    let clock = Arc::new(ManualClock::new(T0));
    let a = Leases::new(clock.clone(), "a", Duration::from_secs(30));
    let b_ = Leases::new(clock.clone(), "b", Duration::from_secs(30));
    let take = |l: &Leases| {
        let (db, l) = (Arc::clone(&db), l.clone());
        async move {
            db.lease_task(l.now(), l.owner(), l.until(), None)
                .await
                .unwrap()
        }
    };
    let t = take(&a).await.expect("a takes the task");
    assert_eq!(
        (t.lease_owner.as_deref(), t.lease_until),
        (Some("a"), Some(T0 + 30 * SEC))
    );
    let task = Held::Task { job: id, idx: 0 };
    // 20 s on: a renews, its lease now ends at 50 s.
    clock.advance(20 * SEC);
    assert!(a.renew(&*db, task).await.unwrap());
    assert_eq!(
        db.tasks(id).await.unwrap()[0].lease_until,
        Some(T0 + 50 * SEC)
    );
    // 40 s: past the first lease, within the renewed one.
    clock.advance(20 * SEC);
    assert!(take(&b_).await.is_none(), "the renewal keeps it");
    assert_eq!(db.pending(clock.now()).await.unwrap(), 0);
    // 51 s: a said nothing since; its lease is over.
    clock.advance(11 * SEC);
    assert_eq!(db.pending(clock.now()).await.unwrap(), 1);
    let t = take(&b_).await.expect("b takes the task over");
    assert_eq!((t.attempts, t.lease_owner.as_deref()), (2, Some("b")));
    assert_eq!(t.lease_until, Some(T0 + 81 * SEC));
    assert!(!a.renew(&*db, task).await.unwrap(), "a lost it");
    let mut late = t.clone();
    late.state = TaskState::Succeeded;
    assert!(!db.finish_task(&late, &[], "a").await.unwrap());
    assert!(b_.renew(&*db, task).await.unwrap());
    assert!(db.finish_task(&late, &[], "b").await.unwrap());
}

/// A worker's renewer keeps renewing on the clock while it works; once the
/// worker vanishes (its renewer stops), the clock passes the last renewal
/// and another worker takes over; a renewer that finds its lease gone
/// says so.
async fn a_renewer_keeps_a_lease_on_the_clock_until_its_holder_vanishes(b: Backend) {
    const MS: i64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let db = b.open(&dir.path().join("jobs.db")).await;
    let id = planned(&db, 1, "planner").await;
    let clock = Arc::new(ManualClock::new(T0));
    // Renewed every 100 ms (a third of the lease) of real time.
    let a = Leases::new(clock.clone(), "a", Duration::from_millis(300));
    let other = Leases::new(clock.clone(), "b", Duration::from_millis(300));
    let lease_until = || async { db.tasks(id).await.unwrap()[0].lease_until };
    let t = db
        .lease_task(a.now(), a.owner(), a.until(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.lease_until, Some(T0 + 300 * MS));
    let task = Held::Task { job: id, idx: 0 };
    let renewer = a.keep(Arc::clone(&db), task);
    clock.advance(250 * MS);
    // A renewal reads the clock: the lease now ends 300 ms after 250 ms.
    let started = Instant::now();
    while lease_until().await != Some(T0 + 550 * MS) {
        assert!(started.elapsed() < Duration::from_secs(20), "never renewed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clock.advance(200 * MS);
    assert!(
        db.lease_task(other.now(), other.owner(), other.until(), None)
            .await
            .unwrap()
            .is_none(),
        "past the first lease, within the renewed one"
    );
    assert!(!renewer.lost());
    // The worker vanishes; the clock passes its last renewal.
    drop(renewer);
    tokio::time::sleep(Duration::from_millis(150)).await;
    clock.advance(200 * MS);
    let t = db
        .lease_task(other.now(), other.owner(), other.until(), None)
        .await
        .unwrap()
        .expect("taken over");
    assert_eq!((t.attempts, t.lease_owner.as_deref()), (2, Some("b")));
    // Had a's renewer still run, it would find the lease gone.
    let renewer = a.keep(Arc::clone(&db), task);
    let started = Instant::now();
    while !renewer.lost() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the loss went unseen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A failed attempt's retry waits its backoff on the runner's clock:
/// nothing to run until the clock passes it, however long one waits.
async fn a_retry_waits_its_backoff_on_the_clock(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (store, _) = fleet(&root, 1).await;
    let db = b.open(&dir.path().join("jobs.db")).await;
    let clock = Arc::new(ManualClock::new(T0 + 2 * HOUR_NS));
    let cfg = RunnerConfig {
        parallel_tasks: 1,
        retry_backoff: Duration::from_secs(3600),
        ..quick()
    };
    let runner = Runner::new(db.clone(), store.clone(), clock.clone(), cfg);
    // A file where the predictions folder should be: every put fails.
    std::fs::write(root.join("predictions"), b"in the way").unwrap();
    let id = db.create_job(&manual(T0, 100), clock.now()).await.unwrap();
    assert_eq!(runner.step(Some(id)).await.unwrap(), Step::Planned(id));
    // The map task, then the one score task's first attempt, which fails.
    assert_eq!(runner.step(Some(id)).await.unwrap(), Step::Task(id));
    assert_eq!(runner.step(Some(id)).await.unwrap(), Step::Task(id));
    let score = db
        .tasks(id)
        .await
        .unwrap()
        .into_iter()
        .find(|t| !t.is_map())
        .unwrap();
    assert_eq!((score.state, score.attempts), (TaskState::Queued, 1));
    assert_eq!(score.not_before, Some(clock.now() + HOUR_NS));
    assert_eq!(db.next_retry().await.unwrap(), score.not_before);
    tokio::time::sleep(Duration::from_millis(100)).await;
    clock.advance(HOUR_NS - 1);
    assert_eq!(runner.step(Some(id)).await.unwrap(), Step::Idle, "not yet");
    clock.advance(1);
    std::fs::remove_file(root.join("predictions")).unwrap();
    assert_eq!(runner.step(Some(id)).await.unwrap(), Step::Task(id));
    let score = db
        .tasks(id)
        .await
        .unwrap()
        .into_iter()
        .find(|t| !t.is_map())
        .unwrap();
    assert_eq!((score.state, score.attempts), (TaskState::Succeeded, 2));
    assert_eq!(runner.run_job(id).await.unwrap().state, JobState::Succeeded);
}

/// Planning reads the model index again only when it changed (by its
/// version in the store): a second read hands out the same parsed index,
/// clones share it, and an import by anyone is seen at the next read.
#[tokio::test]
async fn the_planners_model_index_is_parsed_again_only_when_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("store");
    for url in [local.to_str().unwrap(), "memory://"] {
        let store = Store::open(url).unwrap();
        let registry = Registry::new(store.clone());
        let request = |d: &str| ImportRequest {
            key: ModelKey::new(d, "1").unwrap(),
            model: demo_model(1).into(),
            source: "test".into(),
            input: Default::default(),
        };
        assert!(
            registry.index_shared().await.unwrap().models.is_empty(),
            "{url}"
        );
        registry
            .import(vec![request("d0")], "2024-01-01T00:00:00Z")
            .await
            .unwrap();
        let first = registry.index_shared().await.unwrap();
        assert_eq!(first.models.len(), 1, "{url}");
        let again = registry.index_shared().await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "{url}: unchanged, yet parsed again"
        );
        let by_clone = registry.clone().index_shared().await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &by_clone),
            "{url}: a clone parsed it again"
        );
        // Another process (here another registry on the store) imports.
        Registry::new(store.clone())
            .import(vec![request("d1")], "2024-01-01T00:00:01Z")
            .await
            .unwrap();
        let changed = registry.index_shared().await.unwrap();
        assert_eq!(changed.models.len(), 2, "{url}: the import was missed");
        assert!(changed.generation > first.generation, "{url}");
        assert_eq!(*changed, registry.index().await.unwrap(), "{url}");
    }
}

on_both!(
    a_day_of_hourly_schedule_with_a_restart_scores_each_hour_once,
    downtime_is_caught_up_oldest_first_and_the_rest_recorded_as_skipped,
    failing_writes_are_retried_then_fail_the_job_and_a_retry_then_succeeds,
    a_rerun_with_fewer_tasks_overwrites_and_removes_stale_parts,
    forbid_runs_a_schedules_jobs_one_at_a_time_allow_does_not,
    window_input_models_score_each_window_on_its_named_features,
    leases_expire_and_pass_to_another_worker_whose_record_wins,
    a_task_handed_back_or_retried_waits_its_turn,
    every_failed_model_of_a_task_is_recorded,
    concurrent_workers_never_lease_one_task_twice,
    a_workers_store_commits_without_waiting_for_the_disk,
    runners_share_a_job_and_take_over_a_vanished_workers_task,
    sub_hour_windows_of_one_hour_keep_apart,
    a_window_without_readings_is_skipped_not_failed,
    a_task_whose_workers_keep_vanishing_fails_after_its_attempts,
    score_tasks_wait_for_the_map_tasks_and_a_failed_map_fails_the_job,
    a_runner_that_kept_an_old_plan_reads_the_new_one,
    pairs_with_readings_but_no_model_are_found_by_the_map_tasks,
    a_raw_object_rewritten_after_planning_fails_its_map_saying_so,
    a_broken_raw_object_fails_planning_naming_it,
    idle_workers_wake_when_work_is_announced,
    a_lease_expires_on_the_clock_and_a_renewal_before_expiry_keeps_it,
    a_renewer_keeps_a_lease_on_the_clock_until_its_holder_vanishes,
    a_retry_waits_its_backoff_on_the_clock,
);
