//! The OpenAPI 3.1 document of the HTTP routes `serve` answers with data:
//! the `/v1` API, `/readyz`, `/healthz`, `/metrics` and the ingest
//! endpoints of [`crate::serve`] (not the dashboard's page and assets at
//! `/` and `/ui/`). Served at `/v1/openapi.json`.
//!
//! Generated, not written: each handler carries a `#[utoipa::path]`
//! attribute (its route, parameters, body and every status it answers),
//! and the bodies' schemas come from the types the handlers build and
//! parse ([`super::types`], and the request types beside the handlers),
//! listed once in [`ApiDoc`]. A `500` (the job store or the object store
//! failed) is not listed per operation. What is left to keep true by hand
//! is that a route added to a router is added to [`ApiDoc`] and to the
//! README's API table: `tests/api_docs.rs` compares the document with
//! that table (both ways) and calls every documented route, `tests/api.rs`
//! checks real answers against the schemas here, and the contract test
//! (`crates/fleetscore/tests/contract/run.sh`, in `.ci/run`) lets
//! schemathesis generate requests from this document against a live
//! server, failing on any 5xx or any answer that does not fit it.
//!
//! Each operation's `x-auth` says who may call it under `[auth]`:
//! `open` (always), `read` (anyone unless `protect_reads`, then any ingest
//! or admin token), `ingest` (an ingest or admin token once any token is
//! configured), `admin` (an admin token once any token is configured).
//! Its `security` is derived from that here ([`Access`]), so the two
//! cannot disagree.
//!
//! Names follow the API's one vocabulary (see the module docs of
//! [`crate::api`]): `ts, device, tag, value, prediction, score`; instants
//! are RFC 3339 strings, with `<name>_ns` integers beside them in job and
//! task records.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::{Modify, OpenApi};

use super::types;

/// What the document says before its routes.
const DESCRIPTION: &str = "Ingest readings, schedule and inspect scoring jobs, manage models, read predictions.

Times: every instant is an RFC 3339 UTC string (`2026-12-05T03:00:00Z`; a fraction only when the instant has one, 3, 6 or 9 digits); job and task records also give each as integer nanoseconds since the epoch under `<name>_ns`; durations are integers named with their unit (`_ms`, `_ns`). Query times may be RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC).

Names: `ts, device, tag, value` for readings (the raw/ columns) and `prediction, score` for predictions (`Val` of predictions files is `value`; `Score` is `score`, `Decision` in the reference deployment's files).

Access (`x-auth` of each operation): `open`; `read` (open unless `[auth] protect_reads`, then any ingest or admin token); `ingest` (any ingest or admin token once a token is configured); `admin` (an admin token once a token is configured). Tokens go in `Authorization: Bearer TOKEN` (or `Token TOKEN`; `?p=TOKEN` on the ingest routes). Failures answer `{\"error\": \"…\"}`; any route may also answer `503` when the server is at `[server] max_connections`, and `500` when the job store or the object store fails.";

/// The document: every route's handler, and the reusable answers.
#[derive(OpenApi)]
#[openapi(
    info(title = "fleetscore", description = DESCRIPTION),
    paths(
        crate::serve::healthz,
        super::readyz,
        crate::serve::metrics_text,
        crate::sources::http::write_v1,
        crate::sources::http::write_v2,
        crate::sources::http::readings,
        super::readings,
        super::list_jobs,
        super::trigger,
        super::get_job,
        super::retry,
        super::cancel,
        super::slowest,
        super::schedules,
        super::models,
        super::model,
        super::upload,
        super::promote,
        super::predictions,
        super::anomalies,
        super::overview,
        super::extent,
        super::rejected,
        super::openapi,
        crate::sources::http::ping,
        crate::sources::http::ping_head,
        crate::sources::http::query,
        crate::sources::http::query_post,
    ),
    components(
        // The failures' bodies: referenced from the answers below only,
        // which utoipa does not collect schemas from.
        schemas(types::ErrorBody, types::IngestFailure, types::Refused, types::PartialWrite, types::Rejection),
        responses(
        types::BadRequest,
        types::BatchRefused,
        types::Unauthorized,
        types::Forbidden,
        types::NotFound,
        types::BodyTimeout,
        types::Conflict,
        types::TooLarge,
        types::UnsupportedMedia,
        types::KeyReused,
        types::Unavailable,
        types::DiskFull,
        ),
    ),
    tags(
        (name = "ingest", description = "Readings in: InfluxDB line protocol, JSON, NDJSON, CSV; answered once durable."),
        (name = "data", description = "Readings and predictions out."),
        (name = "jobs", description = "Scoring jobs, their tasks and the schedules that create them."),
        (name = "models", description = "The model registry."),
        (name = "service", description = "Health, readiness, metrics and this document."),
    ),
    modifiers(&Access),
)]
pub struct ApiDoc;

/// The OpenAPI 3.1 document of every route `serve` answers.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Derives each operation's `security` from its `x-auth`, and adds the
/// security schemes.
struct Access;

impl Access {
    /// OpenAPI `security` of an `x-auth` value: `{}` is "no token", for a
    /// server without tokens (and for reads that are not protected).
    /// `None` for an unknown value (a unit test refuses those).
    fn security(who: &str) -> Option<Vec<SecurityRequirement>> {
        let none = SecurityRequirement::default;
        let bearer = || SecurityRequirement::new("bearer", Vec::<String>::new());
        let basic = || SecurityRequirement::new("basic", Vec::<String>::new());
        let query = || SecurityRequirement::new("query_token", Vec::<String>::new());
        Some(match who {
            "open" => vec![],
            "read" | "admin" => vec![none(), bearer(), basic()],
            "ingest" => vec![none(), bearer(), basic(), query()],
            _ => return None,
        })
    }
}

/// Every operation of a path.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
        &mut item.query,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

impl Modify for Access {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer TOKEN` (the scheme in any case; `Token TOKEN` too).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "HTTP Basic auth with the token as the password (any user name): what Telegraf's InfluxDB output and InfluxDB 1.x clients send.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "query_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "p",
                "InfluxDB v1 style, on the ingest routes.",
            ))),
        );
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                let who = op
                    .extensions
                    .as_ref()
                    .and_then(|e| e.get("x-auth"))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                op.security = Access::security(who);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    /// Every `$ref` of `v`, anywhere.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_every_component_is_used() {
        let doc = doc();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in &found {
            let mut at = &doc;
            for part in r.strip_prefix("#/").unwrap().split('/') {
                at = &at[part];
            }
            assert!(at.is_object(), "{r} does not resolve");
        }
        for kind in ["schemas", "responses"] {
            for name in doc["components"][kind].as_object().unwrap().keys() {
                let r = format!("#/components/{kind}/{name}");
                assert!(found.contains(&r.as_str()), "{r} is never used");
            }
        }
    }

    #[test]
    fn every_operation_says_who_may_call_it_and_answers_with_a_success() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let who = op["x-auth"].as_str().unwrap_or_default();
                assert!(
                    Access::security(who).is_some(),
                    "{method} {path}: x-auth {who:?}"
                );
                assert!(op["security"].is_array(), "{method} {path}: no security");
                let codes: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
                assert!(
                    codes.iter().any(|c| c.starts_with('2')),
                    "{method} {path}: no success answer in {codes:?}"
                );
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(ids.insert(id.to_string()), "operationId {id:?} twice");
            }
        }
    }

    /// Every object schema of the answers is closed: a field the server
    /// adds without documenting it fails the checks against the document
    /// (the tests and the contract test), rather than passing unseen.
    #[test]
    fn every_object_schema_is_closed() {
        let doc = doc();
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            if schema["type"] == "object" && name != "Reading" {
                assert_eq!(
                    schema["additionalProperties"], false,
                    "schema {name} allows undocumented fields: add #[serde(deny_unknown_fields)]"
                );
            }
        }
    }
}
