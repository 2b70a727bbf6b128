//! `tandem-membership`: the heartbeat, failure detection, quorum and messaging daemon.
#![forbid(unsafe_code)]
use anyhow::{Context, anyhow};
use clap::{CommandFactory, Parser};
use tandem_daemon_kit::cli::DaemonArgs;
use tandem_membership::daemon;

/// Tandem membership daemon: authenticated UDP heartbeats between the cluster's nodes, failure
/// detection, quorum and cluster messages, published on a local gRPC socket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

const PROGRAM: &str = "tandem-membership";

/// The page's sections clap cannot know (`--generate-man`).
fn man_sections() -> tandem_daemon_kit::cli::ManSections {
    let mut s = tandem_daemon_kit::cli::daemon_sections();
    s.files.extend([
        (
            "/run/tandem/membership.sock",
            "its gRPC socket (--run-dir): group tandem may read; ipctl status and watch ask it",
        ),
        (
            "/var/lib/tandem/membership/generation",
            "the generation counter (--state-dir): never goes backwards, keep it across reinstalls",
        ),
    ]);
    s.examples = vec![
        (
            "tandem-membership --check --node primary",
            "check the configuration and the key as this node would run them",
        ),
        (
            "systemctl enable --now tandem-membership",
            "run it as the package's unit",
        ),
    ];
    s
}

fn main() -> std::process::ExitCode {
    tandem_daemon_kit::report::exit(PROGRAM, real_main(Args::parse()))
}

fn real_main(Args { daemon: args }: Args) -> anyhow::Result<()> {
    let Some((cfg, node)) =
        tandem_daemon_kit::cli::start(PROGRAM, Args::command(), &args, &man_sections())?
    else {
        return Ok(());
    };
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
