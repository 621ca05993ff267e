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
