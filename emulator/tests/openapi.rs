//! The emulator's DigitalOcean answers checked against DigitalOcean's OpenAPI description
//! (`shared/reference/digitalocean-reserved-ip.openapi.yaml` beside the repository, or in
//! `$TANDEM_REFERENCE_DIR`; the test is skipped, saying why, when the file is absent), with the
//! checker of `testkit::openapi`. It also checks that the headers the operation documents (the
//! rate-limit headers) are present, and that the requests it sends fit the description.
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tandem_emulator::Emulator;
use tandem_emulator::testkit::openapi::{
    DROPLET_ACTIONS_SPEC, RESERVED_IP_SPEC, check, request_errors, response, spec_file,
};
use tandem_emulator::testkit::{IP, IPV6, PRIMARY, SECONDARY, TOKEN, fixture, with_ipv6};

fn spec() -> Option<Value> {
    spec_file(RESERVED_IP_SPEC)
}

struct Checker {
    spec: Value,
    api: String,
    http: reqwest::Client,
    errors: Vec<String>,
    checked: usize,
}

impl Checker {
    fn new(spec: Value, emu: &Emulator) -> Checker {
        Checker {
            spec,
            api: emu.addresses.api.clone(),
            http: reqwest::Client::new(),
            errors: Vec::new(),
            checked: 0,
        }
    }

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
        let bare = path.split('?').next().unwrap_or(path);
        self.errors.extend(request_errors(
            &self.spec,
            method.as_str(),
            bare,
            body.as_ref(),
        ));
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
    let mut c = Checker::new(spec, &emu);
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
    let Some(actions) = spec_file(DROPLET_ACTIONS_SPEC) else {
        return;
    };
    let Some(spec) = spec() else {
        return;
    };
    let emu = Emulator::start(fixture(Duration::from_millis(30)))
        .await
        .unwrap();
    let mut c = Checker::new(actions, &emu);
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

/// Issue 14 item 1: the reserved IPv6 routes: the list, a held and an unassigned IPv6, assign
/// and unassign (201, each request body checked against its schema), the action read at
/// `/v2/actions/{id}` (there is no per-IP one), an unknown IPv6 (404), an IPv4 under
/// `reserved_ipv6` (404) and an assign to a droplet without IPv6 (422, the error body).
#[tokio::test]
async fn reserved_ipv6_answers_match_the_openapi_description() {
    let Some(spec) = spec() else { return };
    let mut cfg = with_ipv6(fixture(Duration::from_millis(30)));
    cfg.droplets[2].ipv6 = false;
    let no_ipv6 = cfg.droplets[2].id;
    let emu = Emulator::start(cfg).await.unwrap();
    let mut c = Checker::new(spec, &emu);
    let list = "/v2/reserved_ipv6";
    let item = "/v2/reserved_ipv6/{reserved_ipv6}";
    let actions = "/v2/reserved_ipv6/{reserved_ipv6}/actions";
    let v = c.call(Method::GET, list, list, None).await;
    let ips: Vec<&str> = v["reserved_ipv6s"]
        .as_array()
        .expect("reserved_ipv6s")
        .iter()
        .filter_map(|r| r["ip"].as_str())
        .collect();
    assert_eq!(ips, [IPV6], "IPv4s are not listed here");
    let held = c
        .call(Method::GET, &format!("{list}/{IPV6}"), item, None)
        .await;
    assert_eq!(held["reserved_ipv6"]["droplet"]["id"], PRIMARY);
    let a = c
        .call(
            Method::POST,
            &format!("{list}/{IPV6}/actions"),
            actions,
            Some(json!({"type": "assign", "droplet_id": SECONDARY})),
        )
        .await;
    let id = a["action"]["id"].as_u64().expect("an action id");
    assert_eq!(a["action"]["resource_type"], "reserved_ipv6");
    assert!(emu.settle(Duration::from_secs(2)).await);
    let done = c
        .call(
            Method::GET,
            &format!("/v2/actions/{id}"),
            "/v2/actions/{action_id}",
            None,
        )
        .await;
    assert_eq!(done["action"]["status"], "completed");
    c.call(
        Method::POST,
        &format!("{list}/{IPV6}/actions"),
        actions,
        Some(json!({"type": "unassign"})),
    )
    .await;
    assert!(emu.settle(Duration::from_secs(2)).await);
    let free = c
        .call(Method::GET, &format!("{list}/{IPV6}"), item, None)
        .await;
    assert!(free["reserved_ipv6"]["droplet"].is_null(), "{free}");
    c.call(Method::GET, &format!("{list}/2001:db8::9"), item, None)
        .await;
    c.call(Method::GET, &format!("{list}/{IP}"), item, None)
        .await;
    let refused = c
        .call(
            Method::POST,
            &format!("{list}/{IPV6}/actions"),
            actions,
            Some(json!({"type": "assign", "droplet_id": no_ipv6})),
        )
        .await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("IPv6")),
        "{refused}"
    );
    assert_eq!(c.checked, 9);
    assert!(c.errors.is_empty(), "{}", c.errors.join("\n"));
}

/// The request check: a body that misses a required field or has the wrong type, a path the
/// description does not have.
#[test]
fn the_request_check_catches_wrong_bodies_and_paths() {
    let Some(spec) = spec() else { return };
    let post = "post";
    let ok = request_errors(
        &spec,
        post,
        "/v2/reserved_ipv6/2001:db8::1/actions",
        Some(&json!({"type": "assign", "droplet_id": 7})),
    );
    assert!(ok.is_empty(), "{ok:?}");
    let e = request_errors(
        &spec,
        post,
        "/v2/reserved_ipv6/2001:db8::1/actions",
        Some(&json!({"type": "assign", "droplet_id": "7"})),
    );
    assert!(!e.is_empty(), "a string droplet id must not pass");
    let e = request_errors(
        &spec,
        post,
        "/v2/reserved_ipv6/2001:db8::1/actions",
        Some(&json!({"type": "move"})),
    );
    assert!(!e.is_empty(), "an unknown type must not pass");
    let e = request_errors(
        &spec,
        "get",
        "/v2/reserved_ipv6/2001:db8::1/actions/5",
        None,
    );
    assert!(
        e.iter().any(|e| e.contains("no such path")),
        "there is no per-IPv6 action read: {e:?}"
    );
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
