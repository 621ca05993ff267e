//! Regression tests for issue 16, defect 1, "concurrent imports lose
//! models": 8 `fleetscore models import` processes run at once (or 8 API
//! uploads, each answered 201) left 2-4 models registered while every run
//! exited 0, and two imports to one key could leave the index naming one
//! model while the stored version and the pack held the other.
//!
//! Here separate processes import at once into one local folder, and
//! concurrent uploads go to one server; afterwards the registry is counted
//! and checked as a user would (every version the index names is stored
//! with its hash; the pack holds the live versions). The same against the
//! S3 and Azure emulators is in `object_stores.rs`; many writers in one
//! process, and on `memory://`, in `crates/store/tests/registry_concurrency.rs`.

use std::path::Path;
use std::process::Command;

mod common;
mod concurrent;
use common::{bin, Server};
use concurrent::{assert_registry_consistent, distinct_models, eight_importers_lose_nothing};
use fleetscore_store::Store;

fn cmd(data: &Path) -> impl Fn() -> Command + '_ {
    move || {
        let mut c = bin();
        c.arg("--data").arg(data).arg("--quiet");
        c
    }
}

/// The reported case, with processes: 8 importers at once on one folder,
/// to keys of their own and then to one shared key, three times over.
#[test]
fn concurrent_imports_lose_no_models() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store").to_str().unwrap()).unwrap();
        eight_importers_lose_nothing(cmd(dir.path()), dir.path(), &store);
    }
}

/// 32 uploads at once to one server, each answered 201: all 32 registered.
#[test]
fn concurrent_uploads_lose_no_models() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let config = data.join("c.toml");
    std::fs::write(&config, "[auth]\nadmin_tokens = [\"admin-secret\"]\n").unwrap();
    let server = std::sync::Arc::new(Server::start(data, &["--config", config.to_str().unwrap()]));
    let models = distinct_models(8);
    let uploads: Vec<_> = (0..32)
        .map(|i| {
            let file = &models[i % models.len()].0;
            let (server, body) = (server.clone(), std::fs::read(file).unwrap());
            std::thread::spawn(move || {
                server.request(
                    "POST",
                    &format!("/v1/models/up-{i}/t"),
                    &[("Authorization", "Bearer admin-secret")],
                    &body,
                )
            })
        })
        .collect();
    for u in uploads {
        let (status, body) = u.join().unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let store = Store::open(data.join("store").to_str().unwrap()).unwrap();
    let index = assert_registry_consistent(&store);
    assert_eq!(
        index.models.len(),
        32,
        "{:?}",
        index.models.keys().collect::<Vec<_>>()
    );
    std::sync::Arc::into_inner(server).unwrap().terminate();
}
