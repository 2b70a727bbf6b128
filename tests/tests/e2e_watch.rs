//! `ipctl watch` end to end (issue 12 item 3): real daemons, the real ipctl binary, a
//! `release` and a `kill -9`. Membership's events and the resource agent's (group starting,
//! running, stopping, stopped, moved, with the cause and the provider call's duration) come
//! out of one `ipctl watch`, in time order, as JSON lines and as text.
use std::time::Duration;

use serde_json::Value;
use tandem_proto::agent::v1 as apb;
use tandem_tests::cluster::{Binaries, Cluster, GROUP, Spec, wait_for};
use tandem_tests::ipctl::{LIMIT, Watcher};

fn group_event(v: &Value, event: &str, cause: &str) -> bool {
    v["source"] == "agent" && v["event"] == event && v["group"] == GROUP && v["cause"] == cause
}

/// The provider call behind a start, with its duration.
fn assert_assign(v: &Value) {
    let a = &v["actions"][0];
    assert_eq!(a["provider_call"], "digitalocean assign", "{v}");
    assert_eq!(a["action"], "start", "{v}");
    assert_eq!(a["result"], "ok", "{v}");
    // The emulator takes 100 ms per action; the call waits for it.
    let took = a["duration_ms"].as_f64().expect("duration_ms");
    assert!(took >= 100.0, "{v}");
    assert!(v["took_ms"].as_f64().expect("took_ms") >= took, "{v}");
}

async fn ipctl(c: &Cluster, i: usize, args: &[&str]) -> String {
    let (ok, said) = tandem_tests::ipctl::run(c, i, args).await;
    assert!(ok, "ipctl {args:?}: {said}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_the_agents_events_of_a_release_and_a_kill_among_membership_s() {
    let mut c = Cluster::start(Spec::fast(Binaries::for_tests().expect("daemon binaries")))
        .await
        .expect("cluster starts");
    let settled = wait_for(LIMIT, || async {
        let g = c.group(1).await?;
        (g.holder == "primary" && c.group(0).await?.state == apb::GroupState::Running as i32)
            .then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "cluster never settled{}",
        c.diagnostics()
    );

    let primary = Watcher::start(&c, 0, true);
    let secondary = Watcher::start(&c, 1, true);
    let text = Watcher::start(&c, 0, false);
    for w in [&primary, &secondary] {
        w.wait_json("agent snapshot", |v| {
            v["type"] == "snapshot" && v["source"] == "agent"
        })
        .await;
        w.wait_json("membership snapshot", |v| {
            v["type"] == "snapshot" && v["source"] == "membership"
        })
        .await;
    }
    let (_, snap) = primary
        .wait_json("agent snapshot", |v| v["source"] == "agent")
        .await;
    assert_eq!(snap["schema"], "tandem.ipctl.watch/v1");
    assert_eq!(snap["groups"][0]["state"], "running", "{snap}");
    text.wait_text("resource agent on primary").await;

    // The hand-over command tells the operator to watch: the watch shows the hand-over.
    let said = ipctl(&c, 0, &["release", GROUP]).await;
    assert!(said.contains("ipctl watch"), "{said}");
    let (_, stopping) = primary
        .wait_json("stopping", |v| group_event(v, "group_stopping", "operator"))
        .await;
    assert_eq!(stopping["to"], "secondary", "{stopping}");
    assert_eq!(stopping["node"], "primary", "{stopping}");
    primary
        .wait_json("stopped", |v| group_event(v, "group_stopped", "operator"))
        .await;
    let (_, moved) = primary
        .wait_json("moved", |v| group_event(v, "group_moved", "operator"))
        .await;
    assert_eq!(
        (&moved["from"], &moved["to"]),
        (&"primary".into(), &"secondary".into()),
        "{moved}"
    );
    let (_, running) = secondary
        .wait_json("running there", |v| {
            group_event(v, "group_running", "operator")
        })
        .await;
    assert_eq!(running["from"], "primary", "{running}");
    assert_assign(&running);

    // kill -9 of the new holder: on the primary, membership's verdict, then the failover.
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.crash_node(1);
    let (dead, _) = primary
        .wait_json("node_dead", |v| {
            v["source"] == "membership" && v["event"] == "node_dead" && v["node"] == "secondary"
        })
        .await;
    let (starting, s) = primary
        .wait_json("starting", |v| group_event(v, "group_starting", "failover"))
        .await;
    assert_eq!(s["from"], "secondary", "{s}");
    let (run, r) = primary
        .wait_json("running", |v| group_event(v, "group_running", "failover"))
        .await;
    assert_assign(&r);
    assert!(dead < starting && starting < run, "{:#?}", primary.lines());
    // Merged in time order: every event's `at` is at or after the one before.
    let ats: Vec<String> = primary
        .json()
        .iter()
        .filter(|v| v["type"] == "event")
        .map(|v| v["at"].as_str().expect("at").to_owned())
        .collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");

    let dead = text.wait_text("node secondary DEAD").await;
    let run = text
        .wait_text("group floatip RUNNING here (failover, from secondary) in ")
        .await;
    assert!(dead < run, "{:#?}", text.lines());
    assert!(
        text.lines()[run].contains("reserved-ip 127.0.0.100 start (digitalocean assign) ok in"),
        "{}",
        text.lines()[run]
    );

    // A one-shot status tells the same story: the agent's last events, with cause and time.
    let status: Value =
        serde_json::from_str(&ipctl(&c, 0, &["status", "--json"]).await).expect("JSON");
    let recent = status["agent"]["recent_events"]
        .as_array()
        .expect("recent_events");
    let last = recent
        .iter()
        .rfind(|v| group_event(v, "group_running", "failover"))
        .unwrap_or_else(|| panic!("no failover in {recent:#?}"));
    assert_eq!(last, &r, "the same line as the watch's");
    let said = ipctl(&c, 0, &["status"]).await;
    let events = said
        .split("Recent events (resource agent)\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no agent events in:\n{said}"));
    assert!(
        events.contains("group floatip RUNNING here (failover, from secondary) in "),
        "{said}"
    );
}
