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
