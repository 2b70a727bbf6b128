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
//! The limits are the provider's documented ones ([`Limits::of`]) until an answer says
//! otherwise: DigitalOcean and Hetzner send the token's hourly limit in `ratelimit-limit`
//! (an account may have a raised or lowered one), and the budget adopts it
//! ([`Budget::advertised`], [`Limits::with_hour`]). A value that cannot be a limit (not a
//! number, zero, a hundred times off the documented one) is ignored and counted.
//!
//! The core takes `now` (time since the budget was made) and never reads a clock.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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

    /// The limits of an account whose hourly limit is `hour` instead of this documented one.
    /// A provider without a minute limit of its own (Hetzner: the hour's requests may all go
    /// at once) gets `hour` for the minute too; one with a burst limit (DigitalOcean's 250 a
    /// minute), which no header advertises, has it scaled down with a lower hour and kept with
    /// a higher one.
    pub fn with_hour(self, hour: u32) -> Limits {
        let per_minute = if self.per_minute >= self.per_hour {
            hour
        } else {
            let scaled = u64::from(self.per_minute) * u64::from(hour) / u64::from(self.per_hour);
            u32::try_from(scaled)
                .unwrap_or(u32::MAX)
                .clamp(1, self.per_minute)
        };
        Limits {
            per_minute,
            per_hour: hour,
        }
    }

    /// Whether an advertised hourly limit can be this provider's: positive and within a
    /// factor of [`PLAUSIBLE_FACTOR`] of the documented one (further off, a broken header
    /// is likelier than such an account).
    pub fn plausible_hour(self, hour: u64) -> bool {
        let documented = u64::from(self.per_hour);
        hour > 0
            && hour.saturating_mul(PLAUSIBLE_FACTOR) >= documented
            && hour <= documented.saturating_mul(PLAUSIBLE_FACTOR)
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

/// An advertised hourly limit further than this factor from the documented one is ignored.
pub const PLAUSIBLE_FACTOR: u64 = 100;

/// What an advertised hourly limit did to a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// The limits in use already.
    Same,
    /// Adopted: the limits were `from`, are `to` from now on.
    Changed { from: Limits, to: Limits },
    /// Not a plausible limit (unreadable, zero, absurd): the limits stay.
    Ignored,
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
    /// The limits in use: the documented ones, or the provider's advertised hour.
    limits: Limits,
    /// The provider's documented limits, which advertised ones are checked against.
    documented: Limits,
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
            documented: limits,
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

    /// The limits in use.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The provider advertised an hourly limit of `hour` (`None`: a header that is no
    /// number); adopts it when plausible.
    pub fn advertised(&mut self, hour: Option<u64>) -> Learned {
        let Some(hour) = hour.filter(|h| self.documented.plausible_hour(*h)) else {
            return Learned::Ignored;
        };
        // Plausible means at most 100 times a u32: it fits.
        let hour = u32::try_from(hour).unwrap_or(u32::MAX);
        if hour == self.limits.per_hour {
            return Learned::Same;
        }
        let from = self.limits;
        self.limits = self.documented.with_hour(hour);
        Learned::Changed {
            from,
            to: self.limits,
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
    provider: Provider,
    start: Instant,
    core: Mutex<Budget>,
    /// An implausible limit header was logged (once per budget; the counter counts each).
    warned: AtomicBool,
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

    /// The limits in use.
    pub fn limits(&self) -> Limits {
        self.lock().limits()
    }

    /// An answer's `ratelimit-limit` header: `Some(value)` parsed as a number, `None` when it
    /// is not one. Adopts a plausible new limit with one info line; counts an implausible
    /// value and logs the first.
    pub fn advertised(&self, hour: Option<u64>) {
        let learned = self.lock().advertised(hour);
        let provider = self.provider.name();
        match learned {
            Learned::Same => {}
            Learned::Changed { from, to } => tracing::info!(
                provider,
                per_hour = to.per_hour,
                per_minute = to.per_minute,
                was_per_hour = from.per_hour,
                "the provider advertises another rate limit for this API token; the request budget follows it"
            ),
            Learned::Ignored => {
                super::stats::header_ignored(self.provider);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    let value = hour.map_or_else(|| "not a number".to_owned(), |h| h.to_string());
                    tracing::warn!(
                        provider,
                        value,
                        per_hour = self.limits().per_hour,
                        "ignoring an implausible ratelimit-limit header (counted in tandem_agent_provider_rate_limit_header_ignored_total, logged once); the request budget keeps its limits"
                    );
                }
            }
        }
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
    let mut map = budgets();
    map.retain(|_, w| w.strong_count() > 0);
    if let Some(b) = map.get(&key).and_then(Weak::upgrade) {
        return b;
    }
    let b = Arc::new(Shared {
        provider,
        start: Instant::now(),
        core: Mutex::new(Budget::shared_by(
            Limits::of(provider),
            NODES.load(Ordering::Relaxed),
        )),
        warned: AtomicBool::new(false),
    });
    map.insert(key, Arc::downgrade(&b));
    b
}

/// The budgets of this process, by a hash of provider, base URL and token.
fn budgets() -> std::sync::MutexGuard<'static, HashMap<Vec<u8>, Weak<Shared>>> {
    static BUDGETS: OnceLock<Mutex<HashMap<Vec<u8>, Weak<Shared>>>> = OnceLock::new();
    BUDGETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The limits in use per provider, for the metrics: of the budgets alive now, the lowest
/// per window (several tokens of one provider may have different limits).
pub fn limits_in_use() -> Vec<(Provider, Limits)> {
    let live: Vec<Arc<Shared>> = budgets().values().filter_map(Weak::upgrade).collect();
    let mut out: Vec<(Provider, Limits)> = Vec::new();
    for b in live {
        let l = b.limits();
        match out.iter_mut().find(|(p, _)| *p == b.provider) {
            Some((_, m)) => {
                m.per_minute = m.per_minute.min(l.per_minute);
                m.per_hour = m.per_hour.min(l.per_hour);
            }
            None => out.push((b.provider, l)),
        }
    }
    out
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
    fn a_raised_hourly_limit_is_adopted_and_gives_routine_reads_more_of_the_hour() {
        let mut b = Budget::new(DO);
        for i in 0..2500 {
            b.sent(s(f64::from(i)));
        }
        // Half of the documented 5,000: routine reads wait for the first to expire.
        assert_eq!(b.wait(s(2500.0), Class::Routine), s(1100.0));
        assert_eq!(
            b.advertised(Some(10_000)),
            Learned::Changed {
                from: DO,
                to: Limits {
                    per_minute: 250,
                    per_hour: 10_000
                }
            }
        );
        assert_eq!(b.wait(s(2500.0), Class::Routine), Duration::ZERO);
        assert_eq!(b.advertised(Some(10_000)), Learned::Same);
        // Below a fifth of the new hour left, routine reads wait for the reset.
        b.observed(s(2500.0), Some(1500), Some(s(60.0)));
        assert_eq!(b.wait(s(2500.0), Class::Routine), s(60.0));
    }

    #[test]
    fn a_lowered_hourly_limit_scales_digitaloceans_burst_limit_down_with_it() {
        let mut b = Budget::new(DO);
        b.advertised(Some(2500));
        assert_eq!(
            b.limits(),
            Limits {
                per_minute: 125,
                per_hour: 2500
            }
        );
        for _ in 0..62 {
            b.sent(s(1.0));
        }
        // The routine share of the minute is now 62 (half of 125).
        assert_eq!(b.wait(s(2.0), Class::Routine), s(59.0));
        // Back to the documented limit when the provider says so.
        b.advertised(Some(5000));
        assert_eq!(b.limits(), DO);
    }

    #[test]
    fn hetzner_has_no_minute_limit_of_its_own_so_the_minute_follows_the_hour() {
        let hetzner = Limits::of(Provider::Hetzner);
        assert_eq!(
            hetzner.with_hour(7200),
            Limits {
                per_minute: 7200,
                per_hour: 7200
            }
        );
        assert_eq!(
            hetzner.with_hour(1000),
            Limits {
                per_minute: 1000,
                per_hour: 1000
            }
        );
    }

    #[test]
    fn implausible_limit_headers_are_ignored() {
        let mut b = Budget::new(DO);
        for bad in [None, Some(0), Some(49), Some(500_001), Some(u64::MAX)] {
            assert_eq!(b.advertised(bad), Learned::Ignored, "{bad:?}");
            assert_eq!(b.limits(), DO);
        }
        // The edges of the plausible range are limits.
        assert!(matches!(b.advertised(Some(50)), Learned::Changed { .. }));
        assert_eq!(b.limits().per_minute, 2);
        assert!(matches!(
            b.advertised(Some(500_000)),
            Learned::Changed { .. }
        ));
        assert_eq!(b.limits().per_minute, 250);
    }

    #[test]
    fn the_shared_budget_counts_ignored_headers_and_reports_its_limits() {
        let token = b"budget-test-token-learned";
        let b = shared(Provider::Hetzner, "http://learned.invalid", token);
        let before = super::super::stats::provider_counts()[1].1.header_ignored;
        b.advertised(None);
        b.advertised(Some(0));
        let after = super::super::stats::provider_counts()[1].1.header_ignored;
        assert!(after >= before + 2, "{before} -> {after}");
        b.advertised(Some(7200));
        assert_eq!(b.limits().per_hour, 7200);
        assert!(
            limits_in_use()
                .iter()
                .any(|(p, l)| *p == Provider::Hetzner && l.per_hour <= 7200),
        );
    }

    #[test]
    fn polls_spare_a_nearly_spent_hour() {
        let mut b = Budget::new(DO);
        b.observed(s(0.0), Some(10), Some(s(100.0)));
        assert_eq!(b.poll_wait(s(0.0), s(0.02)), SPARING_POLL);
    }
}
