//! Fencing through the provider with real processes: two nodes (`tandem-membership` and
//! `tandem-resource-agent` each), the emulator as DigitalOcean with droplet power actions.
//! A power-off really stops the node: the emulator's power hook SIGKILLs that node's daemons.
//! Every test reads the emulator's audit log: the power-off completed before the IP moved.
//! Measured numbers are printed (`-- --nocapture`).
//!
//! Every node sees each fence's outcome, a witness too: the fencing agent tells the cluster
//! on membership's retained topic, and `ipctl status`/`ipctl watch` show it from membership.
//!
//! The tests of this file run one at a time (timing on a small shared machine).
use std::time::Duration;

use serde_json::Value;
use tandem_proto::agent::v1 as apb;
use tandem_resource_agent::core::Timers;
use tandem_tests::cluster::{Binaries, Cluster, Daemon, FenceSpec, Spec, wait_for};
use tandem_tests::ipctl::Watcher;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LIMIT: Duration = Duration::from_secs(20);

fn fenced(mut s: Spec, delay: Duration, timeout: Duration) -> Spec {
    s.fencing = Some(FenceSpec { delay, timeout });
    s
}

async fn launch(spec: Spec) -> Cluster {
    tandem_tests::start_settled(spec, None, Timers::default().settle, LIMIT).await
}

async fn wait_holder(c: &Cluster, name: &str) {
    let ok = wait_for(LIMIT, || async {
        (c.holder().as_deref() == Some(name)).then_some(())
    })
    .await;
    assert!(ok.is_some(), "{name} never held the IP{}", c.diagnostics());
}

/// `mono_ms` of the first holder change to node `to`'s droplet.
fn moved_to_ms(c: &Cluster, to: usize) -> Option<f64> {
    let id = c.nodes[to].droplet?;
    c.audit()
        .into_iter()
        .find(|e| e["event"] == "holder" && e["to"].as_u64() == Some(id))
        .and_then(|e| e["mono_ms"].as_f64())
}

/// The last fence node `i`'s agent reports for `peer`.
async fn fence_of(c: &Cluster, i: usize, peer: &str) -> Option<apb::Fence> {
    c.agent_status(i)
        .await?
        .fences
        .into_iter()
        .find(|f| f.node == peer)
}

fn took_ms(f: &apb::Fence) -> f64 {
    f.took.as_ref().map_or(0.0, |d| {
        d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6
    })
}

/// The secondary's fence metrics for `peer`: (attempts that worked, attempts that failed,
/// seconds in the ones that worked), from a real scrape of its agent's endpoint.
async fn fence_metrics(c: &Cluster, peer: &str) -> (f64, f64, f64) {
    let m = tandem_tests::metrics::scrape(c, 1, Daemon::Agent)
        .await
        .expect("the secondary's metrics answer");
    let name = "tandem_agent_fence_duration_seconds";
    let of = |suffix: &str, outcome: &str| {
        m.count(
            &format!("{name}_{suffix}"),
            &[("node", peer), ("outcome", outcome)],
        )
    };
    (of("count", "ok"), of("count", "failed"), of("sum", "ok"))
}

/// `ipctl status --json` of node `i` (the real binary; a witness answers with exit 3, having
/// no agent, and its JSON all the same).
async fn status_json(c: &Cluster, i: usize) -> Value {
    let out = tandem_tests::ipctl::output(c, i, &["status", "--json"]).await;
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ipctl status --json on node {i}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The fence notices node `i`'s membership kept (`membership.notices[].fence`).
async fn fence_notices(c: &Cluster, i: usize) -> Vec<Value> {
    status_json(c, i).await["membership"]["notices"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .filter(|n| n["kind"] == "fence")
                .map(|n| n["fence"].clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until node `i` shows the completed fence of `fenced` by `by`; returns it.
async fn wait_fence_notice(c: &Cluster, i: usize, fenced: &str, by: &str) -> Value {
    let found = wait_for(LIMIT, || async {
        fence_notices(c, i)
            .await
            .into_iter()
            .find(|f| f["fenced"] == fenced && f["by"] == by && f["outcome"] == "completed")
    })
    .await;
    match found {
        Some(f) => f,
        None => panic!(
            "node {i} never showed the fence of {fenced} by {by}: {:#}{}",
            status_json(c, i).await["membership"],
            c.diagnostics()
        ),
    }
}

/// Waits (bounded) until both daemons of node `i` have exited.
async fn wait_exited(c: &mut Cluster, i: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !(c.exited(i, Daemon::Membership) && c.exited(i, Daemon::Agent)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fenced node's daemons still run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The holder frozen (SIGSTOP of both daemons): the secondary powers it off, and only once
/// the emulator says the droplet is off does it assign the IP. The fenced node's daemons
/// are really gone; booted again it takes the IP back by the handover (no fence: it is
/// alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_holder_is_powered_off_before_its_ip_moves() {
    let _serial = SERIAL.lock().await;
    let delay = Duration::from_secs(1);
    let spec = fenced(
        Spec {
            metrics: true,
            ..Spec::fast(Binaries::for_tests().expect("binaries"))
        },
        delay,
        Duration::from_secs(5),
    );
    let mut c = launch(spec).await;
    let frozen_ms = c.mark("freeze");
    c.freeze(0, Daemon::Membership, true);
    c.freeze(0, Daemon::Agent, true);
    wait_holder(&c, "secondary").await;

    let offs = c.power_offs();
    let primary = c.nodes[0].droplet.unwrap();
    assert_eq!(offs.len(), 1, "one power-off: {:?}", c.power_events());
    assert_eq!(offs[0].0, primary, "the primary's droplet was powered off");
    let assigned = moved_to_ms(&c, 1).expect("move recorded");
    assert!(
        offs[0].1 <= assigned,
        "power-off completed at {} ms, after the assign at {assigned} ms",
        offs[0].1
    );
    // Only now, after the fence: no earlier move.
    assert_eq!(c.holder_changes().len(), 1, "{:?}", c.holder_changes());
    wait_exited(&mut c, 0).await;

    let f = wait_for(LIMIT, || async {
        fence_of(&c, 1, "primary")
            .await
            .filter(|f| f.phase == "done")
    })
    .await
    .unwrap_or_else(|| panic!("the secondary never reported the fence{}", c.diagnostics()));
    assert_eq!(f.attempts, 1);
    let (ok, failed, secs) = fence_metrics(&c, "primary").await;
    assert_eq!((ok, failed), (1.0, 0.0), "one fence, it worked");
    assert!(
        secs > 0.0 && secs < LIMIT.as_secs_f64(),
        "fence took {secs} s by the metrics"
    );
    assert!(
        f.detail.contains("droplet 3164444 powered off"),
        "{}",
        f.detail
    );
    println!(
        "frozen holder: fenced {:.0} ms after the freeze (death, {} ms delay, power-off), \
         IP assigned {:.0} ms after the power-off completed; the agent reports the fence as {:.0} ms from death to off",
        offs[0].1 - frozen_ms,
        delay.as_millis(),
        assigned - offs[0].1,
        took_ms(&f)
    );

    // Back on: the primary takes its IP back through the handover, without another fence.
    c.boot_node(0).await.expect("primary boots");
    wait_holder(&c, "primary").await;
    assert_eq!(c.power_offs().len(), 1, "no fence of a node that came back");
}

/// Both links of a two-node cluster cut: each side declares the other dead. The preferred
/// primary fences at once; the secondary waits `delay` and is powered off before it fences.
/// Exactly one power-off, the IP never moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_links_cut_exactly_one_side_fences_and_the_preferred_one_wins() {
    tandem_tests::skip_unless!(tandem_tests::require::netns());
    let _serial = SERIAL.lock().await;
    let mut spec = fenced(
        Spec::fast(Binaries::for_tests().expect("binaries")),
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    spec.network = Some(tandem_tests::netns::namespaces());
    spec.links = 2;
    let mut c = launch(spec).await;
    let cut_ms = c.mark("cut");
    c.partition(0).expect("partition");
    let off = wait_for(LIMIT, || async { c.power_offs().first().copied() })
        .await
        .unwrap_or_else(|| panic!("nobody fenced{}", c.diagnostics()));
    assert_eq!(
        off.0,
        c.nodes[1].droplet.unwrap(),
        "the secondary is powered off"
    );
    // Past the secondary's delay: it would have fenced by now, had it lived.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let started: Vec<_> = c
        .power_events()
        .into_iter()
        .filter(|e| e["type"] == "power_off" && e["status"] == "in-progress")
        .collect();
    assert_eq!(started.len(), 1, "exactly one side fenced: {started:?}");
    wait_exited(&mut c, 1).await;
    assert_eq!(c.holder().as_deref(), Some("primary"));
    assert!(
        c.holder_changes().is_empty(),
        "the IP never moved: {:?}",
        c.holder_changes()
    );
    let f = fence_of(&c, 0, "secondary")
        .await
        .expect("the primary reports its fence");
    assert_eq!(f.phase, "done");
    println!(
        "both links cut: the preferred side powered the other off {:.0} ms after the cut",
        off.1 - cut_ms
    );
    c.heal().expect("heal");
    c.boot_node(1).await.expect("secondary boots");
    let ok = wait_for(LIMIT, || async {
        let s = c.group(1).await?;
        (s.holder == "primary").then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "the secondary never rejoined{}",
        c.diagnostics()
    );
    assert_eq!(c.power_offs().len(), 1);
}

/// The fence fails three ways (the token revoked: 401; every request 503; every request
/// hanging past the call's timeout): the IP stays where it is, the secondary's status says
/// why, and the attempt is retried with backoff; once the faults clear it succeeds and only
/// then is the IP assigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fence_takes_nothing_says_why_and_is_retried() {
    let _serial = SERIAL.lock().await;
    let spec = fenced(
        Spec {
            metrics: true,
            ..Spec::fast(Binaries::for_tests().expect("binaries"))
        },
        Duration::from_millis(500),
        Duration::from_secs(2),
    );
    let mut c = launch(spec).await;
    c.revoke_fence_token(1, true);
    let watch = Watcher::start(&c, 1, true);
    watch
        .wait_json("agent snapshot", |v| v["source"] == "agent")
        .await;
    let crashed_ms = c.mark("crash");
    c.crash_node(0);

    let mut seen = Vec::new();
    for (fault, expect) in [
        (None, "401"),
        (Some(r#"{"error_rate": 1.0, "error_status": 503}"#), "503"),
        (Some(r#"{"hang_next": 100000}"#), "timed out"),
    ] {
        if let Some(f) = fault {
            c.emulator.world.lock().faults = serde_json::from_str(f).unwrap();
            c.revoke_fence_token(1, false);
        }
        let f = wait_for(LIMIT, || async {
            fence_of(&c, 1, "primary")
                .await
                .filter(|f| f.phase == "failed" && f.error.contains(expect))
        })
        .await
        .unwrap_or_else(|| panic!("no failed fence with {expect:?}{}", c.diagnostics()));
        let g = c.group(1).await.expect("secondary answers");
        assert!(
            g.waiting_for.contains("fencing primary failed") && g.waiting_for.contains(expect),
            "status does not say why: {:?}",
            g.waiting_for
        );
        assert_ne!(g.state, apb::GroupState::Running as i32);
        assert_eq!(
            c.holder().as_deref(),
            Some("primary"),
            "the IP moved without a fence"
        );
        assert!(c.power_offs().is_empty());
        seen.push(f.attempts);
    }
    c.emulator.world.lock().faults = Default::default();
    wait_holder(&c, "secondary").await;
    let offs = c.power_offs();
    assert_eq!(offs.len(), 1);
    let assigned = moved_to_ms(&c, 1).unwrap();
    assert!(offs[0].1 <= assigned);
    let f = fence_of(&c, 1, "primary").await.unwrap();
    assert_eq!(f.phase, "done");
    assert!(
        f.attempts >= 4 && seen.windows(2).all(|w| w[0] < w[1]),
        "{seen:?} then {}",
        f.attempts
    );
    println!(
        "failing fence: attempts {seen:?} failed (401, 503, timeout), attempt {} succeeded; \
         IP assigned {:.0} ms after the crash, {:.0} ms after the power-off",
        f.attempts,
        assigned - crashed_ms,
        assigned - offs[0].1
    );
    assert_fence_events(&watch, f.attempts).await;
    assert_fence_notices(&c, f.attempts).await;
    let (ok, failed, _) = fence_metrics(&c, "primary").await;
    assert_eq!(
        (ok, failed),
        (1.0, f64::from(f.attempts - 1)),
        "the metrics count every attempt by outcome"
    );
    let (_, status) = tandem_tests::ipctl::run(&c, 1, &["status"]).await;
    let line = status
        .lines()
        .skip_while(|l| !l.starts_with("Fences"))
        .nth(1)
        .unwrap_or_else(|| panic!("no fence in status:\n{status}"));
    assert!(
        line.contains("primary: done") && line.contains(&format!("({} attempts)", f.attempts)),
        "{line}"
    );
}

/// What the fencing node told the cluster, as its own membership kept it (the primary, dead,
/// got none): one notice per attempt's outcome, the failures with the provider's error.
async fn assert_fence_notices(c: &Cluster, attempts: u32) {
    let notices = wait_for(LIMIT, || async {
        let n = fence_notices(c, 1).await;
        (n.len() == attempts as usize).then_some(n)
    })
    .await
    .unwrap_or_else(|| panic!("not one notice per attempt{}", c.diagnostics()));
    for (k, n) in notices.iter().enumerate() {
        assert_eq!(n["attempt"], k + 1, "{n}");
        assert_eq!(
            (&n["fenced"], &n["by"]),
            (&"primary".into(), &"secondary".into())
        );
        let last = k + 1 == attempts as usize;
        assert_eq!(
            n["outcome"],
            if last { "completed" } else { "failed" },
            "{n}"
        );
        assert_eq!(n["error"].is_string(), !last, "{n}");
        assert_eq!(n["retry_in_ms"].is_u64(), !last, "{n}");
    }
    let error = |k: usize| notices[k]["error"].as_str().unwrap_or("").to_owned();
    assert!(error(0).contains("401"), "{}", error(0));
    assert!(
        notices
            .iter()
            .any(|n| n["error"].as_str().is_some_and(|e| e.contains("503"))),
        "{notices:?}"
    );
    assert!(
        notices
            .iter()
            .any(|n| n["error"].as_str().is_some_and(|e| e.contains("timed out"))),
        "{notices:?}"
    );
    // No secret in what went to every node.
    let text = serde_json::to_string(&notices).unwrap_or_default();
    assert!(!text.contains("dop_v1"), "{text}");
}

/// What `ipctl watch --json` on the fencing node showed: each attempt started and failed
/// (the 401 first) with the provider call and its duration, then the one that worked,
/// before the group's failover start.
async fn assert_fence_events(w: &Watcher, attempts: u32) {
    let fence = |v: &Value, event: &str| v["source"] == "agent" && v["event"] == event;
    let (first, failed) = w
        .wait_json("fence_failed", |v| fence(v, "fence_failed"))
        .await;
    assert_eq!(failed["target"], "primary", "{failed}");
    assert_eq!(failed["node"], "secondary", "{failed}");
    assert_eq!(failed["attempt"], 1, "{failed}");
    assert_eq!(
        failed["provider_call"], "digitalocean power_off",
        "{failed}"
    );
    assert_eq!(failed["reason"], "declared dead: silent on every link");
    assert!(
        failed["error"].as_str().unwrap_or("").contains("401"),
        "{failed}"
    );
    assert!(failed["duration_ms"].as_f64().is_some(), "{failed}");
    assert!(
        failed["retry_in_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{failed}"
    );
    let (done_at, done) = w.wait_json("fence_done", |v| fence(v, "fence_done")).await;
    assert_eq!(done["attempt"], attempts, "{done}");
    assert!(
        done["detail"]
            .as_str()
            .unwrap_or("")
            .contains("powered off"),
        "{done}"
    );
    // The emulator's power-off takes its action delay (100 ms); the call waits for it.
    assert!(
        done["duration_ms"].as_f64().is_some_and(|ms| ms >= 100.0),
        "{done}"
    );
    let (start_at, _) = w
        .wait_json("failover start", |v| {
            v["event"] == "group_starting" && v["cause"] == "failover"
        })
        .await;
    let events = w.json();
    let started = events.iter().filter(|v| fence(v, "fence_started")).count();
    let failures = events.iter().filter(|v| fence(v, "fence_failed")).count();
    assert_eq!(started, attempts as usize, "one started per attempt");
    assert_eq!(
        failures,
        attempts as usize - 1,
        "every attempt but the last failed"
    );
    assert!(first < done_at && done_at < start_at, "{:#?}", w.lines());
}

/// Three members and a witness; the holder frozen. The secondary fences it, and every node
/// that lives sees it from its own membership daemon: the witness (membership only, no agent:
/// `ipctl status --json` on its socket, `ipctl watch --json` as it happens, its metrics) and
/// the third member, which did not fence. Each names the fenced node, the fencing node, the
/// outcome, why and how long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_witness_every_node_sees_who_fenced_whom() {
    let _serial = SERIAL.lock().await;
    let mut spec = fenced(
        Spec {
            metrics: true,
            ..Spec::fast(Binaries::for_tests().expect("binaries"))
        },
        Duration::from_secs(1),
        Duration::from_secs(5),
    );
    spec.members.push("third".into());
    spec.witness = Some("witness".into());
    let mut c = launch(spec).await;
    let witness = c.nodes.iter().position(|n| n.witness).expect("a witness");
    assert_eq!(c.nodes[witness].name, "witness");
    let watch = Watcher::start(&c, witness, true);
    watch
        .wait_json("membership snapshot", |v| {
            v["source"] == "membership" && v["type"] == "snapshot"
        })
        .await;
    c.freeze(0, Daemon::Membership, true);
    c.freeze(0, Daemon::Agent, true);
    wait_holder(&c, "secondary").await;
    assert_eq!(c.power_offs().len(), 1, "{:?}", c.power_events());
    wait_exited(&mut c, 0).await;

    let seen = wait_fence_notice(&c, witness, "primary", "secondary").await;
    assert_eq!(seen["attempt"], 1, "{seen}");
    assert_eq!(seen["provider_call"], "digitalocean power_off", "{seen}");
    assert!(
        seen["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("declared dead: silent on every link; secondary had quorum"),
        "{seen}"
    );
    assert!(
        seen["detail"]
            .as_str()
            .unwrap_or("")
            .contains("droplet 3164444 powered off"),
        "{seen}"
    );
    // The emulator's power-off takes its action delay (100 ms); the call waits for it. The
    // secondary is not the preferred node: it waited fencing.delay (1 s) after the death.
    let took = seen["duration_ms"].as_u64().unwrap_or(0);
    let since_death = seen["since_death_ms"].as_u64().unwrap_or(0);
    assert!((100..5_000).contains(&took), "{seen}");
    assert!(since_death >= 1_000 + took, "{seen}");
    assert!(seen["dead_at"].is_string(), "{seen}");
    let w = status_json(&c, witness).await;
    assert_eq!(w["node"], "witness");
    assert_eq!(w["agent"]["available"], false, "a witness runs no agent");
    assert!(
        w["membership"]["counters"]["notices"].as_u64() >= Some(1),
        "{}",
        w["membership"]
    );

    // The third member did not fence; it shows the secondary's fence all the same.
    let third = wait_fence_notice(&c, 2, "primary", "secondary").await;
    assert_eq!(
        third, seen,
        "both nodes got the one notice the secondary sent"
    );
    assert_eq!(
        fence_of(&c, 2, "primary").await,
        None,
        "the third member did not fence"
    );
    // And the fencing node's own membership kept what it told.
    wait_fence_notice(&c, 1, "primary", "secondary").await;

    // As it happened, on the witness's `ipctl watch --json`.
    let (_, line) = watch
        .wait_json("notice", |v| {
            v["source"] == "membership" && v["event"] == "notice" && v["kind"] == "fence"
        })
        .await;
    assert_eq!(line["from"], "secondary", "{line}");
    assert_eq!(line["topic"], "tandem.notice/v1", "{line}");
    assert_eq!(line["fence"]["fenced"], "primary", "{line}");
    assert_eq!(line["fence"]["outcome"], "completed", "{line}");

    let m = tandem_tests::metrics::scrape(&c, witness, Daemon::Membership)
        .await
        .expect("the witness's membership metrics answer");
    assert_eq!(
        m.count("tandem_membership_notices_total", &[("from", "secondary")]),
        1.0,
        "one notice from the secondary"
    );
    let out = tandem_tests::ipctl::output(&c, witness, &["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Cluster notices") && text.contains("primary POWERED OFF by secondary"),
        "{text}"
    );
    println!(
        "witness sees the fence: primary powered off by secondary in {took} ms, \
         {since_death} ms after its death"
    );
}
