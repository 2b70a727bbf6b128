//! The failure detector: each peer's liveness and links, heartbeats and their echoes (round
//! trip, loss), the grace a stall of this node earns, and the deadlines all of that sets.
//!
//! A peer is UP while any of its links was heard within `warn_after`, LATE after that, DEAD
//! after `dead_after` of silence on every link, or after `init_dead` when never heard since
//! this node started. A link is UP from its first accepted datagram until it is silent for
//! `dead_after`. Silence is counted on this node's running time: see [`Detector::observe`].
//! Only this file decides those transitions; the core turns them into events.
use std::time::Duration;

use super::window::LossWindow;
use super::wire::msg;
use super::{Time, Timing, nanos};

/// A gap between two inputs longer than this many intervals means this process did not run
/// (SIGSTOP, a paused VM, a swap storm): the core's next deadline is never more than one
/// interval away (the next heartbeat), so a running shell calls in at least once per
/// interval; two leave room for scheduling jitter and stay far below the default
/// `dead_after` of ten intervals.
pub const STALL_INTERVALS: u32 = 2;

/// How the local node sees another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Never heard, init_dead not passed yet.
    Unknown,
    Up,
    /// Silent on every link for warn_after; still alive.
    Late,
    Dead,
}

impl NodeState {
    pub fn is_alive(self) -> bool {
        matches!(self, NodeState::Up | NodeState::Late)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkState {
    /// Never heard.
    #[default]
    Unknown,
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    Silent,
    NeverHeard,
    Left,
}

/// A link of a node as seen from here (for Status).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkView {
    pub state: LinkState,
    pub last_heard: Option<Time>,
    pub rtt: Option<Duration>,
    pub loss: f64,
    pub received: u64,
}

/// A node as seen from here (for Status and snapshots).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub state: NodeState,
    pub generation: u64,
    pub since: Time,
    pub last_heard: Option<Time>,
    pub links: Vec<LinkView>,
}

/// What the detector found due for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Late { silent_for: Duration },
    Dead(DeadReason),
}

#[derive(Debug, Clone, Default)]
struct Link {
    state: LinkState,
    last_heard: Option<Time>,
    /// Time since `last_heard` during which this node itself was stalled: not silence.
    grace: Duration,
    received: u64,
    srtt: Option<Duration>,
    loss: LossWindow,
}

/// One peer as the detector tracks it (the local node has one too, always UP).
#[derive(Debug, Clone)]
pub(super) struct Liveness {
    state: NodeState,
    since: Time,
    last_heard: Option<Time>,
    /// Time since `last_heard` (or since the start, never heard) during which this node
    /// itself was stalled: it does not count as the peer's silence.
    grace: Duration,
    /// The peer's links, in its address order.
    links: Vec<Link>,
    /// Heartbeat counter per local socket.
    hb_seq: Vec<u64>,
    /// Heartbeats received on each local link, to echo: (sent_at, received at).
    echo: Vec<Option<(u64, Time)>>,
}

impl Liveness {
    /// A peer with `links` addresses, never heard, seen from a node with `my_links` sockets.
    pub(super) fn new(now: Time, links: usize, my_links: usize) -> Liveness {
        Liveness {
            state: NodeState::Unknown,
            since: now,
            last_heard: None,
            grace: Duration::ZERO,
            links: vec![Link::default(); links],
            hb_seq: vec![0; my_links],
            echo: vec![None; my_links],
        }
    }

    pub(super) fn state(&self) -> NodeState {
        self.state
    }

    /// Sets the state (`since` moves only when it changes).
    pub(super) fn set_state(&mut self, now: Time, state: NodeState) {
        if self.state != state {
            self.since = now;
        }
        self.state = state;
    }

    /// An authentic, fresh datagram came over the peer's link `j`: the peer and that link
    /// are heard now. Returns whether the link came up.
    pub(super) fn heard(&mut self, now: Time, j: usize) -> bool {
        self.last_heard = Some(now);
        self.grace = Duration::ZERO;
        let l = &mut self.links[j];
        l.last_heard = Some(now);
        l.grace = Duration::ZERO;
        l.received += 1;
        let came_up = l.state != LinkState::Up;
        l.state = LinkState::Up;
        came_up
    }

    /// The peer restarted: echoes and loss counts of its previous incarnation mean nothing.
    pub(super) fn restarted(&mut self) {
        self.echo.iter_mut().for_each(|e| *e = None);
        for l in &mut self.links {
            l.loss = LossWindow::default();
        }
    }

    /// This node was stalled: `credit` of the peer's silence does not count.
    pub(super) fn stalled(&mut self, credit: Duration) {
        self.grace += credit;
        for l in &mut self.links {
            l.grace += credit;
        }
    }

    /// A heartbeat came over the peer's link `j` to local link `local_link`: counts it for
    /// loss, keeps it to echo, and takes a round-trip sample from each echo it carries.
    pub(super) fn heartbeat_received(
        &mut self,
        now: Time,
        j: usize,
        local_link: usize,
        hb: &msg::Heartbeat,
    ) {
        self.links[j].loss.record(hb.hb_seq);
        self.echo[local_link] = Some((hb.sent_at, now));
        for e in &hb.echoes {
            let rtt = nanos(now)
                .checked_sub(e.sent_at)
                .and_then(|x| x.checked_sub(e.held));
            if let Some(rtt) = rtt {
                let sample = Duration::from_nanos(rtt);
                let l = &mut self.links[e.link as usize];
                // RFC 6298 smoothing (alpha = 1/8).
                l.srtt = Some(match l.srtt {
                    None => sample,
                    Some(old) => (old * 7 + sample) / 8,
                });
            }
        }
    }

    /// The next heartbeat to the peer's address `k`, sent from local socket `socket`.
    pub(super) fn next_heartbeat(&mut self, now: Time, k: usize, socket: usize) -> msg::Heartbeat {
        self.hb_seq[socket] += 1;
        let peer_links = self.links.len();
        // Echo what arrived on our link k in the heartbeat to the peer's address k, so the
        // round trip stays on one network where both have it.
        let mut echoes = Vec::new();
        for (m, slot) in self.echo.iter_mut().enumerate() {
            if (m == k || (k == 0 && m >= peer_links))
                && let Some((sent_at, at)) = slot.take()
            {
                echoes.push(msg::Echo {
                    link: m as u32,
                    sent_at,
                    held: nanos(now.saturating_sub(at)),
                });
            }
        }
        msg::Heartbeat {
            hb_seq: self.hb_seq[socket],
            sent_at: nanos(now),
            echoes,
        }
    }

    /// Marks every UP link DOWN (the peer is dead); returns those links.
    pub(super) fn links_down(&mut self) -> Vec<usize> {
        let mut down = Vec::new();
        for (j, l) in self.links.iter_mut().enumerate() {
            if l.state == LinkState::Up {
                l.state = LinkState::Down;
                down.push(j);
            }
        }
        down
    }

    /// The links to send data on: every UP link, or every link when none is UP.
    pub(super) fn data_links(&self) -> Vec<usize> {
        let up: Vec<usize> = (0..self.links.len())
            .filter(|&j| self.links[j].state == LinkState::Up)
            .collect();
        if up.is_empty() {
            (0..self.links.len()).collect()
        } else {
            up
        }
    }

    /// The best smoothed round trip over the peer's links, if any was measured.
    pub(super) fn best_rtt(&self) -> Option<Duration> {
        self.links.iter().filter_map(|l| l.srtt).min()
    }

    /// How this node sees the peer at `now`; `generation` is the peer's accepted one.
    pub(super) fn view(&self, now: Time, generation: u64, interval: Duration) -> NodeView {
        NodeView {
            state: self.state,
            generation,
            since: self.since,
            last_heard: self.last_heard,
            links: self
                .links
                .iter()
                .map(|l| LinkView {
                    state: l.state,
                    last_heard: l.last_heard,
                    rtt: l.srtt,
                    loss: match (l.last_heard, self.last_heard) {
                        (Some(h), Some(_)) => l.loss.loss(now.saturating_sub(h), interval),
                        _ => 0.0,
                    },
                    received: l.received,
                })
                .collect(),
        }
    }
}

/// The detector's clock and thresholds, shared by every peer's [`Liveness`].
#[derive(Debug, Clone)]
pub(super) struct Detector {
    pub(super) timing: Timing,
    /// When this node started: the never-heard grace (`init_dead`) runs from here.
    start: Time,
    /// `now` of the latest input, to notice a stall of this process.
    last_input: Time,
}

impl Detector {
    pub(super) fn new(timing: Timing, start: Time) -> Detector {
        Detector {
            timing,
            start,
            last_input: start,
        }
    }

    /// Notices that this process did not run for a while (frozen, paused VM) and returns the
    /// gap and the part of it that is not a peer's silence, to give every peer as
    /// [`Liveness::stalled`] grace: from here, every peer was silent for the whole stall, but
    /// so was this node, and declaring the peers dead for it would be wrong (a thawed node
    /// would report its healthy peers DEAD, then UP again a moment later). Silence is
    /// counted on this node's running time instead: the part of the gap beyond one interval
    /// (a healthy shell calls in at least once per interval) is not silence. A peer that
    /// really died is still declared dead, only that much later.
    pub(super) fn observe(&mut self, now: Time) -> Option<(Duration, Duration)> {
        let gap = now.saturating_sub(self.last_input);
        self.last_input = self.last_input.max(now);
        let interval = self.timing.interval;
        if gap <= interval * STALL_INTERVALS {
            return None;
        }
        Some((gap, gap - interval))
    }

    /// Links of `p` silent for `dead_after` at `now`, marked DOWN here; returns them.
    pub(super) fn expire_links(&self, p: &mut Liveness, now: Time) -> Vec<usize> {
        let dead_after = self.timing.dead_after;
        let mut down = Vec::new();
        for (j, l) in p.links.iter_mut().enumerate() {
            if l.state == LinkState::Up
                && l.last_heard
                    .is_some_and(|h| now >= h + l.grace + dead_after)
            {
                l.state = LinkState::Down;
                down.push(j);
            }
        }
        down
    }

    /// The transition due for `p` at `now`, if any.
    pub(super) fn verdict(&self, p: &Liveness, now: Time) -> Option<Verdict> {
        let t = self.timing;
        let grace = p.grace;
        match (p.state, p.last_heard) {
            (NodeState::Up | NodeState::Late, Some(h)) if now >= h + grace + t.dead_after => {
                Some(Verdict::Dead(DeadReason::Silent))
            }
            (NodeState::Up, Some(h)) if now >= h + grace + t.warn_after => Some(Verdict::Late {
                silent_for: now - h,
            }),
            (NodeState::Unknown, _) if now >= self.start + grace + t.init_dead => {
                Some(Verdict::Dead(DeadReason::NeverHeard))
            }
            _ => None,
        }
    }

    /// How long `p` has been silent at `now` (since the start, never heard).
    pub(super) fn silent_for(&self, p: &Liveness, now: Time) -> Duration {
        now.saturating_sub(p.last_heard.unwrap_or(self.start))
    }

    /// When [`verdict`](Self::verdict) or [`expire_links`](Self::expire_links) next has
    /// something to say about `p`.
    pub(super) fn deadline(&self, p: &Liveness) -> Option<Time> {
        let t = self.timing;
        let node = match (p.state, p.last_heard) {
            (NodeState::Up, Some(h)) => Some(h + p.grace + t.warn_after),
            (NodeState::Late, Some(h)) => Some(h + p.grace + t.dead_after),
            (NodeState::Unknown, _) => Some(self.start + p.grace + t.init_dead),
            _ => None,
        };
        let links = p
            .links
            .iter()
            .filter_map(|l| match (l.state, l.last_heard) {
                (LinkState::Up, Some(h)) => Some(h + l.grace + t.dead_after),
                _ => None,
            });
        node.into_iter().chain(links).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Time {
        Duration::from_millis(x)
    }

    fn detector() -> Detector {
        Detector::new(
            Timing {
                interval: ms(100),
                warn_after: ms(500),
                dead_after: ms(1000),
                init_dead: ms(3000),
            },
            Time::ZERO,
        )
    }

    #[test]
    fn a_peer_is_late_then_dead_and_its_links_go_down_on_silence() {
        let d = detector();
        let mut p = Liveness::new(Time::ZERO, 2, 1);
        assert!(p.heard(ms(100), 0), "first datagram brings the link up");
        assert!(!p.heard(ms(150), 0), "already up");
        p.set_state(ms(100), NodeState::Up);
        assert_eq!(d.deadline(&p), Some(ms(650)));
        assert_eq!(d.verdict(&p, ms(649)), None);
        assert_eq!(
            d.verdict(&p, ms(650)),
            Some(Verdict::Late {
                silent_for: ms(500)
            })
        );
        p.set_state(ms(650), NodeState::Late);
        assert_eq!(d.deadline(&p), Some(ms(1150)));
        assert_eq!(d.expire_links(&mut p, ms(1149)), Vec::<usize>::new());
        assert_eq!(d.expire_links(&mut p, ms(1150)), vec![0]);
        assert_eq!(
            d.verdict(&p, ms(1150)),
            Some(Verdict::Dead(DeadReason::Silent))
        );
        assert_eq!(p.links_down(), Vec::<usize>::new(), "link 0 already down");
    }

    #[test]
    fn a_peer_never_heard_is_dead_after_init_dead() {
        let d = detector();
        let p = Liveness::new(Time::ZERO, 1, 1);
        assert_eq!(d.deadline(&p), Some(ms(3000)));
        assert_eq!(
            d.verdict(&p, ms(3000)),
            Some(Verdict::Dead(DeadReason::NeverHeard))
        );
        assert_eq!(d.silent_for(&p, ms(3000)), ms(3000));
    }

    #[test]
    fn a_stall_is_grace_not_silence() {
        let mut d = detector();
        let mut p = Liveness::new(Time::ZERO, 1, 1);
        assert_eq!(d.observe(ms(100)), None);
        p.heard(ms(100), 0);
        p.set_state(ms(100), NodeState::Up);
        assert_eq!(d.observe(ms(300)), None, "two intervals are not a stall");
        let (gap, credit) = d.observe(ms(2300)).expect("a stall");
        assert_eq!((gap, credit), (ms(2000), ms(1900)));
        p.stalled(credit);
        assert_eq!(d.verdict(&p, ms(2300)), None);
        assert_eq!(d.deadline(&p), Some(ms(100 + 1900 + 500)));
    }

    #[test]
    fn echoes_measure_the_round_trip_of_the_link_they_name() {
        let mut p = Liveness::new(Time::ZERO, 2, 2);
        // The peer echoes our heartbeat sent at 10 ms, held 3 ms there, received at 30 ms.
        let hb = msg::Heartbeat {
            hb_seq: 1,
            sent_at: nanos(ms(20)),
            echoes: vec![msg::Echo {
                link: 1,
                sent_at: nanos(ms(10)),
                held: nanos(ms(3)),
            }],
        };
        p.heartbeat_received(ms(30), 1, 1, &hb);
        assert_eq!(p.best_rtt(), Some(ms(17)));
        // Our next heartbeat to its address 1 echoes theirs, held 5 ms here.
        let next = p.next_heartbeat(ms(35), 1, 1);
        assert_eq!(next.echoes.len(), 1);
        assert_eq!(next.echoes[0].held, nanos(ms(5)));
        assert!(
            p.next_heartbeat(ms(40), 1, 1).echoes.is_empty(),
            "echoed once"
        );
    }
}
