//! `ipctl check-config`: validate a cluster configuration and its key files, then print what
//! the cluster will do, or every error (file:line:column: key: what is wrong (what is valid)).
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tandem_config::{
    AgentConfig, ClusterConfig, ConfigError, ErrorKind, Failback, HealthProbe, Provider,
    QuorumPolicy, Role, credential_path, keys,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to check (default: --config).
    pub file: Option<PathBuf>,
    /// This node's name; a name missing from the node list is then an error (without it, the
    /// host name is tried and a miss is only a warning).
    #[arg(long)]
    pub node: Option<String>,
}

pub fn run(cli: &crate::Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let path = args.file.as_ref().unwrap_or(&cli.config);
    let config = match tandem_config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("error: {e}");
            }
            eprintln!(
                "{}: {} error(s); nothing was started",
                path.display(),
                errors.len()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let report = check(&config, args.node.as_deref());
    print!("{}", summary(&config, report.local.as_deref()));
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.errors.is_empty() {
        println!("{}: valid", path.display());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}: {} error(s)", path.display(), report.errors.len());
        Ok(ExitCode::FAILURE)
    }
}

struct Report {
    /// The local node's name, when it is in the node list.
    local: Option<String>,
    warnings: Vec<String>,
    errors: Vec<String>,
}

fn check(config: &ClusterConfig, node: Option<&str>) -> Report {
    let mut r = Report {
        local: None,
        warnings: Vec::new(),
        errors: Vec::new(),
    };
    match node {
        Some(name) => match config.local_node(name) {
            Ok(n) => r.local = Some(n.name.clone()),
            Err(e) => r.errors.extend(e.iter().map(ToString::to_string)),
        },
        None => {
            let host = tandem_config::default_node_name();
            match config.local_node(&host) {
                Ok(n) => r.local = Some(n.name.clone()),
                Err(e) => r.warnings.extend(e.iter().map(|e| {
                    format!("{e}; the daemons on this host will need --node (fine when checking a file for other hosts)")
                })),
            }
        }
    }
    if let Err(errors) = keys::load_keys(&config.auth) {
        for e in errors.iter() {
            key_problem(&mut r, e);
        }
    }
    for group in &config.resources {
        for agent in &group.agents {
            let AgentConfig::ReservedIp(ip) = agent else {
                continue;
            };
            let file = &ip.token_file;
            if file.is_relative() && std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
                // Resolved by systemd's LoadCredential= for the agent only: nothing to look at here.
                continue;
            }
            let resolved = credential_path(file);
            if std::fs::symlink_metadata(&resolved).is_err() {
                r.warnings.push(format!(
                    "{}: resources `{}`: token_file does not exist on this machine (it is read by \
                     tandem-resource-agent only, which will fail to assign the IP without it)",
                    resolved.display(),
                    group.name
                ));
            }
        }
    }
    r
}

/// A key file that is not there yet (or belongs to another user) is a warning: the config may
/// be checked before installation or by an operator. One that exists and is wrong is an error.
fn key_problem(r: &mut Report, e: &ConfigError) {
    match e.kind {
        ErrorKind::FileMissing => r.warnings.push(format!(
            "{e}; not installed on this machine yet? the membership daemon will refuse to start without it"
        )),
        ErrorKind::FileNoAccess => r.warnings.push(format!(
            "{e}; not checked (run as root or the key's owner to check its mode and length)"
        )),
        _ => r.errors.push(e.to_string()),
    }
}

fn d(d: Duration) -> String {
    tandem_config::format_duration(d)
}

/// A readable account of what the configuration makes the cluster do.
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
            let provider = match r.provider {
                Provider::DigitalOcean => "digitalocean",
                Provider::Hetzner => "hetzner",
                Provider::Vultr => "vultr",
            };
            let mut x = format!(
                "reserved-ip {} at {provider} (token {})",
                r.ip,
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
