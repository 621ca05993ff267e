//! One window's features, and the accumulator that both the streaming and
//! the batch path fold readings into.
//!
//! Sharing [`Acc`] is what makes the two paths agree bit for bit: the same
//! readings folded in the same order give the same floating-point results.

use crate::WindowSpec;

/// The features of one `(device, tag, window)`: the columns `device, tag,
/// start, end, count, sum, mean, min, max, std, first, last`.
///
/// Only windows with at least one reading exist, so `count >= 1` and every
/// feature is a finite number except `std`, which needs two readings.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Device identifier.
    pub device: String,
    /// Sensor tag.
    pub tag: String,
    /// Inclusive start, ns since the epoch, UTC; a multiple of the hop.
    pub start: i64,
    /// Exclusive end, `start + size`.
    pub end: i64,
    /// Number of readings.
    pub count: u64,
    /// Sum of the values (per pane in arrival order, panes in time order;
    /// see the crate docs).
    pub sum: f64,
    /// Mean of the values (Welford's running mean, panes merged pairwise).
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sample standard deviation (divisor `count - 1`; Welford, then Chan's
    /// pairwise merge across panes);
    /// `None` when `count == 1` (pandas shows NaN there, SQL's `stddev_samp`
    /// NULL; the Arrow column holds a null).
    pub std: Option<f64>,
    /// Value of the reading with the smallest timestamp; among readings
    /// with that same timestamp, the one that arrived first.
    pub first: f64,
    /// Value of the reading with the largest timestamp; among readings with
    /// that same timestamp, the one that arrived last.
    pub last: f64,
}

/// Running features of one open window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acc {
    count: u64,
    sum: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    first_ts: i64,
    first: f64,
    last_ts: i64,
    last: f64,
}

impl Acc {
    /// A window holding one reading.
    #[inline]
    pub(crate) fn new(ts: i64, value: f64) -> Acc {
        Acc {
            count: 1,
            sum: value,
            mean: value,
            m2: 0.0,
            min: value,
            max: value,
            first_ts: ts,
            first: value,
            last_ts: ts,
            last: value,
        }
    }

    /// Folds in one more reading (Welford's update for mean and `m2`).
    #[inline]
    pub(crate) fn add(&mut self, ts: i64, value: f64) {
        self.count += 1;
        self.sum += value;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
        // Strict for first, non-strict for last: ties go to the earlier
        // arrival for `first` and to the later arrival for `last`, as a
        // stable sort by timestamp would put them.
        if ts < self.first_ts {
            self.first_ts = ts;
            self.first = value;
        }
        if ts >= self.last_ts {
            self.last_ts = ts;
            self.last = value;
        }
    }

    /// Folds in a later pane (every reading of `other` is newer than every
    /// reading of `self`): Chan, Golub and LeVeque's pairwise update for
    /// mean and `m2`.
    #[inline]
    pub(crate) fn merge(&mut self, other: &Acc) {
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.count += other.count;
        self.sum += other.sum;
        self.mean += delta * (nb / n);
        self.m2 += other.m2 + delta * delta * (na * nb / n);
        if other.min < self.min {
            self.min = other.min;
        }
        if other.max > self.max {
            self.max = other.max;
        }
        if other.first_ts < self.first_ts {
            self.first_ts = other.first_ts;
            self.first = other.first;
        }
        if other.last_ts >= self.last_ts {
            self.last_ts = other.last_ts;
            self.last = other.last;
        }
    }

    /// The state as ten 8-byte little-endian words, for snapshots.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.count.to_le_bytes());
        for x in [self.sum, self.mean, self.m2, self.min, self.max] {
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        out.extend_from_slice(&self.first_ts.to_le_bytes());
        out.extend_from_slice(&self.first.to_bits().to_le_bytes());
        out.extend_from_slice(&self.last_ts.to_le_bytes());
        out.extend_from_slice(&self.last.to_bits().to_le_bytes());
    }

    /// The inverse of [`Acc::encode`].
    pub(crate) fn decode(w: [u64; 10]) -> Acc {
        let f = f64::from_bits;
        Acc {
            count: w[0],
            sum: f(w[1]),
            mean: f(w[2]),
            m2: f(w[3]),
            min: f(w[4]),
            max: f(w[5]),
            first_ts: w[6] as i64,
            first: f(w[7]),
            last_ts: w[8] as i64,
            last: f(w[9]),
        }
    }

    /// The finished window.
    pub(crate) fn finish(&self, device: &str, tag: &str, start: i64, end: i64) -> Window {
        Window {
            device: device.to_string(),
            tag: tag.to_string(),
            start,
            end,
            count: self.count,
            sum: self.sum,
            mean: self.mean,
            min: self.min,
            max: self.max,
            std: (self.count > 1).then(|| (self.m2 / (self.count - 1) as f64).sqrt()),
            first: self.first,
            last: self.last,
        }
    }
}

/// A spec reduced to the numbers the hot loops need.
///
/// Readings are folded into *panes* of `gcd(size, hop)` ns (for tumbling
/// windows a pane is the window), so a reading updates one accumulator per
/// spec however many hopping windows hold it; a window is its panes merged
/// in time order when it closes. Window bounds are multiples of the pane,
/// so a window holds whole panes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) size: i64,
    pub(crate) hop: i64,
    pub(crate) pane: i64,
    /// Timestamps in `[lo, hi]` have every window start and end they touch
    /// representable as `i64` (see [`Layout::admits`]).
    lo: i64,
    hi: i64,
}

impl Layout {
    /// Expects a validated spec.
    pub(crate) fn new(spec: &WindowSpec) -> Layout {
        let size = spec.size.as_nanos();
        let hop = spec.hop_nanos();
        let margin = size.saturating_mul(2);
        Layout {
            size,
            hop,
            pane: gcd(size, hop),
            lo: i64::MIN.saturating_add(margin),
            hi: i64::MAX.saturating_sub(margin),
        }
    }

    /// Whether the windows of `ts` can be computed without overflow: `ts`
    /// must lie two window sizes inside the `i64` range (years 1677 to
    /// 2262), which loses nothing real.
    #[inline]
    pub(crate) fn admits(&self, ts: i64) -> bool {
        ts >= self.lo && ts <= self.hi
    }

    /// The start of the pane holding `ts`.
    #[inline]
    pub(crate) fn pane_start(&self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.pane)
    }

    /// The start of the newest window holding `ts`.
    #[inline]
    pub(crate) fn last_start(&self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.hop)
    }

    /// The start of the oldest window holding `ts`: the smallest multiple
    /// of the hop above `ts - size`.
    #[inline]
    pub(crate) fn first_start(&self, ts: i64) -> i64 {
        let x = ts - self.size;
        x - x.rem_euclid(self.hop) + self.hop
    }
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One pane: its start and the readings folded into it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pane {
    pub(crate) start: i64,
    pub(crate) acc: Acc,
}

/// The window `[start, start + size)` from `panes` (sorted by start, the
/// first of them inside the window): the first pane, then each later one
/// merged in, in time order. Streaming and batch both build windows here.
#[inline]
pub(crate) fn merge_window<'a>(
    mut panes: impl Iterator<Item = &'a Pane>,
    start: i64,
    size: i64,
) -> Option<Acc> {
    let mut acc = panes.next()?.acc;
    for p in panes.take_while(|p| p.start - start < size) {
        acc.merge(&p.acc);
    }
    Some(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Span;

    fn starts(spec: WindowSpec, ts: i64) -> Vec<i64> {
        let l = Layout::new(&spec);
        let mut out = vec![];
        let mut s = l.last_start(ts);
        while s >= l.first_start(ts) {
            out.push(s);
            s -= l.hop;
        }
        out
    }

    #[test]
    fn a_boundary_timestamp_opens_its_own_window() {
        let m = WindowSpec::tumbling(Span::from_nanos(60).unwrap());
        assert_eq!(starts(m, 60), vec![60]);
        assert_eq!(starts(m, 59), vec![0]);
        assert_eq!(starts(m, 0), vec![0]);
        assert_eq!(starts(m, -1), vec![-60]);
        assert_eq!(starts(m, -60), vec![-60]);
    }

    #[test]
    fn hopping_windows_hold_each_reading_size_over_hop_times() {
        let n = |x| Span::from_nanos(x).unwrap();
        assert_eq!(
            starts(WindowSpec::hopping(n(60), n(20)), 60),
            vec![60, 40, 20]
        );
        assert_eq!(
            starts(WindowSpec::hopping(n(60), n(20)), 79),
            vec![60, 40, 20]
        );
        // size not a multiple of hop: 2 or 3 windows depending on the phase
        assert_eq!(
            starts(WindowSpec::hopping(n(50), n(20)), 60),
            vec![60, 40, 20]
        );
        assert_eq!(starts(WindowSpec::hopping(n(50), n(20)), 71), vec![60, 40]);
        assert_eq!(
            starts(WindowSpec::hopping(n(50), n(20)), -1),
            vec![-20, -40]
        );
        let l = Layout::new(&WindowSpec::hopping(n(50), n(20)));
        assert_eq!((l.pane, l.pane_start(71), l.pane_start(-1)), (10, 70, -10));
    }

    #[test]
    fn merging_panes_matches_folding_within_rounding() {
        let values = [3.5, -1.0, 7.25, 7.25, 0.5, 12.0, -4.0];
        let mut whole = Acc::new(0, values[0]);
        for (i, &v) in values.iter().enumerate().skip(1) {
            whole.add(i as i64, v);
        }
        let mut a = Acc::new(0, values[0]);
        for (i, &v) in values.iter().enumerate().take(3).skip(1) {
            a.add(i as i64, v);
        }
        let mut b = Acc::new(3, values[3]);
        for (i, &v) in values.iter().enumerate().skip(4) {
            b.add(i as i64, v);
        }
        a.merge(&b);
        let (w, m) = (whole.finish("d", "t", 0, 9), a.finish("d", "t", 0, 9));
        assert_eq!(
            (w.count, w.min, w.max, w.first, w.last),
            (m.count, m.min, m.max, m.first, m.last)
        );
        assert!((w.mean - m.mean).abs() < 1e-12);
        assert!((w.std.unwrap() - m.std.unwrap()).abs() < 1e-12);
        assert_eq!((m.first, m.last), (3.5, -4.0));
    }

    #[test]
    fn std_is_none_for_one_reading_and_sample_std_otherwise() {
        let mut a = Acc::new(5, 2.0);
        assert_eq!(a.finish("d", "t", 0, 10).std, None);
        for (ts, v) in [
            (1, 4.0),
            (9, 4.0),
            (5, 4.0),
            (7, 5.0),
            (1, 5.0),
            (2, 7.0),
            (3, 9.0),
        ] {
            a.add(ts, v);
        }
        let w = a.finish("d", "t", 0, 10);
        // 2,4,4,4,5,5,7,9: mean 5, squared deviations sum to 32, / 7
        assert_eq!(w.count, 8);
        assert_eq!(w.mean, 5.0);
        assert!((w.std.unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!((w.min, w.max, w.sum), (2.0, 9.0, 40.0));
        // ts 1 came twice (4.0 then 5.0): first is the earlier arrival;
        // ts 9 is the newest: last is 4.0
        assert_eq!((w.first, w.last), (4.0, 4.0));
    }
}
