//! Reserved-IP providers behind one trait: DigitalOcean, Hetzner Cloud, Vultr.
//!
//! A provider answers "who holds this IP?" from the provider's own API (the truth the agent
//! reconciles against), moves the IP to this machine, and releases it. Every call has an
//! overall deadline; transient failures (5xx, resets, timeouts) are retried with capped,
//! jittered backoff, 429 waits its Retry-After (else the rate-limit reset), and 401/403 are
//! fatal errors naming what the token lacks. An action that ends `errored` (the provider accepted it, then
//! failed it) is retried within the same call: wait 0.5s, doubling up to 4s, re-read the
//! holder (the action may have half-happened: an IP that is ours now is never posted
//! again), then post again; only when the next wait would pass the call's deadline (the
//! agent's start timeout) does the call fail with [`ProviderError::ActionErrored`]. Each
//! errored action is logged (warn, with action id and attempt number) and counted in
//! [`AssignOutcome::errored_actions`]. Every request is paced by its token's budget
//! ([`budget`]): moves first, concurrent moves share the minute's requests, and polling slows
//! to one call every 2s when the provider's `ratelimit-remaining` drops low. The token
//! is a [`Secret`]: it appears in no log line, error or `Debug` output.
//!
//! Token files: read with [`tandem_config::read_secret_file`] in private mode, so a token file
//! that group or others can read is refused, exactly like the cluster key: the token moves the
//! service's public address, and systemd credentials (`LoadCredential=`) are mode 0400 anyway.
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tandem_config::{Provider, ReservedIpAgent, Secret, SecretError};

pub mod budget;
pub mod digitalocean;
pub mod fence;
pub mod hetzner;
mod http;
mod moves;
pub mod stats;
pub mod steady;
pub mod token;
pub mod vultr;

pub use digitalocean::DigitalOcean;
pub use fence::{FenceOutcome, FenceTarget, Fencer};
pub use hetzner::Hetzner;
pub use vultr::Vultr;

/// A provider's name for a server: DigitalOcean droplets and Hetzner servers are numbered,
/// Vultr instances have UUIDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerId {
    Numeric(u64),
    Text(String),
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerId::Numeric(n) => write!(f, "{n}"),
            ServerId::Text(s) => f.write_str(s),
        }
    }
}

/// Who holds the IP, as the provider says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The server the IP is assigned to, if any.
    pub server: Option<ServerId>,
    /// That server's name, where the provider gives it with the IP (DigitalOcean).
    pub server_name: Option<String>,
    /// The holder is this machine.
    pub ours: bool,
    /// An action on the IP is in progress (no new one can start until it ends).
    pub locked: bool,
}

/// What `assign` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignOutcome {
    /// The IP was ours already: nothing was posted.
    pub already_held: bool,
    /// The holder before the move.
    pub previous: Option<ServerId>,
    /// The provider's id of the action that moved it.
    pub action_id: Option<String>,
    pub elapsed: Duration,
    /// HTTP requests made (polls, retries and the metadata query included).
    pub api_calls: u64,
    /// Actions that ended `errored` before the one that moved the IP (each was retried).
    pub errored_actions: u32,
}

/// What `release` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseOutcome {
    /// The IP was not ours: nothing was posted.
    pub not_held: bool,
    pub action_id: Option<String>,
    pub elapsed: Duration,
}

/// Readiness: everything an assign needs, checked without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub server_id: ServerId,
    pub ip: IpAddr,
    /// The IP's region (location), as the provider names it.
    pub region: Option<String>,
    /// This server's region, when the provider reports it.
    pub server_region: Option<String>,
    pub holder: Holder,
}

/// Progress of a long call, for `ipctl assign`'s progress line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The current holder was read.
    Holder(Holder),
    /// Another action on the IP is running; waiting for it to end.
    WaitingForPendingAction,
    /// An action was accepted.
    Posted { action_id: String },
    /// The action is still running.
    Polling {
        action_id: String,
        elapsed: Duration,
    },
    /// A transient failure; retrying after `wait`.
    Retrying { reason: String, wait: Duration },
    /// Rate limited; waiting for the reset.
    RateLimited { wait: Duration },
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How often a running action is polled: `first`, then growing by `factor` up to `max`.
/// Short first intervals cut the latency added on top of the provider's own action time at
/// the cost of API calls (see the bench-assign numbers in the README of tests/).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSchedule {
    pub first: Duration,
    pub factor: f64,
    pub max: Duration,
}

/// The default: 20ms, x1.25, at most 250ms apart (see the measurements in
/// tests/examples/bench_assign.rs). Detection lag is a fraction of the current interval, so
/// it trades directly against calls: polling every 10ms notices completion within ~15ms but
/// spends ~100 calls a second, far past DigitalOcean's 250 requests a minute; this schedule
/// costs ~45 calls for a 10s action and notices completion at most 250ms late.
impl Default for PollSchedule {
    fn default() -> Self {
        PollSchedule {
            first: Duration::from_millis(20),
            factor: 1.25,
            max: Duration::from_millis(250),
        }
    }
}

impl PollSchedule {
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        let mut next = self.first;
        std::iter::from_fn(move || {
            let d = next;
            next = next.mul_f64(self.factor.max(1.0)).min(self.max);
            Some(d)
        })
    }
}

/// Knobs shared by every provider.
#[derive(Clone)]
pub struct Options {
    /// API base URL (the provider's own when `None`).
    pub api_url: Option<String>,
    /// Metadata service base URL (`http://169.254.169.254` when `None`).
    pub metadata_url: Option<String>,
    /// This machine's server id; asked from the metadata service when `None`.
    pub server_id: Option<ServerId>,
    /// Overall time limit of one holder/assign/release/probe call.
    pub deadline: Duration,
    /// Time limit of one HTTP request (a hung request is abandoned and retried).
    pub request_timeout: Duration,
    /// First and largest wait between retries of transient failures (jittered, doubling).
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub poll: PollSchedule,
    pub progress: Option<ProgressFn>,
    /// The file the token came from: read again when it changes ([`token`]).
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api_url: None,
            metadata_url: None,
            server_id: None,
            deadline: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
            poll: PollSchedule::default(),
            progress: None,
            token_file: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("api_url", &self.api_url)
            .field("metadata_url", &self.metadata_url)
            .field("server_id", &self.server_id)
            .field("deadline", &self.deadline)
            .field("request_timeout", &self.request_timeout)
            .field("poll", &self.poll)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

/// Everything that can go wrong. No variant ever holds the token.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "{provider}: the API token was rejected (401 unauthorized) on {what}; \
         check the token (nothing was changed)"
    )]
    Unauthorized {
        provider: &'static str,
        what: String,
    },
    #[error(
        "{provider}: the API token lacks the `{scope}` scope (403 forbidden on {what}); \
         grant it in the provider's console (nothing was changed)"
    )]
    Forbidden {
        provider: &'static str,
        scope: &'static str,
        what: String,
    },
    #[error(
        "{provider}: {what} does not exist (404 not found); fix its id in the configuration \
         (ip, droplet_ids, provider_id) or create it in the provider's console (nothing was changed)"
    )]
    NotFound {
        provider: &'static str,
        what: String,
    },
    #[error(
        "{provider}: {server} has no IPv6, so the reserved IPv6 {ip} cannot be assigned to it; \
         enable IPv6 on it (DigitalOcean: the droplet's Networking page) or take this IPv6 out \
         of the group (nothing was changed)"
    )]
    NoIpv6 {
        provider: &'static str,
        server: String,
        ip: IpAddr,
    },
    #[error("{provider}: {what} refused ({status} {code}): {message}")]
    Refused {
        provider: &'static str,
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "{provider}: action {action_id} ended with an error, the last of {attempts} errored \
         action(s) within the time budget; the holder did not change"
    )]
    ActionErrored {
        provider: &'static str,
        action_id: String,
        /// Errored actions posted within this one call.
        attempts: u32,
    },
    #[error(
        "{provider}: gave up on {what} after {:.1}s: {last}{}",
        .elapsed.as_secs_f64(),
        if *.state_may_have_changed { " (the IP may have moved: check the holder)" } else { "" }
    )]
    GaveUp {
        provider: &'static str,
        what: String,
        elapsed: Duration,
        last: String,
        state_may_have_changed: bool,
    },
    #[error(
        "{provider}: reserved IP {ip} was detached from {from} so that it could be attached \
         here, then the attach failed, so {ip} is now UNASSIGNED (nothing answers on it): \
         {cause}. The agent retries its start; until one succeeds, fix that cause or attach \
         the IP to a server by hand (`ipctl assign`, or the provider's console)"
    )]
    LeftUnassigned {
        provider: &'static str,
        ip: IpAddr,
        /// The server it was taken from, as the provider names it.
        from: String,
        cause: Box<ProviderError>,
    },
    #[error("{provider}: unexpected answer to {what} ({status}): {detail}")]
    Unexpected {
        provider: &'static str,
        what: String,
        status: u16,
        detail: String,
        state_may_have_changed: bool,
    },
    #[error("metadata service {url}: {reason}")]
    Metadata { url: String, reason: String },
    #[error("API token: {0}")]
    Token(#[from] SecretError),
    #[error("{0}")]
    Config(String),
}

impl ProviderError {
    /// Whether the IP may have moved even though the call failed.
    pub fn state_may_have_changed(&self) -> bool {
        match self {
            ProviderError::GaveUp {
                state_may_have_changed,
                ..
            }
            | ProviderError::Unexpected {
                state_may_have_changed,
                ..
            } => *state_may_have_changed,
            ProviderError::LeftUnassigned { .. } => true,
            _ => false,
        }
    }

    /// Retrying cannot help: the configuration or the token must change.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ProviderError::Unauthorized { .. }
                | ProviderError::Forbidden { .. }
                | ProviderError::NotFound { .. }
                | ProviderError::NoIpv6 { .. }
                | ProviderError::Token(_)
                | ProviderError::Config(_)
        )
    }
}

/// A reserved-IP provider for one IP, as seen from this machine.
pub trait ReservedIpProvider: Send + Sync + fmt::Debug {
    fn provider(&self) -> Provider;
    fn ip(&self) -> IpAddr;
    /// This machine's server id (from the configuration or the metadata service).
    fn server_id(&self) -> BoxFuture<'_, Result<ServerId, ProviderError>>;
    /// Who holds the IP now, as the provider says.
    fn holder(&self) -> BoxFuture<'_, Result<Holder, ProviderError>>;
    /// Moves the IP to this machine and waits until the provider says it is done.
    /// Idempotent: when the IP is ours already nothing is posted.
    fn assign(&self) -> BoxFuture<'_, Result<AssignOutcome, ProviderError>>;
    /// Unassigns the IP if this machine holds it.
    fn release(&self) -> BoxFuture<'_, Result<ReleaseOutcome, ProviderError>>;
    /// Token accepted, metadata answers, IP exists, regions known; changes nothing.
    fn probe(&self) -> BoxFuture<'_, Result<Readiness, ProviderError>>;
    /// How long a periodic read (monitor, readiness) should be postponed so that it leaves
    /// the token's budget to moves ([`budget`]); zero when it may go now.
    fn routine_wait(&self) -> Duration {
        Duration::ZERO
    }
}

/// Shortest token accepted; real tokens are far longer, this catches an empty-ish file.
const MIN_TOKEN_LEN: usize = 8;

/// Reads an API token file (relative names inside `$CREDENTIALS_DIRECTORY`), refusing files
/// that group or others can read.
pub fn load_token(path: &Path) -> Result<Secret, ProviderError> {
    let path = tandem_config::credential_path(path);
    Ok(tandem_config::read_secret_file(&path, true, MIN_TOKEN_LEN)?)
}

/// Builds the provider for one `reserved-ip` agent on node `node`.
///
/// The server id comes from `droplet_ids[node]`, else `droplet_id`, else the metadata service.
pub fn from_config(
    agent: &ReservedIpAgent,
    node: &str,
) -> Result<Box<dyn ReservedIpProvider>, ProviderError> {
    let token_file = tandem_config::credential_path(&agent.token_file);
    let token = load_token(&token_file)?;
    let id = agent
        .droplet_ids
        .get(node)
        .copied()
        .or(agent.droplet_id)
        .map(ServerId::Numeric);
    let opts = Options {
        api_url: agent.api_url.clone(),
        metadata_url: agent.metadata_url.clone(),
        server_id: id,
        deadline: agent.settings.timeout,
        token_file: Some(token_file),
        ..Options::default()
    };
    new(agent.provider, agent.ip, token, opts)
}

/// The client of `provider` for `ip`: the one place that maps a [`Provider`] to its module.
pub fn new(
    provider: Provider,
    ip: IpAddr,
    token: Secret,
    opts: Options,
) -> Result<Box<dyn ReservedIpProvider>, ProviderError> {
    Ok(match provider {
        Provider::DigitalOcean => Box::new(DigitalOcean::new(ip, token, opts)?),
        Provider::Hetzner => Box::new(Hetzner::new(ip, token, opts)?),
        Provider::Vultr => Box::new(Vultr::new(ip, token, opts)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_schedule_grows_to_its_cap() {
        let s = PollSchedule {
            first: Duration::from_millis(50),
            factor: 2.0,
            max: Duration::from_millis(300),
        };
        let d: Vec<u64> = s.delays().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(d, [50, 100, 200, 300, 300, 300]);
    }

    #[test]
    fn fatal_errors_say_nothing_changed() {
        let e = ProviderError::Forbidden {
            provider: "digitalocean",
            scope: "reserved_ip:update",
            what: "assign".into(),
        };
        assert!(e.is_fatal());
        assert!(!e.state_may_have_changed());
        assert!(e.to_string().contains("reserved_ip:update"), "{e}");
    }
}
