//! `fleetscore models train` as a user runs it: ingest readings into raw/,
//! train a model per (device, tag) from them, score the same readings.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::run;

/// A small deterministic generator (no rand dependency in tests).
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Two hours of readings every 15 s for 3 devices x 2 tags (480 each).
fn readings_csv() -> String {
    let mut rng = Lcg(7);
    let mut s = String::from("TS,Device,Tag,Value\n");
    for i in 0..480 {
        let secs = i * 15;
        let ts = format!(
            "2024-03-05 {:02}:{:02}:{:02}",
            10 + secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        for d in 1..=3 {
            for (tag, base, sd) in [("temp", 20.0, 0.5), ("pres", 1013.0, 2.0)] {
                let trend = (i as f64 / 80.0).sin() * sd;
                let v = base + f64::from(d) + trend + sd * rng.normal();
                writeln!(s, "{ts},d{d},{tag},{v:.3}").unwrap();
            }
        }
    }
    s
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

fn train(data: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "models",
        "train",
        "--from",
        "2024-03-05 10:00:00",
        "--to",
        "2024-03-05T12:00:00Z",
        "--json",
    ];
    args.extend_from_slice(extra);
    run(data, &args)
}

#[test]
fn train_from_raw_then_score_flags_about_nu_of_the_readings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("readings.csv");
    std::fs::write(&csv, readings_csv()).unwrap();
    // A series too short to train on, in its own file.
    let few = dir.path().join("few.csv");
    std::fs::write(
        &few,
        "TS,Device,Tag,Value\n2024-03-05 10:00:00,d9,temp,1\n2024-03-05 10:00:05,d9,temp,2\n",
    )
    .unwrap();
    let o = run(
        &data,
        &["ingest", csv.to_str().unwrap(), few.to_str().unwrap()],
    );
    assert!(o.status.success());

    let o = train(&data, &["--nu", "0.05", "--gamma", "0.2"]);
    assert!(o.status.success());
    let doc = json(&o);
    assert_eq!(doc["trained"], 6, "{doc}");
    assert_eq!(doc["added"], 6);
    assert_eq!(doc["skipped"], 1);
    assert_eq!(doc["failed"], 0);
    assert_eq!(doc["readings"], 6 * 480 + 2);
    assert_eq!(doc["skipped_series"][0]["device"], "d9");

    // The same readings give the same models: nothing new is registered.
    let o = train(&data, &["--nu", "0.05", "--gamma", "0.2"]);
    assert!(o.status.success());
    let doc = json(&o);
    assert_eq!((&doc["trained"], &doc["unchanged"]), (&6.into(), &6.into()));

    let o = run(&data, &["models", "show", "d1", "temp", "--json"]);
    assert!(o.status.success());
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("StandardScaler"), "{shown}");
    assert!(shown.contains("fleetscore models train"), "{shown}");

    let out = dir.path().join("preds");
    let o = run(
        &data,
        &[
            "score",
            "--input",
            csv.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "csv",
            "--json",
        ],
    );
    assert!(o.status.success());
    let s = json(&o);
    assert_eq!(s["models"], 6);
    assert_eq!(s["rows"], 6 * 480);
    let rate = s["anomalies"].as_f64().unwrap() / (6.0 * 480.0);
    // nu bounds the fraction of training readings outside the learned
    // region; here the rate sits just above nu. scikit-learn 1.9.1, fitting
    // Pipeline(StandardScaler(), OneClassSVM(nu=0.05, gamma=0.2)) per
    // series on these same readings, flags exactly 155 of them.
    assert!((0.04..=0.07).contains(&rate), "anomaly rate {rate}");
    assert_eq!(s["anomalies"], 155);
}

#[test]
fn filters_parameters_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("readings.csv");
    std::fs::write(&csv, readings_csv()).unwrap();
    assert!(run(&data, &["ingest", csv.to_str().unwrap()])
        .status
        .success());

    // One series, a bare SVM with a numeric gamma.
    let o = train(
        &data,
        &[
            "--device", "d2", "--tag", "pres", "--gamma", "0.5", "--scaler", "none", "--nu", "0.1",
        ],
    );
    assert!(o.status.success());
    let doc = json(&o);
    assert_eq!((&doc["trained"], &doc["added"]), (&1.into(), &1.into()));
    assert_eq!(doc["models"][0]["key"]["device"], "d2");

    // Different parameters: a new version of that key.
    let o = train(&data, &["--device", "d2", "--tag", "pres", "--nu", "0.2"]);
    assert_eq!(json(&o)["new_versions"], 1);

    // Only the first hour: fewer readings than --min-readings skips all.
    let o = run(
        &data,
        &[
            "models",
            "train",
            "--from",
            "2024-03-05 10:00:00",
            "--to",
            "2024-03-05 10:01:00",
        ],
    );
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("trained 0 model(s)"), "{text}");
    assert!(text.contains("6 skipped"), "{text}");

    // Bad values: a usage error (2) for --gamma, a failure (1) for --nu.
    let o = train(&data, &["--gamma", "wide"]);
    assert_eq!(o.status.code(), Some(2));
    let o = train(&data, &["--nu", "1.5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--nu"));
}
