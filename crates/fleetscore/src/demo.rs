//! `fleetscore demo`: the main job end to end on embedded defaults.
//!
//! Registers the five scikit-learn models bundled in the binary (made by
//! `demo/make_models.py`, one per tag) as fallback models `(*, tag)`,
//! generates a fleet's readings in the reference CSV format with injected
//! anomalies, scores them exactly as `fleetscore score` does, and reports
//! how many injected anomalies were found.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;
use fleetscore_core::{format_ts_reference, parse_ts, ModelKey, NANOS_PER_SEC};
use fleetscore_models::import_sklearn;
use fleetscore_store::ImportRequest;

use crate::cli::{DemoArgs, Format, Global, Layout, ScoreArgs};
use crate::{score, util};

/// The bundled models, and each tag's normal (mean, std); keep in sync with
/// `demo/make_models.py`.
const MODELS: [&[u8]; 5] = [
    include_bytes!("../demo/model_fallback_1.pkl"),
    include_bytes!("../demo/model_fallback_2.pkl"),
    include_bytes!("../demo/model_fallback_3.pkl"),
    include_bytes!("../demo/model_fallback_4.pkl"),
    include_bytes!("../demo/model_fallback_5.pkl"),
];
const TAGS: [(f64, f64); 5] = [
    (20.0, 2.0),
    (55.0, 5.0),
    (1.5, 0.2),
    (300.0, 12.0),
    (80.0, 4.0),
];

/// splitmix64: small, seedable, good enough for synthetic readings.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

pub async fn run(g: &Global, args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.devices > 0 && args.hours > 0,
        "--devices and --hours must be at least 1"
    );
    anyhow::ensure!(
        (0.0..=0.5).contains(&args.anomaly_rate),
        "--anomaly-rate must be between 0 and 0.5"
    );
    let started = std::time::Instant::now();
    let registry = util::registry(g)?;
    let mut requests = Vec::new();
    for (i, bytes) in MODELS.iter().enumerate() {
        let model = import_sklearn(bytes).context("reading a bundled model")?;
        requests.push(ImportRequest {
            key: ModelKey::new("*", (i + 1).to_string())?,
            model,
            source: format!("bundled demo model model_fallback_{}.pkl", i + 1),
        });
    }
    registry.import(requests, &util::now_rfc3339()).await?;
    println!(
        "registered 5 bundled scikit-learn models as fallback models (*, 1..5) in {}",
        registry.store().url()
    );

    let dir = g.data.join("demo");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let input = dir.join("readings.csv");
    let start = parse_ts("2024-01-01 00:00:00")?;
    let steps = args.hours * 720;
    let mut rng = Rng(args.seed);
    let mut injected = HashSet::new();
    {
        let f = std::fs::File::create(&input)
            .with_context(|| format!("creating {}", input.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        writeln!(w, "TS,Device,Tag,Value")?;
        let offsets: Vec<f64> = (0..args.devices * 5).map(|_| rng.normal() * 0.2).collect();
        for s in 0..steps {
            let ts = start + s as i64 * 5 * NANOS_PER_SEC;
            let stamp = format_ts_reference(ts);
            for d in 1..=args.devices {
                for (t, (mean, std)) in TAGS.iter().enumerate() {
                    let base = mean + offsets[(d - 1) * 5 + t] * std;
                    let v = if rng.uniform() < args.anomaly_rate {
                        injected.insert((d as u32, t as u32 + 1, ts));
                        let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
                        base + sign * (6.0 + 4.0 * rng.uniform()) * std
                    } else {
                        base + rng.normal() * std
                    };
                    writeln!(w, "{stamp},{d},{},{:.3}", t + 1, v)?;
                }
            }
        }
        w.flush()?;
    }
    let rows = steps * args.devices * 5;
    println!("generated {rows} readings for {} devices x 5 tags ({} hour(s) at 5 s) with {} injected anomalies: {}", args.devices, args.hours, injected.len(), input.display());

    let score_args = ScoreArgs {
        input,
        from: None,
        to: None,
        out: dir.join("predictions"),
        format: Format::Parquet,
        layout: Layout::Combined,
        json: false,
    };
    let (summary, scored) = score::score_file(g, &score_args).await?;
    score::print_summary(&summary, &score_args.out.display().to_string());

    let mut found = 0usize;
    for (k, range) in &scored.groups {
        let (d, t) = &scored.keys[*k as usize];
        let (Ok(d), Ok(t)) = (d.parse::<u32>(), t.parse::<u32>()) else {
            continue;
        };
        for r in range.clone() {
            if scored.prediction[r] == 1 && injected.contains(&(d, t, scored.ts[r])) {
                found += 1;
            }
        }
    }
    let recall = if injected.is_empty() {
        1.0
    } else {
        found as f64 / injected.len() as f64
    };
    println!(
        "anomalies: {} flagged; {found} of {} injected found ({:.1}%), {} flagged among normal readings (the models were fitted with nu=0.01)",
        scored.anomalies,
        injected.len(),
        recall * 100.0,
        scored.anomalies - found
    );
    println!(
        "demo finished in {}; predictions are Parquet files you can open with pandas or DuckDB.",
        util::secs(started.elapsed())
    );
    Ok(if summary.failed_models == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
