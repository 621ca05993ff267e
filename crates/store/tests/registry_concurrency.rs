//! Regression tests for issue 16, defect 1, "concurrent imports lose
//! models": `Registry::import` rewrote `models/index.json` from a stale
//! read, so of 8 concurrent imports only 2-4 stayed registered, and two
//! imports to one key could leave the index naming one model while the
//! stored version file and the pack held the other.
//!
//! Every test here runs many writers at once, each with its own `Store` and
//! `Registry` (its own OS thread and runtime, so they really overlap), on a
//! local folder and on `memory://`, then checks what a user would:
//! every import is registered, every version the index names is stored
//! with exactly the hash the index records, and the pack holds the live
//! versions. The same on S3 and Azure emulators, and across processes, is
//! in `crates/fleetscore/tests/{concurrent_imports,object_stores}.rs`.

use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use fleetscore_core::ModelKey;
use fleetscore_models::{format, import_sklearn, Model, Pack};
use fleetscore_store::{
    ImportOutcome, ImportRequest, ModelBody, ModelInput, PythonModel, Registry, Runtime, Store,
};

/// Distinct scikit-learn models (the committed fixtures).
fn models(n: usize) -> Vec<Model> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/sklearn/models");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".p4.pkl"))
        .collect();
    names.sort();
    let mut out: Vec<Model> = Vec::new();
    for p in names {
        let m = import_sklearn(&std::fs::read(&p).unwrap()).unwrap();
        if !out
            .iter()
            .any(|o| format::content_hash(o) == format::content_hash(&m))
        {
            out.push(m);
        }
        if out.len() == n {
            return out;
        }
    }
    panic!("only {} distinct fixture models, {n} wanted", out.len());
}

fn key(device: &str, tag: &str) -> ModelKey {
    ModelKey::new(device, tag).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn python_request(key: ModelKey, bytes: &[u8], source: &str) -> ImportRequest {
    ImportRequest {
        key,
        model: ModelBody::Python(PythonModel {
            bytes: bytes.to_vec().into(),
            kind: None,
            methods: Vec::new(),
        }),
        source: source.to_string(),
        input: ModelInput::Raw,
    }
}

fn request(key: ModelKey, model: Model, source: &str) -> ImportRequest {
    ImportRequest {
        key,
        model: model.into(),
        source: source.to_string(),
        input: ModelInput::Raw,
    }
}

/// The stores a test runs on: a fresh folder (each writer opens its own
/// `Store` on it, as separate processes would) and one `memory://` store
/// (shared, since each `memory://` open is a new empty store).
fn stores(dir: &tempfile::TempDir) -> Vec<Box<dyn Fn() -> Store + Send + Sync>> {
    let path = dir.path().to_str().unwrap().to_string();
    let memory = Store::open("memory://").unwrap();
    vec![
        Box::new(move || Store::open(&path).unwrap()),
        Box::new(move || memory.clone()),
    ]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `jobs` at once, each on its own thread and runtime with its own
/// `Registry` on `open()`; returns each job's outcomes.
fn run_at_once<T: Send + 'static>(
    open: &(dyn Fn() -> Store + Send + Sync),
    jobs: Vec<Box<dyn FnOnce(Registry) -> T + Send>>,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let registry = Registry::new(open());
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                job(registry)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn import_job(reqs: Vec<ImportRequest>) -> Box<dyn FnOnce(Registry) -> Vec<ImportOutcome> + Send> {
    Box::new(move |registry: Registry| {
        rt().block_on(registry.import(reqs, "2026-01-01T00:00:00Z"))
            .unwrap()
    })
}

/// What a user checks after the writers are done: every version the index
/// names is stored (model and meta) with the hash the index records, and
/// the pack, as stored when it claims the index's generation and as
/// `Registry::pack` gives it, holds exactly each key's live version.
fn assert_consistent(store: &Store) {
    let registry = Registry::new(store.clone());
    rt().block_on(async {
        let index = registry.index().await.unwrap();
        for (ik, entry) in &index.models {
            let k = key(&entry.device, &entry.tag);
            assert!(
                entry.live_version().is_some(),
                "{ik}: live {} is listed",
                entry.live
            );
            for v in &entry.versions {
                let stored_hash = if v.runtime == Runtime::Python {
                    let bytes = registry.python_file(&k, v).await.unwrap();
                    sha256_hex(&bytes)
                } else {
                    format::content_hash(&registry.model(&k, v.version).await.unwrap())
                };
                assert_eq!(
                    stored_hash, v.sha256,
                    "{ik} v{}: the stored model is the one the index names",
                    v.version
                );
                let meta = store
                    .get(&format!(
                        "models/{}/{}/v{}/meta.json",
                        entry.device, entry.tag, v.version
                    ))
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{ik} v{}: meta.json missing", v.version));
                let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
                assert_eq!(
                    meta["info"]["sha256"],
                    v.sha256.as_str(),
                    "{ik} v{} meta",
                    v.version
                );
            }
        }
        // The pack holds each key whose live version is native; a Python
        // model runs from its file.
        let native = index
            .models
            .values()
            .filter(|e| e.live_version().unwrap().runtime.is_native());
        let check_pack = |pack: &Pack, what: &str| {
            assert_eq!(
                pack.len(),
                native.clone().count(),
                "{what}: one entry per native key"
            );
            for entry in native.clone() {
                let live = entry.live_version().unwrap();
                let e = pack
                    .get_exact(&entry.device, &entry.tag)
                    .unwrap_or_else(|| panic!("{what}: no {}/{}", entry.device, entry.tag));
                assert_eq!(
                    e.version, entry.live,
                    "{what}: {}/{} version",
                    entry.device, entry.tag
                );
                assert_eq!(
                    format::content_hash(&e.model),
                    live.sha256,
                    "{what}: {}/{} holds the live model",
                    entry.device,
                    entry.tag
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
                check_pack(&stored, "the stored pack");
            }
        }
        let pack = registry.pack().await.unwrap();
        assert_eq!(pack.generation, index.generation);
        check_pack(&pack, "Registry::pack");
    });
}

const WRITERS: usize = 8;

/// The reported case: 8 writers, each importing a model under its own key,
/// at once. All 8 stay registered.
#[test]
fn concurrent_imports_lose_no_models() {
    let dir = tempfile::tempdir().unwrap();
    let ms = models(WRITERS);
    for open in stores(&dir) {
        for round in 0..3 {
            let jobs = (0..WRITERS)
                .map(|i| {
                    import_job(vec![request(
                        key(&format!("d{round}-{i}"), "t"),
                        ms[i].clone(),
                        &format!("writer {i}"),
                    )])
                })
                .collect();
            let outcomes = run_at_once(&*open, jobs);
            for o in outcomes {
                assert!(
                    matches!(o[..], [ImportOutcome::Added { version: 1, .. }]),
                    "{o:?}"
                );
            }
        }
        let store = open();
        let index = rt().block_on(Registry::new(store.clone()).index()).unwrap();
        assert_eq!(
            index.models.len(),
            3 * WRITERS,
            "{}: every import registered: {:?}",
            store.url(),
            index.models.keys().collect::<Vec<_>>()
        );
        assert_consistent(&store);
    }
}

/// 8 writers import 8 different models to one key at once: each becomes
/// a version of its own, stored under the number the index gives it, and
/// the live one (whichever won last) is the one the pack holds.
#[test]
fn concurrent_imports_to_one_key_keep_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let ms = models(WRITERS);
    for open in stores(&dir) {
        let jobs = (0..WRITERS)
            .map(|i| {
                import_job(vec![request(
                    key("same", "t"),
                    ms[i].clone(),
                    &format!("writer {i}"),
                )])
            })
            .collect();
        let outcomes: Vec<ImportOutcome> =
            run_at_once(&*open, jobs).into_iter().flatten().collect();
        let store = open();
        let index = rt().block_on(Registry::new(store.clone()).index()).unwrap();
        let entry = &index.models["same/t"];
        assert_eq!(entry.versions.len(), WRITERS, "{}: {entry:?}", store.url());
        let mut hashes: Vec<&str> = entry.versions.iter().map(|v| v.sha256.as_str()).collect();
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), WRITERS, "each model once");
        // Each writer's reported version is the one the index has for its model.
        for (o, m) in outcomes.iter().zip(&ms) {
            let v = match o {
                ImportOutcome::Added { version, .. }
                | ImportOutcome::NewVersion { version, .. } => *version,
                other => panic!("{other:?}"),
            };
            let info = entry.versions.iter().find(|x| x.version == v).unwrap();
            assert_eq!(
                info.sha256,
                format::content_hash(m),
                "v{v} is the writer's model"
            );
        }
        assert_consistent(&store);
    }
}

/// Writers importing the same model to one key at once agree on one
/// version; promotes racing imports on other keys lose neither.
#[test]
fn concurrent_identical_imports_and_promotes_agree() {
    let dir = tempfile::tempdir().unwrap();
    let ms = models(WRITERS + 2);
    for open in stores(&dir) {
        // The same model from every writer: one version.
        let jobs = (0..WRITERS)
            .map(|i| {
                import_job(vec![request(
                    key("one", "t"),
                    ms[0].clone(),
                    &format!("writer {i}"),
                )])
            })
            .collect();
        run_at_once(&*open, jobs);
        let store = open();
        let registry = Registry::new(store.clone());
        let index = rt().block_on(registry.index()).unwrap();
        assert_eq!(index.models["one/t"].versions.len(), 1, "{}", store.url());
        // A second version, then promotes back and forth racing imports.
        rt().block_on(registry.import(vec![request(key("one", "t"), ms[1].clone(), "v2")], "now"))
            .unwrap();
        let mut jobs: Vec<Box<dyn FnOnce(Registry) -> Vec<ImportOutcome> + Send>> = Vec::new();
        for i in 0..WRITERS {
            if i % 2 == 0 {
                let v = 1 + (i / 2 % 2) as u32;
                jobs.push(Box::new(move |r: Registry| {
                    rt().block_on(r.promote(&key("one", "t"), v)).unwrap();
                    Vec::new()
                }));
            } else {
                jobs.push(import_job(vec![request(
                    key(&format!("p{i}"), "t"),
                    ms[i + 2].clone(),
                    "racing a promote",
                )]));
            }
        }
        run_at_once(&*open, jobs);
        let index = rt().block_on(registry.index()).unwrap();
        assert_eq!(
            index.models.len(),
            1 + WRITERS / 2,
            "{}: {:?}",
            store.url(),
            index.models.keys()
        );
        assert_consistent(&store);
    }
}

/// A writer that crashed after writing a version's files but before the
/// index leaves an orphan `v<N>` folder; a later import of another model
/// must not overwrite it or be confused by it: it takes a higher number
/// (a gap) and the index names a file that holds its model.
#[test]
fn an_orphan_version_folder_is_skipped_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let ms = models(2);
    for open in stores(&dir) {
        let store = open();
        rt().block_on(async {
            let orphan = format::to_json(&ms[0]);
            store
                .put("models/o/t/v1/model.fsm", orphan.clone())
                .await
                .unwrap();
            let registry = Registry::new(store.clone());
            let out = registry
                .import(
                    vec![request(key("o", "t"), ms[1].clone(), "after a crash")],
                    "now",
                )
                .await
                .unwrap();
            assert!(
                matches!(out[..], [ImportOutcome::Added { version: 2, .. }]),
                "{out:?}"
            );
            assert_eq!(
                store
                    .get("models/o/t/v1/model.fsm")
                    .await
                    .unwrap()
                    .unwrap()
                    .as_ref(),
                &orphan[..],
                "the orphan is left as it was"
            );
            // The orphan's own model, imported later, is a new version
            // above the live one; the orphan folder is never reused below it.
            let out = registry
                .import(
                    vec![request(
                        key("o", "t"),
                        ms[0].clone(),
                        "the crashed one, again",
                    )],
                    "now",
                )
                .await
                .unwrap();
            assert!(
                matches!(out[..], [ImportOutcome::NewVersion { version: 3, .. }]),
                "{out:?}"
            );
        });
        assert_consistent(&store);
    }
}

/// Writers importing native and Python models at once, to one key and to
/// keys of their own, lose none: every version is stored with the hash
/// the index names, and the pack holds exactly the keys whose live model
/// is native. Promoting a Python version takes its key out of the pack;
/// promoting a native one back puts it in.
#[test]
fn concurrent_native_and_python_imports_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ms = models(WRITERS);
    for open in stores(&dir) {
        let jobs = (0..WRITERS)
            .map(|i| {
                let source = format!("writer {i}");
                let own = key(&format!("w{i}"), "t");
                let pickle = format!("\u{80}\u{4}a Python model of writer {i}");
                import_job(if i % 2 == 0 {
                    vec![
                        request(key("mixed", "t"), ms[i].clone(), &source),
                        python_request(own, pickle.as_bytes(), &source),
                    ]
                } else {
                    vec![
                        python_request(key("mixed", "t"), pickle.as_bytes(), &source),
                        request(own, ms[i].clone(), &source),
                    ]
                })
            })
            .collect();
        let outcomes: Vec<ImportOutcome> =
            run_at_once(&*open, jobs).into_iter().flatten().collect();
        assert_eq!(outcomes.len(), 2 * WRITERS);
        let store = open();
        let registry = Registry::new(store.clone());
        let index = rt().block_on(registry.index()).unwrap();
        assert_eq!(index.models.len(), WRITERS + 1, "{}", store.url());
        let mixed = &index.models["mixed/t"];
        assert_eq!(mixed.versions.len(), WRITERS, "{mixed:?}");
        let python: Vec<u32> = mixed
            .versions
            .iter()
            .filter(|v| v.runtime == Runtime::Python)
            .map(|v| v.version)
            .collect();
        assert_eq!(python.len(), WRITERS / 2);
        assert_consistent(&store);
        // Promote a Python version, then a native one.
        let native = mixed
            .versions
            .iter()
            .find(|v| v.runtime.is_native())
            .unwrap()
            .version;
        for v in [python[0], native] {
            rt().block_on(registry.promote(&key("mixed", "t"), v))
                .unwrap();
            let pack = rt().block_on(registry.pack()).unwrap();
            assert_eq!(
                pack.get_exact("mixed", "t").map(|e| e.version),
                (v == native).then_some(v),
                "after promoting v{v}"
            );
            assert_consistent(&store);
        }
        // The same Python file again: unchanged.
        let again = rt()
            .block_on(registry.import(
                vec![python_request(
                    key("w0", "t"),
                    "\u{80}\u{4}a Python model of writer 0".as_bytes(),
                    "again",
                )],
                "2026-01-02T00:00:00Z",
            ))
            .unwrap();
        assert!(
            matches!(again[0], ImportOutcome::Unchanged { .. }),
            "{again:?}"
        );
    }
}
