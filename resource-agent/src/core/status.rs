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
        }
    }
}
