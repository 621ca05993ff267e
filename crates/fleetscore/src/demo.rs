//! `fleetscore demo`: the main job end to end on embedded defaults, as a
//! team would run it.
//!
//! 1. Generates a fleet (default 500 devices x 5 tags) with per-device
//!    levels, and two hours of normal history, stored in `raw/`.
//! 2. Trains one `Pipeline(StandardScaler, OneClassSVM(nu=0.01))` per
//!    (device, tag) on that history, in Rust (libsvm's algorithm), and
//!    registers them.
//! 3. Starts the server (`serve`, in this process) and streams the last few
//!    hours of readings, with injected anomalies, through its HTTP line
//!    protocol endpoint, as Telegraf would.
//! 4. Once the ingest log is compacted into `raw/`, lets the hourly schedule
//!    catch up on those hours: one scheduled job per hour, run by the
//!    server's runner.
//! 5. Prints a summary (models, readings, anomalies found vs injected, job
//!    times) and the dashboard's address, and keeps serving until Ctrl-C
//!    (`--exit` stops after the summary).
//!
//! Everything lives in `DATA/demo` (recreated on each run).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use fleetscore_codecs::{read_predictions_parquet_bytes, Readings};
use fleetscore_core::{ModelKey, NANOS_PER_SEC};
use fleetscore_jobs::db::JobFilter;
use fleetscore_models::{train, Gamma, ScalerChoice, SvmParams, TrainParams};
use fleetscore_store::{raw_objects, ImportRequest, HOUR_NS};
use rayon::prelude::*;

use crate::cli::{DemoArgs, Global};
use crate::config::{Config, ScheduleConfig};
use crate::util;

/// Each tag's normal (mean, std).
const TAGS: [(f64, f64); 5] = [
    (20.0, 2.0),
    (55.0, 5.0),
    (1.5, 0.2),
    (300.0, 12.0),
    (80.0, 4.0),
];
/// Hours of normal history the models are trained on.
const TRAIN_HOURS: i64 = 2;

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
}

/// One generated (device, tag) series' level.
fn level(offsets: &[f64], d: usize, t: usize) -> f64 {
    TAGS[t].0 + offsets[d * 5 + t] * TAGS[t].1
}

/// Posts line protocol bodies over one keep-alive connection; returns
/// the number of failed requests.
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

/// A counter's value from the Prometheus text of `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let mut s = TcpStream::connect(addr)?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0))
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
        delay: fleetscore_stream::Span::from_secs(10),
        ..ScheduleConfig::default()
    }
}

pub async fn run(g: &Global, args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.devices > 0 && args.hours > 0 && args.hours <= 48,
        "--devices must be at least 1 and --hours between 1 and 48"
    );
    anyhow::ensure!(
        (0.0..=0.5).contains(&args.anomaly_rate),
        "--anomaly-rate must be between 0 and 0.5"
    );
    // Before minutes of work: a taken port fails now, with what to do.
    util::check_bind(&args.listen)?;
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
    let registry = util::registry(g)?;
    let (devices, hours) = (args.devices, args.hours as i64);
    let step = 30 * NANOS_PER_SEC;
    let per_hour = HOUR_NS / step;
    let now = util::now_ns();
    let end = now.div_euclid(HOUR_NS) * HOUR_NS;
    let start = end - hours * HOUR_NS;
    let train_from = start - TRAIN_HOURS * HOUR_NS;
    let mut rng = Rng(args.seed);
    let offsets: Vec<f64> = (0..devices * 5).map(|_| rng.normal() * 2.0).collect();
    let name = |d: usize| format!("pump-{:04}", d + 1);

    // 1. History, straight into raw/.
    let mut history = Readings {
        keys: (0..devices)
            .flat_map(|d| (1..=5).map(move |t| (name(d), t.to_string())))
            .collect(),
        ..Readings::default()
    };
    // History every 10 s: more points make tighter estimates of each
    // series' normal range.
    let history_step = 10 * NANOS_PER_SEC;
    for s in 0..TRAIN_HOURS * HOUR_NS / history_step {
        let ts = train_from + s * history_step;
        for d in 0..devices {
            for (t, (_, std)) in TAGS.iter().enumerate() {
                history.ts.push(ts);
                history
                    .value
                    .push(level(&offsets, d, t) + rng.normal() * std);
                history.key.push((d * 5 + t) as u32);
            }
        }
    }
    for (key, data) in raw_objects(&history, b"fleetscore demo history")? {
        store.put(&key, data).await?;
    }
    println!(
        "fleet: {devices} devices x 5 tags; {} readings of history ({TRAIN_HOURS} h at 10 s) in {}",
        history.len(),
        store.url()
    );

    // 2. Train one model per series, in Rust, in parallel.
    let t = Instant::now();
    let params = TrainParams {
        scaler: ScalerChoice::Standard,
        // A wide kernel on standardized values (as the bundled scikit-learn
        // demo models): with few support vectors a narrow one would also
        // reject the middle of the distribution.
        svm: SvmParams {
            nu: 0.01,
            gamma: Gamma::Value(0.1),
            ..SvmParams::default()
        },
    };
    let n_keys = history.keys.len();
    let mut series: Vec<Vec<f64>> = vec![Vec::with_capacity(history.len() / n_keys + 1); n_keys];
    for (k, v) in history.key.iter().zip(&history.value) {
        series[*k as usize].push(*v);
    }
    let fitted: Vec<_> = series
        .par_iter()
        .map(|values| train(values, 1, &params))
        .collect();
    let mut requests = Vec::with_capacity(n_keys);
    for ((d, tag), fit) in history.keys.iter().zip(fitted) {
        let (model, _) = fit.with_context(|| format!("training ({d}, {tag})"))?;
        requests.push(ImportRequest {
            key: ModelKey::new(d.clone(), tag.clone())?,
            model,
            source: "trained by fleetscore demo".into(),
            input: Default::default(),
        });
    }
    registry.import(requests, &util::now_rfc3339()).await?;
    println!(
        "trained {n_keys} models (StandardScaler + OneClassSVM, nu=0.01, gamma=0.1) in Rust in {}",
        util::secs(t.elapsed())
    );

    // 3. The server, with an hourly schedule that has nothing due yet.
    let db = util::job_store(g).await?;
    db.rewind_schedule("hourly", end, now).await?;
    let mut c = Config::default();
    c.server.listen = args.listen.clone();
    c.server.window_flush_interval = fleetscore_stream::Span::from_secs(1);
    c.ingest.compact_interval = fleetscore_stream::Span::from_secs(1);
    c.jobs.tick_interval = fleetscore_stream::Span::from_millis(200);
    c.schedules = vec![demo_schedule(args.hours)];
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let server = {
        let g = g.clone();
        tokio::spawn(
            async move { crate::serve::run_config(&g, c, Some(ready_tx), Some(stop_rx)).await },
        )
    };
    let addr = match ready_rx.await {
        Ok(a) => a,
        Err(_) => {
            return match server.await? {
                Err(e) => Err(e.context("starting the server")),
                Ok(_) => anyhow::bail!("the server stopped before it listened"),
            }
        }
    };

    // 4. Stream the last hours through HTTP line protocol, with anomalies.
    let mut injected: HashSet<(usize, usize, i64)> = HashSet::new();
    let mut bodies: Vec<String> = Vec::new();
    let mut body = String::new();
    let mut lines = 0;
    for s in 0..hours * per_hour {
        let ts = start + s * step;
        for d in 0..devices {
            body.push_str("fleet,device=");
            body.push_str(&name(d));
            for (t, &(_, std)) in TAGS.iter().enumerate() {
                let base = level(&offsets, d, t);
                let v = if rng.uniform() < args.anomaly_rate {
                    injected.insert((d, t, ts));
                    let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
                    base + sign * (6.0 + 4.0 * rng.uniform()) * std
                } else {
                    base + rng.normal() * std
                };
                body.push(if t == 0 { ' ' } else { ',' });
                body.push_str(&format!("{}={v:.4}", t + 1));
            }
            body.push_str(&format!(" {}\n", ts / NANOS_PER_SEC));
            lines += 1;
            if lines % 2000 == 0 {
                bodies.push(std::mem::take(&mut body));
            }
        }
    }
    if !body.is_empty() {
        bodies.push(body);
    }
    let readings = lines * 5;
    let t = Instant::now();
    let chunks: Vec<Vec<String>> = {
        let n = 4.min(bodies.len()).max(1);
        let per = bodies.len().div_ceil(n);
        bodies.chunks(per.max(1)).map(|c| c.to_vec()).collect()
    };
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let hs: Vec<_> = chunks
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
    let ingest_time = t.elapsed();
    println!(
        "streamed {readings} readings ({hours} h at 30 s, {} injected anomalies) to http://{addr}/write in {} ({:.0} readings/s, each acknowledged once durable)",
        injected.len(),
        util::secs(ingest_time),
        readings as f64 / ingest_time.as_secs_f64()
    );

    // 5. Once it is all in raw/, let the schedule catch up on those hours.
    let t = Instant::now();
    loop {
        let done = tokio::task::spawn_blocking(move || {
            metric(addr, "fleetscore_compaction_readings_total")
        })
        .await??;
        if done >= readings as f64 {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(120),
            "the ingest log was not compacted into raw/ within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.rewind_schedule("hourly", start, util::now_ns()).await?;
    let t = Instant::now();
    let mut next_note = Duration::from_secs(10);
    let jobs = loop {
        let jobs = db
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
            break jobs;
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
    };
    let mut jobs = jobs;
    jobs.sort_by_key(|j| j.window_start);
    for j in &jobs {
        // As `serve` says it (failed models are few here: by reason is
        // left to `jobs show`).
        println!("  {}", crate::jobs_cmd::finished_line(j, &[]));
    }

    // 6. Found vs injected, from the predictions in the store.
    let wanted: HashSet<String> = (0..devices).map(name).collect();
    let mut flagged = 0usize;
    let mut found = 0usize;
    for key in store.list("predictions/").await? {
        if !key.ends_with(".parquet") {
            continue;
        }
        let Some(data) = store.get(&key).await? else {
            continue;
        };
        let rows = read_predictions_parquet_bytes(data, &key, |r| r.prediction == 1)?;
        for r in rows {
            if !wanted.contains(&r.device) || r.ts < start || r.ts >= end {
                continue;
            }
            flagged += 1;
            let d: usize = r
                .device
                .trim_start_matches("pump-")
                .parse::<usize>()
                .unwrap_or(0);
            let t: usize = r.tag.parse().unwrap_or(0);
            if d > 0 && t > 0 && injected.contains(&(d - 1, t - 1, r.ts)) {
                found += 1;
            }
        }
    }
    let rows: u64 = jobs.iter().map(|j| j.rows).sum();
    let failed_jobs = jobs
        .iter()
        .filter(|j| j.state != fleetscore_jobs::db::JobState::Succeeded)
        .count();
    println!(
        "scored {rows} readings in {} hourly jobs ({failed_jobs} failed): {flagged} flagged; {found} of {} injected anomalies found ({:.1}%); {} of {} normal readings flagged ({:.1}%)",
        jobs.len(),
        injected.len(),
        if injected.is_empty() { 100.0 } else { found as f64 * 100.0 / injected.len() as f64 },
        flagged - found,
        readings - injected.len(),
        (flagged - found) as f64 * 100.0 / (readings - injected.len()).max(1) as f64
    );
    println!(
        "demo ready in {}; data in {}",
        util::secs(started.elapsed()),
        home.display()
    );
    println!("dashboard: http://{addr}/   API: http://{addr}/v1/openapi.json   metrics: http://{addr}/metrics");
    if args.exit {
        let _ = stop_tx.send(());
    } else {
        println!("serving; press Ctrl-C to stop");
        // Keep the sender: the server stops on Ctrl-C.
        std::mem::forget(stop_tx);
    }
    let code = server.await??;
    Ok(if failed_jobs == 0 {
        code
    } else {
        ExitCode::from(3)
    })
}
