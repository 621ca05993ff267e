//! The invariants the ingest-body fuzz targets (`lineproto`, `json`, `csv`)
//! check on every result, beyond "no panic".
//!
//! A body is one batch, all or nothing (`fleetscore_codecs::BatchError`),
//! so every input ends in one of two states, and each has rules:
//!
//! * **Accepted** ([`check_batch`]): the columns of `Readings` have one
//!   entry per reading; every row's key id names a (device, tag) pair, and
//!   the pairs are distinct, each used, in order of first appearance; every
//!   reading passes the one policy of `fleetscore_core` (`validate_name`,
//!   `check_ts`, `check_value`). Then the readings are written back in all
//!   three body formats and parsed again ([`check_round_trips`]): each must
//!   give the same readings, bit for bit, so the parsers agree with each
//!   other and with their own escaping rules.
//! * **Refused** ([`check_refusal`]): at least one problem, at most
//!   `MAX_REPORTED_ERRORS` listed (the rest counted only once the list is
//!   full), each with a non-empty reason, in body order, and each naming a
//!   place inside the body: a line no greater than the body's line count,
//!   an array element that exists, or the body as a whole where the format
//!   allows it.
//! * **Either way** ([`check_heap`]): parsing held heap in proportion to
//!   the body (a counting allocator measures it), so that a small body
//!   cannot make the server hold far more memory than its in-flight
//!   budget counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fleetscore_codecs::{
    parse_csv_body, parse_json, parse_line_protocol, Batch, BatchError, CsvBodyConfig,
    LineProtocolConfig, Location, Precision, MAX_REPORTED_ERRORS,
};
use fleetscore_core::{check_ts, check_value, validate_name, NameKind, TsUnit};

/// The heap in use and its high-water mark, for [`measure`].
static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes in use (every target runs on
/// one thread, so the counts are this input's).
struct Counting;

// SAFETY: every call goes to the system allocator unchanged; the counters
// only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's pointer and layout, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's pointer, layout and size, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

fn grew(bytes: usize) {
    let now = IN_USE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most heap it held at once
/// beyond what was in use before (its result included).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = IN_USE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// How much heap a parser may hold per byte of body, at most: a coarse
/// ceiling against runaway reservations and trees of the whole body (the
/// two fixed so far held about 4000 and 48 times the body), not the
/// server's budget. The server holds `PARSE_FACTOR` (4) bytes of its
/// in-flight budget per body byte (`crates/fleetscore/src/serve.rs`); a
/// typical body costs about 3, but one whose every reading is a new
/// (device, tag) pair costs about 13 today (the interning tables; measured
/// as `crates/codecs/tests/memory.rs` measures, see fuzz/README.md).
pub const HEAP_PER_BODY_BYTE: usize = 64;

/// Heap a parser may hold whatever the body: the interning tables are
/// reserved for up to 65,536 entries (a few MB) before they grow.
pub const HEAP_SLACK: usize = 4 << 20;

/// Checks that parsing a body of `body_len` bytes held at most
/// [`HEAP_PER_BODY_BYTE`] times its size plus [`HEAP_SLACK`].
pub fn check_heap(peak: usize, body_len: usize) {
    let allowed = HEAP_PER_BODY_BYTE * body_len + HEAP_SLACK;
    assert!(
        peak <= allowed,
        "parsing a {body_len}-byte body held {peak} bytes of heap, more than {allowed}"
    );
}

/// One accepted reading, with its value as bits so that `-0.0` and `0.0`
/// differ when readings are compared.
type Row = (i64, String, String, u64);

/// The readings of a batch in body order.
pub fn rows(batch: &Batch) -> Vec<Row> {
    batch
        .iter()
        .map(|r| {
            (
                r.ts,
                r.device.to_owned(),
                r.tag.to_owned(),
                r.value.to_bits(),
            )
        })
        .collect()
}

/// Checks an accepted batch (see the crate docs); `body_len` bounds the
/// number of readings (each takes at least one byte of the body).
pub fn check_batch(batch: &Batch, body_len: usize) {
    let r = &batch.readings;
    let n = r.len();
    assert_eq!(r.ts().len(), n, "ts column length");
    assert_eq!(r.values().len(), n, "value column length");
    assert_eq!(r.key_ids().len(), n, "key column length");
    assert_eq!(batch.iter().count(), n, "row view count");
    assert!(
        n <= body_len,
        "{n} readings from a body of {body_len} bytes"
    );
    // Key ids: in range, each pair used, numbered in order of first use.
    let mut next = 0u32;
    for &k in r.key_ids() {
        assert!(
            (k as usize) < r.key_count(),
            "key id {k} of {}",
            r.key_count()
        );
        assert!(k <= next, "key id {k} used before id {next}");
        if k == next {
            next += 1;
        }
    }
    assert_eq!(
        next as usize,
        r.key_count(),
        "a (device, tag) pair no row uses"
    );
    let mut pairs: Vec<(&str, &str)> = r.keys().collect();
    pairs.sort_unstable();
    pairs.dedup();
    assert_eq!(
        pairs.len(),
        r.key_count(),
        "a (device, tag) pair interned twice"
    );
    for reading in batch.iter() {
        validate_name(NameKind::Device, reading.device)
            .unwrap_or_else(|e| panic!("accepted a bad device name: {e}"));
        validate_name(NameKind::Tag, reading.tag)
            .unwrap_or_else(|e| panic!("accepted a bad tag name: {e}"));
        check_ts(reading.ts).unwrap_or_else(|e| panic!("accepted a bad timestamp: {e}"));
        check_value(reading.value).unwrap_or_else(|e| panic!("accepted a bad value: {e}"));
    }
}

/// What a format may name in a refusal besides lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Places {
    /// Lines only (line protocol: every problem is on a line).
    Lines,
    /// Lines or the whole body (CSV: a bad column mapping).
    LinesOrBody,
    /// Lines, the body, or the elements of a top-level array (JSON).
    Json,
}

/// Checks a refused batch (see the crate docs).
pub fn check_refusal(e: &BatchError, body: &[u8], places: Places) {
    assert!(!e.errors.is_empty(), "a refusal without a problem: {e:?}");
    assert!(
        e.errors.len() <= MAX_REPORTED_ERRORS,
        "{} problems listed",
        e.errors.len()
    );
    assert!(
        e.omitted == 0 || e.errors.len() == MAX_REPORTED_ERRORS,
        "problems counted as omitted before the list was full: {e:?}"
    );
    // A line is ended by `\n`; a line count from `\n` alone is what an
    // editor shows the client for the bodies our clients send.
    let lines = body.iter().filter(|&&b| b == b'\n').count() + 1;
    let mut elements: Option<usize> = None;
    let mut prev: Option<Location> = None;
    for r in &e.errors {
        assert!(
            !r.reason.trim().is_empty(),
            "a problem without a reason: {r:?}"
        );
        match r.at {
            Location::Line(l) => {
                assert!(l >= 1 && l <= lines, "{r} but the body has {lines} line(s)")
            }
            Location::Element(i) => {
                assert_eq!(places, Places::Json, "{r}: only JSON has elements");
                let n = *elements.get_or_insert_with(|| {
                    serde_json::from_slice::<Vec<serde_json::Value>>(body)
                        .map(|v| v.len())
                        .unwrap_or_else(|err| panic!("{r} but the body is no JSON array: {err}"))
                });
                assert!(i < n, "{r} but the array has {n} element(s)");
            }
            Location::Body => assert_ne!(places, Places::Lines, "{r}: expected a line"),
        }
        // In body order: a later problem never names an earlier place.
        if let Some(p) = prev {
            let ordered = match (p, r.at) {
                (Location::Line(a), Location::Line(b)) => a <= b,
                (Location::Element(a), Location::Element(b)) => a < b,
                _ => true,
            };
            assert!(ordered, "problems out of body order: {p} then {}", r.at);
        }
        prev = Some(r.at);
    }
}

/// Writes `batch` as line protocol, JSON and CSV and checks that each
/// parses back to the same readings.
pub fn check_round_trips(batch: &Batch) {
    let want = rows(batch);
    if want.is_empty() {
        return;
    }
    let lp = to_line_protocol(batch);
    let got = parse_line_protocol(
        lp.as_bytes(),
        Precision::Nanoseconds,
        0,
        &LineProtocolConfig::default(),
    )
    .unwrap_or_else(|e| panic!("our own line protocol is refused: {e}\n{lp}"));
    assert_eq!(rows(&got), want, "line protocol round trip\n{lp}");
    assert!(
        got.readings.keys().eq(batch.readings.keys()),
        "line protocol round trip: the pairs"
    );

    let json = to_json(batch);
    // Our JSON and CSV write integer nanoseconds: read them as such (the
    // default, `auto`, would read small ones as seconds).
    let got = parse_json(json.as_bytes(), TsUnit::Nanos)
        .unwrap_or_else(|e| panic!("our own JSON is refused: {e}\n{json}"));
    assert_eq!(rows(&got), want, "JSON round trip\n{json}");

    let csv = to_csv(batch);
    let nanos = CsvBodyConfig {
        ts_unit: TsUnit::Nanos,
        ..CsvBodyConfig::default()
    };
    let got = parse_csv_body(&csv, &nanos).unwrap_or_else(|e| {
        panic!(
            "our own CSV is refused: {e}\n{}",
            String::from_utf8_lossy(&csv)
        )
    });
    assert_eq!(rows(&got), want, "CSV round trip");
}

/// `m,device=<device> <tag>=<value> <ts>` per reading, with line
/// protocol's escapes for tag values and field keys.
fn to_line_protocol(batch: &Batch) -> String {
    fn escape(out: &mut String, s: &str) {
        for c in s.chars() {
            if matches!(c, ',' | ' ' | '=' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
    }
    let mut out = String::new();
    for r in batch.iter() {
        out.push_str("m,device=");
        escape(&mut out, r.device);
        out.push(' ');
        escape(&mut out, r.tag);
        // `{:?}` is the shortest text that reads back as the same f64.
        out.push_str(&format!("={:?} {}\n", r.value, r.ts));
    }
    out
}

fn to_json(batch: &Batch) -> String {
    let items: Vec<serde_json::Value> = batch
        .iter()
        .map(
            |r| serde_json::json!({"ts": r.ts, "device": r.device, "tag": r.tag, "value": r.value}),
        )
        .collect();
    serde_json::to_string(&items).expect("JSON values serialise")
}

fn to_csv(batch: &Batch) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["TS", "Device", "Tag", "Value"])
        .expect("writing to memory");
    for r in batch.iter() {
        w.write_record([
            r.ts.to_string(),
            r.device.to_owned(),
            r.tag.to_owned(),
            format!("{:?}", r.value),
        ])
        .expect("writing to memory");
    }
    w.into_inner().expect("writing to memory")
}
