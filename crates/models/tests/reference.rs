//! A whole deployment's pickles must give exactly the predictions
//! scikit-learn gave on its readings (`expected_predictions.csv`): every
//! prediction equal, every decision within 1e-9, and the exact-zero
//! decisions (anomalies under libsvm's strict rule) exactly zero.
//!
//! Two deployments in the same layout (`models/model_{device}_{tag}`,
//! `expected_predictions.csv` with `TS,Device,Tag,Val,Prediction,Decision`):
//! - `examples/fleet`, committed: 6 pipelines pickled by the pinned
//!   scikit-learn, written by `fixtures/sklearn/generate.py`; always run;
//! - `../shared/reference`, the reference deployment's 15 legacy pickles
//!   (scikit-learn 0.19/0.20, protocol 3, old module paths and attribute
//!   names); beside the checkout only in CI, so that test is `#[ignore]`d
//!   and `.ci/run` runs it with `--ignored`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fleetscore_models::import_sklearn;

/// A deployment and what its expected predictions hold.
struct Deployment {
    root: PathBuf,
    models: usize,
    rows: usize,
    anomalies: usize,
    /// Readings whose decision is exactly 0.0.
    zeros: usize,
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example_fleet() -> Deployment {
    Deployment {
        root: repository().join("examples/fleet"),
        models: 6,
        rows: 2_448,
        anomalies: 181,
        zeros: 46,
    }
}

/// `../shared/reference`; a test that needs it fails (never passes) when
/// it is missing.
fn reference() -> Deployment {
    let root = repository().join("../shared/reference");
    assert!(
        root.is_dir(),
        "{} not found: this test needs the reference deployment beside the checkout \
         (CI has it); without it, run plain `cargo test`, which checks the same on examples/fleet",
        root.display()
    );
    Deployment {
        root,
        models: 15,
        rows: 17_768,
        anomalies: 6_757,
        zeros: 7,
    }
}

/// Every `models/model_{device}_{tag}` file, imported, by (device, tag).
fn import_all(models: &Path) -> HashMap<(String, String), fleetscore_models::Model> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(models).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (device, tag) = name
            .strip_prefix("model_")
            .and_then(|k| k.split_once('_'))
            .unwrap_or_else(|| panic!("{}: not named model_{{device}}_{{tag}}", path.display()));
        let key = (device.to_string(), tag.to_string());
        let bytes = std::fs::read(&path).unwrap();
        let m = import_sklearn(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.n_features, 1, "{name}");
        out.insert(key, m);
    }
    out
}

fn reproduces_expected_predictions(d: &Deployment) {
    let models = import_all(&d.root.join("models"));
    assert_eq!(models.len(), d.models);
    let expected = std::fs::read_to_string(d.root.join("expected_predictions.csv")).unwrap();
    let mut lines = expected.lines().enumerate();
    assert_eq!(
        lines.next().map(|(_, h)| h),
        Some("TS,Device,Tag,Val,Prediction,Decision")
    );
    let (mut rows, mut anomalies, mut zeros, mut max_diff) = (0, 0, 0, 0.0f64);
    for (i, line) in lines {
        let f: Vec<&str> = line.split(',').collect();
        let m = &models[&(f[1].to_string(), f[2].to_string())];
        let val: f64 = f[3].parse().unwrap();
        let want_pred: u8 = f[4].parse().unwrap();
        let want_dec: f64 = f[5].parse().unwrap();
        let (mut dec, mut label) = ([0.0], [0u32]);
        m.evaluate_into(&[val], 1, &mut dec, &mut label).unwrap();
        let pred = label[0] as u8;
        assert_eq!(
            pred,
            want_pred,
            "line {}: {line}: decision {}",
            i + 1,
            dec[0]
        );
        assert_eq!(
            dec[0] == 0.0,
            want_dec == 0.0,
            "line {}: {line}: decision {} (scikit-learn's is exactly 0.0, or ours is)",
            i + 1,
            dec[0]
        );
        max_diff = max_diff.max((dec[0] - want_dec).abs());
        rows += 1;
        anomalies += usize::from(pred);
        zeros += usize::from(dec[0] == 0.0);
    }
    eprintln!(
        "{}: {rows} rows, {anomalies} anomalies, {zeros} exact-zero decisions, max diff {max_diff:e}",
        d.root.display()
    );
    assert!(max_diff <= 1e-9, "max |decision - expected| = {max_diff:e}");
    assert_eq!(rows, d.rows);
    assert_eq!(anomalies, d.anomalies);
    assert_eq!(zeros, d.zeros);
}

#[test]
fn example_fleet_models_reproduce_expected_predictions() {
    reproduces_expected_predictions(&example_fleet());
}

#[test]
#[ignore = "needs ../shared/reference beside the checkout (CI has it; .ci/run runs this with --ignored)"]
fn reference_models_reproduce_expected_predictions() {
    reproduces_expected_predictions(&reference());
}
