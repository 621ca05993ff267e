//! The on-disk format: segment header, record framing and batch encoding.
//!
//! All integers are little-endian.
//!
//! ```text
//! segment  = header record*
//! header   = magic "FSINGLOG" (8 bytes) | version u32 (= 1) | flags u32 (= 0)
//!          | first_seq u64                                   -- 24 bytes
//! record   = body_len u32 | crc u32 | body                  -- 8 + body_len bytes
//! body     = seq u64 | payload
//! payload  = count u32 | n_strings u32 | string{n_strings} | reading{count}
//! string   = len u32 | UTF-8 bytes
//! reading  = ts i64 | device u32 | tag u32 | value f64       -- 24 bytes
//! ```
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

use rustc_hash::FxHashMap;

use crate::{Reading, Seq};

/// The magic bytes that open every segment.
pub const MAGIC: [u8; 8] = *b"FSINGLOG";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
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

/// The header bytes of a segment whose first record will carry `first_seq`.
pub fn encode_header(first_seq: Seq) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    // bytes 12..16: flags, zero in version 1.
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// Parses a segment header and returns its `first_seq`.
pub fn decode_header(bytes: &[u8]) -> Result<Seq, String> {
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
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads version {VERSION}"
        ));
    }
    let flags = u32_at(bytes, 12);
    if flags != 0 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    Ok(u64_at(bytes, 16))
}

/// A batch encoded on the appender's thread, ready for the writer to frame.
///
/// Encoding and checksumming happen before the batch reaches the single
/// writer thread, so that work is spread over the appenders' cores and the
/// writer only copies bytes.
pub struct EncodedBatch {
    /// The payload (everything after the sequence number).
    pub payload: Vec<u8>,
    /// CRC state over `payload`, combined with the sequence number's CRC by
    /// the writer once the sequence number is known.
    pub payload_crc: crc32fast::Hasher,
    /// Number of readings in the batch.
    pub readings: usize,
}

impl EncodedBatch {
    /// Bytes this batch occupies on disk as a record.
    pub fn record_len(&self) -> usize {
        FRAME_LEN + 8 + self.payload.len()
    }
}

/// Encodes `readings` as a payload. Fails only if the batch would exceed
/// [`MAX_BODY_LEN`] or count fields would overflow `u32`.
pub fn encode_payload(readings: &[Reading]) -> Result<EncodedBatch, usize> {
    let mut strings: Vec<&str> = Vec::new();
    let mut ids: Vec<(u32, u32)> = Vec::with_capacity(readings.len());
    let mut string_bytes = 0usize;
    let mut index: FxHashMap<&str, u32> = FxHashMap::default();
    // Consecutive readings usually share their device (one line protocol
    // line, one device), so it is compared with the previous one before
    // it is hashed.
    let mut last_device: Option<(&str, u32)> = None;
    for r in readings {
        let d = match last_device {
            Some((name, id)) if name == r.device => id,
            _ => {
                let id = intern_str(&mut index, &mut strings, &mut string_bytes, &r.device);
                last_device = Some((&r.device, id));
                id
            }
        };
        let t = intern_str(&mut index, &mut strings, &mut string_bytes, &r.tag);
        ids.push((d, t));
    }
    let len = 8 + string_bytes + READING_LEN * readings.len();
    if len + 8 > MAX_BODY_LEN || readings.len() > u32::MAX as usize {
        return Err(len + 8);
    }
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(&(readings.len() as u32).to_le_bytes());
    payload.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    for s in &strings {
        payload.extend_from_slice(&(s.len() as u32).to_le_bytes());
        payload.extend_from_slice(s.as_bytes());
    }
    for (r, (d, t)) in readings.iter().zip(&ids) {
        let mut rec = [0u8; READING_LEN];
        rec[0..8].copy_from_slice(&r.ts.to_le_bytes());
        rec[8..12].copy_from_slice(&d.to_le_bytes());
        rec[12..16].copy_from_slice(&t.to_le_bytes());
        rec[16..24].copy_from_slice(&r.value.to_bits().to_le_bytes());
        payload.extend_from_slice(&rec);
    }
    let mut payload_crc = crc32fast::Hasher::new();
    payload_crc.update(&payload);
    Ok(EncodedBatch {
        payload,
        payload_crc,
        readings: readings.len(),
    })
}

fn intern_str<'a>(
    index: &mut FxHashMap<&'a str, u32>,
    strings: &mut Vec<&'a str>,
    string_bytes: &mut usize,
    s: &'a str,
) -> u32 {
    if let Some(&i) = index.get(s) {
        return i;
    }
    let i = strings.len() as u32;
    index.insert(s, i);
    strings.push(s);
    *string_bytes += 4 + s.len();
    i
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

/// Decodes a payload into readings, checking every index and length.
pub fn decode_payload(payload: &[u8]) -> Result<Vec<Reading>, String> {
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
    let mut strings = Vec::with_capacity(n_strings);
    for i in 0..n_strings {
        let len = cur.u32()? as usize;
        let bytes = cur.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|e| format!("string {i} is not UTF-8: {e}"))?;
        strings.push(s);
    }
    let remaining = payload.len() - cur.pos;
    if remaining != count.saturating_mul(READING_LEN) {
        return Err(format!(
            "{count} readings need {} bytes, {remaining} remain",
            count.saturating_mul(READING_LEN)
        ));
    }
    let lookup = |i: u32, what: &str| -> Result<String, String> {
        strings
            .get(i as usize)
            .map(|s| (*s).to_owned())
            .ok_or_else(|| format!("{what} index {i} outside a string table of {n_strings}"))
    };
    let mut out = Vec::with_capacity(count);
    for chunk in payload[cur.pos..].chunks_exact(READING_LEN) {
        out.push(Reading {
            ts: u64_at(chunk, 0) as i64,
            device: lookup(u32_at(chunk, 8), "device")?,
            tag: lookup(u32_at(chunk, 12), "tag")?,
            value: f64::from_bits(u64_at(chunk, 16)),
        });
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

    fn sample() -> Vec<Reading> {
        vec![
            Reading::new(1_700_000_000_000_000_000, "dev-1", "temp", 21.5),
            Reading::new(-5, "dev-2", "temp", f64::NAN),
            Reading::new(i64::MAX, "dev-1", "hum", -0.0),
            Reading::new(0, "", "ünïcode", f64::INFINITY),
        ]
    }

    fn framed(seq: Seq, readings: &[Reading]) -> Vec<u8> {
        let enc = encode_payload(readings).expect("encodes");
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
        let back = decode_payload(rec.payload).expect("decodes");
        assert_eq!(back.len(), readings.len());
        for (a, b) in readings.iter().zip(&back) {
            assert_eq!((a.ts, &a.device, &a.tag), (b.ts, &b.device, &b.tag));
            assert_eq!(a.value.to_bits(), b.value.to_bits());
        }
        assert!(read_record(&bytes, bytes.len()).expect("end").is_none());
    }

    #[test]
    fn string_table_stores_each_name_once() {
        let readings: Vec<_> = (0..1000)
            .map(|i| Reading::new(i, "a-long-device-name", "a-long-tag-name", 1.0))
            .collect();
        let enc = encode_payload(&readings).expect("encodes");
        assert_eq!(enc.payload.len(), 8 + 4 + 18 + 4 + 15 + 1000 * READING_LEN);
    }

    #[test]
    fn empty_batch_round_trips() {
        let bytes = framed(0, &[]);
        let rec = read_record(&bytes, 0).expect("valid").expect("present");
        assert!(decode_payload(rec.payload).expect("decodes").is_empty());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = framed(7, &sample());
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
        let bytes = framed(7, &sample());
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
        let enc = encode_payload(&sample()).expect("encodes");
        for cut in 0..enc.payload.len() {
            assert!(decode_payload(&enc.payload[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_index = enc.payload.clone();
        let n = bad_index.len();
        bad_index[n - 16..n - 12].copy_from_slice(&99u32.to_le_bytes());
        assert!(decode_payload(&bad_index)
            .expect_err("bad index")
            .contains("index 99"));
    }

    #[test]
    fn header_round_trip_and_refusals() {
        let h = encode_header(123);
        assert_eq!(decode_header(&h), Ok(123));
        assert!(decode_header(&h[..10]).is_err());
        let mut v = h;
        v[8] = 2;
        assert!(decode_header(&v)
            .expect_err("version")
            .contains("version 2"));
        let mut m = h;
        m[0] = b'X';
        assert!(decode_header(&m).is_err());
    }
}
