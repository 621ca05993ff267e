//! Issue 16, defects 2, 7 and 8, as a user meets them: device and tag names
//! never become paths or CSV syntax, and every source refuses the same
//! names, timestamps and values with an error naming the rule.

use std::path::{Path, PathBuf};

use fleetscore_codecs::Readings;

mod common;
use common::{run, text, Server};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures/sklearn")
        .join(name)
}

/// A fallback model `(*, t)`, so that any device's tag `t` is scored.
fn import_fallback(data: &Path) {
    let model = fixture("models/std_rbf_f1.p4.pkl");
    let o = run(
        data,
        &[
            "models",
            "import",
            model.to_str().unwrap(),
            "--device",
            "*",
            "--tag",
            "t",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

/// Names no source accepts any more, but which a store written by an
/// older version may hold: raw/ objects written directly, for the hour
/// 2024-01-01 00:00 UTC.
fn store_with_names(data: &Path, devices: &[&str]) {
    let r: Readings = devices
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            (
                1_704_067_200_000_000_000 + i as i64 * 1_000_000_000,
                d,
                "t",
                1.0 + i as f64,
            )
        })
        .collect();
    for (key, bytes) in fleetscore_store::raw_objects(&r, b"names-test").unwrap() {
        let path = data.join("store").join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// The records of an RFC 4180 CSV text (quoted fields may hold commas,
/// doubled quotes and line breaks), header included.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        !quoted && field.is_empty() && row.is_empty(),
        "unterminated: {text:?}"
    );
    rows
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn device_names_cannot_escape_the_out_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    import_fallback(data);
    let out = data.join("out");
    // With a folder `preds_x` in --out, `preds_x/../../escaped_…` used to
    // resolve to a file beside --out.
    std::fs::create_dir_all(out.join("preds_x")).unwrap();
    let escape = ["x/../../escaped", "../../etc/x"];

    // From a file: refused at the line, naming the rule; nothing written.
    let input = data.join("in.csv");
    std::fs::write(
        &input,
        "TS,Device,Tag,Value\n2024-01-01 00:00:00.000,pump,t,1.0\n2024-01-01 00:00:01.000,x/../../escaped,t,2.0\n",
    )
    .unwrap();
    let o = run(
        data,
        &[
            "score",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "csv",
            "--layout",
            "per-model",
        ],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("line 3")
            && t.contains("Device")
            && t.contains("device name \"x/../../escaped\": contains `/`"),
        "{t}"
    );
    assert_eq!(files_under(&out), Vec::<String>::new());

    // From the store (names an older version let in): every model gets its
    // own file, inside --out, the name encoded.
    store_with_names(data, &[escape[0], escape[1], "pump 7, north", "a_b"]);
    let o = run(
        data,
        &[
            "score",
            "--from",
            "2024-01-01T00:00:00Z",
            "--to",
            "2024-01-01T01:00:00Z",
            "--out",
            out.to_str().unwrap(),
            "--format",
            "csv",
            "--layout",
            "per-model",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let files = files_under(&out);
    assert_eq!(files.len(), 4, "{files:?}");
    let stems: Vec<&str> = files.iter().map(|f| &f[..f.len() - 12]).collect();
    assert_eq!(
        stems,
        [
            "preds_..%2F..%2Fetc%2Fx_t_",
            "preds_a_b_t_",
            "preds_pump%207%2C%20north_t_",
            "preds_x%2F..%2F..%2Fescaped_t_",
        ]
    );
    // Nothing beside --out: the data folder holds what it held before.
    let outside: Vec<String> = files_under(data)
        .into_iter()
        .filter(|f| !f.starts_with("out/") && !f.starts_with("store/"))
        .filter(|f| !f.starts_with("in.csv") && !f.starts_with("fleetscore.db"))
        .collect();
    assert_eq!(outside, Vec::<String>::new());
    for f in &files {
        let body = std::fs::read_to_string(out.join(f)).unwrap();
        assert_eq!(parse_csv(&body).len(), 2, "{f}: {body}");
    }
}

#[test]
fn csv_output_quotes_names_with_commas_and_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    import_fallback(data);
    let evil = "evil,\n2024-01-01 00:00:00.000,injected,t,9,1,9.0";
    store_with_names(data, &[evil, "pump \"7\", north", "ok"]);
    let out = data.join("out");
    let o = run(
        data,
        &[
            "score",
            "--from",
            "2024-01-01T00:00:00Z",
            "--to",
            "2024-01-01T01:00:00Z",
            "--out",
            out.to_str().unwrap(),
            "--format",
            "csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let rows = parse_csv(&std::fs::read_to_string(out.join("predictions.csv")).unwrap());
    assert_eq!(
        rows[0],
        ["TS", "Device", "Tag", "Val", "Prediction", "Score", "Label"]
    );
    let mut devices: Vec<String> = rows[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.len(), 7, "{r:?}");
            r[1].clone()
        })
        .collect();
    devices.sort();
    assert_eq!(devices, [evil, "ok", "pump \"7\", north"]);

    // The same names from a CSV input file: the line break is refused
    // (a control character), the comma and quotes are a name like any.
    let input = data.join("in.csv");
    std::fs::write(
        &input,
        "TS,Device,Tag,Value\n2024-01-01 00:00:00.000,\"pump \"\"7\"\", north\",t,1.0\n",
    )
    .unwrap();
    let o = run(
        data,
        &[
            "score",
            "--input",
            input.to_str().unwrap(),
            "--out",
            data.join("out2").to_str().unwrap(),
            "--format",
            "csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let got = std::fs::read_to_string(data.join("out2/predictions.csv")).unwrap();
    assert!(
        got.contains("\n2024-01-01 00:00:00.000,\"pump \"\"7\"\", north\",t,1,"),
        "{got}"
    );
    std::fs::write(
        &input,
        "TS,Device,Tag,Value\n2024-01-01 00:00:00.000,\"a\nb\",t,1.0\n",
    )
    .unwrap();
    let o = run(data, &["ingest", input.to_str().unwrap()]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("line 2") && t.contains("contains a control character (U+000A)"),
        "{t}"
    );
}

/// A request: path, headers, body, and what its 400 must say.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], String, &'a str);

/// Every HTTP source refuses a bad name, time or value with a 400 that
/// says the rule, and stores nothing.
#[test]
fn every_http_source_refuses_what_breaks_the_one_policy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let json = [("Content-Type", "application/json")];
    let csv = [("Content-Type", "text/csv")];
    let long = "d".repeat(129);
    let cases: Vec<Case<'_>> = vec![
        (
            "/write",
            &[],
            "m,device=ok v=1 1\nm,device=x/../../escaped v=1 2\n".to_string(),
            "line 2: device name \"x/../../escaped\": contains `/`",
        ),
        (
            "/write",
            &[],
            format!("m,device={long} v=1 1\n"),
            "is 129 bytes; the limit is 128",
        ),
        (
            "/write",
            &[],
            "m,device=d v=1 -9223372036854775808\n".to_string(),
            "line 1: timestamp 1677-09-21T00:12:43.145224192Z",
        ),
        (
            "/v1/readings",
            &json,
            r#"[{"ts": 1, "device": "a\nb", "tag": "t", "value": 1}]"#.to_string(),
            "field `device`: device name \"a\\nb\": contains a control character (U+000A)",
        ),
        (
            "/v1/readings",
            &json,
            r#"{"ts": 1, "device": "d", "tag": "..", "value": 1}"#.to_string(),
            "field `tag`: tag name \"..\": is `.` or `..`",
        ),
        (
            "/v1/readings",
            &csv,
            "TS,Device,Tag,Value\n1,\"a\rb\",t,1\n".to_string(),
            "line 2: column `Device`: device name \"a\\rb\": contains a control character (U+000D)",
        ),
        (
            "/v1/readings",
            &csv,
            "TS,Device,Tag,Value\n1,d,t,nan\n".to_string(),
            "line 2: column `Value`: value NaN is not a finite number",
        ),
        (
            "/v1/readings",
            &csv,
            "TS,Device,Tag,Value,site\n1,d,t,1,x\n".to_string(),
            "column(s) `site` (#4) are not mapped",
        ),
    ];
    for (path, headers, body, want) in &cases {
        let (status, answer) = s.post(path, headers, body);
        assert_eq!(status, 400, "{path} {body:?}: {answer}");
        let doc: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let reasons: Vec<String> = doc["rejections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let at = match (r.get("line"), r.get("element")) {
                    (Some(l), _) => format!("line {l}: "),
                    (_, Some(e)) => format!("element {e}: "),
                    _ => String::new(),
                };
                format!("{at}{}", r["reason"].as_str().unwrap())
            })
            .collect();
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "{path} {body:?}: {reasons:?} lacks {want:?}"
        );
    }
    // Nothing of them was stored; a good reading still is.
    assert_eq!(s.post("/write", &[], "m,device=ok v=1 1").0, 204);
    s.terminate();
}

/// A model key breaking the name rule is refused before anything is
/// stored, naming the rule; and object keys built from names cannot leave
/// the store root even if a bad name slipped through (object_store encodes
/// `.`/`..` path segments as `%2E`/`%2E%2E`).
#[test]
fn model_keys_follow_the_name_rule_and_store_keys_stay_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let model = fixture("models/std_rbf_f1.p4.pkl");
    for (device, want) in [
        (
            "x/../../escaped",
            "device name \"x/../../escaped\": contains `/`",
        ),
        ("..", "device name \"..\": is `.` or `..`"),
        (
            "a\tb",
            "device name \"a\\tb\": contains a control character (U+0009)",
        ),
    ] {
        let o = run(
            data,
            &[
                "models",
                "import",
                model.to_str().unwrap(),
                "--device",
                device,
                "--tag",
                "t",
            ],
        );
        assert!(!o.status.success());
        assert!(text(&o).contains(want), "{}", text(&o));
    }
    assert!(!data.join("store").join("models").exists());

    let root = data.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let store = fleetscore_store::Store::open(root.to_str().unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        store
            .put("models/../../escaped/t/v1/meta.json", b"{}".to_vec())
            .await
            .unwrap();
        store
            .put("models/*/t/v1/meta.json", b"{}".to_vec())
            .await
            .unwrap();
    });
    assert_eq!(
        files_under(data)
            .into_iter()
            .filter(|f| !f.starts_with("root/"))
            .collect::<Vec<_>>(),
        Vec::<String>::new()
    );
    assert_eq!(
        files_under(&root),
        [
            "models/%2A/t/v1/meta.json",
            "models/%2E%2E/%2E%2E/escaped/t/v1/meta.json"
        ]
    );
}
