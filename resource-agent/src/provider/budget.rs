//! One request budget per API token, shared by every client of that token in the process, so
//! a node holding many reserved IPs moves them all fast without running into the provider's
//! rate limit, and routine reads never starve a move.
//!
//! DigitalOcean counts, per token, the requests of any minute (at most 250) and of any hour
//! (5,000); a request expires one window after it was made. The budget logs what this process
//! sent within the hour and applies the same sliding windows ([`Budget::wait`]):
//! - a move (assign, release: the holder reads, POSTs and polls inside them) may use 90 % of
//!   either window, leaving room for the provider's clock and other users of the token;
//! - routine reads (monitor, readiness, `holder()`) only half of either, and wait while the
//!   provider says less than a fifth of the hour is left (other nodes or tools may share the
//!   token): a failover always finds budget.
//!
//! The cluster's nodes usually share one token (one account, one token file copied to each),
//! and the provider counts their requests together, while each process sees only its own.
//! So with `n` nodes ([`assume_nodes`]) each process keeps its routine reads to `1/n` of that
//! half, and its moves leave room for the routine share of the `n - 1` others: the sum stays
//! under the provider's limit whatever the others do. The periodic monitors and readiness
//! checks ask [`Shared::routine_wait`] before their round and postpone it while the routine
//! share is spent (the daemon's worker), so steady-state polling slows down instead of
//! eating into the failover's share.
//!
//! Polls of concurrent moves share what is left of the minute ([`Budget::poll_wait`]): the
//! next poll of each of `n > 1` polling moves comes no sooner than `n × 10 s / left`, so together
//! they spend the minute's remainder over at least ten seconds (a move takes seconds), and a
//! burst of moves slows its polling down instead of hitting the limit and waiting a minute.
//!
//! The core takes `now` (time since the budget was made) and never reads a clock.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tandem_config::Provider;
use tokio::time::Instant;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// Concurrent polls spend the minute's remainder over at least this long.
const POLL_HORIZON: Duration = Duration::from_secs(10);
/// Below this many requests left in the provider's hour, polls come no more often than
/// [`SPARING_POLL`] (other users of the token may be spending it too).
const LOW_REMAINING: u64 = 20;
const SPARING_POLL: Duration = Duration::from_secs(2);

tokio::task_local! {
    /// The class of the requests made inside [`routine`].
    static CLASS: Class;
}

/// The class of a request made now: [`Class::Routine`] inside [`routine`], else a move.
pub fn current() -> Class {
    CLASS.try_with(|c| *c).unwrap_or(Class::Move)
}

/// Runs `f` with its requests counted as routine.
pub async fn routine<F: Future>(f: F) -> F::Output {
    CLASS.scope(Class::Routine, f).await
}

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Part of moving an IP: never held back by routine traffic.
    Move,
    /// Monitor, readiness, a holder read: uses at most half the budget.
    Routine,
}

/// A provider's limits per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_minute: u32,
    pub per_hour: u32,
}

impl Limits {
    pub fn of(provider: Provider) -> Limits {
        let (per_minute, per_hour) = provider.rate_limits();
        Limits {
            per_minute,
            per_hour,
        }
    }

    /// The share of each window a request of `class` may fill in one of `nodes` processes
    /// sharing the token: routine reads half of the window split between the nodes, moves
    /// 90 % of it less the routine share of every other node.
    pub fn caps(self, class: Class, nodes: u32) -> (usize, usize) {
        let n = nodes.max(1) as usize;
        let (m, h) = (self.per_minute as usize, self.per_hour as usize);
        let routine = (m / 2 / n, h / 2 / n);
        match class {
            Class::Move => (
                (m * 9 / 10).saturating_sub((n - 1) * routine.0),
                (h / 20 * 19).saturating_sub((n - 1) * routine.1),
            ),
            Class::Routine => routine,
        }
    }
}

/// How many nodes share each token, for the budgets made from now on (1 until set).
static NODES: AtomicU32 = AtomicU32::new(1);

/// The agent's daemon says how many nodes of its cluster run agents (and so may spend the
/// same token), before it builds its providers.
pub fn assume_nodes(nodes: u32) {
    NODES.store(nodes.max(1), Ordering::Relaxed);
}

/// The budget of one token (the sans-IO core).
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    /// When each request of the last hour was sent.
    sent: VecDeque<Duration>,
    /// The provider's `ratelimit-remaining` and when its `ratelimit-reset` falls, as last seen.
    server: Option<(u64, Duration)>,
    /// Moves polling an action now.
    polling: usize,
    /// Nodes spending the same token (see [`Limits::caps`]).
    nodes: u32,
}

impl Budget {
    pub fn new(limits: Limits) -> Budget {
        Budget::shared_by(limits, 1)
    }

    /// The budget of one of `nodes` processes that spend the same token.
    pub fn shared_by(limits: Limits, nodes: u32) -> Budget {
        Budget {
            limits,
            sent: VecDeque::new(),
            server: None,
            polling: 0,
            nodes: nodes.max(1),
        }
    }

    fn in_window(&self, now: Duration, window: Duration) -> usize {
        self.sent
            .iter()
            .rev()
            .take_while(|t| now.saturating_sub(**t) < window)
            .count()
    }

    /// How long until one more request fits under `cap` in `window` (zero: now).
    fn window_wait(&self, now: Duration, window: Duration, cap: usize) -> Duration {
        let n = self.in_window(now, window);
        if n < cap {
            return Duration::ZERO;
        }
        // The request whose expiry brings the count below the cap.
        let i = self.sent.len() - n + (n - cap);
        (self.sent[i] + window).saturating_sub(now)
    }

    /// How long a request of `class` should wait at `now` before it is sent.
    pub fn wait(&self, now: Duration, class: Class) -> Duration {
        let (minute_cap, hour_cap) = self.limits.caps(class, self.nodes);
        let mut w = self
            .window_wait(now, MINUTE, minute_cap.max(1))
            .max(self.window_wait(now, HOUR, hour_cap.max(1)));
        if let (Class::Routine, Some((remaining, reset_at))) = (class, self.server)
            && remaining < u64::from(self.limits.per_hour / 5)
        {
            w = w.max(reset_at.saturating_sub(now));
        }
        w
    }

    /// A request was sent at `now`.
    pub fn sent(&mut self, now: Duration) {
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= HOUR)
        {
            self.sent.pop_front();
        }
        self.sent.push_back(now);
    }

    /// The provider's rate-limit headers of an answer received at `now`.
    pub fn observed(&mut self, now: Duration, remaining: Option<u64>, reset_in: Option<Duration>) {
        if let Some(r) = remaining {
            self.server = Some((r, now + reset_in.unwrap_or_default()));
        }
    }

    /// The wait before a polling move's next poll, `scheduled` by its own schedule.
    pub fn poll_wait(&self, now: Duration, scheduled: Duration) -> Duration {
        let (minute_cap, _) = self.limits.caps(Class::Move, self.nodes);
        let left = minute_cap
            .saturating_sub(self.in_window(now, MINUTE))
            .max(1);
        // One move alone polls on its own schedule, which spends a dozen calls in its first
        // second and is then at most four a second.
        let mut d = scheduled;
        if self.polling > 1 {
            let polling = u32::try_from(self.polling).unwrap_or(u32::MAX);
            d = d.max(POLL_HORIZON.saturating_mul(polling) / u32::try_from(left).unwrap_or(1));
        }
        if self.server.is_some_and(|(r, _)| r < LOW_REMAINING) {
            d = d.max(SPARING_POLL);
        }
        d
    }
}

/// A [`Budget`] shared by the clients of one token, on the daemon's clock.
#[derive(Debug)]
pub struct Shared {
    start: Instant,
    core: Mutex<Budget>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Duration {
        Instant::now().duration_since(self.start)
    }

    pub fn wait(&self, class: Class) -> Duration {
        self.lock().wait(self.now(), class)
    }

    /// How long a periodic read (monitor, readiness) should be postponed: zero while the
    /// routine share has room.
    pub fn routine_wait(&self) -> Duration {
        self.wait(Class::Routine)
    }

    pub fn sent(&self) {
        let now = self.now();
        self.lock().sent(now);
    }

    pub fn observed(&self, remaining: Option<u64>, reset_in: Option<Duration>) {
        let now = self.now();
        self.lock().observed(now, remaining, reset_in);
    }

    pub fn poll_wait(&self, scheduled: Duration) -> Duration {
        let now = self.now();
        self.lock().poll_wait(now, scheduled)
    }

    /// Counts this move as polling until the guard is dropped.
    pub fn polling(self: &Arc<Self>) -> Polling {
        self.lock().polling += 1;
        Polling(self.clone())
    }
}

/// A move polling its action (see [`Shared::polling`]).
#[derive(Debug)]
pub struct Polling(Arc<Shared>);

impl Drop for Polling {
    fn drop(&mut self) {
        let mut b = self.0.lock();
        b.polling = b.polling.saturating_sub(1);
    }
}

/// The budget of `token` at `base` of `provider`, shared with every other client of the same
/// in this process (the provider counts per token). Keyed by a SHA-256 of the three, so the
/// registry holds no token.
pub fn shared(provider: Provider, base: &str, token: &[u8]) -> Arc<Shared> {
    static BUDGETS: OnceLock<Mutex<HashMap<Vec<u8>, Weak<Shared>>>> = OnceLock::new();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        provider.name().as_bytes(),
        b"\0",
        base.as_bytes(),
        b"\0",
        token,
    ] {
        ctx.update(part);
    }
    let key = ctx.finish().as_ref().to_vec();
    let mut map = BUDGETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.retain(|_, w| w.strong_count() > 0);
    if let Some(b) = map.get(&key).and_then(Weak::upgrade) {
        return b;
    }
    let b = Arc::new(Shared {
        start: Instant::now(),
        core: Mutex::new(Budget::shared_by(
            Limits::of(provider),
            NODES.load(Ordering::Relaxed),
        )),
    });
    map.insert(key, Arc::downgrade(&b));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const DO: Limits = Limits {
        per_minute: 250,
        per_hour: 5000,
    };

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn moves_may_fill_ninety_percent_of_the_minute_routine_reads_half() {
        let mut b = Budget::new(DO);
        for i in 0..125 {
            b.sent(s(f64::from(i) * 0.1));
        }
        let now = s(12.5);
        assert_eq!(b.wait(now, Class::Move), Duration::ZERO);
        // The first request (at 0) leaves the minute at 60.
        assert_eq!(b.wait(now, Class::Routine), s(47.5));
        for i in 125..225 {
            b.sent(s(12.5 + f64::from(i - 125) * 0.01));
        }
        let now = s(14.0);
        assert_eq!(b.wait(now, Class::Move), s(46.0));
        // At 60.05 the second request has expired too: 223 in the window.
        assert_eq!(b.wait(s(60.15), Class::Move), Duration::ZERO);
    }

    #[test]
    fn the_hour_is_a_sliding_window_too() {
        let mut b = Budget::new(Limits {
            per_minute: 1000,
            per_hour: 100,
        });
        for i in 0..50 {
            b.sent(s(f64::from(i) * 60.0));
        }
        // 50 = half the hour: routine reads wait for the first to expire.
        assert_eq!(b.wait(s(3000.0), Class::Routine), s(600.0));
        assert_eq!(b.wait(s(3000.0), Class::Move), Duration::ZERO);
    }

    #[test]
    fn routine_reads_wait_while_the_provider_says_the_hour_is_nearly_spent() {
        let mut b = Budget::new(DO);
        b.observed(s(10.0), Some(900), Some(s(30.0)));
        assert_eq!(b.wait(s(10.0), Class::Routine), s(30.0));
        assert_eq!(b.wait(s(10.0), Class::Move), Duration::ZERO);
        b.observed(s(20.0), Some(1200), Some(s(30.0)));
        assert_eq!(b.wait(s(20.0), Class::Routine), Duration::ZERO);
    }

    #[test]
    fn concurrent_polls_spread_the_rest_of_the_minute_over_ten_seconds() {
        let mut b = Budget::new(DO);
        // One move alone polls on its own schedule.
        b.polling = 1;
        assert_eq!(b.poll_wait(s(0.0), s(0.02)), s(0.02));
        // Twenty moves after their 40 reads and posts: 185 left, 20 polls share them.
        for _ in 0..40 {
            b.sent(s(0.0));
        }
        b.polling = 20;
        let d = b.poll_wait(s(0.1), s(0.02));
        assert!((d.as_secs_f64() - 200.0 / 185.0).abs() < 1e-6, "{d:?}");
        // The fuller the minute, the slower.
        for _ in 0..145 {
            b.sent(s(1.0));
        }
        assert_eq!(b.poll_wait(s(1.0), s(0.02)), s(5.0));
    }

    #[test]
    fn nodes_sharing_a_token_split_the_routine_half_and_moves_leave_the_others_theirs() {
        assert_eq!(DO.caps(Class::Routine, 1), (125, 2500));
        assert_eq!(DO.caps(Class::Move, 1), (225, 4750));
        assert_eq!(DO.caps(Class::Routine, 2), (62, 1250));
        assert_eq!(DO.caps(Class::Move, 2), (163, 3500));
        // Whatever the routine reads of the others, a node's moves keep the sum under 90 %.
        for n in 1..=5 {
            let (rm, rh) = DO.caps(Class::Routine, n);
            let (mm, mh) = DO.caps(Class::Move, n);
            let others = n as usize - 1;
            assert!(mm + others * rm <= 225 && mh + others * rh <= 4750, "{n}");
        }
    }

    /// Two nodes probe three reserved IPs every 300 ms (three requests each) on one token,
    /// postponing each round while [`Budget::wait`] says the routine share is spent, as the
    /// worker does. The provider's count of any minute stays under half its limit, and when
    /// one node dies the other moves 20 IPs (about 80 requests) without waiting.
    #[test]
    fn postponed_probes_of_two_nodes_leave_a_failover_its_requests() {
        let mut nodes = [Budget::shared_by(DO, 2), Budget::shared_by(DO, 2)];
        // What the provider counted, from both nodes.
        let mut provider: Vec<Duration> = Vec::new();
        let mut next = [Duration::ZERO; 2];
        let mut postponed = 0;
        let end = s(600.0);
        let mut now = Duration::ZERO;
        while now < end {
            for (i, b) in nodes.iter_mut().enumerate() {
                if now < next[i] {
                    continue;
                }
                let w = b.wait(now, Class::Routine);
                if !w.is_zero() {
                    postponed += 1;
                    next[i] = now + w;
                    continue;
                }
                for _ in 0..3 {
                    b.sent(now);
                    provider.push(now);
                }
                next[i] = now + s(0.3);
            }
            now += s(0.01);
        }
        assert!(postponed > 0);
        let peak = provider
            .iter()
            .map(|t| {
                provider
                    .iter()
                    .filter(|u| **u >= *t && **u < *t + MINUTE)
                    .count()
            })
            .max()
            .unwrap_or(0);
        // A round of three may start with one or two requests of the share left.
        assert!(peak <= 125 + 4, "{peak} requests in a minute");
        // The first node dies; the second moves 20 IPs at once.
        let survivor = &mut nodes[1];
        for _ in 0..80 {
            assert_eq!(survivor.wait(now, Class::Move), Duration::ZERO);
            survivor.sent(now);
            provider.push(now);
        }
        let in_minute = provider.iter().filter(|t| now - **t < MINUTE).count();
        assert!(in_minute <= 225, "{in_minute}");
    }

    #[test]
    fn polls_spare_a_nearly_spent_hour() {
        let mut b = Budget::new(DO);
        b.observed(s(0.0), Some(10), Some(s(100.0)));
        assert_eq!(b.poll_wait(s(0.0), s(0.02)), SPARING_POLL);
    }
}
