//! The long soak: a real cluster (the [`crate::cluster`] launcher, the emulator as the
//! provider) under random faults drawn from a seed, with the cluster's invariants checked
//! after every fault. Driven by the `tandem-soak` command.
//!
//! Every fault is drawn from its own RNG, seeded from `(seed, index)`, and undone before the
//! next one (a killed daemon is restarted, a frozen one thawed, standby ended, provider
//! faults cleared, partitions healed), so fault `K` of a seed is the same whatever ran before
//! it: `--start-at K` on a fresh cluster replays the sequence from there (from a fresh
//! cluster: the pin a takeover or a release leaves, which lasts until the group moves, is
//! not replayed).
//!
//! After each fault the soak waits for the cluster to settle (exactly one node runs the
//! group, the emulator's holder is that node, nothing starting or stopping, no action in
//! flight, all of it stable for a while) and checks:
//! - at no status sample taken during the fault did two nodes report the group running,
//!   except within [`DOUBLE_WINDOW`] when the fault cut the holder's agent off from its own
//!   membership (the window `resource-agent/src/core/handover.rs` documents; noted, not a violation);
//! - the holder changes in the emulator's audit log are no more than the fault explains
//!   ([`Fault::explained_moves`]);
//! - no node reported the group starting or stopping for longer than [`STUCK_AFTER`] plus the
//!   provider's own downtime;
//! - the curl loop's longest gap is below detection (`dead_after`) plus assignment
//!   ([`ASSIGN_BOUND`]) plus, for provider faults, the provider's downtime and one
//!   [`START_RETRY`] (the IP moves within one backoff of the provider's recovery), plus the
//!   time nobody may rightly hold the group ([`Fault::expected_outage`]: a standby node and
//!   the other member crashed). Operator commands are each followed by a crash
//!   ([`Fault::Operator`]) that outlasts this bound, so a command that kept a live node
//!   from taking the group shows here.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tandem_proto::agent::v1 as apb;
use tandem_proto::agent::v1::agent_client::AgentClient;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{Binaries, Cluster, Daemon, GROUP, LaunchError, ProbeReport, Prober, Spec};

mod fault;

use fault::secs;
pub use fault::{Command, Crash, Described, Fault, ProviderFault, Target};

/// The curl loop's period.
const PROBE_PERIOD: Duration = Duration::from_millis(100);
/// Period of the status sampler (every member's agent is asked for the group's state).
const SAMPLE_PERIOD: Duration = Duration::from_millis(100);
/// Limit of one status call of the sampler; a frozen agent never answers.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(400);
/// Time for the cluster to settle after a fault is undone (on top of the fault's own
/// provider downtime): a rebooted node's `init_dead` + `settle` + a handover, with room for
/// a shared, slow machine.
const SETTLE_LIMIT: Duration = Duration::from_secs(40);
/// How long the settled state must hold before the checks run (a returning preferred node
/// waits for its agent's `settle`, 2 s, before it takes the group back).
const STABLE_FOR: Duration = Duration::from_secs(4);
/// Longest time a node may report the group starting or stopping, beyond provider downtime.
pub const STUCK_AFTER: Duration = Duration::from_secs(20);
/// The node the group prefers (the launcher's default: the first member).
const PREFERRED: usize = 0;
/// The documented window in which two agents may both report the group running: the
/// holder's agent cut off from its own membership (killed, frozen, partitioned) cannot know
/// that the peer took over, until its reserved-ip monitor (every second in the launcher's
/// configuration) finds the IP elsewhere; see the module doc of `core/handover.rs`.
pub const DOUBLE_WINDOW: Duration = Duration::from_secs(2);
/// The agent's default `start_retry` (`core::Timers`): after a start failed against the
/// provider, the node retries the group this much later.
pub const START_RETRY: Duration = Duration::from_secs(10);
/// Assignment time allowed in the gap bound: the emulator's action delay, the agent's poll,
/// a retry, and scheduling on a loaded machine.
pub const ASSIGN_BOUND: Duration = Duration::from_secs(3);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub duration: Duration,
    /// Member nodes plus a witness: 2 (two members, `two_node`) or 3 (two members and a
    /// witness, `majority`).
    pub nodes: usize,
    /// Membership daemons in network namespaces; adds partitions (with a witness) and loss.
    pub netns: bool,
    /// Index of the first fault (replay).
    pub start_at: u64,
    /// Stop after this many faults (replay of a single one), whatever the duration.
    pub max_faults: Option<u64>,
}

impl Options {
    /// The command line that replays from fault `index`.
    pub fn replay(&self, index: u64) -> String {
        format!(
            "tandem-soak --seed {} --nodes {} --start-at {index} --max-faults 1{}",
            self.seed,
            self.nodes,
            if self.netns { " --netns" } else { "" }
        )
    }
}

/// An invariant that did not hold.
#[derive(Debug, Clone)]
pub struct Violation {
    pub index: u64,
    /// Time since the soak began.
    pub at: Duration,
    pub what: String,
}

/// What the soak did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub faults: u64,
    pub violations: Vec<Violation>,
    pub moves: usize,
    pub relaunches: usize,
    pub longest_gap: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("launching the cluster: {0}")]
    Launch(#[from] LaunchError),
    #[error("{0}")]
    Setup(String),
}

/// One status sample of every member's agent.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// Members reporting the group running.
    running: Vec<usize>,
    /// Members reporting it starting or stopping.
    moving: Vec<usize>,
}

/// Samples every member's agent status in the background.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: JoinHandle<()>,
}

async fn group_state(sock: PathBuf) -> Option<i32> {
    let call = async {
        let ch = tandem_proto::uds::connect(&sock).await.ok()?;
        let s = AgentClient::new(ch)
            .status(apb::StatusRequest {})
            .await
            .ok()?
            .into_inner();
        s.groups
            .into_iter()
            .find(|g| g.name == GROUP)
            .map(|g| g.state)
    };
    tokio::time::timeout(SAMPLE_TIMEOUT, call)
        .await
        .ok()
        .flatten()
}

impl Sampler {
    fn start(socks: Vec<PathBuf>) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                let at = Instant::now();
                let states =
                    futures::future::join_all(socks.iter().cloned().map(group_state)).await;
                let pick = |want: &[apb::GroupState]| -> Vec<usize> {
                    states
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.is_some_and(|s| want.iter().any(|w| *w as i32 == s)))
                        .map(|(i, _)| i)
                        .collect()
                };
                let sample = Sample {
                    at,
                    running: pick(&[apb::GroupState::Running]),
                    moving: pick(&[apb::GroupState::Starting, apb::GroupState::Stopping]),
                };
                out.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                tokio::time::sleep_until(at + SAMPLE_PERIOD).await;
            }
        });
        Sampler { samples, task }
    }

    /// Takes every sample so far.
    fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running cluster with its observers.
struct Rig {
    c: Cluster,
    sampler: Sampler,
    prober: Prober,
    names: Vec<String>,
    /// What happened while applying a fault that is no violation (an operator command the
    /// agent refused, as it may: e.g. a release with no other candidate).
    notes: Vec<String>,
}

impl Rig {
    async fn launch(opts: &Options, bins: &Binaries) -> Result<Rig, SoakError> {
        let mut spec = Spec::fast(bins.clone());
        if opts.nodes >= 3 {
            spec.witness = Some("witness".into());
        }
        spec.network = opts.netns.then(crate::netns::namespaces);
        spec.log_filter = "info".into();
        let c = Cluster::start(spec).await?;
        let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
        let socks = (0..2).map(|i| c.socket(i, Daemon::Agent)).collect();
        let rig = Rig {
            sampler: Sampler::start(socks),
            prober: c.probe(PROBE_PERIOD),
            c,
            names,
            notes: Vec::new(),
        };
        Ok(rig)
    }

    fn holder(&self) -> Option<usize> {
        let h = self.c.holder()?;
        self.names.iter().position(|n| *n == h)
    }

    /// Waits until the group has settled: one node runs it, the emulator agrees, nothing is
    /// starting, stopping or in flight, for [`STABLE_FOR`]. `Err` says what was last seen.
    async fn settle(&self, limit: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        let mut stable_since: Option<Instant> = None;
        let mut last = String::new();
        loop {
            let mut states = Vec::new();
            for i in 0..2 {
                states.push(group_state(self.c.socket(i, Daemon::Agent)).await);
            }
            let running: Vec<usize> = (0..2)
                .filter(|&i| states[i] == Some(apb::GroupState::Running as i32))
                .collect();
            let quiet = states.iter().all(|s| {
                *s == Some(apb::GroupState::Running as i32)
                    || *s == Some(apb::GroupState::Stopped as i32)
            });
            let holder = self.holder();
            let ok = running.len() == 1
                && holder == Some(running[0])
                && quiet
                && self.c.emulator.running_actions() == 0;
            let now = Instant::now();
            if ok {
                let since = *stable_since.get_or_insert(now);
                if now.duration_since(since) >= STABLE_FOR {
                    return Ok(since.duration_since(t0));
                }
            } else {
                stable_since = None;
                last = format!(
                    "agents report {}; emulator holder {}",
                    (0..2)
                        .map(|i| format!(
                            "{}={}",
                            self.names[i],
                            states[i]
                                .and_then(|s| apb::GroupState::try_from(s).ok())
                                .map_or("no answer".into(), |s| s.as_str_name().to_lowercase())
                        ))
                        .collect::<Vec<_>>()
                        .join(", "),
                    holder.map_or("nobody", |h| self.names[h].as_str())
                );
            }
            if now.duration_since(t0) >= limit {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An operator command; a refusal is noted, not an error (the agent may refuse).
    async fn operator(&mut self, i: usize, what: &str) -> Result<(), String> {
        match self.agent_call(i, what).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.notes.push(format!("refused: {e}"));
                Err(e)
            }
        }
    }

    async fn agent_call(&self, i: usize, what: &str) -> Result<(), String> {
        let mut a = self
            .c
            .agent(i)
            .await
            .ok_or_else(|| format!("{}: agent socket unreachable", self.names[i]))?;
        let group = GROUP.to_owned();
        let r = match what {
            "standby" => a.standby(apb::StandbyRequest::default()).await.map(|_| ()),
            "online" => a.online(apb::OnlineRequest::default()).await.map(|_| ()),
            "takeover" => a.takeover(apb::TakeoverRequest { group }).await.map(|_| ()),
            _ => a.release(apb::ReleaseRequest { group }).await.map(|_| ()),
        };
        r.map_err(|e| format!("{what} on {}: {}", self.names[i], e.message()))
    }

    fn kill(&mut self, node: usize, target: Target) {
        match target {
            Target::One(d) => {
                self.c.kill9(node, d);
            }
            Target::Node => {
                self.c.crash_node(node);
            }
        }
    }

    async fn revive(&mut self, node: usize, target: Target) -> Result<(), String> {
        let r = match target {
            Target::One(d) => self.c.restart(node, d).await.map(|_| ()),
            Target::Node if self.c.nodes[node].witness => {
                self.c.restart(node, Daemon::Membership).await.map(|_| ())
            }
            Target::Node => self.c.boot_node(node).await.map(|_| ()),
        };
        r.map_err(|e| format!("restarting {}: {e}", self.names[node]))
    }

    fn freeze(&mut self, node: usize, target: Target, stop: bool) {
        let daemons: &[Daemon] = match target {
            Target::One(d) => &[d][..],
            Target::Node if self.c.nodes[node].witness => &[Daemon::Membership],
            // Membership first on the way down, last on the way up: the agent of a paused
            // machine never sees its own membership run alone.
            Target::Node if stop => &[Daemon::Membership, Daemon::Agent],
            Target::Node => &[Daemon::Agent, Daemon::Membership],
        };
        for d in daemons {
            self.c.freeze(node, *d, stop);
        }
    }

    fn net(&self) -> Result<&crate::netns::Net, String> {
        crate::netns::of(&self.c).ok_or_else(|| "network faults need --netns".to_owned())
    }

    /// Applies `fault` and undoes it. `Err`: the fault could not be applied as drawn.
    async fn apply(&mut self, fault: &Fault) -> Result<(), String> {
        match fault {
            Fault::Kill { node, target, down } => {
                self.kill(*node, *target);
                tokio::time::sleep(*down).await;
                self.revive(*node, *target).await
            }
            Fault::Freeze {
                node,
                target,
                stopped,
            } => {
                self.freeze(*node, *target, true);
                tokio::time::sleep(*stopped).await;
                self.freeze(*node, *target, false);
                Ok(())
            }
            Fault::Provider {
                fault,
                lasts,
                crash_holder,
            } => {
                let faults = match fault {
                    ProviderFault::Errors { status } => {
                        json!({"error_rate": 1.0, "error_status": status})
                    }
                    ProviderFault::RateLimit { burst, reset_secs } => {
                        json!({"rate_limit_burst": burst, "rate_limit_reset_secs": reset_secs})
                    }
                    ProviderFault::Slow { latency_ms } => json!({"latency_ms": latency_ms}),
                    ProviderFault::Down => json!({"outage_secs": lasts.as_secs().max(1)}),
                    ProviderFault::ErroredActions { n } => json!({"error_actions": n}),
                };
                self.c.emulator.set_faults(faults).await;
                let holder = self.holder();
                let crashed = match (crash_holder, holder) {
                    (true, Some(h)) => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        self.c.crash_node(h);
                        Some(h)
                    }
                    _ => None,
                };
                tokio::time::sleep(*lasts).await;
                self.c.emulator.set_faults(json!({})).await;
                match crashed {
                    Some(h) => {
                        // The survivor must get the IP before the old holder returns: a
                        // failover against a failing provider, then the failback.
                        let survivor = self.names[1 - h].clone();
                        let moved = crate::cluster::wait_for(SETTLE_LIMIT, || async {
                            (self.c.holder().as_deref() == Some(survivor.as_str())).then_some(())
                        })
                        .await;
                        let booted = self.revive(h, Target::Node).await;
                        match moved {
                            Some(()) => booted,
                            None => Err(format!(
                                "{survivor} did not take the IP over within {} after the provider recovered",
                                secs(SETTLE_LIMIT)
                            )),
                        }
                    }
                    None => Ok(()),
                }
            }
            Fault::Standby { node, lasts } => {
                if self.operator(*node, "standby").await.is_ok() {
                    tokio::time::sleep(*lasts).await;
                    self.agent_call(*node, "online").await?;
                }
                Ok(())
            }
            Fault::Takeover { node } => {
                let _ = self.operator(*node, "takeover").await;
                Ok(())
            }
            Fault::Operator {
                command,
                node,
                crash,
                down,
            } => {
                let target = match command {
                    Command::Release => self.holder().ok_or("release: nobody holds the IP")?,
                    _ => *node,
                };
                let done = self.operator(target, command.verb()).await.is_ok();
                // The crash hits what the command left: the move it made has settled.
                if let Err(why) = self.settle(SETTLE_LIMIT).await {
                    self.notes
                        .push(format!("not settled after the command: {why}"));
                }
                let holder = self.holder().unwrap_or(target);
                let victim = match crash {
                    Crash::Holder => holder,
                    Crash::Other => 1 - holder,
                };
                self.c.crash_node(victim);
                tokio::time::sleep(*down).await;
                self.revive(victim, Target::Node).await?;
                if *command == Command::Standby && done {
                    self.agent_call(target, "online").await?;
                }
                Ok(())
            }
            Fault::Partition { node, lasts } => {
                self.c.partition(*node).map_err(|e| e.to_string())?;
                tokio::time::sleep(*lasts).await;
                self.c.heal().map(|_| ()).map_err(|e| e.to_string())
            }
            Fault::Loss { percent, lasts } => {
                self.net()?
                    .random_loss(*percent)
                    .map_err(|e| e.to_string())?;
                tokio::time::sleep(*lasts).await;
                self.net()?.heal().map_err(|e| e.to_string())
            }
        }
    }
}

/// Longest time a node reported the group starting or stopping without a break.
fn longest_moving(samples: &[Sample], node: usize) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since: Option<Instant> = None;
    for s in samples {
        if s.moving.contains(&node) {
            let t = *since.get_or_insert(s.at);
            longest = longest.max(s.at.duration_since(t));
        } else {
            since = None;
        }
    }
    longest
}

/// Runs the soak, printing one line per fault and each violation through `out`.
pub async fn run(
    opts: &Options,
    bins: &Binaries,
    out: &mut dyn FnMut(&str),
) -> Result<Summary, SoakError> {
    if opts.nodes != 2 && opts.nodes != 3 {
        return Err(SoakError::Setup(format!(
            "--nodes {}: 2 (two members) or 3 (two members and a witness)",
            opts.nodes
        )));
    }
    if opts.netns
        && let Some(why) = crate::netns::unavailable()
    {
        return Err(SoakError::Setup(format!("--netns: {why}")));
    }
    let began = Instant::now();
    let mut summary = Summary::default();
    let mut rig = Rig::launch(opts, bins).await?;
    let dead_after = rig.c.spec.dead_after;
    out(&format!(
        "soak: seed {} from fault {}, {} nodes{}, duration {}, dead_after {}; cluster in {}",
        opts.seed,
        opts.start_at,
        opts.nodes,
        if opts.netns {
            " in namespaces"
        } else {
            " on loopback"
        },
        humantime::format_duration(opts.duration),
        secs(dead_after),
        rig.c.path.display()
    ));
    if let Err(why) = rig.settle(SETTLE_LIMIT).await {
        return Err(SoakError::Setup(format!(
            "the new cluster never settled: {why}"
        )));
    }
    rig.sampler.take();
    let mut index = opts.start_at;
    while began.elapsed() < opts.duration && opts.max_faults.is_none_or(|m| summary.faults < m) {
        let fault = Fault::draw(opts.seed, index, opts, dead_after);
        let holder = rig.holder();
        let explained = fault.explained_moves(holder, 2);
        let t0 = Instant::now();
        let wall0 = SystemTime::now();
        let probe_from = rig.prober.report().samples.len();
        let at = began.elapsed();
        let mut problems: Vec<String> = Vec::new();
        if let Err(e) = rig.apply(&fault).await {
            problems.push(format!("applying the fault: {e}"));
        }
        let downtime = fault.provider_downtime();
        let settled = rig.settle(SETTLE_LIMIT + downtime).await;
        let samples = rig.sampler.take();
        let samples: Vec<Sample> = samples.into_iter().filter(|s| s.at >= t0).collect();
        let doubles: Vec<&Sample> = samples.iter().filter(|s| s.running.len() > 1).collect();
        if let (Some(first), Some(last)) = (doubles.first(), doubles.last()) {
            let span = last.at.duration_since(first.at) + SAMPLE_PERIOD;
            let what = format!(
                "two nodes reported the group running in {} samples, from {} to {} after the fault began",
                doubles.len(),
                secs(first.at.duration_since(t0)),
                secs(last.at.duration_since(t0))
            );
            if fault.may_run_twice(holder) && span <= DOUBLE_WINDOW {
                rig.notes.push(format!("{what} (the documented window)"));
            } else {
                problems.push(what);
            }
        }
        let moves = rig
            .c
            .holder_changes()
            .into_iter()
            .filter(|h| h.at >= wall0)
            .count();
        if moves > explained {
            problems.push(format!(
                "{moves} holder changes, the fault explains {explained}"
            ));
        }
        for n in 0..2 {
            let stuck = longest_moving(&samples, n);
            if stuck > STUCK_AFTER + downtime {
                problems.push(format!(
                    "{} reported starting/stopping for {}",
                    rig.names[n],
                    secs(stuck)
                ));
            }
        }
        let gap = ProbeReport::from_samples(rig.prober.since(probe_from)).longest_gap;
        // A start that failed against the provider is retried after the agent's
        // `start_retry`: the IP moves within one such backoff of the provider's recovery.
        let retry = if matches!(fault, Fault::Provider { .. }) {
            START_RETRY
        } else {
            Duration::ZERO
        };
        let gap_bound = dead_after
            + ASSIGN_BOUND
            + downtime
            + retry
            + fault.expected_outage()
            + 2 * PROBE_PERIOD;
        if gap > gap_bound {
            problems.push(format!(
                "the curl loop went {} without an answer (bound {})",
                secs(gap),
                secs(gap_bound)
            ));
        }
        let settle_note = match &settled {
            Ok(d) => format!("settled in {}", secs(*d)),
            Err(why) => {
                problems.push(format!(
                    "not settled within {}: {why}",
                    secs(SETTLE_LIMIT + downtime)
                ));
                "NOT settled".into()
            }
        };
        summary.faults += 1;
        summary.moves += moves;
        summary.longest_gap = summary.longest_gap.max(gap);
        out(&format!(
            "[{:>8}] fault {index}: {} (holder {}) -> {settle_note}, moves {moves}/{explained}, longest gap {}",
            secs(at),
            Described(&fault, &rig.names),
            holder.map_or("nobody", |h| rig.names[h].as_str()),
            secs(gap)
        ));
        for n in rig.notes.drain(..) {
            out(&format!("  note: {n}"));
        }
        for what in problems {
            out(&format!(
                "VIOLATION seed {} fault {index} at {}: {what}\n  fault: {}\n  replay: {}\n  logs: {}",
                opts.seed,
                secs(at),
                Described(&fault, &rig.names),
                opts.replay(index),
                rig.c.path.display()
            ));
            summary.violations.push(Violation { index, at, what });
        }
        index += 1;
        if settled.is_err() && began.elapsed() < opts.duration {
            // What follows would compound this fault: start over on a fresh cluster (the
            // old one's directory is kept for its logs).
            let kept = rig.c.keep_dir();
            out(&format!(
                "relaunching the cluster (logs kept in {})",
                kept.display()
            ));
            drop(rig);
            rig = Rig::launch(opts, bins).await?;
            summary.relaunches += 1;
            if let Err(why) = rig.settle(SETTLE_LIMIT).await {
                return Err(SoakError::Setup(format!(
                    "the new cluster never settled: {why}"
                )));
            }
            rig.sampler.take();
        }
    }
    if !summary.violations.is_empty() {
        rig.c.keep_dir();
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_time_is_the_longest_unbroken_run() {
        let t = Instant::now();
        let s = |ms: u64, moving: bool| Sample {
            at: t + Duration::from_millis(ms),
            running: vec![],
            moving: if moving { vec![1] } else { vec![] },
        };
        let samples = [
            s(0, true),
            s(100, true),
            s(200, false),
            s(300, true),
            s(600, true),
        ];
        assert_eq!(longest_moving(&samples, 1), Duration::from_millis(300));
        assert_eq!(longest_moving(&samples, 0), Duration::ZERO);
    }
}
