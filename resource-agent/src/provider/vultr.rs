//! Vultr reserved IPs, IPv4 and IPv6 (API v2).
//!
//! - the IP's id (a UUID): `GET /v2/reserved-ips?per_page=100[&cursor=...]`, matched on `subnet`
//!   and `subnet_size` (a reserved IPv6 is a /64: the configured address is one of it)
//! - holder: `GET /v2/reserved-ips/{id}` → `reserved_ip.instance_id` (empty when detached)
//! - assign: `POST /v2/reserved-ips/{id}/attach {"instance_id": "..."}` → 204; Vultr returns
//!   no action to poll, so the holder is re-read until it shows this instance
//! - unassign: `POST /v2/reserved-ips/{id}/detach` → 204
//! - instance id (a UUID): `GET {metadata}/v1.json` → `instance-v2-id`; numeric
//!   `droplet_id`s from the config cannot name a Vultr instance.
//!
//! Whether Vultr moves an IP attached elsewhere in one `attach` is not documented; when
//! `attach` is refused with 400/409 while another instance holds the IP, this detaches first
//! (a short window with no holder, which the API leaves no way around).
use std::net::IpAddr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tandem_config::{Provider, Secret};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::http::{Api, MetadataId, Reply, text_at};
use super::moves::{ActionState, Client, IpState, Move, Posted, ServerInfo, covers};
use super::{Holder, Options, ProviderError, ServerId};

const NAME: &str = Provider::Vultr.name();
pub const DEFAULT_API_URL: &str = "https://api.vultr.com";
/// Pages read while looking for the IP's id (100 per page).
const MAX_PAGES: usize = 20;

#[derive(Debug)]
pub struct Vultr {
    api: Api,
    ip: IpAddr,
    ip_id: OnceCell<String>,
}

impl Vultr {
    pub fn new(ip: IpAddr, token: Secret, opts: Options) -> Result<Vultr, ProviderError> {
        Ok(Vultr {
            api: Api::new(Provider::Vultr, DEFAULT_API_URL, &token, opts)?,
            ip,
            ip_id: OnceCell::new(),
        })
    }

    fn refusal(&self, r: &Reply, what: &str, write: bool) -> ProviderError {
        // Vultr tokens have no scopes; a 403 means its API access control list refused us.
        let scope = "API access for this address (Vultr's API access control list)";
        r.refusal(
            NAME,
            what,
            scope,
            || format!("reserved IP {}", self.ip),
            write,
        )
    }

    async fn ip_id(&self, deadline: Instant) -> Result<String, ProviderError> {
        self.ip_id
            .get_or_try_init(|| async {
                let what = format!("looking up reserved IP {}", self.ip);
                let mut cursor = String::new();
                for _ in 0..MAX_PAGES {
                    let mut path = "/v2/reserved-ips?per_page=100".to_owned();
                    if !cursor.is_empty() {
                        path.push_str("&cursor=");
                        path.push_str(&cursor);
                    }
                    let body = self
                        .api
                        .get(&path, &what, deadline)
                        .await?
                        .map_err(|r| self.refusal(&r, &what, false))?;
                    let list = body.get("reserved_ips").and_then(Value::as_array);
                    let found = list.into_iter().flatten().find(|x| {
                        let size = x.get("subnet_size").and_then(Value::as_u64);
                        x.get("subnet")
                            .and_then(Value::as_str)
                            .is_some_and(|net| covers(net, size, self.ip))
                    });
                    if let Some(id) = found.and_then(|x| x.get("id")).and_then(Value::as_str) {
                        return Ok(id.to_owned());
                    }
                    cursor = body
                        .pointer("/meta/links/next")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    // The cursor is opaque; keep only URL-safe characters.
                    if cursor.is_empty()
                        || !cursor
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.=".contains(c))
                    {
                        break;
                    }
                }
                Err(ProviderError::NotFound {
                    provider: NAME,
                    what: format!("reserved IP {}", self.ip),
                })
            })
            .await
            .cloned()
    }

    async fn post_verb(
        &self,
        verb: &str,
        body: Value,
        what: &str,
        deadline: Instant,
    ) -> Result<Reply, ProviderError> {
        let id = self.ip_id(deadline).await?;
        self.api
            .call(
                Method::POST,
                &format!("/v2/reserved-ips/{id}/{verb}"),
                Some(&body),
                what,
                true,
                deadline,
            )
            .await
    }
}

impl Client for Vultr {
    fn client(&self) -> (&Api, IpAddr) {
        (&self.api, self.ip)
    }

    const METADATA_ID: MetadataId = MetadataId {
        path: "/v1.json",
        json_key: Some("instance-v2-id"),
    };

    async fn read_ip_state(&self, deadline: Instant) -> Result<IpState, ProviderError> {
        let id = self.ip_id(deadline).await?;
        let what = format!("reading reserved IP {}", self.ip);
        let body = self
            .api
            .get(&format!("/v2/reserved-ips/{id}"), &what, deadline)
            .await?
            .map_err(|r| self.refusal(&r, &what, false))?;
        Ok(IpState {
            server: text_at(&body, "/reserved_ip/instance_id").map(ServerId::Text),
            // The reserved IP names its instance by id only.
            server_name: None,
            locked: false,
            region: text_at(&body, "/reserved_ip/region"),
        })
    }

    async fn server_info(
        &self,
        me: &ServerId,
        deadline: Instant,
    ) -> Result<ServerInfo, ProviderError> {
        let what = format!("reading instance {me}");
        let body = self
            .api
            .get(&format!("/v2/instances/{me}"), &what, deadline)
            .await?
            .map_err(|r| self.refusal(&r, &what, false))?;
        // Vultr documents no rule that a reserved IPv6 needs an instance with IPv6 of its
        // own, so that is not checked.
        Ok(ServerInfo {
            region: text_at(&body, "/instance/region"),
            ipv6: None,
        })
    }

    /// Vultr answers 204 with no action: the loops watch the holder.
    async fn post(
        &self,
        m: Move,
        me: &ServerId,
        holder: &Holder,
        what: &str,
        deadline: Instant,
    ) -> Result<Posted, ProviderError> {
        let r = match m {
            Move::Unassign => self.post_verb("detach", json!({}), what, deadline).await?,
            Move::Assign => {
                let body = json!({"instance_id": me.to_string()});
                let r = self
                    .post_verb("attach", body.clone(), what, deadline)
                    .await?;
                if (r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::CONFLICT)
                    && holder.server.is_some()
                {
                    tracing::info!(provider = NAME, ip = %self.ip, "attach refused while attached elsewhere; detaching first");
                    let d = self.post_verb("detach", json!({}), what, deadline).await?;
                    if !d.status.is_success() {
                        return Err(self.refusal(&d, what, true));
                    }
                    self.post_verb("attach", body, what, deadline).await?
                } else {
                    r
                }
            }
        };
        if !r.status.is_success() {
            return Err(self.refusal(&r, what, true));
        }
        Ok(Posted::NoAction)
    }

    async fn action_state(
        &self,
        id: &str,
        what: &str,
        _deadline: Instant,
    ) -> Result<ActionState, ProviderError> {
        Err(ProviderError::Unexpected {
            provider: NAME,
            what: what.into(),
            status: 0,
            detail: format!("Vultr has no actions to read (asked for {id})"),
            state_may_have_changed: true,
        })
    }
}
