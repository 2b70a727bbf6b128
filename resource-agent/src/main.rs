//! tandem-resource-agent: decides where each resource group runs and runs its agents.
#![forbid(unsafe_code)]
use anyhow::Context;
use clap::{CommandFactory, Parser};
use tandem_daemon_kit::cli::DaemonArgs;
use tandem_resource_agent::core::Timers;
use tandem_resource_agent::core::restart::RestartPolicy;
use tandem_resource_agent::daemon::{self, Options};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Tandem resource agent: placement, handover and the agents it runs"
)]
struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
}

const PROGRAM: &str = "tandem-resource-agent";

/// The page's sections clap cannot know (`--generate-man`).
fn man_sections() -> tandem_daemon_kit::cli::ManSections {
    let mut s = tandem_daemon_kit::cli::daemon_sections();
    s.env.extend([(
        "CREDENTIALS_DIRECTORY",
        "set by systemd (LoadCredential=): where a relative token_file is read from",
    )]);
    s.files.extend([
        (
            "/run/tandem/agent.sock",
            "its gRPC socket (--run-dir): group tandem may read, tandem-admin may change",
        ),
        (
            "/run/tandem/membership.sock",
            "the membership daemon's socket, which it follows",
        ),
        (
            "/var/lib/tandem/agent",
            "the incarnation counter and the standby flag (--state-dir)",
        ),
        (
            "/etc/tandem/do-token",
            "the API token (LoadCredential=do-token:/etc/tandem/do-token); after writing a new one, systemctl restart tandem-resource-agent",
        ),
    ]);
    s.examples = vec![
        (
            "tandem-resource-agent --check --node primary",
            "check the configuration, the agents' scripts and the token files",
        ),
        (
            "systemctl restart tandem-resource-agent",
            "after a new API token: the unit copies its credentials when it starts",
        ),
    ];
    s
}

fn main() -> std::process::ExitCode {
    tandem_daemon_kit::report::exit(PROGRAM, real_main(Args::parse()))
}

fn real_main(Args { daemon: args }: Args) -> anyhow::Result<()> {
    let Some((config, node)) =
        tandem_daemon_kit::cli::start(PROGRAM, Args::command(), &args, &man_sections())?
    else {
        return Ok(());
    };
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
