//! Training parity with real scikit-learn: every case in
//! `tests/fixtures/sklearn/train/` (made by `train_cases.py` through
//! `generate.py` with the pinned scikit-learn 1.9.1) is fitted here with
//! [`fleetscore_models::train`] on the same rows and compared with what
//! `OneClassSVM.fit` gave.
//!
//! The trainer replicates libsvm's iteration path (working sets,
//! shrinking, f32 kernel cache), so the contract tested is:
//!
//! * bit-identical: the resolved gamma, the StandardScaler's mean and
//!   scale, the support-vector indices, libsvm's iteration count, every
//!   dual coefficient and rho (measured: identical on all cases);
//! * decision values on held-out rows: within 1e-12 relative to
//!   `max(1, |value|)` (measured: at most 5.7e-14; the difference is the
//!   2-ulp `exp` fleetscore scores with, against glibc's in libsvm);
//! * labels on held-out rows: identical.
//!
//! The measured differences are printed (`cargo test -p fleetscore-models
//! --test train -- --nocapture`).

use std::path::PathBuf;

use fleetscore_models::model::{Estimator, Kernel, Scaler};
use fleetscore_models::{train, Gamma, ScalerChoice, SvmParams, TrainParams};
use serde::Deserialize;

/// Relative tolerance for decision values (coefficients and rho must be
/// bit-identical).
const TOL: f64 = 1e-12;

#[derive(Deserialize)]
struct Case {
    case: String,
    n_features: usize,
    params: Params,
    #[serde(rename = "X_train")]
    x_train: Vec<f64>,
    #[serde(rename = "X_test")]
    x_test: Vec<f64>,
    fit: Fit,
    decision: Vec<f64>,
}

#[derive(Deserialize)]
struct Params {
    kernel: String,
    gamma: serde_json::Value,
    nu: f64,
    coef0: f64,
    degree: i32,
    scaler: String,
}

#[derive(Deserialize)]
struct Fit {
    gamma: f64,
    scaler_mean: Option<Vec<f64>>,
    scaler_scale: Option<Vec<f64>>,
    rho: f64,
    n_support: usize,
    support: Vec<usize>,
    dual_coef: Vec<f64>,
    n_iter: u64,
}

fn cases() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sklearn/train");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 10,
        "expected the training fixtures in {}",
        dir.display()
    );
    paths
        .iter()
        .map(|p| {
            serde_json::from_slice(&std::fs::read(p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

fn params(c: &Case) -> TrainParams {
    let p = &c.params;
    let gamma = match &p.gamma {
        serde_json::Value::String(s) => s.parse::<Gamma>().unwrap(),
        v => Gamma::Value(v.as_f64().unwrap()),
    };
    let kernel = match p.kernel.as_str() {
        "rbf" => Kernel::Rbf,
        "linear" => Kernel::Linear,
        "poly" => Kernel::Poly,
        "sigmoid" => Kernel::Sigmoid,
        k => panic!("kernel {k}"),
    };
    TrainParams {
        scaler: p.scaler.parse::<ScalerChoice>().unwrap(),
        svm: SvmParams {
            kernel,
            gamma,
            coef0: p.coef0,
            degree: p.degree,
            nu: p.nu,
            ..SvmParams::default()
        },
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1.0)
}

#[test]
fn training_matches_scikit_learn() {
    let mut worst_dec = (0.0f64, 0.0f64, String::new());
    let mut worst_coef = 0.0f64;
    let mut worst_rho = 0.0f64;
    let mut failures = Vec::new();
    println!(
        "{:<32} {:>5} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "case", "rows", "nSV", "iter", "rho diff", "coef diff", "dec abs", "dec rel"
    );
    for c in cases() {
        let p = params(&c);
        let (model, info) = train(&c.x_train, c.n_features, &p)
            .unwrap_or_else(|e| panic!("{}: training failed: {e}", c.case));
        let name = &c.case;
        let mut problems = Vec::new();
        if info.gamma.to_bits() != c.fit.gamma.to_bits() {
            problems.push(format!("gamma {} vs {}", info.gamma, c.fit.gamma));
        }
        match (model.steps.first(), &c.fit.scaler_mean) {
            (Some(Scaler::StandardScaler { mean, scale }), Some(m)) => {
                if mean.as_ref() != Some(m) || scale != &c.fit.scaler_scale {
                    problems.push(format!(
                        "scaler mean/scale {mean:?}/{scale:?} vs {m:?}/{:?}",
                        c.fit.scaler_scale
                    ));
                }
            }
            (None, None) => {}
            (s, m) => problems.push(format!("scaler {s:?} vs mean {m:?}")),
        }
        if info.n_support != c.fit.n_support || info.support != c.fit.support {
            problems.push(format!(
                "support vectors: {} {:?} vs {} {:?}",
                info.n_support, info.support, c.fit.n_support, c.fit.support
            ));
        }
        if info.iterations != c.fit.n_iter {
            problems.push(format!(
                "iterations {} vs {}",
                info.iterations, c.fit.n_iter
            ));
        }
        let rho_diff = rel(info.rho, c.fit.rho);
        worst_rho = worst_rho.max(rho_diff);
        if info.rho.to_bits() != c.fit.rho.to_bits() {
            problems.push(format!("rho {} vs {}", info.rho, c.fit.rho));
        }
        let Estimator::OneClassSvm(svm) = &model.estimator else {
            unreachable!("training makes a OneClassSVM")
        };
        let mut coef_diff = 0.0f64;
        if svm.dual_coef.len() == c.fit.dual_coef.len() {
            for (a, b) in svm.dual_coef.iter().zip(&c.fit.dual_coef) {
                coef_diff = coef_diff.max(rel(*a, *b));
            }
        } else {
            coef_diff = f64::INFINITY;
        }
        worst_coef = worst_coef.max(coef_diff);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(&svm.dual_coef) != bits(&c.fit.dual_coef) {
            problems.push(format!(
                "dual coefficients differ (max {coef_diff:e} relative)"
            ));
        }
        let mut dec = Vec::new();
        model
            .decision_function(&c.x_test, c.n_features, &mut dec)
            .unwrap();
        let (mut dabs, mut drel) = (0.0f64, 0.0f64);
        for (k, (a, b)) in dec.iter().zip(&c.decision).enumerate() {
            dabs = dabs.max((a - b).abs());
            drel = drel.max(rel(*a, *b));
            if (*a > 0.0) != (*b > 0.0) {
                problems.push(format!("label of test row {k} differs: {a} vs {b}"));
            }
        }
        if drel > worst_dec.1 {
            worst_dec = (dabs, drel, name.clone());
        }
        worst_dec.0 = worst_dec.0.max(dabs);
        if drel > TOL {
            problems.push(format!("decision values differ by {drel:e} (relative)"));
        }
        println!(
            "{:<32} {:>5} {:>6} {:>6} {:>10.1e} {:>10.1e} {:>10.1e} {:>10.1e}",
            name, info.n_samples, info.n_support, info.iterations, rho_diff, coef_diff, dabs, drel
        );
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    println!(
        "max over all cases: rho {worst_rho:.1e}, dual coef {worst_coef:.1e}, decision abs {:.1e} rel {:.1e} ({})",
        worst_dec.0, worst_dec.1, worst_dec.2
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn trained_model_round_trips_through_the_native_format() {
    let c = cases().into_iter().next().unwrap();
    let (model, _) = train(&c.x_train, c.n_features, &params(&c)).unwrap();
    let json = fleetscore_models::format::to_json(&model);
    let back = fleetscore_models::format::from_json(&json).unwrap();
    assert_eq!(back, model);
}
