//! bench_burst_cluster: a node holding 20 reserved IPs (10 IPv4, 10 IPv6) dies, through real
//! daemons. Two nodes' `tandem-membership` and `tandem-resource-agent` (the cluster launcher)
//! on one API token against the emulator, which enforces DigitalOcean's limits (250 requests
//! a minute, 5,000 an hour per token). The primary holds every IP; after a steady state it is
//! killed with -9 and the secondary takes them all.
//!
//! Two shapes of an operator with many IPs: a group per IP (each IP can be moved, and fail,
//! on its own), and one group of them all (they move together). One IP alone is the baseline.
//! Reported per shape, from the emulator's audit log: the steady state's requests (per
//! minute), time from the kill to the last IP moved, the requests from the kill until then,
//! and every 429.
//!
//! ```text
//! cargo run --release -p tandem-tests --example bench_burst_cluster -- [--runs 3] [--ips 20]
//!     [--action-delay-ms 1000] [--steady-secs 20]
//! ```
//! The daemons are built by the same cargo into the same profile.
use std::time::{Duration, SystemTime};

use clap::Parser;
use tandem_resource_agent::core::Timers;
use tandem_tests::burst::{self, all_ips, last_moved, requests_between};
use tandem_tests::cluster::{Binaries, Spec, wait_for};

#[derive(Parser)]
struct Args {
    /// Runs per row.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Reserved IPs of the burst rows: half IPv4, half IPv6.
    #[arg(long, default_value_t = 20)]
    ips: usize,
    /// Time the emulator takes to complete an action.
    #[arg(long, default_value_t = 1000)]
    action_delay_ms: u64,
    /// Steady state watched before the kill.
    #[arg(long, default_value_t = 20)]
    steady_secs: u64,
}

/// Limit for the failover to complete.
const LIMIT: Duration = Duration::from_secs(60);

struct Run {
    steady: usize,
    last_moved: Duration,
    failover: usize,
    refused: usize,
}

async fn run(args: &Args, ips: usize, group_per_ip: bool) -> anyhow::Result<Run> {
    // The launcher's own IPv4 and then the more: half IPv4, half IPv6.
    let v4 = ips / 2;
    let more = burst::more_ips(v4.saturating_sub(1), ips - v4.max(1));
    let mut spec = burst::shape(Spec::defaults(Binaries::for_tests()?), more, group_per_ip);
    // The documented defaults of the agent (monitor every 10 s, timeout 60 s).
    spec.agent_defaults = true;
    spec.action_delay = Duration::from_millis(args.action_delay_ms);
    let settle = Timers::default().settle + Duration::from_millis(500);
    let mut c = tandem_tests::start_settled(spec, None, settle, LIMIT).await;
    let ips = all_ips(&c);
    let from = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let killed = c.crash_node(0);
    let (steady, _) = requests_between(&c, from, killed);
    let moved = wait_for(LIMIT, || async {
        last_moved(&c, &ips, killed, "secondary")
    })
    .await;
    let Some(last) = moved else {
        anyhow::bail!("not every IP moved{}", c.diagnostics());
    };
    let (failover, _) = requests_between(&c, killed, killed + last + Duration::from_millis(1));
    let (_, refused) = requests_between(&c, SystemTime::UNIX_EPOCH, SystemTime::now());
    Ok(Run {
        steady,
        last_moved: last,
        failover,
        refused,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "two nodes, one token; action time {} ms; limits 250/minute, 5000/hour; steady state {} s",
        args.action_delay_ms, args.steady_secs
    );
    println!(
        "{:<14} {:>4} {:>5} {:>16} {:>16} {:>18} {:>14} {:>6}",
        "shape",
        "IPs",
        "runs",
        "last moved p50",
        "last moved max",
        "failover requests",
        "steady /min",
        "429s"
    );
    let rows = [
        ("one IP", 1, false),
        ("group per IP", args.ips, true),
        ("one group", args.ips, false),
    ];
    for (name, n, per_ip) in rows {
        let mut runs = Vec::new();
        for k in 0..args.runs {
            let r = run(&args, n, per_ip).await?;
            eprintln!(
                "  {name} run {}: last IP moved {:.2} s after the kill, {} requests, steady {} \
                 requests in {} s, {} refused",
                k + 1,
                r.last_moved.as_secs_f64(),
                r.failover,
                r.steady,
                args.steady_secs,
                r.refused
            );
            runs.push(r);
        }
        let mut t: Vec<Duration> = runs.iter().map(|r| r.last_moved).collect();
        t.sort();
        let reqs: Vec<usize> = runs.iter().map(|r| r.failover).collect();
        let per_min: Vec<f64> = runs
            .iter()
            .map(|r| r.steady as f64 * 60.0 / args.steady_secs as f64)
            .collect();
        println!(
            "{:<14} {:>4} {:>5} {:>14.2}s {:>14.2}s {:>8}-{:<9} {:>6.0}-{:<7.0} {:>6}",
            name,
            n,
            runs.len(),
            t[t.len() / 2].as_secs_f64(),
            t[t.len() - 1].as_secs_f64(),
            reqs.iter().min().copied().unwrap_or(0),
            reqs.iter().max().copied().unwrap_or(0),
            per_min.iter().copied().fold(f64::MAX, f64::min),
            per_min.iter().copied().fold(0.0, f64::max),
            runs.iter().map(|r| r.refused).sum::<usize>(),
        );
    }
    Ok(())
}
