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
//! `attach` is refused with 400/409 and a fresh read shows another instance holding the IP,
//! this detaches first (a short window with no holder, which the API leaves no way around).
//! It does not when the IP's region differs from this instance's (the attach would be
//! refused after the detach); an attach that fails after the detach all the same is reported
//! as [`ProviderError::LeftUnassigned`].
use std::net::IpAddr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tandem_config::{Provider, Secret};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::http::{Api, MetadataId, Reply, text_at};
use super::moves::{ActionState, Client, IpState, Move, Posted, ServerInfo, covers};
use super::{Holder, Options, ProviderError, ServerId, stats};

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

    /// After `attach` was refused (`refused`, 400 or 409) while another instance seemed to
    /// hold the IP: detaches it and attaches it here, but only once a fresh read shows the IP
    /// on another instance and nothing known makes the attach fail anyway (the IP in another
    /// region than this instance), since a detach whose attach fails leaves the IP with no
    /// holder. When that happens all the same, the error says so
    /// ([`ProviderError::LeftUnassigned`]) and it is counted.
    async fn detach_then_attach(
        &self,
        refused: Reply,
        me: &ServerId,
        body: Value,
        what: &str,
        deadline: Instant,
    ) -> Result<Posted, ProviderError> {
        let now = self.read_ip_state(deadline).await?;
        let from = match now.server {
            // Attached here meanwhile: the holder loop sees it.
            Some(s) if s == *me => return Ok(Posted::NoAction),
            Some(s) => s,
            // Not attached: the refusal had another reason, and it stands.
            None => return Err(self.refusal(&refused, what, false)),
        };
        let mine = self.server_info(me, deadline).await?;
        if let (Some(theirs), Some(ours)) = (&now.region, &mine.region)
            && theirs != ours
        {
            return Err(self.refusal(&refused, what, false));
        }
        tracing::info!(provider = NAME, ip = %self.ip, from = %from, "attach refused while attached to another instance; detaching first");
        let d = self.post_verb("detach", json!({}), what, deadline).await?;
        if !d.status.is_success() {
            return Err(self.refusal(&d, what, true));
        }
        let cause = match self.post_verb("attach", body, what, deadline).await {
            Ok(r) if r.status.is_success() => return Ok(Posted::NoAction),
            Ok(r) => self.refusal(&r, what, true),
            Err(e) => e,
        };
        stats::left_unassigned(Provider::Vultr);
        let e = ProviderError::LeftUnassigned {
            provider: NAME,
            ip: self.ip,
            from: format!("instance {from}"),
            cause: Box::new(cause),
        };
        tracing::error!(provider = NAME, ip = %self.ip, error = %e, "reserved IP left unassigned");
        Err(e)
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
                    return self.detach_then_attach(r, me, body, what, deadline).await;
                }
                r
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
