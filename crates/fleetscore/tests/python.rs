//! The opt-in Python runtime end to end: models registered with
//! `--runtime python` scored by jobs through real CPython workers, faults
//! contained to their model, no process left behind, and no Python at all
//! when the deployment does not enable it.
//!
//! The interpreter is the virtualenv of `crates/python/tests/requirements.txt`
//! that `.ci/run` makes (or `FLEETSCORE_TEST_PYTHON`), so these tests are
//! ignored by a plain `cargo test`, except the one that needs no Python.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, predictions, run, text};

fn interpreter() -> PathBuf {
    match std::env::var_os("FLEETSCORE_TEST_PYTHON") {
        Some(p) => p.into(),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/fleetscore-ci/pyrt-venv/bin/python"),
    }
}

fn models_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/tests/models")
}

/// The models each device gets, and how: (device, model file, runtime).
const FLEET: [(&str, &str, &str); 9] = [
    ("d0", "log1p_iforest", "python"),
    ("d1", "custom_clip_svm", "python"),
    ("d2", "lightgbm_regressor", "python"),
    ("d3", "native_svm", "native"),
    ("d4", "native_svm", "python"),
    ("d5", "misbehaves_raise", "python"),
    ("d6", "misbehaves_sleep", "python"),
    ("d7", "misbehaves_hog", "python"),
    ("d8", "misbehaves_exit", "python"),
];

const READINGS: usize = 60;

/// One hour of readings per device, one a minute (a sine, spikes, a zero);
/// d3 and d4 (one model, native and in Python) get the same.
fn readings(device: usize) -> Vec<(String, f64)> {
    let device = if device == 4 { 3 } else { device };
    (0..READINGS)
        .map(|i| {
            let spike = if (i + device) % 17 == 0 { 30.0 } else { 0.0 };
            let v = if i == 7 {
                0.0
            } else {
                20.0 + 5.0 * ((i + 3 * device) as f64 / 5.0).sin() + spike
            };
            (format!("2024-05-01 08:{i:02}:00"), v)
        })
        .collect()
}

/// A deployment in a temp dir: readings ingested, the test models built
/// by the interpreter under test, a config enabling the runtime with a
/// `path` entry unique to this deployment (so its worker processes can be
/// found by their environment).
struct Deployment {
    dir: tempfile::TempDir,
    models: PathBuf,
    config: PathBuf,
    marker: PathBuf,
}

impl Deployment {
    fn new(enabled: bool, interpreter: &Path) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let out = Command::new(interpreter)
            .arg(models_src().join("make.py"))
            .arg(&models)
            .output()
            .expect("running the test interpreter (FLEETSCORE_TEST_PYTHON)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A copy of the team's module in a folder only this deployment uses.
        let marker = dir.path().join("teamlib");
        std::fs::create_dir_all(&marker).unwrap();
        std::fs::copy(models_src().join("teamcode.py"), marker.join("teamcode.py")).unwrap();
        let config = dir.path().join("fleetscore.toml");
        std::fs::write(
            &config,
            format!(
                "[python]\nenabled = {enabled}\ninterpreter = {:?}\npath = [{:?}]\nworkers = 2\n\
                 timeout = \"4s\"\nmemory_limit = 2147483648\n",
                interpreter.display().to_string(),
                marker.display().to_string()
            ),
        )
        .unwrap();
        let mut csv = String::from("TS,Device,Tag,Value\n");
        for d in 0..FLEET.len() {
            for (ts, v) in readings(d) {
                csv += &format!("{ts},d{d},t,{v}\n");
            }
        }
        let file = dir.path().join("readings.csv");
        std::fs::write(&file, csv).unwrap();
        let o = run(dir.path(), &["ingest", file.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        Deployment {
            dir,
            models,
            config,
            marker,
        }
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    /// `fleetscore --config … ARGS`.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        run(self.data(), &all)
    }

    fn import(&self, device: &str, model: &str, runtime: &str) {
        let file = self.models.join(format!("{model}.pkl"));
        let o = self.run(&[
            "models",
            "import",
            file.to_str().unwrap(),
            "--device",
            device,
            "--tag",
            "t",
            "--runtime",
            runtime,
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }

    /// Worker processes of this deployment alive now (found by the
    /// `PYTHONPATH` entry only it uses).
    fn python_processes(&self) -> Vec<u32> {
        let needle = self.marker.to_str().unwrap().as_bytes();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            let zombie =
                std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| s.contains(") Z "));
            if !zombie && env.windows(needle.len()).any(|w| w == needle) {
                out.push(pid);
            }
        }
        out
    }

    fn wait_for_python(&self, timeout: Duration) -> Vec<u32> {
        let t = Instant::now();
        loop {
            let p = self.python_processes();
            if !p.is_empty() || t.elapsed() > timeout {
                return p;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_no_python(&self, timeout: Duration) -> Vec<u32> {
        let t = Instant::now();
        loop {
            let p = self.python_processes();
            if p.is_empty() || t.elapsed() > timeout {
                return p;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the models give when run directly on each device's readings,
    /// by device.
    fn direct(&self) -> serde_json::Value {
        let rows: BTreeMap<&str, serde_json::Value> = FLEET
            .iter()
            .enumerate()
            .filter(|(_, (_, m, _))| !m.starts_with("misbehaves"))
            .map(|(d, (device, m, _))| {
                let values: Vec<f64> = readings(d).into_iter().map(|(_, v)| v).collect();
                (*device, serde_json::json!({"model": m, "rows": values}))
            })
            .collect();
        let file = self.data().join("rows.json");
        std::fs::write(&file, serde_json::to_vec(&rows).unwrap()).unwrap();
        let out = Command::new(interpreter())
            .arg(models_src().join("make.py"))
            .arg("--predict")
            .arg(&self.models)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Deployment {
    /// A deployment whose `devices` have a model that sleeps for an hour
    /// (under a limit of an hour), and a job of the hour queued in a
    /// SQLite job store; returns it with the store's URL.
    fn sleeping(devices: &[&str]) -> (Deployment, String) {
        let d = Deployment::new(true, &interpreter());
        let config = std::fs::read_to_string(&d.config).unwrap();
        std::fs::write(
            &d.config,
            config.replace("timeout = \"4s\"", "timeout = \"1h\""),
        )
        .unwrap();
        for device in devices {
            d.import(device, "misbehaves_sleep", "python");
        }
        let db = format!("sqlite://{}", d.data().join("jobs.db").display());
        let o = d.run(&[&["--db", db.as_str()][..], &HOUR[..5], &["--queue"]].concat());
        assert!(o.status.success(), "{}", text(&o));
        (d, db)
    }
}

fn import_fleet(d: &Deployment) {
    for (device, model, runtime) in FLEET {
        d.import(device, model, runtime);
    }
}

const HOUR: [&str; 6] = [
    "backfill",
    "--from",
    "2024-05-01 08:00:00",
    "--to",
    "2024-05-01 09:00:00",
    "--max-failed-models",
];

/// (device) → [(ts, prediction, score)] in time order.
fn by_device(store: &Path) -> BTreeMap<String, Vec<(i64, i32, f64)>> {
    let mut out: BTreeMap<String, Vec<(i64, i32, f64)>> = BTreeMap::new();
    for ((ts, device, _), (p, s)) in predictions(store) {
        out.entry(device).or_default().push((ts, p, s));
    }
    for v in out.values_mut() {
        v.sort_by_key(|r| r.0);
    }
    out
}

#[test]
#[ignore = "needs the Python runtime's virtualenv (.ci/run)"]
fn python_models_score_in_jobs_as_in_python_and_faults_fail_only_their_model() {
    let d = Deployment::new(true, &interpreter());
    // Without --runtime python, the native reader's refusal says how to
    // opt in, and what that means.
    let custom = d.models.join("custom_clip_svm.pkl");
    let o = d.run(&[
        "models",
        "import",
        custom.to_str().unwrap(),
        "--device",
        "d1",
        "--tag",
        "t",
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("--runtime python") && t.contains("its code will then be executed"),
        "{t}"
    );
    import_fleet(&d);
    let o = d.run(&["models", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runtimes: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let live = e["versions"].as_array().unwrap().last().unwrap();
            (
                e["device"].as_str().unwrap(),
                live["runtime"].as_str().unwrap_or("native"),
            )
        })
        .collect();
    assert_eq!(runtimes[3], ("d3", "native"));
    assert_eq!(runtimes[4], ("d4", "python"));
    let o = d.run(&["models", "show", "d0", "t"]);
    assert!(text(&o).contains("runtime: python"), "{}", text(&o));
    assert!(d.python_processes().is_empty(), "importing runs no Python");

    let o = d.run(&[&HOUR[..], &["4"]].concat());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        d.wait_for_no_python(Duration::from_secs(5)).is_empty(),
        "no worker process outlives the job"
    );

    // The scored models: as the same code gives when run directly.
    let direct = d.direct();
    let got = by_device(&d.data().join("store"));
    for (i, (device, model, _)) in FLEET.iter().enumerate().take(5) {
        let rows = &got[*device];
        assert_eq!(rows.len(), READINGS, "{device}: every reading once");
        let want = &direct[*device];
        for (r, (row, (s, l))) in rows
            .iter()
            .zip(
                want["score"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(want["label"].as_array().unwrap()),
            )
            .enumerate()
        {
            let s = s.as_f64().unwrap();
            if *device == "d3" {
                // Native: exact to scikit-learn's tolerance.
                assert!(
                    (row.2 - s).abs() <= 1e-9,
                    "{device} row {r}: {} vs {s}",
                    row.2
                );
            } else {
                assert_eq!(
                    row.2.to_bits(),
                    s.to_bits(),
                    "{device} row {r} ({model}): {} vs {s}",
                    row.2
                );
            }
            if want["kind"] == "outlier" {
                assert_eq!(row.1 as u64, l.as_u64().unwrap(), "{device} row {r} label");
            }
        }
        let _ = i;
    }
    // The same file, native and in Python: equal within 1e-12.
    for (n, p) in got["d3"].iter().zip(&got["d4"]) {
        assert_eq!(n.1, p.1, "labels at {}", n.0);
        assert!(
            (n.2 - p.2).abs() <= 1e-12,
            "at {}: native {} python {}",
            n.0,
            n.2,
            p.2
        );
    }
    // The misbehaving ones: failed, each with its reason, no rows.
    for device in ["d5", "d6", "d7", "d8"] {
        assert!(!got.contains_key(device), "{device} has predictions");
    }
    let o = d.run(&["jobs", "list", "--json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = jobs[0]["id"].as_i64().unwrap().to_string();
    let o = d.run(&["jobs", "show", &id, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reasons: BTreeMap<&str, (&str, &str)> = shown["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["device"].as_str().unwrap(),
                (f["reason"].as_str().unwrap(), f["detail"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons.values().all(|(r, _)| *r == "python"), "{reasons:?}");
    assert!(
        reasons["d5"]
            .1
            .contains("ValueError: sensor calibration table missing"),
        "{reasons:?}"
    );
    assert!(
        reasons["d6"].1.contains("wall-clock limit of 4s"),
        "{reasons:?}"
    );
    assert!(
        reasons["d7"].1.contains("MemoryError") && reasons["d7"].1.contains("memory_limit"),
        "{reasons:?}"
    );
    assert!(
        reasons["d8"].1.contains("died") && reasons["d8"].1.contains("exit code 3"),
        "{reasons:?}"
    );
}

/// With `[python] enabled = false` (the default), no Python process is
/// ever started, whatever is registered: the interpreter configured is a
/// script that leaves a mark when run, and none is left. Needs no Python.
#[test]
fn a_deployment_without_python_starts_no_python_process() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("python-ran");
    let fake = dir.path().join("python");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch {}\nexit 1\n", mark.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = dir.path().join("fleetscore.toml");
    std::fs::write(
        &config,
        format!(
            "[python]\nenabled = false\ninterpreter = {:?}\n",
            fake.display().to_string()
        ),
    )
    .unwrap();
    let data = dir.path();
    let mut csv = String::from("TS,Device,Tag,Value\n");
    for i in 0..30 {
        csv += &format!("2024-05-01 08:{i:02}:00,d0,t,{}\n", 20 + i % 3);
    }
    std::fs::write(data.join("r.csv"), csv).unwrap();
    let o = run(data, &["ingest", data.join("r.csv").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // Any file: registering a Python model never reads it.
    std::fs::write(data.join("model.pkl"), b"\x80\x04not even a pickle").unwrap();
    let cfg = config.to_str().unwrap();
    let o = run(
        data,
        &[
            "--config",
            cfg,
            "models",
            "import",
            data.join("model.pkl").to_str().unwrap(),
            "--device",
            "d0",
            "--tag",
            "t",
            "--runtime",
            "python",
            "--kind",
            "outlier",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        data,
        &[
            "--config",
            cfg,
            "backfill",
            "--from",
            "2024-05-01 08:00:00",
            "--to",
            "2024-05-01 09:00:00",
            "--json",
        ],
    );
    let t = text(&o);
    // The model fails `python_disabled` (1 of 1 failed: the job fails).
    assert!(t.contains("python_disabled") || !o.status.success(), "{t}");
    let o = run(data, &["--config", cfg, "jobs", "show", "1", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = &shown["failures"][0];
    assert_eq!(f["reason"], "python_disabled", "{shown}");
    assert!(
        f["detail"]
            .as_str()
            .unwrap()
            .contains("[python] enabled = true"),
        "{f}"
    );
    // `score` of the same readings: the same.
    let o = run(
        data,
        &[
            "--config",
            cfg,
            "score",
            "--from",
            "2024-05-01 08:00:00",
            "--to",
            "2024-05-01 09:00:00",
            "--out",
            data.join("out").to_str().unwrap(),
        ],
    );
    assert!(
        text(&o).contains("does not run Python models"),
        "{}",
        text(&o)
    );
    assert!(!mark.exists(), "a Python process was started");
}

/// Kills `pid` with `signal`.
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: sending a signal to a process this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

#[test]
#[ignore = "needs the Python runtime's virtualenv (.ci/run)"]
fn a_sigkilled_worker_takes_its_python_processes_with_it() {
    // Models that sleep for an hour, so the workers are busy when the
    // fleetscore worker is killed (the limit is longer than the test).
    let (d, db) = Deployment::sleeping(&["d0", "d1"]);
    let mut worker = bin()
        .arg("--data")
        .arg(d.data())
        .args([
            "--quiet",
            "--config",
            d.config.to_str().unwrap(),
            "--db",
            &db,
        ])
        .args(["worker", "--slots", "2", "--poll", "100ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let busy = d.wait_for_python(Duration::from_secs(60));
    assert!(!busy.is_empty(), "the worker started no Python process");
    worker.kill().unwrap();
    worker.wait().unwrap();
    let left = d.wait_for_no_python(Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "worker processes outlived a SIGKILLed fleetscore worker: {left:?}"
    );
}

#[test]
#[ignore = "needs the Python runtime's virtualenv (.ci/run)"]
fn serve_stopped_by_sigterm_leaves_no_python_process() {
    let (d, db) = Deployment::sleeping(&["d0"]);
    let mut cmd = bin();
    cmd.args([
        "--quiet",
        "--config",
        d.config.to_str().unwrap(),
        "--db",
        &db,
    ]);
    let server = common::Server::start_with(cmd, d.data(), &[]);
    let busy = d.wait_for_python(Duration::from_secs(60));
    assert!(!busy.is_empty(), "serve started no Python process");
    let pid = server.child.id();
    signal(pid, libc::SIGTERM);
    let t = Instant::now();
    let left = d.wait_for_no_python(Duration::from_secs(40));
    assert!(left.is_empty(), "worker processes outlived serve: {left:?}");
    server.crash();
    eprintln!("no Python process left {:?} after SIGTERM", t.elapsed());
}
