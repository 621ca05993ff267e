//! Parity with real scikit-learn: every fixture model (made by
//! `tests/fixtures/sklearn/generate.py` with pinned scikit-learn, numpy and
//! joblib, in every pickle protocol and joblib variant, with legacy module
//! paths and attribute names) must give scikit-learn's `predict` labels
//! exactly and its `decision_function` within 1e-9 (relative to the value
//! where it exceeds 1: floating point cannot hold 1e7 to within 1e-9).

use std::path::{Path, PathBuf};

use fleetscore_models::pickle::PickleError;
use fleetscore_models::{import_sklearn, ImportError};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sklearn")
}

#[derive(Deserialize)]
struct Manifest {
    sklearn: String,
    files: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    file: String,
    case: String,
    variant: String,
}

#[derive(Deserialize)]
struct Case {
    n_features: usize,
    #[serde(rename = "X")]
    x: Vec<Vec<f64>>,
    predict: Vec<i8>,
    decision: Vec<f64>,
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> T {
    serde_json::from_slice(&std::fs::read(p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_fixture_matches_scikit_learn() {
    let root = fixtures();
    let manifest: Manifest = read_json(&root.join("manifest.json"));
    let mut variants = std::collections::BTreeSet::new();
    let (mut files, mut rows, mut zeros, mut exact, mut max_diff) = (0, 0, 0, 0, 0.0f64);
    for e in &manifest.files {
        let case: Case = read_json(&root.join("cases").join(format!("{}.json", e.case)));
        let bytes = std::fs::read(root.join(&e.file)).unwrap();
        let model = import_sklearn(&bytes).unwrap_or_else(|err| panic!("{}: {err}", e.file));
        assert_eq!(model.n_features, case.n_features, "{}", e.file);
        let flat: Vec<f64> = case.x.iter().flatten().copied().collect();
        let labels = model.predict(&flat, case.n_features).unwrap();
        let mut dec = Vec::new();
        model
            .decision_function(&flat, case.n_features, &mut dec)
            .unwrap();
        for (i, ((&l, &want_l), (&d, &want_d))) in labels
            .iter()
            .zip(&case.predict)
            .zip(dec.iter().zip(&case.decision))
            .enumerate()
        {
            assert_eq!(
                l, want_l,
                "{} row {i}: label (decision {d:e}, scikit-learn {want_d:e})",
                e.file
            );
            let diff = (d - want_d).abs();
            // 1e-9 absolute; relative beyond magnitude 1, where one ulp of
            // a far outlier's decision (1e7 under a poly kernel) exceeds 1e-9.
            assert!(
                diff <= 1e-9 * want_d.abs().max(1.0),
                "{} row {i}: decision {d:e} vs scikit-learn {want_d:e}",
                e.file
            );
            max_diff = max_diff.max(diff / want_d.abs().max(1.0));
            exact += usize::from(d == want_d);
            zeros += usize::from(want_d == 0.0);
            rows += 1;
        }
        variants.insert(e.variant.clone());
        files += 1;
    }
    eprintln!(
        "scikit-learn {}: {files} files, variants {variants:?}, {rows} rows ({exact} bit-identical, {zeros} exact zeros), max |diff| {max_diff:e}",
        manifest.sklearn
    );
    for v in [
        "p2.pkl",
        "p3.pkl",
        "p4.pkl",
        "p5.pkl",
        "joblib",
        "joblib-zlib",
        "joblib-gzip",
        "legacy-p2.pkl",
        "legacy-p3.pkl",
        "legacy-joblib",
    ] {
        assert!(variants.contains(v), "no fixture for variant {v}");
    }
    assert!(
        zeros > 0,
        "the fixtures must include decisions of exactly 0.0"
    );
}

fn refusal(name: &str) -> ImportError {
    let bytes = std::fs::read(fixtures().join("malicious").join(name)).unwrap();
    import_sklearn(&bytes).expect_err(name)
}

#[test]
fn malicious_pickles_are_refused_with_the_global_named() {
    for (file, global) in [
        ("os_system.pkl", "posix.system"),
        ("os_system_global.pkl", "os.system"),
        ("builtins_eval.pkl", "__builtin__.eval"),
        ("subprocess_popen.pkl", "subprocess.Popen"),
        ("evil_in_pipeline.pkl", "posix.system"),
    ] {
        let e = refusal(file);
        assert!(
            matches!(e, ImportError::Pickle(PickleError::RefusedGlobal { .. })),
            "{file}: {e:?}"
        );
        assert!(e.to_string().contains(global), "{file}: {e}");
    }
    let e = refusal("nested_reduce.pkl");
    assert!(
        e.to_string().contains("__builtin__.") || e.to_string().contains("builtins."),
        "{e}"
    );
}

#[test]
fn unsupported_corrupt_and_truncated_files_say_why() {
    let e = refusal("unsupported_svc.pkl");
    assert!(
        matches!(e, ImportError::Pickle(PickleError::UnsupportedClass { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("sklearn.svm._classes.SVC"), "{e}");
    assert!(e.to_string().contains("OneClassSVM"), "{e}");
    let e = refusal("truncated.pkl");
    assert!(
        matches!(e, ImportError::Pickle(PickleError::Truncated { .. })),
        "{e:?}"
    );
    let e = refusal("corrupt.pkl");
    assert!(
        matches!(
            e,
            ImportError::Pickle(PickleError::UnknownOpcode { byte: 0xff, .. })
        ),
        "{e:?}"
    );
}

/// Every prefix and many single-byte corruptions of a real model end in an
/// error or a model, never a panic.
#[test]
fn every_truncation_and_byte_flip_of_a_real_model_is_handled() {
    for file in [
        "models/std_rbf_f3.p4.pkl",
        "models/minmax_poly3_f3.joblib",
        "models/std_rbf_f3.legacy-p2.pkl",
    ] {
        let bytes = std::fs::read(fixtures().join(file)).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                import_sklearn(&bytes[..cut]).is_err(),
                "{file} cut at {cut}"
            );
        }
        for i in 0..bytes.len() {
            for b in [0x00, 0xff, bytes[i] ^ 0x01] {
                let mut m = bytes.clone();
                m[i] = b;
                let _ = import_sklearn(&m);
            }
        }
    }
}
