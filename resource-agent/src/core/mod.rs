//! The resource agent's core: every decision of the agent, sans-IO.
//!
//! One type, [`Core`], fed `now` (a [`Time`]: monotonic time since an arbitrary epoch, as
//! in membership's core) with each [`Input`] or [`Command`], returning [`Output`]s to
//! execute ([`Core::drain_outputs`]) and the next deadline ([`Core::next_deadline`]). It
//! never reads a clock, never touches a socket or a process: the daemon (`crate::daemon`)
//! reads the clock, carries inputs in and executes outputs.
//!
//! Split by concern: [`handover`] (the protocol between the agents and the group states),
//! [`codec`] (its messages), [`placement`] (where a group should run), [`restart`] (the
//! restart policy), `membership` (membership's events as the core reads them), `operator`
//! (standby, online, takeover, release), `status` and [`events`] (what watchers are told).
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tandem_config::{ClusterConfig, Failback, Role};
use tracing::info;

pub mod codec;
pub mod events;
pub mod fence;
pub mod handover;
mod membership;
pub mod notice;
mod operator;
pub mod placement;
pub mod restart;
mod status;
pub mod watch;

pub use events::{ActionRecord, Cause, Event, FenceChange, FenceEvent, GroupChange, GroupEvent};

pub use codec::{
    Announce, CodecError, Form, MAX_PAYLOAD, MESSAGE_VERSION, Message, TOPIC, TooManyGroups,
    worst_case_announcement,
};
pub use fence::{FenceConfig, FencePhase, FenceStatus};
pub use status::{Constraint, ConstraintKind, GroupStatus, NodeStatus, Status};

use restart::{RestartPolicy, RestartTracker};
use watch::{DisconnectWatch, StallWatch};

/// The core's clock: monotonic time since an arbitrary epoch (the daemon's start). Only
/// differences and order matter.
pub type Time = Duration;

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

/// What the core is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub local: String,
    /// Every node, in configuration order.
    pub nodes: Vec<(String, Role)>,
    pub groups: Vec<GroupSpec>,
    pub timers: Timers,
    /// Membership's `dead_after`: how long a peer may wait before taking over from this
    /// node. Sets how long the groups of a node whose membership *left* (clean shutdown)
    /// stay held (a `systemctl restart` of membership is back well within it, and its agent
    /// kept running, and holding, all along), the stall threshold of this process
    /// ([`watch::stall_after`]) and the first check of a membership outage.
    pub dead_after: Duration,
    /// What to do when a running group's monitor fails.
    pub restart: RestartPolicy,
    /// The longest monitor interval of any agent: the longest period of the checks during
    /// a membership outage (past it, the monitors check as often anyway).
    pub longest_monitor: Duration,
}

impl Config {
    pub fn from_cluster(
        cfg: &ClusterConfig,
        local: &str,
        timers: Timers,
        restart: RestartPolicy,
        longest_monitor: Duration,
    ) -> Self {
        Config {
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
            dead_after: cfg.timing.dead_after,
            restart,
            longest_monitor,
        }
    }
}

/// A node's state as membership reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Up,
    /// Alive but silent for longer than `warn_after`: likely the next to be declared dead,
    /// e.g. the rest of the majority when this node is cut off.
    Late,
    /// Dead, or never heard since membership started.
    Dead,
}

/// One node in membership's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberNode {
    pub name: String,
    pub state: MemberState,
    pub generation: u64,
}

/// Membership's quorum as far as the core needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub quorate: bool,
    /// Votes needed for quorum (the local node's own included).
    pub needed: u32,
}

/// Why membership declared a node dead (`NodeDead.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// Silent on every link for `dead_after`.
    Silent,
    /// Never heard within `init_dead`.
    NeverHeard,
    /// Its membership announced a clean shutdown (`REASON_LEFT`).
    Left,
}

/// Membership's news, as its `Watch` stream reports it: a snapshot first after each
/// (re)connection, then one event per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    Snapshot {
        quorum: Quorum,
        nodes: Vec<MemberNode>,
    },
    /// Up, back from late, or a new incarnation (a new generation).
    NodeUp {
        node: String,
        generation: u64,
    },
    NodeLate {
        node: String,
    },
    NodeDead {
        node: String,
        generation: u64,
        reason: DeathReason,
    },
    QuorumChanged(Quorum),
}

/// Result of a group action run by the local agents (the group's worker).
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
    /// A check ([`Output::Verify`]) found every agent running.
    Verified,
    /// A monitor failed (the worker pauses monitoring until told what to do).
    MonitorFailed {
        reason: String,
    },
    /// A monitor found the group's resource running on another server (a reserved IP
    /// assigned elsewhere): it was lost, e.g. taken over while this node was frozen. Not a
    /// failure to restart here: the group stops here and is no longer announced as held,
    /// and placement decides like for any group held elsewhere (it comes back only by a
    /// release there or that node's death, as a failback through the handover).
    Lost {
        reason: String,
    },
    /// The restart asked for ([`Output::Restart`]) ended.
    Restarted,
    RestartFailed {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Membership's snapshot or event, in the order of its `Watch` stream.
    Membership(Membership),
    /// The membership socket is gone (reported again on each failed reconnection).
    Disconnected(String),
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
        /// The agents' actions behind the outcome, in order (for its event).
        actions: Vec<ActionRecord>,
    },
    /// Local health (all checks pass); the same value again is a mere wake-up ([`Input::Tick`]).
    Health(bool),
    /// The result of [`Output::Fence`]: what the provider did, or why it failed.
    Fenced {
        node: String,
        death: u64,
        result: Result<String, String>,
    },
    /// A deadline passed, or the process woke up for something the core does not see:
    /// every wake-up is worth feeding, as it notes a stall of this process.
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
    #[error("{0}")]
    TooLarge(codec::TooManyGroups),
}

/// Why a group starts here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartCause {
    /// The last node known to hold it is dead: a failover.
    Failover,
    /// The last node known to hold it is alive and let it go (failback, takeover, standby).
    Handover,
    /// No other holder was known (cluster start, or it was held here before).
    Initial,
}

impl StartCause {
    pub fn as_str(self) -> &'static str {
        match self {
            StartCause::Failover => "failover",
            StartCause::Handover => "handover",
            StartCause::Initial => "initial",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Start {
        group: String,
        cause: StartCause,
    },
    Stop(String),
    /// Stop and start the group here after `after` (its monitor failed); answered with
    /// [`AgentOutcome::Restarted`] or [`AgentOutcome::RestartFailed`]. A later command for
    /// the group replaces a restart still waiting.
    Restart {
        group: String,
        after: Duration,
    },
    /// Forget the failures the agents of the group counted (an operator intervened).
    Forgive(String),
    /// Send on [`TOPIC`]; `to: None` = every other node.
    Send {
        to: Option<String>,
        payload: Vec<u8>,
    },
    PersistStandby(bool),
    /// Monitor every agent of the group, running here, at once. After a stall of this
    /// process or during a membership outage (the peers may have taken it over meanwhile),
    /// or when a peer newly announces holding it too, its start completed (not in
    /// [`Announce::starting`]): the one of the two that really has the resource confirms it
    /// and the other finds it elsewhere ([`AgentOutcome::Lost`]). Until answered, the
    /// group may be reported starting, not running (see `status`).
    Verify(String),
    /// Power `node` off through the provider and wait until it is off; answered with
    /// [`Input::Fenced`] carrying the same `death`.
    Fence {
        node: String,
        death: u64,
        reason: String,
    },
    /// Something happened that watchers want to know ([`events`]).
    Event(Event),
    /// Send to every other node on [`notice::NOTICE_TOPIC`], which membership keeps on
    /// every node (a fence's outcome, for the whole cluster to see).
    Notice(Vec<u8>),
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
    retry_at: Option<Time>,
    retry_delay: Duration,
    avoid: Option<String>,
    /// When a failure's `avoid` may lapse (none for an operator's release).
    avoid_until: Option<Time>,
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
    /// Running here but not confirmed since a stall, since a takeover became possible
    /// during a membership outage, or since a peer announced holding it too: reported
    /// starting until the check answers.
    unconfirmed: bool,
    /// Restarts here after monitor failures.
    restarts: RestartTracker,
    /// The last other node seen holding the group (kept after it dies), to tell a failover
    /// from a handover when the group starts here.
    last_holder: Option<String>,
    /// The last node seen holding the group, this one included (for the moved event).
    seen_holder: Option<String>,
    /// When the current (or last) start or stop here began, and why (for the events).
    since: Time,
    cause: Cause,
    /// The previous holder of the current start, or where the current stop sends it.
    peer: Option<String>,
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
    last_heard: Time,
}

/// The per-node core of the resource agent.
#[derive(Debug)]
pub struct Core {
    cfg: Config,
    local_idx: usize,
    inc: u64,
    seq: u64,
    connected: bool,
    quorate: bool,
    /// Votes needed for quorum, from membership's latest report.
    quorum_needed: Option<u32>,
    standby: bool,
    healthy: bool,
    started_at: Time,
    /// Alive nodes (membership) with their generation and since when.
    alive: BTreeMap<String, (u64, Time)>,
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
    /// something, and since when: their groups stay held for `dead_after`.
    left_at: BTreeMap<String, Time>,
    groups: Vec<LocalGroup>,
    outputs: Vec<Output>,
    next_announce: Time,
    reply_to: BTreeSet<String>,
    dirty: bool,
    /// `now` of the last step (deadlines at or before it have been handled).
    last_step: Time,
    bad_messages: u64,
    /// Since when membership is unreachable (from the start until the first snapshot).
    disconnected_since: Option<Time>,
    /// The outage has been logged.
    reported_down: bool,
    stall: StallWatch,
    disconnect: DisconnectWatch,
    /// Power a dead peer off before taking its groups (`fencing:`); see [`fence`].
    fencing: Option<FenceConfig>,
    /// Deaths of peers that fencing may answer, and the last fence of each peer.
    deaths: BTreeMap<String, fence::Death>,
    fences: BTreeMap<String, fence::Fence>,
    death_seq: u64,
    /// How announcements are written: fixed by the configuration, so a peer never sees
    /// this node switch forms (see [`codec`]).
    form: Form,
}

impl Core {
    /// `incarnation` must increase on every start of the agent; `running` are the groups
    /// that probing found running here; `standby` is the persisted flag.
    pub fn new(
        cfg: Config,
        incarnation: u64,
        running: &[String],
        standby: bool,
        now: Time,
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
        let names: Vec<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
        let (form, _) =
            codec::check_fits(&codec::peers(&cfg), &names).map_err(CommandError::TooLarge)?;
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
                unconfirmed: false,
                restarts: RestartTracker::new(cfg.restart),
                last_holder: None,
                seen_holder: running.contains(&g.name).then(|| cfg.local.clone()),
                since: now,
                cause: Cause::Initial,
                peer: None,
            })
            .collect();
        // Not connected yet: should membership never come up, the groups probed running
        // here are checked as in any outage.
        let mut disconnect = DisconnectWatch::new(cfg.dead_after, cfg.longest_monitor);
        disconnect.disconnected(now);
        Ok(Core {
            local_idx,
            inc: incarnation,
            seq: 0,
            connected: false,
            quorate: false,
            quorum_needed: None,
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
            disconnected_since: Some(now),
            reported_down: false,
            stall: StallWatch::new(watch::stall_after(cfg.dead_after), now),
            disconnect,
            fencing: None,
            deaths: BTreeMap::new(),
            fences: BTreeMap::new(),
            death_seq: 0,
            form,
            cfg,
        })
    }

    /// Fences dead peers before taking their groups (see [`fence`]); off by default.
    pub fn with_fencing(mut self, fencing: Option<FenceConfig>) -> Self {
        self.fencing = fencing;
        self
    }

    pub fn local(&self) -> &str {
        &self.cfg.local
    }

    /// Everything the machine wants done since the last call.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// When [`Input::Tick`] should be fed next.
    pub fn next_deadline(&self) -> Time {
        let armed = self.runs_here();
        [
            Some(self.handover_deadline()),
            self.stall.next_tick(),
            self.disconnect.next_check(armed),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_announce)
    }

    /// The next deadline of the handover itself.
    fn handover_deadline(&self) -> Time {
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
            d = d.min(*t + self.cfg.dead_after);
        }
        self.fence_deadline().map_or(d, |f| d.min(f))
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

    pub fn handle(&mut self, now: Time, input: Input) {
        self.observe_stall(now);
        match input {
            Input::Membership(m) => {
                self.on_connected(now);
                self.on_membership(now, m);
            }
            Input::Disconnected(reason) => self.on_disconnected(now, &reason),
            Input::Message {
                from,
                generation,
                payload,
            } => self.on_message(now, &from, generation, &payload),
            Input::Fenced {
                node,
                death,
                result,
            } => self.on_fenced(now, &node, death, result),
            Input::Agent {
                group,
                outcome,
                actions,
            } => {
                if !self.on_agent(now, &group, outcome, actions) {
                    self.after_input(now);
                    return;
                }
            }
            Input::Health(h) if h != self.healthy => {
                info!(healthy = h, "local health changed");
                self.healthy = h;
                self.dirty = true;
            }
            Input::Health(_) | Input::Tick => {
                // Only a handover deadline steps the handover: between its deadlines it
                // moves on inputs alone.
                if now < self.handover_deadline() {
                    self.after_input(now);
                    return;
                }
            }
        }
        self.step(now);
        self.after_input(now);
    }

    /// What every entry point ends with: the checks of a membership outage that are due,
    /// the stall watch armed while a group runs or starts here.
    fn after_input(&mut self, now: Time) {
        self.check_disconnected(now);
        self.note_holders(now);
        let armed = self.runs_here();
        self.stall.arm(armed, now);
    }

    pub fn command(&mut self, now: Time, cmd: Command) -> Result<String, CommandError> {
        self.observe_stall(now);
        let forgive = self.forgiven_by(&cmd);
        let result = self.apply_command(now, cmd);
        if result.is_ok() {
            self.forgive(&forgive);
        }
        self.step(now);
        self.after_input(now);
        result
    }
}
