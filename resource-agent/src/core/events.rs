//! The agent's events: what happened to a group here (starting, running, stopping, stopped,
//! failed, restarting) or where it went (moved), with the cause, the time it took and the
//! agents' actions (the provider call among them) with their durations.
//!
//! Every change of a group's state here goes through [`Core::set_state`], which emits the
//! event as an [`Output::Event`]: the shell stamps it (sequence, wall clock) and streams it
//! to watchers (`Agent/Watch`), deriving nothing itself. Fences (`fence.rs`) emit
//! [`FenceEvent`]s the same way.
use std::time::Duration;

use tracing::debug;

use super::{Core, LocalState, Output, Time};

/// One event of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Group(GroupEvent),
    Fence(FenceEvent),
}

/// What happened to a fence of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceChange {
    /// The power-off was sent (one attempt).
    Started,
    /// The provider says the peer is off.
    Done,
    /// The attempt failed; retried after `retry_in`.
    Failed,
    /// Not needed any more (the peer came back, or another member still hears it).
    Abandoned,
}

/// A fence of a peer by this node: who, why, the provider call and how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceEvent {
    /// The peer powered off.
    pub node: String,
    pub change: FenceChange,
    /// Why, in words ("declared dead: silent on every link").
    pub reason: String,
    /// 1 for the first attempt of this death.
    pub attempt: u32,
    /// The provider call, e.g. "digitalocean power_off".
    pub call: Option<&'static str>,
    /// Done, failed: how long the provider call took.
    pub took: Option<Duration>,
    /// From the peer's death to this event.
    pub since_death: Duration,
    /// Done: what the provider did.
    pub detail: Option<String>,
    /// Failed: why; abandoned: why it is not needed.
    pub error: Option<String>,
    /// Failed: until the next attempt.
    pub retry_in: Option<Duration>,
}

/// What happened to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupChange {
    /// Its start here began.
    Starting,
    /// Its start here ended well (or a restart here did).
    Running,
    /// Its stop here began.
    Stopping,
    /// Its stop here ended.
    Stopped,
    /// A start or a stop here failed (the state says what is left).
    Failed,
    /// A monitor failed; the group is restarted here after a delay.
    Restarting,
    /// Another node holds it now.
    Moved,
}

impl GroupChange {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupChange::Starting => "starting",
            GroupChange::Running => "running",
            GroupChange::Stopping => "stopping",
            GroupChange::Stopped => "stopped",
            GroupChange::Failed => "failed",
            GroupChange::Restarting => "restarting",
            GroupChange::Moved => "moved",
        }
    }
}

/// Why a group starts, stops or moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its holder died.
    Failover,
    /// Its holder is alive and let it go (placement: failback, a better candidate).
    Handover,
    /// An operator's command: standby, takeover, release.
    Operator,
    /// A monitor (or a start) failed, or found the resource on another server.
    Monitor,
    /// This node's health checks fail.
    Health,
    /// Nobody else was known to hold it (cluster start, or it was held here before).
    Initial,
    /// A retry after an earlier failure here (a start after the backoff, a stop again).
    Retry,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Failover => "failover",
            Cause::Handover => "handover",
            Cause::Operator => "operator",
            Cause::Monitor => "monitor",
            Cause::Health => "health",
            Cause::Initial => "initial",
            Cause::Retry => "retry",
        }
    }
}

/// One action of an agent of the group, as the group's worker ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    /// The agent's display name, e.g. "reserved-ip 45.55.96.8".
    pub agent: String,
    /// "start", "stop" or "monitor".
    pub action: String,
    /// The provider call behind it, e.g. "digitalocean assign"; none for local agents.
    pub call: Option<String>,
    pub ok: bool,
    pub timed_out: bool,
    pub took: Duration,
    /// The error or the agent's detail; never a secret.
    pub message: String,
}

/// An event of one group, as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEvent {
    pub group: String,
    pub change: GroupChange,
    pub cause: Cause,
    /// The node it concerns: this node, or the new holder of a [`GroupChange::Moved`].
    pub node: String,
    /// The other node involved: the previous holder (starting, running, moved), the node
    /// placement moves it to (stopping), when known.
    pub peer: Option<String>,
    /// The state here after the event.
    pub state: LocalState,
    /// In words: an error, what an operator did.
    pub reason: Option<String>,
    /// Since the start or stop began (running, stopped, failed); the delay before a restart.
    pub took: Option<Duration>,
    /// The agents' actions behind the change, in order.
    pub actions: Vec<ActionRecord>,
}

/// Why a group's state changes, for its event.
#[derive(Debug, Clone, Default)]
pub(super) struct Why {
    pub(super) cause: Option<Cause>,
    pub(super) reason: Option<String>,
    pub(super) actions: Vec<ActionRecord>,
}

impl Why {
    pub(super) fn cause(cause: Cause) -> Why {
        Why {
            cause: Some(cause),
            ..Why::default()
        }
    }

    pub(super) fn because(mut self, reason: impl Into<String>) -> Why {
        self.reason = Some(reason.into());
        self
    }

    pub(super) fn actions(mut self, actions: Vec<ActionRecord>) -> Why {
        self.actions = actions;
        self
    }
}

impl Core {
    /// Every change of a group's state here goes through this one place, which emits the
    /// group's event (see the module doc).
    pub(super) fn set_state(&mut self, gi: usize, next: LocalState, now: Time, why: Why) {
        let prev = self.groups[gi].state;
        self.groups[gi].state = next;
        if prev == next {
            return;
        }
        let g = &mut self.groups[gi];
        let took = Some(now.saturating_sub(g.since));
        let (change, took) = match (prev, next) {
            // A claim and its withdrawal change nothing that runs.
            (_, LocalState::Waiting) | (LocalState::Waiting, LocalState::Stopped) => {
                debug!(group = %self.cfg.groups[gi].name, ?prev, ?next, "claim");
                return;
            }
            (_, LocalState::Starting) => (GroupChange::Starting, None),
            (_, LocalState::Stopping) => (GroupChange::Stopping, None),
            (LocalState::Starting, LocalState::Running) => (GroupChange::Running, took),
            (LocalState::Starting, _) => (GroupChange::Failed, took),
            (_, LocalState::Failed) => (GroupChange::Failed, took),
            (_, LocalState::Stopped) => (GroupChange::Stopped, took),
            (_, LocalState::Running) => (GroupChange::Running, None),
        };
        let cause = why.cause.unwrap_or(g.cause);
        let peer = match change {
            GroupChange::Starting => g.last_holder.clone(),
            // Where it goes, as placement says now.
            GroupChange::Stopping => self.desired(gi, now).map(|i| self.cfg.nodes[i].0.clone()),
            // The start's previous holder (running); nothing for the end of a stop.
            _ => g.peer.clone().filter(|_| change == GroupChange::Running),
        }
        .filter(|p| *p != self.cfg.local);
        if matches!(change, GroupChange::Starting | GroupChange::Stopping) {
            let g = &mut self.groups[gi];
            g.since = now;
            g.cause = cause;
            g.peer = peer.clone();
        }
        self.emit_group(gi, change, cause, peer, took, why.reason, why.actions);
    }

    /// Emits an event of group `gi` on this node.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit_group(
        &mut self,
        gi: usize,
        change: GroupChange,
        cause: Cause,
        peer: Option<String>,
        took: Option<Duration>,
        reason: Option<String>,
        actions: Vec<ActionRecord>,
    ) {
        let node = self.cfg.local.clone();
        self.emit(GroupEvent {
            group: self.cfg.groups[gi].name.clone(),
            change,
            cause,
            node,
            peer,
            state: self.groups[gi].state,
            reason,
            took,
            actions,
        });
    }

    fn emit(&mut self, e: GroupEvent) {
        self.outputs.push(Output::Event(Event::Group(e)));
    }

    /// The event for watchers and, for an attempt's outcome, the notice to every node.
    pub(super) fn emit_fence(&mut self, e: FenceEvent) {
        if let Some(n) = super::notice::FenceNotice::from_event(&self.cfg.local, &e) {
            self.outputs.push(Output::Notice(n.encode()));
        }
        self.outputs.push(Output::Event(Event::Fence(e)));
    }

    /// Why group `gi`, running here, stops now that placement wants it elsewhere.
    pub(super) fn stop_cause(&self, gi: usize, now: Time) -> Why {
        let g = &self.groups[gi];
        if let Some(why) = &g.avoid {
            return Why::cause(Cause::Monitor).because(why.clone());
        }
        if self.standby {
            return Why::cause(Cause::Operator).because("this node went to standby");
        }
        if let Some(p) = self.pinned(gi, now).filter(|p| *p != self.local_idx) {
            let by = &self.cfg.nodes[p].0;
            return Why::cause(Cause::Operator).because(format!(
                "an operator moved it to {by} (takeover there or release here)"
            ));
        }
        if !self.healthy {
            return Why::cause(Cause::Health).because("this node's health checks fail");
        }
        Why::cause(Cause::Handover).because("placement prefers another node (failback)")
    }

    /// Why group `gi` starts here.
    pub(super) fn start_cause(&self, gi: usize) -> Cause {
        let g = &self.groups[gi];
        match &g.last_holder {
            _ if g.pinned => Cause::Operator,
            _ if g.failures > 0 => Cause::Retry,
            None => Cause::Initial,
            Some(h) if self.alive.contains_key(h) => Cause::Handover,
            Some(_) => Cause::Failover,
        }
    }

    /// Emits [`GroupChange::Moved`] when group `gi` is seen held by another node than the
    /// last one it was seen on; `holder` is its holder as known now.
    pub(super) fn note_moved(&mut self, gi: usize, holder: Option<usize>) {
        let Some(h) = holder else {
            // Nobody (the holder died, or stopped): the next holder says where it went.
            return;
        };
        let to = self.cfg.nodes[h].0.clone();
        let from = match self.groups[gi].seen_holder.replace(to.clone()) {
            Some(from) if from != to => from,
            _ => return,
        };
        if h == self.local_idx {
            // Started here: the running event says so.
            return;
        }
        let cause = if from == self.cfg.local {
            self.groups[gi].cause
        } else if self.alive.contains_key(&from) {
            Cause::Handover
        } else {
            Cause::Failover
        };
        self.emit(GroupEvent {
            group: self.cfg.groups[gi].name.clone(),
            change: GroupChange::Moved,
            cause,
            node: to,
            peer: Some(from),
            state: self.groups[gi].state,
            reason: None,
            took: None,
            actions: Vec::new(),
        });
    }
}
