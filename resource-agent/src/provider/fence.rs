//! Fencing through the provider: power a peer's server off and wait until the provider says
//! it is off, before its groups are taken over.
//!
//! - DigitalOcean: `POST /v2/droplets/{id}/actions {"type":"power_off"}` → 201 with an
//!   action, then `GET /v2/droplets/{id}/actions/{action_id}` until `completed` or
//!   `errored`; the status is `GET /v2/droplets/{id}` → `droplet.status` (`off`); a
//!   droplet is found by name with `GET /v2/droplets?name=...`. Scopes: `droplet:read`,
//!   `droplet:update`.
//! - Hetzner: `POST /v1/servers/{id}/actions/poweroff` → 201 with an action, then
//!   `GET /v1/actions/{id}` until `success` or `error`; `GET /v1/servers/{id}` →
//!   `server.status` (`off`); `GET /v1/servers?name=...`.
//! - Vultr: `POST /v2/instances/{id}/halt` → 204 with no action, so the instance is re-read
//!   until `instance.power_status` is `stopped`; `GET /v2/instances?label=...`.
//!
//! A server already off is not posted again. Transport failures, 5xx and 429 are retried
//! by the shared HTTP layer within the call's deadline, another action running on the server
//! (DigitalOcean 422 "pending", Hetzner 423/409) is waited out, an action that ends errored
//! is retried after the errored-action backoff, and 401/403/404 end the call at once. The
//! token is its own [`Secret`]: it appears in no log line, error or status.
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tandem_config::{Fencing, Provider, Secret};
use tokio::time::Instant;

use super::http::{Api, Reply, text_at};
use super::moves::{ActionState, action_in};
use super::{Options, ProviderError, digitalocean, hetzner, load_token, vultr};

/// What a successful fence did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceOutcome {
    /// The provider's id of the server powered off.
    pub server: String,
    /// It was off already: nothing was posted.
    pub already_off: bool,
    /// The provider's action that powered it off (none at Vultr).
    pub action_id: Option<String>,
    pub elapsed: Duration,
    /// HTTP requests made (lookup, polls and retries included).
    pub api_calls: u64,
}

/// The server a fence of one node would power off, as the fencing token reads it (nothing is
/// changed): what `ipctl check-config --node` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceTarget {
    /// The provider's id of the server.
    pub server: String,
    /// Found by the node's name (no `provider_id` configured).
    pub by_name: bool,
    /// Its name (DigitalOcean, Hetzner) or label (Vultr).
    pub name: Option<String>,
    /// The provider shows it off now.
    pub off: bool,
}

/// Where each provider keeps what a fence needs.
struct Spec {
    /// Listing servers by name: path with a `{name}` placeholder, the list's key, the
    /// field holding the name.
    list: &'static str,
    list_key: &'static str,
    name_key: &'static str,
    /// One server: path prefix (the id follows), pointers to its name and its power state,
    /// the value meaning off.
    server: &'static str,
    name: &'static str,
    power: &'static str,
    off: &'static str,
    /// Power-off: path with an `{id}` placeholder, and its body.
    post: &'static str,
    body: Option<fn() -> Value>,
    /// Reading an action: path with `{id}` (the server) and `{action}` placeholders; none
    /// when the provider returns no action (the server itself is re-read).
    action: Option<&'static str>,
    state: fn(&str) -> Option<ActionState>,
    /// The scope a 403 on a read and on the power-off says the token lacks.
    read_scope: &'static str,
    write_scope: &'static str,
}

const DIGITALOCEAN: Spec = Spec {
    list: "/v2/droplets?name={name}&per_page=200",
    list_key: "droplets",
    name_key: "name",
    server: "/v2/droplets/",
    name: "/droplet/name",
    power: "/droplet/status",
    off: "off",
    post: "/v2/droplets/{id}/actions",
    body: Some(|| json!({"type": "power_off"})),
    action: Some("/v2/droplets/{id}/actions/{action}"),
    state: |s| match s {
        "completed" => Some(ActionState::Completed),
        "errored" => Some(ActionState::Errored),
        "in-progress" => Some(ActionState::Running),
        _ => None,
    },
    read_scope: "droplet:read",
    write_scope: "droplet:update",
};

const HETZNER: Spec = Spec {
    list: "/v1/servers?name={name}",
    list_key: "servers",
    name_key: "name",
    server: "/v1/servers/",
    name: "/server/name",
    power: "/server/status",
    off: "off",
    post: "/v1/servers/{id}/actions/poweroff",
    body: None,
    action: Some("/v1/actions/{action}"),
    state: |s| {
        Some(match s {
            "running" => ActionState::Running,
            "success" => ActionState::Completed,
            _ => ActionState::Errored,
        })
    },
    read_scope: "read",
    write_scope: "read & write",
};

const VULTR: Spec = Spec {
    list: "/v2/instances?label={name}&per_page=100",
    list_key: "instances",
    name_key: "label",
    server: "/v2/instances/",
    name: "/instance/label",
    power: "/instance/power_status",
    off: "stopped",
    post: "/v2/instances/{id}/halt",
    body: Some(|| json!({})),
    action: None,
    state: |_| None,
    read_scope: "API access for this address (Vultr's API access control list)",
    write_scope: "API access for this address (Vultr's API access control list)",
};

/// Powers servers off at one provider, with the fencing token.
#[derive(Debug)]
pub struct Fencer {
    api: Api,
    spec: &'static Spec,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.server)
    }
}

impl Fencer {
    /// `deadline` limits one [`Fencer::power_off`] call.
    pub fn new(
        provider: Provider,
        token: &Secret,
        api_url: Option<String>,
        deadline: Duration,
        token_file: Option<std::path::PathBuf>,
    ) -> Result<Fencer, ProviderError> {
        let (spec, base) = match provider {
            Provider::DigitalOcean => (&DIGITALOCEAN, digitalocean::DEFAULT_API_URL),
            Provider::Hetzner => (&HETZNER, hetzner::DEFAULT_API_URL),
            Provider::Vultr => (&VULTR, vultr::DEFAULT_API_URL),
        };
        let opts = Options {
            api_url,
            deadline,
            token_file,
            ..Options::default()
        };
        Ok(Fencer {
            api: Api::new(provider, base, token, opts)?,
            spec,
        })
    }

    /// The fencer of a `fencing:` section (reading its token file, relative names in
    /// `$CREDENTIALS_DIRECTORY`).
    pub fn from_config(f: &Fencing) -> Result<Fencer, ProviderError> {
        let file = tandem_config::credential_path(Path::new(&f.token_file));
        let token = load_token(&file)?;
        Fencer::new(f.provider, &token, f.api_url.clone(), f.timeout, Some(file))
    }
}

/// The provider call a fence makes, as events and logs name it.
pub fn power_off_call(provider: Provider) -> &'static str {
    match provider {
        Provider::DigitalOcean => "digitalocean power_off",
        Provider::Hetzner => "hetzner poweroff",
        Provider::Vultr => "vultr halt",
    }
}

impl Fencer {
    pub fn provider(&self) -> Provider {
        self.api.kind
    }

    /// Powers off the server of node `node` (`id` when configured, else the server of that
    /// name) and waits until the provider says it is off.
    pub async fn power_off(
        &self,
        node: &str,
        id: Option<&str>,
    ) -> Result<FenceOutcome, ProviderError> {
        let started = Instant::now();
        let deadline = self.api.deadline();
        let calls0 = self.api.calls();
        let server = self.server_of(node, id, deadline).await?;
        let what = format!(
            "powering off {} {server} (node {node})",
            self.api.kind.server_noun()
        );
        let done = |already_off: bool, action_id: Option<String>| FenceOutcome {
            server: server.clone(),
            already_off,
            action_id,
            elapsed: started.elapsed(),
            api_calls: self.api.calls() - calls0,
        };
        let mut waits = self.api.opts().poll.delays();
        let mut posted = false;
        let mut errored = 0;
        loop {
            if self.is_off(&server, &what, deadline).await? {
                return Ok(done(!posted, None));
            }
            // Vultr answers the halt with no action: the server shows when it is off.
            let watching = posted && self.spec.action.is_none();
            if !watching {
                match self.post(&server, &what, deadline).await? {
                    None => {}
                    Some(None) => posted = true,
                    Some(Some((action, state))) => {
                        posted = true;
                        tracing::info!(provider = self.api.provider, server = %server, node, action_id = %action, "power-off accepted");
                        match self
                            .poll(&server, &action, state, &what, started, deadline)
                            .await?
                        {
                            ActionState::Completed => {
                                tracing::info!(provider = self.api.provider, server = %server, node, elapsed = ?started.elapsed(), "powered off");
                                return Ok(done(false, Some(action)));
                            }
                            _ => {
                                errored += 1;
                                self.api
                                    .after_errored_action(&what, action, errored, deadline)
                                    .await?;
                                continue;
                            }
                        }
                    }
                }
            }
            let d = self.api.poll_wait(waits.next());
            let last = if watching {
                "the server did not show as off"
            } else {
                "another action on the server kept running"
            };
            self.api
                .sleep_within(d, deadline, &what, started, last, posted)
                .await?;
        }
    }

    /// Reads, changing nothing, the server a fence of node `node` would power off (`id` when
    /// configured, else the one server of that name): the token is accepted and may read it,
    /// and the id exists or the name finds exactly one. Whether the token may also power it off
    /// cannot be read: no provider lists a token's scopes (see docs/CONFIGURATION.md).
    pub async fn inspect(
        &self,
        node: &str,
        id: Option<&str>,
    ) -> Result<FenceTarget, ProviderError> {
        let deadline = self.api.deadline();
        let server = self.server_of(node, id, deadline).await?;
        let what = format!(
            "reading {} {server} (node {node})",
            self.api.kind.server_noun()
        );
        let body = self.read_server(&server, &what, deadline).await?;
        Ok(FenceTarget {
            off: self.off_in(&body, &what)?,
            name: text_at(&body, self.spec.name),
            by_name: id.is_none(),
            server,
        })
    }

    /// The server of node `node`: `id` when configured, else the one server of that name.
    async fn server_of(
        &self,
        node: &str,
        id: Option<&str>,
        deadline: Instant,
    ) -> Result<String, ProviderError> {
        match id {
            Some(id) => self.checked_id(id),
            None => self.find(node, deadline).await,
        }
    }

    /// A configured id, checked for the provider's form.
    fn checked_id(&self, id: &str) -> Result<String, ProviderError> {
        if self.api.kind.numeric_server_ids() && id.parse::<u64>().is_err() {
            return Err(ProviderError::Config(format!(
                "{}: {} ids are numbers, not {id:?}",
                self.api.provider,
                self.api.kind.server_noun()
            )));
        }
        Ok(id.to_owned())
    }

    fn refusal(&self, r: &Reply, what: &str, write: bool, missing: String) -> ProviderError {
        let scope = if write {
            self.spec.write_scope
        } else {
            self.spec.read_scope
        };
        r.refusal(self.api.provider, what, scope, || missing, write)
    }

    /// The id of the one server named `node`.
    async fn find(&self, node: &str, deadline: Instant) -> Result<String, ProviderError> {
        let noun = self.api.kind.server_noun();
        let what = format!("looking up the {noun} named {node}");
        let path = self.spec.list.replace("{name}", node);
        let body = self
            .api
            .get(&path, &what, deadline)
            .await?
            .map_err(|r| self.refusal(&r, &what, false, format!("the {noun} list")))?;
        let ids: Vec<String> = body
            .get(self.spec.list_key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|s| s.get(self.spec.name_key).and_then(Value::as_str) == Some(node))
            .filter_map(|s| match s.get("id")? {
                Value::Number(n) => Some(n.to_string()),
                Value::String(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(ProviderError::Config(format!(
                "{}: no {noun} is named {node}; set nodes[].provider_id of {node} to its \
                 {noun}'s id, or name the {noun} {node} (nothing was changed)",
                self.api.provider
            ))),
            many => Err(ProviderError::Config(format!(
                "{}: {} {noun}s are named {node} ({}); set nodes[].provider_id",
                self.api.provider,
                many.len(),
                many.join(", ")
            ))),
        }
    }

    /// Whether the provider shows the server off.
    async fn is_off(&self, id: &str, what: &str, deadline: Instant) -> Result<bool, ProviderError> {
        let body = self.read_server(id, what, deadline).await?;
        self.off_in(&body, what)
    }

    /// The server as the provider shows it.
    async fn read_server(
        &self,
        id: &str,
        what: &str,
        deadline: Instant,
    ) -> Result<Value, ProviderError> {
        let noun = self.api.kind.server_noun();
        self.api
            .get(&format!("{}{id}", self.spec.server), what, deadline)
            .await?
            .map_err(|r| self.refusal(&r, what, false, format!("{noun} {id}")))
    }

    /// Whether a server's answer shows it off.
    fn off_in(&self, body: &Value, what: &str) -> Result<bool, ProviderError> {
        match body.pointer(self.spec.power).and_then(Value::as_str) {
            Some(s) => Ok(s == self.spec.off),
            None => Err(ProviderError::Unexpected {
                provider: self.api.provider,
                what: what.to_owned(),
                status: 200,
                detail: format!("no {} in the answer", self.spec.power),
                state_may_have_changed: false,
            }),
        }
    }

    /// Posts the power-off: `None` when another action on the server runs, `Some(None)`
    /// when accepted with no action to follow, else the action.
    async fn post(
        &self,
        id: &str,
        what: &str,
        deadline: Instant,
    ) -> Result<Option<Option<(String, ActionState)>>, ProviderError> {
        let path = self.spec.post.replace("{id}", id);
        let body = self.spec.body.map(|b| b());
        let r = self
            .api
            .call(Method::POST, &path, body.as_ref(), what, true, deadline)
            .await?;
        let busy = match r.status {
            StatusCode::UNPROCESSABLE_ENTITY => r.error_parts().1.contains("pending"),
            StatusCode::LOCKED | StatusCode::CONFLICT => true,
            _ => false,
        };
        if busy {
            return Ok(None);
        }
        if !r.status.is_success() {
            let noun = self.api.kind.server_noun();
            return Err(self.refusal(&r, what, true, format!("{noun} {id}")));
        }
        if self.spec.action.is_none() {
            return Ok(Some(None));
        }
        Ok(Some(Some(action_in(
            self.api.provider,
            what,
            &r.body,
            self.spec.state,
        )?)))
    }

    /// Polls action `action` on server `id` until it ends.
    async fn poll(
        &self,
        id: &str,
        action: &str,
        mut state: ActionState,
        what: &str,
        started: Instant,
        deadline: Instant,
    ) -> Result<ActionState, ProviderError> {
        let Some(template) = self.spec.action else {
            return Ok(state);
        };
        let path = template.replace("{id}", id).replace("{action}", action);
        let mut delays = self.api.opts().poll.delays();
        while state == ActionState::Running {
            let d = self.api.poll_wait(delays.next());
            self.api
                .sleep_within(
                    d,
                    deadline,
                    what,
                    started,
                    "the power-off is still running",
                    true,
                )
                .await?;
            let body = self
                .api
                .get(&path, what, deadline)
                .await?
                .map_err(|r| self.refusal(&r, what, false, format!("action {action}")))?;
            state = action_in(self.api.provider, what, &body, self.spec.state)?.1;
        }
        Ok(state)
    }
}
