//! DigitalOcean's rate limits, per token: at most `per_minute` requests in any minute (the
//! burst limit) and `per_hour` in any hour. Each request "expires" one window after it was
//! made, so both windows slide. Every answer carries `ratelimit-limit` (the hourly limit),
//! `ratelimit-remaining` (what is left of it) and `ratelimit-reset` (Unix time at which the
//! oldest request of the hour expires), as DigitalOcean's OpenAPI description documents them.
//! A request over the burst limit gets 429 with `Retry-After` (seconds until the oldest
//! request of the minute expires), as DigitalOcean added in 2023; one over the hourly limit
//! gets 429 without it (only `ratelimit-reset` says when a request is possible again).
//! Refused requests do not count.
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::RateLimitConfig;
use crate::state::unix_secs;

/// The rate-limit headers of one answer, and whether it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Unix epoch seconds.
    pub reset: u64,
    /// Over a limit: answer 429.
    pub exceeded: bool,
    /// Seconds, on a 429 of the burst limit.
    pub retry_after: Option<u64>,
}

/// The requests of each token within the last hour.
#[derive(Debug)]
pub struct RateLimits {
    cfg: RateLimitConfig,
    sent: HashMap<String, VecDeque<Instant>>,
}

impl RateLimits {
    pub fn new(cfg: RateLimitConfig) -> RateLimits {
        RateLimits {
            cfg,
            sent: HashMap::new(),
        }
    }

    /// Counts one request of `token` at `now` (`wall` is the same moment on the wall clock)
    /// unless it is over a limit, and returns its headers.
    pub fn take(&mut self, token: &str, now: Instant, wall: SystemTime) -> RateInfo {
        let (hour, minute) = (self.cfg.hour, self.cfg.minute);
        let log = self.sent.entry(token.to_owned()).or_default();
        while log.front().is_some_and(|t| now.duration_since(*t) >= hour) {
            log.pop_front();
        }
        let in_minute = log
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) < minute)
            .count();
        // When the request made at `t` leaves a window of `len`, in Unix seconds.
        let expiry =
            |t: Instant, len: Duration| unix_secs(wall + len.saturating_sub(now.duration_since(t)));
        let over_hour = log.len() >= self.cfg.per_hour as usize;
        let over_minute = in_minute >= self.cfg.per_minute as usize;
        let retry_after = (over_minute && !over_hour).then(|| {
            let oldest = log[log.len() - in_minute];
            let left = minute.saturating_sub(now.duration_since(oldest));
            // Whole seconds, rounded up, at least one.
            u64::try_from(left.as_millis().div_ceil(1000))
                .unwrap_or(u64::MAX)
                .max(1)
        });
        let exceeded = over_hour || over_minute;
        if !exceeded {
            log.push_back(now);
        }
        let reset = log.front().map_or(unix_secs(wall), |t| expiry(*t, hour));
        RateInfo {
            limit: self.cfg.per_hour,
            remaining: self
                .cfg
                .per_hour
                .saturating_sub(u32::try_from(log.len()).unwrap_or(u32::MAX)),
            reset,
            exceeded,
            retry_after,
        }
    }

    /// Requests counted in the current hour, all tokens together (for the admin state).
    pub fn counted(&self) -> usize {
        self.sent.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, per_hour: u32) -> RateLimits {
        RateLimits::new(RateLimitConfig {
            per_minute,
            per_hour,
            minute: Duration::from_secs(60),
            hour: Duration::from_secs(3600),
        })
    }

    #[test]
    fn the_burst_limit_refuses_with_retry_after_until_the_oldest_request_expires() {
        let mut r = limits(3, 100);
        let t0 = Instant::now();
        let w0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..3 {
            let at = Duration::from_secs(i * 10);
            let info = r.take("a", t0 + at, w0 + at);
            assert!(!info.exceeded);
            assert_eq!(info.remaining, 100 - 1 - i as u32);
            // The oldest request of the hour expires an hour after the first.
            assert_eq!(info.reset, 1_000_000 + 3600);
        }
        let at = Duration::from_millis(25_500);
        let info = r.take("a", t0 + at, w0 + at);
        assert!(info.exceeded);
        // The first request leaves the minute 34.5 s later: 35 s, rounded up.
        assert_eq!(info.retry_after, Some(35));
        assert_eq!(info.remaining, 97, "a refused request does not count");
        // Another token has its own budget.
        assert!(!r.take("b", t0 + at, w0 + at).exceeded);
        let at = Duration::from_secs(60);
        assert!(!r.take("a", t0 + at, w0 + at).exceeded, "the first expired");
    }

    #[test]
    fn the_hourly_limit_refuses_without_retry_after_and_resets_when_the_oldest_expires() {
        let mut r = limits(100, 2);
        let t0 = Instant::now();
        let w0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        r.take("a", t0, w0);
        let m = Duration::from_secs(120);
        r.take("a", t0 + m, w0 + m);
        let at = Duration::from_secs(600);
        let info = r.take("a", t0 + at, w0 + at);
        assert!(info.exceeded);
        assert_eq!(info.retry_after, None);
        assert_eq!(info.remaining, 0);
        assert_eq!(info.reset, 1_000_000 + 3600);
        let at = Duration::from_secs(3600);
        let info = r.take("a", t0 + at, w0 + at);
        assert!(!info.exceeded, "the oldest request expired");
        assert_eq!(info.reset, 1_000_000 + 120 + 3600);
    }
}
