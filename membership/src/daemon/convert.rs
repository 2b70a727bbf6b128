//! The core's view, events and counters as the protobuf messages of the Membership service.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tandem_config::{QuorumPolicy, Role};
use tandem_proto::membership::v1 as pb;
use tandem_proto::time::{duration, timestamp};

use super::ShellCounters;
use super::shell::Clock;
use crate::core::{Core, DeadReason, Event, EventKind, LinkState, NodeState, Notice, Quorum, Time};

/// What the mapping reads: the core and what the shell keeps beside it.
pub(super) struct Report<'a> {
    pub(super) core: &'a Core,
    /// The local sockets' bound addresses.
    pub(super) bound: &'a [SocketAddr],
    pub(super) counters: &'a ShellCounters,
    /// The last events, for Status.
    pub(super) recent: &'a VecDeque<pb::Event>,
    pub(super) clock: &'a Clock,
}

impl Report<'_> {
    fn name(&self, i: usize) -> &str {
        &self.core.nodes()[i].name
    }

    pub(super) fn event(&self, e: &Event) -> pb::Event {
        use pb::event::Kind;
        let link = |node: usize, link: usize| {
            (
                self.name(node).to_owned(),
                link as u32,
                self.core.nodes()[node].addresses[link].to_string(),
            )
        };
        let kind = match &e.kind {
            EventKind::NodeUp {
                node,
                generation,
                new_incarnation,
                previous_generation,
            } => Kind::NodeUp(pb::NodeUp {
                node: self.name(*node).to_owned(),
                generation: *generation,
                new_incarnation: *new_incarnation,
                previous_generation: *previous_generation,
            }),
            EventKind::NodeLate { node, silent_for } => Kind::NodeLate(pb::NodeLate {
                node: self.name(*node).to_owned(),
                silent_for: Some(duration(*silent_for)),
            }),
            EventKind::NodeDead {
                node,
                generation,
                reason,
                silent_for,
            } => Kind::NodeDead(pb::NodeDead {
                node: self.name(*node).to_owned(),
                generation: *generation,
                reason: match reason {
                    DeadReason::Silent => pb::node_dead::Reason::Silent,
                    DeadReason::NeverHeard => pb::node_dead::Reason::NeverHeard,
                    DeadReason::Left => pb::node_dead::Reason::Left,
                } as i32,
                silent_for: Some(duration(*silent_for)),
            }),
            EventKind::LinkUp { node, link: l } => {
                let (node, link, address) = link(*node, *l);
                Kind::LinkUp(pb::LinkUp {
                    node,
                    link,
                    address,
                })
            }
            EventKind::LinkDown { node, link: l } => {
                let (node, link, address) = link(*node, *l);
                Kind::LinkDown(pb::LinkDown {
                    node,
                    link,
                    address,
                })
            }
            EventKind::QuorumChanged(q) => Kind::QuorumChanged(pb::QuorumChanged {
                quorum: Some(quorum(q)),
            }),
            EventKind::Notice(n) => Kind::Notice(self.notice(n)),
        };
        pb::Event {
            seq: e.seq,
            view_id: e.view_id,
            at: Some(timestamp(self.clock.wall(e.at))),
            kind: Some(kind),
        }
    }

    fn notice(&self, n: &Notice) -> pb::Notice {
        pb::Notice {
            id: n.id,
            from: self.name(n.from).to_owned(),
            from_generation: n.from_generation,
            topic: n.topic.clone(),
            payload: n.payload.clone(),
            received_at: Some(timestamp(self.clock.wall(n.at))),
        }
    }

    pub(super) fn view(&self, now: Time) -> pb::View {
        let me = self.core.local();
        let nodes = self
            .core
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let v = self.core.node_view(i, now);
                let links = if i == me {
                    self.bound
                        .iter()
                        .enumerate()
                        .map(|(k, a)| pb::Link {
                            index: k as u32,
                            address: a.to_string(),
                            state: pb::LinkState::Up as i32,
                            ..Default::default()
                        })
                        .collect()
                } else {
                    v.links
                        .iter()
                        .enumerate()
                        .map(|(k, l)| pb::Link {
                            index: k as u32,
                            address: spec.addresses[k].to_string(),
                            state: match l.state {
                                LinkState::Unknown => pb::LinkState::Unknown,
                                LinkState::Up => pb::LinkState::Up,
                                LinkState::Down => pb::LinkState::Down,
                            } as i32,
                            last_heard: l.last_heard.map(|h| duration(now.saturating_sub(h))),
                            rtt: l.rtt.map(duration),
                            loss: l.loss,
                            received: l.received,
                        })
                        .collect()
                };
                pb::Node {
                    name: spec.name.clone(),
                    role: match spec.role {
                        Role::Member => pb::NodeRole::Member,
                        Role::Witness => pb::NodeRole::Witness,
                    } as i32,
                    state: match v.state {
                        NodeState::Unknown => pb::NodeState::Unknown,
                        NodeState::Up => pb::NodeState::Up,
                        NodeState::Late => pb::NodeState::Late,
                        NodeState::Dead => pb::NodeState::Dead,
                    } as i32,
                    local: i == me,
                    generation: v.generation,
                    since: Some(timestamp(self.clock.wall(v.since))),
                    state_age: Some(duration(now.saturating_sub(v.since))),
                    links,
                }
            })
            .collect();
        pb::View {
            view_id: self.core.view_id(),
            cluster: self.core.cluster().to_owned(),
            local_node: self.name(me).to_owned(),
            nodes,
            quorum: Some(quorum(&self.core.quorum())),
        }
    }

    pub(super) fn status(&self, now: Time) -> pb::StatusResponse {
        let c = self.core.counters();
        let t = self.core.timing();
        let sc = &self.counters;
        let rejected = self
            .core
            .rejections()
            .into_iter()
            .map(|(r, n)| (r.as_str().to_owned(), n))
            .chain([(
                "receive_queue_full".to_owned(),
                sc.receive_drops.load(Ordering::Relaxed),
            )])
            .collect();
        pb::StatusResponse {
            view: Some(self.view(now)),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            generation: self.core.generation(),
            uptime: Some(duration(now)),
            rejected,
            counters: Some(pb::Counters {
                datagrams_sent: c.datagrams_sent,
                datagrams_received: c.datagrams_received,
                send_errors: sc.send_errors.load(Ordering::Relaxed),
                messages_sent: c.messages_sent,
                messages_delivered: c.messages_delivered,
                messages_retransmitted: c.messages_retransmitted,
                messages_dropped: c.messages_dropped + sc.no_subscriber.load(Ordering::Relaxed),
                watch_subscribers_dropped: sc.watch_dropped.load(Ordering::Relaxed),
                stalls: c.stalls,
                notices: c.notices,
            }),
            timing: Some(pb::Timing {
                interval: Some(duration(t.interval)),
                warn_after: Some(duration(t.warn_after)),
                dead_after: Some(duration(t.dead_after)),
                init_dead: Some(duration(t.init_dead)),
            }),
            recent_events: self.recent.iter().cloned().collect(),
            notices: self.core.notices().map(|n| self.notice(n)).collect(),
        }
    }
}

fn quorum(q: &Quorum) -> pb::Quorum {
    pb::Quorum {
        policy: match q.policy {
            QuorumPolicy::TwoNode => pb::QuorumPolicy::TwoNode,
            QuorumPolicy::Majority => pb::QuorumPolicy::Majority,
        } as i32,
        quorate: q.quorate,
        voters: q.voters,
        alive: q.alive,
        needed: q.needed,
    }
}
