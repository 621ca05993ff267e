//! The window aggregator of the ingestion pipeline: readings in, windows
//! with features out, over event time.
//!
//! ```text
//! ingest log ─► Aggregator::push ─► drain_closed ─► store: windows/
//! raw/       ─► batch_aggregate  ─────────────────► (the same windows)
//! ```
//!
//! The streaming [`Aggregator`] keeps the open windows of every (device,
//! tag) pair in memory and emits each one once, when it closes. The batch
//! recompute [`batch_aggregate`] computes the same windows from stored raw
//! readings. Both fold readings with the same accumulator, so they agree
//! bit for bit (see "Streaming equals batch" below).
//!
//! # Time
//! Timestamps are `i64` nanoseconds since the Unix epoch, UTC, as
//! everywhere in fleetscore; durations in the config are [`Span`]s
//! (`"1m"`, `"30s"`), also nanoseconds. Window bounds are exact integers, so
//! there is no rounding at boundaries. Output timestamps are Arrow
//! `Timestamp(Nanosecond, "UTC")`.
//!
//! # Windows
//! A [`WindowSpec`] has a `size` and an optional `hop` (default: `size`,
//! tumbling windows). Windows are half-open, `[start, end)` with
//! `end = start + size`, and their starts are the multiples of the hop since
//! the epoch (negative timestamps included: the window of `-1` ns starts at
//! `-hop`). A reading at exactly a boundary belongs to the window that
//! starts there, not to the one that ends there. A reading falls into every
//! window holding it: one for tumbling windows, `size / hop` (rounded up or
//! down by phase) for hopping ones. Several specs run side by side, each
//! over every accepted reading. Windows without readings do not exist: none
//! is emitted.
//!
//! # Features
//! Per `(device, tag, window)`, the [`Window`] fields: `count`, `sum`,
//! `mean`, `std` (the sample standard deviation, divisor `count - 1`;
//! `None`/null when `count == 1`, where pandas shows NaN), `min`, `max`,
//! `first` and `last` (the values of the readings with the smallest and the
//! largest timestamp; among readings with equal timestamps `first` takes the
//! earliest arrival and `last` the latest, as a stable sort by timestamp
//! would order them).
//!
//! How they are computed, which fixes the last bits of `sum`, `mean` and
//! `std`: each spec cuts time into *panes* of `gcd(size, hop)` (for
//! tumbling windows, the window itself). Readings are folded into their
//! pane in arrival order, with Welford's online update for mean and
//! variance, a running sum, min, max, first and last. When a window closes
//! it is its first pane with each later pane merged in, in time order (the
//! pairwise formula of Chan, Golub and LeVeque for mean and variance). A
//! reading thus updates one accumulator per spec, however many hopping
//! windows hold it.
//!
//! # Watermarks and closing
//! Each device has a clock: the newest event time it has sent, `max_ts`
//! ([`WatermarkMode::PerDevice`], the default). With
//! [`WatermarkMode::Global`] there is one clock for the fleet, the newest
//! event time of any device. With `ooo = out_of_order` and
//! `lateness = allowed_lateness` from the [`AggregatorConfig`]:
//!
//! - the **watermark** is `W = max_ts - ooo`;
//! - the **horizon** is `H = W - lateness = max_ts - (ooo + lateness)`,
//!   the oldest timestamp still accepted;
//! - a window `[start, end)` **closes when `H >= end`**, i.e. when the
//!   clock reaches `end + ooo + lateness`. Equality closes it: the horizon
//!   at `end` means no reading at `end - 1` ns or before can still come in.
//!   Closing emits the window, once; it is then forgotten.
//!
//! A reading with timestamp `ts` is judged against its clock *before* it
//! moves the clock (a clock that has seen nothing accepts anything):
//!
//! - `ts >= H`: **accepted**. Every window holding it ends after `ts >= H`,
//!   so all of them are still open: a reading is added to all of its windows
//!   or to none, in every spec alike. If `ts < max_ts` it also counts as
//!   `out_of_order`, and if `ts < W` as `late_accepted`.
//! - `ts < H`: **late**. With [`LatePolicy::Drop`] it is discarded and
//!   counted `too_late`; with [`LatePolicy::Adjust`] its timestamp becomes
//!   `H` (the oldest accepted time, so it lands in the oldest window still
//!   open; with no lateness `H` is the watermark itself) and it counts as
//!   `adjusted`. From there on it is a reading at `H` for every feature,
//!   `first` and `last` included.
//!
//! Then, if `ts > max_ts`, the clock moves to `ts` and every window of that
//! clock with `end <= H` closes. A reading never closes its own window
//! (`H <= ts < end`).
//!
//! Because every window is emitted exactly once, out-of-order tolerance and
//! allowed lateness add up: both delay closing and both widen acceptance.
//! They are separate settings so that the counters tell in-order, disordered
//! and late-but-accepted readings apart, and so that early firing (emit at
//! `W >= end`, then corrections) can be added later without changing
//! configs.
//!
//! Per-device watermarks mean one lagging device (a slow clock, a buffered
//! upload) never holds back another device's windows, and its own readings
//! are judged against its own clock only. The price: a device that goes
//! quiet keeps its last windows open until it sends again;
//! [`Aggregator::advance_to`] lets the caller close them on its own clock,
//! and [`Aggregator::flush_all`] closes everything at the end of a finite
//! input.
//!
//! # Releasing series, and the cap
//! A series (a device and tag) is *live* from its first accepted reading
//! until all of its windows have closed and been emitted; then it is
//! released: its lanes, its names and its table entries are freed, and its
//! id is reused by the next new series. Nothing it held can affect a later
//! output: any reading accepted later lies at or after its clock's horizon,
//! so after every window it emitted, and a series started again from
//! nothing gives exactly the windows the kept one would have.
//!
//! What a released series cannot give up is its device's clock (in global
//! mode, the fleet's, which is never released): a reading older than the
//! device's horizon must stay late, or it would reopen a window already
//! emitted. So when a device's last series is released its clock is kept
//! as an *idle clock* (its name and newest time, about 100 bytes instead of
//! about 0.5 KB per live series), and a device that comes back resumes it.
//! Idle clocks are bounded by [`AggregatorConfig::max_series`] too: past
//! that many, the older half is forgotten and the *floor* rises to the
//! newest of them; a device with no clock (forgotten, or never seen) starts
//! at the floor. The trade-off, precisely: a reading of such a device older
//! than `floor - (out_of_order + allowed_lateness)` counts as late (dropped
//! or adjusted) where a kept clock might have accepted it: a brand-new
//! device sending history older than the floor, or a forgotten device
//! whose clock was below the floor. No window is ever emitted twice, and
//! the floor only rises once more devices are idle than `max_series`, to
//! the clock of a device idle longer than half of them.
//!
//! At most [`AggregatorConfig::max_series`] series are live. A reading that
//! would start one more is *shed*: not aggregated and counted as dropped
//! ([`DropReason::SeriesLimit`]); it changes no state, not even its
//! device's clock. Shedding, not refusing: the aggregator runs after the
//! ingest log has acknowledged the reading, which stays in `raw/`, so the
//! windows of shed series (which may come out incomplete if the series is
//! admitted again mid-window) can be recomputed with [`batch_aggregate`].
//!
//! A device that stops sending keeps its last windows open (its clock does
//! not move). [`Aggregator::close_quiet`] closes the windows of clocks that
//! got no reading for a while of the caller's processing time, as
//! [`Aggregator::flush_all`] does for all, so that they are emitted and
//! released; `fleetscore serve` does so after
//! [`AggregatorConfig::close_idle_after`].
//!
//! # Other readings
//! - **Duplicates** (same device, tag, timestamp and value) are kept: each
//!   counts as a reading. The data model has no reading id, so a repeated
//!   value cannot be told from a sensor that reports the same value twice;
//!   redelivery is prevented upstream (the ingest log acknowledges once)
//!   and on restart (replay, below).
//! - A NaN or infinite value is dropped (`non_finite`), so every feature is
//!   a finite number.
//! - A timestamp within two window sizes of the ends of the `i64` range
//!   (years 1677 and 2262) is dropped (`out_of_range`), where window bounds
//!   would overflow.
//!
//! Every reading pushed ends up in exactly one of the [`Counters`]
//! `accepted`, `adjusted`, `too_late`, `non_finite`, `out_of_range`,
//! `shed`.
//!
//! # Restarts
//! The aggregator reads no clock: the same calls give the same windows in
//! the same order. After a crash, [`Aggregator::rebuild`] (or
//! [`Aggregator::replay`] reading by reading) feeds the ingest log's
//! readings into a fresh aggregator, which then holds exactly the open
//! windows and clocks the crashed one had, and discards the windows those
//! readings close, because the crashed process emitted them. Replay the
//! readings whose windows are durable, push the rest: no window is lost or
//! emitted twice.
//!
//! # Streaming equals batch
//! [`batch_aggregate`] over the readings the stream accepted, in arrival
//! order and at their adjusted timestamps, gives the streamed windows
//! exactly (every field bit for bit). When no reading is later than the
//! tolerances allow, that is every reading, for any arrival order. Over the
//! same readings in another order (say sorted by time) `count`, `min`,
//! `max`, `first`, `last` stay exact (with a stable sort) and `sum`, `mean`,
//! `std` agree to within rounding (the tests allow 1e-9 relative to the
//! values' magnitude). The property tests in `tests/streaming_vs_batch.rs`
//! check both, and check both paths against a naive recomputation.
//!
//! # Speed
//! Pairs are interned to dense ids ([`Aggregator::series`],
//! [`Aggregator::push_series`]); panes sit in a small deque per (pair,
//! spec), so a reading costs a hash lookup and one pane update per spec,
//! with no allocation once its pane exists. A clock's pairs are scanned for
//! closing only when its horizon passes the earliest window end among them.
//! `examples/throughput.rs` measures it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// A library reports through return values and `tracing`, never by printing.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod aggregator;
mod batch;
mod columns;
mod config;
mod error;
mod intern;
mod series;
mod span;
mod window;

pub use aggregator::{
    Aggregator, ClosedWindow, Counters, Disposition, DropReason, Reading, SeriesId,
};
pub use batch::batch_aggregate;
pub use columns::{
    window_schema, windows_from_record_batch, windows_to_record_batch, WINDOW_COLUMNS,
};
pub use config::{
    AggregatorConfig, LatePolicy, WatermarkMode, WindowSpec, MAX_WINDOWS_PER_READING,
};
pub use error::Error;
pub use series::{SeriesWindows, WindowColumns, WindowStats};
pub use span::Span;
pub use window::Window;
