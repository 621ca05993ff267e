//! Helpers of the concurrent-writer tests (issue 16, defect 1, "concurrent
//! imports lose models"), shared by `concurrent_imports.rs` (a local folder,
//! the HTTP API) and `object_stores.rs` (the S3 and Azure emulators): start
//! many `fleetscore models import` processes at once, then check the
//! registry as a user would.
#![allow(dead_code)] // each test file uses a subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fleetscore_core::ModelKey;
use fleetscore_models::{format, import_sklearn, Pack};
use fleetscore_store::{Index, Registry, Store};

/// `n` committed scikit-learn fixtures that are distinct models, and each
/// one's content hash.
pub fn distinct_models(n: usize) -> Vec<(PathBuf, String)> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/sklearn/models");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".p4.pkl"))
        .collect();
    files.sort();
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    for f in files {
        let hash = format::content_hash(&import_sklearn(&std::fs::read(&f).unwrap()).unwrap());
        if !out.iter().any(|(_, h)| *h == hash) {
            out.push((f, hash));
        }
        if out.len() == n {
            return out;
        }
    }
    panic!("only {} distinct fixture models, {n} wanted", out.len());
}

/// One `models import` process: the models it imports, as (file,
/// device, tag).
pub type Batch = Vec<(PathBuf, String, String)>;

/// Runs one `models import --manifest M --json` process per batch, all at
/// once, from `cmd()` (the binary with its store arguments and
/// environment); returns their outputs in batch order.
///
/// "At once" is made exact: each manifest is a named pipe in `dir`, so
/// every process, once started and loaded, waits in reading it; when all
/// of them are waiting, the manifests are written, releasing them within
/// microseconds of each other. (Started one after another, the processes
/// of a fast store could each finish before the next one got going.) A
/// batch of several models keeps each process between its read and its
/// write of the index for longer, as a real import of a folder does.
pub fn import_at_once(cmd: impl Fn() -> Command, dir: &Path, batches: &[Batch]) -> Vec<Output> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut manifests = Vec::new();
    let children: Vec<_> = batches
        .iter()
        .enumerate()
        .map(|(i, batch)| {
            let path = dir.join(format!("manifest-{i}-{}.csv", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            let made = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
            assert_eq!(made, 0, "mkfifo {}", path.display());
            let mut text = String::from("path,device,tag\n");
            for (file, device, tag) in batch {
                text.push_str(&format!("{},{device},{tag}\n", file.display()));
            }
            let child = cmd()
                .args(["models", "import", "--json", "--manifest"])
                .arg(&path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            manifests.push((path, text));
            child
        })
        .collect();
    // Opening a pipe to write without blocking succeeds once its process
    // has opened it to read: then that process waits for the text.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut pipes: Vec<(std::fs::File, String)> = Vec::new();
    for (path, text) in manifests {
        let file = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(f) => break f,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{} never read",
                        path.display()
                    );
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{}: {e}", path.display()),
            }
        };
        pipes.push((file, text));
    }
    for (mut file, text) in pipes {
        // Far less than a pipe's buffer: written whole, at once.
        file.write_all(text.as_bytes()).unwrap();
    }
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// The outcomes an import process reports, as (device, tag, version);
/// panics (with its output) if it failed.
pub fn reported(o: &Output) -> Vec<(String, String, u32)> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "an import failed: {text}");
    let doc: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    doc["imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["key"]["device"].as_str().unwrap().to_string(),
                o["key"]["tag"].as_str().unwrap().to_string(),
                o["version"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

/// What a user checks after the writers are done, on `store`: every
/// version the index names is stored, model and meta, with the hash the
/// index records; the pack as stored, when it claims the index's
/// generation, and as `Registry::pack` gives it, holds exactly each key's
/// live version. Returns the index.
pub fn assert_registry_consistent(store: &Store) -> Index {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::new(store.clone());
    rt.block_on(async {
        let index = registry.index().await.unwrap();
        for (ik, entry) in &index.models {
            let key = ModelKey::new(entry.device.as_str(), entry.tag.as_str()).unwrap();
            assert!(
                entry.live_version().is_some(),
                "{ik}: live v{} is listed",
                entry.live
            );
            for v in &entry.versions {
                let model = registry.model(&key, v.version).await.unwrap();
                assert_eq!(
                    format::content_hash(&model),
                    v.sha256,
                    "{ik} v{}: the stored model is the one the index names",
                    v.version
                );
                let dir = format!("models/{}/{}/v{}", entry.device, entry.tag, v.version);
                let meta = store
                    .get(&format!("{dir}/meta.json"))
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{dir}/meta.json is missing"));
                let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
                assert_eq!(meta["info"]["sha256"], v.sha256.as_str(), "{dir}/meta.json");
            }
        }
        let check = |pack: &Pack, what: &str| {
            assert_eq!(pack.len(), index.models.len(), "{what}: one entry per key");
            for e in index.models.values() {
                let p = pack
                    .get_exact(&e.device, &e.tag)
                    .unwrap_or_else(|| panic!("{what}: no {}/{}", e.device, e.tag));
                assert_eq!(p.version, e.live, "{what}: {}/{}", e.device, e.tag);
                assert_eq!(
                    format::content_hash(&p.model),
                    e.live_version().unwrap().sha256,
                    "{what}: {}/{} holds the live model",
                    e.device,
                    e.tag
                );
            }
        };
        if let Some(bytes) = store.get("models/pack.fsp").await.unwrap() {
            let stored = Pack::decode(&bytes).unwrap();
            assert!(
                stored.generation <= index.generation,
                "the pack claims generation {} past the index's {}",
                stored.generation,
                index.generation
            );
            if stored.generation == index.generation {
                check(&stored, "the stored pack");
            }
        }
        let pack = registry.pack().await.unwrap();
        assert_eq!(pack.generation, index.generation);
        check(&pack, "Registry::pack");
        index
    })
}

/// The index as it is now, for counting.
fn count(store: &Store) -> Index {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(Registry::new(store.clone()).index()).unwrap()
}

/// Processes at once, each importing a batch.
pub const PROCESSES: usize = 8;
/// Models per batch.
pub const PER_PROCESS: usize = 12;

/// 8 processes each import 12 models under keys of their own, at once;
/// then 8 more each import a different model to one shared key (plus 11
/// of their own keys), at once. Every model is registered, each process's
/// reported version of the shared key holds its model, and the registry is
/// consistent. `cmd()` is the binary with its store and environment;
/// `dir` a scratch folder for the manifests.
pub fn eight_importers_lose_nothing(cmd: impl Fn() -> Command, dir: &Path, store: &Store) {
    let models = distinct_models(PROCESSES.max(PER_PROCESS));
    let batches: Vec<Batch> = (0..PROCESSES)
        .map(|p| {
            (0..PER_PROCESS)
                .map(|j| {
                    (
                        models[(p + j) % models.len()].0.clone(),
                        format!("dev-{p}"),
                        format!("t{j}"),
                    )
                })
                .collect()
        })
        .collect();
    for o in import_at_once(&cmd, dir, &batches) {
        assert!(reported(&o).iter().all(|(_, _, v)| *v == 1));
    }
    let index = count(store);
    assert_eq!(
        index.models.len(),
        PROCESSES * PER_PROCESS,
        "{}: every import registered; {} of {} are",
        store.url(),
        index.models.len(),
        PROCESSES * PER_PROCESS
    );
    assert_registry_consistent(store);

    // The same key, a different model from each process.
    let batches: Vec<Batch> = (0..PROCESSES)
        .map(|p| {
            let mut b: Batch = vec![(models[p].0.clone(), "same".into(), "t".into())];
            b.extend(
                (1..PER_PROCESS)
                    .map(|j| (models[j].0.clone(), format!("other-{p}"), format!("t{j}"))),
            );
            b
        })
        .collect();
    let outs = import_at_once(&cmd, dir, &batches);
    let index = count(store);
    let entry = &index.models["same/t"];
    assert_eq!(
        entry.versions.len(),
        PROCESSES,
        "{}: one version per process: {entry:?}",
        store.url()
    );
    for (p, o) in outs.iter().enumerate() {
        let (_, _, v) = reported(o)
            .into_iter()
            .find(|(d, _, _)| d == "same")
            .unwrap();
        let info = entry.versions.iter().find(|x| x.version == v).unwrap();
        assert_eq!(
            info.sha256, models[p].1,
            "v{v} holds the model its importer reported"
        );
    }
    assert_eq!(
        index.models.len(),
        PROCESSES * PER_PROCESS + 1 + PROCESSES * (PER_PROCESS - 1)
    );
    assert_registry_consistent(store);
}
