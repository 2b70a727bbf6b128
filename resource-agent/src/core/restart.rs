//! The restart policy: what to do when a running group's monitor fails. Restart it here a
//! few times (with a growing delay), and when it keeps failing within the window, give the
//! group up so that another node takes it. Sans-IO: fed `now`.
use std::collections::VecDeque;
use std::time::Duration;

use tracing::{debug, warn};

use super::events::{ActionRecord, Cause, GroupChange};
use super::{Core, LocalState, Output, Time};

/// Local restarts allowed within [`RestartPolicy::window`] before the group is released.
pub const DEFAULT_MAX_RESTARTS: u32 = 3;
/// Pacemaker's `failure-timeout` plays the same role; 10 minutes forgets a failure that
/// happened once while still catching a service that crashes every few minutes.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
/// Delay before the first restart; doubles per restart in the window.
pub const DEFAULT_FIRST_DELAY: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: DEFAULT_MAX_RESTARTS,
            window: DEFAULT_WINDOW,
            first_delay: DEFAULT_FIRST_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Stop and start the group here after `after`.
    Restart { after: Duration, attempt: u32 },
    /// Too many failures in the window: release the group.
    GiveUp { restarts: u32 },
}

/// Restart bookkeeping of one group.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    restarts: VecDeque<Time>,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            restarts: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Time) {
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= self.policy.window)
        {
            self.restarts.pop_front();
        }
    }

    /// A monitor failed at `now`.
    pub fn on_failure(&mut self, now: Time) -> Decision {
        self.expire(now);
        let done = self.restarts.len() as u32;
        if done >= self.policy.max_restarts {
            return Decision::GiveUp { restarts: done };
        }
        self.restarts.push_back(now);
        let after = self
            .policy
            .first_delay
            .saturating_mul(1u32 << done.min(16))
            .min(self.policy.max_delay);
        Decision::Restart {
            after,
            attempt: done + 1,
        }
    }

    /// Restarts within the window at `now` (shown in status).
    pub fn restarts(&self, now: Time) -> u32 {
        self.restarts
            .iter()
            .filter(|t| now.saturating_sub(**t) < self.policy.window)
            .count() as u32
    }

    /// Forget past failures (the group moved away, or an operator intervened).
    pub fn reset(&mut self) {
        self.restarts.clear();
    }
}

impl Core {
    /// A monitor of group `gi` failed: restart it here, or give it up when it keeps failing
    /// or another live node announces holding it (it moved: never taken back by a restart).
    /// `false` when only a restart follows (nothing for the handover).
    pub(super) fn monitor_failed(
        &mut self,
        now: Time,
        gi: usize,
        reason: String,
        actions: Vec<ActionRecord>,
    ) -> bool {
        let group = self.cfg.groups[gi].name.clone();
        if self.groups[gi].state != LocalState::Running {
            debug!(group = %group, "monitor failure of a group no longer running here ignored");
            return false;
        }
        let elsewhere = self.cfg.nodes.iter().map(|(n, _)| n).find(|n| {
            **n != self.cfg.local
                && self.alive.contains_key(*n)
                && self
                    .peers
                    .get(*n)
                    .is_some_and(|p| p.state.holds.contains(&group))
        });
        let (decision, reason) = match elsewhere {
            Some(node) => (
                Decision::GiveUp { restarts: 0 },
                format!("{reason}; {node} holds it"),
            ),
            None => (self.groups[gi].restarts.on_failure(now), reason),
        };
        let failed = format!("monitor failed: {reason}");
        self.emit_group(
            gi,
            GroupChange::Failed,
            Cause::Monitor,
            None,
            None,
            Some(failed),
            actions,
        );
        match decision {
            Decision::Restart { after, attempt } => {
                warn!(group = %group, reason = %reason, attempt, after = ?after, "monitor failed; restarting here");
                self.outputs.push(Output::Restart { group, after });
                let why = format!("restart {attempt} of {}", self.cfg.restart.max_restarts);
                self.emit_group(
                    gi,
                    GroupChange::Restarting,
                    Cause::Monitor,
                    None,
                    Some(after),
                    Some(why),
                    Vec::new(),
                );
                false
            }
            Decision::GiveUp { restarts } => {
                warn!(group = %group, reason = %reason, restarts, "monitor failed; releasing the group");
                self.give_up(now, gi, reason);
                true
            }
        }
    }

    /// The restart of group `gi` failed: given up here, if it still runs here.
    pub(super) fn restart_failed(
        &mut self,
        now: Time,
        gi: usize,
        reason: String,
        actions: Vec<ActionRecord>,
    ) -> bool {
        if self.groups[gi].state != LocalState::Running {
            return false;
        }
        let failed = Some(format!("restart failed: {reason}"));
        self.emit_group(
            gi,
            GroupChange::Failed,
            Cause::Monitor,
            None,
            None,
            failed,
            actions,
        );
        warn!(group = %self.cfg.groups[gi].name, reason = %reason, "restart failed; releasing the group");
        self.give_up(now, gi, format!("restart failed: {reason}"));
        true
    }

    /// Leaves group `gi` to the others after its monitors failed here.
    fn give_up(&mut self, now: Time, gi: usize, reason: String) {
        self.fail_here(gi, now, format!("monitor failed: {reason}"));
        self.groups[gi].last_error = Some(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(60),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
        }
    }

    #[test]
    fn restarts_with_growing_delay_then_gives_up() {
        let t0 = Time::from_secs(1000);
        let mut t = RestartTracker::new(policy());
        let s = Duration::from_secs;
        assert_eq!(
            t.on_failure(t0),
            Decision::Restart {
                after: s(1),
                attempt: 1
            }
        );
        assert_eq!(
            t.on_failure(t0 + s(5)),
            Decision::Restart {
                after: s(2),
                attempt: 2
            }
        );
        assert_eq!(
            t.on_failure(t0 + s(10)),
            Decision::Restart {
                after: s(3),
                attempt: 3
            }
        );
        assert_eq!(t.on_failure(t0 + s(15)), Decision::GiveUp { restarts: 3 });
        assert_eq!(t.restarts(t0 + s(15)), 3);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let t0 = Time::from_secs(1000);
        let mut t = RestartTracker::new(policy());
        let s = Duration::from_secs;
        for i in 0..3 {
            assert!(matches!(t.on_failure(t0 + s(i)), Decision::Restart { .. }));
        }
        // The first restart leaves the window at t0+60s.
        assert_eq!(t.restarts(t0 + s(60)), 2);
        assert_eq!(
            t.on_failure(t0 + s(60)),
            Decision::Restart {
                after: s(3),
                attempt: 3
            }
        );
        t.reset();
        assert_eq!(
            t.on_failure(t0 + s(61)),
            Decision::Restart {
                after: s(1),
                attempt: 1
            }
        );
    }
}
