//! `fleetscore serve`: the flags over the config, then the service of
//! `fleetscore-server`.

use std::process::ExitCode;

use anyhow::Context;
use fleetscore_server::serve::{parse_window, serve, Env};

use crate::cli::{Global, ServeArgs};
use crate::config::{self, Config};
use crate::util;

/// The config file and environment, with the flags applied on top.
pub fn settings(g: &Global, args: &ServeArgs) -> anyhow::Result<Config> {
    let mut c = config::load(g.config.as_deref())?;
    let a = args;
    if a.no_workers {
        c.jobs.run_in_server = false;
    }
    if let Some(v) = &a.listen {
        c.server.listen = v.clone();
    }
    if let Some(t) = a.ingest_token.as_ref().filter(|t| !t.is_empty()) {
        c.auth.ingest_tokens.push(t.clone());
    }
    if let Some(v) = a.max_body_bytes {
        c.server.max_body_bytes = v;
    }
    if let Some(v) = a.compact_interval {
        c.ingest.compact_interval = v;
    }
    if let Some(v) = a.log_segment_bytes {
        c.ingest.log.max_segment_bytes = v;
    }
    if let Some(v) = &a.mqtt {
        c.mqtt.url = Some(v.clone());
    }
    if let Some(v) = &a.mqtt_topic {
        c.mqtt.topic = v.clone();
    }
    if let Some(v) = &a.mqtt_shared_group {
        c.mqtt.shared_group = Some(v.clone());
    }
    if let Some(v) = &a.mqtt_client_id {
        c.mqtt.client_id = Some(v.clone());
    }
    if let Some(v) = &a.lp_device_tag {
        c.ingest.line_protocol.device_tag = v.clone();
    }
    if a.lp_prefix_measurement {
        c.ingest.line_protocol.prefix_measurement = true;
    }
    if !a.window.is_empty() {
        c.stream.windows = a
            .window
            .iter()
            .map(|w| parse_window(w))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(v) = a.out_of_order {
        c.stream.out_of_order = v;
    }
    if let Some(v) = a.allowed_lateness {
        c.stream.allowed_lateness = v;
    }
    if let Some(v) = a.late_policy {
        c.stream.late_policy = v.into();
    }
    if let Some(v) = a.watermark {
        c.stream.watermark = v.into();
    }
    if let Some(v) = a.window_flush_interval {
        c.server.window_flush_interval = v;
    }
    if a.no_windows {
        c.server.windows = false;
    }
    if a.allow_unauthenticated_admin {
        c.auth.allow_unauthenticated_admin = true;
    }
    c.stream.validate().context("window settings")?;
    for (what, span) in [
        ("compact interval", c.ingest.compact_interval),
        ("window flush interval", c.server.window_flush_interval),
    ] {
        if span.as_nanos() < 1_000_000 {
            anyhow::bail!("the {what} must be at least 1ms, not {span}");
        }
    }
    Ok(c)
}

/// `fleetscore serve`: prints `listening on ADDR`, then a line for each
/// job it finishes.
pub async fn run(g: &Global, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let c = settings(g, &args)?;
    serve(env(g).await?, c, None, None, true).await
}

/// The data folder, the store and the job store of the global flags.
pub async fn env(g: &Global) -> anyhow::Result<Env> {
    Ok(Env {
        data: g.data.clone(),
        store: util::store(g)?,
        db: util::job_store(g).await?,
    })
}
