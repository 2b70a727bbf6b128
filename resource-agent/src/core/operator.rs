//! Operator commands: standby and online (of this node, or of another by message), takeover
//! and release.
use tracing::info;

use super::placement::{self, GroupView, NodeView};
use super::{Command, CommandError, Core, LocalState, Message, Output, Time};

impl Core {
    /// The groups whose failures here an operator's command forgives, if it succeeds:
    /// bringing this node online forgives all of them, a takeover its group. (The failed
    /// or released groups it forgives too, in `set_local_standby` and `Takeover`.)
    pub(super) fn forgiven_by(&self, cmd: &Command) -> Vec<usize> {
        match cmd {
            Command::Online(node)
                if node
                    .as_deref()
                    .is_none_or(|n| n.is_empty() || n == self.cfg.local) =>
            {
                (0..self.groups.len()).collect()
            }
            Command::Takeover(g) => self.group_idx(g).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Forgets the restarts of these groups here and asks the shell to forget what their
    /// agents counted.
    pub(super) fn forgive(&mut self, groups: &[usize]) {
        for &gi in groups {
            self.groups[gi].restarts.reset();
            self.outputs
                .push(Output::Forgive(self.cfg.groups[gi].name.clone()));
        }
    }

    pub(super) fn apply_command(
        &mut self,
        now: Time,
        cmd: Command,
    ) -> Result<String, CommandError> {
        match cmd {
            Command::Standby(node) => self.set_standby(now, node, true),
            Command::Online(node) => self.set_standby(now, node, false),
            Command::Takeover(group) => {
                let gi = self
                    .group_idx(&group)
                    .ok_or_else(|| CommandError::UnknownGroup(group.clone()))?;
                self.pin_here(gi)?;
                info!(group = %group, "takeover requested");
                Ok(if self.groups[gi].holds() {
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
                let next = self
                    .next_candidate(gi, now)
                    .ok_or_else(|| CommandError::NoOtherCandidate(group.clone()))?;
                let to = self.cfg.nodes[next].0.clone();
                // A one-time move, not a ban: the next candidate takes the group over as by
                // a takeover there (a pin), and this node stays a candidate, so it takes the
                // group back should that node fail.
                let payload = Message::Takeover {
                    node: to.clone(),
                    group: group.clone(),
                }
                .encode()?;
                self.outputs.push(Output::Send {
                    to: Some(to.clone()),
                    payload,
                });
                self.groups[gi].pinned = false;
                self.dirty = true;
                info!(group = %group, to = %to, "release requested");
                Ok(format!(
                    "releasing {group} to {to}; this node still takes it over should {to} fail"
                ))
            }
        }
    }

    /// Pins group `gi` here: a preference for this node, with automatic failback, until the
    /// group moves away (an operator's takeover here, or a release on its holder). An
    /// explicit request forgives an earlier failure here, and a loss: the operator decides
    /// where the group runs.
    pub(super) fn pin_here(&mut self, gi: usize) -> Result<(), CommandError> {
        let me = NodeView {
            name: &self.cfg.local,
            role: self.cfg.nodes[self.local_idx].1,
            up: self.connected,
            standby: self.standby,
            healthy: self.healthy,
        };
        if let Some(reason) = placement::not_candidate_reason(&me, self.connected && self.quorate) {
            return Err(CommandError::NotCandidate(reason.to_owned()));
        }
        let g = &mut self.groups[gi];
        g.lost_to = None;
        g.avoid = None;
        g.avoid_until = None;
        g.failures = 0;
        g.pinned = true;
        self.dirty = true;
        Ok(())
    }

    /// Where group `gi` goes when this node gives it up: placement without this node (and
    /// without any pin: the release decides).
    fn next_candidate(&self, gi: usize, now: Time) -> Option<usize> {
        let mut nodes = self.node_views(gi, now);
        nodes[self.local_idx].standby = true;
        let spec = &self.cfg.groups[gi];
        let view = GroupView {
            prefer: spec.prefer.as_deref(),
            failback: spec.failback,
            holder: None,
        };
        placement::desired_holder(&nodes, self.connected && self.quorate, &view)
            .filter(|i| *i != self.local_idx)
    }

    pub(super) fn set_standby(
        &mut self,
        now: Time,
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
    pub(super) fn stranded_groups(&self, now: Time) -> Vec<String> {
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

    pub(super) fn set_local_standby(&mut self, on: bool) {
        if on != self.standby {
            info!(standby = on, "standby changed");
            self.standby = on;
            self.outputs.push(Output::PersistStandby(on));
            self.dirty = true;
        }
        if !on {
            // Bringing a node online puts it back to its configured role: its failed groups
            // are forgiven and its pins (takeover here, release elsewhere) cleared.
            for g in &mut self.groups {
                g.avoid_until = None;
                g.failures = 0;
                if g.avoid.take().is_some() || std::mem::take(&mut g.pinned) {
                    self.dirty = true;
                }
            }
        }
    }
}
