//! `ipctl check-config --node NAME`: asks the provider, with the agent's own token, whether this
//! node could take each reserved IP: the token is accepted and has the read scopes the moves
//! need (DigitalOcean: `reserved_ip:read`, `droplet:read`, and `actions:read` for an IPv6), the
//! reserved IP and this node's server exist, they are in one region, and a server given a
//! reserved IPv6 has IPv6. Nothing is changed at the provider (only reads), so a missing write
//! scope (`reserved_ip:update`) shows only at the first move, and the check says so: no
//! provider lists a token's scopes, and a write cannot be tried without moving something (see
//! docs/CONFIGURATION.md, "What check-config cannot check"). The `fencing:` token is checked
//! in `check_fencing.rs`. `--offline` skips all of this.
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_config::{AgentConfig, ClusterConfig, Provider, ReservedIpAgent, credential_path};
use tandem_resource_agent::provider::{self, ProviderError, Readiness};

use crate::unit::UnitFile;

/// Limit for the provider's answers per reserved IP or node (a check, not a failover).
pub(crate) const LIMIT: Duration = Duration::from_secs(15);

/// What the provider said about one reserved IP.
pub enum Finding {
    /// This node could take it: one line saying why.
    Ready(String),
    /// Configuration or token: the agent would fail the same way.
    Error(String),
    /// Not asked, or no answer: said, not counted as an error.
    Warning(String),
}

/// Asks the provider about every reserved IP of the configuration, for node `node`, and with
/// the fencing token about every node a fence could power off.
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
    if agents.is_empty() && config.fencing.is_none() {
        return Vec::new();
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![Finding::Warning(format!("the provider was not asked: {e}"))],
    };
    let mut findings: Vec<Finding> = agents
        .iter()
        .filter_map(|(group, agent)| {
            let who = format!("resources `{group}`: reserved-ip {}", agent.ip);
            rt.block_on(one(agent, node, unit, &who))
        })
        .collect();
    let asked = findings.iter().any(|f| matches!(f, Finding::Ready(_)));
    let mut providers: Vec<Provider> = Vec::new();
    for (_, a) in &agents {
        if !providers.contains(&a.provider) {
            providers.push(a.provider);
        }
    }
    if asked {
        findings.extend(
            providers
                .into_iter()
                .filter_map(|p| unchecked_write(p, "move the IPs")),
        );
    }
    findings.extend(crate::check_fencing::check(config, node, unit, &rt));
    findings
}

/// What the reads cannot show: whether the token may also write (move an IP, power a server
/// off). No provider lists a token's scopes, and trying a write changes something; the first
/// move or fence that lacks it fails with 403 naming the scope, changing nothing. `None` for
/// Vultr: its API keys have no scopes, and its access control list is by address, so the
/// reads just made from this address prove the writes are let through too.
pub(crate) fn unchecked_write(provider: Provider, to: &str) -> Option<Finding> {
    let scope = match provider {
        Provider::DigitalOcean if to.starts_with("power") => "droplet:update",
        Provider::DigitalOcean => "reserved_ip:update",
        Provider::Hetzner => "read & write",
        Provider::Vultr => return None,
    };
    Some(Finding::Ready(format!(
        "{}: not checked: whether the token may {to} (`{scope}`): {} lists no token's \
         scopes and a write cannot be tried without changing something; a token without it \
         fails the first time with 403 naming `{scope}`, nothing changed, and status shows it; \
         check the token's scopes where it was created",
        provider.name(),
        provider.name()
    )))
}

/// The token file the agent would read for `configured`: the file itself, or the source of
/// the credential the agent's unit loads under that name.
pub(crate) fn token_file(configured: &Path, unit: Option<&UnitFile>) -> PathBuf {
    let direct = credential_path(configured);
    if direct.is_absolute() || direct.exists() {
        return direct;
    }
    let id = configured.to_string_lossy();
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
    let file = token_file(&agent.token_file, unit);
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
        Ok(Ok(r)) => ready(who, agent.provider, &r),
        Ok(Err(e)) if e.is_fatal() => Finding::Error(format!("{who}: {e}")),
        Ok(Err(e)) => Finding::Warning(format!("{who}: the provider could not be asked: {e}")),
    })
}

/// The token could not be read here: not an answer about the provider.
pub(crate) fn not_asked(who: &str, file: &Path, e: &ProviderError) -> Finding {
    Finding::Warning(format!(
        "{who}: the provider was not asked ({e}); run as root to check with the token at {}",
        file.display()
    ))
}

/// What the provider's answer means for a failover to this node. DigitalOcean and Vultr assign
/// a reserved IP only within its region; Hetzner routes a floating IP anywhere, best in its home
/// location (its API reference: "Routing is optimized for this Location"), so a server elsewhere
/// is worth a warning, not an error.
fn ready(who: &str, provider: Provider, r: &Readiness) -> Finding {
    let noun = provider.server_noun();
    match (&r.region, &r.server_region) {
        (Some(ip), Some(server)) if ip != server && provider == Provider::Hetzner => {
            Finding::Warning(format!(
                "{who}: the floating IP's home location is {ip}, this node's server {} is in \
                 {server}: Hetzner assigns it there, but routes it best in {ip}; for the \
                 shortest path use a server in {ip} or a floating IP homed in {server}",
                r.server_id
            ))
        }
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
