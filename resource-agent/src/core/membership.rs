//! Membership's events as the core reads them: who is alive (and late), who died or left,
//! quorum; and the loss of a group to another server, which only membership's verdicts
//! resolve.
use std::collections::BTreeMap;

use tandem_config::Role;
use tracing::{debug, info, warn};

use super::events::{ActionRecord, Cause, Why};
use super::{
    Core, DeathReason, LocalState, MemberNode, MemberState, Membership, Output, Quorum, Time,
};

impl Core {
    /// A monitor found group `gi` running on another server: stopped here, not restarted,
    /// not claimed again until every node it may have gone to is accounted for.
    pub(super) fn lost(
        &mut self,
        gi: usize,
        reason: String,
        now: Time,
        actions: Vec<ActionRecord>,
    ) {
        let group = self.cfg.groups[gi].name.clone();
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
        g.pinned = false;
        g.last_error = Some(format!("lost: {reason}"));
        let why = Why::cause(Cause::Monitor)
            .because(format!("found on another server: {reason}"))
            .actions(actions);
        self.set_state(gi, LocalState::Stopping, now, why);
        self.outputs.push(Output::Stop(group));
        self.dirty = true;
    }

    pub(super) fn on_membership(&mut self, now: Time, m: Membership) {
        match m {
            Membership::Snapshot { quorum, nodes } => self.on_snapshot(now, quorum, nodes),
            Membership::NodeUp { node, generation } => {
                self.late.remove(&node);
                self.node_up(now, &node, generation);
            }
            Membership::NodeLate { node } => {
                self.late.insert(node);
            }
            Membership::NodeDead {
                node,
                generation,
                reason,
            } => {
                self.late.remove(&node);
                self.node_dead(now, &node, generation, reason);
                // Membership reports the quorum loss a death causes as a later event. Acting
                // on the death with the old quorum in between let a node cut off from the
                // majority start the group (and move the IP) for a moment: quorum is lost
                // here at once when the votes left are too few; only membership's own event
                // raises it again.
                let votes = 1 + self.alive.len() as u32;
                if self.quorate && self.quorum_needed.is_some_and(|n| votes < n) {
                    info!(votes, "quorum lost with this death");
                    self.quorate = false;
                }
            }
            Membership::QuorumChanged(q) => self.set_quorum(q),
        }
    }

    fn set_quorum(&mut self, q: Quorum) {
        if self.quorate != q.quorate {
            info!(quorate = q.quorate, "quorum changed");
            self.quorate = q.quorate;
        }
        self.quorum_needed = Some(q.needed);
    }

    /// The first news after (re)connecting: the whole view. A node that left before we
    /// connected is just dead here.
    fn on_snapshot(&mut self, now: Time, quorum: Quorum, nodes: Vec<MemberNode>) {
        if !self.connected {
            info!(quorate = quorum.quorate, "membership view received");
            self.dirty = true;
        }
        self.connected = true;
        self.set_quorum(quorum);
        self.late = nodes
            .iter()
            .filter(|n| n.state == MemberState::Late)
            .map(|n| n.name.clone())
            .collect();
        for n in nodes {
            match n.state {
                MemberState::Up | MemberState::Late => self.node_up(now, &n.name, n.generation),
                MemberState::Dead => {
                    self.node_dead(now, &n.name, n.generation, DeathReason::Silent)
                }
            }
        }
    }

    /// Membership shows `node` alive at `generation`.
    fn node_up(&mut self, now: Time, node: &str, generation: u64) {
        if node == self.cfg.local || self.node_idx(node).is_none() {
            return;
        }
        if !self.late.contains(node) {
            self.seen_alive_since_loss(node);
        }
        self.note_alive(node);
        match self.alive.get(node) {
            Some((g, _)) if *g == generation => {}
            known => {
                info!(node = %node, generation, new_incarnation = known.is_some(), "node up");
                // Alive again (a healed partition keeps its generation): its messages count
                // again; those of older incarnations still do not.
                self.dead_gen
                    .insert(node.to_owned(), generation.saturating_sub(1));
                self.alive.insert(node.to_owned(), (generation, now));
                // Membership's stream to a new incarnation starts empty: tell it.
                self.reply_to.insert(node.to_owned());
            }
        }
        if self.left_at.remove(node).is_some() {
            info!(node = %node, "node back after leaving; what it holds stays held");
        }
    }

    /// Membership declared `node` dead at `generation`, for `reason` (`Left`: by a clean
    /// shutdown).
    fn node_dead(&mut self, now: Time, node: &str, generation: u64, reason: DeathReason) {
        let left = reason == DeathReason::Left;
        if node == self.cfg.local
            || self.node_idx(node).is_none()
            || self.left_at.contains_key(node)
        {
            return;
        }
        let was_alive = self.alive.remove(node).is_some();
        self.note_death(now, node, generation, reason, was_alive);
        if was_alive && left {
            let dead = self.dead_gen.entry(node.to_owned()).or_default();
            *dead = (*dead).max(generation);
            // Its agent keeps running, and holding, while membership restarts (`systemctl
            // restart`): what it announced as held stays held for `dead_after`. Its claims
            // are void (a disconnected agent starts nothing).
            let holds = self.peers.get_mut(node).is_some_and(|p| {
                p.state.claims.clear();
                !p.state.holds.is_empty()
            });
            self.dirty = true;
            if holds {
                info!(node = %node, generation, grace = ?self.cfg.dead_after, "node left; its groups stay held unless it does not come back in time");
                self.left_at.insert(node.to_owned(), now);
                return;
            }
        }
        // Only membership's verdict frees what a node held.
        let freed = self
            .peers
            .get(node)
            .is_some_and(|p| p.generation <= generation);
        if freed {
            self.peers.remove(node);
        }
        let dead = self.dead_gen.entry(node.to_owned()).or_default();
        *dead = (*dead).max(generation);
        if was_alive || freed {
            info!(node = %node, generation, "node dead; its groups are free");
            self.dirty = true;
        }
        self.died_since_loss(node);
    }

    /// Membership shows `node` alive (not late): a later death of it is a new one.
    pub(super) fn seen_alive_since_loss(&mut self, node: &str) {
        for g in &mut self.groups {
            if let Some(seen) = g.lost_to.as_mut().and_then(|m| m.get_mut(node)) {
                *seen = true;
            }
        }
    }

    /// `node` died: a group lost while it may hold it is free again if membership had
    /// shown it alive since the loss (a new death, not the partition behind the loss).
    pub(super) fn died_since_loss(&mut self, node: &str) {
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
    pub(super) fn clear_suspect(&mut self, gi: usize, node: &str, why: &str) {
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
}
