//! The `/v1` API against the real binary with real data: trigger jobs,
//! read them back, predictions, anomalies, readings, the overview, models
//! (upload, promote), tokens; every answer checked against the schema the
//! OpenAPI document gives for it (`tests/api_docs.rs` checks the document
//! against the README and the routes).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
mod openapi_check;
use common::{run, Server};
use openapi_check::assert_conforms;

fn demo(n: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("demo/model_fallback_{n}.pkl"))
}

fn get(s: &Server, path: &str) -> Value {
    let (status, body) = s.request("GET", path, &[], b"");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `GET path`, checked against the schema of `route` (the path as the
/// OpenAPI document writes it) in `doc`.
fn get_checked(s: &Server, doc: &Value, route: &str, path: &str) -> Value {
    let v = get(s, path);
    assert_conforms(doc, "GET", route, 200, &v);
    v
}

/// `POST path` with `body`: its status, and its JSON answer checked against
/// the schema of `route` for that status.
fn post_checked(
    s: &Server,
    doc: &Value,
    route: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let (status, text) = s.request("POST", path, headers, body);
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}"));
    assert_conforms(doc, "POST", route, status, &v);
    (status, v)
}

const ADMIN: (&str, &str) = ("Authorization", "Bearer admin-secret");
const INGEST: (&str, &str) = ("Authorization", "Bearer ingest-secret");

#[test]
fn the_api_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for n in 1..=2 {
        let tag = n.to_string();
        let o = run(
            data,
            &[
                "models",
                "import",
                demo(n).to_str().unwrap(),
                "--device",
                "*",
                "--tag",
                &tag,
            ],
        );
        assert!(o.status.success());
    }
    // Two hours of 3 devices x 2 tags, one reading a minute; d2/1 goes wild
    // in the second hour.
    let mut csv = String::from("TS,Device,Tag,Value\n");
    for m in 0..120 {
        for d in 0..3 {
            for t in 1..=2 {
                let wild = d == 2 && t == 1 && m >= 60;
                let v = if wild {
                    500.0 + m as f64
                } else {
                    20.0 + (m % 7) as f64 * 0.1
                };
                csv.push_str(&format!(
                    "2024-03-01T{:02}:{:02}:00Z,d{d},{t},{v}\n",
                    10 + m / 60,
                    m % 60
                ));
            }
        }
    }
    std::fs::write(data.join("r.csv"), csv).unwrap();
    assert!(run(data, &["ingest", data.join("r.csv").to_str().unwrap()])
        .status
        .success());
    let config = data.join("c.toml");
    std::fs::write(
        &config,
        "[auth]\ningest_tokens = [\"ingest-secret\"]\nadmin_tokens = [\"admin-secret\"]\n\
         [jobs]\ntick_interval = \"100ms\"\n",
    )
    .unwrap();
    let s = Server::start(data, &["--config", config.to_str().unwrap()]);
    let doc = get(&s, "/v1/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");

    assert_eq!(get_checked(&s, &doc, "/readyz", "/readyz")["ready"], true);
    // Triggering needs an admin token.
    let body = r#"{"from": "2024-03-01T10:00:00Z", "to": "2024-03-01T12:00:00Z", "batch_size": 2}"#;
    assert_eq!(s.post("/v1/jobs", &[], body).0, 401);
    assert_eq!(s.post("/v1/jobs", &[INGEST], body).0, 403);
    let (st, b) = post_checked(
        &s,
        &doc,
        "/v1/jobs",
        "/v1/jobs",
        &[ADMIN],
        br#"{"from": "yesterday", "to": "x"}"#,
    );
    assert_eq!(st, 400);
    assert!(b["error"].as_str().unwrap().contains("from"), "{b}");
    let (st, ids) = post_checked(&s, &doc, "/v1/jobs", "/v1/jobs", &[ADMIN], body.as_bytes());
    assert_eq!(st, 202, "{ids}");
    assert_eq!(ids["jobs"].as_array().unwrap().len(), 2);

    // The server's runner picks them up (beside its hourly schedule's job
    // for the current hour, which finds no data).
    let started = Instant::now();
    let mut done = Vec::new();
    for id in ids["jobs"].as_array().unwrap() {
        loop {
            let j = get(&s, &format!("/v1/jobs/{id}"));
            if j["job"]["state"] == "succeeded" {
                done.push(j["job"].clone());
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{j}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let j = &done[0];
    assert_eq!(
        (
            j["models"].as_u64(),
            j["rows"].as_u64(),
            j["tasks"].as_u64()
        ),
        (Some(6), Some(360), Some(3))
    );
    // Times are RFC 3339, with the integers beside them (and under the
    // older names the dashboard reads).
    assert_eq!(
        (j["from"].as_str(), j["to"].as_str()),
        (Some("2024-03-01T10:00:00Z"), Some("2024-03-01T11:00:00Z"))
    );
    assert_eq!(j["from_ns"].as_i64(), Some(1_709_287_200_000_000_000));
    for (ns, legacy) in [
        ("from_ns", "window_start"),
        ("to_ns", "window_end"),
        ("created_ns", "created_at"),
        ("started_ns", "started_at"),
        ("finished_ns", "finished_at"),
    ] {
        assert!(j[ns].is_i64(), "{ns}: {j}");
        assert_eq!(j[ns], j[legacy], "{ns} and {legacy}");
    }
    let id = j["id"].as_i64().unwrap();
    let route = "/v1/jobs/{id}";
    let detail = get_checked(&s, &doc, route, &format!("/v1/jobs/{id}"));
    let tasks = detail["tasks"].as_array().unwrap();
    let maps = tasks.iter().filter(|t| t["kind"] == "map").count();
    assert_eq!((tasks.len() - maps, maps), (3, 1), "{detail}");
    assert_eq!(tasks[0]["queued_ns"], tasks[0]["queued_at"]);
    assert!(tasks[0]["finished"].as_str().unwrap().ends_with('Z'));
    let (st, b) = s.request("GET", "/v1/jobs/999", &[], b"");
    assert_eq!(st, 404);
    assert_conforms(&doc, "GET", route, 404, &serde_json::from_str(&b).unwrap());
    // A path or query value of the wrong type answers JSON too.
    let (st, b) = s.request("GET", "/v1/jobs/seven", &[], b"");
    assert_eq!(st, 400);
    assert_conforms(&doc, "GET", route, 400, &serde_json::from_str(&b).unwrap());
    let route = "/v1/jobs/{id}/retry";
    let (st, _) = post_checked(
        &s,
        &doc,
        route,
        &format!("/v1/jobs/{id}/retry"),
        &[ADMIN],
        b"",
    );
    assert_eq!(st, 409);
    let slow = get_checked(&s, &doc, "/v1/tasks/slowest", "/v1/tasks/slowest?limit=4");
    assert_eq!(slow["tasks"].as_array().unwrap().len(), 4, "{slow}");
    // Each kind on its own: only map tasks, or only score tasks, slowest
    // first.
    for kind in ["map", "score"] {
        let slow = get_checked(
            &s,
            &doc,
            "/v1/tasks/slowest",
            &format!("/v1/tasks/slowest?limit=50&kind={kind}"),
        );
        let tasks = slow["tasks"].as_array().unwrap();
        assert!(!tasks.is_empty(), "{slow}");
        assert!(tasks.iter().all(|t| t["kind"] == kind), "{slow}");
        let d: Vec<i64> = tasks
            .iter()
            .map(|t| t["duration_ms"].as_i64().unwrap())
            .collect();
        assert!(d.windows(2).all(|w| w[0] >= w[1]), "{d:?}");
    }
    let (st, body) = s.request("GET", "/v1/tasks/slowest?kind=plan", &[], b"");
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("use map"), "{body}");
    let all = get_checked(&s, &doc, "/v1/jobs", "/v1/jobs");
    assert!(all["jobs"].as_array().unwrap().len() >= 2, "{all}");

    // Predictions: the wild hour of d2/1 is anomalous, the calm one is not.
    let a = get_checked(
        &s,
        &doc,
        "/v1/anomalies",
        "/v1/anomalies?device=d2&tag=1&from=2024-03-01T11:00:00Z&to=2024-03-01T12:00:00Z",
    );
    assert_eq!(a["rows"].as_array().unwrap().len(), 60, "{a}");
    let p = get_checked(
        &s,
        &doc,
        "/v1/predictions",
        "/v1/predictions?device=d0&tag=2&from=2024-03-01T10:00:00Z&to=2024-03-01T12:00:00Z",
    );
    let rows = p["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 120);
    // The API's names for the predictions files' TS, Device, Tag, Val,
    // Prediction, Score, Label.
    let names: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(
        names,
        [
            "device",
            "label",
            "prediction",
            "score",
            "tag",
            "ts",
            "value"
        ],
        "{}",
        rows[0]
    );
    assert_eq!(rows[0]["ts"], "2024-03-01T10:00:00Z");
    let r = get_checked(
        &s,
        &doc,
        "/v1/readings",
        "/v1/readings?device=d2&tag=1&from=2024-03-01T10:00:00Z&to=2024-03-01T12:00:00Z",
    );
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 120);
    assert_eq!(
        rows[0],
        serde_json::json!({"ts": "2024-03-01T10:00:00Z", "device": "d2", "tag": "1", "value": 20.0})
    );
    assert_eq!(s.request("GET", "/v1/readings?tag=1", &[], b"").0, 400);
    // The overview defaults to the 24 hours up to the newest window.
    let o = get_checked(&s, &doc, "/v1/overview", "/v1/overview");
    assert_eq!(o["devices"], serde_json::json!(["d0", "d1", "d2"]));
    let hours = o["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[23], "2024-03-01T11:00:00Z");
    assert!(o["anomalies"][2][23].as_u64().unwrap() >= 60);
    assert_eq!(o["rows"][0][22], 120);

    // /metrics carries the job store's figures.
    let (st, metrics) = s.request("GET", "/metrics", &[], b"");
    assert_eq!(st, 200);
    for want in [
        "fleetscore_jobs{state=\"succeeded\"}",
        "fleetscore_tasks{state=\"succeeded\"}",
        "fleetscore_job_rows_total",
        "fleetscore_models 2",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }

    // Models: upload a new version, promote back, refuse junk.
    let m = get_checked(&s, &doc, "/v1/models", "/v1/models");
    assert_eq!(m["models"].as_array().unwrap().len(), 2);
    let pickle = std::fs::read(demo(2)).unwrap();
    assert_eq!(s.request("POST", "/v1/models/*/1", &[], &pickle).0, 401);
    let route = "/v1/models/{device}/{tag}";
    let (st, b) = post_checked(&s, &doc, route, "/v1/models/*/1", &[ADMIN], &pickle);
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["outcome"]["outcome"], "new_version", "{b}");
    let one = get_checked(&s, &doc, route, "/v1/models/*/1");
    assert_eq!(one["model"]["live"], 2);
    let (st, b) = post_checked(
        &s,
        &doc,
        "/v1/models/{device}/{tag}/promote",
        "/v1/models/*/1/promote",
        &[ADMIN],
        br#"{"version": 1}"#,
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(get(&s, "/v1/models/*/1")["model"]["live"], 1);
    assert_eq!(
        s.post("/v1/models/*/1/promote", &[ADMIN], r#"{"version": 9}"#)
            .0,
        404
    );
    let (st, b) = s.request("POST", "/v1/models/d1/1", &[ADMIN], b"not a pickle");
    assert_eq!(st, 400);
    assert!(b.contains("not imported"), "{b}");
    // ... and it says how to run such a file in Python instead.
    assert!(b.contains("?runtime=python"), "{b}");
    assert_eq!(s.request("GET", "/v1/models/nobody/1", &[], b"").0, 404);
    // A model for the Python runtime: stored as given, nothing read.
    let (st, b) = post_checked(
        &s,
        &doc,
        route,
        "/v1/models/d9/1?runtime=python&kind=outlier&methods=score_samples,predict",
        &[ADMIN],
        b"\x80\x04any bytes: fleetscore does not read them",
    );
    assert_eq!(
        (st, &b["outcome"]["outcome"]),
        (201, &serde_json::json!("added")),
        "{b}"
    );
    let py = get_checked(&s, &doc, route, "/v1/models/d9/1");
    let v = &py["model"]["versions"][0];
    assert_eq!(
        (&v["runtime"], &v["kind"]),
        (&serde_json::json!("python"), &serde_json::json!("outlier")),
        "{py}"
    );
    assert_eq!(
        v["methods"],
        serde_json::json!(["score_samples", "predict"]),
        "{py}"
    );
    let listed = get(&s, "/v1/models");
    let d9 = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["device"] == "d9")
        .unwrap();
    assert_eq!(d9["runtime"], "python", "{listed}");
    for bad in [
        "runtime=java",
        "runtime=python&kind=ranker",
        "runtime=python&methods=os.system",
        "kind=outlier",
    ] {
        let (st, b) = s.request("POST", &format!("/v1/models/d9/1?{bad}"), &[ADMIN], b"x");
        assert_eq!(st, 400, "{bad}: {b}");
    }

    // Schedules, and where the data is.
    let sch = get_checked(&s, &doc, "/v1/schedules", "/v1/schedules");
    assert_eq!(sch["schedules"][0]["name"], "hourly");
    get_checked(&s, &doc, "/v1/extent", "/v1/extent");
    s.terminate();
}

/// Regression: `/v1/predictions` and `/v1/anomalies` read every Parquet
/// file of a partition, so the parts of a job still running (a rerun with
/// more tasks) or of a `score --write-store` shard whose manifest is not
/// written yet showed up in their answers, twice over. A reader sees only
/// the parts a manifest names.
#[test]
fn predictions_leave_out_parts_no_manifest_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    common::import_as(data, &demo(1), "*", "1");
    // One hour of 2 devices, one reading a minute; d1 goes wild at 10:30.
    let mut csv = String::from("TS,Device,Tag,Value\n");
    for m in 0..60 {
        for d in 0..2 {
            let v = if d == 1 && m >= 30 {
                500.0 + m as f64
            } else {
                20.0 + (m % 7) as f64 * 0.1
            };
            csv.push_str(&format!("2024-03-01T10:{m:02}:00Z,d{d},1,{v}\n"));
        }
    }
    std::fs::write(data.join("r.csv"), csv).unwrap();
    assert!(run(data, &["ingest", data.join("r.csv").to_str().unwrap()])
        .status
        .success());
    let config = data.join("c.toml");
    std::fs::write(
        &config,
        "[auth]\nadmin_tokens = [\"admin-secret\"]\n[jobs]\ntick_interval = \"100ms\"\n",
    )
    .unwrap();
    let s = Server::start(data, &["--config", config.to_str().unwrap()]);
    let body = r#"{"from": "2024-03-01T10:00:00Z", "to": "2024-03-01T11:00:00Z"}"#;
    let (st, ids) = s.post("/v1/jobs", &[ADMIN], body);
    assert_eq!(st, 202, "{ids}");
    let ids: Value = serde_json::from_str(&ids).unwrap();
    let id = &ids["jobs"][0];
    let started = Instant::now();
    while get(&s, &format!("/v1/jobs/{id}"))["job"]["state"] != "succeeded" {
        assert!(started.elapsed() < Duration::from_secs(60), "job {id}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let range = "from=2024-03-01T10:00:00Z&to=2024-03-01T11:00:00Z";
    let predictions = format!("/v1/predictions?{range}");
    let anomalies = format!("/v1/anomalies?{range}");
    let (p, a) = (get(&s, &predictions), get(&s, &anomalies));
    assert_eq!(p["rows"].as_array().unwrap().len(), 120, "{p}");
    let flagged = a["rows"].as_array().unwrap().len();
    assert!(flagged >= 30, "{a}");

    // What a rerun of the window with more tasks leaves while it runs, and
    // a shard of `score --write-store` before its manifest: parts beside
    // the job's, named by no manifest (copies of the job's part, so any
    // row read from them is a duplicate).
    let hour = data.join("store/predictions/date=2024-03-01/hour=10");
    let part = hour.join("part-raw-1h-00000.parquet");
    assert!(part.is_file(), "{}", part.display());
    for name in [
        "part-raw-1h-00001.parquet",
        "part-raw-1h-shard-0-of-2.parquet",
    ] {
        std::fs::copy(&part, hour.join(name)).unwrap();
    }
    for (path, before) in [(&predictions, &p), (&anomalies, &a)] {
        let after = get(&s, path);
        assert_eq!(
            after["rows"].as_array().unwrap().len(),
            before["rows"].as_array().unwrap().len(),
            "{path}: rows of unnamed parts were read"
        );
        assert!(after == *before, "{path}: the answer changed");
    }
    s.terminate();
}

#[test]
fn reads_can_require_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let config = data.join("c.toml");
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(
        &config,
        "[auth]\ningest_tokens = [\"ingest-secret\"]\nadmin_tokens = [\"admin-secret\"]\nprotect_reads = true\n",
    )
    .unwrap();
    // The environment adds a token without touching the file.
    let s = {
        let mut cmd = common::bin();
        cmd.env("FLEETSCORE__AUTH__INGEST_TOKENS", r#"["from-env"]"#);
        Server::start_with(cmd, data, &["--config", config.to_str().unwrap()])
    };
    assert_eq!(s.request("GET", "/v1/jobs", &[], b"").0, 401);
    assert_eq!(
        s.request("GET", "/v1/jobs", &[("Authorization", "Bearer nope")], b"")
            .0,
        403
    );
    assert_eq!(
        s.request(
            "GET",
            "/v1/jobs",
            &[("Authorization", "Bearer from-env")],
            b""
        )
        .0,
        200
    );
    assert_eq!(s.request("GET", "/v1/jobs", &[ADMIN], b"").0, 200);
    // The env list replaced the file's, as documented (env over file).
    assert_eq!(s.post("/write", &[INGEST], "m,device=d v=1 1").0, 401);
    assert_eq!(
        s.post(
            "/write",
            &[("Authorization", "Bearer from-env")],
            "m,device=d v=1 1"
        )
        .0,
        204
    );
    // Liveness and metrics stay open.
    assert_eq!(s.request("GET", "/healthz", &[], b"").0, 200);
    s.terminate();
}

/// A regressor whose Box-Cox step cannot take a reading at or below 0
/// scores that row NaN (as the README says of missing values). JSON has no
/// NaN: the API answered `"score": null` where its document said a number,
/// so a generated client failed on the row. The contract test
/// (`tests/contract/run.sh`) found it; the document now says null.
#[test]
fn a_nan_score_answers_null_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/sklearn/models/pt_bc_lin_f1.p4.pkl");
    common::import_as(data, &model, "d", "boxcox");
    std::fs::write(
        data.join("r.csv"),
        "TS,Device,Tag,Value\n2024-03-01T10:00:00Z,d,boxcox,2.5\n2024-03-01T10:01:00Z,d,boxcox,-1\n",
    )
    .unwrap();
    assert!(run(data, &["ingest", data.join("r.csv").to_str().unwrap()])
        .status
        .success());
    let o = run(
        data,
        &[
            "backfill",
            "--from",
            "2024-03-01T10:00:00Z",
            "--to",
            "2024-03-01T11:00:00Z",
        ],
    );
    assert!(o.status.success(), "{}", common::text(&o));
    let s = Server::start(data, &[]);
    let doc = get(&s, "/v1/openapi.json");
    let p = get_checked(
        &s,
        &doc,
        "/v1/predictions",
        "/v1/predictions?from=2024-03-01T10:00:00Z&to=2024-03-01T11:00:00Z",
    );
    let scores: Vec<&Value> = p["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["score"])
        .collect();
    assert_eq!(scores.len(), 2, "{p}");
    assert!(scores[0].is_f64(), "{p}");
    assert!(scores[1].is_null(), "{p}");
    s.terminate();
}
