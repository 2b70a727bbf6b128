//! Sane bounds for every duration in the file, each with the reason an operator is shown.
//!
//! A duration outside them is always a mistake (a unit typo such as `1us` for `1s` or `100y`
//! for `100ms`), and one that would only show at run time: a heartbeat every microsecond
//! floods the links and the CPU, a `dead_after` of an hour is no failover at all.
use std::time::Duration;

/// The range a duration must fall in, and why.
pub(crate) struct Bounds {
    pub min: Duration,
    /// Why not shorter.
    pub too_short: &'static str,
    pub max: Duration,
    /// Why not longer.
    pub too_long: &'static str,
}

impl Bounds {
    /// The problem with `d`, if it is out of range: (message after the value, expected).
    pub fn check(&self, d: Duration) -> Option<(String, String)> {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        let expected = format!("a duration from {} to {}", show(self.min), show(self.max));
        if d < self.min {
            Some((
                format!("is shorter than {}: {}", show(self.min), self.too_short),
                expected,
            ))
        } else if d > self.max {
            Some((
                format!("is longer than {}: {}", show(self.max), self.too_long),
                expected,
            ))
        } else {
            None
        }
    }
}

const UNIT_TYPO: &str = "longer is certainly a unit mistake (e.g. 100y for 100ms)";

/// `timing.interval`.
pub(crate) const INTERVAL: Bounds = Bounds {
    min: Duration::from_millis(10),
    too_short: "a faster heartbeat is lost in timer granularity and scheduling jitter \
                (10ms/100ms is the fastest timing measured without false failovers, \
                docs/BENCHMARKS.md), and every node sends one datagram per peer address \
                per interval",
    max: Duration::from_secs(10),
    too_long: "dead_after must hold several intervals, so a slower heartbeat makes failover \
               take minutes",
};

/// `timing.warn_after` (also bounded by interval and dead_after).
pub(crate) const WARN_AFTER: Bounds = Bounds {
    min: Duration::from_millis(20),
    too_short: "it must be longer than the interval, which is at least 10ms",
    max: Duration::from_secs(5 * 60),
    too_long: "it must be shorter than dead_after, which is at most 5 minutes",
};

/// `timing.dead_after`.
pub(crate) const DEAD_AFTER: Bounds = Bounds {
    min: Duration::from_millis(30),
    too_short: "it must hold at least 3 intervals of at least 10ms",
    max: Duration::from_secs(5 * 60),
    too_long: "a failover that waits longer is no longer high availability \
               (Heartbeat's deadtime is typically 10 to 60 seconds)",
};

/// `timing.init_dead`.
pub(crate) const INIT_DEAD: Bounds = Bounds {
    min: Duration::from_millis(30),
    too_short: "it must not be shorter than dead_after",
    max: Duration::from_secs(10 * 60),
    too_long: "until it passes, a peer never heard since start is not declared dead, so a node \
               that boots alone takes nothing over (Heartbeat's initdead is typically 60 to \
               120 seconds)",
};

/// Health check `interval` and `timeout`, agent `timeout` and `monitor_interval`.
pub(crate) const CHECKS: Bounds = Bounds {
    min: Duration::from_millis(100),
    too_short: "a process or an API call cannot finish in less, and checks would run back to \
                back",
    max: Duration::from_secs(24 * 3600),
    too_long: UNIT_TYPO,
};

/// Heartbeats that must fit in `dead_after`: with fewer, two datagrams lost or late in a row
/// would declare a live peer dead.
pub(crate) const MIN_BEATS_PER_DEAD: u32 = 3;

/// RFC 5737 TEST-NET-1, which `ipctl import-heartbeat` writes (with `# FILL IN`) where the
/// Heartbeat files give no address. Never routed, so never right in a live cluster: a peer
/// written so is never heard, and with the same file on both nodes each would take the
/// resources over.
const PLACEHOLDER_NET: [u8; 3] = [192, 0, 2];

/// Why `ip` cannot be used, when it is a placeholder.
pub(crate) fn placeholder(ip: std::net::IpAddr) -> Option<String> {
    match ip {
        std::net::IpAddr::V4(v4) if v4.octets()[..3] == PLACEHOLDER_NET => Some(format!(
            "{ip} is a placeholder: a documentation address (RFC 5737) that `ipctl \
             import-heartbeat` writes where the Heartbeat files give none"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_say_which_side_and_why() {
        let (msg, expected) = INTERVAL.check(Duration::from_micros(1)).unwrap();
        assert!(msg.starts_with("is shorter than 10ms: "), "{msg}");
        assert_eq!(expected, "a duration from 10ms to 10s");
        let (msg, _) = DEAD_AFTER.check(Duration::from_secs(3600)).unwrap();
        assert!(msg.starts_with("is longer than 5m: a failover"), "{msg}");
        assert!(CHECKS.check(Duration::from_secs(2)).is_none());
    }

    #[test]
    fn the_defaults_are_within_bounds() {
        let t = crate::Timing::default();
        assert!(INTERVAL.check(t.interval).is_none());
        assert!(WARN_AFTER.check(t.warn_after).is_none());
        assert!(DEAD_AFTER.check(t.dead_after).is_none());
        assert!(INIT_DEAD.check(t.init_dead).is_none());
        assert!(t.dead_after >= t.interval * MIN_BEATS_PER_DEAD);
    }
}
