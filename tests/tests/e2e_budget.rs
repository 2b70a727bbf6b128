//! The failover path stays within the provider's request budget through real daemons
//! (issue 14 item 3): both nodes' agents spend one API token against the emulator's
//! DigitalOcean limits (250 requests a minute), with readiness checks every 50 ms that alone
//! would ask for thousands a minute. Their polling backs off to its share (half the minute,
//! split between the two nodes), nothing is refused with 429, and a kill -9 of the holder
//! still moves every IP.
use std::time::{Duration, SystemTime};

use tandem_tests::burst::{self, all_ips, last_moved, requests_between};
use tandem_tests::cluster::{Binaries, Cluster, Spec, wait_for};

/// DigitalOcean's limit per token in a minute, as the emulator enforces it.
const PER_MINUTE: usize = 250;
/// Steady state watched before the kill.
const STEADY: Duration = Duration::from_secs(8);
const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_back_off_to_their_share_and_the_failover_moves_every_ip_without_a_429() {
    let mut spec = burst::shape(
        Spec::fast(Binaries::for_tests().expect("daemon binaries")),
        burst::more_ips(1, 1),
        true,
    );
    spec.readiness_interval = Some(Duration::from_millis(50));
    let mut c = Cluster::start(spec).await.expect("cluster starts");
    let ips = all_ips(&c);
    assert_eq!(ips.len(), 3);
    assert!(
        c.wait_first_holds(LIMIT).await,
        "never settled{}",
        c.diagnostics()
    );

    // Three IPs × two or three reads × twenty checks a second × two nodes: about 8,000 a
    // minute wished; each node's routine share is a quarter of the minute's 250. Before the
    // share was split and the rounds postponed, the two nodes' reads took 450 a minute and
    // the provider refused the rest with 429.
    let from = SystemTime::now();
    tokio::time::sleep(STEADY).await;
    let killed = c.crash_node(0);
    let (steady, refused) = requests_between(&c, from, killed);
    eprintln!("steady state: {steady} requests in {STEADY:?}, {refused} refused");
    assert!(
        steady <= PER_MINUTE / 2 + 6,
        "{steady} requests in {STEADY:?}: polling did not back off{}",
        c.diagnostics()
    );

    let moved = wait_for(LIMIT, || async {
        last_moved(&c, &ips, killed, "secondary")
    })
    .await;
    let Some(moved) = moved else {
        panic!(
            "not every IP moved: {:?}{}",
            ips.iter().map(|ip| c.holder_of(*ip)).collect::<Vec<_>>(),
            c.diagnostics()
        );
    };
    let (failover, _) = requests_between(&c, killed, SystemTime::now());
    let (total, refused) = requests_between(&c, SystemTime::UNIX_EPOCH, SystemTime::now());
    eprintln!("failover: last IP moved {moved:?} after the kill, {failover} requests");
    assert_eq!(refused, 0, "{total} requests, {refused} refused with 429");
}
