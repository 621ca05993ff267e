//! Checks a JSON answer against the schema the OpenAPI document gives for
//! it, so that the document cannot say one thing while the server answers
//! another. Covers what the document uses: `$ref` (to schemas and to
//! reusable responses), `oneOf`, `allOf`, `type` (one or several), `enum`,
//! `format: date-time`, `minimum`/`maximum`, object `properties` /
//! `required` / `additionalProperties: false`, array `items`.
#![allow(dead_code)] // each test file uses a subset

use serde_json::Value;

/// What `reference` (`#/components/…`) points to in `doc`.
fn pointed<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let path = reference
        .strip_prefix("#/")
        .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
    let target = path.split('/').fold(doc, |at, part| &at[part]);
    assert!(target.is_object(), "$ref {reference} does not resolve");
    target
}

/// The answer `code` of `method path` (a path as the document writes it,
/// `/v1/jobs/{id}`), a reusable response resolved; panics if the document
/// does not list it.
pub fn answer<'a>(doc: &'a Value, method: &str, path: &str, code: u16) -> &'a Value {
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(
        op.is_object(),
        "{method} {path} is not in the OpenAPI document"
    );
    let answer = &op["responses"][code.to_string()];
    assert!(
        answer.is_object(),
        "{method} {path} answered {code}, which the OpenAPI document does not list for it"
    );
    match answer["$ref"].as_str() {
        Some(r) => pointed(doc, r),
        None => answer,
    }
}

/// The schema of the JSON answer `code` of `method path`; panics if it
/// documents none.
pub fn answer_schema<'a>(doc: &'a Value, method: &str, path: &str, code: u16) -> &'a Value {
    let schema = &answer(doc, method, path, code)["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {code}: the OpenAPI document gives no JSON schema"
    );
    schema
}

/// Panics, listing every difference, unless `value` (the answer `code`
/// of `method path`) fits its documented schema.
pub fn assert_conforms(doc: &Value, method: &str, path: &str, code: u16, value: &Value) {
    let schema = answer_schema(doc, method, path, code);
    let mut errors = Vec::new();
    check(doc, schema, value, "answer", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path} {code} does not match its OpenAPI schema (fix the answer, or its \
         type in crates/server/src/api/types.rs and the handler's #[utoipa::path]):\n  {}\nanswer: {value}",
        errors.join("\n  ")
    );
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => resolve(doc, pointed(doc, r)),
        None => schema,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a value of JSON type `actual` is one of `allowed`.
fn type_ok(allowed: &Value, actual: &str) -> bool {
    let fits = |t: &str| t == actual || (t == "number" && actual == "integer");
    match allowed {
        Value::String(t) => fits(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(fits),
        _ => true,
    }
}

/// The API's instants: `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z`,
/// a fraction only when the instant has one.
fn instant_error(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let shape = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z');
    if !shape {
        return Some(format!("{s:?} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)"));
    }
    match s[19..s.len() - 1].strip_prefix('.') {
        None if s.len() == 20 => None,
        Some(f)
            if matches!(f.len(), 3 | 6 | 9)
                && f.bytes().all(|c| c.is_ascii_digit())
                && !f.ends_with("000") =>
        {
            None
        }
        _ => Some(format!(
            "{s:?}: the fraction must be 3, 6 or 9 digits and present only when needed"
        )),
    }
}

fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    for part in schema["allOf"].as_array().into_iter().flatten() {
        check(doc, part, v, at, errors);
    }
    if let Some(branches) = schema["oneOf"].as_array() {
        let fits = branches
            .iter()
            .filter(|b| {
                let mut e = Vec::new();
                check(doc, b, v, at, &mut e);
                e.is_empty()
            })
            .count();
        match fits {
            1 => {}
            0 => errors.push(format!("{at}: {v} fits none of the documented shapes")),
            n => errors.push(format!(
                "{at}: {v} fits {n} of the documented shapes; oneOf needs exactly one"
            )),
        }
        return;
    }
    let actual = type_name(v);
    if !type_ok(&schema["type"], actual) {
        errors.push(format!(
            "{at}: a {actual}, documented as {}",
            schema["type"]
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            errors.push(format!("{at}: {v} is not one of {}", schema["enum"]));
        }
    }
    if let (Some(least), Some(n)) = (schema["minimum"].as_f64(), v.as_f64()) {
        if n < least {
            errors.push(format!("{at}: {v} is below the minimum {least}"));
        }
    }
    if let (Some(most), Some(n)) = (schema["maximum"].as_f64(), v.as_f64()) {
        if n > most {
            errors.push(format!("{at}: {v} is above the maximum {most}"));
        }
    }
    if let (Some("date-time"), Some(s)) = (schema["format"].as_str(), v.as_str()) {
        if let Some(e) = instant_error(s) {
            errors.push(format!("{at}: {e}"));
        }
    }
    match v {
        Value::Object(map) => {
            let props = &schema["properties"];
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                if !map.contains_key(name) {
                    errors.push(format!("{at}: the documented field `{name}` is missing"));
                }
            }
            for (k, x) in map {
                let p = &props[k];
                if p.is_object() {
                    check(doc, p, x, &format!("{at}.{k}"), errors);
                } else if schema["additionalProperties"] == false {
                    errors.push(format!("{at}: field `{k}` is not documented"));
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, x) in items.iter().enumerate() {
                check(doc, &schema["items"], x, &format!("{at}[{i}]"), errors);
            }
        }
        _ => {}
    }
}
