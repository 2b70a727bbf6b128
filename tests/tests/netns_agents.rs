//! Fault scenarios with the whole stack: per node the real `tandem-membership` (in its own
//! network namespace, joined to the others by veth links, faults made by nftables) and the real
//! `tandem-resource-agent` (in the test's namespace, reaching its membership daemon over the
//! Unix socket and the emulator, as DigitalOcean, over loopback). After every scenario the
//! emulator's audit log is checked: the holder changes form one chain (never two holders), and
//! there are no more moves than the scenario explains; the curl loop bounds the longest time
//! without service where the scenario moves the IP.
//!
//! Skipped, saying why, where namespaces cannot be made (not root, no `ip`/`nft`). The tests
//! run in parallel with each other: the provider outage alone lasts over three minutes, so its
//! name sorts first (the test harness starts tests in name order) and the others fit beside
//! it. Timing is the documented default (100 ms beats, dead after 1 s) so a loaded machine does
//! not cause false failovers that would be blamed on the scenario.
use std::time::{Duration, SystemTime};

use tandem_proto::agent::v1 as apb;
use tandem_proto::membership::v1 as mpb;
use tandem_resource_agent::core::Timers;
use tandem_tests::cluster::{Binaries, Cluster, Daemon, HolderChange, Prober, Spec, wait_for};

/// The curl loop's period.
const PROBE: Duration = Duration::from_millis(100);
/// Generous limit for anything that should take about dead_after + an assign.
const MOVE_LIMIT: Duration = Duration::from_secs(20);
/// The reserved-ip agent's action timeout in the launcher's configuration.
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// A spec with namespaces, or `None` (and why, printed) where they cannot be made.
fn spec(links: usize, witness: bool) -> Option<Spec> {
    if let Some(why) = tandem_tests::netns::unavailable() {
        tandem_tests::require::skip(&format!("network namespaces unavailable: {why}"));
        return None;
    }
    let mut s = Spec::defaults(Binaries::for_tests().expect("daemon binaries"));
    s.network = Some(tandem_tests::netns::namespaces());
    s.links = links;
    s.witness = witness.then(|| "witness".to_owned());
    Some(s)
}

/// Launches and waits until the primary runs the group, every agent knows it, and the agents'
/// first `settle` is over (a fault inside it would measure the settle instead).
async fn launch(spec: Spec) -> Cluster {
    let c = tandem_tests::start_settled(spec, None, Timers::default().settle, MOVE_LIMIT).await;
    assert_eq!(c.holder().as_deref(), Some("primary"));
    c
}

/// Samples which agents run the group while the test waits, keeping the most seen at once.
#[derive(Default)]
struct Sampler {
    max_running: usize,
}

impl Sampler {
    async fn sample(&mut self, c: &Cluster) -> Vec<String> {
        let on = c.running_on().await;
        self.max_running = self.max_running.max(on.len());
        on
    }

    /// Waits (bounded) until exactly `name` runs the group and holds the IP.
    async fn until_alone(&mut self, c: &Cluster, name: &str, limit: Duration) {
        let end = tokio::time::Instant::now() + limit;
        loop {
            let on = self.sample(c).await;
            if on == [name] && c.holder().as_deref() == Some(name) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "{name} never ran the group alone within {limit:?} (running on {on:?}, holder {:?}){}",
                c.holder(),
                c.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// For `dur`, asserts that `name` alone runs the group and holds the IP.
    async fn steady(&mut self, c: &Cluster, name: &str, dur: Duration, what: &str) {
        let end = tokio::time::Instant::now() + dur;
        while tokio::time::Instant::now() < end {
            let on = self.sample(c).await;
            assert!(
                on == [name] && c.holder().as_deref() == Some(name),
                "{what}: running on {on:?}, holder {:?}, expected {name} alone; moves so far: {}{}",
                c.holder(),
                moves(c),
                c.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The holder changes so far, one per line with the time and cause, for failure messages.
fn moves(c: &Cluster) -> String {
    c.holder_changes()
        .iter()
        .map(|h| {
            format!(
                "\n  {} {} -> {} ({})",
                humantime::format_rfc3339_millis(h.at),
                c.node_of_droplet(h.from),
                c.node_of_droplet(h.to),
                h.cause
            )
        })
        .collect()
}

/// The audit-log invariants: holder changes form one chain starting at the primary (each
/// change starts from the holder before it, so the IP never had two holders), and there are
/// exactly `moves` of them. Returns them.
fn check_audit(c: &Cluster, moves: usize, scenario: &str) -> Vec<HolderChange> {
    let changes = c.holder_changes();
    let mut holder = c.nodes[0].droplet;
    for h in &changes {
        assert_eq!(
            h.from,
            holder,
            "{scenario}: a change from {} while {} held it: {changes:?}",
            c.node_of_droplet(h.from),
            c.node_of_droplet(holder)
        );
        holder = h.to;
    }
    let path: Vec<String> = changes.iter().map(|h| c.node_of_droplet(h.to)).collect();
    println!("{scenario}: {} moves {path:?}", changes.len());
    assert_eq!(
        changes.len(),
        moves,
        "{scenario}: moves{}{}",
        self::moves(c),
        c.diagnostics()
    );
    changes
}

/// The curl loop saw one server after another with no more switches than `moves`, and its
/// longest gap without an answer is below `limit`.
fn check_probe(probe: Prober, moves: usize, limit: Duration, scenario: &str) {
    let r = probe.finish();
    let served = r.served_by();
    println!(
        "{scenario}: curl loop longest gap {} ms, {} failed of {}, served by {served:?}",
        r.longest_gap.as_millis(),
        r.failures,
        r.samples.len()
    );
    assert!(
        served.len() <= moves + 1,
        "{scenario}: served by {served:?} ({moves} moves)"
    );
    assert!(
        r.longest_gap < limit,
        "{scenario}: {:?} without service (limit {limit:?})",
        r.longest_gap
    );
}

fn requests(c: &Cluster, method: &str) -> usize {
    c.audit()
        .iter()
        .filter(|e| e["event"] == "request" && e["method"] == method)
        .count()
}

/// What a group's Status shows of a failure (why this node is not a candidate, readiness
/// problems, failed agents and actions), if anything.
fn shown_failure(g: &apb::GroupStatus) -> Option<String> {
    let failed = |a: &apb::LastAction| {
        a.result == apb::ActionResult::Failed as i32
            || a.result == apb::ActionResult::Timeout as i32
    };
    let mut shown = Vec::new();
    if !g.not_candidate_reason.is_empty() {
        shown.push(format!("not a candidate: {}", g.not_candidate_reason));
    }
    if let Some(r) = g.readiness.as_ref().filter(|r| !r.ready) {
        shown.push(format!("not ready: {}", r.problems.join(", ")));
    }
    for a in &g.agents {
        if a.failures > 0 {
            shown.push(format!("{}: {} failures", a.name, a.failures));
        }
        if let Some(l) = a.last_action.as_ref().filter(|l| failed(l)) {
            shown.push(format!("{} {}: {}", a.name, l.action, l.message));
        }
    }
    (!shown.is_empty()).then(|| shown.join("; "))
}

/// The provider is unreachable for two minutes (every API connection closed without an
/// answer) from the moment the holder crashes. The secondary keeps trying, shows the failure,
/// never sits in "starting" longer than one action, and moves the IP within one retry backoff
/// of the provider's recovery; nothing moved while it was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_minute_provider_outage_during_a_failover_moves_the_ip_within_one_backoff_of_recovery()
 {
    let Some(spec) = spec(1, false) else { return };
    const OUTAGE: Duration = Duration::from_secs(120);
    let mut c = launch(spec).await;
    c.emulator
        .set_faults(serde_json::json!({"outage_secs": OUTAGE.as_secs()}))
        .await;
    let recovery = SystemTime::now() + OUTAGE;
    let recovery_at = tokio::time::Instant::now() + OUTAGE;
    let crashed = c.crash_node(0);
    let token = c.nodes[1].token.clone().expect("token");

    // While the provider is down: the failure is visible, "starting" never lasts longer than
    // one action (plus slack for polling), and the IP stays where it was.
    let (mut shown, mut last_shown) = (None, None);
    let mut starting_since: Option<tokio::time::Instant> = None;
    let mut longest_starting = Duration::ZERO;
    while tokio::time::Instant::now() < recovery_at - Duration::from_secs(1) {
        if let Some(st) = c.agent_status(1).await {
            assert!(
                !format!("{st:?}").contains(&token),
                "the token appears in the agent's Status"
            );
            let g = st
                .groups
                .iter()
                .find(|g| g.name == tandem_tests::cluster::GROUP)
                .expect("group");
            // The first failure shown, and the failure still shown at the latest sample.
            last_shown = shown_failure(g);
            if shown.is_none() {
                shown = last_shown.clone();
            }
            if g.state == apb::GroupState::Starting as i32 {
                let since = *starting_since.get_or_insert_with(tokio::time::Instant::now);
                longest_starting = longest_starting.max(since.elapsed());
            } else {
                starting_since = None;
            }
        }
        assert_eq!(
            c.holder().as_deref(),
            Some("primary"),
            "moved while the provider was down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "provider outage: failure shown as {shown:?}, still shown at the end as {last_shown:?}; \
         longest continuous 'starting' {} ms",
        longest_starting.as_millis()
    );
    assert!(
        shown.is_some() && last_shown.is_some(),
        "the secondary's Status did not show the failure while it lasted: first {shown:?}, \
         last {last_shown:?}{}",
        c.diagnostics()
    );
    assert!(
        longest_starting <= ACTION_TIMEOUT + Duration::from_secs(3),
        "stuck in starting for {longest_starting:?}"
    );

    // After recovery: the move happens within the backoff in effect (the agent leaves a group
    // it failed to start for start_retry, doubling per failure), plus one action.
    let t = Timers::default();
    let mut s = Sampler::default();
    s.until_alone(&c, "secondary", t.start_retry_max + ACTION_TIMEOUT)
        .await;
    let failures = c
        .log(1, Daemon::Agent)
        .lines()
        .filter(|l| l.contains("failed to start"))
        .count();
    assert!(failures > 0, "no failed start logged{}", c.diagnostics());
    let backoff = t
        .start_retry
        .saturating_mul(1 << (failures - 1).min(16))
        .min(t.start_retry_max);
    let after = c
        .moved_after(recovery, "secondary")
        .expect("the move is after the recovery");
    println!(
        "provider outage: {failures} failed starts, backoff in effect {backoff:?}; the IP moved {} ms after \
         the provider came back ({} ms after the crash)",
        after.as_millis(),
        c.moved_after(crashed, "secondary")
            .unwrap_or_default()
            .as_millis()
    );
    assert!(
        after <= backoff + ACTION_TIMEOUT,
        "moved {after:?} after recovery; one backoff is {backoff:?}"
    );
    let g = c.group(1).await.expect("secondary answers");
    assert_eq!(g.state, apb::GroupState::Running as i32, "{g:?}");
    check_audit(&c, 1, "provider outage");
    assert_eq!(c.assign_calls(), 1, "one accepted assign");
    assert!(s.max_running <= 1);
}

/// Restarts the given processes one at a time as a service manager does it (SIGTERM, start,
/// wait until it is back and ready) and checks that the IP never moved and the curl loop
/// never missed an answer.
async fn rolling_restart(steps: &[(usize, Daemon)], scenario: &str) {
    let Some(spec) = spec(1, false) else { return };
    let mut c = launch(spec).await;
    let probe = c.probe(PROBE);
    let mut s = Sampler::default();
    let names = ["primary", "secondary"];
    for &(i, d) in steps {
        let stopped = c.terminate(i, d, Duration::from_secs(10)).await;
        c.restart(i, d).await.expect("restarted");
        // Back and ready: membership sees every node up (and is seen up), the agent is
        // connected, knows the primary holds the group, and could take it over.
        let ready = wait_for(MOVE_LIMIT, || async {
            for k in 0..2 {
                let m = c.membership_status(k).await?;
                let up = names
                    .iter()
                    .all(|n| tandem_tests::netns::tandem::node_is(&m, n, mpb::NodeState::Up));
                let a = c.agent_status(k).await?;
                let g = a.groups.first()?;
                let ready = g.readiness.as_ref().is_some_and(|r| r.ready);
                if !(up && a.membership_connected && g.holder == "primary" && ready) {
                    return None;
                }
            }
            Some(())
        })
        .await;
        assert!(
            ready.is_some(),
            "{scenario}: {} {d} not back and ready{}",
            names[i],
            c.diagnostics()
        );
        println!(
            "{scenario}: {} {d} back and ready {} ms after SIGTERM",
            names[i],
            SystemTime::now()
                .duration_since(stopped)
                .unwrap_or_default()
                .as_millis()
        );
        // Past the restarted agent's settle window, so the next restart meets agents that
        // act at once, as they would in a real rolling restart.
        let settle = Timers::default().settle + Duration::from_millis(500);
        s.steady(&c, "primary", settle, scenario).await;
    }
    // Late effects of the last restart would show within a few dead_after.
    s.steady(&c, "primary", Duration::from_secs(3), scenario)
        .await;
    check_audit(&c, 0, scenario);
    assert_eq!(c.assign_calls(), 0);
    check_probe(probe, 0, Duration::from_millis(500), scenario);
}

/// The rolling restart that works today: every process but the holder's membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_both_agents_and_the_standbys_membership_moves_nothing() {
    rolling_restart(
        &[
            (1, Daemon::Agent),
            (1, Daemon::Membership),
            (0, Daemon::Agent),
        ],
        "rolling restart (all but the holder's membership)",
    )
    .await;
}

/// The rest of the rolling restart: membership on the holder. Its clean shutdown tells the
/// peer it leaves and the peer declares the node dead at once, but the holder's agent still
/// runs and holds: the peer's agent keeps what it announced as held for dead_after, and
/// membership is back (a new generation) well within it. (Found here: the IP failed over and
/// back, two moves.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_membership_on_the_holder_moves_nothing() {
    rolling_restart(
        &[(0, Daemon::Membership)],
        "rolling restart (the holder's membership)",
    )
    .await;
}

/// The agent on the holder dies (SIGKILL) while membership lives: no failover, the service
/// keeps answering, and the restarted agent finds the IP already here without an assign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_on_the_holder_moves_nothing_and_its_restart_makes_no_assign() {
    let Some(spec) = spec(1, false) else { return };
    let mut c = launch(spec).await;
    let probe = c.probe(PROBE);
    let before = (c.audit().len(), requests(&c, "POST"), requests(&c, "GET"));
    c.kill9(0, Daemon::Agent);
    // Longer than the agents' peer_stale_after: a silent agent is not a dead node.
    let quiet = Timers::default().peer_stale_after + Duration::from_secs(3);
    let end = tokio::time::Instant::now() + quiet;
    while tokio::time::Instant::now() < end {
        assert_eq!(c.holder().as_deref(), Some("primary"), "the IP moved");
        let g = c.group(1).await.expect("secondary answers");
        assert_ne!(
            g.state,
            apb::GroupState::Running as i32,
            "the secondary started the group while the primary lives{}",
            c.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.restart(0, Daemon::Agent).await.expect("agent back");
    let mut s = Sampler::default();
    s.until_alone(&c, "primary", MOVE_LIMIT).await;
    s.steady(
        &c,
        "primary",
        Duration::from_secs(3),
        "after the agent restart",
    )
    .await;
    let (posts, gets) = (
        requests(&c, "POST") - before.1,
        requests(&c, "GET") - before.2,
    );
    println!("agent killed: restart reconciled with {posts} POSTs and {gets} GETs");
    assert_eq!(posts, 0, "the restarted agent made a mutating call");
    check_audit(&c, 0, "agent killed");
    check_probe(probe, 0, Duration::from_millis(500), "agent killed");
}

/// Membership on the holder dies (SIGKILL) while its agent lives: the peer takes over after
/// dead_after, the orphaned agent gives the group up, and when membership is back the IP moves
/// back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_killed_on_the_holder_fails_over_and_back_once() {
    let Some(spec) = spec(1, false) else { return };
    let dead_after = spec.dead_after;
    let mut c = launch(spec).await;
    let probe = c.probe(PROBE);
    let killed = c.kill9(0, Daemon::Membership);
    let mut s = Sampler::default();
    s.until_alone(&c, "secondary", MOVE_LIMIT).await;
    let took = c.moved_after(killed, "secondary").expect("move recorded");
    c.restart(0, Daemon::Membership)
        .await
        .expect("membership back");
    let back = SystemTime::now();
    s.until_alone(&c, "primary", MOVE_LIMIT).await;
    s.steady(&c, "primary", Duration::from_secs(3), "after failback")
        .await;
    println!(
        "membership killed: failover {} ms after the kill, failback {} ms after membership is back",
        took.as_millis(),
        c.moved_after(back, "primary")
            .unwrap_or_default()
            .as_millis()
    );
    assert!(
        took < dead_after + Duration::from_secs(3),
        "failover took {took:?}"
    );
    check_audit(&c, 2, "membership killed");
    // Detection, one assign, and the curl loop's own period and timeout.
    check_probe(
        probe,
        2,
        dead_after + Duration::from_secs(3),
        "membership killed",
    );
}

/// One-way loss: the primary hears the secondary, the secondary hears nothing. The IP moves
/// at most once while it lasts, never flaps, and the heal moves it at most once more.
///
/// The secondary declares the primary dead and takes the IP; the primary's monitor finds it
/// lost. Its agent must not claim it back when the secondary's agent falls silent (its
/// messages no longer reach a node its membership thinks dead): the secondary is still
/// alive in the primary's view and may hold it. (Found here: after peer_stale_after, 10 s,
/// about one move a second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_loss_with_agents_gives_one_holder_and_no_flapping() {
    let Some(spec) = spec(1, false) else { return };
    let c = launch(spec).await;
    let probe = c.probe(PROBE);
    let net = tandem_tests::netns::of(&c).expect("namespaces");
    let mut s = Sampler::default();
    net.inbound_loss(1, 100).expect("the secondary deaf");
    // Long enough for detection, a move, and a ping-pong to show: past the agents'
    // peer_stale_after twice.
    let lasts = Timers::default().peer_stale_after * 2 + Duration::from_secs(5);
    let end = tokio::time::Instant::now() + lasts;
    while tokio::time::Instant::now() < end {
        s.sample(&c).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = c.holder_changes().len();
    assert!(
        during <= 1,
        "flapping during {lasts:?} of one-way loss: {}{}",
        moves(&c),
        c.diagnostics()
    );
    let holder = c.holder().expect("a holder");
    s.steady(&c, &holder, Duration::from_secs(3), "one-way loss")
        .await;
    net.heal().expect("heal");
    s.until_alone(&c, "primary", MOVE_LIMIT).await;
    s.steady(&c, "primary", Duration::from_secs(3), "after the heal")
        .await;
    println!(
        "asymmetric loss: {during} moves while it lasted (holder {holder}), at most {} agents running at once",
        s.max_running
    );
    check_audit(&c, 2 * during, "asymmetric loss");
    check_probe(probe, 2 * during, Duration::from_secs(1), "asymmetric loss");
}

/// Two links: one cut moves nothing; both cut is a failover (two_node: the secondary takes
/// the IP, with a witness the primary is the minority and releases it); the heal fails back
/// once.
async fn links_cut_one_then_both(witness: bool) {
    let scenario = if witness {
        "links witness"
    } else {
        "links two_node"
    };
    let Some(spec) = spec(2, witness) else { return };
    let c = launch(spec).await;
    let probe = c.probe(PROBE);
    let net = tandem_tests::netns::of(&c).expect("namespaces");
    let mut s = Sampler::default();
    net.cut_link(0, 0).expect("cut link 0");
    s.steady(&c, "primary", Duration::from_secs(4), "one link cut")
        .await;
    let cut = SystemTime::now();
    net.cut_link(0, 1).expect("cut link 1");
    s.until_alone(&c, "secondary", MOVE_LIMIT).await;
    let took = c.moved_after(cut, "secondary").expect("move recorded");
    if witness {
        let p = c.agent_status(0).await.expect("primary agent answers");
        assert!(!p.quorate, "the cut-off primary still thinks it is quorate");
    }
    s.steady(&c, "secondary", Duration::from_secs(4), "both links cut")
        .await;
    let healed = SystemTime::now();
    net.heal().expect("heal");
    s.until_alone(&c, "primary", MOVE_LIMIT).await;
    s.steady(&c, "primary", Duration::from_secs(3), "after the heal")
        .await;
    println!(
        "{scenario}: failover {} ms after the second cut, failback {} ms after the heal, at most {} \
         agents running at once",
        took.as_millis(),
        c.moved_after(healed, "primary")
            .unwrap_or_default()
            .as_millis(),
        s.max_running
    );
    check_audit(&c, 2, scenario);
    assert_eq!(c.assign_calls(), 2, "{scenario}: one assign per move");
    if witness {
        assert!(s.max_running <= 1, "two agents ran the group at once");
    }
    check_probe(probe, 2, Duration::from_secs(1), scenario);
}

/// Both cut under two_node: the secondary takes the IP; the primary, which sees the
/// secondary dead, finds it lost and must not take it back while the partition that caused
/// the loss lasts (it is preferred and the only candidate it knows). (Found here: about one
/// move a second for as long as the cut lasted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_link_cut_moves_nothing_both_cut_fail_over_two_node() {
    links_cut_one_then_both(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_link_cut_moves_nothing_both_cut_only_the_majority_holds() {
    links_cut_one_then_both(true).await;
}
