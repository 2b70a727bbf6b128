//! `ipctl check-config`: validate a cluster configuration and its key files, then print what
//! the cluster will do, or every error (file:line:column: key: what is wrong (what is valid)).
use std::path::PathBuf;
use std::process::ExitCode;

use tandem_config::{AgentConfig, ClusterConfig, ConfigError, ErrorKind, credential_path, keys};

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
    print!("{}", config.summary(report.local.as_deref()));
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
