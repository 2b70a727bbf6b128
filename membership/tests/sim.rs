//! Deterministic simulation of whole clusters through the sans-IO core: no sockets, no real
//! time. Every seed builds a cluster (2, 3 or 5 nodes, or 32), a lossy, duplicating,
//! reordering network, and a script of partitions, link cuts, crashes, clean leaves,
//! restarts with wall-clock steps, freezes (SIGSTOP/SIGCONT: the node's process does not
//! run, datagrams to it wait until it thaws), and cluster messages; invariants are checked
//! at every step.
//!
//! A failing seed is printed; replay it alone with
//! `SIM_SEED=<seed> cargo test -p tandem-membership --test sim -- --nocapture`.
//! `SIM_SEEDS=<n>` changes how many seeds the main test runs.
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use prost::Message as _;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tandem_daemon_kit::generation::next_generation;
use tandem_membership::core::wire::{self, KeyRing, msg};
use tandem_membership::core::{
    Core, DeadReason, EventKind, NodeSpec, NodeState, QuorumPolicy, Role, STALL_INTERVALS,
    SendError, Settings, Time, Timing,
};

const KEY: &[u8] = b"sim-key-sim-key-sim-key-sim-key!";

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

#[derive(Debug, Clone)]
struct Params {
    nodes: usize,
    links: usize,
    timing: Timing,
    policy: QuorumPolicy,
    loss: f64,
    dup: f64,
    delay_max: Duration,
    duration: Time,
    settle: Time,
    faults: usize,
    message_every: Option<Duration>,
}

#[derive(Clone)]
struct Flight {
    at: Time,
    order: u64,
    from: usize,
    from_gen: u64,
    to: usize,
    link: usize,
    src: SocketAddr,
    /// Shared by the copies of one datagram: the incarnation that accepted it first.
    taken: Rc<Cell<u64>>,
    leaving: bool,
    bytes: Vec<u8>,
}

impl PartialEq for Flight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl Eq for Flight {}
impl PartialOrd for Flight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Flight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(o.at, o.order))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct ModelNode {
    state: NodeState,
    generation: u64,
}

/// One running incarnation of a node and what the checker knows about it.
struct Running {
    core: Core,
    /// Unique per started incarnation in this simulation.
    incarnation: u64,
    start: Time,
    last_seq: u64,
    model: Vec<ModelNode>,
    quorate: bool,
    /// Last time a datagram that the core must accept arrived from each node.
    last_fresh: Vec<Option<Time>>,
    seen_gen: Vec<u64>,
    left_gen: Vec<u64>,
    delivered_ids: HashSet<u64>,
    /// Last message id delivered per (sender, sender generation).
    last_msg: HashMap<(usize, u64), u64>,
    /// Peers this incarnation ever declared dead (their streams may have gaps).
    saw_dead: HashSet<usize>,
    /// When the core was last fed an input, to mirror its stall rule.
    last_input: Time,
    /// Per peer: the time since it was last heard (since the start, never heard) during
    /// which this node was stalled. The core does not count it as that peer's silence.
    stalled: Vec<Duration>,
    /// Per peer, likewise: time this node did not run that was too short to be a stall
    /// (one to two intervals); it does count as silence, so detection may be that late.
    slack: Vec<Duration>,
    /// When this node last came out of a stall.
    stall_end: Option<Time>,
}

impl Running {
    /// Mirror of the core's stall rule (`STALL_INTERVALS`): call before every input.
    fn input(&mut self, now: Time, t: Timing) {
        let gap = now.saturating_sub(self.last_input);
        self.last_input = self.last_input.max(now);
        if gap > t.interval * STALL_INTERVALS {
            for s in &mut self.stalled {
                *s += gap - t.interval;
            }
            self.stall_end = Some(now);
        } else if gap > t.interval {
            for s in &mut self.slack {
                *s += gap - t.interval;
            }
        }
    }
}

struct SimNode {
    spec: NodeSpec,
    generation: u64,
    run: Option<Running>,
    /// Restarted, crashed or left at least once.
    disturbed: bool,
    /// The core's next deadline, refreshed after every input (cached: asking all cores at
    /// every step dominates the run time of big clusters).
    deadline: Option<Time>,
    /// Frozen (SIGSTOP) until then: no input at all; datagrams to it wait in `held`.
    frozen_until: Option<Time>,
    held: Vec<Flight>,
}

struct Sim {
    p: Params,
    rng: SmallRng,
    now: Time,
    nodes: Vec<SimNode>,
    addr: HashMap<SocketAddr, (usize, usize)>,
    flights: BinaryHeap<Reverse<Flight>>,
    order: u64,
    next_id: u64,
    /// Partition: group per node (None = whole).
    groups: Option<Vec<u8>>,
    partition_since: Time,
    cut_links: Vec<bool>,
    /// Message ids queued per (sender, sender generation, receiver), in send order.
    sent: HashMap<(usize, u64, usize), Vec<u64>>,
    next_msg: u64,
    wall_base: u64,
    log: bool,
}

impl Sim {
    fn new(seed: u64, p: Params, log: bool) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let nodes: Vec<SimNode> = (0..p.nodes)
            .map(|i| SimNode {
                spec: NodeSpec {
                    name: format!("n{i}"),
                    addresses: (0..p.links)
                        .map(|l| {
                            SocketAddr::from((
                                [127, l as u8 + 1, (i / 250) as u8, (i % 250) as u8 + 1],
                                694,
                            ))
                        })
                        .collect(),
                    role: if i == 2 { Role::Witness } else { Role::Member },
                },
                generation: 0,
                run: None,
                disturbed: false,
                deadline: None,
                frozen_until: None,
                held: Vec::new(),
            })
            .collect();
        let mut addr = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for (k, a) in n.spec.addresses.iter().enumerate() {
                addr.insert(*a, (i, k));
            }
        }
        let wall_base = 1_700_000_000 + rng.random_range(0..1_000_000u64);
        let mut sim = Sim {
            cut_links: vec![false; p.links],
            p,
            rng,
            now: Duration::ZERO,
            nodes,
            addr,
            flights: BinaryHeap::new(),
            order: 0,
            next_id: 0,
            groups: None,
            partition_since: Duration::ZERO,
            sent: HashMap::new(),
            next_msg: 1,
            wall_base,
            log,
        };
        for i in 0..sim.p.nodes {
            sim.start(i).expect("start");
        }
        sim
    }

    fn wall_secs(&mut self) -> u64 {
        // The wall clock steps back by up to an hour now and then: the generation must still
        // increase.
        let step: i64 = if self.rng.random_bool(0.3) {
            -self.rng.random_range(0..3600i64)
        } else {
            0
        };
        (self.wall_base as i64 + self.now.as_secs() as i64 + step) as u64
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        let wall = self.wall_secs();
        let prev = self.nodes[i].generation;
        let g = next_generation((prev != 0).then_some(prev), wall)
            .ok_or_else(|| format!("generation exhausted at {prev}"))?;
        if g <= prev {
            return Err(format!("generation did not increase: {prev} -> {g}"));
        }
        self.nodes[i].generation = g;
        let settings = Settings {
            cluster: "sim".into(),
            nodes: self.nodes.iter().map(|n| n.spec.clone()).collect(),
            local: self.nodes[i].spec.name.clone(),
            timing: self.p.timing,
            quorum: self.p.policy,
            generation: g,
            keys: KeyRing::new((1, KEY), &[]),
        };
        let core = Core::new(settings, self.now).map_err(|e| e.to_string())?;
        let n = self.p.nodes;
        let mut model = vec![
            ModelNode {
                state: NodeState::Unknown,
                generation: 0
            };
            n
        ];
        model[i] = ModelNode {
            state: NodeState::Up,
            generation: g,
        };
        let quorate = core.quorum().quorate;
        self.next_id += 1;
        self.nodes[i].run = Some(Running {
            incarnation: self.next_id,
            core,
            start: self.now,
            last_seq: 0,
            model,
            quorate,
            last_fresh: vec![None; n],
            seen_gen: vec![0; n],
            left_gen: vec![0; n],
            delivered_ids: HashSet::new(),
            last_msg: HashMap::new(),
            saw_dead: HashSet::new(),
            last_input: self.now,
            stalled: vec![Duration::ZERO; n],
            slack: vec![Duration::ZERO; n],
            stall_end: None,
        });
        self.nodes[i].deadline = self.nodes[i]
            .run
            .as_ref()
            .and_then(|r| r.core.next_deadline());
        self.trace(format!("{} starts gen {g}", self.nodes[i].spec.name));
        Ok(())
    }

    fn trace(&self, s: String) {
        if self.log {
            println!("{:>10.3?} {s}", self.now);
        }
    }

    /// Moves a node's queued outputs into the network and the checker.
    fn drain(&mut self, i: usize, leaving: bool) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let Some(run) = node.run.as_mut() else {
            node.deadline = None;
            return Ok(());
        };
        node.deadline = run.core.next_deadline();
        let mut transmits = Vec::new();
        while let Some(t) = run.core.poll_transmit() {
            transmits.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = run.core.poll_event() {
            events.push(e);
        }
        let mut deliveries = Vec::new();
        while let Some(d) = run.core.poll_delivery() {
            deliveries.push(d);
        }
        let g_now = self.nodes[i].generation;
        for t in transmits {
            let &(to, link) = self
                .addr
                .get(&t.dest)
                .ok_or_else(|| format!("transmit to unknown address {}", t.dest))?;
            if t.bytes.len() > 1199 {
                return Err(format!("datagram of {} bytes", t.bytes.len()));
            }
            let src = self.nodes[i].spec.addresses[t.link];
            let taken = Rc::new(Cell::new(0));
            let copies = if self.rng.random_bool(self.p.dup) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                if self.rng.random_bool(self.p.loss) {
                    continue;
                }
                let delay = Duration::from_micros(
                    self.rng
                        .random_range(50..=self.p.delay_max.as_micros() as u64),
                );
                self.order += 1;
                self.flights.push(Reverse(Flight {
                    at: self.now + delay,
                    order: self.order,
                    from: i,
                    from_gen: g_now,
                    to,
                    link,
                    src,
                    taken: taken.clone(),
                    leaving,
                    bytes: t.bytes.clone(),
                }));
            }
        }
        for e in events {
            self.check_event(i, e)?;
        }
        for d in deliveries {
            let run = self.nodes[i].run.as_mut().expect("running");
            if d.payload.len() != 8 {
                return Err("delivered payload is not a message id".into());
            }
            let id = u64::from_be_bytes(d.payload[..8].try_into().expect("8 bytes"));
            if !run.delivered_ids.insert(id) {
                return Err(format!("node {i}: message {id} delivered twice"));
            }
            let last = run.last_msg.entry((d.from, d.from_generation)).or_insert(0);
            if id <= *last {
                return Err(format!(
                    "node {i}: message {id} from {} after {}",
                    d.from, *last
                ));
            }
            *last = id;
            let sent = self
                .sent
                .get(&(d.from, d.from_generation, i))
                .is_some_and(|v| v.binary_search(&id).is_ok());
            if !sent {
                return Err(format!(
                    "node {i}: delivered message {id} that was never sent to it"
                ));
            }
        }
        Ok(())
    }

    fn check_event(&mut self, i: usize, e: tandem_membership::core::Event) -> Result<(), String> {
        let t = self.p.timing;
        let now = self.now;
        let name = self.nodes[i].spec.name.clone();
        let run = self.nodes[i].run.as_mut().expect("running");
        if e.seq != run.last_seq + 1 {
            return Err(format!(
                "{name}: event seq {} after {}",
                e.seq, run.last_seq
            ));
        }
        run.last_seq = e.seq;
        if self.log {
            println!("{:>10.3?} {name}: {:?}", now, e.kind);
        }
        match e.kind {
            EventKind::NodeUp {
                node,
                generation,
                new_incarnation,
                previous_generation,
            } => {
                let m = run.model[node];
                if previous_generation != m.generation {
                    return Err(format!(
                        "{name}: NodeUp previous {previous_generation} != {}",
                        m.generation
                    ));
                }
                if m.state == NodeState::Up && generation == m.generation {
                    return Err(format!("{name}: NodeUp for a node already up"));
                }
                if new_incarnation != (generation > m.generation && m.generation != 0) {
                    return Err(format!("{name}: wrong new_incarnation flag"));
                }
                run.model[node] = ModelNode {
                    state: NodeState::Up,
                    generation,
                };
            }
            EventKind::NodeLate { node, silent_for } => {
                if run.model[node].state != NodeState::Up || silent_for < t.warn_after {
                    return Err(format!("{name}: bad NodeLate {silent_for:?}"));
                }
                run.model[node].state = NodeState::Late;
            }
            EventKind::NodeDead { node, reason, .. } => {
                let m = run.model[node];
                if m.state == NodeState::Dead {
                    return Err(format!("{name}: NodeDead for a dead node"));
                }
                match reason {
                    DeadReason::Silent => {
                        let last = run.last_fresh[node].ok_or_else(|| {
                            format!("{name}: silent death of n{node} never heard")
                        })?;
                        // Silence on this node's running time: a stall of its own is not
                        // the peer's silence.
                        let silent = (now - last).saturating_sub(run.stalled[node]);
                        if silent < t.dead_after
                            || silent > t.dead_after + t.interval + run.slack[node]
                        {
                            return Err(format!(
                                "{name}: n{node} declared dead after {silent:?} of silence"
                            ));
                        }
                    }
                    DeadReason::NeverHeard => {
                        if m.state != NodeState::Unknown
                            || now - run.start < t.init_dead + run.stalled[node]
                        {
                            return Err(format!("{name}: early never-heard death of n{node}"));
                        }
                    }
                    DeadReason::Left => {}
                }
                run.model[node].state = NodeState::Dead;
                run.saw_dead.insert(node);
            }
            EventKind::LinkUp { .. } | EventKind::LinkDown { .. } => {}
            // The simulation sends on topic "t" only, which is not retained.
            EventKind::Notice(n) => {
                return Err(format!("{name}: notice on topic {:?}", n.topic));
            }
            EventKind::QuorumChanged(q) => {
                if q.quorate == run.quorate {
                    return Err(format!("{name}: QuorumChanged without a change"));
                }
                run.quorate = q.quorate;
            }
        }
        Ok(())
    }

    /// Invariants that hold at every instant.
    fn check_state(&self) -> Result<(), String> {
        let t = self.p.timing;
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(run) = &n.run else { continue };
            if n.frozen_until.is_some() {
                // A frozen process reports nothing; it is checked again once thawed.
                continue;
            }
            for (p, m) in run.model.iter().enumerate() {
                if p == i {
                    continue;
                }
                let (state, generation) = run.core.node_state(p);
                if state != m.state || generation != m.generation {
                    return Err(format!(
                        "{}: events say n{p} is {m:?}, core says {state:?}/{generation}",
                        n.spec.name
                    ));
                }
                if m.state.is_alive() {
                    let last = run.last_fresh[p].unwrap_or(run.start);
                    if self.now > last + run.stalled[p] + run.slack[p] + t.dead_after + t.interval {
                        return Err(format!(
                            "{}: n{p} still alive after {:?} of silence",
                            n.spec.name,
                            self.now - last
                        ));
                    }
                }
                if m.state == NodeState::Unknown
                    && self.now > run.start + run.stalled[p] + t.init_dead + t.interval
                {
                    return Err(format!("{}: n{p} unknown past init_dead", n.spec.name));
                }
            }
            if run.core.quorum().quorate != run.quorate {
                return Err(format!(
                    "{}: quorum events disagree with the core",
                    n.spec.name
                ));
            }
        }
        // Quorum is held by at most one side of a partition, once detection had time: on
        // each node's running time, so a node that was stalled since gets one more
        // detection period from the end of its stall.
        if let (Some(groups), QuorumPolicy::Majority) = (&self.groups, self.p.policy)
            && self.now >= self.partition_since + t.dead_after + t.interval
        {
            let detected = |r: &Running| {
                r.stall_end
                    .is_none_or(|e| self.now >= e + t.dead_after + t.interval)
            };
            let sides: HashSet<u8> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.frozen_until.is_none())
                .filter(|(_, n)| n.run.as_ref().is_some_and(|r| r.quorate && detected(r)))
                .map(|(i, _)| groups[i])
                .collect();
            if sides.len() > 1 {
                return Err("both sides of a partition hold quorum".into());
            }
        }
        Ok(())
    }

    fn deliver(&mut self, f: Flight) -> Result<(), String> {
        if let Some(g) = &self.groups
            && g[f.from] != g[f.to]
        {
            return Ok(());
        }
        if self.cut_links[f.link] {
            return Ok(());
        }
        if self.nodes[f.to].frozen_until.is_some() && self.nodes[f.to].run.is_some() {
            // In the socket buffer until the process runs again.
            self.nodes[f.to].held.push(f);
            return Ok(());
        }
        let now = self.now;
        let my_generation = self.nodes[f.to].generation;
        let Some(run) = self.nodes[f.to].run.as_mut() else {
            return Ok(());
        };
        // Mirror of the core's acceptance rules, to know when the peer was truly "heard":
        // only datagrams addressed to the receiver's current generation count.
        let confirmed = wire::parse(&f.bytes)
            .ok()
            .and_then(|(_, p)| msg::Packet::decode(p).ok())
            .is_some_and(|p| p.receiver_generation == my_generation);
        let fresh = confirmed
            && f.from_gen >= run.seen_gen[f.from]
            && f.from_gen > run.left_gen[f.from]
            && f.taken.get() != run.incarnation;
        run.input(now, self.p.timing);
        if fresh {
            f.taken.set(run.incarnation);
            run.seen_gen[f.from] = f.from_gen;
            run.last_fresh[f.from] = Some(now);
            run.stalled[f.from] = Duration::ZERO;
            run.slack[f.from] = Duration::ZERO;
            if f.leaving {
                run.left_gen[f.from] = f.from_gen;
            }
        }
        run.core.handle_datagram(now, f.link, f.src, &f.bytes);
        self.drain(f.to, false)
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].run.is_some())
            .collect()
    }

    /// Running and not frozen: able to act now.
    fn active(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].run.is_some() && self.nodes[i].frozen_until.is_none())
            .collect()
    }

    /// SIGCONT: the node runs again; what arrived meanwhile is read first, in arrival order.
    fn thaw(&mut self, i: usize) -> Result<(), String> {
        self.nodes[i].frozen_until = None;
        self.trace(format!("n{i} thaws"));
        for f in std::mem::take(&mut self.nodes[i].held) {
            self.deliver(f)?;
        }
        Ok(())
    }

    fn fault(&mut self) -> Result<(), String> {
        let n = self.p.nodes;
        match self.rng.random_range(0..7u32) {
            0 | 1 => {
                let mut g: Vec<u8> = (0..n).map(|_| self.rng.random_range(0..2u8)).collect();
                g[0] = 0;
                g[n - 1] = 1;
                self.trace(format!("partition {g:?}"));
                self.groups = Some(g);
                self.partition_since = self.now;
            }
            2 => {
                self.trace("heal".into());
                self.groups = None;
                self.cut_links.iter_mut().for_each(|c| *c = false);
            }
            3 => {
                let l = self.rng.random_range(0..self.p.links);
                self.trace(format!("cut link {l}"));
                self.cut_links[l] = !self.cut_links[l];
            }
            4 => {
                let running = self.running();
                if running.len() > 1 {
                    let i = running[self.rng.random_range(0..running.len())];
                    self.nodes[i].disturbed = true;
                    // A frozen process can be killed, but it cannot leave cleanly.
                    if self.nodes[i].frozen_until.is_some() || self.rng.random_bool(0.5) {
                        self.trace(format!("crash n{i}"));
                        self.nodes[i].run = None;
                        self.nodes[i].deadline = None;
                        self.nodes[i].frozen_until = None;
                        self.nodes[i].held.clear();
                    } else {
                        self.trace(format!("n{i} leaves"));
                        let now = self.now;
                        if let Some(r) = self.nodes[i].run.as_mut() {
                            r.core.leave(now);
                        }
                        self.drain(i, true)?;
                        self.nodes[i].run = None;
                        self.nodes[i].deadline = None;
                    }
                }
            }
            5 => {
                // SIGSTOP for less or (much) more than dead_after.
                let active = self.active();
                if !active.is_empty() {
                    let i = active[self.rng.random_range(0..active.len())];
                    let d = ms(self.rng.random_range(150..3000));
                    self.trace(format!("n{i} frozen for {d:?}"));
                    self.nodes[i].frozen_until = Some(self.now + d);
                }
            }
            _ => {
                let stopped: Vec<usize> = (0..n).filter(|&i| self.nodes[i].run.is_none()).collect();
                if let Some(&i) = stopped.first() {
                    self.nodes[i].disturbed = true;
                    self.start(i)?;
                }
            }
        }
        Ok(())
    }

    fn send_message(&mut self) -> Result<(), String> {
        let running = self.active();
        if running.is_empty() {
            return Ok(());
        }
        let i = running[self.rng.random_range(0..running.len())];
        let to = if self.rng.random_bool(0.3) {
            None
        } else {
            let t = self.rng.random_range(0..self.p.nodes);
            Some(self.nodes[t].spec.name.clone())
        };
        let id = self.next_msg;
        self.next_msg += 1;
        let now = self.now;
        let g_now = self.nodes[i].generation;
        let timing = self.p.timing;
        let run = self.nodes[i].run.as_mut().expect("running");
        run.input(now, timing);
        match run.core.send(now, to.as_deref(), "t", &id.to_be_bytes()) {
            Ok(targets) => {
                for r in targets {
                    self.sent.entry((i, g_now, r)).or_default().push(id);
                }
            }
            Err(SendError::NotAlive(_) | SendError::ToSelf | SendError::QueueFull(_)) => {}
            Err(e) => return Err(format!("send failed: {e}")),
        }
        self.drain(i, false)
    }

    /// Advances to `until`, processing everything in time order.
    fn run_until(&mut self, until: Time, faults: bool) -> Result<(), String> {
        let mut next_fault = self.now + self.fault_gap();
        let mut next_message = self.p.message_every.map(|d| self.now + d);
        let mut same_instant = 0u32;
        let mut next_check = self.now;
        loop {
            let mut t = until;
            if let Some(Reverse(f)) = self.flights.peek() {
                t = t.min(f.at);
            }
            for n in &self.nodes {
                match (n.frozen_until, n.deadline) {
                    (Some(thaw), _) => t = t.min(thaw),
                    (None, Some(d)) => t = t.min(d),
                    (None, None) => {}
                }
            }
            if faults {
                t = t.min(next_fault);
            }
            if let Some(m) = next_message {
                t = t.min(m);
            }
            if t >= until {
                self.now = until;
                return self.check_state();
            }
            if t < self.now {
                return Err(format!("time went back: {t:?} < {:?}", self.now));
            }
            same_instant = if t == self.now { same_instant + 1 } else { 0 };
            if same_instant > 10_000 {
                return Err(format!("livelock: a deadline at {t:?} is never satisfied"));
            }
            self.now = t;
            while self.flights.peek().is_some_and(|Reverse(f)| f.at <= t) {
                let Reverse(f) = self.flights.pop().expect("peeked");
                self.deliver(f)?;
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].frozen_until.is_some_and(|u| u <= t) {
                    // Like the shell: pending datagrams first, then the overdue timers.
                    self.thaw(i)?;
                }
            }
            for i in 0..self.nodes.len() {
                let due = self.nodes[i].frozen_until.is_none()
                    && self.nodes[i].deadline.is_some_and(|d| d <= t);
                if due {
                    let timing = self.p.timing;
                    let run = self.nodes[i].run.as_mut().expect("running");
                    run.input(t, timing);
                    run.core.handle_timeout(t);
                    self.drain(i, false)?;
                }
            }
            if faults && t >= next_fault {
                self.fault()?;
                next_fault = t + self.fault_gap();
            }
            if let Some(m) = next_message
                && t >= m
            {
                self.send_message()?;
                next_message = Some(t + self.p.message_every.expect("set"));
            }
            // Every 5 ms is far finer than the one-interval tolerance of the checks.
            if t >= next_check {
                self.check_state()?;
                next_check = t + ms(5);
            }
        }
    }

    fn fault_gap(&mut self) -> Duration {
        let spread = self.p.duration.as_millis() as u64 / (self.p.faults as u64 + 1);
        ms(self.rng.random_range(spread / 2..=spread.max(1)))
    }

    fn run(&mut self) -> Result<(), String> {
        let end = self.p.duration;
        self.run_until(end, true)?;
        // Heal everything, stop losing datagrams, and let views converge.
        self.trace("final heal".into());
        for n in &mut self.nodes {
            if n.frozen_until.is_some() {
                n.frozen_until = Some(self.now);
            }
        }
        self.groups = None;
        self.cut_links.iter_mut().for_each(|c| *c = false);
        self.p.loss = 0.0;
        let messages = self.p.message_every.take();
        let settle = end + self.p.settle;
        self.run_until(settle, false)?;
        self.p.message_every = messages;
        self.check_converged()?;
        self.check_messages_complete()
    }

    fn check_converged(&self) -> Result<(), String> {
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(run) = &n.run else { continue };
            for (p, peer) in self.nodes.iter().enumerate() {
                if p == i {
                    continue;
                }
                let m = run.model[p];
                let ok = match &peer.run {
                    Some(_) => m.state == NodeState::Up && m.generation == peer.generation,
                    None => m.state == NodeState::Dead,
                };
                if !ok {
                    return Err(format!(
                        "views did not converge: {} sees n{p} as {m:?} (running: {}, gen {})",
                        n.spec.name,
                        peer.run.is_some(),
                        peer.generation
                    ));
                }
            }
            let expected = match self.p.policy {
                QuorumPolicy::TwoNode => true,
                QuorumPolicy::Majority => self.running().len() > self.p.nodes / 2,
            };
            if run.quorate != expected {
                return Err(format!(
                    "{}: quorate {} after healing",
                    n.spec.name, run.quorate
                ));
            }
        }
        Ok(())
    }

    /// Messages between two nodes that never restarted and never saw each other dead
    /// all arrived, exactly once (duplicates and order are checked on delivery).
    fn check_messages_complete(&self) -> Result<(), String> {
        for ((s, g_now, r), ids) in &self.sent {
            let (sn, rn) = (&self.nodes[*s], &self.nodes[*r]);
            let (Some(srun), Some(rrun)) = (&sn.run, &rn.run) else {
                continue;
            };
            if sn.disturbed || rn.disturbed || srun.saw_dead.contains(r) || *g_now != sn.generation
            {
                continue;
            }
            if let Some(missing) = ids.iter().find(|id| !rrun.delivered_ids.contains(id)) {
                return Err(format!(
                    "message {missing} from n{s} to n{r} never delivered"
                ));
            }
        }
        Ok(())
    }
}

fn params(rng: &mut SmallRng, nodes: usize) -> Params {
    let timing = Timing {
        interval: ms(100),
        warn_after: ms(500),
        dead_after: ms(1000),
        init_dead: ms(2000),
    };
    Params {
        nodes,
        links: rng.random_range(1..=2),
        timing,
        policy: if nodes == 2 {
            QuorumPolicy::TwoNode
        } else {
            QuorumPolicy::Majority
        },
        loss: [0.0, 0.05, 0.2, 0.3][rng.random_range(0..4)],
        dup: [0.0, 0.05, 0.2][rng.random_range(0..3)],
        delay_max: Duration::from_micros(rng.random_range(200..30_000)),
        duration: ms(rng.random_range(2000..6000)),
        settle: ms(2500),
        faults: rng.random_range(0..6),
        message_every: rng.random_bool(0.6).then(|| ms(rng.random_range(20..200))),
    }
}

/// Seeds are numbered by range so a printed seed alone says which cluster size it ran.
fn size_of(seed: u64) -> usize {
    match seed {
        0..100_000 => 2,
        100_000..200_000 => 3,
        200_000..1_000_000 => 5,
        _ => 32,
    }
}

fn run_seed(seed: u64, log: bool) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let n = size_of(seed);
    let mut p = params(&mut rng, n);
    if n > 5 {
        // Big clusters: fewer links and a shorter run keep the test fast.
        p.links = 1;
        p.duration = ms(3000);
        p.message_every = Some(ms(50));
    }
    if log {
        println!("{p:?}");
    }
    Sim::new(seed, p, log).run()
}

/// Runs `count` seeds from `first` (`SIM_SEEDS` overrides the count), or only `SIM_SEED`
/// when it is set and belongs to this range.
fn check(first: u64, count: u64) {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => {
            let seed: u64 = s.parse().expect("SIM_SEED must be a number");
            if size_of(seed) != size_of(first) {
                return;
            }
            vec![seed]
        }
        Err(_) => {
            let n = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(count);
            (first..first + n).collect()
        }
    };
    let log = seeds.len() == 1 && std::env::var("SIM_SEED").is_ok();
    for seed in seeds {
        if let Err(e) = run_seed(seed, log) {
            panic!(
                "seed {seed} failed: {e}\nreplay: SIM_SEED={seed} cargo test -p tandem-membership \
                 --test sim -- --nocapture"
            );
        }
    }
}

#[test]
fn two_nodes_keep_every_invariant_under_faults() {
    check(0, 1500);
}

#[test]
fn three_nodes_keep_every_invariant_under_faults() {
    check(100_000, 1000);
}

#[test]
fn five_nodes_keep_every_invariant_under_faults() {
    check(200_000, 500);
}

#[test]
fn thirty_two_nodes_keep_every_invariant() {
    check(1_000_000, 4);
}
