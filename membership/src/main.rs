//! `tandem-membership`: the heartbeat, failure detection, quorum and messaging daemon.
#![forbid(unsafe_code)]
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{CommandFactory, Parser};
use tandem_membership::daemon;

/// Tandem membership daemon: authenticated UDP heartbeats between the cluster's nodes, failure
/// detection, quorum and cluster messages, published on a local gRPC socket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Cluster configuration file.
    #[arg(long, default_value = tandem_config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// This node's name in the configuration (default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// Directory of the gRPC socket (membership.sock).
    #[arg(long, default_value = tandem_config::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// Directory of persistent state (the generation counter).
    #[arg(long, default_value = tandem_config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Validate the configuration and the key files, print a summary and exit.
    #[arg(long)]
    check: bool,
    /// Write the man page (tandem-membership.8) into DIR and exit; used when packaging.
    #[arg(long, value_name = "DIR", hide = true)]
    generate_man: Option<PathBuf>,
}

const PROGRAM: &str = "tandem-membership";

fn main() -> std::process::ExitCode {
    tandem_daemon_kit::report::exit(PROGRAM, real_main(Args::parse()))
}

fn real_main(args: Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.generate_man {
        tandem_daemon_kit::cli::write_man(Args::command(), dir)?;
        return Ok(());
    }
    tandem_daemon_kit::log::init(PROGRAM);
    let cfg = tandem_config::load(&args.config).map_err(|e| anyhow!("{e}"))?;
    let node = args.node.unwrap_or_else(tandem_config::default_node_name);
    cfg.local_node(&node).map_err(|e| anyhow!("{e}"))?;
    let keys = tandem_config::keys::load_keys(&cfg.auth).map_err(|e| anyhow!("{e}"))?;
    let ring = daemon::key_ring(&keys);
    if args.check {
        // Validates names against the datagram size limit too, with a throwaway core.
        let settings = tandem_membership::core::Settings::from_config(&cfg, &node, 1, ring);
        tandem_membership::core::Core::new(settings, std::time::Duration::ZERO)
            .context("configuration cannot run")?;
        println!("{}", cfg.summary(Some(&node)));
        println!(
            "keys: signing id {:08x}, {} accepted",
            keys.signing.id,
            keys.accepted.len()
        );
        return Ok(());
    }
    let runtime = tandem_daemon_kit::cli::runtime().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Registered before anything else so a SIGTERM during start-up is a clean stop too.
        let signal = tandem_daemon_kit::signals::shutdown().context("cannot handle signals")?;
        let shutdown = async move {
            signal.await;
            tandem_daemon_kit::notify::stopping();
        };
        let paths = daemon::Paths {
            run_dir: args.run_dir,
            state_dir: args.state_dir,
        };
        daemon::run(cfg, node, ring, paths, shutdown, |_| {
            tandem_daemon_kit::notify::ready("heartbeating");
        })
        .await?;
        Ok(())
    })
}
