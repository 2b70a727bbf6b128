//! DigitalOcean reserved IPs (API v2).
//!
//! - holder: `GET /v2/reserved_ips/{ip}` → `reserved_ip.droplet.id`, `reserved_ip.locked`
//! - assign: `POST /v2/reserved_ips/{ip}/actions {"type":"assign","droplet_id":N}` → 201 with
//!   an action, then `GET /v2/reserved_ips/{ip}/actions/{id}` until `completed` or `errored`
//!   (this path needs only `reserved_ip:read`, unlike `/v2/actions/{id}`)
//! - 422 "already has a pending event": another action runs; wait and re-read the holder
//! - droplet id: configured, or `GET {metadata}/metadata/v1/id`
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

const NAME: &str = "digitalocean";
pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";

#[derive(Debug)]
pub struct DigitalOcean {
    api: Api,
    ip: IpAddr,
    droplet: OnceCell<u64>,
}

/// Which scope a refused request needed, for the 403 message.
#[derive(Clone, Copy)]
enum Need {
    Read,
    Update,
    Droplet,
}

impl Need {
    fn scope(self) -> &'static str {
        match self {
            Need::Read => "reserved_ip:read",
            Need::Update => "reserved_ip:update",
            Need::Droplet => "droplet:read",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionState {
    Running,
    Completed,
    Errored,
}

impl DigitalOcean {
    pub fn new(ip: IpAddr, token: Secret, opts: Options) -> Result<DigitalOcean, ProviderError> {
        let droplet = OnceCell::new();
        match &opts.server_id {
            Some(ServerId::Numeric(n)) => {
                let _ = droplet.set(*n);
            }
            Some(ServerId::Text(t)) => {
                return Err(ProviderError::Config(format!(
                    "{NAME}: droplet ids are numbers, not {t:?}"
                )));
            }
            None => {}
        }
        Ok(DigitalOcean {
            api: Api::new(NAME, DEFAULT_API_URL, &token, opts)?,
            ip,
            droplet,
        })
    }

    /// HTTP requests made so far (for the benchmark and `ipctl assign`).
    pub fn api_calls(&self) -> u64 {
        self.api.calls()
    }

    fn ip_path(&self) -> String {
        format!("/v2/reserved_ips/{}", self.ip)
    }

    /// Turns a non-success reply into the matching error.
    fn refusal(&self, r: &Reply, what: &str, need: Need, mutating: bool) -> ProviderError {
        let missing = || match need {
            Need::Droplet => format!("droplet {}", self.droplet.get().copied().unwrap_or(0)),
            _ => format!("reserved IP {}", self.ip),
        };
        r.refusal(NAME, what, need.scope(), missing, mutating)
    }

    async fn droplet_id(&self, deadline: Instant) -> Result<u64, ProviderError> {
        self.droplet
            .get_or_try_init(|| async {
                let base = self
                    .api
                    .opts()
                    .metadata_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_METADATA_URL.to_owned());
                let text = self
                    .api
                    .metadata(&base, "/metadata/v1/id", deadline)
                    .await?;
                text.parse::<u64>().map_err(|_| ProviderError::Metadata {
                    url: format!("{base}/metadata/v1/id"),
                    reason: format!(
                        "not a droplet id: {:?}",
                        text.chars().take(40).collect::<String>()
                    ),
                })
            })
            .await
            .copied()
    }

    async fn read_ip(&self, deadline: Instant) -> Result<Value, ProviderError> {
        let what = format!("reading reserved IP {}", self.ip);
        let r = self
            .api
            .call(Method::GET, &self.ip_path(), None, &what, false, deadline)
            .await?;
        if r.status != StatusCode::OK {
            return Err(self.refusal(&r, &what, Need::Read, false));
        }
        r.body
            .get("reserved_ip")
            .cloned()
            .ok_or_else(|| ProviderError::Unexpected {
                provider: NAME,
                what,
                status: 200,
                detail: "no reserved_ip in the answer".into(),
                state_may_have_changed: false,
            })
    }

    async fn holder_at(&self, deadline: Instant) -> Result<Holder, ProviderError> {
        let rip = self.read_ip(deadline).await?;
        let me = self.droplet_id(deadline).await?;
        let server = rip
            .get("droplet")
            .and_then(|d| d.get("id"))
            .and_then(Value::as_u64);
        let h = Holder {
            ours: server == Some(me),
            server: server.map(ServerId::Numeric),
            locked: rip.get("locked").and_then(Value::as_bool).unwrap_or(false),
        };
        self.api.progress(Progress::Holder(h.clone()));
        Ok(h)
    }

    fn action_of(&self, r: &Reply, what: &str) -> Result<(u64, ActionState), ProviderError> {
        let a = r.body.get("action");
        let id = a.and_then(|a| a.get("id")).and_then(Value::as_u64);
        let status = a.and_then(|a| a.get("status")).and_then(Value::as_str);
        let state = match status {
            Some("completed") => Some(ActionState::Completed),
            Some("errored") => Some(ActionState::Errored),
            Some("in-progress") => Some(ActionState::Running),
            _ => None,
        };
        match (id, state) {
            (Some(id), Some(s)) => Ok((id, s)),
            _ => Err(ProviderError::Unexpected {
                provider: NAME,
                what: what.into(),
                status: r.status.as_u16(),
                detail: "the answer holds no action id and status".into(),
                state_may_have_changed: true,
            }),
        }
    }

    /// Posts an action and waits for its end. `Ok(None)`: another action was pending.
    async fn run_action(
        &self,
        body: Value,
        what: &str,
        started: Instant,
        deadline: Instant,
    ) -> Result<Option<u64>, ProviderError> {
        let path = format!("{}/actions", self.ip_path());
        let r = self
            .api
            .call(Method::POST, &path, Some(&body), what, true, deadline)
            .await?;
        if r.status == StatusCode::UNPROCESSABLE_ENTITY {
            let (_, message) = r.error_parts();
            if message.contains("pending") {
                self.api.progress(Progress::WaitingForPendingAction);
                return Ok(None);
            }
        }
        if !r.status.is_success() {
            return Err(self.refusal(&r, what, Need::Update, false));
        }
        let (id, mut state) = self.action_of(&r, what)?;
        tracing::info!(provider = NAME, ip = %self.ip, action_id = id, what, "action accepted");
        self.api.progress(Progress::Posted {
            action_id: id.to_string(),
        });
        let poll_path = format!("{}/actions/{id}", self.ip_path());
        let mut delays = self.api.opts().poll.delays();
        while state == ActionState::Running {
            let d = self.api.poll_wait(delays.next());
            self.api
                .sleep_within(
                    d,
                    deadline,
                    what,
                    started,
                    "the action is still in progress",
                    true,
                )
                .await?;
            let r = self
                .api
                .call(Method::GET, &poll_path, None, what, false, deadline)
                .await
                .map_err(|e| mark_changed(e, true))?;
            if r.status != StatusCode::OK {
                return Err(mark_changed(self.refusal(&r, what, Need::Read, true), true));
            }
            state = self.action_of(&r, what)?.1;
            if state == ActionState::Running {
                self.api.progress(Progress::Polling {
                    action_id: id.to_string(),
                    elapsed: started.elapsed(),
                });
            }
        }
        if state == ActionState::Errored {
            return Err(ProviderError::ActionErrored {
                provider: NAME,
                action_id: id.to_string(),
                attempts: 1,
            });
        }
        Ok(Some(id))
    }

    async fn assign_inner(&self) -> Result<AssignOutcome, ProviderError> {
        let started = Instant::now();
        let deadline = self.api.deadline();
        let calls0 = self.api.calls();
        let me = self.droplet_id(deadline).await?;
        let what = format!("assigning {} to droplet {me}", self.ip);
        let mut previous = None;
        let mut waits = self.api.opts().poll.delays();
        let mut first = true;
        // Set once an assign was sent: a later "ours" is our own doing, even when the
        // answer to that POST was lost and only the holder shows it.
        let mut posted = false;
        let mut errored = 0;
        loop {
            let h = self.holder_at(deadline).await?;
            if first {
                previous = h.server.clone();
                first = false;
            }
            if h.ours && !h.locked {
                return Ok(AssignOutcome {
                    already_held: !posted,
                    previous,
                    action_id: None,
                    elapsed: started.elapsed(),
                    api_calls: self.api.calls() - calls0,
                    errored_actions: errored,
                });
            }
            if !h.locked {
                let body = json!({"type": "assign", "droplet_id": me});
                posted = true;
                match self.run_action(body, &what, started, deadline).await {
                    Ok(Some(id)) => {
                        tracing::info!(provider = NAME, ip = %self.ip, droplet = me, action_id = id,
                            errored_actions = errored, elapsed = ?started.elapsed(), "reserved IP assigned");
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
            } else {
                self.api.progress(Progress::WaitingForPendingAction);
            }
            let d = self.api.poll_wait(waits.next());
            self.api
                .sleep_within(
                    d,
                    deadline,
                    &what,
                    started,
                    "another action on the IP kept running",
                    false,
                )
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
            let h = self.holder_at(deadline).await?;
            if !h.ours {
                return Ok(ReleaseOutcome {
                    not_held: true,
                    action_id: None,
                    elapsed: started.elapsed(),
                });
            }
            if !h.locked {
                match self
                    .run_action(json!({"type": "unassign"}), &what, started, deadline)
                    .await
                {
                    Ok(Some(id)) => {
                        tracing::info!(provider = NAME, ip = %self.ip, action_id = id, "reserved IP unassigned");
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
            }
            let d = self.api.poll_wait(waits.next());
            self.api
                .sleep_within(
                    d,
                    deadline,
                    &what,
                    started,
                    "another action on the IP kept running",
                    false,
                )
                .await?;
        }
    }

    async fn probe_inner(&self) -> Result<Readiness, ProviderError> {
        let deadline = self.api.deadline();
        let me = self.droplet_id(deadline).await?;
        let rip = self.read_ip(deadline).await?;
        let region = rip
            .get("region")
            .and_then(|r| r.get("slug"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let what = format!("reading droplet {me}");
        let r = self
            .api
            .call(
                Method::GET,
                &format!("/v2/droplets/{me}"),
                None,
                &what,
                false,
                deadline,
            )
            .await?;
        if r.status != StatusCode::OK {
            return Err(self.refusal(&r, &what, Need::Droplet, false));
        }
        let server_region = r
            .body
            .get("droplet")
            .and_then(|d| d.get("region"))
            .and_then(|r| r.get("slug"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let server = rip
            .get("droplet")
            .and_then(|d| d.get("id"))
            .and_then(Value::as_u64);
        Ok(Readiness {
            server_id: ServerId::Numeric(me),
            ip: self.ip,
            region,
            server_region,
            holder: Holder {
                ours: server == Some(me),
                server: server.map(ServerId::Numeric),
                locked: rip.get("locked").and_then(Value::as_bool).unwrap_or(false),
            },
        })
    }
}

fn mark_changed(e: ProviderError, changed: bool) -> ProviderError {
    match e {
        ProviderError::GaveUp {
            provider,
            what,
            elapsed,
            last,
            state_may_have_changed,
        } => ProviderError::GaveUp {
            provider,
            what,
            elapsed,
            last,
            state_may_have_changed: state_may_have_changed || changed,
        },
        other => other,
    }
}

impl ReservedIpProvider for DigitalOcean {
    fn provider(&self) -> Provider {
        Provider::DigitalOcean
    }
    fn ip(&self) -> IpAddr {
        self.ip
    }
    fn server_id(&self) -> BoxFuture<'_, Result<ServerId, ProviderError>> {
        async move {
            self.droplet_id(self.api.deadline())
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
