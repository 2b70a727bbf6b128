//! Fencing: a peer declared dead is powered off through the provider before this node
//! takes a group from it (configuration `fencing:`; without it nothing here runs).
//!
//! Rules (each decided here, executed by the shell as [`Output::Fence`] and answered with
//! [`Input::Fenced`]):
//! - Only a death by silence counts (`SILENT`, or `NEVER_HEARD` of a peer seen alive before):
//!   a peer that left cleanly is not fenced, and a peer never seen alive since this agent
//!   started (a node still booting) is not either.
//! - Only a member peer is fenced, never this node, and only while this node is connected
//!   and quorate, no other node is late, and it holds a group or is the one placement wants
//!   for one: a node cut off from the majority never fences (the others are late before
//!   they are dead, and the quorum loss follows the first death). Fencing the peer a group runs on is required before
//!   taking that group ([`Core::fence_blocks`]); fencing while holding is what makes the
//!   preferred side win a two-node split (the peer would fence this node otherwise).
//! - A peer that another live member's agent still hears (its announcement acknowledges an
//!   announcement of the peer newer than the last one this node got before the death) is
//!   not fenced: a majority still sees it, this node is the one cut off from it.
//! - Once per death: each death has its own id; a fence that succeeded is not repeated, one
//!   that failed is retried after `retry`, doubling up to `retry_max`, for as long as the
//!   death lasts. A peer that comes back (membership reports it up) ends the attempts; a
//!   power-off already sent is then answered and ignored.
//! - The non-preferred side waits `delay` first: this node is preferred when it is the
//!   preferred node of some group (a group without `prefer` prefers the first member). Of two
//!   nodes that lost each other, the preferred one fences at once and the other, waiting,
//!   is powered off before it fences.
use std::time::Duration;

use tandem_config::Role;
use tracing::{info, warn};

use super::events::{FenceChange, FenceEvent, Why};
use super::{Core, DeathReason, LocalState, Output, Time};

/// The fencing settings the core needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceConfig {
    /// The non-preferred side's wait before fencing.
    pub delay: Duration,
    /// First wait after a failed fence; doubles up to `retry_max`.
    pub retry: Duration,
    pub retry_max: Duration,
    /// The provider call a fence is, for its events ("digitalocean power_off").
    pub call: Option<&'static str>,
}

impl FenceConfig {
    pub fn new(delay: Duration) -> Self {
        FenceConfig {
            delay,
            retry: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            call: None,
        }
    }

    pub fn with_call(self, call: &'static str) -> Self {
        FenceConfig {
            call: Some(call),
            ..self
        }
    }
}

/// A peer's death as the fencing rules need it.
#[derive(Debug, Clone)]
pub(super) struct Death {
    /// Unique per death on this node: what a fence is keyed by.
    pub id: u64,
    pub generation: u64,
    pub reason: DeathReason,
    pub at: Time,
    /// Membership had shown it alive before.
    pub was_alive: bool,
    /// The peer's last announcement (incarnation, seq) this node got before the death.
    pub last_heard: Option<(u64, u64)>,
}

/// Where a fence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencePhase {
    /// Waiting for `delay` (the non-preferred side), or for the conditions to hold.
    Delayed,
    /// The power-off was sent; waiting for its result.
    Running,
    /// The last attempt failed; retried later.
    Failed,
    /// The provider says the peer is off.
    Done,
    /// Not needed any more (the peer came back, or another member still hears it).
    Abandoned,
}

impl FencePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            FencePhase::Delayed => "delayed",
            FencePhase::Running => "fencing",
            FencePhase::Failed => "failed",
            FencePhase::Done => "done",
            FencePhase::Abandoned => "abandoned",
        }
    }
}

/// The last fence of one peer, as this node ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceStatus {
    pub node: String,
    /// Why it is fenced, in words.
    pub reason: String,
    pub phase: FencePhase,
    /// Since the death.
    pub age: Duration,
    /// From the death to the provider's confirmation (or to now while running).
    pub took: Duration,
    pub attempts: u32,
    /// The last failure, or why it was abandoned.
    pub error: Option<String>,
    /// What the provider did (the server, the action).
    pub detail: Option<String>,
    /// When the next attempt goes out (delayed or failed).
    pub next_in: Option<Duration>,
}

#[derive(Debug, Clone)]
pub(super) struct Fence {
    death: u64,
    reason: DeathReason,
    dead_at: Time,
    phase: FencePhase,
    /// The next attempt not before this.
    not_before: Time,
    attempts: u32,
    error: Option<String>,
    detail: Option<String>,
    ended: Option<Time>,
    /// When the current attempt was sent.
    sent: Time,
}

impl Core {
    /// Notes the death of `node` for fencing (`left`: a clean shutdown, never fenced).
    pub(super) fn note_death(
        &mut self,
        now: Time,
        node: &str,
        generation: u64,
        reason: DeathReason,
        was_alive: bool,
    ) {
        if self.fencing.is_none() || reason == DeathReason::Left {
            self.deaths.remove(node);
            return;
        }
        if self
            .deaths
            .get(node)
            .is_some_and(|d| d.generation == generation)
        {
            return;
        }
        self.death_seq += 1;
        let last_heard = self.peers.get(node).map(|p| (p.state.inc, p.state.seq));
        self.deaths.insert(
            node.to_owned(),
            Death {
                id: self.death_seq,
                generation,
                reason,
                at: now,
                was_alive,
                last_heard,
            },
        );
    }

    /// `node` is alive again: its death is over, and so is any fence of it not done. A
    /// claim of its groups waiting for the fence is withdrawn: it may still hold them, and
    /// claiming again waits to hear what it holds.
    pub(super) fn note_alive(&mut self, node: &str) {
        if self.deaths.remove(node).is_none() {
            return;
        }
        for gi in 0..self.groups.len() {
            let g = &self.groups[gi];
            if g.state == LocalState::Waiting && g.last_holder.as_deref() == Some(node) {
                info!(group = %self.cfg.groups[gi].name, node = %node, "the node it was taken from is back; claim withdrawn");
                // A withdrawn claim is no event: `now` is not needed for it.
                let now = self.last_step;
                self.set_state(gi, LocalState::Stopped, now, Why::default());
                self.dirty = true;
            }
        }
        if let Some(f) = self.fences.get_mut(node)
            && !matches!(f.phase, FencePhase::Done | FencePhase::Abandoned)
        {
            info!(node = %node, "node back: its fence is abandoned");
            f.phase = FencePhase::Abandoned;
            f.error = Some("the node came back before it was powered off".into());
            let now = self.last_step;
            self.emit_fence_change(node, FenceChange::Abandoned, now, None);
        }
    }

    /// Emits the event of `node`'s fence as it stands after `change`; `took`: the provider
    /// call's duration.
    fn emit_fence_change(
        &mut self,
        node: &str,
        change: FenceChange,
        now: Time,
        took: Option<Duration>,
    ) {
        let Some(f) = self.fences.get(node) else {
            return;
        };
        let e = FenceEvent {
            node: node.to_owned(),
            change,
            reason: death_words(f.reason),
            attempt: f.attempts,
            call: self.fencing.and_then(|c| c.call),
            took,
            since_death: now.saturating_sub(f.dead_at),
            detail: f.detail.clone().filter(|_| change == FenceChange::Done),
            error: f.error.clone().filter(|_| change != FenceChange::Done),
            retry_in: (change == FenceChange::Failed).then(|| f.not_before.saturating_sub(now)),
        };
        self.emit_fence(e);
    }

    /// The peers whose death calls for a fence from this node now (see the module doc).
    fn fence_wanted(&self, now: Time) -> Vec<(String, u64)> {
        // Not while another node is late: when this node is the one cut off, the rest are
        // declared dead one by one and the quorum loss comes after the first death.
        if self.fencing.is_none() || !self.connected || !self.quorate || !self.late.is_empty() {
            return Vec::new();
        }
        let involved = (0..self.groups.len())
            .any(|gi| self.groups[gi].holds() || self.desired(gi, now) == Some(self.local_idx));
        if !involved || self.cfg.nodes[self.local_idx].1 != Role::Member {
            return Vec::new();
        }
        self.deaths
            .iter()
            .filter(|(n, d)| {
                d.was_alive
                    && **n != self.cfg.local
                    && self
                        .node_idx(n)
                        .is_some_and(|i| self.cfg.nodes[i].1 == Role::Member)
            })
            .map(|(n, d)| (n.clone(), d.id))
            .collect()
    }

    /// A live member other than `node` whose agent heard `node` after this node last did.
    fn still_heard_by(&self, node: &str, now: Time) -> Option<String> {
        let last = self.deaths.get(node)?.last_heard?;
        self.cfg
            .nodes
            .iter()
            .filter(|(n, _)| n != node && *n != self.cfg.local)
            .find(|(n, _)| {
                self.live_peer(n, now)
                    .and_then(|p| p.state.seen.get(node))
                    .is_some_and(|s| *s > last)
            })
            .map(|(n, _)| n.clone())
    }

    /// Whether this node is the preferred node of some group (its fences go out at once).
    fn preferred_here(&self) -> bool {
        let first_member = self
            .cfg
            .nodes
            .iter()
            .find(|(_, r)| *r == Role::Member)
            .map(|(n, _)| n.as_str());
        self.cfg
            .groups
            .iter()
            .any(|g| g.prefer.as_deref().or(first_member) == Some(self.cfg.local.as_str()))
    }

    /// Starts, delays or retries the fences the deaths call for; part of every step.
    pub(super) fn plan_fences(&mut self, now: Time) {
        let Some(fc) = self.fencing else {
            return;
        };
        for (node, death) in self.fence_wanted(now) {
            let current = self.fences.get(&node).is_some_and(|f| f.death == death);
            if !current {
                let d = &self.deaths[&node];
                let wait = if self.preferred_here() {
                    Duration::ZERO
                } else {
                    fc.delay
                };
                info!(node = %node, reason = ?d.reason, delay = ?wait, "peer declared dead: fencing it");
                let fence = Fence {
                    death,
                    reason: d.reason,
                    dead_at: d.at,
                    phase: FencePhase::Delayed,
                    not_before: now.max(d.at + wait),
                    attempts: 0,
                    error: None,
                    detail: None,
                    ended: None,
                    sent: now,
                };
                self.fences.insert(node.clone(), fence);
            }
            let f = &self.fences[&node];
            if !matches!(f.phase, FencePhase::Delayed | FencePhase::Failed) || now < f.not_before {
                continue;
            }
            if let Some(by) = self.still_heard_by(&node, now) {
                warn!(node = %node, heard_by = %by, "not fencing: another member still hears it");
                let f = self.fences.get_mut(&node).expect("fence just checked");
                f.phase = FencePhase::Abandoned;
                f.error = Some(format!("{by} still hears it: this node is the one cut off"));
                f.ended = Some(now);
                self.emit_fence_change(&node, FenceChange::Abandoned, now, None);
                continue;
            }
            let f = self.fences.get_mut(&node).expect("fence just checked");
            f.phase = FencePhase::Running;
            f.attempts += 1;
            f.sent = now;
            let reason = death_words(f.reason);
            info!(node = %node, attempt = f.attempts, "powering the dead peer off");
            self.emit_fence_change(&node, FenceChange::Started, now, None);
            self.outputs.push(Output::Fence {
                node,
                death,
                reason,
            });
        }
    }

    /// The shell's answer to [`Output::Fence`]: `Ok` with what the provider did, or why
    /// it failed.
    pub(super) fn on_fenced(
        &mut self,
        now: Time,
        node: &str,
        death: u64,
        result: Result<String, String>,
    ) {
        let Some(fc) = self.fencing else {
            return;
        };
        let Some(f) = self
            .fences
            .get_mut(node)
            .filter(|f| f.death == death && f.phase == FencePhase::Running)
        else {
            info!(node = %node, ok = result.is_ok(), "result of a fence no longer wanted ignored");
            return;
        };
        let took = now.saturating_sub(f.sent);
        match result {
            Ok(detail) => {
                info!(node = %node, detail = %detail, took = ?now.saturating_sub(f.dead_at), "peer fenced");
                f.phase = FencePhase::Done;
                f.detail = Some(detail);
                f.error = None;
                f.ended = Some(now);
                // What waited for the fence may start now.
                self.dirty = true;
                self.emit_fence_change(node, FenceChange::Done, now, Some(took));
            }
            Err(e) => {
                let wait = fc
                    .retry
                    .saturating_mul(1 << f.attempts.saturating_sub(1).min(16))
                    .min(fc.retry_max);
                warn!(node = %node, error = %e, retry_in = ?wait, "fencing failed; its groups are not taken");
                f.phase = FencePhase::Failed;
                f.error = Some(e);
                f.not_before = now + wait;
                self.emit_fence_change(node, FenceChange::Failed, now, Some(took));
            }
        }
    }

    /// Why group `gi` may not start here yet: its last holder died and is not fenced.
    pub(super) fn fence_blocks(&self, gi: usize, now: Time) -> Option<String> {
        self.fencing?;
        let holder = self.groups[gi].last_holder.as_ref()?;
        let death = self.deaths.get(holder)?;
        let f = self.fences.get(holder).filter(|f| f.death == death.id);
        Some(match f {
            Some(f) if f.phase == FencePhase::Done => return None,
            None => format!("waiting to fence {holder} (declared dead) before taking the group"),
            Some(f) => match f.phase {
                FencePhase::Delayed => format!(
                    "fencing {holder} in {:.1}s (the non-preferred side waits fencing.delay)",
                    f.not_before.saturating_sub(now).as_secs_f64()
                ),
                FencePhase::Running => {
                    format!("powering {holder} off through the provider before taking the group")
                }
                FencePhase::Failed => format!(
                    "fencing {holder} failed: {}; retrying in {:.1}s; the group is not taken until it is off",
                    f.error.as_deref().unwrap_or("unknown error"),
                    f.not_before.saturating_sub(now).as_secs_f64()
                ),
                _ => format!(
                    "not fencing {holder}: {}",
                    f.error.as_deref().unwrap_or("not needed")
                ),
            },
        })
    }

    /// The next time a fence waits for.
    pub(super) fn fence_deadline(&self) -> Option<Time> {
        self.fences
            .values()
            .filter(|f| matches!(f.phase, FencePhase::Delayed | FencePhase::Failed))
            .map(|f| f.not_before)
            .min()
    }

    /// The last fence of each peer.
    pub fn fences(&self, now: Time) -> Vec<FenceStatus> {
        self.fences
            .iter()
            .map(|(node, f)| FenceStatus {
                node: node.clone(),
                reason: death_words(f.reason),
                phase: f.phase,
                age: now.saturating_sub(f.dead_at),
                took: f.ended.unwrap_or(now).saturating_sub(f.dead_at),
                attempts: f.attempts,
                error: f.error.clone(),
                detail: f.detail.clone(),
                next_in: matches!(f.phase, FencePhase::Delayed | FencePhase::Failed)
                    .then(|| f.not_before.saturating_sub(now)),
            })
            .collect()
    }
}

fn death_words(r: DeathReason) -> String {
    match r {
        DeathReason::Silent => "declared dead: silent on every link".into(),
        DeathReason::NeverHeard => "declared dead: not heard again".into(),
        DeathReason::Left => "left".into(),
    }
}
