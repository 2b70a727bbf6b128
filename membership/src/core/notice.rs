//! Retained topics: cluster messages whose topic starts with [`RETAINED_PREFIX`] are kept, the
//! last [`RETAINED`], by the sender's daemon and by every daemon they are delivered to, so
//! any node (a witness too, which runs no subscriber) can show what the cluster announced:
//! a fence, for instance. Membership never reads the payload; bounds are those of every
//! message (topic 1..=64 bytes, payload up to 900), checked before a notice gets here.
use std::collections::VecDeque;

use super::Time;

/// Topics starting with this are retained.
pub const RETAINED_PREFIX: &str = "tandem.notice/";
/// Notices kept: enough for the last few fences and their failed attempts at a glance,
/// bounded so a chatty sender cannot grow memory (16 × ~1 KiB at most).
pub const RETAINED: usize = 16;

/// Whether messages on `topic` are retained.
pub fn is_retained(topic: &str) -> bool {
    topic.starts_with(RETAINED_PREFIX)
}

/// A message on a retained topic, as this node kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// From 1, increasing by one per notice kept by this core.
    pub id: u64,
    /// The sending node (the local node for its own).
    pub from: usize,
    pub from_generation: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    /// When it was sent (own) or received.
    pub at: Time,
}

/// The last [`RETAINED`] notices, oldest first.
#[derive(Debug, Default)]
pub(super) struct Notices {
    ring: VecDeque<Notice>,
    last_id: u64,
}

impl Notices {
    /// Keeps a notice, dropping the oldest when full; returns it (numbered).
    pub(super) fn keep(
        &mut self,
        at: Time,
        from: usize,
        from_generation: u64,
        topic: &str,
        payload: &[u8],
    ) -> Notice {
        self.last_id += 1;
        let n = Notice {
            id: self.last_id,
            from,
            from_generation,
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            at,
        };
        if self.ring.len() == RETAINED {
            self.ring.pop_front();
        }
        self.ring.push_back(n.clone());
        n
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Notice> {
        self.ring.iter()
    }

    /// Notices kept since start (the dropped ones included).
    pub(super) fn total(&self) -> u64 {
        self.last_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_the_notice_prefix_is_retained() {
        assert!(is_retained("tandem.notice/v1"));
        assert!(is_retained("tandem.notice/"));
        assert!(!is_retained("tandem.agent/v1"));
        assert!(!is_retained("tandem.notice"));
        assert!(!is_retained("x.tandem.notice/v1"));
        assert!(!is_retained(""));
    }

    #[test]
    fn the_ring_keeps_the_last_sixteen_numbered_in_order() {
        let mut n = Notices::default();
        for i in 0..(RETAINED as u64 + 5) {
            let kept = n.keep(Duration::from_secs(i), 1, 7, "tandem.notice/v1", &[i as u8]);
            assert_eq!(kept.id, i + 1);
        }
        let ids: Vec<u64> = n.iter().map(|x| x.id).collect();
        assert_eq!(ids, (6..=21).collect::<Vec<_>>());
        assert_eq!(n.total(), 21);
        assert_eq!(n.iter().next().map(|x| x.payload.clone()), Some(vec![5]));
    }
}
