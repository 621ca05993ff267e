//! `fleetscore score`: readings from a file or a window of the store's
//! raw/ partitions, predictions to a folder or into the store. With
//! `--schedule` and `--shard auto/N` this is what a Kubernetes CronJob's
//! Indexed Job runs, one pod per shard (see `schedule export`).

use std::process::ExitCode;
use std::time::Instant;

use std::collections::HashSet;

use anyhow::Context;
use fleetscore_codecs::{
    predictions_parquet_bytes, read_readings, write_predictions, OutputFormat, PredictionColumns,
    PredictionLayout, Readings,
};
use fleetscore_core::{format_ts, parse_ts};
use fleetscore_jobs::schedule::latest_due;
use fleetscore_jobs::{ModelFailure, Scored};
use fleetscore_store::lake::{self, Manifest, ShardOutput};
use fleetscore_store::{Index, ModelInput, Store};
use serde::Serialize;

use crate::cli::{Format, Global, Layout, ScoreArgs};
use crate::{config, util};

/// What `score` prints at the end (and with --json).
#[derive(Serialize)]
pub struct Summary {
    pub models: usize,
    pub rows: usize,
    pub anomalies: usize,
    pub failed_models: usize,
    pub failures: Vec<ModelFailure>,
    /// Pairs left out because their model takes windows, not readings
    /// (scheduled jobs score those).
    pub window_models_skipped: usize,
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

/// Where the readings come from.
enum Source {
    /// A readings file, optionally cut to `[from, to)`.
    File {
        path: std::path::PathBuf,
        from: Option<i64>,
        to: Option<i64>,
    },
    /// The store's raw/ partitions of the window `[from, to)`.
    Store { from: i64, to: i64 },
}

/// Works out the input from the flags: a file, or a store window.
fn source(g: &Global, args: &ScoreArgs) -> anyhow::Result<Source> {
    let ts = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(parse_ts)
            .transpose()
            .with_context(|| flag.to_string())
    };
    let (from, to) = (ts("--from", &args.from)?, ts("--to", &args.to)?);
    if let (Some(f), Some(t)) = (from, to) {
        anyhow::ensure!(
            f < t,
            "--from must be before --to (the range is from <= TS < to)"
        );
    }
    if let Some(path) = &args.input {
        return Ok(Source::File {
            path: path.clone(),
            from,
            to,
        });
    }
    if let Some(name) = &args.schedule {
        let config = config::load(g.config.as_deref())?;
        let specs = config.schedule_specs()?;
        let Some(spec) = specs.iter().find(|s| &s.name == name) else {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            anyhow::bail!(
                "--schedule {name:?}: no such schedule in {} (it has: {}); add a [[schedules]] entry or pick one of those",
                g.config
                    .as_deref()
                    .map_or("the default config".to_string(), |p| p.display().to_string()),
                names.join(", ")
            );
        };
        let now = match &args.now {
            Some(t) => parse_ts(t).context("--now")?,
            None => util::now_ns(),
        };
        let t = latest_due(spec, now)?.ok_or_else(|| {
            anyhow::anyhow!(
                "--schedule {name:?}: no window of cron {:?} is due at {}",
                spec.cron,
                format_ts(now)
            )
        })?;
        let (from, to) = spec.window(t)?;
        return Ok(Source::Store { from, to });
    }
    match (from, to) {
        (Some(from), Some(to)) => Ok(Source::Store { from, to }),
        _ => anyhow::bail!(
            "score needs readings: --input FILE, or a window of the store's raw/ partitions: --from TIME --to TIME, or --schedule NAME"
        ),
    }
}

/// Leaves out the readings of pairs whose live model (own, else the
/// `(*, tag)` fallback) takes windows: scoring their raw values would give
/// wrong predictions. Returns how many pairs, with a warning.
fn drop_window_models(index: &Index, readings: &mut Readings) -> usize {
    let window: HashSet<&str> = index
        .models
        .iter()
        .filter(|(_, e)| {
            e.live_version()
                .is_some_and(|v| ModelInput::of(v) != ModelInput::Raw)
        })
        .map(|(k, _)| k.as_str())
        .collect();
    if window.is_empty() {
        return 0;
    }
    let raw: HashSet<&str> = index
        .models
        .keys()
        .map(String::as_str)
        .filter(|k| !window.contains(k))
        .collect();
    let takes_windows = |d: &str, t: &str| {
        let own = format!("{d}/{t}");
        window.contains(own.as_str())
            || (!raw.contains(own.as_str()) && window.contains(format!("*/{t}").as_str()))
    };
    let skip: Vec<bool> = readings.keys().map(|(d, t)| takes_windows(d, t)).collect();
    let mut used = vec![false; readings.key_count()];
    for &k in readings.key_ids() {
        used[k as usize] = true;
    }
    let skipped = (0..skip.len()).filter(|&k| skip[k] && used[k]).count();
    if skipped > 0 {
        eprintln!(
            "warning: {skipped} (device, tag) pair(s) have window-input models and are not scored here; \
             `score` scores raw-input models, scheduled jobs (`serve`, `backfill`) score windows"
        );
        let keep: Vec<bool> = skip.iter().map(|s| !s).collect();
        readings.retain_keys(&keep);
    }
    skipped
}

/// Keeps the readings of the (device, tag) pairs of shard `i` of `n`.
fn keep_shard(readings: &mut Readings, i: u64, n: u64) {
    let keep: Vec<bool> = readings
        .keys()
        .map(|(d, t)| shard_of(d, t, n) == i)
        .collect();
    readings.retain_keys(&keep);
}

/// Scores the readings `args` name and writes the predictions.
pub async fn score(g: &Global, args: &ScoreArgs) -> anyhow::Result<(Summary, Scored)> {
    let t0 = Instant::now();
    if args.layout == Layout::PerModel && args.format != Format::Csv {
        anyhow::bail!("--layout per-model writes the reference job's CSV files; add --format csv");
    }
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let src = source(g, args)?;
    if args.out.is_none() && !args.write_store {
        anyhow::bail!(
            "score needs somewhere to write: --out DIR (a folder), or --write-store (into the store's predictions/, with a store window)"
        );
    }
    if args.write_store && !matches!(src, Source::Store { .. }) {
        anyhow::bail!(
            "--write-store needs a window of the store (--from/--to or --schedule), not --input"
        );
    }
    let registry = util::registry(g)?;
    // Model pack load and reading the input are independent: overlap them.
    let read = match &src {
        Source::File { path, .. } => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                Ok::<_, anyhow::Error>((read_readings(&path)?, t.elapsed()))
            })
        }
        Source::Store { from, to } => {
            let (store, from, to) = (registry.store().clone(), *from, *to);
            tokio::spawn(async move {
                let t = Instant::now();
                let r = lake::load_raw(&store, from, to)
                    .await
                    .with_context(|| format!("reading raw/ of {}", store.url()))?;
                Ok((r, t.elapsed()))
            })
        }
    };
    let t = Instant::now();
    let pack = registry.pack().await.context("loading the model pack")?;
    let load_models = t.elapsed();
    // With Python models registered (and the runtime enabled), its
    // workers start while the input is read.
    let index = registry
        .index_shared()
        .await
        .context("reading the model index")?;
    let config = crate::config::load(g.config.as_deref())?;
    let has_python = index.models.values().any(|e| {
        e.live_version()
            .is_some_and(|v| v.runtime == fleetscore_store::Runtime::Python)
    });
    let pool = if has_python {
        let config = config.clone();
        Some(tokio::spawn(async move {
            fleetscore_server::scheduler::python_pool(&config).await
        }))
    } else {
        None
    };
    let (mut readings, read_time) = read.await??;
    // The pack holds the native models only: Python ones are in the index.
    if pack.is_empty() && index.models.is_empty() {
        anyhow::bail!(
            "no models are registered in {}; import them first with `fleetscore models import PATH`",
            registry.store().url()
        );
    }
    if let Some((i, n)) = shard {
        keep_shard(&mut readings, i, n);
    }
    if let Source::File { from, to, .. } = src {
        readings.retain_time(from, to);
    }
    let window_models_skipped = drop_window_models(&index, &mut readings);
    // Pairs of other shards or times: not scored, not failed.
    readings.drop_unused_keys();
    if let Source::Store { from, to } = src {
        tracing::info!(from = %format_ts(from), to = %format_ts(to), rows = readings.len(), "scoring a store window");
    }

    // Pairs whose model runs in Python: scored by the runtime when the
    // config enables it, else failed `python_disabled`.
    let pool = match pool {
        Some(p) => p.await??,
        None => None,
    };
    let python = fleetscore_jobs::python::PythonModels::resolve(
        &index,
        readings.keys(),
        pool,
        registry.store(),
    );
    drop(index);

    let t = Instant::now();
    let rows = readings.len() as u64;
    let pb = util::progress(g, rows, "scoring");
    let scored = tokio::task::block_in_place(|| {
        fleetscore_jobs::python::score_with_python(readings, &pack, &python, &|n| pb.inc(n))
    })?;
    pb.finish_and_clear();
    let score_time = t.elapsed();

    let t = Instant::now();
    let outputs = scored.outputs();
    let cols = scored.columns(&outputs);
    let mut files = Vec::new();
    if let Some(out) = &args.out {
        let out_dir = match shard {
            Some((i, n)) => out.join(format!("shard-{i}-of-{n}")),
            None => out.clone(),
        };
        let format = match args.format {
            Format::Parquet => OutputFormat::Parquet,
            Format::Csv => OutputFormat::Csv,
        };
        let layout = match args.layout {
            Layout::Combined => PredictionLayout::Combined,
            Layout::PerModel => PredictionLayout::PerModel,
        };
        let parts = rayon::current_num_threads();
        let written = tokio::task::block_in_place(|| {
            write_predictions(&out_dir, format, layout, &cols, parts, util::now_ns())
        })?;
        files.extend(written.iter().map(|f| f.path.display().to_string()));
    }
    if let (true, Source::Store { from, to }) = (args.write_store, &src) {
        let (i, n) = shard.unwrap_or((0, 1));
        files.extend(write_store(registry.store(), &scored, &cols, *from, *to, i, n).await?);
    }
    let write_time = t.elapsed();

    let rows = scored.groups.iter().map(|(_, r)| r.len()).sum();
    let summary = Summary {
        models: scored.groups.len(),
        rows,
        anomalies: scored.anomalies,
        failed_models: scored.failures.len(),
        failures: scored.failures.clone(),
        window_models_skipped,
        files,
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

/// Writes one shard's predictions of the window `[from, to)` into the
/// store, beside (never over) the scheduled jobs' outputs of the window,
/// as the lake names them ([`ShardOutput`]):
///
/// ```text
/// predictions/date=D/hour=H/part-raw-W-shard-I-of-N.parquet
/// predictions/date=D/hour=H/manifest-raw-W-shard-I-of-N.json   (last; job 0)
/// ```
///
/// (`raw-W-HHMMSS-shard-…` for a window starting at HH:MM:SS, not on the
/// hour.)
///
/// The job runner's stale-part cleanup only touches `part-raw-W-<number>`,
/// and these names hold no bare number, so neither side deletes the
/// other's objects. Outputs of the same window written with another shard
/// count are deleted, so changing N does not leave duplicates behind.
/// Returns the keys written.
async fn write_store(
    store: &Store,
    scored: &Scored,
    cols: &PredictionColumns<'_>,
    from: i64,
    to: i64,
    i: u64,
    n: u64,
) -> anyhow::Result<Vec<String>> {
    // A window that does not start on the hour (say 09:15-09:30) gets its
    // start in the names, so the windows of one hour keep apart.
    let output = ShardOutput::new("raw", from, to, i, n);
    let part = output.part_key();
    let bytes = tokio::task::block_in_place(|| predictions_parquet_bytes(cols, &part))?;
    store
        .put(&part, bytes)
        .await
        .with_context(|| format!("writing {part} to {}", store.url()))?;
    let devices = scored.device_counts();
    let manifest = Manifest {
        format: lake::MANIFEST_FORMAT.into(),
        job: 0,
        window_start: format_ts(from),
        window_end: format_ts(to),
        mode: "raw".into(),
        parts: vec![part.clone()],
        models: (scored.groups.len() + scored.failures.len()) as u64,
        rows: scored.rows() as u64,
        anomalies: scored.anomalies as u64,
        failed_models: scored.failures.len() as u64,
        devices,
    };
    let key = output
        .finish(store, &manifest)
        .await
        .with_context(|| format!("writing the manifest of {part} to {}", store.url()))?;
    Ok(vec![part, key])
}

pub async fn run(g: &Global, args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let (summary, _) = score(g, &args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let out = match &args.out {
            Some(out) => out.display().to_string(),
            None => util::store_url(g),
        };
        print_summary(&summary, &out);
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
