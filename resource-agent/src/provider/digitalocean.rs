//! DigitalOcean reserved IPs, IPv4 and IPv6 (API v2).
//!
//! - holder: `GET /v2/reserved_ips/{ip}` → `reserved_ip.droplet.id`, `reserved_ip.locked`
//! - assign: `POST /v2/reserved_ips/{ip}/actions {"type":"assign","droplet_id":N}` → 201 with
//!   an action, then `GET /v2/reserved_ips/{ip}/actions/{id}` until `completed` or `errored`
//!   (this path needs only `reserved_ip:read`, unlike `/v2/actions/{id}`)
//! - 422 "already has a pending event": another action runs; wait and re-read the holder
//! - droplet id: configured, or `GET {metadata}/metadata/v1/id`
//!
//! A reserved IPv6 lives under `/v2/reserved_ipv6/{ip}` (`reserved_ipv6.droplet`, the region
//! as `region_slug`, no `locked`: a busy IP shows only in the 422 of the next POST) with the
//! same assign/unassign POST; it has no per-IP action read, so its actions are polled at
//! `/v2/actions/{id}`, which needs the `actions:read` scope as well.
use std::net::IpAddr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tandem_config::{Provider, Secret};
use tokio::time::Instant;

use super::http::{Api, MetadataId, Reply, field, text_at};
use super::moves::{
    ActionState, Client, IpState, Move, Posted, ServerInfo, action_in, droplet_number,
};
use super::{Holder, Options, ProviderError, ServerId};

const NAME: &str = Provider::DigitalOcean.name();
pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";

#[derive(Debug)]
pub struct DigitalOcean {
    api: Api,
    ip: IpAddr,
}

/// Which scope a refused request needed, for the 403 message.
#[derive(Clone, Copy)]
enum Need {
    Read,
    Update,
    Droplet,
    Actions,
}

impl Need {
    fn scope(self) -> &'static str {
        match self {
            Need::Read => "reserved_ip:read",
            Need::Update => "reserved_ip:update",
            Need::Droplet => "droplet:read",
            Need::Actions => "actions:read",
        }
    }
}

impl DigitalOcean {
    pub fn new(ip: IpAddr, token: Secret, opts: Options) -> Result<DigitalOcean, ProviderError> {
        Ok(DigitalOcean {
            api: Api::new(Provider::DigitalOcean, DEFAULT_API_URL, &token, opts)?,
            ip,
        })
    }

    /// HTTP requests made so far (for the benchmark and `ipctl assign`).
    pub fn api_calls(&self) -> u64 {
        self.api.calls()
    }

    fn ip_path(&self) -> String {
        format!("/v2/{}/{}", self.names().0, self.ip)
    }

    /// The resource's name in paths and the key of its answer.
    fn names(&self) -> (&'static str, &'static str) {
        if self.ip.is_ipv6() {
            ("reserved_ipv6", "reserved_ipv6")
        } else {
            ("reserved_ips", "reserved_ip")
        }
    }

    /// What the IP is called in messages.
    fn noun(&self) -> String {
        let v = if self.ip.is_ipv6() { "IPv6" } else { "IP" };
        format!("reserved {v} {}", self.ip)
    }

    /// Turns a non-success reply into the matching error.
    fn refusal(&self, r: &Reply, what: &str, need: Need, mutating: bool) -> ProviderError {
        let missing = || match need {
            Need::Droplet => match self.api.known_server_id() {
                Some(id) => format!("droplet {id}"),
                None => "this droplet".to_owned(),
            },
            _ => self.noun(),
        };
        r.refusal(NAME, what, need.scope(), missing, mutating)
    }
}

/// DigitalOcean's action states.
fn state(status: &str) -> Option<ActionState> {
    match status {
        "completed" => Some(ActionState::Completed),
        "errored" => Some(ActionState::Errored),
        "in-progress" => Some(ActionState::Running),
        _ => None,
    }
}

impl Client for DigitalOcean {
    fn client(&self) -> (&Api, IpAddr) {
        (&self.api, self.ip)
    }

    const METADATA_ID: MetadataId = MetadataId {
        path: "/metadata/v1/id",
        json_key: None,
    };

    async fn read_ip_state(&self, deadline: Instant) -> Result<IpState, ProviderError> {
        let what = format!("reading {}", self.noun());
        let body = self
            .api
            .get(&self.ip_path(), &what, deadline)
            .await?
            .map_err(|r| self.refusal(&r, &what, Need::Read, false))?;
        let rip = field(NAME, &what, &body, self.names().1)?;
        Ok(IpState {
            server: rip
                .pointer("/droplet/id")
                .and_then(Value::as_u64)
                .map(ServerId::Numeric),
            server_name: text_at(rip, "/droplet/name"),
            locked: rip.get("locked").and_then(Value::as_bool).unwrap_or(false),
            region: text_at(rip, "/region/slug").or_else(|| text_at(rip, "/region_slug")),
        })
    }

    async fn server_info(
        &self,
        me: &ServerId,
        deadline: Instant,
    ) -> Result<ServerInfo, ProviderError> {
        let what = format!("reading droplet {me}");
        let body = self
            .api
            .get(&format!("/v2/droplets/{me}"), &what, deadline)
            .await?
            .map_err(|r| self.refusal(&r, &what, Need::Droplet, false))?;
        Ok(ServerInfo {
            region: text_at(&body, "/droplet/region/slug"),
            // A droplet without IPv6 has an empty `networks.v6`.
            ipv6: body
                .pointer("/droplet/networks/v6")
                .and_then(Value::as_array)
                .map(|v6| !v6.is_empty()),
        })
    }

    /// An IPv6's actions are read at `/v2/actions/{id}`: one list read proves `actions:read`.
    async fn check_reads(&self, deadline: Instant) -> Result<(), ProviderError> {
        if self.ip.is_ipv6() {
            let what = "reading /v2/actions (an IPv6's actions are polled there)";
            self.api
                .get("/v2/actions?per_page=1", what, deadline)
                .await?
                .map_err(|r| self.refusal(&r, what, Need::Actions, false))?;
        }
        Ok(())
    }

    async fn post(
        &self,
        m: Move,
        me: &ServerId,
        _holder: &Holder,
        what: &str,
        deadline: Instant,
    ) -> Result<Posted, ProviderError> {
        let body = match m {
            Move::Assign => {
                json!({"type": "assign", "droplet_id": droplet_number(me)?})
            }
            Move::Unassign => json!({"type": "unassign"}),
        };
        let path = format!("{}/actions", self.ip_path());
        let r = self
            .api
            .call(Method::POST, &path, Some(&body), what, true, deadline)
            .await?;
        if r.status == StatusCode::UNPROCESSABLE_ENTITY && r.error_parts().1.contains("pending") {
            return Ok(Posted::Busy);
        }
        if !r.status.is_success() {
            return Err(self.refusal(&r, what, Need::Update, false));
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
        let (path, need) = if self.ip.is_ipv6() {
            (format!("/v2/actions/{id}"), Need::Actions)
        } else {
            (format!("{}/actions/{id}", self.ip_path()), Need::Read)
        };
        let body = self
            .api
            .get(&path, what, deadline)
            .await?
            .map_err(|r| self.refusal(&r, what, need, true))?;
        Ok(action_in(NAME, what, &body, state)?.1)
    }
}
