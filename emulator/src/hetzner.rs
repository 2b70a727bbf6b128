//! Hetzner Cloud API v1 routes for floating IPs, under `/hetzner` on the API listener
//! (so `api_url` is `{api}/hetzner`). Written from Hetzner's public API documentation:
//! floating IPs are numbered, actions are `running` / `success` / `error`, a busy resource
//! answers 423 `locked`, errors are `{"error": {"code", "message", "details"}}`.
use std::net::IpAddr;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::server::{Api, api_error};
use super::state::{
    Action, ActionKind, ActionRefusal, ActionStatus, ReservedIp, Within, World, rfc3339,
};

pub fn router(world: World) -> Router {
    Router::new()
        .route("/hetzner/v1/floating_ips", get(list))
        .route("/hetzner/v1/floating_ips/{id}", get(get_one))
        .route("/hetzner/v1/floating_ips/{id}/actions/assign", post(assign))
        .route(
            "/hetzner/v1/floating_ips/{id}/actions/unassign",
            post(unassign),
        )
        .route("/hetzner/v1/actions/{id}", get(get_action))
        .route("/hetzner/v1/floating_ips/actions/{id}", get(get_action))
        .route("/hetzner/v1/servers/{id}", get(get_server))
        .with_state(world)
}

fn err(status: StatusCode, code: &str, message: &str) -> Response {
    api_error(Api::Hetzner, status, code, message)
}

fn not_found() -> Response {
    err(StatusCode::NOT_FOUND, "not_found", "resource not found")
}

fn location(name: &str) -> Value {
    json!({
        "id": 1, "name": name, "description": format!("Location {name}"),
        "country": "DE", "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071,
        "network_zone": "eu-central",
    })
}

/// A floating IPv6 is a /64 and its `ip` says so (`2001:db8:1:2::/64`).
fn fip_json(r: &ReservedIp) -> Value {
    let ip = match r.network() {
        (net, 64) => format!("{net}/64"),
        (ip, _) => ip.to_string(),
    };
    json!({
        "id": r.num_id, "name": format!("fip-{}", r.num_id), "description": null,
        "ip": ip, "type": if r.ip.is_ipv4() { "ipv4" } else { "ipv6" },
        "server": r.holder, "dns_ptr": [], "home_location": location(&r.region),
        "blocked": false, "protection": {"delete": false}, "labels": {},
        "created": "2016-01-30T23:55:00+00:00",
    })
}

fn action_json(a: &Action, fip_id: u64) -> Value {
    let mut resources = vec![json!({"id": fip_id, "type": "floating_ip"})];
    if let Some(d) = a.droplet {
        resources.insert(0, json!({"id": d, "type": "server"}));
    }
    json!({
        "id": a.id,
        "command": match a.kind { ActionKind::Assign => "assign_floating_ip", ActionKind::Unassign => "unassign_floating_ip" },
        "status": a.status.as_hetzner_str(),
        "progress": if a.status == ActionStatus::InProgress { 0 } else { 100 },
        "started": rfc3339(a.started_at),
        "finished": a.completed_at.map(rfc3339),
        "resources": resources,
        "error": if a.status == ActionStatus::Errored {
            json!({"code": "action_failed", "message": "Action failed"})
        } else { Value::Null },
    })
}

fn by_id(w: &World, id: &str) -> Option<ReservedIp> {
    let id: u64 = id.parse().ok()?;
    w.lock().ips.values().find(|r| r.num_id == id).cloned()
}

#[derive(Deserialize)]
struct Page {
    page: Option<usize>,
    per_page: Option<usize>,
}

async fn list(State(w): State<World>, Query(p): Query<Page>) -> Response {
    let per_page = p.per_page.unwrap_or(25).clamp(1, 50);
    let page = p.page.unwrap_or(1).max(1);
    let all: Vec<ReservedIp> = w.lock().ips.values().cloned().collect();
    let last = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(fip_json)
        .collect();
    Json(json!({
        "floating_ips": items,
        "meta": {"pagination": {
            "page": page, "per_page": per_page,
            "previous_page": if page > 1 { json!(page - 1) } else { Value::Null },
            "next_page": if page < last { json!(page + 1) } else { Value::Null },
            "last_page": last, "total_entries": all.len(),
        }},
    }))
    .into_response()
}

async fn get_one(State(w): State<World>, Path(id): Path<String>) -> Response {
    match by_id(&w, &id) {
        Some(r) => Json(json!({"floating_ip": fip_json(&r)})).into_response(),
        None => not_found(),
    }
}

fn start(w: &World, ip: IpAddr, fip_id: u64, kind: ActionKind, server: Option<u64>) -> Response {
    let a = match w.start_action_in(ip, kind, server, Within::Anywhere) {
        Ok(a) => a,
        Err(ActionRefusal::UnknownIp) => return not_found(),
        Err(ActionRefusal::Pending) => {
            return err(
                StatusCode::LOCKED,
                "locked",
                "floating IP is locked by another action",
            );
        }
        Err(ActionRefusal::UnknownDroplet(id)) => {
            return err(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                &format!("server {id} not found"),
            );
        }
        Err(ActionRefusal::Invalid(m)) => {
            return err(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_entity", &m);
        }
    };
    (
        StatusCode::CREATED,
        Json(json!({"action": action_json(&a, fip_id)})),
    )
        .into_response()
}

async fn assign(
    State(w): State<World>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(r) = by_id(&w, &id) else {
        return not_found();
    };
    let server = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("server").and_then(Value::as_u64));
    let Some(server) = server else {
        return err(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "server is required (an integer)",
        );
    };
    start(&w, r.ip, r.num_id, ActionKind::Assign, Some(server))
}

async fn unassign(State(w): State<World>, Path(id): Path<String>) -> Response {
    let Some(r) = by_id(&w, &id) else {
        return not_found();
    };
    start(&w, r.ip, r.num_id, ActionKind::Unassign, None)
}

async fn get_action(State(w): State<World>, Path(id): Path<String>) -> Response {
    if let Some(a) = id
        .parse()
        .ok()
        .and_then(|id| super::power::hetzner_action(&w, id))
    {
        return Json(json!({"action": a})).into_response();
    }
    let a = id
        .parse::<u64>()
        .ok()
        .and_then(|id| w.lock().actions.get(&id).cloned());
    let Some(a) = a else {
        return not_found();
    };
    let fip_id = w.lock().ips.get(&a.ip).map_or(0, |r| r.num_id);
    Json(json!({"action": action_json(&a, fip_id)})).into_response()
}

async fn get_server(State(w): State<World>, Path(id): Path<String>) -> Response {
    let d = id
        .parse::<u64>()
        .ok()
        .and_then(|id| w.lock().droplets.get(&id).cloned());
    let Some(d) = d else {
        return not_found();
    };
    Json(json!({"server": {
        "id": d.id, "name": d.name, "status": super::power::hetzner_status(&d), "created": rfc3339(d.created_at),
        "public_net": {
            "ipv4": {"ip": d.public_ipv4, "blocked": false},
            "ipv6": d.public_ipv6.map(|v6| json!({"ip": format!("{v6}/64"), "blocked": false})),
            "floating_ips": [],
        },
        "datacenter": {"id": 1, "name": format!("{}-dc1", d.region), "location": location(&d.region)},
    }}))
    .into_response()
}
