//! DigitalOcean API v2 routes: reserved IPs (and the older floating-IP aliases), reserved
//! IPv6s, their actions, actions and droplets. IPv4 addresses live under `reserved_ips` and
//! `floating_ips`, IPv6 ones under `reserved_ipv6` only (which has no per-IP action read). Field names, status codes and error bodies follow DigitalOcean's public
//! OpenAPI description; authentication, scopes, faults and rate limits are applied in front of
//! these routes by the server layer (`server.rs`).
use std::net::IpAddr;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::state::{Action, ActionKind, ActionRefusal, Droplet, ReservedIp, World, rfc3339};

/// The reserved IPv4s under their current and their older name, and the reserved IPv6s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Reserved,
    Floating,
    V6,
}

impl Flavor {
    fn one(self) -> &'static str {
        match self {
            Flavor::Reserved => "reserved_ip",
            Flavor::Floating => "floating_ip",
            Flavor::V6 => "reserved_ipv6",
        }
    }
    fn many(self) -> &'static str {
        match self {
            Flavor::Reserved => "reserved_ips",
            Flavor::Floating => "floating_ips",
            Flavor::V6 => "reserved_ipv6s",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Flavor::V6 => "reserved_ipv6",
            other => other.many(),
        }
    }
    /// Whether `ip` is served under this name.
    fn serves(self, ip: IpAddr) -> bool {
        ip.is_ipv6() == (self == Flavor::V6)
    }
}

#[derive(Clone)]
struct Ctx {
    world: World,
    flavor: Flavor,
}

pub fn router(world: World) -> Router {
    let mut r = Router::new();
    for flavor in [Flavor::Reserved, Flavor::Floating, Flavor::V6] {
        let base = format!("/v2/{}", flavor.path());
        let ctx = Ctx {
            world: world.clone(),
            flavor,
        };
        let mut routes = Router::new()
            .route(&base, get(list_ips))
            .route(&format!("{base}/{{ip}}"), get(get_ip));
        // A reserved IPv6 has neither a list nor a read of its own actions.
        routes = if flavor == Flavor::V6 {
            routes.route(&format!("{base}/{{ip}}/actions"), post(post_action))
        } else {
            routes
                .route(
                    &format!("{base}/{{ip}}/actions"),
                    get(list_ip_actions).post(post_action),
                )
                .route(&format!("{base}/{{ip}}/actions/{{id}}"), get(get_ip_action))
        };
        r = r.merge(routes.with_state(ctx));
    }
    r.merge(
        Router::new()
            .route("/v2/actions", get(list_actions))
            .route("/v2/actions/{id}", get(get_action))
            .route("/v2/droplets/{id}", get(get_droplet))
            .with_state(Ctx {
                world,
                flavor: Flavor::Reserved,
            }),
    )
}

/// A random request id, as DigitalOcean attaches to error bodies.
pub fn request_id() -> String {
    let a: u128 = rand::random();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn error(status: StatusCode, id: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"id": id, "message": message, "request_id": request_id()})),
    )
        .into_response()
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "The resource you were accessing could not be found.",
    )
}

fn unprocessable(message: &str) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable_entity",
        message,
    )
}

const SIZES: [&str; 4] = ["s-1vcpu-1gb", "s-1vcpu-2gb", "s-2vcpu-2gb", "s-2vcpu-4gb"];

pub fn region_json(slug: &str) -> Value {
    let name = match slug {
        "nyc1" => "New York 1",
        "nyc2" => "New York 2",
        "nyc3" => "New York 3",
        "sfo2" => "San Francisco 2",
        "sfo3" => "San Francisco 3",
        "ams3" => "Amsterdam 3",
        "fra1" => "Frankfurt 1",
        "lon1" => "London 1",
        "sgp1" => "Singapore 1",
        "tor1" => "Toronto 1",
        "blr1" => "Bangalore 1",
        "syd1" => "Sydney 1",
        other => other,
    };
    json!({
        "name": name, "slug": slug,
        "features": ["private_networking", "backups", "ipv6", "metadata", "install_agent"],
        "available": true, "sizes": SIZES,
    })
}

pub fn droplet_json(d: &Droplet) -> Value {
    json!({
        "id": d.id, "name": d.name, "memory": 1024, "vcpus": 1, "disk": 25,
        "disk_info": [{"type": "local", "size": {"amount": 25, "unit": "gib"}}],
        "locked": false, "status": if d.off { "off" } else { "active" }, "kernel": null,
        "created_at": rfc3339(d.created_at),
        "features": ["monitoring", "droplet_agent"],
        "backup_ids": [], "next_backup_window": null, "snapshot_ids": [],
        "image": {
            "id": 129211873, "name": "24.04 (LTS) x64", "type": "base",
            "distribution": "Ubuntu", "slug": "ubuntu-24-04-x64", "public": true,
            "regions": [d.region], "created_at": rfc3339(d.created_at),
            "min_disk_size": 7, "size_gigabytes": 2.36, "description": "Ubuntu 24.04 x64",
            "tags": [], "status": "available", "error_message": "",
        },
        "volume_ids": [],
        "size": {
            "slug": "s-1vcpu-1gb", "memory": 1024, "vcpus": 1, "disk": 25, "transfer": 1.0,
            "price_monthly": 6.0, "price_hourly": 0.00893, "regions": [d.region],
            "available": true, "description": "Basic",
        },
        "size_slug": "s-1vcpu-1gb",
        "networks": {
            "v4": [{"ip_address": d.public_ipv4, "netmask": "255.255.240.0",
                    "gateway": "127.0.0.254", "type": "public"}],
            "v6": d.public_ipv6.map_or_else(Vec::new, |v6| vec![json!({
                "ip_address": v6.to_string(), "netmask": 64,
                "gateway": "2001:db8:d0::ffff", "type": "public"})]),
        },
        "region": region_json(&d.region),
        "tags": [],
        "vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
    })
}

fn ip_json(world: &World, r: &ReservedIp) -> Value {
    let droplet = r
        .holder
        .and_then(|h| world.lock().droplets.get(&h).cloned())
        .map(|d| droplet_json(&d));
    if r.ip.is_ipv6() {
        return json!({
            "ip": r.ip.to_string(),
            "region_slug": r.region,
            "reserved_at": "2024-11-20T11:08:30Z",
            "droplet": droplet,
        });
    }
    json!({
        "ip": r.ip.to_string(),
        "region": region_json(&r.region),
        "droplet": droplet,
        "locked": r.pending.is_some(),
        "project_id": "746c6152-2fa2-11ed-92d3-27aaa54e4988",
    })
}

/// DigitalOcean reports a reserved IPv4 action's resource id as the address as an integer;
/// a reserved IPv6's is some integer (the emulator's number of the IP).
fn ip_resource_id(world: &World, ip: IpAddr) -> Value {
    match ip {
        IpAddr::V4(v4) => json!(u32::from(v4)),
        IpAddr::V6(_) => json!(world.lock().ips.get(&ip).map_or(0, |r| r.num_id)),
    }
}

pub fn action_json(world: &World, a: &Action, flavor: Flavor) -> Value {
    let flavor = if a.ip.is_ipv6() { Flavor::V6 } else { flavor };
    let region = world
        .lock()
        .ips
        .get(&a.ip)
        .map(|r| r.region.clone())
        .unwrap_or_else(|| "nyc3".into());
    json!({
        "id": a.id,
        "status": a.status.as_do_str(),
        "type": match a.kind { ActionKind::Assign => "assign_ip", ActionKind::Unassign => "unassign_ip" },
        "started_at": rfc3339(a.started_at),
        "completed_at": a.completed_at.map(rfc3339),
        "resource_id": ip_resource_id(world, a.ip),
        "resource_type": flavor.one(),
        "region": region_json(&region),
        "region_slug": region,
        "project_id": "746c6152-2fa2-11ed-92d3-27aaa54e4988",
    })
}

async fn list_ips(State(c): State<Ctx>) -> Response {
    let ips: Vec<ReservedIp> = c
        .world
        .lock()
        .ips
        .values()
        .filter(|r| c.flavor.serves(r.ip))
        .cloned()
        .collect();
    let list: Vec<Value> = ips.iter().map(|r| ip_json(&c.world, r)).collect();
    let total = list.len();
    Json(json!({c.flavor.many(): list, "links": {}, "meta": {"total": total}})).into_response()
}

/// The address in a path, when this flavor serves it.
fn parse_ip(c: &Ctx, s: &str) -> Option<IpAddr> {
    s.parse().ok().filter(|ip| c.flavor.serves(*ip))
}

async fn get_ip(State(c): State<Ctx>, Path(ip): Path<String>) -> Response {
    let found = parse_ip(&c, &ip).and_then(|ip| c.world.lock().ips.get(&ip).cloned());
    match found {
        Some(r) => Json(json!({c.flavor.one(): ip_json(&c.world, &r)})).into_response(),
        None => not_found(),
    }
}

async fn list_ip_actions(State(c): State<Ctx>, Path(ip): Path<String>) -> Response {
    let Some(ip) = parse_ip(&c, &ip).filter(|ip| c.world.lock().ips.contains_key(ip)) else {
        return not_found();
    };
    let actions: Vec<Action> = c
        .world
        .lock()
        .actions
        .values()
        .filter(|a| a.ip == ip)
        .cloned()
        .collect();
    let list: Vec<Value> = actions
        .iter()
        .map(|a| action_json(&c.world, a, c.flavor))
        .collect();
    let total = list.len();
    Json(json!({"actions": list, "links": {}, "meta": {"total": total}})).into_response()
}

async fn post_action(
    State(c): State<Ctx>,
    Path(ip): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(ip) = parse_ip(&c, &ip) else {
        return not_found();
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The request body is not valid JSON.",
        );
    };
    let kind = match body.get("type").and_then(Value::as_str) {
        Some("assign") => ActionKind::Assign,
        Some("unassign") => ActionKind::Unassign,
        _ => return unprocessable("type must be one of: assign, unassign."),
    };
    let droplet = match (kind, body.get("droplet_id")) {
        (ActionKind::Assign, Some(v)) => match v.as_u64() {
            Some(id) => Some(id),
            None => return unprocessable("droplet_id must be an integer."),
        },
        (ActionKind::Assign, None) => return unprocessable("droplet_id is required."),
        (ActionKind::Unassign, _) => None,
    };
    // DigitalOcean assigns a reserved IPv6 only to a droplet with IPv6 enabled.
    let without_ipv6 = droplet.filter(|id| {
        ip.is_ipv6()
            && c.world
                .lock()
                .droplets
                .get(id)
                .is_some_and(|d| d.public_ipv6.is_none())
    });
    if let Some(id) = without_ipv6 {
        return unprocessable(&format!(
            "Droplet {id} does not have IPv6 enabled; a reserved IPv6 can only be assigned to a Droplet with IPv6."
        ));
    }
    let action = match c.world.start_action(ip, kind, droplet) {
        Ok(a) => a,
        Err(ActionRefusal::UnknownIp) => return not_found(),
        // DigitalOcean's own wording, kept from the floating-IP days.
        Err(ActionRefusal::Pending) => {
            return unprocessable("The floating IP already has a pending event.");
        }
        Err(ActionRefusal::UnknownDroplet(id)) => {
            return unprocessable(&format!("Droplet {id} could not be found."));
        }
        Err(ActionRefusal::Invalid(m)) => return unprocessable(&m),
    };
    (
        StatusCode::CREATED,
        Json(json!({"action": action_json(&c.world, &action, c.flavor)})),
    )
        .into_response()
}

async fn get_ip_action(State(c): State<Ctx>, Path((ip, id)): Path<(String, String)>) -> Response {
    let (Some(ip), Ok(id)) = (parse_ip(&c, &ip), id.parse::<u64>()) else {
        return not_found();
    };
    let a = c.world.lock().actions.get(&id).cloned();
    match a {
        Some(a) if a.ip == ip => {
            Json(json!({"action": action_json(&c.world, &a, c.flavor)})).into_response()
        }
        _ => not_found(),
    }
}

#[derive(serde::Deserialize)]
struct Page {
    per_page: Option<usize>,
}

/// The newest actions first, `per_page` (default 20) of them.
async fn list_actions(State(c): State<Ctx>, Query(p): Query<Page>) -> Response {
    let per_page = p.per_page.unwrap_or(20).clamp(1, 200);
    let (all, total): (Vec<Action>, usize) = {
        let g = c.world.lock();
        (
            g.actions.values().rev().take(per_page).cloned().collect(),
            g.actions.len(),
        )
    };
    let list: Vec<Value> = all
        .iter()
        .map(|a| action_json(&c.world, a, Flavor::Reserved))
        .collect();
    Json(json!({"actions": list, "links": {}, "meta": {"total": total}})).into_response()
}

async fn get_action(State(c): State<Ctx>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let a = c.world.lock().actions.get(&id).cloned();
    match a {
        Some(a) => {
            Json(json!({"action": action_json(&c.world, &a, Flavor::Reserved)})).into_response()
        }
        None => not_found(),
    }
}

async fn get_droplet(State(c): State<Ctx>, Path(id): Path<String>) -> Response {
    let d = id
        .parse::<u64>()
        .ok()
        .and_then(|id| c.world.lock().droplets.get(&id).cloned());
    match d {
        Some(d) => Json(json!({"droplet": droplet_json(&d)})).into_response(),
        None => not_found(),
    }
}

/// The scope DigitalOcean requires for a request, or `None` for paths it does not know.
pub fn required_scope(method: &http::Method, path: &str) -> Option<&'static str> {
    let p = path.trim_end_matches('/');
    let rest = p
        .strip_prefix("/v2/reserved_ips")
        .or_else(|| p.strip_prefix("/v2/reserved_ipv6"))
        .or_else(|| p.strip_prefix("/v2/floating_ips"));
    if let Some(rest) = rest {
        let posting_action = method == http::Method::POST && rest.ends_with("/actions");
        return Some(if posting_action {
            "reserved_ip:update"
        } else {
            "reserved_ip:read"
        });
    }
    if p.starts_with("/v2/actions") {
        return Some("actions:read");
    }
    if p.starts_with("/v2/droplets") {
        let posting_action = method == http::Method::POST && p.ends_with("/actions");
        return Some(if posting_action {
            "droplet:update"
        } else {
            "droplet:read"
        });
    }
    None
}
