//! The listeners beside the API: a metadata service per droplet, an HTTP front per reserved IP,
//! and the admin routes (state, faults, tokens) that tests drive at run time.
use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::state::{Faults, Token, World};

#[derive(Clone)]
struct MetaCtx {
    world: World,
    droplet: u64,
}

/// The metadata service as seen from one droplet (DigitalOcean paths, plus Hetzner's
/// `/hetzner/v1/metadata/instance-id` and Vultr's `/v1.json`).
pub fn metadata_router(world: World, droplet: u64) -> Router {
    Router::new()
        .route("/metadata/v1/id", get(meta_id))
        .route("/metadata/v1/hostname", get(meta_hostname))
        .route("/metadata/v1/region", get(meta_region))
        .route(
            "/metadata/v1/interfaces/public/0/ipv4/address",
            get(meta_public_ipv4),
        )
        .route("/metadata/v1/reserved_ip/ipv4/active", get(meta_rip_active))
        .route("/metadata/v1/floating_ip/ipv4/active", get(meta_rip_active))
        .route(
            "/metadata/v1/reserved_ip/ipv4/ip_address",
            get(meta_rip_address),
        )
        .route(
            "/metadata/v1/floating_ip/ipv4/ip_address",
            get(meta_rip_address),
        )
        .route("/hetzner/v1/metadata/instance-id", get(meta_id))
        .route("/hetzner/v1/metadata/hostname", get(meta_hostname))
        .route("/v1.json", get(meta_vultr_json))
        .with_state(MetaCtx { world, droplet })
}

fn text(s: impl Into<String>) -> Response {
    s.into().into_response()
}

fn droplet_field(c: &MetaCtx, f: impl Fn(&super::state::Droplet) -> String) -> Response {
    match c.world.lock().droplets.get(&c.droplet) {
        Some(d) => text(f(d)),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn meta_id(State(c): State<MetaCtx>) -> Response {
    text(c.droplet.to_string())
}
async fn meta_hostname(State(c): State<MetaCtx>) -> Response {
    droplet_field(&c, |d| d.name.clone())
}
async fn meta_region(State(c): State<MetaCtx>) -> Response {
    droplet_field(&c, |d| d.region.clone())
}
async fn meta_public_ipv4(State(c): State<MetaCtx>) -> Response {
    droplet_field(&c, |d| d.public_ipv4.clone())
}
async fn meta_vultr_json(State(c): State<MetaCtx>) -> Response {
    match c.world.lock().droplets.get(&c.droplet) {
        Some(d) => Json(json!({
            "hostname": d.name, "instanceid": format!("{:x}", d.id),
            "instance-v2-id": d.vultr_id(), "region": {"regioncode": d.region},
        }))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn held_ip(c: &MetaCtx) -> Option<IpAddr> {
    c.world
        .lock()
        .ips
        .values()
        .find(|r| r.holder == Some(c.droplet))
        .map(|r| r.ip)
}

async fn meta_rip_active(State(c): State<MetaCtx>) -> Response {
    text(held_ip(&c).is_some().to_string())
}
async fn meta_rip_address(State(c): State<MetaCtx>) -> Response {
    match held_ip(&c) {
        Some(ip) => text(ip.to_string()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Clone)]
struct FrontCtx {
    world: World,
    ip: IpAddr,
    client: reqwest::Client,
}

/// Time the front waits for a droplet's web server before answering 502.
const FRONT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Forwards GET requests to the web server of whichever droplet holds `ip`.
pub fn front_router(world: World, ip: IpAddr) -> Router {
    let client = reqwest::Client::builder()
        .timeout(FRONT_UPSTREAM_TIMEOUT)
        .build()
        .unwrap_or_default();
    Router::new()
        .fallback(front)
        .with_state(FrontCtx { world, ip, client })
}

async fn front(State(c): State<FrontCtx>, method: http::Method, uri: Uri) -> Response {
    if method != http::Method::GET && method != http::Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "the front forwards GET only\n",
        )
            .into_response();
    }
    let target = {
        let g = c.world.lock();
        g.ips.get(&c.ip).and_then(|r| r.holder).map(|h| {
            let d = g.droplets.get(&h);
            (
                h,
                d.map(|d| d.name.clone()).unwrap_or_default(),
                d.and_then(|d| d.web.clone()),
            )
        })
    };
    let Some((id, name, web)) = target else {
        return (
            StatusCode::BAD_GATEWAY,
            format!("{}: no droplet holds this reserved IP\n", c.ip),
        )
            .into_response();
    };
    let Some(web) = web else {
        return (
            StatusCode::BAD_GATEWAY,
            format!(
                "{}: droplet {name} ({id}) has no web server configured\n",
                c.ip
            ),
        )
            .into_response();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = if web.starts_with("http://") {
        format!("{}{path}", web.trim_end_matches('/'))
    } else {
        format!("http://{web}{path}")
    };
    match c.client.get(&url).send().await {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(body) => (status, body).into_response(),
                Err(_) => bad_upstream(c.ip, id, &name),
            }
        }
        Err(_) => bad_upstream(c.ip, id, &name),
    }
}

fn bad_upstream(ip: IpAddr, id: u64, name: &str) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        format!("{ip}: droplet {name} ({id}) web server is not answering\n"),
    )
        .into_response()
}

/// Admin routes, served on the API listener under `/_admin` without auth or faults.
pub fn admin_router(world: World) -> Router {
    Router::new()
        .route("/_admin/state", get(admin_state))
        .route("/_admin/faults", post(admin_faults).get(admin_get_faults))
        .route("/_admin/tokens", post(admin_add_token))
        .route("/_admin/tokens/revoke", post(admin_revoke_token))
        .route("/_admin/holder", post(admin_holder))
        .with_state(world)
}

async fn admin_state(State(w): State<World>) -> Response {
    Json(w.snapshot()).into_response()
}

async fn admin_get_faults(State(w): State<World>) -> Response {
    Json(w.lock().faults.clone()).into_response()
}

async fn admin_faults(State(w): State<World>, body: axum::body::Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad faults: {e}\n")).into_response();
        }
    };
    if !(0.0..=1.0).contains(&faults.error_rate) {
        return (StatusCode::BAD_REQUEST, "error_rate must be within 0..=1\n").into_response();
    }
    tracing::info!(?faults, "faults set");
    w.audit(json!({"event": "faults", "faults": faults}));
    let mut g = w.lock();
    g.outage_until =
        (faults.outage_secs > 0).then(|| Instant::now() + Duration::from_secs(faults.outage_secs));
    g.faults = faults;
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

async fn admin_add_token(State(w): State<World>, Json(t): Json<TokenBody>) -> Response {
    w.lock().tokens.insert(
        t.token,
        Token {
            scopes: t.scopes,
            revoked: false,
        },
    );
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_revoke_token(State(w): State<World>, Json(t): Json<TokenBody>) -> Response {
    let found = match w.lock().tokens.get_mut(&t.token) {
        Some(tok) => {
            tok.revoked = true;
            true
        }
        None => false,
    };
    w.audit(json!({"event": "token_revoked", "known": found}));
    if found {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such token\n").into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderBody {
    ip: IpAddr,
    holder: Option<u64>,
}

/// Moves an IP at once, as a person would in the control panel.
async fn admin_holder(State(w): State<World>, Json(b): Json<HolderBody>) -> Response {
    {
        let g = w.lock();
        if !g.ips.contains_key(&b.ip) {
            return (StatusCode::NOT_FOUND, "no such reserved IP\n").into_response();
        }
        if let Some(h) = b.holder
            && !g.droplets.contains_key(&h)
        {
            return (StatusCode::NOT_FOUND, "no such droplet\n").into_response();
        }
    }
    w.set_holder(b.ip, b.holder, "admin", None);
    StatusCode::NO_CONTENT.into_response()
}
