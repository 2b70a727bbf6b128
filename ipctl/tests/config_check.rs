//! `ipctl check-config` and `ipctl keygen`, run as the real binary.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ipctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipctl"))
        .args(args)
        .env_remove("TANDEM_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run ipctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config(key_file: &Path) -> String {
    format!(
        r#"cluster: web
auth:
  key_file: {}
quorum: two_node
nodes:
  - name: primary
    addresses: ["104.236.6.11:694", "10.17.0.28:694"]
  - name: secondary
    addresses: ["104.236.6.22:694"]
health:
  - {{ tcp: "10.17.0.1:53" }}
resources:
  - name: floatip
    prefer: primary
    agents:
      - reserved-ip: {{ provider: digitalocean, ip: 45.55.96.8, token_file: do-token }}
      - lsb: nginx
"#,
        key_file.display()
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    key: PathBuf,
}

fn setup(with_key: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("authkey");
    if with_key {
        let out = ipctl(&["keygen", "--out", key.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(&cfg, config(&key)).unwrap();
    Setup {
        _dir: dir,
        cfg,
        key,
    }
}

#[test]
fn valid_config_prints_a_summary_and_exits_0() {
    let s = setup(true);
    let out = ipctl(&["check-config", s.cfg.to_str().unwrap(), "--node", "primary"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for want in [
        "cluster  web",
        "primary    member   104.236.6.11:694, 10.17.0.28:694  (this node)",
        "quorum   two_node",
        "dead after 1s (10 beats)",
        "tcp 10.17.0.1:53: every 2s, timeout 1s",
        "resource floatip: prefers primary, failback auto",
        "1. reserved-ip 45.55.96.8 at digitalocean",
        "2. lsb nginx",
        ": valid",
    ] {
        assert!(stdout.contains(want), "{want:?} not in:\n{stdout}");
    }
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}

#[test]
fn config_flag_is_the_default_file() {
    let s = setup(true);
    let out = ipctl(&[
        "--config",
        s.cfg.to_str().unwrap(),
        "check-config",
        "--node",
        "secondary",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("secondary  member   104.236.6.22:694  (this node)"));
}

#[test]
fn invalid_config_prints_every_error_and_exits_1() {
    let s = setup(true);
    let bad = config(&s.key)
        .replace("quorum: two_node\n", "")
        .replace("104.236.6.22:694", "104.236.6.22");
    std::fs::write(&s.cfg, bad).unwrap();
    let out = ipctl(&["check-config", s.cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let cfg = s.cfg.display();
    assert!(
        stderr.contains(&format!(
            "error: {cfg}:8:17: nodes[1].addresses[0]: \"104.236.6.22\" is not ip:port"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("quorum: is required with exactly 2 voting nodes"),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)"), "{stderr}");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn unknown_node_is_an_error_with_node_and_a_warning_without() {
    let s = setup(true);
    let out = ipctl(&[
        "check-config",
        s.cfg.to_str().unwrap(),
        "--node",
        "tertiary",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error:"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("(primary, secondary)"));
    // Without --node the host name is tried; this test host is neither primary nor secondary
    // unless someone named it so, in which case there is nothing to warn about.
    let out = ipctl(&["check-config", s.cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let host = tandem_config_host();
    if host != "primary" && host != "secondary" {
        assert!(
            text(&out.stderr).contains("warning:"),
            "{}",
            text(&out.stderr)
        );
    }
}

fn tandem_config_host() -> String {
    let out = Command::new("uname").arg("-n").output().unwrap();
    text(&out.stdout).trim().to_owned()
}

#[test]
fn missing_key_file_is_a_warning_but_a_bad_one_an_error() {
    let s = setup(false);
    let out = ipctl(&["check-config", s.cfg.to_str().unwrap(), "--node", "primary"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: {}: auth.key_file: key file does not exist",
            s.key.display()
        )),
        "{stderr}"
    );

    std::fs::write(&s.key, "0123456789abcdef0123456789abcdef").unwrap();
    std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ipctl(&["check-config", s.cfg.to_str().unwrap(), "--node", "primary"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("auth.key_file: key file is readable by group or others (mode 0644)"),
        "{stderr}"
    );
    assert!(!stderr.contains("0123456789abcdef"), "{stderr}");

    std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&s.key, "short").unwrap();
    let out = ipctl(&["check-config", s.cfg.to_str().unwrap(), "--node", "primary"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("key is too short (5 bytes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn absent_absolute_token_file_is_a_warning() {
    let s = setup(true);
    let cfg = config(&s.key).replace(
        "token_file: do-token",
        "token_file: /nonexistent/tandem-test/do-token",
    );
    std::fs::write(&s.cfg, cfg).unwrap();
    let out = ipctl(&["check-config", s.cfg.to_str().unwrap(), "--node", "primary"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(
        "warning: /nonexistent/tandem-test/do-token: resources `floatip`: token_file does not exist"
    ));
}

#[test]
fn missing_config_file_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("nope.yaml");
    let out = ipctl(&["check-config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("authkey");
    let ps = p.to_str().unwrap();
    assert!(ipctl(&["keygen", "--out", ps]).status.success());
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let first = std::fs::read_to_string(&p).unwrap();
    assert_eq!(first.trim().len(), 64);
    assert!(first.trim().chars().all(|c| c.is_ascii_hexdigit()));

    let out = ipctl(&["keygen", "--out", ps]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already exists; pass --force"));
    assert_eq!(std::fs::read_to_string(&p).unwrap(), first);

    // --force replaces it, and a previously loose mode does not survive
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(ipctl(&["keygen", "--out", ps, "--force"]).status.success());
    let second = std::fs::read_to_string(&p).unwrap();
    assert_ne!(first, second);
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        1,
        "no temporary file left behind"
    );
}

#[test]
fn keygen_prints_to_stdout_without_out() {
    let out = ipctl(&["keygen"]);
    assert!(out.status.success());
    let k = text(&out.stdout);
    assert_eq!(k.trim().len(), 64);
    assert_ne!(k, text(&ipctl(&["keygen"]).stdout));
}
