//! The on-disk format: segment header, record framing and batch encoding.
//!
//! All integers are little-endian.
//!
//! ```text
//! segment  = header record*
//! header   = magic "FSINGLOG" (8 bytes) | version u32 (1 or 2) | flags u32 (= 0)
//!          | first_seq u64                                   -- 24 bytes
//! record   = body_len u32 | crc u32 | body                  -- 8 + body_len bytes
//! body     = seq u64 | meta | payload                       -- version 2
//!          | seq u64 | payload                              -- version 1
//! meta     = time_ns i64 | key_len u16 | key{key_len} | digest{16 if key_len > 0}
//! payload  = count u32 | n_strings u32 | string{n_strings} | reading{count}
//! string   = len u32 | UTF-8 bytes
//! reading  = ts i64 | device u32 | tag u32 | value f64       -- 24 bytes
//! ```
//!
//! Version 2 (written since issue 16) adds `meta` to every record: the wall
//! time of the append (nanoseconds since the Unix epoch, from the log's
//! clock) and the batch's idempotency key, if it has one, with the first 16
//! bytes of the SHA-256 of its `payload`. The key travels with the batch, so
//! deduplication survives a crash and a restart; the digest tells a retry
//! of the same batch from a different batch under a reused key. A batch
//! without a key costs 10 bytes more than in version 1. A segment's records
//! all have its header's version; version 1 segments are still read (their
//! batches have no key and no time), and the log never appends to one: on
//! open, a version 1 active segment is closed (or, if empty, started again)
//! so that new records go to a version 2 segment.
//!
//! `crc` is the CRC-32 (IEEE, as computed by `crc32fast`) of `body`, so a
//! record whose length field, sequence number or any payload byte was torn
//! or flipped is detected. `device` and `tag` are indices into the batch's
//! string table: a batch from one device carries its name once, not once per
//! reading, and the fixed 24-byte reading keeps encoding a plain copy loop.
//! `value` is stored as its IEEE-754 bits, so NaNs and signed zeros survive.
//!
//! Sequence numbers count records (batches), not readings; they are
//! consecutive within the log, and the first record of a segment carries the
//! `first_seq` of its header (which is also in the file name,
//! `segment-<first_seq as 20 digits>.wal`). The version field lets a future
//! format be read next to this one; a reader refuses versions it does not
//! know.

use fleetscore_core::Readings;
use rustc_hash::FxHashMap;

use crate::Seq;

/// The magic bytes that open every segment.
pub const MAGIC: [u8; 8] = *b"FSINGLOG";
/// The format version this crate writes.
pub const VERSION: u32 = 2;
/// The first format version, still read: records without `meta`.
pub const VERSION_1: u32 = 1;
/// The longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Bytes of the payload digest stored with a key.
pub const DIGEST_LEN: usize = 16;
/// Size of the segment header in bytes.
pub const HEADER_LEN: usize = 24;
/// Size of a record's framing (length and CRC) in bytes.
pub const FRAME_LEN: usize = 8;
/// The largest record body this crate writes or accepts (256 MiB). A larger
/// length field is taken for damage rather than allocated.
pub const MAX_BODY_LEN: usize = 256 << 20;
/// The smallest valid body: a sequence number and an empty payload header.
const MIN_BODY_LEN: usize = 8 + 8;
const READING_LEN: usize = 24;

/// First bytes of the SHA-256 of a batch's encoded payload: the identity of
/// a batch under its idempotency key.
pub type Digest = [u8; DIGEST_LEN];

/// A parsed segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The format version of the segment's records.
    pub version: u32,
    /// The sequence number of its first record.
    pub first_seq: Seq,
}

/// The header bytes of a segment whose first record will carry `first_seq`.
pub fn encode_header(first_seq: Seq) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    // bytes 12..16: flags, zero in version 1.
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// Parses a segment header of a version this crate reads.
pub fn decode_header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        ));
    }
    if bytes[..8] != MAGIC {
        return Err("wrong magic, not an ingest log segment".into());
    }
    let version = u32_at(bytes, 8);
    if version != VERSION && version != VERSION_1 {
        return Err(format!(
            "format version {version}, this build reads versions {VERSION_1} and {VERSION}"
        ));
    }
    let flags = u32_at(bytes, 12);
    if flags != 0 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    Ok(Header {
        version,
        first_seq: u64_at(bytes, 16),
    })
}

/// A batch encoded on the appender's thread, ready for the writer to frame.
///
/// Encoding and checksumming happen before the batch reaches the single
/// writer thread, so that work is spread over the appenders' cores and the
/// writer only copies bytes.
pub struct EncodedBatch {
    /// Everything after the sequence number: `meta` and `payload`.
    pub payload: Vec<u8>,
    /// CRC state over `payload`, combined with the sequence number's CRC by
    /// the writer once the sequence number is known.
    pub payload_crc: crc32fast::Hasher,
    /// Number of readings in the batch.
    pub readings: usize,
    /// The idempotency key, if any.
    pub key: Option<Box<str>>,
    /// The digest of the payload, computed only when there is a key.
    pub digest: Option<Digest>,
    /// The wall time of the append, nanoseconds since the Unix epoch.
    pub time_ns: i64,
}

impl EncodedBatch {
    /// Bytes this batch occupies on disk as a record.
    pub fn record_len(&self) -> usize {
        FRAME_LEN + 8 + self.payload.len()
    }
}

/// Encodes a version 2 record's `meta` and `payload`. Fails only if the
/// batch would exceed [`MAX_BODY_LEN`] or count fields would overflow
/// `u32`. The key must be at most [`MAX_KEY_LEN`] bytes (the caller checks
/// it; a longer one panics).
pub fn encode_batch(
    key: Option<&str>,
    time_ns: i64,
    readings: &Readings,
) -> Result<EncodedBatch, usize> {
    encode_batch_as(key, None, time_ns, readings)
}

/// [`encode_batch`], with the key's digest taken over `identity` (what
/// the source considers the same request, e.g. an HTTP body that a retry
/// sends again byte for byte) instead of the encoded readings: a source
/// whose readings differ between identical requests (line protocol lines
/// without a timestamp take the arrival time) still recognises a retry.
pub fn encode_batch_as(
    key: Option<&str>,
    identity: Option<&[u8]>,
    time_ns: i64,
    readings: &Readings,
) -> Result<EncodedBatch, usize> {
    let key_len = key.map_or(0, str::len);
    assert!(key_len <= MAX_KEY_LEN, "idempotency key too long");
    let meta_len = 8 + 2 + key_len + if key.is_some() { DIGEST_LEN } else { 0 };
    let mut payload = encode_readings(meta_len, readings)?;
    payload[0..8].copy_from_slice(&time_ns.to_le_bytes());
    payload[8..10].copy_from_slice(&(key_len as u16).to_le_bytes());
    let digest = key.map(|k| {
        // Only batches with a key pay for the hash.
        let d = digest(identity.unwrap_or(&payload[meta_len..]));
        payload[10..10 + key_len].copy_from_slice(k.as_bytes());
        payload[10 + key_len..meta_len].copy_from_slice(&d);
        d
    });
    let mut payload_crc = crc32fast::Hasher::new();
    payload_crc.update(&payload);
    Ok(EncodedBatch {
        payload,
        payload_crc,
        readings: readings.len(),
        key: key.map(Box::from),
        digest,
        time_ns,
    })
}

/// The digest of an encoded payload.
pub fn digest(payload: &[u8]) -> Digest {
    use sha2::Digest as _;
    let full = sha2::Sha256::digest(payload);
    let mut d = [0u8; DIGEST_LEN];
    d.copy_from_slice(&full[..DIGEST_LEN]);
    d
}

/// Encodes `readings` as a payload after `reserve` zero bytes (room for
/// `meta`). Fails with the body length if it would exceed [`MAX_BODY_LEN`].
///
/// The batch's name table is the string table, and each row's pair gives
/// its device and tag indices: nothing is hashed or re-interned. A batch
/// parsed from a body has its names in order of first appearance, which
/// is the string table earlier versions built row by row, so the payload
/// (and an idempotency digest over it) is the same bytes as theirs.
fn encode_readings(reserve: usize, readings: &Readings) -> Result<Vec<u8>, usize> {
    let names = readings.name_count();
    let string_bytes: usize = readings.names().map(|s| 4 + s.len()).sum();
    let len = reserve + 8 + string_bytes + READING_LEN * readings.len();
    if len + 8 > MAX_BODY_LEN || readings.len() > u32::MAX as usize || names > u32::MAX as usize {
        return Err(len + 8);
    }
    let mut payload = Vec::with_capacity(len);
    payload.resize(reserve, 0);
    payload.extend_from_slice(&(readings.len() as u32).to_le_bytes());
    payload.extend_from_slice(&(names as u32).to_le_bytes());
    for s in readings.names() {
        payload.extend_from_slice(&(s.len() as u32).to_le_bytes());
        payload.extend_from_slice(s.as_bytes());
    }
    let pairs = readings.key_names();
    let rows = readings
        .ts()
        .iter()
        .zip(readings.key_ids())
        .zip(readings.values());
    for ((&ts, &k), &value) in rows {
        let (d, t) = pairs[k as usize];
        let mut rec = [0u8; READING_LEN];
        rec[0..8].copy_from_slice(&ts.to_le_bytes());
        rec[8..12].copy_from_slice(&d.to_le_bytes());
        rec[12..16].copy_from_slice(&t.to_le_bytes());
        rec[16..24].copy_from_slice(&value.to_bits().to_le_bytes());
        payload.extend_from_slice(&rec);
    }
    Ok(payload)
}

/// Appends the framed record for `batch` with sequence number `seq` to `out`.
pub fn frame_record(out: &mut Vec<u8>, seq: Seq, batch: &EncodedBatch) {
    let seq_bytes = seq.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq_bytes);
    crc.combine(&batch.payload_crc);
    let body_len = (8 + batch.payload.len()) as u32;
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(&batch.payload);
}

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFault {
    /// The record runs past the end of the data: the signature of a crash
    /// mid-write at the tail.
    Incomplete(String),
    /// The record is complete but its length, checksum or payload is wrong.
    Invalid(String),
}

impl RecordFault {
    /// The human-readable reason.
    pub fn reason(&self) -> &str {
        match self {
            RecordFault::Incomplete(r) | RecordFault::Invalid(r) => r,
        }
    }
}

/// A record read from a segment: its sequence number, payload and the
/// offset just past it.
pub struct RawRecord<'a> {
    /// The record's sequence number.
    pub seq: Seq,
    /// The encoded payload (checksum verified).
    pub payload: &'a [u8],
    /// Offset of the first byte after this record.
    pub end: usize,
}

/// Reads the record at `pos` of `data`. Returns `Ok(None)` exactly at the
/// end of the data.
pub fn read_record(data: &[u8], pos: usize) -> Result<Option<RawRecord<'_>>, RecordFault> {
    let rest = &data[pos.min(data.len())..];
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < FRAME_LEN {
        return Err(RecordFault::Incomplete(format!(
            "{} bytes left, a record frame needs {FRAME_LEN}",
            rest.len()
        )));
    }
    let body_len = u32_at(rest, 0) as usize;
    let crc = u32_at(rest, 4);
    if !(MIN_BODY_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Err(RecordFault::Invalid(format!(
            "record length {body_len} is outside {MIN_BODY_LEN}..={MAX_BODY_LEN}"
        )));
    }
    if rest.len() - FRAME_LEN < body_len {
        return Err(RecordFault::Incomplete(format!(
            "record length {body_len} but only {} bytes follow",
            rest.len() - FRAME_LEN
        )));
    }
    let body = &rest[FRAME_LEN..FRAME_LEN + body_len];
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(RecordFault::Invalid(format!(
            "checksum mismatch: stored {crc:#010x}, computed {actual:#010x}"
        )));
    }
    Ok(Some(RawRecord {
        seq: u64_at(body, 0),
        payload: &body[8..],
        end: pos + FRAME_LEN + body_len,
    }))
}

/// What a version 2 record says besides its readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta<'a> {
    /// Wall time of the append, nanoseconds since the Unix epoch; `None` in
    /// version 1.
    pub time_ns: Option<i64>,
    /// The idempotency key, if the batch had one.
    pub key: Option<&'a str>,
    /// The digest of the payload, present with a key.
    pub digest: Option<Digest>,
}

/// Splits what follows a record's sequence number into its `meta` and its
/// `payload`, according to the segment's format `version`.
pub fn split_meta(version: u32, body: &[u8]) -> Result<(Meta<'_>, &[u8]), String> {
    if version == VERSION_1 {
        return Ok((Meta::default(), body));
    }
    let mut cur = Cursor { buf: body, pos: 0 };
    let time_ns = u64_at(cur.take(8)?, 0) as i64;
    let key_len = cur.u16()? as usize;
    if key_len > MAX_KEY_LEN {
        return Err(format!(
            "idempotency key of {key_len} bytes, longer than {MAX_KEY_LEN}"
        ));
    }
    let (key, digest) = if key_len == 0 {
        (None, None)
    } else {
        let key = std::str::from_utf8(cur.take(key_len)?)
            .map_err(|e| format!("idempotency key is not UTF-8: {e}"))?;
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(cur.take(DIGEST_LEN)?);
        (Some(key), Some(d))
    };
    let meta = Meta {
        time_ns: Some(time_ns),
        key,
        digest,
    };
    Ok((meta, &body[cur.pos..]))
}

/// Decodes a payload into readings, checking every index and length. The
/// string table becomes the batch's name table as it is; each distinct
/// (device, tag) index pair becomes one pair, in order of first
/// appearance. No string is copied per reading.
pub fn decode_payload(payload: &[u8]) -> Result<Readings, String> {
    let mut cur = Cursor {
        buf: payload,
        pos: 0,
    };
    let count = cur.u32()? as usize;
    let n_strings = cur.u32()? as usize;
    // Each string takes at least 4 bytes: refuse counts the payload cannot
    // hold before allocating for them.
    if n_strings > payload.len() / 4 {
        return Err(format!("string count {n_strings} exceeds the payload size"));
    }
    let mut out = Readings::new();
    for i in 0..n_strings {
        let len = cur.u32()? as usize;
        let bytes = cur.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|e| format!("string {i} is not UTF-8: {e}"))?;
        out.add_name(s).map_err(|e| format!("string {i}: {e}"))?;
    }
    let remaining = payload.len() - cur.pos;
    if remaining != count.saturating_mul(READING_LEN) {
        return Err(format!(
            "{count} readings need {} bytes, {remaining} remain",
            count.saturating_mul(READING_LEN)
        ));
    }
    out.reserve(count);
    let mut pairs: FxHashMap<(u32, u32), u32> = FxHashMap::default();
    let mut last: Option<((u32, u32), u32)> = None;
    for chunk in payload[cur.pos..].chunks_exact(READING_LEN) {
        let pair = (u32_at(chunk, 8), u32_at(chunk, 12));
        let key = match last {
            Some((p, k)) if p == pair => k,
            _ => {
                let k = match pairs.get(&pair) {
                    Some(&k) => k,
                    None => {
                        for (i, what) in [(pair.0, "device"), (pair.1, "tag")] {
                            if i as usize >= n_strings {
                                return Err(format!(
                                    "{what} index {i} outside a string table of {n_strings}"
                                ));
                            }
                        }
                        let k = out.add_key(pair.0, pair.1).map_err(|e| e.to_string())?;
                        pairs.insert(pair, k);
                        k
                    }
                };
                last = Some((pair, k));
                k
            }
        };
        out.push(
            u64_at(chunk, 0) as i64,
            key,
            f64::from_bits(u64_at(chunk, 16)),
        );
    }
    Ok(out)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "payload ends at {} while reading {n} bytes at {}",
                    self.buf.len(),
                    self.pos
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32_at(self.take(4)?, 0))
    }
}

/// Reads a little-endian `u32` at `at`; callers have checked the bounds.
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Reads a little-endian `u64` at `at`; callers have checked the bounds.
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Readings {
        [
            (1_700_000_000_000_000_000, "dev-1", "temp", 21.5),
            (-5, "dev-2", "temp", f64::NAN),
            (i64::MAX, "dev-1", "hum", -0.0),
            (0, "", "ünïcode", f64::INFINITY),
        ]
        .into_iter()
        .collect()
    }

    fn framed(seq: Seq, readings: &Readings) -> Vec<u8> {
        framed_keyed(seq, None, readings)
    }

    fn framed_keyed(seq: Seq, key: Option<&str>, readings: &Readings) -> Vec<u8> {
        let enc = encode_batch(key, 1_700_000_000_123_456_789, readings).expect("encodes");
        let mut out = Vec::new();
        frame_record(&mut out, seq, &enc);
        assert_eq!(out.len(), enc.record_len());
        out
    }

    #[test]
    fn round_trip_keeps_every_field_bit_for_bit() {
        let readings = sample();
        let bytes = framed(42, &readings);
        let rec = read_record(&bytes, 0).expect("valid").expect("present");
        assert_eq!(rec.seq, 42);
        assert_eq!(rec.end, bytes.len());
        let (meta, payload) = split_meta(VERSION, rec.payload).expect("meta");
        assert_eq!(meta.time_ns, Some(1_700_000_000_123_456_789));
        assert_eq!((meta.key, meta.digest), (None, None));
        let back = decode_payload(payload).expect("decodes");
        assert_eq!(back.len(), readings.len());
        for (a, b) in readings.iter().zip(back.iter()) {
            assert_eq!((a.ts, a.device, a.tag), (b.ts, b.device, b.tag));
            assert_eq!(a.value.to_bits(), b.value.to_bits());
        }
        assert!(read_record(&bytes, bytes.len()).expect("end").is_none());
    }

    #[test]
    fn string_table_stores_each_name_once() {
        let readings: Readings = (0..1000)
            .map(|i| (i, "a-long-device-name", "a-long-tag-name", 1.0))
            .collect();
        let enc = encode_batch(None, 0, &readings).expect("encodes");
        assert_eq!(
            enc.payload.len(),
            10 + 8 + 4 + 18 + 4 + 15 + 1000 * READING_LEN
        );
    }

    #[test]
    fn empty_batch_round_trips() {
        let bytes = framed(0, &Readings::new());
        let rec = read_record(&bytes, 0).expect("valid").expect("present");
        let (_, payload) = split_meta(VERSION, rec.payload).expect("meta");
        assert!(decode_payload(payload).expect("decodes").is_empty());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = framed_keyed(7, Some("retry-me"), &sample());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                match read_record(&b, 0) {
                    Err(_) => {}
                    Ok(r) => panic!(
                        "flip of byte {i} bit {bit} not detected: {:?}",
                        r.map(|r| r.seq)
                    ),
                }
            }
        }
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let bytes = framed_keyed(7, Some("retry-me"), &sample());
        for cut in 1..bytes.len() {
            assert!(
                matches!(
                    read_record(&bytes[..cut], 0),
                    Err(RecordFault::Incomplete(_))
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn malformed_payloads_are_refused_not_panicking() {
        let enc = encode_batch(Some("k"), 0, &sample()).expect("encodes");
        for cut in 0..10 + 1 + DIGEST_LEN {
            assert!(
                split_meta(VERSION, &enc.payload[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let (_, payload) = split_meta(VERSION, &enc.payload).expect("meta");
        for cut in 0..payload.len() {
            assert!(decode_payload(&payload[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_index = payload.to_vec();
        let n = bad_index.len();
        bad_index[n - 16..n - 12].copy_from_slice(&99u32.to_le_bytes());
        assert!(decode_payload(&bad_index)
            .expect_err("bad index")
            .contains("index 99"));
    }

    #[test]
    fn a_key_travels_with_its_batch_and_a_digest_of_its_readings() {
        let bytes = framed_keyed(3, Some("client-42/ü"), &sample());
        let rec = read_record(&bytes, 0).expect("valid").expect("present");
        let (meta, payload) = split_meta(VERSION, rec.payload).expect("meta");
        assert_eq!(meta.key, Some("client-42/ü"));
        assert_eq!(meta.digest, Some(digest(payload)));
        assert_eq!(decode_payload(payload).expect("decodes").len(), 4);
        let same = encode_batch(Some("other"), 5, &sample()).expect("encodes");
        assert_eq!(same.digest, meta.digest, "the digest covers readings only");
        let changed: Readings = sample()
            .iter()
            .enumerate()
            .map(|(i, r)| fleetscore_core::Reading {
                value: if i == 0 { 21.6 } else { r.value },
                ..r
            })
            .collect();
        let other = encode_batch(Some("client-42/ü"), 0, &changed).expect("encodes");
        assert_ne!(other.digest, meta.digest);
        // Version 1 bodies have no meta.
        let (v1, rest) = split_meta(VERSION_1, payload).expect("v1");
        assert_eq!((v1, rest), (Meta::default(), payload));
    }

    #[test]
    fn header_round_trip_and_refusals() {
        let h = encode_header(123);
        let header = |version, first_seq| Header { version, first_seq };
        assert_eq!(decode_header(&h), Ok(header(2, 123)));
        assert!(decode_header(&h[..10]).is_err());
        let mut v = h;
        v[8] = 1;
        assert_eq!(decode_header(&v), Ok(header(1, 123)));
        v[8] = 3;
        assert!(decode_header(&v)
            .expect_err("version")
            .contains("version 3"));
        let mut m = h;
        m[0] = b'X';
        assert!(decode_header(&m).is_err());
    }
}
