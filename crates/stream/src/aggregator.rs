//! The streaming aggregator: open windows per (device, tag, spec), watermark
//! domains that close them, and the counters.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::intern::Interner;
use crate::window::{merge_window, Acc, Layout, Pane};
use crate::{AggregatorConfig, Error, LatePolicy, WatermarkMode, Window, WindowSpec};

/// One reading, borrowed: `(ts, device, tag, value)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading<'a> {
    /// Event time, ns since the epoch, UTC.
    pub ts: i64,
    /// Device identifier.
    pub device: &'a str,
    /// Sensor tag.
    pub tag: &'a str,
    /// Value.
    pub value: f64,
}

/// A (device, tag) pair interned by one [`Aggregator`], for
/// [`Aggregator::push_series`]. Only meaningful to the aggregator that made
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesId(u32);

/// What [`Aggregator::push`] did with a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Aggregated at its own timestamp.
    Accepted,
    /// Aggregated at the timestamp `ts` instead of its own (late, under
    /// [`LatePolicy::Adjust`]).
    Adjusted {
        /// The timestamp it was aggregated at, ns since the epoch.
        ts: i64,
    },
    /// Not aggregated, for this reason.
    Dropped(DropReason),
}

/// Why a reading was not aggregated. The names from [`DropReason::as_str`]
/// are the `reason` labels of the dropped-readings counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Older than out-of-order tolerance plus allowed lateness permit, under
    /// [`LatePolicy::Drop`].
    TooLate,
    /// The value is NaN or infinite (it would poison every feature of its
    /// windows).
    NonFinite,
    /// The timestamp is within two window sizes of the ends of the `i64`
    /// nanosecond range (years 1677 and 2262), where window bounds would
    /// overflow.
    OutOfRange,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DropReason; 3] = [
        DropReason::TooLate,
        DropReason::NonFinite,
        DropReason::OutOfRange,
    ];

    /// `too_late`, `non_finite` or `out_of_range`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooLate => "too_late",
            DropReason::NonFinite => "non_finite",
            DropReason::OutOfRange => "out_of_range",
        }
    }
}

/// A window that has closed, with the spec that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    /// The spec (from the config's `windows`) this window belongs to.
    pub spec: WindowSpec,
    /// The window and its features.
    pub window: Window,
}

/// What the aggregator has done since it was created. Monotonic counters,
/// meant for `/metrics` and logs; readings replayed with
/// [`Aggregator::replay`] count only in `replayed`, because the process
/// that first received them counted them.
///
/// `received = accepted + adjusted + too_late + non_finite + out_of_range`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Readings pushed.
    pub received: u64,
    /// Aggregated at their own timestamp.
    pub accepted: u64,
    /// Aggregated at an adjusted timestamp (late, `adjust` policy).
    pub adjusted: u64,
    /// Dropped as too late (`drop` policy).
    pub too_late: u64,
    /// Dropped for a NaN or infinite value.
    pub non_finite: u64,
    /// Dropped for a timestamp outside the representable range.
    pub out_of_range: u64,
    /// Of `accepted`: older than the newest reading already seen on the
    /// same clock (informational; within tolerance by definition).
    pub out_of_order: u64,
    /// Of `accepted`: behind the watermark, accepted only thanks to
    /// `allowed_lateness` (informational).
    pub late_accepted: u64,
    /// Windows emitted.
    pub windows_emitted: u64,
    /// Readings replayed from the log to rebuild state after a restart.
    pub replayed: u64,
}

impl Counters {
    /// Readings dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.too_late + self.non_finite + self.out_of_range
    }

    /// Dropped readings per reason, for a labelled counter.
    pub fn drop_reasons(&self) -> [(DropReason, u64); 3] {
        [
            (DropReason::TooLate, self.too_late),
            (DropReason::NonFinite, self.non_finite),
            (DropReason::OutOfRange, self.out_of_range),
        ]
    }
}

/// The open state of one series in one spec.
#[derive(Debug)]
struct Lane {
    /// Panes with readings, sorted by start; a pane stays until every
    /// window holding it has been emitted.
    panes: VecDeque<Pane>,
    /// Every window starting before this has been emitted (or was empty).
    cursor: i64,
}

impl Lane {
    /// The end of the oldest window not yet emitted that holds a pane.
    #[inline]
    fn next_end(&self, layout: &Layout) -> Option<i64> {
        let front = self.panes.front()?;
        Some(self.cursor.max(layout.first_start(front.start)) + layout.size)
    }
}

/// A set of series sharing one watermark: one device, or the whole fleet.
#[derive(Debug)]
struct Domain {
    /// Newest event time seen (or advanced to) on this clock.
    max_ts: i64,
    /// Smallest end among the domain's open windows (`i64::MAX` if none):
    /// nothing can close before the horizon reaches it, so most readings
    /// skip the closing scan.
    next_close: i64,
    /// The series whose windows this clock closes.
    series: Vec<u32>,
}

/// A window taken out of its deque, waiting to be ordered and emitted.
#[derive(Debug)]
struct Closing {
    end: i64,
    spec: usize,
    series: u32,
    start: i64,
    acc: Acc,
}

/// The streaming window aggregator. See the crate docs for the semantics.
///
/// Deterministic: it reads no clock, so the same sequence of calls gives
/// the same windows in the same order, which is what lets
/// [`Aggregator::replay`] rebuild the state of a crashed process.
#[derive(Debug)]
pub struct Aggregator {
    config: AggregatorConfig,
    layouts: Vec<Layout>,
    out_of_order: i64,
    tolerance: i64,
    interner: Interner,
    /// Per-device mode: device name to domain index.
    device_domain: FxHashMap<Box<str>, u32>,
    domains: Vec<Domain>,
    /// Per series, its domain index.
    series_domain: Vec<u32>,
    /// Open state, `lanes[series * specs + spec]`.
    lanes: Vec<Lane>,
    pane_count: u64,
    closing: Vec<Closing>,
    closed: Vec<ClosedWindow>,
    counters: Counters,
}

impl Aggregator {
    /// An aggregator with no state, after checking the config.
    pub fn new(config: AggregatorConfig) -> Result<Aggregator, Error> {
        config.validate()?;
        Ok(Aggregator {
            layouts: config.windows.iter().map(Layout::new).collect(),
            out_of_order: config.out_of_order.as_nanos(),
            tolerance: config.tolerance_nanos(),
            config,
            interner: Interner::default(),
            device_domain: FxHashMap::default(),
            domains: Vec::new(),
            series_domain: Vec::new(),
            lanes: Vec::new(),
            pane_count: 0,
            closing: Vec::new(),
            closed: Vec::new(),
            counters: Counters::default(),
        })
    }

    /// A fresh aggregator that has replayed `log` (see
    /// [`Aggregator::replay`]): the state a crashed process had after
    /// pushing the same readings, without re-emitting what it emitted.
    pub fn rebuild<'a>(
        config: AggregatorConfig,
        log: impl IntoIterator<Item = Reading<'a>>,
    ) -> Result<Aggregator, Error> {
        let mut agg = Aggregator::new(config)?;
        for r in log {
            agg.replay(r);
        }
        Ok(agg)
    }

    /// The config it runs with.
    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    /// The id of `(device, tag)`, registering the pair on first use. Callers
    /// that already hold interned keys push through
    /// [`Aggregator::push_series`] and skip the per-reading hash lookup.
    pub fn series(&mut self, device: &str, tag: &str) -> SeriesId {
        let (id, new) = self.interner.intern(device, tag);
        if new {
            let domain = match self.config.watermark {
                WatermarkMode::Global => 0,
                WatermarkMode::PerDevice => match self.device_domain.get(device) {
                    Some(&d) => d,
                    None => {
                        let d = self.domains.len() as u32;
                        self.device_domain.insert(device.into(), d);
                        d
                    }
                },
            };
            if domain as usize == self.domains.len() {
                self.domains.push(Domain {
                    max_ts: i64::MIN,
                    next_close: i64::MAX,
                    series: Vec::new(),
                });
            }
            self.domains[domain as usize].series.push(id);
            self.series_domain.push(domain);
            self.lanes.extend((0..self.layouts.len()).map(|_| Lane {
                panes: VecDeque::new(),
                cursor: i64::MIN,
            }));
        }
        SeriesId(id)
    }

    /// Aggregates one reading. Windows it closes (on its device's clock, or
    /// the fleet's in global mode) wait in the buffer that
    /// [`Aggregator::drain_closed`] empties.
    #[inline]
    pub fn push(&mut self, reading: Reading<'_>) -> Disposition {
        let id = self.series(reading.device, reading.tag);
        self.push_series(id, reading.ts, reading.value)
    }

    /// [`Aggregator::push`] for a pair interned with
    /// [`Aggregator::series`].
    pub fn push_series(&mut self, id: SeriesId, ts: i64, value: f64) -> Disposition {
        self.counters.received += 1;
        let d = self.process(id.0, ts, value);
        match d {
            Disposition::Accepted => self.counters.accepted += 1,
            Disposition::Adjusted { .. } => self.counters.adjusted += 1,
            Disposition::Dropped(DropReason::TooLate) => self.counters.too_late += 1,
            Disposition::Dropped(DropReason::NonFinite) => self.counters.non_finite += 1,
            Disposition::Dropped(DropReason::OutOfRange) => self.counters.out_of_range += 1,
        }
        d
    }

    /// Feeds a reading that a previous process already pushed, to rebuild
    /// its state after a restart: the state changes exactly as
    /// [`Aggregator::push`] would change it, but the windows it closes are
    /// discarded (the previous process emitted them) and only
    /// [`Counters::replayed`] counts.
    ///
    /// Replay the log readings whose emitted windows are known to be
    /// durable, in log order, from the first reading the crashed aggregator
    /// saw; then [`Aggregator::push`] the rest, which re-emits whatever the
    /// crashed process may not have delivered. Calls of
    /// [`Aggregator::advance_to`] change state too: if the service makes
    /// them, it must log and replay them as well.
    pub fn replay(&mut self, reading: Reading<'_>) {
        let counters = self.counters;
        let pending = self.closed.len();
        self.push(reading);
        self.closed.truncate(pending);
        self.counters = Counters {
            replayed: counters.replayed + 1,
            ..counters
        };
    }

    /// Closed windows, oldest first, removed from the buffer as the
    /// iterator is consumed (dropping it early still empties the buffer).
    ///
    /// Windows closed by the same call come out ordered by
    /// `(end, spec index, device, tag)`. The buffer grows until drained, so
    /// drain it after every push or batch of pushes.
    pub fn drain_closed(&mut self) -> std::vec::Drain<'_, ClosedWindow> {
        self.closed.drain(..)
    }

    /// Number of closed windows waiting in the buffer.
    pub fn closed_len(&self) -> usize {
        self.closed.len()
    }

    /// Moves every clock that is behind `ts` forward to `ts`, as if each
    /// known device (the fleet, in global mode) had sent a reading at that
    /// event time, and closes what that closes. Lets the caller close the
    /// windows of devices that went quiet, on its own (injected) clock.
    pub fn advance_to(&mut self, ts: i64) {
        for d in 0..self.domains.len() {
            let domain = &mut self.domains[d];
            if ts > domain.max_ts {
                domain.max_ts = ts;
                let horizon = ts.saturating_sub(self.tolerance);
                if horizon >= domain.next_close {
                    self.close_domain(d, horizon);
                }
            }
        }
        self.emit_closing();
    }

    /// Closes every open window, for the end of a finite input (a file
    /// import, a test). Each clock moves past the windows it closed, so a
    /// later reading for one of them counts as late instead of reopening
    /// it: no window is emitted twice.
    ///
    /// A service that stops to restart should not call this: the windows it
    /// would emit are incomplete. It keeps them open and rebuilds them from
    /// the log on start (see [`Aggregator::replay`]).
    pub fn flush_all(&mut self) {
        let specs = self.layouts.len();
        for d in 0..self.domains.len() {
            let mut last_end = i64::MIN;
            for &s in &self.domains[d].series {
                for (k, layout) in self.layouts.iter().enumerate() {
                    if let Some(back) = self.lanes[s as usize * specs + k].panes.back() {
                        last_end = last_end.max(layout.last_start(back.start) + layout.size);
                    }
                }
            }
            if last_end == i64::MIN {
                continue;
            }
            let domain = &mut self.domains[d];
            domain.max_ts = domain.max_ts.max(last_end.saturating_add(self.tolerance));
            self.close_domain(d, i64::MAX);
        }
        self.emit_closing();
    }

    /// What has been counted so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Number of panes held in memory now (a gauge for `/metrics`): one
    /// per open window for tumbling specs, one per `gcd(size, hop)` slice
    /// of time with readings for hopping ones.
    pub fn open_panes(&self) -> u64 {
        self.pane_count
    }

    /// Number of distinct (device, tag) pairs seen.
    pub fn series_count(&self) -> usize {
        self.interner.len()
    }

    /// The watermark that closes `device`'s windows: the newest event time
    /// on its clock minus the out-of-order tolerance. `None` for a device
    /// never seen.
    pub fn watermark(&self, device: &str) -> Option<i64> {
        let d = match self.config.watermark {
            WatermarkMode::PerDevice => *self.device_domain.get(device)? as usize,
            WatermarkMode::Global => 0,
        };
        let max_ts = self.domains.get(d)?.max_ts;
        (max_ts != i64::MIN).then(|| max_ts.saturating_sub(self.out_of_order))
    }

    fn process(&mut self, sid: u32, ts: i64, value: f64) -> Disposition {
        if !value.is_finite() {
            return Disposition::Dropped(DropReason::NonFinite);
        }
        if !self.layouts.iter().all(|l| l.admits(ts)) {
            return Disposition::Dropped(DropReason::OutOfRange);
        }
        let dom = self.series_domain[sid as usize] as usize;
        let max_ts = self.domains[dom].max_ts;
        let horizon = max_ts.saturating_sub(self.tolerance);
        let (ts, disposition) = if ts >= horizon {
            (ts, Disposition::Accepted)
        } else {
            match self.config.late_policy {
                LatePolicy::Drop => return Disposition::Dropped(DropReason::TooLate),
                LatePolicy::Adjust => {
                    if !self.layouts.iter().all(|l| l.admits(horizon)) {
                        return Disposition::Dropped(DropReason::OutOfRange);
                    }
                    (horizon, Disposition::Adjusted { ts: horizon })
                }
            }
        };

        let specs = self.layouts.len();
        let domain = &mut self.domains[dom];
        for (k, layout) in self.layouts.iter().enumerate() {
            let lane = &mut self.lanes[sid as usize * specs + k];
            let start = layout.pane_start(ts);
            // Most readings go to the newest pane: search from the back.
            let panes = &mut lane.panes;
            let mut i = panes.len();
            while i > 0 && panes[i - 1].start > start {
                i -= 1;
            }
            if i > 0 && panes[i - 1].start == start {
                panes[i - 1].acc.add(ts, value);
            } else {
                panes.insert(
                    i,
                    Pane {
                        start,
                        acc: Acc::new(ts, value),
                    },
                );
                self.pane_count += 1;
                // No window holding the new pane has been emitted (its
                // windows end after `ts >= horizon`), so this is the end
                // of its oldest window.
                let end = lane.cursor.max(layout.first_start(start)) + layout.size;
                domain.next_close = domain.next_close.min(end);
            }
        }

        if disposition == Disposition::Accepted && ts < max_ts {
            self.counters.out_of_order += 1;
            if ts < max_ts.saturating_sub(self.out_of_order) {
                self.counters.late_accepted += 1;
            }
        }
        if ts > max_ts {
            domain.max_ts = ts;
            let horizon = ts.saturating_sub(self.tolerance);
            if horizon >= domain.next_close {
                self.close_domain(dom, horizon);
                self.emit_closing();
            }
        }
        disposition
    }

    /// Moves every window of domain `d` with `end <= horizon` to `closing`,
    /// drops the panes no open window needs, and recomputes the domain's
    /// `next_close`.
    fn close_domain(&mut self, d: usize, horizon: i64) {
        let specs = self.layouts.len();
        let Aggregator {
            layouts,
            domains,
            lanes,
            closing,
            pane_count,
            ..
        } = self;
        let domain = &mut domains[d];
        let mut next_close = i64::MAX;
        for &s in &domain.series {
            for (k, layout) in layouts.iter().enumerate() {
                let lane = &mut lanes[s as usize * specs + k];
                while let Some(end) = lane.next_end(layout) {
                    if end > horizon {
                        next_close = next_close.min(end);
                        break;
                    }
                    let start = end - layout.size;
                    // The oldest pane is inside this window: windows are
                    // only visited from the oldest pane's first one on.
                    if let Some(acc) = merge_window(lane.panes.iter(), start, layout.size) {
                        closing.push(Closing {
                            end,
                            spec: k,
                            series: s,
                            start,
                            acc,
                        });
                    }
                    lane.cursor = start + layout.hop;
                    while lane.panes.front().is_some_and(|p| p.start < lane.cursor) {
                        lane.panes.pop_front();
                        *pane_count -= 1;
                    }
                }
            }
        }
        domain.next_close = next_close;
    }

    /// Orders what `close_domain` collected and moves it to the output.
    fn emit_closing(&mut self) {
        if self.closing.is_empty() {
            return;
        }
        let interner = &self.interner;
        self.closing.sort_by(|a, b| {
            (a.end, a.spec)
                .cmp(&(b.end, b.spec))
                .then_with(|| interner.pair(a.series).cmp(&interner.pair(b.series)))
        });
        let n = self.closing.len() as u64;
        for c in self.closing.drain(..) {
            let (device, tag) = interner.pair(c.series);
            self.closed.push(ClosedWindow {
                spec: self.config.windows[c.spec],
                window: c.acc.finish(device, tag, c.start, c.end),
            });
        }
        self.counters.windows_emitted += n;
    }
}

// ---------------------------------------------------------------- snapshots

/// Snapshot format: `FSAGGSN1`, then little-endian fields (see
/// [`Aggregator::snapshot`]), then an FNV-1a 64 checksum of all before it.
const SNAPSHOT_MAGIC: &[u8; 8] = b"FSAGGSN1";

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The settings that shape the state, as a line for error messages and as
/// the bytes a snapshot must match.
fn config_line(c: &AggregatorConfig) -> String {
    let windows: Vec<String> = c.windows.iter().map(|w| w.to_string()).collect();
    format!(
        "windows={} out_of_order={} allowed_lateness={} late_policy={:?} watermark={:?}",
        windows.join(","),
        c.out_of_order,
        c.allowed_lateness,
        c.late_policy,
        c.watermark
    )
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(Error::Snapshot {
                reason: format!("truncated at byte {}", self.pos),
            });
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u64(&mut self) -> Result<u64, Error> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn i64(&mut self) -> Result<i64, Error> {
        Ok(self.u64()? as i64)
    }

    fn len(&mut self, what: &str) -> Result<usize, Error> {
        let n = self.u64()?;
        // Every counted item takes at least one byte: a length beyond the
        // data is damage, not a reason to allocate.
        if n > (self.data.len() - self.pos) as u64 {
            return Err(Error::Snapshot {
                reason: format!("{what} count {n} exceeds the data at byte {}", self.pos),
            });
        }
        Ok(n as usize)
    }

    fn str(&mut self, what: &str) -> Result<&'a str, Error> {
        let n = self.len(what)?;
        let at = self.pos;
        std::str::from_utf8(self.take(n)?).map_err(|_| Error::Snapshot {
            reason: format!("{what} at byte {at} is not UTF-8"),
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Aggregator {
    /// The whole state (open windows, clocks, counters) as bytes, for a
    /// service that checkpoints it beside the position in its ingest log
    /// and, after a restart, [`Aggregator::restore`]s it and pushes the log
    /// from that position on.
    ///
    /// Closed windows not yet taken with [`Aggregator::drain_closed`] are
    /// not part of it: drain (and store) them first.
    ///
    /// Layout, little-endian: the magic `FSAGGSN1`; the config line (length
    /// and UTF-8); the [`Counters`] fields in declaration order; the pairs
    /// (count, then device and tag as length and UTF-8, in id order); the
    /// clocks (count, then `max_ts` and `next_close` each); per pair and
    /// spec, the lane (`cursor`, pane count, then per pane its start and the
    /// ten words of its accumulator); an FNV-1a 64 checksum of everything
    /// before it.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(64 + self.interner.len() * 48 + self.pane_count as usize * 88);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        put_str(&mut out, &config_line(&self.config));
        let c = &self.counters;
        for x in [
            c.received,
            c.accepted,
            c.adjusted,
            c.too_late,
            c.non_finite,
            c.out_of_range,
            c.out_of_order,
            c.late_accepted,
            c.windows_emitted,
            c.replayed,
        ] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&(self.interner.len() as u64).to_le_bytes());
        for id in 0..self.interner.len() as u32 {
            let (device, tag) = self.interner.pair(id);
            put_str(&mut out, device);
            put_str(&mut out, tag);
        }
        out.extend_from_slice(&(self.domains.len() as u64).to_le_bytes());
        for d in &self.domains {
            out.extend_from_slice(&d.max_ts.to_le_bytes());
            out.extend_from_slice(&d.next_close.to_le_bytes());
        }
        for lane in &self.lanes {
            out.extend_from_slice(&lane.cursor.to_le_bytes());
            out.extend_from_slice(&(lane.panes.len() as u64).to_le_bytes());
            for p in &lane.panes {
                out.extend_from_slice(&p.start.to_le_bytes());
                p.acc.encode(&mut out);
            }
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// The aggregator a [`Aggregator::snapshot`] was taken of, continuing
    /// exactly where it stopped (the same later calls give the same
    /// windows). Refused with [`Error::SnapshotConfig`] when `config` shapes
    /// windows differently from the snapshot's, and with
    /// [`Error::Snapshot`] when the bytes are damaged.
    pub fn restore(config: AggregatorConfig, data: &[u8]) -> Result<Aggregator, Error> {
        let mut agg = Aggregator::new(config)?;
        let bad = |reason: String| Error::Snapshot { reason };
        if data.len() < SNAPSHOT_MAGIC.len() + 8 || &data[..8] != SNAPSHOT_MAGIC {
            return Err(bad("not a snapshot (no FSAGGSN1 header)".into()));
        }
        let (body, sum) = data.split_at(data.len() - 8);
        if fnv1a(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
            return Err(bad("checksum mismatch (damaged or cut short)".into()));
        }
        let mut c = Cursor { data: body, pos: 8 };
        let was = c.str("config")?;
        let now = config_line(&agg.config);
        if was != now {
            return Err(Error::SnapshotConfig {
                was: was.to_string(),
                now,
            });
        }
        let mut w = [0u64; 10];
        for x in &mut w {
            *x = c.u64()?;
        }
        let counters = Counters {
            received: w[0],
            accepted: w[1],
            adjusted: w[2],
            too_late: w[3],
            non_finite: w[4],
            out_of_range: w[5],
            out_of_order: w[6],
            late_accepted: w[7],
            windows_emitted: w[8],
            replayed: w[9],
        };
        let pairs = c.len("pair")?;
        for i in 0..pairs {
            let device = c.str("device")?;
            let tag = c.str("tag")?;
            // Interning in id order rebuilds the same ids and clocks.
            if agg.series(device, tag).0 as usize != i {
                return Err(bad(format!("pair {i} ({device}, {tag}) is listed twice")));
            }
        }
        let domains = c.len("clock")?;
        if domains != agg.domains.len() {
            return Err(bad(format!(
                "{domains} clocks for {} after the pairs",
                agg.domains.len()
            )));
        }
        for d in &mut agg.domains {
            d.max_ts = c.i64()?;
            d.next_close = c.i64()?;
        }
        let mut panes = 0u64;
        for lane in &mut agg.lanes {
            lane.cursor = c.i64()?;
            let n = c.len("pane")?;
            let mut last = None;
            for _ in 0..n {
                let start = c.i64()?;
                if last.is_some_and(|l| l >= start) {
                    return Err(bad(format!("panes out of order at byte {}", c.pos)));
                }
                last = Some(start);
                for x in &mut w {
                    *x = c.u64()?;
                }
                lane.panes.push_back(Pane {
                    start,
                    acc: Acc::decode(w),
                });
            }
            panes += n as u64;
        }
        if c.pos != body.len() {
            return Err(bad(format!("{} bytes left over", body.len() - c.pos)));
        }
        agg.pane_count = panes;
        agg.counters = counters;
        Ok(agg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Span;

    const S: i64 = 1_000_000_000;

    fn agg(cfg: AggregatorConfig) -> Aggregator {
        Aggregator::new(cfg).unwrap()
    }

    fn r(ts_s: i64, device: &str, value: f64) -> Reading<'_> {
        Reading {
            ts: ts_s * S,
            device,
            tag: "t",
            value,
        }
    }

    fn closed(a: &mut Aggregator) -> Vec<(String, i64, u64)> {
        a.drain_closed()
            .map(|c| (c.window.device, c.window.start / S, c.window.count))
            .collect()
    }

    #[test]
    fn a_window_closes_when_the_horizon_reaches_its_end_exactly() {
        let mut a = agg(AggregatorConfig {
            out_of_order: Span::from_secs(5),
            allowed_lateness: Span::from_secs(2),
            ..Default::default()
        });
        a.push(r(10, "a", 1.0));
        // horizon = 66 - 7 = 59 < 60: still open
        a.push(r(66, "a", 1.0));
        assert!(closed(&mut a).is_empty());
        // horizon = 67 - 7 = 60 = end: closes
        a.push(r(67, "a", 1.0));
        assert_eq!(closed(&mut a), vec![("a".into(), 0, 1)]);
        assert_eq!(a.watermark("a"), Some(62 * S));
        assert_eq!(a.open_panes(), 1);
    }

    #[test]
    fn the_tolerance_edge_is_accepted_and_one_ns_older_is_late() {
        let mut a = agg(AggregatorConfig {
            out_of_order: Span::from_secs(5),
            allowed_lateness: Span::from_secs(2),
            ..Default::default()
        });
        a.push(r(100, "a", 1.0));
        assert_eq!(a.push(r(93, "a", 1.0)), Disposition::Accepted);
        let older = Reading {
            ts: 93 * S - 1,
            ..r(0, "a", 1.0)
        };
        assert_eq!(a.push(older), Disposition::Dropped(DropReason::TooLate));
        let c = a.counters();
        assert_eq!((c.accepted, c.out_of_order, c.late_accepted), (2, 1, 1));
        assert_eq!(c.too_late, 1);
    }

    #[test]
    fn adjust_moves_a_late_reading_to_the_oldest_accepted_time() {
        let mut a = agg(AggregatorConfig {
            late_policy: LatePolicy::Adjust,
            ..Default::default()
        });
        a.push(r(130, "a", 1.0));
        assert_eq!(
            a.push(r(3, "a", 2.0)),
            Disposition::Adjusted { ts: 125 * S }
        );
        a.flush_all();
        let w: Vec<_> = a.drain_closed().map(|c| c.window).collect();
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].start, w[0].count, w[0].first), (120 * S, 2, 2.0));
    }

    #[test]
    fn bad_values_and_timestamps_are_dropped_and_counted() {
        let mut a = agg(AggregatorConfig::default());
        assert_eq!(
            a.push(r(1, "a", f64::NAN)),
            Disposition::Dropped(DropReason::NonFinite)
        );
        assert_eq!(
            a.push(r(1, "a", f64::NEG_INFINITY)),
            Disposition::Dropped(DropReason::NonFinite)
        );
        for ts in [i64::MIN, i64::MAX, i64::MAX - 60 * S] {
            let reading = Reading {
                ts,
                ..r(0, "a", 1.0)
            };
            assert_eq!(
                a.push(reading),
                Disposition::Dropped(DropReason::OutOfRange)
            );
        }
        let c = a.counters();
        assert_eq!(
            (c.received, c.non_finite, c.out_of_range, c.dropped()),
            (5, 2, 3, 5)
        );
        assert_eq!(a.open_panes(), 0);
    }

    #[test]
    fn flush_all_then_a_reading_for_a_flushed_window_is_late() {
        let mut a = agg(AggregatorConfig::default());
        a.push(r(10, "a", 1.0));
        a.flush_all();
        assert_eq!(closed(&mut a), vec![("a".into(), 0, 1)]);
        assert_eq!(
            a.push(r(20, "a", 1.0)),
            Disposition::Dropped(DropReason::TooLate)
        );
        a.flush_all();
        assert!(closed(&mut a).is_empty());
    }

    #[test]
    fn advance_to_closes_the_windows_of_a_quiet_device() {
        let mut a = agg(AggregatorConfig::default());
        a.push(r(10, "quiet", 1.0));
        a.push(r(10, "busy", 1.0));
        a.push(r(100, "busy", 1.0));
        assert_eq!(closed(&mut a), vec![("busy".into(), 0, 1)]);
        a.advance_to(65 * S);
        assert_eq!(closed(&mut a), vec![("quiet".into(), 0, 1)]);
    }

    #[test]
    fn replay_rebuilds_state_without_reemitting_or_counting() {
        let cfg = AggregatorConfig::default();
        let log = [r(10, "a", 1.0), r(70, "a", 2.0), r(80, "a", 3.0)];
        let mut b = Aggregator::rebuild(cfg, log).unwrap();
        assert_eq!(b.closed_len(), 0);
        let c = b.counters();
        assert_eq!((c.received, c.windows_emitted, c.replayed), (0, 0, 3));
        b.push(r(130, "a", 4.0));
        let w: Vec<_> = b.drain_closed().map(|c| c.window).collect();
        assert_eq!((w.len(), w[0].start, w[0].sum), (1, 60 * S, 5.0));
    }

    #[test]
    fn global_watermark_is_shared_by_devices() {
        let mut a = agg(AggregatorConfig {
            watermark: WatermarkMode::Global,
            ..Default::default()
        });
        assert_eq!(a.watermark("a"), None);
        a.push(r(10, "a", 1.0));
        a.push(r(100, "b", 1.0));
        assert_eq!(closed(&mut a), vec![("a".into(), 0, 1)]);
        assert_eq!(a.watermark("a"), Some(95 * S));
        assert_eq!(
            a.push(r(20, "a", 1.0)),
            Disposition::Dropped(DropReason::TooLate)
        );
    }
}
