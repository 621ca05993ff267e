//! The MQTT source of `fleetscore serve` (`--mqtt URL`).
//!
//! An MQTT 5 client ([`rumqttc::v5`]) subscribes at QoS 1 to
//! `--mqtt-topic` (default `fleet/+/+`), or to
//! `$share/GROUP/<filter>` with `--mqtt-shared-group GROUP` so several
//! ingest nodes split the messages of one topic. The device and tag of a
//! reading are the topic's last two levels (`fleet/{device}/{tag}`).
//!
//! Payloads: a plain number (`21.5`, the reading's time is its arrival
//! time) or a JSON object `{"value": 21.5, "ts": …}` where `ts` is optional
//! (arrival time), an RFC 3339 string or integer nanoseconds since the epoch.
//! Device and tag (topic levels), time and value follow the one policy of
//! every source (`fleetscore_core`'s name rule, 1678 through 2261, finite
//! values); a message that breaks it is refused as a bad payload is.
//!
//! # Acknowledgements
//!
//! The client uses manual acknowledgements: a message is PUBACKed only after
//! [`Log::append`] returned `Ok` for the batch holding its reading, so an
//! acknowledged reading is durable. Messages that arrive together are
//! appended as one batch and acknowledged in the order they were received.
//! If the append fails, nothing is acknowledged and the same batch is
//! retried with a backoff (the log's contract allows a retried batch to be
//! stored twice). Unacknowledged messages are redelivered by the broker after
//! a reconnect: the session is kept (`clean_start = false`, one hour session
//! expiry), so use a stable `--mqtt-client-id` to get them back after a
//! restart as well. An acknowledgement is only sent on the connection the
//! message arrived on; after a reconnect the broker redelivers it instead,
//! which may store it twice (at-least-once).
//!
//! A payload that cannot be parsed (or a topic without device/tag levels) is
//! counted and logged (`warn`, with the topic and the reason) and **is
//! acknowledged**: the broker would otherwise redeliver it forever and it
//! would occupy one of the in-flight slots. It is acknowledged together with
//! its batch, i.e. in order and after the good readings before it are
//! durable.
//!
//! Connection errors are logged at `warn` and retried with an exponential
//! backoff (0.5 s doubling up to 30 s).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fleetscore_core::{check_ts, check_value, parse_ts, validate_name, NameKind};
use fleetscore_core::{Reading, ReadingsBuilder};
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::metrics::{Failure, Metrics, Outcome, Refusal, Source as MetricSource};
use crate::windows::Ingestor;

/// What `--mqtt*` asked for.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// `mqtt://host[:port]`.
    pub url: String,
    /// Topic filter, e.g. `fleet/+/+`.
    pub topic: String,
    /// Shared-subscription group, if any.
    pub shared_group: Option<String>,
    /// Client id; `fleetscore-<pid>` when absent.
    pub client_id: Option<String>,
}

/// Most messages appended as one batch.
const MAX_BATCH: usize = 1000;
/// The broker sends at most this many unacknowledged messages.
const RECEIVE_MAX: u16 = 1000;

/// `(host, port)` of `mqtt://host[:port]` (also `tcp://`).
fn parse_url(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = if let Some(r) = url.strip_prefix("mqtt://") {
        r
    } else if let Some(r) = url.strip_prefix("tcp://") {
        r
    } else if url.starts_with("mqtts://") || url.starts_with("ssl://") {
        bail!("--mqtt {url:?}: TLS is not supported by this build; use mqtt://host:port")
    } else {
        bail!("--mqtt {url:?}: expected mqtt://host[:port]")
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        bail!("--mqtt {url:?}: expected mqtt://host[:port]");
    }
    // [v6addr]:port, host:port or host.
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, p) = r
            .split_once(']')
            .with_context(|| format!("--mqtt {url:?}: unclosed ["))?;
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
            .with_context(|| format!("--mqtt {url:?}: bad port {p:?}"))?,
        None => 1883,
    };
    Ok((host, port))
}

/// The subscription filter: `$share/GROUP/FILTER` or `FILTER`.
fn subscription(topic: &str, group: Option<&str>) -> anyhow::Result<String> {
    if topic.is_empty() {
        bail!("--mqtt-topic must not be empty");
    }
    match group {
        None => Ok(topic.to_string()),
        Some(g) if g.is_empty() || g.contains(['/', '+', '#']) => {
            bail!("--mqtt-shared-group {g:?}: must be non-empty without '/', '+' or '#'")
        }
        Some(g) => Ok(format!("$share/{g}/{topic}")),
    }
}

/// The reading of one message, or why it is refused.
fn parse_message<'a>(topic: &'a str, payload: &[u8], now: i64) -> Result<Reading<'a>, String> {
    let mut levels = topic.rsplit('/');
    let (tag, device) = match (levels.next(), levels.next()) {
        (Some(t), Some(d)) if !t.is_empty() && !d.is_empty() => (t, d),
        _ => return Err("the topic has no non-empty {device}/{tag} last levels".into()),
    };
    validate_name(NameKind::Device, device).map_err(|e| format!("topic: {e}"))?;
    validate_name(NameKind::Tag, tag).map_err(|e| format!("topic: {e}"))?;
    let text = std::str::from_utf8(payload)
        .map_err(|_| "the payload is not UTF-8".to_string())?
        .trim();
    let (value, ts) = if text.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("bad JSON: {e}"))?;
        let value = v
            .get("value")
            .ok_or("the JSON object has no \"value\"")?
            .as_f64()
            .ok_or("\"value\" is not a number")?;
        let ts = match v.get("ts") {
            None | Some(serde_json::Value::Null) => now,
            Some(serde_json::Value::String(s)) => {
                parse_ts(s).map_err(|e| format!("bad \"ts\" {:?}: {}", e.value, e.reason))?
            }
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .ok_or("\"ts\" must be integer nanoseconds or an RFC 3339 string")?,
            Some(_) => {
                return Err("\"ts\" must be integer nanoseconds or an RFC 3339 string".into())
            }
        };
        (value, ts)
    } else {
        let value: f64 = text
            .parse()
            .map_err(|_| format!("not a number or JSON object: {:?}", truncate(text)))?;
        (value, now)
    };
    let ts = check_ts(ts).map_err(|e| e.to_string())?;
    let value = check_value(value).map_err(|e| e.to_string())?;
    Ok(Reading {
        ts,
        device,
        tag,
        value,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// One received message: its topic and, unless it was refused, its
/// reading, to be acknowledged on connection `conn`.
struct Message {
    publish: Publish,
    topic: String,
    /// `(ts, value)`; device and tag are the topic's last two levels.
    reading: Option<(i64, f64)>,
    conn: u64,
}

impl Message {
    /// Its reading, borrowing device and tag from the topic.
    fn reading(&self) -> Option<Reading<'_>> {
        let (ts, value) = self.reading?;
        let mut levels = self.topic.rsplit('/');
        let (tag, device) = (levels.next()?, levels.next()?);
        Some(Reading {
            ts,
            device,
            tag,
            value,
        })
    }
}

/// A checked MQTT configuration, ready to run.
pub struct MqttSource {
    opts: MqttOptions,
    filter: String,
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
        Some(tokio::spawn(self.run(ctx.ingestor, ctx.metrics, stop)))
    }
}

/// Checks the `--mqtt*` options.
pub fn check(config: MqttConfig) -> anyhow::Result<MqttSource> {
    let (host, port) = parse_url(&config.url)?;
    let filter = subscription(&config.topic, config.shared_group.as_deref())?;
    let client_id = config
        .client_id
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("fleetscore-{}", std::process::id()));
    let mut opts = MqttOptions::new(client_id.clone(), host.clone(), port);
    opts.set_manual_acks(true)
        .set_clean_start(false)
        .set_session_expiry_interval(Some(3600))
        .set_receive_maximum(Some(RECEIVE_MAX))
        .set_keep_alive(Duration::from_secs(30));
    tracing::info!(%host, port, %client_id, %filter, "MQTT source configured");
    Ok(MqttSource { opts, filter })
}

impl MqttSource {
    /// Runs the source until `stop` turns true.
    pub async fn run(
        self,
        ingestor: Arc<Ingestor>,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) {
        let span = tracing::info_span!("source", source = MetricSource::MQTT.name());
        run(self.opts, self.filter, ingestor, metrics, stop)
            .instrument(span)
            .await;
    }
}

async fn run(
    opts: MqttOptions,
    filter: String,
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    // Larger than RECEIVE_MAX, so the event loop never waits for the
    // appender (it must keep polling for keep-alive).
    let (tx, rx) = mpsc::channel::<Message>(4 * RECEIVE_MAX as usize);
    let (conn_tx, conn_rx) = watch::channel(0u64);
    let appender = tokio::spawn(
        append_loop(
            client.clone(),
            ingestor,
            Arc::clone(&metrics),
            rx,
            conn_rx,
            stop.clone(),
        )
        .in_current_span(),
    );

    let mut conn = 0u64;
    let mut backoff = Duration::from_millis(500);
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
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let reading = match parse_message(&topic, &p.payload, crate::now_ns()) {
                    Ok(r) => Some((r.ts, r.value)),
                    Err(reason) => {
                        tracing::warn!(%topic, %reason, "MQTT message refused (acknowledged, not stored)");
                        None
                    }
                };
                let msg = Message {
                    publish: p,
                    topic,
                    reading,
                    conn,
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "MQTT connection error; reconnecting"
                );
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

/// Appends what arrived as batches and acknowledges each batch's messages
/// once it is durable.
async fn append_loop(
    client: AsyncClient,
    ingestor: Arc<Ingestor>,
    metrics: Arc<Metrics>,
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
        let mut readings = ReadingsBuilder::new();
        for r in batch.iter().filter_map(Message::reading) {
            readings.push(r.ts, r.device, r.tag, r.value);
        }
        let readings = readings.finish();
        let n = readings.len();
        if n > 0 {
            if !append_durably(&ingestor, &metrics, readings, &mut stop).await {
                // Stopped before the batch was stored: not acknowledged, so
                // the broker redelivers it.
                return;
            }
            metrics.stored(MetricSource::MQTT, n as u64);
            metrics.outcome(MetricSource::MQTT, Outcome::Stored, n as u64);
        }
        stored += n as u64;
        refused += (batch.len() - n) as u64;
        if batch.len() > n {
            // One reading a message: the bad messages are the bad readings.
            let bad = (batch.len() - n) as u64;
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

/// Appends `readings` (one a message), retrying with a backoff until it
/// succeeds (`true`) or `stop` turns true (`false`); each failed attempt
/// counts its messages as failed.
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
            messages = readings.len(),
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

    fn reading<'a>(ts: i64, device: &'a str, tag: &'a str, value: f64) -> Reading<'a> {
        Reading {
            ts,
            device,
            tag,
            value,
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883)
        );
        assert_eq!(parse_url("mqtt://broker").unwrap(), ("broker".into(), 1883));
        assert_eq!(parse_url("tcp://[::1]:1884").unwrap(), ("::1".into(), 1884));
        assert!(parse_url("mqtts://x").is_err());
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("mqtt://x:port").is_err());
    }

    #[test]
    fn subscriptions() {
        assert_eq!(subscription("fleet/+/+", None).unwrap(), "fleet/+/+");
        assert_eq!(
            subscription("fleet/+/+", Some("ingest")).unwrap(),
            "$share/ingest/fleet/+/+"
        );
        assert!(subscription("fleet/+/+", Some("a/b")).is_err());
    }

    #[test]
    fn payloads() {
        let now = 7;
        assert_eq!(
            parse_message("fleet/d1/temp", b"21.5", now).unwrap(),
            reading(7, "d1", "temp", 21.5)
        );
        assert_eq!(
            parse_message("fleet/d1/temp", br#"{"value": 2, "ts": 5}"#, now).unwrap(),
            reading(5, "d1", "temp", 2.0)
        );
        assert_eq!(
            parse_message(
                "fleet/d1/temp",
                br#"{"value": 2, "ts": "1970-01-01T00:00:01Z"}"#,
                now
            )
            .unwrap(),
            reading(1_000_000_000, "d1", "temp", 2.0)
        );
        assert_eq!(
            parse_message("fleet/d1/temp", br#"{"value": 3}"#, now).unwrap(),
            reading(7, "d1", "temp", 3.0)
        );
        for bad in [
            &b"warm"[..],
            b"{\"ts\": 5}",
            b"{\"value\": \"x\"}",
            b"{\"value\": 1, \"ts\": \"yesterday\"}",
            b"NaN",
            b"\xff",
        ] {
            assert!(parse_message("fleet/d1/temp", bad, now).is_err(), "{bad:?}");
        }
        assert!(parse_message("temp", b"1", now).is_err());
    }

    #[test]
    fn topics_and_payloads_follow_the_one_policy() {
        let err = |topic: &str, payload: &[u8]| parse_message(topic, payload, 7).unwrap_err();
        assert!(
            err("fleet/../t", b"1").starts_with("topic: device name \"..\": is `.` or `..`"),
            "{}",
            err("fleet/../t", b"1")
        );
        assert!(err("fleet/d\u{0}x/t", b"1").contains("contains a control character (U+0000)"));
        assert!(err("fleet/*/t", b"1").starts_with("topic: device name \"*\""));
        assert!(err(&format!("fleet/{}/t", "d".repeat(129)), b"1").contains("is 129 bytes"));
        assert!(err("fleet/d/ t", b"1").starts_with("topic: tag name \" t\": starts or ends"));
        assert!(err("fleet/d/t", b"inf").starts_with("value inf is not a finite number"));
        assert!(
            err("fleet/d/t", br#"{"value": 1, "ts": -9223372036854775808}"#)
                .starts_with("timestamp 1677-09-21")
        );
    }
}
