//! deploy/cloud-init/user-data.yaml is cloud-init user data (a `#cloud-config` document), not
//! a cluster.yaml: it embeds one. Checked here: it is YAML with the keys cloud-init reads, the
//! embedded /etc/tandem/cluster.yaml is valid and equal to deploy/cluster.yaml, no secret is
//! written from it, the setup script is valid shell, and the tutorial's index page is made.
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn user_data() -> (String, Value) {
    let path = repo().join("deploy/cloud-init/user-data.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (text, doc)
}

/// The `write_files` entry for `path`.
fn written<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    doc["write_files"]
        .as_sequence()
        .expect("write_files is a list")
        .iter()
        .find(|f| f["path"].as_str() == Some(path))
        .map(|f| f["content"].as_str().expect("content is text"))
}

#[test]
fn user_data_is_cloud_config_yaml() {
    let (text, doc) = user_data();
    // cloud-init recognises the format by this exact first line.
    assert_eq!(text.lines().next(), Some("#cloud-config"));
    let packages: Vec<&str> = doc["packages"]
        .as_sequence()
        .expect("packages is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(packages.contains(&"nginx"), "{packages:?}");
    assert!(doc["runcmd"].as_sequence().is_some_and(|r| !r.is_empty()));
}

#[test]
fn embedded_cluster_yaml_is_valid_and_equals_the_template() {
    let (_, doc) = user_data();
    let embedded = written(&doc, "/etc/tandem/cluster.yaml").expect("writes cluster.yaml");
    // Parsed under one name: the configs then differ only if their contents do.
    let name = Path::new("cluster.yaml");
    let cfg = tandem_config::parse(embedded, name).unwrap_or_else(|e| panic!("user data: {e}"));
    let template_text =
        std::fs::read_to_string(repo().join("deploy/cluster.yaml")).expect("deploy/cluster.yaml");
    let template = tandem_config::parse(&template_text, name).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg, template, "user data and deploy/cluster.yaml differ");
    // The droplets are named after the nodes, so the host name picks the node.
    let names: Vec<&str> = cfg.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["primary", "secondary"]);
}

#[test]
fn no_secret_is_written_from_user_data() {
    let (_, doc) = user_data();
    let embedded = written(&doc, "/etc/tandem/cluster.yaml").expect("writes cluster.yaml");
    let cfg = tandem_config::parse(embedded, Path::new("user-data")).expect("valid");
    let key = cfg.auth.key_file.clone();
    for f in doc["write_files"].as_sequence().expect("list") {
        let path = f["path"].as_str().expect("path");
        assert_ne!(
            Path::new(path),
            key,
            "the cluster key must not be in user data"
        );
        assert!(
            !path.contains("token") && !path.contains("authkey"),
            "{path}: secrets do not belong in user data"
        );
    }
}

#[test]
fn setup_script_is_valid_shell_and_waits_for_the_secrets() {
    let (_, doc) = user_data();
    let script = written(&doc, "/usr/local/sbin/tandem-setup").expect("writes tandem-setup");
    assert!(script.starts_with("#!/bin/sh\n"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tandem-setup");
    std::fs::write(&file, script).expect("write");
    let out = std::process::Command::new("sh")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("run sh -n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needed in [
        "/root/tandem.deb",
        "/etc/tandem/authkey",
        "/etc/tandem/do-token",
    ] {
        assert!(
            script.contains(needed),
            "tandem-setup never checks {needed}"
        );
    }
    // The daemons are enabled only after the check passes (set -e stops at a failure).
    let check = script
        .find("ipctl check-config")
        .expect("checks the config");
    let enable = script
        .find("systemctl enable")
        .expect("enables the daemons");
    assert!(check < enable && script.contains("set -eu"));
}

#[test]
fn index_page_names_the_droplet_and_its_public_address() {
    let (_, doc) = user_data();
    let commands = serde_yaml::to_string(&doc["runcmd"]).expect("runcmd");
    for needed in [
        "169.254.169.254/metadata/v1",
        "/hostname",
        "/interfaces/public/0/ipv4/address",
        "Droplet: $name, IP Address: $ipv4",
        "/var/www/html/index.html",
        "/usr/local/sbin/tandem-setup",
    ] {
        assert!(
            commands.contains(needed),
            "runcmd lacks {needed}:\n{commands}"
        );
    }
}
