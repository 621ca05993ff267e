//! Ingest load generator: InfluxDB line protocol batches over HTTP/1.1.
//!
//! ```text
//! cargo run --release -p fleetscore --example ingest_load -- \
//!     --url 'http://127.0.0.1:8080/write?precision=ns' [options]
//! ```
//!
//! It drives `fleetscore serve` (`/write`, `/api/v2/write`) and InfluxDB 1.x
//! (`/write?db=bench&precision=ns`) with the same load, the way Telegraf
//! sends it: a fleet of `--devices` devices (default 10,000), each line one
//! device at one time with `--fields` numeric fields (default 5, so 5
//! readings a line), `--lines` lines a request (default 5,000, i.e. 25,000
//! readings). Line `i` of the whole run is device `i % devices` at time
//! `--start-ns + (i / devices) * --interval-ns`, so every reading of a run
//! (and of runs with disjoint `--first-batch` ranges) has its own
//! (device, field, timestamp) and a store that overwrites duplicates, as
//! InfluxDB does, must still keep every one of them.
//!
//! All request bodies are generated before the clock starts; then
//! `--connections` threads, each with one keep-alive connection, take the
//! next batch from a shared counter and POST it, waiting for the answer
//! before sending the next (as Telegraf's output does). The run ends when
//! the `--batches` are sent or `--duration` seconds have passed. Every
//! answer must be 2xx; any other answer, or a connection error, is counted
//! as a failure and makes the run invalid (exit code 1). Only acknowledged
//! readings count towards readings/s.
//!
//! Output: readings/s acknowledged, requests/s, latency percentiles and
//! this process's own CPU use (the generator shares the machine with the
//! server it drives); `--json` prints one JSON object instead.
//!
//! Plain std: threads, `TcpStream`, hand-written HTTP/1.1 (Content-Length
//! and chunked answers, `Connection: close` honoured by reconnecting).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: ingest_load --url URL [options]

  --url URL            http://HOST:PORT/PATH?QUERY to POST to (required)
  --connections C      concurrent keep-alive connections (default 4)
  --batches N          requests to send (default 400)
  --first-batch K      number of the first batch; batches K..K+N are sent,
                       so runs with disjoint ranges carry disjoint readings
                       (default 0)
  --duration S         stop taking new batches after S seconds (default: none)
  --lines L            lines per request (default 5000)
  --devices D          devices in the fleet (default 10000)
  --fields F           numeric fields per line, 1..=8 (default 5)
  --measurement M      measurement name (default sensors)
  --start-ns T         timestamp of the first round (default 1700000000000000000)
  --interval-ns I      time between two lines of one device (default 1000000000)
  --token T            send Authorization: Token T
  --json               print one JSON object instead of text
";

const FIELD_NAMES: [&str; 8] = ["temp", "hum", "pres", "vib", "volt", "amp", "rpm", "flow"];

struct Args {
    host: String,
    addr: std::net::SocketAddr,
    path: String,
    connections: usize,
    batches: usize,
    first_batch: usize,
    duration: Option<f64>,
    lines: usize,
    devices: usize,
    fields: usize,
    measurement: String,
    start_ns: i64,
    interval_ns: i64,
    token: Option<String>,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut a = Args {
        host: String::new(),
        addr: "127.0.0.1:1".parse().unwrap(),
        path: String::new(),
        connections: 4,
        batches: 400,
        first_batch: 0,
        duration: None,
        lines: 5000,
        devices: 10_000,
        fields: 5,
        measurement: "sensors".into(),
        start_ns: 1_700_000_000_000_000_000,
        interval_ns: 1_000_000_000,
        token: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--json" {
            a.json = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| -> Result<usize, String> {
            v.replace('_', "")
                .parse()
                .map_err(|_| format!("{flag}: `{v}` is not a number"))
        };
        let int = |v: &str| -> Result<i64, String> {
            v.replace('_', "")
                .parse()
                .map_err(|_| format!("{flag}: `{v}` is not an integer"))
        };
        match flag.as_str() {
            "--url" => url = Some(value),
            "--connections" => a.connections = num(&value)?,
            "--batches" => a.batches = num(&value)?,
            "--first-batch" => a.first_batch = num(&value)?,
            "--duration" => {
                a.duration = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--duration: `{value}` is not a number"))?,
                );
            }
            "--lines" => a.lines = num(&value)?,
            "--devices" => a.devices = num(&value)?,
            "--fields" => a.fields = num(&value)?,
            "--measurement" => a.measurement = value,
            "--start-ns" => a.start_ns = int(&value)?,
            "--interval-ns" => a.interval_ns = int(&value)?,
            "--token" => a.token = Some(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let rest = url
        .strip_prefix("http://")
        .ok_or("--url must start with http:// (no TLS)")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    a.addr = host
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to nothing"))?;
    a.host = host.to_string();
    a.path = path.to_string();
    if a.connections == 0 || a.lines == 0 || a.devices == 0 || a.batches == 0 {
        return Err("--connections, --lines, --devices and --batches must be positive".into());
    }
    if !(1..=FIELD_NAMES.len()).contains(&a.fields) {
        return Err(format!("--fields must be 1..={}", FIELD_NAMES.len()));
    }
    Ok(a)
}

/// A small deterministic hash (splitmix64) for the field values.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn push_uint(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_uint(out, v.unsigned_abs());
}

/// Writes `hundredths / 100` with two decimals, e.g. 2153 → `21.53`.
fn push_centi(out: &mut Vec<u8>, hundredths: i64) {
    if hundredths < 0 {
        out.push(b'-');
    }
    let h = hundredths.unsigned_abs();
    push_uint(out, h / 100);
    out.push(b'.');
    out.push(b'0' + (h / 10 % 10) as u8);
    out.push(b'0' + (h % 10) as u8);
}

/// The body of batch `k`: lines `k*lines .. (k+1)*lines` of the run.
fn body(a: &Args, k: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.lines * (40 + 14 * a.fields));
    // Typical magnitude of each field, in hundredths.
    const BASE: [i64; 8] = [2150, 4000, 101_325, 3, 23_000, 1200, 150_000, 870];
    const SPREAD: u64 = 500;
    for i in k * a.lines..(k + 1) * a.lines {
        let device = i % a.devices;
        let round = (i / a.devices) as i64;
        let ts = a.start_ns + round * a.interval_ns;
        out.extend_from_slice(a.measurement.as_bytes());
        out.extend_from_slice(b",device=d");
        push_uint(&mut out, device as u64);
        for (f, name) in FIELD_NAMES[..a.fields].iter().enumerate() {
            out.push(if f == 0 { b' ' } else { b',' });
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            let noise = (mix((i as u64) << 3 | f as u64) % SPREAD) as i64 - SPREAD as i64 / 2;
            push_centi(&mut out, BASE[f] + noise);
        }
        out.push(b' ');
        push_int(&mut out, ts);
        out.push(b'\n');
    }
    out
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

fn connect(a: &Args) -> std::io::Result<Conn> {
    let s = TcpStream::connect(a.addr)?;
    s.set_nodelay(true)?;
    Ok(Conn {
        reader: BufReader::with_capacity(64 << 10, s.try_clone()?),
        writer: s,
    })
}

/// What an answer was.
struct Answer {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn read_line(r: &mut BufReader<TcpStream>, line: &mut String) -> std::io::Result<()> {
    line.clear();
    if r.read_line(line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed by the server",
        ));
    }
    Ok(())
}

fn read_answer(r: &mut BufReader<TcpStream>) -> std::io::Result<Answer> {
    let mut line = String::new();
    read_line(r, &mut line)?;
    // "HTTP/1.1 204 No Content"
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = line.starts_with("HTTP/1.0");
    loop {
        read_line(r, &mut line)?;
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(bad(format!("bad header {h:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| bad("bad Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line(r, &mut line)?;
            let size = line.trim_end().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    read_line(r, &mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..])?;
            read_line(r, &mut line)?; // CRLF after the chunk
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
        // No length: the body runs to the end of the connection.
        r.read_to_end(&mut body)?;
        close = true;
    }
    Ok(Answer {
        status,
        close,
        body,
    })
}

#[derive(Default)]
struct Tally {
    ok_batches: usize,
    ok_readings: usize,
    failures: usize,
    first_failure: Option<String>,
    latencies_us: Vec<u32>,
}

fn worker(
    a: &Args,
    bodies: &[Vec<u8>],
    next: &AtomicUsize,
    deadline: Option<Instant>,
    readings_per_batch: usize,
) -> Tally {
    let mut t = Tally::default();
    let fail = |t: &mut Tally, why: String| {
        t.failures += 1;
        if t.first_failure.is_none() {
            t.first_failure = Some(why);
        }
    };
    let mut conn: Option<Conn> = None;
    let auth = match &a.token {
        Some(tok) => format!("Authorization: Token {tok}\r\n"),
        None => String::new(),
    };
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(body) = bodies.get(i) else { break };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: fleetscore-ingest-load\r\n\
             Content-Type: text/plain; charset=utf-8\r\n{auth}Content-Length: {}\r\n\r\n",
            a.path,
            a.host,
            body.len()
        );
        let start = Instant::now();
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(a) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    fail(&mut t, format!("connecting to {}: {e}", a.addr));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        let sent = c
            .writer
            .write_all(head.as_bytes())
            .and_then(|_| c.writer.write_all(body));
        let answer = sent.and_then(|_| read_answer(&mut c.reader));
        let elapsed = start.elapsed();
        match answer {
            Ok(ans) => {
                if (200..300).contains(&ans.status) {
                    t.ok_batches += 1;
                    t.ok_readings += readings_per_batch;
                    t.latencies_us
                        .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                } else {
                    let text =
                        String::from_utf8_lossy(&ans.body[..ans.body.len().min(300)]).into_owned();
                    fail(&mut t, format!("batch {i}: HTTP {}: {text}", ans.status));
                }
                if ans.close {
                    conn = None;
                }
            }
            Err(e) => {
                fail(&mut t, format!("batch {i}: {e}"));
                conn = None;
            }
        }
    }
    t
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process from /proc/self/stat (Linux), in clock
    // ticks of 1/100 s; 0 where unavailable.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split(' ').collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (1-based) are 12 and 13 after the comm field.
    (tick(11) + tick(12)) / 100.0
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            if !e.is_empty() {
                eprintln!("ingest_load: {e}");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let readings_per_batch = a.lines * a.fields;

    // Generate every body before the clock starts.
    let gen_start = Instant::now();
    let bodies: Arc<Vec<Vec<u8>>> = {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let slots: Vec<Mutex<Vec<u8>>> = (0..a.batches).map(|_| Mutex::new(Vec::new())).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= a.batches {
                        break;
                    }
                    *slots[j].lock().unwrap() = body(&a, a.first_batch + j);
                });
            }
        });
        Arc::new(slots.into_iter().map(|m| m.into_inner().unwrap()).collect())
    };
    let body_bytes: usize = bodies.iter().map(Vec::len).sum();
    let gen_secs = gen_start.elapsed().as_secs_f64();
    if !a.json {
        eprintln!(
            "generated {} batches x {} lines x {} fields = {} readings, {:.1} MB, in {:.2} s",
            a.batches,
            a.lines,
            a.fields,
            a.batches * readings_per_batch,
            body_bytes as f64 / 1e6,
            gen_secs
        );
    }

    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let deadline = a.duration.map(|d| start + Duration::from_secs_f64(d));
    let handles: Vec<_> = (0..a.connections)
        .map(|_| {
            let (a, bodies, next) = (Arc::clone(&a), Arc::clone(&bodies), Arc::clone(&next));
            std::thread::spawn(move || worker(&a, &bodies, &next, deadline, readings_per_batch))
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        let t = h.join().expect("worker thread panicked");
        total.ok_batches += t.ok_batches;
        total.ok_readings += t.ok_readings;
        total.failures += t.failures;
        if total.first_failure.is_none() {
            total.first_failure = t.first_failure;
        }
        total.latencies_us.extend(t.latencies_us);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let lat = &mut total.latencies_us;
    lat.sort_unstable();
    let (p50, p99, max) = (
        percentile(lat, 0.50),
        percentile(lat, 0.99),
        percentile(lat, 1.0),
    );
    let rps = total.ok_readings as f64 / secs;
    let qps = total.ok_batches as f64 / secs;
    let valid = total.failures == 0;
    if a.json {
        println!(
            "{{\"url_path\":{:?},\"connections\":{},\"lines_per_batch\":{},\"fields\":{},\
             \"batches_ok\":{},\"readings_ok\":{},\"failures\":{},\"first_failure\":{},\
             \"seconds\":{:.6},\"readings_per_s\":{:.1},\"requests_per_s\":{:.3},\
             \"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"body_bytes\":{},\
             \"loadgen_cpu_s\":{:.2},\"gen_cpu_s\":{:.2},\"gen_seconds\":{:.2},\"valid\":{}}}",
            a.path,
            a.connections,
            a.lines,
            a.fields,
            total.ok_batches,
            total.ok_readings,
            total.failures,
            match &total.first_failure {
                Some(f) => format!("{f:?}"),
                None => "null".into(),
            },
            secs,
            rps,
            qps,
            p50,
            p99,
            max,
            body_bytes,
            cpu,
            cpu0,
            gen_secs,
            valid
        );
    } else {
        println!(
            "target: http://{}{} ({} connections, {} lines x {} fields per request)",
            a.host, a.path, a.connections, a.lines, a.fields
        );
        println!(
            "acknowledged: {} requests, {} readings in {:.3} s; failures: {}",
            total.ok_batches, total.ok_readings, secs, total.failures
        );
        if let Some(f) = &total.first_failure {
            println!("first failure: {f}");
        }
        println!(
            "latency: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; \
             load generator CPU {cpu:.2} s ({:.2} cores)",
            cpu / secs
        );
        println!(
            "{:.0} readings/s acknowledged, {qps:.1} requests/s{}",
            rps,
            if valid { "" } else { " (INVALID: failures)" }
        );
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
