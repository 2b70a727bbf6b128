//! The soak's faults: drawn from `(seed, index)` alone, described in words, and what each
//! may explain (holder changes, a double-running window).
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{ASSIGN_BOUND, Options, PREFERRED};
use crate::cluster::Daemon;

/// A provider fault, set through the emulator's admin API.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderFault {
    /// Every API request answered with this status.
    Errors { status: u16 },
    /// The next `burst` requests get 429 with a reset `reset_secs` ahead.
    RateLimit { burst: u32, reset_secs: u64 },
    /// Every request is slowed down.
    Slow { latency_ms: u64 },
    /// Every connection closed without an answer.
    Down,
    /// The next `n` actions end `errored`.
    ErroredActions { n: u32 },
}

/// Which processes of a node a kill or freeze hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    One(Daemon),
    /// Both daemons: a crashed (kill) or paused (freeze) machine; a crash also takes its
    /// web server down.
    Node,
}

/// An operator's command, as `ipctl` sends it to a node's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// On the holder.
    Release,
    Takeover,
    Standby,
    Online,
}

impl Command {
    pub fn verb(self) -> &'static str {
        match self {
            Command::Release => "release",
            Command::Takeover => "takeover",
            Command::Standby => "standby",
            Command::Online => "online",
        }
    }
}

/// Which member the crash after an operator's command hits, chosen once the command's
/// move has settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// The node holding the group then (e.g. the one a release moved it to).
    Holder,
    /// The other member (e.g. the one that released it).
    Other,
}

/// One fault. Node indexes are in launch order (members, then the witness).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Kill {
        node: usize,
        target: Target,
        down: Duration,
    },
    Freeze {
        node: usize,
        target: Target,
        stopped: Duration,
    },
    Provider {
        fault: ProviderFault,
        lasts: Duration,
        /// Crash the holder while the fault lasts: a failover against a failing provider.
        crash_holder: bool,
    },
    Standby {
        node: usize,
        lasts: Duration,
    },
    Takeover {
        node: usize,
    },
    /// An operator's command on `node` (a release: on the holder), then, once the group
    /// settled, a crash (kill -9 of both daemons) of a member for `down`: what a command
    /// leaves behind must never keep the group off a node that could hold it (a release
    /// used to ban the releasing node until `ipctl online`). A standby is ended with
    /// `ipctl online` after the crash.
    Operator {
        command: Command,
        node: usize,
        crash: Crash,
        down: Duration,
    },
    /// netns with a witness only.
    Partition {
        node: usize,
        lasts: Duration,
    },
    /// netns only: random loss on every link.
    Loss {
        percent: u8,
        lasts: Duration,
    },
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Fault {
    /// Fault number `index` of `seed` (pure: the same arguments give the same fault).
    /// `dead_after` scales freezes around the detection time.
    pub fn draw(seed: u64, index: u64, opts: &Options, dead_after: Duration) -> Fault {
        let mut rng = StdRng::seed_from_u64(splitmix(seed ^ splitmix(index)));
        let members = 2;
        let all = opts.nodes;
        let ms =
            |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..hi));
        let target = |rng: &mut StdRng, node: usize| {
            if node >= members {
                // The witness runs membership only.
                return Target::One(Daemon::Membership);
            }
            match rng.random_range(0..3) {
                0 => Target::One(Daemon::Membership),
                1 => Target::One(Daemon::Agent),
                _ => Target::Node,
            }
        };
        let kinds = if opts.netns { 10 } else { 8 };
        match rng.random_range(0..kinds) {
            0 | 1 => {
                let node = rng.random_range(0..all);
                Fault::Kill {
                    node,
                    target: target(&mut rng, node),
                    down: ms(&mut rng, 200, 4000),
                }
            }
            2 => {
                let node = rng.random_range(0..all);
                let d = dead_after.as_millis() as u64;
                Fault::Freeze {
                    node,
                    target: target(&mut rng, node),
                    // Around dead_after: below it (nothing may move) up to well past it.
                    stopped: ms(&mut rng, d / 2, d * 3),
                }
            }
            3 => {
                let fault = match rng.random_range(0..5) {
                    0 => Fault::provider_errors(&mut rng),
                    1 => ProviderFault::RateLimit {
                        burst: rng.random_range(2..12),
                        reset_secs: rng.random_range(1..4),
                    },
                    2 => ProviderFault::Slow {
                        latency_ms: rng.random_range(200..3000),
                    },
                    3 => ProviderFault::Down,
                    _ => ProviderFault::ErroredActions {
                        n: rng.random_range(1..3),
                    },
                };
                Fault::Provider {
                    fault,
                    lasts: ms(&mut rng, 1000, 12_000),
                    crash_holder: rng.random_bool(0.5),
                }
            }
            4 => Fault::Standby {
                node: rng.random_range(0..members),
                lasts: ms(&mut rng, 500, 5000),
            },
            5 => Fault::Takeover {
                node: rng.random_range(0..members),
            },
            6 | 7 => {
                // Longer than detection and an assignment: a group left unheld by the
                // command's leftovers shows as a gap in the curl loop.
                let least = dead_after + ASSIGN_BOUND + Duration::from_secs(1);
                let least = least.as_millis() as u64;
                Fault::Operator {
                    command: [
                        Command::Release,
                        Command::Takeover,
                        Command::Standby,
                        Command::Online,
                    ][rng.random_range(0..4)],
                    node: rng.random_range(0..members),
                    crash: if rng.random_bool(0.5) {
                        Crash::Holder
                    } else {
                        Crash::Other
                    },
                    down: ms(&mut rng, least, least + 3000),
                }
            }
            8 if opts.nodes >= 3 => Fault::Partition {
                node: rng.random_range(0..all),
                lasts: ms(&mut rng, 500, 6000),
            },
            _ => Fault::Loss {
                percent: 20,
                lasts: ms(&mut rng, 2000, 15_000),
            },
        }
    }

    fn provider_errors(rng: &mut StdRng) -> ProviderFault {
        ProviderFault::Errors {
            status: [500, 502, 503, 504][rng.random_range(0..4)],
        }
    }

    /// Holder changes this fault can explain, given the node holding the group when it
    /// began (`None`: nobody). A fault touching the holder may move the group away and back
    /// (failback is auto): two; a fault elsewhere: none.
    pub fn explained_moves(&self, holder: Option<usize>, members: usize) -> usize {
        let hits = |n: usize| Some(n) == holder;
        match self {
            Fault::Kill { node, .. }
            | Fault::Freeze { node, .. }
            | Fault::Standby { node, .. }
            | Fault::Partition { node, .. } => {
                if hits(*node) {
                    2
                } else if *node == PREFERRED {
                    // The preferred node, back from the fault, takes the group back
                    // (failback auto; a takeover's preference elsewhere lasts only until
                    // the group moves).
                    1
                } else {
                    0
                }
            }
            Fault::Provider { crash_holder, .. } => {
                if *crash_holder && holder.is_some() {
                    2
                } else {
                    0
                }
            }
            // To the node, and back to the preferred one if failback takes it.
            Fault::Takeover { node } => {
                if hits(*node) || *node >= members {
                    0
                } else {
                    2
                }
            }
            // The command's move, the crash's failover, and the failback on its return.
            Fault::Operator { .. } => 3,
            Fault::Loss { .. } => 0,
        }
    }

    /// Whether this fault can open the documented double-running window
    /// ([`DOUBLE_WINDOW`]): it cuts the holder's agent off from its own membership.
    pub fn may_run_twice(&self, holder: Option<usize>) -> bool {
        let hits = |n: &usize| Some(*n) == holder;
        match self {
            Fault::Kill { node, target, .. } | Fault::Freeze { node, target, .. } => {
                hits(node) && *target == Target::One(Daemon::Membership)
            }
            Fault::Partition { node, .. } => hits(node),
            _ => false,
        }
    }

    /// Time the group may rightly be held by nobody: a standby node is no candidate, so
    /// crashing the only other member leaves the group down until it returns.
    pub fn expected_outage(&self) -> Duration {
        match self {
            Fault::Operator {
                command: Command::Standby,
                crash: Crash::Holder,
                down,
                ..
            } => *down + ASSIGN_BOUND,
            _ => Duration::ZERO,
        }
    }

    /// Time the provider cannot complete an assignment because of this fault.
    pub(super) fn provider_downtime(&self) -> Duration {
        match self {
            Fault::Provider { fault, lasts, .. } => match fault {
                // The limit holds until cleared (after `lasts`, unless the burst is used up
                // first), and a 429 just before that tells the client to wait `reset_secs` more.
                ProviderFault::RateLimit { reset_secs, .. } => {
                    *lasts + Duration::from_secs(*reset_secs)
                }
                _ => *lasts,
            },
            _ => Duration::ZERO,
        }
    }
}

pub(super) fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn target_name(t: Target) -> &'static str {
    match t {
        Target::One(Daemon::Membership) => "tandem-membership",
        Target::One(Daemon::Agent) => "tandem-resource-agent",
        Target::Node => "both daemons",
    }
}

/// A fault in words, with node names.
pub struct Described<'a>(pub &'a Fault, pub &'a [String]);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |i: &usize| self.1.get(*i).map_or("?", String::as_str);
        match self.0 {
            Fault::Kill { node, target, down } => write!(
                f,
                "kill -9 {} on {}, restarted after {}",
                target_name(*target),
                name(node),
                secs(*down)
            ),
            Fault::Freeze {
                node,
                target,
                stopped,
            } => write!(
                f,
                "SIGSTOP {} on {} for {}",
                target_name(*target),
                name(node),
                secs(*stopped)
            ),
            Fault::Provider {
                fault,
                lasts,
                crash_holder,
            } => {
                match fault {
                    ProviderFault::Errors { status } => write!(f, "provider answers {status}")?,
                    ProviderFault::RateLimit { burst, reset_secs } => {
                        write!(f, "provider 429 for {burst} requests (reset {reset_secs}s)")?
                    }
                    ProviderFault::Slow { latency_ms } => {
                        write!(f, "provider slow ({latency_ms} ms per request)")?
                    }
                    ProviderFault::Down => write!(f, "provider down")?,
                    ProviderFault::ErroredActions { n } => {
                        write!(f, "provider: next {n} actions errored")?
                    }
                }
                write!(f, " for {}", secs(*lasts))?;
                if *crash_holder {
                    write!(f, ", holder crashed meanwhile")?;
                }
                Ok(())
            }
            Fault::Standby { node, lasts } => {
                write!(f, "standby {} for {}", name(node), secs(*lasts))
            }
            Fault::Takeover { node } => write!(f, "takeover on {}", name(node)),
            Fault::Operator {
                command,
                node,
                crash,
                down,
            } => {
                match command {
                    Command::Release => write!(f, "release by the holder")?,
                    c => write!(f, "{} on {}", c.verb(), name(node))?,
                }
                write!(
                    f,
                    ", then kill -9 of {} for {}",
                    match crash {
                        Crash::Holder => "the holder",
                        Crash::Other => "the other member",
                    },
                    secs(*down)
                )?;
                if *command == Command::Standby {
                    write!(f, ", then online")?;
                }
                Ok(())
            }
            Fault::Partition { node, lasts } => {
                write!(f, "partition {} for {}", name(node), secs(*lasts))
            }
            Fault::Loss { percent, lasts } => {
                write!(f, "{percent}% loss on every link for {}", secs(*lasts))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(nodes: usize, netns: bool) -> Options {
        Options {
            seed: 7,
            duration: Duration::from_secs(60),
            nodes,
            netns,
            start_at: 0,
            max_faults: None,
        }
    }

    #[test]
    fn a_fault_depends_only_on_seed_and_index() {
        let o = opts(3, true);
        let d = Duration::from_millis(500);
        let a: Vec<Fault> = (0..200).map(|i| Fault::draw(11, i, &o, d)).collect();
        let b: Vec<Fault> = (0..200).rev().map(|i| Fault::draw(11, i, &o, d)).collect();
        let b: Vec<Fault> = b.into_iter().rev().collect();
        assert_eq!(a, b);
        let other: Vec<Fault> = (0..200).map(|i| Fault::draw(12, i, &o, d)).collect();
        assert_ne!(a, other, "another seed draws other faults");
    }

    #[test]
    fn network_faults_only_where_they_can_be_applied() {
        let d = Duration::from_millis(500);
        for (nodes, netns) in [(2, false), (3, false), (2, true)] {
            let o = opts(nodes, netns);
            for i in 0..2000 {
                let f = Fault::draw(3, i, &o, d);
                let bad = match f {
                    Fault::Partition { .. } => !(netns && nodes == 3),
                    Fault::Loss { .. } => !netns,
                    Fault::Standby { node, .. }
                    | Fault::Takeover { node }
                    | Fault::Operator { node, .. } => node >= 2,
                    Fault::Kill { node, target, .. } | Fault::Freeze { node, target, .. } => {
                        node >= nodes || (node >= 2 && target != Target::One(Daemon::Membership))
                    }
                    _ => false,
                };
                assert!(!bad, "{nodes} nodes, netns {netns}: {f:?}");
            }
        }
        // Every kind appears with namespaces and a witness.
        let o = opts(3, true);
        let drawn: Vec<Fault> = (0..500).map(|i| Fault::draw(5, i, &o, d)).collect();
        assert!(drawn.iter().any(|f| matches!(f, Fault::Partition { .. })));
        assert!(drawn.iter().any(|f| matches!(f, Fault::Loss { .. })));
        assert!(drawn.iter().any(|f| matches!(f, Fault::Provider { .. })));
        for c in [
            Command::Release,
            Command::Takeover,
            Command::Standby,
            Command::Online,
        ] {
            for crash in [Crash::Holder, Crash::Other] {
                assert!(
                    drawn.iter().any(|f| matches!(f, Fault::Operator { command, crash: k, .. } if *command == c && *k == crash)),
                    "{c:?} then a crash of {crash:?} is drawn"
                );
            }
        }
    }

    #[test]
    fn moves_are_explained_only_by_faults_touching_the_holder() {
        let kill = |node| Fault::Kill {
            node,
            target: Target::Node,
            down: Duration::from_secs(1),
        };
        assert_eq!(kill(0).explained_moves(Some(0), 2), 2);
        assert_eq!(kill(1).explained_moves(Some(0), 2), 0);
        assert_eq!(
            kill(0).explained_moves(Some(1), 2),
            1,
            "the preferred node comes back and takes the group back"
        );
        let membership = Fault::Kill {
            node: 0,
            target: Target::One(Daemon::Membership),
            down: Duration::from_secs(1),
        };
        assert!(membership.may_run_twice(Some(0)));
        assert!(!membership.may_run_twice(Some(1)));
        assert!(
            !kill(0).may_run_twice(Some(0)),
            "a crashed holder reports nothing"
        );
        assert_eq!(kill(2).explained_moves(Some(0), 2), 0, "the witness");
        assert_eq!(Fault::Takeover { node: 0 }.explained_moves(Some(0), 2), 0);
        assert_eq!(Fault::Takeover { node: 1 }.explained_moves(Some(0), 2), 2);
        let loss = Fault::Loss {
            percent: 20,
            lasts: Duration::from_secs(5),
        };
        assert_eq!(loss.explained_moves(Some(0), 2), 0);
    }
}
