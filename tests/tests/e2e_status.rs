//! `ipctl status` tells the truth (issue 12 item 6), end to end: real daemons, the real
//! ipctl binary, the emulator. The reserved IP shows which droplet holds it (id and name);
//! a new API token written over a revoked one is used without a restart; a node killed
//! with -9 is "unreachable", not "online, unhealthy"; a link never heard since membership
//! started says "never heard", not "loss 0%".
use std::time::Duration;

use serde_json::Value;
use tandem_tests::cluster::{Binaries, Cluster, Daemon, Spec, wait_for};

const LIMIT: Duration = Duration::from_secs(15);

async fn ipctl_status(c: &Cluster, i: usize, json: bool) -> String {
    let args: &[&str] = if json {
        &["status", "--json"]
    } else {
        &["status"]
    };
    tandem_tests::ipctl::run(c, i, args).await.1
}

async fn status_json(c: &Cluster, i: usize) -> Value {
    let out = ipctl_status(c, i, true).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The first agent of the group on node `i`, as `ipctl status --json` shows it.
fn ip_agent(v: &Value) -> &Value {
    &v["agent"]["groups"][0]["agents"][0]
}

async fn ready(c: &Cluster, i: usize) -> Option<bool> {
    let v = status_json(c, i).await;
    v["agent"]["groups"][0]["ready"].as_bool()
}

/// `tandem_agent_token_reloads_total{outcome}` of the secondary's agent, scraped.
async fn reloads(c: &Cluster, outcome: &str) -> Option<f64> {
    tandem_tests::metrics::scrape(c, 1, Daemon::Agent)
        .await?
        .value("tandem_agent_token_reloads_total", &[("outcome", outcome)])
}

/// Writes the node's token file as an operator would: a new file moved into place.
fn write_token(c: &Cluster, i: usize, token: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = c.nodes[i].dir.join("do-token");
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).expect("token written");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).expect("mode");
    std::fs::rename(&tmp, &path).expect("token in place");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_holder_a_new_token_a_dead_node_and_a_link_never_heard() {
    let mut spec = Spec::fast(Binaries::for_tests().expect("daemon binaries"));
    // Often enough to see a token change within seconds; not so often that the holder's
    // probes and monitors spend DigitalOcean's 250 requests a minute (the emulator enforces
    // it, and a spent budget fails the holder's monitor).
    spec.readiness_interval = Some(Duration::from_secs(2));
    spec.metrics = true;
    let mut c = Cluster::start(spec).await.expect("cluster starts");
    let droplet = c.nodes[0].droplet.expect("primary's droplet");

    // The holder, by the provider's id and name, once a monitor has run.
    let want = format!("held by droplet {droplet} (primary)");
    let held = wait_for(LIMIT, || async {
        let v = status_json(&c, 0).await;
        (ip_agent(&v)["detail"] == want.as_str()).then_some(v)
    })
    .await;
    assert!(
        held.is_some(),
        "no {want:?} in {:#}{}",
        status_json(&c, 0).await,
        c.diagnostics()
    );
    let text = ipctl_status(&c, 0, false).await;
    assert!(
        text.contains(&format!("reserved-ip {}  {want}", c.ip)),
        "{text}"
    );

    // The standby's token is revoked: not ready. A new token written into its file is used
    // at the next call, without a restart.
    assert_eq!(
        wait_for(LIMIT, || async { ready(&c, 1).await.filter(|r| *r) }).await,
        Some(true),
        "the secondary never became ready{}",
        c.diagnostics()
    );
    let agent_pid = c.pid(1, Daemon::Agent);
    let old = c.nodes[1].token.clone().expect("token");
    c.emulator.revoke(&old).await;
    assert_eq!(
        wait_for(LIMIT, || async { ready(&c, 1).await.filter(|r| !*r) }).await,
        Some(false),
        "the revoked token never showed"
    );
    let new = format!("dop_v1_{}", "f".repeat(64));
    let added = reqwest::Client::new()
        .post(format!("{}/tokens", c.emulator.addresses.admin))
        .json(&serde_json::json!({ "token": new }))
        .send()
        .await
        .expect("admin reachable");
    assert!(added.status().is_success(), "{}", added.status());
    // First readable by others: refused with the old token kept, and counted.
    write_token(&c, 1, &new, 0o644);
    let refused = wait_for(LIMIT, || async {
        reloads(&c, "refused").await.filter(|n| *n >= 1.0)
    })
    .await;
    assert_eq!(refused, Some(1.0), "the open token file was not refused");
    assert_eq!(
        ready(&c, 1).await,
        Some(false),
        "an open token file was used"
    );
    write_token(&c, 1, &new, 0o600);
    let back = wait_for(LIMIT, || async { ready(&c, 1).await.filter(|r| *r) }).await;
    assert_eq!(
        back,
        Some(true),
        "the new token was not picked up{}",
        c.diagnostics()
    );
    assert_eq!(
        c.pid(1, Daemon::Agent),
        agent_pid,
        "the agent was restarted"
    );
    assert_eq!(reloads(&c, "ok").await, Some(1.0), "one reload used");
    assert_eq!(reloads(&c, "refused").await, Some(1.0), "one refused");
    let log = c.log(1, Daemon::Agent);
    assert!(
        log.contains("the API token file changed: the new token is used from now on"),
        "{log}"
    );
    assert!(
        !log.contains(&new) && !log.contains(&old),
        "a log shows a token"
    );

    // kill -9 of the secondary: dead and unreachable, with since when; not "online, unhealthy".
    c.crash_node(1);
    let dead = wait_for(LIMIT, || async {
        let t = ipctl_status(&c, 0, false).await;
        t.lines()
            .find(|l| l.trim_start().starts_with("secondary") && l.contains("DEAD"))
            .map(str::to_owned)
    })
    .await
    .expect("the secondary never showed dead");
    assert!(dead.contains("unreachable"), "{dead}");
    assert!(dead.contains("(since 20"), "{dead}");
    assert!(
        !dead.contains("online") && !dead.contains("healthy"),
        "{dead}"
    );

    // Membership restarted while the secondary is down: its link was never heard since.
    c.terminate(0, Daemon::Membership, Duration::from_secs(5))
        .await;
    c.restart(0, Daemon::Membership).await.expect("restart");
    let never = wait_for(LIMIT, || async {
        let v = status_json(&c, 0).await;
        v["membership"]["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == "secondary" && n["links"][0]["last_heard_ms"].is_null())
            .cloned()
    })
    .await
    .expect("membership never reported the secondary after its restart");
    assert!(never["links"][0]["loss"].is_null(), "{never}");
    let text = ipctl_status(&c, 0, false).await;
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("secondary"))
        .expect("secondary's line");
    // Unknown until init_dead, then dead: either way never "online, unhealthy".
    assert!(
        lines[at].contains("never heard") || lines[at].contains("unreachable"),
        "{text}"
    );
    assert!(
        lines[at + 1].contains("never heard") && !lines[at + 1].contains("loss"),
        "{text}"
    );
}
