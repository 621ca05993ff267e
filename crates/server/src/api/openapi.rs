//! The OpenAPI 3.1 document of the HTTP routes `serve` answers with data:
//! the `/v1` API, `/readyz`, `/healthz`, `/metrics` and the ingest
//! endpoints of [`crate::serve`] (not the dashboard's page and assets at
//! `/` and `/ui/`). Served at `/v1/openapi.json`. A `500` (the job store
//! or the object store failed) is not listed per operation.
//!
//! It is written by hand, so three tests keep it true: `tests/api_docs.rs`
//! compares its routes, methods, access rules, parameters and status codes
//! with the README's API table (both ways) and calls every documented
//! route on a running server; `tests/api.rs` checks real answers against
//! the schemas here. A route added to a router must be added here and to
//! the README table by hand: the tests cannot see a route that neither
//! names.
//!
//! Each operation's `x-auth` says who may call it under `[auth]`:
//! `open` (always), `read` (anyone unless `protect_reads`, then any ingest
//! or admin token), `ingest` (an ingest or admin token once any token is
//! configured), `admin` (an admin token once any token is configured).
//!
//! Names follow the API's one vocabulary (see the module docs of
//! [`crate::api`]): `ts, device, tag, value, prediction, score`; instants
//! are RFC 3339 strings, with `<name>_ns` integers beside them in job and
//! task records.

use serde_json::{json, Map, Value};

/// Who may call a route (the `x-auth` of its operation).
#[derive(Clone, Copy)]
enum Access {
    /// Anyone, always.
    Open,
    /// Anyone, unless `[auth] protect_reads`: then any ingest or admin token.
    Read,
    /// Once any token is configured, an ingest or an admin token.
    Ingest,
    /// Once any token is configured, an admin token.
    Admin,
}

impl Access {
    fn name(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Read => "read",
            Access::Ingest => "ingest",
            Access::Admin => "admin",
        }
    }

    /// OpenAPI `security`: `{}` is "no token", for a server without
    /// tokens (and for reads that are not protected).
    fn security(self) -> Value {
        match self {
            Access::Open => json!([]),
            Access::Read | Access::Admin => json!([{}, {"bearer": []}]),
            Access::Ingest => json!([{}, {"bearer": []}, {"query_token": []}]),
        }
    }
}

/// A reference to a schema of `components`.
fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// A nullable schema of `kind` (`"string"`, `"integer"`).
fn nullable(kind: &str, description: &str) -> Value {
    json!({"type": [kind, "null"], "description": description})
}

fn instant(description: &str) -> Value {
    json!({"type": "string", "format": "date-time", "description": description})
}

fn instant_or_null(description: &str) -> Value {
    json!({"type": ["string", "null"], "format": "date-time", "description": description})
}

fn integer(description: &str) -> Value {
    json!({"type": "integer", "description": description})
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn one_of(values: &[&str], description: &str) -> Value {
    json!({"type": "string", "enum": values, "description": description})
}

/// An object schema: every property listed in `required`, none other
/// allowed.
fn object(description: &str, props: &[(&str, Value)], optional: &[&str]) -> Value {
    let properties: Map<String, Value> = props
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    let required: Vec<&str> = props
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !optional.contains(k))
        .collect();
    json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// A parameter: `place` is `query`, `path` or `header`.
fn param(name: &str, place: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": place, "required": required, "schema": schema, "description": description})
}

fn q(name: &str, schema: Value, description: &str) -> Value {
    param(name, "query", false, schema, description)
}

fn json_answer(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The failure answers of `codes`, each a JSON `Error` (a refused batch
/// on ingest routes: `Refused`).
fn failures(codes: &[u16], ingest: bool) -> Vec<(u16, Value)> {
    codes
        .iter()
        .map(|&code| {
            let description = match code {
                400 => "Bad request: `error` says which parameter or field is wrong and why; nothing was changed.",
                401 => "A token is required: `Authorization: Bearer TOKEN` (on the ingest routes also a token that is not one of theirs).",
                403 => "The token may not do this: an ingest token on an admin route, or an unknown token on a protected read.",
                404 => "No such job or model.",
                408 => "The body did not arrive within `[server] body_timeout`.",
                409 => "The job's state does not allow this (e.g. retrying a job that succeeded, cancelling one that ended).",
                413 => "The body (decompressed) is too large: `[server] max_body_bytes` on ingest, 2 MB for a model file (which may decompress to `[server] max_model_bytes`), 64 KiB for other JSON bodies.",
                415 => "Unsupported `Content-Type` (POST /v1/readings) or `Content-Encoding` (identity or gzip).",
                422 => "The `Idempotency-Key` was used before with other readings; nothing stored.",
                503 => "Not now; retry (after `Retry-After` seconds when given). `error` says why: not ready, a read past `[server] query_timeout` (narrow the range), no room under `[server] max_inflight_bytes`, the ingest log unavailable or not compacted before a job was queued, busy model uploads or registry writers.",
                507 => "The ingest log's disk is full; nothing stored; retry after `Retry-After` (the log recovers by itself once space is freed).",
                _ => "See `error`.",
            };
            let schema = if ingest && code == 400 {
                json!({"oneOf": [r("Refused"), r("Error")]})
            } else {
                r("Error")
            };
            let mut answer = json_answer(description, schema);
            if matches!(code, 503 | 507) {
                answer["headers"] = json!({"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}});
            }
            (code, answer)
        })
        .collect()
}

/// One operation.
fn op(
    summary: &str,
    access: Access,
    params: Vec<Value>,
    body: Option<Value>,
    answers: Vec<(u16, Value)>,
) -> Value {
    let responses: Map<String, Value> = answers
        .into_iter()
        .map(|(code, a)| (code.to_string(), a))
        .collect();
    let mut o = json!({
        "summary": summary,
        "x-auth": access.name(),
        "security": access.security(),
        "parameters": params,
        "responses": responses,
    });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

/// `ok` followed by the failures of `codes`.
fn answers(ok: (u16, Value), codes: &[u16]) -> Vec<(u16, Value)> {
    let mut all = vec![ok];
    all.extend(failures(codes, false));
    all
}

/// The headers of an ingest request.
fn ingest_headers() -> Vec<Value> {
    vec![
        param(
            "Idempotency-Key",
            "header",
            false,
            json!({"type": "string", "maxLength": 256}),
            "Names the batch so that it may be resent after an unknown outcome without being stored twice (a bare token or a quoted string, no control characters).",
        ),
        param(
            "Content-Encoding",
            "header",
            false,
            json!({"type": "string", "enum": ["identity", "gzip", "x-gzip"]}),
            "A gzip body is decompressed; `[server] max_body_bytes` holds for the decompressed size.",
        ),
    ]
}

/// The headers of an accepted ingest answer.
fn ingest_answer_headers() -> Value {
    json!({
        "Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}, "description": "The batch was stored before under this Idempotency-Key; not stored again."},
        "Fleetscore-Warning": {"schema": {"type": "string"}, "description": "The batch's timestamps are implausibly far from now (stored anyway); says which precision or unit would make them sensible."},
    })
}

/// The failures of an ingest route.
fn ingest_failures() -> Vec<(u16, Value)> {
    failures(&[400, 401, 408, 413, 415, 422, 503, 507], true)
}

fn line_protocol_body() -> Value {
    json!({"required": true, "content": {"text/plain": {"schema": {"type": "string"},
        "example": "machine,device=pump-7 temp=21.5,rpm=1450i 1796439600000000000\n"}},
        "description": "InfluxDB line protocol. The `device` tag names the device (`[ingest.line_protocol] device_tag`); each numeric or boolean field is one reading whose tag is the field key; string fields and other tags are skipped; a line without a timestamp gets the arrival time."})
}

fn readings_body() -> Value {
    json!({
        "required": true,
        "description": "Readings as one JSON object, a JSON array of them, or NDJSON (one object per line), or CSV. All or nothing: one bad reading refuses the batch.",
        "content": {
            "application/json": {
                "schema": {"oneOf": [r("Reading"), array(r("Reading"))]},
                "example": [{"ts": "2026-12-05T03:00:00Z", "device": "pump-7", "tag": "temp", "value": 21.5}],
            },
            "application/x-ndjson": {
                "schema": r("Reading"),
                "description": "One Reading object per line (blank lines are skipped). `application/ndjson` is accepted too.",
            },
            "text/csv": {
                "schema": {"type": "string"},
                "description": "A header and rows, columns mapped by `[ingest.csv]` (default: the header names `TS`, `Device`, `Tag`, `Value`, in any case and order).",
                "example": "TS,Device,Tag,Value\n2026-12-05T03:00:00Z,pump-7,temp,21.5\n",
            },
        },
    })
}

fn small_json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// The query parameters `from` and `to`.
fn from_to() -> Vec<Value> {
    vec![
        q(
            "from",
            json!({"type": "string", "format": "date-time"}),
            "Range start (inclusive), RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC). Default: 24 hours before `to`.",
        ),
        q(
            "to",
            json!({"type": "string", "format": "date-time"}),
            "Range end (exclusive). Default: 24 hours after `from`, else the end of the newest job that scored readings (else now). At most 744 hours after `from`.",
        ),
    ]
}

/// The query parameters of a range of rows: `device`, `tag`, `from`, `to`,
/// `limit` (default and maximum).
fn range_params(device_required: bool, limit: (u64, u64)) -> Vec<Value> {
    let device = param(
        "device",
        "query",
        device_required,
        json!({"type": "string"}),
        "Only this device.",
    );
    let tag = q("tag", json!({"type": "string"}), "Only this tag.");
    let limit = q(
        "limit",
        json!({"type": "integer", "minimum": 0, "default": limit.0, "maximum": limit.1}),
        "At most this many rows, the earliest; `truncated` says whether more were left out.",
    );
    [vec![device, tag], from_to(), vec![limit]].concat()
}

fn id_param() -> Vec<Value> {
    vec![param(
        "id",
        "path",
        true,
        json!({"type": "integer"}),
        "The job's id.",
    )]
}

fn key_params() -> Vec<Value> {
    vec![
        param(
            "device",
            "path",
            true,
            json!({"type": "string"}),
            "The device, or `*` for a tag's fallback model (URL-encode other characters).",
        ),
        param("tag", "path", true, json!({"type": "string"}), "The tag."),
    ]
}

fn paths() -> Value {
    use Access::{Admin, Ingest, Open, Read};
    let text = |d: &str| json!({"description": d, "content": {"text/plain": {"schema": {"type": "string"}}}});
    json!({
        "/healthz": {"get": op("Liveness: answers `ok` while the process serves", Open, vec![], None, vec![(200, text("`ok`"))])},
        "/readyz": {"get": op(
            "Readiness: the job store and the object store answer and the ingest log can write",
            Open, vec![], None,
            vec![
                (200, json_answer("Ready.", r("Ready"))),
                (503, json!({"description": "Not ready; the fields say what is down (and the log's disk full). `Retry-After: 1`.",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": r("Ready")}}})),
            ],
        )},
        "/metrics": {"get": op("Prometheus metrics (text exposition format)", Open, vec![], None, vec![(200, text("Counters, gauges and histograms; see the README's `/metrics` list."))])},
        "/write": {"post": op(
            "Ingest InfluxDB v1 line protocol; answered once the batch is durable",
            Ingest,
            [vec![
                q("precision", json!({"type": "string", "enum": ["ns", "n", "us", "u", "ms", "s", "m", "h"], "default": "ns"}), "Unit of the line timestamps."),
                q("db", json!({"type": "string"}), "Accepted and ignored (InfluxDB clients send it)."),
            ], ingest_headers()].concat(),
            Some(line_protocol_body()),
            [vec![(204, json!({"description": "Stored (durable in the ingest log).", "headers": ingest_answer_headers()}))], ingest_failures()].concat(),
        )},
        "/api/v2/write": {"post": op(
            "Ingest InfluxDB v2 line protocol; answered once the batch is durable",
            Ingest,
            [vec![
                q("precision", json!({"type": "string", "enum": ["ns", "us", "ms", "s"], "default": "ns"}), "Unit of the line timestamps."),
                q("org", json!({"type": "string"}), "Accepted and ignored."),
                q("bucket", json!({"type": "string"}), "Accepted and ignored."),
            ], ingest_headers()].concat(),
            Some(line_protocol_body()),
            [vec![(204, json!({"description": "Stored (durable in the ingest log).", "headers": ingest_answer_headers()}))], ingest_failures()].concat(),
        )},
        "/v1/readings": {
            "post": op(
                "Ingest readings as JSON, NDJSON or CSV; answered once the batch is durable",
                Ingest,
                ingest_headers(),
                Some(readings_body()),
                [vec![(200, {
                    let mut a = json_answer("Stored (durable in the ingest log); `accepted` readings.", r("Accepted"));
                    a["headers"] = ingest_answer_headers();
                    a
                })], ingest_failures()].concat(),
            ),
            "get": op(
                "Stored readings (raw/) of one device, and tag, in a time range",
                Read,
                range_params(true, (100_000, 1_000_000)),
                None,
                answers((200, json_answer("The readings, oldest first.", r("ReadingRows"))), &[400, 401, 403, 503]),
            ),
        },
        "/v1/jobs": {
            "get": op(
                "Jobs, newest first",
                Read,
                vec![
                    q("state", json!({"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled", "skipped"]}), "Only jobs in this state."),
                    q("schedule", json!({"type": "string"}), "Only jobs of this schedule."),
                    q("limit", json!({"type": "integer", "minimum": 0, "default": 100, "maximum": 10_000}), "At most this many jobs."),
                ],
                None,
                answers((200, json_answer("The jobs.", object("", &[("jobs", array(r("Job")))], &[]))), &[400, 401, 403, 503]),
            ),
            "post": op(
                "Trigger jobs: one per window of `window` covering [from, to), queued for the runner",
                Admin,
                vec![],
                Some(small_json_body(r("Trigger"))),
                answers((202, json_answer("Queued; the new jobs' ids, oldest window first.", object("", &[("jobs", array(json!({"type": "integer"})))], &[]))), &[400, 401, 403, 408, 413, 503]),
            ),
        },
        "/v1/jobs/{id}": {"get": op(
            "A job with its tasks and the models that failed",
            Read, id_param(), None,
            answers((200, json_answer("The job.", r("JobDetail"))), &[400, 401, 403, 404, 503]),
        )},
        "/v1/jobs/{id}/retry": {"post": op(
            "Queue a failed, cancelled or skipped job again",
            Admin, id_param(), None,
            answers((200, json_answer("The job, queued.", object("", &[("job", r("Job"))], &[]))), &[400, 401, 403, 404, 409, 503]),
        )},
        "/v1/jobs/{id}/cancel": {"post": op(
            "Cancel a queued or running job (a running one stops before its next task)",
            Admin, id_param(), None,
            answers((200, json_answer("The job, cancelled.", object("", &[("job", r("Job"))], &[]))), &[400, 401, 403, 404, 409]),
        )},
        "/v1/tasks/slowest": {"get": op(
            "The slowest finished tasks, slowest first",
            Read,
            vec![
                q("limit", json!({"type": "integer", "minimum": 0, "default": 10, "maximum": 1000}), "At most this many tasks."),
                q("kind", json!({"type": "string", "enum": ["map", "score"]}), "Only tasks of this kind: map (they read the data) or score; both by default."),
            ],
            None,
            answers((200, json_answer("The tasks.", object("", &[("tasks", array(r("SlowTask")))], &[]))), &[400, 401, 403, 503]),
        )},
        "/v1/schedules": {"get": op(
            "The configured schedules, with their last window and next run",
            Read, vec![], None,
            answers((200, json_answer("The schedules.", object("", &[("schedules", array(r("Schedule")))], &[]))), &[401, 403, 503]),
        )},
        "/v1/models": {"get": op(
            "Registered models, each with its live version",
            Read, vec![], None,
            answers((200, json_answer("The models.", r("ModelList"))), &[401, 403, 503]),
        )},
        "/v1/models/{device}/{tag}": {
            "get": op(
                "A model's versions",
                Read, key_params(), None,
                answers((200, json_answer("The model.", object("", &[("model", r("Model"))], &[]))), &[400, 401, 403, 404, 503]),
            ),
            "post": op(
                "Upload a scikit-learn pickle or joblib file (the body, at most 2 MB) as the model's new live version",
                Admin, key_params(),
                Some(json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}})),
                answers((201, json_answer("Imported (or unchanged: the same model as an existing version).", object("", &[("outcome", r("ImportOutcome"))], &[]))), &[400, 401, 403, 408, 413, 503]),
            ),
        },
        "/v1/models/{device}/{tag}/promote": {"post": op(
            "Make a version of the model live",
            Admin, key_params(),
            Some(small_json_body(object("", &[("version", integer("The version to make live."))], &[]))),
            answers((200, json_answer("The model.", object("", &[("model", r("Model"))], &[]))), &[400, 401, 403, 404, 408, 413, 503]),
        )},
        "/v1/predictions": {"get": op(
            "Predictions in a time range, by device and tag",
            Read,
            [range_params(false, (10_000, 1_000_000)), vec![q("anomalies", json!({"type": "boolean", "default": false}), "Only anomalies (prediction 1).")]].concat(),
            None,
            answers((200, json_answer("The predictions, oldest first.", r("PredictionRows"))), &[400, 401, 403, 503]),
        )},
        "/v1/anomalies": {"get": op(
            "Anomalous predictions (prediction 1) in a time range",
            Read,
            range_params(false, (10_000, 1_000_000)),
            None,
            answers((200, json_answer("The anomalies, oldest first.", r("PredictionRows"))), &[400, 401, 403, 503]),
        )},
        "/v1/overview": {"get": op(
            "Readings scored and anomalies per hour per device, from the jobs' manifests",
            Read,
            from_to(),
            None,
            answers((200, json_answer("One row per device, one column per hour.", r("Overview"))), &[400, 401, 403, 503]),
        )},
        "/v1/extent": {"get": op(
            "Where the data is: the first and last hour holding scored predictions and stored readings",
            Read, vec![], None,
            answers((200, json_answer("The extent.", r("Extent"))), &[401, 403, 503]),
        )},
        "/v1/openapi.json": {"get": op(
            "This document",
            Open, vec![], None,
            vec![(200, json_answer("OpenAPI 3.1.", json!({"type": "object"})))],
        )},
    })
}

/// The reusable schemas.
fn schemas() -> Value {
    let count = |d: &str| integer(d);
    let extent_of = |what: &str| {
        json!({"oneOf": [
            object(&format!("Where the {what} are."), &[
                ("first_hour", instant("Start of the first hour holding some.")),
                ("last_hour", instant("Start of the last hour holding some.")),
                ("end", instant("Where the newest end: the last hour's end, or the end of its newest scored window.")),
            ], &[]),
            {"type": "null", "description": format!("No {what} (or none found within the search budget).")},
        ]})
    };
    let job_states = [
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "skipped",
    ];
    // The integers job and task records had before the `_ns` fields.
    let legacy = |twin: &str, null: bool| {
        json!({"type": if null { json!(["integer", "null"]) } else { json!("integer") }, "deprecated": true,
               "description": format!("The same as `{twin}`; kept for clients written before the `_ns` fields.")})
    };
    json!({
        "Error": object("A failure.", &[("error", string("What was wrong and what to do."))], &[]),
        "Refused": object(
            "A batch refused whole: nothing stored; fix the readings named and resend the whole batch.",
            &[
                ("error", string("Summary: how many problems.")),
                ("rejections", array(object("One problem.", &[
                    ("line", integer("1-based line (line protocol, NDJSON, CSV, a JSON syntax error).")),
                    ("element", integer("0-based element of a JSON array.")),
                    ("reason", string("The field or column and the rule it breaks.")),
                ], &["line", "element"]))),
                ("omitted", count("Problems beyond those listed.")),
            ],
            &[],
        ),
        "Reading": {
            "type": "object",
            "description": "One reading to store. Field names match in any case (`TS`, `Device`, `Tag`, `Value` work); other fields are ignored; the same field twice in different cases is an error. Names, times and values follow the README's \"What a reading may hold\".",
            "required": ["ts", "device", "tag", "value"],
            "properties": {
                "ts": {"oneOf": [
                    {"type": "string", "description": "RFC 3339 (`2026-12-05T03:00:00Z`, `2026-12-05T04:00:00.250+01:00`; up to 9 fraction digits) or `YYYY-MM-DD HH:MM:SS[.fraction]` (UTC)."},
                    {"type": "integer", "description": "Nanoseconds since 1970-01-01T00:00:00Z."},
                ]},
                "device": {"type": ["string", "integer"], "description": "Device name; an integer is read as its decimal text (`1` is `\"1\"`)."},
                "tag": {"type": ["string", "integer"], "description": "Tag (sensor) name; an integer is read as its decimal text."},
                "value": {"type": "number", "description": "A finite JSON number (a string is refused)."},
            },
        },
        "Accepted": object(
            "A stored batch.",
            &[
                ("accepted", count("Readings in the batch.")),
                ("duplicate", json!({"type": "boolean", "description": "Present (true) when the batch was stored before under its Idempotency-Key and not stored again."})),
            ],
            &["duplicate"],
        ),
        "ReadingRow": object("A stored reading.", &[
            ("ts", instant("When it was measured.")),
            ("device", string("Device.")),
            ("tag", string("Tag.")),
            ("value", json!({"type": "number", "description": "The reading (`value` in raw/, `Value` in input files)."})),
        ], &[]),
        "ReadingRows": object("Readings of a range.", &[
            ("from", instant("Range start (inclusive).")),
            ("to", instant("Range end (exclusive).")),
            ("rows", array(r("ReadingRow"))),
            ("truncated", json!({"type": "boolean", "description": "More rows than `limit`: the earliest were kept."})),
        ], &[]),
        "PredictionRow": object("A scored reading.", &[
            ("ts", instant("When the reading was measured (`TS`).")),
            ("device", string("Device (`Device`).")),
            ("tag", string("Tag (`Tag`).")),
            ("value", json!({"type": "number", "description": "The value scored (`Val` in predictions files)."})),
            ("prediction", json!({"type": ["integer", "null"], "enum": [0, 1, null], "description": "An outlier detector's verdict: 1 = anomaly, 0 = normal (`Prediction`); null for regressors and classifiers."})),
            ("score", json!({"type": "number", "description": "`Score`: a detector's decision function (`Decision` in the reference's files; an anomaly below its threshold), a regressor's prediction, or a classifier's probability of its predicted class (its decision function when it has no predict_proba)."})),
            ("label", json!({"type": ["string", "null"], "description": "A classifier's predicted class as text (`Label`); null for detectors and regressors."})),
        ], &[]),
        "PredictionRows": object("Predictions of a range.", &[
            ("from", instant("Range start (inclusive).")),
            ("to", instant("Range end (exclusive).")),
            ("rows", array(r("PredictionRow"))),
            ("truncated", json!({"type": "boolean", "description": "More rows than `limit`: the earliest were kept."})),
        ], &[]),
        "Job": object("A job: the scoring of one window.", &[
            ("id", integer("Id (1, 2, …).")),
            ("schedule", nullable("string", "Its schedule, if scheduled.")),
            ("kind", one_of(&["scheduled", "backfill", "manual"], "How it came to be.")),
            ("from", instant("Window start (inclusive).")),
            ("from_ns", integer("Window start, nanoseconds since the epoch.")),
            ("to", instant("Window end (exclusive).")),
            ("to_ns", integer("Window end, nanoseconds since the epoch.")),
            ("mode", string("Input mode (`raw`).")),
            ("selection", json!({"type": ["array", "null"], "items": {"type": "string"}, "description": "The `device/tag` keys it scores; null: every model."})),
            ("state", one_of(&job_states, "State.")),
            ("batch_size", integer("Models per task.")),
            ("max_failed", string("Failure threshold: a count (`5`) or a percentage (`10%`) of models.")),
            ("max_retries", integer("Retries per task.")),
            ("concurrency", one_of(&["forbid", "allow"], "Overlap policy of its schedule.")),
            ("created", instant("When it was created.")),
            ("created_ns", integer("The same, nanoseconds.")),
            ("started", instant_or_null("When it started.")),
            ("started_ns", nullable("integer", "The same, nanoseconds.")),
            ("finished", instant_or_null("When it ended.")),
            ("finished_ns", nullable("integer", "The same, nanoseconds.")),
            ("models", count("Models scored or failed.")),
            ("rows", count("Readings scored.")),
            ("anomalies", count("Anomalies found.")),
            ("failed_models", count("Models that did not score.")),
            ("tasks", count("Tasks.")),
            ("load_ms", count("Time reading the window, ms.")),
            ("score_ms", count("Time scoring, summed over tasks, ms.")),
            ("write_ms", count("Time writing, summed over tasks, ms.")),
            ("error", nullable("string", "Why it failed, was cancelled or skipped.")),
            ("manifest", nullable("string", "The key of its predictions manifest, once written.")),
            ("window_start", legacy("from_ns", false)),
            ("window_end", legacy("to_ns", false)),
            ("created_at", legacy("created_ns", false)),
            ("started_at", legacy("started_ns", true)),
            ("finished_at", legacy("finished_ns", true)),
        ], &[]),
        "Task": object("A task of a job: a share of its models (`score`) or of its window's readings (`map`).", &[
            ("job_id", integer("Its job.")),
            ("idx", integer("0, 1, … within the job: score tasks first, then map tasks.")),
            ("kind", one_of(&["score", "map"], "`score`: scores some models; `map`: reads a share of the window's raw row groups for the score tasks.")),
            ("state", one_of(&["queued", "running", "succeeded", "failed", "cancelled"], "State.")),
            ("attempts", count("Attempts made.")),
            ("first_key", string("First `device/tag` key.")),
            ("last_key", string("Last key.")),
            ("n_keys", count("Keys in it.")),
            ("queued", instant("When it was queued.")),
            ("queued_ns", integer("The same, nanoseconds.")),
            ("started", instant_or_null("When its last attempt started.")),
            ("started_ns", nullable("integer", "The same, nanoseconds.")),
            ("finished", instant_or_null("When it ended.")),
            ("finished_ns", nullable("integer", "The same, nanoseconds.")),
            ("models", count("Models scored or failed.")),
            ("rows", count("Readings.")),
            ("anomalies", count("Anomalies.")),
            ("failed_models", count("Failed models.")),
            ("load_ms", count("Load time, ms.")),
            ("score_ms", count("Score time, ms.")),
            ("write_ms", count("Write time, ms.")),
            ("output", nullable("string", "Its predictions object.")),
            ("error", nullable("string", "Last error.")),
            ("lease_owner", nullable("string", "The worker holding its lease while it runs.")),
            ("lease_until", instant_or_null("When that lease expires.")),
            ("lease_until_ns", nullable("integer", "The same, nanoseconds.")),
            ("not_before", instant_or_null("A queued retry waits until then.")),
            ("not_before_ns", nullable("integer", "The same, nanoseconds.")),
            ("plan_id", nullable("string", "The job plan it belongs to.")),
            ("queued_at", legacy("queued_ns", false)),
            ("started_at", legacy("started_ns", true)),
            ("finished_at", legacy("finished_ns", true)),
        ], &[]),
        "Failure": object("A model that did not score.", &[
            ("task_idx", integer("Its task.")),
            ("device", string("Device.")),
            ("tag", string("Tag.")),
            ("reason", string("`no_model`, `no_data` (a model but no readings in the window), `feature_mismatch`, `evaluation`.")),
            ("detail", string("Details.")),
            ("rows", count("Readings it had.")),
        ], &[]),
        "JobDetail": object("A job with its tasks and failed models.", &[
            ("job", r("Job")),
            ("tasks", array(r("Task"))),
            ("failures", array(r("Failure"))),
        ], &[]),
        "SlowTask": object("A finished task and its timings.", &[
            ("job_id", integer("Its job.")),
            ("idx", integer("Its index in the job.")),
            ("kind", one_of(&["score", "map"], "`score` (scores models) or `map` (reads the window's readings).")),
            ("state", string("State.")),
            ("attempts", count("Attempts made.")),
            ("duration_ms", count("Start of its last attempt to its end, ms.")),
            ("n_keys", count("Keys in it.")),
            ("rows", count("Readings.")),
            ("first_key", string("First `device/tag` key.")),
            ("last_key", string("Last key.")),
            ("score_ms", count("Score time, ms.")),
            ("write_ms", count("Write time, ms.")),
        ], &[]),
        "Schedule": object("A `[[schedules]]` entry of the config.", &[
            ("name", string("Name.")),
            ("cron", string("Five-field cron, UTC.")),
            ("window_ns", count("Window length, nanoseconds.")),
            ("delay_ns", count("How long after a window's end its job is created, nanoseconds.")),
            ("mode", string("Input mode.")),
            ("batch_size", integer("Models per task.")),
            ("max_failed_models", string("Failure threshold: a count or a percentage.")),
            ("max_retries", integer("Retries per task.")),
            ("concurrency", one_of(&["forbid", "allow"], "Whether its jobs may overlap.")),
            ("catch_up", integer("Missed windows scored after downtime, at most.")),
            ("last_window_end", instant_or_null("End of the last window it created a job for.")),
            ("next_run", instant_or_null("When it next creates a job.")),
        ], &[]),
        "ModelList": object("The registry.", &[
            ("generation", count("Increases with every change of the registry.")),
            ("models", array(object("A model key and its live version.", &[
                ("device", string("Device, or `*` for a tag's fallback.")),
                ("tag", string("Tag.")),
                ("live", integer("The version that scores.")),
                ("versions", count("How many versions it has.")),
                ("description", nullable("string", "The live version, e.g. `Pipeline(StandardScaler, OneClassSVM(…))`.")),
                ("n_features", nullable("integer", "Its input features.")),
                ("input_mode", nullable("string", "`raw` or `window`.")),
                ("kind", json!({"type": ["string", "null"], "enum": ["outlier", "regressor", "classifier", null], "description": "What the live version predicts: anomalies (`outlier`), a number (`regressor`) or a class (`classifier`)."})),
            ], &[]))),
        ], &[]),
        "Model": object("A model key and every version.", &[
            ("device", string("Device, or `*`.")),
            ("tag", string("Tag.")),
            ("live", integer("The version that scores.")),
            ("versions", array(object("One version.", &[
                ("version", integer("1, 2, 3, …")),
                ("sha256", string("SHA-256 of its binary encoding.")),
                ("imported_at", instant("When it was imported.")),
                ("source", string("Where it came from.")),
                ("description", string("One line, e.g. `Pipeline(StandardScaler, OneClassSVM(…))`.")),
                ("n_features", integer("Input features.")),
                ("kind", one_of(&["outlier", "regressor", "classifier"], "What it predicts: anomalies, a number or a class.")),
                ("classes", array(json!({"type": "string"}))),
                ("input_mode", string("`raw`: each reading is a row; `window`: each window is a row of `features`.")),
                ("window", string("The window size of `window` input.")),
                ("features", array(json!({"type": "string"}))),
            ], &["window", "features", "classes"]))),
        ], &[]),
        "ImportOutcome": object("What an upload did.", &[
            ("outcome", one_of(&["added", "new_version", "unchanged"], "A new key (version 1), a new live version, or the same model as an existing version (nothing written).")),
            ("key", object("The model key.", &[("device", string("Device.")), ("tag", string("Tag."))], &[])),
            ("version", integer("The version added, or the existing one.")),
        ], &[]),
        "Overview": object("Readings scored and anomalies per device per hour.", &[
            ("from", instant("Range start.")),
            ("to", instant("Range end.")),
            ("hours", array(json!({"type": "string", "format": "date-time"}))),
            ("devices", array(json!({"type": "string"}))),
            ("anomalies", array(array(json!({"type": "integer"})))),
            ("rows", array(array(json!({"type": "integer"})))),
        ], &[]),
        "Extent": object("Where the data is.", &[
            ("predictions", extent_of("scored predictions")),
            ("readings", extent_of("stored readings")),
            ("max_hours", count("The longest from/to range one query may read, hours.")),
            ("complete", json!({"type": "boolean", "description": "False when the search stopped at its budget before finding both ends."})),
        ], &[]),
        "Ready": object("Readiness.", &[
            ("ready", json!({"type": "boolean"})),
            ("job_store", nullable("string", "Why the job store does not answer.")),
            ("object_store", nullable("string", "Why the object store does not answer.")),
            ("ingest_log", json!({"oneOf": [
                object("The ingest log cannot write.", &[
                    ("reason", nullable("string", "Why.")),
                    ("disk_full", json!({"type": "boolean"})),
                    ("since", instant_or_null("Since when.")),
                    ("failed_recoveries", count("Recoveries tried in vain.")),
                ], &[]),
                {"type": "null"},
            ]})),
        ], &["job_store", "object_store", "ingest_log"]),
        "Trigger": object("Jobs to create.", &[
            ("from", string("Start, RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC); rounded down to a window boundary.")),
            ("to", string("End (exclusive).")),
            ("window", json!({"type": "string", "default": "1h", "description": "Window length (`1h`, `15m`); one job per window, at most 10000."})),
            ("models", json!({"type": "array", "items": {"type": "string"}, "description": "Only these `device/tag` keys (default: every model)."})),
            ("batch_size", integer("Models per task (default `[jobs] batch_size`).")),
            ("max_failed_models", string("A count (`5`) or a percentage (`10%`); default `[jobs] max_failed_models`.")),
            ("max_retries", integer("Retries per task (default `[jobs] max_retries`).")),
        ], &["window", "models", "batch_size", "max_failed_models", "max_retries"]),
    })
}

/// The OpenAPI 3.1 document of every route `serve` answers.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "fleetscore",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Ingest readings, schedule and inspect scoring jobs, manage models, read predictions.\n\n\
                Times: every instant is an RFC 3339 UTC string (`2026-12-05T03:00:00Z`; a fraction only when the instant has one, 3, 6 or 9 digits); \
                job and task records also give each as integer nanoseconds since the epoch under `<name>_ns`; durations are integers named with their unit (`_ms`, `_ns`). \
                Query times may be RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC).\n\n\
                Names: `ts, device, tag, value` for readings (the raw/ columns) and `prediction, score` for predictions (`Val` of predictions files is `value`; `Score` is `score`, `Decision` in the reference deployment's files).\n\n\
                Access (`x-auth` of each operation): `open`; `read` (open unless `[auth] protect_reads`, then any ingest or admin token); `ingest` (any ingest or admin token once a token is configured); `admin` (an admin token once a token is configured). \
                Tokens go in `Authorization: Bearer TOKEN` (or `Token TOKEN`; `?p=TOKEN` on the ingest routes). Failures answer `{\"error\": \"…\"}`.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer TOKEN` (the scheme in any case; `Token TOKEN` too)."},
                "query_token": {"type": "apiKey", "in": "query", "name": "p", "description": "InfluxDB v1 style, on the ingest routes."},
            },
            "schemas": schemas(),
        },
        "paths": paths(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_reference_resolves_and_every_schema_is_used() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in &found {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
        for name in schemas.keys() {
            let r = format!("#/components/schemas/{name}");
            assert!(found.contains(&r.as_str()), "schema {name} is never used");
        }
    }

    #[test]
    fn every_operation_says_who_may_call_it_and_answers_with_a_success() {
        let doc = document();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let who = op["x-auth"].as_str().unwrap_or_default();
                assert!(
                    ["open", "read", "ingest", "admin"].contains(&who),
                    "{method} {path}: x-auth {who:?}"
                );
                let codes: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
                assert!(
                    codes.iter().any(|c| c.starts_with('2')),
                    "{method} {path}: no success answer in {codes:?}"
                );
            }
        }
    }
}
