//! `fleetscore models train`: fits a OneClassSVM per (device, tag) from the
//! readings stored in raw/, in Rust, and registers each as a model version.
//!
//! The model input is the reference deployment's: one feature, the reading
//! value, one row per reading. A series' rows are its readings in
//! `[--from, --to)` in timestamp order (equal timestamps in object-key
//! order, then row order), which fixes libsvm's initial point and so the
//! fitted model: training the same stored readings again gives the same
//! model, which the registry recognises by its content hash (no new
//! version). The fit itself is [`fleetscore_models::train`], libsvm's
//! algorithm as scikit-learn runs it.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context};
use fleetscore_core::{format_ts, parse_ts, ModelKey};
use fleetscore_models::{Gamma, ScalerChoice, SvmParams, TrainParams};
use fleetscore_store::{lake, ImportOutcome, ImportRequest, Store};
use rayon::prelude::*;

use crate::cli::{Global, TrainArgs};
use crate::util;

/// One series' readings in the range: (ts, value), in time order.
type Series = BTreeMap<(String, String), Vec<(i64, f64)>>;

/// Reads the raw/ objects whose hour overlaps `[from, to)` (in the lake's
/// order: by hour, then key) and groups their readings in the range by
/// (device, tag). Returns the series and the number of objects read.
async fn read_series(
    store: &Store,
    from: i64,
    to: i64,
    device: Option<&str>,
    tag: Option<&str>,
) -> anyhow::Result<(Series, usize)> {
    let objects = lake::load_raw_objects(store, from, to).await?;
    let mut series = Series::new();
    for r in &objects {
        // Resolve each object's keys once; None = filtered out.
        let slots: Vec<Option<(String, String)>> = r
            .keys()
            .map(|(d, t)| {
                let keep = device.is_none_or(|x| x == d) && tag.is_none_or(|x| x == t);
                keep.then(|| (d.to_owned(), t.to_owned()))
            })
            .collect();
        for ((&ts, &v), &k) in r.ts().iter().zip(r.values()).zip(r.key_ids()) {
            if let Some(key) = &slots[k as usize] {
                series.entry(key.clone()).or_default().push((ts, v));
            }
        }
    }
    for rows in series.values_mut() {
        // Stable: equal timestamps keep object-key, then row order.
        rows.sort_by_key(|(ts, _)| *ts);
    }
    Ok((series, objects.len()))
}

#[derive(serde::Serialize)]
struct Skipped {
    device: String,
    tag: String,
    readings: usize,
}

#[derive(serde::Serialize)]
struct Failed {
    device: String,
    tag: String,
    error: String,
}

pub async fn run(g: &Global, args: TrainArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let from = parse_ts(&args.from).context("--from")?;
    let to = parse_ts(&args.to).context("--to")?;
    if from >= to {
        bail!("--from must be before --to (the range is from <= ts < to)");
    }
    if !(args.nu > 0.0 && args.nu <= 1.0) {
        bail!("--nu must be in (0, 1], not {}", args.nu);
    }
    let params = TrainParams {
        scaler: args.scaler,
        svm: SvmParams {
            nu: args.nu,
            gamma: args.gamma,
            ..SvmParams::default()
        },
    };
    let registry = util::registry(g)?;
    let (series, objects) = read_series(
        registry.store(),
        from,
        to,
        args.device.as_deref(),
        args.tag.as_deref(),
    )
    .await?;
    let readings: usize = series.values().map(Vec::len).sum();
    let gamma_text = match args.gamma {
        Gamma::Scale => "scale".to_string(),
        Gamma::Auto => "auto".to_string(),
        Gamma::Value(v) => v.to_string(),
    };
    let scaler_text = match args.scaler {
        ScalerChoice::Standard => "standard",
        ScalerChoice::None => "none",
    };
    let (from_text, to_text) = (format_ts(from), format_ts(to));

    let mut skipped = Vec::new();
    let mut jobs = Vec::new();
    for ((device, tag), rows) in series {
        if rows.len() < args.min_readings {
            skipped.push(Skipped {
                device,
                tag,
                readings: rows.len(),
            });
        } else {
            jobs.push((device, tag, rows));
        }
    }

    let train_started = std::time::Instant::now();
    let pb = util::progress(g, jobs.len() as u64, "training models");
    let results: Vec<(String, String, Result<ImportRequest, String>)> = jobs
        .into_par_iter()
        .map(|(device, tag, rows)| {
            let r = (|| {
                let key = ModelKey::new(device.as_str(), tag.as_str()).map_err(|e| e.to_string())?;
                let values: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
                let (model, info) =
                    fleetscore_models::train(&values, 1, &params).map_err(|e| e.to_string())?;
                if info.hit_max_iter {
                    return Err("the solver stopped at its iteration limit".to_string());
                }
                Ok(ImportRequest {
                    key,
                    model: model.into(),
                    source: format!(
                        "fleetscore models train: {} readings in [{from_text}, {to_text}), nu={}, gamma={gamma_text}, scaler={scaler_text}",
                        values.len(),
                        args.nu
                    ),
                    input: Default::default(),
                })
            })();
            pb.inc(1);
            (device, tag, r)
        })
        .collect();
    pb.finish_and_clear();
    let train_secs = train_started.elapsed().as_secs_f64();

    let mut requests = Vec::new();
    let mut failed = Vec::new();
    for (device, tag, r) in results {
        match r {
            Ok(req) => requests.push(req),
            Err(error) => failed.push(Failed { device, tag, error }),
        }
    }
    let trained = requests.len();
    let outcomes = if requests.is_empty() {
        Vec::new()
    } else {
        registry.import(requests, &util::now_rfc3339()).await?
    };
    let count = |f: fn(&ImportOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let added = count(|o| matches!(o, ImportOutcome::Added { .. }));
    let updated = count(|o| matches!(o, ImportOutcome::NewVersion { .. }));
    let unchanged = count(|o| matches!(o, ImportOutcome::Unchanged { .. }));
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        let doc = serde_json::json!({
            "from": from_text, "to": to_text,
            "raw_objects": objects, "readings": readings,
            "trained": trained, "added": added, "new_versions": updated, "unchanged": unchanged,
            "skipped": skipped.len(), "failed": failed.len(),
            "min_readings": args.min_readings,
            "params": {"nu": args.nu, "gamma": gamma_text, "scaler": scaler_text, "kernel": "rbf"},
            "train_seconds": train_secs, "seconds": secs,
            "models": outcomes, "skipped_series": skipped, "failed_series": failed,
            "store": registry.store().url(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for f in &failed {
            eprintln!("failed: ({}, {}): {}", f.device, f.tag, f.error);
        }
        if trained == 0 && failed.is_empty() {
            eprintln!(
                "no series with at least {} reading(s) in [{from_text}, {to_text}) ({} reading(s) in {objects} raw object(s)); ingest readings first or widen the range",
                args.min_readings, readings
            );
        }
        println!(
            "trained {trained} model(s) from {readings} reading(s) in [{from_text}, {to_text}) in {secs:.3}s (fitting {train_secs:.3}s): {added} added, {updated} new version(s), {unchanged} unchanged; {} skipped (fewer than {} readings), {} failed",
            skipped.len(),
            args.min_readings,
            failed.len()
        );
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
