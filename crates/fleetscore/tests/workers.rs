//! `fleetscore worker` processes sharing one job on a real PostgreSQL job
//! store: one of three workers SIGKILLed in the middle of a job, and the
//! PostgreSQL server restarted in the middle of a job. Either way the job
//! completes and every expected prediction row exists exactly once.
//!
//! These need PostgreSQL: `FLEETSCORE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) for the first; the
//! restart test starts a private server of its own from the machine's
//! PostgreSQL binaries (`/usr/lib/postgresql/*/bin`, as the `postgres`
//! user when run as root), so restarting it disturbs nothing else; with
//! `FLEETSCORE_TEST_POSTGRES_CA` (set by `.ci/run`) that server takes TLS
//! only by certificate of that CA and the workers connect with
//! `sslmode=verify-full`. `.ci/run` runs them with `--include-ignored`.
//! The probes of `worker --listen` need no PostgreSQL.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, parquet_files, predictions, run, text};

const DEVICES: usize = 120;
const TAGS: usize = 5;
/// One reading every 10 s for an hour.
const PER_PAIR: usize = 360;

fn pg_server() -> String {
    std::env::var("FLEETSCORE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own on `server`.
fn database(server: &str) -> String {
    let name = format!(
        "fs_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(fleetscore_jobs::db::ensure_database(server, &name))
        .unwrap_or_else(|e| panic!("PostgreSQL at {server}: {e} (set FLEETSCORE_TEST_POSTGRES)"))
}

/// DEVICES × TAGS models (copies of the demo's scikit-learn pickles under
/// per-device names) and an hour of their readings, imported and ingested
/// into `data`'s store. Returns the readings' count.
fn fleet(data: &Path) -> usize {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo");
    let models = data.join("models-in");
    std::fs::create_dir_all(&models).unwrap();
    for d in 0..DEVICES {
        for t in 1..=TAGS {
            std::fs::copy(
                demo.join(format!("model_fallback_{t}.pkl")),
                models.join(format!("model_d{d:03}_{t}.pkl")),
            )
            .unwrap();
        }
    }
    let o = run(data, &["models", "import", models.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let csv = data.join("readings.csv");
    let mut f = std::io::BufWriter::new(File::create(&csv).unwrap());
    writeln!(f, "TS,Device,Tag,Value").unwrap();
    let mut n = 0;
    for i in 0..PER_PAIR {
        let (m, s) = (i * 10 / 60, i * 10 % 60);
        for d in 0..DEVICES {
            for t in 1..=TAGS {
                let v = 20.0 + t as f64 + ((i * 7 + d * 13) % 17) as f64 * 0.3;
                writeln!(f, "2024-01-01 00:{m:02}:{s:02},d{d:03},{t},{v}").unwrap();
                n += 1;
            }
        }
    }
    f.flush().unwrap();
    drop(f);
    let o = run(data, &["ingest", csv.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    n
}

/// Queues the hour as one job of small tasks; returns its id.
fn queue(data: &Path, db: &str, batch: &str) -> String {
    let o = run(
        data,
        &[
            "--db",
            db,
            "backfill",
            "--from",
            "2024-01-01T00:00:00Z",
            "--to",
            "2024-01-01T01:00:00Z",
            "--batch-size",
            batch,
            "--queue",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn worker(data: &Path, db: &str) -> Child {
    bin()
        .arg("--data")
        .arg(data)
        .args(["--db", db, "worker", "--lease", "2s", "--poll", "100ms"])
        .args(["--threads", "1", "--grace", "20s"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn show(data: &Path, db: &str, id: &str) -> serde_json::Value {
    let o = run(data, &["--db", db, "jobs", "show", id, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Polls the job until `done(job)` or the deadline.
fn wait_for(
    data: &Path,
    db: &str,
    id: &str,
    what: &str,
    secs: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let j = show(data, db, id);
        if done(&j) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {j:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tasks_in(j: &serde_json::Value, state: &str) -> usize {
    j["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == state)
        .count()
}

/// Every prediction row of the store as (ts, device, tag), asserting none
/// is there twice, and checking the manifest lists exactly the parts.
fn predictions_once(store: &Path) -> HashSet<(i64, String, String)> {
    let out: HashSet<(i64, String, String)> = predictions(store).into_keys().collect();
    let mut files = Vec::new();
    parquet_files(&store.join("predictions"), &mut files);
    let manifest = store.join("predictions/date=2024-01-01/hour=00/manifest-raw-1h.json");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let mut listed: Vec<String> = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let mut present: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(store)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    listed.sort();
    present.sort();
    assert_eq!(listed, present, "the manifest lists exactly the parts");
    assert_eq!(m["rows"].as_u64().unwrap() as usize, out.len());
    out
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Kills these processes if the test fails before stopping them, so a
/// failed test leaves no workers behind.
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for pid in &self.0 {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn stop(mut w: Child) {
    let pid = w.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = w.try_wait().unwrap() {
            assert!(status.success(), "a stopped worker exits 0, got {status}");
            return;
        }
        assert!(Instant::now() < deadline, "worker {pid} ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs PostgreSQL (FLEETSCORE_TEST_POSTGRES); .ci/run runs it"]
fn sigkill_one_of_three_workers_mid_job_and_the_job_completes_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let readings = fleet(data);
    let db = database(&pg_server());
    // Small tasks (600 of them), so the job lasts long enough to catch a
    // worker in the middle of one (150 tasks took 0.9 s on a quiet
    // machine, too short to catch the victim with a task reliably).
    let id = queue(data, &db, "1");
    let mut workers: Vec<Child> = (0..3).map(|_| worker(data, &db)).collect();
    let _reap = Reap(workers.iter().map(Child::id).collect());

    // Kill the second worker while it holds a task, after some progress:
    // frozen (SIGSTOP) first, so that it cannot finish the task between
    // the look and the kill.
    let victim = workers[1].id();
    wait_for(data, &db, &id, "some progress", 120, |j| {
        j["job"]["state"] == "running" && tasks_in(j, "succeeded") >= 3
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let j = loop {
        signal(victim, "STOP");
        let j = show(data, &db, &id);
        let holds = j["tasks"].as_array().unwrap().iter().any(|t| {
            t["state"] == "running"
                && t["lease_owner"]
                    .as_str()
                    .is_some_and(|o| o.contains(&format!(":{victim}:")))
        });
        if holds {
            break j;
        }
        assert_eq!(
            j["job"]["state"], "running",
            "the job ended before worker {victim} was caught holding a task: {j:#}"
        );
        signal(victim, "CONT");
        assert!(
            Instant::now() < deadline,
            "worker {victim} never held a task"
        );
        std::thread::sleep(Duration::from_millis(3));
    };
    let total = j["tasks"].as_array().unwrap().len();
    assert!(tasks_in(&j, "succeeded") < total, "killed in the middle");
    let mut killed = workers.remove(1);
    killed.kill().unwrap();
    killed.wait().unwrap();
    eprintln!(
        "SIGKILLed worker {victim} with {} of {total} tasks done",
        tasks_in(&j, "succeeded")
    );

    let j = wait_for(data, &db, &id, "the job to end", 180, |j| {
        j["job"]["state"] != "running" && j["job"]["state"] != "queued"
    });
    assert_eq!(j["job"]["state"], "succeeded", "{j:#}");
    // The victim's task was taken over: some task took two attempts.
    let retried: Vec<_> = j["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["attempts"].as_u64().unwrap() > 1)
        .collect();
    assert!(
        !retried.is_empty(),
        "the killed worker's task ran again: {j:#}"
    );
    let rows = predictions_once(&data.join("store"));
    assert_eq!(rows.len(), readings, "every reading predicted exactly once");
    assert_eq!(j["job"]["rows"].as_u64().unwrap() as usize, readings);
    assert_eq!(
        j["job"]["models"].as_u64().unwrap() as usize,
        DEVICES * TAGS
    );
    // The survivors stop cleanly on SIGTERM.
    for w in workers {
        stop(w);
    }
}

/// A private PostgreSQL server in a temp folder, on its own port.
struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn pg_bin() -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql (apt postgresql)")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|p| p.join("pg_ctl").exists())
            .collect();
        versions.sort();
        versions
            .pop()
            .expect("pg_ctl under /usr/lib/postgresql/*/bin")
    }

    /// Runs a PostgreSQL binary, as `postgres` when we are root (initdb
    /// refuses root).
    fn pg(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(tool);
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn start_new() -> PrivatePostgres {
        let dir = std::env::temp_dir().join(format!("fs-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if root {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let port = common::free_port();
        let pg = PrivatePostgres {
            bin: Self::pg_bin(),
            dir,
            port,
        };
        let data = pg.dir.join("data");
        pg.pg(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        pg.start();
        pg
    }

    /// The CA of `.ci/run`'s PostgreSQL certificate, if set: then this
    /// server takes TLS too, with the same certificate, and its URL asks
    /// for `sslmode=verify-full` (a restart under TLS).
    fn tls() -> Option<PathBuf> {
        std::env::var_os("FLEETSCORE_TEST_POSTGRES_CA").map(PathBuf::from)
    }

    fn start(&self) {
        let data = self.dir.join("data");
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        if let Some(ca) = Self::tls() {
            let certs = ca.parent().unwrap();
            let (cert, key) = (self.dir.join("server.pem"), self.dir.join("server.key"));
            std::fs::copy(certs.join("server.pem"), &cert).unwrap();
            std::fs::copy(certs.join("server.key"), &key).unwrap();
            let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
            if root {
                let ok = Command::new("chown")
                    .arg("postgres:postgres")
                    .args([&cert, &key])
                    .status()
                    .unwrap();
                assert!(ok.success());
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
        }
        self.pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        self.pg(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        let tls = Self::tls()
            .map(|ca| format!("?sslmode=verify-full&sslrootcert={}", ca.display()))
            .unwrap_or_default();
        format!("postgres://postgres@127.0.0.1:{}/postgres{tls}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore = "needs PostgreSQL's server binaries; .ci/run runs it"]
fn restarting_postgres_mid_job_workers_reconnect_and_the_job_completes() {
    let pg = PrivatePostgres::start_new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let readings = fleet(data);
    let db = database(&pg.url());
    // One model a task (600 tasks, a few seconds on a quiet machine; 300
    // tasks were done in 0.7 s, before the test's poll saw progress), so
    // the job is still running when PostgreSQL stops.
    let id = queue(data, &db, "1");
    let workers: Vec<Child> = (0..2).map(|_| worker(data, &db)).collect();
    let _reap = Reap(workers.iter().map(Child::id).collect());
    wait_for(data, &db, &id, "some progress", 120, |j| {
        j["job"]["state"] == "running" && tasks_in(j, "succeeded") >= 2
    });
    // Down for a few seconds (longer than the workers' lease), then back.
    let stopped_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    pg.stop();
    eprintln!("PostgreSQL stopped");
    std::thread::sleep(Duration::from_secs(4));
    pg.start();
    eprintln!("PostgreSQL started again");
    let j = wait_for(data, &db, &id, "the job to end", 180, |j| {
        j["job"]["state"] != "running" && j["job"]["state"] != "queued"
    });
    assert_eq!(j["job"]["state"], "succeeded", "{j:#}");
    assert!(
        j["job"]["finished_at"].as_i64().unwrap() > stopped_at,
        "the job ended before PostgreSQL stopped: nothing was tested"
    );
    let rows = predictions_once(&data.join("store"));
    assert_eq!(rows.len(), readings, "every reading predicted exactly once");
    for w in workers {
        stop(w);
    }
}

/// `worker --listen`: `/healthz`, `/readyz` and `/metrics` for Kubernetes
/// and Prometheus, and a clean stop on SIGTERM.
#[test]
fn a_worker_answers_its_probes() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let mut child = bin()
        .arg("--data")
        .arg(dir.path())
        .args([
            "--db",
            &db,
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--poll",
            "100ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the worker's address").unwrap();
        if let Some((_, a)) = line.split_once("/metrics on ") {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let get = |path: &str| -> (u16, String) {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (
            head.split(' ').nth(1).unwrap().parse().unwrap(),
            body.to_string(),
        )
    };
    assert_eq!(get("/healthz"), (200, "ok".to_string()));
    let (status, body) = get("/readyz");
    assert_eq!((status, body.as_str()), (200, r#"{"ready":true}"#));
    let (status, metrics) = get("/metrics");
    assert_eq!(status, 200);
    for family in [
        "process_cpu_seconds_total",
        "fleetscore_build_info{",
        "# TYPE fleetscore_jobs gauge",
        "fleetscore_pending_work 0",
        "fleetscore_http_requests_total{endpoint=\"/readyz\",method=\"GET\",status=\"200\"} 1",
    ] {
        assert!(metrics.contains(family), "{family} not in\n{metrics}");
    }
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the worker exited with {status}");
}
