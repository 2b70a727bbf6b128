//! bench_burst: a node holding many reserved IPs dies and another takes them all at once,
//! against the emulator with DigitalOcean's limits enforced (250 requests a minute and 5,000
//! an hour per token, 429 with Retry-After past the minute's).
//!
//! Each run starts a fresh emulator whose `n` reserved IPs are held by one droplet; `n` clients
//! of another droplet, sharing one token as the agent's groups do, assign them concurrently.
//! Every action runs `delay` plus up to `delay` again at random. Reported per run: time until
//! the last IP moved, the API requests the emulator counted (all of them, and the largest
//! number in any minute), and the 429s. One IP alone is the baseline.
//!
//! ```text
//! cargo run -p tandem-tests --example bench_burst -- [--runs 5] [--ips 20] [--delay-ms 1000]
//! ```
use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use tandem_config::Secret;
use tandem_resource_agent::provider::{DigitalOcean, Options, ReservedIpProvider, ServerId};
use tandem_tests::emulator::testkit::{PRIMARY, SECONDARY, TOKEN, fixture, read_audit};
use tandem_tests::emulator::{Emulator, ReservedIpConfig};

#[derive(Parser)]
struct Args {
    /// Runs per row.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Reserved IPs of the burst row: half IPv4, half IPv6.
    #[arg(long, default_value_t = 20)]
    ips: usize,
    /// Base action time; each action takes this plus up to this again.
    #[arg(long, default_value_t = 1000)]
    delay_ms: u64,
}

/// The `i`-th test address (loopback; the emulator never routes them).
fn address(i: usize) -> IpAddr {
    format!("127.0.3.{}", i + 1)
        .parse()
        .expect("an IPv4 address")
}

struct Run {
    last_moved: Duration,
    requests: usize,
    peak_minute: usize,
    refused: usize,
}

async fn run(n: usize, delay: Duration) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let audit = dir.path().join("audit.jsonl");
    let mut cfg = fixture(delay);
    cfg.action_jitter = delay;
    cfg.audit_log = Some(audit.clone());
    let ips: Vec<IpAddr> = (0..n).map(address).collect();
    cfg.reserved_ips = ips
        .iter()
        .map(|ip| ReservedIpConfig {
            ip: *ip,
            region: "nyc3".into(),
            holder: Some(PRIMARY),
        })
        .collect();
    let emu = Emulator::start(cfg).await?;
    let clients = ips
        .iter()
        .map(|ip| {
            let opts = Options {
                api_url: Some(emu.addresses.api.clone()),
                // As the agent runs: the droplet id from the configuration.
                server_id: Some(ServerId::Numeric(SECONDARY)),
                ..Options::default()
            };
            DigitalOcean::new(*ip, Secret::new(TOKEN.into()), opts)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = tokio::time::Instant::now();
    let outs = futures::future::join_all(clients.iter().map(|c| c.assign())).await;
    let last_moved = started.elapsed();
    for (ip, o) in ips.iter().zip(outs) {
        let o = o.map_err(|e| anyhow::anyhow!("{ip}: {e}"))?;
        anyhow::ensure!(!o.already_held, "{ip} must move");
        anyhow::ensure!(emu.holder(*ip) == Some(SECONDARY), "{ip} did not move");
    }
    emu.shutdown().await;
    let requests: Vec<(f64, bool)> = read_audit(&audit)
        .into_iter()
        .filter(|l| l["event"] == "request")
        .map(|l| (l["mono_ms"].as_f64().unwrap_or(0.0), l["status"] == 429))
        .collect();
    let peak_minute = requests
        .iter()
        .map(|(t, _)| {
            requests
                .iter()
                .filter(|(u, _)| *u >= *t && *u < t + 60_000.0)
                .count()
        })
        .max()
        .unwrap_or(0);
    Ok(Run {
        last_moved,
        requests: requests.len(),
        peak_minute,
        refused: requests.iter().filter(|(_, r)| *r).count(),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let delay = Duration::from_millis(args.delay_ms);
    println!(
        "action time {}-{} ms; limits 250/minute, 5000/hour per token",
        args.delay_ms,
        2 * args.delay_ms
    );
    println!(
        "{:>4} {:>5} {:>16} {:>16} {:>10} {:>12} {:>6}",
        "IPs", "runs", "last moved p50", "last moved max", "requests", "peak minute", "429s"
    );
    for n in [1, args.ips] {
        let mut runs = Vec::new();
        for _ in 0..args.runs {
            runs.push(run(n, delay).await?);
        }
        let mut t: Vec<Duration> = runs.iter().map(|r| r.last_moved).collect();
        t.sort();
        let reqs: Vec<usize> = runs.iter().map(|r| r.requests).collect();
        println!(
            "{:>4} {:>5} {:>14.2}s {:>14.2}s {:>4}-{:<5} {:>12} {:>6}",
            n,
            runs.len(),
            t[t.len() / 2].as_secs_f64(),
            t[t.len() - 1].as_secs_f64(),
            reqs.iter().min().copied().unwrap_or(0),
            reqs.iter().max().copied().unwrap_or(0),
            runs.iter().map(|r| r.peak_minute).max().unwrap_or(0),
            runs.iter().map(|r| r.refused).sum::<usize>(),
        );
    }
    Ok(())
}
