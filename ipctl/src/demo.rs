//! `ipctl demo`: the tutorial's failover on one machine. Starts the DigitalOcean emulator, two
//! nodes (the real `tandem-membership` and `tandem-resource-agent` processes each) and the
//! two droplets' web servers; runs the tutorial's curl loop against the reserved IP, kills the
//! primary (SIGKILL of both daemons, its web server goes down with it), measures the
//! failover and the longest time without service, boots the primary again and shows the
//! failback. Uses the documented default timing (interval 100ms, dead_after 1s). With
//! `--ipv6` the group is dual stack: it holds a DigitalOcean reserved IPv6 too, and the demo
//! shows both addresses move together (a second loop runs against the IPv6's front).
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde::Serialize;
use tandem_emulator::cluster::{Binaries, Cluster, Prober, Spec, wait_for};
use tandem_proto::agent::v1 as apb;
use tandem_resource_agent::core::Timers;

/// The curl loop's period (the tutorial's loop sleeps between requests the same way).
const PROBE: Duration = Duration::from_millis(100);
/// Limit for the cluster to come up, and for each move.
const LIMIT: Duration = Duration::from_secs(30);
/// How long the loop is shown before each step, so the reader sees who answers.
const SHOW: Duration = Duration::from_millis(1500);
const BUILD: &str = "cargo build --release";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Leave the cluster running afterwards and print the commands to explore it (Ctrl-C
    /// stops everything).
    #[arg(long)]
    pub keep_running: bool,
    /// Print only the summary on stdout, as one JSON object (schema tandem.ipctl.demo/v1);
    /// with --keep-running it also lists the commands to explore the cluster.
    #[arg(long)]
    pub json: bool,
    /// Dual stack: the group holds a reserved IPv6 besides the IPv4 (a DigitalOcean reserved
    /// IPv6, `/v2/reserved_ipv6`, in the emulator); both move on failover and failback.
    #[arg(long)]
    pub ipv6: bool,
}

/// Version tag of `--json`'s document; bumped only for incompatible changes.
const SCHEMA: &str = "tandem.ipctl.demo/v1";

#[derive(Debug, Serialize)]
struct Summary {
    schema: &'static str,
    ok: bool,
    /// What went wrong, when not ok.
    problems: Vec<String>,
    failover_ms: Option<u128>,
    failback_ms: Option<u128>,
    /// With `--ipv6`: the reserved IPv6, its failover and failback (from the same kill and
    /// boot), the longest gap its loop saw, and who answered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6: Option<Ipv6Summary>,
    longest_gap_ms: u128,
    /// dead_after + the assign (measured: failover minus dead_after) + one poll on each side
    /// (the last answer before the kill, the first after the move): the longest gap the
    /// tutorial's loop should see.
    gap_bound_ms: u128,
    requests: usize,
    failed_requests: usize,
    assign_calls: usize,
    holder_changes: usize,
    served_by: Vec<String>,
    interval_ms: u128,
    dead_after_ms: u128,
    /// The cluster's files, kept with `--keep-running` (else removed at exit).
    cluster_dir: Option<String>,
    /// With `--keep-running`: commands to explore the running cluster.
    explore: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Ipv6Summary {
    ip: String,
    failover_ms: Option<u128>,
    failback_ms: Option<u128>,
    longest_gap_ms: u128,
    served_by: Vec<String>,
}

impl Summary {
    /// The document for a demo that could not get as far as measuring anything.
    fn failed(problem: String) -> Self {
        Summary {
            schema: SCHEMA,
            ok: false,
            problems: vec![problem],
            failover_ms: None,
            failback_ms: None,
            ipv6: None,
            longest_gap_ms: 0,
            gap_bound_ms: 0,
            requests: 0,
            failed_requests: 0,
            assign_calls: 0,
            holder_changes: 0,
            served_by: Vec::new(),
            interval_ms: 0,
            dead_after_ms: 0,
            cluster_dir: None,
            explore: Vec::new(),
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find ipctl's own path")?;
    let dir = exe.parent().context("ipctl has no directory")?;
    let bins = Binaries::in_dir(dir, BUILD).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match rt.block_on(demo(args, bins)) {
        // `--json` promises one document on stdout, also when the demo could not run.
        Err(e) if args.json => {
            let problem = crate::error::one_line(&e);
            eprintln!("ipctl: {problem}");
            println!("{}", serde_json::to_string(&Summary::failed(problem))?);
            Ok(ExitCode::FAILURE)
        }
        other => other,
    }
}

fn say(args: &Args, line: &str) {
    if !args.json {
        println!("{line}");
    }
}

fn clock(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_millis(t).to_string();
    s.get(11..23).unwrap_or(&s).to_owned()
}

/// Prints the loop's answers from `printed` on; returns the new count.
fn show(args: &Args, probe: &Prober, printed: usize) -> usize {
    let new = probe.since(printed);
    if !args.json {
        let mut out = std::io::stdout().lock();
        for s in &new {
            let text = if s.ok() {
                s.body.trim().to_owned()
            } else {
                match s.status {
                    Some(code) => format!("(HTTP {code}: {})", s.body.trim()),
                    None => format!("(no answer: {})", s.body.trim()),
                }
            };
            let _ = writeln!(out, "  {}  {text}", clock(s.wall));
        }
    }
    printed + new.len()
}

/// Shows the loop live until `until` says done (polled) or `limit` passes.
async fn show_until<F, Fut>(
    args: &Args,
    probe: &Prober,
    printed: &mut usize,
    limit: Duration,
    mut until: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        *printed = show(args, probe, *printed);
        if until().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn demo(args: &Args, bins: Binaries) -> anyhow::Result<ExitCode> {
    let spec = Spec {
        ipv6: args.ipv6,
        ..Spec::defaults(bins)
    };
    let (interval, dead_after) = (spec.interval, spec.dead_after);
    say(
        args,
        &format!(
            "Starting the DigitalOcean emulator and two nodes (tandem-membership + tandem-resource-agent each; \
             interval {}ms, dead_after {}ms)...",
            interval.as_millis(),
            dead_after.as_millis()
        ),
    );
    let started = tokio::time::Instant::now();
    let mut c = Cluster::start(spec)
        .await
        .map_err(|e| anyhow::anyhow!("the cluster did not start: {e}"))?;
    let cluster_dir = if args.keep_running {
        c.keep_dir()
    } else {
        c.path.clone()
    };
    let up = wait_for(LIMIT, || async {
        let p = c.group(0).await?;
        let s = c.group(1).await?;
        (p.state == apb::GroupState::Running as i32 && s.holder == "primary").then_some(())
    })
    .await;
    if up.is_none() {
        bail!(
            "the primary never ran the reserved IP's group{}",
            c.diagnostics()
        );
    }
    // An agent claims nothing during its first `settle`: a failover inside it would show
    // the settle time, not the failover.
    tokio::time::sleep_until(started + Timers::default().settle).await;
    for n in &c.nodes {
        say(
            args,
            &format!(
                "  node {:<9} droplet {}  heartbeat {}  sockets {}",
                n.name,
                n.droplet.unwrap_or_default(),
                n.address,
                n.run_dir.display()
            ),
        );
    }
    say(
        args,
        &format!(
            "Reserved IP {} is on the primary. The tutorial's loop: while true; do curl {}; sleep 0.1; done",
            c.ip, c.front
        ),
    );

    if let Some(v6) = c.ipv6 {
        say(
            args,
            &format!(
                "Reserved IPv6 {v6} is on the primary too (the same group: dual stack); a second loop \
                 runs against its front {}",
                c.emulator
                    .addresses
                    .fronts
                    .get(&v6)
                    .map_or("?", String::as_str)
            ),
        );
    }
    let probe = c.probe(PROBE);
    let probe6 = c
        .ipv6
        .and_then(|v6| c.emulator.addresses.fronts.get(&v6).cloned())
        .map(|front| Prober::start(front, PROBE));
    let mut printed = 0;
    let mut problems = Vec::new();
    show_until(args, &probe, &mut printed, SHOW, || async { false }).await;

    say(
        args,
        &format!(
            "*** Killing the primary: kill -9 of tandem-membership (pid {}) and tandem-resource-agent (pid {}); \
             its web server goes down too",
            c.pid(0, tandem_emulator::cluster::Daemon::Membership)
                .unwrap_or_default(),
            c.pid(0, tandem_emulator::cluster::Daemon::Agent)
                .unwrap_or_default()
        ),
    );
    let killed = c.crash_node(0);
    let moved = show_until(args, &probe, &mut printed, LIMIT, || async {
        holds_all(&c, "secondary")
    })
    .await;
    let failover = c.moved_after(killed, "secondary");
    if !moved {
        problems.push(format!(
            "the secondary did not take the IP over within {LIMIT:?}"
        ));
    }
    let served = show_until(args, &probe, &mut printed, LIMIT, || async {
        probe
            .since(0)
            .last()
            .is_some_and(|s| s.ok() && s.body.contains("secondary"))
    })
    .await;
    if moved && !served {
        problems.push("the secondary holds the IP but its page never came through".into());
    }
    let failover6 = c
        .ipv6
        .and_then(|v6| c.moved_after_of(v6, killed, "secondary"));
    if let Some(f) = failover {
        say(
            args,
            &format!(
                "*** Failover: the reserved IP moved to the secondary {} ms after the kill{}",
                f.as_millis(),
                also_ipv6(failover6)
            ),
        );
    }
    show_until(args, &probe, &mut printed, SHOW, || async { false }).await;

    say(
        args,
        "*** Booting the primary again (web server, membership, agent)...",
    );
    let (mut failback, mut failback6) = (None, None);
    match c.boot_node(0).await {
        Err(e) => problems.push(format!("the primary did not start again: {e}")),
        Ok(back) => {
            let moved = show_until(args, &probe, &mut printed, LIMIT, || async {
                holds_all(&c, "primary")
                    && probe
                        .since(0)
                        .last()
                        .is_some_and(|s| s.ok() && s.body.contains("primary"))
            })
            .await;
            failback = c.moved_after(back, "primary");
            failback6 = c.ipv6.and_then(|v6| c.moved_after_of(v6, back, "primary"));
            if !moved {
                problems.push(format!(
                    "no failback to the primary within {LIMIT:?} of its restart"
                ));
            }
            if let Some(f) = failback {
                say(
                    args,
                    &format!(
                        "*** Failback: the primary took the IP back {} ms after its agent started \
                         (it first listens for what the others hold){}",
                        f.as_millis(),
                        also_ipv6(failback6)
                    ),
                );
            }
            show_until(
                args,
                &probe,
                &mut printed,
                Duration::from_millis(700),
                || async { false },
            )
            .await;
        }
    }
    let report = probe.finish();
    let changes = c.holder_changes();
    for ip in std::iter::once(c.ip).chain(c.ipv6) {
        let n = changes.iter().filter(|h| h.ip == Some(ip)).count();
        if n != 2 {
            problems.push(format!(
                "{ip} moved {n} times; expected 2 (failover, failback)"
            ));
        }
    }
    let served_by: Vec<String> = report.served_by();
    check_served(&mut problems, "the loop", &served_by);
    let ipv6 = match (c.ipv6, probe6) {
        (Some(v6), Some(p6)) => {
            let r6 = p6.finish();
            let served_by = r6.served_by();
            check_served(&mut problems, "the IPv6 loop", &served_by);
            Some(Ipv6Summary {
                ip: v6.to_string(),
                failover_ms: failover6.map(|d| d.as_millis()),
                failback_ms: failback6.map(|d| d.as_millis()),
                longest_gap_ms: r6.longest_gap.as_millis(),
                served_by,
            })
        }
        _ => None,
    };
    let assign = failover.map_or(Duration::ZERO, |f| f.saturating_sub(dead_after));
    let gap_bound = dead_after + assign + 2 * PROBE;
    let explore = if args.keep_running {
        explore(&c)
    } else {
        Vec::new()
    };
    let summary = Summary {
        schema: SCHEMA,
        ok: problems.is_empty(),
        problems,
        failover_ms: failover.map(|d| d.as_millis()),
        failback_ms: failback.map(|d| d.as_millis()),
        ipv6,
        longest_gap_ms: report.longest_gap.as_millis(),
        gap_bound_ms: gap_bound.as_millis(),
        requests: report.samples.len(),
        failed_requests: report.failures,
        assign_calls: c.assign_calls(),
        holder_changes: changes.len(),
        served_by,
        interval_ms: interval.as_millis(),
        dead_after_ms: dead_after.as_millis(),
        cluster_dir: args.keep_running.then(|| cluster_dir.display().to_string()),
        explore,
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    if !summary.ok && !args.json {
        eprintln!("{}", c.diagnostics());
    }
    if args.keep_running {
        keep_running(args, &summary).await;
    }
    Ok(if summary.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether `name` holds the reserved IP and, in a dual-stack demo, the IPv6 too.
fn holds_all(c: &Cluster, name: &str) -> bool {
    std::iter::once(c.ip)
        .chain(c.ipv6)
        .all(|ip| c.holder_of(ip).as_deref() == Some(name))
}

/// "; the reserved IPv6 N ms" for a dual-stack demo's step lines.
fn also_ipv6(took: Option<Duration>) -> String {
    took.map_or_else(String::new, |d| {
        format!("; the reserved IPv6 {} ms", d.as_millis())
    })
}

/// A problem unless `served_by` is primary, secondary, primary.
fn check_served(problems: &mut Vec<String>, which: &str, served_by: &[String]) {
    let names: Vec<&str> = served_by
        .iter()
        .map(|b| {
            if b.contains("primary") {
                "primary"
            } else if b.contains("secondary") {
                "secondary"
            } else {
                "?"
            }
        })
        .collect();
    if names != ["primary", "secondary", "primary"] {
        problems.push(format!(
            "{which} saw {names:?}; expected primary, secondary, primary"
        ));
    }
}

fn print_summary(s: &Summary) {
    let ms = |v: Option<u128>| v.map_or_else(|| "none".to_owned(), |v| format!("{v} ms"));
    println!();
    println!("Summary");
    println!(
        "  timing              interval {} ms, dead_after {} ms",
        s.interval_ms, s.dead_after_ms
    );
    println!("  failover            {}", ms(s.failover_ms));
    println!(
        "  longest gap         {} ms  ({} of {} requests failed; detection + assign + a poll each side = {} ms)",
        s.longest_gap_ms, s.failed_requests, s.requests, s.gap_bound_ms
    );
    println!("  failback            {}", ms(s.failback_ms));
    if let Some(v6) = &s.ipv6 {
        println!(
            "  reserved IPv6       {}: failover {}, failback {}, longest gap {} ms",
            v6.ip,
            ms(v6.failover_ms),
            ms(v6.failback_ms),
            v6.longest_gap_ms
        );
    }
    println!(
        "  provider calls      {} assign, {} moves",
        s.assign_calls, s.holder_changes
    );
    if s.ok {
        println!("  result              ok");
    } else {
        for p in &s.problems {
            println!("  problem             {p}");
        }
    }
}

/// Commands that explore the running cluster (with this ipctl, whatever is on $PATH).
fn explore(c: &Cluster) -> Vec<String> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ipctl"));
    let ipctl = exe.display();
    let mut cmds: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("{ipctl} status --run-dir {}", n.run_dir.display()))
        .collect();
    let first = c.nodes[0].run_dir.display();
    cmds.extend([
        format!("{ipctl} watch --run-dir {first}"),
        format!("{ipctl} standby --run-dir {first}"),
        format!("{ipctl} online --run-dir {first}"),
        format!("{ipctl} check-config {}", c.config.display()),
        format!("curl {}", c.front),
    ]);
    if let Some(front) = c.ipv6.and_then(|v6| c.emulator.addresses.fronts.get(&v6)) {
        cmds.push(format!("curl {front}"));
    }
    cmds
}

async fn keep_running(args: &Args, s: &Summary) {
    // With --json, stdout holds the one JSON document: the words go to stderr.
    let mut out: Box<dyn std::io::Write> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "The cluster keeps running (files in {}). Try:",
        s.cluster_dir.as_deref().unwrap_or("?")
    );
    for cmd in &s.explore {
        let _ = writeln!(out, "  {cmd}");
    }
    let _ = writeln!(out, "Ctrl-C stops everything.");
    let _ = out.flush();
    // SIGTERM too: the processes are killed when the cluster is dropped, which an
    // unhandled signal would skip.
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    let _ = writeln!(out, "stopping");
}
