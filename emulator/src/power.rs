//! Servers' power, for fencing: DigitalOcean droplet actions (`power_off`, `power_on`),
//! Hetzner server actions (`poweroff`, `poweron`), Vultr `halt` and `start`, and the lists
//! that find a server by name. Checked against DigitalOcean's description of droplet actions
//! (`../shared/reference/digitalocean-droplet-actions.openapi.yaml`, see `tests/openapi.rs`).
//!
//! An action completes after the configured action delay, like a reserved-IP action (the
//! `error_actions` fault makes it end errored, the server's power unchanged). When a
//! power-off completes the server's status becomes off and the power hook runs: the cluster
//! launcher's hook SIGKILLs that node's daemons, so a fenced node really stops. A power-on
//! only marks the server active again; the launcher boots the node's daemons itself.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::digitalocean::{droplet_json, region_json};
use super::server::{Api, api_error};
use super::state::{ActionStatus, Droplet, World, rfc3339};

/// Called with (droplet id, powered on) when a power action completes.
pub type PowerHook = Arc<dyn Fn(u64, bool) + Send + Sync>;

/// One power action on a server.
#[derive(Debug, Clone)]
pub struct PowerAction {
    pub id: u64,
    pub droplet: u64,
    /// Powering on (else off).
    pub on: bool,
    pub status: ActionStatus,
    pub started_at: SystemTime,
    pub completed_at: Option<SystemTime>,
}

/// The power side of the world.
#[derive(Default)]
pub struct Power {
    pub actions: BTreeMap<u64, PowerAction>,
    hook: Option<PowerHook>,
}

impl std::fmt::Debug for Power {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Power")
            .field("actions", &self.actions.len())
            .finish_non_exhaustive()
    }
}

/// Why a power action cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerRefusal {
    UnknownServer,
    /// Another power action on the server is running.
    Pending,
}

impl World {
    /// Runs `hook` whenever a power action completes.
    pub fn set_power_hook(&self, hook: PowerHook) {
        self.lock().power.hook = Some(hook);
    }

    /// Sets a server's power at once (the launcher booting a node, a test).
    pub fn set_powered(&self, droplet: u64, on: bool) {
        if let Some(d) = self.lock().droplets.get_mut(&droplet) {
            d.off = !on;
        }
        self.audit(json!({"event": "power", "droplet_id": droplet, "on": on, "cause": "admin"}));
    }

    /// Starts a power action on `droplet`; it completes after the action delay.
    pub fn start_power(&self, droplet: u64, on: bool) -> Result<PowerAction, PowerRefusal> {
        let (action, delay) = {
            let mut g = self.lock();
            if !g.droplets.contains_key(&droplet) {
                return Err(PowerRefusal::UnknownServer);
            }
            let busy = g
                .power
                .actions
                .values()
                .any(|a| a.droplet == droplet && a.status == ActionStatus::InProgress);
            if busy {
                return Err(PowerRefusal::Pending);
            }
            let id = g.next_action_id;
            g.next_action_id += 1;
            let action = PowerAction {
                id,
                droplet,
                on,
                status: ActionStatus::InProgress,
                started_at: SystemTime::now(),
                completed_at: None,
            };
            g.power.actions.insert(id, action.clone());
            (action, g.action_delay)
        };
        self.audit(json!({
            "event": "power", "action_id": action.id, "droplet_id": droplet,
            "type": kind(on), "status": "in-progress",
        }));
        if delay.is_zero() {
            self.complete_power(action.id);
            return Ok(self.lock().power.actions[&action.id].clone());
        }
        let world = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            world.complete_power(action.id);
        });
        Ok(action)
    }

    fn complete_power(&self, id: u64) {
        let (droplet, on, errored, hook) = {
            let mut g = self.lock();
            // The `error_actions` fault applies to power actions too.
            let errored = g.faults.error_actions > 0;
            g.faults.error_actions = g.faults.error_actions.saturating_sub(1);
            let status = match errored {
                true => ActionStatus::Errored,
                false => ActionStatus::Completed,
            };
            let Some(a) = g.power.actions.get_mut(&id) else {
                return;
            };
            (a.status, a.completed_at) = (status, Some(SystemTime::now()));
            let (droplet, on) = (a.droplet, a.on);
            if !errored && let Some(d) = g.droplets.get_mut(&droplet) {
                d.off = !on;
            }
            // Under the lock: whoever sees the server off finds it in the audit log too.
            self.audit(json!({
                "event": "power", "action_id": id, "droplet_id": droplet, "type": kind(on),
                "status": if errored { "errored" } else { "completed" },
            }));
            (droplet, on, errored, g.power.hook.clone())
        };
        if !errored && let Some(h) = hook {
            h(droplet, on);
        }
    }

    fn power_action(&self, id: u64) -> Option<PowerAction> {
        self.lock().power.actions.get(&id).cloned()
    }

    fn droplet(&self, id: &str) -> Option<Droplet> {
        let id: u64 = id.parse().ok()?;
        self.lock().droplets.get(&id).cloned()
    }
}

fn kind(on: bool) -> &'static str {
    if on { "power_on" } else { "power_off" }
}

pub fn router(world: World) -> Router {
    Router::new()
        .route("/v2/droplets", get(do_list))
        .route("/v2/droplets/{id}/actions", post(do_post))
        .route("/v2/droplets/{id}/actions/{action}", get(do_action))
        .route("/hetzner/v1/servers", get(hz_list))
        .route("/hetzner/v1/servers/{id}/actions/poweroff", post(hz_off))
        .route("/hetzner/v1/servers/{id}/actions/poweron", post(hz_on))
        .route("/vultr/v2/instances", get(vu_list))
        .route("/vultr/v2/instances/{id}/halt", post(vu_halt))
        .route("/vultr/v2/instances/{id}/start", post(vu_start))
        .with_state(world)
}

#[derive(Debug, Deserialize)]
struct ByName {
    name: Option<String>,
    label: Option<String>,
}

fn matching(w: &World, name: Option<&str>) -> Vec<Droplet> {
    w.lock()
        .droplets
        .values()
        .filter(|d| name.is_none_or(|n| d.name == n))
        .cloned()
        .collect()
}

// DigitalOcean.

fn do_error(status: StatusCode, id: &str, message: &str) -> Response {
    api_error(Api::DigitalOcean, status, id, message)
}

fn do_not_found() -> Response {
    do_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "The resource you were accessing could not be found.",
    )
}

fn do_action_json(w: &World, a: &PowerAction) -> Value {
    let region = w
        .lock()
        .droplets
        .get(&a.droplet)
        .map_or_else(|| "nyc3".to_owned(), |d| d.region.clone());
    json!({
        "id": a.id, "status": a.status.as_do_str(), "type": kind(a.on),
        "started_at": rfc3339(a.started_at), "completed_at": a.completed_at.map(rfc3339),
        "resource_id": a.droplet, "resource_type": "droplet",
        "region": region_json(&region), "region_slug": region,
    })
}

async fn do_list(State(w): State<World>, Query(q): Query<ByName>) -> Response {
    let list: Vec<Value> = matching(&w, q.name.as_deref())
        .iter()
        .map(droplet_json)
        .collect();
    let total = list.len();
    Json(json!({"droplets": list, "links": {}, "meta": {"total": total}})).into_response()
}

async fn do_post(
    State(w): State<World>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(d) = w.droplet(&id) else {
        return do_not_found();
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return do_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The request body is not valid JSON.",
        );
    };
    let on = match body.get("type").and_then(Value::as_str) {
        Some("power_off") => false,
        Some("power_on") => true,
        _ => {
            return do_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity",
                "type must be one of: power_off, power_on (the emulator's droplet actions).",
            );
        }
    };
    match w.start_power(d.id, on) {
        Ok(a) => (
            StatusCode::CREATED,
            Json(json!({"action": do_action_json(&w, &a)})),
        )
            .into_response(),
        Err(PowerRefusal::Pending) => do_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            "Droplet already has a pending event.",
        ),
        Err(PowerRefusal::UnknownServer) => do_not_found(),
    }
}

async fn do_action(State(w): State<World>, Path((id, action)): Path<(String, String)>) -> Response {
    let a = action.parse().ok().and_then(|a| w.power_action(a));
    match a {
        Some(a) if id.parse() == Ok(a.droplet) => {
            Json(json!({"action": do_action_json(&w, &a)})).into_response()
        }
        _ => do_not_found(),
    }
}

// Hetzner.

/// A Hetzner action for a power action, or `None` for another action id.
pub fn hetzner_action(w: &World, id: u64) -> Option<Value> {
    let a = w.power_action(id)?;
    Some(json!({
        "id": a.id,
        "command": if a.on { "start_server" } else { "stop_server" },
        "status": a.status.as_hetzner_str(),
        "progress": if a.status == ActionStatus::InProgress { 0 } else { 100 },
        "started": rfc3339(a.started_at), "finished": a.completed_at.map(rfc3339),
        "resources": [{"id": a.droplet, "type": "server"}],
        "error": if a.status == ActionStatus::Errored {
            json!({"code": "action_failed", "message": "Action failed"})
        } else { Value::Null },
    }))
}

async fn hz_list(State(w): State<World>, Query(q): Query<ByName>) -> Response {
    let list: Vec<Value> = matching(&w, q.name.as_deref())
        .iter()
        .map(|d| json!({"id": d.id, "name": d.name, "status": hetzner_status(d)}))
        .collect();
    Json(json!({"servers": list, "meta": {"pagination": {"page": 1, "next_page": null}}}))
        .into_response()
}

pub fn hetzner_status(d: &Droplet) -> &'static str {
    if d.off { "off" } else { "running" }
}

async fn hz_power(w: &World, id: &str, on: bool) -> Response {
    let Some(d) = w.droplet(id) else {
        return api_error(
            Api::Hetzner,
            StatusCode::NOT_FOUND,
            "not_found",
            "server not found",
        );
    };
    match w.start_power(d.id, on) {
        Ok(a) => (
            StatusCode::CREATED,
            Json(json!({"action": hetzner_action(w, a.id)})),
        )
            .into_response(),
        Err(_) => api_error(
            Api::Hetzner,
            StatusCode::LOCKED,
            "locked",
            "server is locked by another action",
        ),
    }
}

async fn hz_off(State(w): State<World>, Path(id): Path<String>) -> Response {
    hz_power(&w, &id, false).await
}

async fn hz_on(State(w): State<World>, Path(id): Path<String>) -> Response {
    hz_power(&w, &id, true).await
}

// Vultr: halt and start answer 204 with no action; the instance shows the power.

pub fn vultr_instance(d: &Droplet) -> Value {
    json!({
        "id": d.vultr_id(), "label": d.name, "hostname": d.name, "region": d.region,
        "main_ip": d.public_ipv4, "status": "active",
        // Vultr shows an instance without IPv6 with empty v6 fields.
        "v6_main_ip": d.public_ipv6.map(|v6| v6.to_string()).unwrap_or_default(),
        "v6_network": d.public_ipv6.map(|_| "2001:db8:d0::").unwrap_or_default(),
        "v6_network_size": if d.public_ipv6.is_some() { 64 } else { 0 },
        "power_status": if d.off { "stopped" } else { "running" },
    })
}

async fn vu_list(State(w): State<World>, Query(q): Query<ByName>) -> Response {
    let list: Vec<Value> = matching(&w, q.label.as_deref())
        .iter()
        .map(vultr_instance)
        .collect();
    let total = list.len();
    Json(json!({"instances": list, "meta": {"total": total, "links": {"next": "", "prev": ""}}}))
        .into_response()
}

async fn vu_power(w: &World, id: &str, on: bool) -> Response {
    let d = w
        .lock()
        .droplets
        .values()
        .find(|d| d.vultr_id() == id)
        .cloned();
    let Some(d) = d else {
        return api_error(Api::Vultr, StatusCode::NOT_FOUND, "", "Not found");
    };
    match w.start_power(d.id, on) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => api_error(
            Api::Vultr,
            StatusCode::CONFLICT,
            "",
            "The instance has a pending action.",
        ),
    }
}

async fn vu_halt(State(w): State<World>, Path(id): Path<String>) -> Response {
    vu_power(&w, &id, false).await
}

async fn vu_start(State(w): State<World>, Path(id): Path<String>) -> Response {
    vu_power(&w, &id, true).await
}
