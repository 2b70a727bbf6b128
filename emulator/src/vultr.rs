//! Vultr API v2 routes for reserved IPs, under `/vultr` on the API listener (so `api_url` is
//! `{api}/vultr`). Written from Vultr's public API documentation: reserved IPs and instances
//! have UUIDs, attach/detach answer 204 with no action object, errors are
//! `{"error": "...", "status": N}`. The emulator refuses `attach` while another instance holds
//! the IP (400), the conservative reading of the documentation.
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::server::{Api, api_error};
use super::state::{Droplet, ReservedIp, World};

pub fn router(world: World) -> Router {
    Router::new()
        .route("/vultr/v2/reserved-ips", get(list))
        .route("/vultr/v2/reserved-ips/{id}", get(get_one))
        .route("/vultr/v2/reserved-ips/{id}/attach", post(attach))
        .route("/vultr/v2/reserved-ips/{id}/detach", post(detach))
        .route("/vultr/v2/instances/{id}", get(get_instance))
        .with_state(world)
}

fn err(status: StatusCode, message: &str) -> Response {
    api_error(Api::Vultr, status, "", message)
}

fn not_found() -> Response {
    err(StatusCode::NOT_FOUND, "Not found")
}

fn rip_json(w: &World, r: &ReservedIp) -> Value {
    let instance = r
        .holder
        .and_then(|h| w.lock().droplets.get(&h).map(Droplet::vultr_id))
        .unwrap_or_default();
    // A reserved IPv6 is a /64: its network address and size.
    let (subnet, size) = r.network();
    json!({
        "id": r.vultr_id(), "region": r.region,
        "ip_type": if r.ip.is_ipv4() { "v4" } else { "v6" },
        "subnet": subnet.to_string(), "subnet_size": size,
        "label": format!("rip-{}", r.num_id), "instance_id": instance,
    })
}

fn by_id(w: &World, id: &str) -> Option<ReservedIp> {
    w.lock().ips.values().find(|r| r.vultr_id() == id).cloned()
}

fn instance_by_id(w: &World, id: &str) -> Option<Droplet> {
    w.lock()
        .droplets
        .values()
        .find(|d| d.vultr_id() == id)
        .cloned()
}

async fn list(State(w): State<World>) -> Response {
    let all: Vec<ReservedIp> = w.lock().ips.values().cloned().collect();
    let items: Vec<Value> = all.iter().map(|r| rip_json(&w, r)).collect();
    Json(json!({
        "reserved_ips": items,
        "meta": {"total": all.len(), "links": {"next": "", "prev": ""}},
    }))
    .into_response()
}

async fn get_one(State(w): State<World>, Path(id): Path<String>) -> Response {
    match by_id(&w, &id) {
        Some(r) => Json(json!({"reserved_ip": rip_json(&w, &r)})).into_response(),
        None => not_found(),
    }
}

async fn attach(
    State(w): State<World>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(r) = by_id(&w, &id) else {
        return not_found();
    };
    let instance = serde_json::from_slice::<Value>(&body).ok().and_then(|b| {
        b.get("instance_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let Some(d) = instance.and_then(|i| instance_by_id(&w, &i)) else {
        return err(StatusCode::BAD_REQUEST, "Invalid instance_id.");
    };
    if r.holder == Some(d.id) {
        return StatusCode::NO_CONTENT.into_response();
    }
    if r.holder.is_some() {
        return err(
            StatusCode::BAD_REQUEST,
            "Reserved IP is already attached to an instance.",
        );
    }
    if d.region != r.region {
        return err(
            StatusCode::BAD_REQUEST,
            "Instance is not in the reserved IP's region.",
        );
    }
    if !w.compare_and_set_holder(r.ip, None, Some(d.id), "vultr attach") {
        return err(
            StatusCode::CONFLICT,
            "The reserved IP changed while attaching; try again.",
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn detach(State(w): State<World>, Path(id): Path<String>) -> Response {
    let Some(r) = by_id(&w, &id) else {
        return not_found();
    };
    if r.holder.is_none() {
        return err(
            StatusCode::BAD_REQUEST,
            "Reserved IP is not attached to an instance.",
        );
    }
    if !w.compare_and_set_holder(r.ip, r.holder, None, "vultr detach") {
        return err(
            StatusCode::CONFLICT,
            "The reserved IP changed while detaching; try again.",
        );
    }
    {
        let mut g = w.lock();
        let f = &mut g.faults;
        f.error_next = f.error_next.max(std::mem::take(&mut f.fail_after_detach));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn get_instance(State(w): State<World>, Path(id): Path<String>) -> Response {
    match instance_by_id(&w, &id) {
        Some(d) => Json(json!({"instance": super::power::vultr_instance(&d)})).into_response(),
        None => not_found(),
    }
}
