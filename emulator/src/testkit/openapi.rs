//! Checks JSON against DigitalOcean's OpenAPI description, for the suites that compare the
//! emulator's answers and the clients' requests with it. The description is not part of the
//! repository: it is read from `$TANDEM_REFERENCE_DIR`, else `shared/reference` beside the
//! repository, and a test without it is skipped, saying why.
//!
//! The checker walks the schema: `$ref`, `allOf` (all), `anyOf`/`oneOf` (at least one),
//! `nullable`, `type`, `required`, `properties`, `items`, string `enum`s, and a `discriminator`
//! mapping (which alternative of an `anyOf` applies).
use std::path::PathBuf;

use serde_json::Value;

/// The reserved IPs' description (reserved IPv4 and IPv6, actions, droplets).
pub const RESERVED_IP_SPEC: &str = "digitalocean-reserved-ip.openapi.yaml";
/// The droplet actions' description (fencing's power actions).
pub const DROPLET_ACTIONS_SPEC: &str = "digitalocean-droplet-actions.openapi.yaml";

/// The reference directory: `$TANDEM_REFERENCE_DIR` (for a checkout elsewhere, such as a git
/// worktree), else `shared/reference` beside the repository.
pub fn reference_dir() -> PathBuf {
    std::env::var_os("TANDEM_REFERENCE_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference"),
        PathBuf::from,
    )
}

/// The description `name` as JSON, or `None` after saying (as a skip) that it is absent.
pub fn spec_file(name: &str) -> Option<Value> {
    let path = reference_dir().join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let y: serde_yaml::Value = serde_yaml::from_str(&text).expect("the spec parses");
            Some(serde_json::to_value(y).expect("the spec converts to JSON"))
        }
        Err(e) => {
            super::skip(&format!(
                "{} not readable ({e}); the OpenAPI check needs it (set TANDEM_REFERENCE_DIR)",
                path.display()
            ));
            None
        }
    }
}

pub fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    let mut v = v;
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.trim_start_matches('#');
        v = spec
            .pointer(pointer)
            .unwrap_or_else(|| panic!("unresolved $ref {r}"));
    }
    v
}

/// Every mismatch between `value` and `schema`, each with its JSON path.
pub fn check(spec: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(spec, s, value, path, errors);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            // A discriminator names the one alternative that applies (a request's `type`).
            if let Some(chosen) = discriminated(schema, value) {
                check(
                    spec,
                    &serde_json::json!({"$ref": chosen}),
                    value,
                    path,
                    errors,
                );
                continue;
            }
            let fits = alts.iter().any(|s| {
                let mut e = Vec::new();
                check(spec, s, value, path, &mut e);
                e.is_empty()
            });
            if !fits {
                errors.push(format!("{path}: matches none of the {key} alternatives"));
            }
        }
    }
    let ty = schema.get("type").and_then(Value::as_str).or_else(|| {
        (schema.get("properties").is_some() || schema.get("required").is_some()).then_some("object")
    });
    let ok = match ty {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => {
            errors.push(format!("{path}: unknown schema type {other}"));
            true
        }
    };
    if !ok {
        errors.push(format!(
            "{path}: expected {}, got {value}",
            ty.unwrap_or("?")
        ));
        return;
    }
    if let (Some(en), Some(s)) = (schema.get("enum").and_then(Value::as_array), value.as_str())
        && !en.iter().any(|e| e.as_str() == Some(s))
    {
        errors.push(format!("{path}: {s:?} is not one of {en:?}"));
    }
    if let Some(obj) = value.as_object() {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                errors.push(format!("{path}: required field {r} is missing"));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, s) in props {
                if let Some(v) = obj.get(k) {
                    check(spec, s, v, &format!("{path}.{k}"), errors);
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(spec, items, v, &format!("{path}[{i}]"), errors);
        }
    }
}

/// The `$ref` that `schema`'s discriminator maps `value` to, when it has one inside this file
/// (a bundle may leave mappings to other files unresolved: then every alternative is tried).
fn discriminated(schema: &Value, value: &Value) -> Option<String> {
    let d = schema.get("discriminator")?;
    let tag = value.get(d.get("propertyName")?.as_str()?)?.as_str()?;
    let target = d.get("mapping")?.get(tag)?.as_str()?;
    target.starts_with("#/").then(|| target.to_owned())
}

/// The documented response of `(template, method, status)`.
pub fn response<'a>(spec: &'a Value, template: &str, method: &str, status: u16) -> &'a Value {
    let op = &spec["paths"][template][method];
    assert!(
        op.is_object(),
        "no operation {method} {template} in the spec"
    );
    let r = &op["responses"][status.to_string()];
    let r = if r.is_null() {
        &op["responses"]["default"]
    } else {
        r
    };
    resolve(spec, r)
}

/// The path template of the description that `path` (a concrete path, no query) is an
/// instance of: each `{name}` segment stands for any one segment.
pub fn template_of<'a>(spec: &'a Value, path: &str) -> Option<&'a str> {
    let segs: Vec<&str> = path.split('/').collect();
    spec["paths"].as_object()?.keys().find_map(|t| {
        let tsegs: Vec<&str> = t.split('/').collect();
        let fits = tsegs.len() == segs.len()
            && tsegs
                .iter()
                .zip(&segs)
                .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')));
        fits.then_some(t.as_str())
    })
}

/// Every way a request (`method` on the concrete `path`, with its JSON `body`, if any) is not
/// what the description documents: an unknown path or operation, or a body that does not fit
/// the operation's request schema.
pub fn request_errors(spec: &Value, method: &str, path: &str, body: Option<&Value>) -> Vec<String> {
    let where_ = format!("{} {path}", method.to_uppercase());
    let Some(template) = template_of(spec, path) else {
        return vec![format!("{where_}: no such path in the description")];
    };
    let op = &spec["paths"][template][method.to_lowercase()];
    if !op.is_object() {
        return vec![format!("{where_}: {template} documents no {method}")];
    }
    let schema = &resolve(spec, &op["requestBody"])["content"]["application/json"]["schema"];
    let mut errors = Vec::new();
    match (body, schema.is_null()) {
        (Some(b), false) => check(spec, schema, b, "$", &mut errors),
        (Some(_), true) => errors.push("a body where the description documents none".into()),
        (None, false) if op["requestBody"]["required"] == Value::Bool(true) => {
            errors.push("no body where the description requires one".into());
        }
        (None, _) => {}
    }
    errors
        .into_iter()
        .map(|e| format!("{where_} ({template}): {e}"))
        .collect()
}
