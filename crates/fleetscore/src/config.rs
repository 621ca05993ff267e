//! The service config: built-in defaults, then the TOML file of `--config`,
//! then `FLEETSCORE__SECTION__KEY` environment variables, then flags.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! max_body_bytes = 33554432          # larger bodies get 413
//! windows = true                     # streaming windows into windows/
//! window_flush_interval = "10s"
//!
//! [ingest]
//! compact_interval = "60s"           # log segments into raw/
//! log = { max_segment_bytes = 67108864, max_group_bytes = 8388608, max_wait_us = 0 }
//! line_protocol = { device_tag = "device", prefix_measurement = false, booleans = "number" }
//! csv = { header = true, ts = "TS", device = "Device", tag = "Tag", value = "Value" }
//!
//! [stream]                           # the window aggregator
//! windows = [{ size = "1m" }, { size = "1h", hop = "15m" }]
//! out_of_order = "5s"
//! allowed_lateness = "0s"
//! late_policy = "drop"               # or "adjust"
//! watermark = "per_device"           # or "global"
//!
//! [mqtt]                             # absent url: no MQTT source
//! url = "mqtt://127.0.0.1:1883"
//! topic = "fleet/+/+"
//! shared_group = "ingest"
//! client_id = "fleetscore-1"
//!
//! [auth]
//! ingest_tokens = ["…"]              # any of them is accepted on ingest
//! admin_tokens = ["…"]
//! ```
//!
//! An environment variable names the section and key with double
//! underscores, e.g. `FLEETSCORE__AUTH__INGEST_TOKENS='["t1","t2"]'` or
//! `FLEETSCORE__STREAM__OUT_OF_ORDER=30s`. Unknown keys are refused with
//! their name and where they came from. `fleetscore config` prints the
//! result.

use std::path::Path;

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use fleetscore_codecs::{CsvBodyConfig, LineProtocolConfig};
use fleetscore_ingest::LogConfig;
use fleetscore_stream::{AggregatorConfig, Span};
use serde::{Deserialize, Serialize};

/// Everything `serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[ingest]`.
    pub ingest: IngestConfig,
    /// `[stream]`: the window aggregator.
    pub stream: AggregatorConfig,
    /// `[mqtt]`.
    pub mqtt: MqttSection,
    /// `[auth]`.
    pub auth: AuthConfig,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: String,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Whether closed windows are computed and written to windows/.
    pub windows: bool,
    /// How often closed windows are written, with a checkpoint.
    pub window_flush_interval: Span,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 32 << 20,
            windows: true,
            window_flush_interval: Span::from_secs(10),
        }
    }
}

/// `[ingest]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// How often the active log segment is closed and closed segments are
    /// compacted into raw/.
    pub compact_interval: Span,
    /// The durable ingest log.
    pub log: LogConfig,
    /// How line protocol maps to readings.
    pub line_protocol: LineProtocolConfig,
    /// How CSV bodies map to readings.
    pub csv: CsvBodyConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            compact_interval: Span::from_secs(60),
            log: LogConfig::default(),
            line_protocol: LineProtocolConfig::default(),
            csv: CsvBodyConfig::default(),
        }
    }
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSection {
    /// `mqtt://host[:port]`; none means no MQTT source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Topic filter; device and tag are the topic's last two levels.
    pub topic: String,
    /// MQTT 5 shared-subscription group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_group: Option<String>,
    /// Client id (default `fleetscore-<pid>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            url: None,
            topic: "fleet/+/+".into(),
            shared_group: None,
            client_id: None,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens accepted on the ingest endpoints; empty: no token
    /// needed.
    pub ingest_tokens: Vec<String>,
    /// Bearer tokens for admin endpoints (they also may ingest).
    pub admin_tokens: Vec<String>,
}

/// The prefix of config environment variables.
pub const ENV_PREFIX: &str = "FLEETSCORE__";

/// Defaults, then `file` (if given), then the environment.
pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.is_file() {
            anyhow::bail!(
                "--config {}: no such file (write one from `fleetscore config`)",
                path.display()
            );
        }
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed(ENV_PREFIX).split("__"));
    let config: Config = fig.extract().map_err(|e| {
        // figment names the key and its source; list every problem.
        let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("invalid config: {}", all.join("; "))
    })?;
    config
        .stream
        .validate()
        .context("invalid config: [stream]")?;
    Ok(config)
}

/// The config as TOML, for `fleetscore config`.
pub fn to_toml(config: &Config) -> anyhow::Result<String> {
    toml::to_string_pretty(config).context("writing the config as TOML")
}

#[cfg(test)]
// figment's Jail closures return its (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use fleetscore_stream::WindowSpec;

    #[test]
    fn file_then_env_override_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "f.toml",
                r#"
                [server]
                listen = "0.0.0.0:9000"
                [ingest.line_protocol]
                device_tag = "host"
                [ingest.csv]
                ts = "time"
                value = 3
                [stream]
                windows = [{ size = "5m", hop = "1m" }]
                "#,
            )?;
            jail.set_env("FLEETSCORE__AUTH__INGEST_TOKENS", r#"["a","b"]"#);
            jail.set_env("FLEETSCORE__STREAM__OUT_OF_ORDER", "30s");
            let c = load(Some(Path::new("f.toml"))).expect("loads");
            assert_eq!(c.server.listen, "0.0.0.0:9000");
            assert_eq!(c.server.max_body_bytes, 32 << 20);
            assert_eq!(c.ingest.line_protocol.device_tag, "host");
            assert_eq!(c.ingest.csv.value, fleetscore_codecs::Column::Index(3));
            assert_eq!(
                c.stream.windows,
                vec![WindowSpec::hopping(
                    Span::from_secs(300),
                    Span::from_secs(60)
                )]
            );
            assert_eq!(c.stream.out_of_order, Span::from_secs(30));
            assert_eq!(c.auth.ingest_tokens, vec!["a", "b"]);
            // What `fleetscore config` prints loads back to the same.
            jail.create_file("out.toml", &to_toml(&c).expect("toml"))?;
            jail.clear_env();
            assert_eq!(load(Some(Path::new("out.toml"))).expect("reloads"), c);
            Ok(())
        });
    }

    #[test]
    fn mistakes_name_the_key_and_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[server]\nlisen = \"x\"\n")?;
            let e = load(Some(Path::new("bad.toml"))).unwrap_err().to_string();
            assert!(e.contains("lisen") && e.contains("bad.toml"), "{e}");
            jail.create_file("bad2.toml", "[stream]\nout_of_order = \"5 parsecs\"\n")?;
            let e = load(Some(Path::new("bad2.toml"))).unwrap_err().to_string();
            assert!(e.contains("out_of_order") && e.contains("unit"), "{e}");
            let e = load(Some(Path::new("missing.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains("no such file"), "{e}");
            jail.create_file("bad3.toml", "[stream]\nwindows = []\n")?;
            let e = format!("{:#}", load(Some(Path::new("bad3.toml"))).unwrap_err());
            assert!(e.contains("no windows configured"), "{e}");
            Ok(())
        });
    }
}
