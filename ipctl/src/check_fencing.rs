//! `ipctl check-config --node NAME`, the `fencing:` part: asks the provider, reading only, with
//! the fencing token (the file, or the credential the agent's unit loads under that name)
//! about every node a fence could power off, this one included (its peers fence it):
//!
//! - the token is accepted and may read servers (DigitalOcean `droplet:read`);
//! - each node's `provider_id` exists, or, when absent, exactly one server carries its name;
//! - no two nodes are the same server: a fence of one would power the other off (this node's
//!   own server given to a peer by mistake is the case that matters most);
//! - a node's server agrees with the `droplet_ids` its reserved-ip agents give it, else a
//!   failover would fence one server and move the IP to another;
//! - a peer that is off now is said (a warning).
//!
//! Whether the token may power a server off (`droplet:update`) cannot be read, and is said
//! (see `check_provider::unchecked_write`).
use std::collections::BTreeMap;

use tandem_config::{AgentConfig, ClusterConfig, Fencing, Role};
use tandem_resource_agent::provider::{FenceTarget, Fencer, ProviderError, load_token};

use crate::check_provider::{Finding, LIMIT, not_asked, token_file, unchecked_write};
use crate::unit::UnitFile;

/// Checks the `fencing:` section, if any, for node `node`.
pub fn check(
    config: &ClusterConfig,
    node: &str,
    unit: Option<&UnitFile>,
    rt: &tokio::runtime::Runtime,
) -> Vec<Finding> {
    let Some(f) = &config.fencing else {
        return Vec::new();
    };
    let file = token_file(&f.token_file, unit);
    let fencer = match load_token(&file)
        .and_then(|t| Fencer::new(f.provider, &t, f.api_url.clone(), LIMIT, Some(file.clone())))
    {
        Ok(fencer) => fencer,
        // The token check of check-config says so already.
        Err(_) if !file.exists() => return Vec::new(),
        Err(e) => return vec![not_asked("fencing", &file, &e)],
    };
    let members: Vec<_> = config
        .nodes
        .iter()
        .filter(|n| n.role == Role::Member)
        .collect();
    let mut findings = Vec::new();
    let mut found: Vec<(&str, FenceTarget)> = Vec::new();
    for n in members {
        // The timer is made inside the runtime: outside it, tokio has no clock to give.
        let asked = rt.block_on(async {
            tokio::time::timeout(LIMIT, fencer.inspect(&n.name, n.provider_id.as_deref())).await
        });
        match asked {
            Ok(Ok(t)) => found.push((n.name.as_str(), t)),
            Ok(Err(e)) => findings.push(refused(&n.name, node, &e)),
            Err(_) => findings.push(Finding::Warning(format!(
                "fencing: node {}: the provider did not answer within {LIMIT:?}; not checked",
                n.name
            ))),
        }
    }
    findings.extend(judge(config, f, node, &found));
    if !found.is_empty() {
        findings.extend(unchecked_write(f.provider, "power a peer off"));
    }
    findings
}

/// A node the provider could not show: the agent's fence would fail the same way.
fn refused(name: &str, node: &str, e: &ProviderError) -> Finding {
    let who = if name == node {
        format!("fencing: node {name} (this node, which its peers fence)")
    } else {
        format!("fencing: node {name}")
    };
    if e.is_fatal() {
        Finding::Error(format!("{who}: {e}"))
    } else {
        Finding::Warning(format!("{who}: the provider could not be asked: {e}"))
    }
}

/// What the servers found mean: one line per node, and an error for each server two nodes
/// share and each disagreement with a reserved-ip agent's `droplet_ids`.
fn judge(
    config: &ClusterConfig,
    f: &Fencing,
    node: &str,
    found: &[(&str, FenceTarget)],
) -> Vec<Finding> {
    let noun = f.provider.server_noun();
    let mut out = Vec::new();
    let mut by_server: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, t) in found {
        by_server.entry(t.server.as_str()).or_default().push(name);
        let how = if t.by_name {
            "found by name"
        } else {
            "provider_id"
        };
        let named = t
            .name
            .as_deref()
            .map_or_else(String::new, |n| format!(", named {n}"));
        if *name == node {
            out.push(Finding::Ready(format!(
                "fencing: this node ({name}) is {noun} {} ({how}{named}): the one its peers \
                 power off when they declare it dead",
                t.server
            )));
        } else if t.off {
            out.push(Finding::Warning(format!(
                "fencing: node {name} is {noun} {} ({how}{named}), which is off now: a fence \
                 would find it off and post nothing; power it on if it should be running",
                t.server
            )));
        } else {
            out.push(Finding::Ready(format!(
                "fencing: node {name} is {noun} {} ({how}{named}, running): the fencing token \
                 can read it",
                t.server
            )));
        }
    }
    for (server, names) in by_server.iter().filter(|(_, n)| n.len() > 1) {
        let what = match names.iter().find(|n| **n == node) {
            Some(me) => {
                let peers: Vec<&str> = names.iter().copied().filter(|n| n != me).collect();
                format!(
                    "fencing: node {} is {noun} {server}, this node's ({me}) own: a fence of \
                     it would power this node off",
                    peers.join(" and ")
                )
            }
            None => format!(
                "fencing: nodes {} are all {noun} {server}: a fence of one would power the \
                 others off",
                names.join(", ")
            ),
        };
        out.push(Finding::Error(format!(
            "{what}; give each node its own {noun} in nodes[].provider_id"
        )));
    }
    out.extend(disagreements(config, f, found));
    out
}

/// A node whose reserved-ip agents name another server than the fencing token finds: a failover
/// to or from it would move the IP to one server and power another off.
fn disagreements(
    config: &ClusterConfig,
    f: &Fencing,
    found: &[(&str, FenceTarget)],
) -> Vec<Finding> {
    let noun = f.provider.server_noun();
    let mut out = Vec::new();
    let mut said = Vec::new();
    for g in &config.resources {
        for a in &g.agents {
            let AgentConfig::ReservedIp(ip) = a else {
                continue;
            };
            if ip.provider != f.provider {
                continue;
            }
            for (name, t) in found {
                let Some(id) = ip.droplet_ids.get(*name) else {
                    continue;
                };
                // Said once per node and id, not once per IP of a dual-stack group.
                if id.to_string() == t.server || said.contains(&(*name, *id)) {
                    continue;
                }
                said.push((*name, *id));
                out.push(Finding::Error(format!(
                    "fencing: node {name} is {noun} {} to the fencing token, but resources \
                     `{}` reserved-ip {} gives droplet_ids: {{ {name}: {id} }}: a failover \
                     would move the IP to one {noun} and power another off; make \
                     nodes[].provider_id and droplet_ids name the same {noun}",
                    t.server, g.name, ip.ip
                )));
            }
        }
    }
    out
}
