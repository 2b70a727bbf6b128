//! Targeted behaviour of the core with two or three nodes wired back to back.
use super::*;

const KEY: &[u8] = b"unit-test-key-unit-test-key-0123";

fn timing() -> Timing {
    Timing {
        interval: Duration::from_millis(100),
        warn_after: Duration::from_millis(500),
        dead_after: Duration::from_secs(1),
        init_dead: Duration::from_secs(3),
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i as u8 + 1], 694))
}

fn settings(n: usize, local: usize, generation: u64) -> Settings {
    Settings {
        cluster: "web".into(),
        nodes: (0..n)
            .map(|i| NodeSpec {
                name: format!("n{i}"),
                addresses: vec![addr(i)],
                role: Role::Member,
            })
            .collect(),
        local: format!("n{local}"),
        timing: timing(),
        quorum: if n == 2 {
            QuorumPolicy::TwoNode
        } else {
            QuorumPolicy::Majority
        },
        generation,
        keys: KeyRing::new((1, KEY), &[]),
    }
}

fn ms(x: u64) -> Time {
    Duration::from_millis(x)
}

/// Delivers every queued datagram between the cores, without loss.
fn exchange(cores: &mut [Core], now: Time) {
    loop {
        let mut moved = false;
        for i in 0..cores.len() {
            while let Some(t) = cores[i].poll_transmit() {
                let to = (0..cores.len()).find(|&j| addr(j) == t.dest).unwrap();
                cores[to].handle_datagram(now, 0, addr(i), &t.bytes);
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
}

fn events(c: &mut Core) -> Vec<EventKind> {
    std::iter::from_fn(|| c.poll_event())
        .map(|e| e.kind)
        .collect()
}

fn rejected(c: &Core, r: Reject) -> u64 {
    c.rejections()
        .into_iter()
        .find(|(x, _)| *x == r)
        .map(|(_, n)| n)
        .unwrap()
}

/// Ticks every core at `now` and delivers what they send.
fn step(cores: &mut [Core], now: Time) {
    for c in cores.iter_mut() {
        c.handle_timeout(now);
    }
    exchange(cores, now);
}

/// Two nodes that confirmed each other: the first heartbeats only tell each side the
/// other's generation, the second round (at 100 ms) makes them UP.
fn pair() -> Vec<Core> {
    let mut cores = vec![
        Core::new(settings(2, 0, 10), ms(0)).unwrap(),
        Core::new(settings(2, 1, 20), ms(0)).unwrap(),
    ];
    step(&mut cores, ms(0));
    assert_eq!(cores[0].node_state(1).0, NodeState::Unknown);
    step(&mut cores, ms(100));
    assert_eq!(cores[0].node_state(1).0, NodeState::Up);
    assert_eq!(cores[1].node_state(0).0, NodeState::Up);
    cores
}

#[test]
fn peers_come_up_with_link_and_generation() {
    let mut cores = pair();
    let ev = events(&mut cores[0]);
    assert!(ev.contains(&EventKind::NodeUp {
        node: 1,
        generation: 20,
        new_incarnation: false,
        previous_generation: 0
    }));
    assert!(ev.contains(&EventKind::LinkUp { node: 1, link: 0 }));
    assert_eq!(cores[0].node_state(1), (NodeState::Up, 20));
}

#[test]
fn peer_is_late_then_dead_after_silence_on_all_links() {
    let mut cores = pair();
    events(&mut cores[0]);
    // Node 1 falls silent after 100 ms; node 0 keeps ticking at its deadlines.
    let mut now = ms(100);
    let mut late_at = None;
    let mut dead_at = None;
    while now < ms(3000) {
        now = cores[0].next_deadline().unwrap();
        cores[0].handle_timeout(now);
        while cores[0].poll_transmit().is_some() {}
        for e in events(&mut cores[0]) {
            match e {
                EventKind::NodeLate { .. } => late_at = Some(now),
                EventKind::NodeDead { reason, .. } => {
                    assert_eq!(reason, DeadReason::Silent);
                    dead_at = Some(now);
                }
                _ => {}
            }
        }
        if dead_at.is_some() {
            break;
        }
    }
    assert_eq!(late_at, Some(ms(600)));
    assert_eq!(dead_at, Some(ms(1100)));
    assert_eq!(cores[0].unacked(1), 0);
}

#[test]
fn restart_before_dead_after_is_a_new_incarnation() {
    let mut cores = pair();
    events(&mut cores[0]);
    cores[1] = Core::new(settings(2, 1, 21), ms(150)).unwrap();
    step(&mut cores, ms(150));
    step(&mut cores, ms(200));
    step(&mut cores, ms(250));
    assert!(events(&mut cores[0]).contains(&EventKind::NodeUp {
        node: 1,
        generation: 21,
        new_incarnation: true,
        previous_generation: 20
    }));
}

#[test]
fn clean_leave_is_dead_at_once_and_late_datagrams_do_not_revive_it() {
    let mut cores = pair();
    events(&mut cores[0]);
    // A heartbeat of the leaving incarnation, delayed past its "leaving" datagram.
    cores[1].handle_timeout(ms(200));
    let late = cores[1].poll_transmit().unwrap();
    cores[1].leave(ms(250));
    exchange(&mut cores, ms(250));
    assert!(events(&mut cores[0]).iter().any(|e| matches!(
        e,
        EventKind::NodeDead {
            reason: DeadReason::Left,
            ..
        }
    )));
    cores[0].handle_datagram(ms(260), 0, addr(1), &late.bytes);
    assert_eq!(cores[0].node_state(1).0, NodeState::Dead);
    assert_eq!(rejected(&cores[0], Reject::OldGeneration), 1);
    assert_eq!(cores[1].next_deadline(), None);
}

#[test]
fn bad_input_is_counted_by_reason_and_changes_nothing() {
    let mut cores = pair();
    events(&mut cores[0]);
    cores[1].handle_timeout(ms(200));
    let good = cores[1].poll_transmit().unwrap().bytes;
    let c = &mut cores[0];
    let src = addr(1);
    c.handle_datagram(ms(101), 0, src, &good);
    c.handle_datagram(ms(102), 0, src, &good);
    assert_eq!(rejected(c, Reject::Replay), 1);
    let mut forged = good.clone();
    let n = forged.len();
    forged[n - 1] ^= 1;
    c.handle_datagram(ms(103), 0, src, &forged);
    assert_eq!(rejected(c, Reject::BadTag), 1);
    c.handle_datagram(ms(104), 0, src, b"random bytes \x00\xff");
    assert_eq!(rejected(c, Reject::BadVersion), 1);
    c.handle_datagram(ms(104), 0, src, &[1u8; 2000]);
    assert_eq!(rejected(c, Reject::Oversize), 1);
    c.handle_datagram(ms(104), 0, src, &[1u8; 20]);
    assert_eq!(rejected(c, Reject::Malformed), 1);
    let keys = KeyRing::new((1, KEY), &[]);
    let header = |cluster, sender, receiver| Header {
        version: wire::VERSION,
        key_id: 1,
        generation: 20,
        seq: 999,
        cluster,
        sender,
        receiver,
    };
    let other_cluster = wire::seal(&keys, &header("db", "n1", "n0"), &[]).unwrap();
    c.handle_datagram(ms(105), 0, src, &other_cluster);
    assert_eq!(rejected(c, Reject::UnknownCluster), 1);
    let stranger = wire::seal(&keys, &header("web", "mallory", "n0"), &[]).unwrap();
    c.handle_datagram(ms(105), 0, src, &stranger);
    assert_eq!(rejected(c, Reject::UnknownSender), 1);
    let elsewhere = wire::seal(&keys, &header("web", "n1", "n7"), &[]).unwrap();
    c.handle_datagram(ms(105), 0, src, &elsewhere);
    assert_eq!(rejected(c, Reject::WrongReceiver), 1);
    let other_key = KeyRing::new((9, b"another-key-another-key-another!"), &[]);
    let unknown_key = wire::seal(&other_key, &header("web", "n1", "n0"), &[]).unwrap();
    c.handle_datagram(ms(105), 0, src, &unknown_key);
    assert_eq!(rejected(c, Reject::UnknownKey), 1);
    // Authentic but with a payload that is not a Packet.
    let garbage = wire::seal(&keys, &header("web", "n1", "n0"), &[0xff, 0xff, 0xff]).unwrap();
    c.handle_datagram(ms(106), 0, src, &garbage);
    assert_eq!(rejected(c, Reject::Malformed), 2);
    assert!(events(c).is_empty());
    assert_eq!(c.node_state(1), (NodeState::Up, 20));
}

#[test]
fn messages_are_delivered_in_order_once_and_acked() {
    let mut cores = pair();
    for i in 0..5u8 {
        let to = cores[0].send(ms(10), Some("n1"), "topic", &[i]).unwrap();
        assert_eq!(to, vec![1]);
    }
    // Deliver node 0's datagrams twice each, in reverse order.
    let mut ds: Vec<Transmit> = std::iter::from_fn(|| cores[0].poll_transmit()).collect();
    ds.reverse();
    for d in ds.iter().chain(ds.iter()) {
        cores[1].handle_datagram(ms(11), 0, addr(0), &d.bytes);
    }
    let got: Vec<(u64, Vec<u8>)> = std::iter::from_fn(|| cores[1].poll_delivery())
        .map(|d| (d.seq, d.payload))
        .collect();
    assert_eq!(
        got,
        (0..5u8)
            .map(|i| (i as u64 + 1, vec![i]))
            .collect::<Vec<_>>()
    );
    exchange(&mut cores, ms(12));
    assert_eq!(cores[0].unacked(1), 0);
}

#[test]
fn send_limits_are_enforced() {
    let mut cores = pair();
    let c = &mut cores[0];
    assert_eq!(
        c.send(ms(5), Some("n1"), "", b"x"),
        Err(SendError::Topic(0))
    );
    let long = "t".repeat(65);
    assert_eq!(
        c.send(ms(5), Some("n1"), &long, b"x"),
        Err(SendError::Topic(65))
    );
    assert_eq!(
        c.send(ms(5), Some("n1"), "t", &[0; 901]),
        Err(SendError::Payload(901))
    );
    assert_eq!(c.send(ms(5), Some("n0"), "t", b"x"), Err(SendError::ToSelf));
    assert!(matches!(
        c.send(ms(5), Some("zz"), "t", b"x"),
        Err(SendError::UnknownNode(_))
    ));
    for _ in 0..MAX_UNACKED {
        c.send(ms(5), Some("n1"), "t", &[0; 900]).unwrap();
    }
    assert_eq!(
        c.send(ms(5), Some("n1"), "t", b"x"),
        Err(SendError::QueueFull("n1".into()))
    );
    // Every datagram stayed under the limit, even with full-size messages.
    assert!(std::iter::from_fn(|| c.poll_transmit()).all(|t| t.bytes.len() <= wire::MAX_DATAGRAM));
}

#[test]
fn majority_quorum_is_lost_and_regained() {
    let mut cores: Vec<Core> = (0..3)
        .map(|i| Core::new(settings(3, i, 5 + i as u64), ms(0)).unwrap())
        .collect();
    assert!(!cores[0].quorum().quorate, "alone of three");
    step(&mut cores, ms(0));
    step(&mut cores, ms(100));
    assert!(events(&mut cores[0]).iter().any(|e| matches!(
        e,
        EventKind::QuorumChanged(Quorum {
            quorate: true,
            alive: 2..,
            ..
        })
    )));
    // Nodes 1 and 2 fall silent: node 0 loses quorum when they are dead.
    let mut now = ms(100);
    while now < ms(1500) {
        now = cores[0].next_deadline().unwrap();
        cores[0].handle_timeout(now);
        while cores[0].poll_transmit().is_some() {}
    }
    assert_eq!(
        cores[0].quorum(),
        Quorum {
            policy: QuorumPolicy::Majority,
            quorate: false,
            voters: 3,
            alive: 1,
            needed: 2
        }
    );
}

#[test]
fn rtt_is_measured_from_echoes() {
    let mut cores = pair();
    for round in 2..5u64 {
        let t = ms(100 * round);
        cores[0].handle_timeout(t);
        let d = cores[0].poll_transmit().unwrap();
        cores[1].handle_datagram(t + ms(3), 0, addr(0), &d.bytes);
        cores[1].handle_timeout(t + ms(5));
        while let Some(d) = cores[1].poll_transmit() {
            cores[0].handle_datagram(t + ms(8), 0, addr(1), &d.bytes);
        }
    }
    // 3 ms out, 3 ms back; the 2 ms the peer held it are not counted.
    let rtt = cores[0].node_view(1, ms(500)).links[0].rtt.unwrap();
    assert_eq!(rtt, ms(6));
}

#[test]
fn settings_are_checked() {
    let mut s = settings(2, 0, 1);
    s.local = "nope".into();
    assert!(matches!(
        Core::new(s, ms(0)),
        Err(SettingsError::UnknownLocal(_))
    ));
    let mut s = settings(2, 0, 1);
    s.cluster = "c".repeat(200);
    assert!(matches!(
        Core::new(s, ms(0)),
        Err(SettingsError::TooLarge { .. })
    ));
    assert_eq!(
        Core::new(settings(2, 0, 0), ms(0)).err(),
        Some(SettingsError::ZeroGeneration)
    );
}

#[test]
fn datagrams_captured_before_a_restart_do_not_prove_a_peer_alive() {
    let mut cores = pair();
    cores[1].handle_timeout(ms(200));
    let captured = cores[1].poll_transmit().unwrap().bytes;
    // Node 0 restarts and node 1 is gone: a replay of node 1's old heartbeat passes the
    // (fresh) replay window but names node 0's previous generation, so it proves nothing.
    cores[0] = Core::new(settings(2, 0, 11), ms(300)).unwrap();
    cores[0].handle_datagram(ms(301), 0, addr(1), &captured);
    assert_eq!(cores[0].node_state(1).0, NodeState::Unknown);
    assert!(events(&mut cores[0]).is_empty());
}

/// Runs both cores at their deadlines from `from` to `until`, delivering everything, except
/// that `frozen` (if any) neither ticks nor receives: its process is stopped.
fn run_pair(cores: &mut [Core], from: Time, until: Time, frozen: Option<usize>) -> Time {
    let mut now = from;
    loop {
        let next = (0..cores.len())
            .filter(|&i| Some(i) != frozen)
            .filter_map(|i| cores[i].next_deadline())
            .min()
            .unwrap();
        if next > until {
            return now;
        }
        now = next;
        for (i, c) in cores.iter_mut().enumerate() {
            if Some(i) != frozen {
                c.handle_timeout(now);
            }
        }
        for i in 0..cores.len() {
            while let Some(t) = cores[i].poll_transmit() {
                let to = (0..cores.len()).find(|&j| addr(j) == t.dest).unwrap();
                if Some(to) != frozen {
                    cores[to].handle_datagram(now, 0, addr(i), &t.bytes);
                }
            }
        }
    }
}

fn deaths(c: &mut Core) -> Vec<EventKind> {
    events(c)
        .into_iter()
        .filter(|e| matches!(e, EventKind::NodeDead { .. }))
        .collect()
}

#[test]
fn a_node_stalled_past_dead_after_does_not_declare_its_live_peer_dead() {
    let mut cores = pair();
    let now = run_pair(&mut cores, ms(100), ms(1000), None);
    events(&mut cores[0]);
    events(&mut cores[1]);
    // Node 0 is frozen for 3 s (SIGSTOP): node 1 rightly declares it dead.
    let thaw = ms(4000);
    run_pair(&mut cores, now, thaw, Some(0));
    assert_eq!(deaths(&mut cores[1]).len(), 1);
    // Thawed, node 0's first input is its overdue timer: from its point of view node 1
    // was silent for 3 s, but so was node 0 itself.
    cores[0].handle_timeout(thaw);
    assert_eq!(deaths(&mut cores[0]), vec![]);
    assert_eq!(cores[0].node_state(1).0, NodeState::Up);
    assert_eq!(cores[0].counters().stalls, 1);
    // The heartbeats resume and both see each other up; node 0 never saw node 1 dead.
    exchange(&mut cores, thaw);
    run_pair(&mut cores, thaw, ms(6000), None);
    assert_eq!(deaths(&mut cores[0]), vec![]);
    assert_eq!(cores[0].node_state(1).0, NodeState::Up);
    assert_eq!(cores[1].node_state(0).0, NodeState::Up);
    assert_eq!(cores[0].counters().stalls, 1, "no stall while running");
}

#[test]
fn a_peer_that_died_while_this_node_was_stalled_is_declared_dead_on_running_time() {
    let mut cores = pair();
    events(&mut cores[0]);
    // Node 1 is last heard at 100 ms, then dies; node 0 ticks until 400 ms, then is
    // frozen until 5400 ms: a gap of 5000 ms, of which 4900 ms are not node 1's silence.
    let mut now = ms(100);
    while now < ms(400) {
        now = cores[0].next_deadline().unwrap();
        cores[0].handle_timeout(now);
    }
    assert_eq!(now, ms(400));
    cores[0].handle_timeout(ms(5400));
    assert_eq!(deaths(&mut cores[0]), vec![]);
    // Silence counted: 300 ms before the stall, one interval of it, then running time:
    // dead at 100 + 4900 + 1000 ms, not earlier.
    let mut dead_at = None;
    now = ms(5400);
    while dead_at.is_none() && now < ms(20_000) {
        now = cores[0].next_deadline().unwrap();
        cores[0].handle_timeout(now);
        while cores[0].poll_transmit().is_some() {}
        if !deaths(&mut cores[0]).is_empty() {
            dead_at = Some(now);
        }
    }
    assert_eq!(dead_at, Some(ms(6000)));
}

#[test]
fn a_gap_of_two_intervals_is_not_a_stall() {
    let mut cores = pair();
    events(&mut cores[0]);
    // Node 1 falls silent after 100 ms; node 0 is called only every 200 ms (late, but
    // running): detection is exact, as without gaps.
    let mut now = ms(100);
    let mut dead_at = None;
    while dead_at.is_none() && now < ms(3000) {
        now += ms(200);
        cores[0].handle_timeout(now);
        while cores[0].poll_transmit().is_some() {}
        if !deaths(&mut cores[0]).is_empty() {
            dead_at = Some(now);
        }
    }
    assert_eq!(dead_at, Some(ms(1100)));
    assert_eq!(cores[0].counters().stalls, 0);
}

fn notices(c: &Core) -> Vec<(u64, usize, String, Vec<u8>)> {
    c.notices()
        .map(|n| (n.id, n.from, n.topic.clone(), n.payload.clone()))
        .collect()
}

#[test]
fn a_notice_is_kept_once_by_its_sender_and_each_receiver_and_announced() {
    let mut cores = pair();
    events(&mut cores[0]);
    events(&mut cores[1]);
    // Not UTF-8: membership never reads a notice's payload.
    let payload = vec![0xff, 0xfe, b'{'];
    let to = cores[0]
        .send(ms(110), None, "tandem.notice/v1", &payload)
        .unwrap();
    assert_eq!(to, vec![1]);
    cores[0]
        .send(ms(110), None, "tandem.agent/v1", b"x")
        .unwrap();
    // Every datagram delivered twice: the duplicate is neither delivered nor kept again.
    let ds: Vec<Transmit> = std::iter::from_fn(|| cores[0].poll_transmit()).collect();
    for d in ds.iter().chain(ds.iter()) {
        cores[1].handle_datagram(ms(111), 0, addr(0), &d.bytes);
    }
    let topic = "tandem.notice/v1".to_owned();
    assert_eq!(notices(&cores[0]), [(1, 0, topic.clone(), payload.clone())]);
    assert_eq!(notices(&cores[1]), [(1, 0, topic.clone(), payload.clone())]);
    let kept = cores[1].notices().next().unwrap().clone();
    assert_eq!((kept.from_generation, kept.at), (10, ms(111)));
    for c in &mut cores {
        let ev = events(c);
        let announced: Vec<&EventKind> = ev
            .iter()
            .filter(|e| matches!(e, EventKind::Notice(_)))
            .collect();
        assert_eq!(announced.len(), 1, "{ev:?}");
        assert_eq!(c.counters().notices, 1);
    }
    // Delivered as any message, marked retained; the other topic is delivered, not kept.
    let got: Vec<(String, bool)> = std::iter::from_fn(|| cores[1].poll_delivery())
        .map(|d| (d.topic, d.retained))
        .collect();
    assert_eq!(got, [(topic, true), ("tandem.agent/v1".to_owned(), false)]);
}

#[test]
fn a_notice_event_takes_the_next_seq_and_leaves_the_view_alone() {
    let mut cores = pair();
    events(&mut cores[0]);
    let (seq, view) = (cores[0].last_seq(), cores[0].view_id());
    cores[0]
        .send(ms(110), Some("n1"), "tandem.notice/x", b"{}")
        .unwrap();
    let e = cores[0].poll_event().unwrap();
    assert_eq!((e.seq, e.view_id), (seq + 1, view));
    assert_eq!(cores[0].view_id(), view);
    assert!(matches!(e.kind, EventKind::Notice(n) if n.id == 1 && n.from == 0));
}

#[test]
fn only_the_last_sixteen_notices_are_kept() {
    let mut cores = pair();
    for i in 0..20u8 {
        cores[0]
            .send(ms(110), None, "tandem.notice/v1", &[i])
            .unwrap();
        exchange(&mut cores, ms(110));
    }
    for c in &cores {
        let kept = notices(c);
        assert_eq!(kept.len(), notice::RETAINED);
        assert_eq!(kept[0].0, 5);
        assert_eq!(kept[0].3, vec![4]);
        assert_eq!(kept[15].3, vec![19]);
        assert_eq!(c.counters().notices, 20);
    }
}

#[test]
fn an_oversized_or_refused_notice_is_not_kept() {
    let mut cores = pair();
    let c = &mut cores[0];
    assert_eq!(
        c.send(ms(110), None, "tandem.notice/v1", &[0; 901]),
        Err(SendError::Payload(901))
    );
    assert_eq!(
        c.send(ms(110), Some("n0"), "tandem.notice/v1", b"x"),
        Err(SendError::ToSelf)
    );
    assert!(notices(c).is_empty());
    assert!(std::iter::from_fn(|| c.poll_event()).all(|e| !matches!(e.kind, EventKind::Notice(_))));
}

/// Authentic datagrams (signed with the cluster key) whose notice is over the limit or whose
/// topic is not UTF-8 are rejected as malformed; nothing is kept, nothing panics.
#[test]
fn a_forged_notice_over_the_limits_is_rejected_and_not_kept() {
    let mut cores = pair();
    events(&mut cores[0]);
    let keys = KeyRing::new((1, KEY), &[]);
    let seal = |seq: u64, packet: &msg::Packet| {
        let header = Header {
            version: wire::VERSION,
            key_id: 1,
            generation: 20,
            seq,
            cluster: "web",
            sender: "n1",
            receiver: "n0",
        };
        wire::seal(&keys, &header, &packet.encode_to_vec()).unwrap()
    };
    let packet = |payload: Vec<u8>| msg::Packet {
        receiver_generation: 10,
        data_base: 1,
        data: vec![msg::Data {
            seq: 1,
            topic: "tandem.notice/v1".into(),
            payload,
            broadcast: true,
        }],
        ..Default::default()
    };
    let c = &mut cores[0];
    c.handle_datagram(ms(120), 0, addr(1), &seal(900, &packet(vec![b'x'; 901])));
    assert_eq!(rejected(c, Reject::Malformed), 1);
    let mut bytes = packet(b"{}".to_vec()).encode_to_vec();
    let at = bytes.windows(6).position(|w| w == b"notice").unwrap();
    bytes[at] = 0xff;
    let header = Header {
        version: wire::VERSION,
        key_id: 1,
        generation: 20,
        seq: 901,
        cluster: "web",
        sender: "n1",
        receiver: "n0",
    };
    let non_utf8 = wire::seal(&keys, &header, &bytes).unwrap();
    c.handle_datagram(ms(121), 0, addr(1), &non_utf8);
    assert_eq!(rejected(c, Reject::Malformed), 2);
    assert!(notices(c).is_empty());
    assert!(c.poll_delivery().is_none());
    assert!(events(c).is_empty());
}
