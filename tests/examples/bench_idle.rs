//! bench_idle: idle footprint of one node's two daemons (tandem-membership +
//! tandem-resource-agent) in a 2-node cluster with a reserved-IP group against the emulator,
//! with every setting at its documented default: timing 100ms / 500ms / 1s / 10s, the
//! reserved-ip agent's `monitor_interval` (10 s) and `timeout` (60 s), the agent's readiness
//! probe (1 minute) and `RUST_LOG` (info).
//!
//! Prints, per process: CPU over the window (% of one core) and wake-ups per second, from the
//! scheduler's per-thread statistics (`/proc/PID/task/*/schedstat`: nanoseconds on a CPU and
//! timeslices run, see `tandem_tests::procstat`), VmRSS (/proc/PID/status), and Private /
//! Shared from /proc/PID/smaps_rollup; then the sum of both daemons of each node, which is the
//! figure compared with keepalived's two processes.
//!
//! ```text
//! CARGO_TARGET_DIR=... cargo build --release -p tandem-membership -p tandem-resource-agent --bins
//! CARGO_TARGET_DIR=... cargo run --release -p tandem-tests --example bench_idle -- [--secs 30]
//! ```
//!
//! The daemons are taken from `--bin-dir` (default: the directory of this example's profile,
//! e.g. `target/release`), so a release run measures release daemons.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tandem_tests::cluster::{Binaries, Cluster, Daemon, Spec, wait_for};
use tandem_tests::procstat::{self, CpuMeter, Mem};

#[derive(Parser)]
struct Args {
    /// Length of the measuring window, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    secs: u64,
    /// Directory holding tandem-membership and tandem-resource-agent.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// How often the counters are read: a thread that exits (tokio's blocking pool lets idle
/// threads go after 10 s) takes its counters along, so at most this much of it is lost.
const SAMPLE: Duration = Duration::from_secs(1);

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| procstat::field(&s, "Threads:"))
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Err(why) = procstat::available() {
        bail!("no per-thread scheduler statistics: {why}");
    }
    let binaries = Binaries::given_or_beside_this(
        args.bin_dir.as_deref(),
        "cargo build --release -p tandem-membership -p tandem-resource-agent --bins",
    )?;
    let mut spec = Spec::defaults(binaries);
    // Everything at the documented defaults: Spec::defaults has the default timing; the
    // agent's monitor interval and timeout are left out of the YAML, the readiness probe
    // interval is not overridden, and RUST_LOG is the daemons' default.
    spec.agent_defaults = true;
    spec.readiness_interval = None;
    spec.log_filter = "info".into();
    let settings = format!(
        "timing interval {:?}, warn_after {:?}, dead_after {:?}, init_dead {:?}; reserved-ip \
         monitor_interval and timeout unset (defaults 10s, 60s); readiness probe at the \
         daemon's default (60s); RUST_LOG={}",
        spec.interval, spec.warn_after, spec.dead_after, spec.init_dead, spec.log_filter
    );
    let cluster = Cluster::start(spec).await?;
    if wait_for(Duration::from_secs(30), || async {
        (cluster.running_on().await.len() == 1).then_some(())
    })
    .await
    .is_none()
    {
        bail!("the group never ran on exactly one node");
    }
    // Let start-up allocations and the first readiness probes settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut procs = Vec::new();
    for (i, n) in cluster.nodes.iter().enumerate() {
        for d in [Daemon::Membership, Daemon::Agent] {
            let pid = cluster.pid(i, d).context("daemon not running")?;
            procs.push((n.name.clone(), d, pid, CpuMeter::new()));
        }
    }
    let sample = |procs: &mut Vec<(String, Daemon, u32, CpuMeter)>| -> anyhow::Result<()> {
        for (name, d, pid, m) in procs.iter_mut() {
            m.sample(&[*pid])
                .with_context(|| format!("{name} {d}: scheduler statistics"))?;
        }
        Ok(())
    };
    sample(&mut procs)?;
    let t0 = tokio::time::Instant::now();
    let end = t0 + Duration::from_secs(args.secs);
    while tokio::time::Instant::now() < end {
        tokio::time::sleep_until((tokio::time::Instant::now() + SAMPLE).min(end)).await;
        sample(&mut procs)?;
    }
    let wall = t0.elapsed();
    println!(
        "idle 2-node cluster with a reserved-IP group, {:.0}s window\nsettings: {settings}",
        wall.as_secs_f64()
    );
    println!(
        "{:<10} {:<22} {:>7} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "node", "daemon", "threads", "CPU %", "wakes/s", "RSS MiB", "Priv MiB", "Shrd MiB"
    );
    // Per node: CPU %, wake-ups/s, memory.
    let mut per_node: Vec<(String, f64, f64, Mem)> = Vec::new();
    for (name, d, pid, meter) in &procs {
        let u = meter.usage(wall);
        let m = procstat::memory(*pid)
            .with_context(|| format!("{name} {d} (pid {pid}): memory; did it exit?"))?;
        println!(
            "{name:<10} {:<22} {:>7} {:>9.3} {:>8.1} {:>9.1} {:>9.1} {:>9.1}",
            d.to_string(),
            threads(*pid),
            u.cpu_percent,
            u.wakeups_per_sec,
            mib(m.rss),
            mib(m.private),
            mib(m.shared)
        );
        match per_node.iter_mut().find(|(n, ..)| n == name) {
            Some((_, cpu, wakes, sum)) => {
                *cpu += u.cpu_percent;
                *wakes += u.wakeups_per_sec;
                *sum += m;
            }
            None => per_node.push((name.clone(), u.cpu_percent, u.wakeups_per_sec, m)),
        }
    }
    for (name, cpu, wakes, m) in per_node {
        println!(
            "both daemons of {name}: CPU {cpu:.3} %, {wakes:.1} wake-ups/s, RSS {:.1} MiB \
             (private {:.1}, shared {:.1})",
            mib(m.rss),
            mib(m.private),
            mib(m.shared)
        );
    }
    Ok(())
}
