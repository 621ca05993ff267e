//! `fleetscore models import|list|show|pack`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use fleetscore_core::ModelKey;
use fleetscore_store::{ImportOutcome, ImportRequest};
use rayon::prelude::*;

use crate::cli::{Global, ImportArgs};
use crate::util;

/// One file to import and the key it maps to.
struct Job {
    path: PathBuf,
    key: Result<ModelKey, String>,
}

fn files_in(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files = Vec::new();
        for e in std::fs::read_dir(path)
            .with_context(|| format!("reading the folder {}", path.display()))?
        {
            let e = e?;
            let name = e.file_name();
            if e.file_type()?.is_file() && !name.to_string_lossy().starts_with('.') {
                files.push(e.path());
            }
        }
        files.sort();
        Ok(files)
    } else if path.exists() {
        Ok(vec![path.to_path_buf()])
    } else {
        bail!("{}: no such file or folder", path.display())
    }
}

fn key_from_name(path: &Path) -> Result<ModelKey, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match ModelKey::from_reference_file_name(&name) {
        Some(key) => key.map_err(|e| format!("the file name {name:?} gives {e}; rename it, or use --device/--tag for one file, or --manifest")),
        None => Err(format!("cannot tell which (device, tag) {name:?} belongs to: name it model_{{device}}_{{tag}}, or use --device/--tag for one file, or --manifest")),
    }
}

fn read_manifest(path: &Path) -> anyhow::Result<Vec<Job>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the manifest {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut jobs = Vec::new();
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.split(',').map(str::trim).eq(["path", "device", "tag"]) => {}
        _ => bail!(
            "{}: line 1: the header must be `path,device,tag`",
            path.display()
        ),
    }
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [p, d, t] = f[..] else {
            bail!(
                "{}: line {}: expected 3 fields path,device,tag, found {}",
                path.display(),
                i + 1,
                f.len()
            );
        };
        let key = ModelKey::new(d, t)
            .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), i + 1))?;
        jobs.push(Job {
            path: base.join(p),
            key: Ok(key),
        });
    }
    Ok(jobs)
}

pub async fn run(g: &Global, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let input = fleetscore_store::ModelInput::parse(&args.input)
        .map_err(|e| anyhow::anyhow!("--input: {e}"))?;
    let runtime = fleetscore_store::Runtime::parse(&args.runtime)
        .map_err(|e| anyhow::anyhow!("--runtime: {e}"))?;
    let python = match runtime {
        fleetscore_store::Runtime::Native => {
            if args.kind.is_some() || !args.methods.is_empty() {
                bail!("--kind and --methods are for --runtime python (a native model knows its kind and methods)");
            }
            None
        }
        fleetscore_store::Runtime::Python => Some((
            args.kind
                .as_deref()
                .map(fleetscore_models::Kind::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--kind: {e}"))?,
            python_methods(&args.methods)?,
        )),
    };
    let mut jobs = Vec::new();
    if let Some(m) = &args.manifest {
        jobs.extend(read_manifest(m)?);
    }
    let mut files = Vec::new();
    for p in &args.paths {
        files.extend(files_in(p)?);
    }
    if let (Some(d), Some(t)) = (&args.device, &args.tag) {
        if files.len() != 1 {
            bail!("--device/--tag name one model, but {} files were given; use --manifest for several", files.len());
        }
        let key = ModelKey::new(d.as_str(), t.as_str())?;
        jobs.push(Job {
            path: files.remove(0),
            key: Ok(key),
        });
    }
    jobs.extend(files.into_iter().map(|path| Job {
        key: key_from_name(&path),
        path,
    }));
    if jobs.is_empty() {
        bail!("no model files found");
    }

    // The size a model file may decompress to, as for uploads.
    let limits = fleetscore_models::ImportLimits::new(
        crate::config::load(g.config.as_deref())?
            .server
            .max_model_bytes as u64,
    );
    let started = std::time::Instant::now();
    let pb = util::progress(g, jobs.len() as u64, "reading models");
    let parsed: Vec<(PathBuf, Result<ImportRequest, String>)> = jobs
        .into_par_iter()
        .map(|job| {
            let r = (|| {
                let key = job.key?;
                let bytes = std::fs::read(&job.path).map_err(|e| e.to_string())?;
                let model = match &python {
                    Some((kind, methods)) => python_model(bytes, *kind, methods, &limits)?,
                    None => fleetscore_models::import_with_limits(&bytes, &limits)
                        .map_err(native_refusal)?
                        .into(),
                };
                Ok(ImportRequest {
                    key,
                    model,
                    source: job.path.display().to_string(),
                    input: input.clone(),
                })
            })();
            pb.inc(1);
            (job.path, r)
        })
        .collect();
    pb.finish_and_clear();

    let mut requests = Vec::new();
    let mut failures = Vec::new();
    for (path, r) in parsed {
        match r {
            Ok(req) => requests.push(req),
            Err(e) => failures.push((path, e)),
        }
    }
    let registry = util::registry(g)?;
    let outcomes = registry.import(requests, &util::now_rfc3339()).await?;
    let count = |f: fn(&ImportOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let added = count(|o| matches!(o, ImportOutcome::Added { .. }));
    let updated = count(|o| matches!(o, ImportOutcome::NewVersion { .. }));
    let unchanged = count(|o| matches!(o, ImportOutcome::Unchanged { .. }));
    if args.json {
        let failed: Vec<_> = failures
            .iter()
            .map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "error": e}))
            .collect();
        let doc = serde_json::json!({
            "imported": outcomes,
            "failed": failed,
            "added": added, "new_versions": updated, "unchanged": unchanged,
            "store": registry.store().url(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (p, e) in &failures {
            eprintln!("failed: {}: {e}", p.display());
        }
        println!(
            "imported {} model file(s) into {} in {}: {added} added, {updated} new version(s), {unchanged} unchanged, {} failed",
            outcomes.len() + failures.len(),
            registry.store().url(),
            util::secs(started.elapsed()),
            failures.len()
        );
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// The methods of `--methods`, checked to be Python names.
pub fn python_methods(methods: &[String]) -> anyhow::Result<Vec<String>> {
    fleetscore_store::PythonModel::check_methods(methods)
        .map_err(|e| anyhow::anyhow!("--methods: {e}"))
}

/// A model file for the Python runtime: stored as given, nothing in it
/// read or run here.
pub fn python_model(
    bytes: Vec<u8>,
    kind: Option<fleetscore_models::Kind>,
    methods: &[String],
    limits: &fleetscore_models::ImportLimits,
) -> Result<fleetscore_store::ModelBody, String> {
    if bytes.len() as u64 > limits.max_decompressed_bytes {
        return Err(format!(
            "the file holds {} bytes, more than the {} a model may have ([server] max_model_bytes)",
            bytes.len(),
            limits.max_decompressed_bytes
        ));
    }
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(fleetscore_store::ModelBody::Python(
        fleetscore_store::PythonModel {
            bytes: bytes.into(),
            kind,
            methods: methods.to_vec(),
        },
    ))
}

/// The native reader's refusal, with how to run the model in Python.
pub fn native_refusal(e: fleetscore_models::ImportError) -> String {
    match e {
        fleetscore_models::ImportError::TooLarge { .. } => format!("{e} ([server] max_model_bytes)"),
        e => format!(
            "{e}. To run it in Python instead, import it with --runtime python: its code will then be executed, by the Python runtime of a deployment with [python] enabled = true (see the README's \"Python models\")"
        ),
    }
}

pub async fn list(g: &Global, json: bool) -> anyhow::Result<ExitCode> {
    let registry = util::registry(g)?;
    let index = registry.index().await?;
    if json {
        let models: Vec<_> = index.models.values().collect();
        println!("{}", serde_json::to_string_pretty(&models)?);
        return Ok(ExitCode::SUCCESS);
    }
    if index.models.is_empty() {
        println!(
            "no models registered in {}; import some with `fleetscore models import PATH`",
            registry.store().url()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<16} {:>4} {:>8} {:<7} MODEL",
        "DEVICE", "TAG", "LIVE", "VERSIONS", "RUNTIME"
    );
    for e in index.models.values() {
        let live = e.live_version();
        let desc = live.map(|v| v.description.as_str()).unwrap_or("?");
        println!(
            "{:<16} {:<16} {:>4} {:>8} {:<7} {desc}",
            e.device,
            e.tag,
            format!("v{}", e.live),
            e.versions.len(),
            live.map_or("?", |v| v.runtime.name()),
        );
    }
    println!("{} model(s)", index.models.len());
    Ok(ExitCode::SUCCESS)
}

pub async fn show(g: &Global, device: &str, tag: &str, json: bool) -> anyhow::Result<ExitCode> {
    let registry = util::registry(g)?;
    let key = ModelKey::new(device, tag)?;
    let index = registry.index().await?;
    let Some(entry) = index.models.get(&format!("{device}/{tag}")) else {
        bail!("no model registered for {key}; `fleetscore models list` shows what is registered");
    };
    if let Some(v) = entry
        .live_version()
        .filter(|v| v.runtime == fleetscore_store::Runtime::Python)
    {
        return show_python(entry, v, &key, json);
    }
    let model = registry.model(&key, entry.live).await?;
    if json {
        let doc = serde_json::json!({"entry": entry, "live_model": model});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("model {key}: live version v{}", entry.live);
    println!("  {}", model.describe());
    println!(
        "  predicts: {}",
        match model.kind() {
            fleetscore_models::Kind::Outlier =>
                "anomalies (an outlier detector: Prediction 1 = anomaly, Score = decision_function)",
            fleetscore_models::Kind::Regressor => "a number (a regressor: Score = predict)",
            fleetscore_models::Kind::Classifier =>
                "a class (a classifier: Label = predict, Score = its probability)",
        }
    );
    if !model.classes().is_empty() {
        println!("  classes: {}", model.classes().join(", "));
    }
    println!("  features: {}", model.n_features);
    if let Some(v) = entry.live_version() {
        print_input(v);
    }
    print_versions(entry);
    Ok(ExitCode::SUCCESS)
}

/// The `input:` line of `models show`.
fn print_input(v: &fleetscore_store::VersionInfo) {
    match (v.input_mode.as_str(), &v.window) {
        ("window", Some(size)) => println!(
            "  input: each {size} window, features {}",
            v.features.join(", ")
        ),
        _ => println!("  input: raw (each reading's value)"),
    }
}

/// The versions of `models show`, oldest first.
fn print_versions(entry: &fleetscore_store::KeyEntry) {
    for v in &entry.versions {
        let live = if v.version == entry.live {
            " (live)"
        } else {
            ""
        };
        println!(
            "  v{}{live} ({}): imported {} from {}\n      sha256 {}",
            v.version,
            v.runtime.name(),
            v.imported_at,
            v.source,
            v.sha256
        );
    }
}

/// `models show` of a key whose live model runs in Python.
fn show_python(
    entry: &fleetscore_store::KeyEntry,
    v: &fleetscore_store::VersionInfo,
    key: &ModelKey,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        let doc = serde_json::json!({"entry": entry, "live_model": null, "runtime": "python"});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("model {key}: live version v{}", entry.live);
    println!("  runtime: python (run by the Python runtime of a deployment with [python] enabled = true; its code is executed there)");
    println!("  {}", v.description);
    println!(
        "  predicts: {}",
        if v.kind == fleetscore_store::KIND_AUTO {
            "what the model is (the workers tell from scikit-learn's estimator type)"
        } else {
            v.kind.as_str()
        }
    );
    println!(
        "  methods: {}",
        if v.methods.is_empty() {
            "the kind's defaults".to_string()
        } else {
            v.methods.join(", ")
        }
    );
    print_input(v);
    print_versions(entry);
    Ok(ExitCode::SUCCESS)
}

pub async fn repack(g: &Global) -> anyhow::Result<ExitCode> {
    let registry = util::registry(g)?;
    let started = std::time::Instant::now();
    let pack = registry.pack().await?;
    println!(
        "model pack: {} live model(s), generation {}, in {}",
        pack.len(),
        pack.generation,
        util::secs(started.elapsed())
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn promote(
    g: &Global,
    device: &str,
    tag: &str,
    version: u32,
) -> anyhow::Result<ExitCode> {
    let key = fleetscore_core::ModelKey::new(device, tag)?;
    let registry = util::registry(g)?;
    let entry = registry.promote(&key, version).await?;
    println!(
        "model ({}, {}): version {} is live ({} version(s) stored)",
        entry.device,
        entry.tag,
        entry.live,
        entry.versions.len()
    );
    Ok(ExitCode::SUCCESS)
}
