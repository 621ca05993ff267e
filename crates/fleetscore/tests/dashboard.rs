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
use common::{import_as, run, text, Server};

/// A config with no schedule: the tests' jobs are the backfills they run.
fn no_schedules(data: &Path) -> PathBuf {
    let config = data.join("fleetscore.toml");
    std::fs::write(&config, "schedules = []\n").unwrap();
    config
}

#[test]
fn the_page_and_its_assets_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = no_schedules(dir.path());
    let server = Server::start(dir.path(), &["--config", config.to_str().unwrap()]);
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

// ---------------------------------------------------------------- where the data is

fn get_json(server: &Server, path: &str) -> Value {
    let (status, body) = server.request("GET", path, &[], b"");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `GET /v1/extent`: the first and last hour holding scored predictions and
/// stored readings, found from the store's partitions; hours whose jobs
/// scored nothing (an idle window, a model with no readings) do not count.
#[test]
fn extent_finds_where_predictions_and_readings_are() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let config = no_schedules(data);
    let config = ["--config", config.to_str().unwrap()];
    let server = Server::start(data, &config);
    let empty = get_json(&server, "/v1/extent");
    assert_eq!(empty["predictions"], Value::Null, "{empty}");
    assert_eq!(empty["readings"], Value::Null, "{empty}");
    assert_eq!(empty["max_hours"], 24 * 31);
    assert_eq!(empty["complete"], true);
    server.terminate();

    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo/model_fallback_1.pkl");
    let models = [("*", "1"), ("d0", "1")];
    for (device, tag) in models {
        import_as(data, &demo, device, tag);
    }
    // Readings in three hours on three days; two of them scored. Then an
    // hour later than all of them, scored too, that scores nothing: its
    // only readings are of a pair without a model (`no_model`), and d0/1's
    // own model has none there (`no_data`), but gives the job a task, so
    // the hour has a part (with no rows) and a manifest counting none.
    let mut csv = String::from("TS,Device,Tag,Value\n");
    for (day, hour, pair) in [
        (1, 10, "d0,1"),
        (3, 7, "d0,1"),
        (5, 2, "d0,1"),
        (9, 0, "d9,9"),
    ] {
        for m in 0..30 {
            csv.push_str(&format!(
                "2019-06-{day:02}T{hour:02}:{m:02}:00Z,{pair},20.0\n"
            ));
        }
    }
    std::fs::write(data.join("r.csv"), csv).unwrap();
    let o = run(data, &["ingest", data.join("r.csv").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for (from, to) in [
        ("2019-06-01T10:00:00Z", "2019-06-01T11:00:00Z"),
        ("2019-06-03T07:00:00Z", "2019-06-03T08:00:00Z"),
        ("2019-06-09T00:00:00Z", "2019-06-09T01:00:00Z"),
    ] {
        let o = run(
            data,
            &[
                "backfill",
                "--from",
                from,
                "--to",
                to,
                "--max-failed-models",
                "100%",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let idle: Vec<String> =
        std::fs::read_dir(data.join("store/predictions/date=2019-06-09/hour=00"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
    assert!(
        idle.iter().any(|f| f.ends_with(".parquet"))
            && idle.iter().any(|f| f.starts_with("manifest-")),
        "{idle:?}"
    );

    let server = Server::start(data, &config);
    let x = get_json(&server, "/v1/extent");
    eprintln!("{x:#}");
    assert_eq!(x["complete"], true, "{x}");
    let at = |first: &str, last: &str, end: &str| {
        json!({"first_hour": format!("2019-06-{first}:00:00Z"),
               "last_hour": format!("2019-06-{last}:00:00Z"),
               "end": format!("2019-06-{end}:00:00Z")})
    };
    // Predictions: the two hours that scored rows, not the later one that
    // scored none; readings: all four hours, the unscored ones too.
    assert_eq!(x["predictions"], at("01T10", "03T07", "03T08"), "{x}");
    assert_eq!(x["readings"], at("01T10", "09T00", "09T01"), "{x}");
    // Documented.
    let doc = get_json(&server, "/v1/openapi.json");
    assert!(doc["paths"]["/v1/extent"]["get"].is_object(), "{doc}");
    // The slowest tasks say what they do: reading the data or scoring.
    let slow = get_json(&server, "/v1/tasks/slowest?limit=100");
    let kinds: std::collections::BTreeSet<&str> = slow["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["map", "score"].into(), "{slow}");
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
const HOURS: i64 = 6;
const HOUR_NS: i64 = 3_600_000_000_000;

/// The first hour of the readings: midnight UTC five days ago, so that the
/// data is several days older than now, as a backfill is.
fn start() -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        now.div_euclid(24 * HOUR_NS) * 24 * HOUR_NS - 5 * 24 * HOUR_NS
    })
}

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

/// The start of hour `h` of the readings (negative: before them), as the
/// page writes times: `2024-03-01T05:00:00Z`.
fn hour(h: i64) -> String {
    fleetscore_core::format_ts(start() + h * HOUR_NS).replace(".000Z", "Z")
}

fn readings_csv() -> String {
    let start = start();
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
        import_as(data, &file, "*", &tag.to_string());
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
            &hour(0),
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
    // An hour without readings: a skipped job, with its reason.
    let o = run(
        data,
        &["backfill", "--from", &hour(HOURS), "--to", &hour(HOURS + 1)],
    );
    assert!(
        o.status.success(),
        "a window without readings: {}",
        text(&o)
    );
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

/// What the heat map shows: its range, the devices in order, the hours, the
/// cells with anomalies and with scored readings, the stats, the fleet row.
fn overview(b: &Browser) -> Value {
    b.js(
        "const cells = [...document.querySelectorAll('#heatmap-svg .cell')];
         const fleet = [...document.querySelectorAll('#heatmap-svg .fleet-hour')];
         const total = document.getElementById('fleet-total');
         return {
           range: document.getElementById('overview').dataset.range,
           devices: [...document.querySelectorAll('#heatmap-svg .dev')].map(e => e.textContent),
           hours: [...new Set(cells.map(c => c.dataset.hour))],
           anomalies: cells.filter(c => c.dataset.anomalies !== '0')
             .map(c => [c.dataset.device, c.dataset.hour, Number(c.dataset.anomalies)]),
           scored: cells.filter(c => c.dataset.rows !== '0')
             .map(c => [c.dataset.device, c.dataset.hour, Number(c.dataset.rows)]),
           stats: document.getElementById('stats').innerText,
           fleet: fleet.map(g => [g.dataset.hour, Number(g.dataset.anomalies), Number(g.dataset.rows),
                                  (g.querySelector('.fleetnum') || {}).textContent || '']),
           fleet_total: total ? [total.textContent, Number(total.dataset.anomalies), Number(total.dataset.rows)] : null,
           device_totals: [...document.querySelectorAll('#heatmap-svg .devtotal')].map(t => [t.dataset.device, t.textContent]),
           note: document.getElementById('overview-note').hidden ? '' : document.getElementById('overview-note').textContent,
           empty: (document.getElementById('overview-empty') || {}).innerText || '',
         };",
    )
}

/// The anomalous cells `overview` found, by (device, hour).
fn anomalous(ov: &Value) -> BTreeMap<(String, String), u64> {
    ov["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                (c[0].as_str().unwrap().into(), c[1].as_str().unwrap().into()),
                c[2].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The injected anomalies, by (device, hour).
fn injected() -> BTreeMap<(String, String), u64> {
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (dev, h, _, mins) in INJECTED {
        *expected.entry((dev.to_string(), hour(*h))).or_default() += mins.len() as u64;
    }
    expected
}

/// Waits until the overview shows `[from, to)`.
fn wait_range(b: &Browser, from: &str, to: &str, what: &str) {
    b.wait_for(
        &format!("document.getElementById('overview').dataset.range === '{from}/{to}'"),
        what,
    );
}

/// The heat map shows the injected anomalies exactly, in the 24 hours up
/// to the end of the data, and the fleet row their sums.
fn assert_the_data(ov: &Value) {
    assert_eq!(
        ov["range"],
        format!("{}/{}", hour(HOURS - 24), hour(HOURS)),
        "{ov:#}"
    );
    let hours: Vec<&str> = ov["hours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(hours.len(), 24, "{hours:?}");
    assert_eq!(hours.last(), Some(&hour(HOURS - 1).as_str()));
    assert_eq!(anomalous(ov), injected(), "anomalous cells of the heat map");
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
}

#[test]
#[ignore = "needs chromium and chromium-driver (apt-get install chromium chromium-driver); .ci/run runs it"]
fn dashboard_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    fill(data);
    // No schedule: the jobs are the backfills above, nothing else. Partial
    // writes, so that a bad line becomes a dead letter to show.
    let config = no_schedules(data);
    std::fs::write(&config, "schedules = []\n[ingest]\nbad_lines = \"skip\"\n").unwrap();
    let server = Server::start(data, &["--config", config.to_str().unwrap()]);
    // (Only a bad line: no reading joins the data the page shows.)
    let (status, body) = server.post("/write", &[], "# from a sensor\nm,device=pump-01 t=oops\n");
    assert_eq!(status, 400, "a partial write: {body}");
    let url = format!("http://{}/", server.addr);
    let browser = Browser::start(1400, 1000);
    browser.goto(&url);
    browser.wait_for("document.body.dataset.ready === '1'", "the first load");

    let errors =
        browser.js("return [...document.querySelectorAll('.error')].map(e => e.textContent);");
    assert_eq!(errors, json!([]), "the page shows errors");

    // Fleet overview: the default 24 hours up to the newest job's window,
    // anomalies exactly where they were injected, devices with the most
    // anomalies first (4: 6, 2: 5, 3: 2, 1: none).
    let ov = overview(&browser);
    eprintln!("overview: {ov:#}");
    assert_the_data(&ov);
    assert_eq!(
        ov["devices"],
        json!(["pump-04", "pump-02", "pump-03", "pump-01"]),
        "most anomalies first by default"
    );
    assert_eq!(
        browser.js("return document.getElementById('sort').value;"),
        "anomalies"
    );
    let expected = injected();
    let total: u64 = expected.values().sum();
    let stats = ov["stats"].as_str().unwrap();
    assert!(stats.contains(&format!("\n{total}\nanomalies")), "{stats}");
    assert_eq!(ov["note"], "", "the default range holds the data: no note");
    assert_eq!(
        browser.js("return location.hash;"),
        "",
        "the default view pins nothing"
    );
    // The range bar shows the range and where the data is.
    let bar = browser.js(
        "return { from: document.getElementById('from').value, to: document.getElementById('to').value,
                  extent: document.getElementById('extent').innerText };",
    );
    assert_eq!(bar["from"], hour(HOURS - 24)[..16], "{bar}");
    assert_eq!(bar["to"], hour(HOURS)[..16], "{bar}");
    assert!(
        bar["extent"].as_str().unwrap().contains("predictions"),
        "{bar}"
    );

    // The fleet's row: each hour's anomalies (bar, number, tooltip data),
    // and its total over the range, which the device rows add up to.
    let mut per_hour: BTreeMap<String, u64> = BTreeMap::new();
    for ((_, h), n) in &expected {
        *per_hour.entry(h.clone()).or_default() += n;
    }
    let fleet = ov["fleet"].as_array().unwrap();
    assert_eq!(fleet.len(), 24, "{fleet:?}");
    for f in fleet {
        let h = f[0].as_str().unwrap();
        let n = per_hour.get(h).copied().unwrap_or(0);
        assert_eq!(f[1], n, "fleet anomalies at {h}: {f}");
        assert_eq!(
            f[3],
            if n > 0 { n.to_string() } else { String::new() },
            "the number shown at {h}"
        );
        let scored = h >= hour(0).as_str() && h < hour(HOURS).as_str();
        assert_eq!(
            f[2].as_u64().unwrap() > 0,
            scored,
            "fleet readings at {h}: {f}"
        );
    }
    assert_eq!(
        ov["fleet_total"][0],
        total.to_string(),
        "{}",
        ov["fleet_total"]
    );
    assert_eq!(ov["fleet_total"][1], total);
    let device_sum: u64 = ov["device_totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[1].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(device_sum, total, "{}", ov["device_totals"]);
    assert!(
        ov["fleet_total"][2].as_u64() > Some(4 * 5 * 5 * 60),
        "{}",
        ov["fleet_total"]
    );

    // Job timeline: the seven jobs, the failed one, the one with a failed
    // model.
    let jobs = browser.js(
        "return [...document.querySelectorAll('#timeline-svg .job')].map(g => ({
           id: Number(g.dataset.jobId), state: g.dataset.state,
           failed: Number(g.dataset.failedModels), text: g.textContent }));",
    );
    eprintln!("jobs: {jobs:#}");
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 8, "{jobs:?}");
    let count = |state: &str| jobs.iter().filter(|j| j["state"] == state).count();
    assert_eq!(
        (count("succeeded"), count("failed"), count("skipped")),
        (6, 1, 1)
    );
    let hm = |h: i64| hour(h)[11..16].to_string();
    let failed = jobs.iter().find(|j| j["state"] == "failed").unwrap();
    assert!(
        failed["text"]
            .as_str()
            .unwrap()
            .contains(&format!("{}–{}", hm(5), hm(6))),
        "{failed}"
    );
    assert!(jobs.iter().any(|j| j["state"] == "succeeded"
        && j["failed"] == 1
        && j["text"].as_str().unwrap().contains("1 failed model")));
    assert!(jobs.iter().any(|j| {
        let t = j["text"].as_str().unwrap();
        t.contains(&format!("{}–{}", hm(1), hm(2))) && t.contains("5 anomalies")
    }));

    // Slowest tasks: those that read the data (map tasks, one a job here)
    // apart from those that score it (four a job), each in its own table.
    let slow = browser.js(
        "const t = (id) => [...document.querySelectorAll('#' + id + ' tbody tr')].map(r => r.dataset.kind);
         const head = (id) => [...document.querySelectorAll('#' + id + ' th')].map(th => th.textContent);
         return { read: t('slowest-read-tbl'), score: t('slowest-score-tbl'),
                  read_head: head('slowest-read-tbl'), score_head: head('slowest-score-tbl'),
                  text: document.getElementById('slowest').innerText };",
    );
    eprintln!("slowest: {slow:#}");
    assert_eq!(slow["read"], json!(vec!["map"; 7]), "{slow}");
    assert_eq!(slow["score"], json!(vec!["score"; 10]), "{slow}");
    assert!(
        slow["read_head"]
            .as_array()
            .unwrap()
            .contains(&json!("row groups")),
        "{slow}"
    );
    assert!(
        slow["score_head"]
            .as_array()
            .unwrap()
            .contains(&json!("models")),
        "{slow}"
    );
    let slow_text = slow["text"].as_str().unwrap();
    assert!(
        slow_text.contains("Reading the data") && slow_text.contains("Scoring"),
        "{slow_text}"
    );

    // Rejected messages: the bad line, where it came from and why.
    let rejected = browser.js(
        "return { rows: [...document.querySelectorAll('#rejected-tbl tbody tr')].map(r => [r.dataset.source, r.dataset.reason]),
                  text: document.getElementById('rejected').innerText };",
    );
    eprintln!("rejected: {rejected:#}");
    assert_eq!(rejected["rows"], json!([["http", "syntax"]]), "{rejected}");
    let text = rejected["text"].as_str().unwrap();
    assert!(
        text.contains("/write line 2")
            && text.contains("m,device=pump-01 t=oops")
            && text.contains("1 message refused"),
        "{text}"
    );

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

    // The skipped job's text is a reason in a note, not an error.
    let skipped = jobs.iter().find(|j| j["state"] == "skipped").unwrap();
    let id = skipped["id"].as_i64().unwrap();
    browser.click(&format!("#timeline-svg .job[data-job-id='{id}'] .bar"));
    browser.wait_for(
        &format!("document.querySelector('#job-detail-body[data-job-id=\"{id}\"]')"),
        "the skipped job's details",
    );
    let note = browser.js("const b = document.getElementById('job-detail-body');
         return { note: (b.querySelector('.note') || {}).innerText || '',
                  errors: b.querySelectorAll('.error').length };");
    assert!(
        note["note"]
            .as_str()
            .unwrap()
            .contains("no readings in the window"),
        "{note}"
    );
    assert_eq!(note["errors"], 0, "{note}");

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

    // The heat map's rows by name, back to most anomalies, then filtered.
    let labels = "[...document.querySelectorAll('#heatmap-svg .dev')].map(e => e.textContent)";
    browser.click("#sort option[value='name']");
    browser.wait_for(
        &format!("{labels}.join() === 'pump-01,pump-02,pump-03,pump-04'"),
        "devices sorted by name",
    );
    browser.click("#sort option[value='anomalies']");
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
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let shot = target.join("dashboard.png");
    browser.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000);
    println!("screenshot: {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
    browser.hover("#refresh");
    browser.click("#drill-close");

    // ------------------------------------------------ time navigation
    // A range picked in from/to, here the 24 hours up to now, where
    // nothing is: the page says where the data is and offers to jump;
    // the range is in the URL.
    let now_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
        / HOUR_NS
        * HOUR_NS
        + HOUR_NS;
    let at = |ns: i64| fleetscore_core::format_ts(ns).replace(".000Z", "Z");
    let (recent_from, recent_to) = (at(now_hour - 24 * HOUR_NS), at(now_hour));
    browser.js(&format!(
        "document.getElementById('from').value = '{}';
         document.getElementById('to').value = '{}';",
        &recent_from[..16],
        &recent_to[..16]
    ));
    browser.click("#show");
    wait_range(&browser, &recent_from, &recent_to, "the range picked");
    let ov = overview(&browser);
    eprintln!("the last 24 hours: {ov:#}");
    assert_eq!(ov["devices"], json!([]), "{ov}");
    let empty = ov["empty"].as_str().unwrap();
    assert!(
        empty.contains("Nothing was scored") && empty.contains("Predictions are stored from"),
        "{empty}"
    );
    assert!(empty.contains(&hour(0)[..10]), "says where: {empty}");
    assert_eq!(
        browser.js("return location.hash;"),
        format!("#from={recent_from}&to={recent_to}"),
        "the range can be linked"
    );
    let range_shot = target.join("dashboard-empty-range.png");
    browser.fit_page(1400);
    browser.screenshot(&range_shot);
    eprintln!("screenshot: {}", range_shot.display());

    // Jump to data: the newest hours holding predictions, several days ago.
    browser.click("#jump-to-data");
    wait_range(
        &browser,
        &hour(HOURS - 24),
        &hour(HOURS),
        "the jump to the data",
    );
    let ov = overview(&browser);
    assert_the_data(&ov);
    assert_eq!(
        browser.js("return location.hash;"),
        format!("#from={}&to={}", hour(HOURS - 24), hour(HOURS))
    );

    // Earlier and later, by the range's length.
    browser.click("#earlier");
    wait_range(
        &browser,
        &hour(HOURS - 48),
        &hour(HOURS - 24),
        "the day before",
    );
    assert_eq!(overview(&browser)["devices"], json!([]));
    browser.click("#later");
    wait_range(
        &browser,
        &hour(HOURS - 24),
        &hour(HOURS),
        "back to the data",
    );
    assert_the_data(&overview(&browser));

    // The oldest predictions, from the range bar's extent.
    browser.click("#jump-oldest");
    wait_range(&browser, &hour(0), &hour(24), "the oldest predictions");
    assert_eq!(anomalous(&overview(&browser)), injected());

    // A link with a range and a device opens both, also when reloaded.
    browser.goto(&format!(
        "{url}#from={}&to={}&device=pump-04",
        hour(0),
        hour(HOURS)
    ));
    wait_range(&browser, &hour(0), &hour(HOURS), "the linked range");
    browser.js("location.reload();");
    browser.wait_for("document.body.dataset.ready === '1'", "the reload");
    wait_range(
        &browser,
        &hour(0),
        &hour(HOURS),
        "the linked range, reloaded",
    );
    browser.wait_for(
        "document.getElementById('drill').dataset.ready === '1' && document.getElementById('drill').dataset.device === 'pump-04'",
        "the linked device",
    );
    let ov = overview(&browser);
    assert_eq!(
        ov["hours"].as_array().unwrap().len(),
        HOURS as usize,
        "{ov}"
    );
    assert_eq!(anomalous(&ov), injected());
    assert_eq!(
        browser.js("return document.getElementById('span').value;"),
        "6"
    );

    // A longer length keeps the end; one query reads at most 31 days, so
    // a longer range asked for is cut to its last 31 days, saying so.
    browser.click("#span option[value='168']");
    wait_range(&browser, &hour(HOURS - 168), &hour(HOURS), "7 days");
    assert_eq!(anomalous(&overview(&browser)), injected());
    browser.js(&format!(
        "document.getElementById('from').value = '{}';
         document.getElementById('to').value = '{}';",
        &hour(HOURS - 24 * 60)[..16],
        &hour(HOURS)[..16]
    ));
    browser.click("#show");
    wait_range(
        &browser,
        &hour(HOURS - 24 * 31),
        &hour(HOURS),
        "at most 31 days",
    );
    let ov = overview(&browser);
    assert!(
        ov["note"].as_str().unwrap().contains("at most 744 hours"),
        "{ov}"
    );
    assert_eq!(anomalous(&ov), injected());

    // A job's window, from its details: the skipped job's hour, which ends
    // an hour after the data (the range shown before ends with the data,
    // so waiting for that end passed before the click took effect, and
    // failed whenever the new range was drawn within the first poll).
    browser.click(&format!("#timeline-svg .job[data-job-id='{id}'] .bar"));
    browser.wait_for(
        &format!("document.querySelector('#job-detail-body[data-job-id=\"{id}\"] #show-window')"),
        "the job's details",
    );
    browser.click("#show-window");
    browser.wait_for(
        &format!(
            "document.getElementById('overview').dataset.range.endsWith('/{}')",
            hour(HOURS + 1)
        ),
        "the job's window",
    );

    // Newest: back to the default view, which follows the data, with the
    // length picked last (7 days), in the URL too.
    browser.click("#newest");
    wait_range(
        &browser,
        &hour(HOURS - 168),
        &hour(HOURS),
        "the newest data",
    );
    assert_eq!(
        browser.js("return location.hash;"),
        "#span=168&device=pump-04"
    );
    browser.click("#drill-close");
    browser.click("#span option[value='24']");
    wait_range(
        &browser,
        &hour(HOURS - 24),
        &hour(HOURS),
        "the newest 24 hours",
    );
    assert_eq!(browser.js("return location.hash;"), "");
    drop(browser);
    server.terminate();

    // ------------------------------------------------ jump by itself
    // The same store with a job store that knows no job (a new database;
    // the same holds when the latest jobs scored only idle windows): the
    // API's default range is the 24 hours up to now, which hold nothing, so
    // the page moves to the newest predictions by itself and says so.
    let db = format!("sqlite://{}", data.join("other-jobs.db").display());
    let server = Server::start(data, &["--config", config.to_str().unwrap(), "--db", &db]);
    let url = format!("http://{}/", server.addr);
    let browser = Browser::start(1400, 1000);
    browser.goto(&url);
    browser.wait_for(
        "document.body.dataset.ready === '1'",
        "the first load, no jobs",
    );
    let ov = overview(&browser);
    eprintln!("no jobs: {ov:#}");
    assert_the_data(&ov);
    let note = ov["note"].as_str().unwrap();
    assert!(
        note.contains("Nothing was scored in the 24 h up to")
            && note.contains("newest 24 h that hold predictions"),
        "{note}"
    );
    assert_eq!(
        browser.js("return location.hash;"),
        "",
        "following the newest data, not pinned"
    );
    let jumped_shot = target.join("dashboard-jumped.png");
    browser.screenshot(&jumped_shot);
    eprintln!("screenshot: {}", jumped_shot.display());
    drop(browser);
    server.terminate();
}
