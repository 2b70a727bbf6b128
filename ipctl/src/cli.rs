//! ipctl's command line: each command shows and takes only the options it uses.
//!
//! `--config` and `--run-dir` belong to the commands that read them (check-config; the
//! commands that ask the daemons). They may also be given before the command, as earlier
//! versions had them (`ipctl --run-dir DIR status`); given there to a command that does not
//! use them, they are refused rather than silently ignored.
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueHint};

use crate::{assign, check_config, control, demo, import_heartbeat, keygen, man, status, watch};

#[derive(Debug, Parser)]
#[command(
    name = "ipctl",
    version,
    about = "Operate a Tandem high-availability cluster"
)]
pub struct Top {
    /// The cluster configuration, for `check-config` (also accepted after it).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// The daemons' socket directory, for the commands that ask the daemons (also accepted
    /// after the command).
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub run_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// A command that asks the daemons through their sockets.
#[derive(Debug, clap::Args)]
pub struct Daemons<T: clap::Args> {
    #[command(flatten)]
    pub args: T,
    /// Directory holding the daemons' sockets (membership.sock, agent.sock).
    #[arg(
        long,
        value_name = "DIR",
        env = "TANDEM_RUN_DIR",
        default_value = tandem_config::DEFAULT_RUN_DIR,
        value_hint = ValueHint::DirPath
    )]
    pub run_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a cluster configuration and print a summary, or every error.
    CheckConfig(check_config::Args),
    /// Generate a new random cluster key (mode 0600).
    Keygen(keygen::Args),
    /// Translate a Linux-HA Heartbeat /etc/ha.d into a Tandem cluster.yaml.
    ImportHeartbeat(import_heartbeat::Args),
    /// Move a reserved IP to a droplet now (the drop-in for DigitalOcean's assign-ip).
    Assign(assign::Args),
    /// Show nodes, links, quorum, resource groups and the cluster's notices (fences by any
    /// node) from both daemons.
    Status(Daemons<status::Args>),
    /// Follow both daemons' events live, the cluster's notices (fences by any node) included.
    Watch(Daemons<watch::Args>),
    /// Put a node in standby: it hands over what it holds and takes nothing new.
    Standby(Daemons<control::NodeArgs>),
    /// Put a node back to its configured role: out of standby, failures forgiven, pins cleared.
    Online(Daemons<control::NodeArgs>),
    /// Move a resource group to this node now and pin it here (the holder releases it first).
    Takeover(Daemons<control::GroupArgs>),
    /// Move a resource group once from this node to the next candidate (no ban: this node
    /// still takes it over should that one fail).
    Release(Daemons<control::GroupArgs>),
    /// Write ipctl's man pages (ipctl.1 and one per command) into a directory.
    Man(man::ManArgs),
    /// Print a shell completion script for ipctl (it completes group and node names too).
    Completions(man::CompletionArgs),
    /// Run the tutorial's failover on this machine (emulator + two nodes) and measure it.
    Demo(demo::Args),
}

/// The clap definition, as `ipctl man`, the completions and the parser see it.
pub fn command() -> clap::Command {
    Top::command()
}

/// Parses the command line (exits with status 2 on a mistake, as clap does).
pub fn parse() -> (crate::Cli, Command) {
    let matches = command().get_matches();
    resolve(&matches).unwrap_or_else(|e| e.exit())
}

fn resolve(matches: &ArgMatches) -> Result<(crate::Cli, Command), clap::Error> {
    let top = Top::from_arg_matches(matches)?;
    let (name, sub) = matches.subcommand().expect("a command is required");
    let path = |id: &str, before: Option<PathBuf>| -> Result<Option<PathBuf>, clap::Error> {
        let takes = sub.try_get_raw(id).is_ok_and(|v| v.is_some());
        match before {
            Some(_) if !takes => Err(command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "`ipctl {name}` does not use --{}; {}",
                    id.replace('_', "-"),
                    users(id)
                ),
            )),
            // after the command wins over before it, which wins over the environment
            Some(p) if sub.value_source(id) != Some(ValueSource::CommandLine) => Ok(Some(p)),
            _ if takes => Ok(sub.get_one::<PathBuf>(id).cloned()),
            _ => Ok(None),
        }
    };
    let config = path("config", top.config)?;
    let run_dir = path("run_dir", top.run_dir)?;
    let cli = crate::Cli {
        config: config.unwrap_or_else(|| tandem_config::DEFAULT_CONFIG.into()),
        run_dir: run_dir.unwrap_or_else(|| tandem_config::DEFAULT_RUN_DIR.into()),
    };
    Ok((cli, top.command))
}

/// Which commands take the option `id`, for the message refusing it elsewhere.
fn users(id: &str) -> String {
    let names: Vec<String> = command()
        .get_subcommands()
        .filter(|s| s.get_arguments().any(|a| a.get_id() == id))
        .map(|s| s.get_name().to_owned())
        .collect();
    match id {
        "config" => format!(
            "only {} reads the configuration (the daemons answer from the one they loaded)",
            names.join(", ")
        ),
        _ => format!("it is used by {}", names.join(", ")),
    }
}

/// A duration on the command line: `90s`, `1m30s`, `500ms` (humantime's syntax), or a plain
/// number of seconds as earlier versions took.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is too long"))?
        }
        Ok(_) => return Err(format!("{s:?} is not a duration")),
        Err(_) => humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration such as 30s, 2m or 1m30s ({e})"))?,
    };
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(duration("0s").is_err());
        assert!(duration("-1").is_err());
        assert!(duration("soon").unwrap_err().contains("30s, 2m"));
    }
}
