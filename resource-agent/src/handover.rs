//! The handover state machine of one node: sans-IO, fed `now` and inputs, returning actions.
//!
//! Inputs: membership view changes, announcements from the other nodes' agents (carried by
//! membership's `Send`/`Subscribe` on [`TOPIC`]), results of local agent actions, health,
//! and operator commands. Outputs: start/stop a group, messages to send, persist standby.
//!
//! Protocol (one message kind does most of the work: a full, idempotent *announcement* of
//! the sender's state, so a lost or reordered message is repaired by the next one):
//! - Every node announces its standby flag, health, the groups it holds (from the moment it
//!   starts them until they are fully stopped; which of them are still starting), the
//!   groups it *claims* (wants to start), the groups it will not take (released or failed
//!   here) and, per peer, the newest announcement of that peer it has seen. Announcements are numbered by
//!   (agent incarnation, sequence); older ones are ignored.
//! - Placement ([`crate::placement`]) runs on every node with the same inputs.
//! - The holder stops a group when placement moves it away and keeps announcing it as held
//!   until the stop has finished; only then may another node start it.
//! - The desired node first *claims* the group and starts it only once every live peer has
//!   acknowledged the claim (its announcement shows it saw ours) without holding the group
//!   or claiming it from an earlier position in the configuration. Of two simultaneous
//!   claims the node earlier in configuration order wins and the other withdraws, so two
//!   nodes deciding at once still end with one holder. With no live peer to acknowledge
//!   (the holder was just declared dead, no other agent announced) and no node late, the
//!   start comes in the same step as the claim: a dead node's group is taken over the
//!   moment membership says so. (A late node may be the rest of a majority this node is cut
//!   off from, about to be declared dead too; then the claim waits one `claim_retry`.)
//! - The groups of a node are free only once membership declares the node dead (messages of
//!   that incarnation still in flight are then ignored; a node back from a healed partition
//!   with the same generation is heard again).
//! - A node whose membership *left* (a clean shutdown, `REASON_LEFT`: what `systemctl
//!   restart tandem-membership` does) is no candidate at once, but what its agent announced
//!   as held stays held for [`HandoverConfig::left_grace`] (membership's `dead_after`): its
//!   agent keeps running, and holding, while membership restarts, and a restart is back
//!   well within that (a new generation frees nothing). Membership still reports "left";
//!   this is the agent's reading of it. Cost: a whole-node shutdown (the agent stops too,
//!   keeping its resources, by design) fails over after `dead_after` instead of at once.
//! - A group *lost* here (a monitor found the provider giving it to another server, e.g.
//!   taken over during a partition) is not claimed again while that situation lasts. The
//!   provider names a server, not a node, so every other member is a possible holder until
//!   it is accounted for: it announced itself since the loss (from then on its
//!   announcements say whether it holds the group, and the normal handover applies), or
//!   membership declared it dead after showing it alive and not late since the loss (a new
//!   death, not the partition that caused the loss, during which it was already dead or
//!   late here), or an operator's takeover here. Neither the peer falling silent
//!   (`peer_stale_after`: with one-way loss the taker's membership never sends to us) nor
//!   the start-failure backoff lets this node take it back: both made the IP flap (two
//!   nodes with both links cut, or one-way loss). Accepted cost: in a two-node cluster
//!   without a witness, if the node that took the group during a partition really dies
//!   before the partition heals, the group stays down until the heal. A witness is the
//!   answer. (A restart of this agent during the partition forgets the loss; its start-up
//!   probe then sees the IP elsewhere and it claims after `settle` as any agent would.)
//! - Nothing is claimed until the agents that may exist have been heard: for `settle`
//!   after this agent starts, and after a member peer comes up until it announces itself
//!   (at most `peer_stale_after`), so a rebooted node learns what is held before acting.
//!   Once every other member's agent has announced itself since this agent started, the
//!   wait ends at once: what is held or claimed anywhere is then known (witnesses hold
//!   nothing). A returning node hears the others within a round trip: a peer answers the
//!   first announcement of a new incarnation, and announces to a node membership reports
//!   up with a new generation. The failback that follows waits on messages only: the
//!   holder stops and announces the release, the preferred node claims, the others
//!   acknowledge, it starts.
//! - A start that fails (or a monitor that gives up) leaves the group to the others; after
//!   a growing delay the node becomes a candidate again if nobody else holds the group.
//! - Operator commands: standby/online (of this node, or of another by message), takeover
//!   (a preference for this node until the group moves away) and release (a group this
//!   node will not take until brought online or asked to take it over).
//! - While disconnected from membership a node keeps what it holds and starts nothing. Its
//!   peers declare it dead `dead_after` after its membership went away and may take its
//!   groups over, so the daemon (not this core) checks the groups running here from then on:
//!   a monitor of each at `dead_after` after the disconnection, the group reported starting,
//!   not running, until confirmed, then again with a period doubling from `dead_after` up to
//!   the longest `monitor_interval` until membership is back. A group found elsewhere is
//!   [`Input::Lost`]: stopped here, not taken back. (A frozen membership keeps its socket
//!   open: the agent sees no disconnection, and only the monitors tell it.)
//!
//! The window in which two nodes can both run a group: a peer that has not announced
//! anything for [`Timers::peer_stale_after`] is not waited for (its agent is presumed gone,
//! though whatever it announced as held still blocks), and a peer that membership declares
//! dead while it actually runs (a partition under `two_node`, a freeze) is not known to
//! run. When the two hear each other again, a node running a group that a peer newly
//! announces as held, its start completed, checks it against the provider at once
//! ([`Output::Verify`], once per conflict): the one that really has the resource confirms, the other finds it
//! lost and stops. So a stale holder stops reporting the group running (it is reported
//! starting while the check runs) once the taker's announcement reaches it, not at its
//! next regular monitor (`monitor_interval`). Groups whose monitors cannot see another
//! server's hold (LSB/OCF only) confirm; configuration order decides.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_config::{ClusterConfig, Failback, Role};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::placement::{self, GroupView, NodeView};

/// The membership topic the resource agents talk on.
pub const TOPIC: &str = "tandem.agent.v1";
/// Version of the message encoding; messages of another version are rejected and counted.
pub const MESSAGE_VERSION: u32 = 1;
/// Largest payload membership carries (membership.proto, `Send`).
pub const MAX_PAYLOAD: usize = 900;

/// Timers of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Period of the full announcement (repairs anything lost).
    pub announce_interval: Duration,
    /// While claiming, re-announce this often so a lost acknowledgement is asked again.
    pub claim_retry: Duration,
    /// A peer silent for this long is not waited for (its agent is presumed gone).
    pub peer_stale_after: Duration,
    /// After start, wait this long to hear the others before claiming anything (less once
    /// every other member's agent has announced itself: nothing more to learn). A member
    /// peer that comes up is waited for until it announces itself or for
    /// `peer_stale_after` (a rebooting peer must learn what is held before it claims, and
    /// we must learn what it holds); a witness, which may run no agent, for `settle`.
    pub settle: Duration,
    /// After a failed start (or a monitor giving up) this node leaves the group to others
    /// for this long, doubling per failure up to `start_retry_max`; then, if nobody else
    /// holds the group, it becomes a candidate again (a transient provider outage during a
    /// failover must not leave the group down for good).
    pub start_retry: Duration,
    pub start_retry_max: Duration,
    /// First delay before retrying a failed stop; doubles up to `stop_retry_max`.
    pub stop_retry: Duration,
    pub stop_retry_max: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            announce_interval: Duration::from_secs(2),
            claim_retry: Duration::from_millis(250),
            peer_stale_after: Duration::from_secs(10),
            settle: Duration::from_secs(2),
            stop_retry: Duration::from_secs(1),
            stop_retry_max: Duration::from_secs(60),
            start_retry: Duration::from_secs(10),
            start_retry_max: Duration::from_secs(300),
        }
    }
}

/// A resource group as the handover needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub prefer: Option<String>,
    pub failback: Failback,
}

/// What the handover machine is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoverConfig {
    pub local: String,
    /// Every node, in configuration order.
    pub nodes: Vec<(String, Role)>,
    pub groups: Vec<GroupSpec>,
    pub timers: Timers,
    /// How long the groups of a node whose membership *left* (clean shutdown) stay held:
    /// membership's `dead_after`. A `systemctl restart` of membership is back well within
    /// it, and its agent kept running (and holding) all along.
    pub left_grace: Duration,
}

impl HandoverConfig {
    pub fn from_cluster(cfg: &ClusterConfig, local: &str, timers: Timers) -> Self {
        HandoverConfig {
            local: local.to_owned(),
            nodes: cfg.nodes.iter().map(|n| (n.name.clone(), n.role)).collect(),
            groups: cfg
                .resources
                .iter()
                .map(|g| GroupSpec {
                    name: g.name.clone(),
                    prefer: g.prefer.clone(),
                    failback: g.failback,
                })
                .collect(),
            timers,
            left_grace: cfg.timing.dead_after,
        }
    }
}

/// One node's announcement of its own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Announce {
    /// The sender agent's incarnation (increases on every agent start).
    pub inc: u64,
    pub seq: u64,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub healthy: bool,
    #[serde(default)]
    pub holds: BTreeSet<String>,
    /// Absent when empty, like `starting`, so either full costs the same bytes.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub claims: BTreeSet<String>,
    /// Groups of `holds` whose start has not completed (a reserved IP not assigned yet):
    /// a peer running one checks it against the provider only once the start is done.
    /// Absent when empty (older agents neither send nor read it). A group is never claimed
    /// and starting at once, and the key is as long as `claims`', so the worst-case size
    /// ([`worst_case_announcement`]) is unchanged.
    #[serde(default, rename = "starts", skip_serializing_if = "BTreeSet::is_empty")]
    pub starting: BTreeSet<String>,
    /// Groups this node will not take (released by an operator, or failed here).
    #[serde(default)]
    pub avoid: BTreeSet<String>,
    /// Groups an operator moved to this node (takeover).
    #[serde(default)]
    pub pins: BTreeSet<String>,
    /// Newest (incarnation, seq) seen from each peer: the acknowledgement of claims.
    #[serde(default)]
    pub seen: BTreeMap<String, (u64, u64)>,
}

/// Messages on [`TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Message {
    State(Announce),
    /// Ask `node` to go to standby (`on`) or online.
    Standby {
        node: String,
        on: bool,
    },
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u32,
    #[serde(flatten)]
    msg: &'a Message,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("message of {0} bytes is larger than the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("unsupported message version {0} (this agent speaks {MESSAGE_VERSION})")]
    Version(u32),
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl Message {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let bytes = serde_json::to_vec(&EnvelopeOut {
            v: MESSAGE_VERSION,
            msg: self,
        })
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_PAYLOAD {
            return Err(CodecError::TooLarge(bytes.len()));
        }
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, CodecError> {
        if bytes.len() > MAX_PAYLOAD {
            return Err(CodecError::TooLarge(bytes.len()));
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
        if v.v != MESSAGE_VERSION {
            return Err(CodecError::Version(v.v));
        }
        serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
    }
}

/// One node in the membership view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberNode {
    pub name: String,
    /// UP or LATE.
    pub alive: bool,
    pub generation: u64,
}

/// The membership view as the handover needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    pub quorate: bool,
    pub nodes: Vec<MemberNode>,
    /// Alive nodes silent for longer than `warn_after` (membership's LATE): likely the next
    /// to be declared dead, e.g. the rest of the majority when this node is cut off.
    pub late: Vec<String>,
    /// Dead nodes whose membership announced a clean shutdown (`REASON_LEFT`) and has not
    /// come back since.
    pub left: Vec<String>,
}

/// Result of a group action run by the local agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOutcome {
    Started,
    /// The start failed; `clean` when everything already started was stopped again.
    StartFailed {
        clean: bool,
        reason: String,
    },
    Stopped,
    StopFailed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The membership view after a change (also the first snapshot after connecting).
    View(MembershipView),
    /// The membership socket is gone.
    Disconnected,
    /// A message on [`TOPIC`]; `generation` is the sender's membership generation
    /// (`ClusterMessage.from_generation`).
    Message {
        from: String,
        generation: u64,
        payload: Vec<u8>,
    },
    Agent {
        group: String,
        outcome: AgentOutcome,
    },
    /// Local health (all checks pass).
    Health(bool),
    /// Monitors failed more often than allowed: give the group up on this node.
    MonitorGaveUp { group: String, reason: String },
    /// A monitor found the group's resource running on another server (a reserved IP
    /// assigned elsewhere): it was lost, e.g. taken over while this node was frozen. Not a
    /// failure to restart here: the group stops here and is no longer announced as held,
    /// and placement decides like for any group held elsewhere (it comes back only by a
    /// release there or that node's death, as a failback through the handover).
    Lost { group: String, reason: String },
    /// A deadline passed.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `None` = this node.
    Standby(Option<String>),
    Online(Option<String>),
    Takeover(String),
    Release(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("this node is not a candidate: {0}")]
    NotCandidate(String),
    #[error("group {0:?} is not held by this node")]
    NotHeld(String),
    #[error("no other node could take group {0:?}; it stays here")]
    NoOtherCandidate(String),
    #[error("node {0:?} is not reachable")]
    Unreachable(String),
    #[error("cannot encode the request: {0}")]
    Codec(#[from] CodecError),
    #[error(
        "the announcement of this node's state could reach {0} bytes, more than membership carries \
         ({MAX_PAYLOAD}); use fewer or shorter group and node names"
    )]
    TooLarge(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Start(String),
    Stop(String),
    /// Send on [`TOPIC`]; `to: None` = every other node.
    Send {
        to: Option<String>,
        payload: Vec<u8>,
    },
    PersistStandby(bool),
    /// Check the group, running here, against the provider at once (`GroupCmd::Verify`:
    /// reported starting until confirmed): a peer newly announces holding it too, its
    /// start completed (not in [`Announce::starting`]), so the one of the two that really
    /// has the resource confirms it and the other finds it elsewhere ([`Input::Lost`]).
    Verify(String),
}

/// State of a group on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalState {
    Stopped,
    /// Claimed; waiting for acknowledgements (or for the holder to release).
    Waiting,
    Starting,
    Running,
    Stopping,
    /// A stop failed; still counted as held; the stop is retried.
    Failed,
}

impl LocalState {
    fn holds(self) -> bool {
        matches!(
            self,
            LocalState::Starting | LocalState::Running | LocalState::Stopping | LocalState::Failed
        )
    }
}

#[derive(Debug, Clone)]
struct LocalGroup {
    state: LocalState,
    claim_seq: u64,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    avoid: Option<String>,
    /// When a failure's `avoid` may lapse (none for an operator's release).
    avoid_until: Option<Instant>,
    /// Failures in a row here (start failed or monitor gave up), for the backoff.
    failures: u32,
    pinned: bool,
    last_error: Option<String>,
    /// Stopping because the resource was found on another server: not held here any more
    /// (announcing it would claim what another node holds).
    lost: bool,
    /// Sequence of our first announcement listing the group as held and started (0: not
    /// held, still starting or not announced yet), to tell whether a peer that also claims
    /// it knows we hold it, and has checked its own hold since (see `holder`).
    held_seq: u64,
    /// The group was lost here to another server: the member nodes that may hold it now,
    /// each with whether membership has shown it alive (and not late) since the loss. Not
    /// claimed again while any is left (see the module doc).
    lost_to: Option<BTreeMap<String, bool>>,
    /// While the group runs here: the peers announcing it held whose hold has been checked
    /// against the provider ([`Output::Verify`]), so a lasting double hold asks once.
    verified_against: BTreeSet<String>,
}

impl LocalGroup {
    fn holds(&self) -> bool {
        self.state.holds() && !self.lost
    }
}

#[derive(Debug, Clone)]
struct Peer {
    state: Announce,
    /// Membership generation of the sender when it sent `state`.
    generation: u64,
    last_heard: Instant,
}

/// Status of one group as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub name: String,
    pub state: LocalState,
    pub desired: Option<String>,
    pub holder: Option<String>,
    pub not_candidate_reason: Option<String>,
    pub last_error: Option<String>,
}

/// Flags of one node as known here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub alive: bool,
    /// Its agent has announced itself.
    pub announced: bool,
    pub standby: bool,
    pub healthy: bool,
    pub holds: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub connected: bool,
    pub quorate: bool,
    pub standby: bool,
    pub healthy: bool,
    pub nodes: Vec<NodeStatus>,
    pub groups: Vec<GroupStatus>,
    /// Messages rejected (malformed, wrong version, from unknown nodes).
    pub bad_messages: u64,
}

/// Size of the largest announcement this configuration can produce: every group in every
/// list but one of `claims` and `starting` (a group is never claimed and starting at
/// once), every peer in `seen` with the largest numbers.
pub fn worst_case_announcement(cfg: &HandoverConfig) -> usize {
    let all: BTreeSet<String> = cfg.groups.iter().map(|g| g.name.clone()).collect();
    let size = |claims: BTreeSet<String>, starting: BTreeSet<String>| {
        let a = Announce {
            inc: u64::MAX,
            seq: u64::MAX,
            standby: true,
            healthy: true,
            holds: all.clone(),
            claims,
            starting,
            avoid: all.clone(),
            pins: all.clone(),
            seen: cfg
                .nodes
                .iter()
                .map(|(n, _)| (n.clone(), (u64::MAX, u64::MAX)))
                .collect(),
        };
        serde_json::to_vec(&EnvelopeOut {
            v: MESSAGE_VERSION,
            msg: &Message::State(a),
        })
        .map_or(usize::MAX, |b| b.len())
    };
    size(all.clone(), BTreeSet::new()).max(size(BTreeSet::new(), all.clone()))
}

/// The per-node handover state machine.
#[derive(Debug)]
pub struct Handover {
    cfg: HandoverConfig,
    local_idx: usize,
    inc: u64,
    seq: u64,
    connected: bool,
    quorate: bool,
    standby: bool,
    healthy: bool,
    started_at: Instant,
    /// Alive nodes (membership) with their generation and since when.
    alive: BTreeMap<String, (u64, Instant)>,
    /// Alive nodes membership reports late (silent past `warn_after`).
    late: BTreeSet<String>,
    /// Latest announcement of every node not declared dead since. A node's announcement
    /// counts for safety (what it holds or claims, acknowledgements) even before membership
    /// reports it up: the Watch and Subscribe streams are not ordered with each other.
    peers: BTreeMap<String, Peer>,
    /// The generation at which membership last declared each node dead; messages of that
    /// incarnation or older still in flight are ignored.
    dead_gen: BTreeMap<String, u64>,
    /// Nodes whose membership left (clean shutdown) while their agent announced holding
    /// something, and since when: their groups stay held for `left_grace`.
    left_at: BTreeMap<String, Instant>,
    groups: Vec<LocalGroup>,
    outputs: Vec<Output>,
    next_announce: Instant,
    reply_to: BTreeSet<String>,
    dirty: bool,
    /// `now` of the last step (deadlines at or before it have been handled).
    last_step: Instant,
    bad_messages: u64,
}

impl Handover {
    /// `incarnation` must increase on every start of the agent; `running` are the groups
    /// that probing found running here; `standby` is the persisted flag.
    pub fn new(
        cfg: HandoverConfig,
        incarnation: u64,
        running: &[String],
        standby: bool,
        now: Instant,
    ) -> Result<Self, CommandError> {
        let local_idx = cfg
            .nodes
            .iter()
            .position(|(n, _)| *n == cfg.local)
            .ok_or_else(|| CommandError::UnknownNode(cfg.local.clone()))?;
        if let Some(g) = running
            .iter()
            .find(|g| !cfg.groups.iter().any(|s| &s.name == *g))
        {
            return Err(CommandError::UnknownGroup(g.clone()));
        }
        let worst = worst_case_announcement(&cfg);
        if worst > MAX_PAYLOAD {
            return Err(CommandError::TooLarge(worst));
        }
        let groups = cfg
            .groups
            .iter()
            .map(|g| LocalGroup {
                state: if running.contains(&g.name) {
                    LocalState::Running
                } else {
                    LocalState::Stopped
                },
                claim_seq: 0,
                retry_at: None,
                retry_delay: cfg.timers.stop_retry,
                avoid: None,
                avoid_until: None,
                failures: 0,
                pinned: false,
                last_error: None,
                lost: false,
                held_seq: 0,
                lost_to: None,
                verified_against: BTreeSet::new(),
            })
            .collect();
        Ok(Handover {
            local_idx,
            inc: incarnation,
            seq: 0,
            connected: false,
            quorate: false,
            standby,
            healthy: true,
            started_at: now,
            alive: BTreeMap::new(),
            late: BTreeSet::new(),
            peers: BTreeMap::new(),
            dead_gen: BTreeMap::new(),
            left_at: BTreeMap::new(),
            groups,
            outputs: Vec::new(),
            next_announce: now,
            reply_to: BTreeSet::new(),
            dirty: false,
            last_step: now,
            bad_messages: 0,
            cfg,
        })
    }

    pub fn local(&self) -> &str {
        &self.cfg.local
    }

    /// Everything the machine wants done since the last call.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// When [`Input::Tick`] should be fed next.
    pub fn next_deadline(&self) -> Instant {
        let mut d = self.next_announce;
        for g in &self.groups {
            if let Some(r) = g.retry_at {
                d = d.min(r);
            }
            // A lapsed avoid waiting for the other holder to go needs no timer.
            if let Some(t) = g.avoid_until.filter(|t| *t > self.last_step) {
                d = d.min(t);
            }
        }
        for t in self.left_at.values() {
            d = d.min(*t + self.cfg.left_grace);
        }
        d
    }

    pub fn state_of(&self, group: &str) -> Option<LocalState> {
        self.group_idx(group).map(|i| self.groups[i].state)
    }

    fn group_idx(&self, group: &str) -> Option<usize> {
        self.cfg.groups.iter().position(|g| g.name == group)
    }

    fn node_idx(&self, node: &str) -> Option<usize> {
        self.cfg.nodes.iter().position(|(n, _)| n == node)
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::View(view) => self.on_view(now, view),
            Input::Disconnected => {
                if self.connected {
                    warn!("membership disconnected: keeping what is held, starting nothing");
                }
                self.connected = false;
            }
            Input::Message {
                from,
                generation,
                payload,
            } => self.on_message(now, &from, generation, &payload),
            Input::Agent { group, outcome } => self.on_agent(now, &group, outcome),
            Input::Health(h) => {
                if h != self.healthy {
                    info!(healthy = h, "local health changed");
                    self.healthy = h;
                    self.dirty = true;
                }
            }
            Input::MonitorGaveUp { group, reason } => {
                if let Some(i) = self.group_idx(&group) {
                    warn!(group = %group, reason = %reason, "monitor gave up; releasing the group");
                    self.fail_here(i, now, format!("monitor failed: {reason}"));
                    self.groups[i].last_error = Some(reason);
                }
            }
            Input::Lost { group, reason } => self.lost(&group, reason),
            Input::Tick => {}
        }
        self.step(now);
    }

    fn lost(&mut self, group: &str, reason: String) {
        let Some(gi) = self.group_idx(group) else {
            warn!(group = %group, "loss of an unknown group ignored");
            return;
        };
        // The provider names a server, not a node: every other member may be the holder.
        // One alive and not late now is "seen alive since the loss": its later death is a
        // new one. One dead or late is most likely on the other side of the partition that
        // caused the loss: its death proves nothing.
        let suspects: BTreeMap<String, bool> = self
            .cfg
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, (_, role))| *i != self.local_idx && *role == Role::Member)
            .map(|(_, (n, _))| {
                let seen = self.alive.contains_key(n) && !self.late.contains(n);
                (n.clone(), seen)
            })
            .collect();
        let g = &mut self.groups[gi];
        if g.state != LocalState::Running {
            debug!(group = %group, state = ?g.state, "loss of a group not running here ignored");
            return;
        }
        warn!(group = %group, reason = %reason, "group lost to another server; stopping it here, not taking it back");
        g.lost = true;
        g.lost_to = (!suspects.is_empty()).then_some(suspects);
        g.state = LocalState::Stopping;
        g.pinned = false;
        g.last_error = Some(format!("lost: {reason}"));
        self.outputs.push(Output::Stop(group.to_owned()));
        self.dirty = true;
    }

    /// Leaves group `gi` to other nodes for a while after a failure here.
    fn fail_here(&mut self, gi: usize, now: Instant, why: String) {
        let t = self.cfg.timers;
        let g = &mut self.groups[gi];
        let delay = t
            .start_retry
            .saturating_mul(1u32 << g.failures.min(16))
            .min(t.start_retry_max);
        g.failures = g.failures.saturating_add(1);
        g.avoid = Some(why);
        g.avoid_until = Some(now + delay);
        g.pinned = false;
        self.dirty = true;
    }

    pub fn command(&mut self, now: Instant, cmd: Command) -> Result<String, CommandError> {
        let result = self.apply_command(now, cmd);
        self.step(now);
        result
    }

    fn apply_command(&mut self, now: Instant, cmd: Command) -> Result<String, CommandError> {
        match cmd {
            Command::Standby(node) => self.set_standby(now, node, true),
            Command::Online(node) => self.set_standby(now, node, false),
            Command::Takeover(group) => {
                let gi = self
                    .group_idx(&group)
                    .ok_or_else(|| CommandError::UnknownGroup(group.clone()))?;
                let me = NodeView {
                    name: &self.cfg.local,
                    role: self.cfg.nodes[self.local_idx].1,
                    up: self.connected,
                    standby: self.standby,
                    healthy: self.healthy,
                };
                if let Some(reason) =
                    placement::not_candidate_reason(&me, self.connected && self.quorate)
                {
                    return Err(CommandError::NotCandidate(reason.to_owned()));
                }
                let g = &mut self.groups[gi];
                // An explicit request forgives an earlier failure or release here, and a
                // loss: the operator decides where the group runs.
                g.lost_to = None;
                g.avoid = None;
                g.avoid_until = None;
                g.failures = 0;
                g.pinned = true;
                self.dirty = true;
                info!(group = %group, "takeover requested");
                Ok(if g.holds() {
                    format!("{group} already runs here; it stays here")
                } else {
                    format!("taking {group} over; the current holder releases it first")
                })
            }
            Command::Release(group) => {
                let gi = self
                    .group_idx(&group)
                    .ok_or_else(|| CommandError::UnknownGroup(group.clone()))?;
                let state = self.groups[gi].state;
                if !self.groups[gi].holds() && state != LocalState::Waiting {
                    return Err(CommandError::NotHeld(group));
                }
                let nodes = self.node_views(gi, now);
                let quorate = self.connected && self.quorate;
                let other = nodes.iter().enumerate().any(|(i, n)| {
                    i != self.local_idx && placement::not_candidate_reason(n, quorate).is_none()
                });
                if !other {
                    return Err(CommandError::NoOtherCandidate(group));
                }
                let g = &mut self.groups[gi];
                g.avoid = Some("released by an operator".to_owned());
                g.avoid_until = None;
                g.pinned = false;
                self.dirty = true;
                info!(group = %group, "release requested");
                Ok(format!("releasing {group}; the next candidate takes it"))
            }
        }
    }

    fn set_standby(
        &mut self,
        now: Instant,
        node: Option<String>,
        on: bool,
    ) -> Result<String, CommandError> {
        let word = if on { "standby" } else { "online" };
        let node = node
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.cfg.local.clone());
        if self.node_idx(&node).is_none() {
            return Err(CommandError::UnknownNode(node));
        }
        if node == self.cfg.local {
            let stranded = if on {
                self.stranded_groups(now)
            } else {
                Vec::new()
            };
            self.set_local_standby(on);
            return Ok(if stranded.is_empty() {
                format!("{node} is {word}")
            } else {
                format!(
                    "{node} is {word}; no other node can take {}: stopped",
                    stranded.join(", ")
                )
            });
        }
        if !self.connected || !self.alive.contains_key(&node) {
            return Err(CommandError::Unreachable(node));
        }
        let payload = Message::Standby {
            node: node.clone(),
            on,
        }
        .encode()?;
        self.outputs.push(Output::Send {
            to: Some(node.clone()),
            payload,
        });
        Ok(format!("asked {node} to go {word}"))
    }

    /// Groups held here that no other node could take now.
    fn stranded_groups(&self, now: Instant) -> Vec<String> {
        let quorate = self.connected && self.quorate;
        (0..self.groups.len())
            .filter(|&gi| self.groups[gi].holds())
            .filter(|&gi| {
                let nodes = self.node_views(gi, now);
                !nodes.iter().enumerate().any(|(i, n)| {
                    i != self.local_idx && placement::not_candidate_reason(n, quorate).is_none()
                })
            })
            .map(|gi| self.cfg.groups[gi].name.clone())
            .collect()
    }

    fn set_local_standby(&mut self, on: bool) {
        if on != self.standby {
            info!(standby = on, "standby changed");
            self.standby = on;
            self.outputs.push(Output::PersistStandby(on));
            self.dirty = true;
        }
        if !on {
            // Bringing a node online also forgives its failed or released groups.
            for g in &mut self.groups {
                g.avoid_until = None;
                g.failures = 0;
                if g.avoid.take().is_some() {
                    self.dirty = true;
                }
            }
        }
    }

    fn on_view(&mut self, now: Instant, view: MembershipView) {
        if !self.connected {
            info!(quorate = view.quorate, "membership view received");
            self.dirty = true;
        }
        self.connected = true;
        if self.quorate != view.quorate {
            info!(quorate = view.quorate, "quorum changed");
            self.quorate = view.quorate;
        }
        self.late = view.late.into_iter().collect();
        let left: BTreeSet<String> = view.left.into_iter().collect();
        for n in &view.nodes {
            if n.alive && !self.late.contains(&n.name) {
                self.seen_alive_since_loss(&n.name);
            }
        }
        for n in view.nodes {
            if n.name == self.cfg.local || self.node_idx(&n.name).is_none() {
                continue;
            }
            if n.alive {
                match self.alive.get(&n.name) {
                    Some((g, _)) if *g == n.generation => {}
                    known => {
                        info!(node = %n.name, generation = n.generation, new_incarnation = known.is_some(), "node up");
                        // Alive again (a healed partition keeps its generation): its messages
                        // count again; those of older incarnations still do not.
                        self.dead_gen
                            .insert(n.name.clone(), n.generation.saturating_sub(1));
                        self.alive.insert(n.name.clone(), (n.generation, now));
                        // Membership's stream to a new incarnation starts empty: tell it.
                        self.reply_to.insert(n.name.clone());
                    }
                }
                if self.left_at.remove(&n.name).is_some() {
                    info!(node = %n.name, "node back after leaving; what it holds stays held");
                }
            } else {
                if self.left_at.contains_key(&n.name) {
                    continue;
                }
                let was_alive = self.alive.remove(&n.name).is_some();
                if was_alive && left.contains(&n.name) {
                    let dead = self.dead_gen.entry(n.name.clone()).or_default();
                    *dead = (*dead).max(n.generation);
                    // Its agent keeps running, and holding, while membership restarts
                    // (`systemctl restart`): what it announced as held stays held for
                    // `left_grace`. Its claims are void (a disconnected agent starts nothing).
                    let holds = self.peers.get_mut(&n.name).is_some_and(|p| {
                        p.state.claims.clear();
                        !p.state.holds.is_empty()
                    });
                    self.dirty = true;
                    if holds {
                        info!(node = %n.name, generation = n.generation, grace = ?self.cfg.left_grace, "node left; its groups stay held unless it does not come back in time");
                        self.left_at.insert(n.name.clone(), now);
                        continue;
                    }
                }
                // Only membership's verdict frees what a node held.
                let freed = self
                    .peers
                    .get(&n.name)
                    .is_some_and(|p| p.generation <= n.generation);
                if freed {
                    self.peers.remove(&n.name);
                }
                let dead = self.dead_gen.entry(n.name.clone()).or_default();
                *dead = (*dead).max(n.generation);
                if was_alive || freed {
                    info!(node = %n.name, generation = n.generation, "node dead; its groups are free");
                    self.dirty = true;
                }
                self.died_since_loss(&n.name);
            }
        }
    }

    /// Membership shows `node` alive (not late): a later death of it is a new one.
    fn seen_alive_since_loss(&mut self, node: &str) {
        for g in &mut self.groups {
            if let Some(seen) = g.lost_to.as_mut().and_then(|m| m.get_mut(node)) {
                *seen = true;
            }
        }
    }

    /// `node` died: a group lost while it may hold it is free again if membership had
    /// shown it alive since the loss (a new death, not the partition behind the loss).
    fn died_since_loss(&mut self, node: &str) {
        for gi in 0..self.groups.len() {
            if self.groups[gi]
                .lost_to
                .as_ref()
                .is_some_and(|m| m.get(node) == Some(&true))
            {
                self.clear_suspect(gi, node, "died after being seen alive since the loss");
            }
        }
    }

    /// `node` is known not to be an unannounced holder of group `gi` any more.
    fn clear_suspect(&mut self, gi: usize, node: &str, why: &str) {
        let g = &mut self.groups[gi];
        let Some(m) = g.lost_to.as_mut() else {
            return;
        };
        if m.remove(node).is_none() {
            return;
        }
        debug!(group = %self.cfg.groups[gi].name, node = %node, why, "no longer a possible holder of a lost group");
        if m.is_empty() {
            g.lost_to = None;
            info!(group = %self.cfg.groups[gi].name, "every node the group may have been lost to is accounted for; it may be claimed again");
            self.dirty = true;
        }
    }

    fn reject(&mut self, from: &str, why: &dyn std::fmt::Display) {
        self.bad_messages += 1;
        // Rate-limited: the first and then every 100th.
        if self.bad_messages % 100 == 1 {
            warn!(from = %from, error = %why, rejected = self.bad_messages, "message rejected");
        }
    }

    fn on_message(&mut self, now: Instant, from: &str, generation: u64, payload: &[u8]) {
        if from == self.cfg.local || self.node_idx(from).is_none() {
            self.reject(from, &"unknown sender");
            return;
        }
        if self.dead_gen.get(from).is_some_and(|d| generation <= *d) {
            debug!(from = %from, generation, "message of a dead incarnation ignored");
            return;
        }
        let msg = match Message::decode(payload) {
            Ok(m) => m,
            Err(e) => return self.reject(from, &e),
        };
        match msg {
            Message::State(a) => {
                let prev = self.peers.get(from);
                if prev.is_some_and(|p| (a.inc, a.seq) <= (p.state.inc, p.state.seq)) {
                    debug!(from = %from, seq = a.seq, "old announcement ignored");
                    return;
                }
                let first_of_inc = prev.is_none_or(|p| p.state.inc != a.inc);

                let new_pins: Vec<String> = a
                    .pins
                    .iter()
                    .filter(|g| prev.is_none_or(|p| !p.state.pins.contains(*g)))
                    .cloned()
                    .collect();
                if first_of_inc || !a.claims.is_empty() {
                    self.reply_to.insert(from.to_owned());
                }
                self.peers.insert(
                    from.to_owned(),
                    Peer {
                        state: a,
                        generation,
                        last_heard: now,
                    },
                );
                // Heard after the loss: from here on its announcements say whether it holds.
                for gi in 0..self.groups.len() {
                    self.clear_suspect(gi, from, "announced itself after the loss");
                }
                // The newer takeover request wins.
                for g in new_pins {
                    if let Some(gi) = self.group_idx(&g)
                        && std::mem::take(&mut self.groups[gi].pinned)
                    {
                        info!(group = %g, by = %from, "takeover by another node supersedes ours");
                        self.dirty = true;
                    }
                }
            }
            Message::Standby { node, on } => {
                if node == self.cfg.local {
                    info!(from = %from, standby = on, "standby requested by a peer");
                    self.set_local_standby(on);
                } else {
                    self.reject(from, &"standby request for another node");
                }
            }
        }
    }

    fn on_agent(&mut self, now: Instant, group: &str, outcome: AgentOutcome) {
        let Some(gi) = self.group_idx(group) else {
            warn!(group = %group, "result for an unknown group ignored");
            return;
        };
        let max = self.cfg.timers.stop_retry_max;
        let first_delay = self.cfg.timers.stop_retry;
        if let (LocalState::Starting, AgentOutcome::StartFailed { reason, .. }) =
            (self.groups[gi].state, &outcome)
        {
            self.fail_here(gi, now, format!("start failed: {reason}"));
        }
        let g = &mut self.groups[gi];
        match (g.state, outcome) {
            (LocalState::Starting, AgentOutcome::Started) => {
                info!(group = %group, "group running");
                g.state = LocalState::Running;
                g.last_error = None;
                g.failures = 0;
            }
            (LocalState::Starting, AgentOutcome::StartFailed { clean, reason }) => {
                warn!(group = %group, clean, reason = %reason, "group failed to start; giving it up here");
                g.last_error = Some(reason);
                if clean {
                    g.state = LocalState::Stopped;
                } else {
                    g.state = LocalState::Failed;
                    g.retry_at = Some(now + g.retry_delay);
                }
            }
            (LocalState::Stopping | LocalState::Failed, AgentOutcome::Stopped) => {
                info!(group = %group, "group stopped");
                g.state = LocalState::Stopped;
                g.lost = false;
                g.retry_at = None;
                g.retry_delay = first_delay;
            }
            (LocalState::Stopping | LocalState::Failed, AgentOutcome::StopFailed { reason }) => {
                warn!(group = %group, reason = %reason, retry_in = ?g.retry_delay, "group failed to stop; still held, retrying");
                g.state = LocalState::Failed;
                // Part of it may still run here: held again, whatever was lost.
                g.lost = false;
                g.last_error = Some(reason);
                g.retry_at = Some(now + g.retry_delay);
                g.retry_delay = (g.retry_delay * 2).min(max);
            }
            (state, outcome) => {
                warn!(group = %group, ?state, ?outcome, "unexpected agent result ignored");
                return;
            }
        }
        self.dirty = true;
    }

    fn stale(&self, p: &Peer, now: Instant) -> bool {
        now >= p.last_heard + self.cfg.timers.peer_stale_after
    }

    /// A peer whose flags and claims count: alive, announced, not silent for too long.
    fn live_peer(&self, name: &str, now: Instant) -> Option<&Peer> {
        self.alive.get(name)?;
        self.peers.get(name).filter(|p| !self.stale(p, now))
    }

    fn node_views(&self, gi: usize, now: Instant) -> Vec<NodeView<'_>> {
        let group = &self.cfg.groups[gi].name;
        self.cfg
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (name, role))| {
                if i == self.local_idx {
                    NodeView {
                        name,
                        role: *role,
                        up: self.connected,
                        standby: self.standby || self.groups[gi].avoid.is_some(),
                        healthy: self.healthy,
                    }
                } else {
                    let p = self.live_peer(name, now);
                    NodeView {
                        name,
                        role: *role,
                        up: p.is_some(),
                        // Avoiding a group is standby for that group alone.
                        standby: p.is_none_or(|p| p.state.standby || p.state.avoid.contains(group)),
                        healthy: p.is_some_and(|p| p.state.healthy),
                    }
                }
            })
            .collect()
    }

    /// The first node in configuration order that holds the group, as known here.
    ///
    /// When this node holds it too, a peer counts only once its announcement shows it has
    /// seen ours listing the group as held and started: a peer claiming it without knowing
    /// that claims from before it was declared dead (frozen, cut off) while we took the
    /// group over. Our announcement makes it check the group against the provider at once
    /// ([`Output::Verify`], see `check_double_holds`) and find it lost; yielding to that
    /// stale claim meanwhile would move the group back. Once it has seen our hold and
    /// still claims the group, its check confirmed it (or cannot tell, LSB/OCF only): the
    /// conflict is real and configuration order decides, as for any double hold.
    fn holder(&self, gi: usize, now: Instant) -> Option<usize> {
        let group = &self.cfg.groups[gi].name;
        let mine = self.groups[gi].holds();
        // Still starting (or not announced yet): no peer has seen our finished start, and
        // its check would have found the resource still on its side (see above).
        let held_since = match self.groups[gi].held_seq {
            0 => (self.inc, u64::MAX),
            s => (self.inc, s),
        };
        (0..self.cfg.nodes.len()).find(|&i| {
            if i == self.local_idx {
                mine
            } else {
                self.live_peer(&self.cfg.nodes[i].0, now).is_some_and(|p| {
                    p.state.holds.contains(group)
                        && (!mine
                            || p.state
                                .seen
                                .get(&self.cfg.local)
                                .is_some_and(|s| *s >= held_since))
                })
            }
        })
    }

    fn pinned(&self, gi: usize, now: Instant) -> Option<usize> {
        let group = &self.cfg.groups[gi].name;
        (0..self.cfg.nodes.len()).find(|&i| {
            if i == self.local_idx {
                self.groups[gi].pinned
            } else {
                self.live_peer(&self.cfg.nodes[i].0, now)
                    .is_some_and(|p| p.state.pins.contains(group))
            }
        })
    }

    fn desired(&self, gi: usize, now: Instant) -> Option<usize> {
        let nodes = self.node_views(gi, now);
        let spec = &self.cfg.groups[gi];
        let pin = self.pinned(gi, now).map(|i| self.cfg.nodes[i].0.as_str());
        let view = GroupView {
            // A takeover is a preference with automatic failback until the group moves away.
            prefer: pin.or(spec.prefer.as_deref()),
            failback: if pin.is_some() {
                Failback::Auto
            } else {
                spec.failback
            },
            holder: self.holder(gi, now).map(|i| self.cfg.nodes[i].0.as_str()),
        };
        placement::desired_holder(&nodes, self.connected && self.quorate, &view)
    }

    /// When claiming may begin: after our own start and after every alive peer that has not
    /// announced itself yet had its chance to. `None` when settled.
    ///
    /// Settling ends early once the agent of every other member has announced itself since
    /// this agent started: every node that may hold or claim a group has then said so, and
    /// waiting longer teaches nothing (a witness never holds or claims, and may run no
    /// agent: it is not waited for). A member never heard (down, or not yet seen by
    /// membership) keeps the full `settle`.
    fn settle_until(&self, now: Instant) -> Option<Instant> {
        let settle = self.cfg.timers.settle;
        let all_heard = self
            .cfg
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, (_, role))| *i != self.local_idx && *role == Role::Member)
            .all(|(_, (n, _))| {
                // Heard from its current membership incarnation: an announcement from before
                // a restart membership already reports says nothing of what it probed since.
                self.peers.get(n).is_some_and(|p| {
                    !self.stale(p, now) && self.alive.get(n).is_none_or(|(g, _)| p.generation >= *g)
                })
            });
        if all_heard {
            return None;
        }
        std::iter::once(self.started_at + settle)
            .chain(
                self.alive
                    .iter()
                    .filter(|(n, _)| !self.peers.contains_key(*n))
                    .map(
                        |(n, (_, since))| match self.node_idx(n).map(|i| self.cfg.nodes[i].1) {
                            Some(Role::Member) => *since + self.cfg.timers.peer_stale_after,
                            _ => *since + settle,
                        },
                    ),
            )
            .filter(|t| *t > now)
            .min()
    }

    fn acked(&self, gi: usize, now: Instant) -> bool {
        let mine = (self.inc, self.groups[gi].claim_seq);
        self.peers
            .iter()
            // A node that left cannot answer; its holds still block through `others_hold`.
            .filter(|(n, p)| !self.stale(p, now) && !self.left_at.contains_key(*n))
            .all(|(_, p)| {
                p.state
                    .seen
                    .get(&self.cfg.local)
                    .is_some_and(|s| *s >= mine)
            })
    }

    fn reconcile(&mut self, now: Instant) {
        let settled = self.settle_until(now).is_none();
        for gi in 0..self.groups.len() {
            let local_wanted = self.desired(gi, now) == Some(self.local_idx);
            let name = &self.cfg.groups[gi].name;
            let others_hold = self.peers.values().any(|p| p.state.holds.contains(name));
            let earlier_claim = self.cfg.nodes[..self.local_idx].iter().any(|(n, _)| {
                self.peers
                    .get(n)
                    .is_some_and(|p| !self.stale(p, now) && p.state.claims.contains(name))
            });
            let state = self.groups[gi].state;
            let next = match state {
                LocalState::Stopped
                    if self.connected
                        && local_wanted
                        && settled
                        && self.groups[gi].lost_to.is_none()
                        && !others_hold
                        && !earlier_claim =>
                {
                    self.groups[gi].claim_seq = self.seq + 1;
                    // No live peer to acknowledge (the holder was declared dead and nobody
                    // else has announced itself): waiting for the next claim retry would
                    // only add `claim_retry` to every failover. With any live peer this is
                    // false until it has seen the claim, which is not sent yet. Not while
                    // another node is late: when this node is the one cut off, the rest
                    // are declared dead one by one, and the quorum loss comes after the
                    // first death; the claim retry leaves time for it.
                    if self.late.is_empty() && self.acked(gi, now) {
                        self.outputs.push(Output::Start(name.clone()));
                        LocalState::Starting
                    } else {
                        LocalState::Waiting
                    }
                }
                LocalState::Waiting
                    if !self.connected || !local_wanted || others_hold || earlier_claim =>
                {
                    LocalState::Stopped
                }
                LocalState::Waiting if self.acked(gi, now) => {
                    self.outputs.push(Output::Start(name.clone()));
                    LocalState::Starting
                }
                LocalState::Running if self.connected && !local_wanted => {
                    self.outputs.push(Output::Stop(name.clone()));
                    self.groups[gi].pinned = false;
                    LocalState::Stopping
                }
                s => s,
            };
            if next != state {
                info!(group = %name, from = ?state, to = ?next, "group state");
                self.groups[gi].state = next;
                self.dirty = true;
            }
        }
    }

    fn step(&mut self, now: Instant) {
        self.last_step = now;
        let grace = self.cfg.left_grace;
        let expired: Vec<String> = self
            .left_at
            .iter()
            .filter(|(_, t)| **t + grace <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in expired {
            info!(node = %n, "node left and did not come back in time; its groups are free");
            self.left_at.remove(&n);
            self.peers.remove(&n);
            // It was alive to say goodbye: as a new death.
            for g in &mut self.groups {
                if let Some(seen) = g.lost_to.as_mut().and_then(|m| m.get_mut(&n)) {
                    *seen = true;
                }
            }
            self.died_since_loss(&n);
            self.dirty = true;
        }
        for gi in 0..self.groups.len() {
            let name = &self.cfg.groups[gi].name;
            let lapsed = self.groups[gi].avoid_until.is_some_and(|t| t <= now);
            if lapsed && !self.peers.values().any(|p| p.state.holds.contains(name)) {
                info!(group = %name, "retrying the group here after an earlier failure");
                let g = &mut self.groups[gi];
                g.avoid = None;
                g.avoid_until = None;
                self.dirty = true;
            }
        }
        for (gi, g) in self.groups.iter_mut().enumerate() {
            if g.state == LocalState::Failed && g.retry_at.is_some_and(|t| t <= now) {
                g.retry_at = None;
                g.state = LocalState::Stopping;
                self.outputs
                    .push(Output::Stop(self.cfg.groups[gi].name.clone()));
            }
        }
        self.reconcile(now);
        self.check_double_holds();
        if now >= self.next_announce {
            self.dirty = true;
        }
        if std::mem::take(&mut self.dirty) {
            self.reply_to.clear();
            self.announce(None);
            let waiting = self.groups.iter().any(|g| g.state == LocalState::Waiting);
            let t = &self.cfg.timers;
            self.next_announce = now
                + if waiting {
                    t.claim_retry
                } else {
                    t.announce_interval
                };
        } else {
            for to in std::mem::take(&mut self.reply_to) {
                self.announce(Some(to));
            }
        }
        if let Some(t) = self.settle_until(now) {
            self.next_announce = self.next_announce.min(t);
        }
    }

    /// A group running here that a peer newly announces as held and started is checked
    /// against the provider at once ([`Output::Verify`]), once per peer and hold: a peer
    /// announces as soon as its start completed, so the check sees the resource where it
    /// really is (checked while the peer's assignment was still under way, it confirmed). Without
    /// it a holder that was frozen past `dead_after` and taken over, whose post-thaw check
    /// ran before the taker's assignment landed, went on reporting the group running until
    /// its next regular monitor (up to `monitor_interval`). Groups whose monitors cannot see
    /// another server's hold (LSB/OCF only) confirm, and configuration order decides.
    fn check_double_holds(&mut self) {
        for (g, spec) in self.groups.iter_mut().zip(&self.cfg.groups) {
            if g.state != LocalState::Running || g.lost {
                g.verified_against.clear();
                continue;
            }
            let holders: BTreeSet<&String> = self
                .peers
                .iter()
                .filter(|(_, p)| {
                    p.state.holds.contains(&spec.name) && !p.state.starting.contains(&spec.name)
                })
                .map(|(n, _)| n)
                .collect();
            // A peer that stopped holding (or died) and holds again is a new conflict.
            g.verified_against.retain(|n| holders.contains(n));
            let new: Vec<String> = holders
                .into_iter()
                .filter(|n| !g.verified_against.contains(*n))
                .cloned()
                .collect();
            if new.is_empty() {
                continue;
            }
            warn!(group = %spec.name, peers = ?new, "a peer announces holding a group running here; checking it against the provider");
            g.verified_against.extend(new);
            self.outputs.push(Output::Verify(spec.name.clone()));
        }
    }

    fn announcement(&self) -> Announce {
        let names = |f: &dyn Fn(&LocalGroup) -> bool| -> BTreeSet<String> {
            self.groups
                .iter()
                .zip(&self.cfg.groups)
                .filter(|(g, _)| f(g))
                .map(|(_, s)| s.name.clone())
                .collect()
        };
        Announce {
            inc: self.inc,
            seq: self.seq,
            standby: self.standby,
            healthy: self.healthy,
            holds: names(&|g| g.holds()),
            claims: names(&|g| g.state == LocalState::Waiting),
            starting: names(&|g| g.state == LocalState::Starting && g.holds()),
            avoid: names(&|g| g.avoid.is_some()),
            pins: names(&|g| g.pinned),
            seen: self
                .peers
                .iter()
                .map(|(n, p)| (n.clone(), (p.state.inc, p.state.seq)))
                .collect(),
        }
    }

    fn announce(&mut self, to: Option<String>) {
        if !self.connected {
            return;
        }
        self.seq += 1;
        for g in &mut self.groups {
            let started = g.holds() && g.state != LocalState::Starting;
            g.held_seq = match (started, g.held_seq) {
                (true, 0) => self.seq,
                (true, s) => s,
                (false, _) => 0,
            };
        }
        match Message::State(self.announcement()).encode() {
            Ok(payload) => self.outputs.push(Output::Send { to, payload }),
            // Only a configuration with very many or very long group names gets here.
            Err(e) => warn!(error = %e, "cannot announce this node's state"),
        }
    }

    pub fn status(&self, now: Instant) -> Status {
        let quorate = self.connected && self.quorate;
        let groups = (0..self.groups.len())
            .map(|gi| {
                let nodes = self.node_views(gi, now);
                let g = &self.groups[gi];
                let name = |i: usize| self.cfg.nodes[i].0.clone();
                GroupStatus {
                    name: self.cfg.groups[gi].name.clone(),
                    state: g.state,
                    desired: self.desired(gi, now).map(name),
                    holder: self.holder(gi, now).map(name),
                    not_candidate_reason: match &g.avoid {
                        _ if !self.connected => Some("no connection to membership".to_owned()),
                        _ if g.lost_to.is_some() => Some(
                            "lost to another server; not claimed until its holder is heard from"
                                .to_owned(),
                        ),
                        Some(why) if !self.standby => Some(why.clone()),
                        _ => placement::not_candidate_reason(&nodes[self.local_idx], quorate)
                            .map(str::to_owned),
                    },
                    last_error: g.last_error.clone(),
                }
            })
            .collect();
        let nodes = self
            .cfg
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                if i == self.local_idx {
                    let a = self.announcement();
                    NodeStatus {
                        name: name.clone(),
                        alive: self.connected,
                        announced: true,
                        standby: a.standby,
                        healthy: a.healthy,
                        holds: a.holds.into_iter().collect(),
                    }
                } else {
                    let p = self.peers.get(name);
                    NodeStatus {
                        name: name.clone(),
                        alive: self.alive.contains_key(name),
                        announced: p.is_some(),
                        standby: p.is_some_and(|p| p.state.standby),
                        healthy: p.is_some_and(|p| p.state.healthy),
                        holds: p
                            .map(|p| p.state.holds.iter().cloned().collect())
                            .unwrap_or_default(),
                    }
                }
            })
            .collect();
        Status {
            connected: self.connected,
            quorate: self.quorate,
            standby: self.standby,
            healthy: self.healthy,
            nodes,
            groups,
            bad_messages: self.bad_messages,
        }
    }
}
