//! bench_failover: how long a failover of a two-node cluster takes, and where the time goes.
//!
//! Starts the real `tandem-membership` and `tandem-resource-agent` of two nodes on loopback
//! (the cluster launcher, `tandem_tests::cluster`) with the reserved-ip agent against the
//! emulator, which runs in this process. Each run: SIGKILL of the primary's agent and
//! membership → the secondary takes the IP over; then the primary is started again and the
//! bench waits for the failback before the next run.
//!
//! One clock for everything: the emulator's audit log stamps every line with `mono_ms`
//! (tokio's monotonic clock, since the emulator started), and the bench writes its own marks
//! into the same log through the emulator's handle — the kill, and the arrival of the
//! survivor's membership `Watch` NodeDead event at a gRPC Watch client in this process. The
//! phases, all from that log:
//!
//! - detection: kill → NodeDead received by the Watch client;
//! - death → POST: NodeDead → the emulator accepts the assign action (`POST
//!   /v2/reserved_ips/{ip}/actions`; the agent first reads the IP's holder, a GET, so a
//!   restarted agent never assigns what it already holds);
//! - POST → recorded: the assign accepted → the holder change recorded (the action's delay,
//!   `--action-delay-ms`, default 0 so the agent's own latency is visible);
//! - failover: kill → holder change recorded.
//!
//! ```text
//! cargo run --release -p tandem-tests --example bench_failover -- [--runs N] [--quick]
//!     [--action-delay-ms MS] [--interval-ms MS --dead-after-ms MS] [--bin-dir DIR]
//! ```
//! The daemons are built by the same cargo into the same profile (release with `--release`)
//! unless `--bin-dir` names a directory holding them. Timings on a shared machine are upper
//! bounds.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use tandem_proto::membership::v1 as mpb;
use tandem_resource_agent::core::Timers;
use tandem_tests::cluster::{Binaries, Cluster, Daemon, GROUP, Spec, wait_for};
use tandem_tests::emulator::World;

#[derive(Parser)]
#[command(about = "Failover latency of a two-node Tandem cluster on loopback")]
struct Args {
    /// Number of failovers.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// A smoke run: 3 failovers.
    #[arg(long)]
    quick: bool,
    /// Time the emulator takes to complete an assign action (DigitalOcean's take seconds).
    #[arg(long, default_value_t = 0)]
    action_delay_ms: u64,
    /// Heartbeat interval (default timing: 100 ms).
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Silence after which a peer is dead (default timing: 1 s).
    #[arg(long, default_value_t = 1000)]
    dead_after_ms: u64,
    /// Directory holding tandem-membership and tandem-resource-agent (default: built by cargo
    /// into this example's profile directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// Limit for one failover or failback to complete before the run is declared failed.
const RUN_LIMIT: Duration = Duration::from_secs(30);
const PRIMARY: usize = 0;
const SECONDARY: usize = 1;

/// Writes a mark into the emulator's audit log: same clock, same file as its own lines.
fn mark(world: &World, what: &str, run: usize) {
    world.audit(json!({"event": "bench", "what": what, "run": run}));
}

/// Forwards every NodeDead of `node` seen by the survivor's membership into the audit log.
async fn watch_deaths(
    mut client: mpb::membership_client::MembershipClient<tonic::transport::Channel>,
    world: World,
    node: String,
    run: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<()> {
    let mut stream = client
        .watch(mpb::WatchRequest {})
        .await
        .context("watch")?
        .into_inner();
    while let Some(resp) = stream.message().await.context("watch stream")? {
        if let Some(mpb::watch_response::Kind::Event(e)) = resp.kind
            && let Some(mpb::event::Kind::NodeDead(d)) = e.kind
            && d.node == node
        {
            mark(
                &world,
                "node_dead",
                run.load(std::sync::atomic::Ordering::SeqCst),
            );
        }
    }
    bail!("the survivor's Watch stream ended")
}

/// One failover's phases in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Phases {
    detection: f64,
    death_to_post: f64,
    post_to_recorded: f64,
    failover: f64,
}

fn mono(e: &Value) -> Option<f64> {
    e["mono_ms"].as_f64()
}

/// The phases of run `run` from the audit log: the first of each line after the kill mark.
fn phases(audit: &[Value], run: usize, to: u64) -> Option<Phases> {
    let bench = |what: &str| {
        audit
            .iter()
            .find(|e| e["event"] == "bench" && e["what"] == what && e["run"] == run)
            .and_then(mono)
    };
    let kill = bench("kill")?;
    let dead = bench("node_dead")?;
    let after = |f: &dyn Fn(&Value) -> bool| {
        audit
            .iter()
            .filter(|e| mono(e).is_some_and(|t| t >= kill))
            .find(|e| f(e))
            .and_then(mono)
    };
    let post = after(&|e| {
        e["event"] == "action"
            && e["type"] == "assign"
            && e["status"] == "in-progress"
            && e["droplet_id"] == to
    })?;
    let held = after(&|e| e["event"] == "holder" && e["to"] == to)?;
    Some(Phases {
        detection: dead - kill,
        death_to_post: post - dead,
        post_to_recorded: held - post,
        failover: held - kill,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).ceil() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits until node `holder` holds the IP at the emulator and the agents of `nodes` agree on
/// it (the others know the holder and are not claiming): a steady state to kill from.
async fn steady(c: &Cluster, holder: usize, nodes: &[usize]) -> anyhow::Result<()> {
    let name = c.nodes[holder].name.clone();
    let ok = wait_for(RUN_LIMIT, || async {
        if c.holder().as_deref() != Some(name.as_str()) {
            return None;
        }
        for &i in nodes {
            let g = c.group(i).await?;
            if g.holder != name || g.desired_holder != name {
                return None;
            }
            let want = if i == holder {
                tandem_proto::agent::v1::GroupState::Running
            } else {
                tandem_proto::agent::v1::GroupState::Stopped
            };
            if g.state != want as i32 {
                return None;
            }
        }
        Some(())
    })
    .await;
    ok.with_context(|| format!("{name} did not become the steady holder of {GROUP}"))
}

fn print_row(label: &str, v: &mut [f64]) {
    v.sort_by(f64::total_cmp);
    println!(
        "{label:<18} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        v.first().copied().unwrap_or(f64::NAN),
        percentile(v, 0.5),
        percentile(v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runs = if args.quick { 3 } else { args.runs.max(1) };
    let binaries = match &args.bin_dir {
        Some(d) => Binaries::in_dir(
            d,
            "cargo build --release -p tandem-membership -p tandem-resource-agent --bins",
        )?,
        None => Binaries::for_tests()?,
    };
    let interval = Duration::from_millis(args.interval_ms);
    let dead_after = Duration::from_millis(args.dead_after_ms);
    let spec = Spec {
        interval,
        warn_after: dead_after / 2,
        dead_after,
        init_dead: dead_after * 10,
        action_delay: Duration::from_millis(args.action_delay_ms),
        ..Spec::defaults(binaries)
    };
    println!(
        "bench_failover: {runs} failovers, 2 nodes on loopback, interval {interval:?}, dead_after \
         {dead_after:?}, emulator action delay {}ms, daemons {}",
        args.action_delay_ms,
        spec.binaries
            .membership
            .parent()
            .map_or_else(String::new, |p| p.display().to_string())
    );
    let mut c = Cluster::start(spec).await?;
    let world = c.emulator.world.clone();
    let to = c.nodes[SECONDARY].droplet.context("secondary droplet")?;
    let run_no = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = c
        .membership(SECONDARY)
        .await
        .context("connecting to the secondary's membership")?;
    let watcher = tokio::spawn(watch_deaths(
        client,
        world.clone(),
        c.nodes[PRIMARY].name.clone(),
        run_no.clone(),
    ));

    // A freshly started agent claims nothing for `settle`: a kill before that would measure
    // the settle time, not a failover.
    tokio::time::sleep(Timers::default().settle + Duration::from_millis(500)).await;
    let both = [PRIMARY, SECONDARY];
    let mut all = Vec::new();
    for run in 1..=runs {
        steady(&c, PRIMARY, &both)
            .await
            .with_context(|| format!("before run {run}:{}", c.diagnostics()))?;
        run_no.store(run, std::sync::atomic::Ordering::SeqCst);
        mark(&world, "kill", run);
        c.kill9(PRIMARY, Daemon::Agent);
        c.kill9(PRIMARY, Daemon::Membership);
        let found = wait_for(RUN_LIMIT, || async { phases(&c.audit(), run, to) }).await;
        if watcher.is_finished() {
            bail!("the Watch client stopped");
        }
        let Some(p) = found else {
            bail!(
                "run {run}: no failover recorded within {RUN_LIMIT:?}{}",
                c.diagnostics()
            );
        };
        println!(
            "run {run:>3}/{runs}: detection {:>7.1} ms  death->POST {:>6.1} ms  POST->recorded \
             {:>6.1} ms  failover {:>7.1} ms",
            p.detection, p.death_to_post, p.post_to_recorded, p.failover
        );
        all.push(p);
        steady(&c, SECONDARY, &[SECONDARY])
            .await
            .with_context(|| format!("after run {run}:{}", c.diagnostics()))?;
        // The primary comes back and (failback: auto) takes the IP back before the next run.
        c.restart(PRIMARY, Daemon::Membership).await?;
        c.restart(PRIMARY, Daemon::Agent).await?;
    }
    steady(&c, PRIMARY, &both).await?;
    watcher.abort();

    println!();
    println!(
        "{:<18} {:>9} {:>9} {:>9} {:>9}   ({} runs, ms)",
        "phase",
        "min",
        "median",
        "p99",
        "max",
        all.len()
    );
    print_row(
        "detection",
        &mut all.iter().map(|p| p.detection).collect::<Vec<_>>(),
    );
    print_row(
        "death -> POST",
        &mut all.iter().map(|p| p.death_to_post).collect::<Vec<_>>(),
    );
    print_row(
        "POST -> recorded",
        &mut all.iter().map(|p| p.post_to_recorded).collect::<Vec<_>>(),
    );
    print_row(
        "failover",
        &mut all.iter().map(|p| p.failover).collect::<Vec<_>>(),
    );
    let moves = c.holder_changes().len();
    println!(
        "holder changes in the audit log: {moves} (expected {}: one failover and one failback \
         per run)",
        2 * runs
    );
    if moves != 2 * runs {
        bail!("unexpected holder changes: {:?}", c.holder_changes());
    }
    Ok(())
}
