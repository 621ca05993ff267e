//! The API's documentation against the running server, so that neither can
//! drift: the README's API table lists exactly the routes and methods of
//! `GET /v1/openapi.json`, with the same access, parameters and status
//! codes; every documented route answers with a documented status (and
//! JSON that fits its schema), and enforces its documented access; the
//! README's `curl` examples for posting readings work as shown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
mod openapi_check;
use common::Server;

const ADMIN: (&str, &str) = ("Authorization", "Bearer admin-secret");
const INGEST: (&str, &str) = ("Authorization", "Bearer ingest-secret");

fn readme() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines between `<!-- NAME…-->` and `<!-- /NAME -->` of the README.
fn section<'a>(readme: &'a str, name: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("<!-- {name}")))
        .unwrap_or_else(|| panic!("the README has no `<!-- {name}` marker"));
    let end = lines
        .iter()
        .position(|l| l.trim() == format!("<!-- /{name} -->"))
        .unwrap_or_else(|| panic!("the README has no `<!-- /{name} -->` marker"));
    lines[start + 1..end].to_vec()
}

/// The text in backticks of `cell`.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn is_code(t: &str) -> bool {
    t.len() == 3 && t.bytes().all(|b| b.is_ascii_digit())
}

/// What the table and the document say of one route and method: who may
/// call it, its parameters (query and header), its status codes.
#[derive(Debug, PartialEq)]
struct Route {
    who: String,
    params: BTreeSet<String>,
    codes: BTreeSet<String>,
}

type Routes = BTreeMap<(String, String), Route>;

fn readme_routes(readme: &str) -> Routes {
    let mut out = Routes::new();
    for line in section(readme, "api-table") {
        let line = line.trim();
        if !line.starts_with('|') || line.starts_with("| method") || line.starts_with("| ---") {
            continue;
        }
        assert!(
            !line.contains("\\|"),
            "an API table row may not contain `\\|` (the check splits cells on `|`): {line}"
        );
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 7, "an API table row needs 7 cells: {line}");
        let method = ticked(cells[0]).concat();
        let path = ticked(cells[1]).concat();
        let codes = ticked(cells[5])
            .into_iter()
            .chain(ticked(cells[6]))
            .filter(|t| is_code(t))
            .collect();
        let route = Route {
            who: cells[2].to_string(),
            params: ticked(cells[3]).into_iter().collect(),
            codes,
        };
        let key = (method.clone(), path.clone());
        assert!(
            out.insert(key, route).is_none(),
            "{method} {path} is in the README's API table twice"
        );
    }
    out
}

fn document_routes(doc: &Value) -> Routes {
    let mut out = Routes::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            // A path parameter is one of the path's `{…}`, and each of
            // those is declared.
            let declared: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap_or_default().to_string())
                .collect();
            let in_path: BTreeSet<String> = path
                .split('{')
                .skip(1)
                .filter_map(|p| p.split_once('}').map(|(name, _)| name.to_string()))
                .collect();
            assert_eq!(
                declared, in_path,
                "{method} {path}: path parameters declared vs in the path"
            );
            let route = Route {
                who: op["x-auth"].as_str().unwrap_or("(no x-auth)").to_string(),
                params: params
                    .iter()
                    .filter(|p| p["in"] != "path")
                    .map(|p| p["name"].as_str().unwrap_or_default().to_string())
                    .collect(),
                codes: op["responses"]
                    .as_object()
                    .map(|r| r.keys().cloned().collect())
                    .unwrap_or_default(),
            };
            out.insert((method.to_ascii_uppercase(), path.clone()), route);
        }
    }
    out
}

/// A server with an admin and an ingest token, reads protected, and
/// readings compacted into raw/ at once.
fn server(data: &Path) -> Server {
    let config = data.join("c.toml");
    std::fs::write(
        &config,
        "[auth]\ningest_tokens = [\"ingest-secret\"]\nadmin_tokens = [\"admin-secret\"]\n\
         protect_reads = true\n",
    )
    .unwrap();
    Server::start(
        data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--compact-interval",
            "200ms",
        ],
    )
}

fn openapi(s: &Server) -> Value {
    let (status, body) = s.request("GET", "/v1/openapi.json", &[], b"");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_readme_api_table_lists_exactly_the_documented_routes() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let documented = document_routes(&openapi(&s));
    s.terminate();
    let listed = readme_routes(&readme());
    let mut problems = Vec::new();
    for (key, doc) in &documented {
        match listed.get(key) {
            None => problems.push(format!(
                "{} {} is in the OpenAPI document but not in the README's API table",
                key.0, key.1
            )),
            Some(row) if row != doc => problems.push(format!(
                "{} {}: the README says {row:?}, the OpenAPI document {doc:?}",
                key.0, key.1
            )),
            Some(_) => {}
        }
    }
    for key in listed.keys().filter(|k| !documented.contains_key(*k)) {
        problems.push(format!(
            "{} {} is in the README's API table but not in the OpenAPI document",
            key.0, key.1
        ));
    }
    assert!(
        problems.is_empty(),
        "the README's API table and /v1/openapi.json disagree (fix README.md's api-table or \
         the handler's #[utoipa::path] in crates/server/src/api.rs, serve.rs or sources/http.rs):\n  {}",
        problems.join("\n  ")
    );
    // The routes everyone relies on are there (guards against an empty table
    // matching an empty document).
    for route in [
        ("POST", "/v1/readings"),
        ("POST", "/write"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/openapi.json"),
    ] {
        assert!(
            documented.contains_key(&(route.0.into(), route.1.into())),
            "{route:?} is not documented"
        );
    }
}

/// A request to `path` (with its `{…}` filled) that each route can take
/// without data: names that do not exist, empty bodies.
fn concrete(path: &str) -> String {
    path.replace("{id}", "999999")
        .replace("{device}", "nobody")
        .replace("{tag}", "t")
}

#[test]
fn every_documented_route_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let doc = openapi(&s);
    let documented = document_routes(&doc);
    assert!(documented.len() >= 20, "{documented:?}");
    for ((method, path), route) in &documented {
        let target = concrete(path);
        // Who may call it: without a token, with the ingest token.
        let (anon, _) = s.request(method, &target, &[], b"");
        let (ingest, _) = s.request(method, &target, &[INGEST], b"");
        let refused = |st: u16| st == 401 || st == 403;
        match route.who.as_str() {
            "open" => assert!(
                !refused(anon),
                "{method} {path} is documented open but refused a request without a token ({anon})"
            ),
            // Reads are protected on this server.
            "read" | "ingest" => {
                assert_eq!(anon, 401, "{method} {path} ({}) without a token", route.who);
                assert!(
                    !refused(ingest),
                    "{method} {path} ({}) refused the ingest token ({ingest})",
                    route.who
                );
            }
            "admin" => {
                assert_eq!(anon, 401, "{method} {path} (admin) without a token");
                assert_eq!(ingest, 403, "{method} {path} (admin) with an ingest token");
            }
            other => panic!("{method} {path}: unknown x-auth {other:?}"),
        }
        // With the admin token: a documented status, and its JSON fits.
        let (status, body) = s.request(method, &target, &[ADMIN], b"");
        assert!(
            route.codes.contains(&status.to_string()),
            "{method} {target} answered {status}, which the OpenAPI document does not list: {body}"
        );
        let answer = openapi_check::answer(&doc, method, path, status);
        if answer["content"]["application/json"].is_object() {
            let v: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{method} {target} {status}: not JSON ({e}): {body}"));
            openapi_check::assert_conforms(&doc, method, path, status, &v);
        }
    }
    s.terminate();
}

/// One `curl` of the README: what it sends and the answer it shows.
struct Example {
    path: String,
    content_type: String,
    body: String,
    answer: String,
}

/// The text of the single-quoted shell word after `flag` in `cmd`.
fn quoted_after(cmd: &str, flag: &str) -> Option<String> {
    let at = cmd.find(flag)? + flag.len();
    let rest = cmd[at..].trim_start().strip_prefix('\'')?;
    rest.split_once('\'').map(|(word, _)| word.to_string())
}

fn readme_examples(readme: &str) -> Vec<Example> {
    let text = section(readme, "reading-examples").join("\n");
    let mut out = Vec::new();
    // Fenced blocks alternate with the text between them.
    for block in text.split("```").skip(1).step_by(2) {
        let Some(cmd) = block.strip_prefix("sh\n") else {
            continue;
        };
        let cmd = cmd.replace("\\\n", " ");
        let url = cmd
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:8080/"))
            .unwrap_or_else(|| panic!("no http://127.0.0.1:8080/ URL in {cmd}"));
        let header = quoted_after(&cmd, "-H").unwrap_or_else(|| panic!("no -H in {cmd}"));
        let body = quoted_after(&cmd, "--data-binary")
            .or_else(|| quoted_after(&cmd, "-d"))
            .unwrap_or_else(|| panic!("no -d or --data-binary in {cmd}"));
        let answer = cmd
            .lines()
            .find_map(|l| l.trim().strip_prefix("# → "))
            .unwrap_or_else(|| panic!("no `# → answer` line in {cmd}"));
        out.push(Example {
            path: url.trim_start_matches("http://127.0.0.1:8080").to_string(),
            content_type: header
                .strip_prefix("Content-Type: ")
                .unwrap_or_else(|| panic!("the -H is not a Content-Type: {header}"))
                .to_string(),
            body,
            answer: answer.to_string(),
        });
    }
    out
}

#[test]
fn the_readme_examples_for_posting_readings_work_as_shown() {
    let examples = readme_examples(&readme());
    let kinds: BTreeSet<&str> = examples.iter().map(|e| e.content_type.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["application/json", "application/x-ndjson", "text/csv"]),
        "the README shows JSON, NDJSON and CSV"
    );
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path());
    let doc = openapi(&s);
    let mut accepted = 0;
    for e in &examples {
        let (status, body) = s.request(
            "POST",
            &e.path,
            &[("Content-Type", &e.content_type), INGEST],
            e.body.as_bytes(),
        );
        assert_eq!(
            (status, body.as_str()),
            (200, e.answer.as_str()),
            "the README's example ({}) {:?}",
            e.content_type,
            e.body
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        openapi_check::assert_conforms(&doc, "POST", "/v1/readings", 200, &v);
        accepted += v["accepted"].as_u64().unwrap();
    }
    // And they read back as the README says, once compacted into raw/.
    let day = "from=2026-12-05T00:00:00Z&to=2026-12-06T00:00:00Z";
    let started = Instant::now();
    let mut stored = 0;
    while stored < accepted {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{stored} of {accepted} readings in raw/"
        );
        std::thread::sleep(Duration::from_millis(100));
        stored = 0;
        for device in ["pump-7", "7"] {
            let path = format!("/v1/readings?device={device}&{day}");
            let (st, body) = s.request("GET", &path, &[INGEST], b"");
            assert_eq!(st, 200, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            openapi_check::assert_conforms(&doc, "GET", "/v1/readings", 200, &v);
            stored += v["rows"].as_array().map_or(0, Vec::len) as u64;
        }
    }
    let (_, body) = s.request(
        "GET",
        &format!("/v1/readings?device=7&{day}"),
        &[INGEST],
        b"",
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["rows"],
        serde_json::json!([{"ts": "2026-12-05T03:00:05.250Z", "device": "7", "tag": "1", "value": 3.0}]),
        "the reference-layout reading with integer names"
    );
    s.terminate();
}
