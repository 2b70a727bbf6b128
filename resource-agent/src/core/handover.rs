//! The handover protocol between the agents, and the state of each group on this node.
//!
//! Inputs: membership's events (deaths, leaves, quorum), announcements from the other
//! nodes' agents (carried by membership's `Send`/`Subscribe` on [`super::TOPIC`]), results
//! of local agent actions, health, and operator commands. Outputs: start/stop a group,
//! messages to send, persist standby.
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
//!   as held stays held for [`super::Config::dead_after`] (membership's `dead_after`): its
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
use std::collections::BTreeSet;

use tandem_config::{Failback, Role};
use tracing::{debug, info, warn};

use super::events::{ActionRecord, Cause, GroupChange, Why};
use super::placement::{self, GroupView, NodeView};
use super::{
    AgentOutcome, Announce, Core, LocalGroup, LocalState, Message, Output, Peer, StartCause, Time,
};

impl Core {
    /// Leaves group `gi` to other nodes for a while after a failure here.
    pub(super) fn fail_here(&mut self, gi: usize, now: Time, why: String) {
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

    pub(super) fn reject(&mut self, from: &str, why: &dyn std::fmt::Display) {
        self.bad_messages += 1;
        // Rate-limited: the first and then every 100th.
        if self.bad_messages % 100 == 1 {
            warn!(from = %from, error = %why, rejected = self.bad_messages, "message rejected");
        }
    }

    pub(super) fn on_message(&mut self, now: Time, from: &str, generation: u64, payload: &[u8]) {
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
            Message::Takeover { node, group } => {
                let Some(gi) = self.group_idx(&group).filter(|_| node == self.cfg.local) else {
                    return self.reject(from, &"takeover request for another node or group");
                };
                match self.pin_here(gi) {
                    Ok(()) => {
                        info!(from = %from, group = %group, "released there: taking the group over")
                    }
                    Err(e) => {
                        warn!(from = %from, group = %group, error = %e, "released there, but this node cannot take the group over")
                    }
                }
            }
        }
    }

    /// A result of the group's worker; `false` when it changes nothing the handover needs
    /// to act on (a check that confirmed, a monitor failure restarted here).
    pub(super) fn on_agent(
        &mut self,
        now: Time,
        group: &str,
        outcome: AgentOutcome,
        actions: Vec<ActionRecord>,
    ) -> bool {
        let Some(gi) = self.group_idx(group) else {
            warn!(group = %group, "result for an unknown group ignored");
            return false;
        };
        // Any result of the worker (the check a stall or an outage asked for, or any later
        // monitor, start or stop) says what runs here: no longer unconfirmed.
        let was_unconfirmed = std::mem::take(&mut self.groups[gi].unconfirmed);
        match outcome {
            AgentOutcome::Verified => {
                if was_unconfirmed {
                    info!(group = %group, "group confirmed running here");
                } else {
                    debug!(group = %group, "group still running here");
                }
                return false;
            }
            AgentOutcome::MonitorFailed { reason } => {
                return self.monitor_failed(now, gi, reason, actions);
            }
            AgentOutcome::Lost { reason } => {
                self.lost(gi, reason, now, actions);
                return true;
            }
            AgentOutcome::Restarted => {
                info!(group = %group, "group restarted here");
                if self.groups[gi].state == LocalState::Running {
                    let peer = None;
                    self.emit_group(
                        gi,
                        GroupChange::Running,
                        Cause::Monitor,
                        peer,
                        None,
                        None,
                        actions,
                    );
                }
                return false;
            }
            AgentOutcome::RestartFailed { reason } => {
                return self.restart_failed(now, gi, reason, actions);
            }
            AgentOutcome::Stopped => self.groups[gi].restarts.reset(),
            _ => {}
        }
        let max = self.cfg.timers.stop_retry_max;
        let first_delay = self.cfg.timers.stop_retry;
        if let (LocalState::Starting, AgentOutcome::StartFailed { reason, .. }) =
            (self.groups[gi].state, &outcome)
        {
            self.fail_here(gi, now, format!("start failed: {reason}"));
        }
        let g = &mut self.groups[gi];
        let mut why = Why::default().actions(actions);
        let next = match (g.state, outcome) {
            (LocalState::Starting, AgentOutcome::Started) => {
                info!(group = %group, "group running");
                g.last_error = None;
                g.failures = 0;
                LocalState::Running
            }
            (LocalState::Starting, AgentOutcome::StartFailed { clean, reason }) => {
                warn!(group = %group, clean, reason = %reason, "group failed to start; giving it up here");
                why = why.because(format!("start failed: {reason}"));
                g.last_error = Some(reason);
                if clean {
                    LocalState::Stopped
                } else {
                    g.retry_at = Some(now + g.retry_delay);
                    LocalState::Failed
                }
            }
            (LocalState::Stopping | LocalState::Failed, AgentOutcome::Stopped) => {
                info!(group = %group, "group stopped");
                g.lost = false;
                g.retry_at = None;
                g.retry_delay = first_delay;
                LocalState::Stopped
            }
            (LocalState::Stopping | LocalState::Failed, AgentOutcome::StopFailed { reason }) => {
                warn!(group = %group, reason = %reason, retry_in = ?g.retry_delay, "group failed to stop; still held, retrying");
                // Part of it may still run here: held again, whatever was lost.
                g.lost = false;
                why = why.because(format!("stop failed: {reason}"));
                g.last_error = Some(reason);
                g.retry_at = Some(now + g.retry_delay);
                g.retry_delay = (g.retry_delay * 2).min(max);
                LocalState::Failed
            }
            (state, outcome) => {
                warn!(group = %group, ?state, ?outcome, "unexpected agent result ignored");
                return true;
            }
        };
        self.set_state(gi, next, now, why);
        self.dirty = true;
        true
    }

    pub(super) fn stale(&self, p: &Peer, now: Time) -> bool {
        now >= p.last_heard + self.cfg.timers.peer_stale_after
    }

    /// A peer whose flags and claims count: alive, announced, not silent for too long.
    pub(super) fn live_peer(&self, name: &str, now: Time) -> Option<&Peer> {
        self.alive.get(name)?;
        self.peers.get(name).filter(|p| !self.stale(p, now))
    }

    pub(super) fn node_views(&self, gi: usize, now: Time) -> Vec<NodeView<'_>> {
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
    pub(super) fn holder(&self, gi: usize, now: Time) -> Option<usize> {
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

    pub(super) fn pinned(&self, gi: usize, now: Time) -> Option<usize> {
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

    pub(super) fn desired(&self, gi: usize, now: Time) -> Option<usize> {
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
    pub(super) fn settle_until(&self, now: Time) -> Option<Time> {
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

    pub(super) fn acked(&self, gi: usize, now: Time) -> bool {
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

    pub(super) fn reconcile(&mut self, now: Time) {
        let settled = self.settle_until(now).is_none();
        for gi in 0..self.groups.len() {
            let local_wanted = self.desired(gi, now) == Some(self.local_idx);
            let name = self.cfg.groups[gi].name.clone();
            let others_hold = self.peers.values().any(|p| p.state.holds.contains(&name));
            let earlier_claim = self.cfg.nodes[..self.local_idx].iter().any(|(n, _)| {
                self.peers
                    .get(n)
                    .is_some_and(|p| !self.stale(p, now) && p.state.claims.contains(&name))
            });
            let state = self.groups[gi].state;
            let mut why = Why::default();
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
                    if self.late.is_empty()
                        && self.acked(gi, now)
                        && self.fence_blocks(gi, now).is_none()
                    {
                        self.start_here(gi);
                        why = Why::cause(self.start_cause(gi));
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
                LocalState::Waiting
                    if self.acked(gi, now) && self.fence_blocks(gi, now).is_none() =>
                {
                    self.start_here(gi);
                    why = Why::cause(self.start_cause(gi));
                    LocalState::Starting
                }
                LocalState::Running if self.connected && !local_wanted => {
                    why = self.stop_cause(gi, now);
                    self.outputs.push(Output::Stop(name.clone()));
                    self.groups[gi].pinned = false;
                    LocalState::Stopping
                }
                s => s,
            };
            if next != state {
                info!(group = %name, from = ?state, to = ?next, "group state");
                self.set_state(gi, next, now, why);
                self.dirty = true;
            }
        }
    }

    pub(super) fn step(&mut self, now: Time) {
        self.last_step = now;
        let grace = self.cfg.dead_after;
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
        for gi in 0..self.groups.len() {
            let g = &mut self.groups[gi];
            if g.state == LocalState::Failed && g.retry_at.is_some_and(|t| t <= now) {
                g.retry_at = None;
                let why = Why::cause(Cause::Retry).because("retrying the failed stop");
                self.set_state(gi, LocalState::Stopping, now, why);
                self.outputs
                    .push(Output::Stop(self.cfg.groups[gi].name.clone()));
            }
        }
        self.reconcile(now);
        self.plan_fences(now);
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

    /// Starts group `gi` here, saying why it comes here.
    fn start_here(&mut self, gi: usize) {
        let name = self.cfg.groups[gi].name.clone();
        let cause = match &self.groups[gi].last_holder {
            None => StartCause::Initial,
            Some(h) if self.alive.contains_key(h) => StartCause::Handover,
            Some(_) => StartCause::Failover,
        };
        info!(group = %name, cause = cause.as_str(), previous = ?self.groups[gi].last_holder, "starting group here");
        self.outputs.push(Output::Start { group: name, cause });
    }

    /// Remembers who holds each group elsewhere, for the cause of a later start here.
    pub(super) fn note_holders(&mut self, now: Time) {
        for gi in 0..self.groups.len() {
            let holder = self.holder(gi, now);
            self.note_moved(gi, holder);
            match holder {
                Some(i) if i != self.local_idx => {
                    self.groups[gi].last_holder = Some(self.cfg.nodes[i].0.clone());
                }
                // Held here: a later start here follows our own stop, not someone else's.
                Some(_) => self.groups[gi].last_holder = None,
                // Nobody (e.g. the holder died): keep the last one for the start to come.
                None => {}
            }
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
    pub(super) fn check_double_holds(&mut self) {
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
            // Reported starting until the provider confirms it here (a loss stops it).
            g.unconfirmed = true;
            self.outputs.push(Output::Verify(spec.name.clone()));
        }
    }

    pub(super) fn announcement(&self) -> Announce {
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

    pub(super) fn announce(&mut self, to: Option<String>) {
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
        match Message::State(self.announcement()).encode_in(self.form) {
            Ok(payload) => self.outputs.push(Output::Send { to, payload }),
            // Never: `Core::new` refused a configuration whose worst case does not fit.
            Err(e) => warn!(error = %e, "cannot announce this node's state"),
        }
    }
}
