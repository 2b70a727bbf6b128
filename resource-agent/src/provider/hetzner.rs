//! Hetzner Cloud floating IPs, IPv4 and IPv6 (API v1).
//!
//! - the IP's numeric id: `GET /v1/floating_ips?page=N&per_page=50`, matched on `ip` (a
//!   floating IPv6 is a whole /64, shown as `2001:db8:1:2::/64`: the configured address is one
//!   of it)
//! - holder: `GET /v1/floating_ips/{id}` → `floating_ip.server` (a server id or null)
//! - assign: `POST /v1/floating_ips/{id}/actions/assign {"server": N}` → 201 `{"action"}`,
//!   then `GET /v1/actions/{id}` until `status` is `success` or `error`
//! - unassign: `POST /v1/floating_ips/{id}/actions/unassign`
//! - another action running: HTTP 423 `locked` (or 409 `conflict`); wait and re-read
//! - server id: configured, or `GET {metadata}/hetzner/v1/metadata/instance-id`
//! - tokens are read-only or read & write; 403 on a write means a read-only token.
use std::net::IpAddr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tandem_config::{Provider, Secret};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::http::{Api, MetadataId, Reply, field, text_at};
use super::moves::{
    ActionState, Client, IpState, Move, Posted, ServerInfo, action_in, covers, droplet_number,
};
use super::{Holder, Options, ProviderError, ServerId};

const NAME: &str = Provider::Hetzner.name();
pub const DEFAULT_API_URL: &str = "https://api.hetzner.cloud";
/// Pages read while looking for the IP's id (50 per page).
const MAX_PAGES: u64 = 40;

#[derive(Debug)]
pub struct Hetzner {
    api: Api,
    ip: IpAddr,
    ip_id: OnceCell<u64>,
}

impl Hetzner {
    pub fn new(ip: IpAddr, token: Secret, opts: Options) -> Result<Hetzner, ProviderError> {
        Ok(Hetzner {
            api: Api::new(Provider::Hetzner, DEFAULT_API_URL, &token, opts)?,
            ip,
            ip_id: OnceCell::new(),
        })
    }

    fn refusal(&self, r: &Reply, what: &str, write: bool) -> ProviderError {
        let scope = if write { "read & write" } else { "read" };
        r.refusal(
            NAME,
            what,
            scope,
            || format!("floating IP {}", self.ip),
            write,
        )
    }

    async fn ip_id(&self, deadline: Instant) -> Result<u64, ProviderError> {
        self.ip_id
            .get_or_try_init(|| async {
                let what = format!("looking up floating IP {}", self.ip);
                for page in 1..=MAX_PAGES {
                    let path = format!("/v1/floating_ips?page={page}&per_page=50");
                    let body = self
                        .api
                        .get(&path, &what, deadline)
                        .await?
                        .map_err(|r| self.refusal(&r, &what, false))?;
                    let ips = body.get("floating_ips").and_then(Value::as_array);
                    let found = ips.into_iter().flatten().find(|f| {
                        f.get("ip")
                            .and_then(Value::as_str)
                            .is_some_and(|net| covers(net, None, self.ip))
                    });
                    if let Some(id) = found.and_then(|f| f.get("id")).and_then(Value::as_u64) {
                        return Ok(id);
                    }
                    let next = body
                        .pointer("/meta/pagination/next_page")
                        .and_then(Value::as_u64);
                    if next.is_none() {
                        break;
                    }
                }
                Err(ProviderError::NotFound {
                    provider: NAME,
                    what: format!("floating IP {}", self.ip),
                })
            })
            .await
            .copied()
    }
}

/// Hetzner's action states: `running`, `success`; anything else failed.
fn state(status: &str) -> Option<ActionState> {
    Some(match status {
        "running" => ActionState::Running,
        "success" => ActionState::Completed,
        _ => ActionState::Errored,
    })
}

impl Client for Hetzner {
    fn client(&self) -> (&Api, IpAddr) {
        (&self.api, self.ip)
    }

    const METADATA_ID: MetadataId = MetadataId {
        path: "/hetzner/v1/metadata/instance-id",
        json_key: None,
    };

    async fn read_ip_state(&self, deadline: Instant) -> Result<IpState, ProviderError> {
        let id = self.ip_id(deadline).await?;
        let what = format!("reading floating IP {}", self.ip);
        let body = self
            .api
            .get(&format!("/v1/floating_ips/{id}"), &what, deadline)
            .await?
            .map_err(|r| self.refusal(&r, &what, false))?;
        let f = field(NAME, &what, &body, "floating_ip")?;
        Ok(IpState {
            server: f
                .get("server")
                .and_then(Value::as_u64)
                .map(ServerId::Numeric),
            // The floating IP names its server by id only.
            server_name: None,
            // Hetzner shows no lock: a busy IP answers 423 to the next action.
            locked: false,
            region: text_at(f, "/home_location/name"),
        })
    }

    async fn server_info(
        &self,
        me: &ServerId,
        deadline: Instant,
    ) -> Result<ServerInfo, ProviderError> {
        let what = format!("reading server {me}");
        let body = self
            .api
            .get(&format!("/v1/servers/{me}"), &what, deadline)
            .await?
            .map_err(|r| self.refusal(&r, &what, false))?;
        // Hetzner documents no rule that a floating IPv6 needs a server with IPv6 of its
        // own, so that is not checked.
        Ok(ServerInfo {
            region: text_at(&body, "/server/datacenter/location/name"),
            ipv6: None,
        })
    }

    async fn post(
        &self,
        m: Move,
        me: &ServerId,
        _holder: &Holder,
        what: &str,
        deadline: Instant,
    ) -> Result<Posted, ProviderError> {
        let (verb, body) = match m {
            Move::Assign => ("assign", json!({"server": droplet_number(me)?})),
            Move::Unassign => ("unassign", json!({})),
        };
        let id = self.ip_id(deadline).await?;
        let path = format!("/v1/floating_ips/{id}/actions/{verb}");
        let r = self
            .api
            .call(Method::POST, &path, Some(&body), what, true, deadline)
            .await?;
        if r.status == StatusCode::LOCKED || r.status == StatusCode::CONFLICT {
            return Ok(Posted::Busy);
        }
        if !r.status.is_success() {
            return Err(self.refusal(&r, what, true));
        }
        let (id, state) = action_in(NAME, what, &r.body, state)?;
        Ok(Posted::Action { id, state })
    }

    async fn action_state(
        &self,
        id: &str,
        what: &str,
        deadline: Instant,
    ) -> Result<ActionState, ProviderError> {
        let body = self
            .api
            .get(&format!("/v1/actions/{id}"), what, deadline)
            .await?
            .map_err(|r| self.refusal(&r, what, false))?;
        Ok(action_in(NAME, what, &body, state).map_or(ActionState::Errored, |a| a.1))
    }
}
