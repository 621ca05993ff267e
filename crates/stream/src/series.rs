//! The batch recompute one series at a time, for callers that have already
//! grouped readings by (device, tag): no strings, no hashing per reading.
//!
//! [`SeriesWindows::series`] folds one series' readings into panes in the
//! order given and walks its windows exactly as [`batch_aggregate`] does, so
//! given each series' subsequence of what `batch_aggregate` would be given
//! (for example, readings sorted by timestamp with a stable sort), the
//! windows are the same, bit for bit. [`WindowColumns`] lays the results out
//! as the record batch [`windows_to_record_batch`] gives, without building a
//! [`Window`] (two `String`s) per window.
//!
//! [`batch_aggregate`]: crate::batch_aggregate
//! [`windows_to_record_batch`]: crate::windows_to_record_batch

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
    UInt64Builder,
};
use arrow::error::ArrowError;

use crate::batch::walk_lane;
use crate::window::{Acc, Layout, Pane};
use crate::{window_schema, Error, Window, WindowSpec};

/// The features of one window of a series, without its (device, tag): the
/// fields of [`Window`] but the names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    /// Inclusive start, ns since the epoch, UTC.
    pub start: i64,
    /// Exclusive end, `start + size`.
    pub end: i64,
    /// Number of readings.
    pub count: u64,
    /// Sum of the values.
    pub sum: f64,
    /// Mean of the values.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sample standard deviation; `None` when `count == 1`.
    pub std: Option<f64>,
    /// Value of the earliest reading (the first given among equal times).
    pub first: f64,
    /// Value of the latest reading (the last given among equal times).
    pub last: f64,
}

impl WindowStats {
    fn of(w: Window) -> WindowStats {
        WindowStats {
            start: w.start,
            end: w.end,
            count: w.count,
            sum: w.sum,
            mean: w.mean,
            min: w.min,
            max: w.max,
            std: w.std,
            first: w.first,
            last: w.last,
        }
    }

    /// The window with its names.
    pub fn named(&self, device: &str, tag: &str) -> Window {
        Window {
            device: device.to_string(),
            tag: tag.to_string(),
            start: self.start,
            end: self.end,
            count: self.count,
            sum: self.sum,
            mean: self.mean,
            min: self.min,
            max: self.max,
            std: self.std,
            first: self.first,
            last: self.last,
        }
    }
}

/// Computes the windows of one spec starting in `[from, to)`, one series
/// at a time (see the module docs). Reuses its buffers across series.
#[derive(Debug, Clone)]
pub struct SeriesWindows {
    layout: Layout,
    from: i64,
    to: i64,
    lane: Vec<Pane>,
}

impl SeriesWindows {
    /// Windows of `spec` whose start lies in `[from, to)`, as
    /// [`batch_aggregate`](crate::batch_aggregate) takes them.
    pub fn new(spec: WindowSpec, from: i64, to: i64) -> Result<SeriesWindows, Error> {
        spec.validate()?;
        if from > to {
            return Err(Error::Range { from, to });
        }
        Ok(SeriesWindows {
            layout: Layout::new(&spec),
            from,
            to,
            lane: Vec::new(),
        })
    }

    /// The windows of one series from its readings `(ts, value)`, folded
    /// in the order given, passed to `emit` oldest first.
    ///
    /// The same filters as `batch_aggregate` apply: non-finite values,
    /// timestamps out of range and readings in no window starting in
    /// `[from, to)` are skipped. Any order gives `batch_aggregate`'s result
    /// for that order; in timestamp order each reading costs one pane
    /// update.
    pub fn series(&mut self, readings: &[(i64, f64)], mut emit: impl FnMut(WindowStats)) {
        let layout = self.layout;
        let (from, to) = (self.from, self.to);
        self.lane.clear();
        let lane = &mut self.lane;
        for &(ts, value) in readings {
            if !value.is_finite() || !layout.admits(ts) {
                continue;
            }
            let pane = layout.pane_start(ts);
            match lane.last_mut() {
                Some(p) if p.start == pane => {
                    p.acc.add(ts, value);
                    continue;
                }
                Some(p) if p.start > pane => {
                    // Out of time order: find the pane (panes stay sorted).
                    match lane.binary_search_by_key(&pane, |p| p.start) {
                        Ok(i) => lane[i].acc.add(ts, value),
                        Err(i) if needed(&layout, pane, from, to) => lane.insert(
                            i,
                            Pane {
                                start: pane,
                                acc: Acc::new(ts, value),
                            },
                        ),
                        Err(_) => {}
                    }
                    continue;
                }
                _ => {}
            }
            if needed(&layout, pane, from, to) {
                lane.push(Pane {
                    start: pane,
                    acc: Acc::new(ts, value),
                });
            }
        }
        walk_lane(&layout, lane, from, to, |start, acc| {
            emit(WindowStats::of(acc.finish(
                "",
                "",
                start,
                start + layout.size,
            )));
        });
    }
}

/// Whether some window holding the pane starting at `pane` starts in
/// `[from, to)` (the filter of `batch_aggregate`).
#[inline]
fn needed(layout: &Layout, pane: i64, from: i64, to: i64) -> bool {
    !(layout.last_start(pane) < from || layout.first_start(pane) >= to)
}

/// Window rows being laid out as a record batch with
/// [`window_schema`](crate::window_schema), the columns of
/// [`windows_to_record_batch`](crate::windows_to_record_batch).
pub struct WindowColumns {
    device: StringBuilder,
    tag: StringBuilder,
    start: TimestampNanosecondBuilder,
    end: TimestampNanosecondBuilder,
    count: UInt64Builder,
    f: [Float64Builder; 7],
}

impl WindowColumns {
    /// Room for about `n` windows.
    pub fn with_capacity(n: usize) -> WindowColumns {
        WindowColumns {
            device: StringBuilder::with_capacity(n, n * 8),
            tag: StringBuilder::with_capacity(n, n * 8),
            start: TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            end: TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC"),
            count: UInt64Builder::with_capacity(n),
            f: std::array::from_fn(|_| Float64Builder::with_capacity(n)),
        }
    }

    /// Appends one window.
    #[inline]
    pub fn push(&mut self, device: &str, tag: &str, w: &WindowStats) {
        self.device.append_value(device);
        self.tag.append_value(tag);
        self.start.append_value(w.start);
        self.end.append_value(w.end);
        self.count.append_value(w.count);
        self.f[0].append_value(w.sum);
        self.f[1].append_value(w.mean);
        self.f[2].append_value(w.min);
        self.f[3].append_value(w.max);
        self.f[4].append_option(w.std);
        self.f[5].append_value(w.first);
        self.f[6].append_value(w.last);
    }

    /// Windows appended so far.
    pub fn len(&self) -> usize {
        self.count.len()
    }

    /// Whether no window was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record batch, rows in the order appended.
    pub fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.device.finish()),
            Arc::new(self.tag.finish()),
            Arc::new(self.start.finish()),
            Arc::new(self.end.finish()),
            Arc::new(self.count.finish()),
        ];
        columns.extend(self.f.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        RecordBatch::try_new(window_schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{batch_aggregate, windows_to_record_batch, Reading, Span};

    fn spec(size: i64, hop: i64) -> WindowSpec {
        WindowSpec::hopping(
            Span::from_nanos(size).unwrap(),
            Span::from_nanos(hop).unwrap(),
        )
    }

    /// Series windows equal batch_aggregate's, in any order, with
    /// duplicate timestamps, non-finite values and a partial range.
    #[test]
    fn equals_batch_aggregate_whatever_the_order() {
        let mut x = 7u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (size, hop) in [(60, 60), (60, 20), (50, 20), (7, 3)] {
            let s = spec(size, hop);
            for sorted in [true, false] {
                let mut rows: Vec<(i64, f64)> = (0..300)
                    .map(|_| {
                        let ts = (next() % 1000) as i64 - 200;
                        let v = (next() % 10_000) as f64 / 7.0;
                        (ts, if next() % 50 == 0 { f64::NAN } else { v })
                    })
                    .collect();
                if sorted {
                    rows.sort_by_key(|r| r.0);
                }
                let (from, to) = (-100, 600);
                let want = batch_aggregate(
                    rows.iter().map(|&(ts, value)| Reading {
                        ts,
                        device: "d",
                        tag: "t",
                        value,
                    }),
                    s,
                    from,
                    to,
                )
                .unwrap();
                let mut got = Vec::new();
                SeriesWindows::new(s, from, to)
                    .unwrap()
                    .series(&rows, |w| got.push(w.named("d", "t")));
                assert_eq!(got, want, "size {size} hop {hop} sorted {sorted}");
            }
        }
    }

    #[test]
    fn columns_equal_windows_to_record_batch() {
        let s = spec(10, 10);
        let mut sw = SeriesWindows::new(s, 0, 100).unwrap();
        let mut cols = WindowColumns::with_capacity(1);
        let mut ws = Vec::new();
        sw.series(&[(1, 1.0), (2, 2.0), (15, 3.0)], |w| {
            cols.push("d", "t", &w);
            ws.push(w.named("d", "t"));
        });
        assert_eq!(cols.len(), 2);
        assert_eq!(
            cols.finish().unwrap(),
            windows_to_record_batch(&ws).unwrap()
        );
        assert!(SeriesWindows::new(s, 5, 1).is_err());
    }
}
