//! `ipctl check-config`: validate a cluster configuration and its key files, then print what
//! the cluster will do, or every error (file:line:column: key: what is wrong (what is valid)).
//!
//! Beyond the file's own rules it checks what would fail on a machine at run time: key files,
//! the provider token (an absolute file, or the credential the installed unit loads), and the
//! scripts of `lsb` and `ocf` agents. With `--node` the file is checked for this machine and
//! such a problem is an error; without it, a warning (the file may be meant for other hosts).
//! With `--node` it also asks the provider about each reserved IP (`check_provider.rs`) and,
//! with the fencing token, about each member's server (`check_fencing.rs`) unless `--offline`
//! is given. The reserved IPs' steady request rate per token is checked against the
//! provider's limits (`check_budget.rs`).
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tandem_resource_agent::core::codec;

use tandem_config::{AgentConfig, ClusterConfig, ConfigError, ErrorKind, credential_path, keys};

use crate::check_provider::Finding;
use crate::unit::{self, AGENT_UNIT, MEMBERSHIP_UNIT, UnitFile};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to check (default: --config).
    #[arg(value_hint = clap::ValueHint::FilePath)]
    pub file: Option<PathBuf>,
    /// The cluster configuration, when FILE is not given.
    #[arg(
        long,
        value_name = "FILE",
        env = "TANDEM_CONFIG",
        default_value = tandem_config::DEFAULT_CONFIG,
        value_hint = clap::ValueHint::FilePath
    )]
    pub config: PathBuf,
    /// This node's name: the file is checked for this machine, and what would fail here at
    /// run time (a missing lsb script, a token the agent's unit does not load) is an error.
    /// Without it the host name is tried and such problems are warnings.
    #[arg(long, add = crate::complete::node_names())]
    pub node: Option<String>,
    /// With --node: do not ask the provider. Without it check-config reads each reserved IP's
    /// token (as root, from the agent's credential) and asks the provider, reading only,
    /// whether this node could take the IP: token and read scopes, the IP and this server
    /// exist, the provider's region rule, IPv6 on the server for a reserved IPv6. With
    /// `fencing:` it reads every member's server with the fencing token: the token, each
    /// provider_id or name, no two nodes on one server. Write scopes cannot be read; it says so.
    #[arg(long)]
    pub offline: bool,
}

pub fn run(config_flag: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let path = args.file.as_deref().unwrap_or(config_flag);
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
    let mut report = check(&config, args.node.as_deref());
    print!("{}", config.summary(report.local.as_deref()));
    if let Some(node) = report
        .local
        .clone()
        .filter(|_| report.here && !args.offline)
    {
        let unit = UnitFile::load(AGENT_UNIT);
        for f in crate::check_provider::check(&config, &node, unit.as_ref()) {
            match f {
                Finding::Ready(line) => println!("provider  {}", tandem_config::redact(&line)),
                Finding::Error(e) => report.errors.push(e),
                Finding::Warning(w) => report.warnings.push(w),
            }
        }
    }
    for w in &report.warnings {
        eprintln!("warning: {}", tandem_config::redact(w));
    }
    for e in &report.errors {
        eprintln!("error: {}", tandem_config::redact(e));
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
    /// `--node` was given: the file is checked for this machine.
    here: bool,
    warnings: Vec<String>,
    errors: Vec<String>,
}

impl Report {
    /// Something that would fail on this machine at run time: an error when checking for
    /// this machine (`--node`), else a warning saying it matters only where it runs.
    fn on_this_machine(&mut self, problem: String) {
        if self.here {
            self.errors.push(problem);
        } else {
            self.warnings.push(format!(
                "{problem} (an error with --node; fine if this file is for other hosts, where \
                 it must be right)"
            ));
        }
    }
}

fn check(config: &ClusterConfig, node: Option<&str>) -> Report {
    let mut r = Report {
        local: None,
        here: node.is_some(),
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
    let membership = UnitFile::load(MEMBERSHIP_UNIT);
    let agent_unit = UnitFile::load(AGENT_UNIT);
    for file in std::iter::once(&config.auth.key_file).chain(&config.auth.accept_key_files) {
        hidden(&mut r, membership.as_ref(), &credential_path(file));
    }
    for group in &config.resources {
        for agent in &group.agents {
            match agent {
                AgentConfig::ReservedIp(ip) => token(
                    &mut r,
                    agent_unit.as_ref(),
                    &format!("resources `{}`", group.name),
                    &ip.token_file,
                    "fail to assign the IP",
                ),
                AgentConfig::Lsb(l) => script(&mut r, &group.name, "lsb", &l.script_path()),
                AgentConfig::Ocf(o) => script(&mut r, &group.name, "ocf", &o.script_path()),
                AgentConfig::Exec(e) => {
                    let mut programs: Vec<&Path> =
                        [Some(&e.start), Some(&e.stop), e.monitor.as_ref()]
                            .into_iter()
                            .flatten()
                            .filter_map(|cmd| absolute_program(cmd))
                            .collect();
                    programs.dedup();
                    for program in programs {
                        script(&mut r, &group.name, "exec", program);
                    }
                }
            }
        }
    }
    r.warnings.extend(crate::check_budget::warnings(config));
    announcement(&mut r, config);
    if let Some(f) = &config.fencing {
        token(
            &mut r,
            agent_unit.as_ref(),
            "fencing",
            &f.token_file,
            "fail to power a dead peer off, and so take nothing over from one",
        );
    }
    r
}

/// The resource agent refuses to start when the announcement of its state could pass what
/// membership carries; the same computation, for this node or (not knowing it) every node.
fn announcement(r: &mut Report, config: &ClusterConfig) {
    let groups: Vec<&str> = config.resources.iter().map(|g| g.name.as_str()).collect();
    let worst = config
        .nodes
        .iter()
        .filter(|n| r.local.as_ref().is_none_or(|l| *l == n.name))
        .filter_map(|local| {
            let peers: Vec<&str> = config
                .nodes
                .iter()
                .filter(|n| n.name != local.name)
                .map(|n| n.name.as_str())
                .collect();
            codec::check_fits(&peers, &groups)
                .err()
                .map(|e| (local.name.clone(), e))
        })
        .max_by_key(|(_, e)| e.worst);
    if let Some((node, e)) = worst {
        r.errors.push(format!(
            "resources: tandem-resource-agent on {node} would refuse to start: {e}"
        ));
    }
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

/// The shipped units run with ProtectHome=yes and PrivateTmp=yes: a secret under those
/// directories exists for the operator but not for the daemon.
fn hidden(r: &mut Report, unit: Option<&UnitFile>, file: &Path) {
    if let Some((u, (dir, setting))) = unit.and_then(|u| Some((u, u.hides(file)?))) {
        r.on_this_machine(format!(
            "{}: under {dir}, which the daemon cannot see ({setting} in {}): keep it in \
             /etc/tandem",
            file.display(),
            u.file.display()
        ));
    }
}

/// The provider token: an absolute file, a file in `$CREDENTIALS_DIRECTORY` when that is set,
/// else a credential that the installed agent unit must load.
/// Checks the token file `owner` names (a group's reserved-ip agent, or fencing): without
/// it the agent would `without`.
fn token(r: &mut Report, unit: Option<&UnitFile>, owner: &str, file: &Path, without: &str) {
    if file.is_absolute() || std::env::var_os("CREDENTIALS_DIRECTORY").is_some() {
        let resolved = credential_path(file);
        hidden(r, unit, &resolved);
        if std::fs::symlink_metadata(&resolved).is_err() {
            r.warnings.push(format!(
                "{}: {owner}: token_file does not exist on this machine (it is read by \
                 tandem-resource-agent only, which will {without} without it)",
                resolved.display(),
            ));
        }
        return;
    }
    let name = file.display();
    let what = format!(
        "{owner}: token_file `{name}` is a credential name: tandem-resource-agent \
         reads $CREDENTIALS_DIRECTORY/{name}, which systemd fills from LoadCredential= in \
         {AGENT_UNIT}"
    );
    let Some(unit) = unit else {
        let dirs: Vec<String> = unit::unit_dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        r.warnings.push(format!(
            "{what}; that unit is not installed on this machine (looked in {}), so this is not \
             checked",
            dirs.join(", ")
        ));
        return;
    };
    let id = file.to_string_lossy();
    let credentials = unit.credentials();
    let Some(cred) = credentials.iter().find(|c| c.id == id) else {
        let loaded: Vec<&str> = credentials.iter().map(|c| c.id.as_str()).collect();
        r.on_this_machine(format!(
            "{what}; {} loads {}, so the agent would find no token: add \
             `LoadCredential={name}:/etc/tandem/{name}` (systemctl edit tandem-resource-agent) \
             or give token_file as an absolute path",
            unit.file.display(),
            if loaded.is_empty() {
                "no credential".to_owned()
            } else {
                format!("only {}", loaded.join(", "))
            }
        ));
        return;
    };
    let Some(source) = &cred.source else {
        return; // inline, or systemd's own credential store: nothing to look at here
    };
    match std::fs::metadata(source) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => r.warnings.push(format!(
            "{}: readable by group or others (mode {:04o}): the agent gets its own copy, but \
             the token should be private: chmod 600 {}",
            source.display(),
            m.permissions().mode() & 0o777,
            source.display()
        )),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => r.on_this_machine(format!(
            "{}: does not exist, and systemd refuses to start {AGENT_UNIT} without it ({} in {}): \
             write the token there with `install -m 0600 /dev/stdin {}`",
            source.display(),
            cred.line,
            unit.file.display(),
            source.display()
        )),
        Err(e) => r.warnings.push(format!(
            "{}: not checked ({e}); run as root to check the token the agent's unit loads",
            source.display()
        )),
    }
}

/// The program an exec command runs, when it names it by absolute path in plain words (a
/// command with shell syntax in its first word is left to the shell).
fn absolute_program(cmd: &str) -> Option<&Path> {
    let first = cmd.split_whitespace().next()?;
    (first.starts_with('/') && !first.contains(['$', '`', '\'', '"', '*', '?', ';', '|', '&']))
        .then(|| Path::new(first))
}

/// An `lsb`, `ocf` or `exec` agent's script must exist and be executable where the group runs.
fn script(r: &mut Report, group: &str, kind: &str, path: &Path) {
    let problem = match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => "is not a file",
        Ok(m) if m.permissions().mode() & 0o111 == 0 => "is not executable",
        Ok(_) => return,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist on this machine",
        Err(_) => "cannot be read on this machine",
    };
    r.on_this_machine(format!(
        "{}: resources `{group}`: the {kind} agent's {} {problem}; tandem-resource-agent \
         could not start the group here",
        path.display(),
        if kind == "exec" { "program" } else { "script" }
    ));
}
