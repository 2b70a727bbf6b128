//! Optional Prometheus endpoint (`membership.metrics`, loopback only).
//!
//! Each scrape asks the protocol loop for a Status and renders it with prometheus-client,
//! so the metrics can never disagree with `Status` and the loop keeps no second set of
//! counters. Only transitions (node up/late/dead, link up/down) and notices kept, which a
//! Status cannot show after the fact, are counted as they are published ([`EventCounters`]). HTTP is served by
//! [`tandem_daemon_kit::metrics`] (axum on hyper): `GET /metrics`, nothing else.
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use futures::future::BoxFuture;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tandem_proto::membership::v1 as pb;
use tokio::net::TcpListener;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Membership events counted as they are published (Status only holds the current state,
/// so transitions would be invisible between two scrapes). Cheap to clone: shared counters.
#[derive(Debug, Clone, Default)]
pub struct EventCounters {
    up: Family<Labels, Counter<u64>>,
    late: Family<Labels, Counter<u64>>,
    dead: Family<Labels, Counter<u64>>,
    links: Family<Labels, Counter<u64>>,
    notices: Family<Labels, Counter<u64>>,
}

impl EventCounters {
    /// Counts one published event.
    pub fn record(&self, e: &pb::Event) {
        use pb::event::Kind as K;
        match &e.kind {
            Some(K::NodeUp(u)) => {
                let restart = if u.new_incarnation { "true" } else { "false" };
                self.up
                    .get_or_create(&labels(&[("node", &u.node), ("restart", restart)]))
                    .inc();
            }
            Some(K::NodeLate(l)) => {
                self.late.get_or_create(&labels(&[("node", &l.node)])).inc();
            }
            Some(K::NodeDead(d)) => {
                let reason = match pb::node_dead::Reason::try_from(d.reason) {
                    Ok(pb::node_dead::Reason::Silent) => "silent",
                    Ok(pb::node_dead::Reason::NeverHeard) => "never_heard",
                    Ok(pb::node_dead::Reason::Left) => "left",
                    _ => "unspecified",
                };
                self.dead
                    .get_or_create(&labels(&[("node", &d.node), ("reason", reason)]))
                    .inc();
            }
            Some(K::LinkUp(l)) => self.link(&l.node, l.link, "up"),
            Some(K::LinkDown(l)) => self.link(&l.node, l.link, "down"),
            // By sender only: node names are bounded by the configuration, topics are not.
            Some(K::Notice(n)) => {
                self.notices
                    .get_or_create(&labels(&[("from", &n.from)]))
                    .inc();
            }
            Some(K::QuorumChanged(_)) | None => {}
        }
    }

    fn link(&self, node: &str, link: u32, state: &str) {
        self.links
            .get_or_create(&labels(&[
                ("node", node),
                ("link", &link.to_string()),
                ("state", state),
            ]))
            .inc();
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "node_up",
            "Nodes seen UP (joined, recovered from LATE or DEAD, or restarted)",
            self.up.clone(),
        );
        r.register(
            "node_late",
            "Nodes that went LATE (silent past warn_after on every link)",
            self.late.clone(),
        );
        r.register(
            "node_dead",
            "Nodes declared DEAD (failure detections), by reason",
            self.dead.clone(),
        );
        r.register(
            "link_transitions",
            "Link state changes per peer and link",
            self.links.clone(),
        );
        r.register(
            "notices",
            "Messages on retained topics (tandem.notice/...) kept, by sending node (this node's own included)",
            self.notices.clone(),
        );
    }
}

/// Renders a Status and the event counts as Prometheus text exposition.
pub fn render(s: &pb::StatusResponse, events: &EventCounters) -> String {
    let mut r = Registry::with_prefix("tandem_membership");
    events.register(&mut r);
    let gauge = |r: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        r.register(name, help, f.clone());
        f
    };
    let counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        r.register(name, help, c);
    };
    let alive = gauge(&mut r, "node_alive", "1 if the node is UP or LATE");
    let generation = gauge(
        &mut r,
        "node_generation",
        "The node's generation (0: never heard)",
    );
    let link_up = gauge(&mut r, "link_up", "1 if the link to the node is UP");
    let rtt = gauge(
        &mut r,
        "link_rtt_seconds",
        "Smoothed heartbeat round-trip time",
    );
    let loss = gauge(
        &mut r,
        "link_loss_ratio",
        "Share of the last 100 heartbeats lost",
    );
    let received = Family::<Labels, Counter<u64>>::default();
    r.register(
        "link_received",
        "Valid datagrams (heartbeats and messages) received per peer and link",
        received.clone(),
    );
    let quorate = Gauge::<f64, AtomicU64>::default();
    r.register("quorate", "1 if this node has quorum", quorate.clone());
    if let Some(v) = &s.view {
        for n in &v.nodes {
            let l = vec![("node".to_owned(), n.name.clone())];
            let up = matches!(
                pb::NodeState::try_from(n.state),
                Ok(pb::NodeState::Up | pb::NodeState::Late)
            );
            alive.get_or_create(&l).set(if up { 1.0 } else { 0.0 });
            generation.get_or_create(&l).set(n.generation as f64);
            if n.local {
                continue;
            }
            for link in &n.links {
                let l = vec![
                    ("node".to_owned(), n.name.clone()),
                    ("link".to_owned(), link.index.to_string()),
                ];
                let is_up = link.state == pb::LinkState::Up as i32;
                link_up.get_or_create(&l).set(if is_up { 1.0 } else { 0.0 });
                if let Some(d) = &link.rtt {
                    rtt.get_or_create(&l)
                        .set(tandem_proto::time::from_duration(d).as_secs_f64());
                }
                loss.get_or_create(&l).set(link.loss);
                received.get_or_create(&l).inc_by(link.received);
            }
        }
        let q = v.quorum.as_ref().is_some_and(|q| q.quorate);
        quorate.set(if q { 1.0 } else { 0.0 });
    }
    let rejected = Family::<Labels, Counter<u64>>::default();
    r.register(
        "rejected",
        "Datagrams rejected, by reason",
        rejected.clone(),
    );
    for (reason, n) in &s.rejected {
        rejected
            .get_or_create(&vec![("reason".to_owned(), reason.clone())])
            .inc_by(*n);
    }
    if let Some(c) = &s.counters {
        counter(&mut r, "datagrams_sent", "Datagrams sent", c.datagrams_sent);
        counter(
            &mut r,
            "datagrams_received",
            "Datagrams received",
            c.datagrams_received,
        );
        counter(
            &mut r,
            "send_errors",
            "Datagrams the socket refused",
            c.send_errors,
        );
        counter(
            &mut r,
            "messages_sent",
            "Cluster messages queued",
            c.messages_sent,
        );
        counter(
            &mut r,
            "messages_delivered",
            "Cluster messages delivered",
            c.messages_delivered,
        );
        counter(
            &mut r,
            "messages_retransmitted",
            "Cluster messages retransmitted",
            c.messages_retransmitted,
        );
        counter(
            &mut r,
            "messages_dropped",
            "Cluster messages discarded",
            c.messages_dropped,
        );
        counter(
            &mut r,
            "watch_subscribers_dropped",
            "Watch streams dropped for being too slow",
            c.watch_subscribers_dropped,
        );
        counter(
            &mut r,
            "stalls",
            "Times this node's protocol loop ran more than two intervals late (frozen or starved)",
            c.stalls,
        );
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// Fetches a fresh Status from the protocol loop; `None` while it is shutting down.
pub type StatusFn = Arc<dyn Fn() -> BoxFuture<'static, Option<pb::StatusResponse>> + Send + Sync>;

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    status: StatusFn,
    events: EventCounters,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let page: tandem_daemon_kit::metrics::RenderFn = Arc::new(move || {
        let (status, events) = (status.clone(), events.clone());
        Box::pin(async move { status().await.map(|s| render(&s, &events)) })
    });
    tandem_daemon_kit::metrics::serve(listener, page, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_as_prometheus_text() {
        let s = pb::StatusResponse {
            view: Some(pb::View {
                nodes: vec![pb::Node {
                    name: "b".into(),
                    state: pb::NodeState::Up as i32,
                    generation: 7,
                    links: vec![pb::Link {
                        index: 0,
                        state: pb::LinkState::Up as i32,
                        loss: 0.25,
                        received: 42,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                quorum: Some(pb::Quorum {
                    quorate: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            rejected: [("bad_tag".to_owned(), 3)].into(),
            counters: Some(pb::Counters {
                datagrams_sent: 11,
                stalls: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let events = EventCounters::default();
        let dead = pb::Event {
            kind: Some(pb::event::Kind::NodeDead(pb::NodeDead {
                node: "b".into(),
                reason: pb::node_dead::Reason::Silent as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        events.record(&dead);
        events.record(&dead);
        events.record(&pb::Event {
            kind: Some(pb::event::Kind::LinkDown(pb::LinkDown {
                node: "b".into(),
                link: 1,
                ..Default::default()
            })),
            ..Default::default()
        });
        events.record(&pb::Event {
            kind: Some(pb::event::Kind::Notice(pb::Notice {
                from: "b".into(),
                topic: "tandem.notice/v1".into(),
                ..Default::default()
            })),
            ..Default::default()
        });
        let text = render(&s, &events);
        for line in [
            "tandem_membership_notices_total{from=\"b\"} 1",
            "tandem_membership_node_alive{node=\"b\"} 1.0",
            "tandem_membership_node_generation{node=\"b\"} 7.0",
            "tandem_membership_link_loss_ratio{node=\"b\",link=\"0\"} 0.25",
            "tandem_membership_quorate 1.0",
            "tandem_membership_rejected_total{reason=\"bad_tag\"} 3",
            "tandem_membership_datagrams_sent_total 11",
            "tandem_membership_stalls_total 2",
            "tandem_membership_link_received_total{node=\"b\",link=\"0\"} 42",
            "tandem_membership_node_dead_total{node=\"b\",reason=\"silent\"} 2",
            "tandem_membership_link_transitions_total{node=\"b\",link=\"1\",state=\"down\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }
}
