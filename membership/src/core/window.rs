//! Sliding windows: anti-replay (per sender generation) and heartbeat loss (per link).
use std::time::Duration;

/// How many sequence numbers behind the highest one are still accepted (once each).
/// Sequence numbers are per (sender, receiver), so this covers many heartbeat intervals of
/// reordering even with several links and a burst of messages.
pub const REPLAY_WINDOW: u64 = 1024;
const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Anti-replay window in the style of RFC 4303 §3.4.3: a datagram is accepted once if its
/// sequence number is above the highest seen, or within the window and not seen yet.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    highest: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            highest: 0,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Would `seq` be accepted? (Check before the tag is known good; commit after.)
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.highest {
            return true;
        }
        let behind = self.highest - seq;
        if behind >= REPLAY_WINDOW {
            return false;
        }
        let (w, b) = Self::slot(seq);
        self.bits[w] & (1 << b) == 0
    }

    /// Marks `seq` as seen. Call only after [`check`](Self::check) returned true.
    pub fn commit(&mut self, seq: u64) {
        if seq > self.highest {
            let advance = seq - self.highest;
            if advance >= REPLAY_WINDOW {
                self.bits = [0; WORDS];
            } else {
                // Clear the slots that now fall out of the window and are reused.
                for s in self.highest + 1..=seq {
                    let (w, b) = Self::slot(s);
                    self.bits[w] &= !(1 << b);
                }
            }
            self.highest = seq;
        }
        let (w, b) = Self::slot(seq);
        self.bits[w] |= 1 << b;
    }

    fn slot(seq: u64) -> (usize, u32) {
        let i = seq % REPLAY_WINDOW;
        ((i / 64) as usize, (i % 64) as u32)
    }
}

/// Heartbeats considered for the loss estimate.
pub const LOSS_WINDOW: u64 = 100;

/// Which of the last heartbeats of one link arrived, by the sender's per-link counter.
#[derive(Debug, Clone, Default)]
pub struct LossWindow {
    first: u64,
    highest: u64,
    /// Bit i set: heartbeat `highest - i` arrived.
    bits: u128,
}

impl LossWindow {
    pub fn record(&mut self, hb_seq: u64) {
        if hb_seq == 0 {
            return;
        }
        if self.highest == 0 {
            self.first = hb_seq;
            self.highest = hb_seq;
            self.bits = 1;
            return;
        }
        if hb_seq > self.highest {
            let shift = hb_seq - self.highest;
            self.bits = if shift >= 128 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.highest = hb_seq;
        } else {
            let behind = self.highest - hb_seq;
            if behind < 128 {
                self.bits |= 1 << behind;
            }
        }
        self.first = self.first.min(hb_seq);
    }

    /// Share of the last (up to) 100 expected heartbeats that did not arrive. Heartbeats
    /// that should have arrived during the current silence count as lost.
    pub fn loss(&self, silent_for: Duration, interval: Duration) -> f64 {
        if self.highest == 0 || interval.is_zero() {
            return 0.0;
        }
        let missed_since = (silent_for.as_nanos() / interval.as_nanos()).saturating_sub(1) as u64;
        let span = (self.highest - self.first + 1).saturating_add(missed_since);
        let expected = span.min(LOSS_WINDOW);
        if missed_since >= expected {
            return 1.0;
        }
        let considered = expected - missed_since;
        let mask = if considered >= 128 {
            u128::MAX
        } else {
            (1u128 << considered) - 1
        };
        let got = (self.bits & mask).count_ones() as u64;
        1.0 - got as f64 / expected as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_accepts_each_seq_once_and_reordering_within_window() {
        let mut w = ReplayWindow::default();
        for s in [5, 3, 4, 1, 2] {
            assert!(w.check(s), "{s}");
            w.commit(s);
            assert!(!w.check(s), "{s} twice");
        }
        w.commit(5000);
        assert!(!w.check(5000 - REPLAY_WINDOW), "too old");
        assert!(w.check(5000 - REPLAY_WINDOW + 1));
        assert!(!w.check(5), "old seq after a jump");
        assert!(!w.check(0));
    }

    #[test]
    fn replay_window_reuses_slots_after_advancing() {
        let mut w = ReplayWindow::default();
        w.commit(1);
        w.commit(1 + REPLAY_WINDOW);
        // Slot of 1 is reused by 1+W; 1 is now outside the window.
        assert!(!w.check(1));
        assert!(w.check(2 + REPLAY_WINDOW));
        assert!(w.check(REPLAY_WINDOW));
    }

    #[test]
    fn loss_counts_gaps_and_silence() {
        let i = Duration::from_millis(100);
        let mut l = LossWindow::default();
        for s in 1..=100 {
            if s % 5 != 2 {
                l.record(s);
            }
        }
        let loss = l.loss(Duration::ZERO, i);
        assert!((loss - 0.20).abs() < 1e-9, "{loss}");
        let silent = l.loss(Duration::from_secs(100), i);
        assert_eq!(silent, 1.0);
        let mut clean = LossWindow::default();
        (1..=10).for_each(|s| clean.record(s));
        assert_eq!(clean.loss(Duration::ZERO, i), 0.0);
    }
}
