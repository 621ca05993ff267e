//! Training benchmark and fleet-scale parity check, driven by
//! `bench/train.py` (which writes the inputs and scikit-learn's fits).
//!
//! `cargo run --release -p fleetscore-models --example train_bench -- DIR`
//! reads `DIR/meta.json` (`{"models", "rows", "nu", "gamma", "scaler"}`),
//! `DIR/x.f64` (models x rows values, little-endian f64, one series after
//! the other) and `DIR/sklearn.json` (per model: `rho`, `n_support`,
//! `dual_coef`), fits every series with [`fleetscore_models::train`] on one
//! thread and then on all cores, and prints the timings and how many fits
//! are bit-identical to scikit-learn's.

use std::path::PathBuf;
use std::time::Instant;

use fleetscore_models::{train, Estimator, Gamma, ScalerChoice, SvmParams, TrainParams};

#[derive(serde::Deserialize)]
struct Meta {
    models: usize,
    rows: usize,
    nu: f64,
    gamma: serde_json::Value,
    scaler: String,
}

#[derive(serde::Deserialize)]
struct Fit {
    rho: f64,
    n_support: usize,
    dual_coef: Vec<f64>,
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: train_bench DIR"));
    let meta: Meta =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let fits: Vec<Fit> =
        serde_json::from_slice(&std::fs::read(dir.join("sklearn.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("x.f64")).unwrap();
    let x: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(x.len(), meta.models * meta.rows);
    let gamma = match &meta.gamma {
        serde_json::Value::String(s) => s.parse::<Gamma>().unwrap(),
        v => Gamma::Value(v.as_f64().unwrap()),
    };
    let params = TrainParams {
        scaler: meta.scaler.parse::<ScalerChoice>().unwrap(),
        svm: SvmParams {
            nu: meta.nu,
            gamma,
            ..SvmParams::default()
        },
    };
    let series: Vec<&[f64]> = x.chunks_exact(meta.rows).collect();

    let t = Instant::now();
    let one: Vec<_> = series
        .iter()
        .map(|s| train(s, 1, &params).unwrap())
        .collect();
    let single = t.elapsed().as_secs_f64();

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    let chunk = series.len().div_ceil(threads);
    std::thread::scope(|sc| {
        for part in series.chunks(chunk) {
            let params = &params;
            sc.spawn(move || {
                for s in part {
                    std::hint::black_box(train(s, 1, params).unwrap());
                }
            });
        }
    });
    let parallel = t.elapsed().as_secs_f64();

    let (mut identical, mut same_nsv, mut max_rho) = (0usize, 0usize, 0.0f64);
    let mut iterations = 0u64;
    for ((model, info), fit) in one.iter().zip(&fits) {
        let Estimator::OneClassSvm(svm) = &model.estimator else {
            unreachable!("training makes a OneClassSVM")
        };
        iterations += info.iterations;
        same_nsv += usize::from(info.n_support == fit.n_support);
        max_rho = max_rho.max((info.rho - fit.rho).abs() / fit.rho.abs().max(1.0));
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if info.rho.to_bits() == fit.rho.to_bits() && bits(&svm.dual_coef) == bits(&fit.dual_coef) {
            identical += 1;
        }
    }
    let doc = serde_json::json!({
        "models": meta.models, "rows": meta.rows,
        "single_thread_seconds": single,
        "threads": threads, "parallel_seconds": parallel,
        "mean_iterations": iterations as f64 / meta.models as f64,
        "bit_identical_fits": identical, "same_n_support": same_nsv,
        "max_rho_rel_diff": max_rho,
    });
    println!("{doc}");
}
