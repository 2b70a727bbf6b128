//! Vultr reserved IPs (API v2).
//!
//! - the IP's id (a UUID): `GET /v2/reserved-ips?per_page=100[&cursor=...]`, matched on `subnet`
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

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tandem_config::{Provider, Secret};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::http::{Api, Reply};
use super::{
    AssignOutcome, Holder, Options, Progress, ProviderError, Readiness, ReleaseOutcome,
    ReservedIpProvider, ServerId,
};

const NAME: &str = "vultr";
pub const DEFAULT_API_URL: &str = "https://api.vultr.com";
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
/// Pages read while looking for the IP's id (100 per page).
const MAX_PAGES: usize = 20;

#[derive(Debug)]
pub struct Vultr {
    api: Api,
    ip: IpAddr,
    instance: OnceCell<String>,
    ip_id: OnceCell<String>,
}

impl Vultr {
    pub fn new(ip: IpAddr, token: Secret, opts: Options) -> Result<Vultr, ProviderError> {
        let instance = OnceCell::new();
        match &opts.server_id {
            Some(ServerId::Text(t)) => {
                let _ = instance.set(t.clone());
            }
            Some(ServerId::Numeric(n)) => {
                return Err(ProviderError::Config(format!(
                    "{NAME}: instance ids are UUIDs, not {n}; leave droplet_id unset so the \
                     metadata service names the instance"
                )));
            }
            None => {}
        }
        Ok(Vultr {
            api: Api::new(NAME, DEFAULT_API_URL, &token, opts)?,
            ip,
            instance,
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

    async fn instance_at(&self, deadline: Instant) -> Result<String, ProviderError> {
        self.instance
            .get_or_try_init(|| async {
                let base = self
                    .api
                    .opts()
                    .metadata_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_METADATA_URL.to_owned());
                let text = self.api.metadata(&base, "/v1.json", deadline).await?;
                let v: Value =
                    serde_json::from_str(&text).map_err(|e| ProviderError::Metadata {
                        url: format!("{base}/v1.json"),
                        reason: format!("not JSON: {e}"),
                    })?;
                v.get("instance-v2-id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| ProviderError::Metadata {
                        url: format!("{base}/v1.json"),
                        reason: "no instance-v2-id".into(),
                    })
            })
            .await
            .cloned()
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
                    let r = self
                        .api
                        .call(Method::GET, &path, None, &what, false, deadline)
                        .await?;
                    if r.status != StatusCode::OK {
                        return Err(self.refusal(&r, &what, false));
                    }
                    let list = r.body.get("reserved_ips").and_then(Value::as_array);
                    let found = list.into_iter().flatten().find(|x| {
                        x.get("subnet").and_then(Value::as_str) == Some(&self.ip.to_string())
                    });
                    if let Some(id) = found.and_then(|x| x.get("id")).and_then(Value::as_str) {
                        return Ok(id.to_owned());
                    }
                    cursor = r
                        .body
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

    async fn holder_at(&self, deadline: Instant) -> Result<Holder, ProviderError> {
        let id = self.ip_id(deadline).await?;
        let what = format!("reading reserved IP {}", self.ip);
        let r = self
            .api
            .call(
                Method::GET,
                &format!("/v2/reserved-ips/{id}"),
                None,
                &what,
                false,
                deadline,
            )
            .await?;
        if r.status != StatusCode::OK {
            return Err(self.refusal(&r, &what, false));
        }
        let me = self.instance_at(deadline).await?;
        let server = r
            .body
            .pointer("/reserved_ip/instance_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let h = Holder {
            ours: server.as_deref() == Some(me.as_str()),
            server: server.map(ServerId::Text),
            locked: false,
        };
        self.api.progress(Progress::Holder(h.clone()));
        Ok(h)
    }

    async fn post(
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

    async fn assign_inner(&self) -> Result<AssignOutcome, ProviderError> {
        let started = Instant::now();
        let deadline = self.api.deadline();
        let calls0 = self.api.calls();
        let me = self.instance_at(deadline).await?;
        let what = format!("attaching {} to instance {me}", self.ip);
        let h = self.holder_at(deadline).await?;
        let previous = h.server.clone();
        let outcome = |already_held| AssignOutcome {
            already_held,
            previous: previous.clone(),
            action_id: None,
            elapsed: started.elapsed(),
            api_calls: self.api.calls() - calls0,
            // Vultr attaches synchronously: there is no action that could end errored.
            errored_actions: 0,
        };
        if h.ours {
            return Ok(outcome(true));
        }
        let body = json!({"instance_id": me});
        let mut r = self.post("attach", body.clone(), &what, deadline).await?;
        if (r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::CONFLICT)
            && h.server.is_some()
        {
            tracing::info!(provider = NAME, ip = %self.ip, "attach refused while attached elsewhere; detaching first");
            let d = self.post("detach", json!({}), &what, deadline).await?;
            if !d.status.is_success() {
                return Err(self.refusal(&d, &what, true));
            }
            r = self.post("attach", body, &what, deadline).await?;
        }
        if !r.status.is_success() {
            return Err(self.refusal(&r, &what, true));
        }
        let mut delays = self.api.opts().poll.delays();
        loop {
            if self.holder_at(deadline).await?.ours {
                tracing::info!(provider = NAME, ip = %self.ip, instance = %me, "reserved IP attached");
                return Ok(outcome(false));
            }
            let d = self.api.poll_wait(delays.next());
            self.api
                .sleep_within(d, deadline, &what, started, "the attach did not show", true)
                .await?;
        }
    }

    async fn release_inner(&self) -> Result<ReleaseOutcome, ProviderError> {
        let started = Instant::now();
        let deadline = self.api.deadline();
        let what = format!("detaching {}", self.ip);
        if !self.holder_at(deadline).await?.ours {
            return Ok(ReleaseOutcome {
                not_held: true,
                action_id: None,
                elapsed: started.elapsed(),
            });
        }
        let r = self.post("detach", json!({}), &what, deadline).await?;
        if !r.status.is_success() {
            return Err(self.refusal(&r, &what, true));
        }
        Ok(ReleaseOutcome {
            not_held: false,
            action_id: None,
            elapsed: started.elapsed(),
        })
    }

    async fn probe_inner(&self) -> Result<Readiness, ProviderError> {
        let deadline = self.api.deadline();
        let me = self.instance_at(deadline).await?;
        let id = self.ip_id(deadline).await?;
        let what = format!("reading reserved IP {}", self.ip);
        let r = self
            .api
            .call(
                Method::GET,
                &format!("/v2/reserved-ips/{id}"),
                None,
                &what,
                false,
                deadline,
            )
            .await?;
        if r.status != StatusCode::OK {
            return Err(self.refusal(&r, &what, false));
        }
        let what = format!("reading instance {me}");
        let inst = self
            .api
            .call(
                Method::GET,
                &format!("/v2/instances/{me}"),
                None,
                &what,
                false,
                deadline,
            )
            .await?;
        if inst.status != StatusCode::OK {
            return Err(self.refusal(&inst, &what, false));
        }
        let server = r
            .body
            .pointer("/reserved_ip/instance_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Ok(Readiness {
            server_id: ServerId::Text(me.clone()),
            ip: self.ip,
            region: r
                .body
                .pointer("/reserved_ip/region")
                .and_then(Value::as_str)
                .map(str::to_owned),
            server_region: inst
                .body
                .pointer("/instance/region")
                .and_then(Value::as_str)
                .map(str::to_owned),
            holder: Holder {
                ours: server.as_deref() == Some(me.as_str()),
                server: server.map(ServerId::Text),
                locked: false,
            },
        })
    }
}

impl ReservedIpProvider for Vultr {
    fn provider(&self) -> Provider {
        Provider::Vultr
    }
    fn ip(&self) -> IpAddr {
        self.ip
    }
    fn server_id(&self) -> BoxFuture<'_, Result<ServerId, ProviderError>> {
        async move {
            self.instance_at(self.api.deadline())
                .await
                .map(ServerId::Text)
        }
        .boxed()
    }
    fn holder(&self) -> BoxFuture<'_, Result<Holder, ProviderError>> {
        async move { self.holder_at(self.api.deadline()).await }.boxed()
    }
    fn assign(&self) -> BoxFuture<'_, Result<AssignOutcome, ProviderError>> {
        self.assign_inner().boxed()
    }
    fn release(&self) -> BoxFuture<'_, Result<ReleaseOutcome, ProviderError>> {
        self.release_inner().boxed()
    }
    fn probe(&self) -> BoxFuture<'_, Result<Readiness, ProviderError>> {
        self.probe_inner().boxed()
    }
}
