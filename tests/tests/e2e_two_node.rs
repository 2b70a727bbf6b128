//! Two nodes, real processes: `tandem-membership` and `tandem-resource-agent` per node, the
//! emulator as DigitalOcean. Kill, freeze, crash mid-assign and provider faults; every test
//! checks the emulator's audit log (who held the IP, how many assign calls) and each agent's
//! Status. Measured numbers are printed (`cargo test -- --nocapture` shows them).
//!
//! The tests of this file run one at a time: they measure failover times on a small shared
//! machine, and four clusters at once would measure the scheduler instead.
use std::time::Duration;

use tandem_proto::agent::v1 as apb;
use tandem_resource_agent::handover::Timers;
use tandem_tests::cluster::{Binaries, Cluster, GROUP, Prober, Spec, wait_for};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The curl loop's period.
const PROBE: Duration = Duration::from_millis(75);
/// Generous limit for anything that should take about dead_after + an assign.
const MOVE_LIMIT: Duration = Duration::from_secs(15);

async fn launch(spec: impl FnOnce(Spec) -> Spec) -> Cluster {
    let bins = Binaries::for_tests().expect("daemon binaries");
    let started = tokio::time::Instant::now();
    let c = Cluster::start(spec(Spec::fast(bins)))
        .await
        .expect("cluster starts");
    // Up: the primary runs the group and the secondary knows it.
    let ok = wait_for(MOVE_LIMIT, || async {
        let p = c.group(0).await?;
        let s = c.group(1).await?;
        (p.state == apb::GroupState::Running as i32 && s.holder == "primary").then_some(())
    })
    .await;
    assert!(ok.is_some(), "cluster never settled{}", c.diagnostics());
    // An agent claims nothing during its first `settle` (it listens for what others hold);
    // measuring a failover inside that window would measure the settle time instead.
    tokio::time::sleep_until(started + Timers::default().settle).await;
    c
}

async fn served_by(c: &Cluster, probe: &Prober, who: &str) {
    let got = probe
        .wait_served_by(&format!("Droplet: {who},"), Duration::from_secs(5))
        .await;
    assert!(
        got.is_some(),
        "the front never answered from {who}; last answers: {:?}{}",
        probe.since(probe.report().samples.len().saturating_sub(5)),
        c.diagnostics()
    );
}

async fn wait_holder(c: &Cluster, name: &str) {
    let ok = wait_for(MOVE_LIMIT, || async {
        (c.holder().as_deref() == Some(name)).then_some(())
    })
    .await;
    assert!(ok.is_some(), "{name} never held the IP{}", c.diagnostics());
}

/// Waits until exactly `name` runs the group, by every answering agent's account.
async fn wait_running_only(c: &Cluster, name: &str) {
    let ok = wait_for(MOVE_LIMIT, || async {
        let on = c.running_on().await;
        (on == [name.to_owned()]).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "{name} never ran the group alone (running on {:?}){}",
        c.running_on().await,
        c.diagnostics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_fails_over_and_failback_is_one_assign() {
    let _serial = SERIAL.lock().await;
    let mut c = launch(|s| s).await;
    assert_eq!(c.holder().as_deref(), Some("primary"));
    assert_eq!(
        c.assign_calls(),
        0,
        "the primary already held the IP: no call"
    );
    let probe = c.probe(PROBE);
    served_by(&c, &probe, "primary").await;

    let killed = c.crash_node(0);
    wait_holder(&c, "secondary").await;
    let failover = c
        .moved_after(killed, "secondary")
        .expect("holder change recorded");
    wait_running_only(&c, "secondary").await;
    served_by(&c, &probe, "secondary").await;
    assert_eq!(c.assign_calls(), 1);

    let before = c.assign_calls();
    let back = c.boot_node(0).await.expect("primary boots");
    wait_holder(&c, "primary").await;
    let failback = c.moved_after(back, "primary").expect("failback recorded");
    wait_running_only(&c, "primary").await;
    served_by(&c, &probe, "primary").await;
    let report = probe.finish();
    assert_eq!(
        c.assign_calls() - before,
        1,
        "failback is exactly one assign call"
    );
    println!(
        "kill -9: failover {} ms, failback {} ms after the agent restarted, longest gap {} ms, {} failed requests of {}",
        failover.as_millis(),
        failback.as_millis(),
        report.longest_gap.as_millis(),
        report.failures,
        report.samples.len()
    );
    // dead_after (500ms) + assign (100ms action + polls) + one probe period, with slack for
    // a loaded machine.
    assert!(
        report.longest_gap < Duration::from_secs(3),
        "gap {:?}",
        report.longest_gap
    );
    assert_eq!(
        report.served_by(),
        [
            "Droplet: primary, IP Address: ".to_owned() + &c.nodes[0].address.ip().to_string(),
            "Droplet: secondary, IP Address: ".to_owned() + &c.nodes[1].address.ip().to_string(),
            "Droplet: primary, IP Address: ".to_owned() + &c.nodes[0].address.ip().to_string(),
        ]
    );

    // Standby and online through the Agent gRPC.
    let mut a0 = c.agent(0).await.expect("agent client");
    a0.standby(apb::StandbyRequest::default())
        .await
        .expect("standby");
    wait_holder(&c, "secondary").await;
    wait_running_only(&c, "secondary").await;
    a0.online(apb::OnlineRequest::default())
        .await
        .expect("online");
    wait_holder(&c, "primary").await;
    wait_running_only(&c, "primary").await;

    // Takeover on the secondary, then release it back.
    let mut a1 = c.agent(1).await.expect("agent client");
    a1.takeover(apb::TakeoverRequest {
        group: GROUP.into(),
    })
    .await
    .expect("takeover");
    wait_holder(&c, "secondary").await;
    wait_running_only(&c, "secondary").await;
    a1.release(apb::ReleaseRequest {
        group: GROUP.into(),
    })
    .await
    .expect("release");
    wait_holder(&c, "primary").await;
    wait_running_only(&c, "primary").await;
    // failover, failback, standby, online, takeover, release: one move each.
    let moves = c.holder_changes().len();
    assert_eq!(moves, 6, "moves: {:?}", c.holder_changes());
}
