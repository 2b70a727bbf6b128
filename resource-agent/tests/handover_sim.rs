//! Deterministic simulation of several nodes running the handover state machine: seeded
//! message loss and reordering, membership that notices deaths late (and at different times
//! on different nodes), node crashes and restarts, standby and health changes. Checks that
//! a group never runs on two live nodes at once and that the cluster converges to placement.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tandem_config::{Failback, Role};
use tandem_resource_agent::core::placement::{self, GroupView, NodeView};
use tandem_resource_agent::core::restart::RestartPolicy;
use tandem_resource_agent::core::{
    ActionRecord, AgentOutcome, Announce, Cause, Command, Config, Constraint, ConstraintKind, Core,
    DeathReason, Event as CoreEvent, GroupChange, GroupEvent, GroupSpec, Input, LocalState,
    MemberNode, MemberState, Membership, Message, Output, Quorum, StartCause, Time, Timers,
    worst_case_announcement,
};

const STEP_MS: u64 = 10;

#[derive(Debug, Clone)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        generation: u64,
        payload: Vec<u8>,
    },
    AgentDone {
        node: usize,
        life: u64,
        group: String,
        outcome: AgentOutcome,
    },
    ViewUpdate {
        node: usize,
        life: u64,
        of: usize,
        alive: bool,
        generation: u64,
    },
}

struct SimNode {
    hv: Option<Core>,
    life: u64,
    /// Groups whose start was issued and whose stop has not completed: really running.
    active: BTreeSet<String>,
    /// This node's membership view of the others: (alive, generation).
    view: Vec<(bool, u64)>,
    standby: bool,
    healthy: bool,
    /// Cut off from its membership daemon: no views, no messages.
    disconnected: bool,
    /// How many of the next starts of each group fail (cleanly).
    fail_starts: BTreeMap<String, u32>,
}

struct Sim {
    rng: SmallRng,
    base: Time,
    t: u64,
    seq: u64,
    names: Vec<String>,
    roles: Vec<Role>,
    groups: Vec<GroupSpec>,
    nodes: Vec<SimNode>,
    events: BTreeMap<(u64, u64), Event>,
    loss: f64,
    max_delay_ms: u64,
    /// Largest delay before a node's membership notices a change elsewhere.
    view_lag_ms: (u64, u64),
    violations: Vec<String>,
    starts: usize,
    /// Restarts the cores asked for (monitor failures).
    restarts: usize,
    takeovers: usize,
    allow_takeover: bool,
    /// Pairs (lower index first) that cannot reach each other.
    cut: BTreeSet<(usize, usize)>,
    /// Checks against the provider asked for (node, group). The simulated resources are
    /// like LSB services, whose monitors cannot see another node's hold: never answered.
    verifies: Vec<(usize, String)>,
}

/// One restart here, then the group is given up.
fn restart_policy() -> RestartPolicy {
    RestartPolicy {
        max_restarts: 1,
        window: Duration::from_secs(60),
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    }
}

fn timers() -> Timers {
    Timers {
        announce_interval: Duration::from_millis(500),
        claim_retry: Duration::from_millis(100),
        peer_stale_after: Duration::from_secs(5),
        settle: Duration::from_millis(500),
        stop_retry: Duration::from_millis(200),
        stop_retry_max: Duration::from_secs(2),
        start_retry: Duration::from_secs(1),
        start_retry_max: Duration::from_secs(4),
    }
}

impl Sim {
    fn new(seed: u64, names: &[&str], roles: &[Role], groups: Vec<GroupSpec>) -> Sim {
        let n = names.len();
        let mut sim = Sim {
            rng: SmallRng::seed_from_u64(seed),
            base: Time::ZERO,
            t: 0,
            seq: 0,
            names: names.iter().map(|s| s.to_string()).collect(),
            roles: roles.to_vec(),
            groups,
            nodes: (0..n)
                .map(|_| SimNode {
                    hv: None,
                    life: 0,
                    active: BTreeSet::new(),
                    view: vec![(true, 1); n],
                    standby: false,
                    healthy: true,
                    disconnected: false,
                    fail_starts: BTreeMap::new(),
                })
                .collect(),
            events: BTreeMap::new(),
            loss: 0.0,
            max_delay_ms: 30,
            view_lag_ms: (200, 1200),
            violations: Vec::new(),
            starts: 0,
            restarts: 0,
            takeovers: 0,
            allow_takeover: false,
            cut: BTreeSet::new(),
            verifies: Vec::new(),
        };
        for i in 0..n {
            sim.boot(i);
        }
        // Everything started together: every membership knows everyone from the start.
        for i in 0..n {
            sim.nodes[i].view = vec![(true, 1); n];
            let v = sim.snapshot_of(i);
            sim.feed(i, Input::Membership(v));
        }
        sim
    }

    fn now(&self) -> Time {
        self.base + Duration::from_millis(self.t)
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].hv.is_some()
    }

    fn schedule(&mut self, delay_ms: u64, ev: Event) {
        self.seq += 1;
        self.events.insert((self.t + delay_ms, self.seq), ev);
    }

    fn cfg(&self, i: usize) -> Config {
        Config {
            local: self.names[i].clone(),
            nodes: self
                .names
                .iter()
                .cloned()
                .zip(self.roles.iter().copied())
                .collect(),
            groups: self.groups.clone(),
            timers: timers(),
            dead_after: Duration::from_secs(1),
            restart: restart_policy(),
            longest_monitor: Duration::from_secs(10),
        }
    }

    /// Node i's membership quorum, by its view: majority with three nodes or more, always
    /// with two (`two_node`).
    fn quorum_of(&self, i: usize) -> Quorum {
        let n = self.names.len();
        let alive = self.nodes[i]
            .view
            .iter()
            .enumerate()
            .filter(|(j, v)| *j == i || v.0)
            .count();
        if n == 2 {
            Quorum {
                quorate: true,
                needed: 1,
            }
        } else {
            Quorum {
                quorate: alive * 2 > n,
                needed: (n / 2 + 1) as u32,
            }
        }
    }

    /// What node i's membership sends first on connecting.
    fn snapshot_of(&self, i: usize) -> Membership {
        let n = &self.nodes[i];
        Membership::Snapshot {
            quorum: self.quorum_of(i),
            nodes: (0..self.names.len())
                .map(|j| MemberNode {
                    name: self.names[j].clone(),
                    state: if j == i || n.view[j].0 {
                        MemberState::Up
                    } else {
                        MemberState::Dead
                    },
                    generation: n.view[j].1,
                })
                .collect(),
        }
    }

    /// Start (or restart) node i's agent: a crashed machine comes back with nothing running.
    fn boot(&mut self, i: usize) {
        self.boot_running(i, &[]);
    }

    /// Boots node i with `running` found running by the agents' probe (a node that kept
    /// its services through a restart, or both sides of a healed partition).
    fn boot_running(&mut self, i: usize, running: &[&str]) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("t={} BOOT {} running {running:?}", self.t, self.names[i]);
        }
        let now = self.now();
        let cfg = self.cfg(i);
        let node = &mut self.nodes[i];
        node.life += 1;
        node.active = running.iter().map(|s| s.to_string()).collect();
        let running: Vec<String> = running.iter().map(|s| s.to_string()).collect();
        let mut hv = Core::new(cfg, node.life, &running, node.standby, now).expect("valid config");
        hv.handle(now, Input::Health(node.healthy));
        node.hv = Some(hv);
        // The restarted node sees the truth at once; the others learn late.
        let truth: Vec<(bool, u64)> = (0..self.names.len())
            .map(|j| (self.alive(j), self.nodes[j].life))
            .collect();
        self.nodes[i].view = truth;
        let v = self.snapshot_of(i);
        self.feed(i, Input::Membership(v));
        self.announce_truth_change(i);
    }

    /// Cuts i and j apart: each one's membership declares the other dead after its lag.
    fn partition(&mut self, i: usize, j: usize) {
        self.cut.insert((i.min(j), i.max(j)));
        self.tell_views(i, j, false);
    }

    /// Reconnects i and j: each sees the other up again with the same generation.
    fn heal(&mut self, i: usize, j: usize) {
        self.cut.remove(&(i.min(j), i.max(j)));
        self.tell_views(i, j, true);
    }

    fn tell_views(&mut self, i: usize, j: usize, alive: bool) {
        for (node, of) in [(i, j), (j, i)] {
            let lag = self
                .rng
                .random_range(self.view_lag_ms.0..=self.view_lag_ms.1);
            let (life, generation) = (self.nodes[node].life, self.nodes[of].life);
            self.schedule(
                lag,
                Event::ViewUpdate {
                    node,
                    life,
                    of,
                    alive,
                    generation,
                },
            );
        }
    }

    fn kill(&mut self, i: usize) {
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!("t={} KILL {}", self.t, self.names[i]);
        }
        let node = &mut self.nodes[i];
        node.hv = None;
        node.active.clear();
        self.announce_truth_change(i);
    }

    fn announce_truth_change(&mut self, i: usize) {
        let alive = self.alive(i);
        let generation = self.nodes[i].life;
        for j in 0..self.names.len() {
            if j != i && self.alive(j) {
                let lag = self
                    .rng
                    .random_range(self.view_lag_ms.0..=self.view_lag_ms.1);
                let life = self.nodes[j].life;
                self.schedule(
                    lag,
                    Event::ViewUpdate {
                        node: j,
                        life,
                        of: i,
                        alive,
                        generation,
                    },
                );
            }
        }
    }

    fn feed(&mut self, i: usize, input: Input) {
        let now = self.now();
        let Some(hv) = self.nodes[i].hv.as_mut() else {
            return;
        };
        hv.handle(now, input);
        self.drain(i);
    }

    /// Node i's membership sees `of` up or dead: the event, then the quorum change it
    /// causes, as membership reports them.
    fn membership_event(&mut self, i: usize, of: usize, alive: bool, generation: u64) {
        let before = self.quorum_of(i);
        self.nodes[i].view[of] = (alive, generation);
        let node = self.names[of].clone();
        let ev = if alive {
            Membership::NodeUp { node, generation }
        } else {
            Membership::NodeDead {
                node,
                generation,
                reason: DeathReason::Silent,
            }
        };
        self.feed(i, Input::Membership(ev));
        let after = self.quorum_of(i);
        if after != before {
            self.feed(i, Input::Membership(Membership::QuorumChanged(after)));
        }
    }

    fn command(&mut self, i: usize, cmd: Command) -> Result<String, String> {
        let now = self.now();
        let hv = self.nodes[i].hv.as_mut().ok_or("node down")?;
        let r = hv.command(now, cmd).map_err(|e| e.to_string());
        self.drain(i);
        r
    }

    fn drain(&mut self, i: usize) {
        let outputs = self.nodes[i]
            .hv
            .as_mut()
            .map(|h| h.drain_outputs())
            .unwrap_or_default();
        let life = self.nodes[i].life;
        for out in outputs {
            if std::env::var_os("SIM_TRACE").is_some() {
                let shown = match &out {
                    Output::Send { to, payload } => {
                        format!("send to {to:?}: {}", String::from_utf8_lossy(payload))
                    }
                    o => format!("{o:?}"),
                };
                eprintln!("t={} {}: {shown}", self.t, self.names[i]);
            }
            match out {
                Output::Start { group: g, .. } => {
                    self.starts += 1;
                    self.nodes[i].active.insert(g.clone());
                    let holders: Vec<&str> = (0..self.names.len())
                        .filter(|&j| self.alive(j) && self.nodes[j].active.contains(&g))
                        .map(|j| self.names[j].as_str())
                        .collect();
                    if holders.len() > 1 {
                        self.violations
                            .push(format!("t={}ms group {g} runs on {holders:?}", self.t));
                    }
                    let failing = self.nodes[i].fail_starts.get_mut(&g).filter(|n| **n > 0);
                    let outcome = if let Some(n) = failing {
                        *n -= 1;
                        AgentOutcome::StartFailed {
                            clean: true,
                            reason: "exit 1".into(),
                        }
                    } else {
                        AgentOutcome::Started
                    };
                    let d = self.rng.random_range(10..200);
                    self.schedule(
                        d,
                        Event::AgentDone {
                            node: i,
                            life,
                            group: g,
                            outcome,
                        },
                    );
                }
                Output::Stop(g) => {
                    let d = self.rng.random_range(10..200);
                    self.schedule(
                        d,
                        Event::AgentDone {
                            node: i,
                            life,
                            group: g,
                            outcome: AgentOutcome::Stopped,
                        },
                    );
                }
                Output::Send { .. } if self.nodes[i].disconnected => {}
                Output::Send { to, payload } => {
                    let targets: Vec<usize> = match to {
                        Some(name) => vec![
                            self.names
                                .iter()
                                .position(|n| *n == name)
                                .expect("known node"),
                        ],
                        None => (0..self.names.len()).filter(|&j| j != i).collect(),
                    };
                    for to in targets {
                        if self.rng.random_bool(self.loss)
                            || self.cut.contains(&(i.min(to), i.max(to)))
                        {
                            continue;
                        }
                        let d = self.rng.random_range(1..=self.max_delay_ms);
                        self.schedule(
                            d,
                            Event::Deliver {
                                to,
                                from: i,
                                generation: life,
                                payload: payload.clone(),
                            },
                        );
                    }
                }
                Output::Restart { group, after } => {
                    self.restarts += 1;
                    let d = after.as_millis() as u64 + self.rng.random_range(10..200);
                    self.schedule(
                        d,
                        Event::AgentDone {
                            node: i,
                            life,
                            group,
                            outcome: AgentOutcome::Restarted,
                        },
                    );
                }
                // The simulated agents count no failures of their own.
                Output::Forgive(_) => {}
                Output::PersistStandby(on) => self.nodes[i].standby = on,
                Output::Verify(g) => self.verifies.push((i, g)),
                Output::Fence { node, .. } => {
                    self.violations
                        .push(format!("t={}ms a fence of {node} without fencing", self.t));
                }
                Output::Event(_) => {}
                // Every notice is a fence outcome this node sent, within membership's limit.
                Output::Notice(p) => {
                    let n = tandem_resource_agent::core::notice::FenceNotice::decode(&p);
                    if p.len() > 900 || n.as_ref().is_none_or(|n| n.by != self.names[i]) {
                        self.violations.push(format!(
                            "t={}ms {}: bad notice {}",
                            self.t,
                            self.names[i],
                            String::from_utf8_lossy(&p)
                        ));
                    }
                }
            }
        }
    }

    fn process(&mut self, ev: Event) {
        if std::env::var_os("SIM_TRACE").is_some() && !matches!(ev, Event::Deliver { .. }) {
            eprintln!("t={} event {ev:?}", self.t);
        }
        match ev {
            Event::Deliver {
                to,
                from,
                generation,
                payload,
            } => {
                if self.nodes[to].disconnected {
                    return;
                }
                let from = self.names[from].clone();
                self.feed(
                    to,
                    Input::Message {
                        from,
                        generation,
                        payload,
                    },
                );
            }
            Event::AgentDone {
                node,
                life,
                group,
                outcome,
            } => {
                if self.nodes[node].life != life || !self.alive(node) {
                    return;
                }
                if matches!(
                    outcome,
                    AgentOutcome::Stopped | AgentOutcome::StartFailed { .. }
                ) {
                    self.nodes[node].active.remove(&group);
                }
                self.feed(
                    node,
                    Input::Agent {
                        group,
                        outcome,
                        actions: Vec::new(),
                    },
                );
            }
            Event::ViewUpdate {
                node,
                life,
                of,
                alive,
                generation,
            } => {
                if self.nodes[node].life != life {
                    return;
                }
                // A disconnected node learns the view when it reconnects (not simulated).
                if self.nodes[node].disconnected {
                    return;
                }
                // Membership's events are ordered: news of an older incarnation is stale.
                if generation < self.nodes[node].view[of].1 {
                    return;
                }
                // A node that restarted before its death was noticed is seen as a new
                // incarnation (the later update), never as dead.
                if !alive && self.nodes[of].life > generation {
                    return;
                }
                self.membership_event(node, of, alive, generation);
            }
        }
    }

    /// Advance by one step: deliver due events, then tick due nodes.
    fn step(&mut self) {
        self.t += STEP_MS;
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > self.t {
                break;
            }
            let ev = entry.remove();
            self.process(ev);
        }
        let now = self.now();
        for i in 0..self.names.len() {
            if self.nodes[i]
                .hv
                .as_ref()
                .is_some_and(|h| h.next_deadline() <= now)
            {
                self.feed(i, Input::Tick);
            }
        }
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / STEP_MS {
            self.step();
        }
    }

    /// Random faults and operator actions for one step.
    fn chaos(&mut self) {
        let n = self.names.len();
        let i = self.rng.random_range(0..n);
        let roll: f64 = self.rng.random();
        if roll < 0.0008 && self.alive(i) && (0..n).filter(|&j| self.alive(j)).count() > 1 {
            self.kill(i);
        } else if roll < 0.004 && !self.alive(i) {
            self.boot(i);
        } else if roll < 0.0048 && self.alive(i) {
            let on = !self.nodes[i].standby;
            let cmd = if on {
                Command::Standby(None)
            } else {
                Command::Online(None)
            };
            let _ = self.command(i, cmd);
        } else if roll < 0.0056 && self.alive(i) {
            self.nodes[i].healthy = !self.nodes[i].healthy;
            let h = self.nodes[i].healthy;
            self.feed(i, Input::Health(h));
        } else if roll < 0.006 && self.alive(i) && self.allow_takeover {
            self.takeovers += 1;
            let g = self.groups[self.rng.random_range(0..self.groups.len())]
                .name
                .clone();
            let _ = self.command(i, Command::Takeover(g));
        } else if roll < 0.0065 && self.alive(i) && self.allow_takeover {
            // A release moves a group like a takeover of the next candidate.
            self.takeovers += 1;
            let g = self.groups[self.rng.random_range(0..self.groups.len())]
                .name
                .clone();
            let _ = self.command(i, Command::Release(g));
        }
    }

    /// Everything alive, no loss: each group runs exactly where placement (fed the truth)
    /// says, every node agrees, nobody else runs it.
    fn assert_converged(&self) {
        let now = self.now();
        for (gi, g) in self.groups.iter().enumerate() {
            let running: Vec<usize> = (0..self.names.len())
                .filter(|&j| self.alive(j) && self.nodes[j].active.contains(&g.name))
                .collect();
            assert!(running.len() <= 1, "group {} runs on {running:?}", g.name);
            let nodes: Vec<NodeView<'_>> = (0..self.names.len())
                .map(|j| NodeView {
                    name: &self.names[j],
                    role: self.roles[j],
                    up: self.alive(j),
                    standby: self.nodes[j].standby,
                    healthy: self.nodes[j].healthy,
                })
                .collect();
            let holder = running.first().map(|&j| self.names[j].as_str());
            let expected = placement::desired_holder(
                &nodes,
                true,
                &GroupView {
                    prefer: g.prefer.as_deref(),
                    failback: g.failback,
                    holder,
                },
            );
            let statuses: Vec<_> = (0..self.names.len())
                .filter_map(|j| self.nodes[j].hv.as_ref().map(|h| (j, h.status(now))))
                .collect();
            for (j, st) in &statuses {
                let desired = st.groups[gi].desired.clone();
                // A takeover pin may override the configured preference; it must agree everywhere.
                assert_eq!(
                    desired, statuses[0].1.groups[gi].desired,
                    "nodes disagree on group {} ({} vs {})",
                    g.name, self.names[*j], self.names[statuses[0].0]
                );
            }
            let desired = statuses[0].1.groups[gi].desired.clone();
            match desired {
                Some(d) => {
                    let d = self.names.iter().position(|n| *n == d).expect("known");
                    assert_eq!(
                        running,
                        vec![d],
                        "group {} should run on {}",
                        g.name,
                        self.names[d]
                    );
                    let st = self.nodes[d].hv.as_ref().expect("alive").state_of(&g.name);
                    assert_eq!(st, Some(LocalState::Running));
                    if self.takeovers == 0 {
                        assert_eq!(
                            expected,
                            Some(d),
                            "group {} is not where placement wants it",
                            g.name
                        );
                    }
                }
                None => {
                    assert_eq!(
                        expected, None,
                        "nobody runs {} though placement wants a holder",
                        g.name
                    );
                    assert!(running.is_empty());
                }
            }
        }
    }
}

fn group(name: &str, prefer: Option<&str>, failback: Failback) -> GroupSpec {
    GroupSpec {
        name: name.into(),
        prefer: prefer.map(Into::into),
        failback,
    }
}

fn holders(sim: &Sim, g: &str) -> Vec<String> {
    (0..sim.names.len())
        .filter(|&j| sim.alive(j) && sim.nodes[j].active.contains(g))
        .map(|j| sim.names[j].clone())
        .collect()
}

#[test]
fn preferred_node_gets_the_group_at_start() {
    let mut sim = Sim::new(
        1,
        &["a", "b"],
        &[Role::Member; 2],
        vec![group("ip", Some("b"), Failback::Auto)],
    );
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["b"]);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    sim.assert_converged();
}

#[test]
fn standby_hands_over_and_the_new_node_starts_only_after_the_release() {
    let mut sim = Sim::new(
        2,
        &["a", "b"],
        &[Role::Member; 2],
        vec![group("ip", Some("a"), Failback::Auto)],
    );
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
    sim.command(0, Command::Standby(None)).expect("standby");
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["b"]);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    // Online again: auto failback moves it back.
    sim.command(0, Command::Online(None)).expect("online");
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn manual_failback_leaves_the_group_where_it_is() {
    let mut sim = Sim::new(
        3,
        &["a", "b"],
        &[Role::Member; 2],
        vec![group("ip", Some("a"), Failback::Manual)],
    );
    sim.run_ms(3000);
    sim.kill(0);
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["b"]);
    sim.boot(0);
    sim.run_ms(5000);
    assert_eq!(holders(&sim, "ip"), ["b"]);
    sim.assert_converged();
}

#[test]
fn dead_node_groups_are_taken_over_only_after_membership_declares_it_dead() {
    let mut sim = Sim::new(
        4,
        &["a", "b"],
        &[Role::Member; 2],
        vec![group("ip", Some("a"), Failback::Auto)],
    );
    sim.view_lag_ms = (1000, 1000);
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
    sim.kill(0);
    sim.run_ms(900);
    assert!(
        holders(&sim, "ip").is_empty(),
        "b started before a was declared dead"
    );
    sim.run_ms(1000);
    assert_eq!(holders(&sim, "ip"), ["b"]);
}

#[test]
fn a_failed_start_moves_the_group_to_the_next_candidate() {
    let mut sim = Sim::new(
        5,
        &["a", "b"],
        &[Role::Member; 2],
        vec![group("ip", Some("a"), Failback::Auto)],
    );
    sim.nodes[0].fail_starts.insert("ip".into(), 1);
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["b"]);
    // Long after the retry delay a still leaves it to b, which holds it: no flapping.
    sim.run_ms(10_000);
    assert_eq!(holders(&sim, "ip"), ["b"]);
    let st = sim.nodes[0].hv.as_ref().expect("alive").status(sim.now());
    assert!(
        st.groups[0]
            .not_candidate_reason
            .as_deref()
            .is_some_and(|r| r.contains("start failed"))
    );
    // Online forgives the failure; auto failback brings it home.
    sim.command(0, Command::Online(None)).expect("online");
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
}

#[test]
fn takeover_and_release_move_the_group() {
    let mut sim = Sim::new(
        6,
        &["a", "b", "c"],
        &[Role::Member; 3],
        vec![group("ip", None, Failback::Auto)],
    );
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
    sim.command(2, Command::Takeover("ip".into()))
        .expect("takeover");
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["c"]);
    sim.command(2, Command::Release("ip".into()))
        .expect("release");
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
    assert!(sim.command(2, Command::Release("ip".into())).is_err());
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

/// Issue 12 item 1: a release is a one-time move, not a ban. The holder (preferred, so
/// auto failback would pull the group straight back) releases it: it moves to the next
/// candidate and stays there; when that node dies, the releasing node takes the group
/// over as in any failover (it used to stay out, "released by an operator", until an
/// `ipctl online`, leaving the group unheld).
#[test]
fn a_release_moves_the_group_once_and_the_releasing_node_still_fails_over() {
    for (seed, failback) in [(70, Failback::Auto), (71, Failback::Manual)] {
        let mut sim = Sim::new(
            seed,
            &["a", "b"],
            &[Role::Member; 2],
            vec![group("ip", Some("a"), failback)],
        );
        sim.run_ms(3000);
        assert_eq!(holders(&sim, "ip"), ["a"]);
        sim.command(0, Command::Release("ip".into()))
            .expect("release");
        sim.run_ms(3000);
        assert_eq!(holders(&sim, "ip"), ["b"], "seed {seed}: moved once");
        sim.run_ms(5000);
        assert_eq!(holders(&sim, "ip"), ["b"], "seed {seed}: and not back");
        let starts = sim.starts;
        sim.kill(1);
        sim.run_ms(3000);
        assert_eq!(holders(&sim, "ip"), ["a"], "seed {seed}: failover to a");
        assert_eq!(sim.starts - starts, 1, "seed {seed}");
        // b back (nothing of the release survives its restart): a, the preferred node
        // and the holder, keeps the group.
        sim.boot(1);
        sim.run_ms(5000);
        assert_eq!(holders(&sim, "ip"), ["a"], "seed {seed}");
        assert!(
            sim.violations.is_empty(),
            "seed {seed}: {:?}",
            sim.violations
        );
        sim.assert_converged();
    }
}

/// Three nodes: the released group goes to the next candidate in placement's order; when
/// that one dies the group goes where placement says, the releasing node included.
#[test]
fn a_release_never_leaves_the_group_unheld_while_a_candidate_is_alive() {
    let mut sim = Sim::new(
        72,
        &["a", "b", "c"],
        &[Role::Member; 3],
        vec![group("ip", Some("a"), Failback::Auto)],
    );
    sim.run_ms(3000);
    sim.command(0, Command::Release("ip".into()))
        .expect("release");
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["b"]);
    // c is told nothing of a ban, and neither is a: with b and c gone, a holds it.
    sim.kill(2);
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["b"], "c was not the holder");
    sim.boot(2);
    sim.run_ms(5000);
    sim.kill(1);
    sim.run_ms(3000);
    assert_eq!(
        holders(&sim, "ip"),
        ["a"],
        "the preferred node, released earlier"
    );
    // With b down, released again: to c; and c killed (b back meanwhile, for a quorum):
    // back on a.
    sim.command(0, Command::Release("ip".into()))
        .expect("release");
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["c"]);
    sim.boot(1);
    sim.run_ms(5000);
    assert_eq!(holders(&sim, "ip"), ["c"], "the release holds while c does");
    sim.kill(2);
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn standby_of_a_remote_node_is_carried_by_a_message() {
    let mut sim = Sim::new(
        7,
        &["a", "b"],
        &[Role::Member; 2],
        vec![group("ip", Some("a"), Failback::Auto)],
    );
    sim.run_ms(3000);
    sim.command(1, Command::Standby(Some("a".into())))
        .expect("standby");
    sim.run_ms(3000);
    assert!(sim.nodes[0].standby);
    assert_eq!(holders(&sim, "ip"), ["b"]);
}

#[test]
fn a_witness_never_holds_and_no_quorum_releases() {
    let mut sim = Sim::new(
        8,
        &["a", "b", "w"],
        &[Role::Member, Role::Member, Role::Witness],
        vec![group("ip", Some("a"), Failback::Auto)],
    );
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
    sim.kill(1);
    sim.kill(2);
    sim.run_ms(3000);
    assert!(
        holders(&sim, "ip").is_empty(),
        "a kept the group without quorum"
    );
}

#[test]
fn disconnected_from_membership_keeps_what_it_holds_and_starts_nothing() {
    let mut sim = Sim::new(
        9,
        &["a", "b"],
        &[Role::Member; 2],
        vec![
            group("ip", Some("a"), Failback::Auto),
            group("web", Some("b"), Failback::Auto),
        ],
    );
    sim.run_ms(3000);
    sim.nodes[0].disconnected = true;
    sim.feed(0, Input::Disconnected("socket closed".into()));
    sim.kill(1);
    sim.run_ms(5000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
    assert!(holders(&sim, "web").is_empty());
    let st = sim.nodes[0].hv.as_ref().expect("alive").status(sim.now());
    assert!(!st.connected);
}

#[test]
fn garbage_and_future_versions_are_counted_not_fatal() {
    let mut sim = Sim::new(
        10,
        &["a", "b"],
        &[Role::Member; 2],
        vec![group("ip", Some("a"), Failback::Auto)],
    );
    sim.run_ms(3000);
    for payload in [
        &b"not json"[..],
        br#"{"v":2,"t":"state"}"#,
        br#"{"v":1,"t":"nope"}"#,
        &[0xff; 2000][..],
    ] {
        sim.feed(
            0,
            Input::Message {
                from: "b".into(),
                generation: 1,
                payload: payload.to_vec(),
            },
        );
    }
    sim.feed(
        0,
        Input::Message {
            from: "stranger".into(),
            generation: 1,
            payload: b"{}".to_vec(),
        },
    );
    let st = sim.nodes[0].hv.as_ref().expect("alive").status(sim.now());
    assert_eq!(st.bad_messages, 5);
    sim.run_ms(1000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
}

#[test]
fn message_encoding_round_trips_and_stays_within_the_payload_limit() {
    let m = Message::Standby {
        node: "a".into(),
        on: true,
    };
    assert_eq!(
        Message::decode(&m.encode().expect("encode")).expect("decode"),
        m
    );
    let bytes = m.encode().expect("encode");
    assert!(String::from_utf8(bytes).expect("utf8").contains(r#""v":1"#));
}

/// The default seeds, or `SIM_SEEDS=FROM..TO` to explore (and `SIM_TRACE=1` to see a run).
fn seeds(default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(default)
}

fn chaos_run(seed: u64, names: &[&str], roles: &[Role], loss: f64) -> usize {
    let groups = vec![
        group("ip", Some(names[0]), Failback::Auto),
        group("web", Some(names[1]), Failback::Manual),
        group("db", None, Failback::Auto),
    ];
    let mut sim = Sim::new(seed, names, roles, groups);
    sim.loss = loss;
    sim.max_delay_ms = 80;
    sim.allow_takeover = seed % 2 == 1;
    for _ in 0..(60_000 / STEP_MS) {
        sim.chaos();
        sim.step();
    }
    assert!(
        sim.violations.is_empty(),
        "seed {seed}: {:?}",
        sim.violations
    );
    // Heal: no loss, every node up, let it settle.
    sim.loss = 0.0;
    for i in 0..names.len() {
        if !sim.alive(i) {
            sim.boot(i);
        }
    }
    sim.run_ms(15_000);
    assert!(
        sim.violations.is_empty(),
        "seed {seed}: {:?}",
        sim.violations
    );
    sim.assert_converged();
    sim.starts
}

#[test]
fn chaos_never_runs_a_group_twice_and_converges_two_nodes() {
    let mut starts = 0;
    let seeds = seeds(0..40);
    let runs = seeds.end - seeds.start;
    for seed in seeds {
        starts += chaos_run(seed, &["a", "b"], &[Role::Member; 2], 0.2);
    }
    // Three groups start once at boot; chaos must have moved them around well beyond that.
    assert!(
        runs < 10 || starts as u64 > 6 * runs,
        "the chaos did little: {starts} starts in {runs} runs"
    );
}

#[test]
fn chaos_never_runs_a_group_twice_and_converges_three_nodes() {
    for seed in seeds(100..130) {
        chaos_run(seed, &["a", "b", "c"], &[Role::Member; 3], 0.2);
    }
    for seed in seeds(200..220) {
        chaos_run(
            seed,
            &["a", "b", "w"],
            &[Role::Member, Role::Member, Role::Witness],
            0.1,
        );
    }
}

#[test]
fn two_nodes_found_running_the_same_group_at_start_end_with_one() {
    // Of two holders the first in configuration order is "the holder"; auto failback still
    // moves the group to the preferred node.
    for (seed, prefer, failback, want) in [
        (21, Some("b"), Failback::Auto, "b"),
        (22, Some("b"), Failback::Manual, "a"),
        (23, None, Failback::Manual, "a"),
    ] {
        let mut sim = Sim::new(
            seed,
            &["a", "b"],
            &[Role::Member; 2],
            vec![group("ip", prefer, failback)],
        );
        sim.kill(0);
        sim.kill(1);
        sim.boot_running(0, &["ip"]);
        sim.boot_running(1, &["ip"]);
        sim.run_ms(5000);
        assert_eq!(
            holders(&sim, "ip"),
            [want],
            "prefer {prefer:?} {failback:?}"
        );
        sim.assert_converged();
    }
}

#[test]
fn a_lone_node_retries_a_failing_start_with_backoff_until_it_works() {
    let mut sim = Sim::new(
        30,
        &["a", "b"],
        &[Role::Member; 2],
        vec![group("ip", Some("b"), Failback::Auto)],
    );
    sim.kill(1);
    sim.run_ms(3000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
    // The service breaks: a's next three starts fail (a provider outage, say).
    sim.nodes[0].fail_starts.insert("ip".into(), 3);
    sim.command(0, Command::Release("ip".into()))
        .expect_err("nobody else could take it");
    // Its monitor fails: restarted here once (the simulation's policy), then given up.
    let failed = || Input::Agent {
        group: "ip".into(),
        outcome: AgentOutcome::MonitorFailed {
            reason: "gone".into(),
        },
        actions: Vec::new(),
    };
    sim.feed(0, failed());
    assert_eq!(sim.restarts, 1, "restarted here first");
    sim.feed(0, failed());
    let starts = sim.starts;
    // Retries after 1s, 2s, 4s, 4s (the cap), plus action times.
    sim.run_ms(4000);
    assert!(holders(&sim, "ip").is_empty());
    sim.run_ms(12_000);
    assert_eq!(holders(&sim, "ip"), ["a"]);
    assert_eq!(
        sim.starts - starts,
        4,
        "three failed starts and the good one"
    );
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_configuration_whose_announcements_cannot_fit_is_refused() {
    let nodes: Vec<(String, Role)> = ["a", "b"]
        .iter()
        .map(|n| (n.to_string(), Role::Member))
        .collect();
    let groups = |n: usize| {
        (0..n)
            .map(|i| {
                group(
                    &format!("group-with-a-long-name-{i:03}"),
                    None,
                    Failback::Auto,
                )
            })
            .collect()
    };
    let cfg = |n| Config {
        local: "a".into(),
        nodes: nodes.clone(),
        groups: groups(n),
        timers: timers(),
        dead_after: Duration::from_secs(1),
        restart: restart_policy(),
        longest_monitor: Duration::from_secs(10),
    };
    assert!(Core::new(cfg(3), 1, &[], false, Time::ZERO).is_ok());
    // Twenty groups of 26-character names: too many for the lists, the per-group form
    // carries them (issue 14).
    assert!(Core::new(cfg(20), 1, &[], false, Time::ZERO).is_ok());
    let e = Core::new(cfg(40), 1, &[], false, Time::ZERO).expect_err("too large");
    let text = e.to_string();
    assert!(
        text.contains("more than membership carries (900)")
            && text.contains("groups with names of 26 characters fit, or these 40 groups"),
        "{text}"
    );
}

#[test]
fn standby_says_which_groups_nobody_else_can_take() {
    let mut sim = Sim::new(
        31,
        &["a", "b"],
        &[Role::Member; 2],
        vec![group("ip", Some("a"), Failback::Auto)],
    );
    sim.run_ms(3000);
    sim.kill(1);
    sim.run_ms(2000);
    let msg = sim.command(0, Command::Standby(None)).expect("standby");
    assert!(msg.contains("no other node can take ip"), "{msg}");
    sim.run_ms(1000);
    assert!(holders(&sim, "ip").is_empty());
    let msg = sim.command(0, Command::Online(None)).expect("online");
    assert_eq!(msg, "a is online");
}

#[test]
fn a_healed_two_node_partition_never_leaves_the_group_unheld_and_ends_with_one_holder() {
    for (seed, prefer, want) in [(40, Some("a"), "a"), (41, Some("b"), "b"), (42, None, "a")] {
        let mut sim = Sim::new(
            seed,
            &["a", "b"],
            &[Role::Member; 2],
            vec![group("ip", prefer, Failback::Auto)],
        );
        sim.run_ms(3000);
        assert_eq!(holders(&sim, "ip").len(), 1);
        sim.partition(0, 1);
        sim.run_ms(5000);
        // two_node without health checks deciding: both sides hold (the documented window).
        assert_eq!(holders(&sim, "ip").len(), 2);
        sim.violations.clear();
        sim.heal(0, 1);
        for _ in 0..(8000 / STEP_MS) {
            sim.step();
            assert!(
                !holders(&sim, "ip").is_empty(),
                "seed {seed}: unheld at t={}ms",
                sim.t
            );
        }
        assert_eq!(holders(&sim, "ip"), [want], "seed {seed}");
        assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        sim.assert_converged();
    }
}

/// The holder is frozen (SIGSTOP) past its death: the other node declares it dead and takes
/// the group over (the IP moves there), while the frozen node's own membership, stall-aware,
/// never saw anyone die. Thawed, its monitor finds the IP on the other server: the group is
/// lost here, not restarted, and with manual failback it stays where it went.
#[test]
fn a_holder_thawed_after_its_death_loses_the_group_and_does_not_take_it_back() {
    for (seed, failback, want) in [(60, Failback::Manual, "b"), (61, Failback::Auto, "a")] {
        let mut sim = Sim::new(
            seed,
            &["a", "b"],
            &[Role::Member; 2],
            vec![group("ip", Some("a"), failback)],
        );
        sim.run_ms(3000);
        assert_eq!(holders(&sim, "ip"), ["a"]);
        // Frozen: no input reaches a, nothing leaves it; only b's membership reacts.
        let frozen = sim.nodes[0].hv.take();
        sim.cut.insert((0, 1));
        let b_life = sim.nodes[1].life;
        sim.schedule(
            500,
            Event::ViewUpdate {
                node: 1,
                life: b_life,
                of: 0,
                alive: false,
                generation: 1,
            },
        );
        sim.run_ms(3000);
        assert_eq!(holders(&sim, "ip"), ["b"], "seed {seed}: b took over");
        let starts = sim.starts;
        // Thawed: b sees a up again at once, and a's overdue timer announces its stale state
        // (still holding the group) before its monitor has answered: b must not yield to it.
        sim.nodes[0].hv = frozen;
        sim.cut.clear();
        sim.membership_event(1, 0, true, 1);
        sim.feed(0, Input::Tick);
        // Its first wake-up tells a it was stalled (3 s, past dead_after): it checks what
        // it runs, and reports it starting, not running, until the check answers.
        let asked =
            |sim: &Sim, node: usize| sim.verifies.iter().filter(|(n, _)| *n == node).count();
        assert_eq!(asked(&sim, 0), 1, "seed {seed}: {:?}", sim.verifies);
        let st = sim.nodes[0].hv.as_ref().unwrap().status(sim.now());
        assert_eq!(st.groups[0].state, LocalState::Starting, "seed {seed}");
        sim.run_ms(100);
        // a hears b's hold and checks its own against the provider at once, once more (the
        // simulated check cannot answer; the Lost below stands for a's finding). So does b
        // while it still runs the group (with auto failback it is already releasing it).
        let asked = |node: usize| asked(&sim, node);
        assert_eq!(asked(0), 2, "seed {seed}: {:?}", sim.verifies);
        let b_runs = failback == Failback::Manual;
        assert_eq!(
            asked(1),
            usize::from(b_runs),
            "seed {seed}: {:?}",
            sim.verifies
        );
        if failback == Failback::Manual {
            // (With auto failback b rightly releases to the preferred node either way.)
            assert_eq!(
                sim.nodes[1].hv.as_ref().unwrap().state_of("ip"),
                Some(LocalState::Running),
                "seed {seed}: b does not yield to a claim made before a was declared dead"
            );
        }
        assert_eq!(
            sim.nodes[0].hv.as_ref().unwrap().state_of("ip"),
            Some(LocalState::Running)
        );
        sim.feed(
            0,
            Input::Agent {
                group: "ip".into(),
                outcome: AgentOutcome::Lost {
                    reason: "reserved-ip 10.0.0.1: held by server b".into(),
                },
                actions: Vec::new(),
            },
        );
        assert_eq!(
            sim.nodes[0].hv.as_ref().unwrap().state_of("ip"),
            Some(LocalState::Stopping),
            "seed {seed}: lost, not restarted"
        );
        assert!(
            !sim.nodes[0].hv.as_ref().unwrap().status(sim.now()).nodes[0]
                .holds
                .contains(&"ip".to_owned()),
            "seed {seed}: a lost group is not announced as held"
        );
        sim.heal(0, 1);
        sim.run_ms(6000);
        assert_eq!(holders(&sim, "ip"), [want], "seed {seed}");
        // Manual: nothing starts again anywhere. Auto: one failback through the handover.
        let expected_starts = if want == "b" { 0 } else { 1 };
        assert_eq!(sim.starts - starts, expected_starts, "seed {seed}");
        assert!(
            sim.violations.is_empty(),
            "seed {seed}: {:?}",
            sim.violations
        );
        sim.assert_converged();
    }
}

/// One node's machine driven by hand with a controlled clock, for step-exact assertions.
struct Single {
    hv: Core,
    base: Time,
    names: Vec<String>,
    /// Membership generation of each node.
    gens: Vec<u64>,
    /// What membership last reported: each node's state (with its generation) and quorum.
    reported: Option<(Vec<(MemberState, u64)>, bool)>,
}

impl Single {
    fn new(local: &str, names: &[&str]) -> Single {
        Single::with_roles(local, names, &vec![Role::Member; names.len()])
    }

    fn with_roles(local: &str, names: &[&str], roles: &[Role]) -> Single {
        Single::build(local, names, roles, &[])
    }

    /// Like `new`, with `running` found running by the start-up probe.
    fn running(local: &str, names: &[&str], running: &[&str]) -> Single {
        Single::build(local, names, &vec![Role::Member; names.len()], running)
    }

    fn build(local: &str, names: &[&str], roles: &[Role], running: &[&str]) -> Single {
        let base = Time::ZERO;
        let cfg = Config {
            local: local.into(),
            nodes: names
                .iter()
                .zip(roles)
                .map(|(n, r)| (n.to_string(), *r))
                .collect(),
            groups: vec![group("ip", Some(names[0]), Failback::Auto)],
            timers: timers(),
            dead_after: Duration::from_secs(1),
            restart: restart_policy(),
            longest_monitor: Duration::from_secs(10),
        };
        let running: Vec<String> = running.iter().map(|s| s.to_string()).collect();
        let hv = Core::new(cfg, 7, &running, false, base).expect("handover");
        Single {
            hv,
            base,
            names: names.iter().map(|s| s.to_string()).collect(),
            gens: vec![1; names.len()],
            reported: None,
        }
    }

    fn at(&self, ms: u64) -> Time {
        self.base + Duration::from_millis(ms)
    }

    fn view(&mut self, ms: u64, alive: &[bool]) -> Vec<Output> {
        self.view_with(ms, alive, &[], true)
    }

    fn view_with(&mut self, ms: u64, alive: &[bool], late: &[&str], quorate: bool) -> Vec<Output> {
        self.view_full(ms, alive, late, &[], quorate)
    }

    fn view_full(
        &mut self,
        ms: u64,
        alive: &[bool],
        late: &[&str],
        left: &[&str],
        quorate: bool,
    ) -> Vec<Output> {
        // The events membership would send for this change (a snapshot the first time).
        let states: Vec<(MemberState, u64)> = self
            .names
            .iter()
            .zip(alive)
            .zip(&self.gens)
            .map(|((n, a), g)| {
                let state = match (*a, late.contains(&n.as_str())) {
                    (false, _) => MemberState::Dead,
                    (true, true) => MemberState::Late,
                    (true, false) => MemberState::Up,
                };
                (state, *g)
            })
            .collect();
        let needed = if self.names.len() == 2 {
            1
        } else {
            self.names.len() as u32 / 2 + 1
        };
        let quorum = Quorum { quorate, needed };
        let mut events = Vec::new();
        match &self.reported {
            None => events.push(Membership::Snapshot {
                quorum,
                nodes: self
                    .names
                    .iter()
                    .zip(&states)
                    .map(|(n, (state, generation))| MemberNode {
                        name: n.clone(),
                        state: *state,
                        generation: *generation,
                    })
                    .collect(),
            }),
            Some((before, was_quorate)) => {
                // In the order membership notices them: late (at warn_after), then deaths
                // (at dead_after); those coming back; then the quorum they change.
                let (mut lates, mut ups, mut deaths) = (Vec::new(), Vec::new(), Vec::new());
                for (j, (now, was)) in states.iter().zip(before).enumerate() {
                    let node = self.names[j].clone();
                    let generation = now.1;
                    match now.0 {
                        _ if now == was => {}
                        MemberState::Dead => deaths.push(Membership::NodeDead {
                            reason: if left.contains(&node.as_str()) {
                                DeathReason::Left
                            } else {
                                DeathReason::Silent
                            },
                            node,
                            generation,
                        }),
                        MemberState::Late if was.0 == MemberState::Up && was.1 == generation => {
                            lates.push(Membership::NodeLate { node })
                        }
                        MemberState::Late => {
                            ups.push(Membership::NodeUp {
                                node: node.clone(),
                                generation,
                            });
                            ups.push(Membership::NodeLate { node });
                        }
                        MemberState::Up => ups.push(Membership::NodeUp { node, generation }),
                    }
                }
                events.extend(lates.into_iter().chain(deaths).chain(ups));
                if *was_quorate != quorate {
                    events.push(Membership::QuorumChanged(quorum));
                }
            }
        }
        self.reported = Some((states, quorate));
        let mut out = Vec::new();
        for ev in events {
            out.extend(self.event(ms, ev));
        }
        out
    }

    /// Membership's socket closed: the next view is a fresh snapshot, as on reconnecting.
    fn disconnect(&mut self, ms: u64) -> Vec<Output> {
        self.reported = None;
        self.hv
            .handle(self.at(ms), Input::Disconnected("socket closed".into()));
        self.hv.drain_outputs()
    }

    /// A result of the group's worker.
    fn agent(&mut self, ms: u64, outcome: AgentOutcome) -> Vec<Output> {
        self.hv.handle(
            self.at(ms),
            Input::Agent {
                group: "ip".into(),
                outcome,
                actions: Vec::new(),
            },
        );
        self.hv.drain_outputs()
    }

    /// One event of membership's stream.
    fn event(&mut self, ms: u64, ev: Membership) -> Vec<Output> {
        self.hv.handle(self.at(ms), Input::Membership(ev));
        self.hv.drain_outputs()
    }

    fn announce(&mut self, ms: u64, from: &str, a: Announce) -> Vec<Output> {
        self.message(ms, from, Message::State(a))
    }

    fn message(&mut self, ms: u64, from: &str, m: Message) -> Vec<Output> {
        let payload = m.encode().expect("encode");
        let generation = self
            .names
            .iter()
            .position(|n| n == from)
            .map_or(1, |i| self.gens[i]);
        self.hv.handle(
            self.at(ms),
            Input::Message {
                from: from.into(),
                generation,
                payload,
            },
        );
        self.hv.drain_outputs()
    }
}

fn starts(out: &[Output]) -> Vec<&str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Start { group, .. } => Some(group.as_str()),
            _ => None,
        })
        .collect()
}

/// The last announcement among `out`.
fn last_announcement(out: &[Output]) -> Option<Announce> {
    out.iter().rev().find_map(|o| match o {
        Output::Send { payload, .. } => match Message::decode(payload) {
            Ok(Message::State(a)) => Some(a),
            _ => None,
        },
        _ => None,
    })
}

fn holding(inc: u64, seq: u64, group: &str) -> Announce {
    Announce {
        inc,
        seq,
        healthy: true,
        holds: [group.to_owned()].into(),
        ..Announce::default()
    }
}

#[test]
fn the_holder_s_death_starts_the_group_in_the_same_step_when_no_live_peer_must_ack() {
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    // Well past settle: everything known, a holds the group.
    n.hv.handle(n.at(1000), Input::Tick);
    assert!(starts(&n.hv.drain_outputs()).is_empty());
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Stopped));
    // a is declared dead: b is the only node left, nobody has to acknowledge its claim.
    let out = n.view(1500, &[false, true]);
    assert_eq!(
        starts(&out),
        ["ip"],
        "start in the step of the death: {out:?}"
    );
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Starting));
    let a = last_announcement(&out).expect("b announces");
    assert!(a.holds.contains("ip"), "announced as held: {a:?}");
}

#[test]
fn the_holder_s_death_still_waits_for_a_live_peer_to_ack_the_claim() {
    // a (preferred) holds; b is next in order; c is alive and announced.
    let mut n = Single::new("b", &["a", "b", "c"]);
    n.view(0, &[true, true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    n.announce(
        10,
        "c",
        Announce {
            inc: 5,
            seq: 1,
            healthy: true,
            ..Announce::default()
        },
    );
    n.hv.handle(n.at(1000), Input::Tick);
    n.hv.drain_outputs();
    let out = n.view(1500, &[false, true, true]);
    assert!(starts(&out).is_empty(), "c has not seen the claim: {out:?}");
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Waiting));
    let claim = last_announcement(&out).expect("b announces its claim");
    assert!(claim.claims.contains("ip"));
    // An acknowledgement of an older announcement is not enough.
    let mut ack = Announce {
        inc: 5,
        seq: 2,
        healthy: true,
        seen: [("b".to_owned(), (claim.inc, claim.seq - 1))].into(),
        ..Announce::default()
    };
    let out = n.announce(1510, "c", ack.clone());
    assert!(starts(&out).is_empty(), "{out:?}");
    ack.seq = 3;
    ack.seen.insert("b".into(), (claim.inc, claim.seq));
    let out = n.announce(1520, "c", ack);
    assert_eq!(starts(&out), ["ip"], "started on c's acknowledgement");
}

#[test]
fn a_death_while_another_node_is_late_waits_for_the_claim_retry() {
    // b is cut off from a (the holder) and the witness w: both fall silent together, so w
    // is late when a is declared dead, and b loses quorum only with w's death.
    let roles = [Role::Member, Role::Member, Role::Witness];
    let mut n = Single::with_roles("b", &["a", "b", "w"], &roles);
    n.view(0, &[true, true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    n.hv.handle(n.at(1000), Input::Tick);
    n.hv.drain_outputs();
    let out = n.view_with(1500, &[false, true, true], &["w"], true);
    assert!(starts(&out).is_empty(), "w is late: {out:?}");
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Waiting));
    // w's death takes the quorum away before the claim retry (100 ms here).
    let out = n.view_with(1520, &[false, true, false], &[], false);
    assert!(starts(&out).is_empty(), "{out:?}");
    n.hv.handle(n.at(3000), Input::Tick);
    assert!(starts(&n.hv.drain_outputs()).is_empty());
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Stopped));

    // With the witness up (only the holder died) the start comes with the death.
    let mut n = Single::with_roles("b", &["a", "b", "w"], &roles);
    n.view(0, &[true, true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    n.hv.handle(n.at(1000), Input::Tick);
    n.hv.drain_outputs();
    let out = n.view_with(1500, &[false, true, true], &[], true);
    assert_eq!(starts(&out), ["ip"], "{out:?}");
}

/// Found by tandem-soak (seed 5, fault 3, three nodes in namespaces): the node cut off
/// from the majority saw both peers die, and acted on the second death before
/// membership's QuorumChanged event arrived. The death itself takes the quorum away when
/// the votes left are too few; only membership's event gives it back.
#[test]
fn a_death_leaving_too_few_votes_loses_quorum_before_membership_says_so() {
    let dead = |node: &str| Membership::NodeDead {
        node: node.into(),
        generation: 1,
        reason: DeathReason::Silent,
    };
    let roles = [Role::Member, Role::Member, Role::Witness];
    let mut n = Single::with_roles("b", &["a", "b", "w"], &roles);
    n.view(0, &[true, true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    assert_eq!(n.run_until(20, 1000), 0);
    assert!(starts(&n.event(1500, dead("w"))).is_empty(), "a holds");
    assert!(n.hv.status(n.at(1500)).quorate, "b and a are a majority");
    let out = n.event(1510, dead("a"));
    assert!(starts(&out).is_empty(), "b alone is no majority: {out:?}");
    assert!(!n.hv.status(n.at(1510)).quorate);
    assert_eq!(n.run_until(1510, 5000), 0);
    // Membership's own event raises it again (here: w back).
    n.event(
        5000,
        Membership::NodeUp {
            node: "w".into(),
            generation: 1,
        },
    );
    assert!(
        !n.hv.status(n.at(5000)).quorate,
        "not before membership says so"
    );
    n.event(
        5010,
        Membership::QuorumChanged(Quorum {
            quorate: true,
            needed: 2,
        }),
    );
    // (After the settle a node that comes up gets; a witness may run no agent.)
    assert_eq!(n.run_until(5010, 6000), 1);

    // two_node (one vote needed): the survivor stays quorate and takes over.
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    assert_eq!(n.run_until(20, 1000), 0);
    assert_eq!(starts(&n.event(1500, dead("a"))), ["ip"]);
}

fn idle(inc: u64, seq: u64) -> Announce {
    Announce {
        inc,
        seq,
        healthy: true,
        ..Announce::default()
    }
}

impl Single {
    /// Ticks at every deadline from `from_ms` to `to_ms`, collecting the starts.
    fn run_until(&mut self, from_ms: u64, to_ms: u64) -> usize {
        starts(&self.outputs_until(from_ms, to_ms)).len()
    }

    /// Ticks at every deadline from `from_ms` to `to_ms`, collecting the outputs.
    fn outputs_until(&mut self, from_ms: u64, to_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        let mut t = self.at(from_ms);
        while t <= self.at(to_ms) {
            self.hv.handle(t, Input::Tick);
            out.extend(self.hv.drain_outputs());
            // At least 10 ms forward, so a deadline in the past cannot spin.
            t = self.hv.next_deadline().max(t + Duration::from_millis(10));
        }
        out
    }

    /// The group is lost here (the provider says another server holds it) and stops.
    fn lose(&mut self, ms: u64) {
        self.hv.handle(
            self.at(ms),
            Input::Agent {
                group: "ip".into(),
                outcome: AgentOutcome::Lost {
                    reason: "reserved-ip: held by server 222".into(),
                },
                actions: Vec::new(),
            },
        );
        assert_eq!(self.hv.state_of("ip"), Some(LocalState::Stopping));
        self.hv.handle(
            self.at(ms + 50),
            Input::Agent {
                group: "ip".into(),
                outcome: AgentOutcome::Stopped,
                actions: Vec::new(),
            },
        );
        assert!(starts(&self.hv.drain_outputs()).is_empty());
    }
}

/// Issue 5/7, fault 1: two nodes, both links cut. The preferred holder a sees b dead; b
/// took the IP, so a's monitor finds it held elsewhere. a must not claim it back while the
/// only node it could have gone to is dead *because of the partition*: not by the
/// start-failure backoff either, however long the partition lasts.
#[test]
fn a_group_lost_during_a_partition_is_not_taken_back_until_its_holder_is_heard() {
    let mut n = Single::running("a", &["a", "b"], &["ip"]);
    n.view(0, &[true, true]);
    n.announce(10, "b", idle(5, 1));
    assert_eq!(n.run_until(20, 1000), 0);
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Running));
    // Both links cut: b is late, then dead; meanwhile b took the IP.
    n.view_with(1500, &[true, true], &["b"], true);
    n.view(2000, &[true, false]);
    n.lose(2300);
    let st = n.hv.status(n.at(2400));
    assert!(
        st.groups[0]
            .not_candidate_reason
            .as_deref()
            .is_some_and(|r| r.contains("lost")),
        "{st:?}"
    );
    assert_eq!(n.run_until(2400, 400_000), 0, "no claim while partitioned");
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Stopped));
    // Healed: b is up again (same generation) and announces that it holds the group.
    n.view(400_100, &[true, true]);
    assert_eq!(n.run_until(400_100, 400_200), 0);
    n.announce(400_210, "b", holding(5, 20, "ip"));
    assert_eq!(
        n.run_until(400_210, 401_000),
        0,
        "b holds: a waits for the release"
    );
    // The failback: b (not preferred) stops and announces the release; a claims, b acks.
    let out = n.announce(401_010, "b", idle(5, 21));
    let claim = last_announcement(&out).expect("a claims");
    assert!(claim.claims.contains("ip"), "{claim:?}");
    let mut ack = idle(5, 22);
    ack.seen.insert("a".into(), (claim.inc, claim.seq));
    let out = n.announce(401_020, "b", ack);
    assert_eq!(starts(&out), ["ip"], "exactly one failback");
}

/// After a loss, the node it went to dying *again* (seen alive since the loss, then dead)
/// is a real death: its groups are free, as for any death.
#[test]
fn a_lost_group_is_free_once_its_holder_dies_after_being_seen_alive() {
    let mut n = Single::running("a", &["a", "b"], &["ip"]);
    n.view(0, &[true, true]);
    n.announce(10, "b", idle(5, 1));
    n.run_until(20, 1000);
    n.view(2000, &[true, false]);
    n.lose(2300);
    assert_eq!(n.run_until(2400, 30_000), 0);
    // Healed, but b's agent is not heard (e.g. its messages do not get through yet) ...
    n.view(30_000, &[true, true]);
    assert_eq!(n.run_until(30_000, 31_000), 0);
    // ... and then b really dies: nobody else can hold the group.
    let out = n.view(31_000, &[true, false]);
    assert_eq!(starts(&out), ["ip"], "{out:?}");
}

/// Issue 5/7, fault 2: one-way loss. b does not hear a, a hears b: b declares a dead and
/// takes the IP, while b stays alive in a's view and its announcements never reach a (its
/// membership sends only to nodes it considers alive). Once b's agent counts as silent
/// (`peer_stale_after`) a must still not claim the group back; a real death of b (alive at
/// the loss, so seen alive since) frees it.
#[test]
fn a_group_lost_to_a_node_that_is_still_alive_is_not_claimed_when_its_agent_falls_silent() {
    let mut n = Single::running("a", &["a", "b"], &["ip"]);
    n.view(0, &[true, true]);
    n.announce(10, "b", idle(5, 1));
    n.run_until(20, 1000);
    n.lose(1500);
    // peer_stale_after is 5 s here: b's last word is long stale.
    assert_eq!(n.run_until(1600, 120_000), 0, "no flapping");
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Stopped));
    // Healed: b is heard holding; the failback goes through the release.
    n.announce(120_000, "b", holding(5, 30, "ip"));
    assert_eq!(n.run_until(120_000, 121_000), 0);
    let out = n.announce(121_010, "b", idle(5, 31));
    let claim = last_announcement(&out).expect("a claims");
    let mut ack = idle(5, 32);
    ack.seen.insert("a".into(), (claim.inc, claim.seq));
    assert_eq!(starts(&n.announce(121_020, "b", ack)), ["ip"]);

    // Same loss, never healed, b really dies: the group is free.
    let mut n = Single::running("a", &["a", "b"], &["ip"]);
    n.view(0, &[true, true]);
    n.announce(10, "b", idle(5, 1));
    n.run_until(20, 1000);
    n.lose(1500);
    assert_eq!(n.run_until(1600, 20_000), 0);
    let out = n.view(20_000, &[true, false]);
    assert_eq!(starts(&out), ["ip"], "{out:?}");
}

/// Issue 5/7, fault 3: `systemctl restart tandem-membership` on the holder. Its membership
/// leaves cleanly (REASON_LEFT) and is back ~100 ms later as a new generation; its agent
/// held the group all along. Nothing may move. A node that left and does not come back
/// within `left_grace` is treated as dead.
#[test]
fn a_holder_whose_membership_restarts_keeps_the_group() {
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    assert_eq!(n.run_until(20, 1000), 0);
    let out = n.view_full(1500, &[false, true], &[], &["a"], true);
    assert!(
        starts(&out).is_empty(),
        "a left, its agent still holds: {out:?}"
    );
    assert_eq!(n.run_until(1500, 1600), 0);
    // Back as generation 2 within left_grace (1 s here): its agent announces again.
    n.gens[0] = 2;
    assert!(starts(&n.view(1600, &[true, true])).is_empty());
    assert!(starts(&n.announce(1650, "a", holding(3, 2, "ip"))).is_empty());
    let st = n.hv.status(n.at(1700));
    assert_eq!(st.groups[0].holder.as_deref(), Some("a"));
    assert_eq!(n.run_until(1650, 30_000), 0, "zero moves");

    // Left and not back in time: free after left_grace, not before.
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    n.run_until(20, 1000);
    assert!(starts(&n.view_full(1500, &[false, true], &[], &["a"], true)).is_empty());
    assert!(n.hv.next_deadline() <= n.at(2500), "a timer for the grace");
    assert_eq!(n.run_until(1500, 2490), 0);
    n.hv.handle(n.at(2500), Input::Tick);
    assert_eq!(starts(&n.hv.drain_outputs()), ["ip"]);

    // A death by silence (kill -9, power loss) frees at once, as before.
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    n.run_until(20, 1000);
    assert_eq!(starts(&n.view(1500, &[false, true])), ["ip"]);
}

/// Issue 7: settling ends as soon as the last member's agent is heard, not after `settle`
/// (500 ms here); an alive witness that never announces is not waited for.
#[test]
fn settle_ends_as_soon_as_the_last_member_is_heard() {
    let roles = [Role::Member, Role::Member, Role::Member, Role::Witness];
    let mut n = Single::with_roles("a", &["a", "b", "c", "w"], &roles);
    n.view(0, &[true, true, true, true]);
    n.announce(20, "b", idle(5, 1));
    assert_eq!(
        n.hv.state_of("ip"),
        Some(LocalState::Stopped),
        "c not heard"
    );
    let out = n.announce(40, "c", idle(6, 1));
    assert_eq!(
        n.hv.state_of("ip"),
        Some(LocalState::Waiting),
        "claimed at 40 ms, as c is heard: {out:?}"
    );
    let claim = last_announcement(&out).expect("the claim is announced");
    assert!(claim.claims.contains("ip"), "{claim:?}");
    // Both acknowledge: started, still well inside the 500 ms settle.
    let ack = |inc, seq| Announce {
        seen: [("a".to_owned(), (claim.inc, claim.seq))].into(),
        ..idle(inc, seq)
    };
    assert!(starts(&n.announce(50, "b", ack(5, 2))).is_empty());
    assert_eq!(starts(&n.announce(55, "c", ack(6, 2))), ["ip"]);
}

/// A member never heard (here: down, not even seen by membership) keeps the full settle.
#[test]
fn settle_does_not_end_early_while_a_member_was_never_heard() {
    let mut n = Single::new("a", &["a", "b", "c"]);
    n.view(0, &[true, true, false]);
    n.announce(20, "b", idle(5, 1));
    n.hv.handle(n.at(499), Input::Tick);
    n.hv.drain_outputs();
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Stopped), "c unheard");
    assert!(
        n.hv.next_deadline() <= n.at(500),
        "woken at the end of settle"
    );
    n.hv.handle(n.at(500), Input::Tick);
    let out = n.hv.drain_outputs();
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Waiting), "{out:?}");

    // A member that membership reports up but whose agent is silent is still waited for
    // past `settle` (the existing rule, up to `peer_stale_after`).
    let mut n = Single::new("a", &["a", "b", "c"]);
    n.view(0, &[true, true, true]);
    n.announce(20, "b", idle(5, 1));
    assert_eq!(n.run_until(30, 4900), 0);
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Stopped));
    // Once it is heard, the wait ends at once.
    n.announce(4950, "c", idle(6, 1));
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Waiting));

    // b was heard, then membership reports it restarted (a new generation): its earlier
    // announcement says nothing of what it found running since, so it counts as unheard.
    let mut n = Single::new("a", &["a", "b", "c"]);
    n.view(0, &[true, true, true]);
    n.announce(20, "b", idle(5, 1));
    n.gens[1] = 2;
    n.view(30, &[true, true, true]);
    n.announce(40, "c", idle(6, 1));
    assert_eq!(
        n.hv.state_of("ip"),
        Some(LocalState::Stopped),
        "b restarted"
    );
    n.announce(60, "b", idle(9, 1));
    assert_eq!(
        n.hv.state_of("ip"),
        Some(LocalState::Waiting),
        "b heard again"
    );
}

/// Two agents started together, no view lag: the early end of settling must still leave
/// exactly one holder, and it comes before `settle` (500 ms) would have ended.
#[test]
fn a_both_nodes_fresh_start_still_ends_with_one_holder_before_settle() {
    for (seed, prefer, want) in [
        (41, Some("a"), "a"),
        (42, Some("b"), "b"),
        (43, None, "a"),
        (44, None, "a"),
    ] {
        let mut sim = Sim::new(
            seed,
            &["a", "b"],
            &[Role::Member; 2],
            vec![group("ip", prefer, Failback::Auto)],
        );
        sim.run_ms(450);
        assert_eq!(holders(&sim, "ip"), [want], "seed {seed} prefer {prefer:?}");
        assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        sim.run_ms(3000);
        assert_eq!(holders(&sim, "ip"), [want], "seed {seed}");
        assert!(sim.violations.is_empty(), "{:?}", sim.violations);
        sim.assert_converged();
    }
}

/// Issue 7, failback: the preferred node comes back and gets its group through messages
/// alone: its membership sees b at once, b's after 50 ms; then b stops (agent: up to
/// 200 ms), announces the release, a claims, b acknowledges, a starts (messages: up to
/// 30 ms each). No timer of the handover (settle 500 ms, announce 500 ms) is on that path.
#[test]
fn failback_completes_without_waiting_on_a_timer() {
    for seed in 51..56 {
        let mut sim = Sim::new(
            seed,
            &["a", "b"],
            &[Role::Member; 2],
            vec![group("ip", Some("a"), Failback::Auto)],
        );
        sim.view_lag_ms = (50, 50);
        sim.run_ms(1000);
        assert_eq!(holders(&sim, "ip"), ["a"]);
        sim.kill(0);
        sim.run_ms(1000);
        assert_eq!(holders(&sim, "ip"), ["b"], "seed {seed}: failover");
        sim.boot(0);
        let mut waited = 0;
        while holders(&sim, "ip") != ["a"] && waited < 3000 {
            sim.run_ms(10);
            waited += 10;
        }
        assert_eq!(holders(&sim, "ip"), ["a"], "seed {seed}: failback");
        assert!(
            waited <= 50 + 200 + 3 * 30 + 40,
            "seed {seed}: failback took {waited} ms"
        );
        assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    }
}

fn verifies(out: &[Output]) -> Vec<&str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Verify(g) => Some(g.as_str()),
            _ => None,
        })
        .collect()
}

/// Soak seed 23, fault 637: the holder, frozen past `dead_after`, was taken over; its
/// post-thaw check ran before the taker's assignment landed and confirmed it, and both
/// nodes reported the group running until its next regular monitor. A peer's announcement
/// newly holding a group that runs here now makes this node check it against the provider
/// at once, once per conflict: not again on every announcement while it lasts.
#[test]
fn a_peer_newly_holding_a_group_running_here_makes_it_check_the_provider_once() {
    let mut n = Single::running("a", &["a", "b"], &["ip"]);
    n.view(0, &[true, true]);
    let out = n.announce(10, "b", idle(5, 1));
    assert!(verifies(&out).is_empty(), "no conflict yet: {out:?}");
    n.run_until(20, 1000);
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Running));

    // b took it over while a (preferred) was cut off or frozen. While b's start (the
    // assignment) is under way, a check here would still find the resource here.
    let mut starting = holding(5, 2, "ip");
    starting.starting.insert("ip".into());
    let out = n.announce(1000, "b", starting);
    assert!(verifies(&out).is_empty(), "b is still starting: {out:?}");
    // b's start completed: it announces at once, and a checks.
    let out = n.announce(1010, "b", holding(5, 3, "ip"));
    assert_eq!(verifies(&out), ["ip"], "{out:?}");
    // Reported as a conflict only once while it lasts, ticks and announcements alike.
    for (i, ms) in [1500u64, 2000, 2500, 3000].into_iter().enumerate() {
        let out = n.announce(ms, "b", holding(5, 4 + i as u64, "ip"));
        assert!(verifies(&out).is_empty(), "at {ms} ms: {out:?}");
        n.hv.handle(n.at(ms + 10), Input::Tick);
        assert!(verifies(&n.hv.drain_outputs()).is_empty());
    }
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Running));

    // b released it and later holds it again: a new conflict, checked again.
    let out = n.announce(3100, "b", idle(5, 10));
    assert!(verifies(&out).is_empty());
    let out = n.announce(3200, "b", holding(5, 11, "ip"));
    assert_eq!(verifies(&out), ["ip"], "{out:?}");

    // The check found the group elsewhere: stopped here, nothing more to check.
    n.lose(3300);
    let out = n.announce(3400, "b", holding(5, 12, "ip"));
    assert!(verifies(&out).is_empty(), "not running here: {out:?}");
}

#[test]
fn a_peer_holding_a_group_not_running_here_asks_for_no_check() {
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    for seq in 1..5 {
        let out = n.announce(seq * 500, "a", holding(5, seq, "ip"));
        assert!(verifies(&out).is_empty(), "{out:?}");
    }
    assert_eq!(n.run_until(2000, 5000), 0);
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Stopped));
}

#[test]
fn the_groups_still_starting_are_announced_within_the_worst_case_size() {
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", idle(5, 1));
    // a dead, b takes the group over: announced held and starting until the start is done.
    let out = n.view(600, &[false, true]);
    assert_eq!(starts(&out), ["ip"]);
    let a = last_announcement(&out).expect("announced");
    assert!(a.holds.contains("ip") && a.starting.contains("ip"), "{a:?}");
    n.hv.handle(
        n.at(700),
        Input::Agent {
            group: "ip".into(),
            outcome: AgentOutcome::Started,
            actions: Vec::new(),
        },
    );
    let a = last_announcement(&n.hv.drain_outputs()).expect("announced at once");
    assert!(a.holds.contains("ip") && a.starting.is_empty(), "{a:?}");

    // Claimed and starting never go together, and "starts" is no longer than "claims".
    let groups: Vec<String> = (0..8).map(|i| format!("group-{i:02}")).collect();
    let cfg = Config {
        local: "a".into(),
        nodes: vec![("a".into(), Role::Member), ("b".into(), Role::Member)],
        groups: groups
            .iter()
            .map(|g| group(g, None, Failback::Manual))
            .collect(),
        timers: timers(),
        dead_after: Duration::from_secs(1),
        restart: restart_policy(),
        longest_monitor: Duration::from_secs(10),
    };
    let all: BTreeSet<String> = groups.iter().cloned().collect();
    let real = Announce {
        inc: u64::MAX,
        seq: u64::MAX,
        standby: true,
        healthy: true,
        holds: all.clone(),
        claims: BTreeSet::new(),
        starting: all.clone(),
        avoid: all.clone(),
        pins: all,
        // `seen` names the peers only, never the sender itself.
        seen: [("b".into(), (u64::MAX, u64::MAX))].into(),
    };
    let size = Message::State(real).encode().expect("fits").len();
    assert!(size <= worst_case_announcement(&cfg), "{size}");
}

/// The holder thawed while the taker's start (the assignment) is still under way: the
/// taker must not yield to it on config order once its start completes just because the
/// thawed node has seen its *starting* announcement; that node's check could only confirm
/// the stale hold then. It counts once it has seen the finished start (and checked).
#[test]
fn a_thawed_holder_that_saw_only_the_start_does_not_make_the_taker_yield() {
    let base = Time::ZERO;
    let at = |ms: u64| base + Duration::from_millis(ms);
    let cfg = Config {
        local: "b".into(),
        nodes: vec![("a".into(), Role::Member), ("b".into(), Role::Member)],
        groups: vec![group("ip", None, Failback::Manual)],
        timers: timers(),
        dead_after: Duration::from_secs(1),
        restart: restart_policy(),
        longest_monitor: Duration::from_secs(10),
    };
    let mut hv = Core::new(cfg, 7, &[], false, base).expect("handover");
    let a = |state: MemberState| MemberNode {
        name: "a".into(),
        state,
        generation: 1,
    };
    let snapshot = Membership::Snapshot {
        quorum: Quorum {
            quorate: true,
            needed: 1,
        },
        nodes: vec![
            a(MemberState::Up),
            MemberNode {
                name: "b".into(),
                state: MemberState::Up,
                generation: 1,
            },
        ],
    };
    let msg = |a: Announce| Input::Message {
        from: "a".into(),
        generation: 1,
        payload: Message::State(a).encode().expect("encode"),
    };
    hv.handle(at(0), Input::Membership(snapshot));
    hv.handle(at(10), msg(holding(5, 1, "ip")));
    hv.handle(at(1000), Input::Tick);
    hv.drain_outputs();
    // a frozen past dead_after: declared dead, b starts the group at once.
    hv.handle(
        at(1500),
        Input::Membership(Membership::NodeDead {
            node: "a".into(),
            generation: 1,
            reason: DeathReason::Silent,
        }),
    );
    let out = hv.drain_outputs();
    assert_eq!(starts(&out), ["ip"]);
    let starting = last_announcement(&out).expect("announced");
    // Thawed: a (first in configuration order) still announces its hold, having seen b's
    // starting announcement.
    hv.handle(
        at(1600),
        Input::Membership(Membership::NodeUp {
            node: "a".into(),
            generation: 1,
        }),
    );
    let mut stale = holding(5, 2, "ip");
    stale.seen.insert("b".into(), (starting.inc, starting.seq));
    hv.handle(at(1610), msg(stale.clone()));
    assert_eq!(hv.status(at(1610)).groups[0].holder.as_deref(), Some("b"));
    // b's start completes: it keeps the group and announces the finished start.
    hv.handle(
        at(1700),
        Input::Agent {
            group: "ip".into(),
            outcome: AgentOutcome::Started,
            actions: Vec::new(),
        },
    );
    let out = hv.drain_outputs();
    assert!(!out.iter().any(|o| matches!(o, Output::Stop(_))), "{out:?}");
    assert_eq!(hv.state_of("ip"), Some(LocalState::Running));
    let running = last_announcement(&out).expect("announced at once");
    assert!(running.starting.is_empty());
    stale.seq = 3;
    hv.handle(at(1710), msg(stale.clone()));
    assert_eq!(hv.state_of("ip"), Some(LocalState::Running));
    // a saw the finished start and still holds: its check confirmed, a real double hold;
    // configuration order decides.
    stale.seq = 4;
    stale.seen.insert("b".into(), (running.inc, running.seq));
    hv.handle(at(1720), msg(stale));
    assert_eq!(hv.status(at(1720)).groups[0].holder.as_deref(), Some("a"));
}

fn restarts_asked(out: &[Output]) -> Vec<Duration> {
    out.iter()
        .filter_map(|o| match o {
            Output::Restart { after, .. } => Some(*after),
            _ => None,
        })
        .collect()
}

fn monitor_failed(reason: &str) -> AgentOutcome {
    AgentOutcome::MonitorFailed {
        reason: reason.into(),
    }
}

/// `a` runs the group, `b` is up, idle and announced: both settled at 1 s.
fn running_a_with_idle_b() -> Single {
    let mut n = Single::running("a", &["a", "b"], &["ip"]);
    n.view(0, &[true, true]);
    n.announce(10, "b", idle(5, 1));
    assert_eq!(n.run_until(20, 1000), 0);
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Running));
    n
}

/// The restart policy is the core's (was the daemon's): a failing monitor restarts the
/// group here, with the policy's delay, until the window's restarts are used up; then the
/// group is left to the others. A restart that fails gives it up at once.
#[test]
fn a_failing_monitor_restarts_the_group_here_then_gives_it_up() {
    let mut n = running_a_with_idle_b();
    let out = n.agent(1100, monitor_failed("exit 7"));
    assert_eq!(
        restarts_asked(&out),
        [Duration::from_millis(100)],
        "{out:?}"
    );
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Running));
    assert_eq!(n.hv.status(n.at(1100)).groups[0].restarts, 1);
    // Nothing to do; only the event says it runs again.
    let out = n.agent(1300, AgentOutcome::Restarted);
    assert!(out.iter().all(|o| matches!(o, Output::Event(_))), "{out:?}");
    // The policy allows one restart in its window: the next failure gives the group up.
    let out = n.agent(2000, monitor_failed("exit 7"));
    assert!(restarts_asked(&out).is_empty(), "{out:?}");
    assert!(out.contains(&Output::Stop("ip".into())), "{out:?}");
    let st = n.hv.status(n.at(2000));
    assert_eq!(st.groups[0].last_error.as_deref(), Some("exit 7"));
    assert_eq!(
        st.groups[0].not_candidate_reason.as_deref(),
        Some("monitor failed: exit 7")
    );

    // A restart that fails: given up.
    let mut n = running_a_with_idle_b();
    assert_eq!(
        restarts_asked(&n.agent(1100, monitor_failed("exit 7"))).len(),
        1
    );
    let out = n.agent(
        1300,
        AgentOutcome::RestartFailed {
            reason: "start: exit 1".into(),
        },
    );
    assert!(out.contains(&Output::Stop("ip".into())), "{out:?}");
    let st = n.hv.status(n.at(1300));
    assert_eq!(
        st.groups[0].last_error.as_deref(),
        Some("restart failed: start: exit 1")
    );
}

/// A monitor failure while another live node announces holding the group means it moved:
/// no restart here (it would take the group back), given up at once.
#[test]
fn a_monitor_failure_while_a_live_peer_holds_the_group_gives_it_up_without_a_restart() {
    let mut n = running_a_with_idle_b();
    let out = n.announce(1100, "b", holding(5, 2, "ip"));
    assert_eq!(verifies(&out), ["ip"], "{out:?}");
    let out = n.agent(1200, monitor_failed("IP elsewhere"));
    assert!(restarts_asked(&out).is_empty(), "{out:?}");
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Stopping));
    let st = n.hv.status(n.at(1200));
    assert_eq!(
        st.groups[0].last_error.as_deref(),
        Some("IP elsewhere; b holds it")
    );
    assert_eq!(st.groups[0].restarts, 0);
}

/// The forgive rules are the core's: bringing this node online forgets the restarts of
/// every group and asks the shell to reset its agents' failure counts; a takeover, those
/// of its group.
#[test]
fn online_and_takeover_forgive_past_failures() {
    let mut n = running_a_with_idle_b();
    n.agent(1100, monitor_failed("exit 7"));
    assert_eq!(n.hv.status(n.at(1100)).groups[0].restarts, 1);
    n.hv.command(n.at(1200), Command::Online(None))
        .expect("online");
    let out = n.hv.drain_outputs();
    assert!(out.contains(&Output::Forgive("ip".into())), "{out:?}");
    assert_eq!(n.hv.status(n.at(1200)).groups[0].restarts, 0);

    n.agent(1300, monitor_failed("exit 7"));
    n.hv.command(n.at(1400), Command::Takeover("ip".into()))
        .expect("takeover");
    let out = n.hv.drain_outputs();
    assert!(out.contains(&Output::Forgive("ip".into())), "{out:?}");
    assert_eq!(n.hv.status(n.at(1400)).groups[0].restarts, 0);

    // A refused command forgives nothing; online of another node neither.
    n.agent(1500, monitor_failed("exit 7"));
    assert!(
        n.hv.command(n.at(1600), Command::Takeover("nope".into()))
            .is_err()
    );
    n.hv.command(n.at(1600), Command::Online(Some("b".into())))
        .expect("asked");
    let out = n.hv.drain_outputs();
    assert!(
        !out.iter().any(|o| matches!(o, Output::Forgive(_))),
        "{out:?}"
    );
    assert_eq!(n.hv.status(n.at(1600)).groups[0].restarts, 1);
}

/// The stall watch is the core's: a gap between two inputs longer than the threshold
/// (half of dead_after, 500 ms here) while a group runs here checks it at once and reports
/// it starting until the check answers. With nothing running here there is no tick, and a
/// long gap is no stall.
#[test]
fn a_stall_while_a_group_runs_here_checks_it_and_reports_it_starting_until_confirmed() {
    let mut n = running_a_with_idle_b();
    assert!(
        n.hv.next_deadline() <= n.at(1000) + Duration::from_millis(250),
        "armed: a tick every half threshold"
    );
    // Frozen for 2 s: the first wake-up after it is a stall.
    n.hv.handle(n.at(3000), Input::Tick);
    let out = n.hv.drain_outputs();
    assert_eq!(verifies(&out), ["ip"], "{out:?}");
    assert_eq!(
        n.hv.status(n.at(3000)).groups[0].state,
        LocalState::Starting
    );
    assert_eq!(n.hv.state_of("ip"), Some(LocalState::Running));
    assert!(n.agent(3100, AgentOutcome::Verified).is_empty());
    assert_eq!(n.hv.status(n.at(3100)).groups[0].state, LocalState::Running);

    // Nothing runs here: no stall tick, and a long gap checks nothing.
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    n.run_until(20, 1000);
    n.hv.handle(n.at(30_000), Input::Tick);
    assert!(verifies(&n.hv.drain_outputs()).is_empty());
}

/// The disconnect watch is the core's: while membership is unreachable, the groups
/// running here are checked from dead_after on (the first check reports them starting
/// until confirmed), then with a period doubling from dead_after up to the longest monitor
/// interval (10 s here); back in touch, no more checks.
#[test]
fn an_outage_checks_the_groups_running_here_from_dead_after_on() {
    let mut n = running_a_with_idle_b();
    n.disconnect(1000);
    let mut checks = Vec::new();
    let mut t = n.at(1000);
    while t <= n.at(20_000) {
        n.hv.handle(t, Input::Tick);
        if !verifies(&n.hv.drain_outputs()).is_empty() {
            checks.push((t - n.at(1000)).as_millis());
            // Answered at once.
            n.agent((t.as_millis() as u64) + 1, AgentOutcome::Verified);
        }
        t = n.hv.next_deadline().max(t + Duration::from_millis(10));
    }
    assert_eq!(
        checks,
        [1000, 2000, 4000, 8000, 16_000],
        "ms after the outage began"
    );
    let st = n.hv.status(n.at(20_000));
    assert_eq!(st.disconnected_for, Some(Duration::from_secs(19)));
    // Back: a snapshot; no more checks.
    n.view(20_000, &[true, true]);
    assert_eq!(n.hv.status(n.at(20_000)).disconnected_for, None);
    assert!(verifies(&n.outputs_until(20_000, 60_000)).is_empty());
}

fn start_cause(out: &[Output]) -> Option<StartCause> {
    out.iter().find_map(|o| match o {
        Output::Start { cause, .. } => Some(*cause),
        _ => None,
    })
}

/// Why a group starts here is the core's to say (it was the shell's, with metrics on):
/// its last holder elsewhere is dead (failover), alive (handover), or none was known.
#[test]
fn a_start_says_whether_it_is_a_failover_a_handover_or_the_first() {
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    n.run_until(20, 1000);
    assert_eq!(
        start_cause(&n.view(1500, &[false, true])),
        Some(StartCause::Failover)
    );

    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    n.run_until(20, 1000);
    // a goes to standby and releases the group; b claims, a acknowledges.
    let out = n.announce(
        1100,
        "a",
        Announce {
            standby: true,
            ..idle(3, 2)
        },
    );
    let claim = last_announcement(&out).expect("b claims");
    assert!(claim.claims.contains("ip"), "{claim:?}");
    let mut ack = Announce {
        standby: true,
        ..idle(3, 3)
    };
    ack.seen.insert("b".into(), (claim.inc, claim.seq));
    assert_eq!(
        start_cause(&n.announce(1110, "a", ack)),
        Some(StartCause::Handover)
    );

    let mut n = Single::new("a", &["a", "b"]);
    n.view(0, &[true, true]);
    let out = n.announce(10, "b", idle(5, 1));
    let claim = last_announcement(&out).expect("a claims");
    let mut ack = idle(5, 2);
    ack.seen.insert("a".into(), (claim.inc, claim.seq));
    assert_eq!(
        start_cause(&n.announce(20, "b", ack)),
        Some(StartCause::Initial)
    );
}

/// The messages among `out`, with their addressee.
fn sent(out: &[Output]) -> Vec<(Option<String>, Message)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, payload } => Message::decode(payload).ok().map(|m| (to.clone(), m)),
            _ => None,
        })
        .collect()
}

/// A release asks the next candidate to take the group over, leaves no ban here, and
/// shows as a pin on that node, with the command that clears it.
#[test]
fn a_release_pins_the_group_on_the_next_candidate_and_bans_nobody() {
    let mut n = running_a_with_idle_b();
    n.hv.command(n.at(1100), Command::Release("ip".into()))
        .expect("release");
    let takeover = Message::Takeover {
        node: "b".into(),
        group: "ip".into(),
    };
    assert!(
        sent(&n.hv.drain_outputs()).contains(&(Some("b".into()), takeover.clone())),
        "b is asked"
    );
    let st = n.hv.status(n.at(1100));
    assert_eq!(
        st.groups[0].not_candidate_reason, None,
        "a stays a candidate"
    );
    assert!(st.groups[0].constraints.is_empty(), "{st:?}");
    // b took the request: its announcement pins the group there; a hands it over.
    let out = n.announce(
        1150,
        "b",
        Announce {
            pins: ["ip".to_owned()].into(),
            ..idle(5, 2)
        },
    );
    assert!(out.contains(&Output::Stop("ip".into())), "{out:?}");
    let st = n.hv.status(n.at(1150));
    assert_eq!(
        st.groups[0]
            .constraints
            .iter()
            .map(|c| (c.kind, c.node.as_str(), c.clear.as_str()))
            .collect::<Vec<_>>(),
        [(ConstraintKind::Pin, "b", "ipctl online b")]
    );

    // On b: the request pins the group there; `ipctl online` clears the pin.
    let mut b = Single::new("b", &["a", "b"]);
    b.view(0, &[true, true]);
    b.announce(10, "a", holding(3, 1, "ip"));
    b.run_until(20, 1000);
    let out = b.message(1100, "a", takeover);
    let a = last_announcement(&out).expect("b announces its pin");
    assert!(a.pins.contains("ip"), "{a:?}");
    let pin = Constraint {
        kind: ConstraintKind::Pin,
        node: "b".into(),
        reason: "moved there by an operator (takeover there or release on the holder); \
                 lasts until it moves away from b"
            .into(),
        clear: "ipctl online b".into(),
    };
    assert_eq!(b.hv.status(b.at(1100)).groups[0].constraints, [pin]);
    b.hv.command(b.at(1200), Command::Online(None))
        .expect("online");
    assert!(b.hv.status(b.at(1200)).groups[0].constraints.is_empty());
    // A request for another node is refused and counted.
    let bad = b.hv.status(b.at(1200)).bad_messages;
    b.message(
        1300,
        "a",
        Message::Takeover {
            node: "a".into(),
            group: "ip".into(),
        },
    );
    assert_eq!(b.hv.status(b.at(1300)).bad_messages, bad + 1);
}

/// A failed start bans this node for a while: shown with its reason, when it lapses and
/// the command that clears it, here and on the peers.
#[test]
fn a_failure_ban_is_shown_with_the_command_that_clears_it() {
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    n.run_until(20, 1000);
    assert_eq!(starts(&n.view(1500, &[false, true])), ["ip"]);
    n.agent(
        1600,
        AgentOutcome::StartFailed {
            clean: true,
            reason: "assign: 503".into(),
        },
    );
    let st = n.hv.status(n.at(1600));
    let c = &st.groups[0].constraints;
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!((c[0].kind, c[0].node.as_str()), (ConstraintKind::Ban, "b"));
    assert_eq!(c[0].clear, "ipctl online b");
    assert!(
        c[0].reason
            .starts_with("start failed: assign: 503; retried here in 1s"),
        "{c:?}"
    );
    // A peer's ban, as announced.
    let mut a = Single::new("a", &["a", "b"]);
    a.view(0, &[true, true]);
    a.announce(
        10,
        "b",
        Announce {
            avoid: ["ip".to_owned()].into(),
            ..idle(5, 1)
        },
    );
    let c = &a.hv.status(a.at(20)).groups[0].constraints;
    assert_eq!(
        c.iter()
            .map(|c| (c.kind, c.node.as_str(), c.clear.as_str()))
            .collect::<Vec<_>>(),
        [(ConstraintKind::Ban, "b", "ipctl online b")]
    );
}

/// The group events among `out`.
fn group_events(out: &[Output]) -> Vec<GroupEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(CoreEvent::Group(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn changes(out: &[Output]) -> Vec<(GroupChange, Cause)> {
    group_events(out)
        .iter()
        .map(|e| (e.change, e.cause))
        .collect()
}

fn assign_record(took_ms: u64) -> ActionRecord {
    ActionRecord {
        agent: "reserved-ip 10.0.0.1".into(),
        action: "start".into(),
        call: Some("digitalocean assign".into()),
        ok: true,
        timed_out: false,
        took: Duration::from_millis(took_ms),
        message: String::new(),
    }
}

/// Issue 12 item 3: a failover is told as events from the core itself: starting (cause
/// failover, from the dead holder), then running with the time the start took and the
/// provider call behind it, as the worker reported it.
#[test]
fn a_failover_is_told_as_starting_then_running_with_the_provider_call() {
    let mut n = Single::new("b", &["a", "b"]);
    n.view(0, &[true, true]);
    n.announce(10, "a", holding(3, 1, "ip"));
    n.run_until(20, 1000);
    let out = n.view(1500, &[false, true]);
    let ev = group_events(&out);
    assert_eq!(ev.len(), 1, "{out:?}");
    assert_eq!(
        (ev[0].change, ev[0].cause, ev[0].peer.as_deref()),
        (GroupChange::Starting, Cause::Failover, Some("a"))
    );
    assert_eq!(ev[0].state, LocalState::Starting);
    n.hv.handle(
        n.at(2900),
        Input::Agent {
            group: "ip".into(),
            outcome: AgentOutcome::Started,
            actions: vec![assign_record(1380)],
        },
    );
    let ev = group_events(&n.hv.drain_outputs());
    assert_eq!(ev.len(), 1, "{ev:?}");
    let e = &ev[0];
    assert_eq!((e.change, e.cause), (GroupChange::Running, Cause::Failover));
    assert_eq!(e.node, "b");
    assert_eq!(e.peer.as_deref(), Some("a"));
    assert_eq!(e.took, Some(Duration::from_millis(1400)));
    assert_eq!(e.actions, [assign_record(1380)]);
}

/// Standby stops the group with the cause "operator" and says where it goes; the stop
/// ends with "stopped"; the new holder's announcement is "moved" (to b, from a).
#[test]
fn standby_is_told_as_an_operator_stop_then_a_move() {
    let mut n = running_a_with_idle_b();
    n.hv.command(n.at(1100), Command::Standby(None))
        .expect("standby");
    let out = n.hv.drain_outputs();
    let ev = group_events(&out);
    assert_eq!(changes(&out), [(GroupChange::Stopping, Cause::Operator)]);
    assert_eq!(ev[0].peer.as_deref(), Some("b"), "{ev:?}");
    let out = n.agent(1150, AgentOutcome::Stopped);
    let ev = group_events(&out);
    assert_eq!(changes(&out), [(GroupChange::Stopped, Cause::Operator)]);
    assert_eq!(ev[0].took, Some(Duration::from_millis(50)));
    let out = n.announce(1300, "b", holding(5, 2, "ip"));
    let ev = group_events(&out);
    assert_eq!(changes(&out), [(GroupChange::Moved, Cause::Operator)]);
    assert_eq!(
        (ev[0].node.as_str(), ev[0].peer.as_deref()),
        ("b", Some("a"))
    );
    // Told once: the same holder again is no news.
    assert!(group_events(&n.announce(1400, "b", holding(5, 3, "ip"))).is_empty());
}

/// A failing monitor is told as failed (with the monitor's call), then restarting with the
/// delay; once given up, failed then stopping, both with the cause "monitor".
#[test]
fn a_failing_monitor_is_told_as_failed_restarting_then_stopping() {
    let mut n = running_a_with_idle_b();
    let out = n.agent(1100, monitor_failed("exit 7"));
    assert_eq!(
        changes(&out),
        [
            (GroupChange::Failed, Cause::Monitor),
            (GroupChange::Restarting, Cause::Monitor)
        ]
    );
    let ev = group_events(&out);
    assert_eq!(ev[0].reason.as_deref(), Some("monitor failed: exit 7"));
    assert_eq!(ev[1].took, Some(Duration::from_millis(100)));
    let out = n.agent(1300, AgentOutcome::Restarted);
    assert_eq!(changes(&out), [(GroupChange::Running, Cause::Monitor)]);
    let out = n.agent(2000, monitor_failed("exit 7"));
    assert_eq!(
        changes(&out),
        [
            (GroupChange::Failed, Cause::Monitor),
            (GroupChange::Stopping, Cause::Monitor)
        ]
    );
}

/// Claims are no events: a node that claims and withdraws tells nothing.
#[test]
fn a_claim_and_its_withdrawal_are_no_events() {
    let mut n = Single::new("a", &["a", "b"]);
    n.view(0, &[true, true]);
    let out = n.announce(10, "b", idle(5, 1));
    assert!(last_announcement(&out).is_some_and(|a| a.claims.contains("ip")));
    assert!(group_events(&out).is_empty(), "{out:?}");
    let out = n.view(20, &[true, false]);
    assert!(
        group_events(&out)
            .iter()
            .all(|e| e.change == GroupChange::Starting)
    );
}
