//! The agents a resource group is made of, behind one trait: `lsb`, `ocf`, `exec` and
//! `reserved-ip`. Every action has a time limit; [`group::GroupRunner`] starts a group's
//! agents in order and stops them in reverse.
use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use tandem_config::ActionSettings;

pub mod exec;
pub mod group;
pub mod lsb;
pub mod ocf;
pub mod process;
pub mod reserved_ip;

pub use group::GroupRunner;

/// What kind of agent (mirrors `tandem.agent.v1.AgentKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ReservedIp,
    Lsb,
    Ocf,
    Exec,
}

/// The actions an agent performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Monitor,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Monitor => "monitor",
        })
    }
}

/// What a monitor found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// Running, and the agent says where: a reserved IP held by this server reads "held
    /// by droplet 3164444 (primary)". The detail status shows for the agent.
    RunningAs {
        detail: String,
    },
    /// Not running; `detail` says more when the agent did (e.g. "stale pid file").
    Stopped {
        detail: Option<String>,
    },
    /// The agent cannot tell (an `exec` agent without a monitor command).
    Unknown,
    /// Not running here because it runs on another server (a reserved IP assigned to
    /// another droplet). Not a local failure: the resource was lost to `holder`, and
    /// starting it here again would take it away from there (DESIGN.md: only a release or
    /// that node's death brings it back). `holder` names it as the provider does, e.g.
    /// "droplet 3164445 (secondary)".
    HeldElsewhere {
        holder: String,
    },
}

/// Why an action failed. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("{action} timed out after {after:?}{}", suffix(.detail))]
    Timeout {
        action: Action,
        after: Duration,
        detail: String,
    },
    #[error("{action} failed: {reason}{}", suffix(.detail))]
    Failed {
        action: Action,
        reason: String,
        detail: String,
    },
    /// The agent is missing or misconfigured: retrying will not help.
    #[error("{action} cannot run: {reason}")]
    Unusable { action: Action, reason: String },
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl AgentError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, AgentError::Timeout { .. })
    }

    fn from_run(action: Action, e: process::RunError) -> Self {
        match e {
            process::RunError::Timeout { after, output } => AgentError::Timeout {
                action,
                after,
                detail: output,
            },
            e @ process::RunError::Spawn { .. } => AgentError::Unusable {
                action,
                reason: e.to_string(),
            },
        }
    }
}

/// One agent of a resource group.
pub trait Agent: Send + Sync + fmt::Debug {
    /// Display name, e.g. "lsb nginx", "ocf heartbeat:Dummy", "reserved-ip 45.55.96.8".
    fn name(&self) -> String;
    fn kind(&self) -> Kind;
    /// Time limit of one action, and the monitor period.
    fn settings(&self) -> &ActionSettings;
    /// The provider call behind `action`, e.g. "digitalocean assign", for the agent's
    /// events; `None` (the default) for an action that calls no provider.
    fn provider_call(&self, _action: Action) -> Option<String> {
        None
    }
    /// Starts the resource; succeeds when it is already running.
    fn start(&self) -> BoxFuture<'_, Result<(), AgentError>>;
    /// Stops the resource; succeeds when it is already stopped.
    fn stop(&self) -> BoxFuture<'_, Result<(), AgentError>>;
    /// Is the resource running here? Also used to probe the real state at startup.
    fn monitor(&self) -> BoxFuture<'_, Result<RunState, AgentError>>;
    /// Could this node start the agent now? `None`: the agent cannot tell beforehand;
    /// otherwise the problems found (empty = ready). Changes nothing.
    fn readiness(&self) -> BoxFuture<'_, Option<Vec<String>>> {
        Box::pin(async { None })
    }
    /// How long its next periodic monitor or readiness check should be postponed to stay
    /// within a shared request budget (a reserved IP's API token); zero (the default): none.
    fn budget_wait(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Builds the agents of one resource group from the configuration.
pub fn from_config(
    group: &tandem_config::ResourceGroup,
    node: &str,
) -> Result<Vec<Box<dyn Agent>>, crate::provider::ProviderError> {
    from_config_with(group, node, &|p| p)
}

/// A provider wrapper, e.g. the daemon's metrics around every provider call.
pub type WrapProvider<'a> = dyn Fn(Box<dyn crate::provider::ReservedIpProvider>) -> Box<dyn crate::provider::ReservedIpProvider>
    + 'a;

/// [`from_config`], passing each reserved-ip provider through `wrap`.
pub fn from_config_with(
    group: &tandem_config::ResourceGroup,
    node: &str,
    wrap: &WrapProvider<'_>,
) -> Result<Vec<Box<dyn Agent>>, crate::provider::ProviderError> {
    use tandem_config::AgentConfig;
    group
        .agents
        .iter()
        .enumerate()
        .map(
            |(i, a)| -> Result<Box<dyn Agent>, crate::provider::ProviderError> {
                Ok(match a {
                    AgentConfig::Lsb(c) => Box::new(lsb::Lsb::new(c)),
                    AgentConfig::Ocf(c) => {
                        Box::new(ocf::Ocf::new(c, &format!("{}-{}", group.name, i)))
                    }
                    AgentConfig::Exec(c) => Box::new(exec::Exec::new(c)),
                    AgentConfig::ReservedIp(c) => {
                        let provider = wrap(crate::provider::from_config(c, node)?);
                        Box::new(reserved_ip::ReservedIp::new(
                            provider,
                            c.unassign_on_stop,
                            c.settings,
                        ))
                    }
                })
            },
        )
        .collect()
}
