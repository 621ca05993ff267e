//! Golden tests: each folder under `tests/golden/` holds an input, a config
//! and the expected windows and counters, computed by the independent
//! `tests/golden/reference.py` (see `tests/golden/README.md` for the
//! reasoning per case). Every case is also replayed with a restart after
//! every input row, and checked against the batch recompute.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use fleetscore_core::{format_ts, parse_ts};
use fleetscore_stream::{
    batch_aggregate, Aggregator, AggregatorConfig, ClosedWindow, Counters, Disposition, Reading,
    Window,
};
use serde::Deserialize;

/// `config.json` of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// The aggregator's settings, as in the service config.
    aggregator: AggregatorConfig,
    /// Where the designated restart happens (the expected output is then
    /// checked on the restarted run).
    #[serde(default)]
    restart_after: Option<usize>,
}

#[derive(Debug, Clone)]
struct Row {
    ts: i64,
    device: String,
    tag: String,
    value: f64,
}

impl Row {
    fn reading(&self) -> Reading<'_> {
        Reading {
            ts: self.ts,
            device: &self.device,
            tag: &self.tag,
            value: self.value,
        }
    }
}

/// A window as it came out: after which input row (1-based, or `flush`),
/// from which spec.
#[derive(Debug, Clone, PartialEq)]
struct Emitted {
    after: String,
    spec: String,
    window: Window,
}

struct Run {
    out: Vec<Emitted>,
    counters: Counters,
    /// Per input row, the timestamp it was aggregated at (`None`: dropped).
    effective: Vec<Option<i64>>,
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.csv").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 9,
        "golden cases missing in {}",
        root.display()
    );
    dirs
}

fn load(dir: &Path) -> (Case, Vec<Row>) {
    let case: Case =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut rdr = csv::Reader::from_path(dir.join("input.csv")).unwrap();
    let rows = rdr
        .records()
        .map(|r| {
            let r = r.unwrap();
            Row {
                ts: parse_ts(&r[0]).unwrap(),
                device: r[1].to_string(),
                tag: r[2].to_string(),
                value: r[3].parse().unwrap(),
            }
        })
        .collect();
    (case, rows)
}

fn collect(agg: &mut Aggregator, after: &str, out: &mut Vec<Emitted>) {
    out.extend(
        agg.drain_closed()
            .map(|ClosedWindow { spec, window }| Emitted {
                after: after.to_string(),
                spec: spec.to_string(),
                window,
            }),
    );
}

/// Pushes rows `[0, k)` into one aggregator, rebuilds a fresh one from the
/// same rows (the log), pushes the rest into it, then flushes. `k = None`
/// runs without a restart.
fn run(cfg: &AggregatorConfig, rows: &[Row], restart_after: Option<usize>) -> Run {
    let k = restart_after.unwrap_or(rows.len());
    let mut out = Vec::new();
    let mut effective = Vec::new();
    let mut first = Aggregator::new(cfg.clone()).unwrap();
    for (i, row) in rows[..k].iter().enumerate() {
        effective.push(effect(row.ts, first.push(row.reading())));
        collect(&mut first, &(i + 1).to_string(), &mut out);
    }
    let mut counters = readings_only(first.counters());
    let mut agg = if restart_after.is_some() {
        drop(first);
        let rebuilt = Aggregator::rebuild(cfg.clone(), rows[..k].iter().map(Row::reading)).unwrap();
        assert_eq!(rebuilt.closed_len(), 0, "replay must not emit");
        assert_eq!(rebuilt.counters().replayed, k as u64);
        rebuilt
    } else {
        first
    };
    for (i, row) in rows.iter().enumerate().skip(k) {
        effective.push(effect(row.ts, agg.push(row.reading())));
        collect(&mut agg, &(i + 1).to_string(), &mut out);
    }
    agg.flush_all();
    collect(&mut agg, "flush", &mut out);
    if restart_after.is_some() {
        counters = add(counters, agg.counters());
    } else {
        counters = readings_only(agg.counters());
    }
    Run {
        out,
        counters,
        effective,
    }
}

fn effect(ts: i64, d: Disposition) -> Option<i64> {
    match d {
        Disposition::Accepted => Some(ts),
        Disposition::Adjusted { ts } => Some(ts),
        Disposition::Dropped(_) => None,
    }
}

/// The counters of readings and windows, without the memory bookkeeping
/// (series released, clocks forgotten), which a replay repeats.
fn readings_only(c: Counters) -> Counters {
    Counters {
        series_released: 0,
        clocks_forgotten: 0,
        ..c
    }
}

/// Counters of two processes, one after the other (replays and memory
/// bookkeeping left out).
fn add(a: Counters, b: Counters) -> Counters {
    Counters {
        shed: a.shed + b.shed,
        series_released: 0,
        clocks_forgotten: 0,
        received: a.received + b.received,
        accepted: a.accepted + b.accepted,
        adjusted: a.adjusted + b.adjusted,
        too_late: a.too_late + b.too_late,
        non_finite: a.non_finite + b.non_finite,
        out_of_range: a.out_of_range + b.out_of_range,
        out_of_order: a.out_of_order + b.out_of_order,
        late_accepted: a.late_accepted + b.late_accepted,
        windows_emitted: a.windows_emitted + b.windows_emitted,
        replayed: 0,
    }
}

fn expected(dir: &Path) -> (Vec<Emitted>, Counters) {
    let mut rdr = csv::Reader::from_path(dir.join("expected.csv")).unwrap();
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header[2..],
        fleetscore_stream::WINDOW_COLUMNS,
        "expected.csv columns"
    );
    let f = |s: &str| -> f64 { s.parse().unwrap() };
    let out = rdr
        .records()
        .map(|r| {
            let r = r.unwrap();
            Emitted {
                after: r[0].to_string(),
                spec: r[1].to_string(),
                window: Window {
                    device: r[2].to_string(),
                    tag: r[3].to_string(),
                    start: parse_ts(&r[4]).unwrap(),
                    end: parse_ts(&r[5]).unwrap(),
                    count: r[6].parse().unwrap(),
                    sum: f(&r[7]),
                    mean: f(&r[8]),
                    min: f(&r[9]),
                    max: f(&r[10]),
                    std: (!r[11].is_empty()).then(|| f(&r[11])),
                    first: f(&r[12]),
                    last: f(&r[13]),
                },
            }
        })
        .collect();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected_counters.json")).unwrap())
            .unwrap();
    let c = |k: &str| json[k].as_u64().unwrap_or_else(|| panic!("counter {k}"));
    let counters = Counters {
        received: c("received"),
        accepted: c("accepted"),
        adjusted: c("adjusted"),
        too_late: c("too_late"),
        non_finite: c("non_finite"),
        out_of_range: c("out_of_range"),
        out_of_order: c("out_of_order"),
        late_accepted: c("late_accepted"),
        windows_emitted: c("windows_emitted"),
        ..Counters::default()
    };
    (out, counters)
}

/// Equal within 1e-9, relative to the larger magnitude (at least 1): the
/// reference computes mean and std another way (fsum, exact stdev).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn show(e: &Emitted) -> String {
    let w = &e.window;
    format!(
        "after {} spec {} {}/{} [{}, {}) count {} sum {} mean {} min {} max {} std {:?} first {} last {}",
        e.after,
        e.spec,
        w.device,
        w.tag,
        format_ts(w.start),
        format_ts(w.end),
        w.count,
        w.sum,
        w.mean,
        w.min,
        w.max,
        w.std,
        w.first,
        w.last
    )
}

fn matches(got: &Emitted, want: &Emitted) -> bool {
    let (g, w) = (&got.window, &want.window);
    got.after == want.after
        && got.spec == want.spec
        && (&g.device, &g.tag, g.start, g.end, g.count)
            == (&w.device, &w.tag, w.start, w.end, w.count)
        && [
            (g.sum, w.sum),
            (g.mean, w.mean),
            (g.min, w.min),
            (g.max, w.max),
            (g.first, w.first),
            (g.last, w.last),
        ]
        .iter()
        .all(|&(a, b)| close(a, b))
        && match (g.std, w.std) {
            (None, None) => true,
            (Some(a), Some(b)) => close(a, b),
            _ => false,
        }
}

fn check_case(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let (case, rows) = load(dir);
    let cfg = &case.aggregator;
    let (want, want_counters) = expected(dir);

    // 1. The designated run (with its restart, if the case has one) gives
    //    the expected windows, in the expected order, and counters.
    let golden = run(cfg, &rows, case.restart_after);
    let listing = |v: &[Emitted]| v.iter().map(show).collect::<Vec<_>>().join("\n  ");
    assert!(
        golden.out.len() == want.len() && golden.out.iter().zip(&want).all(|(g, w)| matches(g, w)),
        "{name}: windows differ\n got:\n  {}\n want:\n  {}",
        listing(&golden.out),
        listing(&want)
    );
    assert_eq!(golden.counters, want_counters, "{name}: counters");

    // 2. No window twice.
    let mut seen = HashSet::new();
    for e in &golden.out {
        let w = &e.window;
        assert!(
            seen.insert((e.spec.clone(), w.device.clone(), w.tag.clone(), w.start)),
            "{name}: emitted twice: {}",
            show(e)
        );
    }

    // 3. A restart after any row, rebuilt from the log so far, gives the
    //    same windows at the same points, bit for bit, and the same counts.
    let straight = run(cfg, &rows, None);
    for k in 0..=rows.len() {
        let restarted = run(cfg, &rows, Some(k));
        assert_eq!(restarted.out, straight.out, "{name}: restart after row {k}");
        assert_eq!(
            restarted.counters, straight.counters,
            "{name}: counters with a restart after row {k}"
        );
    }

    // 4. The batch recompute over the readings the stream kept, at the
    //    timestamps it kept them at, gives the streamed windows exactly.
    let kept: Vec<Reading> = rows
        .iter()
        .zip(&straight.effective)
        .filter_map(|(r, ts)| ts.map(|ts| Reading { ts, ..r.reading() }))
        .collect();
    for spec in &cfg.windows {
        let mut streamed: Vec<Window> = straight
            .out
            .iter()
            .filter(|e| e.spec == spec.to_string())
            .map(|e| e.window.clone())
            .collect();
        streamed.sort_by(|a, b| (&a.device, &a.tag, a.start).cmp(&(&b.device, &b.tag, b.start)));
        let batch = batch_aggregate(kept.iter().copied(), *spec, i64::MIN, i64::MAX).unwrap();
        assert_eq!(batch, streamed, "{name}: batch recompute of {spec}");
    }
}

#[test]
fn golden_cases() {
    for dir in cases() {
        check_case(&dir);
    }
}

#[test]
fn every_golden_case_is_up_to_date_with_the_reference_script() {
    // The expected files are the reference script's output; when python3 is
    // around, make sure nobody edited one without the other.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let Ok(out) = std::process::Command::new("python3")
        .arg(root.join("reference.py"))
        .arg("--check")
        .output()
    else {
        eprintln!("python3 not found: reference check skipped");
        return;
    };
    assert!(
        out.status.success(),
        "reference.py --check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
