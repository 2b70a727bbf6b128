//! The membership client: `Watch` and `Subscribe` on membership's socket, reconnecting with
//! backoff, and `Send` of the core's messages.
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use tandem_proto::membership::v1 as mpb;
use tandem_proto::membership::v1::membership_client::MembershipClient;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::debug;

use super::driver::Event;
use crate::core::{DeathReason, MemberNode, MemberState, Membership, Quorum, TOPIC};

/// Reconnect backoff towards membership: first and largest delay (jittered).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Membership's snapshot as the core reads it.
fn snapshot(v: mpb::View) -> Membership {
    Membership::Snapshot {
        quorum: quorum(v.quorum),
        nodes: v
            .nodes
            .into_iter()
            .map(|n| MemberNode {
                state: match mpb::NodeState::try_from(n.state) {
                    Ok(mpb::NodeState::Up) => MemberState::Up,
                    Ok(mpb::NodeState::Late) => MemberState::Late,
                    _ => MemberState::Dead,
                },
                name: n.name,
                generation: n.generation,
            })
            .collect(),
    }
}

fn quorum(q: Option<mpb::Quorum>) -> Quorum {
    q.map_or(
        Quorum {
            quorate: false,
            needed: 0,
        },
        |q| Quorum {
            quorate: q.quorate,
            needed: q.needed,
        },
    )
}

/// One of membership's events as the core reads it (`None`: nothing the core uses, such
/// as a link's state); `Err` on a gap in the sequence (resubscribe for a fresh snapshot).
fn event(e: mpb::Event, last_seq: &mut u64) -> Result<Option<Membership>, String> {
    if e.seq != *last_seq + 1 {
        return Err(format!(
            "watch event {} after {}: events were lost",
            e.seq, last_seq
        ));
    }
    *last_seq = e.seq;
    use mpb::event::Kind as K;
    Ok(match e.kind {
        Some(K::NodeUp(u)) => Some(Membership::NodeUp {
            node: u.node,
            generation: u.generation,
        }),
        Some(K::NodeLate(l)) => Some(Membership::NodeLate { node: l.node }),
        Some(K::NodeDead(d)) => Some(Membership::NodeDead {
            reason: match mpb::node_dead::Reason::try_from(d.reason) {
                Ok(mpb::node_dead::Reason::Left) => DeathReason::Left,
                Ok(mpb::node_dead::Reason::NeverHeard) => DeathReason::NeverHeard,
                _ => DeathReason::Silent,
            },
            node: d.node,
            generation: d.generation,
        }),
        Some(K::QuorumChanged(q)) => Some(Membership::QuorumChanged(quorum(q.quorum))),
        Some(K::LinkUp(_) | K::LinkDown(_) | K::Notice(_)) | None => None,
    })
}

async fn membership_session(
    path: &Path,
    tx: &mpsc::Sender<Event>,
    client_tx: &watch::Sender<Option<MembershipClient<Channel>>>,
) -> Result<(), String> {
    let channel = tandem_proto::uds::connect(path)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = MembershipClient::new(channel);
    let mut watch_stream = client
        .watch(mpb::WatchRequest {})
        .await
        .map_err(|s| format!("watch: {}", s.message()))?
        .into_inner();
    let mut sub = client
        .subscribe(mpb::SubscribeRequest {
            topics: vec![TOPIC.into()],
        })
        .await
        .map_err(|s| format!("subscribe: {}", s.message()))?
        .into_inner();
    client_tx.send_replace(Some(client));
    // The sequence number of the last event; `None` until the snapshot.
    let mut seq: Option<u64> = None;
    loop {
        tokio::select! {
            m = watch_stream.message() => {
                let resp = m.map_err(|s| format!("watch: {}", s.message()))?.ok_or("watch stream ended")?;
                let news = match resp.kind {
                    Some(mpb::watch_response::Kind::Snapshot(v)) => {
                        seq = Some(resp.snapshot_seq);
                        Some(snapshot(v))
                    }
                    Some(mpb::watch_response::Kind::Event(e)) => {
                        let last = seq.as_mut().ok_or("watch stream began without a snapshot")?;
                        event(e, last)?
                    }
                    None => None,
                };
                if let Some(m) = news {
                    tx.send(Event::Membership(m)).await.map_err(|_| "shutting down")?;
                }
            }
            m = sub.message() => {
                let msg = m.map_err(|s| format!("subscribe: {}", s.message()))?.ok_or("subscribe stream ended")?;
                tx.send(Event::Message { from: msg.from, generation: msg.from_generation, payload: msg.payload })
                    .await
                    .map_err(|_| "shutting down")?;
            }
        }
    }
}

pub(super) async fn membership_task(
    path: PathBuf,
    tx: mpsc::Sender<Event>,
    client_tx: watch::Sender<Option<MembershipClient<Channel>>>,
) {
    let mut delay = RECONNECT_MIN;
    loop {
        let started = Instant::now();
        let why = match membership_session(&path, &tx, &client_tx).await {
            Ok(()) => "session ended".to_owned(),
            Err(e) => e,
        };
        client_tx.send_replace(None);
        if tx.send(Event::Disconnected(why)).await.is_err() {
            return;
        }
        // A session that lasted resets the backoff; repeated failures grow it.
        if started.elapsed() > RECONNECT_MAX {
            delay = RECONNECT_MIN;
        }
        let jitter = rand::rng().random_range(0.5..1.0);
        tokio::time::sleep(delay.mul_f64(jitter)).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

pub(super) async fn sender_task(
    mut rx: mpsc::Receiver<(&'static str, Option<String>, Vec<u8>)>,
    client_rx: watch::Receiver<Option<MembershipClient<Channel>>>,
) {
    while let Some((topic, to, payload)) = rx.recv().await {
        let client = client_rx.borrow().clone();
        // Disconnected: dropped; the core re-announces periodically and on reconnect.
        let Some(mut client) = client else { continue };
        let req = mpb::SendRequest {
            to: to.unwrap_or_default(),
            topic: topic.into(),
            payload,
        };
        if let Err(s) = client.send(req).await {
            debug!(code = ?s.code(), error = %s.message(), "send to membership failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: mpb::NodeState, generation: u64) -> mpb::Node {
        mpb::Node {
            name: name.into(),
            state: state as i32,
            generation,
            ..Default::default()
        }
    }

    #[test]
    fn a_snapshot_reads_up_late_and_everything_else_as_dead() {
        let v = mpb::View {
            nodes: vec![
                node("a", mpb::NodeState::Up, 1),
                node("b", mpb::NodeState::Late, 2),
                node("c", mpb::NodeState::Unknown, 0),
                node("d", mpb::NodeState::Dead, 4),
            ],
            quorum: Some(mpb::Quorum {
                quorate: true,
                needed: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let Membership::Snapshot { quorum, nodes } = snapshot(v) else {
            panic!("a snapshot");
        };
        assert_eq!(
            quorum,
            Quorum {
                quorate: true,
                needed: 3
            }
        );
        let states: Vec<(&str, MemberState, u64)> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.state, n.generation))
            .collect();
        assert_eq!(
            states,
            [
                ("a", MemberState::Up, 1),
                ("b", MemberState::Late, 2),
                ("c", MemberState::Dead, 0),
                ("d", MemberState::Dead, 4)
            ]
        );
    }

    #[test]
    fn events_pass_as_they_come_with_the_reason_of_a_death_and_gaps_are_detected() {
        let mut seq = 5;
        let ev = |seq: u64, kind: mpb::event::Kind| mpb::Event {
            seq,
            kind: Some(kind),
            ..Default::default()
        };
        let up = ev(
            6,
            mpb::event::Kind::NodeUp(mpb::NodeUp {
                node: "b".into(),
                generation: 3,
                ..Default::default()
            }),
        );
        assert_eq!(
            event(up, &mut seq),
            Ok(Some(Membership::NodeUp {
                node: "b".into(),
                generation: 3
            }))
        );
        let link = ev(
            7,
            mpb::event::Kind::LinkDown(mpb::LinkDown {
                node: "b".into(),
                ..Default::default()
            }),
        );
        assert_eq!(event(link, &mut seq), Ok(None), "links are not the core's");
        let dead = |seq: u64, reason: mpb::node_dead::Reason| {
            ev(
                seq,
                mpb::event::Kind::NodeDead(mpb::NodeDead {
                    node: "b".into(),
                    generation: 3,
                    reason: reason as i32,
                    silent_for: None,
                }),
            )
        };
        assert_eq!(
            event(dead(8, mpb::node_dead::Reason::Left), &mut seq),
            Ok(Some(Membership::NodeDead {
                node: "b".into(),
                generation: 3,
                reason: DeathReason::Left
            }))
        );
        assert!(
            matches!(
                event(dead(9, mpb::node_dead::Reason::Silent), &mut seq),
                Ok(Some(Membership::NodeDead {
                    reason: DeathReason::Silent,
                    ..
                }))
            ),
            "a later silent death is a death"
        );
        assert!(
            event(dead(11, mpb::node_dead::Reason::Silent), &mut seq).is_err(),
            "seq 10 is missing"
        );
    }
}
