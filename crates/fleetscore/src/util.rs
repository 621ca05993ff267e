//! Shared plumbing of the commands: logging, the store, progress, time.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use fleetscore_core::format_ts;
use fleetscore_store::{Registry, Store};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{Global, LogFormat};

pub fn init_logging(g: &Global) {
    let default = match g.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match g.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The object-store root: `--store`, else `DATA/store`.
pub fn store_url(g: &Global) -> String {
    match &g.store {
        Some(s) => s.clone(),
        None => g.data.join("store").to_string_lossy().into_owned(),
    }
}

/// The object store, its retries from the config's `[store]` (overridden
/// by `FLEETSCORE_STORE_…` variables, as the store reads them).
pub fn store(g: &Global) -> anyhow::Result<Store> {
    let url = store_url(g);
    let retry = crate::config::load(g.config.as_deref())?
        .store
        .retry_settings();
    Store::open_with(&url, &retry).with_context(|| format!("opening the store {url}"))
}

pub fn registry(g: &Global) -> anyhow::Result<Registry> {
    Ok(Registry::new(store(g)?))
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub fn now_rfc3339() -> String {
    format_ts(now_ns())
}

/// A progress bar on stderr (hidden when stderr is not a terminal or with
/// --quiet).
pub fn progress(g: &Global, len: u64, what: &str) -> ProgressBar {
    if g.quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Seconds with millisecond precision, for summaries.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// The job store: `--db`, else the config's `[jobs] db`, else
/// `sqlite://DATA/fleetscore.db`.
pub async fn job_store(
    g: &Global,
) -> anyhow::Result<std::sync::Arc<dyn fleetscore_jobs::db::JobStore>> {
    job_store_with(g, fleetscore_jobs::db::Commits::Durable).await
}

/// [`job_store`] whose PostgreSQL commits wait for the disk or not (see
/// [`fleetscore_jobs::db::Commits`]).
pub async fn job_store_with(
    g: &Global,
    commits: fleetscore_jobs::db::Commits,
) -> anyhow::Result<std::sync::Arc<dyn fleetscore_jobs::db::JobStore>> {
    let url = match &g.db {
        Some(u) => u.clone(),
        None => match crate::config::load(g.config.as_deref())?.jobs.db {
            Some(u) => u,
            None => format!("sqlite://{}", g.data.join("fleetscore.db").display()),
        },
    };
    // The error names the store and says why.
    let db = fleetscore_jobs::db::SqlStore::open_with(&url, commits).await?;
    Ok(std::sync::Arc::new(db))
}
