//! `fleetscore ingest` and `fleetscore aggregate`: the batch path from
//! readings files to the store's raw/ and windows/ partitions.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use fleetscore_core::parse_ts;
use fleetscore_store::IngestOutcome;
use fleetscore_stream::WindowSpec;

use crate::cli::{AggregateArgs, Global, IngestArgs};
use crate::util;

pub async fn ingest(g: &Global, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let store = util::store(g)?;
    let mut done: Vec<IngestOutcome> = Vec::new();
    let mut failures = Vec::new();
    for path in &args.files {
        match fleetscore_store::ingest_file(&store, path).await {
            Ok(o) => done.push(o),
            Err(e) => failures.push((path.display().to_string(), e.to_string())),
        }
    }
    let readings: usize = done.iter().map(|o| o.readings).sum();
    let partitions: usize = done.iter().map(|o| o.keys.len()).sum();
    let seconds = started.elapsed();
    if args.json {
        let failed: Vec<_> = failures
            .iter()
            .map(|(p, e)| serde_json::json!({"path": p, "error": e}))
            .collect();
        let doc = serde_json::json!({
            "files": done.len(),
            "readings": readings,
            "partitions": partitions,
            "ingested": done,
            "failed": failed,
            "store": store.url(),
            "seconds": seconds.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (p, e) in &failures {
            // File errors already start with the path.
            if e.starts_with(p.as_str()) {
                eprintln!("failed: {e}");
            } else {
                eprintln!("failed: {p}: {e}");
            }
        }
        println!(
            "ingested {} file(s), {readings} reading(s) into {partitions} raw partition object(s) in {} in {}, {} failed",
            done.len(),
            store.url(),
            util::secs(seconds),
            failures.len()
        );
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

pub async fn aggregate(g: &Global, args: AggregateArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let from = parse_ts(&args.from).context("--from")?;
    let to = parse_ts(&args.to).context("--to")?;
    let spec = match args.hop {
        Some(hop) => WindowSpec::hopping(args.size, hop),
        None => WindowSpec::tumbling(args.size),
    };
    let store = util::store(g)?;
    let out = fleetscore_store::aggregate(&store, spec, from, to).await?;
    let seconds = started.elapsed();
    if args.json {
        let mut doc = serde_json::to_value(&out)?;
        doc["partitions"] = out.keys.len().into();
        doc["spec"] = spec.to_string().into();
        doc["store"] = store.url().into();
        doc["seconds"] = seconds.as_secs_f64().into();
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "aggregated {} reading(s) from {} raw object(s) into {} window(s) of {spec} starting in [{}, {}), {} partition(s) under {} in {}",
            out.readings,
            out.raw_files,
            out.windows,
            out.from,
            out.to,
            out.keys.len(),
            fleetscore_store::window_prefix(&spec),
            util::secs(seconds)
        );
    }
    Ok(ExitCode::SUCCESS)
}
