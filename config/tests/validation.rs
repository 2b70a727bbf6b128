//! Every validation rule, each asserting the message an operator sees (file:line:column, key
//! path, what is wrong, what would be valid).
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tandem_config::*;

const GOOD: &str = r#"cluster: web
auth:
  key_file: /etc/tandem/authkey
quorum: two_node
nodes:
  - name: primary
    addresses: ["104.236.6.11:694", "10.17.0.28:694"]
  - name: secondary
    addresses: ["104.236.6.22:694", "10.17.0.29:694"]
health:
  - { tcp: "10.17.0.1:53", interval: 2s, timeout: 1s, fall: 3, rise: 2 }
resources:
  - name: floatip
    prefer: primary
    agents:
      - reserved-ip:
          provider: digitalocean
          ip: 45.55.96.8
          token_file: do-token
      - lsb: nginx
"#;

fn errors(text: &str) -> Vec<String> {
    match parse(text, Path::new("cluster.yaml")) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

/// The one error of `text`, which must contain every fragment.
fn one_error(text: &str, fragments: &[&str]) -> String {
    let errs = errors(text);
    assert_eq!(
        errs.len(),
        1,
        "expected one error, got:\n{}",
        errs.join("\n")
    );
    for f in fragments {
        assert!(errs[0].contains(f), "{:?} not in:\n{}", f, errs[0]);
    }
    errs[0].clone()
}

fn ok(text: &str) -> ClusterConfig {
    parse(text, Path::new("cluster.yaml")).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

#[test]
fn the_readme_example_parses_with_defaults() {
    let c = ok(GOOD);
    assert_eq!(c.cluster, "web");
    assert_eq!(c.quorum, QuorumPolicy::TwoNode);
    assert_eq!(c.timing, Timing::default());
    assert_eq!(
        c.nodes[1].addresses[1],
        "10.17.0.29:694".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.nodes[0].role, Role::Member);
    assert_eq!(c.health[0].probe, HealthProbe::Tcp("10.17.0.1:53".into()));
    assert_eq!(c.health[0].fall, 3);
    let g = &c.resources[0];
    assert_eq!(g.failback, Failback::Auto);
    let AgentConfig::ReservedIp(r) = &g.agents[0] else {
        panic!()
    };
    assert_eq!(r.provider, Provider::DigitalOcean);
    assert_eq!(r.settings.timeout, Duration::from_secs(60));
    assert!(!r.unassign_on_stop);
    let AgentConfig::Lsb(l) = &g.agents[1] else {
        panic!()
    };
    assert_eq!(l.script, "nginx");
    assert_eq!(l.settings.timeout, Duration::from_secs(20));
    assert_eq!(l.settings.monitor_interval, Duration::from_secs(10));
}

#[test]
fn malformed_address_names_file_line_column_and_key() {
    let text = GOOD.replace(
        r#"["104.236.6.22:694", "10.17.0.29:694"]"#,
        r#"["10.0.0.1", "10.17.0.29:694"]"#,
    );
    assert_eq!(
        one_error(&text, &[]),
        r#"cluster.yaml:9:17: nodes[1].addresses[0]: "10.0.0.1" is not ip:port (expected e.g. "10.17.0.28:694")"#
    );
}

fn replace(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} not in GOOD");
    GOOD.replacen(from, to, 1)
}

#[test]
fn syntax_errors_have_a_position() {
    let e = one_error(
        "cluster: web\nnodes: [\n",
        &["cluster.yaml:", "not valid YAML"],
    );
    assert!(
        e.starts_with("cluster.yaml:3:1:") || e.starts_with("cluster.yaml:2:"),
        "{e}"
    );
}

#[test]
fn empty_file_is_an_error() {
    one_error("", &["cluster.yaml: the file is empty"]);
    one_error("# only a comment\n", &["the file is empty"]);
}

#[test]
fn unknown_keys_are_all_reported_with_suggestions() {
    let text = GOOD
        .replace("quorum: two_node", "quorum: two_node\nnodez: []")
        .replace(
            r#"    addresses: ["104.236.6.22:694""#,
            r#"    adresses: ["104.236.6.22:694""#,
        )
        .replace("token_file: do-token", "tokn_file: do-token");
    let errs = errors(&text);
    let find = |needle: &str| {
        errs.iter()
            .find(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{}", errs.join("\n")))
            .clone()
    };
    // Each misspelt key also leaves its correct key missing: both are said.
    assert_eq!(errs.len(), 5, "{}", errs.join("\n"));
    assert!(
        find("`nodez`").starts_with(
            "cluster.yaml:5:1: nodez: unknown key `nodez` (expected did you mean `nodes`?"
        ),
        "{errs:?}"
    );
    assert!(
        find("`adresses`").starts_with(
            "cluster.yaml:10:5: nodes[1].adresses: unknown key `adresses` (expected did you mean `addresses`? valid keys here: name, addresses, role, provider_id)"
        ),
        "{errs:?}"
    );
    find("nodes[1].addresses: is required but missing");
    assert!(
        find("`tokn_file`").starts_with(
            "cluster.yaml:20:11: resources[0].agents[0].reserved-ip.tokn_file: unknown key `tokn_file` (expected did you mean `token_file`?"
        ),
        "{errs:?}"
    );
    find("reserved-ip.token_file: is required but missing");
}

#[test]
fn unknown_key_far_from_any_suggests_nothing() {
    let e = one_error(
        &replace("cluster: web", "cluster: web\nzzzzqqq: 1"),
        &["unknown key `zzzzqqq`"],
    );
    assert!(!e.contains("did you mean"), "{e}");
    assert!(e.contains("one of: cluster, auth, timing"), "{e}");
}

#[test]
fn missing_required_keys() {
    one_error(
        &replace("cluster: web\n", ""),
        &["cluster: is required but missing"],
    );
    one_error(
        &replace("auth:\n  key_file: /etc/tandem/authkey\n", ""),
        &["auth: is required but missing", "ipctl keygen"],
    );
    one_error(
        &replace(
            "  key_file: /etc/tandem/authkey\n",
            "  accept_key_files: []\n",
        ),
        &["cluster.yaml:3:3: auth.key_file: is required but missing"],
    );
    one_error(
        &replace("  - name: secondary\n", "  - \n"),
        &["nodes[1].name: is required"],
    );
    one_error(
        &replace("          ip: 45.55.96.8\n", ""),
        &["reserved-ip.ip: is required but missing"],
    );
    let no_nodes = "cluster: web\nauth: { key_file: /k }\n";
    one_error(no_nodes, &["nodes: is required but missing"]);
}

#[test]
fn cluster_name_charset() {
    one_error(
        &replace("cluster: web", "cluster: my web"),
        &["cluster.yaml:1:10: cluster: \"my web\" contains ' ' (expected letters, digits and '-'"],
    );
}

#[test]
fn duplicate_node_names() {
    one_error(
        &replace("  - name: secondary", "  - name: primary"),
        &["cluster.yaml:8:11: nodes[1].name: duplicate node name \"primary\" (also nodes[0])"],
    );
}

#[test]
fn duplicate_addresses() {
    one_error(
        &replace(r#""10.17.0.29:694"]"#, r#""10.17.0.28:694"]"#),
        &["nodes[1].addresses[1]: duplicate address 10.17.0.28:694 (also used by primary)"],
    );
}

#[test]
fn node_without_addresses() {
    one_error(
        &replace(r#"["104.236.6.22:694", "10.17.0.29:694"]"#, "[]"),
        &["nodes[1].addresses: is empty: a node needs at least one address"],
    );
}

#[test]
fn malformed_ips_and_ports() {
    one_error(
        &replace("104.236.6.22:694", "104.236.6.300:694"),
        &["\"104.236.6.300:694\" is not ip:port"],
    );
    one_error(
        &replace("104.236.6.22:694", "104.236.6.22:0"),
        &["nodes[1].addresses[0]: \"104.236.6.22:0\" has port 0"],
    );
    one_error(
        &replace("104.236.6.22:694", "104.236.6.22:70000"),
        &["is not ip:port"],
    );
    one_error(
        &replace("ip: 45.55.96.8", "ip: 45.55.96"),
        &[
            "cluster.yaml:18:15: resources[0].agents[0].reserved-ip.ip: \"45.55.96\" is not an IP address",
        ],
    );
}

fn with_timing(t: &str) -> String {
    replace(
        "quorum: two_node\n",
        &format!("quorum: two_node\ntiming:\n{t}"),
    )
}

#[test]
fn impossible_timing() {
    // dead_after <= interval always also breaks interval < warn_after < dead_after
    let errs = errors(&with_timing(
        "  interval: 1s\n  warn_after: 500ms\n  dead_after: 1s\n",
    ));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[1].contains(
            "timing.dead_after: dead_after 1s is not longer than interval 1s: one late heartbeat"
        ),
        "{}",
        errs[1]
    );
    let errs = errors(&with_timing("  interval: 100ms\n  warn_after: 2s\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains(
            "timing.warn_after: warn_after 2s is not shorter than dead_after 1s (default)"
        ),
        "{}",
        errs[0]
    );
    one_error(
        &with_timing("  interval: 500ms\n  warn_after: 500ms\n  dead_after: 5s\n"),
        &[
            "timing.warn_after: warn_after 500ms is not longer than interval 500ms: every heartbeat would be reported late",
        ],
    );
    one_error(
        &with_timing("  dead_after: 3s\n  init_dead: 2s\n"),
        &["cluster.yaml:7:14: timing.init_dead: init_dead 2s is shorter than dead_after 3s"],
    );
    one_error(
        &with_timing("  interval: 2\n"),
        &["timing.interval: \"2\" is not a duration (expected a duration with a unit"],
    );
    let c = ok(&with_timing(
        "  interval: 200ms\n  warn_after: 1s\n  dead_after: 2s\n  init_dead: 20s\n",
    ));
    assert_eq!(c.timing.interval, Duration::from_millis(200));
    assert_eq!(c.timing.init_dead, Duration::from_secs(20));
}

#[test]
fn timing_outside_sane_bounds_is_refused_with_the_reason() {
    let errs = errors(&with_timing(
        "  interval: 1us\n  warn_after: 2us\n  dead_after: 3us\n",
    ));
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].contains("timing.interval: \"1us\" is shorter than 10ms: a faster heartbeat")
            && errs[0].contains("(expected a duration from 10ms to 10s)"),
        "{}",
        errs[0]
    );
    assert!(errs[2].contains("timing.dead_after: \"3us\" is shorter than 30ms"));
    one_error(
        &with_timing("  dead_after: 1h\n"),
        &[
            "timing.dead_after: \"1h\" is longer than 5m: a failover that waits longer is no longer high availability",
        ],
    );
    one_error(
        &with_timing("  init_dead: 100y\n"),
        &["timing.init_dead: \"100y\" is longer than 10m: until it passes, a peer never heard"],
    );
    one_error(
        &with_timing("  interval: 1m\n  warn_after: 2m\n  dead_after: 4m\n  init_dead: 5m\n"),
        &["timing.interval: \"1m\" is longer than 10s"],
    );
    one_error(
        &with_timing("  interval: 100ms\n  warn_after: 150ms\n  dead_after: 250ms\n"),
        &[
            "timing.dead_after: dead_after 250ms holds fewer than 3 intervals of 100ms: two heartbeats lost",
        ],
    );
    // the fastest timing measured without false failovers stays valid
    ok(&with_timing(
        "  interval: 10ms\n  warn_after: 50ms\n  dead_after: 100ms\n  init_dead: 5s\n",
    ));
}

#[test]
fn check_and_action_durations_are_bounded() {
    one_error(
        &GOOD.replace("interval: 2s, timeout: 1s", "interval: 1us, timeout: 1s"),
        &["health[0].interval: \"1us\" is shorter than 100ms"],
    );
    one_error(
        &replace(
            "- lsb: nginx",
            "- lsb: nginx\n        monitor_interval: 100y",
        ),
        &[
            "agents[1].monitor_interval: \"100y\" is longer than 1day: longer is certainly a unit mistake",
        ],
    );
}

#[test]
fn import_placeholders_are_refused_as_placeholders() {
    let errs = errors(
        &GOOD
            .replace("104.236.6.22:694", "192.0.2.2:694")
            .replace("ip: 45.55.96.8", "ip: 192.0.2.1"),
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].contains("nodes[1].addresses[0]: 192.0.2.2 is a placeholder: a documentation address (RFC 5737) that `ipctl import-heartbeat` writes"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("reserved-ip.ip: 192.0.2.1 is a placeholder"),
        "{}",
        errs[1]
    );
}

#[test]
fn a_secret_pasted_as_a_file_name_is_refused_and_never_shown() {
    let token = format!("dop_v1_{}", "3f9a".repeat(16));
    let key = "0123456789abcdef".repeat(4);
    let text = GOOD
        .replace("token_file: do-token", &format!("token_file: {token}"))
        .replace("key_file: /etc/tandem/authkey", &format!("key_file: {key}"))
        // pasted into a key that echoes what it refuses
        .replace("ip: 45.55.96.8", &format!("ip: {token}"));
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    for e in &errs {
        assert!(!e.contains(&token) && !e.contains(&key), "{e}");
    }
    assert!(
        errs[0].contains("auth.key_file: holds what looks like a token or key itself (not shown here), not a file name"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains(&format!(
            "reserved-ip.ip: \"{REDACTED}\" is not an IP address"
        )),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("reserved-ip.token_file: holds what looks like a token"),
        "{}",
        errs[2]
    );
}

#[test]
fn numbers_out_of_range_get_a_plain_message() {
    one_error(
        &GOOD.replace("fall: 3", "fall: 99999999999999999999999"),
        &[
            "cluster.yaml:11:61: health[0].fall: 99999999999999999999999 is too large a number for any key",
        ],
    );
    one_error(
        &GOOD.replace("fall: 3", "fall: 99999999999"),
        &[
            "health[0].fall: 99999999999 is too large (expected a whole number from 0 to 4294967295)",
        ],
    );
    one_error(
        &GOOD.replace("fall: 3", "fall: -1"),
        &["health[0].fall: -1 is negative"],
    );
}

#[test]
fn two_voters_need_two_node_and_say_why() {
    let e = one_error(
        &replace("quorum: two_node\n", ""),
        &[
            "quorum: is required with exactly 2 voting nodes",
            "split brain",
            "witness",
        ],
    );
    assert!(e.contains("quorum: two_node"), "{e}");
    one_error(
        &replace("quorum: two_node", "quorum: majority"),
        &["`majority` with exactly 2 voting nodes", "split brain"],
    );
    one_error(
        &replace("quorum: two_node", "quorum: two-node"),
        &[
            "cluster.yaml:4:9: quorum: unknown quorum policy \"two-node\"",
            "did you mean `two_node`",
        ],
    );
}

const WITNESS: &str =
    "  - name: witness\n    addresses: [\"104.236.6.33:694\"]\n    role: witness\nhealth:";

#[test]
fn two_node_with_three_voters_is_refused() {
    one_error(
        &replace("health:", WITNESS),
        &["quorum: `two_node` needs exactly 2 voting nodes, but 3 are configured"],
    );
    let c = ok(&replace("health:", WITNESS).replace("quorum: two_node\n", ""));
    assert_eq!(c.quorum, QuorumPolicy::Majority);
    assert_eq!(c.nodes[2].role, Role::Witness);
    assert_eq!(c.voters(), 3);
}

#[test]
fn prefer_must_name_a_member() {
    one_error(
        &replace("prefer: primary", "prefer: primry"),
        &[
            "resources[0].prefer: names no configured node: \"primry\" (expected one of: primary, secondary)",
        ],
    );
    let text = replace("health:", WITNESS)
        .replace("quorum: two_node\n", "")
        .replace("prefer: primary", "prefer: witness");
    one_error(
        &text,
        &["resources[0].prefer: \"witness\" is a witness, which never holds resources"],
    );
}

const SECOND_GROUP: &str = "\n  - name: floatip\n    agents:\n      - lsb: haproxy\n";

#[test]
fn duplicate_group_names() {
    one_error(
        &format!("{GOOD}{}", SECOND_GROUP.trim_start_matches('\n')),
        &[
            "cluster.yaml:21:11: resources[1].name: duplicate group name \"floatip\" (also resources[0])",
        ],
    );
}

#[test]
fn group_without_agents() {
    let text = format!("{GOOD}  - name: web\n    agents: []\n");
    one_error(
        &text,
        &["resources[1].agents: is empty: a group without agents does nothing"],
    );
    let text = format!("{GOOD}  - name: web\n");
    one_error(&text, &["resources[1].agents: is required but missing"]);
}

#[test]
fn unknown_agent_kind() {
    one_error(
        &replace("- lsb: nginx", "- lbs: nginx"),
        &[
            "cluster.yaml:20:9: resources[0].agents[1].lbs: unknown agent kind `lbs` (expected did you mean `lsb`?",
        ],
    );
    one_error(
        &replace("- lsb: nginx", "- systemd: nginx"),
        &["unknown agent kind `systemd` (expected an agent kind: reserved-ip, lsb, ocf, exec)"],
    );
}

#[test]
fn unknown_provider() {
    one_error(
        &replace("provider: digitalocean", "provider: digitalocaen"),
        &[
            "reserved-ip.provider: unknown provider \"digitalocaen\" (expected did you mean `digitalocean`?",
        ],
    );
}

#[test]
fn bad_health_checks() {
    let h = |s: &str| {
        replace(
            r#"  - { tcp: "10.17.0.1:53", interval: 2s, timeout: 1s, fall: 3, rise: 2 }"#,
            s,
        )
    };
    one_error(
        &h(r#"  - { tcp: "10.17.0.1:53", fall: 0 }"#),
        &["health[0].fall: is 0"],
    );
    one_error(
        &h(r#"  - { tcp: "10.17.0.1:53", rise: 0 }"#),
        &["health[0].rise: is 0"],
    );
    one_error(
        &h(r#"  - { tcp: "10.17.0.1:53", interval: 1s, timeout: 1s }"#),
        &["health[0].timeout: timeout 1s is not shorter than interval 1s"],
    );
    one_error(
        &h(r#"  - { http: "127.0.0.1/", expect: 200 }"#),
        &["health[0].http: \"127.0.0.1/\" is not an http:// or https:// URL"],
    );
    one_error(
        &h(r#"  - { tcp: "10.17.0.1" }"#),
        &["cluster.yaml:11:12: health[0].tcp: \"10.17.0.1\" has no port"],
    );
    one_error(&h(r#"  - { interval: 2s }"#), &["health[0]: has no check"]);
    one_error(
        &h(r#"  - { tcp: "10.17.0.1:53", exec: "true" }"#),
        &["health[0]: has several checks (tcp, exec)"],
    );
    one_error(
        &h(r#"  - { http: "http://127.0.0.1/", expect: 999 }"#),
        &["999 is not an HTTP status"],
    );
    let c = ok(&h(
        "  - { http: \"http://127.0.0.1/\", expect: 204 }\n  - exec: /usr/local/bin/my-check",
    ));
    assert_eq!(
        c.health[0].probe,
        HealthProbe::Http {
            url: "http://127.0.0.1/".into(),
            expect: 204
        }
    );
    assert_eq!(
        c.health[1].probe,
        HealthProbe::Exec("/usr/local/bin/my-check".into())
    );
    assert_eq!(c.health[1].interval, Duration::from_secs(2));
}

#[test]
fn droplet_ids_must_name_nodes() {
    let text = replace(
        "token_file: do-token",
        "token_file: do-token\n          droplet_ids: { primary: 1, secundary: 2 }",
    );
    one_error(
        &text,
        &[
            "reserved-ip.droplet_ids.secundary: names no configured node: \"secundary\" (expected node names: primary, secondary)",
        ],
    );
    let c = ok(&replace(
        "token_file: do-token",
        "token_file: do-token\n          droplet_ids: { primary: 1, secondary: 2 }\n          unassign_on_stop: true",
    ));
    let AgentConfig::ReservedIp(r) = &c.resources[0].agents[0] else {
        panic!()
    };
    assert_eq!(r.droplet_ids.get("secondary"), Some(&2));
    assert!(r.unassign_on_stop);
}

#[test]
fn metrics_must_be_loopback() {
    let text = format!(
        "{GOOD}membership:\n  metrics: \"0.0.0.0:9464\"\nagent:\n  metrics: \"10.17.0.28:9465\"\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].contains("membership.metrics: 0.0.0.0:9464 is not a loopback address"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("agent.metrics: 10.17.0.28:9465 is not a loopback address"),
        "{}",
        errs[1]
    );
    let c = ok(&format!(
        "{GOOD}membership:\n  socket_group: tandem-ops\n  metrics: \"127.0.0.1:9464\"\nagent:\n  admin_group: tandem-admin\n  metrics: \"[::1]:9465\"\n"
    ));
    assert_eq!(
        c.membership.metrics,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert_eq!(c.membership.socket_group.as_deref(), Some("tandem-ops"));
    assert_eq!(c.agent.admin_group.as_deref(), Some("tandem-admin"));
    // Port 0: any free port (the daemon logs which), for nodes sharing one host.
    let c = ok(&format!("{GOOD}agent:\n  metrics: \"127.0.0.1:0\"\n"));
    assert_eq!(c.agent.metrics, Some("127.0.0.1:0".parse().unwrap()));
}

#[test]
fn every_agent_form_parses() {
    let text = replace(
        "      - lsb: nginx\n",
        r#"      - lsb: nginx
        timeout: 30s
      - lsb: { script: /opt/app/init, monitor_interval: 5s }
      - ocf: { agent: "heartbeat:Dummy", params: { state: /run/tandem/dummy.state, fake: 1 } }
      - ocf: "heartbeat:IPaddr2"
      - exec: { start: "systemctl start app", stop: "systemctl stop app", monitor: "systemctl is-active app" }
      - exec:
          start: /bin/true
          stop: /bin/true
"#,
    );
    let c = ok(&text);
    let a = &c.resources[0].agents;
    assert_eq!(a.len(), 7);
    let AgentConfig::Lsb(l) = &a[1] else { panic!() };
    assert_eq!(l.settings.timeout, Duration::from_secs(30));
    let AgentConfig::Lsb(l) = &a[2] else { panic!() };
    assert_eq!(
        (l.script.as_str(), l.settings.monitor_interval),
        ("/opt/app/init", Duration::from_secs(5))
    );
    let AgentConfig::Ocf(o) = &a[3] else { panic!() };
    assert_eq!(
        (o.provider.as_str(), o.kind.as_str()),
        ("heartbeat", "Dummy")
    );
    assert_eq!(o.params.get("fake").map(String::as_str), Some("1"));
    assert_eq!(o.ocf_root, Path::new("/usr/lib/ocf"));
    let AgentConfig::Ocf(o) = &a[4] else { panic!() };
    assert_eq!(o.kind, "IPaddr2");
    let AgentConfig::Exec(e) = &a[5] else {
        panic!()
    };
    assert_eq!(e.monitor.as_deref(), Some("systemctl is-active app"));
    let AgentConfig::Exec(e) = &a[6] else {
        panic!()
    };
    assert_eq!(e.monitor, None);
}

#[test]
fn agent_body_errors() {
    one_error(
        &replace("- lsb: nginx", "- ocf: \"Dummy\""),
        &["agents[1].ocf: \"Dummy\" is not provider:type"],
    );
    one_error(
        &replace("- lsb: nginx", "- exec: { start: /bin/true }"),
        &["agents[1].exec.stop: is required but missing"],
    );
    one_error(
        &replace("- lsb: nginx", "- lsb: nginx\n        timeout: 0s"),
        &["agents[1].timeout: \"0s\" is zero"],
    );
    one_error(
        &replace("- lsb: nginx", "- lsb: init.d/nginx"),
        &["agents[1].lsb: \"init.d/nginx\" is a relative path"],
    );
    one_error(
        &replace(
            "- lsb: nginx",
            "- { lsb: nginx, exec: { start: a, stop: b } }",
        ),
        &["agents[1]: has several agent kinds (lsb, exec) in one item"],
    );
    one_error(
        &GOOD.replace(
            "token_file: do-token",
            "token_file: do-token\n          api_url: localhost:8080",
        ),
        &["reserved-ip.api_url: \"localhost:8080\" is not an http:// or https:// URL"],
    );
    one_error(
        &GOOD.replace(
            "token_file: do-token",
            "token_file: do-token\n          droplet_id: abc",
        ),
        &["reserved-ip.droplet_id: \"abc\" is not a whole number (expected a whole number)"],
    );
}

#[test]
fn all_errors_are_collected_in_file_order() {
    let text = GOOD
        .replace("cluster: web", "cluster: web!")
        .replace("104.236.6.22:694", "nope")
        .replace("provider: digitalocean", "provider: aws");
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{}", errs.join("\n"));
    assert!(errs[0].starts_with("cluster.yaml:1:"), "{}", errs[0]);
    assert!(errs[1].starts_with("cluster.yaml:9:"), "{}", errs[1]);
    assert!(errs[2].starts_with("cluster.yaml:17:"), "{}", errs[2]);
    let all = parse(&text, Path::new("cluster.yaml"))
        .unwrap_err()
        .to_string();
    assert_eq!(all.lines().count(), 3);
}

#[test]
fn local_node_error_lists_configured_names() {
    let c = ok(GOOD);
    assert_eq!(c.local_node("secondary").unwrap().name, "secondary");
    let e = c.local_node("tertiary").unwrap_err().to_string();
    assert!(
        e.contains("this node, \"tertiary\", is not in the node list"),
        "{e}"
    );
    assert!(e.contains("(primary, secondary)"), "{e}");
    assert!(!default_node_name().is_empty());
}

#[test]
fn load_reads_a_file_and_names_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cluster.yaml");
    std::fs::write(&p, GOOD.replace("cluster: web", "cluster: \"\"")).unwrap();
    let e = load(&p).unwrap_err();
    assert_eq!(e.errors()[0].file, p);
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1:10: cluster: is empty", p.display())),
        "{e}"
    );
    let missing = load(&d.path().join("nope.yaml")).unwrap_err();
    assert_eq!(missing.errors()[0].kind, ErrorKind::FileMissing);
    std::fs::write(&p, GOOD).unwrap();
    assert_eq!(load(&p).unwrap().source, p);
}

#[test]
fn a_malformed_section_does_not_hide_the_others() {
    let text = GOOD
        .replace(
            "auth:\n  key_file: /etc/tandem/authkey\n",
            "auth: /etc/tandem/authkey\n",
        )
        .replace("provider: digitalocean", "provider: aws");
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{}", errs.join("\n"));
    assert_eq!(
        errs[0],
        "cluster.yaml:2:7: auth: invalid type: string \"/etc/tandem/authkey\" (expected a mapping with the keys key_file, accept_key_files)"
    );
    assert!(errs[1].contains("unknown provider \"aws\""), "{}", errs[1]);
}

#[test]
fn a_malformed_node_list_is_reported_once() {
    let text = "cluster: web\nauth: { key_file: /k }\nquorum: two_node\nnodes: primary\nresources:\n  - { name: g, prefer: primary, agents: [ { lsb: x } ] }\n";
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            "cluster.yaml:4:8: nodes: invalid type: string \"primary\" (expected a list (`- item` lines, or `[a, b]`))"
        ]
    );
    let errs = errors("cluster: web\nauth: { key_file: /k }\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn internal_type_names_never_reach_the_operator() {
    for text in [
        GOOD.replace("timing", "x")
            .replace("quorum: two_node", "quorum: two_node\ntiming: 5"),
        GOOD.replace(
            "  - name: secondary\n    addresses: [\"104.236.6.22:694\", \"10.17.0.29:694\"]\n",
            "  - secondary\n",
        ),
        GOOD.replace("      - lsb: nginx", "      - lsb: [nginx]"),
    ] {
        for e in errors(&text) {
            assert!(!e.contains("Raw") && !e.contains("struct"), "{e}");
        }
    }
}

#[test]
fn summary_says_what_the_cluster_does() {
    let s = ok(GOOD).summary(Some("secondary"));
    for want in [
        "cluster  web\n",
        "secondary  member   104.236.6.22:694, 10.17.0.29:694  (this node)\n",
        "quorum   two_node:",
        "dead after 1s (10 beats)",
        "resource floatip: prefers primary, failback auto",
        "  1. reserved-ip 45.55.96.8 at digitalocean (token do-token) [timeout 1m, monitor every 10s]\n",
        "  2. lsb nginx [timeout 20s, monitor every 10s]\n",
    ] {
        assert!(s.contains(want), "{want:?} not in:\n{s}");
    }
    let three = ok(&replace("health:", WITNESS).replace("quorum: two_node\n", "")).summary(None);
    assert!(
        three.contains("majority: a node needs 2 of 3 voters"),
        "{three}"
    );
    assert!(
        three.contains("  witness    witness  104.236.6.33:694\n"),
        "{three}"
    );
}
