//! The binary as a user runs it: import, list, show, score, and the errors.
//!
//! The reference job (import a deployment's pickles, score its readings,
//! get its expected_predictions.csv back) runs on `examples/fleet` always,
//! and on `../shared/reference` when it is beside the checkout: those tests
//! are `#[ignore]`d otherwise (`.ci/run` runs them with `--ignored`).

use std::path::PathBuf;

mod common;
use common::{run, text, Fleet};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/sklearn")
        .join(name)
}

/// The reference job on a deployment: import its pickles, score
/// sensor_data.csv, and get expected_predictions.csv back: every
/// Prediction equal, every Score within 1e-9 of Decision; also in the
/// per-model CSV layout.
fn job_reproduces_expected_predictions(fleet: &Fleet) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let models = fleet.models_dir();
    let o = run(data, &["models", "import", models.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(
        text(&o).contains(&format!("{} added", fleet.models)),
        "{}",
        text(&o)
    );

    let expected = fleet.expected();
    let input = fleet.readings();
    let out = data.join("out");
    let o = run(
        data,
        &[
            "score",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "csv",
            "--json",
        ],
    );
    assert!(o.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["models"], fleet.models);
    assert_eq!(summary["rows"], fleet.rows);
    assert_eq!(summary["anomalies"], fleet.anomalies);
    assert_eq!(summary["failed_models"], 0);

    let got = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let mut lines = got.lines();
    assert_eq!(
        lines.next(),
        Some("TS,Device,Tag,Val,Prediction,Score,Label")
    );
    let mut n = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let (_, pred, dec) = &expected[&(f[0].to_string(), f[1].to_string(), f[2].to_string())];
        assert_eq!(f[4].parse::<u8>().unwrap(), *pred, "{line}");
        let score: f64 = f[5].parse().unwrap();
        assert!(
            (score - dec).abs() <= 1e-9,
            "{line}: expected decision {dec}"
        );
        n += 1;
    }
    assert_eq!(n, expected.len());

    // The reference layout: one file per model, its columns, and every
    // row as the reference job wrote it.
    let pm = data.join("per-model");
    let o = run(
        data,
        &[
            "score",
            "--input",
            input.to_str().unwrap(),
            "--out",
            pm.to_str().unwrap(),
            "--format",
            "csv",
            "--layout",
            "per-model",
        ],
    );
    assert!(o.status.success());
    let mut files: Vec<String> = std::fs::read_dir(&pm)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), fleet.models);
    assert!(
        files[0].starts_with("preds_1_1_") && files[0].len() == "preds_1_1_".len() + 12,
        "{}",
        files[0]
    );
    let f = std::fs::read_to_string(pm.join(&files[0])).unwrap();
    assert!(
        f.starts_with(&format!(
            "TS,Device,Tag,Val,Prediction\n{}\n",
            fleet.first_row
        )),
        "{f:.200}"
    );
    // Val as a number: the reference job (pandas) wrote `60.0` where its
    // input and fleetscore say `60`.
    let row = |ts: &str, d: &str, t: &str, val: &str, pred: &str| {
        let val: f64 = val.parse().unwrap();
        (
            ts.to_string(),
            d.to_string(),
            t.to_string(),
            val.to_bits(),
            pred.to_string(),
        )
    };
    let mut rows = Vec::new();
    for name in &files {
        let f = std::fs::read_to_string(pm.join(name)).unwrap();
        let mut lines = f.lines();
        assert_eq!(lines.next(), Some("TS,Device,Tag,Val,Prediction"), "{name}");
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 5, "{name}: {line}");
            rows.push(row(f[0], f[1], f[2], f[3], f[4]));
        }
    }
    rows.sort();
    let mut want: Vec<_> = expected
        .iter()
        .map(|((ts, d, t), (val, pred, _))| row(ts, d, t, val, &pred.to_string()))
        .collect();
    want.sort();
    assert!(
        rows == want,
        "the per-model files differ from expected_predictions.csv"
    );

    // Re-importing is a no-op.
    let o = run(data, &["models", "import", models.to_str().unwrap()]);
    assert!(
        text(&o).contains(&format!("{} unchanged", fleet.models)),
        "{}",
        text(&o)
    );
}

#[test]
fn example_fleet_job_reproduces_expected_predictions() {
    job_reproduces_expected_predictions(&Fleet::example());
}

#[test]
#[ignore = "needs ../shared/reference beside the checkout (CI has it; .ci/run runs this with --ignored)"]
fn reference_job_reproduces_expected_predictions() {
    job_reproduces_expected_predictions(&Fleet::reference());
}

/// Parquet output, and `--from/--to` (in both spellings of a time) keep
/// exactly the readings of that hour.
fn parquet_output_and_time_range(fleet: &Fleet) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert!(run(
        data,
        &["models", "import", fleet.models_dir().to_str().unwrap()]
    )
    .status
    .success());
    let input = fleet.readings();
    let out = data.join("pq");
    let [from, to] = fleet.hour;
    let o = run(
        data,
        &[
            "score",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--from",
            from,
            "--to",
            to,
            "--json",
        ],
    );
    assert!(o.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // TS is written `YYYY-MM-DD HH:MM:SS.fff`, so text order is time order.
    let (lo, hi) = (
        from.replace('T', " "),
        to.replace('T', " ").replace('Z', ""),
    );
    let want = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| (lo.as_str()..hi.as_str()).contains(l))
        .count();
    assert_eq!(want, fleet.rows_in_hour);
    assert_eq!(summary["rows"], want);
    let files = summary["files"].as_array().unwrap();
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(f.as_str().unwrap()).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
    }
}

#[test]
fn example_fleet_parquet_output_and_time_range() {
    parquet_output_and_time_range(&Fleet::example());
}

#[test]
#[ignore = "needs ../shared/reference beside the checkout (CI has it; .ci/run runs this with --ignored)"]
fn reference_parquet_output_and_time_range() {
    parquet_output_and_time_range(&Fleet::reference());
}

/// A pair with no model and a model with the wrong feature count are
/// reported per model; the others are scored; the exit code is 3.
#[test]
fn per_model_failures_are_reported_and_others_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let one = fixture("models/std_rbf_f1.p4.pkl");
    let three = fixture("models/std_rbf_f3.p4.pkl");
    assert!(run(
        data,
        &[
            "models",
            "import",
            one.to_str().unwrap(),
            "--device",
            "a",
            "--tag",
            "t"
        ]
    )
    .status
    .success());
    assert!(run(
        data,
        &[
            "models",
            "import",
            three.to_str().unwrap(),
            "--device",
            "b",
            "--tag",
            "t"
        ]
    )
    .status
    .success());
    let csv = data.join("in.csv");
    std::fs::write(
        &csv,
        "TS,Device,Tag,Value\n2024-01-01 00:00:00.000,a,t,1.0\n2024-01-01 00:00:05.000,a,t,2.0\n2024-01-01 00:00:00.000,b,t,1.0\n2024-01-01 00:00:00.000,c,t,1.0\n",
    )
    .unwrap();
    let o = run(
        data,
        &[
            "score",
            "--input",
            csv.to_str().unwrap(),
            "--out",
            data.join("o").to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(3));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["models"], 1);
    assert_eq!(s["rows"], 2);
    let failures = s["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0]["device"], "b");
    assert_eq!(failures[0]["reason"], "feature_mismatch");
    assert_eq!(failures[1]["device"], "c");
    assert_eq!(failures[1]["reason"], "no_model");

    // A fallback model (*, t) scores devices without their own.
    assert!(run(
        data,
        &[
            "models",
            "import",
            one.to_str().unwrap(),
            "--device",
            "*",
            "--tag",
            "t"
        ]
    )
    .status
    .success());
    let o = run(
        data,
        &[
            "score",
            "--input",
            csv.to_str().unwrap(),
            "--out",
            data.join("o2").to_str().unwrap(),
            "--json",
        ],
    );
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["models"], 2, "{s}");
    assert_eq!(s["failed_models"], 1);
}

#[test]
fn bad_input_names_the_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let one = fixture("models/std_rbf_f1.p4.pkl");
    assert!(run(
        data,
        &[
            "models",
            "import",
            one.to_str().unwrap(),
            "--device",
            "a",
            "--tag",
            "t"
        ]
    )
    .status
    .success());
    let csv = data.join("bad.csv");
    std::fs::write(
        &csv,
        "TS,Device,Tag,Value\n2024-01-01 00:00:00.000,a,t,1.0\n2024-01-01 00:00:05.000,a,t,abc\n",
    )
    .unwrap();
    let o = run(
        data,
        &[
            "score",
            "--input",
            csv.to_str().unwrap(),
            "--out",
            data.join("o").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("line 3") && t.contains("Value") && t.contains("\"abc\" is not a number"),
        "{t}"
    );
    assert!(
        !data.join("o").exists(),
        "nothing is written when the input is refused"
    );

    std::fs::write(&csv, "TS,Device,Tag,Val\n").unwrap();
    let t = text(&run(
        data,
        &[
            "score",
            "--input",
            csv.to_str().unwrap(),
            "--out",
            data.join("o").to_str().unwrap(),
        ],
    ));
    assert!(t.contains("no `Value` column"), "{t}");

    std::fs::write(&csv, "TS,Device,Tag,Value\n2024-13-01 00:00:00,a,t,1\n").unwrap();
    let t = text(&run(
        data,
        &[
            "score",
            "--input",
            csv.to_str().unwrap(),
            "--out",
            data.join("o").to_str().unwrap(),
        ],
    ));
    assert!(
        t.contains("line 2") && t.contains("TS") && t.contains("no such date"),
        "{t}"
    );
}

#[test]
fn import_errors_name_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // An unrecognised name, a hostile pickle, an unsupported class; one good model still lands.
    let models = data.join("in");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(
        fixture("models/std_rbf_f1.p4.pkl"),
        models.join("model_d1_t1"),
    )
    .unwrap();
    std::fs::copy(
        fixture("models/std_rbf_f1.p4.pkl"),
        models.join("whatever.pkl"),
    )
    .unwrap();
    std::fs::copy(
        fixture("malicious/os_system.pkl"),
        models.join("model_d2_t1"),
    )
    .unwrap();
    // A scikit-learn class fleetscore does not read (GaussianNB).
    std::fs::write(
        models.join("model_d3_t1"),
        b"\x80\x02csklearn.naive_bayes\nGaussianNB\nq\x00)\x81q\x01}q\x02b.",
    )
    .unwrap();
    let o = run(data, &["models", "import", models.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let t = text(&o);
    assert!(t.contains("1 added") && t.contains("3 failed"), "{t}");
    assert!(
        t.contains("whatever.pkl") && t.contains("--manifest"),
        "{t}"
    );
    assert!(t.contains("posix.system"), "{t}");
    assert!(t.contains("sklearn.naive_bayes.GaussianNB"), "{t}");

    // A manifest maps arbitrary names; a changed model becomes version 2.
    std::fs::write(
        data.join("m.csv"),
        "path,device,tag\nin/whatever.pkl,d1,t2\n../../x,d1,..\n",
    )
    .unwrap();
    let o = run(
        data,
        &[
            "models",
            "import",
            "--manifest",
            data.join("m.csv").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("line 3"), "{}", text(&o));
    std::fs::write(
        data.join("m.csv"),
        "path,device,tag\nin/whatever.pkl,d1,t2\n",
    )
    .unwrap();
    assert!(run(
        data,
        &[
            "models",
            "import",
            "--manifest",
            data.join("m.csv").to_str().unwrap()
        ]
    )
    .status
    .success());
    let other = fixture("models/robust_rbf_f1.p4.pkl");
    let o = run(
        data,
        &[
            "models",
            "import",
            other.to_str().unwrap(),
            "--device",
            "d1",
            "--tag",
            "t1",
        ],
    );
    assert!(text(&o).contains("1 new version"), "{}", text(&o));
    let o = run(data, &["models", "show", "d1", "t1", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["entry"]["live"], 2);
    assert_eq!(s["entry"]["versions"].as_array().unwrap().len(), 2);
    let o = run(data, &["models", "list", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s.as_array().unwrap().len(), 2);
}

/// `score --shard I/N`: the N shards are disjoint and together equal one
/// unsharded run, row for row.
fn shards_together_equal_one_unsharded_run(fleet: &Fleet) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert!(run(
        data,
        &["models", "import", fleet.models_dir().to_str().unwrap()]
    )
    .status
    .success());
    let input = fleet.readings();
    let score = |extra: &[&str]| {
        let out = data.join("out");
        let mut args = vec![
            "score",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "csv",
        ];
        args.extend_from_slice(extra);
        let o = run(data, &args);
        assert!(o.status.success(), "{}", text(&o));
        out
    };
    let lines = |path: PathBuf| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let whole = lines(score(&[]).join("predictions.csv"));
    assert_eq!(whole.len(), fleet.rows);
    let mut parts = Vec::new();
    for i in 0..3 {
        let shard = format!("{i}/3");
        let out = score(&["--shard", &shard]);
        let rows = lines(out.join(format!("shard-{i}-of-3/predictions.csv")));
        assert!(!rows.is_empty(), "shard {i} is empty");
        parts.extend(rows);
    }
    parts.sort();
    assert_eq!(parts, whole);
    // Kubernetes' Indexed Job index, and bad shards.
    let o = common::bin()
        .env("JOB_COMPLETION_INDEX", "2")
        .args([
            "--data",
            data.to_str().unwrap(),
            "--quiet",
            "score",
            "--input",
        ])
        .arg(&input)
        .args([
            "--out",
            data.join("k8s").to_str().unwrap(),
            "--shard",
            "auto/3",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(data.join("k8s/shard-2-of-3").is_dir());
    for bad in ["3/3", "x/2", "1", "0/0"] {
        let o = run(
            data,
            &[
                "score",
                "--input",
                input.to_str().unwrap(),
                "--out",
                "x",
                "--shard",
                bad,
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(text(&o).contains("--shard"), "{}", text(&o));
    }
}

#[test]
fn example_fleet_shards_together_equal_one_unsharded_run() {
    shards_together_equal_one_unsharded_run(&Fleet::example());
}

#[test]
#[ignore = "needs ../shared/reference beside the checkout (CI has it; .ci/run runs this with --ignored)"]
fn reference_shards_together_equal_one_unsharded_run() {
    shards_together_equal_one_unsharded_run(&Fleet::reference());
}

/// `score` without --input reads a window of the store's raw/ partitions:
/// the N shards of it together equal one unsharded run, row for row, and
/// `--write-store` writes each shard beside (never over) the scheduled
/// jobs' parts of the window.
#[test]
fn store_window_shards_together_equal_one_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    common::small_fleet(data);
    let window = [
        "--from",
        "2024-05-01 09:00:00",
        "--to",
        "2024-05-01 10:00:00",
    ];
    let score = |extra: &[&str]| {
        let out = data.join("out");
        let mut args = vec!["score", "--out", out.to_str().unwrap(), "--format", "csv"];
        args.extend_from_slice(&window);
        args.extend_from_slice(extra);
        let o = run(data, &args);
        assert!(o.status.success(), "{}", text(&o));
        (
            out,
            serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap(),
        )
    };
    let lines = |path: PathBuf| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let (out, summary) = score(&["--json"]);
    let whole = lines(out.join("predictions.csv"));
    // 12 pairs, 120 readings each in the hour, nothing from 08:00-09:00.
    assert_eq!(whole.len(), 12 * 120);
    assert_eq!(summary["models"], 12);
    assert!(
        whole.iter().all(|l| l.starts_with("2024-05-01 09:")),
        "{:?}",
        &whole[..3]
    );
    let mut parts = Vec::new();
    let mut models = 0;
    for i in 0..3 {
        let shard = format!("{i}/3");
        let (out, summary) = score(&["--shard", &shard, "--json"]);
        // Only this shard's pairs: none of the others counted or failed.
        assert_eq!(summary["failed_models"], 0);
        models += summary["models"].as_u64().unwrap();
        let rows = lines(out.join(format!("shard-{i}-of-3/predictions.csv")));
        assert!(!rows.is_empty(), "shard {i} is empty");
        parts.extend(rows);
    }
    parts.sort();
    assert_eq!(parts, whole);
    assert_eq!(models, 12);

    // Into the store: beside a scheduled job's part of the same window.
    let hour = data.join("store/predictions/date=2024-05-01/hour=09");
    std::fs::create_dir_all(&hour).unwrap();
    std::fs::write(hour.join("part-raw-1h-00000.parquet"), b"a job's part").unwrap();
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&hour)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    for i in 0..2 {
        let shard = format!("{i}/2");
        let mut args = vec!["score", "--write-store", "--shard", &shard];
        args.extend_from_slice(&window);
        assert!(run(data, &args).status.success());
    }
    assert_eq!(
        names(),
        [
            "manifest-raw-1h-shard-0-of-2.json",
            "manifest-raw-1h-shard-1-of-2.json",
            "part-raw-1h-00000.parquet",
            "part-raw-1h-shard-0-of-2.parquet",
            "part-raw-1h-shard-1-of-2.parquet",
        ]
    );
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(hour.join("manifest-raw-1h-shard-1-of-2.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["window_start"], "2024-05-01T09:00:00.000Z");
    assert_eq!(m["window_end"], "2024-05-01T10:00:00.000Z");
    // Another shard count replaces the outputs of the old one; the job's
    // part stays.
    let mut args = vec!["score", "--write-store"];
    args.extend_from_slice(&window);
    assert!(run(data, &args).status.success());
    assert_eq!(
        names(),
        [
            "manifest-raw-1h-shard-0-of-1.json",
            "part-raw-1h-00000.parquet",
            "part-raw-1h-shard-0-of-1.parquet",
        ]
    );

    // Windows within one hour keep apart: 09:15-09:30 is named by its start.
    let o = run(
        data,
        &[
            "score",
            "--write-store",
            "--from",
            "2024-05-01 09:15:00",
            "--to",
            "2024-05-01 09:30:00",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(hour
        .join("part-raw-15m-091500-shard-0-of-1.parquet")
        .is_file());
    assert!(hour.join("part-raw-1h-shard-0-of-1.parquet").is_file());

    // --schedule: the default config's hourly schedule (window 1h, delay
    // 5m) at 10:04 scores 08:00-09:00 (10:00 is not due yet), at 10:05
    // 09:00-10:00.
    for (now, first) in [
        ("2024-05-01T10:04:59Z", "08:"),
        ("2024-05-01T10:05:00Z", "09:"),
    ] {
        let out = data.join(format!("sched-{first}"));
        let o = run(
            data,
            &[
                "score",
                "--schedule",
                "hourly",
                "--now",
                now,
                "--out",
                out.to_str().unwrap(),
                "--format",
                "csv",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let rows = lines(out.join("predictions.csv"));
        assert_eq!(rows.len(), 12 * 120);
        assert!(
            rows.iter()
                .all(|l| l.starts_with(&format!("2024-05-01 {first}"))),
            "{now}: {:?}",
            &rows[..2]
        );
    }

    // A pair whose model takes windows is left out, not scored on raw
    // values (a one-feature window model would take them silently).
    let model = Fleet::example().models_dir().join("model_1_1");
    let o = run(
        data,
        &[
            "models",
            "import",
            model.to_str().unwrap(),
            "--device",
            "0",
            "--tag",
            "0",
            "--input",
            "window:1m:mean",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let (_, summary) = score(&["--json"]);
    assert_eq!(summary["window_models_skipped"], 1);
    assert_eq!(summary["models"], 11);
    assert_eq!(summary["rows"], 11 * 120);

    // Mistakes say what to do.
    for (args, want) in [
        (
            vec!["score", "--out", "x"],
            "--from TIME --to TIME, or --schedule NAME",
        ),
        (
            vec!["score", "--schedule", "nightly", "--out", "x"],
            "no such schedule",
        ),
        (
            vec!["score", "--write-store", "--input", "f.csv"],
            "cannot be used with",
        ),
        (
            vec![
                "score",
                "--from",
                "2024-05-01 09:00:00",
                "--to",
                "2024-05-01 10:00:00",
            ],
            "--write-store",
        ),
    ] {
        let o = run(data, &args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
    }
}

/// `worker --cpus`: every thread of the worker runs on the CPUs given
/// (read back from the kernel), and a bad list is refused with the reason.
#[cfg(target_os = "linux")]
#[test]
fn worker_runs_on_the_cpus_given() {
    use std::io::{BufRead, BufReader};
    /// A thread's (or process's) `Cpus_allowed_list`.
    fn allowed(status: &std::path::Path) -> String {
        std::fs::read_to_string(status)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string()
    }
    /// Stops the worker however the test ends.
    struct Worker(std::process::Child);
    impl Drop for Worker {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // The first CPU this test may use (a container need not allow CPU 0).
    let mine = allowed(std::path::Path::new("/proc/self/status"));
    let cpu = mine.split([',', '-']).next().unwrap().trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut worker = Worker(
        common::bin()
            .arg("--data")
            .arg(data)
            .args(["worker", "--cpus", &cpu, "--poll", "100ms"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(worker.0.stderr.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains(" slot(s), lease "))
        .expect("the worker's start line");
    assert!(started.contains(&format!("on CPU(s) {cpu}")), "{started}");
    // The runtime's threads are up by now.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{}/task", worker.0.id())).unwrap() {
        let got = allowed(&t.unwrap().path().join("status"));
        assert_eq!(got, cpu, "a thread of the worker may run elsewhere");
        threads += 1;
    }
    assert!(threads > 1, "the worker's runtime threads were not seen");
    drop(worker);

    let o = run(data, &["worker", "--cpus", "0,x", "--exit-when-idle"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("\"x\" is not a CPU number"),
        "{}",
        text(&o)
    );
    let o = run(data, &["worker", "--cpus", "1000", "--exit-when-idle"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("the system refused"), "{}", text(&o));
    assert!(
        text(&o).contains("this process may run on CPU(s) "),
        "{}",
        text(&o)
    );
}
