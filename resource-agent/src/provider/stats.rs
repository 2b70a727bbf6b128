//! Process-wide counts of what happens below the metered provider calls (`metrics.rs` times
//! those): 429 answers and the waits they cost, periodic reads postponed for the token's
//! budget, rate-limit headers ignored as implausible, IPs left unassigned by a detach whose attach failed. Plain atomics, read at each scrape, so
//! the HTTP layer and the workers need no handle to the metrics.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tandem_config::Provider;

/// A periodic read the daemon postpones while its token's routine share is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routine {
    /// A group's monitor round (`reserved-ip` agents read the holder).
    Monitor,
    /// A group's readiness check (reads the IP and this server).
    Readiness,
}

impl Routine {
    pub const ALL: [Routine; 2] = [Routine::Monitor, Routine::Readiness];

    /// The metrics label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Routine::Monitor => "monitor",
            Routine::Readiness => "readiness",
        }
    }
}

const N: usize = Provider::ALL.len();
static RATE_LIMITED: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static RATE_LIMIT_WAIT_MS: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static HEADER_IGNORED: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static LEFT_UNASSIGNED: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static POSTPONED: [AtomicU64; Routine::ALL.len()] =
    [const { AtomicU64::new(0) }; Routine::ALL.len()];

fn index(p: Provider) -> usize {
    Provider::ALL.iter().position(|q| *q == p).unwrap_or(0)
}

/// One 429 answer from `p`.
pub(crate) fn rate_limited(p: Provider) {
    RATE_LIMITED[index(p)].fetch_add(1, Ordering::Relaxed);
}

/// A wait of `d` taken for a 429 from `p`.
pub(crate) fn rate_limit_waited(p: Provider, d: Duration) {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    RATE_LIMIT_WAIT_MS[index(p)].fetch_add(ms, Ordering::Relaxed);
}

/// A rate-limit header of `p` ignored as unreadable or implausible.
pub(crate) fn header_ignored(p: Provider) {
    HEADER_IGNORED[index(p)].fetch_add(1, Ordering::Relaxed);
}

/// An IP of `p` detached from another server whose attach here then failed.
pub(crate) fn left_unassigned(p: Provider) {
    LEFT_UNASSIGNED[index(p)].fetch_add(1, Ordering::Relaxed);
}

/// A periodic read postponed for the budget.
pub fn postponed(r: Routine) {
    POSTPONED[r as usize].fetch_add(1, Ordering::Relaxed);
}

/// What one provider's counters say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProviderCounts {
    /// 429 answers.
    pub rate_limited: u64,
    /// Seconds waited for them.
    pub rate_limit_wait: f64,
    /// Rate-limit headers ignored.
    pub header_ignored: u64,
    /// IPs detached from another server whose attach here failed (Vultr).
    pub left_unassigned: u64,
}

/// Every provider's counters since the process started.
pub fn provider_counts() -> [(Provider, ProviderCounts); N] {
    Provider::ALL.map(|p| {
        let i = index(p);
        (
            p,
            ProviderCounts {
                rate_limited: RATE_LIMITED[i].load(Ordering::Relaxed),
                rate_limit_wait: RATE_LIMIT_WAIT_MS[i].load(Ordering::Relaxed) as f64 / 1000.0,
                header_ignored: HEADER_IGNORED[i].load(Ordering::Relaxed),
                left_unassigned: LEFT_UNASSIGNED[i].load(Ordering::Relaxed),
            },
        )
    })
}

/// Periodic reads postponed since the process started, per kind.
pub fn postponed_counts() -> [(Routine, u64); Routine::ALL.len()] {
    Routine::ALL.map(|r| (r, POSTPONED[r as usize].load(Ordering::Relaxed)))
}
