//! The batch recompute: windows from stored raw readings, the same as the
//! streaming path gives.

use rustc_hash::FxHashMap;

use crate::intern::Interner;
use crate::window::{merge_window, Acc, Layout, Pane};
use crate::{Error, Reading, Window, WindowSpec};

/// Computes the windows of `spec` whose start lies in `[from, to)` (ns since
/// the epoch), from `readings`, sorted by `(device, tag, start)`.
///
/// Each window is computed from every given reading inside it, so pass the
/// readings of `[from, to + size)` (of `[from, to)` when `from` and `to` are
/// multiples of the hop and windows tumble). Readings with a NaN or
/// infinite value or an out-of-range timestamp are skipped, as the
/// streaming path drops them; lateness does not apply, as everything is
/// here.
///
/// Readings are folded in the order given, with the same arithmetic as the
/// streaming aggregator (panes in input order, then panes merged in time
/// order): given the readings that stream accepted, in arrival order
/// (adjusted ones at their adjusted timestamp), the result equals the
/// streamed windows bit for bit. In another order, `sum`, `mean` and `std`
/// may differ in the last bits; `count`, `min`, `max` are equal whatever
/// the order, and so are `first` and `last` unless two readings share a
/// timestamp.
pub fn batch_aggregate<'a>(
    readings: impl IntoIterator<Item = Reading<'a>>,
    spec: WindowSpec,
    from: i64,
    to: i64,
) -> Result<Vec<Window>, Error> {
    spec.validate()?;
    if from > to {
        return Err(Error::Range { from, to });
    }
    let layout = Layout::new(&spec);
    let mut interner = Interner::default();
    // Panes as the stream builds them: readings folded in input order. A
    // window holds whole panes, so a pane is either wholly needed (some
    // window holding it starts in [from, to)) or not at all.
    let mut panes: FxHashMap<(u32, i64), Acc> = FxHashMap::default();
    for r in readings {
        if !r.value.is_finite() || !layout.admits(r.ts) {
            continue;
        }
        let pane = layout.pane_start(r.ts);
        if layout.last_start(pane) < from || layout.first_start(pane) >= to {
            continue;
        }
        let id = interner.intern(r.device, r.tag);
        panes
            .entry((id, pane))
            .and_modify(|acc| acc.add(r.ts, r.value))
            .or_insert_with(|| Acc::new(r.ts, r.value));
    }
    let mut panes: Vec<(u32, Pane)> = panes
        .into_iter()
        .map(|((id, start), acc)| (id, Pane { start, acc }))
        .collect();
    panes.sort_unstable_by(|a, b| {
        interner
            .pair(a.0)
            .cmp(&interner.pair(b.0))
            .then(a.1.start.cmp(&b.1.start))
    });

    let mut out = Vec::new();
    let mut buf: Vec<Pane> = Vec::new();
    let mut rest = &panes[..];
    while let Some(&(id, _)) = rest.first() {
        let n = rest.iter().take_while(|p| p.0 == id).count();
        let (lane, tail) = rest.split_at(n);
        rest = tail;
        let (device, tag) = interner.pair(id);
        buf.clear();
        buf.extend(lane.iter().map(|p| p.1));
        walk_lane(&layout, &buf, from, to, |start, acc| {
            out.push(acc.finish(device, tag, start, start + layout.size));
        });
    }
    Ok(out)
}

/// The windows of one series' panes (sorted by start, each needed by some
/// window starting in `[from, to)`) that start in `[from, to)`, oldest
/// first: the same walk as the stream's closing, from the oldest pane's
/// first window on, each window that holds a pane.
pub(crate) fn walk_lane(
    layout: &Layout,
    lane: &[Pane],
    from: i64,
    to: i64,
    mut emit: impl FnMut(i64, Acc),
) {
    let mut cursor = i64::MIN;
    let mut lo = 0;
    while lo < lane.len() {
        let pane = lane[lo].start;
        let start = cursor.max(layout.first_start(pane));
        if start > layout.last_start(pane) {
            lo += 1;
            continue;
        }
        if start >= to {
            break;
        }
        if start >= from {
            if let Some(acc) = merge_window(lane[lo..].iter(), start, layout.size) {
                emit(start, acc);
            }
        }
        cursor = start + layout.hop;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Span;

    fn r(ts: i64, value: f64) -> Reading<'static> {
        Reading {
            ts,
            device: "d",
            tag: "t",
            value,
        }
    }

    #[test]
    fn only_windows_starting_in_the_range_come_out() {
        let spec =
            WindowSpec::hopping(Span::from_nanos(60).unwrap(), Span::from_nanos(20).unwrap());
        let rs = [r(5, 1.0), r(45, 2.0), r(65, 3.0), r(130, 4.0)];
        let w = batch_aggregate(rs, spec, 20, 80).unwrap();
        let got: Vec<_> = w.iter().map(|w| (w.start, w.end, w.count, w.sum)).collect();
        assert_eq!(
            got,
            vec![(20, 80, 2, 5.0), (40, 100, 2, 5.0), (60, 120, 1, 3.0)]
        );
        assert!(batch_aggregate(rs, spec, 80, 20).is_err());
        assert!(batch_aggregate(rs, spec, 20, 20).unwrap().is_empty());
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let spec = WindowSpec::tumbling(Span::from_nanos(10).unwrap());
        let w = batch_aggregate([r(1, f64::NAN), r(2, 1.0)], spec, i64::MIN, i64::MAX).unwrap();
        assert_eq!((w.len(), w[0].count), (1, 1));
    }
}
