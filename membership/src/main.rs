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

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-membership: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.generate_man {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("tandem-membership.8");
        let mut page = Vec::new();
        clap_mangen::Man::new(Args::command())
            .section("8")
            .render(&mut page)
            .context("rendering the man page")?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(tandem_proto::log::filter_from_env("tandem-membership"))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
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
    // One thread: the daemon is I/O-bound and its loop never blocks; a second worker only
    // added cross-thread wake-ups and a malloc arena (measured in examples/bench.rs idle).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Registered before anything else so a SIGTERM during start-up is a clean stop too.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
        };
        let paths = daemon::Paths {
            run_dir: args.run_dir,
            state_dir: args.state_dir,
        };
        daemon::run(cfg, node, ring, paths, shutdown, |_| {
            if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
                tracing::warn!(error = %e, "sd_notify READY failed");
            }
        })
        .await
        .map_err(anyhow::Error::from)
    })
}
