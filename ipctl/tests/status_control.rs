//! `ipctl standby|online|takeover|release` and `ipctl watch`, run as the real binary against
//! in-test Agent and Membership servers on temp Unix sockets: what is asked, and what the
//! operator is told when it fails.
mod status_support;

use status_support::*;
use tandem_proto::membership::v1 as mv1;
use tonic::Status;

fn agent_answering(
    f: impl Fn(&str, &str) -> Reply<String> + Send + Sync + 'static,
) -> (Daemons, FakeAgent) {
    let agent = FakeAgent::answering(f);
    (Daemons::start(None, Some(agent.clone())), agent)
}

#[test]
fn takeover_sends_the_group_and_prints_the_agents_answer() {
    let (d, agent) = agent_answering(|_, g| Ok(format!("taking {g} over from secondary")));
    let out = d.ipctl(&["takeover", "floatip"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("taking floatip over from secondary\n"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        *agent.calls.lock().unwrap(),
        vec![("takeover".to_owned(), "floatip".to_owned())]
    );
}

#[test]
fn standby_and_online_default_to_this_node_and_pass_a_named_one() {
    let (d, agent) = agent_answering(|_, _| Ok(String::new()));
    for args in [
        &["standby"][..],
        &["standby", "secondary"],
        &["online"],
        &["release", "floatip"],
    ] {
        let out = d.ipctl(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    assert_eq!(
        *agent.calls.lock().unwrap(),
        vec![
            ("standby".to_owned(), String::new()),
            ("standby".to_owned(), "secondary".to_owned()),
            ("online".to_owned(), String::new()),
            ("release".to_owned(), "floatip".to_owned()),
        ]
    );
    // An empty message from the agent still gets a sentence naming the node it acted on.
    let out = d.ipctl(&["standby"]);
    assert!(
        text(&out.stdout).starts_with("primary is in standby\n"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn refused_takeover_shows_the_daemons_reason_and_what_a_takeover_needs() {
    let (d, _) = agent_answering(|_, _| {
        Err(Status::failed_precondition(
            "this node is not a candidate: no quorum (1 of 3 voters alive, 2 needed)",
        ))
    });
    let out = d.ipctl(&["takeover", "floatip"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "takeover of floatip refused by tandem-resource-agent: this node is not a \
             candidate: no quorum (1 of 3 voters alive, 2 needed)"
        ),
        "{err}"
    );
    assert!(
        err.contains("a takeover needs this node to be a candidate: quorum, online"),
        "{err}"
    );
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn permission_denied_by_the_agent_says_which_group_to_join() {
    let (d, _) = agent_answering(|_, _| {
        Err(Status::permission_denied(
            "uid 1000 may not change the cluster: root or members of group \"tandem-admin\"",
        ))
    });
    let out = d.ipctl(&["standby"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("uid 1000 may not change the cluster"), "{err}");
    assert!(
        err.contains("join the tandem group (status) / tandem-admin group (changes), or use sudo"),
        "{err}"
    );
}

#[test]
fn unknown_group_points_at_status() {
    let (d, _) = agent_answering(|_, g| Err(Status::not_found(format!("unknown group {g:?}"))));
    let out = d.ipctl(&["release", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unknown group \"nope\""), "{err}");
    assert!(err.contains("ipctl status"), "{err}");
}

#[test]
fn missing_agent_socket_says_to_start_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let out = ipctl(dir.path(), &["takeover", "floatip"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("tandem-resource-agent is not running"),
        "{err}"
    );
    assert!(
        err.contains("systemctl start tandem-resource-agent"),
        "{err}"
    );
}

#[test]
fn stale_agent_socket_says_to_start_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file whose listener is gone: what a crashed daemon leaves behind.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("agent.sock")).unwrap());
    let out = ipctl(dir.path(), &["online"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("exists but nobody is listening"), "{err}");
    assert!(
        err.contains("systemctl start tandem-resource-agent"),
        "{err}"
    );
}

#[test]
fn unreadable_socket_says_which_group_to_join() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let d = Daemons::start(None, Some(FakeAgent::answering(|_, _| Ok(String::new()))));
    let sock = d.run_dir().join("agent.sock");
    std::fs::set_permissions(d.run_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ipctl"));
    cmd.arg("--run-dir").arg(d.run_dir()).arg("standby");
    if nix::unistd::geteuid().is_root() {
        // root ignores file modes: ask as an unprivileged user, as an operator would (std
        // drops root's supplementary groups when it sets the uid).
        cmd.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let out = cmd.output().expect("run ipctl");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("permission denied on"), "{err}");
    assert!(
        err.contains("tandem-admin group (changes), or use sudo"),
        "{err}"
    );
}

fn view() -> mv1::View {
    let s = membership(
        "primary",
        4,
        vec![
            node(
                "primary",
                mv1::NodeRole::Member,
                mv1::NodeState::Up,
                true,
                7,
                60,
                vec![],
            ),
            node(
                "secondary",
                mv1::NodeRole::Member,
                mv1::NodeState::Up,
                false,
                3,
                60,
                vec![],
            ),
        ],
        quorum(mv1::QuorumPolicy::TwoNode, true, 2, 2, 1),
    );
    s.view.unwrap()
}

fn event(seq: u64, view_id: u64, kind: mv1::event::Kind) -> Reply<mv1::WatchResponse> {
    Ok(mv1::WatchResponse {
        kind: Some(mv1::watch_response::Kind::Event(mv1::Event {
            seq,
            view_id,
            at: at(seq as i64),
            kind: Some(kind),
        })),
        snapshot_seq: 0,
    })
}

fn watch_stream() -> Vec<Reply<mv1::WatchResponse>> {
    use mv1::event::Kind;
    vec![
        Ok(mv1::WatchResponse {
            kind: Some(mv1::watch_response::Kind::Snapshot(view())),
            snapshot_seq: 10,
        }),
        event(
            11,
            4,
            Kind::LinkDown(mv1::LinkDown {
                node: "secondary".into(),
                link: 1,
                address: "127.0.1.22:694".into(),
            }),
        ),
        event(
            12,
            5,
            Kind::NodeDead(mv1::NodeDead {
                node: "secondary".into(),
                generation: 3,
                reason: mv1::node_dead::Reason::Silent as i32,
                silent_for: dur(1_000),
            }),
        ),
        event(
            13,
            6,
            Kind::NodeUp(mv1::NodeUp {
                node: "secondary".into(),
                generation: 4,
                new_incarnation: true,
                previous_generation: 3,
            }),
        ),
    ]
}

fn membership_with_watch(watch: Vec<Reply<mv1::WatchResponse>>) -> Daemons {
    let status = membership(
        "primary",
        4,
        vec![],
        quorum(mv1::QuorumPolicy::TwoNode, true, 2, 2, 1),
    );
    Daemons::start(Some(FakeMembership::new(status, watch)), None)
}

#[test]
fn watch_prints_the_snapshot_then_one_line_per_event() {
    let d = membership_with_watch(watch_stream());
    let out = d.ipctl(&["watch"]);
    // The fake daemon ends the stream after the last event: ipctl says so and fails.
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("tandem-membership closed the stream"),
        "{}",
        text(&out.stderr)
    );
    insta::assert_snapshot!("watch_text", text(&out.stdout));
}

#[test]
fn watch_json_is_one_object_per_line() {
    let d = membership_with_watch(watch_stream());
    let out = d.ipctl(&["watch", "--json"]);
    let stdout = text(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines.iter().all(|l| l["schema"] == "tandem.ipctl.watch/v1"));
    assert_eq!(lines[0]["type"], "snapshot");
    assert_eq!(lines[0]["snapshot_seq"], 10);
    assert_eq!(lines[0]["nodes"][1]["name"], "secondary");
    assert_eq!(lines[0]["quorum"]["policy"], "two_node");
    assert_eq!(lines[1]["type"], "event");
    assert_eq!(lines[1]["event"], "link_down");
    assert_eq!(lines[1]["link"], 1);
    assert_eq!(lines[2]["seq"], 12);
    assert_eq!(lines[2]["event"], "node_dead");
    assert_eq!(lines[2]["reason"], "silent");
    assert_eq!(lines[2]["at"], "2026-11-24T19:40:12Z");
    assert_eq!(lines[3]["event"], "node_up");
    assert_eq!(lines[3]["new_incarnation"], true);
    assert_eq!(lines[3]["previous_generation"], 3);
}

#[test]
fn watch_without_membership_says_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = ipctl(dir.path(), &["watch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("systemctl start tandem-membership"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn watch_reports_a_gap_in_event_numbers() {
    let mut stream = watch_stream();
    let _ = stream.remove(2); // seq 12 never arrives
    let d = membership_with_watch(stream);
    let out = d.ipctl(&["watch"]);
    assert!(
        text(&out.stderr).contains("jumped from #11 to #13"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn watch_starts_again_from_a_snapshot_when_dropped_for_being_slow() {
    let mut first = watch_stream();
    first.truncate(2);
    first.push(Err(Status::resource_exhausted("watch subscriber too slow")));
    let status = membership(
        "primary",
        4,
        vec![],
        quorum(mv1::QuorumPolicy::TwoNode, true, 2, 2, 1),
    );
    let fake = FakeMembership::with_watch_rounds(status, vec![first, watch_stream()]);
    let calls = fake.watch_calls.clone();
    let d = Daemons::start(Some(fake), None);
    let out = d.ipctl(&["watch", "--json"]);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(
        text(&out.stderr).contains("fell too far behind the event stream; starting again"),
        "{}",
        text(&out.stderr)
    );
    let types: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        types,
        ["snapshot", "event", "snapshot", "event", "event", "event"]
    );
}
