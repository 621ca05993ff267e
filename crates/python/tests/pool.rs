//! The pool against a real CPython with scikit-learn and LightGBM (the
//! virtualenv of `requirements.txt`, which `.ci/run` makes). Ignored by a
//! plain `cargo test`; `FLEETSCORE_TEST_PYTHON` names the interpreter
//! (default: the virtualenv `.ci/run` caches).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetscore_models::Kind;
use fleetscore_python::{Call, CallError, Loader, ModelFile, ModelRef, Pool, PythonConfig};

fn interpreter() -> PathBuf {
    match std::env::var_os("FLEETSCORE_TEST_PYTHON") {
        Some(p) => p.into(),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/fleetscore-ci/pyrt-venv/bin/python"),
    }
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

/// Builds the test models with the interpreter under test.
fn make_models() -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(interpreter())
        .arg(models_dir().join("make.py"))
        .arg(dir.path())
        .output()
        .expect("running the interpreter (see FLEETSCORE_TEST_PYTHON)");
    assert!(
        out.status.success(),
        "make.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = std::fs::read(dir.path().join("expected.json")).unwrap();
    (dir, serde_json::from_slice(&expected).unwrap())
}

fn config() -> PythonConfig {
    PythonConfig {
        interpreter: interpreter(),
        path: vec![models_dir()],
        workers: 2,
        timeout: Duration::from_secs(5),
        memory_limit: 2 << 30,
        ..PythonConfig::default()
    }
}

fn reference(name: &str) -> Arc<ModelRef> {
    Arc::new(ModelRef {
        id: format!("id-{name}"),
        object: format!("{name}.pkl"),
        kind: None,
        methods: Vec::new(),
    })
}

/// Model files sent over the pipe (as from an object store), except
/// those whose name starts with `native` or `log1p`: read by the worker
/// from their path (as from a local store).
fn loader(dir: &Path) -> Arc<Loader> {
    let dir = dir.to_path_buf();
    Arc::new(move |m: &ModelRef| {
        let path = dir.join(&m.object);
        if m.object.starts_with("native") || m.object.starts_with("log1p") {
            return Ok(ModelFile::Path(path));
        }
        std::fs::read(path)
            .map(ModelFile::Bytes)
            .map_err(|e| e.to_string())
    })
}

#[test]
#[ignore = "needs the Python runtime's virtualenv (.ci/run)"]
fn the_interpreter_check_reports_versions() {
    let hello = Pool::check(&config()).unwrap();
    assert!(hello.python.starts_with("3."), "{hello:?}");
    assert!(!hello.pyarrow.is_empty() && !hello.joblib.is_empty());
}

#[test]
#[ignore = "needs the Python runtime's virtualenv (.ci/run)"]
fn a_missing_interpreter_is_a_clear_error() {
    let c = PythonConfig {
        interpreter: "/nonexistent/python".into(),
        ..config()
    };
    let e = Pool::check(&c).unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/python could not be started"),
        "{e}"
    );
    assert!(e.contains("[python] interpreter"), "{e}");
}

#[test]
#[ignore = "needs the Python runtime's virtualenv (.ci/run)"]
fn a_missing_package_is_named() {
    // The system Python without pyarrow: an interpreter that cannot run
    // the worker, and says which package it lacks.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("python");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nexec {} -c 'import sys; sys.modules[\"pyarrow\"] = None; exec(sys.argv.pop(1))' \"$3\" \"$4\" \"$5\" \"$6\"\n",
            interpreter().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let c = PythonConfig {
        interpreter: fake,
        ..config()
    };
    let e = Pool::check(&c).unwrap_err().to_string();
    assert!(e.contains("cannot import pyarrow"), "{e}");
    assert!(e.contains("-m pip install pyarrow"), "{e}");
}

#[test]
#[ignore = "needs the Python runtime's virtualenv (.ci/run)"]
fn models_score_as_they_do_in_python_and_faults_fail_only_their_model() {
    let (dir, expected) = make_models();
    let pool = Pool::new(config());
    assert!(
        pool.live_pids().is_empty(),
        "no process before the first call"
    );
    let names = [
        "log1p_iforest",
        "misbehaves_raise",
        "custom_clip_svm",
        "misbehaves_sleep",
        "native_svm",
        "misbehaves_hog",
        "lightgbm_regressor",
        "misbehaves_exit",
        "log1p_classifier",
    ];
    let rows: Vec<f64> = expected["native_svm"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let calls: Vec<Call> = names
        .iter()
        .map(|n| Call {
            model: reference(n),
            width: 1,
            rows: rows.clone(),
        })
        .collect();
    let t = Instant::now();
    let results = pool.score(calls, &loader(dir.path()));
    let took = t.elapsed();
    let by_name: BTreeMap<&str, &Result<_, CallError>> =
        names.iter().copied().zip(&results).collect();
    for name in [
        "log1p_iforest",
        "custom_clip_svm",
        "native_svm",
        "lightgbm_regressor",
        "log1p_classifier",
    ] {
        let out = by_name[name]
            .as_ref()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = &expected[name];
        let kind = Kind::parse(want["kind"].as_str().unwrap()).unwrap();
        assert_eq!(out.kind, kind, "{name}");
        let classes: Vec<&str> = want["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(out.classes, classes, "{name}");
        let score: Vec<f64> = want["score"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let label: Vec<u32> = want["label"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        // The same code on the same rows: bit for bit.
        assert_eq!(out.score, score, "{name}");
        assert_eq!(out.label, label, "{name}");
    }
    match by_name["misbehaves_raise"] {
        Err(CallError::Raised(t)) => {
            assert!(
                t.contains("ValueError: sensor calibration table missing"),
                "{t}"
            );
            assert!(t.contains("teamcode.py"), "{t}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(by_name["misbehaves_sleep"], Err(CallError::Timeout { limit }) if *limit == Duration::from_secs(5)),
        "{:?}",
        by_name["misbehaves_sleep"]
    );
    match by_name["misbehaves_hog"] {
        Err(e @ CallError::Memory { text, .. }) => {
            assert!(text.contains("MemoryError"), "{text}");
            assert!(e.to_string().contains("[python] memory_limit"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    match by_name["misbehaves_exit"] {
        Err(CallError::Died { status, .. }) => assert!(status.contains("exit code 3"), "{status}"),
        other => panic!("{other:?}"),
    }
    // Two workers; a process that hit a limit or died is replaced when
    // its thread takes the next call.
    let started = pool.processes_started();
    assert!((2..=5).contains(&started), "{started}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    // Scored again: the workers kept their models (no new process).
    let again = pool.score(
        vec![Call {
            model: reference("native_svm"),
            width: 1,
            rows: rows.clone(),
        }],
        &loader(dir.path()),
    );
    assert!(again[0].is_ok());
    let pids = pool.live_pids();
    assert!(!pids.is_empty() && pids.len() <= 2, "{pids:?}");
    drop(pool);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "worker {pid} outlived the pool"
        );
    }
}

#[test]
#[ignore = "needs the Python runtime's virtualenv (.ci/run)"]
fn a_model_whose_module_is_not_on_the_path_says_how_to_fix_it() {
    let (dir, _) = make_models();
    let pool = Pool::new(PythonConfig {
        path: Vec::new(),
        ..config()
    });
    let r = pool.score(
        vec![Call {
            model: reference("custom_clip_svm"),
            width: 1,
            rows: vec![1.0, 2.0],
        }],
        &loader(dir.path()),
    );
    match &r[0] {
        Err(CallError::Raised(t)) => assert!(t.contains("No module named 'teamcode'"), "{t}"),
        other => panic!("{other:?}"),
    }
}

#[test]
#[ignore = "needs the Python runtime's virtualenv (.ci/run)"]
fn workers_see_none_of_fleetscores_secrets() {
    // SAFETY-free: set before any thread of this test reads the environment.
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.py");
    std::fs::write(
        &probe,
        "import os, joblib\n\
         class Env:\n    def predict(self, X):\n        import numpy as np\n        \
         bad = [k for k in os.environ if 'TOKEN' in k or k.startswith('FLEETSCORE') or k.startswith('AWS_')]\n        \
         assert not bad, bad\n        assert os.getcwd().startswith(os.environ['TMPDIR']), os.getcwd()\n        \
         return np.full(len(X), float(len(os.environ)))\n",
    )
    .unwrap();
    let out = std::process::Command::new(interpreter())
        .current_dir(dir.path())
        .args(["-c", "import sys; sys.path.insert(0, '.'); import probe, joblib; joblib.dump(probe.Env(), 'env.pkl')"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = Pool::new(PythonConfig {
        path: vec![dir.path().to_path_buf()],
        ..config()
    });
    let m = Arc::new(ModelRef {
        id: "env".into(),
        object: "env.pkl".into(),
        kind: Some(Kind::Regressor),
        methods: Vec::new(),
    });
    // The test process's own environment carries such names in CI
    // (FLEETSCORE_TEST_*): none reach the worker.
    let r = pool.score(
        vec![Call {
            model: m,
            width: 1,
            rows: vec![1.0],
        }],
        &loader(dir.path()),
    );
    let out = r[0].as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.score[0] > 0.0);
}
