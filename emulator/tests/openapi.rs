//! The emulator's DigitalOcean answers checked against DigitalOcean's OpenAPI description
//! (`shared/reference/digitalocean-reserved-ip.openapi.yaml` beside the repository, or in
//! `$TANDEM_REFERENCE_DIR`; the test is skipped, saying why, when the file is absent).
//!
//! The checker walks the schema: `$ref`, `allOf` (all), `anyOf`/`oneOf` (at least one),
//! `nullable`, `type`, `required`, `properties`, `items` and string `enum`s. It also checks
//! that the headers the operation documents (the rate-limit headers) are present.
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tandem_emulator::Emulator;
use tandem_emulator::testkit::{IP, PRIMARY, SECONDARY, TOKEN, fixture};

/// The reference directory: `$TANDEM_REFERENCE_DIR` (for a checkout elsewhere, such as a git
/// worktree), else `shared/reference` beside the repository.
fn reference_dir() -> PathBuf {
    std::env::var_os("TANDEM_REFERENCE_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference"),
        PathBuf::from,
    )
}

fn spec() -> Option<Value> {
    spec_file("digitalocean-reserved-ip.openapi.yaml")
}

fn spec_file(name: &str) -> Option<Value> {
    let path = reference_dir().join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let y: serde_yaml::Value = serde_yaml::from_str(&text).expect("the spec parses");
            Some(serde_json::to_value(y).expect("the spec converts to JSON"))
        }
        Err(e) => {
            tandem_emulator::testkit::skip(&format!(
                "{} not readable ({e}); the OpenAPI check needs it (set TANDEM_REFERENCE_DIR)",
                path.display()
            ));
            None
        }
    }
}

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
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
fn check(spec: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
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

/// The documented response of `(template, method, status)`.
fn response<'a>(spec: &'a Value, template: &str, method: &str, status: u16) -> &'a Value {
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

struct Checker {
    spec: Value,
    api: String,
    http: reqwest::Client,
    errors: Vec<String>,
    checked: usize,
}

impl Checker {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        template: &str,
        body: Option<Value>,
    ) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.api))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        let doc = response(
            &self.spec,
            template,
            &method.as_str().to_lowercase(),
            status,
        )
        .clone();
        let where_ = format!("{method} {path} ({status})");
        for h in doc["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if h != "content-type" && !headers.contains_key(h.as_str()) {
                self.errors.push(format!("{where_}: header {h} missing"));
            }
        }
        let schema = &doc["content"]["application/json"]["schema"];
        assert!(
            !schema.is_null(),
            "{where_}: the spec documents no JSON schema"
        );
        let mut errs = Vec::new();
        check(&self.spec, schema, &value, "$", &mut errs);
        self.errors
            .extend(errs.into_iter().map(|e| format!("{where_}: {e}")));
        self.checked += 1;
        value
    }
}

#[tokio::test]
async fn emulator_answers_match_the_openapi_description() {
    let Some(spec) = spec() else { return };
    let emu = Emulator::start(fixture(Duration::from_millis(30)))
        .await
        .unwrap();
    let mut c = Checker {
        spec,
        api: emu.addresses.api.clone(),
        http: reqwest::Client::new(),
        errors: Vec::new(),
        checked: 0,
    };
    for (kind, one) in [
        ("reserved_ips", "reserved_ip"),
        ("floating_ips", "floating_ip"),
    ] {
        let list = format!("/v2/{kind}");
        let item = format!("/v2/{kind}/{{{one}}}");
        let actions = format!("{item}/actions");
        let action = format!("{actions}/{{action_id}}");
        c.call(Method::GET, &list, &list, None).await;
        c.call(Method::GET, &format!("{list}/{IP}"), &item, None)
            .await;
        let target = if one == "reserved_ip" {
            SECONDARY
        } else {
            PRIMARY
        };
        let a = c
            .call(
                Method::POST,
                &format!("{list}/{IP}/actions"),
                &actions,
                Some(json!({"type": "assign", "droplet_id": target})),
            )
            .await;
        let id = a["action"]["id"].as_u64().expect("an action id");
        assert!(emu.settle(Duration::from_secs(2)).await);
        c.call(
            Method::GET,
            &format!("{list}/{IP}/actions/{id}"),
            &action,
            None,
        )
        .await;
        c.call(
            Method::GET,
            &format!("/v2/actions/{id}"),
            "/v2/actions/{action_id}",
            None,
        )
        .await;
    }
    // An unassigned IP (droplet null).
    c.call(
        Method::POST,
        &format!("/v2/reserved_ips/{IP}/actions"),
        "/v2/reserved_ips/{reserved_ip}/actions",
        Some(json!({"type": "unassign"})),
    )
    .await;
    assert!(emu.settle(Duration::from_secs(2)).await);
    let v = c
        .call(
            Method::GET,
            &format!("/v2/reserved_ips/{IP}"),
            "/v2/reserved_ips/{reserved_ip}",
            None,
        )
        .await;
    assert!(v["reserved_ip"]["droplet"].is_null());
    c.call(
        Method::GET,
        &format!("/v2/droplets/{PRIMARY}"),
        "/v2/droplets/{droplet_id}",
        None,
    )
    .await;
    // Errors: 404, 429, 500, and 401 (last: it needs a bad token).
    c.call(
        Method::GET,
        "/v2/reserved_ips/127.0.0.9",
        "/v2/reserved_ips/{reserved_ip}",
        None,
    )
    .await;
    emu.set_faults(json!({"rate_limit_burst": 1})).await;
    c.call(Method::GET, "/v2/reserved_ips", "/v2/reserved_ips", None)
        .await;
    emu.set_faults(json!({"error_rate": 1.0})).await;
    c.call(Method::GET, "/v2/reserved_ips", "/v2/reserved_ips", None)
        .await;
    emu.set_faults(json!({})).await;
    emu.revoke(TOKEN).await;
    c.call(
        Method::GET,
        "/v2/droplets/1",
        "/v2/droplets/{droplet_id}",
        None,
    )
    .await;
    assert!(c.checked >= 17, "checked {}", c.checked);
    assert!(c.errors.is_empty(), "{}", c.errors.join("\n"));
}

/// Fencing's calls: droplet power actions (their own description file), the droplet list
/// by name, and a droplet that is off.
#[tokio::test]
async fn droplet_power_answers_match_the_droplet_actions_description() {
    // One after the other: where the reference directory is missing, the skip says so once.
    let Some(actions) = spec_file("digitalocean-droplet-actions.openapi.yaml") else {
        return;
    };
    let Some(spec) = spec() else {
        return;
    };
    let emu = Emulator::start(fixture(Duration::from_millis(30)))
        .await
        .unwrap();
    let mut c = Checker {
        spec: actions,
        api: emu.addresses.api.clone(),
        http: reqwest::Client::new(),
        errors: Vec::new(),
        checked: 0,
    };
    let post = "/v2/droplets/{droplet_id}/actions";
    let a = c
        .call(
            Method::POST,
            &format!("/v2/droplets/{SECONDARY}/actions"),
            post,
            Some(json!({"type": "power_off"})),
        )
        .await;
    let id = a["action"]["id"].as_u64().expect("an action id");
    assert_eq!(a["action"]["type"], "power_off");
    assert_eq!(a["action"]["resource_type"], "droplet");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done = c
        .call(
            Method::GET,
            &format!("/v2/droplets/{SECONDARY}/actions/{id}"),
            "/v2/droplets/{droplet_id}/actions/{action_id}",
            None,
        )
        .await;
    assert_eq!(done["action"]["status"], "completed");
    c.call(
        Method::POST,
        "/v2/droplets/999/actions",
        post,
        Some(json!({"type": "power_off"})),
    )
    .await;
    c.spec = spec;
    let d = c
        .call(
            Method::GET,
            &format!("/v2/droplets/{SECONDARY}"),
            "/v2/droplets/{droplet_id}",
            None,
        )
        .await;
    assert_eq!(d["droplet"]["status"], "off");
    let list = c
        .call(
            Method::GET,
            "/v2/droplets?name=primary",
            "/v2/droplets",
            None,
        )
        .await;
    let ids: Vec<u64> = list["droplets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    assert_eq!(ids, [PRIMARY]);
    assert_eq!(c.checked, 5);
    assert!(c.errors.is_empty(), "{}", c.errors.join("\n"));
}

#[test]
fn the_checker_catches_missing_fields_and_wrong_types() {
    let Some(spec) = spec() else { return };
    let schema = json!({"$ref": "#/components/schemas/droplet"});
    let mut errors = Vec::new();
    check(
        &spec,
        &schema,
        &json!({"id": "not a number", "name": 3}),
        "$",
        &mut errors,
    );
    assert!(
        errors.iter().any(|e| e.contains("$.id: expected integer")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("required field memory")),
        "{errors:?}"
    );
    let action = json!({"$ref": "#/components/schemas/action"});
    let mut errors = Vec::new();
    check(
        &spec,
        &action,
        &json!({"id": 1, "status": "done"}),
        "$",
        &mut errors,
    );
    assert!(
        errors.iter().any(|e| e.contains("not one of")),
        "{errors:?}"
    );
}
