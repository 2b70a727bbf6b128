//! Membership's events as the core reads them: who is alive (and late), who died or left,
//! quorum; and the loss of a group to another server, which only membership's verdicts
//! resolve.
use std::collections::{BTreeMap, BTreeSet};

use tandem_config::Role;
use tracing::{debug, info, warn};

use super::{Core, LocalState, MembershipView, Output, Time};

impl Core {
    pub(super) fn lost(&mut self, group: &str, reason: String) {
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

    pub(super) fn on_view(&mut self, now: Time, view: MembershipView) {
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
