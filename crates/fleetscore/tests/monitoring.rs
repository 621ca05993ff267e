//! The operator's monitoring kit (`deploy/kubernetes/monitoring/`,
//! `deploy/grafana/fleetscore.json`) against the real tools:
//!
//! - the ServiceMonitor and PodMonitor select what the manifests run, on
//!   ports they have (no Prometheus needed);
//! - `promtool check rules` and `promtool test rules` (`alerts_test.yaml`:
//!   each alert fires on the series that should fire it, and not on a
//!   healthy fleet);
//! - a real Prometheus scraping a real `serve` and a real `worker
//!   --listen`: both targets up, every alert rule evaluates without error,
//!   every dashboard query is valid PromQL, and every metric the rules and
//!   the dashboard name is one the server or the worker exports.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package,
//! which `.ci/run` installs; the tests that need them are ignored by a
//! plain `cargo test`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{bin, Server};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The YAML documents of a file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn dashboard() -> Value {
    let path = deploy().join("grafana/fleetscore.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_queries() -> Vec<String> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    out
}

/// The rule groups of the PrometheusRule, as a Prometheus rules file.
fn rules_file(dir: &Path) -> PathBuf {
    let docs = yaml_docs(&deploy().join("kubernetes/monitoring/prometheusrule.yaml"));
    let rule = kind(&docs, "PrometheusRule");
    let path = dir.join("rules.yaml");
    let groups = serde_json::json!({ "groups": rule["spec"]["groups"] });
    std::fs::write(&path, serde_yaml_ng::to_string(&groups).unwrap()).unwrap();
    path
}

/// Every alert expression of the PrometheusRule.
fn alert_exprs() -> Vec<String> {
    let docs = yaml_docs(&deploy().join("kubernetes/monitoring/prometheusrule.yaml"));
    let rule = kind(&docs, "PrometheusRule");
    let mut out = Vec::new();
    for g in rule["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            out.push(r["expr"].as_str().unwrap().to_string());
        }
    }
    out
}

/// The metric names an expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = expr[i..].starts_with("fleetscore_") || expr[i..].starts_with("process_");
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts && boundary {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            out.insert(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_monitors_select_what_the_manifests_run() {
    let kube = deploy().join("kubernetes");
    let server = yaml_docs(&kube.join("server.yaml"));
    let workers = yaml_docs(&kube.join("workers.yaml"));
    let monitors = yaml_docs(&kube.join("monitoring/servicemonitor.yaml"));

    // The ServiceMonitor selects the server's Service, on a port it has.
    let sm = kind(&monitors, "ServiceMonitor");
    let service = kind(&server, "Service");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "Service label {k}");
    }
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    for e in sm["spec"]["endpoints"].as_array().unwrap() {
        assert!(
            ports.contains(&&e["port"]),
            "Service has no port {}",
            e["port"]
        );
        assert_eq!(e["path"], "/metrics");
    }

    // The PodMonitor selects the workers' pods, on the port their
    // --listen serves.
    let pm = kind(&monitors, "PodMonitor");
    let deployment = kind(&workers, "Deployment");
    let pod = &deployment["spec"]["template"];
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k], v, "worker pod label {k}");
    }
    let container = &pod["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let listen = args[args
        .iter()
        .position(|a| *a == "--listen")
        .expect("worker --listen")
        + 1];
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    for e in pm["spec"]["podMetricsEndpoints"].as_array().unwrap() {
        let named = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == e["port"])
            .unwrap_or_else(|| panic!("the worker container has no port {}", e["port"]));
        assert_eq!(
            named["containerPort"], port,
            "the metrics port is --listen's"
        );
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
    }

    // The kustomization lists the files there are, and the dashboard.
    let k = &yaml_docs(&kube.join("monitoring/kustomization.yaml"))[0];
    for r in k["resources"].as_array().unwrap() {
        assert!(
            kube.join("monitoring").join(r.as_str().unwrap()).exists(),
            "{r}"
        );
    }
    let files = k["configMapGenerator"][0]["files"][0].as_str().unwrap();
    let (_, path) = files.split_once('=').unwrap();
    assert!(kube.join("monitoring").join(path).exists(), "{path}");

    // The dashboard: panels with unique ids, each query naming metrics.
    let d = dashboard();
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id twice: {p}");
        if p["type"] != "row" {
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{}",
                p["title"]
            );
        }
    }
    for q in dashboard_queries() {
        assert!(!metric_names(&q).is_empty(), "{q}");
    }
}

fn tool(name: &str) -> PathBuf {
    let p = PathBuf::from("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: apt install prometheus (.ci/run does)",
        p.display()
    );
    p
}

#[test]
#[ignore = "needs promtool (apt install prometheus); .ci/run runs it"]
fn the_alerts_pass_promtool_and_their_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    rules_file(dir.path());
    std::fs::copy(
        deploy().join("kubernetes/monitoring/alerts_test.yaml"),
        dir.path().join("alerts_test.yaml"),
    )
    .unwrap();
    for args in [
        &["check", "rules", "rules.yaml"][..],
        &["test", "rules", "alerts_test.yaml"],
    ] {
        let out = Command::new(tool("promtool"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `GET http://addr/path`: status and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Prometheus answers chunked: undo it.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The metric families a `/metrics` text declares (`# TYPE` lines), with
/// the series names each gives (`_total`, `_bucket`, …).
fn families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
        out.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{suffix}"));
            }
        }
    }
    out
}

struct Prometheus {
    child: Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs Prometheus (apt install prometheus); .ci/run runs it"]
fn a_real_prometheus_scrapes_the_server_and_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server = Server::start(&data, &[]);
    // Readings, so the ingest series move.
    let (status, body) = server.post("/write", &[], "m,device=d1 t=1\nm,device=d1 t=oops\n");
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.post("/write", &[], "m,device=d1 t=1\n");
    assert_eq!(status, 204);

    let db = format!("sqlite://{}", dir.path().join("worker-jobs.db").display());
    let mut worker = bin()
        .arg("--data")
        .arg(&data)
        .args(["--db", &db, "worker", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(worker.stderr.take().unwrap()).lines();
    let worker_addr = loop {
        let line = lines.next().expect("the worker's address").unwrap();
        if let Some((_, a)) = line.split_once("/metrics on ") {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    // Every metric the rules and the dashboard name is exported.
    let mut exported = families(&get(&server.addr, "/metrics").1);
    exported.extend(families(&get(&worker_addr, "/metrics").1));
    let mut used = BTreeSet::new();
    for q in dashboard_queries().iter().chain(&alert_exprs()) {
        used.extend(metric_names(q));
    }
    // The Kafka source's lag exists only where a Kafka source runs (a
    // family with no series is not exposed): tests/kafka.rs checks it.
    let only_with_kafka = ["fleetscore_source_lag_messages"];
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(*n) && !only_with_kafka.contains(&n.as_str()))
        .collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}");

    // A real Prometheus: scrapes both, evaluates the rules every second.
    let port = common::free_port();
    let rules = rules_file(dir.path());
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: fleetscore-server\n    static_configs:\n      - targets: ['{}']\n\
             \x20 - job_name: fleetscore-worker\n    static_configs:\n      - targets: ['{}']\n",
            rules.display(),
            server.addr,
            worker_addr
        ),
    )
    .unwrap();
    let prom = Prometheus {
        child: Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        addr: format!("127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = std::net::TcpStream::connect(&prom.addr).is_ok()
            && get(&prom.addr, "/api/v1/targets")
                .1
                .matches("\"health\":\"up\"")
                .count()
                == 2;
        if up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape both targets: {}",
            get(&prom.addr, "/api/v1/targets").1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A few scrapes and evaluations.
    std::thread::sleep(Duration::from_secs(4));

    // Every rule evaluates without error.
    let (status, body) = get(&prom.addr, "/api/v1/rules");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut n = 0;
    for g in v["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            n += 1;
            assert_eq!(r["health"], "ok", "rule {}: {}", r["name"], r["lastError"]);
        }
    }
    assert_eq!(n, alert_exprs().len(), "{body}");

    // Every dashboard query is valid PromQL; those over the server's own
    // gauges and counters have data already.
    for q in dashboard_queries() {
        let q = q.replace("$job", ".*");
        let (status, body) = get(
            &prom.addr,
            &format!("/api/v1/query?query={}", url_encode(&q)),
        );
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{q}: {body}");
    }
    for q in [
        "max(fleetscore_pending_work)",
        "min(fleetscore_log_writable)",
        "sum by (source) (fleetscore_source_readings_stored_total)",
        "sum by (source, reason) (fleetscore_source_dead_letters_total)",
        "process_resident_memory_bytes{job=\"fleetscore-worker\"}",
    ] {
        let (_, body) = get(
            &prom.addr,
            &format!("/api/v1/query?query={}", url_encode(q)),
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            !v["data"]["result"].as_array().unwrap().is_empty(),
            "{q}: no data: {body}"
        );
    }
    drop(prom);
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(worker.id() as libc::pid_t, libc::SIGTERM);
    }
    assert!(worker.wait().unwrap().success());
    server.terminate();
}
