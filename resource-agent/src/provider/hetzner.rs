//! Hetzner Cloud floating IPs (API v1).
//!
//! - the IP's numeric id: `GET /v1/floating_ips?page=N&per_page=50`, matched on `ip`
//! - holder: `GET /v1/floating_ips/{id}` → `floating_ip.server` (a server id or null)
//! - assign: `POST /v1/floating_ips/{id}/actions/assign {"server": N}` → 201 `{"action"}`,
//!   then `GET /v1/actions/{id}` until `status` is `success` or `error`
//! - unassign: `POST /v1/floating_ips/{id}/actions/unassign`
//! - another action running: HTTP 423 `locked` (or 409 `conflict`); wait and re-read
//! - server id: configured, or `GET {metadata}/hetzner/v1/metadata/instance-id`
//! - tokens are read-only or read & write; 403 on a write means a read-only token.
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

const NAME: &str = "hetzner";
pub const DEFAULT_API_URL: &str = "https://api.hetzner.cloud";
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
/// Pages read while looking for the IP's id (50 per page).
const MAX_PAGES: u64 = 40;

#[derive(Debug)]
pub struct Hetzner {
    api: Api,
    ip: IpAddr,
    server: OnceCell<u64>,
    ip_id: OnceCell<u64>,
}

impl Hetzner {
    pub fn new(ip: IpAddr, token: Secret, opts: Options) -> Result<Hetzner, ProviderError> {
        let server = OnceCell::new();
        match &opts.server_id {
            Some(ServerId::Numeric(n)) => {
                let _ = server.set(*n);
            }
            Some(ServerId::Text(t)) => {
                return Err(ProviderError::Config(format!(
                    "{NAME}: server ids are numbers, not {t:?}"
                )));
            }
            None => {}
        }
        Ok(Hetzner {
            api: Api::new(NAME, DEFAULT_API_URL, &token, opts)?,
            ip,
            server,
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

    async fn server_id_at(&self, deadline: Instant) -> Result<u64, ProviderError> {
        self.server
            .get_or_try_init(|| async {
                let base = self
                    .api
                    .opts()
                    .metadata_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_METADATA_URL.to_owned());
                let path = "/hetzner/v1/metadata/instance-id";
                let text = self.api.metadata(&base, path, deadline).await?;
                text.parse::<u64>().map_err(|_| ProviderError::Metadata {
                    url: format!("{base}{path}"),
                    reason: "not a server id".into(),
                })
            })
            .await
            .copied()
    }

    async fn ip_id(&self, deadline: Instant) -> Result<u64, ProviderError> {
        self.ip_id
            .get_or_try_init(|| async {
                let what = format!("looking up floating IP {}", self.ip);
                for page in 1..=MAX_PAGES {
                    let path = format!("/v1/floating_ips?page={page}&per_page=50");
                    let r = self
                        .api
                        .call(Method::GET, &path, None, &what, false, deadline)
                        .await?;
                    if r.status != StatusCode::OK {
                        return Err(self.refusal(&r, &what, false));
                    }
                    let ips = r.body.get("floating_ips").and_then(Value::as_array);
                    let found = ips.into_iter().flatten().find(|f| {
                        f.get("ip").and_then(Value::as_str) == Some(&self.ip.to_string())
                    });
                    if let Some(id) = found.and_then(|f| f.get("id")).and_then(Value::as_u64) {
                        return Ok(id);
                    }
                    let next = r
                        .body
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

    async fn read_ip(&self, deadline: Instant) -> Result<Value, ProviderError> {
        let id = self.ip_id(deadline).await?;
        let what = format!("reading floating IP {}", self.ip);
        let r = self
            .api
            .call(
                Method::GET,
                &format!("/v1/floating_ips/{id}"),
                None,
                &what,
                false,
                deadline,
            )
            .await?;
        if r.status != StatusCode::OK {
            return Err(self.refusal(&r, &what, false));
        }
        r.body
            .get("floating_ip")
            .cloned()
            .ok_or_else(|| ProviderError::Unexpected {
                provider: NAME,
                what,
                status: 200,
                detail: "no floating_ip in the answer".into(),
                state_may_have_changed: false,
            })
    }

    async fn holder_at(&self, deadline: Instant) -> Result<Holder, ProviderError> {
        let f = self.read_ip(deadline).await?;
        let me = self.server_id_at(deadline).await?;
        let server = f.get("server").and_then(Value::as_u64);
        let h = Holder {
            ours: server == Some(me),
            server: server.map(ServerId::Numeric),
            locked: false,
        };
        self.api.progress(Progress::Holder(h.clone()));
        Ok(h)
    }

    /// Posts an action and waits for it. `Ok(None)`: the IP is locked by another action.
    async fn run_action(
        &self,
        verb: &str,
        body: Value,
        what: &str,
        started: Instant,
        deadline: Instant,
    ) -> Result<Option<u64>, ProviderError> {
        let id = self.ip_id(deadline).await?;
        let path = format!("/v1/floating_ips/{id}/actions/{verb}");
        let r = self
            .api
            .call(Method::POST, &path, Some(&body), what, true, deadline)
            .await?;
        if r.status == StatusCode::LOCKED || r.status == StatusCode::CONFLICT {
            self.api.progress(Progress::WaitingForPendingAction);
            return Ok(None);
        }
        if !r.status.is_success() {
            return Err(self.refusal(&r, what, true));
        }
        let (action_id, mut status) =
            action_of(&r.body).ok_or_else(|| ProviderError::Unexpected {
                provider: NAME,
                what: what.into(),
                status: r.status.as_u16(),
                detail: "the answer holds no action id and status".into(),
                state_may_have_changed: true,
            })?;
        tracing::info!(provider = NAME, ip = %self.ip, action_id, what, "action accepted");
        self.api.progress(Progress::Posted {
            action_id: action_id.to_string(),
        });
        let mut delays = self.api.opts().poll.delays();
        while status == "running" {
            let d = self.api.poll_wait(delays.next());
            self.api
                .sleep_within(
                    d,
                    deadline,
                    what,
                    started,
                    "the action is still running",
                    true,
                )
                .await?;
            let r = self
                .api
                .call(
                    Method::GET,
                    &format!("/v1/actions/{action_id}"),
                    None,
                    what,
                    false,
                    deadline,
                )
                .await?;
            if r.status != StatusCode::OK {
                return Err(self.refusal(&r, what, false));
            }
            status = action_of(&r.body).map(|a| a.1).unwrap_or_default();
            if status == "running" {
                self.api.progress(Progress::Polling {
                    action_id: action_id.to_string(),
                    elapsed: started.elapsed(),
                });
            }
        }
        if status != "success" {
            return Err(ProviderError::ActionErrored {
                provider: NAME,
                action_id: action_id.to_string(),
                attempts: 1,
            });
        }
        Ok(Some(action_id))
    }

    async fn assign_inner(&self) -> Result<AssignOutcome, ProviderError> {
        let started = Instant::now();
        let deadline = self.api.deadline();
        let calls0 = self.api.calls();
        let me = self.server_id_at(deadline).await?;
        let what = format!("assigning {} to server {me}", self.ip);
        let mut previous = None;
        let mut first = true;
        // Set once an assign was sent: a later "ours" is our own doing, even when the
        // answer to that POST was lost and only the holder shows it.
        let mut posted = false;
        let mut waits = self.api.opts().poll.delays();
        let mut errored = 0;
        loop {
            let h = self.holder_at(deadline).await?;
            if std::mem::take(&mut first) {
                previous = h.server.clone();
            }
            if h.ours {
                return Ok(AssignOutcome {
                    already_held: !posted,
                    previous,
                    action_id: None,
                    elapsed: started.elapsed(),
                    api_calls: self.api.calls() - calls0,
                    errored_actions: errored,
                });
            }
            posted = true;
            match self
                .run_action("assign", json!({"server": me}), &what, started, deadline)
                .await
            {
                Ok(Some(id)) => {
                    tracing::info!(provider = NAME, ip = %self.ip, server = me, action_id = id,
                        errored_actions = errored, "floating IP assigned");
                    return Ok(AssignOutcome {
                        already_held: false,
                        previous,
                        action_id: Some(id.to_string()),
                        elapsed: started.elapsed(),
                        api_calls: self.api.calls() - calls0,
                        errored_actions: errored,
                    });
                }
                Ok(None) => {}
                Err(ProviderError::ActionErrored { action_id, .. }) => {
                    errored += 1;
                    self.api
                        .after_errored_action(&what, action_id, errored, deadline)
                        .await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let d = self.api.poll_wait(waits.next());
            self.api
                .sleep_within(d, deadline, &what, started, "the IP stayed locked", false)
                .await?;
        }
    }

    async fn release_inner(&self) -> Result<ReleaseOutcome, ProviderError> {
        let started = Instant::now();
        let deadline = self.api.deadline();
        let what = format!("unassigning {}", self.ip);
        let mut waits = self.api.opts().poll.delays();
        let mut errored = 0;
        loop {
            if !self.holder_at(deadline).await?.ours {
                return Ok(ReleaseOutcome {
                    not_held: true,
                    action_id: None,
                    elapsed: started.elapsed(),
                });
            }
            match self
                .run_action("unassign", json!({}), &what, started, deadline)
                .await
            {
                Ok(Some(id)) => {
                    return Ok(ReleaseOutcome {
                        not_held: false,
                        action_id: Some(id.to_string()),
                        elapsed: started.elapsed(),
                    });
                }
                Ok(None) => {}
                Err(ProviderError::ActionErrored { action_id, .. }) => {
                    errored += 1;
                    self.api
                        .after_errored_action(&what, action_id, errored, deadline)
                        .await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let d = self.api.poll_wait(waits.next());
            self.api
                .sleep_within(d, deadline, &what, started, "the IP stayed locked", false)
                .await?;
        }
    }

    async fn probe_inner(&self) -> Result<Readiness, ProviderError> {
        let deadline = self.api.deadline();
        let me = self.server_id_at(deadline).await?;
        let f = self.read_ip(deadline).await?;
        let what = format!("reading server {me}");
        let r = self
            .api
            .call(
                Method::GET,
                &format!("/v1/servers/{me}"),
                None,
                &what,
                false,
                deadline,
            )
            .await?;
        if r.status != StatusCode::OK {
            return Err(self.refusal(&r, &what, false));
        }
        let server = f.get("server").and_then(Value::as_u64);
        Ok(Readiness {
            server_id: ServerId::Numeric(me),
            ip: self.ip,
            region: f
                .pointer("/home_location/name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            server_region: r
                .body
                .pointer("/server/datacenter/location/name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            holder: Holder {
                ours: server == Some(me),
                server: server.map(ServerId::Numeric),
                locked: false,
            },
        })
    }
}

fn action_of(body: &Value) -> Option<(u64, String)> {
    let a = body.get("action")?;
    Some((
        a.get("id")?.as_u64()?,
        a.get("status")?.as_str()?.to_owned(),
    ))
}

impl ReservedIpProvider for Hetzner {
    fn provider(&self) -> Provider {
        Provider::Hetzner
    }
    fn ip(&self) -> IpAddr {
        self.ip
    }
    fn server_id(&self) -> BoxFuture<'_, Result<ServerId, ProviderError>> {
        async move {
            self.server_id_at(self.api.deadline())
                .await
                .map(ServerId::Numeric)
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
