//! The heap the ingest body parsers hold, in proportion to the body.
//!
//! The server holds room in its in-flight budget for four bytes per body
//! byte (the body and its readings, `PARSE_FACTOR` in the server), so a
//! parser must not hold memory out of proportion to the body, whatever the
//! body. A counting allocator measures each parse; this file has one test
//! so that no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fleetscore_codecs::{parse_json, parse_line_protocol, LineProtocolConfig, Precision};

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

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

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's pointer and layout, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn grew(bytes: usize) {
    let now = IN_USE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most heap `f` held at once beyond what was in use before.
fn peak<T>(f: impl FnOnce() -> T) -> usize {
    let base = IN_USE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    drop(out);
    peak
}

#[test]
fn parsers_hold_heap_in_proportion_to_the_body() {
    // JSON arrays were read into a tree first: 32 bytes per `0,` (16 times
    // the body, twice that while the array grew), and several hundred bytes
    // per reading object (about 10 times the body). Now elements are read
    // one at a time and only a reading's four fields are kept.
    let zeros = format!("[{}0]", "0,".repeat(1 << 20));
    let held = peak(|| parse_json(zeros.as_bytes(), fleetscore_core::TsUnit::Nanos).unwrap_err());
    assert!(
        held <= zeros.len(),
        "{held} bytes for a {}-byte body",
        zeros.len()
    );

    let objects = format!(
        "[{}]",
        (0..50_000)
            .map(|i| format!(
                r#"{{"ts": {i}, "device": "d{}", "tag": "t", "value": 1.5}}"#,
                i % 100
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let held = peak(|| parse_json(objects.as_bytes(), fleetscore_core::TsUnit::Nanos).unwrap());
    assert!(
        held <= objects.len(),
        "{held} bytes for a {}-byte body",
        objects.len()
    );

    // Line protocol reserved room for (lines x fields of the first line)
    // readings: one long line and many blank ones (21 KB) reserved 83 MB
    // here.
    // Now it reserves for as many lines like the first as the body holds:
    // 17 such lines (3,400 readings, about 8 times this body) would need
    // what it holds now.
    let mut lp = String::from("m,device=d ");
    lp.push_str(
        &(0..200)
            .map(|i| format!("f{i}=1"))
            .collect::<Vec<_>>()
            .join(","),
    );
    lp.push_str(&"\n".repeat(20_000));
    let cfg = LineProtocolConfig::default();
    let held =
        peak(|| parse_line_protocol(lp.as_bytes(), Precision::Nanoseconds, 0, &cfg).unwrap());
    assert!(
        held <= 16 * lp.len(),
        "{held} bytes for a {}-byte body",
        lp.len()
    );
}
