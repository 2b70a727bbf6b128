//! systemd's notification protocol: readiness, stopping, and the watchdog.
//!
//! Outside systemd there is no `NOTIFY_SOCKET` and every call does nothing.
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;
use tracing::warn;

/// Tells systemd the daemon is ready (`Type=notify`), with a status line for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "sd_notify failed");
    }
}

/// The watchdog (`WatchdogSec=`), pinged from a daemon's own loop at half the period systemd
/// asks for, so a stuck loop, not only a dead process, gets the daemon restarted.
#[derive(Debug)]
pub struct Watchdog {
    period: Option<Duration>,
    next: Option<Instant>,
}

impl Watchdog {
    /// The watchdog systemd asked for (`WATCHDOG_USEC`), if any; the first ping is due now.
    pub fn from_env() -> Watchdog {
        Watchdog::with_period(sd_notify::watchdog_enabled().map(|d| d / 2), Instant::now())
    }

    /// Pings every `period` (none: never), the first at `now`.
    pub fn with_period(period: Option<Duration>, now: Instant) -> Watchdog {
        Watchdog {
            period,
            next: period.map(|_| now),
        }
    }

    /// When the next ping is due; `None` without a watchdog.
    pub fn due(&self) -> Option<Instant> {
        self.next
    }

    /// Pings if one is due at `now`; returns whether it did.
    pub fn ping_if_due(&mut self, now: Instant) -> bool {
        match (self.period, self.next) {
            (Some(period), Some(next)) if now >= next => {
                if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
                    warn!(error = %e, "sd_notify WATCHDOG failed");
                }
                self.next = Some(now + period);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_when_due_then_a_period_later() {
        let t0 = Instant::now();
        let period = Duration::from_secs(5);
        let mut w = Watchdog::with_period(Some(period), t0);
        assert_eq!(w.due(), Some(t0));
        assert!(w.ping_if_due(t0));
        assert_eq!(w.due(), Some(t0 + period));
        assert!(!w.ping_if_due(t0 + Duration::from_secs(4)));
        assert!(w.ping_if_due(t0 + Duration::from_secs(6)));
        assert_eq!(w.due(), Some(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn without_a_watchdog_nothing_is_ever_due() {
        let t0 = Instant::now();
        let mut w = Watchdog::with_period(None, t0);
        assert_eq!(w.due(), None);
        assert!(!w.ping_if_due(t0 + Duration::from_secs(100)));
    }
}
