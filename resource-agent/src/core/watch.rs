//! The watches of this process's own health: a stall of the process ([`StallWatch`]) and an
//! outage of its membership ([`DisconnectWatch`]). Either means the peers may have taken
//! over what runs here, so the groups running here are checked.
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Core, LocalState, Output, Time};

/// A gap between two wake-ups longer than the stall threshold means this process did not
/// run: what it believes it runs may have been taken over meanwhile. The other node can
/// take over once this one has been silent for `dead_after`, so the threshold is half of
/// that (at most 1 s, at least 40 ms).
pub fn stall_after(dead_after: Duration) -> Duration {
    (dead_after / 2).clamp(Duration::from_millis(40), Duration::from_secs(1))
}

/// Notices stalls of this process (SIGSTOP, a paused VM, a starved scheduler) from the gaps
/// between the driver's wake-ups.
///
/// A stall only matters while a group runs or starts here (`armed`): then the driver ticks
/// every half threshold, so an unstalled process never goes a threshold without waking.
/// Why half is enough (was a quarter): detection does not depend on the tick. A freeze
/// longer than the threshold spans a whole tick period, so that tick is overdue when the
/// process runs again: the first wake-up after the thaw (the tick itself, or any event, each
/// checked before it is handled) sees a gap of at least the freeze. The period only sets the
/// margin against false alarms: a tick may run up to half the threshold late (>= 20 ms,
/// 250 ms at the default dead_after) before it counts as a stall. With nothing running
/// here there is nothing to re-check: no tick at all, and the gap to the next wake-up (the
/// core's announcement every 2 s, any event) is no stall.
#[derive(Debug)]
pub struct StallWatch {
    threshold: Duration,
    last_ran: Time,
    armed: bool,
}

impl StallWatch {
    pub fn new(threshold: Duration, now: Time) -> StallWatch {
        StallWatch {
            threshold,
            last_ran: now,
            armed: false,
        }
    }

    /// Records a wake-up at `now`; returns the gap since the last one when it was a stall
    /// that matters (armed).
    pub fn wake(&mut self, now: Time) -> Option<Duration> {
        let gap = now.saturating_sub(self.last_ran);
        self.last_ran = now;
        (self.armed && gap > self.threshold).then_some(gap)
    }

    /// Whether a group runs or starts here, after each wake-up's work. Arming counts from
    /// `now` (the wake-up that started the group), never from an idle gap before it.
    pub fn arm(&mut self, armed: bool, now: Time) {
        if armed && !self.armed {
            self.last_ran = self.last_ran.max(now);
        }
        self.armed = armed;
    }

    /// The next tick the driver must wake for, if any.
    pub fn next_tick(&self) -> Option<Time> {
        self.armed.then(|| self.last_ran + self.threshold / 2)
    }
}

/// When to check the groups running here while membership is unreachable.
///
/// A node whose membership died or is cut off from this agent stops heartbeating: after
/// `dead_after` the peers declare it dead and take its groups over, while this agent, which
/// keeps what it holds, would go on reporting them running until a monitor happened to run
/// (`monitor_interval`, 10 s by default). So the first check comes `dead_after` after the
/// disconnection (when a takeover becomes possible), the next ones after a period doubling
/// from `dead_after` up to the longest monitor interval (beyond that the monitors check as
/// often anyway): an outage of hours costs few provider calls. Only while a group runs or
/// starts here (`armed`); connected, it has no deadline at all.
#[derive(Debug)]
pub struct DisconnectWatch {
    first: Duration,
    max: Duration,
    /// While disconnected: the next check and the period that follows it.
    next: Option<(Time, Duration)>,
    /// Whether the first check of this outage is still to come.
    first_pending: bool,
}

impl DisconnectWatch {
    pub fn new(first: Duration, max: Duration) -> DisconnectWatch {
        DisconnectWatch {
            first,
            max: max.max(first),
            next: None,
            first_pending: false,
        }
    }

    /// Membership became unreachable at `since` (a repeated report of the same outage,
    /// e.g. each failed reconnection, changes nothing).
    pub fn disconnected(&mut self, since: Time) {
        if self.next.is_none() {
            self.next = Some((since + self.first, self.first));
            self.first_pending = true;
        }
    }

    /// Membership is back: no more checks.
    pub fn connected(&mut self) {
        self.next = None;
        self.first_pending = false;
    }

    /// The deadline the driver must wake for, if any.
    pub fn next_check(&self, armed: bool) -> Option<Time> {
        self.next.filter(|_| armed).map(|(at, _)| at)
    }

    /// Whether a check is due at `now`: `Some(true)` for the first one of this outage,
    /// after which a takeover was possible, `Some(false)` for the later ones. The period
    /// counts from the check, so a late wake-up (a stall) does not bunch them up.
    pub fn due(&mut self, now: Time, armed: bool) -> Option<bool> {
        let (at, period) = self.next?;
        if !armed || now < at {
            return None;
        }
        self.next = Some((now + period, period.saturating_mul(2).min(self.max)));
        Some(std::mem::take(&mut self.first_pending))
    }
}

impl Core {
    /// Whether a stall or an outage would matter: a group runs or starts here.
    pub(super) fn runs_here(&self) -> bool {
        self.groups
            .iter()
            .any(|g| matches!(g.state, LocalState::Running | LocalState::Starting))
    }

    /// Notes a wake-up at `now`. After a stall of this process, whatever it believes it runs
    /// may have been taken over meanwhile (the other node declared this one dead): every
    /// group running here is checked at once, and reported starting, not running, until
    /// that check confirms it (a loss is handled like any monitor finding the group
    /// elsewhere).
    pub(super) fn observe_stall(&mut self, now: Time) {
        let Some(gap) = self.stall.wake(now) else {
            return;
        };
        warn!(stalled_for = ?gap, "this agent was stalled for {gap:?}; checking the groups it runs before reporting them running");
        self.verify_running(true);
    }

    /// While membership is unreachable the peers may have declared this node dead and taken
    /// its groups over (see [`DisconnectWatch`]): the groups running here are checked as
    /// after a stall. The first check of an outage (a takeover became possible just then)
    /// also reports them starting until confirmed; the later ones are plain re-checks.
    pub(super) fn check_disconnected(&mut self, now: Time) {
        let armed = self.runs_here();
        let Some(first) = self.disconnect.due(now, armed) else {
            return;
        };
        if first {
            let since = self.disconnected_since.map(|t| now.saturating_sub(t));
            warn!(disconnected_for = ?since, "membership unreachable for dead_after: the peers may have taken over; checking the groups running here");
        } else {
            debug!("membership still unreachable; checking the groups running here again");
        }
        self.verify_running(first);
    }

    /// Checks every group running here at once ([`Output::Verify`]); `unconfirmed`:
    /// reported starting, not running, until that check answers.
    fn verify_running(&mut self, unconfirmed: bool) {
        for (g, spec) in self.groups.iter_mut().zip(&self.cfg.groups) {
            if g.state == LocalState::Running {
                g.unconfirmed |= unconfirmed;
                self.outputs.push(Output::Verify(spec.name.clone()));
            }
        }
    }

    /// Membership answers again: no more outage checks.
    pub(super) fn on_connected(&mut self, _now: Time) {
        if self.disconnected_since.take().is_some() {
            info!("membership connected");
            self.disconnect.connected();
        }
        self.reported_down = false;
    }

    /// Membership is unreachable (again, on each failed reconnection): this node keeps what
    /// it holds and starts nothing; the groups running here are checked from `dead_after`.
    pub(super) fn on_disconnected(&mut self, now: Time, reason: &str) {
        if !self.reported_down {
            // Once per outage (and at start, until the first connection).
            warn!(reason = %reason, "membership unreachable; keeping what is held, starting nothing");
            self.reported_down = true;
        }
        let since = *self.disconnected_since.get_or_insert(now);
        self.disconnect.disconnected(since);
        self.connected = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_noticed_before_the_other_node_can_take_over() {
        let ms = Duration::from_millis;
        for dead_after in [100, 200, 500, 1000, 3000].map(ms) {
            let t = stall_after(dead_after);
            // A freeze of dead_after lets the peer take over: it must count as a stall.
            assert!(t < dead_after, "dead_after {dead_after:?}: threshold {t:?}");
            let start = Time::from_secs(100);
            let mut w = StallWatch::new(t, start);
            w.arm(true, start);
            // Ticks each up to just under half the threshold late: never a stall.
            let late = t / 2 - ms(1);
            let mut now = start;
            for _ in 0..50 {
                let tick = w.next_tick().expect("armed: ticking");
                assert_eq!(tick, now + t / 2, "a tick every half threshold");
                now = tick + late;
                assert_eq!(w.wake(now), None, "a late tick is no stall");
            }
            // A freeze of dead_after beginning anywhere in a tick period: the first wake-up
            // after the thaw (the overdue tick, or any event) reports at least the freeze.
            for phase in [ms(0), t / 8, t / 4, t / 2 - ms(1)] {
                let mut w = StallWatch::new(t, now);
                w.arm(true, now);
                let frozen_at = now + phase;
                let tick = w.next_tick().expect("armed");
                assert!(
                    tick <= frozen_at + dead_after,
                    "the tick falls in the freeze"
                );
                let thaw = frozen_at + dead_after;
                let gap = w.wake(thaw).expect("a freeze of dead_after is a stall");
                assert!(gap >= dead_after, "{gap:?}");
            }
        }
        assert_eq!(stall_after(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(stall_after(ms(20)), ms(40));
    }

    #[test]
    fn an_agent_running_nothing_neither_ticks_nor_reports_a_stall() {
        let t = stall_after(Duration::from_secs(1));
        let start = Time::from_secs(100);
        let mut w = StallWatch::new(t, start);
        assert_eq!(w.next_tick(), None, "nothing runs here: no tick");
        // Idle for a long time (or frozen meanwhile): nothing to re-check.
        let later = start + Duration::from_secs(30);
        assert_eq!(w.wake(later), None);
        // A group starts at the next wake-up: ticking resumes from then, and the idle gap
        // before it is no stall.
        let start_here = later + Duration::from_secs(2);
        assert_eq!(w.wake(start_here), None);
        w.arm(true, start_here);
        assert_eq!(w.next_tick(), Some(start_here + t / 2));
        assert_eq!(w.wake(start_here + t / 2), None);
        // Running: a freeze longer than the threshold is reported.
        let thaw = start_here + t / 2 + t + Duration::from_millis(1);
        assert!(w.wake(thaw).is_some(), "a stall while running is noticed");
        // Stopped again: no tick, and the next long gap is no stall.
        w.arm(false, thaw);
        assert_eq!(w.next_tick(), None);
        assert_eq!(w.wake(thaw + Duration::from_secs(10)), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The instants at which `w` checks, waking exactly at each deadline, until `until`.
    fn checks(w: &mut DisconnectWatch, until: Time) -> Vec<Time> {
        let mut at = Vec::new();
        while let Some(t) = w.next_check(true).filter(|t| *t <= until) {
            assert_eq!(w.due(t - ms(1), true), None, "not before its deadline");
            assert!(w.due(t, true).is_some());
            at.push(t);
        }
        at
    }

    #[test]
    fn an_outage_is_checked_at_dead_after_then_ever_less_often() {
        let start = Time::from_secs(100);
        let s = Duration::from_secs;
        let mut w = DisconnectWatch::new(s(1), s(10));
        assert_eq!(w.next_check(true), None, "connected: no deadline");
        w.disconnected(start);
        // A repeated report (each failed reconnection) does not move the schedule.
        w.disconnected(start + ms(300));
        assert_eq!(w.next_check(true), Some(start + s(1)));
        assert_eq!(w.due(start + s(1), true), Some(true), "the first check");
        let later = checks(&mut w, start + s(60));
        let offsets: Vec<u64> = later.iter().map(|t| (*t - start).as_secs()).collect();
        // 1 s, then periods 1, 2, 4, 8, 10, 10 ... s: the later checks are not the first.
        assert_eq!(offsets, [2, 4, 8, 16, 26, 36, 46, 56]);
        let mut w2 = DisconnectWatch::new(s(1), s(10));
        w2.disconnected(start);
        let hour = checks(&mut w2, start + s(3600)).len();
        assert!(hour <= 365, "an hour's outage costs {hour} checks");
        // Reconnected: no deadline any more; a new outage starts over from dead_after.
        w.connected();
        assert_eq!(w.next_check(true), None);
        assert_eq!(w.due(start + s(3600), true), None);
        let again = start + s(100);
        w.disconnected(again);
        assert_eq!(w.next_check(true), Some(again + s(1)));
        assert_eq!(w.due(again + s(1), true), Some(true));
    }

    #[test]
    fn nothing_running_here_costs_no_wake_up_and_a_late_check_does_not_bunch_up() {
        let start = Time::from_secs(100);
        let s = Duration::from_secs;
        // Monitors more frequent than dead_after: every period is dead_after.
        let mut w = DisconnectWatch::new(s(2), ms(500));
        w.disconnected(start);
        assert_eq!(w.next_check(false), None, "nothing runs here: no deadline");
        assert_eq!(w.due(start + s(5), false), None);
        // A group runs (again) here with the first check overdue: it comes at once.
        assert_eq!(w.next_check(true), Some(start + s(2)));
        assert_eq!(w.due(start + s(5), true), Some(true));
        // The period counts from the late check, and stays dead_after.
        assert_eq!(w.next_check(true), Some(start + s(7)));
        assert_eq!(w.due(start + s(7), true), Some(false));
        assert_eq!(w.next_check(true), Some(start + s(9)));
    }
}
