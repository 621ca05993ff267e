//! Predictions Parquet writing throughput.
//!
//! ```text
//! cargo run --release -p fleetscore-codecs --example predictions_throughput [-- ROWS [mixed]]
//! ```
//!
//! 3,000 models in 500 devices, 1 million rows by default, written as one
//! Parquet file in memory ([`predictions_parquet_bytes`], what a scoring
//! job does per part) a few times on one thread; prints the best rows/s.
//! The models are outlier detectors, or with `mixed` detectors,
//! regressors and classifiers (of 3 and of 40 classes) in turn.

use std::time::Instant;

use fleetscore_codecs::{predictions_parquet_bytes, ModelOutput, PredictionColumns};

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut keys = Vec::new();
    for d in 0..500 {
        for t in 0..6 {
            keys.push((format!("pump-{d:04}"), format!("sensor_{t}")));
        }
    }
    let mixed = std::env::args().nth(2).as_deref() == Some("mixed");
    let few: Vec<String> = ["normal", "worn", "failed"].map(String::from).to_vec();
    let many: Vec<String> = (0..40).map(|c| format!("class-{c}")).collect();
    let outputs: Vec<ModelOutput<'_>> = (0..keys.len())
        .map(|k| match k % 4 {
            _ if !mixed => ModelOutput::Outlier,
            0 => ModelOutput::Outlier,
            1 => ModelOutput::Regressor,
            2 => ModelOutput::Classifier(&few),
            _ => ModelOutput::Classifier(&many),
        })
        .collect();
    let per_model = rows.div_ceil(keys.len());
    let (mut ts, mut value, mut label, mut score) = (vec![], vec![], vec![], vec![]);
    let mut groups = Vec::new();
    for (k, output) in outputs.iter().enumerate() {
        let from = ts.len();
        for i in 0..per_model.min(rows - from) {
            ts.push(1_704_067_200_000_000_000 + (i as i64) * 10_000_000_000);
            value.push(20.0 + (k % 11) as f64 + i as f64 / 8.0);
            label.push(match output {
                ModelOutput::Classifier(c) => ((k + i / 7) % c.len()) as u32,
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
    let mut best = f64::INFINITY;
    let mut size = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let bytes = predictions_parquet_bytes(&cols, "bench").expect("writes");
        best = best.min(t.elapsed().as_secs_f64());
        size = bytes.len();
    }
    println!(
        "{} rows, {} bytes: best {:.1} ms, {:.1} M rows/s",
        ts.len(),
        size,
        best * 1e3,
        ts.len() as f64 / best / 1e6
    );
}
