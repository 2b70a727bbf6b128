//! bench_idle: idle footprint of one node's two daemons (tandem-membership +
//! tandem-resource-agent) in a 2-node cluster with a reserved-IP group against the emulator,
//! at the documented default timing (interval 100 ms, dead_after 1 s) and the agents'
//! default readiness probe.
//!
//! Prints, per process: CPU over the window (% of one core, from /proc/PID/stat), VmRSS
//! (/proc/PID/status), and Private / Shared from /proc/PID/smaps_rollup; then the sum of
//! both daemons of each node, which is the figure compared with keepalived's two processes.
//!
//! ```text
//! CARGO_TARGET_DIR=... cargo build --release -p tandem-membership -p tandem-resource-agent --bins
//! CARGO_TARGET_DIR=... cargo run --release -p tandem-tests --example bench_idle -- [--secs 20]
//! ```
//!
//! The daemons are taken from `--bin-dir` (default: the directory of this example's profile,
//! e.g. `target/release`), so a release run measures release daemons.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tandem_tests::cluster::{Binaries, Cluster, Daemon, Spec, wait_for};

#[derive(Parser)]
struct Args {
    /// Length of the measuring window, in seconds.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Directory holding tandem-membership and tandem-resource-agent.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// Memory of one process, KiB.
#[derive(Debug, Default, Clone, Copy)]
struct Mem {
    rss: u64,
    private: u64,
    shared: u64,
}

fn field_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mem(pid: u32) -> anyhow::Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(Mem {
        rss: field_kib(&status, "VmRSS:"),
        private: field_kib(&rollup, "Private_Clean:") + field_kib(&rollup, "Private_Dirty:"),
        shared: field_kib(&rollup, "Shared_Clean:") + field_kib(&rollup, "Shared_Dirty:"),
    })
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the ")" closing the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// Voluntary + involuntary context switches of every thread: how often the process woke.
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|s| {
            field_kib(&s, "voluntary_ctxt_switches:") + field_kib(&s, "nonvoluntary_ctxt_switches:")
        })
        .sum()
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| field_kib(&s, "Threads:"))
        .unwrap_or(0)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binaries = Binaries::given_or_beside_this(
        args.bin_dir.as_deref(),
        "cargo build --release -p tandem-membership -p tandem-resource-agent --bins",
    )?;
    let mut spec = Spec::defaults(binaries);
    spec.log_filter = "warn".into();
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
            procs.push((n.name.clone(), d, pid));
        }
    }
    let before: Vec<(u64, u64)> = procs
        .iter()
        .map(|&(_, _, p)| Ok((cpu_ticks(p)?, switches(p))))
        .collect::<anyhow::Result<_>>()?;
    let t0 = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let wall = t0.elapsed().as_secs_f64();
    let hz = clock_ticks();
    println!(
        "idle 2-node cluster with a reserved-IP group, default timing, {:.0}s window",
        wall
    );
    println!(
        "{:<10} {:<22} {:>7} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "node", "daemon", "threads", "CPU %", "wakes/s", "RSS MiB", "Priv MiB", "Shrd MiB"
    );
    let mut per_node: Vec<(String, Mem)> = Vec::new();
    for ((name, d, pid), (t_before, s_before)) in procs.iter().zip(&before) {
        let cpu = (cpu_ticks(*pid)? - t_before) as f64 / hz / wall * 100.0;
        let wakes = (switches(*pid) - s_before) as f64 / wall;
        let m = mem(*pid)?;
        println!(
            "{name:<10} {:<22} {:>7} {cpu:>9.2} {wakes:>8.0} {:>9.1} {:>9.1} {:>9.1}",
            d.to_string(),
            threads(*pid),
            mib(m.rss),
            mib(m.private),
            mib(m.shared)
        );
        match per_node.iter_mut().find(|(n, _)| n == name) {
            Some((_, sum)) => {
                sum.rss += m.rss;
                sum.private += m.private;
                sum.shared += m.shared;
            }
            None => per_node.push((name.clone(), m)),
        }
    }
    for (name, m) in per_node {
        println!(
            "both daemons of {name}: RSS {:.1} MiB (private {:.1}, shared {:.1})",
            mib(m.rss),
            mib(m.private),
            mib(m.shared)
        );
    }
    Ok(())
}
