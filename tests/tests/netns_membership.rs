//! Real `tandem-membership` daemons in network namespaces, with faults made by nftables
//! (see `tandem_tests::netns`). Skipped, with the reason printed, where namespaces cannot be
//! created (not root, no `ip`/`nft`).
use std::time::Duration;

use tandem_proto::membership::v1 as pb;
use tandem_tests::cluster::Binaries;
use tandem_tests::netns::net_or_skip;
use tandem_tests::netns::tandem::{TandemNet, Timing, node, node_is, quorate, rejected};

/// Faster than the defaults so the suite is short, with the same ten beats per dead window.
const TEST: Timing = Timing {
    interval: Duration::from_millis(50),
    warn_after: Duration::from_millis(250),
    dead_after: Duration::from_millis(500),
    init_dead: Duration::from_secs(5),
};

/// Generous bound for a state change that the protocol makes within `dead_after`.
const SETTLE: Duration = Duration::from_secs(5);

async fn cluster(
    hosts: usize,
    links: usize,
    names: &[&str],
    timing: Timing,
    witness: Option<usize>,
) -> Option<TandemNet> {
    let net = net_or_skip(hosts, links)?;
    let bins = Binaries::for_tests().expect("daemon binaries");
    let mut c = TandemNet::new(net, bins, names, timing, witness, false).expect("config");
    c.start_all().await.expect("start");
    for i in 0..names.len() {
        c.wait_status(i, Duration::from_secs(20), "all up", |s| {
            names.iter().all(|n| node_is(s, n, pb::NodeState::Up))
        })
        .await
        .expect("cluster up");
    }
    Some(c)
}

fn link_state(s: &pb::StatusResponse, name: &str, link: u32) -> Option<i32> {
    node(s, name)?
        .links
        .iter()
        .find(|l| l.index == link)
        .map(|l| l.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cut_link_is_reported_down_and_the_node_stays_up_until_both_are_cut() {
    let Some(c) = cluster(2, 2, &["a", "b"], TEST, None).await else {
        return;
    };
    c.net.cut_link(1, 0).expect("cut link 0 of b");
    let s = c
        .wait_status(0, SETTLE, "link 0 of b down", |s| {
            link_state(s, "b", 0) == Some(pb::LinkState::Down as i32)
        })
        .await
        .expect("link down reported");
    assert!(
        node_is(&s, "b", pb::NodeState::Up),
        "b still up over link 1: {:?}",
        node(&s, "b")
    );
    assert_eq!(link_state(&s, "b", 1), Some(pb::LinkState::Up as i32));
    // Stay up for a while on the remaining link: no flapping into dead.
    tokio::time::sleep(TEST.dead_after * 3).await;
    let s = c.status(0).await.expect("status");
    assert!(
        node_is(&s, "b", pb::NodeState::Up),
        "b up on one link: {:?}",
        node(&s, "b")
    );

    c.net.cut_link(1, 1).expect("cut link 1 of b");
    c.wait_status(0, SETTLE, "b dead", |s| {
        node_is(s, "b", pb::NodeState::Dead)
    })
    .await
    .expect("b dead when every link is silent");

    c.net.heal().expect("heal");
    let s = c
        .wait_status(0, SETTLE, "b up on both links", |s| {
            node_is(s, "b", pb::NodeState::Up)
                && link_state(s, "b", 0) == Some(pb::LinkState::Up as i32)
                && link_state(s, "b", 1) == Some(pb::LinkState::Up as i32)
        })
        .await
        .expect("healed");
    assert!(quorate(&s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_loses_quorum_the_majority_keeps_it_and_healing_restores_all() {
    let names = ["primary", "secondary", "witness"];
    let Some(c) = cluster(3, 2, &names, TEST, Some(2)).await else {
        return;
    };
    c.net.partition(0).expect("partition primary");
    c.wait_status(0, SETTLE, "primary alone without quorum", |s| {
        !quorate(s)
            && node_is(s, "secondary", pb::NodeState::Dead)
            && node_is(s, "witness", pb::NodeState::Dead)
    })
    .await
    .expect("minority side");
    for i in [1, 2] {
        c.wait_status(i, SETTLE, "majority quorate, primary dead", |s| {
            quorate(s) && node_is(s, "primary", pb::NodeState::Dead)
        })
        .await
        .expect("majority side");
    }
    // Quorum must not flap while the partition lasts.
    tokio::time::sleep(TEST.dead_after * 2).await;
    assert!(!quorate(&c.status(0).await.expect("status")));
    assert!(quorate(&c.status(1).await.expect("status")));

    c.net.heal().expect("heal");
    for i in 0..3 {
        c.wait_status(i, SETTLE, "all up and quorate", |s| {
            quorate(s) && names.iter().all(|n| node_is(s, n, pb::NodeState::Up))
        })
        .await
        .expect("healed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_loss_half_inbound_on_one_node_kills_nobody_total_inbound_loss_is_seen_by_that_node_only()
 {
    let Some(c) = cluster(2, 2, &["a", "b"], TEST, None).await else {
        return;
    };
    let mut watch = c
        .client(0)
        .await
        .expect("client")
        .watch(pb::WatchRequest {})
        .await
        .expect("Watch")
        .into_inner();
    let mut watch_b = c
        .client(1)
        .await
        .expect("client")
        .watch(pb::WatchRequest {})
        .await
        .expect("Watch")
        .into_inner();
    c.net.inbound_loss(1, 50).expect("50% into b");
    let collect = async |w: &mut tonic::Streaming<pb::WatchResponse>, dur: Duration| {
        let mut deaths = 0;
        let end = tokio::time::Instant::now() + dur;
        while let Ok(Ok(Some(m))) = tokio::time::timeout_at(end, w.message()).await {
            if let Some(pb::watch_response::Kind::Event(e)) = m.kind
                && let Some(pb::event::Kind::NodeDead(_)) = e.kind
            {
                deaths += 1;
            }
        }
        deaths
    };
    let (da, db) = tokio::join!(
        collect(&mut watch, Duration::from_secs(8)),
        collect(&mut watch_b, Duration::from_secs(8))
    );
    assert_eq!(
        (da, db),
        (0, 0),
        "no node declared dead at 50% one-way loss"
    );

    c.net.heal().expect("heal");
    c.net.inbound_loss(1, 100).expect("b deaf");
    c.wait_status(1, SETTLE, "b hears nobody", |s| {
        node_is(s, "a", pb::NodeState::Dead)
    })
    .await
    .expect("the deaf node sees its peer dead");
    c.net.heal().expect("heal");
    c.wait_status(1, SETTLE, "a up again", |s| {
        node_is(s, "a", pb::NodeState::Up)
    })
    .await
    .expect("heard again");
}

async fn counters(c: &TandemNet) -> Vec<pb::Counters> {
    let mut v = Vec::new();
    for i in 0..c.names.len() {
        v.push(
            c.status(i)
                .await
                .expect("status")
                .counters
                .expect("counters"),
        );
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_percent_loss_on_every_link_at_default_timing_causes_no_false_death() {
    // 60 s by default; TANDEM_LONG=1 runs 5 minutes.
    let secs = if std::env::var_os("TANDEM_LONG").is_some_and(|v| v == "1") {
        300
    } else {
        60
    };
    let Some(c) = cluster(2, 2, &["a", "b"], Timing::DEFAULT, None).await else {
        return;
    };
    let mut watches = Vec::new();
    for i in 0..2 {
        watches.push(
            c.client(i)
                .await
                .expect("client")
                .watch(pb::WatchRequest {})
                .await
                .expect("Watch")
                .into_inner(),
        );
    }
    let before = counters(&c).await;
    c.net.random_loss(20).expect("20% loss");
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut events = Vec::new();
    for w in &mut watches {
        let mut deaths = Vec::new();
        while let Ok(Ok(Some(m))) = tokio::time::timeout_at(end, w.message()).await {
            if let Some(pb::watch_response::Kind::Event(e)) = m.kind
                && let Some(k @ (pb::event::Kind::NodeDead(_) | pb::event::Kind::LinkDown(_))) =
                    e.kind
            {
                deaths.push(k);
            }
        }
        events.push(deaths);
    }
    let after = counters(&c).await;
    for i in 0..2 {
        let deaths = events[i]
            .iter()
            .filter(|k| matches!(k, pb::event::Kind::NodeDead(_)))
            .count();
        assert_eq!(deaths, 0, "false deaths on {}: {:?}", c.names[i], events[i]);
        // The loss was real: about 80% of what the peer sent arrived.
        let sent = (after[1 - i].datagrams_sent - before[1 - i].datagrams_sent) as f64;
        let got = (after[i].datagrams_received - before[i].datagrams_received) as f64;
        let share = got / sent.max(1.0);
        assert!(
            (0.7..0.9).contains(&share),
            "{} received {got} of {sent} datagrams at 20% loss",
            c.names[i]
        );
    }
    println!(
        "20% loss for {secs}s: link-down events {:?}",
        events.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

/// Sends `payloads` to `to` from host `from` (an ephemeral port on its link-0 address).
fn replay(c: &TandemNet, from: usize, to: std::net::SocketAddrV4, payloads: &[Vec<u8>]) {
    let h = c.net.host(from).expect("host");
    let s = h
        .udp_socket(std::net::SocketAddr::from((h.addrs[0], 0)))
        .expect("replay socket");
    for p in payloads {
        s.send_to(p, to).expect("replay");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Replays `payloads` from node 0 to b (`to`) and waits until b has counted every one as
/// rejected; b's status then.
async fn replay_all_rejected(
    c: &TandemNet,
    to: std::net::SocketAddrV4,
    payloads: &[Vec<u8>],
    what: &str,
) -> pb::StatusResponse {
    let before = c.status(1).await.expect("status");
    replay(c, 0, to, payloads);
    c.wait_status(1, SETTLE, what, |s| {
        rejected(s) >= rejected(&before) + payloads.len() as u64
    })
    .await
    .expect(what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_heartbeats_replayed_later_are_rejected_and_change_nothing() {
    // Checked before anything starts: `ip netns exec tcpdump` spawns fine without tcpdump.
    tandem_tests::skip_unless!(tandem_tests::require::tools(&["tcpdump"]));
    let Some(mut c) = cluster(2, 1, &["a", "b"], TEST, None).await else {
        return;
    };
    // Capture what reaches b on its link with tcpdump (-U: every packet flushed at once).
    let pcap_file = c.dir().join("b.pcap");
    let mut cmd = c.net.host(1).expect("b").command("tcpdump");
    cmd.args(["-i", "l0", "-U", "-n", "-w"])
        .arg(&pcap_file)
        .args(["udp", "port", "694"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let pid = c.net.spawn(cmd).expect("tcpdump started");
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.net.kill9(pid);
    let bytes = std::fs::read(&pcap_file).expect("capture written");
    let from_a: Vec<Vec<u8>> = tandem_tests::netns::pcap::udp_datagrams(&bytes)
        .expect("parse capture")
        .into_iter()
        .filter(|d| *d.src.ip() == c.net.hosts[0].addrs[0])
        .map(|d| d.payload)
        .collect();
    assert!(
        from_a.len() >= 10,
        "captured only {} datagrams from a",
        from_a.len()
    );
    let b_addr =
        std::net::SocketAddrV4::new(c.net.hosts[1].addrs[0], tandem_tests::netns::tandem::PORT);

    // 1. Replayed while a runs: every copy is a duplicate or too old.
    let gen_a = node(&c.status(1).await.expect("status"), "a")
        .expect("a")
        .generation;
    let after = replay_all_rejected(&c, b_addr, &from_a, "replays rejected").await;
    assert_eq!(node(&after, "a").expect("a").generation, gen_a);
    assert!(node_is(&after, "a", pb::NodeState::Up));
    println!("rejected after live replay: {:?}", after.rejected);

    // 2. a crashes: the old datagrams must not bring it back.
    c.crash(0);
    c.wait_status(1, SETTLE, "a dead", |s| {
        node_is(s, "a", pb::NodeState::Dead)
    })
    .await
    .expect("a dead");
    let before = c.status(1).await.expect("status");
    replay(&c, 0, b_addr, &from_a);
    tokio::time::sleep(TEST.dead_after).await;
    let after = c.status(1).await.expect("status");
    assert!(
        rejected(&after) >= rejected(&before) + from_a.len() as u64,
        "replays after the crash not all rejected: {:?} -> {:?}",
        before.rejected,
        after.rejected
    );
    assert!(
        node_is(&after, "a", pb::NodeState::Dead),
        "a revived by a replay: {:?}",
        node(&after, "a")
    );

    // 3. a restarts (new generation); the old incarnation's datagrams are refused.
    c.start(0).await.expect("restart a");
    let s = c
        .wait_status(1, SETTLE * 3, "a up again", |s| {
            node_is(s, "a", pb::NodeState::Up)
        })
        .await
        .expect("a back");
    let new_gen = node(&s, "a").expect("a").generation;
    assert!(new_gen > gen_a, "restart is a new generation");
    let after = replay_all_rejected(&c, b_addr, &from_a, "old generation rejected").await;
    assert_eq!(node(&after, "a").expect("a").generation, new_gen);
    assert!(node_is(&after, "a", pb::NodeState::Up));
    println!("rejected after restart replay: {:?}", after.rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resource_agent_takes_over_after_a_crash_and_fails_back_once() {
    let Some(net) = net_or_skip(2, 2) else { return };
    let bins = Binaries::for_tests().expect("daemon binaries");
    let mut c = TandemNet::new(net, bins, &["a", "b"], TEST, None, true).expect("config");
    c.start_all().await.expect("start");
    let held = |c: &TandemNet, i: usize| c.running(i) && !c.running(1 - i);
    let wait = async |c: &TandemNet, i: usize, what: &str| {
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        while !held(c, i) {
            assert!(
                tokio::time::Instant::now() < end,
                "{what}\n{}",
                c.log(1 - i)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait(&c, 0, "a (preferred) never held the resource alone").await;
    assert!(
        c.takeovers(1).is_empty(),
        "b started the resource while a ran"
    );

    let killed = c.crash(0);
    wait(&c, 1, "b never took over").await;
    let took = c.takeovers(1)[0]
        .duration_since(killed)
        .expect("takeover after the kill");
    println!("takeover {took:?} after SIGKILL");
    assert!(took < Duration::from_secs(5), "takeover took {took:?}");

    c.start(0).await.expect("restart a");
    wait(&c, 0, "no failback to a").await;
    // Exactly one failback start on a, one takeover on b: no flapping.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        c.takeovers(0).len(),
        2,
        "a started it at boot and at failback"
    );
    assert_eq!(c.takeovers(1).len(), 1);
    assert!(held(&c, 0));
}
