//! Dead letters: what a source received and could not read, kept for the
//! operator to see.
//!
//! ```text
//! rejected/source=<source>/date=YYYY-MM-DD/<time>-<unique>.jsonl
//!     one JSON object a message (or line): time, source, reason, error,
//!     origin, size, payload (text) or payload_base64, truncated
//! ```
//!
//! A source writes what it refused together ([`write_rejected`]: one
//! object per batch of messages, never one per message), before it
//! acknowledges those messages. The date folder is the day the letters
//! were written; [`sweep_rejected`] deletes the days older than the
//! retention, and [`recent_rejected`] reads the newest letters back.

use base64::Engine as _;
use fleetscore_core::format_ts;
use serde::{Deserialize, Serialize};

use super::{LakeError, DAY_NS};
use crate::Store;

/// The folder of dead letters.
const ROOT: &str = "rejected";

/// One message (or line) a source could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was received, RFC 3339.
    pub time: String,
    /// The source that received it (`http`, `mqtt`, `kafka`).
    pub source: String,
    /// The kind of problem (`syntax`, `missing`, `name`, `time`, `value`).
    pub reason: String,
    /// What is wrong, naming the field or line.
    pub error: String,
    /// Where it came from: an MQTT topic, a Kafka `topic/partition@offset`,
    /// an HTTP endpoint and line.
    pub origin: String,
    /// Its length in bytes.
    pub size: u64,
    /// Its bytes as text, when they are UTF-8 (cut to the limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Its bytes in base64, when they are not UTF-8 (cut to the limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Whether the payload was cut to the limit.
    #[serde(default)]
    pub truncated: bool,
}

impl DeadLetter {
    /// A letter for `payload` received at `time_ns`, keeping at most
    /// `max_bytes` of it.
    pub fn new(
        time_ns: i64,
        source: &str,
        reason: &str,
        error: impl Into<String>,
        origin: impl Into<String>,
        payload: &[u8],
        max_bytes: usize,
    ) -> DeadLetter {
        let mut cut = payload.len().min(max_bytes);
        let kept = match std::str::from_utf8(&payload[..cut]) {
            Ok(t) => Ok(t),
            // Cut inside a character: keep the whole characters.
            Err(e) if e.error_len().is_none() && std::str::from_utf8(payload).is_ok() => {
                cut = e.valid_up_to();
                Ok(std::str::from_utf8(&payload[..cut]).unwrap_or_default())
            }
            Err(_) => Err(&payload[..cut]),
        };
        let (text, b64) = match kept {
            Ok(t) => (Some(t.to_string()), None),
            Err(bytes) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
        DeadLetter {
            time: format_ts(time_ns),
            source: source.to_string(),
            reason: reason.to_string(),
            error: error.into(),
            origin: origin.into(),
            size: payload.len() as u64,
            payload: text,
            payload_base64: b64,
            truncated: cut < payload.len(),
        }
    }
}

/// The source folder of `source`.
fn source_prefix(source: &str) -> String {
    format!("{ROOT}/source={source}/")
}

/// Writes `letters` of `source`, received up to `now_ns`, as one object;
/// returns its key. Nothing is written for none.
pub async fn write_rejected(
    store: &Store,
    source: &str,
    now_ns: i64,
    letters: &[DeadLetter],
) -> Result<Option<String>, LakeError> {
    if letters.is_empty() {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(letters.len() * 256);
    for l in letters {
        serde_json::to_writer(&mut body, l).map_err(|e| LakeError::Object {
            key: source_prefix(source),
            reason: format!("encoding a dead letter: {e}"),
        })?;
        body.push(b'\n');
    }
    let stamp = format_ts(now_ns);
    // Unique among writers: the time to the nanosecond, this process and a
    // counter (two sources or two servers never share a key).
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let compact: String = stamp.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    let key = format!(
        "{}date={}/{compact}-{}-{seq}.jsonl",
        source_prefix(source),
        &stamp[..10],
        std::process::id()
    );
    store.put(&key, body).await?;
    Ok(Some(key))
}

/// Deletes the dead letters of days wholly before `now_ns - retention_ns`;
/// returns how many objects went.
pub async fn sweep_rejected(
    store: &Store,
    now_ns: i64,
    retention_ns: i64,
) -> Result<usize, LakeError> {
    let cutoff = now_ns.saturating_sub(retention_ns);
    let mut deleted = 0;
    for source in store.list_folders(&format!("{ROOT}/")).await? {
        let prefix = format!("{ROOT}/{source}/");
        for day in store.list_folders(&prefix).await? {
            let Some(start) = day
                .strip_prefix("date=")
                .and_then(|d| fleetscore_core::parse_ts(&format!("{d}T00:00:00Z")).ok())
            else {
                continue;
            };
            if start.saturating_add(DAY_NS) > cutoff {
                continue;
            }
            for key in store.list(&format!("{prefix}{day}/")).await? {
                store.delete(&key).await?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// The newest dead letters, newest first, at most `limit`, of `source`
/// (or of every source), read from the newest objects back.
pub async fn recent_rejected(
    store: &Store,
    source: Option<&str>,
    limit: usize,
) -> Result<Vec<DeadLetter>, LakeError> {
    let sources: Vec<String> = match source {
        Some(s) => vec![format!("source={s}")],
        None => store.list_folders(&format!("{ROOT}/")).await?,
    };
    // Every source's objects, newest days first; object names start with
    // their time, so they sort in time order within a day.
    let mut objects: Vec<(String, String)> = Vec::new();
    for s in &sources {
        let prefix = format!("{ROOT}/{s}/");
        let mut days = store.list_folders(&prefix).await?;
        days.reverse();
        let mut found = 0usize;
        for day in days {
            let keys = store.list(&format!("{prefix}{day}/")).await?;
            found += keys.len();
            for key in keys {
                let name = key.rsplit('/').next().unwrap_or_default().to_string();
                objects.push((format!("{day}/{name}"), key));
            }
            // Enough objects to fill the answer even at one letter each.
            if found >= limit {
                break;
            }
        }
    }
    objects.sort_by(|a, b| b.0.cmp(&a.0));
    let mut out = Vec::new();
    for (_, key) in objects {
        if out.len() >= limit {
            break;
        }
        let Some(body) = store.get(&key).await? else {
            continue; // swept meanwhile
        };
        let mut letters: Vec<DeadLetter> = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        letters.reverse();
        out.extend(letters.into_iter().take(limit - out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_keep_text_or_base64_up_to_the_limit() {
        let l = DeadLetter::new(0, "mqtt", "syntax", "bad", "fleet/d/t", b"hello", 3);
        assert_eq!(l.payload.as_deref(), Some("hel"));
        assert!(l.truncated);
        assert_eq!(l.size, 5);
        // Cut inside a character: whole characters only.
        let l = DeadLetter::new(0, "mqtt", "syntax", "bad", "", "aé".as_bytes(), 2);
        assert_eq!(l.payload.as_deref(), Some("a"));
        let l = DeadLetter::new(0, "mqtt", "syntax", "bad", "", b"\xff\x00", 10);
        assert_eq!(l.payload, None);
        assert_eq!(l.payload_base64.as_deref(), Some("/wA="));
        assert!(!l.truncated);
    }

    #[tokio::test]
    async fn written_read_back_newest_first_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let day = 86_400 * 1_000_000_000i64;
        let t0 = 20_000 * day;
        let letter =
            |i: i64| DeadLetter::new(t0 + i, "mqtt", "syntax", format!("e{i}"), "t", b"x", 10);
        write_rejected(&store, "mqtt", t0, &[letter(1), letter(2)])
            .await
            .unwrap();
        write_rejected(&store, "mqtt", t0 + day, &[letter(3)])
            .await
            .unwrap();
        write_rejected(&store, "http", t0 + day, &[letter(4)])
            .await
            .unwrap();
        assert!(write_rejected(&store, "http", t0, &[])
            .await
            .unwrap()
            .is_none());
        let all: Vec<String> = recent_rejected(&store, None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.error)
            .collect();
        assert_eq!(all.len(), 4);
        assert_eq!(&all[2..], ["e2", "e1"]);
        let mqtt = recent_rejected(&store, Some("mqtt"), 2).await.unwrap();
        assert_eq!(
            mqtt.iter().map(|l| l.error.as_str()).collect::<Vec<_>>(),
            ["e3", "e2"]
        );
        // A retention of one day at t0 + 2 days: the first day goes.
        let gone = sweep_rejected(&store, t0 + 2 * day, day).await.unwrap();
        assert_eq!(gone, 1);
        assert_eq!(recent_rejected(&store, None, 10).await.unwrap().len(), 2);
    }
}
