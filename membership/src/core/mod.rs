//! The sans-IO membership core: a deterministic state machine.
//!
//! It is fed `now` (a [`Time`]: monotonic time since an arbitrary epoch, never stepping
//! back) with one input at a time — a received datagram, a timer tick, a send command or
//! "leave" — and queues its outputs: datagrams to send ([`Transmit`]), view changes
//! ([`Event`]) and delivered cluster messages ([`Delivery`]). The shell drains them with the
//! `poll_*` methods and calls [`Core::handle_timeout`] at [`Core::next_deadline`]. No
//! sockets, no clock, no tokio: the simulation tests drive thousands of seeded clusters
//! through exactly this code.
//!
//! One concern per file, one [`Core`] that owns them all and turns their conclusions into
//! events:
//! - [`wire`]: the authenticated envelope and the protobuf payload;
//! - [`window`]: anti-replay and heartbeat-loss windows;
//! - `detector`: liveness of each peer and its links, heartbeats and their echoes, the
//!   grace a stall earns, and the deadlines that follow;
//! - `stream`: cluster messages (sequence, acks, retransmission, in-order delivery);
//! - `quorum`: whether the nodes seen alive may act;
//! - [`notice`]: the messages on retained topics, kept for Status;
//! - `settings` and `output`: what goes in and what comes out.
//!
//! This file authenticates a datagram ([`Core::handle_datagram`]), tracks the peer's
//! incarnation, and dispatches the packet's parts to the detector and the streams.
mod detector;
pub mod notice;
mod output;
mod quorum;
mod settings;
mod stream;
pub mod window;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use prost::Message as _;
pub use tandem_config::{QuorumPolicy, Role, Timing};

pub use detector::{DeadReason, LinkState, LinkView, NodeState, NodeView, STALL_INTERVALS};
use detector::{Detector, Liveness, Verdict};
pub use notice::Notice;
use notice::Notices;
pub use output::{Counters, Delivery, Event, EventKind, SendError, Transmit};
pub use quorum::Quorum;
pub use settings::{NodeSpec, Settings, SettingsError};
pub use stream::MAX_UNACKED;
use stream::{Incoming, Outgoing};
use window::ReplayWindow;
use wire::{Header, KeyRing, Reject, msg};

/// Monotonic time since an arbitrary epoch chosen by the shell.
pub type Time = Duration;

/// At most one log line per rejection reason per this period (the counter counts all).
const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Nanoseconds of `t`, as heartbeats carry time.
fn nanos(t: Time) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

/// A node as this one knows it (the local node has an entry too, always UP).
#[derive(Debug, Clone)]
struct Peer {
    /// The peer's incarnation whose datagrams are accepted (0: none yet).
    generation: u64,
    /// Datagrams of this generation or older are refused: it left cleanly.
    left_generation: u64,
    /// Highest generation seen in authentic datagrams not yet addressed to our own
    /// generation: echoed in `receiver_generation` so the peer can confirm us.
    claimed_generation: u64,
    replay: ReplayWindow,
    /// Envelope sequence for datagrams to this peer.
    tx_seq: u64,
    live: Liveness,
    /// Messages to it, and from its current incarnation.
    out: Outgoing,
    inc: Incoming,
}

impl Peer {
    /// The generation our datagrams to it are addressed to.
    fn addressed_generation(&self) -> u64 {
        self.generation.max(self.claimed_generation)
    }
}

/// The protocol state machine.
pub struct Core {
    cluster: String,
    nodes: Vec<NodeSpec>,
    index: HashMap<String, usize>,
    me: usize,
    policy: QuorumPolicy,
    generation: u64,
    keys: KeyRing,
    detector: Detector,
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
    notices: Notices,
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

impl Core {
    /// A core starting at `now` (its init_dead grace starts here).
    pub fn new(s: Settings, now: Time) -> Result<Core, SettingsError> {
        let (index, me) = s.check()?;
        let my_links = s.nodes[me].addresses.len();
        let peers = s
            .nodes
            .iter()
            .map(|n| Peer {
                generation: 0,
                left_generation: 0,
                claimed_generation: 0,
                replay: ReplayWindow::default(),
                tx_seq: 0,
                live: Liveness::new(now, n.addresses.len(), my_links),
                out: Outgoing::new(),
                inc: Incoming::new(),
            })
            .collect();
        let mut core = Core {
            cluster: s.cluster,
            index,
            me,
            policy: s.quorum,
            generation: s.generation,
            keys: s.keys,
            detector: Detector::new(s.timing, now),
            peers,
            next_heartbeat: now,
            view_id: 1,
            seq: 0,
            quorum: Quorum::compute(s.quorum, 0, 0),
            stopped: false,
            counters: Counters::default(),
            rejected: [0; Reject::ALL.len()],
            reject_log: [(None, 0); Reject::ALL.len()],
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            deliveries: VecDeque::new(),
            notices: Notices::default(),
            nodes: s.nodes,
        };
        core.peers[me].live.set_state(now, NodeState::Up);
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
            let interval = self.detector.timing.interval;
            self.next_heartbeat += interval;
            if self.next_heartbeat <= now {
                // The shell was late by more than an interval: do not send a burst.
                self.next_heartbeat = now + interval;
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
        if let Some(&full) = targets.iter().find(|&&i| self.peers[i].out.is_full()) {
            return Err(SendError::QueueFull(self.nodes[full].name.clone()));
        }
        for &i in &targets {
            let data = self.peers[i].out.queue(now, topic, payload, to.is_none());
            self.counters.messages_sent += 1;
            self.send_data(i, vec![data]);
        }
        if notice::is_retained(topic) {
            // Kept here too: the sender's own node shows what it announced, even when no
            // other node was alive to receive it.
            self.retain(now, self.me, self.generation, topic, payload);
        }
        Ok(targets)
    }

    /// Clean shutdown: tells every peer on every link that this node leaves, then stops.
    pub fn leave(&mut self, _now: Time) {
        if self.stopped {
            return;
        }
        for i in self.peer_ids() {
            self.drop_unacked(i);
            for k in 0..self.nodes[i].addresses.len() {
                let packet = msg::Packet {
                    receiver_generation: self.peers[i].addressed_generation(),
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
        let mut d = self.next_heartbeat;
        for i in self.peer_ids() {
            let p = &self.peers[i];
            let detection = self.detector.deadline(&p.live);
            let retransmit = p.out.next_due(self.rto(i));
            for x in detection.into_iter().chain(retransmit) {
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
        self.detector.timing
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
    /// The last [`notice::RETAINED`] messages on retained topics, oldest first.
    pub fn notices(&self) -> impl Iterator<Item = &Notice> {
        self.notices.iter()
    }
    pub fn unacked(&self, node: usize) -> usize {
        self.peers[node].out.unacked()
    }

    /// State and generation of `node` (cheap; see [`node_view`](Self::node_view) for all).
    pub fn node_state(&self, node: usize) -> (NodeState, u64) {
        (self.peers[node].live.state(), self.peers[node].generation)
    }

    /// How the local node sees `node` at `now`.
    pub fn node_view(&self, node: usize, now: Time) -> NodeView {
        let p = &self.peers[node];
        p.live
            .view(now, p.generation, self.detector.timing.interval)
    }

    // ---- receiving ----------------------------------------------------------------------

    fn peer_ids(&self) -> impl Iterator<Item = usize> + use<> {
        let me = self.me;
        (0..self.nodes.len()).filter(move |&i| i != me)
    }

    fn can_send_to(&self, i: usize) -> bool {
        self.peers[i].live.state().is_alive() && self.peers[i].out.receiver_generation() != 0
    }

    /// Authenticates a datagram and checks it is fresh and well-formed, then hands it to
    /// [`receive`](Self::receive).
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

    /// An authentic, fresh, well-formed datagram from `s`, addressed to this incarnation:
    /// the sender is alive (detector), then each part of the packet goes where it belongs.
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
        let was = self.peers[s].live.state();
        if g > prev {
            self.new_incarnation(s, g);
        }
        self.peers[s].replay.commit(h.seq);
        let j = packet.from_link as usize;
        let link_came_up = self.peers[s].live.heard(now, j);
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
        if link_came_up {
            self.emit(now, EventKind::LinkUp { node: s, link: j });
        }
        if let Some(hb) = &packet.heartbeat {
            self.peers[s]
                .live
                .heartbeat_received(now, j, local_link, hb);
        }
        if let Some(ack) = &packet.ack
            && ack.generation == self.generation
        {
            self.peers[s].out.ack(g, ack.seq);
        }
        if !packet.data.is_empty() && packet.receiver_generation == self.generation {
            self.receive_data(now, s, g, j, packet.data_base, packet.data);
        }
        if packet.leaving {
            self.peers[s].left_generation = g;
            self.declare_dead(now, s, DeadReason::Left);
        }
    }

    /// Peer `s` restarted as generation `g`: everything tied to its previous incarnation
    /// starts over.
    fn new_incarnation(&mut self, s: usize, g: u64) {
        let p = &mut self.peers[s];
        p.generation = g;
        p.replay = ReplayWindow::default();
        p.inc.reset();
        p.live.restarted();
        // The receiver of our stream restarted: what it had not acked is lost for good.
        let dropped = p.out.restart(g);
        self.counters.messages_dropped += dropped;
    }

    /// Delivers what is in order and acknowledges it over the link it came on.
    fn receive_data(
        &mut self,
        now: Time,
        s: usize,
        g: u64,
        from_link: usize,
        base: u64,
        data: Vec<msg::Data>,
    ) {
        let (deliveries, counters) = (&mut self.deliveries, &mut self.counters);
        // Retained in delivery order (exactly once, like the delivery itself).
        let mut retained = Vec::new();
        let acked = self.peers[s].inc.receive(base, data, |d| {
            let keep = notice::is_retained(&d.topic);
            if keep {
                retained.push((d.topic.clone(), d.payload.clone()));
            }
            deliveries.push_back(Delivery {
                from: s,
                from_generation: g,
                topic: d.topic,
                payload: d.payload,
                broadcast: d.broadcast,
                seq: d.seq,
                retained: keep,
            });
            counters.messages_delivered += 1;
        });
        for (topic, payload) in retained {
            self.retain(now, s, g, &topic, &payload);
        }
        self.transmit(s, from_link, stream::ack_packet(g, acked));
    }

    /// Keeps a message on a retained topic and announces it (a [`EventKind::Notice`]).
    fn retain(&mut self, now: Time, from: usize, generation: u64, topic: &str, payload: &[u8]) {
        let n = self.notices.keep(now, from, generation, topic, payload);
        self.counters.notices = self.notices.total();
        self.emit(now, EventKind::Notice(n));
    }

    // ---- detection ----------------------------------------------------------------------

    /// Gives every peer the grace a stall of this node earns (see [`Detector::observe`]).
    fn observe_stall(&mut self, now: Time) {
        let Some((gap, credit)) = self.detector.observe(now) else {
            return;
        };
        for i in self.peer_ids() {
            self.peers[i].live.stalled(credit);
        }
        self.counters.stalls += 1;
        tracing::warn!(
            stalled_for = ?gap,
            not_counted = ?credit,
            "this node was stalled for {gap:?}; peer detection restarted (the stall does not count as peer silence)"
        );
    }

    /// Applies what the detector finds due at `now`.
    fn detect(&mut self, now: Time) {
        for i in self.peer_ids() {
            for link in self.detector.expire_links(&mut self.peers[i].live, now) {
                self.emit(now, EventKind::LinkDown { node: i, link });
            }
            match self.detector.verdict(&self.peers[i].live, now) {
                Some(Verdict::Dead(reason)) => self.declare_dead(now, i, reason),
                Some(Verdict::Late { silent_for }) => {
                    self.set_state(now, i, NodeState::Late);
                    self.emit(
                        now,
                        EventKind::NodeLate {
                            node: i,
                            silent_for,
                        },
                    );
                }
                None => {}
            }
        }
    }

    fn declare_dead(&mut self, now: Time, i: usize, reason: DeadReason) {
        if self.peers[i].live.state() == NodeState::Dead {
            return;
        }
        for link in self.peers[i].live.links_down() {
            self.emit(now, EventKind::LinkDown { node: i, link });
        }
        let silent_for = self.detector.silent_for(&self.peers[i].live, now);
        let generation = self.peers[i].generation;
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

    fn set_state(&mut self, now: Time, i: usize, state: NodeState) {
        self.peers[i].live.set_state(now, state);
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
        let alive = self
            .peers
            .iter()
            .filter(|p| p.live.state().is_alive())
            .count();
        Quorum::compute(self.policy, self.nodes.len() as u32, alive as u32)
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

    // ---- sending ------------------------------------------------------------------------

    fn send_heartbeats(&mut self, now: Time) {
        let my_links = self.nodes[self.me].addresses.len();
        for i in self.peer_ids() {
            for k in 0..self.nodes[i].addresses.len() {
                let socket = k.min(my_links - 1);
                let p = &mut self.peers[i];
                let packet = msg::Packet {
                    receiver_generation: p.addressed_generation(),
                    heartbeat: Some(p.live.next_heartbeat(now, k, socket)),
                    ..Default::default()
                };
                self.transmit(i, k, packet);
            }
        }
    }

    fn drop_unacked(&mut self, i: usize) {
        self.counters.messages_dropped += self.peers[i].out.clear();
    }

    /// Sends `data` to peer `i` on every up link (every link when none is up).
    fn send_data(&mut self, i: usize, data: Vec<msg::Data>) {
        let packet = self.peers[i].out.packet(data);
        for k in self.peers[i].live.data_links() {
            self.transmit(i, k, packet.clone());
        }
    }

    fn rto(&self, i: usize) -> Duration {
        stream::rto(self.peers[i].live.best_rtt(), self.detector.timing.interval)
    }

    fn retransmit(&mut self, now: Time) {
        for i in self.peer_ids() {
            let (rto, overhead) = (self.rto(i), self.overhead(i));
            for data in self.peers[i].out.due(now, rto, overhead) {
                self.counters.messages_retransmitted += data.len() as u64;
                self.send_data(i, data);
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

#[cfg(test)]
mod tests;
