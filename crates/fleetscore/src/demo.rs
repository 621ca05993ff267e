//! `fleetscore demo`: the main job end to end on embedded defaults, told as
//! an operator would see it: a fleet of pumps, a few of which develop a
//! fault while their readings stream in.
//!
//! 1. Generates a fleet (default 500 pumps, `pump-0001`…) with four tags,
//!    each pump at its own operating point: `temperature` (°C), `vibration`
//!    (mm/s), `pressure` (bar) and `current` (A), and 24 hours of normal
//!    history, stored in `raw/`.
//! 2. Trains, in Rust, the model each tag calls for:
//!    * `temperature`: a `StandardScaler + OneClassSVM` per pump on its
//!      readings (pumps run at different temperatures);
//!    * `pressure`: a `StandardScaler + OneClassSVM` per pump on 5-minute
//!      windows `(mean, std)` (a window-input model: a stuck sensor reports
//!      normal values, only their spread, 0, gives it away), trained on the
//!      history's windows starting every minute (five times the rows of
//!      tumbling windows it scores, alike in distribution: a boundary less
//!      tied to the few most extreme windows of one day);
//!    * `vibration` and `current`: one `IsolationForest` for the fleet, the
//!      fallback models `(*, vibration)` and `(*, current)`, trained on the
//!      last 6 hours of every pump (identical pumps vibrate and draw
//!      current alike, and a hundred trees per pump and tag would outweigh
//!      every other model stored).
//! 3. Starts the server (`serve`, in this process) with 5-minute streaming
//!    windows and streams the last few hours of readings through its HTTP
//!    line protocol endpoint, as Telegraf would. Meanwhile a few pumps
//!    (`--faulty`, default 1% of the fleet, at least 3) develop a fault, in
//!    turn: a temperature drift, vibration spikes, a stuck pressure sensor.
//! 4. Once the ingest log is compacted into `raw/` and the windows are
//!    written, lets the hourly schedule catch up on those hours: one
//!    scheduled job per hour, run by the server's runner.
//! 5. Prints a summary from the predictions stored: each fault, whether and
//!    when it was flagged, the healthy rows flagged (count and share, by
//!    tag), and the pumps with the most anomalies (the faulty ones first, as
//!    on the dashboard), then the dashboard's address, and keeps serving
//!    until Ctrl-C (`--exit` stops after the summary).
//!
//! Everything lives in `DATA/demo` (recreated on each run).
//!
//! The models' settings are chosen so that a healthy pump stays well under
//! 1% flagged: libsvm's default stopping tolerance (1e-3) leaves the
//! decision of a small-`nu` one-class SVM flat around 0 over much of the
//! data, so that several percent of normal readings fall just below it;
//! `tol = 1e-6` puts the boundary where `nu` says. An IsolationForest gives
//! every value beyond its trees' outermost thresholds the same score, the
//! score of the most extreme history readings; with a contamination below
//! their share that score is the offset itself, and a far reading gets a
//! decision of exactly 0, normal. The fleet forests therefore start at a
//! contamination of 0.2% and double it until readings far outside the
//! history are flagged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleetscore_codecs::{read_predictions_parquet_bytes, Readings};
use fleetscore_core::{ModelKey, NANOS_PER_SEC};
use fleetscore_jobs::db::{JobFilter, JobRecord};
use fleetscore_models::{
    train, train_iforest, Contamination, Gamma, IForestParams, Model, ScalerChoice, SvmParams,
    TrainParams,
};
use fleetscore_store::lake::predictions_parts;
use fleetscore_store::{raw_objects, ImportRequest, ModelInput, Store, HOUR_NS};
use fleetscore_stream::{Span, WindowSpec};
use rayon::prelude::*;

use crate::cli::{DemoArgs, Global};
use crate::config::{Config, ScheduleConfig};
use crate::util;

/// One tag of the generated pumps: its name and unit, the fleet's typical
/// level, how far one pump's level is from it (standard deviation), and
/// the noise of one reading around a pump's level.
struct TagSpec {
    name: &'static str,
    unit: &'static str,
    level: f64,
    spread: f64,
    noise: f64,
}

const TAGS: [TagSpec; 4] = [
    TagSpec {
        name: "temperature",
        unit: "°C",
        level: 62.0,
        spread: 3.0,
        noise: 0.5,
    },
    TagSpec {
        name: "vibration",
        unit: "mm/s",
        level: 2.8,
        spread: 0.05,
        noise: 0.3,
    },
    TagSpec {
        name: "pressure",
        unit: "bar",
        level: 6.0,
        spread: 0.3,
        noise: 0.05,
    },
    TagSpec {
        name: "current",
        unit: "A",
        level: 14.0,
        spread: 0.08,
        noise: 0.4,
    },
];
const TEMPERATURE: usize = 0;
const VIBRATION: usize = 1;
const PRESSURE: usize = 2;
const CURRENT: usize = 3;

/// Hours of normal history the models are trained on: a day gives each
/// pressure model 288 windows.
const TRAIN_HOURS: i64 = 24;
/// The fleet forests train on the last hours of every pump's history.
const FOREST_HOURS: i64 = 6;
/// One reading per tag every 30 s, in the history and the stream alike.
const STEP: i64 = 30 * NANOS_PER_SEC;
/// The pressure models' windows.
const WINDOW: Span = Span::from_secs(300);
/// What the pressure models take.
const PRESSURE_INPUT: &str = "window:5m:mean,std";

/// Per-pump one-class SVMs (temperature readings, pressure windows).
fn svm_params(gamma: f64) -> TrainParams {
    TrainParams {
        scaler: ScalerChoice::Standard,
        svm: SvmParams {
            nu: 0.002,
            gamma: Gamma::Value(gamma),
            tol: 1e-6,
            ..SvmParams::default()
        },
    }
}
const TEMPERATURE_GAMMA: f64 = 0.02;
const PRESSURE_GAMMA: f64 = 0.01;
/// The fleet forests' first contamination.
const FOREST_CONTAMINATION: f64 = 0.002;

/// splitmix64: small, seedable, good enough for synthetic readings.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n
    }
}

/// A pump's name: `pump-0001` for index 0.
fn pump(d: usize) -> String {
    format!("pump-{:04}", d + 1)
}

/// A pump's index from its name.
fn pump_index(name: &str) -> Option<usize> {
    name.strip_prefix("pump-")?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

/// A reading as a sensor reports it (four decimals), the same in the
/// history and in the line protocol.
fn sensor(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

/// `HH:MM` of a timestamp, UTC.
fn clock(ts: i64) -> String {
    let m = ts.div_euclid(60 * NANOS_PER_SEC).rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// What goes wrong with a faulty pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// The temperature rises steadily (a failing bearing or cooler).
    Drift,
    /// Bursts of strong vibration (cavitation, a loose mount).
    Spikes,
    /// The pressure sensor repeats one value.
    Stuck,
}

impl FaultKind {
    /// In turn, for the faulty pumps in the order they are drawn.
    const ALL: [FaultKind; 3] = [FaultKind::Drift, FaultKind::Spikes, FaultKind::Stuck];

    /// The tag the fault shows on.
    fn tag(self) -> usize {
        match self {
            FaultKind::Drift => TEMPERATURE,
            FaultKind::Spikes => VIBRATION,
            FaultKind::Stuck => PRESSURE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FaultKind::Drift => "drift",
            FaultKind::Spikes => "spikes",
            FaultKind::Stuck => "stuck",
        }
    }
}

/// One faulty pump.
struct Fault {
    device: usize,
    kind: FaultKind,
    /// When the fault begins (a reading's time, on the minute).
    onset: i64,
    /// Drift: degrees per hour; stuck: the value repeated.
    param: f64,
}

impl Fault {
    /// How the fault reads: `temperature drift (+6.1 °C/h)`.
    fn describe(&self) -> String {
        let t = &TAGS[self.kind.tag()];
        match self.kind {
            FaultKind::Drift => format!("{} drift (+{:.1} {}/h)", t.name, self.param, t.unit),
            FaultKind::Spikes => format!("{} spikes", t.name),
            FaultKind::Stuck => format!("{} stuck at {:.4} {}", t.name, self.param, t.unit),
        }
    }

    /// Whether a scored row of the fault's tag starting at `ts` sees the
    /// fault: a reading at or after the onset, a window ending after it.
    fn covers(&self, ts: i64) -> bool {
        ts + row_span(self.kind.tag()) > self.onset
    }
}

/// How long one scored row of a tag lasts: a window for pressure, an
/// instant (one ns) for a reading.
fn row_span(tag: usize) -> i64 {
    if tag == PRESSURE {
        WINDOW.as_nanos()
    } else {
        1
    }
}

/// The generated fleet: each pump's level per tag, and the faults.
struct Fleet {
    devices: usize,
    /// `levels[d * 4 + t]`.
    levels: Vec<f64>,
    faults: Vec<Fault>,
    /// Per pump, its fault's index in `faults`.
    fault_of: Vec<Option<usize>>,
}

impl Fleet {
    /// A fleet of `devices` pumps of which `faulty` (drawn at random) go
    /// wrong at some minute in the first half of `[start, end)` (after its
    /// first tenth).
    fn new(devices: usize, faulty: usize, start: i64, end: i64, rng: &mut Rng) -> Fleet {
        let levels: Vec<f64> = (0..devices * TAGS.len())
            .map(|i| {
                let t = &TAGS[i % TAGS.len()];
                t.level + rng.normal() * t.spread
            })
            .collect();
        let mut order: Vec<usize> = (0..devices).collect();
        let minute = 60 * NANOS_PER_SEC;
        let span = end - start;
        let mut faults = Vec::with_capacity(faulty);
        for i in 0..faulty.min(devices) {
            let j = i + rng.below(devices - i);
            order.swap(i, j);
            let device = order[i];
            let kind = FaultKind::ALL[i % FaultKind::ALL.len()];
            let onset = start + span / 10 + (rng.uniform() * (span as f64 * 0.4)) as i64;
            let onset = onset.div_euclid(minute) * minute;
            let param = match kind {
                FaultKind::Drift => 4.0 + 4.0 * rng.uniform(),
                FaultKind::Spikes => 0.0,
                FaultKind::Stuck => {
                    let t = &TAGS[PRESSURE];
                    sensor(levels[device * TAGS.len() + PRESSURE] + rng.normal() * t.noise)
                }
            };
            faults.push(Fault {
                device,
                kind,
                onset,
                param,
            });
        }
        faults.sort_by_key(|f| f.device);
        let mut fault_of = vec![None; devices];
        for (i, f) in faults.iter().enumerate() {
            fault_of[f.device] = Some(i);
        }
        Fleet {
            devices,
            levels,
            faults,
            fault_of,
        }
    }

    fn level(&self, d: usize, t: usize) -> f64 {
        self.levels[d * TAGS.len() + t]
    }

    /// A normal reading of pump `d`, tag `t`.
    fn normal(&self, d: usize, t: usize, rng: &mut Rng) -> f64 {
        sensor((self.level(d, t) + rng.normal() * TAGS[t].noise).max(0.0))
    }

    /// The fault of pump `d` that shows on tag `t`, if any.
    fn fault(&self, d: usize, t: usize) -> Option<(usize, &Fault)> {
        let i = self.fault_of.get(d).copied().flatten()?;
        let f = &self.faults[i];
        (f.kind.tag() == t).then_some((i, f))
    }

    /// A streamed reading of pump `d`, tag `t` at `ts`, with its fault if
    /// it has begun. `burst` holds each fault's spike readings still due.
    fn reading(&self, d: usize, t: usize, ts: i64, rng: &mut Rng, burst: &mut [u32]) -> f64 {
        let v = self.normal(d, t, rng);
        let Some((i, f)) = self.fault(d, t).filter(|(_, f)| ts >= f.onset) else {
            return v;
        };
        match f.kind {
            FaultKind::Drift => sensor(v + f.param * (ts - f.onset) as f64 / HOUR_NS as f64),
            FaultKind::Spikes => {
                // A burst of 1 to 3 readings at 3 to 5 times the level,
                // starting at about one reading in 10.
                if burst[i] == 0 && rng.uniform() < 0.1 {
                    burst[i] = 1 + rng.below(3) as u32;
                }
                if burst[i] > 0 {
                    burst[i] -= 1;
                    sensor(self.level(d, t) * (3.0 + 2.0 * rng.uniform()))
                } else {
                    v
                }
            }
            FaultKind::Stuck => f.param,
        }
    }

    /// Normal readings of every pump and tag every 30 s in the `hours`
    /// hours from `from`, one [`Readings`] per hour, each hour generated
    /// (in parallel) from its own seed.
    fn history(&self, from: i64, hours: i64, seed: u64) -> Vec<Readings> {
        let keys: Vec<(String, String)> = (0..self.devices)
            .flat_map(|d| TAGS.iter().map(move |t| (pump(d), t.name.to_string())))
            .collect();
        let steps = (HOUR_NS / STEP) as usize;
        (0..hours)
            .into_par_iter()
            .map(|h| {
                let mut rng = Rng(seed ^ (h as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
                let mut r = Readings::with_keys(&keys);
                r.reserve(steps * keys.len());
                // Rows in the order `raw/` objects keep them, (ts, device,
                // tag), so that sorting them costs one pass.
                let mut by_name: Vec<usize> = (0..TAGS.len()).collect();
                by_name.sort_by_key(|&t| TAGS[t].name);
                for s in 0..steps {
                    let ts = from + h * HOUR_NS + s as i64 * STEP;
                    for d in 0..self.devices {
                        for &t in &by_name {
                            let v = self.normal(d, t, &mut rng);
                            r.push(ts, (d * TAGS.len() + t) as u32, v);
                        }
                    }
                }
                r
            })
            .collect()
    }

    /// The streamed hours as line protocol bodies, in `senders` groups of
    /// pumps: each group's bodies hold its pumps' readings in time order,
    /// so that each pump's readings arrive in order whatever the groups'
    /// interleaving (the window aggregator keeps a watermark per device).
    fn stream_bodies(&self, from: i64, to: i64, senders: usize, rng: &mut Rng) -> Vec<Vec<String>> {
        let mut burst = vec![0u32; self.faults.len()];
        let mut groups = Vec::with_capacity(senders);
        for g in 0..senders {
            let mut bodies = Vec::new();
            let mut body = String::new();
            let mut lines = 0;
            let mut ts = from;
            while ts < to {
                for d in (g..self.devices).step_by(senders) {
                    body.push_str("fleet,device=");
                    body.push_str(&pump(d));
                    for (t, spec) in TAGS.iter().enumerate() {
                        let v = self.reading(d, t, ts, rng, &mut burst);
                        body.push(if t == 0 { ' ' } else { ',' });
                        body.push_str(&format!("{}={v:.4}", spec.name));
                    }
                    body.push_str(&format!(" {}\n", ts / NANOS_PER_SEC));
                    lines += 1;
                    if lines % 2000 == 0 {
                        bodies.push(std::mem::take(&mut body));
                    }
                }
                ts += STEP;
            }
            if !body.is_empty() {
                bodies.push(body);
            }
            groups.push(bodies);
        }
        groups
    }
}

/// The models trained, with a line per tag saying what they are.
struct Trained {
    requests: Vec<ImportRequest>,
    lines: Vec<String>,
}

/// A fleet IsolationForest on one tag's pooled history: 100 trees, the
/// contamination doubled from [`FOREST_CONTAMINATION`] until readings far
/// beyond the history (both ways) are flagged (see the module docs).
fn fleet_forest(values: &[f64], seed: u64) -> anyhow::Result<(Model, f64)> {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let far = [lo - (hi - lo), hi + (hi - lo)];
    let mut c = FOREST_CONTAMINATION;
    loop {
        let params = IForestParams {
            contamination: Contamination::Fraction(c),
            seed,
            ..IForestParams::default()
        };
        let (model, _) = train_iforest(values, 1, &params)?;
        if model.predict(&far, 1)?.iter().all(|&l| l == -1) || c >= 0.05 {
            return Ok((model, c));
        }
        c *= 2.0;
    }
}

/// The `(mean, std)` rows of the 5-minute windows starting every minute
/// over one series of readings 30 s apart that starts on the minute: the
/// features the server's aggregator computes (the sample standard
/// deviation, divisor `n - 1`), over windows five times as many as its
/// tumbling ones.
fn window_rows(series: &[f64]) -> Vec<f64> {
    let per_window = (WINDOW.as_nanos() / STEP) as usize;
    let hop = (60 * NANOS_PER_SEC / STEP) as usize;
    let mut rows = Vec::new();
    let mut i = 0;
    while i + per_window <= series.len() {
        let w = &series[i..i + per_window];
        let mean = w.iter().sum::<f64>() / per_window as f64;
        let var = w.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (per_window - 1) as f64;
        rows.extend([mean, var.sqrt()]);
        i += hop;
    }
    rows
}

/// Trains every model on the history (in parallel): per pump, temperature
/// and pressure; for the fleet, vibration and current.
fn train_models(fleet: &Fleet, history: &[Readings], seed: u64) -> anyhow::Result<Trained> {
    let n_keys = fleet.devices * TAGS.len();
    let per_series = history.iter().map(Readings::len).sum::<usize>() / n_keys + 1;
    let mut series: Vec<Vec<f64>> = vec![Vec::with_capacity(per_series); n_keys];
    for h in history {
        for (k, v) in h.key_ids().iter().zip(h.values()) {
            series[*k as usize].push(*v);
        }
    }
    let per_pump: Vec<anyhow::Result<(Model, Model)>> = (0..fleet.devices)
        .into_par_iter()
        .map(|d| {
            let (temp, _) = train(
                &series[d * TAGS.len() + TEMPERATURE],
                1,
                &svm_params(TEMPERATURE_GAMMA),
            )
            .with_context(|| format!("training ({}, temperature)", pump(d)))?;
            let windows = window_rows(&series[d * TAGS.len() + PRESSURE]);
            let (press, _) = train(&windows, 2, &svm_params(PRESSURE_GAMMA))
                .with_context(|| format!("training ({}, pressure)", pump(d)))?;
            Ok((temp, press))
        })
        .collect();
    let recent = (FOREST_HOURS * HOUR_NS / STEP) as usize;
    let pooled = |t: usize| -> Vec<f64> {
        (0..fleet.devices)
            .flat_map(|d| {
                let s = &series[d * TAGS.len() + t];
                s[s.len().saturating_sub(recent)..].iter().copied()
            })
            .collect()
    };
    let (vibration, current) = rayon::join(
        || fleet_forest(&pooled(VIBRATION), seed),
        || fleet_forest(&pooled(CURRENT), seed.wrapping_add(1)),
    );
    let (vibration, vibration_c) = vibration.context("training (*, vibration)")?;
    let (current, current_c) = current.context("training (*, current)")?;

    let source = "trained by fleetscore demo";
    let window_input = ModelInput::parse(PRESSURE_INPUT).map_err(anyhow::Error::msg)?;
    let mut requests = Vec::with_capacity(2 * fleet.devices + 2);
    for (d, fit) in per_pump.into_iter().enumerate() {
        let (temp, press) = fit?;
        requests.push(ImportRequest {
            key: ModelKey::new(pump(d), TAGS[TEMPERATURE].name)?,
            model: temp.into(),
            source: source.into(),
            input: ModelInput::Raw,
        });
        requests.push(ImportRequest {
            key: ModelKey::new(pump(d), TAGS[PRESSURE].name)?,
            model: press.into(),
            source: source.into(),
            input: window_input.clone(),
        });
    }
    for (t, model) in [(VIBRATION, vibration), (CURRENT, current)] {
        requests.push(ImportRequest {
            key: ModelKey::new("*", TAGS[t].name)?,
            model: model.into(),
            source: source.into(),
            input: ModelInput::Raw,
        });
    }
    let svm = |gamma| format!("StandardScaler + OneClassSVM(nu=0.002, gamma={gamma}, tol=1e-6)");
    let forest = |c: f64| format!("IsolationForest(100 trees, contamination={c})");
    let label = |t: usize| format!("{} ({})", TAGS[t].name, TAGS[t].unit);
    let lines = vec![
        format!(
            "  {:<19} per pump: {} on each reading",
            label(TEMPERATURE),
            svm(TEMPERATURE_GAMMA)
        ),
        format!(
            "  {:<19} fleet (*, vibration): {} on each reading",
            label(VIBRATION),
            forest(vibration_c)
        ),
        format!(
            "  {:<19} per pump: {} on 5-minute windows (mean, std)",
            label(PRESSURE),
            svm(PRESSURE_GAMMA)
        ),
        format!(
            "  {:<19} fleet (*, current): {} on each reading",
            label(CURRENT),
            forest(current_c)
        ),
    ];
    Ok(Trained { requests, lines })
}

/// Posts line protocol bodies over one keep-alive connection.
fn post_all(addr: SocketAddr, bodies: &[String]) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    for body in bodies {
        write!(
            s,
            "POST /write?precision=s HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        s.write_all(body.as_bytes())?;
        let mut status = String::new();
        reader.read_line(&mut status)?;
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut rest = vec![0; len];
        reader.read_exact(&mut rest)?;
        anyhow::ensure!(
            status.split(' ').nth(1) == Some("204"),
            "ingest answered {}: {}",
            status.trim(),
            String::from_utf8_lossy(&rest)
        );
    }
    Ok(())
}

/// The Prometheus text of `/metrics`.
fn metrics(addr: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// The sum of a metric's series (all label sets) in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// Waits until the server has compacted every streamed reading into
/// `raw/` and aggregated and written every window they closed.
async fn wait_until_stored(addr: SocketAddr, readings: usize) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        let text = tokio::task::spawn_blocking(move || metrics(addr)).await??;
        let compacted = metric(&text, "fleetscore_compaction_readings_total");
        let windowed = metric(&text, "fleetscore_window_readings_total");
        let emitted = metric(&text, "fleetscore_windows_emitted_total");
        let written = metric(&text, "fleetscore_windows_written_total");
        if compacted >= readings as f64 && windowed >= readings as f64 && written >= emitted {
            return Ok(());
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(120),
            "the streamed readings were not all in raw/ and windows/ within 2 minutes \
             ({compacted} compacted, {windowed} windowed, {written} of {emitted} windows written)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The demo's hourly schedule. Its past hours are all in once compaction
/// is done (the demo waits for that itself), so it scores each hour soon
/// after it ends: with the default delay for late data (5 minutes), a demo
/// started in the first minutes of an hour sat idle until five past. Ten
/// seconds still covers readings streamed into a serving demo in an
/// hour's last moments (flushed and compacted every second).
fn demo_schedule(hours: usize) -> ScheduleConfig {
    ScheduleConfig {
        catch_up: hours as u32 + 1,
        delay: Span::from_secs(10),
        ..ScheduleConfig::default()
    }
}

/// Waits for the hourly jobs of `[start, end)` to end, saying so every
/// ten seconds.
async fn wait_for_jobs(
    db: &dyn fleetscore_jobs::db::JobStore,
    start: i64,
    end: i64,
    hours: i64,
    home: &std::path::Path,
) -> anyhow::Result<Vec<JobRecord>> {
    let t = Instant::now();
    let mut next_note = Duration::from_secs(10);
    loop {
        let mut jobs = db
            .jobs(&JobFilter {
                schedule: Some("hourly".into()),
                window_from: Some(start),
                window_to: Some(end),
                limit: Some(1000),
                ..JobFilter::default()
            })
            .await?;
        let done = jobs.iter().filter(|j| j.state.is_final()).count();
        if jobs.len() as i64 == hours && done == jobs.len() {
            jobs.sort_by_key(|j| j.window_start);
            return Ok(jobs);
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "the scheduled jobs did not finish within 10 minutes ({done} of {hours} finished); \
             see `fleetscore --data {} jobs list`",
            home.display()
        );
        if t.elapsed() >= next_note {
            println!(
                "waiting for the hourly jobs: {done} of {hours} finished after {}",
                util::secs(t.elapsed())
            );
            next_note += Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the stored predictions say about the fleet.
#[derive(Default)]
struct Tally {
    /// Rows scored, by tag.
    rows: [u64; 4],
    /// Rows scored, by pump.
    device_rows: Vec<u64>,
    /// Anomalies, by pump.
    device_flags: Vec<u64>,
    /// Healthy rows (not a faulty tag after its onset) flagged, by tag.
    healthy_flags: [u64; 4],
    /// Rows that see each fault, and how many of them were flagged.
    fault_rows: Vec<u64>,
    fault_flags: Vec<u64>,
    /// When each fault was first flagged: the end of the first flagged
    /// row (a reading's time, a window's end).
    fault_first: Vec<Option<i64>>,
}

impl Tally {
    fn healthy_rows(&self) -> u64 {
        self.rows.iter().sum::<u64>() - self.fault_rows.iter().sum::<u64>()
    }

    /// Healthy anomalies of pump `d`.
    fn healthy_device_flags(&self, fleet: &Fleet, d: usize) -> u64 {
        let fault = fleet.fault_of[d].map_or(0, |i| self.fault_flags[i]);
        self.device_flags[d] - fault
    }
}

/// Reads every prediction of `[start, end)` and tallies it (without
/// keeping the normal rows).
async fn tally(store: &Store, fleet: &Fleet, start: i64, end: i64) -> anyhow::Result<Tally> {
    let n = fleet.faults.len();
    let mut t = Tally {
        device_rows: vec![0; fleet.devices],
        device_flags: vec![0; fleet.devices],
        fault_rows: vec![0; n],
        fault_flags: vec![0; n],
        fault_first: vec![None; n],
        ..Tally::default()
    };
    let tag_index = |name: &str| TAGS.iter().position(|t| t.name == name);
    // The parts the jobs' manifests name (the jobs' windows are hours).
    for key in predictions_parts(store, start, end).await? {
        let Some(data) = store.get(&key).await? else {
            continue;
        };
        read_predictions_parquet_bytes(data, &key, |r| {
            let (Some(d), Some(tag)) = (pump_index(&r.device), tag_index(&r.tag)) else {
                return false;
            };
            if d >= fleet.devices || r.ts < start || r.ts >= end {
                return false;
            }
            let flagged = r.prediction == Some(1);
            t.rows[tag] += 1;
            t.device_rows[d] += 1;
            t.device_flags[d] += u64::from(flagged);
            match fleet.fault(d, tag).filter(|(_, f)| f.covers(r.ts)) {
                Some((i, _)) => {
                    t.fault_rows[i] += 1;
                    if flagged {
                        t.fault_flags[i] += 1;
                        let seen = if tag == PRESSURE {
                            r.ts + WINDOW.as_nanos()
                        } else {
                            r.ts
                        };
                        t.fault_first[i] = Some(t.fault_first[i].map_or(seen, |f| f.min(seen)));
                    }
                }
                None => t.healthy_flags[tag] += u64::from(flagged),
            }
            false
        })?;
    }
    Ok(t)
}

fn pct(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole.max(1) as f64
}

/// The summary lines after the jobs: the faults found, the healthy rows
/// flagged, the pumps with the most anomalies.
fn summary(fleet: &Fleet, t: &Tally) -> Vec<String> {
    let mut out = Vec::new();
    let found = t.fault_flags.iter().filter(|&&f| f > 0).count();
    out.push(format!(
        "faulty pumps found: {found} of {} (flagged on the faulty tag after the fault began)",
        fleet.faults.len()
    ));
    for (i, f) in fleet.faults.iter().enumerate() {
        let unit = if f.kind.tag() == PRESSURE {
            "windows"
        } else {
            "readings"
        };
        let seen = match t.fault_first[i] {
            Some(at) => format!(
                "first flagged {} ({} min later), {} of {} {unit} flagged",
                clock(at),
                (at - f.onset).max(0) / (60 * NANOS_PER_SEC),
                t.fault_flags[i],
                t.fault_rows[i]
            ),
            None => format!("NOT FOUND: none of {} {unit} flagged", t.fault_rows[i]),
        };
        out.push(format!(
            "  {}  {:<36} from {} UTC: {seen}",
            pump(f.device),
            f.describe(),
            clock(f.onset)
        ));
    }
    let healthy: u64 = t.healthy_flags.iter().sum();
    let by_tag: Vec<String> = TAGS
        .iter()
        .enumerate()
        .map(|(i, tag)| {
            let fault_rows: u64 = fleet
                .faults
                .iter()
                .zip(&t.fault_rows)
                .filter(|(f, _)| f.kind.tag() == i)
                .map(|(_, r)| r)
                .sum();
            let what = if i == PRESSURE { " windows" } else { "" };
            format!(
                "{}{what} {:.2}%",
                tag.name,
                pct(t.healthy_flags[i], t.rows[i] - fault_rows)
            )
        })
        .collect();
    let worst = (0..fleet.devices)
        .filter(|&d| t.device_rows[d] > 0)
        .max_by(|&a, &b| {
            let share =
                |d: usize| t.healthy_device_flags(fleet, d) as f64 / t.device_rows[d] as f64;
            share(a).total_cmp(&share(b)).then(b.cmp(&a))
        });
    let worst = worst.map_or(String::new(), |d| {
        let flags = t.healthy_device_flags(fleet, d);
        format!(
            "; the most on one pump: {}, {} of {} ({:.2}%)",
            pump(d),
            flags,
            t.device_rows[d],
            pct(flags, t.device_rows[d])
        )
    });
    out.push(format!(
        "healthy readings and windows flagged: {healthy} of {} ({:.2}%; {}){worst}",
        t.healthy_rows(),
        pct(healthy, t.healthy_rows()),
        by_tag.join(", ")
    ));
    // As the dashboard orders its heat map: most anomalies first, then by
    // name.
    let mut order: Vec<usize> = (0..fleet.devices).collect();
    order.sort_by(|&a, &b| t.device_flags[b].cmp(&t.device_flags[a]).then(a.cmp(&b)));
    let top: Vec<String> = order
        .iter()
        .take((fleet.faults.len() + 3).max(5))
        .map(|&d| {
            let what = fleet.fault_of[d].map_or(String::new(), |i| {
                format!(" ({})", fleet.faults[i].kind.name())
            });
            format!("{} {}{what}", pump(d), t.device_flags[d])
        })
        .collect();
    out.push(format!(
        "pumps with the most anomalies (the dashboard's order): {}",
        top.join(", ")
    ));
    out
}

/// The demo's server, running in this process.
struct Server {
    addr: SocketAddr,
    handle: tokio::task::JoinHandle<anyhow::Result<ExitCode>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts `serve` with 5-minute windows, flushes and compactions every
/// second, and an hourly schedule that has nothing due before `end`.
async fn start_server(g: &Global, listen: &str, hours: usize) -> anyhow::Result<Server> {
    let mut c = Config::default();
    c.server.listen = listen.to_string();
    c.server.window_flush_interval = Span::from_secs(1);
    c.ingest.compact_interval = Span::from_secs(1);
    c.jobs.tick_interval = Span::from_millis(200);
    c.stream.windows = vec![WindowSpec::tumbling(WINDOW)];
    c.schedules = vec![demo_schedule(hours)];
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let handle = {
        let g = g.clone();
        tokio::spawn(async move {
            let env = crate::serve_cmd::env(&g).await?;
            fleetscore_server::serve::run_config(env, c, Some(ready_tx), Some(stop_rx)).await
        })
    };
    match ready_rx.await {
        Ok(addr) => Ok(Server { addr, handle, stop }),
        Err(_) => match handle.await? {
            Err(e) => Err(e.context("starting the server")),
            Ok(_) => anyhow::bail!("the server stopped before it listened"),
        },
    }
}

/// Posts each group of bodies over its own connection, the groups at
/// once.
async fn post_groups(addr: SocketAddr, groups: Vec<Vec<String>>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let hs: Vec<_> = groups
                .iter()
                .map(|c| s.spawn(move || post_all(addr, c)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("sender panicked")))
                })
                .collect::<anyhow::Result<Vec<()>>>()
        })
    })
    .await??;
    Ok(())
}

/// Writes the history into `raw/` (each hour encoded in parallel).
async fn store_history(store: &Store, history: &[Readings]) -> anyhow::Result<()> {
    let objects: Vec<_> = history
        .par_iter()
        .map(|h| raw_objects(h, b"fleetscore demo history"))
        .collect::<Result<_, _>>()?;
    for (key, data) in objects.into_iter().flatten() {
        store.put(&key, data).await?;
    }
    Ok(())
}

pub async fn run(g: &Global, args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.devices > 0 && args.hours > 0 && args.hours <= 48,
        "--devices must be at least 1 and --hours between 1 and 48"
    );
    // 1% of the fleet, at least 3 (and at most every pump).
    let faulty = args
        .faulty
        .unwrap_or((args.devices / 100).max(3).min(args.devices));
    anyhow::ensure!(
        faulty <= args.devices,
        "--faulty {faulty} is more than the fleet's {} pumps",
        args.devices
    );
    // Before minutes of work: a taken port fails now, with what to do.
    fleetscore_server::http::check_bind(&args.listen)?;
    let started = Instant::now();
    let home = g.data.join("demo");
    if home.exists() {
        std::fs::remove_dir_all(&home)
            .with_context(|| format!("clearing the previous demo in {}", home.display()))?;
    }
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let g = Global {
        data: home.clone(),
        store: None,
        db: None,
        config: None,
        ..g.clone()
    };
    let g = &g;
    let store = util::store(g)?;
    let (devices, hours) = (args.devices, args.hours as i64);
    let now = util::now_ns();
    let end = now.div_euclid(HOUR_NS) * HOUR_NS;
    let start = end - hours * HOUR_NS;
    let train_from = start - TRAIN_HOURS * HOUR_NS;
    let mut rng = Rng(args.seed);
    let fleet = Fleet::new(devices, faulty, start, end, &mut rng);

    // 1. History, straight into raw/.
    let history = fleet.history(train_from, TRAIN_HOURS, args.seed);
    store_history(&store, &history).await?;
    let tags: Vec<String> = TAGS
        .iter()
        .map(|t| format!("{} ({})", t.name, t.unit))
        .collect();
    println!(
        "fleet: {devices} pumps x {} tags: {}; {} readings of history ({TRAIN_HOURS} h at 30 s) in {}",
        TAGS.len(),
        tags.join(", "),
        history.iter().map(Readings::len).sum::<usize>(),
        store.url()
    );

    // 2. The models, in Rust.
    let t = Instant::now();
    let trained = train_models(&fleet, &history, args.seed)?;
    drop(history);
    let n_models = trained.requests.len();
    util::registry(g)?
        .import(trained.requests, &util::now_rfc3339())
        .await?;
    println!(
        "trained {n_models} models in Rust in {}:",
        util::secs(t.elapsed())
    );
    for l in &trained.lines {
        println!("{l}");
    }

    // 3. The server, whose hourly schedule has nothing due yet.
    let db = util::job_store(g).await?;
    db.rewind_schedule("hourly", end, now).await?;
    let server = start_server(g, &args.listen, args.hours).await?;
    let addr = server.addr;

    // 4. The last hours through HTTP line protocol, faults and all, over
    // four connections.
    let groups = fleet.stream_bodies(start, end, devices.min(4), &mut rng);
    let readings = devices * (hours * HOUR_NS / STEP) as usize * TAGS.len();
    let t = Instant::now();
    post_groups(addr, groups).await?;
    let ingest_time = t.elapsed();
    println!(
        "streamed {readings} readings ({hours} h at 30 s; {} of {devices} pumps develop a fault) to http://{addr}/write in {} ({:.0} readings/s, each acknowledged once durable)",
        fleet.faults.len(),
        util::secs(ingest_time),
        readings as f64 / ingest_time.as_secs_f64()
    );

    // 5. Once it is all in raw/ and windows/, the schedule catches up on
    // those hours.
    wait_until_stored(addr, readings).await?;
    db.rewind_schedule("hourly", start, util::now_ns()).await?;
    let jobs = wait_for_jobs(db.as_ref(), start, end, hours, &home).await?;
    for j in &jobs {
        // As `serve` says it (failed models are few here: by reason is
        // left to `jobs show`).
        println!("  {}", fleetscore_server::scheduler::finished_line(j, &[]));
    }

    // 6. What was found, from the predictions in the store.
    let tally = tally(&store, &fleet, start, end).await?;
    let rows: u64 = jobs.iter().map(|j| j.counts.rows).sum();
    let flagged: u64 = tally.device_flags.iter().sum();
    let failed_jobs = jobs
        .iter()
        .filter(|j| j.state != fleetscore_jobs::db::JobState::Succeeded)
        .count();
    let windows = tally.rows[PRESSURE];
    println!(
        "scored {rows} rows ({} readings, {windows} pressure windows) in {} hourly jobs ({failed_jobs} failed): {flagged} flagged",
        rows.saturating_sub(windows),
        jobs.len(),
    );
    for l in summary(&fleet, &tally) {
        println!("{l}");
    }
    println!(
        "demo ready in {}; data in {}",
        util::secs(started.elapsed()),
        home.display()
    );
    println!("dashboard: http://{addr}/   API: http://{addr}/v1/openapi.json   metrics: http://{addr}/metrics");
    if args.exit {
        let _ = server.stop.send(());
    } else {
        println!("serving; press Ctrl-C to stop");
        // Keep the sender: the server stops on Ctrl-C.
        std::mem::forget(server.stop);
    }
    let code = server.handle.await??;
    Ok(if failed_jobs == 0 {
        code
    } else {
        ExitCode::from(3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_every_label_set() {
        let text = "# HELP x\nfleetscore_a_total 3\nfleetscore_b_total{d=\"accepted\"} 5\nfleetscore_b_total{d=\"dropped\"} 2\nfleetscore_bb 9\n";
        assert_eq!(metric(text, "fleetscore_a_total"), 3.0);
        assert_eq!(metric(text, "fleetscore_b_total"), 7.0);
        assert_eq!(metric(text, "fleetscore_missing"), 0.0);
    }

    #[test]
    fn faults_take_turns_and_begin_in_the_first_half() {
        let (start, end) = (100 * HOUR_NS, 103 * HOUR_NS);
        let fleet = Fleet::new(50, 7, start, end, &mut Rng(1));
        assert_eq!(fleet.faults.len(), 7);
        let kinds: Vec<_> = fleet.faults.iter().map(|f| f.kind).collect();
        for k in FaultKind::ALL {
            assert!(kinds.contains(&k), "{kinds:?}");
        }
        for f in &fleet.faults {
            assert!(f.onset >= start + (end - start) / 10 - 60 * NANOS_PER_SEC);
            assert!(f.onset < start + (end - start) / 2);
            assert_eq!(
                fleet.fault(f.device, f.kind.tag()).map(|(_, g)| g.onset),
                Some(f.onset)
            );
        }
        // Distinct pumps.
        let mut d: Vec<_> = fleet.faults.iter().map(|f| f.device).collect();
        d.dedup();
        assert_eq!(d.len(), 7);
    }

    #[test]
    fn a_stuck_sensor_repeats_one_value_and_a_drift_rises() {
        let (start, end) = (100 * HOUR_NS, 101 * HOUR_NS);
        let fleet = Fleet::new(3, 3, start, end, &mut Rng(2));
        let mut rng = Rng(3);
        let mut burst = vec![0; 3];
        for f in &fleet.faults {
            let t = f.kind.tag();
            let before = fleet.reading(f.device, t, f.onset - STEP, &mut rng, &mut burst);
            let late = f.onset + 20 * 60 * NANOS_PER_SEC;
            let after: Vec<f64> = (0..10)
                .map(|_| fleet.reading(f.device, t, late, &mut rng, &mut burst))
                .collect();
            match f.kind {
                FaultKind::Stuck => assert!(after.iter().all(|&v| v == f.param)),
                FaultKind::Drift => {
                    assert!(
                        after.iter().all(|&v| v > fleet.level(f.device, t) + 1.0),
                        "{after:?}"
                    );
                }
                FaultKind::Spikes => assert!(before < 2.0 * fleet.level(f.device, t)),
            }
        }
    }
}
