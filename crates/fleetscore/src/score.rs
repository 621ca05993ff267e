//! `fleetscore score`: readings from a file, predictions to a folder.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use fleetscore_codecs::{
    read_readings, write_predictions, OutputFormat, PredictionColumns, PredictionLayout,
};
use fleetscore_core::parse_ts;
use fleetscore_jobs::{ModelFailure, Scored};
use serde::Serialize;

use crate::cli::{Format, Global, Layout, ScoreArgs};
use crate::util;

/// What `score` prints at the end (and with --json).
#[derive(Serialize)]
pub struct Summary {
    pub models: usize,
    pub rows: usize,
    pub anomalies: usize,
    pub failed_models: usize,
    pub failures: Vec<ModelFailure>,
    pub files: Vec<String>,
    pub seconds: Timings,
}

#[derive(Serialize, Default)]
pub struct Timings {
    pub load_models: f64,
    pub read: f64,
    pub score: f64,
    pub write: f64,
    pub total: f64,
}

/// `I/N` (or `auto/N`, with I from `JOB_COMPLETION_INDEX`).
pub fn parse_shard(text: &str) -> anyhow::Result<(u64, u64)> {
    let bad =
        || anyhow::anyhow!("--shard {text:?}: write I/N with 0 <= I < N, e.g. 0/4, or auto/N");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let n: u64 = n.trim().parse().map_err(|_| bad())?;
    let i: u64 = if i.trim() == "auto" {
        let v = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
            anyhow::anyhow!("--shard {text:?}: JOB_COMPLETION_INDEX is not set (Kubernetes sets it in Indexed Jobs)")
        })?;
        v.trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("JOB_COMPLETION_INDEX {v:?} is not a number"))?
    } else {
        i.trim().parse().map_err(|_| bad())?
    };
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The shard of a (device, tag) pair among `n`: FNV-1a 64 of
/// `device \0 tag`, modulo `n`. Stable across runs, machines and versions.
pub fn shard_of(device: &str, tag: &str, n: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.bytes().chain([0u8]).chain(tag.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % n
}

/// Scores `args.input` and writes the predictions; shared with `demo`.
pub async fn score_file(g: &Global, args: &ScoreArgs) -> anyhow::Result<(Summary, Scored)> {
    let t0 = Instant::now();
    let from = args
        .from
        .as_deref()
        .map(parse_ts)
        .transpose()
        .context("--from")?;
    let to = args
        .to
        .as_deref()
        .map(parse_ts)
        .transpose()
        .context("--to")?;
    if let (Some(f), Some(t)) = (from, to) {
        anyhow::ensure!(
            f < t,
            "--from must be before --to (the range is from <= TS < to)"
        );
    }
    if args.layout == Layout::PerModel && args.format != Format::Csv {
        anyhow::bail!("--layout per-model writes the reference job's CSV files; add --format csv");
    }
    let registry = util::registry(g)?;
    let input = args.input.clone();
    // Model pack load and file parsing are independent: overlap them.
    let read = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        read_readings(&input).map(|r| (r, t.elapsed()))
    });
    let t = Instant::now();
    let pack = registry.pack().await.context("loading the model pack")?;
    let load_models = t.elapsed();
    let (mut readings, read_time) = read.await??;
    let mut out_dir = args.out.clone();
    if let Some(shard) = &args.shard {
        let (i, n) = parse_shard(shard)?;
        let keep: Vec<bool> = readings
            .keys
            .iter()
            .map(|(d, t)| shard_of(d, t, n) == i)
            .collect();
        let mut w = 0;
        for r in 0..readings.len() {
            if keep[readings.key[r] as usize] {
                readings.ts[w] = readings.ts[r];
                readings.value[w] = readings.value[r];
                readings.key[w] = readings.key[r];
                w += 1;
            }
        }
        readings.ts.truncate(w);
        readings.value.truncate(w);
        readings.key.truncate(w);
        out_dir = out_dir.join(format!("shard-{i}-of-{n}"));
    }
    if pack.is_empty() {
        anyhow::bail!(
            "no models are registered in {}; import them first with `fleetscore models import PATH`",
            registry.store().url()
        );
    }
    readings.retain_time(from, to);

    let t = Instant::now();
    let rows = readings.len() as u64;
    let pb = util::progress(g, rows, "scoring");
    let scored =
        tokio::task::block_in_place(|| fleetscore_jobs::score(readings, &pack, &|n| pb.inc(n)));
    pb.finish_and_clear();
    let score_time = t.elapsed();

    let t = Instant::now();
    let format = match args.format {
        Format::Parquet => OutputFormat::Parquet,
        Format::Csv => OutputFormat::Csv,
    };
    let layout = match args.layout {
        Layout::Combined => PredictionLayout::Combined,
        Layout::PerModel => PredictionLayout::PerModel,
    };
    let cols = PredictionColumns {
        ts: &scored.ts,
        value: &scored.value,
        prediction: &scored.prediction,
        score: &scored.score,
        keys: &scored.keys,
        groups: &scored.groups,
    };
    let parts = rayon::current_num_threads();
    let files = tokio::task::block_in_place(|| {
        write_predictions(&out_dir, format, layout, &cols, parts, util::now_ns())
    })?;
    let write_time = t.elapsed();

    let rows = scored.groups.iter().map(|(_, r)| r.len()).sum();
    let summary = Summary {
        models: scored.groups.len(),
        rows,
        anomalies: scored.anomalies,
        failed_models: scored.failures.len(),
        failures: scored.failures.clone(),
        files: files.iter().map(|f| f.path.display().to_string()).collect(),
        seconds: Timings {
            load_models: load_models.as_secs_f64(),
            read: read_time.as_secs_f64(),
            score: score_time.as_secs_f64(),
            write: write_time.as_secs_f64(),
            total: t0.elapsed().as_secs_f64(),
        },
    };
    Ok((summary, scored))
}

pub async fn run(g: &Global, args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let (summary, _) = score_file(g, &args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, &args.out.display().to_string());
    }
    Ok(if summary.failed_models == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

pub fn print_summary(s: &Summary, out: &str) {
    const SHOWN: usize = 20;
    for f in s.failures.iter().take(SHOWN) {
        eprintln!(
            "failed: model ({}, {}), {} reading(s): {}",
            f.device, f.tag, f.rows, f.reason
        );
    }
    if s.failures.len() > SHOWN {
        eprintln!(
            "… and {} more failed model(s); --json lists them all",
            s.failures.len() - SHOWN
        );
    }
    let t = &s.seconds;
    println!(
        "scored {} model(s), {} reading(s): {} anomalies, {} failed model(s) in {:.3}s (models {:.3}s, read {:.3}s, score {:.3}s, write {:.3}s)",
        s.models, s.rows, s.anomalies, s.failed_models, t.total, t.load_models, t.read, t.score, t.write
    );
    println!("predictions: {} file(s) in {out}", s.files.len());
}
