//! `fleetscore demo`, the README's first command, end to end (small).

mod common;
use common::run;

#[test]
fn the_demo_trains_streams_schedules_and_finds_the_injected_anomalies() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "demo",
        "--devices",
        "12",
        "--hours",
        "2",
        "--exit",
        "--listen",
        "127.0.0.1:0",
    ];
    let o = run(dir.path(), &args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("trained 60 models"), "{out}");
    assert!(out.contains("streamed 14400 readings"), "{out}");
    assert_eq!(
        out.matches(" succeeded [").count(),
        2,
        "two hourly jobs: {out}"
    );
    // "… N of M injected anomalies found (P%) …"
    let line = out
        .lines()
        .find(|l| l.starts_with("scored 14400 readings in 2 hourly jobs (0 failed)"))
        .unwrap();
    let pct: f64 = line
        .split(" injected anomalies found (")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(pct >= 90.0, "{line}");
    assert!(out.contains("dashboard: http://127.0.0.1:"), "{out}");
    // A second run starts afresh.
    let o = run(dir.path(), &args);
    assert!(o.status.success());
}

/// Started a minute past the hour, the demo must not wait for the default
/// 5-minute late-data delay before scoring the last hour (it once sat idle
/// for four minutes). The clock is moved with `faketime` (Debian's
/// `faketime` package), so a plain `cargo test` lists this as ignored;
/// `.ci/run` installs it and runs this with `--ignored`.
#[test]
#[ignore = "needs faketime (apt install faketime); .ci/run installs it and runs this with --ignored"]
fn the_demo_does_not_wait_for_late_data_just_after_the_hour() {
    let faketime = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("faketime"))
        .find(|p| p.is_file())
        .expect("`faketime` is not installed (apt install faketime)");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // One minute past the next full hour, as "@YYYY-MM-DD HH:MM:SS" (UTC).
    let at = (now / 3600 + 1) * 3600 + 60;
    let o = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{at}"), "+@%Y-%m-%d %H:%M:%S"])
        .output()
        .unwrap();
    let at = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let o = std::process::Command::new(faketime)
        .env("TZ", "UTC")
        .args(["-f", &at, env!("CARGO_BIN_EXE_fleetscore"), "--data"])
        .arg(dir.path())
        .args([
            "--quiet",
            "demo",
            "--devices",
            "4",
            "--hours",
            "2",
            "--exit",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let out = common::text(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(out.matches(" succeeded [").count(), 2, "{out}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(120),
        "the demo took {:?} at {at}:\n{out}",
        t.elapsed()
    );
}

/// A taken port fails the demo at once, before any training, and says how
/// to pick a free one.
#[test]
fn a_taken_port_fails_the_demo_before_training() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let o = common::run(dir.path(), &["demo", "--exit", "--listen", &addr]);
    let out = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("already in use"), "{out}");
    assert!(out.contains("--listen 127.0.0.1:0"), "{out}");
    assert!(!out.contains("trained"), "{out}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // And `serve` says the same.
    let o = common::run(dir.path(), &["serve", "--listen", &addr]);
    let out = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("already in use") && out.contains("127.0.0.1:0"),
        "{out}"
    );
    drop(taken);
}
