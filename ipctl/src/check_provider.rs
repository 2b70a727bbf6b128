//! `ipctl check-config --node NAME`: asks the provider, with the agent's own token, whether this
//! node could take each reserved IP: the token is accepted and has the read scopes the moves
//! need (DigitalOcean: `reserved_ip:read`, `droplet:read`, and `actions:read` for an IPv6), the
//! reserved IP and this node's server exist, they are in one region, and a server given a
//! reserved IPv6 has IPv6. Nothing is changed at the provider (only reads), so a missing write
//! scope (`reserved_ip:update`) shows only at the first move. `--offline` skips this.
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_config::{AgentConfig, ClusterConfig, ReservedIpAgent, credential_path};
use tandem_resource_agent::provider::{self, ProviderError, Readiness};

use crate::unit::UnitFile;

/// Limit for the provider's answers per reserved IP (a check, not a failover).
const LIMIT: Duration = Duration::from_secs(15);

/// What the provider said about one reserved IP.
pub enum Finding {
    /// This node could take it: one line saying why.
    Ready(String),
    /// Configuration or token: the agent would fail the same way.
    Error(String),
    /// Not asked, or no answer: said, not counted as an error.
    Warning(String),
}

/// Asks the provider about every reserved IP of the configuration, for node `node`.
pub fn check(config: &ClusterConfig, node: &str, unit: Option<&UnitFile>) -> Vec<Finding> {
    let agents: Vec<(&str, &ReservedIpAgent)> = config
        .resources
        .iter()
        .flat_map(|g| {
            g.agents.iter().filter_map(move |a| match a {
                AgentConfig::ReservedIp(ip) => Some((g.name.as_str(), ip)),
                _ => None,
            })
        })
        .collect();
    if agents.is_empty() {
        return Vec::new();
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![Finding::Warning(format!("the provider was not asked: {e}"))],
    };
    agents
        .into_iter()
        .filter_map(|(group, agent)| {
            let who = format!("resources `{group}`: reserved-ip {}", agent.ip);
            rt.block_on(one(agent, node, unit, &who))
        })
        .collect()
}

/// The token file the agent would read: the file itself, or the source of the credential the
/// agent's unit loads under that name.
fn token_file(agent: &ReservedIpAgent, unit: Option<&UnitFile>) -> PathBuf {
    let direct = credential_path(&agent.token_file);
    if direct.is_absolute() || direct.exists() {
        return direct;
    }
    let id = agent.token_file.to_string_lossy();
    unit.and_then(|u| u.credentials().into_iter().find(|c| c.id == id))
        .and_then(|c| c.source)
        .unwrap_or(direct)
}

/// `None` when the token file is not on this machine: the token check says so already.
async fn one(
    agent: &ReservedIpAgent,
    node: &str,
    unit: Option<&UnitFile>,
    who: &str,
) -> Option<Finding> {
    let file = token_file(agent, unit);
    let mut agent = agent.clone();
    agent.token_file = file.clone();
    agent.settings.timeout = LIMIT;
    let p = match provider::from_config(&agent, node) {
        Ok(p) => p,
        Err(_) if !file.exists() => return None,
        Err(e) => return Some(not_asked(who, &file, &e)),
    };
    Some(match tokio::time::timeout(LIMIT, p.probe()).await {
        Err(_) => Finding::Warning(format!(
            "{who}: the provider did not answer within {LIMIT:?}; not checked"
        )),
        Ok(Ok(r)) => ready(who, agent.provider.server_noun(), &r),
        Ok(Err(e)) if e.is_fatal() => Finding::Error(format!("{who}: {e}")),
        Ok(Err(e)) => Finding::Warning(format!("{who}: the provider could not be asked: {e}")),
    })
}

/// The token could not be read here: not an answer about the provider.
fn not_asked(who: &str, file: &Path, e: &ProviderError) -> Finding {
    Finding::Warning(format!(
        "{who}: the provider was not asked ({e}); run as root to check with the token at {}",
        file.display()
    ))
}

fn ready(who: &str, noun: &str, r: &Readiness) -> Finding {
    match (&r.region, &r.server_region) {
        (Some(ip), Some(server)) if ip != server => Finding::Error(format!(
            "{who}: the IP is in region {ip}, this node's {noun} {} in {server}: a reserved IP \
             can only be assigned within its region; use a {noun} in {ip} or an IP in {server}",
            r.server_id
        )),
        _ => Finding::Ready(format!(
            "{who}: the provider answers: this node is {noun} {}{}, the IP is held by {}",
            r.server_id,
            r.server_region
                .as_ref()
                .map_or_else(String::new, |s| format!(" in {s}")),
            r.holder
                .server
                .as_ref()
                .map_or_else(|| "nobody".to_owned(), |s| format!("{noun} {s}"))
        )),
    }
}
