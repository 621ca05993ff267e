//! The dashboard at `/`: served by the real binary, and driven in headless
//! Chromium against a real `fleetscore serve` holding real data (the bundled
//! scikit-learn demo models, readings with anomalies injected in known hours,
//! hourly backfill jobs, one of them failed).
//!
//! The browser test talks WebDriver (plain HTTP and JSON) to Debian's
//! `chromedriver`, so it can click like a user and wait for what the page
//! shows; it needs `chromium` and `chromium-driver`
//! (`apt-get install chromium chromium-driver`), so a plain `cargo test`
//! skips it and `.ci/run` runs it with `--include-ignored`. It saves a
//! screenshot to `target/dashboard.png` and prints the path.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{run, text, Server};

#[test]
fn the_page_and_its_assets_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (status, body) = server.request("GET", "/", &[], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<title>fleetscore</title>") && body.contains("/ui/app.js"));
    let (status, body) = server.request("GET", "/ui/app.js", &[], b"");
    assert_eq!(status, 200);
    assert!(body.contains("/v1/overview"), "the script reads the API");
    let (status, body) = server.request("GET", "/ui/app.css", &[], b"");
    assert_eq!(status, 200);
    assert!(body.contains(".heatmap"));
    server.terminate();
}

// ---------------------------------------------------------------- the data

const DEVICES: [&str; 4] = ["pump-01", "pump-02", "pump-03", "pump-04"];
/// Each tag's normal (mean, std), as the bundled models were fitted
/// (`demo/make_models.py`).
const TAGS: [(f64, f64); 5] = [
    (20.0, 2.0),
    (55.0, 5.0),
    (1.5, 0.2),
    (300.0, 12.0),
    (80.0, 4.0),
];
const START: &str = "2024-03-01T00:00:00Z";
const HOURS: i64 = 6;

/// Injected anomalies: (device, hour, tag index, minutes into the hour),
/// eight standard deviations away, where no model can miss them; every
/// other reading is within 0.1 standard deviations of the mean, where none
/// flags it (the tag 2 model flags a thin band around +0.35 std).
const INJECTED: &[(&str, i64, usize, &[i64])] = &[
    ("pump-02", 1, 0, &[10, 11, 12, 13, 14]),
    ("pump-03", 2, 2, &[30, 45]),
    ("pump-04", 3, 1, &[5, 6, 7]),
    ("pump-04", 3, 3, &[50, 51]),
    ("pump-04", 4, 4, &[0]),
];

/// Readings of tag 9 that no model scores: a failed model in hour 5.
const UNSCORED: (&str, &str, i64) = ("pump-03", "9", 5);

fn hour(h: i64) -> String {
    format!("2024-03-01T{h:02}:00:00Z")
}

fn readings_csv() -> String {
    let start = fleetscore_core::parse_ts(START).unwrap();
    let mut csv = String::from("TS,Device,Tag,Value\n");
    for m in 0..HOURS * 60 {
        let (h, min) = (m / 60, m % 60);
        let ts = fleetscore_core::format_ts(start + m * 60_000_000_000);
        for (d, dev) in DEVICES.iter().enumerate() {
            for (t, (mean, std)) in TAGS.iter().enumerate() {
                let injected = INJECTED.iter().any(|(id, ih, it, mins)| {
                    id == dev && *ih == h && *it == t && mins.contains(&min)
                });
                let v = if injected {
                    mean + if d % 2 == 0 { -8.0 } else { 8.0 } * std
                } else {
                    mean + 0.1 * std * ((m + 7 * d as i64 + 3 * t as i64) as f64 / 9.0).sin()
                };
                csv.push_str(&format!("{ts},{dev},{},{v:.4}\n", t + 1));
            }
            if *dev == UNSCORED.0 && h == UNSCORED.2 {
                csv.push_str(&format!("{ts},{dev},{},1.0\n", UNSCORED.1));
            }
        }
    }
    csv
}

/// Models, readings and jobs: six hourly backfill jobs, then the last hour
/// again with no failed model allowed, which fails.
fn fill(data: &Path) {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo");
    for tag in 1..=5 {
        let file = demo.join(format!("model_fallback_{tag}.pkl"));
        let o = run(
            data,
            &[
                "models",
                "import",
                file.to_str().unwrap(),
                "--device",
                "*",
                "--tag",
                &tag.to_string(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let csv = data.join("readings.csv");
    std::fs::write(&csv, readings_csv()).unwrap();
    let o = run(data, &["ingest", csv.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        data,
        &[
            "backfill",
            "--from",
            START,
            "--to",
            &hour(HOURS),
            "--batch-size",
            "6",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        data,
        &[
            "backfill",
            "--from",
            &hour(5),
            "--to",
            &hour(6),
            "--max-failed-models",
            "0",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "past its threshold: {}", text(&o));
}

// ---------------------------------------------------------------- WebDriver

/// A chromedriver child and one browser session, over WebDriver's HTTP+JSON.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(width: u32, height: u32) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(std::env::var("CHROMEDRIVER").unwrap_or("chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run chromedriver ({e}). This test needs Chromium and its driver: \
                     apt-get install chromium chromium-driver (.ci/run does this)"
                )
            });
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.http("GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                format!("--window-size={width},{height}"),
            ]
        });
        if let Ok(bin) = std::env::var("CHROME_BIN") {
            options["binary"] = json!(bin);
        }
        let v = b
            .http(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": options,
                }}})),
            )
            .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e}"));
        b.session = v["sessionId"].as_str().unwrap().to_string();
        b
    }

    /// One request; the answer's `value`, or the WebDriver error.
    fn http(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).map_err(|e| e.to_string())?;
        let (mut len, mut chunked) = (None, false);
        loop {
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        let mut raw = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).map_err(|e| e.to_string())?;
                let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = len {
            raw.resize(n, 0);
            r.read_exact(&mut raw).map_err(|e| e.to_string())?;
        } else {
            r.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        }
        let v: Value = serde_json::from_slice(&raw)
            .map_err(|e| format!("{status}: {e}: {}", String::from_utf8_lossy(&raw)))?;
        if !status.contains(" 200") {
            return Err(format!("{method} {path}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.http(method, &path, body).unwrap()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Waits until `expr` is truthy in the page.
    fn wait_for(&self, expr: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(&format!("return !!({expr});"));
            if v == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self.js("return document.body.innerText;");
                panic!("timed out waiting for {what} ({expr}); the page shows:\n{body}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first element matching `css`, as WebDriver names it.
    fn find(&self, css: &str) -> Value {
        self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
    }

    fn click(&self, css: &str) {
        let id = self.find(css)[ELEMENT].as_str().unwrap().to_string();
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Types `text` into an input, as a user does.
    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css)[ELEMENT].as_str().unwrap().to_string();
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Moves the mouse over the middle of an element (hover).
    fn hover(&self, css: &str) {
        let el = self.find(css);
        self.cmd(
            "POST",
            "/actions",
            Some(json!({"actions": [{
                "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
                "actions": [{"type": "pointerMove", "origin": el, "x": 0, "y": 0, "duration": 0}],
            }]})),
        );
    }

    /// Makes the window as tall as the page, so a screenshot shows all of it.
    fn fit_page(&self, width: u64) {
        let h = self.js("return document.documentElement.scrollHeight;");
        let h = h.as_u64().unwrap_or(2000) + 120;
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": h})),
        );
    }

    fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None);
        std::fs::write(path, base64_decode(b64.as_str().unwrap())).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, c)| acc | val(*c) << (18 - 6 * i));
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..chunk.len()]);
    }
    out
}

// ---------------------------------------------------------------- the test

#[test]
#[ignore = "needs chromium and chromium-driver (apt-get install chromium chromium-driver); .ci/run runs it"]
fn dashboard_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    fill(data);
    // No schedule: the jobs are the backfills above, nothing else.
    let config = data.join("fleetscore.toml");
    std::fs::write(&config, "schedules = []\n").unwrap();
    let server = Server::start(data, &["--config", config.to_str().unwrap()]);
    let url = format!("http://{}/", server.addr);
    let browser = Browser::start(1400, 1000);
    browser.goto(&url);
    browser.wait_for("document.body.dataset.ready === '1'", "the first load");

    let errors =
        browser.js("return [...document.querySelectorAll('.error')].map(e => e.textContent);");
    assert_eq!(errors, json!([]), "the page shows errors");

    // Fleet overview: the devices, the default 24 hours up to the newest
    // job's window, anomalies exactly where they were injected.
    let ov = browser.js(
        "const cells = [...document.querySelectorAll('#heatmap-svg .cell')];
         return {
           devices: [...document.querySelectorAll('#heatmap-svg .dev')].map(e => e.textContent),
           hours: [...new Set(cells.map(c => c.dataset.hour))],
           anomalies: cells.filter(c => c.dataset.anomalies !== '0')
             .map(c => [c.dataset.device, c.dataset.hour, Number(c.dataset.anomalies)]),
           scored: cells.filter(c => c.dataset.rows !== '0')
             .map(c => [c.dataset.device, c.dataset.hour, Number(c.dataset.rows)]),
           stats: document.getElementById('stats').innerText,
         };",
    );
    eprintln!("overview: {ov:#}");
    assert_eq!(ov["devices"], json!(DEVICES));
    let hours: Vec<&str> = ov["hours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(hours.len(), 24, "{hours:?}");
    assert_eq!(hours.last(), Some(&hour(HOURS - 1).as_str()));
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (dev, h, _, mins) in INJECTED {
        *expected.entry((dev.to_string(), hour(*h))).or_default() += mins.len() as u64;
    }
    let got: BTreeMap<(String, String), u64> = ov["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                (c[0].as_str().unwrap().into(), c[1].as_str().unwrap().into()),
                c[2].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected, "anomalous cells of the heat map");
    // Every device has readings scored in each of the first five hours.
    for dev in DEVICES {
        for h in 0..5 {
            assert!(
                ov["scored"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c[0] == dev && c[1] == hour(h) && c[2].as_u64() >= Some(300)),
                "{dev} {h}h: {}",
                ov["scored"]
            );
        }
    }
    let stats = ov["stats"].as_str().unwrap();
    let total: u64 = expected.values().sum();
    assert!(stats.contains(&format!("\n{total}\nanomalies")), "{stats}");

    // Job timeline: the seven jobs, the failed one, the one with a failed
    // model.
    let jobs = browser.js(
        "return [...document.querySelectorAll('#timeline-svg .job')].map(g => ({
           id: Number(g.dataset.jobId), state: g.dataset.state,
           failed: Number(g.dataset.failedModels), text: g.textContent }));",
    );
    eprintln!("jobs: {jobs:#}");
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 7, "{jobs:?}");
    let count = |state: &str| jobs.iter().filter(|j| j["state"] == state).count();
    assert_eq!((count("succeeded"), count("failed")), (6, 1));
    let failed = jobs.iter().find(|j| j["state"] == "failed").unwrap();
    assert!(
        failed["text"].as_str().unwrap().contains("05:00–06:00"),
        "{failed}"
    );
    assert!(jobs.iter().any(|j| j["state"] == "succeeded"
        && j["failed"] == 1
        && j["text"].as_str().unwrap().contains("1 failed model")));
    assert!(jobs
        .iter()
        .any(|j| j["text"].as_str().unwrap().contains("01:00–02:00")
            && j["text"].as_str().unwrap().contains("5 anomalies")));

    // Slowest tasks: a table of the slowest ten.
    let slow = browser.js("return document.querySelectorAll('#slowest-tbl tbody tr').length;");
    assert_eq!(slow, json!(10));

    // A job's tasks and failures, by clicking its bar.
    let id = failed["id"].as_i64().unwrap();
    browser.click(&format!("#timeline-svg .job[data-job-id='{id}'] .bar"));
    browser.wait_for(
        &format!("document.querySelector('#job-detail-body[data-job-id=\"{id}\"]')"),
        "the failed job's details",
    );
    let detail = browser
        .js("return document.getElementById('job-detail-body').innerText;")
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("failed") && detail.contains(UNSCORED.0) && detail.contains("no_model"),
        "{detail}"
    );

    // Drill-down: click the anomalous hour of pump-02; every tag's readings,
    // tag 1 with its five anomalies marked.
    browser.click(&format!(
        "#heatmap-svg .cell[data-device='pump-02'][data-hour='{}']",
        hour(1)
    ));
    browser.wait_for(
        "document.getElementById('drill').dataset.ready === '1'",
        "the drill-down",
    );
    let series = browser.js(
        "return [...document.querySelectorAll('#drill .series-svg')].map(s => ({
           tag: s.dataset.tag, readings: Number(s.dataset.readings),
           anomalies: Number(s.dataset.anomalies),
           marks: s.querySelectorAll('.anomaly').length,
           lines: s.querySelectorAll('.line').length }));",
    );
    eprintln!("drill-down: {series:#}");
    let series = series.as_array().unwrap();
    assert_eq!(series.len(), 5, "{series:?}");
    for (i, s) in series.iter().enumerate() {
        assert_eq!(s["tag"], (i + 1).to_string());
        assert_eq!(s["readings"], HOURS * 60, "{s}");
        assert!(s["lines"].as_u64() >= Some(1), "{s}");
        let n = if i == 0 { 5 } else { 0 };
        assert_eq!(
            (s["anomalies"].as_u64(), s["marks"].as_u64()),
            (Some(n), Some(n)),
            "{s}"
        );
    }
    assert_eq!(
        browser.js("return location.hash;"),
        json!("#device=pump-02"),
        "the drill-down can be linked"
    );

    // The heat map's rows: most anomalies first, then filtered by name.
    browser.click("#sort option[value='anomalies']");
    let labels = "[...document.querySelectorAll('#heatmap-svg .dev')].map(e => e.textContent)";
    browser.wait_for(
        &format!("{labels}.join() === 'pump-04,pump-02,pump-03,pump-01'"),
        "devices sorted by anomalies",
    );
    browser.type_into("#device-filter", "02");
    browser.wait_for(&format!("{labels}.join() === 'pump-02'"), "the filter");
    browser.js(
        "const f = document.getElementById('device-filter'); f.value = '';
         f.dispatchEvent(new Event('input'));",
    );
    browser.wait_for(&format!("{labels}.length === 4"), "all devices again");

    // The whole page, with a heat map cell's tooltip showing.
    browser.fit_page(1400);
    browser.js("window.scrollTo(0, 0);");
    browser.hover(&format!(
        "#heatmap-svg .cell[data-device='pump-04'][data-hour='{}']",
        hour(3)
    ));
    let tip = browser
        .js("const t = document.getElementById('tooltip'); return t.hidden ? '' : t.textContent;");
    assert!(
        tip.as_str().unwrap().contains("5 anomalies"),
        "tooltip: {tip}"
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard.png");
    browser.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000);
    println!("screenshot: {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
    drop(browser);
    server.terminate();
}
