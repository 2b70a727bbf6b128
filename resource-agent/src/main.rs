//! tandem-resource-agent: decides where each resource group runs and runs its agents.
#![forbid(unsafe_code)]
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{CommandFactory, Parser};
use tandem_resource_agent::core::Timers;
use tandem_resource_agent::core::restart::RestartPolicy;
use tandem_resource_agent::daemon::{self, Options};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Tandem resource agent: placement, handover and the agents it runs"
)]
struct Args {
    /// The cluster configuration.
    #[arg(long, default_value = tandem_config::DEFAULT_CONFIG, env = "TANDEM_CONFIG")]
    config: PathBuf,
    /// This node's name (default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// Directory of the Unix sockets (membership.sock is read, agent.sock served).
    #[arg(long, default_value = tandem_config::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// Directory of persistent state (incarnation counter, standby flag).
    #[arg(long, default_value = tandem_config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Check the configuration and the agents' files (token files included), then exit.
    #[arg(long)]
    check: bool,
    /// Write the man page (tandem-resource-agent.8) into DIR and exit; used when packaging.
    #[arg(long, value_name = "DIR", hide = true)]
    generate_man: Option<PathBuf>,
}

const PROGRAM: &str = "tandem-resource-agent";

fn main() -> std::process::ExitCode {
    tandem_daemon_kit::report::exit(PROGRAM, real_main(Args::parse()))
}

fn real_main(args: Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.generate_man {
        tandem_daemon_kit::cli::write_man(Args::command(), dir)?;
        return Ok(());
    }
    tandem_daemon_kit::log::init(PROGRAM);
    let config = tandem_config::load(&args.config).map_err(|e| anyhow!("{e}"))?;
    let node = args.node.unwrap_or_else(tandem_config::default_node_name);
    config.local_node(&node).map_err(|e| anyhow!("{e}"))?;
    if args.check {
        daemon::build_runners(&config, &node)?;
        daemon::build_fencer(&config).context("checking fencing")?;
        println!("{}", config.summary(Some(&node)));
        println!("agents: ok");
        return Ok(());
    }
    let runtime = tandem_daemon_kit::cli::runtime().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Registered before anything else so a SIGTERM during start-up is a clean stop too.
        let shutdown = tandem_daemon_kit::signals::shutdown().context("cannot handle signals")?;
        let opts = Options {
            config,
            node,
            run_dir: args.run_dir,
            state_dir: args.state_dir,
            timers: Timers::default(),
            restart: RestartPolicy::default(),
        };
        daemon::run(opts, shutdown).await?;
        Ok(())
    })
}
