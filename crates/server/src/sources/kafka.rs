//! The Kafka-protocol source of `fleetscore serve` (`[kafka]`): Kafka,
//! Azure Event Hubs (which speaks Kafka), Redpanda and friends, through
//! librdkafka ([`rdkafka`], bundled).
//!
//! A consumer of the group `group_id` reads `topics`; each message is read
//! by [`fleetscore_codecs::decode_payload`] with `[kafka.payload]` (JSON:
//! one reading, an array, or one object with several sensors; a plain
//! number; line protocol; CSV), its key naming the device (`key =
//! "device"`, unless the payload names one) and its Kafka timestamp
//! standing in for a reading without a time (so that a redelivered
//! message gives the same readings).
//!
//! # Exactly once into raw/
//!
//! Offsets are committed only after the readings are durable in the
//! ingest log, and a message redelivered after a crash between the append
//! and the commit is not stored twice:
//!
//! 1. The messages of a partition that arrived together, offsets `A..=B`,
//!    are one batch. Before it is appended, the range is written to this
//!    node's intent file (`DATA/kafka/<group>.intents`, fsynced).
//! 2. The batch is appended to the log under an idempotency key naming
//!    the group, topic, partition and range, with an identity hashed from
//!    the messages (offsets, keys, payloads, timestamps).
//! 3. `B + 1` is committed to the group (synchronously, retried until it
//!    succeeds).
//!
//! After a crash the group resumes at the last committed offset. If that
//! is the `A` of a recorded intent, the source gathers exactly `A..=B`
//! again and appends it under the same key: the log answers that it is a
//! duplicate (it was stored before the crash) or stores it (it was not).
//! Either way raw/ holds it once. The log keeps keys for `[ingest]
//! log.idempotency_horizon_secs` (an hour by default): a crash longer
//! ago than that before the restart, or a partition that moves to another
//! node while its last batch is uncommitted, may store that batch twice
//! (at-least-once then). Give each node a stable `client_id` (static group
//! membership) so that its partitions come back to it.
//!
//! A message that cannot be read is dead-lettered (see
//! [`crate::deadletter`]) and its offset committed with its batch: a bad
//! message never blocks a partition.
//!
//! # Telemetry and health
//!
//! The source reports as `source="kafka"` in the telemetry every source
//! has, plus `fleetscore_source_lag_messages{topic,partition}` (the
//! partition's end offset minus the next offset to store, refreshed after
//! each batch). Broker errors (down, a refused login, an untrusted
//! certificate) are logged with the setting to check, and `/readyz` names
//! them until messages flow again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use fleetscore_codecs::{
    decode_payload, CsvBodyConfig, LineProtocolConfig, MessageMeta, PayloadConfig,
};
use fleetscore_core::ReadingsBuilder;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::Config;
use crate::deadletter::Letter;
use crate::metrics::{Failure, Outcome, Refusal, Source as MetricSource};
use crate::sources::Health;

const SOURCE: MetricSource = MetricSource::KAFKA;

/// What `[kafka]` asked for, with what the server adds.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    section: crate::config::KafkaSection,
    /// The SASL password, read from its variable (or why not).
    password: Result<Option<String>, String>,
    /// The Event Hubs connection string, read from its variable (or why
    /// not).
    event_hubs: Option<Result<String, String>>,
    line_protocol: LineProtocolConfig,
    csv: CsvBodyConfig,
    /// Where this node keeps its intents.
    dir: PathBuf,
}

impl KafkaConfig {
    /// The settings of `[kafka]`; intents go under `data/kafka/`.
    pub fn from_config(config: &Config, data: &Path) -> KafkaConfig {
        let k = &config.kafka;
        let password =
            crate::config::password("kafka", k.password.as_ref(), k.password_env.as_deref())
                .map_err(|e| e.to_string());
        let event_hubs = k.event_hubs_connection_string_env.as_ref().map(|var| {
            std::env::var(var).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
                format!("[kafka] event_hubs_connection_string_env = {var:?}: that environment variable is not set (or empty); put the namespace's connection string there (Azure portal: Event Hubs namespace → Shared access policies)")
            })
        });
        KafkaConfig {
            section: k.clone(),
            password,
            event_hubs,
            line_protocol: config.ingest.line_protocol.clone(),
            csv: CsvBodyConfig {
                ts_unit: k.payload.ts_unit,
                ..config.ingest.csv.clone()
            },
            dir: data.join("kafka"),
        }
    }
}

/// What an Event Hubs connection string gives: the namespace's Kafka
/// endpoint and the event hub (`EntityPath`) if named.
#[derive(Debug, PartialEq, Eq)]
struct EventHubs {
    brokers: String,
    entity: Option<String>,
}

/// Reads `Endpoint=sb://NS.servicebus.windows.net/;SharedAccessKeyName=…;
/// SharedAccessKey=…[;EntityPath=hub]`.
fn event_hubs(connection: &str) -> anyhow::Result<EventHubs> {
    let mut endpoint = None;
    let mut entity = None;
    let mut key = false;
    for part in connection
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (k, v) = part
            .split_once('=')
            .context("an Event Hubs connection string is `Key=value` parts separated by `;`")?;
        match k.to_ascii_lowercase().as_str() {
            "endpoint" => endpoint = Some(v.to_string()),
            "entitypath" => entity = Some(v.to_string()),
            "sharedaccesskey" | "sharedaccesssignature" => key = true,
            _ => {}
        }
    }
    let endpoint = endpoint.context("the Event Hubs connection string has no Endpoint=sb://…")?;
    let host = endpoint
        .strip_prefix("sb://")
        .context("the Event Hubs connection string's Endpoint does not start with sb://")?
        .trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        bail!("the Event Hubs connection string's Endpoint has no namespace host");
    }
    if !key {
        bail!("the Event Hubs connection string has no SharedAccessKey (copy the whole string of a shared access policy)");
    }
    Ok(EventHubs {
        brokers: format!("{host}:9093"),
        entity,
    })
}

/// The settings of the Kafka client, checked.
fn client_config(c: &KafkaConfig) -> anyhow::Result<(ClientConfig, Vec<String>, Hint)> {
    let k = &c.section;
    let mut cfg = ClientConfig::new();
    let mut topics = k.topics.clone();
    let (brokers, protocol) = match &c.event_hubs {
        Some(Err(e)) => bail!("{e}"),
        Some(Ok(conn)) => {
            let eh = event_hubs(conn)
                .map_err(|e| anyhow::anyhow!("[kafka] event_hubs_connection_string_env: {e}"))?;
            if let Some(entity) = &eh.entity {
                if topics == crate::config::KafkaSection::default().topics {
                    topics = vec![entity.clone()];
                }
            }
            cfg.set("sasl.mechanisms", "PLAIN")
                .set("sasl.username", "$ConnectionString")
                .set("sasl.password", conn);
            (eh.brokers, "sasl_ssl".to_string())
        }
        None => (
            k.brokers.clone().unwrap_or_default(),
            k.security_protocol.to_ascii_lowercase(),
        ),
    };
    if brokers.trim().is_empty() {
        bail!("[kafka] brokers is empty: host:port[,host:port…]");
    }
    if topics.is_empty() || topics.iter().any(|t| t.is_empty()) {
        bail!("[kafka] topics: name at least one topic, none empty");
    }
    if k.group_id.is_empty() {
        bail!("[kafka] group_id must not be empty");
    }
    let sasl = match protocol.as_str() {
        "plaintext" | "ssl" => false,
        "sasl_plaintext" | "sasl_ssl" => true,
        other => bail!(
            "[kafka] security_protocol {other:?}: use plaintext, ssl, sasl_plaintext or sasl_ssl"
        ),
    };
    let tls = protocol.ends_with("ssl");
    if c.event_hubs.is_none() && sasl {
        let mechanism = k.sasl_mechanism.clone().unwrap_or_else(|| "PLAIN".into());
        let m = mechanism.to_ascii_uppercase();
        if !matches!(m.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
            bail!(
                "[kafka] sasl_mechanism {mechanism:?}: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            );
        }
        let password = c.password.clone().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (Some(user), Some(password)) = (&k.username, password) else {
            bail!("[kafka] security_protocol = {protocol:?} needs username and password_env (or password)");
        };
        cfg.set("sasl.mechanisms", &m)
            .set("sasl.username", user)
            .set("sasl.password", password);
    } else if (k.sasl_mechanism.is_some() || k.username.is_some()) && c.event_hubs.is_none() {
        bail!("[kafka] username and sasl_mechanism need security_protocol = \"sasl_plaintext\" or \"sasl_ssl\"");
    }
    let file = |key: &str, path: &Option<String>| -> anyhow::Result<()> {
        if let Some(p) = path {
            if !tls {
                bail!("[kafka] {key} is for TLS: use security_protocol = \"ssl\" or \"sasl_ssl\"");
            }
            std::fs::metadata(p).with_context(|| format!("[kafka] {key} {p:?}: cannot read it"))?;
        }
        Ok(())
    };
    file("ca_file", &k.ca_file)?;
    file("client_cert", &k.client_cert)?;
    file("client_key", &k.client_key)?;
    if k.client_cert.is_some() != k.client_key.is_some() {
        bail!("[kafka] client_cert and client_key go together: set both or neither");
    }
    if let Some(ca) = &k.ca_file {
        cfg.set("ssl.ca.location", ca);
    }
    if let (Some(cert), Some(key)) = (&k.client_cert, &k.client_key) {
        cfg.set("ssl.certificate.location", cert)
            .set("ssl.key.location", key);
    }
    let start = match k.start.as_str() {
        "earliest" | "latest" => k.start.as_str(),
        other => bail!("[kafka] start {other:?}: use earliest or latest"),
    };
    if !matches!(k.key.as_str(), "device" | "ignore") {
        bail!("[kafka] key {:?}: use device or ignore", k.key);
    }
    if k.max_batch == 0 {
        bail!("[kafka] max_batch must be at least 1");
    }
    k.payload
        .check()
        .map_err(|e| anyhow::anyhow!("[kafka.payload] {e}"))?;
    let client_id = k
        .client_id
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("fleetscore-{}", std::process::id()));
    cfg.set("bootstrap.servers", brokers.trim())
        .set("group.id", &k.group_id)
        .set("client.id", &client_id)
        .set("security.protocol", protocol.to_ascii_uppercase())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", start);
    if k.client_id.is_some() {
        cfg.set("group.instance.id", &client_id);
    }
    for (key, value) in &k.options {
        cfg.set(key, value);
    }
    let hint = Hint {
        brokers: brokers.trim().to_string(),
        sasl,
        event_hubs: c.event_hubs.is_some(),
    };
    Ok((cfg, topics, hint))
}

/// What to say when the brokers refuse.
#[derive(Debug, Clone)]
struct Hint {
    brokers: String,
    sasl: bool,
    event_hubs: bool,
}

impl Hint {
    fn explain(&self, error: &str) -> String {
        let b = &self.brokers;
        let e = error.to_ascii_lowercase();
        if e.contains("sasl") && (e.contains("auth") || e.contains("fail")) {
            if self.event_hubs {
                format!("Kafka {b}: {error}: the Event Hubs namespace refused the connection string; check [kafka] event_hubs_connection_string_env")
            } else if self.sasl {
                format!("Kafka {b}: {error}: the login was refused; check [kafka] username, password_env and sasl_mechanism")
            } else {
                format!("Kafka {b}: {error}: the brokers want a login; set [kafka] security_protocol = \"sasl_ssl\", sasl_mechanism, username and password_env")
            }
        } else if e.contains("certificate") || e.contains("ssl handshake") {
            format!("Kafka {b}: {error}: the brokers' certificate is not trusted or does not name them; set [kafka] ca_file to their CA (PEM)")
        } else if e.contains("connection refused")
            || e.contains("all brokers down")
            || e.contains("resolve")
        {
            format!("Kafka {b}: {error}: is the broker up, and [kafka] brokers right?")
        } else {
            format!("Kafka {b}: {error}")
        }
    }
}

/// The consumer's callbacks: errors reach the log and `/readyz`.
struct Context {
    health: Arc<Health>,
    hint: Hint,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        let why = self.hint.explain(&format!("{error} ({reason})"));
        tracing::error!("{why}");
        self.health.set(SOURCE.name(), Err(why));
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(tpl) => {
                self.health.set(SOURCE.name(), Ok(()));
                tracing::info!(partitions = tpl.count(), "Kafka partitions assigned");
            }
            rdkafka::consumer::Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "Kafka partitions revoked");
            }
            rdkafka::consumer::Rebalance::Error(e) => {
                tracing::warn!(error = %e, "Kafka rebalance failed");
            }
        }
    }
}

/// A checked Kafka configuration, ready to run.
pub struct KafkaSource {
    config: ClientConfig,
    topics: Vec<String>,
    hint: Hint,
    group: String,
    key_is_device: bool,
    max_batch: usize,
    payload: PayloadConfig,
    line_protocol: LineProtocolConfig,
    csv: CsvBodyConfig,
    intents: PathBuf,
}

impl super::SourceConfig for KafkaConfig {
    fn build(&self) -> anyhow::Result<Box<dyn super::Source>> {
        let (config, topics, hint) = client_config(self)?;
        // librdkafka checks its settings when a client is made (no
        // connection yet): an unknown option fails the start here.
        let _checked = config
            .create_with_context::<_, StreamConsumer<Context>>(Context {
                health: Arc::new(Health::default()),
                hint: hint.clone(),
            })
            .map_err(|e| anyhow::anyhow!("[kafka]: {e}"))?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let group_file: String = self
            .section
            .group_id
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        tracing::info!(brokers = %hint.brokers, topics = ?topics, group = %self.section.group_id, "Kafka source configured");
        Ok(Box::new(KafkaSource {
            config,
            topics,
            hint,
            group: self.section.group_id.clone(),
            key_is_device: self.section.key == "device",
            max_batch: self.section.max_batch,
            payload: self.section.payload.clone(),
            line_protocol: self.line_protocol.clone(),
            csv: self.csv.clone(),
            intents: self.dir.join(format!("{group_file}.intents")),
        }))
    }
}

impl super::Source for KafkaSource {
    fn name(&self) -> &'static str {
        SOURCE.name()
    }

    fn start(
        self: Box<Self>,
        ctx: super::Context,
        stop: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let span = tracing::info_span!("source", source = SOURCE.name());
        Some(tokio::spawn(run(*self, ctx, stop).instrument(span)))
    }
}

/// The offset ranges of batches appended but perhaps not committed, per
/// (topic, partition), kept in a file so that a restart gathers the same
/// batch again.
struct Intents {
    path: PathBuf,
    ranges: BTreeMap<(String, i32), (i64, i64)>,
}

impl Intents {
    fn load(path: PathBuf) -> Intents {
        let ranges = std::fs::read_to_string(&path)
            .ok()
            .map(|text| {
                text.lines()
                    .filter_map(|l| {
                        let mut p = l.rsplitn(4, ' ');
                        let b = p.next()?.parse().ok()?;
                        let a = p.next()?.parse().ok()?;
                        let partition = p.next()?.parse().ok()?;
                        Some(((p.next()?.to_string(), partition), (a, b)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Intents { path, ranges }
    }

    /// Records `a..=b` as the batch of `tp` about to be appended (durable
    /// before this returns).
    fn set(&mut self, tp: &(String, i32), a: i64, b: i64) -> std::io::Result<()> {
        self.ranges.insert(tp.clone(), (a, b));
        let mut text = String::new();
        for ((topic, partition), (a, b)) in &self.ranges {
            text.push_str(&format!("{topic} {partition} {a} {b}\n"));
        }
        let tmp = self.path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// One batch of one partition's messages, offsets in order.
struct Batch {
    tp: (String, i32),
    messages: Vec<OwnedMessage>,
}

async fn run(source: KafkaSource, ctx: super::Context, mut stop: watch::Receiver<bool>) {
    let health = Arc::clone(&ctx.health);
    health.set(
        SOURCE.name(),
        Err(format!("connecting to {}", source.hint.brokers)),
    );
    let consumer: StreamConsumer<Context> = match source.config.create_with_context(Context {
        health: Arc::clone(&health),
        hint: source.hint.clone(),
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the Kafka consumer could not be made");
            health.set(SOURCE.name(), Err(e.to_string()));
            return;
        }
    };
    let topics: Vec<&str> = source.topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&topics) {
        let why = source.hint.explain(&e.to_string());
        tracing::error!("{why}");
        health.set(SOURCE.name(), Err(why));
        return;
    }
    let consumer = Arc::new(consumer);
    let mut intents = Intents::load(source.intents.clone());
    // Messages of a partition gathered to complete a recorded intent.
    let mut gathering: BTreeMap<(String, i32), Vec<OwnedMessage>> = BTreeMap::new();
    // The partitions' lag, every 2 s, also while no message comes.
    let mut lag_tick = tokio::time::interval(Duration::from_secs(2));
    lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut stored, mut refused) = (0u64, 0u64);
    'run: loop {
        let first = tokio::select! {
            m = consumer.recv() => m,
            _ = lag_tick.tick() => {
                refresh_lag(&consumer, &ctx.metrics).await;
                continue;
            }
            _ = stop.changed() => break,
        };
        let mut received = match first {
            Ok(m) => vec![m.detach()],
            Err(e) => {
                let why = source.hint.explain(&e.to_string());
                tracing::warn!("{why}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => break,
                }
                continue;
            }
        };
        health.set(SOURCE.name(), Ok(()));
        while received.len() < source.max_batch {
            match tokio::time::timeout(Duration::from_millis(20), consumer.recv()).await {
                Ok(Ok(m)) => received.push(m.detach()),
                _ => break,
            }
        }
        ctx.metrics.received(SOURCE, received.len() as u64);
        // Per partition, in offset order.
        let mut by_partition: BTreeMap<(String, i32), Vec<OwnedMessage>> = BTreeMap::new();
        for m in received {
            by_partition
                .entry((m.topic().to_string(), m.partition()))
                .or_default()
                .push(m);
        }
        for (tp, mut messages) in by_partition {
            if let Some(earlier) = gathering.remove(&tp) {
                let mut all = earlier;
                all.append(&mut messages);
                // A partition revoked and assigned again while a range was
                // being gathered delivers its messages again: once each.
                all.sort_by_key(OwnedMessage::offset);
                all.dedup_by_key(|m| m.offset());
                messages = all;
            }
            // A recorded intent this partition resumes at: gather exactly
            // its range again.
            let mut batches = Vec::new();
            if let Some(&(a, b)) = intents.ranges.get(&tp) {
                let first = messages[0].offset();
                if first == a {
                    let last = messages.last().map_or(a, OwnedMessage::offset);
                    if last < b {
                        gathering.insert(tp, messages);
                        continue;
                    }
                    let rest = messages.split_off(
                        messages
                            .iter()
                            .position(|m| m.offset() > b)
                            .unwrap_or(messages.len()),
                    );
                    tracing::info!(topic = %tp.0, partition = tp.1, from = a, to = b, "Kafka: a batch appended before a restart, gathered again (stored once)");
                    batches.push(Batch {
                        tp: tp.clone(),
                        messages,
                    });
                    messages = rest;
                } else if first < a {
                    tracing::warn!(topic = %tp.0, partition = tp.1, resumed_at = first, intent_from = a, "Kafka: the group resumed before this node's last batch (committed elsewhere, or an offset reset): these messages may be stored again");
                }
            }
            if !messages.is_empty() {
                batches.push(Batch { tp, messages });
            }
            for batch in batches {
                match store_batch(&source, &ctx, &consumer, &mut intents, batch, &mut stop).await {
                    Some((s, r)) => {
                        stored += s;
                        refused += r;
                    }
                    None => break 'run,
                }
            }
        }
        tracing::info!(
            stored_total = stored,
            refused_total = refused,
            "Kafka batch stored and committed"
        );
    }
    consumer.unsubscribe();
    tracing::info!("Kafka source stopped");
}

/// Sets the lag of every assigned partition: its end offset (asked of the
/// broker) minus the consumer's position (a partition not fetched from
/// yet has no position, and no lag until it has).
async fn refresh_lag(consumer: &Arc<StreamConsumer<Context>>, metrics: &crate::metrics::Metrics) {
    let due: Vec<((String, i32), i64)> = {
        let assignment = consumer.assignment().unwrap_or_default();
        let position = consumer.position().ok();
        assignment
            .elements()
            .iter()
            .filter_map(|el| {
                let tp = (el.topic().to_string(), el.partition());
                let pos = position
                    .as_ref()
                    .and_then(|p| p.find_partition(&tp.0, tp.1))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })?;
                Some((tp, pos))
            })
            .collect()
    };
    for ((topic, partition), pos) in due {
        let c = Arc::clone(consumer);
        let t = topic.clone();
        let watermarks = tokio::task::spawn_blocking(move || {
            c.fetch_watermarks(&t, partition, Duration::from_secs(2))
        })
        .await;
        if let Ok(Ok((_, high))) = watermarks {
            metrics.lag(SOURCE, &topic, partition, (high - pos).max(0));
        }
    }
}

/// Reads, appends (under the batch's key), dead-letters and commits one
/// partition's batch; `None` when `stop` came first (nothing committed:
/// the batch comes again).
async fn store_batch(
    source: &KafkaSource,
    ctx: &super::Context,
    consumer: &StreamConsumer<Context>,
    intents: &mut Intents,
    batch: Batch,
    stop: &mut watch::Receiver<bool>,
) -> Option<(u64, u64)> {
    let (topic, partition) = batch.tp.clone();
    let (a, b) = (
        batch.messages[0].offset(),
        batch.messages.last().map_or(0, OwnedMessage::offset),
    );
    let mut readings = ReadingsBuilder::new();
    let mut letters: Vec<Letter> = Vec::new();
    let mut identity = Sha256::new();
    identity.update(format!("{topic}\0{partition}\0{a}\0{b}\0").as_bytes());
    for m in &batch.messages {
        let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
        let payload = m.payload().unwrap_or_default();
        let arrival = m
            .timestamp()
            .to_millis()
            .map_or_else(crate::now_ns, |ms| ms.saturating_mul(1_000_000));
        identity.update(m.offset().to_le_bytes());
        identity.update(m.key().unwrap_or_default());
        identity.update([0]);
        identity.update(payload);
        identity.update(arrival.to_le_bytes());
        let meta = MessageMeta {
            device: key.filter(|_| source.key_is_device),
            tag: None,
            arrival_ns: arrival,
        };
        if let Err(e) = decode_payload(
            payload,
            &meta,
            &source.payload,
            &source.line_protocol,
            &source.csv,
            &mut readings,
        ) {
            letters.push(ctx.dead_letters.letter(
                SOURCE,
                e.problem,
                e.message,
                format!("{topic}/{partition}@{}", m.offset()),
                payload,
            ));
        }
    }
    let readings = Arc::new(readings.finish());
    let n = readings.len();
    let bad = letters.len() as u64;
    let good = batch.messages.len() as u64 - bad;
    if let Err(e) = intents.set(&batch.tp, a, b) {
        tracing::error!(error = %e, path = %intents.path.display(), "Kafka: the batch's intent could not be written; retrying");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return None,
        }
        intents.set(&batch.tp, a, b).ok()?;
    }
    if n > 0 {
        let key = batch_key(&source.group, &topic, partition, a, b);
        let identity: [u8; 32] = identity.finalize().into();
        let mut backoff = Duration::from_millis(500);
        let mut keyed = true;
        loop {
            let (ingestor, r, key) = (
                Arc::clone(&ctx.ingestor),
                Arc::clone(&readings),
                key.clone(),
            );
            let appended = tokio::task::spawn_blocking(move || {
                if keyed {
                    ingestor.append_keyed(Some(&key), Some(&identity), r)
                } else {
                    ingestor.append_keyed(None, None, r)
                }
            })
            .await;
            if let Ok(Err(fleetscore_ingest::LogError::KeyReused { .. })) = &appended {
                // The same range was stored before with other messages (the
                // topic was recreated, or offsets were reset): storing it
                // again is the only way not to lose it, and retrying under
                // the key cannot succeed.
                tracing::error!(topic = %topic, partition, from = a, to = b, "Kafka: this offset range was stored before with other messages (a recreated topic or reset offsets?); storing it again without its key");
                keyed = false;
                continue;
            }
            let (failure, e) = match appended {
                Ok(Ok(a)) if a.duplicate => {
                    ctx.metrics.duplicate(SOURCE, n as u64);
                    ctx.metrics.outcome(SOURCE, Outcome::Duplicate, good);
                    break;
                }
                Ok(Ok(_)) => {
                    ctx.metrics.stored(SOURCE, n as u64);
                    ctx.metrics.outcome(SOURCE, Outcome::Stored, good);
                    break;
                }
                Ok(Err(e)) => (Failure::of_append(&e), e.to_string()),
                Err(e) => (Failure::Internal, e.to_string()),
            };
            ctx.metrics.outcome(SOURCE, Outcome::Failed(failure), good);
            tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Kafka batch not stored: the ingest log append failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
    if bad > 0 {
        ctx.dead_letters.keep(SOURCE, letters).await;
        ctx.metrics.refused(SOURCE, bad);
        ctx.metrics
            .outcome(SOURCE, Outcome::Refused(Refusal::Invalid), bad);
    }
    crash_point();
    // Durable: commit the next offset, retried until the group takes it
    // (a later batch of this partition must not be appended before).
    let mut tpl = TopicPartitionList::new();
    if let Err(e) = tpl.add_partition_offset(&topic, partition, Offset::Offset(b + 1)) {
        tracing::error!(error = %e, "Kafka: bad offset to commit");
        return None;
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, topic = %topic, partition, offset = b + 1, retry_in_ms = backoff.as_millis() as u64, "Kafka: the offset commit failed; retrying (the batch is stored)");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return None,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    Some((n as u64, bad))
}

/// For the tests of exactly-once delivery: with
/// `FLEETSCORE_TEST_KAFKA_CRASH_AFTER_APPENDS=N` the process aborts right
/// after its N-th batch is durable and before its offset is committed,
/// the one moment a crash leaves a stored batch to be delivered again.
fn crash_point() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static APPENDS: AtomicU64 = AtomicU64::new(0);
    // Read once: this runs after every batch.
    static AFTER: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let Some(n) = *AFTER.get_or_init(|| {
        std::env::var("FLEETSCORE_TEST_KAFKA_CRASH_AFTER_APPENDS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
    }) else {
        return;
    };
    if APPENDS.fetch_add(1, Ordering::SeqCst) + 1 >= n {
        tracing::warn!("FLEETSCORE_TEST_KAFKA_CRASH_AFTER_APPENDS: aborting before the commit");
        std::process::abort();
    }
}

/// The idempotency key of a partition's batch `a..=b`: short whatever the
/// group and topic names are.
fn batch_key(group: &str, topic: &str, partition: i32, a: i64, b: i64) -> String {
    let h = Sha256::digest(format!("{group}\0{topic}").as_bytes());
    let short: String = h[..8].iter().map(|x| format!("{x:02x}")).collect();
    format!("kafka-{short}-{partition}-{a}-{b}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_hubs_connection_strings() {
        let eh = event_hubs(
            "Endpoint=sb://fleet-ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=abc=;EntityPath=telemetry",
        )
        .unwrap();
        assert_eq!(
            eh,
            EventHubs {
                brokers: "fleet-ns.servicebus.windows.net:9093".into(),
                entity: Some("telemetry".into())
            }
        );
        assert!(event_hubs("Endpoint=https://x/;SharedAccessKey=a").is_err());
        assert!(event_hubs("Endpoint=sb://x.servicebus.windows.net/")
            .unwrap_err()
            .to_string()
            .contains("SharedAccessKey"));
        assert!(event_hubs("nonsense").is_err());
    }

    fn config(section: crate::config::KafkaSection) -> KafkaConfig {
        let c = Config {
            kafka: section,
            ..Config::default()
        };
        KafkaConfig::from_config(&c, Path::new("/tmp"))
    }

    #[test]
    fn settings_are_checked() {
        let base = crate::config::KafkaSection {
            brokers: Some("127.0.0.1:9092".into()),
            ..Default::default()
        };
        assert!(client_config(&config(base.clone())).is_ok());
        let err =
            |s: crate::config::KafkaSection| client_config(&config(s)).unwrap_err().to_string();
        assert!(err(crate::config::KafkaSection {
            security_protocol: "tls".into(),
            ..base.clone()
        })
        .contains("security_protocol"));
        assert!(err(crate::config::KafkaSection {
            security_protocol: "sasl_ssl".into(),
            ..base.clone()
        })
        .contains("needs username"));
        assert!(err(crate::config::KafkaSection {
            security_protocol: "sasl_ssl".into(),
            username: Some("u".into()),
            password_env: Some("FLEETSCORE_TEST_UNSET".into()),
            ..base.clone()
        })
        .contains("FLEETSCORE_TEST_UNSET"));
        assert!(err(crate::config::KafkaSection {
            sasl_mechanism: Some("GSSAPI".into()),
            security_protocol: "sasl_ssl".into(),
            ..base.clone()
        })
        .contains("sasl_mechanism"));
        assert!(err(crate::config::KafkaSection {
            ca_file: Some("/x.pem".into()),
            ..base.clone()
        })
        .contains("for TLS"));
        assert!(err(crate::config::KafkaSection {
            start: "newest".into(),
            ..base.clone()
        })
        .contains("earliest or latest"));
        assert!(err(crate::config::KafkaSection {
            topics: vec![],
            ..base.clone()
        })
        .contains("topics"));
        let eh = crate::config::KafkaSection {
            brokers: None,
            event_hubs_connection_string_env: Some("FLEETSCORE_TEST_UNSET_EH".into()),
            ..Default::default()
        };
        assert!(err(eh).contains("FLEETSCORE_TEST_UNSET_EH"));
    }

    #[test]
    fn intents_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.intents");
        let mut i = Intents::load(path.clone());
        i.set(&("fleet.a b".into(), 3), 10, 20).unwrap();
        i.set(&("t".into(), 0), 5, 5).unwrap();
        let again = Intents::load(path);
        assert_eq!(again.ranges.get(&("fleet.a b".into(), 3)), Some(&(10, 20)));
        assert_eq!(again.ranges.get(&("t".into(), 0)), Some(&(5, 5)));
        assert!(batch_key("g", "t", 1, 2, 3).len() < 64);
    }
}
