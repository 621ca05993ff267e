//! The streaming aggregator: open windows per (device, tag, spec), watermark
//! domains that close them, and the counters.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::intern::Interner;
use crate::window::{merge_window, Acc, Layout, Pane};
use crate::{AggregatorConfig, Error, LatePolicy, WatermarkMode, Window, WindowSpec};

/// One reading, borrowed: `(ts, device, tag, value)` (the one row view of
/// the pipeline's batches, from `fleetscore-core`).
pub use fleetscore_core::Reading;
use fleetscore_core::Readings;

/// A (device, tag) pair interned by one [`Aggregator`], for
/// [`Aggregator::push_series`]. Only meaningful to the aggregator that made
/// it, and only while the series is live: once all of its windows have
/// closed the series is released, and the id is stale (see
/// [`Aggregator::is_live`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesId {
    slot: u32,
    generation: u32,
}

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
    /// It would have started a new series while
    /// [`AggregatorConfig::max_series`] series are live (*shed*).
    SeriesLimit,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DropReason; 4] = [
        DropReason::TooLate,
        DropReason::NonFinite,
        DropReason::OutOfRange,
        DropReason::SeriesLimit,
    ];

    /// `too_late`, `non_finite`, `out_of_range` or `series_limit`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooLate => "too_late",
            DropReason::NonFinite => "non_finite",
            DropReason::OutOfRange => "out_of_range",
            DropReason::SeriesLimit => "series_limit",
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
/// `received = accepted + adjusted + too_late + non_finite + out_of_range +
/// shed`.
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
    /// Not aggregated because they would have started a new series past
    /// [`AggregatorConfig::max_series`] (reason `series_limit`).
    pub shed: u64,
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
    /// Series released: all of their windows had closed, so their memory
    /// was freed (a later reading starts them again).
    pub series_released: u64,
    /// Clocks of devices without live series that were forgotten to keep
    /// their number within `max_series` (see the crate docs, "Releasing
    /// series").
    pub clocks_forgotten: u64,
}

impl Counters {
    /// Readings dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.too_late + self.non_finite + self.out_of_range + self.shed
    }

    /// Dropped readings per reason, for a labelled counter.
    pub fn drop_reasons(&self) -> [(DropReason, u64); 4] {
        [
            (DropReason::TooLate, self.too_late),
            (DropReason::NonFinite, self.non_finite),
            (DropReason::OutOfRange, self.out_of_range),
            (DropReason::SeriesLimit, self.shed),
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
    const EMPTY: Lane = Lane {
        panes: VecDeque::new(),
        cursor: i64::MIN,
    };

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
    /// skip the closing scan. A lower bound: released series may leave it
    /// early, which costs one scan.
    next_close: i64,
    /// The live series whose windows this clock closes; empty for a free
    /// slot.
    series: Vec<u32>,
    /// The caller's arrival time of the newest reading on this clock (see
    /// [`Aggregator::set_arrival_time`]).
    arrived: u64,
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
    /// Per-device mode: device name to domain index, for devices with live
    /// series.
    device_domain: FxHashMap<Box<str>, u32>,
    domains: Vec<Domain>,
    /// Domain slots freed by devices whose last series was released.
    free_domains: Vec<u32>,
    /// Per-device mode: the clocks (`max_ts`) of devices that have no live
    /// series, so that their readings are judged as if they had been kept.
    idle_clocks: FxHashMap<Box<str>, i64>,
    /// The clock a device starts with when it has neither a domain nor an
    /// idle clock: the newest idle clock forgotten (`i64::MIN` until one
    /// is), so that no forgotten device can reopen a window it emitted.
    floor: i64,
    /// Per series slot, its domain index.
    series_domain: Vec<u32>,
    /// Per series slot, its index in its domain's `series`.
    series_pos: Vec<u32>,
    /// Open state, `lanes[series * specs + spec]`.
    lanes: Vec<Lane>,
    pane_count: u64,
    closing: Vec<Closing>,
    /// Series whose last window `close_domain` took; released once the
    /// closing windows have their names.
    releasing: Vec<u32>,
    closed: Vec<ClosedWindow>,
    /// Stamps the domains of the readings pushed (see
    /// [`Aggregator::set_arrival_time`]).
    arrival: u64,
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
            free_domains: Vec::new(),
            idle_clocks: FxHashMap::default(),
            floor: i64::MIN,
            series_domain: Vec::new(),
            series_pos: Vec::new(),
            lanes: Vec::new(),
            pane_count: 0,
            closing: Vec::new(),
            releasing: Vec::new(),
            closed: Vec::new(),
            arrival: 0,
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

    /// The id of `(device, tag)`, registering the pair if it is not live;
    /// `None` when it is not and [`AggregatorConfig::max_series`] series
    /// are live. Callers that already hold interned keys push through
    /// [`Aggregator::push_series`] and skip the per-reading hash lookup,
    /// as long as the series stays live ([`Aggregator::is_live`]).
    pub fn series(&mut self, device: &str, tag: &str) -> Option<SeriesId> {
        let slot = self.lookup(device, tag)?;
        Some(SeriesId {
            slot,
            generation: self.interner.generation(slot),
        })
    }

    /// Whether `id` still names its series: false once the series was
    /// released (all of its windows closed), even if the same pair is live
    /// again under a new id.
    pub fn is_live(&self, id: SeriesId) -> bool {
        self.interner.is_live(id.slot) && self.interner.generation(id.slot) == id.generation
    }

    /// The slot of a live pair, or a new one within the cap.
    #[inline]
    fn lookup(&mut self, device: &str, tag: &str) -> Option<u32> {
        if let Some(id) = self.interner.get(device, tag) {
            return Some(id);
        }
        if self.interner.len() >= self.config.max_series {
            return None;
        }
        Some(self.add_series(device, tag))
    }

    /// Registers a pair that is not live, whatever the cap.
    fn add_series(&mut self, device: &str, tag: &str) -> u32 {
        let id = self.interner.insert(device, tag);
        let domain = match self.config.watermark {
            WatermarkMode::Global => {
                if self.domains.is_empty() {
                    self.domains.push(Domain {
                        max_ts: i64::MIN,
                        next_close: i64::MAX,
                        series: Vec::new(),
                        arrived: self.arrival,
                    });
                }
                0
            }
            WatermarkMode::PerDevice => match self.device_domain.get(device) {
                Some(&d) => d,
                None => {
                    // A device comes back with the clock it had when its
                    // last series was released, or the floor if that was
                    // forgotten.
                    let (name, max_ts) = match self.idle_clocks.remove_entry(device) {
                        Some(entry) => entry,
                        None => (device.into(), self.floor),
                    };
                    let fresh = Domain {
                        max_ts,
                        next_close: i64::MAX,
                        series: Vec::new(),
                        arrived: self.arrival,
                    };
                    let d = match self.free_domains.pop() {
                        Some(d) => {
                            self.domains[d as usize] = fresh;
                            d
                        }
                        None => {
                            self.domains.push(fresh);
                            (self.domains.len() - 1) as u32
                        }
                    };
                    self.device_domain.insert(name, d);
                    d
                }
            },
        };
        let series = &mut self.domains[domain as usize].series;
        let pos = series.len() as u32;
        series.push(id);
        if id as usize == self.series_domain.len() {
            self.series_domain.push(domain);
            self.series_pos.push(pos);
            self.lanes
                .extend((0..self.layouts.len()).map(|_| Lane::EMPTY));
        } else {
            // A released slot: its lanes were reset on release.
            self.series_domain[id as usize] = domain;
            self.series_pos[id as usize] = pos;
        }
        id
    }

    /// Aggregates one reading. Windows it closes (on its device's clock, or
    /// the fleet's in global mode) wait in the buffer that
    /// [`Aggregator::drain_closed`] empties.
    #[inline]
    pub fn push(&mut self, reading: Reading<'_>) -> Disposition {
        // Readings no window can take never register their pair.
        if let Some(reason) = self.invalid(reading.ts, reading.value) {
            return self.count(Disposition::Dropped(reason));
        }
        match self.lookup(reading.device, reading.tag) {
            Some(id) => self.push_slot(id, reading.ts, reading.value),
            None => self.count(Disposition::Dropped(DropReason::SeriesLimit)),
        }
    }

    /// Aggregates a whole batch, row by row in order, exactly as
    /// [`Aggregator::push`] of each row would, but resolving each of the
    /// batch's (device, tag) pairs to its series once instead of hashing
    /// the names of every reading (a pair is looked up again only if its
    /// series was released within the batch).
    pub fn push_batch(&mut self, readings: &Readings) {
        let mut cache: Vec<Option<SeriesId>> = vec![None; readings.key_count()];
        let rows = readings
            .ts()
            .iter()
            .zip(readings.key_ids())
            .zip(readings.values());
        for ((&ts, &k), &value) in rows {
            if let Some(reason) = self.invalid(ts, value) {
                self.count(Disposition::Dropped(reason));
                continue;
            }
            let slot = match cache[k as usize] {
                Some(id) if self.is_live(id) => id.slot,
                _ => {
                    let (device, tag) = readings.key(k);
                    let Some(slot) = self.lookup(device, tag) else {
                        self.count(Disposition::Dropped(DropReason::SeriesLimit));
                        continue;
                    };
                    cache[k as usize] = Some(SeriesId {
                        slot,
                        generation: self.interner.generation(slot),
                    });
                    slot
                }
            };
            self.push_slot(slot, ts, value);
        }
    }

    /// [`Aggregator::replay`] of a whole batch, resolving pairs as
    /// [`Aggregator::push_batch`] does.
    pub fn replay_batch(&mut self, readings: &Readings) {
        let counters = self.counters;
        let pending = self.closed.len();
        self.push_batch(readings);
        self.closed.truncate(pending);
        self.counters = Counters {
            replayed: counters.replayed + readings.len() as u64,
            series_released: self.counters.series_released,
            clocks_forgotten: self.counters.clocks_forgotten,
            ..counters
        };
    }

    /// [`Aggregator::push`] for a pair interned with
    /// [`Aggregator::series`].
    ///
    /// # Panics
    /// If `id` is stale (its series was released since; see
    /// [`Aggregator::is_live`]): look the pair up again.
    pub fn push_series(&mut self, id: SeriesId, ts: i64, value: f64) -> Disposition {
        assert!(
            self.is_live(id),
            "push_series with a released SeriesId; look the pair up again with Aggregator::series"
        );
        self.push_slot(id.slot, ts, value)
    }

    fn push_slot(&mut self, id: u32, ts: i64, value: f64) -> Disposition {
        let d = self.process(id, ts, value);
        if matches!(d, Disposition::Dropped(_)) && self.is_empty(id) {
            // A new series whose first reading was refused: nothing to keep.
            self.release_series(id);
        }
        self.count(d)
    }

    fn count(&mut self, d: Disposition) -> Disposition {
        let c = &mut self.counters;
        c.received += 1;
        match d {
            Disposition::Accepted => c.accepted += 1,
            Disposition::Adjusted { .. } => c.adjusted += 1,
            Disposition::Dropped(DropReason::TooLate) => c.too_late += 1,
            Disposition::Dropped(DropReason::NonFinite) => c.non_finite += 1,
            Disposition::Dropped(DropReason::OutOfRange) => c.out_of_range += 1,
            Disposition::Dropped(DropReason::SeriesLimit) => c.shed += 1,
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
    /// [`Aggregator::advance_to`] and [`Aggregator::close_quiet`] change
    /// state too: if the service makes them, it must log and replay them as
    /// well, or make them only where it checkpoints.
    pub fn replay(&mut self, reading: Reading<'_>) {
        let counters = self.counters;
        let pending = self.closed.len();
        self.push(reading);
        self.closed.truncate(pending);
        self.counters = Counters {
            replayed: counters.replayed + 1,
            series_released: self.counters.series_released,
            clocks_forgotten: self.counters.clocks_forgotten,
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
        for max_ts in self.idle_clocks.values_mut() {
            *max_ts = (*max_ts).max(ts);
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
        for d in 0..self.domains.len() {
            self.flush_domain(d);
        }
        self.emit_closing();
    }

    /// Sets the arrival time that stamps the clock (device, or fleet) of
    /// every reading pushed from now on, in any unit the caller likes
    /// (seconds of processing time since the aggregator was made or
    /// restored, say), for [`Aggregator::close_quiet`]. Arrival times are
    /// not part of a snapshot: a restored aggregator stamps every clock 0.
    pub fn set_arrival_time(&mut self, now: u64) {
        self.arrival = now;
    }

    /// Does [`Aggregator::flush_all`] for each clock with no reading
    /// arrived since `before` (see [`Aggregator::set_arrival_time`]): a
    /// device that stopped sending has its open windows emitted as if its
    /// input had ended, and its series released, instead of keeping them
    /// until it sends again. Its clock moves past those windows, so a
    /// reading for one of them that arrives later counts as late.
    ///
    /// Its effect depends on the caller's clock, so a service must make
    /// this call only where it checkpoints (its effect is then in the
    /// snapshot, and a replay of the log after the snapshot does not need
    /// it), or log it.
    pub fn close_quiet(&mut self, before: u64) {
        for d in 0..self.domains.len() {
            if self.domains[d].arrived < before {
                self.flush_domain(d);
            }
        }
        self.emit_closing();
    }

    /// Moves the clock of domain `d` past its open windows and takes them
    /// all.
    fn flush_domain(&mut self, d: usize) {
        let specs = self.layouts.len();
        let mut last_end = i64::MIN;
        for &s in &self.domains[d].series {
            for (k, layout) in self.layouts.iter().enumerate() {
                if let Some(back) = self.lanes[s as usize * specs + k].panes.back() {
                    last_end = last_end.max(layout.last_start(back.start) + layout.size);
                }
            }
        }
        if last_end == i64::MIN {
            return;
        }
        let domain = &mut self.domains[d];
        domain.max_ts = domain.max_ts.max(last_end.saturating_add(self.tolerance));
        self.close_domain(d, i64::MAX);
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

    /// Number of live (device, tag) series: those with open windows (a
    /// gauge for `/metrics`; at most [`AggregatorConfig::max_series`],
    /// unless a snapshot restored more).
    pub fn series_count(&self) -> usize {
        self.interner.len()
    }

    /// Number of devices whose clock is kept without live series (always
    /// 0 with a global watermark).
    pub fn idle_clocks(&self) -> usize {
        self.idle_clocks.len()
    }

    /// The watermark that closes `device`'s windows: the newest event time
    /// on its clock minus the out-of-order tolerance. `None` for a device
    /// never seen (or whose idle clock was forgotten).
    pub fn watermark(&self, device: &str) -> Option<i64> {
        let max_ts = match self.config.watermark {
            WatermarkMode::PerDevice => match self.device_domain.get(device) {
                Some(&d) => self.domains[d as usize].max_ts,
                None => *self.idle_clocks.get(device)?,
            },
            WatermarkMode::Global => self.domains.first()?.max_ts,
        };
        (max_ts != i64::MIN).then(|| max_ts.saturating_sub(self.out_of_order))
    }

    /// Why no window can take this reading, if none can.
    #[inline]
    fn invalid(&self, ts: i64, value: f64) -> Option<DropReason> {
        if !value.is_finite() {
            return Some(DropReason::NonFinite);
        }
        if !self.layouts.iter().all(|l| l.admits(ts)) {
            return Some(DropReason::OutOfRange);
        }
        None
    }

    /// Whether series `s` has no open window in any spec.
    #[inline]
    fn is_empty(&self, s: u32) -> bool {
        let specs = self.layouts.len();
        self.lanes[s as usize * specs..(s as usize + 1) * specs]
            .iter()
            .all(|l| l.panes.is_empty())
    }

    /// Frees series `s`, which has no open window: its lanes, its names,
    /// its place in its domain; a device's last series leaves the device's
    /// clock in `idle_clocks`.
    ///
    /// A released series that gets a reading again starts with fresh lanes
    /// and behaves as if it had been kept: every accepted reading lies
    /// after all the windows it emitted (`ts >= horizon >= their ends`), so
    /// its old lanes' cursors could not have mattered.
    fn release_series(&mut self, s: u32) {
        let specs = self.layouts.len();
        for lane in &mut self.lanes[s as usize * specs..(s as usize + 1) * specs] {
            // A new empty deque: the old one's buffer goes back to the
            // allocator.
            *lane = Lane::EMPTY;
        }
        let d = self.series_domain[s as usize] as usize;
        let pos = self.series_pos[s as usize] as usize;
        let domain = &mut self.domains[d];
        domain.series.swap_remove(pos);
        if let Some(&moved) = domain.series.get(pos) {
            self.series_pos[moved as usize] = pos as u32;
        }
        if domain.series.is_empty() && self.config.watermark == WatermarkMode::PerDevice {
            let max_ts = domain.max_ts;
            *domain = Domain {
                max_ts: i64::MIN,
                next_close: i64::MAX,
                series: Vec::new(),
                arrived: 0,
            };
            self.free_domains.push(d as u32);
            let (device, _) = self.interner.pair(s);
            let (name, _) = self
                .device_domain
                .remove_entry(device)
                .expect("a live series' device has a domain");
            // A clock at the floor says nothing a forgotten one would not.
            if max_ts > self.floor {
                self.idle_clocks.insert(name, max_ts);
                self.bound_idle_clocks();
            }
        }
        self.interner.release(s);
        self.counters.series_released += 1;
    }

    /// Keeps at most `max_series` idle clocks: past that, the older half is
    /// forgotten and the floor rises to the newest of them. Amortized O(1)
    /// per release.
    ///
    /// A forgotten device, and any device never seen, then starts at the
    /// floor: its readings older than `floor - tolerance` count as late.
    /// That is exact for the forgotten devices' own emitted windows (all
    /// ended at or before their clock minus the tolerance, so at or before
    /// the floor's horizon: none can be reopened or emitted twice), and
    /// stricter than kept clocks would be in two cases: a forgotten device
    /// whose clock was below the floor, and a brand-new device, whose
    /// readings older than the floor's horizon are late instead of
    /// accepted.
    fn bound_idle_clocks(&mut self) {
        if self.idle_clocks.len() <= self.config.max_series {
            return;
        }
        let mut clocks: Vec<i64> = self.idle_clocks.values().copied().collect();
        let mid = clocks.len() / 2;
        let (_, &mut newest_forgotten, _) = clocks.select_nth_unstable(mid);
        let before = self.idle_clocks.len();
        self.idle_clocks.retain(|_, m| *m > newest_forgotten);
        self.idle_clocks.shrink_to_fit();
        self.floor = self.floor.max(newest_forgotten);
        self.counters.clocks_forgotten += (before - self.idle_clocks.len()) as u64;
    }

    /// Releases the series `close_domain` emptied, once their closing
    /// windows have taken their names.
    fn release_pending(&mut self) {
        let mut releasing = std::mem::take(&mut self.releasing);
        for s in releasing.drain(..) {
            // Listed once per close: a series that closed twice in one call
            // (several domains never share one) is released once.
            if self.interner.is_live(s) && self.is_empty(s) {
                self.release_series(s);
            }
        }
        self.releasing = releasing;
        // Tables shrink only when a quarter of them is in use, so that the
        // rehash is amortized over the releases that emptied them.
        let live = self.interner.len();
        if self.closing.capacity() > 4 * self.closing.len().max(1024) {
            self.closing.shrink_to(1024);
        }
        self.interner.shrink(live);
        if self.device_domain.capacity() > 4 * self.device_domain.len().max(1024) {
            self.device_domain.shrink_to_fit();
        }
    }

    fn process(&mut self, sid: u32, ts: i64, value: f64) -> Disposition {
        if let Some(reason) = self.invalid(ts, value) {
            return Disposition::Dropped(reason);
        }
        let dom = self.series_domain[sid as usize] as usize;
        self.domains[dom].arrived = self.arrival;
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
                if panes.capacity() == 0 {
                    // Most series hold one pane at a time; a deque's first
                    // growth would make room for four (352 bytes).
                    panes.reserve_exact(1);
                }
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
            releasing,
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
            let lanes = &lanes[s as usize * specs..(s as usize + 1) * specs];
            if lanes.iter().all(|l| l.panes.is_empty()) {
                releasing.push(s);
            }
        }
        domain.next_close = next_close;
    }

    /// Orders what `close_domain` collected and moves it to the output.
    fn emit_closing(&mut self) {
        if self.closing.is_empty() {
            self.release_pending();
            return;
        }
        let interner = &self.interner;
        self.closing.sort_by(|a, b| {
            (a.end, a.spec)
                .cmp(&(b.end, b.spec))
                .then_with(|| interner.pair(a.series).cmp(&interner.pair(b.series)))
        });
        let n = self.closing.len() as u64;
        if self.closed.is_empty() && self.closed.capacity() > 4 * (n as usize).max(1024) {
            // The caller drained the last batch: give a peak's buffer back.
            self.closed.shrink_to(n as usize);
        }
        for c in self.closing.drain(..) {
            let (device, tag) = interner.pair(c.series);
            self.closed.push(ClosedWindow {
                spec: self.config.windows[c.spec],
                window: c.acc.finish(device, tag, c.start, c.end),
            });
        }
        self.counters.windows_emitted += n;
        self.release_pending();
    }
}

// ---------------------------------------------------------------- snapshots

/// Snapshot format: `FSAGGSN2`, then little-endian fields (see
/// [`Aggregator::snapshot`]), then an FNV-1a 64 checksum of all before it.
const SNAPSHOT_MAGIC: &[u8; 8] = b"FSAGGSN2";

/// The first format, which listed every pair ever seen; still restored.
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"FSAGGSN1";

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
    /// from that position on. Only live series are in it, so its size
    /// follows the open windows, not every pair ever seen.
    ///
    /// Closed windows not yet taken with [`Aggregator::drain_closed`] are
    /// not part of it: drain (and store) them first.
    ///
    /// Layout, little-endian: the magic `FSAGGSN2`; the config line (length
    /// and UTF-8); the [`Counters`] fields in declaration order; the floor
    /// (`i64`); the live pairs (count, then device and tag as length and
    /// UTF-8, in id order); their clocks (count, then `max_ts` and
    /// `next_close` each, in order of first use by those pairs); per pair
    /// and spec, the lane (`cursor`, pane count, then per pane its start and
    /// the ten words of its accumulator); the idle clocks (count, then
    /// device and `max_ts` each, by device); an FNV-1a 64 checksum of
    /// everything before it. Snapshots of the first format (`FSAGGSN1`,
    /// which kept every pair ever seen) are still read.
    pub fn snapshot(&self) -> Vec<u8> {
        let live = self.interner.len();
        let mut out = Vec::with_capacity(
            96 + live * 48 + self.pane_count as usize * 88 + self.idle_clocks.len() * 32,
        );
        out.extend_from_slice(SNAPSHOT_MAGIC);
        put_str(&mut out, &config_line(&self.config));
        for x in counter_words(&self.counters) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&self.floor.to_le_bytes());
        let slots: Vec<u32> = (0..self.interner.slots() as u32)
            .filter(|&s| self.interner.is_live(s))
            .collect();
        out.extend_from_slice(&(slots.len() as u64).to_le_bytes());
        // Restoring interns the pairs in this order, which creates their
        // clocks in order of first use: list the clocks in that order.
        let mut first_use = vec![false; self.domains.len()];
        let mut clocks = Vec::new();
        for &s in &slots {
            let (device, tag) = self.interner.pair(s);
            put_str(&mut out, device);
            put_str(&mut out, tag);
            let d = self.series_domain[s as usize] as usize;
            if !first_use[d] {
                first_use[d] = true;
                clocks.push(d);
            }
        }
        out.extend_from_slice(&(clocks.len() as u64).to_le_bytes());
        for d in clocks {
            out.extend_from_slice(&self.domains[d].max_ts.to_le_bytes());
            out.extend_from_slice(&self.domains[d].next_close.to_le_bytes());
        }
        let specs = self.layouts.len();
        for &s in &slots {
            for lane in &self.lanes[s as usize * specs..(s as usize + 1) * specs] {
                out.extend_from_slice(&lane.cursor.to_le_bytes());
                out.extend_from_slice(&(lane.panes.len() as u64).to_le_bytes());
                for p in &lane.panes {
                    out.extend_from_slice(&p.start.to_le_bytes());
                    p.acc.encode(&mut out);
                }
            }
        }
        let mut idle: Vec<(&str, i64)> = self
            .idle_clocks
            .iter()
            .map(|(name, &max_ts)| (&**name, max_ts))
            .collect();
        idle.sort_unstable();
        out.extend_from_slice(&(idle.len() as u64).to_le_bytes());
        for (name, max_ts) in idle {
            put_str(&mut out, name);
            out.extend_from_slice(&max_ts.to_le_bytes());
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// The aggregator a [`Aggregator::snapshot`] was taken of, continuing
    /// exactly where it stopped (the same later calls give the same
    /// windows). Refused with [`Error::SnapshotConfig`] when `config` shapes
    /// windows differently from the snapshot's, and with
    /// [`Error::Snapshot`] when the bytes are damaged. A snapshot may hold
    /// more live series than `config.max_series`: they are all restored,
    /// and new series are shed until fewer are live.
    pub fn restore(config: AggregatorConfig, data: &[u8]) -> Result<Aggregator, Error> {
        let mut agg = Aggregator::new(config)?;
        let bad = |reason: String| Error::Snapshot { reason };
        let v1 = data.len() >= 8 && &data[..8] == SNAPSHOT_MAGIC_V1;
        if data.len() < SNAPSHOT_MAGIC.len() + 8 || !(v1 || &data[..8] == SNAPSHOT_MAGIC) {
            return Err(bad("not a snapshot (no FSAGGSN2 or FSAGGSN1 header)".into()));
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
        // Version 1 wrote ten counters: the current layout without `shed`
        // (word 6) and the last two.
        let mut words = [0u64; COUNTER_WORDS];
        let slots: &[usize] = if v1 {
            &[0, 1, 2, 3, 4, 5, 7, 8, 9, 10]
        } else {
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        };
        for &i in slots {
            words[i] = c.u64()?;
        }
        let counters = counters_from_words(words);
        if !v1 {
            agg.floor = c.i64()?;
        }
        let pairs = c.len("pair")?;
        for i in 0..pairs {
            let device = c.str("device")?;
            let tag = c.str("tag")?;
            // Interning in order rebuilds the ids 0, 1, 2… and the clocks in
            // order of first use.
            if agg.interner.get(device, tag).is_some() {
                return Err(bad(format!("pair {i} ({device}, {tag}) is listed twice")));
            }
            agg.add_series(device, tag);
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
                let mut w = [0u64; 10];
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
        if !v1 {
            let idle = c.len("idle clock")?;
            for _ in 0..idle {
                let name = c.str("device")?;
                let max_ts = c.i64()?;
                if agg.device_domain.contains_key(name)
                    || agg.idle_clocks.insert(name.into(), max_ts).is_some()
                {
                    return Err(bad(format!("the clock of device {name} is listed twice")));
                }
            }
        }
        if c.pos != body.len() {
            return Err(bad(format!("{} bytes left over", body.len() - c.pos)));
        }
        agg.pane_count = panes;
        agg.counters = counters;
        if v1 {
            // The first format kept every pair ever seen: release those with
            // nothing open, as this version would have.
            agg.releasing = (0..pairs as u32).collect();
            agg.release_pending();
            agg.counters.series_released = 0;
        }
        Ok(agg)
    }
}

/// Number of [`Counters`] fields.
const COUNTER_WORDS: usize = 13;

/// The counters in declaration order.
fn counter_words(c: &Counters) -> [u64; COUNTER_WORDS] {
    [
        c.received,
        c.accepted,
        c.adjusted,
        c.too_late,
        c.non_finite,
        c.out_of_range,
        c.shed,
        c.out_of_order,
        c.late_accepted,
        c.windows_emitted,
        c.replayed,
        c.series_released,
        c.clocks_forgotten,
    ]
}

/// The inverse of [`counter_words`].
fn counters_from_words(w: [u64; COUNTER_WORDS]) -> Counters {
    Counters {
        received: w[0],
        accepted: w[1],
        adjusted: w[2],
        too_late: w[3],
        non_finite: w[4],
        out_of_range: w[5],
        shed: w[6],
        out_of_order: w[7],
        late_accepted: w[8],
        windows_emitted: w[9],
        replayed: w[10],
        series_released: w[11],
        clocks_forgotten: w[12],
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

    /// `push_batch` is `push` of every row: the same windows, in the same
    /// order, and the same counters, through late readings, NaNs, series
    /// released mid-batch and the series cap shedding new pairs.
    #[test]
    fn push_batch_equals_pushing_each_row() {
        let cfg = AggregatorConfig {
            max_series: 7,
            ..AggregatorConfig::default()
        };
        let mut seed = 42u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        let devices: Vec<String> = (0..6).map(|d| format!("d{d}")).collect();
        let mut batches: Vec<Readings> = Vec::new();
        for b in 0..40i64 {
            let rows: Vec<(i64, String, String, f64)> = (0..50)
                .map(|_| {
                    let d = &devices[next() as usize % devices.len()];
                    let tag = ["t", "u"][next() as usize % 2];
                    // Mostly forward in time, some late, some NaN.
                    let ts = (b * 40 + (next() % 60) as i64 - 10) * S;
                    let v = if next() % 97 == 0 {
                        f64::NAN
                    } else {
                        (next() % 1000) as f64
                    };
                    (ts, d.clone(), tag.to_string(), v)
                })
                .collect();
            batches.push(rows.into_iter().collect());
        }
        let (mut one, mut whole) = (agg(cfg.clone()), agg(cfg.clone()));
        let (mut by_row, mut by_batch) = (Vec::new(), Vec::new());
        for b in &batches {
            for r in b.iter() {
                one.push(r);
            }
            whole.push_batch(b);
            by_row.extend(one.drain_closed().map(|c| format!("{c:?}")));
            by_batch.extend(whole.drain_closed().map(|c| format!("{c:?}")));
        }
        assert!(!by_row.is_empty());
        assert_eq!(by_row, by_batch);
        assert_eq!(one.counters(), whole.counters());
        assert!(one.counters().shed > 0, "the cap was reached");
        assert!(one.counters().series_released > 0, "series were released");
        // Replaying batches equals replaying rows.
        let (mut one, mut whole) = (agg(cfg.clone()), agg(cfg));
        for b in &batches {
            for r in b.iter() {
                one.replay(r);
            }
            whole.replay_batch(b);
        }
        assert_eq!(one.counters(), whole.counters());
        assert_eq!(one.snapshot(), whole.snapshot());
    }
}
