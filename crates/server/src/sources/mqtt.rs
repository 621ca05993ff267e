//! The MQTT source of `fleetscore serve` (`[mqtt]`, `--mqtt URL`).
//!
//! An MQTT 5 client ([`rumqttc::v5`]) subscribes at QoS 1 to the topic
//! `[mqtt] topic`, or to `$share/GROUP/<filter>` with `shared_group` so
//! several ingest nodes split the messages of one topic. The topic is a
//! template: its `{device}` and `{tag}` levels name a reading's device and
//! tag (`fleet/{device}/{tag}`, the default; `site/+/{device}` for devices
//! that publish one JSON object with several sensors). A plain filter
//! without braces (`fleet/+/+`) takes the topic's last two levels as device
//! and tag.
//!
//! # Connection
//! `mqtt://host[:1883]`, or `mqtts://host[:8883]` for TLS (rustls): the
//! broker's certificate is checked against `ca_file` (PEM) or the system's
//! CAs, and `client_cert` + `client_key` are sent to brokers that ask for
//! one. `username` with `password` or, better, `password_env` (the name of
//! the variable holding it) log in; the password never reaches a log or
//! `fleetscore config`. A broker that is down, refuses the login or
//! presents a certificate that is not trusted is logged at `error` with the
//! setting to check, `/readyz` names it until the source is connected, and
//! the source retries with a backoff (0.5 s doubling up to 30 s).
//!
//! # Payloads
//! Read by [`fleetscore_codecs::decode_payload`] with `[mqtt.payload]`: a
//! plain number (`21.5`, at its arrival time), a JSON object with a value
//! (`{"value": 20, "ts": 1764887621.5}`), a JSON object with several
//! sensors (`{"ts": …, "temp": 21.3, "vib": 0.02}`, one tag per field), an
//! array of those, or line protocol / CSV. Numeric times are seconds,
//! milliseconds, microseconds or nanoseconds by magnitude (`ts_unit`
//! fixes one); strings are RFC 3339.
//!
//! # Acknowledgements
//!
//! The client uses manual acknowledgements: a message is PUBACKed only after
//! [`Log::append`](fleetscore_ingest::Log::append) returned `Ok` for the
//! batch holding its readings, so an acknowledged reading is durable.
//! Messages that arrive together are appended as one batch and acknowledged
//! in the order they were received. If the append fails, nothing is
//! acknowledged and the same batch is retried with a backoff (the log's
//! contract allows a retried batch to be stored twice). Unacknowledged
//! messages are redelivered by the broker after a reconnect: the session is
//! kept (`clean_start = false`, one hour session expiry), so use a stable
//! `client_id` to get them back after a restart as well. An acknowledgement
//! is only sent on the connection the message arrived on; after a
//! reconnect the broker redelivers it instead, which may store it twice
//! (at-least-once).
//!
//! A message that cannot be read (a bad payload, a topic without its
//! device) is **dead-lettered** (kept under `rejected/` with its topic,
//! reason and bytes, see [`crate::deadletter`]) and counted, then
//! acknowledged with its batch, in order: the broker would otherwise
//! redeliver it forever and it would hold one of the in-flight slots.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fleetscore_codecs::{
    decode_payload, CsvBodyConfig, LineProtocolConfig, MessageMeta, PayloadConfig, Problem,
};
use fleetscore_core::ReadingsBuilder;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::config::Config;
use crate::deadletter::{DeadLetters, Letter};
use crate::metrics::{Failure, Metrics, Outcome, Refusal, Source as MetricSource};
use crate::windows::Ingestor;

/// What `[mqtt]` (and `--mqtt*`) asked for.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub url: String,
    /// Topic template or filter, e.g. `fleet/{device}/{tag}`.
    pub topic: String,
    /// Shared-subscription group, if any.
    pub shared_group: Option<String>,
    /// Client id; `fleetscore-<pid>` when absent.
    pub client_id: Option<String>,
    /// Login user name.
    pub username: Option<String>,
    /// Login password (already read from its variable).
    pub password: Option<String>,
    /// Why the password could not be read, reported by `build`.
    pub password_error: Option<String>,
    /// CA certificates to trust (PEM file).
    pub ca_file: Option<String>,
    /// Client certificate and key (PEM files).
    pub client_cert: Option<String>,
    /// The client certificate's key.
    pub client_key: Option<String>,
    /// How payloads are read.
    pub payload: PayloadConfig,
    /// Line protocol payloads.
    pub line_protocol: LineProtocolConfig,
    /// CSV payloads.
    pub csv: CsvBodyConfig,
}

impl MqttConfig {
    /// The settings of `[mqtt]` (and `[ingest]`'s line protocol and CSV).
    pub fn from_config(config: &Config) -> MqttConfig {
        let m = &config.mqtt;
        let (password, password_error) =
            match crate::config::password("mqtt", m.password.as_ref(), m.password_env.as_deref()) {
                Ok(p) => (p, None),
                Err(e) => (None, Some(e.to_string())),
            };
        MqttConfig {
            url: m.url.clone().unwrap_or_default(),
            topic: m.topic.clone(),
            shared_group: m.shared_group.clone(),
            client_id: m.client_id.clone(),
            username: m.username.clone(),
            password,
            password_error,
            ca_file: m.ca_file.clone(),
            client_cert: m.client_cert.clone(),
            client_key: m.client_key.clone(),
            payload: m.payload.clone(),
            line_protocol: config.ingest.line_protocol.clone(),
            csv: CsvBodyConfig {
                ts_unit: m.payload.ts_unit,
                ..config.ingest.csv.clone()
            },
        }
    }
}

/// Most messages appended as one batch.
const MAX_BATCH: usize = 1000;
/// The broker sends at most this many unacknowledged messages.
const RECEIVE_MAX: u16 = 1000;

/// `url` with any `user:password@` replaced by `***@`, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// `(tls, host, port)` of `mqtt://host[:port]` (also `tcp://`) or
/// `mqtts://host[:port]` (also `ssl://`).
fn parse_url(full: &str) -> anyhow::Result<(bool, String, u16)> {
    let shown = redacted(full);
    let url = shown.as_str();
    let (tls, rest) = if let Some(r) = full.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = full.strip_prefix("tcp://") {
        (false, r)
    } else if let Some(r) = full.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = full.strip_prefix("ssl://") {
        (true, r)
    } else {
        bail!("[mqtt] url {url:?}: expected mqtt://host[:port] or mqtts://host[:port] (TLS)")
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        bail!("[mqtt] url {url:?}: expected mqtt://host[:port] (the login goes in [mqtt] username and password_env, not the URL)");
    }
    // [v6addr]:port, host:port or host.
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, p) = r
            .split_once(']')
            .with_context(|| format!("[mqtt] url {url:?}: unclosed ["))?;
        (h.to_string(), p.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("[mqtt] url {url:?}: bad port {p:?}"))?,
        None if tls => 8883,
        None => 1883,
    };
    Ok((tls, host, port))
}

/// Where a topic names a reading's device and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TopicLayout {
    /// A plain filter: the last two levels.
    LastTwo,
    /// A template: the levels of `{device}` and `{tag}` (0-based), each
    /// optional (then the payload names it).
    Levels {
        device: Option<usize>,
        tag: Option<usize>,
    },
}

impl TopicLayout {
    /// The device and tag `topic` names.
    fn names<'t>(&self, topic: &'t str) -> (Option<&'t str>, Option<&'t str>) {
        let nonempty = |s: Option<&'t str>| s.filter(|s| !s.is_empty());
        match self {
            TopicLayout::LastTwo => {
                let mut levels = topic.rsplit('/');
                let tag = nonempty(levels.next());
                let device = nonempty(levels.next());
                match (device, tag) {
                    (Some(d), Some(t)) => (Some(d), Some(t)),
                    _ => (None, None),
                }
            }
            TopicLayout::Levels { device, tag } => {
                let at = |i: &Option<usize>| i.and_then(|i| nonempty(topic.split('/').nth(i)));
                (at(device), at(tag))
            }
        }
    }
}

/// The subscription filter (`$share/GROUP/FILTER` or `FILTER`) and the
/// layout of `topic`.
fn subscription(topic: &str, group: Option<&str>) -> anyhow::Result<(String, TopicLayout)> {
    if topic.is_empty() {
        bail!("[mqtt] topic must not be empty");
    }
    let (filter, layout) = if topic.contains(['{', '}']) {
        let (mut device, mut tag) = (None, None);
        let mut levels = Vec::new();
        for (i, level) in topic.split('/').enumerate() {
            match level {
                "{device}" if device.is_none() => device = Some(i),
                "{tag}" if tag.is_none() => tag = Some(i),
                "{device}" | "{tag}" => bail!("[mqtt] topic {topic:?}: {level} is given twice"),
                l if l.contains(['{', '}']) => bail!(
                    "[mqtt] topic {topic:?}: level {l:?}: only whole levels {{device}} and {{tag}} may be named"
                ),
                _ => {}
            }
            levels.push(if level.starts_with('{') { "+" } else { level });
        }
        if let Some(hash) = levels.iter().position(|l| *l == "#") {
            if device.is_some_and(|d| d > hash) || tag.is_some_and(|t| t > hash) {
                bail!("[mqtt] topic {topic:?}: {{device}} and {{tag}} must come before #");
            }
        }
        (levels.join("/"), TopicLayout::Levels { device, tag })
    } else {
        (topic.to_string(), TopicLayout::LastTwo)
    };
    let filter = match group {
        None => filter,
        Some(g) if g.is_empty() || g.contains(['/', '+', '#']) => {
            bail!("[mqtt] shared_group {g:?}: must be non-empty without '/', '+' or '#'")
        }
        Some(g) => format!("$share/{g}/{filter}"),
    };
    Ok((filter, layout))
}

/// The rustls client configuration of `mqtts://`.
fn tls_config(c: &MqttConfig) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match &c.ca_file {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("[mqtt] ca_file {ca:?}: cannot read it"))?;
            for cert in certs {
                let cert =
                    cert.with_context(|| format!("[mqtt] ca_file {ca:?}: not a PEM certificate"))?;
                roots.add(cert).with_context(|| {
                    format!("[mqtt] ca_file {ca:?}: a certificate is not usable")
                })?;
            }
            if roots.is_empty() {
                bail!("[mqtt] ca_file {ca:?}: holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)");
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                bail!("[mqtt] url is mqtts:// but this system has no CA certificates; set [mqtt] ca_file to the broker's CA (PEM)");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS: no protocol version")?
        .with_root_certificates(roots);
    Ok(match (&c.client_cert, &c.client_key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("[mqtt] client_cert {cert:?}: cannot read it"))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("[mqtt] client_cert {cert:?}: not a PEM certificate"))?;
            if chain.is_empty() {
                bail!("[mqtt] client_cert {cert:?}: holds no certificate");
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("[mqtt] client_key {key:?}: no PEM private key in it"))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("[mqtt] client_cert and client_key do not match")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("[mqtt] client_cert and client_key go together: set both or neither"),
    })
}

/// A message's readings and what became of it, for the append loop.
struct Message {
    publish: Publish,
    conn: u64,
}

/// A checked MQTT configuration, ready to run.
pub struct MqttSource {
    opts: MqttOptions,
    filter: String,
    reader: Reader,
    /// What to say when the connection fails: the settings in play.
    hint: Hint,
}

/// How messages become readings.
#[derive(Clone)]
struct Reader {
    layout: TopicLayout,
    payload: PayloadConfig,
    line_protocol: LineProtocolConfig,
    csv: CsvBodyConfig,
}

/// What an operator should check when the broker refuses.
#[derive(Clone)]
struct Hint {
    url: String,
    tls: bool,
    login: bool,
}

impl super::SourceConfig for MqttConfig {
    fn build(&self) -> anyhow::Result<Box<dyn super::Source>> {
        Ok(Box::new(check(self.clone())?))
    }
}

impl super::Source for MqttSource {
    fn name(&self) -> &'static str {
        MetricSource::MQTT.name()
    }

    fn start(
        self: Box<Self>,
        ctx: super::Context,
        stop: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let span = tracing::info_span!("source", source = MetricSource::MQTT.name());
        Some(tokio::spawn(run(*self, ctx, stop).instrument(span)))
    }
}

/// Checks the `[mqtt]` settings (files are read now, so a wrong path fails
/// the start).
pub fn check(config: MqttConfig) -> anyhow::Result<MqttSource> {
    if let Some(e) = &config.password_error {
        bail!("{e}");
    }
    let (tls, host, port) = parse_url(&config.url)?;
    let (filter, layout) = subscription(&config.topic, config.shared_group.as_deref())?;
    config
        .payload
        .check()
        .map_err(|e| anyhow::anyhow!("[mqtt.payload] {e}"))?;
    if config.payload.format == fleetscore_codecs::PayloadFormat::Number
        && !matches!(
            layout,
            TopicLayout::LastTwo
                | TopicLayout::Levels {
                    device: Some(_),
                    tag: Some(_)
                }
        )
    {
        bail!("[mqtt] payload.format = \"number\" needs {{device}} and {{tag}} in the topic");
    }
    if config.password.is_some() && config.username.is_none() {
        bail!("[mqtt] a password is set without a username; set [mqtt] username");
    }
    if !tls && (config.ca_file.is_some() || config.client_cert.is_some()) {
        bail!("[mqtt] ca_file and client_cert are for TLS: use an mqtts:// url");
    }
    let client_id = config
        .client_id
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("fleetscore-{}", std::process::id()));
    let mut opts = MqttOptions::new(client_id.clone(), host.clone(), port);
    opts.set_manual_acks(true)
        .set_clean_start(false)
        .set_session_expiry_interval(Some(3600))
        .set_receive_maximum(Some(RECEIVE_MAX))
        .set_keep_alive(Duration::from_secs(30));
    if tls {
        let tls = tls_config(&config)?;
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls),
        )));
    }
    if let Some(user) = &config.username {
        opts.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
    }
    tracing::info!(
        %host,
        port,
        tls,
        %client_id,
        %filter,
        username = config.username.as_deref().unwrap_or(""),
        "MQTT source configured"
    );
    Ok(MqttSource {
        opts,
        filter,
        reader: Reader {
            layout,
            payload: config.payload,
            line_protocol: config.line_protocol,
            csv: config.csv,
        },
        hint: Hint {
            url: config.url,
            tls,
            login: config.username.is_some(),
        },
    })
}

/// What a connection error means, naming the setting to check.
fn explain(e: &ConnectionError, hint: &Hint) -> String {
    let url = &hint.url;
    match e {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => {
            if hint.login {
                format!("the broker at {url} refused the login ({code:?}): check [mqtt] username and password_env (or password)")
            } else {
                format!("the broker at {url} wants a login ({code:?}): set [mqtt] username and password_env")
            }
        }
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker at {url} refused the connection: {code:?}")
        }
        ConnectionError::Tls(t) => {
            let text = t.to_string();
            if text.contains("UnknownIssuer") || text.contains("certificate") {
                format!("TLS with {url}: {text}: the broker's certificate is not trusted; set [mqtt] ca_file to its CA (PEM)")
            } else {
                format!("TLS with {url}: {text}")
            }
        }
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("nothing answers at {url} (connection refused): is the broker up, and [mqtt] url right?")
        }
        ConnectionError::Io(io) if hint.tls && io.kind() == std::io::ErrorKind::InvalidData => {
            format!("TLS with {url}: {io}: the broker's certificate is not trusted or does not name this host; check [mqtt] ca_file and the host in [mqtt] url")
        }
        other => format!("connection to {url}: {other}"),
    }
}

async fn run(source: MqttSource, ctx: super::Context, mut stop: watch::Receiver<bool>) {
    let MqttSource {
        opts,
        filter,
        reader,
        hint,
    } = source;
    let health = Arc::clone(&ctx.health);
    let name = MetricSource::MQTT.name();
    health.set(name, Err(format!("connecting to {}", hint.url)));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    // Larger than RECEIVE_MAX, so the event loop never waits for the
    // appender (it must keep polling for keep-alive).
    let (tx, rx) = mpsc::channel::<Message>(4 * RECEIVE_MAX as usize);
    let (conn_tx, conn_rx) = watch::channel(0u64);
    let appender = tokio::spawn(
        append_loop(
            client.clone(),
            ctx.ingestor,
            Arc::clone(&ctx.metrics),
            ctx.dead_letters,
            reader,
            rx,
            conn_rx,
            stop.clone(),
        )
        .in_current_span(),
    );

    let metrics = ctx.metrics;
    let mut conn = 0u64;
    let mut backoff = Duration::from_millis(500);
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stop.changed() => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                conn += 1;
                let _ = conn_tx.send(conn);
                backoff = Duration::from_millis(500);
                failures = 0;
                health.set(name, Ok(()));
                tracing::info!(connection = conn, %filter, "MQTT connected; subscribing");
                // Not awaited here: the request goes through the event loop.
                if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    tracing::warn!(%filter, error = %e, "MQTT subscribe request failed");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                tracing::info!(%filter, reasons = ?ack.return_codes, "MQTT subscribed");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                metrics.received(MetricSource::MQTT, 1);
                if tx.send(Message { publish: p, conn }).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let why = explain(&e, &hint);
                health.set(name, Err(why.clone()));
                failures += 1;
                // A refused login or an untrusted certificate will not fix
                // itself: an error, from the first time; a dropped
                // connection is a warning until it keeps failing.
                let lasting = matches!(
                    e,
                    ConnectionError::ConnectionRefused(_) | ConnectionError::Tls(_)
                ) || failures >= 3;
                if lasting {
                    tracing::error!(retry_in_ms = backoff.as_millis() as u64, "MQTT: {why}");
                } else {
                    tracing::warn!(
                        retry_in_ms = backoff.as_millis() as u64,
                        "MQTT: {why}; reconnecting"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    // Let the appender finish what was received, polling the event loop
    // meanwhile so that its acknowledgements go out. Messages arriving now
    // are not acknowledged; the broker redelivers them.
    drop(tx);
    let mut appender = appender;
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut appender => break,
            e = eventloop.poll() => if e.is_err() {
                break;
            },
            _ = &mut deadline => {
                tracing::warn!("MQTT gave up waiting for the last batch's acknowledgements");
                break;
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    tracing::info!("MQTT source stopped");
}

impl Reader {
    /// Pushes `publish`'s readings onto `out`, or says why it cannot be
    /// read (nothing pushed).
    fn read(
        &self,
        publish: &Publish,
        now: i64,
        out: &mut ReadingsBuilder,
    ) -> Result<usize, fleetscore_codecs::PayloadError> {
        let topic = String::from_utf8_lossy(&publish.topic);
        let (device, tag) = self.layout.names(&topic);
        if matches!(self.layout, TopicLayout::LastTwo) && device.is_none() {
            return Err(fleetscore_codecs::PayloadError {
                problem: Problem::Missing,
                message: "the topic has no non-empty {device}/{tag} last levels".into(),
            });
        }
        let meta = MessageMeta {
            device,
            tag,
            arrival_ns: now,
        };
        decode_payload(
            &publish.payload,
            &meta,
            &self.payload,
            &self.line_protocol,
            &self.csv,
            out,
        )
        .map_err(|e| fleetscore_codecs::PayloadError {
            // Name errors come from the topic's levels as often as from
            // fields: say which topic.
            message: if e.problem == Problem::Name {
                format!("topic {topic:?}: {}", e.message)
            } else {
                e.message
            },
            problem: e.problem,
        })
    }
}

/// Reads what arrived, appends it as batches, keeps what could not be
/// read as dead letters, and acknowledges each batch's messages once all
/// of that is durable.
#[allow(clippy::too_many_arguments)]
async fn append_loop(
    client: AsyncClient,
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
    dead_letters: Arc<DeadLetters>,
    reader: Reader,
    mut rx: mpsc::Receiver<Message>,
    conn: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let (mut stored, mut refused) = (0u64, 0u64);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let now = crate::now_ns();
        let mut readings = ReadingsBuilder::new();
        let mut letters: Vec<Letter> = Vec::new();
        for m in &batch {
            if let Err(e) = reader.read(&m.publish, now, &mut readings) {
                let topic = String::from_utf8_lossy(&m.publish.topic).into_owned();
                letters.push(dead_letters.letter(
                    MetricSource::MQTT,
                    e.problem,
                    e.message,
                    topic,
                    &m.publish.payload,
                ));
            }
        }
        let readings = readings.finish();
        let n = readings.len();
        let good = (batch.len() - letters.len()) as u64;
        if n > 0 {
            if !append_durably(&ingestor, &metrics, readings, &mut stop).await {
                // Stopped before the batch was stored: not acknowledged, so
                // the broker redelivers it.
                return;
            }
            metrics.stored(MetricSource::MQTT, n as u64);
            metrics.outcome(MetricSource::MQTT, Outcome::Stored, good);
        }
        stored += n as u64;
        let bad = letters.len() as u64;
        refused += bad;
        if bad > 0 {
            dead_letters.keep(MetricSource::MQTT, letters).await;
            metrics.refused(MetricSource::MQTT, bad);
            metrics.outcome(MetricSource::MQTT, Outcome::Refused(Refusal::Invalid), bad);
        }
        let current = *conn.borrow();
        for m in &batch {
            if m.conn != current {
                // Arrived on an earlier connection: the broker redelivers it.
                continue;
            }
            if let Err(e) = client.ack(&m.publish).await {
                tracing::warn!(error = %e, "MQTT acknowledgement not sent");
            }
        }
        tracing::info!(
            readings = n,
            messages = batch.len(),
            stored_total = stored,
            refused_total = refused,
            "MQTT batch stored and acknowledged"
        );
    }
}

/// Appends `readings`, retrying with a backoff until it succeeds (`true`)
/// or `stop` turns true (`false`); each failed attempt counts its readings
/// as failed.
async fn append_durably(
    ingestor: &Arc<Ingestor>,
    metrics: &Metrics,
    readings: fleetscore_core::Readings,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let readings = Arc::new(readings);
    let mut backoff = Duration::from_millis(500);
    loop {
        let ingestor = Arc::clone(ingestor);
        let r = Arc::clone(&readings);
        let (failure, e) = match tokio::task::spawn_blocking(move || ingestor.append(r)).await {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) => (Failure::of_append(&e), e.to_string()),
            Err(e) => (Failure::Internal, e.to_string()),
        };
        metrics.outcome(
            MetricSource::MQTT,
            Outcome::Failed(failure),
            readings.len() as u64,
        );
        tracing::error!(
            error = %e,
            readings = readings.len(),
            retry_in_ms = backoff.as_millis() as u64,
            "MQTT batch not stored: the ingest log append failed; retrying"
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return false,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883").unwrap(),
            (false, "127.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_url("mqtt://broker").unwrap(),
            (false, "broker".into(), 1883)
        );
        assert_eq!(
            parse_url("tcp://[::1]:1884").unwrap(),
            (false, "::1".into(), 1884)
        );
        assert_eq!(
            parse_url("mqtts://broker").unwrap(),
            (true, "broker".into(), 8883)
        );
        assert_eq!(parse_url("ssl://b:9").unwrap(), (true, "b".into(), 9));
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("mqtt://x:port").is_err());
        let e = parse_url("mqtt://user:pw@x").unwrap_err().to_string();
        assert!(
            e.contains("password_env") && e.contains("mqtt://***@x"),
            "{e}"
        );
    }

    #[test]
    fn topics_and_subscriptions() {
        let (f, l) = subscription("fleet/+/+", None).unwrap();
        assert_eq!((f.as_str(), &l), ("fleet/+/+", &TopicLayout::LastTwo));
        assert_eq!(l.names("fleet/d1/temp"), (Some("d1"), Some("temp")));
        assert_eq!(l.names("temp"), (None, None));
        let (f, l) = subscription("fleet/{device}/{tag}", Some("ingest")).unwrap();
        assert_eq!(f, "$share/ingest/fleet/+/+");
        assert_eq!(l.names("fleet/d1/temp"), (Some("d1"), Some("temp")));
        let (f, l) = subscription("site/+/{device}/#", None).unwrap();
        assert_eq!(f, "site/+/+/#");
        assert_eq!(l.names("site/a/pump-7/x/y"), (Some("pump-7"), None));
        assert!(subscription("fleet/+/+", Some("a/b")).is_err());
        assert!(subscription("fleet/{dev}", None).is_err());
        assert!(subscription("fleet/x{device}", None).is_err());
        assert!(subscription("#/{device}", None).is_err());
    }

    fn publish(topic: &str, payload: &str) -> Publish {
        Publish::new(
            topic,
            QoS::AtLeastOnce,
            Bytes::copy_from_slice(payload.as_bytes()),
            None,
        )
    }

    fn reader(topic: &str) -> Reader {
        Reader {
            layout: subscription(topic, None).unwrap().1,
            payload: PayloadConfig::default(),
            line_protocol: LineProtocolConfig::default(),
            csv: CsvBodyConfig::default(),
        }
    }

    fn read(
        r: &Reader,
        topic: &str,
        payload: &str,
    ) -> Result<Vec<(i64, String, String, f64)>, String> {
        let mut out = ReadingsBuilder::new();
        r.read(&publish(topic, payload), 7, &mut out)
            .map_err(|e| e.message)?;
        Ok(out
            .finish()
            .iter()
            .map(|r| (r.ts, r.device.to_string(), r.tag.to_string(), r.value))
            .collect())
    }

    #[test]
    fn messages_of_every_shape() {
        let r = reader("fleet/{device}/{tag}");
        assert_eq!(
            read(&r, "fleet/d1/temp", "21.5").unwrap(),
            [(7, "d1".into(), "temp".into(), 21.5)]
        );
        // The common shape of issue 21: fractional epoch seconds.
        assert_eq!(
            read(&r, "fleet/d1/temp", r#"{"value": 20, "ts": 1764887621.5}"#).unwrap(),
            [(1_764_887_621_500_000_000, "d1".into(), "temp".into(), 20.0)]
        );
        let several = reader("fleet/{device}");
        let got = read(
            &several,
            "fleet/pump-7",
            r#"{"ts": 1764887621, "temp": 21.3, "vib": 0.02}"#,
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            (
                1_764_887_621_000_000_000,
                "pump-7".into(),
                "vib".into(),
                0.02
            )
        );
    }

    #[test]
    fn topics_and_payloads_follow_the_one_policy() {
        let r = reader("fleet/+/+");
        let err = |topic: &str, payload: &str| read(&r, topic, payload).unwrap_err();
        assert!(
            err("fleet/../t", "1")
                .starts_with("topic \"fleet/../t\": device name \"..\": is `.` or `..`"),
            "{}",
            err("fleet/../t", "1")
        );
        assert!(err("fleet/d\u{0}x/t", "1").contains("contains a control character (U+0000)"));
        assert!(err(&format!("fleet/{}/t", "d".repeat(129)), "1").contains("is 129 bytes"));
        assert!(err("fleet/d/t", "inf").starts_with("value inf is not a finite number"));
        assert!(err("temp", "1").contains("no non-empty"));
        assert!(
            err("fleet/d/t", r#"{"value": 1, "ts": -9223372036854775808}"#)
                .contains("outside the accepted range")
        );
    }
}
