//! Predictions files read by the readers our users query them with:
//! pyarrow, pandas and DuckDB. Writes the predictions of a fleet of
//! detectors, regressors and classifiers as Parquet and as CSV with
//! fleetscore's writers, then `readers/read_predictions.py` reads the
//! Parquet file with each and compares every row with the CSV: a missing
//! Prediction or Label is null (NaN in pandas), Label is text.
//!
//! Needs Python 3 with `readers/requirements.txt`, so it is ignored by a
//! plain `cargo test`; `.ci/run` installs them and runs it:
//! `cargo test -p fleetscore-codecs --test readers -- --include-ignored`.

use std::path::Path;
use std::process::Command;

use fleetscore_codecs::{
    write_predictions, ModelOutput, OutputFormat, PredictionColumns, PredictionLayout,
};

#[test]
#[ignore = "needs python3 with pyarrow, pandas and duckdb (crates/codecs/tests/readers/requirements.txt)"]
fn pyarrow_pandas_and_duckdb_read_predictions_row_for_row() {
    // 3,000 models of 1 to 700 rows (1.05M rows: two row groups), in
    // 500 devices, ordered so that a device's models are not adjacent.
    let mut keys = Vec::new();
    for d in 0..500 {
        for t in 0..6 {
            keys.push((format!("pump-{d:04}"), format!("sensor_{t}")));
        }
    }
    // Every fourth model a regressor, every fourth a classifier, of
    // int-like classes or of texts a CSV must quote.
    let ints: Vec<String> = ["0", "1", "2"].iter().map(|c| c.to_string()).collect();
    let texts: Vec<String> = ["normal", "worn, soon", "line\nbreak", "say \"hi\""]
        .iter()
        .map(|c| c.to_string())
        .collect();
    let outputs: Vec<ModelOutput<'_>> = (0..keys.len())
        .map(|k| match k % 4 {
            0 | 1 => ModelOutput::Outlier,
            2 => ModelOutput::Regressor,
            _ if k % 8 == 3 => ModelOutput::Classifier(&ints),
            _ => ModelOutput::Classifier(&texts),
        })
        .collect();
    let (mut ts, mut value, mut label, mut score) = (vec![], vec![], vec![], vec![]);
    let mut groups = Vec::new();
    let order = (0..keys.len()).map(|i| (i * 7) % keys.len());
    for k in order {
        let n = 1 + (k * 37) % 700;
        let from = ts.len();
        for i in 0..n {
            // Whole milliseconds, as the CSV's TS keeps them.
            ts.push(1_704_067_200_000_000_000 + (i as i64) * 10_000_000_000 + k as i64 * 1_000_000);
            value.push(20.0 + (k % 11) as f64 + i as f64 / 8.0);
            label.push(match outputs[k] {
                ModelOutput::Classifier(c) => ((k + i) % c.len()) as u32,
                _ => u32::from((k + i) % 13 == 0),
            });
            score.push(0.25 - ((k + i) % 13) as f64 / 17.0);
        }
        groups.push((k as u32, from..ts.len()));
    }
    let cols = PredictionColumns {
        ts: &ts,
        value: &value,
        label: &label,
        score: &score,
        keys: &keys,
        outputs: &outputs,
        groups: &groups,
    };
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, format| {
        let out = dir.path().join(name);
        write_predictions(&out, format, PredictionLayout::Combined, &cols, 1, 0).unwrap()
    };
    let (pq, csv) = (
        write("pq", OutputFormat::Parquet),
        write("csv", OutputFormat::Csv),
    );
    assert!(
        ts.len() > 1 << 20,
        "{} rows make more than one row group",
        ts.len()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/read_predictions.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&pq[0].path)
        .arg(&csv[0].path)
        .output()
        .expect("python3 runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{} failed:\n{stdout}{stderr}\n(install the readers: python3 -m pip install -r crates/codecs/tests/readers/requirements.txt)",
        script.display()
    );
    println!("{stdout}");
    assert!(stdout.contains("row group(s) equal the CSV's"), "{stdout}");
    assert!(stdout.contains("pandas:"), "{stdout}");
    assert!(stdout.contains("devices equal the CSV's"), "{stdout}");
}
