//! `ipctl status` run as the real binary against in-test Membership and Agent servers
//! answering fixed Status replies; the text output is pinned with insta snapshots and the
//! JSON output is checked against the schema documented in docs/IPCTL.md.
mod status_support;

use status_support::*;
use tandem_proto::agent::v1 as av1;
use tandem_proto::membership::v1 as mv1;

use av1::{ActionResult as R, AgentKind as K, AgentState as A, GroupState as G};
use mv1::{LinkState as L, NodeRole::Member, NodeRole::Witness, NodeState as S};

fn ip_agent(state: A, last: Option<av1::LastAction>, detail: &str) -> av1::AgentStatus {
    agent_item(
        "reserved-ip 127.0.0.8",
        K::ReservedIp,
        state,
        0,
        detail,
        last,
    )
}

fn nginx(state: A, last: Option<av1::LastAction>) -> av1::AgentStatus {
    agent_item("lsb nginx", K::Lsb, state, 0, "", last)
}

fn group(
    desired: &str,
    holder: &str,
    state: G,
    agents: Vec<av1::AgentStatus>,
    last: Option<av1::LastAction>,
) -> av1::GroupStatus {
    av1::GroupStatus {
        name: "floatip".into(),
        prefer: "primary".into(),
        failback: "auto".into(),
        desired_holder: desired.into(),
        holder: holder.into(),
        state: state as i32,
        agents,
        restarts: 0,
        last_action: last,
        readiness: ready(),
        not_candidate_reason: String::new(),
        constraints: vec![],
        waiting_for: String::new(),
    }
}

fn two_nodes_up() -> mv1::StatusResponse {
    membership(
        "primary",
        4,
        vec![
            node(
                "primary",
                Member,
                S::Up,
                true,
                7,
                7380,
                vec![link(0, "127.0.0.11:694", L::Unknown, None, None, 0.0, 0)],
            ),
            node(
                "secondary",
                Member,
                S::Up,
                false,
                3,
                7375,
                vec![
                    link(0, "127.0.0.22:694", L::Up, Some(40), Some(420), 0.0, 73_700),
                    link(
                        1,
                        "127.0.1.22:694",
                        L::Up,
                        Some(60),
                        Some(1_250),
                        0.02,
                        73_650,
                    ),
                ],
            ),
        ],
        quorum(mv1::QuorumPolicy::TwoNode, true, 2, 2, 1),
    )
}

fn healthy_agent() -> av1::StatusResponse {
    agent_status(
        "primary",
        true,
        vec![
            flags("primary", false, true, &["floatip"]),
            flags("secondary", false, true, &[]),
        ],
        vec![group(
            "primary",
            "primary",
            G::Running,
            vec![
                ip_agent(
                    A::Running,
                    action("monitor", R::Ok, -3, Some(180), ""),
                    "held by droplet 3164444 (primary)",
                ),
                nginx(A::Running, action("monitor", R::Ok, -2, Some(12), "")),
            ],
            action("start", R::Ok, -7370, Some(1_420), ""),
        )],
    )
}

fn status_text(d: &Daemons) -> (String, i32) {
    let out = d.ipctl(&["status"]);
    (
        redact(&text(&out.stdout), d.run_dir()),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn healthy_two_node_cluster() {
    let d = Daemons::start(
        Some(FakeMembership::new(two_nodes_up(), vec![])),
        Some(FakeAgent::new(healthy_agent())),
    );
    let (out, code) = status_text(&d);
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!("healthy_two_node", out);
}

#[test]
fn failover_in_progress_on_the_survivor() {
    let mut m = membership(
        "secondary",
        6,
        vec![
            node(
                "primary",
                Member,
                S::Dead,
                false,
                7,
                2,
                vec![
                    link(
                        0,
                        "127.0.0.11:694",
                        L::Down,
                        Some(3_100),
                        Some(450),
                        1.0,
                        73_700,
                    ),
                    link(
                        1,
                        "127.0.1.11:694",
                        L::Down,
                        Some(3_100),
                        Some(1_300),
                        1.0,
                        73_640,
                    ),
                ],
            ),
            node(
                "secondary",
                Member,
                S::Up,
                true,
                3,
                7375,
                vec![link(0, "127.0.0.22:694", L::Unknown, None, None, 0.0, 0)],
            ),
        ],
        quorum(mv1::QuorumPolicy::TwoNode, true, 2, 1, 1),
    );
    // What the survivor saw just before: the primary went silent on both links, then dead.
    use mv1::event::Kind as E;
    m.recent_events = vec![
        event(
            11,
            5,
            -4,
            E::NodeLate(mv1::NodeLate {
                node: "primary".into(),
                silent_for: dur(510),
            }),
        ),
        event(
            12,
            5,
            -3,
            E::LinkDown(mv1::LinkDown {
                node: "primary".into(),
                link: 1,
                address: "127.0.1.11:694".into(),
            }),
        ),
        event(
            13,
            6,
            -3,
            E::NodeDead(mv1::NodeDead {
                node: "primary".into(),
                generation: 7,
                reason: mv1::node_dead::Reason::Silent as i32,
                silent_for: dur(1_000),
            }),
        ),
    ];
    let a = agent_status(
        "secondary",
        true,
        vec![
            flags("primary", false, true, &[]),
            flags("secondary", false, true, &[]),
        ],
        vec![group(
            "secondary",
            "",
            G::Starting,
            vec![
                ip_agent(
                    A::Starting,
                    action(
                        "start",
                        R::Running,
                        -1,
                        None,
                        "assign action 901 in progress",
                    ),
                    "held by droplet 3164444 (primary, dead)",
                ),
                nginx(A::Stopped, None),
            ],
            action("start", R::Running, -1, None, ""),
        )],
    );
    let d = Daemons::start(
        Some(FakeMembership::new(m, vec![])),
        Some(FakeAgent::new(a)),
    );
    let (out, code) = status_text(&d);
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!("failover_in_progress", out);
}

#[test]
fn dead_member_of_a_three_node_cluster() {
    let m = membership(
        "primary",
        9,
        vec![
            node(
                "primary",
                Member,
                S::Up,
                true,
                7,
                7380,
                vec![link(0, "127.0.0.11:694", L::Unknown, None, None, 0.0, 0)],
            ),
            node(
                "secondary",
                Member,
                S::Dead,
                false,
                3,
                95,
                vec![link(
                    0,
                    "127.0.0.22:694",
                    L::Down,
                    Some(96_000),
                    Some(500),
                    1.0,
                    70_000,
                )],
            ),
            node(
                "witness",
                Witness,
                S::Late,
                false,
                2,
                1,
                vec![
                    link(
                        0,
                        "127.0.0.33:694",
                        L::Up,
                        Some(620),
                        Some(900),
                        0.3,
                        73_000,
                    ),
                    // Never heard on its second link: no loss to speak of.
                    link(1, "127.0.1.33:694", L::Unknown, None, None, 0.0, 0),
                ],
            ),
        ],
        quorum(mv1::QuorumPolicy::Majority, true, 3, 2, 2),
    );
    let a = agent_status(
        "primary",
        true,
        vec![
            flags("primary", false, true, &["floatip"]),
            flags("secondary", false, false, &[]),
        ],
        vec![group(
            "primary",
            "primary",
            G::Running,
            vec![
                ip_agent(
                    A::Running,
                    action("monitor", R::Ok, -3, Some(150), ""),
                    "held by droplet 3164444 (primary)",
                ),
                nginx(A::Running, action("monitor", R::Ok, -2, Some(9), "")),
            ],
            action("start", R::Ok, -7370, Some(1_100), ""),
        )],
    );
    let d = Daemons::start(
        Some(FakeMembership::new(m, vec![])),
        Some(FakeAgent::new(a)),
    );
    let (out, code) = status_text(&d);
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!("dead_node", out);
}

fn witness_cluster_without_quorum() -> (mv1::StatusResponse, av1::StatusResponse) {
    let m = membership(
        "primary",
        12,
        vec![
            node(
                "primary",
                Member,
                S::Up,
                true,
                7,
                7380,
                vec![link(0, "127.0.0.11:694", L::Unknown, None, None, 0.0, 0)],
            ),
            node(
                "secondary",
                Member,
                S::Dead,
                false,
                3,
                40,
                vec![link(
                    0,
                    "127.0.0.22:694",
                    L::Down,
                    Some(41_000),
                    Some(500),
                    1.0,
                    70_000,
                )],
            ),
            node(
                "witness",
                Witness,
                S::Dead,
                false,
                0,
                40,
                vec![link(0, "127.0.0.33:694", L::Unknown, None, None, 0.0, 0)],
            ),
        ],
        quorum(mv1::QuorumPolicy::Majority, false, 3, 1, 2),
    );
    let mut g = group(
        "",
        "",
        G::Stopped,
        vec![],
        action("stop", R::Ok, -39, Some(2_300), ""),
    );
    g.agents = vec![
        ip_agent(A::Stopped, action("stop", R::Ok, -39, Some(5), ""), ""),
        nginx(A::Stopped, action("stop", R::Ok, -38, Some(2_250), "")),
    ];
    g.not_candidate_reason = "no quorum: 1 of 3 voters alive, 2 needed".into();
    let mut a = agent_status(
        "primary",
        false,
        vec![
            flags("primary", false, true, &[]),
            flags("secondary", false, true, &[]),
        ],
        vec![g],
    );
    a.health[0].healthy = false;
    a.health[0].consecutive_failures = 4;
    a.health[0].consecutive_successes = 0;
    a.health[0].last_error = "connect: connection refused".into();
    (m, a)
}

#[test]
fn witness_cluster_without_quorum_releases() {
    let (m, a) = witness_cluster_without_quorum();
    let d = Daemons::start(
        Some(FakeMembership::new(m, vec![])),
        Some(FakeAgent::new(a)),
    );
    let (out, code) = status_text(&d);
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!("witness_no_quorum", out);
}

#[test]
fn agent_not_running_shows_membership_and_says_what_to_do() {
    let d = Daemons::start(Some(FakeMembership::new(two_nodes_up(), vec![])), None);
    let (out, code) = status_text(&d);
    assert_eq!(code, 3, "partial answer has its own exit code: {out}");
    assert!(
        out.contains("systemctl start tandem-resource-agent"),
        "{out}"
    );
    insta::assert_snapshot!("agent_not_running", out);
}

#[test]
fn membership_not_running_shows_the_agent_and_says_what_to_do() {
    let mut a = healthy_agent();
    a.membership_connected = false;
    a.membership_disconnected_for = dur(12_000);
    let d = Daemons::start(None, Some(FakeAgent::new(a)));
    let (out, code) = status_text(&d);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("systemctl start tandem-membership"), "{out}");
    insta::assert_snapshot!("membership_not_running", out);
}

#[test]
fn revoked_token_shows_not_ready_with_the_reason() {
    let mut a = healthy_agent();
    a.nodes[0].holds.clear();
    a.nodes[1].holds = vec!["floatip".into()];
    let g = &mut a.groups[0];
    g.desired_holder = "secondary".into();
    g.holder = "secondary".into();
    g.state = G::Stopped as i32;
    g.readiness = Some(av1::Readiness {
        ready: false,
        problems: vec![
            "provider rejected the API token (401 Unauthorized): revoked or mistyped? \
             replace /etc/tandem/do-token and restart tandem-resource-agent"
                .into(),
        ],
        checked_at: at(-5),
    });
    g.agents[0] = ip_agent(
        A::Failed,
        action("probe", R::Failed, -5, Some(210), "401 Unauthorized"),
        "",
    );
    g.agents[0].failures = 3;
    g.agents[1] = nginx(A::Stopped, None);
    g.last_action = action("stop", R::Ok, -600, Some(1_900), "");
    let d = Daemons::start(
        Some(FakeMembership::new(two_nodes_up(), vec![])),
        Some(FakeAgent::new(a)),
    );
    let (out, code) = status_text(&d);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("NOT READY"), "{out}");
    insta::assert_snapshot!("not_ready_revoked_token", out);
}

#[test]
fn nothing_running_exits_1_and_names_both_daemons() {
    let dir = tempfile::tempdir().unwrap();
    let out = ipctl(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(s.contains("systemctl start tandem-membership"), "{s}");
    assert!(s.contains("systemctl start tandem-resource-agent"), "{s}");
}

#[test]
fn json_output_has_the_documented_fields() {
    let (m, a) = witness_cluster_without_quorum();
    let d = Daemons::start(
        Some(FakeMembership::new(m, vec![])),
        Some(FakeAgent::new(a)),
    );
    let out = d.ipctl(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["schema"], "tandem.ipctl.status/v1");
    assert_eq!(v["cluster"], "web");
    assert_eq!(v["node"], "primary");

    let m = &v["membership"];
    assert_eq!(m["available"], true);
    assert!(m.get("error").is_none());
    assert_eq!(m["version"], "0.1.0");
    assert_eq!(m["generation"], 7);
    assert_eq!(m["uptime_ms"], 7_380_000.0);
    assert_eq!(m["view_id"], 12);
    assert_eq!(
        m["quorum"],
        serde_json::json!({"policy": "majority", "quorate": false, "voters": 3, "alive": 1, "needed": 2})
    );
    assert_eq!(m["timing"]["dead_after_ms"], 1000.0);
    assert_eq!(m["counters"]["datagrams_sent"], 73_800);
    assert_eq!(m["rejected"]["bad_tag"], 0);
    assert!(m["recent_events"].is_array(), "{v}");
    let nodes = m["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["name"], "primary");
    assert_eq!(nodes[0]["local"], true);
    assert_eq!(nodes[1]["state"], "dead");
    assert_eq!(nodes[1]["role"], "member");
    assert_eq!(nodes[1]["since"], "2026-11-24T19:39:20Z");
    assert_eq!(nodes[1]["state_age_ms"], 40_000.0);
    assert_eq!(nodes[2]["role"], "witness");
    let l = &nodes[1]["links"][0];
    assert_eq!(l["index"], 0);
    assert_eq!(l["address"], "127.0.0.22:694");
    assert_eq!(l["state"], "down");
    assert_eq!(l["last_heard_ms"], 41_000.0);
    assert_eq!(l["rtt_ms"], 0.5);
    assert_eq!(l["loss"], 1.0);
    assert_eq!(l["received"], 70_000);
    assert!(nodes[2]["links"][0]["rtt_ms"].is_null());
    // The local node's link is never "heard": no loss is made up for it.
    assert!(nodes[0]["links"][0]["last_heard_ms"].is_null());
    assert!(nodes[0]["links"][0]["loss"].is_null());

    let a = &v["agent"];
    assert_eq!(a["available"], true);
    assert_eq!(a["membership_connected"], true);
    assert!(a["membership_disconnected_for_ms"].is_null());
    assert_eq!(a["quorate"], false);
    assert_eq!(a["health"][0]["healthy"], false);
    assert_eq!(a["health"][0]["consecutive_failures"], 4);
    assert_eq!(a["health"][0]["last_error"], "connect: connection refused");
    assert_eq!(a["nodes"][0]["standby"], false);
    assert_eq!(a["nodes"][0]["holds"], serde_json::json!([]));
    let g = &a["groups"][0];
    assert_eq!(g["name"], "floatip");
    assert_eq!(g["prefer"], "primary");
    assert_eq!(g["failback"], "auto");
    assert!(g["desired_holder"].is_null());
    assert!(g["holder"].is_null());
    assert_eq!(g["state"], "stopped");
    assert_eq!(g["restarts"], 0);
    assert_eq!(g["ready"], true);
    assert_eq!(g["problems"], serde_json::json!([]));
    assert_eq!(g["readiness_checked_at"], "2026-11-24T19:39:55Z");
    assert_eq!(
        g["not_candidate_reason"],
        "no quorum: 1 of 3 voters alive, 2 needed"
    );
    assert_eq!(g["constraints"], serde_json::json!([]));
    assert_eq!(g["last_action"]["action"], "stop");
    assert_eq!(g["last_action"]["result"], "ok");
    assert_eq!(g["last_action"]["duration_ms"], 2300.0);
    assert_eq!(g["last_action"]["started_at"], "2026-11-24T19:39:21Z");
    assert!(g["last_action"]["message"].is_null());
    let ag = &g["agents"][0];
    assert_eq!(ag["name"], "reserved-ip 127.0.0.8");
    assert_eq!(ag["kind"], "reserved-ip");
    assert_eq!(ag["state"], "stopped");
    assert_eq!(ag["failures"], 0);
    assert!(ag["detail"].is_null());
}

/// After `ipctl release floatip` on the primary: the group moved to the secondary and is
/// pinned there; the primary stays a candidate (no ban of its own: it takes the group back
/// should the secondary fail). A third node's failure ban and a standby node show too, each
/// with the command that ends it.
fn released_agent() -> av1::StatusResponse {
    let mut g = group(
        "secondary",
        "secondary",
        G::Stopped,
        vec![
            ip_agent(A::Stopped, None, "held by droplet 3164555 (secondary)"),
            nginx(A::Stopped, None),
        ],
        action("stop", R::Ok, -60, Some(310), ""),
    );
    g.constraints = vec![
        av1::Constraint {
            kind: av1::ConstraintKind::Pin as i32,
            node: "secondary".into(),
            reason: "moved there by an operator (takeover there or release on the holder); \
                     lasts until it moves away from secondary"
                .into(),
            clear: "ipctl online secondary".into(),
        },
        av1::Constraint {
            kind: av1::ConstraintKind::Ban as i32,
            node: "tertiary".into(),
            reason: "failed there; retried there after a backoff if nobody else holds it".into(),
            clear: "ipctl online tertiary".into(),
        },
    ];
    agent_status(
        "primary",
        true,
        vec![
            flags("primary", false, true, &[]),
            flags("secondary", false, true, &["floatip"]),
            flags("tertiary", true, true, &[]),
        ],
        vec![g],
    )
}

#[test]
fn a_pin_a_ban_and_a_standby_show_with_the_command_that_ends_them() {
    let d = Daemons::start(
        Some(FakeMembership::new(two_nodes_up(), vec![])),
        Some(FakeAgent::new(released_agent())),
    );
    let (out, code) = status_text(&d);
    assert_eq!(code, 0, "{out}");
    insta::assert_snapshot!("released_pinned", out);
    let out = d.ipctl(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let c = &v["agent"]["groups"][0]["constraints"];
    assert_eq!(
        c[0],
        serde_json::json!({
            "kind": "pin", "node": "secondary",
            "reason": "moved there by an operator (takeover there or release on the holder); lasts until it moves away from secondary",
            "clear": "ipctl online secondary"
        })
    );
    assert_eq!(c[1]["kind"], "ban");
    assert_eq!(c[1]["clear"], "ipctl online tertiary");
    assert_eq!(v["agent"]["nodes"][2]["standby"], true);
}

#[test]
fn json_says_which_daemon_is_missing() {
    let d = Daemons::start(None, Some(FakeAgent::new(healthy_agent())));
    let out = d.ipctl(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["membership"]["available"], false);
    assert_eq!(v["membership"]["error"]["kind"], "not_running");
    assert_eq!(
        v["membership"]["error"]["hint"],
        "systemctl start tandem-membership"
    );
    assert!(v["membership"].get("nodes").is_none());
    assert_eq!(v["agent"]["available"], true);
    assert_eq!(
        v["node"], "primary",
        "taken from the agent when membership is down"
    );
}

/// A retained notice as membership keeps it, received `secs` from the fixed time.
fn notice(id: u64, secs: i64, payload: &str) -> mv1::Notice {
    mv1::Notice {
        id,
        from: "secondary".into(),
        from_generation: 3,
        topic: "tandem.notice/v1".into(),
        payload: payload.as_bytes().to_vec(),
        received_at: at(secs),
    }
}

/// On a witness (membership only, no agent): the fence the secondary ran, a failed attempt
/// then the one that worked, told by the cluster's notices; and one notice this ipctl does not
/// know, shown as text.
#[test]
fn a_witness_shows_who_fenced_whom_why_and_how_long() {
    let mut m = membership(
        "witness",
        9,
        vec![
            node(
                "primary",
                Member,
                S::Dead,
                false,
                7,
                30,
                vec![link(
                    0,
                    "127.0.0.11:694",
                    L::Down,
                    Some(31_000),
                    Some(400),
                    1.0,
                    9_000,
                )],
            ),
            node(
                "secondary",
                Member,
                S::Up,
                false,
                3,
                7380,
                vec![link(
                    0,
                    "127.0.0.22:694",
                    L::Up,
                    Some(40),
                    Some(450),
                    0.0,
                    70_000,
                )],
            ),
            node(
                "witness",
                Witness,
                S::Up,
                true,
                2,
                7380,
                vec![link(0, "127.0.0.33:694", L::Unknown, None, None, 0.0, 0)],
            ),
        ],
        quorum(mv1::QuorumPolicy::Majority, true, 3, 2, 2),
    );
    m.notices = vec![
        notice(
            1,
            -29,
            r#"{"schema":"tandem.notice.fence/v1","fenced":"primary","by":"secondary","outcome":"failed","reason":"declared dead: silent on every link; secondary had quorum and no live member still heard primary","attempt":1,"duration_ms":210,"since_death_ms":1210,"provider_call":"digitalocean power_off","error":"digitalocean: the API token was rejected (401 Unauthorized)","retry_in_ms":1000}"#,
        ),
        notice(
            2,
            -27,
            r#"{"schema":"tandem.notice.fence/v1","fenced":"primary","by":"secondary","outcome":"completed","reason":"declared dead: silent on every link; secondary had quorum and no live member still heard primary","attempt":2,"duration_ms":640,"since_death_ms":2860,"provider_call":"digitalocean power_off","detail":"droplet 3164444 powered off (action 7, 3 API calls, 0.6s)"}"#,
        ),
        notice(3, -5, "\u{1b}[31mfrom a newer agent"),
    ];
    let d = Daemons::start(Some(FakeMembership::new(m, vec![])), None);
    let (out, code) = status_text(&d);
    assert_eq!(
        code, 3,
        "no agent on a witness: a partial answer, as before: {out}"
    );
    insta::assert_snapshot!("witness_notices", out);
    let out = d.ipctl(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let n = &v["membership"]["notices"];
    assert_eq!(n.as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(n[0]["kind"], "fence");
    assert_eq!(n[0]["from"], "secondary");
    assert_eq!(n[0]["received_at"], "2026-11-24T19:39:31Z");
    assert_eq!(
        n[1]["fence"],
        serde_json::json!({
            "fenced": "primary", "by": "secondary", "outcome": "completed",
            "reason": "declared dead: silent on every link; secondary had quorum and no live member still heard primary",
            "attempt": 2, "duration_ms": 640, "since_death_ms": 2860,
            "dead_at": "2026-11-24T19:39:30Z",
            "provider_call": "digitalocean power_off",
            "detail": "droplet 3164444 powered off (action 7, 3 API calls, 0.6s)",
            "error": null, "retry_in_ms": null
        })
    );
    assert_eq!(n[0]["fence"]["outcome"], "failed");
    assert_eq!(n[0]["fence"]["retry_in_ms"], 1000);
    assert_eq!(n[2]["kind"], "other");
    assert_eq!(n[2]["text"], "\u{1b}[31mfrom a newer agent");
    assert!(n[2].get("fence").is_none());
}
