//! ipctl: the operator's tool for a Tandem cluster.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod assign;
mod check_config;
mod control;
mod demo;
mod import_heartbeat;
mod keygen;
mod man;
mod render;
mod status;
mod unit;
mod watch;

#[derive(Debug, Parser)]
#[command(
    name = "ipctl",
    version,
    about = "Operate a Tandem high-availability cluster"
)]
pub struct Cli {
    /// Cluster configuration file.
    #[arg(long, global = true, env = "TANDEM_CONFIG", default_value = tandem_config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Directory holding the daemons' sockets (membership.sock, agent.sock).
    #[arg(long, global = true, env = "TANDEM_RUN_DIR", default_value = tandem_config::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
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
    /// Show nodes, links, quorum and resource groups from both daemons.
    Status(status::Args),
    /// Follow membership events live.
    Watch(watch::Args),
    /// Put a node in standby: it hands over what it holds and takes nothing new.
    Standby(control::NodeArgs),
    /// Put a node back to its configured role: out of standby, failures forgiven, pins cleared.
    Online(control::NodeArgs),
    /// Move a resource group to this node now and pin it here (the holder releases it first).
    Takeover(control::GroupArgs),
    /// Move a resource group once from this node to the next candidate (no ban: this node
    /// still takes it over should that one fail).
    Release(control::GroupArgs),
    /// Write ipctl's man pages (ipctl.1 and one per subcommand) into a directory.
    Man(man::ManArgs),
    /// Print a shell completion script for ipctl.
    Completions(man::CompletionArgs),
    /// Run the tutorial's failover on this machine (emulator + two nodes) and measure it.
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig(ref args) => check_config::run(&cli.config, args),
        Command::Keygen(ref args) => keygen::run(args),
        Command::ImportHeartbeat(ref args) => import_heartbeat::run(args),
        Command::Assign(ref args) => assign::run(&cli, args),
        Command::Status(ref args) => status::run(&cli, args),
        Command::Watch(ref args) => watch::run(&cli, args),
        Command::Standby(ref a) => control::run(&cli, &control::Change::Standby(a.node.as_deref())),
        Command::Online(ref a) => control::run(&cli, &control::Change::Online(a.node.as_deref())),
        Command::Takeover(ref a) => control::run(&cli, &control::Change::Takeover(&a.group)),
        Command::Release(ref a) => control::run(&cli, &control::Change::Release(&a.group)),
        Command::Man(ref args) => man::man(args),
        Command::Completions(ref args) => man::completions(args),
        Command::Demo(ref args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ipctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
