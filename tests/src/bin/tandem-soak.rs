//! `tandem-soak`: hours of random faults on a real cluster, from a seed.
//!
//! ```text
//! tandem-soak --seed 42 --duration 2h [--nodes 2|3] [--netns] [--start-at K] [--max-faults N]
//! ```
//!
//! Starts two members (and with `--nodes 3` a witness) with the reserved-ip agent against the
//! emulator, on loopback (or, with `--netns`, as root, each membership daemon in its own
//! network namespace, which adds partitions and 20% loss via nftables). Then, until the
//! duration is over, it draws fault after fault from the seed: kill -9 and restart of
//! membership, the agent or a whole node; SIGSTOP/SIGCONT around `dead_after`; provider
//! faults through the emulator's admin API (5xx, 429, slow, down, errored actions, some with
//! the holder crashing meanwhile); standby/online, takeover and release on the agent socket.
//! Each fault is undone, the cluster left to settle, and the invariants checked (see
//! `tandem_tests::soak`): never two nodes running the group at a sample, the emulator's
//! holder is the node running the group, no more holder changes than the fault explains,
//! nothing stuck starting/stopping, the curl loop's gaps bounded by detection + assignment.
//!
//! One line per fault (elapsed time, fault, holder, moves/explained, longest gap); each
//! violation with the seed, the fault index and time, and a replay command (`--start-at K
//! --max-faults 1` on a fresh cluster). Exits 1 when a violation was found. Uses the daemons
//! next to this binary (or `--bin-dir`); build them with the same profile:
//! `cargo build --release -p tandem-membership -p tandem-resource-agent -p tandem-tests --bins`.
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tandem_tests::cluster::Binaries;
use tandem_tests::soak::{self, Options};

#[derive(Debug, Parser)]
#[command(about = "Soak a Tandem cluster with random faults drawn from a seed")]
struct Args {
    /// Seed of the fault sequence.
    #[arg(long)]
    seed: u64,
    /// How long to keep drawing faults (e.g. `2h`, `20m`, `60s`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2h")]
    duration: Duration,
    /// 2 members, or 3 = 2 members and a witness.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=3))]
    nodes: u8,
    /// Membership in network namespaces (root): adds partitions and loss.
    #[arg(long)]
    netns: bool,
    /// Index of the first fault (to replay a reported one).
    #[arg(long, default_value_t = 0)]
    start_at: u64,
    /// Stop after this many faults.
    #[arg(long)]
    max_faults: Option<u64>,
    /// Directory holding tandem-membership and tandem-resource-agent (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = Binaries::given_or_beside_this(
        args.bin_dir.as_deref(),
        "cargo build -p tandem-membership -p tandem-resource-agent --bins",
    )?;
    let opts = Options {
        seed: args.seed,
        duration: args.duration,
        nodes: usize::from(args.nodes),
        netns: args.netns,
        start_at: args.start_at,
        max_faults: args.max_faults,
    };
    let started = tokio::time::Instant::now();
    let mut print = |line: &str| println!("{line}");
    let soak = soak::run(&opts, &bins, &mut print);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // On Ctrl-C or SIGTERM the soak is dropped, and with it the cluster: its processes are
    // killed and its namespaces deleted.
    let summary = tokio::select! {
        r = soak => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    };
    println!(
        "soak done: seed {}, {} faults in {}, {} holder changes, longest gap {:.1}s, {} relaunches, {} violations",
        opts.seed,
        summary.faults,
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())),
        summary.moves,
        summary.longest_gap.as_secs_f64(),
        summary.relaunches,
        summary.violations.len()
    );
    if !summary.violations.is_empty() {
        for v in &summary.violations {
            println!(
                "  fault {} at {:.1}s: {} (replay: {})",
                v.index,
                v.at.as_secs_f64(),
                v.what,
                opts.replay(v.index)
            );
        }
        std::process::exit(1);
    }
    Ok(())
}
