//! The probes of a process that is not the server: `fleetscore worker
//! --listen ADDR` answers `/healthz`, `/readyz` and `/metrics`, so that
//! Kubernetes can probe its workers and Prometheus scrape them.
//!
//! - `/healthz`: `200 ok` while the process runs (liveness).
//! - `/readyz`: `200 {"ready": true}` when the job store and the object
//!   store answer; else `503` with why, per dependency (readiness).
//! - `/metrics`: the process and build figures of every fleetscore
//!   process (`process_*`, `fleetscore_build_info`), the HTTP figures of
//!   these routes, and the job store's figures (`fleetscore_jobs{state}`,
//!   `fleetscore_tasks{state}`, `fleetscore_pending_work`, …), as the
//!   server's `/metrics` gives them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fleetscore_jobs::db::{JobFilter, JobStore};
use fleetscore_store::Store;

use crate::metrics::{JobFigures, Metrics};

struct Probes {
    db: Arc<dyn JobStore>,
    store: Store,
    metrics: Arc<Metrics>,
}

/// Binds `listen` and answers the probes until `stop` turns true; returns
/// the bound address and the serving task.
pub async fn serve_probes(
    listen: &str,
    db: Arc<dyn JobStore>,
    store: Store,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = crate::http::bind(listen).await?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new());
    let probes = Arc::new(Probes {
        db,
        store,
        metrics: Arc::clone(&metrics),
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(probes)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::http::observe,
        ));
    let task = tokio::spawn(async move {
        let shutdown = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    return;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the probe listener stopped");
        }
    });
    Ok((addr, task))
}

async fn readyz(State(p): State<Arc<Probes>>) -> Response {
    let db =
        p.db.jobs(&JobFilter {
            limit: Some(1),
            ..JobFilter::default()
        })
        .await
        .err()
        .map(|e| e.to_string());
    let store = p.store.list("models/").await.err().map(|e| e.to_string());
    if db.is_none() && store.is_none() {
        return Json(serde_json::json!({"ready": true})).into_response();
    }
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"ready": false, "job_store": db, "object_store": store})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

async fn metrics_text(State(p): State<Arc<Probes>>) -> Response {
    let figures = JobFigures {
        jobs: p.db.stats().await.ok(),
        pending_work: p.db.pending(crate::now_ns()).await.ok(),
        models: None,
    };
    match p.metrics.render(figures) {
        Ok(body) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing the metrics failed: {e}"),
        )
            .into_response(),
    }
}
