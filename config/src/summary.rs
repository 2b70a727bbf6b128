//! A readable account of what a configuration makes the cluster do: printed by
//! `ipctl check-config` and by the daemons' `--check`.
use std::fmt::Write as _;
use std::time::Duration;

use crate::types::*;

fn d(d: Duration) -> String {
    crate::format_duration(d)
}

impl ClusterConfig {
    /// What this configuration makes the cluster do, for people: nodes with addresses and
    /// roles (`local` marked as this node), quorum policy and why, timing, health checks, and
    /// each group's agents in start order. Ends with a newline.
    pub fn summary(&self, local: Option<&str>) -> String {
        crate::secret::redact(&summary(self, local)).into_owned()
    }
}

fn summary(c: &ClusterConfig, local: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "cluster  {}", c.cluster);
    let _ = writeln!(s, "key      {}", keys_line(c));
    let _ = writeln!(s, "nodes    {} voter(s)", c.voters());
    let width = c.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
    for n in &c.nodes {
        let role = match n.role {
            Role::Member => "member ",
            Role::Witness => "witness",
        };
        let addrs: Vec<String> = n.addresses.iter().map(ToString::to_string).collect();
        let me = if local == Some(n.name.as_str()) {
            "  (this node)"
        } else {
            ""
        };
        let _ = writeln!(s, "  {:width$}  {role}  {}{me}", n.name, addrs.join(", "));
    }
    let quorum = match c.quorum {
        QuorumPolicy::TwoNode => {
            "two_node: both nodes always count as quorate; health checks decide \
                                  who may hold resources (chosen explicitly for two voters)"
                .to_owned()
        }
        QuorumPolicy::Majority => format!(
            "majority: a node needs {} of {} voters to keep its resources, so a cut-off minority \
             releases them (no split brain)",
            c.voters() / 2 + 1,
            c.voters()
        ),
    };
    let _ = writeln!(s, "quorum   {quorum}");
    let t = &c.timing;
    let beats = t.dead_after.as_micros() / t.interval.as_micros().max(1);
    let _ = writeln!(
        s,
        "timing   heartbeat every {}, late after {}, dead after {} ({beats} beats), never-heard peers dead after {}",
        d(t.interval),
        d(t.warn_after),
        d(t.dead_after),
        d(t.init_dead)
    );
    if c.health.is_empty() {
        let _ = writeln!(s, "health   none (this node is always healthy)");
    } else {
        let _ = writeln!(s, "health");
        for h in &c.health {
            let probe = match &h.probe {
                HealthProbe::Tcp(a) => format!("tcp {a}"),
                HealthProbe::Http { url, expect } => format!("http {url} expecting {expect}"),
                HealthProbe::Exec(cmd) => format!("exec {cmd}"),
            };
            let _ = writeln!(
                s,
                "  {probe}: every {}, timeout {}, unhealthy after {} failure(s), healthy after {} success(es)",
                d(h.interval),
                d(h.timeout),
                h.fall,
                h.rise
            );
        }
    }
    if let Some(f) = &c.fencing {
        let _ = writeln!(s, "fencing  {}", fencing_line(c, f));
    }
    if c.resources.is_empty() {
        let _ = writeln!(s, "resources none");
    }
    for g in &c.resources {
        let prefer = g
            .prefer
            .as_deref()
            .map_or("no preferred node".to_owned(), |p| format!("prefers {p}"));
        let failback = match g.failback {
            Failback::Auto => "failback auto",
            Failback::Manual => "failback manual",
        };
        let _ = writeln!(
            s,
            "resource {}: {prefer}, {failback}; started in this order, stopped in reverse:",
            g.name
        );
        for (i, a) in g.agents.iter().enumerate() {
            let _ = writeln!(s, "  {}. {}", i + 1, agent_line(a));
        }
    }
    s
}

fn fencing_line(c: &ClusterConfig, f: &Fencing) -> String {
    let noun = f.provider.server_noun();
    let ids: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| n.role == Role::Member)
        .map(|n| match &n.provider_id {
            Some(id) => format!("{} = {noun} {id}", n.name),
            None => format!("{} = the {noun} named {}", n.name, n.name),
        })
        .collect();
    let mut line = format!(
        "{}: a peer declared dead is powered off before its groups are taken over (token {}",
        f.provider,
        f.token_file.display()
    );
    if let Some(u) = &f.api_url {
        let _ = write!(line, ", api {u}");
    }
    let _ = write!(
        line,
        "); the non-preferred side waits {} first; each call at most {}; {}",
        d(f.delay),
        d(f.timeout),
        ids.join(", ")
    );
    line
}

fn keys_line(c: &ClusterConfig) -> String {
    let mut line = c.auth.key_file.display().to_string();
    if !c.auth.accept_key_files.is_empty() {
        let more: Vec<String> = c
            .auth
            .accept_key_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let _ = write!(line, " (also accepted: {})", more.join(", "));
    }
    line
}

fn agent_line(a: &AgentConfig) -> String {
    let (desc, settings) = match a {
        AgentConfig::ReservedIp(r) => {
            let mut x = format!(
                "reserved-ip {} at {} (token {})",
                r.ip,
                r.provider,
                r.token_file.display()
            );
            if let Some(u) = &r.api_url {
                let _ = write!(x, ", api {u}");
            }
            if let Some(id) = r.droplet_id {
                let _ = write!(x, ", droplet {id}");
            }
            if !r.droplet_ids.is_empty() {
                let ids: Vec<String> = r
                    .droplet_ids
                    .iter()
                    .map(|(n, id)| format!("{n}={id}"))
                    .collect();
                let _ = write!(x, ", droplets {}", ids.join(" "));
            }
            if r.unassign_on_stop {
                x.push_str(", unassigned on stop");
            }
            (x, r.settings)
        }
        AgentConfig::Lsb(l) => (format!("lsb {}", l.script), l.settings),
        AgentConfig::Ocf(o) => {
            let params: Vec<String> = o.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (
                format!("ocf {}:{} {}", o.provider, o.kind, params.join(" "))
                    .trim_end()
                    .to_owned(),
                o.settings,
            )
        }
        AgentConfig::Exec(e) => (
            format!(
                "exec start `{}`, stop `{}`{}",
                e.start,
                e.stop,
                e.monitor
                    .as_ref()
                    .map_or(String::new(), |m| format!(", monitor `{m}`"))
            ),
            e.settings,
        ),
    };
    format!(
        "{desc} [timeout {}, monitor every {}]",
        d(settings.timeout),
        d(settings.monitor_interval)
    )
}
