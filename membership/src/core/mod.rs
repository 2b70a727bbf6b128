//! The sans-IO membership core: a deterministic state machine.
//!
//! It is fed `now` (a [`Time`]: monotonic time since an arbitrary epoch, never stepping
//! back) with one input at a time — a received datagram, a timer tick, a send command or
//! "leave" — and queues its outputs: datagrams to send ([`Transmit`]), view changes
//! ([`Event`]) and delivered cluster messages ([`Delivery`]). The shell drains them with the
//! `poll_*` methods and calls [`Core::handle_timeout`] at [`Core::next_deadline`]. No
//! sockets, no clock, no tokio: the simulation tests drive thousands of seeded clusters
//! through exactly this code.
pub mod window;
pub mod wire;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use prost::Message as _;
pub use tandem_config::{QuorumPolicy, Role, Timing};

use window::{LossWindow, ReplayWindow};
use wire::{Header, KeyRing, Reject, msg};

/// Monotonic time since an arbitrary epoch chosen by the shell.
pub type Time = Duration;

/// Unacknowledged messages allowed per peer; `Send` fails with QueueFull beyond.
pub const MAX_UNACKED: usize = 256;
/// Messages retransmitted per peer per retransmission round, so a long queue to a lossy
/// peer cannot flood the network.
const RETRANSMIT_BATCH: usize = 16;
/// At most one log line per rejection reason per this period (the counter counts all).
const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);
/// Lower bound of the retransmission timeout: loopback RTTs are microseconds, but a
/// retransmission storm on a busy host helps nobody.
const MIN_RTO: Duration = Duration::from_millis(5);
/// A gap between two inputs longer than this many intervals means this process did not run
/// (SIGSTOP, a paused VM, a swap storm): the core's next deadline is never more than one
/// interval away (the next heartbeat), so a running shell calls in at least once per
/// interval; two leave room for scheduling jitter and stay far below the default
/// `dead_after` of ten intervals.
pub const STALL_INTERVALS: u32 = 2;

/// A node as the core needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    /// One per link, in link order.
    pub addresses: Vec<SocketAddr>,
    pub role: Role,
}

/// Everything the core needs to start.
#[derive(Debug)]
pub struct Settings {
    pub cluster: String,
    /// Every configured node, in configuration order (all of them vote).
    pub nodes: Vec<NodeSpec>,
    /// Name of the node this core runs on.
    pub local: String,
    pub timing: Timing,
    pub quorum: QuorumPolicy,
    /// This daemon's generation (strictly increasing across restarts; see `generation`).
    pub generation: u64,
    pub keys: KeyRing,
}

impl Settings {
    /// Settings from the validated cluster configuration.
    pub fn from_config(
        cfg: &tandem_config::ClusterConfig,
        local: &str,
        generation: u64,
        keys: KeyRing,
    ) -> Settings {
        Settings {
            cluster: cfg.cluster.clone(),
            nodes: cfg
                .nodes
                .iter()
                .map(|n| NodeSpec {
                    name: n.name.clone(),
                    addresses: n.addresses.clone(),
                    role: n.role,
                })
                .collect(),
            local: local.to_owned(),
            timing: cfg.timing,
            quorum: cfg.quorum,
            generation,
            keys,
        }
    }
}

/// Why the core cannot start with these settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("node {0:?} is not in the configuration's node list")]
    UnknownLocal(String),
    #[error("node {0:?} is listed twice")]
    DuplicateNode(String),
    #[error("node {0:?} has no addresses")]
    NoAddresses(String),
    #[error("generation must be at least 1")]
    ZeroGeneration,
    #[error("interval must be non-zero and interval < warn_after < dead_after <= init_dead")]
    BadTiming,
    #[error(
        "the cluster name, the node names and the number of links make a datagram of \
         {size} bytes, above the {max}-byte limit; use shorter names or fewer addresses"
    )]
    TooLarge { size: usize, max: usize },
}

/// How the local node sees another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Never heard, init_dead not passed yet.
    Unknown,
    Up,
    /// Silent on every link for warn_after; still alive.
    Late,
    Dead,
}

impl NodeState {
    pub fn is_alive(self) -> bool {
        matches!(self, NodeState::Up | NodeState::Late)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Unknown,
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    Silent,
    NeverHeard,
    Left,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub policy: QuorumPolicy,
    pub quorate: bool,
    pub voters: u32,
    pub alive: u32,
    pub needed: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    NodeUp {
        node: usize,
        generation: u64,
        new_incarnation: bool,
        previous_generation: u64,
    },
    NodeLate {
        node: usize,
        silent_for: Duration,
    },
    NodeDead {
        node: usize,
        generation: u64,
        reason: DeadReason,
        silent_for: Duration,
    },
    LinkUp {
        node: usize,
        link: usize,
    },
    LinkDown {
        node: usize,
        link: usize,
    },
    QuorumChanged(Quorum),
}

/// A change of the view. `seq` increases by exactly one per event, from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    /// The view id after this event.
    pub view_id: u64,
    /// When it happened (core time).
    pub at: Time,
    pub kind: EventKind,
}

/// A datagram to send from local socket `link` to `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub link: usize,
    pub dest: SocketAddr,
    pub bytes: Vec<u8>,
}

/// A cluster message delivered in order to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub from: usize,
    pub from_generation: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub broadcast: bool,
    pub seq: u64,
}

/// Why a message was not queued. Nothing was queued for anyone when this is returned.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("no node named {0:?} in the configuration")]
    UnknownNode(String),
    #[error("a message is never delivered to its sender")]
    ToSelf,
    #[error("node {0:?} is not alive")]
    NotAlive(String),
    #[error("topic must be 1..={max} bytes, got {0}", max = wire::MAX_TOPIC)]
    Topic(usize),
    #[error("payload must be at most {max} bytes, got {0}", max = wire::MAX_PAYLOAD)]
    Payload(usize),
    #[error("{0:?} already has {max} unacknowledged messages", max = MAX_UNACKED)]
    QueueFull(String),
    #[error("the node is leaving the cluster")]
    Stopped,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_retransmitted: u64,
    pub messages_dropped: u64,
    /// Times this node found itself stalled (see [`STALL_INTERVALS`]).
    pub stalls: u64,
}

/// A link of a node as seen from here (for Status).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkView {
    pub state: LinkState,
    pub last_heard: Option<Time>,
    pub rtt: Option<Duration>,
    pub loss: f64,
    pub received: u64,
}

/// A node as seen from here (for Status and snapshots).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub state: NodeState,
    pub generation: u64,
    pub since: Time,
    pub last_heard: Option<Time>,
    pub links: Vec<LinkView>,
}

#[derive(Debug, Clone, Default)]
struct Link {
    state: Option<bool>, // None: never heard; Some(true): up; Some(false): down
    last_heard: Option<Time>,
    /// Time since `last_heard` during which this node itself was stalled: not silence.
    grace: Duration,
    received: u64,
    srtt: Option<Duration>,
    loss: LossWindow,
}

#[derive(Debug, Clone)]
struct Pending {
    seq: u64,
    topic: String,
    payload: Vec<u8>,
    broadcast: bool,
    last_sent: Time,
}

#[derive(Debug, Clone)]
struct Peer {
    state: NodeState,
    since: Time,
    generation: u64,
    /// Datagrams of this generation or older are refused: it left cleanly.
    left_generation: u64,
    /// Highest generation seen in authentic datagrams not yet addressed to our own
    /// generation: echoed in `receiver_generation` so the peer can confirm us.
    claimed_generation: u64,
    last_heard: Option<Time>,
    /// Time since `last_heard` (or since the start, never heard) during which this node
    /// itself was stalled: it does not count as the peer's silence.
    grace: Duration,
    links: Vec<Link>,
    replay: ReplayWindow,
    /// Envelope sequence for datagrams to this peer.
    tx_seq: u64,
    /// Heartbeat counter per local socket.
    hb_seq: Vec<u64>,
    /// Heartbeats received on each local link, to echo: (sent_at, received at).
    echo: Vec<Option<(u64, Time)>>,
    // Outgoing message stream.
    tx_receiver_gen: u64,
    tx_next: u64,
    unacked: VecDeque<Pending>,
    // Incoming message stream (sender generation = `generation`).
    rx_expected: u64,
    rx_buffer: BTreeMap<u64, msg::Data>,
}

/// The protocol state machine.
pub struct Core {
    cluster: String,
    nodes: Vec<NodeSpec>,
    index: HashMap<String, usize>,
    me: usize,
    timing: Timing,
    policy: QuorumPolicy,
    generation: u64,
    keys: KeyRing,
    start: Time,
    /// `now` of the latest input, to notice a stall of this process.
    last_input: Time,
    peers: Vec<Peer>,
    next_heartbeat: Time,
    view_id: u64,
    seq: u64,
    quorum: Quorum,
    stopped: bool,
    counters: Counters,
    rejected: [u64; Reject::ALL.len()],
    reject_log: [(Option<Time>, u64); Reject::ALL.len()],
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    deliveries: VecDeque<Delivery>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("node", &self.nodes[self.me].name)
            .field("generation", &self.generation)
            .field("view_id", &self.view_id)
            .finish_non_exhaustive()
    }
}

fn nanos(t: Time) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

impl Core {
    /// A core starting at `now` (its init_dead grace starts here).
    pub fn new(s: Settings, now: Time) -> Result<Core, SettingsError> {
        let t = s.timing;
        if t.interval.is_zero()
            || t.interval >= t.warn_after
            || t.warn_after >= t.dead_after
            || t.dead_after > t.init_dead
        {
            return Err(SettingsError::BadTiming);
        }
        if s.generation == 0 {
            return Err(SettingsError::ZeroGeneration);
        }
        let mut index = HashMap::new();
        for (i, n) in s.nodes.iter().enumerate() {
            if index.insert(n.name.clone(), i).is_some() {
                return Err(SettingsError::DuplicateNode(n.name.clone()));
            }
            if n.addresses.is_empty() {
                return Err(SettingsError::NoAddresses(n.name.clone()));
            }
        }
        let me = *index
            .get(&s.local)
            .ok_or_else(|| SettingsError::UnknownLocal(s.local.clone()))?;
        let my_links = s.nodes[me].addresses.len();
        let size = worst_datagram(&s, me);
        if size > wire::MAX_DATAGRAM {
            return Err(SettingsError::TooLarge {
                size,
                max: wire::MAX_DATAGRAM,
            });
        }
        let peers = s
            .nodes
            .iter()
            .map(|n| Peer {
                state: NodeState::Unknown,
                since: now,
                generation: 0,
                left_generation: 0,
                claimed_generation: 0,
                last_heard: None,
                grace: Duration::ZERO,
                links: vec![Link::default(); n.addresses.len()],
                replay: ReplayWindow::default(),
                tx_seq: 0,
                hb_seq: vec![0; my_links],
                echo: vec![None; my_links],
                tx_receiver_gen: 0,
                tx_next: 1,
                unacked: VecDeque::new(),
                rx_expected: 1,
                rx_buffer: BTreeMap::new(),
            })
            .collect();
        let mut core = Core {
            cluster: s.cluster,
            index,
            me,
            timing: s.timing,
            policy: s.quorum,
            generation: s.generation,
            keys: s.keys,
            start: now,
            last_input: now,
            peers,
            next_heartbeat: now,
            view_id: 1,
            seq: 0,
            quorum: Quorum {
                policy: s.quorum,
                quorate: false,
                voters: 0,
                alive: 0,
                needed: 0,
            },
            stopped: false,
            counters: Counters::default(),
            rejected: [0; Reject::ALL.len()],
            reject_log: [(None, 0); Reject::ALL.len()],
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            deliveries: VecDeque::new(),
            nodes: s.nodes,
        };
        core.peers[me].state = NodeState::Up;
        core.peers[me].generation = core.generation;
        core.quorum = core.compute_quorum();
        Ok(core)
    }

    // ---- inputs -------------------------------------------------------------------------

    /// A datagram arrived on local socket `link` from `src`. Invalid input is counted and
    /// logged (rate-limited), never an error.
    pub fn handle_datagram(&mut self, now: Time, link: usize, src: SocketAddr, bytes: &[u8]) {
        if self.stopped {
            return;
        }
        self.observe_stall(now);
        self.counters.datagrams_received += 1;
        if let Err(r) = self.accept(now, link, bytes) {
            self.reject(now, r, src);
        }
        self.update_quorum(now);
    }

    /// Timers: detection, heartbeats, retransmissions. Call at [`next_deadline`](Self::next_deadline)
    /// (calling it earlier or more often is harmless).
    pub fn handle_timeout(&mut self, now: Time) {
        if self.stopped {
            return;
        }
        self.observe_stall(now);
        self.detect(now);
        self.update_quorum(now);
        if now >= self.next_heartbeat {
            self.send_heartbeats(now);
            self.next_heartbeat += self.timing.interval;
            if self.next_heartbeat <= now {
                // The shell was late by more than an interval: do not send a burst.
                self.next_heartbeat = now + self.timing.interval;
            }
        }
        self.retransmit(now);
    }

    /// Queues a message for `to` (one node) or, with `None`, for every other alive node.
    /// Returns the nodes it was queued for.
    pub fn send(
        &mut self,
        now: Time,
        to: Option<&str>,
        topic: &str,
        payload: &[u8],
    ) -> Result<Vec<usize>, SendError> {
        if self.stopped {
            return Err(SendError::Stopped);
        }
        self.observe_stall(now);
        if topic.is_empty() || topic.len() > wire::MAX_TOPIC {
            return Err(SendError::Topic(topic.len()));
        }
        if payload.len() > wire::MAX_PAYLOAD {
            return Err(SendError::Payload(payload.len()));
        }
        let targets: Vec<usize> = match to {
            Some(name) => {
                let i = *self
                    .index
                    .get(name)
                    .ok_or_else(|| SendError::UnknownNode(name.to_owned()))?;
                if i == self.me {
                    return Err(SendError::ToSelf);
                }
                if !self.can_send_to(i) {
                    return Err(SendError::NotAlive(name.to_owned()));
                }
                vec![i]
            }
            None => (0..self.nodes.len())
                .filter(|&i| i != self.me && self.can_send_to(i))
                .collect(),
        };
        if let Some(&full) = targets
            .iter()
            .find(|&&i| self.peers[i].unacked.len() >= MAX_UNACKED)
        {
            return Err(SendError::QueueFull(self.nodes[full].name.clone()));
        }
        for &i in &targets {
            let p = &mut self.peers[i];
            let pending = Pending {
                seq: p.tx_next,
                topic: topic.to_owned(),
                payload: payload.to_vec(),
                broadcast: to.is_none(),
                last_sent: now,
            };
            p.tx_next += 1;
            let data = vec![pending.to_data()];
            p.unacked.push_back(pending);
            self.counters.messages_sent += 1;
            self.send_data(now, i, data);
        }
        Ok(targets)
    }

    /// Clean shutdown: tells every peer on every link that this node leaves, then stops.
    pub fn leave(&mut self, _now: Time) {
        if self.stopped {
            return;
        }
        for i in self.peer_ids() {
            let dropped = self.peers[i].unacked.len() as u64;
            self.counters.messages_dropped += dropped;
            self.peers[i].unacked.clear();
            for k in 0..self.nodes[i].addresses.len() {
                let p = &self.peers[i];
                let packet = msg::Packet {
                    receiver_generation: p.generation.max(p.claimed_generation),
                    leaving: true,
                    ..Default::default()
                };
                self.transmit(i, k, packet);
            }
        }
        self.stopped = true;
    }

    // ---- outputs ------------------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_delivery(&mut self) -> Option<Delivery> {
        self.deliveries.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next; `None` once stopped.
    pub fn next_deadline(&self) -> Option<Time> {
        if self.stopped {
            return None;
        }
        let t = self.timing;
        let mut d = self.next_heartbeat;
        for i in self.peer_ids() {
            let p = &self.peers[i];
            let node_deadline = match (p.state, p.last_heard) {
                (NodeState::Up, Some(h)) => Some(h + p.grace + t.warn_after),
                (NodeState::Late, Some(h)) => Some(h + p.grace + t.dead_after),
                (NodeState::Unknown, _) => Some(self.start + p.grace + t.init_dead),
                _ => None,
            };
            let link_deadlines = p
                .links
                .iter()
                .filter_map(|l| match (l.state, l.last_heard) {
                    (Some(true), Some(h)) => Some(h + l.grace + t.dead_after),
                    _ => None,
                });
            let rto = self.rto(i);
            let retransmit = p
                .unacked
                .iter()
                .take(RETRANSMIT_BATCH)
                .map(|m| m.last_sent + rto)
                .min();
            for x in node_deadline
                .into_iter()
                .chain(link_deadlines)
                .chain(retransmit)
            {
                d = d.min(x);
            }
        }
        Some(d)
    }

    // ---- queries ------------------------------------------------------------------------

    pub fn local(&self) -> usize {
        self.me
    }
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    pub fn timing(&self) -> Timing {
        self.timing
    }
    pub fn view_id(&self) -> u64 {
        self.view_id
    }
    /// Seq of the last event queued (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }
    pub fn quorum(&self) -> Quorum {
        self.quorum
    }
    pub fn counters(&self) -> Counters {
        self.counters
    }
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
    /// Rejected datagrams by reason.
    pub fn rejections(&self) -> Vec<(Reject, u64)> {
        Reject::ALL
            .iter()
            .map(|r| (*r, self.rejected[r.index()]))
            .collect()
    }
    pub fn unacked(&self, node: usize) -> usize {
        self.peers[node].unacked.len()
    }

    /// State and generation of `node` (cheap; see [`node_view`](Self::node_view) for all).
    pub fn node_state(&self, node: usize) -> (NodeState, u64) {
        (self.peers[node].state, self.peers[node].generation)
    }

    /// How the local node sees `node` at `now`.
    pub fn node_view(&self, node: usize, now: Time) -> NodeView {
        let p = &self.peers[node];
        let silent = p.last_heard.map(|h| now.saturating_sub(h));
        NodeView {
            state: p.state,
            generation: p.generation,
            since: p.since,
            last_heard: p.last_heard,
            links: p
                .links
                .iter()
                .map(|l| LinkView {
                    state: match l.state {
                        None => LinkState::Unknown,
                        Some(true) => LinkState::Up,
                        Some(false) => LinkState::Down,
                    },
                    last_heard: l.last_heard,
                    rtt: l.srtt,
                    loss: match (l.last_heard, silent) {
                        (Some(h), Some(_)) => {
                            l.loss.loss(now.saturating_sub(h), self.timing.interval)
                        }
                        _ => 0.0,
                    },
                    received: l.received,
                })
                .collect(),
        }
    }

    // ---- internals ----------------------------------------------------------------------

    fn peer_ids(&self) -> impl Iterator<Item = usize> + use<> {
        let me = self.me;
        (0..self.nodes.len()).filter(move |&i| i != me)
    }

    fn can_send_to(&self, i: usize) -> bool {
        self.peers[i].state.is_alive() && self.peers[i].tx_receiver_gen != 0
    }

    fn accept(&mut self, now: Time, local_link: usize, bytes: &[u8]) -> Result<(), Reject> {
        let (h, payload) = wire::parse(bytes)?;
        if h.cluster != self.cluster {
            return Err(Reject::UnknownCluster);
        }
        let s = match self.index.get(h.sender) {
            Some(&s) if s != self.me => s,
            _ => return Err(Reject::UnknownSender),
        };
        if h.receiver != self.nodes[self.me].name {
            return Err(Reject::WrongReceiver);
        }
        wire::verify(&self.keys, bytes, h.key_id)?;
        if h.seq == 0 {
            return Err(Reject::Malformed);
        }
        let p = &self.peers[s];
        if h.generation == 0 || h.generation < p.generation || h.generation <= p.left_generation {
            return Err(Reject::OldGeneration);
        }
        let new_generation = h.generation > p.generation;
        if !new_generation && !p.replay.check(h.seq) {
            return Err(Reject::Replay);
        }
        let packet = msg::Packet::decode(payload).map_err(|_| Reject::Malformed)?;
        self.validate(s, local_link, &packet)?;
        if packet.receiver_generation != self.generation {
            // Authentic, but not addressed to this incarnation: the sender has not heard us
            // since we started, or it is a replay captured before we restarted (our replay
            // windows start empty). It proves nothing about the sender being alive now; we
            // only learn its generation so that our next heartbeat lets it confirm us.
            let p = &mut self.peers[s];
            p.claimed_generation = p.claimed_generation.max(h.generation);
            return Ok(());
        }
        self.receive(now, s, &h, local_link, packet);
        Ok(())
    }

    fn validate(&self, s: usize, local_link: usize, p: &msg::Packet) -> Result<(), Reject> {
        let sender_links = self.nodes[s].addresses.len();
        let my_links = self.nodes[self.me].addresses.len();
        let bad = p.from_link as usize >= sender_links
            || local_link >= my_links
            || p.heartbeat
                .as_ref()
                .is_some_and(|hb| hb.echoes.iter().any(|e| e.link as usize >= sender_links))
            || p.data.iter().any(|d| {
                d.seq == 0
                    || d.topic.is_empty()
                    || d.topic.len() > wire::MAX_TOPIC
                    || d.payload.len() > wire::MAX_PAYLOAD
            });
        if bad { Err(Reject::Malformed) } else { Ok(()) }
    }

    /// An authentic, fresh, well-formed datagram from `s`.
    fn receive(
        &mut self,
        now: Time,
        s: usize,
        h: &Header<'_>,
        local_link: usize,
        packet: msg::Packet,
    ) {
        let g = h.generation;
        let prev = self.peers[s].generation;
        let was = self.peers[s].state;
        if g > prev {
            let p = &mut self.peers[s];
            p.generation = g;
            p.replay = ReplayWindow::default();
            p.rx_expected = 1;
            p.rx_buffer.clear();
            p.echo.iter_mut().for_each(|e| *e = None);
            for l in &mut p.links {
                l.loss = LossWindow::default();
            }
            // The receiver of our stream restarted: what it had not acked is lost for good.
            self.drop_unacked(s);
            let p = &mut self.peers[s];
            p.tx_receiver_gen = g;
            p.tx_next = 1;
        }
        self.peers[s].replay.commit(h.seq);
        self.peers[s].last_heard = Some(now);
        self.peers[s].grace = Duration::ZERO;
        if g > prev || !was.is_alive() || was == NodeState::Late {
            self.set_state(now, s, NodeState::Up);
            self.emit(
                now,
                EventKind::NodeUp {
                    node: s,
                    generation: g,
                    new_incarnation: g > prev && prev != 0,
                    previous_generation: prev,
                },
            );
        }
        let j = packet.from_link as usize;
        {
            let l = &mut self.peers[s].links[j];
            l.last_heard = Some(now);
            l.grace = Duration::ZERO;
            l.received += 1;
        }
        if self.peers[s].links[j].state != Some(true) {
            self.peers[s].links[j].state = Some(true);
            self.emit(now, EventKind::LinkUp { node: s, link: j });
        }
        if let Some(hb) = &packet.heartbeat {
            let p = &mut self.peers[s];
            p.links[j].loss.record(hb.hb_seq);
            p.echo[local_link] = Some((hb.sent_at, now));
            for e in &hb.echoes {
                let rtt = nanos(now)
                    .checked_sub(e.sent_at)
                    .and_then(|x| x.checked_sub(e.held));
                if let Some(rtt) = rtt {
                    let sample = Duration::from_nanos(rtt);
                    let l = &mut p.links[e.link as usize];
                    // RFC 6298 smoothing (alpha = 1/8).
                    l.srtt = Some(match l.srtt {
                        None => sample,
                        Some(old) => (old * 7 + sample) / 8,
                    });
                }
            }
        }
        if let Some(ack) = &packet.ack
            && ack.generation == self.generation
            && self.peers[s].tx_receiver_gen == g
        {
            let p = &mut self.peers[s];
            while p.unacked.front().is_some_and(|m| m.seq <= ack.seq) {
                p.unacked.pop_front();
            }
        }
        if !packet.data.is_empty() && packet.receiver_generation == self.generation {
            self.receive_data(s, g, j, packet.data_base, packet.data);
        }
        if packet.leaving {
            self.peers[s].left_generation = g;
            self.declare_dead(now, s, DeadReason::Left);
        }
    }

    fn receive_data(
        &mut self,
        s: usize,
        g: u64,
        from_link: usize,
        base: u64,
        data: Vec<msg::Data>,
    ) {
        let p = &mut self.peers[s];
        if base > p.rx_expected {
            // The sender discarded the messages in between (we were declared dead).
            p.rx_expected = base;
            p.rx_buffer = p.rx_buffer.split_off(&base);
        }
        for d in data {
            if d.seq < p.rx_expected || p.rx_buffer.contains_key(&d.seq) {
                continue; // duplicate
            }
            if d.seq == p.rx_expected {
                let mut next = Some(d);
                while let Some(d) = next {
                    self.deliveries.push_back(Delivery {
                        from: s,
                        from_generation: g,
                        topic: d.topic,
                        payload: d.payload,
                        broadcast: d.broadcast,
                        seq: d.seq,
                    });
                    self.counters.messages_delivered += 1;
                    p.rx_expected += 1;
                    next = p.rx_buffer.remove(&p.rx_expected);
                }
            } else if p.rx_buffer.len() < MAX_UNACKED {
                p.rx_buffer.insert(d.seq, d);
            }
        }
        let ack = msg::Ack {
            generation: g,
            seq: p.rx_expected - 1,
        };
        let packet = msg::Packet {
            receiver_generation: g,
            ack: Some(ack),
            ..Default::default()
        };
        self.transmit(s, from_link, packet);
    }

    /// Notices that this process did not run for a while (frozen, paused VM) and keeps that
    /// time out of every peer's silence: from here, every peer was silent for the whole
    /// stall, but so was this node, and declaring the peers dead for it would be wrong
    /// (a thawed node would report its healthy peers DEAD, then UP again a moment later).
    /// Silence is counted on this node's running time instead: the part of the gap beyond
    /// one interval (a healthy shell calls in at least once per interval) is not silence.
    /// A peer that really died is still declared dead, only that much later.
    fn observe_stall(&mut self, now: Time) {
        let gap = now.saturating_sub(self.last_input);
        self.last_input = self.last_input.max(now);
        let interval = self.timing.interval;
        if gap <= interval * STALL_INTERVALS {
            return;
        }
        let credit = gap - interval;
        for i in self.peer_ids() {
            let p = &mut self.peers[i];
            p.grace += credit;
            for l in &mut p.links {
                l.grace += credit;
            }
        }
        self.counters.stalls += 1;
        tracing::warn!(
            stalled_for = ?gap,
            not_counted = ?credit,
            "this node was stalled for {gap:?}; peer detection restarted (the stall does not count as peer silence)"
        );
    }

    fn detect(&mut self, now: Time) {
        let t = self.timing;
        for i in self.peer_ids() {
            for j in 0..self.peers[i].links.len() {
                let l = &self.peers[i].links[j];
                if l.state == Some(true)
                    && l.last_heard
                        .is_some_and(|h| now >= h + l.grace + t.dead_after)
                {
                    self.peers[i].links[j].state = Some(false);
                    self.emit(now, EventKind::LinkDown { node: i, link: j });
                }
            }
            let p = &self.peers[i];
            let grace = p.grace;
            match (p.state, p.last_heard) {
                (NodeState::Up | NodeState::Late, Some(h)) if now >= h + grace + t.dead_after => {
                    self.declare_dead(now, i, DeadReason::Silent);
                }
                (NodeState::Up, Some(h)) if now >= h + grace + t.warn_after => {
                    self.set_state(now, i, NodeState::Late);
                    self.emit(
                        now,
                        EventKind::NodeLate {
                            node: i,
                            silent_for: now - h,
                        },
                    );
                }
                (NodeState::Unknown, _) if now >= self.start + grace + t.init_dead => {
                    self.declare_dead(now, i, DeadReason::NeverHeard);
                }
                _ => {}
            }
        }
    }

    fn declare_dead(&mut self, now: Time, i: usize, reason: DeadReason) {
        if self.peers[i].state == NodeState::Dead {
            return;
        }
        for j in 0..self.peers[i].links.len() {
            if self.peers[i].links[j].state == Some(true) {
                self.peers[i].links[j].state = Some(false);
                self.emit(now, EventKind::LinkDown { node: i, link: j });
            }
        }
        let p = &self.peers[i];
        let silent_for = now.saturating_sub(p.last_heard.unwrap_or(self.start));
        let generation = p.generation;
        self.set_state(now, i, NodeState::Dead);
        self.drop_unacked(i);
        self.emit(
            now,
            EventKind::NodeDead {
                node: i,
                generation,
                reason,
                silent_for,
            },
        );
    }

    fn drop_unacked(&mut self, i: usize) {
        let p = &mut self.peers[i];
        self.counters.messages_dropped += p.unacked.len() as u64;
        p.unacked.clear();
    }

    fn set_state(&mut self, now: Time, i: usize, state: NodeState) {
        let p = &mut self.peers[i];
        if p.state != state {
            p.since = now;
        }
        p.state = state;
        self.view_id += 1;
    }

    fn emit(&mut self, now: Time, kind: EventKind) {
        self.seq += 1;
        self.events.push_back(Event {
            seq: self.seq,
            view_id: self.view_id,
            at: now,
            kind,
        });
    }

    fn compute_quorum(&self) -> Quorum {
        let voters = self.nodes.len() as u32;
        let alive = self.peers.iter().filter(|p| p.state.is_alive()).count() as u32;
        let (quorate, needed) = match self.policy {
            QuorumPolicy::TwoNode => (true, 1),
            QuorumPolicy::Majority => {
                let needed = voters / 2 + 1;
                (alive >= needed, needed)
            }
        };
        Quorum {
            policy: self.policy,
            quorate,
            voters,
            alive,
            needed,
        }
    }

    fn update_quorum(&mut self, now: Time) {
        let q = self.compute_quorum();
        let flipped = q.quorate != self.quorum.quorate;
        self.quorum = q;
        if flipped {
            self.view_id += 1;
            self.emit(now, EventKind::QuorumChanged(q));
        }
    }

    fn send_heartbeats(&mut self, now: Time) {
        let my_links = self.nodes[self.me].addresses.len();
        for i in self.peer_ids() {
            for k in 0..self.nodes[i].addresses.len() {
                let socket = k.min(my_links - 1);
                let p = &mut self.peers[i];
                p.hb_seq[socket] += 1;
                // Echo what arrived on our link k in the heartbeat to the peer's address k,
                // so the round trip stays on one network where both have it.
                let mut echoes = Vec::new();
                for (m, slot) in p.echo.iter_mut().enumerate() {
                    if (m == k || (k == 0 && m >= self.nodes[i].addresses.len()))
                        && let Some((sent_at, at)) = slot.take()
                    {
                        echoes.push(msg::Echo {
                            link: m as u32,
                            sent_at,
                            held: nanos(now.saturating_sub(at)),
                        });
                    }
                }
                let packet = msg::Packet {
                    receiver_generation: p.generation.max(p.claimed_generation),
                    heartbeat: Some(msg::Heartbeat {
                        hb_seq: p.hb_seq[socket],
                        sent_at: nanos(now),
                        echoes,
                    }),
                    ..Default::default()
                };
                self.transmit(i, k, packet);
            }
        }
    }

    /// Links to send data on: every up link, or every link when none is up.
    fn data_links(&self, i: usize) -> Vec<usize> {
        let up: Vec<usize> = (0..self.peers[i].links.len())
            .filter(|&j| self.peers[i].links[j].state == Some(true))
            .collect();
        if up.is_empty() {
            (0..self.peers[i].links.len()).collect()
        } else {
            up
        }
    }

    fn send_data(&mut self, _now: Time, i: usize, data: Vec<msg::Data>) {
        let p = &self.peers[i];
        let packet = msg::Packet {
            receiver_generation: p.tx_receiver_gen,
            data_base: p.unacked.front().map_or(p.tx_next, |m| m.seq),
            data,
            ..Default::default()
        };
        for k in self.data_links(i) {
            self.transmit(i, k, packet.clone());
        }
    }

    fn rto(&self, i: usize) -> Duration {
        let best = self.peers[i].links.iter().filter_map(|l| l.srtt).min();
        match best {
            Some(r) => (r * 2 + MIN_RTO).min(self.timing.interval),
            None => self.timing.interval / 2,
        }
        .max(MIN_RTO)
    }

    fn retransmit(&mut self, now: Time) {
        for i in self.peer_ids() {
            let rto = self.rto(i);
            let overhead = self.overhead(i);
            let mut batch: Vec<msg::Data> = Vec::new();
            let mut packets = Vec::new();
            let mut size = 32; // room for receiver_generation and data_base
            let p = &mut self.peers[i];
            for m in p.unacked.iter_mut().take(RETRANSMIT_BATCH) {
                if m.last_sent + rto > now {
                    continue;
                }
                m.last_sent = now;
                let d = m.to_data();
                let len = d.encoded_len() + 4;
                if !batch.is_empty() && overhead + size + len > wire::MAX_DATAGRAM {
                    packets.push(std::mem::take(&mut batch));
                    size = 32;
                }
                size += len;
                batch.push(d);
            }
            if !batch.is_empty() {
                packets.push(batch);
            }
            for data in packets {
                self.counters.messages_retransmitted += data.len() as u64;
                self.send_data(now, i, data);
            }
        }
    }

    fn overhead(&self, i: usize) -> usize {
        wire::overhead(
            &self.cluster,
            &self.nodes[self.me].name,
            &self.nodes[i].name,
        )
    }

    /// Seals `packet` for peer `i`'s address `k` and queues it.
    fn transmit(&mut self, i: usize, k: usize, mut packet: msg::Packet) {
        let my_links = self.nodes[self.me].addresses.len();
        let socket = k.min(my_links - 1);
        packet.from_link = socket as u32;
        let p = &mut self.peers[i];
        p.tx_seq += 1;
        let header = Header {
            version: wire::VERSION,
            key_id: self.keys.signing_id(),
            generation: self.generation,
            seq: p.tx_seq,
            cluster: &self.cluster,
            sender: &self.nodes[self.me].name,
            receiver: &self.nodes[i].name,
        };
        // Sizes were checked against the worst case when the core was built.
        if let Some(bytes) = wire::seal(&self.keys, &header, &packet.encode_to_vec()) {
            self.counters.datagrams_sent += 1;
            self.transmits.push_back(Transmit {
                link: socket,
                dest: self.nodes[i].addresses[k],
                bytes,
            });
        } else {
            tracing::error!(peer = %self.nodes[i].name, "datagram over the size limit not sent");
        }
    }

    fn reject(&mut self, now: Time, r: Reject, src: SocketAddr) {
        self.rejected[r.index()] += 1;
        let (last, suppressed) = &mut self.reject_log[r.index()];
        if last.is_none_or(|t| now >= t + REJECT_LOG_EVERY) {
            tracing::warn!(
                reason = r.as_str(),
                source = %src,
                suppressed = *suppressed,
                "rejected datagram"
            );
            *last = Some(now);
            *suppressed = 0;
        } else {
            *suppressed += 1;
        }
    }
}

impl Pending {
    fn to_data(&self) -> msg::Data {
        msg::Data {
            seq: self.seq,
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            broadcast: self.broadcast,
        }
    }
}

/// The largest datagram these settings can produce: a full data message or a heartbeat
/// with an echo per local link, with the longest names and the widest varints.
fn worst_datagram(s: &Settings, me: usize) -> usize {
    let longest_peer = s
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != me)
        .map(|(_, n)| n.name.len())
        .max()
        .unwrap_or(0);
    let header =
        wire::FIXED_HEADER + wire::TAG_LEN + s.cluster.len() + s.local.len() + longest_peer;
    let data = msg::Packet {
        receiver_generation: u64::MAX,
        data_base: u64::MAX,
        from_link: u32::MAX,
        data: vec![msg::Data {
            seq: u64::MAX,
            topic: "t".repeat(wire::MAX_TOPIC),
            payload: vec![0xff; wire::MAX_PAYLOAD],
            broadcast: true,
        }],
        ..Default::default()
    };
    let heartbeat = msg::Packet {
        receiver_generation: u64::MAX,
        from_link: u32::MAX,
        heartbeat: Some(msg::Heartbeat {
            hb_seq: u64::MAX,
            sent_at: u64::MAX,
            echoes: vec![
                msg::Echo {
                    link: u32::MAX,
                    sent_at: u64::MAX,
                    held: u64::MAX,
                };
                s.nodes[me].addresses.len()
            ],
        }),
        ..Default::default()
    };
    header + data.encoded_len().max(heartbeat.encoded_len())
}

#[cfg(test)]
mod tests;
