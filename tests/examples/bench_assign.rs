//! bench_assign: latency the DigitalOcean client adds on top of the provider's own action
//! time, and how the polling schedule trades API calls against that latency.
//!
//! Runs the emulator in-process on loopback; two clients move one reserved IP back and forth
//! so every assign really posts an action. Each action runs `delay` plus a uniform random
//! jitter of up to `delay` (real actions vary), and "added" = wall time of `assign()` minus
//! that action's own run time.
//!
//! ```text
//! CARGO_TARGET_DIR=... cargo run -p tandem-tests --example bench_assign -- [--quick]
//! ```
use std::time::Duration;

use clap::Parser;
use tandem_config::Secret;
use tandem_resource_agent::provider::{DigitalOcean, Options, PollSchedule, ReservedIpProvider};
use tandem_tests::emulator::Emulator;
use tandem_tests::emulator::testkit::{PRIMARY, SECONDARY, TOKEN, fixture, ip};

#[derive(Parser)]
struct Args {
    /// Fewer iterations (a smoke run).
    #[arg(long)]
    quick: bool,
}

fn schedules() -> Vec<PollSchedule> {
    let s = |first, factor, max| PollSchedule {
        first: Duration::from_millis(first),
        factor,
        max: Duration::from_millis(max),
    };
    vec![
        s(10, 1.0, 10),
        s(25, 1.25, 500),
        PollSchedule::default(),
        s(50, 1.5, 1000),
        s(100, 2.0, 1000),
        s(1000, 1.0, 1000),
    ]
}

fn label(p: &PollSchedule) -> String {
    let tag = if *p == PollSchedule::default() {
        " (default)"
    } else {
        ""
    };
    format!(
        "{}ms x{} cap {}ms{tag}",
        p.first.as_millis(),
        p.factor,
        p.max.as_millis()
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scale = if args.quick { 4 } else { 1 };
    println!(
        "{:<34} {:>8} {:>5} {:>9} {:>9} {:>9} {:>10}",
        "schedule", "delay+", "n", "p50 ms", "p99 ms", "max ms", "calls/op"
    );
    for (delay_ms, n) in [(0u64, 200usize), (200, 30), (1000, 12)] {
        let delay = Duration::from_millis(delay_ms);
        for poll in schedules() {
            let name = label(&poll);
            if delay_ms == 0 && poll != PollSchedule::default() {
                // With no action delay the schedule is never used: one row is enough.
                continue;
            }
            let mut cfg = fixture(delay);
            cfg.action_jitter = delay;
            // Measure latency, not DigitalOcean's 250/minute limit: calls/op says how fast a
            // schedule would spend that budget.
            cfg.rate_limit.per_minute = u32::MAX;
            cfg.rate_limit.per_hour = u32::MAX;
            let emu = Emulator::start(cfg).await?;
            let mk = |id| {
                let opts = Options {
                    api_url: Some(emu.addresses.api.clone()),
                    metadata_url: Some(emu.addresses.metadata[&id].clone()),
                    poll,
                    ..Options::default()
                };
                DigitalOcean::new(ip(), Secret::new(TOKEN.into()), opts)
            };
            let clients = [mk(SECONDARY)?, mk(PRIMARY)?];
            // Warm up: resolve droplet ids and open connections.
            for c in &clients {
                c.server_id().await?;
            }
            let n = (n / scale).max(2);
            let mut added = Vec::with_capacity(n);
            let mut calls = 0u64;
            for i in 0..n {
                let out = clients[i % 2].assign().await?;
                anyhow::ensure!(!out.already_held, "every assign must move the IP");
                let id: u64 = out.action_id.as_deref().unwrap_or_default().parse()?;
                let ran = emu.world.lock().actions[&id].duration;
                added.push((out.elapsed.as_secs_f64() - ran.as_secs_f64()) * 1000.0);
                calls += out.api_calls;
            }
            added.sort_by(f64::total_cmp);
            println!(
                "{:<34} {:>6}ms {:>5} {:>9.1} {:>9.1} {:>9.1} {:>10.1}",
                name,
                delay_ms,
                n,
                percentile(&added, 0.5),
                percentile(&added, 0.99),
                added.last().copied().unwrap_or(f64::NAN),
                calls as f64 / n as f64
            );
            emu.shutdown().await;
        }
    }
    Ok(())
}
