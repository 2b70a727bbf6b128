//! The resource group beyond the reserved IP, on real processes: LSB and OCF agents started
//! in order and stopped in reverse, health checks that move (or do not move) the group, and
//! readiness reporting a revoked token. Tests of this file run one at a time (see
//! e2e_two_node.rs).
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tandem_proto::agent::v1 as apb;
use tandem_resource_agent::core::Timers;
use tandem_tests::cluster::{Binaries, Cluster, Daemon, Spec, wait_for};
use tandem_tests::{require, skip_unless};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MOVE_LIMIT: Duration = Duration::from_secs(15);

async fn launch(spec: Spec, dir: Option<&Path>) -> Cluster {
    tandem_tests::start_settled(spec, dir, Timers::default().settle, MOVE_LIMIT).await
}

async fn wait_holder(c: &Cluster, name: &str) {
    let ok = wait_for(MOVE_LIMIT, || async {
        let on = c.running_on().await;
        (c.holder().as_deref() == Some(name) && on == [name.to_owned()]).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "{name} never held the group{}",
        c.diagnostics()
    );
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, body).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Lines of the shared order log (written by the scripts from each node's directory).
fn order(c: &Cluster) -> Vec<String> {
    std::fs::read_to_string(c.path.join("order.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lsb_ocf_and_exec_start_in_order_and_stop_in_reverse() {
    skip_unless!(require::ocf_dummy());
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    // Each script runs in its node's directory: `../order.log` is shared, the flags are per
    // node, and `dummy.state` is the OCF Dummy's state file, present while it runs.
    let lsb = tmp.path().join("lsb-web");
    script(
        &lsb,
        "#!/bin/sh\nd=$([ -e dummy.state ] && echo yes || echo no)\nn=$(basename \"$PWD\")\n\
         case \"$1\" in\n  start) touch lsb.running; echo \"$n start lsb dummy=$d\" >> ../order.log ;;\n  \
         stop) rm -f lsb.running; echo \"$n stop lsb dummy=$d\" >> ../order.log ;;\n  \
         status) [ -e lsb.running ] || exit 3 ;;\n  *) exit 3 ;;\nesac\nexit 0\n",
    );
    let exec = tmp.path().join("exec-app");
    script(
        &exec,
        "#!/bin/sh\nd=$([ -e dummy.state ] && echo yes || echo no)\nn=$(basename \"$PWD\")\n\
         case \"$1\" in\n  start) touch exec.running; echo \"$n start exec dummy=$d\" >> ../order.log ;;\n  \
         stop) rm -f exec.running; echo \"$n stop exec dummy=$d\" >> ../order.log ;;\n  \
         monitor) [ -e exec.running ] || exit 7 ;;\nesac\nexit 0\n",
    );
    let mut spec = Spec::fast(Binaries::for_tests().expect("binaries"));
    // Nobody holds the IP yet: the primary starts the whole group, in order.
    spec.ip_held_at_start = false;
    spec.extra_agents = vec![
        format!("- lsb: {}", lsb.display()),
        "- ocf: { agent: \"heartbeat:Dummy\", params: { state: dummy.state } }".into(),
        format!(
            "- exec: {{ start: \"{e} start\", stop: \"{e} stop\", monitor: \"{e} monitor\" }}",
            e = exec.display()
        ),
    ];
    let c = launch(spec, Some(tmp.path())).await;
    let start = ["primary start lsb dummy=no", "primary start exec dummy=yes"];
    assert_eq!(order(&c), start, "start order{}", c.diagnostics());

    let mut a0 = c.agent(0).await.expect("agent");
    a0.standby(apb::StandbyRequest::default())
        .await
        .expect("standby");
    wait_holder(&c, "secondary").await;
    a0.online(apb::OnlineRequest::default())
        .await
        .expect("online");
    wait_holder(&c, "primary").await;
    let log = order(&c);
    println!("order log:\n{}", log.join("\n"));
    assert_eq!(
        log,
        [
            "primary start lsb dummy=no",
            "primary start exec dummy=yes",
            "primary stop exec dummy=yes",
            "primary stop lsb dummy=no",
            "secondary start lsb dummy=no",
            "secondary start exec dummy=yes",
            "secondary stop exec dummy=yes",
            "secondary stop lsb dummy=no",
            "primary start lsb dummy=no",
            "primary start exec dummy=yes",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_check_moves_the_group_and_failing_on_both_moves_nothing() {
    let _serial = SERIAL.lock().await;
    let mut spec = Spec::fast(Binaries::for_tests().expect("binaries"));
    // Runs in each node's directory, so the flag is per node.
    spec.health = vec![
        "- { exec: \"test ! -e unhealthy\", interval: 200ms, timeout: 150ms, fall: 2, rise: 2 }"
            .into(),
    ];
    let c = launch(spec, None).await;
    let flag = |i: usize| c.nodes[i].dir.join("unhealthy");
    std::fs::write(flag(0), "").expect("flag");
    let t = std::time::SystemTime::now();
    wait_holder(&c, "secondary").await;
    let took = c.moved_after(t, "secondary").expect("move recorded");
    println!(
        "health: group moved {} ms after the check started failing",
        took.as_millis()
    );
    let moves = c.holder_changes().len();
    let calls = c.assign_calls();

    std::fs::write(flag(1), "").expect("flag");
    // Wait until the secondary knows itself unhealthy, then watch for several monitor and
    // health periods: nothing may move.
    let unhealthy = wait_for(MOVE_LIMIT, || async {
        let s = c.agent_status(1).await?;
        s.health.iter().any(|h| !h.healthy).then_some(())
    })
    .await;
    assert!(
        unhealthy.is_some(),
        "the secondary never saw its check fail"
    );
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < watch_until {
        assert_eq!(c.holder().as_deref(), Some("secondary"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.holder_changes().len(), moves, "nothing moved");
    assert_eq!(c.assign_calls(), calls, "no call");

    // The primary heals: the preferred node takes the group back.
    std::fs::remove_file(flag(0)).expect("unflag");
    wait_holder(&c, "primary").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_on_the_standby_shows_as_not_ready_within_one_interval() {
    let _serial = SERIAL.lock().await;
    let interval = Duration::from_millis(500);
    let mut spec = Spec::fast(Binaries::for_tests().expect("binaries"));
    spec.readiness_interval = Some(interval);
    let c = launch(spec, None).await;
    let readiness = |i: usize| {
        let c = &c;
        async move { c.group(i).await?.readiness }
    };
    let ready = wait_for(MOVE_LIMIT, || async {
        readiness(1).await.filter(|r| r.ready)
    })
    .await;
    assert!(
        ready.is_some(),
        "the secondary never became ready{}",
        c.diagnostics()
    );
    let token = c.nodes[1].token.clone().expect("token");
    c.emulator.revoke(&token).await;
    let t = tokio::time::Instant::now();
    let not_ready = wait_for(MOVE_LIMIT, || async {
        readiness(1).await.filter(|r| !r.ready)
    })
    .await
    .expect("the secondary never reported the revoked token");
    let took = t.elapsed();
    println!(
        "readiness: revoked token reported after {} ms (interval {} ms): {:?}",
        took.as_millis(),
        interval.as_millis(),
        not_ready.problems
    );
    assert!(!not_ready.problems.is_empty());
    assert!(
        took < interval + Duration::from_millis(700),
        "took {took:?}"
    );
    assert!(
        readiness(0).await.is_some_and(|r| r.ready),
        "the primary's token still works"
    );
    for p in &not_ready.problems {
        assert!(!p.contains(&token), "a problem line shows the token");
    }
    for i in 0..2 {
        for d in [
            tandem_tests::cluster::Daemon::Membership,
            tandem_tests::cluster::Daemon::Agent,
        ] {
            assert!(!c.log(i, d).contains(&token), "a log shows the token");
        }
    }
}

/// Per-agent states of [`GROUP`] on node `i`, with the failure counts, as `(name, state,
/// failures)`.
async fn agent_states(c: &Cluster, i: usize) -> Option<(i32, Vec<(String, i32, u32)>)> {
    let g = c.group(i).await?;
    Some((
        g.state,
        g.agents
            .into_iter()
            .map(|a| (a.name, a.state, a.failures))
            .collect(),
    ))
}

/// The normal case on a standby or a fresh boot: every agent's status/monitor says "not
/// running" before anything started (exec monitor exit 7, LSB status 3, OCF monitor 7 from
/// the real ocf:heartbeat:Dummy). That is a stopped group, never a failed one: it shows as
/// stopped with no failures, survives a restart of the standby's agent, and starts when the
/// holder dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_not_running_at_start_are_stopped_not_failed_and_start_on_failover() {
    skip_unless!(require::ocf_dummy());
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let lsb = tmp.path().join("lsb-svc");
    script(
        &lsb,
        "#!/bin/sh\ncase \"$1\" in\n  start) touch lsb.running ;;\n  stop) rm -f lsb.running ;;\n  \
         status) [ -e lsb.running ] || exit 3 ;;\n  *) exit 2 ;;\nesac\nexit 0\n",
    );
    let mut spec = Spec::fast(Binaries::for_tests().expect("binaries"));
    spec.extra_agents = vec![
        "- exec: { start: \"touch exec.running\", stop: \"rm -f exec.running\", \
         monitor: \"test -e exec.running || exit 7\" }"
            .into(),
        format!("- lsb: {}", lsb.display()),
        "- ocf: { agent: \"heartbeat:Dummy\", params: { state: dummy.state } }".into(),
    ];
    let mut c = launch(spec, Some(tmp.path())).await;
    let stopped = apb::AgentState::Stopped as i32;
    let running = apb::AgentState::Running as i32;
    let check_standby = |(group, agents): (i32, Vec<(String, i32, u32)>)| {
        assert_eq!(
            group,
            apb::GroupState::Stopped as i32,
            "the standby's group is not stopped: {agents:?}"
        );
        // The reserved IP is held elsewhere (also "stopped" here); every other agent
        // reported "not running" and must read stopped, with no failure counted.
        for (name, state, failures) in &agents {
            assert_eq!(*state, stopped, "{name} on the standby: {agents:?}");
            assert_eq!(*failures, 0, "{name} on the standby counted a failure");
        }
    };
    check_standby(agent_states(&c, 1).await.expect("secondary status"));
    let (group, agents) = agent_states(&c, 0).await.expect("primary status");
    assert_eq!(group, apb::GroupState::Running as i32, "{agents:?}");
    assert!(agents.iter().all(|a| a.1 == running), "{agents:?}");

    // A fresh start of the standby's agent probes the same "not running" answers again.
    c.kill9(1, Daemon::Agent);
    c.restart(1, Daemon::Agent).await.expect("agent restarts");
    let settled = wait_for(MOVE_LIMIT, || async {
        let s = agent_states(&c, 1).await?;
        (s.0 == apb::GroupState::Stopped as i32 && s.1.iter().all(|a| a.1 == stopped)).then_some(s)
    })
    .await;
    check_standby(settled.unwrap_or_else(|| panic!("standby never settled{}", c.diagnostics())));

    // The holder dies: the standby starts every agent whose probe said "not running".
    c.crash_node(0);
    wait_holder_alone(&c, "secondary").await;
    let (group, agents) = agent_states(&c, 1).await.expect("secondary status");
    assert_eq!(group, apb::GroupState::Running as i32, "{agents:?}");
    assert!(agents.iter().all(|a| a.1 == running), "{agents:?}");
    let dir = &c.nodes[1].dir;
    for f in ["exec.running", "lsb.running", "dummy.state"] {
        assert!(dir.join(f).exists(), "{f} missing on the secondary");
    }
}

/// Waits until `name` holds the IP and runs the group, asking only `name`'s agent (the
/// others may be dead).
async fn wait_holder_alone(c: &Cluster, name: &str) {
    let i = c.index(name);
    let ok = wait_for(MOVE_LIMIT, || async {
        let g = c.group(i).await?;
        (c.holder().as_deref() == Some(name) && g.state == apb::GroupState::Running as i32)
            .then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "{name} never took the group{}",
        c.diagnostics()
    );
}
