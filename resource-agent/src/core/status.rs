//! What the core tells the operator: per group, its state here, where it should run, who
//! holds it and why this node is not a candidate; per node, its flags as known here.
use std::time::Duration;

use super::placement;
use super::{Core, LocalState, Time};

/// Status of one group as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub name: String,
    /// Running is reported starting while unconfirmed (after a stall, during a membership
    /// outage, or while a peer's hold is checked): it may have been taken over.
    pub state: LocalState,
    pub desired: Option<String>,
    pub holder: Option<String>,
    pub not_candidate_reason: Option<String>,
    pub last_error: Option<String>,
    /// Restarts here within the restart policy's window.
    pub restarts: u32,
    /// What binds the group to a node or keeps it from one, each with the command that
    /// clears it.
    pub constraints: Vec<Constraint>,
    /// Why this node, which should take the group, has not started it yet: the fence of
    /// its last holder (see `fence`).
    pub waiting_for: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintKind {
    /// The group stays on `node` (a takeover there, or a release on its holder) until it
    /// moves away from it; it never holds the group on a node that is not a candidate.
    Pin,
    /// `node` does not take the group (a failure there, or a loss to another server).
    Ban,
}

/// A pin or a ban of a group, as known here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub kind: ConstraintKind,
    pub node: String,
    /// Why, in words.
    pub reason: String,
    /// The command that clears it (it also ends by itself, as `reason` says).
    pub clear: String,
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
    /// How long membership has been unreachable (`None`: connected).
    pub disconnected_for: Option<Duration>,
    pub quorate: bool,
    pub standby: bool,
    pub healthy: bool,
    pub nodes: Vec<NodeStatus>,
    pub groups: Vec<GroupStatus>,
    /// Messages rejected (malformed, wrong version, from unknown nodes).
    pub bad_messages: u64,
    /// The last fence of each peer this node fenced (or tried to).
    pub fences: Vec<super::FenceStatus>,
}

impl Core {
    pub fn status(&self, now: Time) -> Status {
        let quorate = self.connected && self.quorate;
        let groups = (0..self.groups.len())
            .map(|gi| {
                let nodes = self.node_views(gi, now);
                let g = &self.groups[gi];
                let name = |i: usize| self.cfg.nodes[i].0.clone();
                GroupStatus {
                    name: self.cfg.groups[gi].name.clone(),
                    state: match g.state {
                        LocalState::Running if g.unconfirmed => LocalState::Starting,
                        s => s,
                    },
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
                    restarts: g.restarts.restarts(now),
                    constraints: self.constraints(gi, now),
                    waiting_for: matches!(g.state, LocalState::Stopped | LocalState::Waiting)
                        .then(|| self.fence_blocks(gi, now))
                        .flatten()
                        .filter(|_| self.desired(gi, now) == Some(self.local_idx)),
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
            disconnected_for: self.disconnected_since.map(|t| now.saturating_sub(t)),
            quorate: self.quorate,
            standby: self.standby,
            healthy: self.healthy,
            nodes,
            groups,
            bad_messages: self.bad_messages,
            fences: self.fences(now),
        }
    }

    /// The pins and bans of group `gi`: the pin (the newest takeover or release wins, so
    /// at most one counts), this node's own ban with its reason, and the bans the live
    /// peers announce.
    fn constraints(&self, gi: usize, now: Time) -> Vec<Constraint> {
        let group = &self.cfg.groups[gi].name;
        let g = &self.groups[gi];
        let local = &self.cfg.local;
        let mut out = Vec::new();
        if let Some(i) = self.pinned(gi, now) {
            let node = self.cfg.nodes[i].0.clone();
            out.push(Constraint {
                kind: ConstraintKind::Pin,
                reason: format!(
                    "moved there by an operator (takeover there or release on the holder); \
                     lasts until it moves away from {node}"
                ),
                clear: format!("ipctl online {node}"),
                node,
            });
        }
        if g.lost_to.is_some() {
            out.push(Constraint {
                kind: ConstraintKind::Ban,
                node: local.clone(),
                reason: "lost to another server; not claimed again until the node that took it \
                         is heard from or dies"
                    .to_owned(),
                clear: format!("ipctl takeover {group}"),
            });
        }
        if let Some(why) = &g.avoid {
            let until = match g.avoid_until {
                Some(t) => format!(
                    "; retried here in {}s if nobody else holds it",
                    t.saturating_sub(now).as_secs()
                ),
                None => String::new(),
            };
            out.push(Constraint {
                kind: ConstraintKind::Ban,
                node: local.clone(),
                reason: format!("{why}{until}"),
                clear: format!("ipctl online {local}"),
            });
        }
        for (name, _) in &self.cfg.nodes {
            if self
                .live_peer(name, now)
                .is_some_and(|p| p.state.avoid.contains(group))
            {
                out.push(Constraint {
                    kind: ConstraintKind::Ban,
                    node: name.clone(),
                    reason: "failed there; retried there after a backoff if nobody else holds it"
                        .to_owned(),
                    clear: format!("ipctl online {name}"),
                });
            }
        }
        out
    }
}
