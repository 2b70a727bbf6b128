//! The `fencing:` section and `nodes[].provider_id`: what parses, what an operator is told.
use std::path::Path;
use std::time::Duration;

use tandem_config::*;

const NODES: &str = r#"cluster: web
auth:
  key_file: /etc/tandem/authkey
quorum: two_node
nodes:
  - name: primary
    provider_id: 3164444
    addresses: ["104.236.6.11:694"]
  - name: secondary
    addresses: ["104.236.6.22:694"]
"#;

fn with(fencing: &str) -> String {
    format!("{NODES}{fencing}")
}

fn parse_str(text: &str) -> Result<ClusterConfig, Vec<String>> {
    parse(text, Path::new("cluster.yaml")).map_err(|e| e.iter().map(|e| e.to_string()).collect())
}

#[test]
fn fencing_parses_with_its_defaults() {
    let c = parse_str(&with(
        "fencing:\n  provider: digitalocean\n  token_file: do-token\n",
    ))
    .unwrap();
    let f = c.fencing.expect("fencing");
    assert_eq!(f.provider, Provider::DigitalOcean);
    assert_eq!(f.token_file, Path::new("do-token"));
    assert_eq!(f.api_url, None);
    assert_eq!(f.delay, Duration::from_secs(5));
    assert_eq!(f.timeout, Duration::from_secs(60));
    assert_eq!(c.nodes[0].provider_id.as_deref(), Some("3164444"));
    assert_eq!(c.nodes[1].provider_id, None);
}

#[test]
fn every_key_is_read() {
    let c = parse_str(&with(
        "fencing:\n  provider: vultr\n  token_file: /etc/tandem/vultr\n  api_url: http://127.0.0.1:9/vultr/\n  delay: 2s\n  timeout: 30s\n",
    ))
    .unwrap();
    let f = c.fencing.unwrap();
    assert_eq!(f.provider, Provider::Vultr);
    assert_eq!(f.api_url.as_deref(), Some("http://127.0.0.1:9/vultr"));
    assert_eq!(f.delay, Duration::from_secs(2));
    assert_eq!(f.timeout, Duration::from_secs(30));
}

#[test]
fn without_fencing_nothing_is_set() {
    assert_eq!(parse_str(NODES).unwrap().fencing, None);
}

#[test]
fn bad_fencing_values_are_each_reported_with_their_key() {
    let errs = parse_str(&with(
        "fencing:\n  provider: digitalocen\n  delay: 5\n  api_url: ftp://x\n",
    ))
    .unwrap_err();
    let all = errs.join("\n");
    assert_eq!(errs.len(), 4, "{all}");
    assert!(
        all.contains("fencing.provider: unknown provider \"digitalocen\""),
        "{all}"
    );
    assert!(all.contains("did you mean `digitalocean`"), "{all}");
    assert!(
        all.contains("fencing.token_file: is required but missing"),
        "{all}"
    );
    assert!(
        all.contains("fencing.delay: \"5\" is not a duration"),
        "{all}"
    );
    assert!(all.contains("fencing.api_url"), "{all}");
}

#[test]
fn a_droplet_id_must_be_a_number() {
    let text = with("fencing: { provider: hetzner, token_file: t }\n")
        .replace("provider_id: 3164444", "provider_id: web-1");
    let errs = parse_str(&text).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains(
            "cluster.yaml:7:18: nodes[0].provider_id: \"web-1\" is not a hetzner server id"
        ),
        "{}",
        errs[0]
    );
}

#[test]
fn a_vultr_instance_id_is_a_uuid() {
    let text = with("fencing: { provider: vultr, token_file: t }\n").replace(
        "provider_id: 3164444",
        "provider_id: cb676a46-66fd-4dfb-b839-443f2e6c0b60",
    );
    let c = parse_str(&text).unwrap();
    assert_eq!(
        c.nodes[0].provider_id.as_deref(),
        Some("cb676a46-66fd-4dfb-b839-443f2e6c0b60")
    );
}

#[test]
fn fencing_needs_two_members() {
    let text = "cluster: web\nauth: { key_file: k }\nnodes:\n  - { name: a, addresses: [\"10.0.0.1:694\"] }\nfencing: { provider: digitalocean, token_file: t }\n";
    let errs = parse_str(text).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("fencing needs two or more member nodes"),
        "{}",
        errs[0]
    );
}

#[test]
fn the_summary_says_who_is_powered_off_and_how() {
    let c = parse_str(&with(
        "fencing: { provider: digitalocean, token_file: do-token, delay: 3s }\n",
    ))
    .unwrap();
    let s = c.summary(Some("primary"));
    let line = s.lines().find(|l| l.starts_with("fencing")).expect(&s);
    assert!(
        line.contains("digitalocean: a peer declared dead is powered off"),
        "{line}"
    );
    assert!(line.contains("waits 3s first"), "{line}");
    assert!(line.contains("primary = droplet 3164444"), "{line}");
    assert!(
        line.contains("secondary = the droplet named secondary"),
        "{line}"
    );
    assert!(!parse_str(NODES).unwrap().summary(None).contains("fencing"));
}
