//! The membership client: `Watch` and `Subscribe` on membership's socket, reconnecting with
//! backoff, and `Send` of the core's messages.
use std::collections::BTreeSet;
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
use crate::core::{MemberNode, MembershipView, TOPIC};

/// Reconnect backoff towards membership: first and largest delay (jittered).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

fn member_view(v: &mpb::View, left: &BTreeSet<String>) -> MembershipView {
    MembershipView {
        quorate: v.quorum.as_ref().is_some_and(|q| q.quorate),
        nodes: v
            .nodes
            .iter()
            .map(|n| MemberNode {
                name: n.name.clone(),
                alive: matches!(
                    mpb::NodeState::try_from(n.state),
                    Ok(mpb::NodeState::Up | mpb::NodeState::Late)
                ),
                generation: n.generation,
            })
            .collect(),
        late: v
            .nodes
            .iter()
            .filter(|n| mpb::NodeState::try_from(n.state) == Ok(mpb::NodeState::Late))
            .map(|n| n.name.clone())
            .collect(),
        left: left.iter().cloned().collect(),
    }
}

/// Tracks which dead nodes left cleanly (see [`MembershipView::left`]).
fn note_left(left: &mut BTreeSet<String>, e: &mpb::Event) {
    use mpb::event::Kind as K;
    match &e.kind {
        Some(K::NodeDead(d)) => {
            if d.reason == mpb::node_dead::Reason::Left as i32 {
                left.insert(d.node.clone());
            } else {
                left.remove(&d.node);
            }
        }
        Some(K::NodeUp(u)) => {
            left.remove(&u.node);
        }
        _ => {}
    }
}

/// Folds one event into the view; `Err` on a gap in the sequence (resubscribe for a fresh
/// snapshot). Returns whether the view changed in a way the core cares about.
fn apply_event(view: &mut mpb::View, last_seq: &mut u64, e: mpb::Event) -> Result<bool, String> {
    if e.seq != *last_seq + 1 {
        return Err(format!(
            "watch event {} after {}: events were lost",
            e.seq, last_seq
        ));
    }
    *last_seq = e.seq;
    view.view_id = e.view_id;
    use mpb::event::Kind as K;
    let mut set = |name: &str, state: mpb::NodeState, generation: Option<u64>| {
        if let Some(n) = view.nodes.iter_mut().find(|n| n.name == name) {
            n.state = state as i32;
            if let Some(g) = generation {
                n.generation = g;
            }
        }
    };
    Ok(match e.kind {
        Some(K::NodeUp(u)) => {
            set(&u.node, mpb::NodeState::Up, Some(u.generation));
            true
        }
        Some(K::NodeLate(l)) => {
            set(&l.node, mpb::NodeState::Late, None);
            // The core needs to know who is late when a group is lost (a late node is
            // likely behind the partition that caused the loss).
            true
        }
        Some(K::NodeDead(d)) => {
            set(&d.node, mpb::NodeState::Dead, Some(d.generation));
            // Membership reports the quorum loss a death causes as a later event. Acting on
            // the death with the old quorum in between let a node cut off from the majority
            // start the group (and move the IP) for a moment: lose quorum here at once when
            // the votes left are too few; only membership's own event raises it again.
            if let Some(q) = view.quorum.as_mut() {
                let alive = view
                    .nodes
                    .iter()
                    .filter(|n| {
                        n.local
                            || matches!(
                                mpb::NodeState::try_from(n.state),
                                Ok(mpb::NodeState::Up | mpb::NodeState::Late)
                            )
                    })
                    .count();
                if alive < q.needed as usize {
                    q.quorate = false;
                    q.alive = alive as u32;
                }
            }
            true
        }
        Some(K::QuorumChanged(q)) => {
            view.quorum = q.quorum;
            true
        }
        Some(K::LinkUp(_) | K::LinkDown(_)) | None => false,
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
    let mut view: Option<mpb::View> = None;
    // Nodes dead by a clean leave (REASON_LEFT) not up since: the View has no reason, the
    // events do. A snapshot starts it empty (a node left before we connected is just dead).
    let mut left: BTreeSet<String> = BTreeSet::new();
    let mut seq = 0;
    loop {
        tokio::select! {
            m = watch_stream.message() => {
                let resp = m.map_err(|s| format!("watch: {}", s.message()))?.ok_or("watch stream ended")?;
                let changed = match resp.kind {
                    Some(mpb::watch_response::Kind::Snapshot(v)) => {
                        seq = resp.snapshot_seq;
                        view = Some(v);
                        left.clear();
                        true
                    }
                    Some(mpb::watch_response::Kind::Event(e)) => {
                        let v = view.as_mut().ok_or("watch stream began without a snapshot")?;
                        note_left(&mut left, &e);
                        apply_event(v, &mut seq, e)?
                    }
                    None => false,
                };
                if let (true, Some(v)) = (changed, &view) {
                    tx.send(Event::View(member_view(v, &left))).await.map_err(|_| "shutting down")?;
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
    mut rx: mpsc::Receiver<(Option<String>, Vec<u8>)>,
    client_rx: watch::Receiver<Option<MembershipClient<Channel>>>,
) {
    while let Some((to, payload)) = rx.recv().await {
        let client = client_rx.borrow().clone();
        // Disconnected: dropped; the core re-announces periodically and on reconnect.
        let Some(mut client) = client else { continue };
        let req = mpb::SendRequest {
            to: to.unwrap_or_default(),
            topic: TOPIC.into(),
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
    fn a_clean_leave_is_remembered_until_the_node_is_up_or_dies_otherwise() {
        let dead = |reason: mpb::node_dead::Reason| mpb::Event {
            kind: Some(mpb::event::Kind::NodeDead(mpb::NodeDead {
                node: "a".into(),
                generation: 1,
                reason: reason as i32,
                silent_for: None,
            })),
            ..Default::default()
        };
        let mut left = BTreeSet::new();
        note_left(&mut left, &dead(mpb::node_dead::Reason::Silent));
        assert!(left.is_empty());
        note_left(&mut left, &dead(mpb::node_dead::Reason::Left));
        assert!(left.contains("a"));
        let up = mpb::Event {
            kind: Some(mpb::event::Kind::NodeUp(mpb::NodeUp {
                node: "a".into(),
                generation: 2,
                ..Default::default()
            })),
            ..Default::default()
        };
        note_left(&mut left, &up);
        assert!(left.is_empty(), "back up: no longer left");
        note_left(&mut left, &dead(mpb::node_dead::Reason::Left));
        note_left(&mut left, &dead(mpb::node_dead::Reason::Silent));
        assert!(left.is_empty(), "a later silent death is a death");
    }

    #[test]
    fn events_fold_into_the_view_and_gaps_are_detected() {
        let mut v = mpb::View {
            nodes: vec![
                node("a", mpb::NodeState::Up, 1),
                node("b", mpb::NodeState::Unknown, 0),
            ],
            quorum: Some(mpb::Quorum {
                quorate: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut seq = 5;
        let up = mpb::Event {
            seq: 6,
            kind: Some(mpb::event::Kind::NodeUp(mpb::NodeUp {
                node: "b".into(),
                generation: 3,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(apply_event(&mut v, &mut seq, up), Ok(true));
        let mv = member_view(&v, &BTreeSet::new());
        assert!(mv.quorate);
        assert_eq!(
            mv.nodes[1],
            MemberNode {
                name: "b".into(),
                alive: true,
                generation: 3
            }
        );
        let late = mpb::Event {
            seq: 7,
            kind: Some(mpb::event::Kind::NodeLate(mpb::NodeLate {
                node: "b".into(),
                silent_for: None,
            })),
            ..Default::default()
        };
        assert_eq!(apply_event(&mut v, &mut seq, late), Ok(true));
        assert!(
            member_view(&v, &BTreeSet::new()).nodes[1].alive,
            "late still counts as alive"
        );
        let dead = mpb::Event {
            seq: 9,
            kind: Some(mpb::event::Kind::NodeDead(mpb::NodeDead {
                node: "b".into(),
                generation: 3,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(
            apply_event(&mut v, &mut seq, dead).is_err(),
            "seq 8 is missing"
        );
    }

    /// Found by tandem-soak (seed 5, fault 3, three nodes in namespaces): the node cut off
    /// from the majority saw both peers die, and acted on the second death before
    /// membership's QuorumChanged event arrived.
    #[test]
    fn a_death_leaving_too_few_votes_loses_quorum_before_membership_says_so() {
        let node = |name: &str, local: bool| mpb::Node {
            name: name.into(),
            state: mpb::NodeState::Up as i32,
            local,
            ..Default::default()
        };
        let mut v = mpb::View {
            nodes: vec![node("a", false), node("b", true), node("w", false)],
            quorum: Some(mpb::Quorum {
                quorate: true,
                voters: 3,
                alive: 3,
                needed: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut seq = 0;
        let dead = |seq: u64, name: &str| mpb::Event {
            seq,
            kind: Some(mpb::event::Kind::NodeDead(mpb::NodeDead {
                node: name.into(),
                generation: 1,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(apply_event(&mut v, &mut seq, dead(1, "a")), Ok(true));
        assert!(
            member_view(&v, &BTreeSet::new()).quorate,
            "b and w are a majority"
        );
        assert_eq!(apply_event(&mut v, &mut seq, dead(2, "w")), Ok(true));
        assert!(
            !member_view(&v, &BTreeSet::new()).quorate,
            "b alone is no majority"
        );
        // two_node (needed 1): the survivor stays quorate.
        let mut v2 = mpb::View {
            nodes: vec![node("a", false), node("b", true)],
            quorum: Some(mpb::Quorum {
                quorate: true,
                voters: 2,
                alive: 2,
                needed: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut seq = 0;
        assert_eq!(apply_event(&mut v2, &mut seq, dead(1, "a")), Ok(true));
        assert!(member_view(&v2, &BTreeSet::new()).quorate);
    }
}
