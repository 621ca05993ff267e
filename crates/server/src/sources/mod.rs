//! Sources: where readings come from.
//!
//! A source is a section of the configuration that builds a running part
//! (the way Vector's components are built): [`SourceConfig::build`]
//! checks its settings before anything is opened, so a bad one fails the
//! start at once, and returns a [`Source`]. The server starts every source
//! the same way; each appends through the one [`Ingestor`] (the durable
//! log, then the windows) and reports the same telemetry under its own
//! name (`fleetscore_source_*{source="…"}`: received, stored, refused and
//! failed, see [`crate::metrics`]).
//!
//! A source takes part in one or both of two ways: it answers requests on
//! the server's HTTP listener ([`Source::routes`]: the InfluxDB and JSON/CSV
//! ingest endpoints), or it runs a task of its own until the server stops
//! ([`Source::start`]: the MQTT subscriber).
//!
//! The sources a deployment runs are listed in one place, [`configured`]:
//! a new source (a Kafka consumer) is a file in this folder and a line
//! there, with no change to the server.

use std::sync::Arc;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::windows::Ingestor;

pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod mqtt;

/// What every source gets from the server.
#[derive(Clone)]
pub struct Context {
    /// Where readings go: the durable log, then the windows.
    pub ingestor: Arc<Ingestor>,
    /// Where the source's telemetry goes.
    pub metrics: Arc<Metrics>,
    /// Where what it could not read goes.
    pub dead_letters: Arc<crate::deadletter::DeadLetters>,
    /// Whether it is connected, for `/readyz`.
    pub health: Arc<Health>,
}

/// Whether each source that connects somewhere (a broker) is connected:
/// `/readyz` lists those that are not, with why.
#[derive(Default)]
pub struct Health {
    parts: std::sync::Mutex<std::collections::BTreeMap<&'static str, Option<String>>>,
}

impl Health {
    /// Records that `source` is connected (`Ok`) or why it is not.
    pub fn set(&self, source: &'static str, state: Result<(), String>) {
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(source, state.err());
    }

    /// The sources that are not connected, with why.
    pub fn problems(&self) -> std::collections::BTreeMap<String, String> {
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| ((*k).to_string(), v.clone())))
            .collect()
    }
}

/// A running part that feeds readings to the [`Ingestor`].
pub trait Source: Send {
    /// Its name: the `source` label of its telemetry and logs.
    fn name(&self) -> &'static str;

    /// The routes it answers on the server's HTTP listener, if it receives
    /// over HTTP.
    fn routes(&self, _ctx: &Context) -> Option<Router> {
        None
    }

    /// Starts its own task, which runs until `stop` turns true (and then
    /// finishes what it took: what it acknowledged is durable). Sources
    /// that only answer requests run nothing.
    fn start(
        self: Box<Self>,
        _ctx: Context,
        _stop: watch::Receiver<bool>,
    ) -> Option<JoinHandle<()>> {
        None
    }
}

/// A source's settings, which build it.
pub trait SourceConfig {
    /// Checks the settings and builds the source (nothing is connected or
    /// opened yet).
    fn build(&self) -> anyhow::Result<Box<dyn Source>>;
}

/// The sources `config` asks for, checked, in a fixed order: HTTP (always:
/// its listener serves the API too), then MQTT when `[mqtt] url` is set,
/// then Kafka when `[kafka] brokers` (or its Event Hubs preset) is.
/// This is the one list of sources.
pub fn configured(
    config: &Config,
    inflight: Arc<crate::http::InFlight>,
    data: &std::path::Path,
) -> anyhow::Result<Vec<Box<dyn Source>>> {
    let mut sources: Vec<Box<dyn Source>> = vec![Box::new(http::HttpSource::new(config, inflight))];
    if config.mqtt.url.is_some() {
        sources.push(mqtt::MqttConfig::from_config(config).build()?);
    }
    if config.kafka.enabled() {
        #[cfg(feature = "kafka")]
        sources.push(kafka::KafkaConfig::from_config(config, data).build()?);
        #[cfg(not(feature = "kafka"))]
        {
            let _ = data;
            anyhow::bail!(
                "[kafka] is set, but this build has no Kafka source: build fleetscore with --features kafka (it needs OpenSSL's headers: apt install libssl-dev pkg-config), or use the container image, which has it"
            );
        }
    }
    Ok(sources)
}
