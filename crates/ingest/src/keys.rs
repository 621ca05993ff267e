//! Idempotency keys: the clock, the in-memory index of recent keys, and the
//! file that keeps the keys of removed segments.
//!
//! A key is recorded in its batch's record (format version 2), so a key is
//! exactly as durable as its batch, and [`Log::open`](crate::Log::open)
//! rebuilds the index by reading the keys back from the segments. The
//! compactor deletes segments about a minute after compaction, much sooner
//! than the horizon runs out, so before a segment is deleted the live keys
//! it (and every older segment) holds are written to [`KEYS_FILE`]
//! atomically; `open` loads that file first and then the segments.
//!
//! Memory is bounded twice: a key is forgotten once it is older than the
//! horizon ([`LogConfig::idempotency_horizon_secs`](crate::LogConfig)), and
//! beyond [`LogConfig::idempotency_max_keys`](crate::LogConfig) the oldest
//! keys are evicted early (counted in
//! [`LogStats::keys_evicted`](crate::LogStats)).

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::error::{LogError, Result};
use crate::format::{Digest, DIGEST_LEN, MAX_KEY_LEN};
use crate::Seq;

/// The file, in the log's directory, holding the live keys of removed
/// segments.
pub const KEYS_FILE: &str = "idempotency-keys";
const KEYS_TMP: &str = "idempotency-keys.tmp";
const KEYS_MAGIC: [u8; 8] = *b"FSINGKEY";
const KEYS_VERSION: u32 = 1;

/// Where the log reads wall time (the time recorded with each batch, and
/// the age of idempotency keys): the one injectable clock of
/// `fleetscore-core`, so tests can move time.
pub use fleetscore_core::{Clock, SystemClock};

/// Checks a key against the rules: 1 to [`MAX_KEY_LEN`] bytes, no control
/// characters.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let refuse = |reason: String| {
        let shown: String = key.chars().take(64).collect();
        Err(LogError::BadKey { key: shown, reason })
    };
    if key.is_empty() {
        return refuse("it is empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return refuse(format!(
            "it is {} bytes long, the limit is {MAX_KEY_LEN}",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return refuse("it contains a control character".into());
    }
    Ok(())
}

/// What the log remembers of a key: the batch it was first stored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    pub seq: Seq,
    pub time_ns: i64,
    pub digest: Digest,
}

/// The keys seen within the horizon, with their batches.
pub(crate) struct KeyIndex {
    /// A randomly seeded hash: keys come from clients.
    map: HashMap<Arc<str>, KeyEntry>,
    /// Keys in the order they were stored (sequence order), for expiry and
    /// eviction. An entry whose key was stored again later (after it had
    /// expired) is stale: its `seq` no longer matches the map's.
    order: VecDeque<(Seq, Arc<str>)>,
    horizon_ns: i64,
    max_keys: usize,
}

impl KeyIndex {
    pub fn new(horizon_secs: u64, max_keys: usize) -> KeyIndex {
        KeyIndex {
            map: HashMap::new(),
            order: VecDeque::new(),
            horizon_ns: i64::try_from(horizon_secs.saturating_mul(1_000_000_000))
                .unwrap_or(i64::MAX),
            max_keys,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether a key stored at `time_ns` is within the horizon at `now_ns`.
    pub fn is_live(&self, time_ns: i64, now_ns: i64) -> bool {
        now_ns.saturating_sub(time_ns) < self.horizon_ns
    }

    fn live(&self, e: &KeyEntry, now_ns: i64) -> bool {
        self.is_live(e.time_ns, now_ns)
    }

    /// The batch stored under `key`, if it is within the horizon.
    pub fn get(&self, key: &str, now_ns: i64) -> Option<KeyEntry> {
        self.map.get(key).copied().filter(|e| self.live(e, now_ns))
    }

    /// Records `key` for a batch just made durable (or loaded). Entries
    /// must come in increasing `seq`. Returns how many keys were evicted
    /// before their horizon to stay within the maximum.
    pub fn insert(&mut self, key: &str, entry: KeyEntry, now_ns: i64) -> u64 {
        let key: Arc<str> = Arc::from(key);
        self.map.insert(Arc::clone(&key), entry);
        self.order.push_back((entry.seq, key));
        self.expire(now_ns);
        let mut evicted = 0;
        while self.map.len() > self.max_keys {
            let Some((seq, key)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|e| e.seq == seq) {
                self.map.remove(&key);
                evicted += 1;
            }
        }
        evicted
    }

    /// Forgets the keys past the horizon, oldest first. Keys were stored in
    /// (almost) the order of their times, so this stops at the first live
    /// one; `get` checks each key's own age anyway.
    pub fn expire(&mut self, now_ns: i64) {
        while let Some((seq, key)) = self.order.front() {
            match self.map.get(key) {
                Some(e) if e.seq == *seq => {
                    if self.live(e, now_ns) {
                        break;
                    }
                    self.map.remove(key);
                }
                // Stale: the key was stored again later.
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// Whether a live key belongs to a batch in `first..end`.
    pub fn any_in(&self, first: Seq, end: Seq, now_ns: i64) -> bool {
        self.order
            .iter()
            .take_while(|(seq, _)| *seq < end)
            .any(|(seq, key)| {
                *seq >= first
                    && self
                        .map
                        .get(key)
                        .is_some_and(|e| e.seq == *seq && self.live(e, now_ns))
            })
    }

    /// The live keys of batches before `end`, oldest first.
    pub fn live_before(&self, end: Seq, now_ns: i64) -> Vec<(Arc<str>, KeyEntry)> {
        self.order
            .iter()
            .take_while(|(seq, _)| *seq < end)
            .filter_map(|(seq, key)| {
                let e = self.map.get(key)?;
                (e.seq == *seq && self.live(e, now_ns)).then(|| (Arc::clone(key), *e))
            })
            .collect()
    }
}

/// Writes the keys file atomically: a temporary file, fsync, rename over
/// the old one, fsync of the directory. A crash leaves the old file or the
/// new one, never a mix.
pub(crate) fn write_keys_file(dir: &Path, keys: &[(Arc<str>, KeyEntry)]) -> Result<()> {
    let mut data = Vec::with_capacity(20 + keys.len() * 64);
    data.extend_from_slice(&KEYS_MAGIC);
    data.extend_from_slice(&KEYS_VERSION.to_le_bytes());
    data.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for (key, e) in keys {
        data.extend_from_slice(&e.seq.to_le_bytes());
        data.extend_from_slice(&e.time_ns.to_le_bytes());
        data.extend_from_slice(&e.digest);
        data.extend_from_slice(&(key.len() as u16).to_le_bytes());
        data.extend_from_slice(key.as_bytes());
    }
    let crc = crc32fast::hash(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(KEYS_TMP);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| LogError::io("create", &tmp, e))?;
    let written = file.write_all(&data).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Leave no half-written file taking space on a full disk.
        drop(file);
        let _ = fs::remove_file(&tmp);
        return Err(LogError::io("write", &tmp, e));
    }
    let path = dir.join(KEYS_FILE);
    fs::rename(&tmp, &path).map_err(|e| LogError::io("rename into place", &path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

/// Reads the keys file of `dir`; an absent file holds no key. Removes a
/// temporary file a crash left behind. Errors name what is wrong.
pub(crate) fn read_keys_file(dir: &Path) -> Result<Vec<(String, KeyEntry)>, String> {
    let _ = fs::remove_file(dir.join(KEYS_TMP));
    let path = dir.join(KEYS_FILE);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let bad = |why: &str| format!("{} is damaged: {why}", path.display());
    if data.len() < 20 || data[..8] != KEYS_MAGIC {
        return Err(bad("no keys-file header"));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(bad("checksum mismatch"));
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    if u32_at(8) != KEYS_VERSION {
        return Err(bad(&format!("unknown version {}", u32_at(8))));
    }
    let count = u32_at(12) as usize;
    let mut out = Vec::with_capacity(count.min(body.len() / 34));
    let mut pos = 16;
    let fixed = 8 + 8 + DIGEST_LEN + 2;
    for _ in 0..count {
        let Some(head) = body.get(pos..pos + fixed) else {
            return Err(bad("truncated entry"));
        };
        let seq = u64::from_le_bytes(head[0..8].try_into().expect("8 bytes"));
        let time_ns = i64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        let mut digest = [0u8; DIGEST_LEN];
        digest.copy_from_slice(&head[16..16 + DIGEST_LEN]);
        let len = u16::from_le_bytes([head[fixed - 2], head[fixed - 1]]) as usize;
        pos += fixed;
        let key = body
            .get(pos..pos + len)
            .filter(|_| len <= MAX_KEY_LEN)
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or_else(|| bad("bad key"))?;
        pos += len;
        out.push((
            key.to_owned(),
            KeyEntry {
                seq,
                time_ns,
                digest,
            },
        ));
    }
    if pos != body.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: Seq, time_ns: i64) -> KeyEntry {
        KeyEntry {
            seq,
            time_ns,
            digest: [seq as u8; DIGEST_LEN],
        }
    }

    #[test]
    fn keys_expire_and_the_oldest_are_evicted_beyond_the_maximum() {
        let mut idx = KeyIndex::new(10, 3);
        let s = 1_000_000_000;
        assert_eq!(idx.insert("a", entry(0, 0), 0), 0);
        assert_eq!(idx.insert("b", entry(1, s), s), 0);
        assert_eq!(idx.get("a", 9 * s), Some(entry(0, 0)));
        assert_eq!(idx.get("a", 10 * s), None, "expired at the horizon");
        assert_eq!(idx.insert("c", entry(2, 2 * s), 2 * s), 0);
        assert_eq!(idx.insert("d", entry(3, 3 * s), 3 * s), 1);
        assert_eq!(idx.get("a", 3 * s), None, "evicted");
        assert_eq!(idx.len(), 3);
        idx.expire(11 * s);
        assert_eq!(idx.len(), 2);
        assert!(idx.any_in(2, 3, 11 * s));
        assert!(!idx.any_in(0, 2, 11 * s));
        let live: Vec<Seq> = idx
            .live_before(4, 11 * s)
            .iter()
            .map(|(_, e)| e.seq)
            .collect();
        assert_eq!(live, [2, 3]);
    }

    #[test]
    fn a_key_stored_again_after_expiry_is_not_evicted_by_its_old_entry() {
        let mut idx = KeyIndex::new(1, 2);
        let s = 1_000_000_000;
        idx.insert("a", entry(0, 0), 0);
        idx.insert("a", entry(1, 2 * s), 2 * s);
        idx.insert("b", entry(2, 2 * s), 2 * s);
        assert_eq!(idx.get("a", 2 * s).map(|e| e.seq), Some(1));
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn keys_file_round_trips_and_damage_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_keys_file(dir.path()), Ok(Vec::new()));
        let keys = vec![
            (Arc::from("k1"), entry(5, 7)),
            (Arc::from("ключ"), entry(9, 8)),
        ];
        write_keys_file(dir.path(), &keys).expect("write");
        let back = read_keys_file(dir.path()).expect("read");
        assert_eq!(
            back,
            vec![
                ("k1".to_owned(), entry(5, 7)),
                ("ключ".to_owned(), entry(9, 8))
            ]
        );
        let path = dir.path().join(KEYS_FILE);
        let mut data = fs::read(&path).expect("read");
        data[25] ^= 1;
        fs::write(&path, &data).expect("write");
        let e = read_keys_file(dir.path()).expect_err("damaged");
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("a-uuid-like-key").is_ok());
        assert!(check_key(&"x".repeat(MAX_KEY_LEN)).is_ok());
        for bad in ["", "a\nb", &"x".repeat(MAX_KEY_LEN + 1)] {
            let e = check_key(bad).expect_err("refused").to_string();
            assert!(e.contains("idempotency key"), "{e}");
        }
    }
}
