//! `fleetscore serve` with `[kafka]` against a real Kafka-protocol broker:
//! `tansu` (crates.io, `cargo install tansu --features dynostore,libsql`;
//! `.ci/run` installs it into its cache and names it in
//! `FLEETSCORE_TEST_TANSU`), with SQLite storage so that it keeps its
//! topics, messages and the group's offsets across its own restarts.
//! Messages are produced with librdkafka (`rdkafka`).
//!
//! - messages of every shape land in raw/, bad ones become dead letters,
//!   the lag of each partition is a metric;
//! - SIGKILL `serve` twice while a producer writes a bounded stream: after
//!   a restart and SIGTERM, raw/ holds every produced reading exactly once;
//! - the broker restarts mid-stream: the source reconnects, nothing is lost
//!   or stored twice;
//! - a broker that is down at start: `/readyz` says so, then the source
//!   connects when it comes up.
#![cfg(feature = "kafka")]

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::{free_port, raw_readings, Server};

fn tansu() -> PathBuf {
    let p = std::env::var_os("FLEETSCORE_TEST_TANSU").map_or_else(
        || {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/fleetscore-ci/tansu-0.6.0/bin/tansu")
        },
        PathBuf::from,
    );
    assert!(
        p.exists(),
        "{} is missing: cargo install --locked tansu@0.6.0 --features dynostore,libsql --root DIR, and set FLEETSCORE_TEST_TANSU=DIR/bin/tansu (.ci/run does)",
        p.display()
    );
    p
}

/// A tansu broker on its own port, its data in `dir` (SQLite).
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Clients must log in (SCRAM): `--authentication`.
    logins: bool,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let mut b = Broker {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            logins: false,
        };
        b.up();
        b
    }

    fn on_port(dir: &Path, port: u16) -> Broker {
        Broker {
            child: None,
            port,
            dir: dir.to_path_buf(),
            logins: false,
        }
    }

    fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu())
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .args(self.logins.then_some("--authentication"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(self.url()).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(tansu())
            .current_dir(&self.dir)
            .args(["topic", "create", topic, "--broker"])
            .arg(format!("tcp://{}", self.url()))
            .args(["--partitions", &partitions.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu topic create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.url())
            .set("message.timeout.ms", "60000")
            .set("acks", "all")
            .create()
            .unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.down();
    }
}

/// Sends `(key, payload)` to `topic` and waits until the broker has them.
fn produce(p: &BaseProducer, topic: &str, messages: &[(String, String)]) {
    for (key, payload) in messages {
        loop {
            match p.send(BaseRecord::to(topic).key(key).payload(payload)) {
                Ok(()) => break,
                Err((e, _)) => {
                    // The local queue is full: let it drain.
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    p.poll(Duration::from_millis(50));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60))
        .expect("the broker took the messages");
}

fn config(dir: &Path, broker: &str, topic: &str, extra: &str) -> PathBuf {
    let path = dir.join("kafka.toml");
    std::fs::write(
        &path,
        format!(
            "[ingest]\ncompact_interval = \"500ms\"\n[kafka]\nbrokers = \"{broker}\"\ntopics = [\"{topic}\"]\n\
             group_id = \"fleetscore-test\"\nclient_id = \"fleetscore-test-node\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

fn get(s: &Server, path: &str) -> (u16, String) {
    s.request("GET", path, &[], b"")
}

/// The value of the `/metrics` sample written exactly as `series`.
fn metric(s: &Server, series: &str) -> f64 {
    let (_, text) = get(s, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// Waits until `series` reaches `want` (at most `secs`).
fn wait_metric(s: &Server, series: &str, want: f64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = metric(s, series);
        if v >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {v}, waited for {want}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const STORED: &str = "fleetscore_source_readings_stored_total{source=\"kafka\"}";

#[test]
#[ignore = "needs the tansu broker (FLEETSCORE_TEST_TANSU); .ci/run installs it and runs this"]
fn kafka_messages_of_every_shape_land_in_raw() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = dir.path().join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let broker = Broker::start(&bdir);
    let topic = "fleet-shapes";
    broker.create_topic(topic, 2);
    let p = broker.producer();
    produce(
        &p,
        topic,
        &[
            ("pump-1".into(), r#"{"value": 20, "ts": 1764887621.5, "tag": "temp"}"#.into()),
            ("pump-2".into(), r#"{"ts": 1764887621, "temp": 21.3, "vib": 0.02}"#.into()),
            ("ignored".into(), r#"[{"device": "pump-3", "tag": "rpm", "value": 1450, "ts": "2025-12-04T22:33:41Z"}]"#.into()),
            ("pump-4".into(), "not a reading".into()),
            ("pump-5".into(), r#"{"value": 1, "ts": 1e300, "tag": "t"}"#.into()),
        ],
    );
    let data = dir.path().join("data");
    let cfg = config(dir.path(), &broker.url(), topic, "");
    let s = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    wait_metric(&s, STORED, 4.0, 60);
    wait_metric(
        &s,
        "fleetscore_source_dead_letters_total{source=\"kafka\",reason=\"syntax\"}",
        1.0,
        30,
    );
    assert_eq!(
        metric(
            &s,
            "fleetscore_source_dead_letters_total{source=\"kafka\",reason=\"time\"}"
        ),
        1.0
    );
    let (status, body) = get(&s, "/v1/rejected?source=kafka");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"origin\":\"{topic}/")), "{body}");
    assert!(body.contains("not a reading"), "{body}");
    let (status, body) = get(&s, "/readyz");
    assert_eq!(status, 200, "{body}");
    // The lag of the partitions read from is known (refreshed every 2 s),
    // and nothing is behind.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = get(&s, "/metrics");
        let lags: Vec<String> = metrics
            .lines()
            .filter(|l| l.starts_with("fleetscore_source_lag_messages{source=\"kafka\""))
            .map(str::to_string)
            .collect();
        if !lags.is_empty() && lags.iter().all(|l| l.ends_with(" 0")) {
            break;
        }
        assert!(Instant::now() < deadline, "lag: {lags:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    s.terminate();

    let got = raw_readings(&data);
    let mut keys: Vec<(i64, String, String)> = got
        .keys()
        .map(|(ts, d, t, _)| (*ts, d.clone(), t.clone()))
        .collect();
    keys.sort();
    let t = 1_764_887_621_000_000_000;
    assert_eq!(
        keys,
        [
            (t, "pump-2".into(), "temp".into()),
            (t, "pump-2".into(), "vib".into()),
            (t, "pump-3".into(), "rpm".into()),
            (t + 500_000_000, "pump-1".into(), "temp".into()),
        ]
    );
}

/// One reading a message: device `dev-{i % 7}`, tag `seq`, value `i`.
fn stream(from: usize, to: usize) -> Vec<(String, String)> {
    (from..to)
        .map(|i| {
            (
                format!("dev-{}", i % 7),
                format!(
                    "{{\"tag\": \"seq\", \"value\": {i}, \"ts\": {}}}",
                    1_764_887_621_000u64 + i as u64
                ),
            )
        })
        .collect()
}

/// Every value in raw/ and how often it is there.
fn values(data: &Path) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for ((_, _, _, v), n) in raw_readings(data) {
        *out.entry(f64::from_bits(v) as u64).or_default() += n;
    }
    out
}

/// Readings stored by `serve` in `data` (all runs): how often each value.
fn stored_once(data: &Path, total: usize) {
    let got = values(data);
    assert_eq!(got.len(), total, "every produced reading is in raw/");
    let twice: Vec<(&u64, &usize)> = got.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
}

#[test]
#[ignore = "needs the tansu broker (FLEETSCORE_TEST_TANSU); .ci/run installs it and runs this"]
fn crashes_and_a_broker_restart_store_every_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = dir.path().join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let mut broker = Broker::start(&bdir);
    let topic = "fleet-once";
    broker.create_topic(topic, 3);
    let data = dir.path().join("data");
    let cfg = config(dir.path(), &broker.url(), topic, "max_batch = 200\n");
    let args = ["--config", cfg.to_str().unwrap()];
    let first = 4000;
    let total = 6000;

    // A producer writes a bounded stream meanwhile (about four seconds).
    let url = broker.url();
    let producer = std::thread::spawn(move || {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &url)
            .set("acks", "all")
            .create()
            .unwrap();
        for chunk in 0..first / 100 {
            produce(&p, "fleet-once", &stream(chunk * 100, chunk * 100 + 100));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // 1. A crash right after a batch is durable and before its offset is
    //    committed (the process aborts itself there): the batch comes again.
    let mut cmd = common::bin();
    cmd.env("FLEETSCORE_TEST_KAFKA_CRASH_AFTER_APPENDS", "3");
    let s = Server::start_with(cmd, &data, &args);
    let mut child = s;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            assert!(!status.success(), "serve should have aborted");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not reach its crash point"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // 2. SIGKILL at any moment, once this run has stored something.
    let s = Server::start(&data, &args);
    wait_metric(&s, STORED, 1.0, 90);
    s.crash();
    producer.join().unwrap();

    // 3. The broker restarts (its data kept) while the rest is produced.
    let s = Server::start(&data, &args);
    wait_metric(&s, STORED, 1.0, 90);
    broker.down();
    std::thread::sleep(Duration::from_secs(2));
    broker.up();
    produce(&broker.producer(), topic, &stream(first, total));
    // All of it consumed: every partition's lag is 0, every value in raw/.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, metrics) = get(&s, "/metrics");
        let lags: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("fleetscore_source_lag_messages{"))
            .collect();
        let seen = values(&data).len();
        if lags.len() == 3 && lags.iter().all(|l| l.ends_with(" 0")) && seen == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all consumed: {lags:?}, {seen} of {total} in raw/"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        metric(&s, "fleetscore_source_duplicates_total{source=\"kafka\"}") == 0.0,
        "no duplicate in this run"
    );
    s.terminate();
    stored_once(&data, total);
}

#[test]
#[ignore = "needs the tansu broker (FLEETSCORE_TEST_TANSU); .ci/run installs it and runs this"]
fn a_broker_down_at_start_is_named_by_readyz_until_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = dir.path().join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let port = free_port();
    let mut broker = Broker::on_port(&bdir, port);
    let data = dir.path().join("data");
    let topic = "fleet-late";
    let cfg = config(dir.path(), &broker.url(), topic, "");
    let s = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = get(&s, "/readyz");
        if status == 503 && body.contains("\"kafka\"") && body.contains("[kafka] brokers") {
            break body;
        }
        assert!(Instant::now() < deadline, "readyz: {status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains(&broker.url()), "{body}");
    broker.up();
    broker.create_topic(topic, 1);
    produce(&broker.producer(), topic, &stream(0, 10));
    wait_metric(&s, STORED, 10.0, 90);
    let (status, body) = get(&s, "/readyz");
    assert_eq!(status, 200, "{body}");
    s.terminate();
}

/// `tansu user create NAME PASSWORD` (SCRAM-SHA-512) on the broker.
fn create_user(b: &Broker, name: &str, password: &str) {
    let out = Command::new(tansu())
        .current_dir(&b.dir)
        .args(["user", "create", name, password, "--broker"])
        .arg(format!("tcp://{}", b.url()))
        .args(["--mechanism", "scram512"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tansu user create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SASL/SCRAM-SHA-512 against a broker that requires a login (tansu
/// `--authentication`, the user made with `tansu user create`): with the
/// right password (from `password_env`) the readings arrive; with a wrong
/// one `/readyz` answers 503 naming the settings to check, and the
/// password appears nowhere.
#[test]
#[ignore = "needs the tansu broker (FLEETSCORE_TEST_TANSU); .ci/run installs it and runs this"]
fn a_scram_login_reads_a_broker_that_requires_one_and_a_wrong_password_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bdir = dir.path().join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let topic = "fleet-scram";
    // The user, the topic and the messages first, while the broker takes
    // anyone (tansu's own tools and this test's producer have no SCRAM),
    // then the same broker again, requiring a login.
    let mut broker = Broker::start(&bdir);
    create_user(&broker, "fleetscore", "s3cret-scram");
    broker.create_topic(topic, 1);
    produce(&broker.producer(), topic, &stream(0, 10));
    broker.down();
    broker.logins = true;
    broker.up();

    let login = "security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n\
                 username = \"fleetscore\"\npassword_env = \"FLEETSCORE_TEST_KAFKA_PASSWORD\"\n";
    let cfg = config(dir.path(), &broker.url(), topic, login);

    // A wrong password: named, not shown.
    let mut cmd = common::bin();
    cmd.env("FLEETSCORE_TEST_KAFKA_PASSWORD", "not-the-password");
    let wrong = Server::start_with(
        cmd,
        &dir.path().join("wrong"),
        &["--config", cfg.to_str().unwrap()],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = get(&wrong, "/readyz");
        if status == 503 && body.contains("check [kafka] username, password_env and sasl_mechanism")
        {
            break body;
        }
        assert!(Instant::now() < deadline, "readyz: {status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!body.contains("not-the-password"), "{body}");
    assert_eq!(metric(&wrong, STORED), 0.0);
    wrong.terminate();

    // The right one: every reading.
    let mut cmd = common::bin();
    cmd.env("FLEETSCORE_TEST_KAFKA_PASSWORD", "s3cret-scram");
    let data = dir.path().join("data");
    let s = Server::start_with(cmd, &data, &["--config", cfg.to_str().unwrap()]);
    wait_metric(&s, STORED, 10.0, 60);
    let (status, body) = get(&s, "/readyz");
    assert_eq!(status, 200, "{body}");
    s.terminate();
    stored_once(&data, 10);
}
