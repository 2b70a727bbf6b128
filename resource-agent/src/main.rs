//! tandem-resource-agent: decides where each resource group runs and runs its agents.
use std::path::PathBuf;

use anyhow::Context;
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.generate_man {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("tandem-resource-agent.8");
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
        .with(tandem_proto::log::filter_from_env("tandem-resource-agent"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only on a terminal, never into the journal.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    let config = match tandem_config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => anyhow::bail!("{errors}"),
    };
    let node = args.node.unwrap_or_else(tandem_config::default_node_name);
    if let Err(errors) = config.local_node(&node) {
        anyhow::bail!("{errors}");
    }
    if args.check {
        daemon::build_runners(&config, &node).context("checking the agents")?;
        daemon::build_fencer(&config).context("checking fencing")?;
        println!("{}", config.summary(Some(&node)));
        println!("agents: ok");
        return Ok(());
    }
    // One thread: the agent waits on sockets, timers and child processes; its only blocking
    // work (small state-file writes, DNS lookups in tokio's blocking pool) is brief. Worker
    // threads would only add wake-ups and malloc arenas (see tests/examples/bench_idle.rs).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let opts = Options {
            config,
            node,
            run_dir: args.run_dir,
            state_dir: args.state_dir,
            timers: Timers::default(),
            restart: RestartPolicy::default(),
        };
        daemon::run(opts, shutdown_signal())
            .await
            .context("resource agent")
    })
}

/// SIGTERM (systemd) or SIGINT (a terminal).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, only Ctrl-C via tokio's portable handler remains.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
