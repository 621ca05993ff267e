//! Memory held per series, and whether it comes back: the scenario of
//! issue 16 (defect 3) at a smaller scale.
//!
//! ```text
//! cargo run --release -p fleetscore-stream --example series_memory [-- DEVICES]
//! ```
//!
//! Three batches of DEVICES (default 100,000) new devices, one reading
//! each, an hour of event time apart. After each batch it prints the live
//! series, the heap bytes the aggregator holds (a counting allocator) and
//! the snapshot size, then closes the quiet devices as `fleetscore serve`
//! does at a flush after `close_idle_after`, and prints them again.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use fleetscore_stream::{Aggregator, AggregatorConfig, Reading};

struct Counting;

static HEAP: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; the counter
// only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SEC: i64 = 1_000_000_000;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let base = HEAP.load(Ordering::Relaxed);
    let mut agg = Aggregator::new(AggregatorConfig::default()).expect("valid config");
    let report = |what: &str, agg: &Aggregator| {
        let heap = HEAP.load(Ordering::Relaxed) - base;
        let snap = agg.snapshot().len();
        println!(
            "{what:<28} live series {:>8}  idle clocks {:>8}  heap {:>7.1} MB ({:>5.0} B/series seen)  snapshot {:>6.1} MB",
            agg.series_count(),
            agg.idle_clocks(),
            heap as f64 / 1e6,
            heap as f64 / n as f64,
            snap as f64 / 1e6,
        );
    };
    let t0 = 1_700_000_000 * SEC;
    for batch in 0..3u64 {
        agg.set_arrival_time(batch * 2);
        for i in 0..n {
            let device = format!("probe-{batch}-{i:07}");
            agg.push(Reading {
                ts: t0 + batch as i64 * 3600 * SEC + i as i64,
                device: &device,
                tag: "temp",
                value: i as f64,
            });
        }
        report(&format!("batch {batch}: pushed"), &agg);
        agg.close_quiet(batch * 2 + 1);
        let closed = agg.drain_closed().count();
        report(&format!("batch {batch}: {closed} closed"), &agg);
    }
}
