//! `ipctl check-config` and `ipctl keygen`, run as the real binary.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs ipctl with `units` as systemd's unit search path (`$SYSTEMD_UNIT_PATH`), so that the
/// units installed on the test machine (if any) do not change the answers.
fn ipctl_in(units: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipctl"))
        .args(args)
        .env_remove("TANDEM_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("SYSTEMD_UNIT_PATH", units)
        .output()
        .expect("run ipctl")
}

/// Runs ipctl as on a machine where Tandem's units are not installed.
fn ipctl(args: &[&str]) -> Output {
    ipctl_in(Path::new("/nonexistent/tandem-test-units"), args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A configuration whose files all live in `dir`: the key, the lsb script, and the token the
/// agent's unit (in `dir/units`) loads as the credential `do-token`.
fn config(dir: &Path) -> String {
    format!(
        r#"cluster: web
auth:
  key_file: {dir}/authkey
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
      - lsb: {dir}/nginx
"#,
        dir = dir.display()
    )
}

struct Setup {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    key: PathBuf,
    units: PathBuf,
}

impl Setup {
    /// `ipctl check-config FILE ARGS... --offline` with this setup's units installed (these
    /// tests have no provider to ask; `tests/tests/emulator_ipctl.rs` asks the emulator).
    fn check(&self, args: &[&str]) -> Output {
        let mut all = vec!["check-config", "--offline", self.cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        ipctl_in(&self.units, &all)
    }

    fn write_config(&self, text: &str) {
        std::fs::write(&self.cfg, text).unwrap();
    }
}

fn setup(with_key: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("authkey");
    if with_key {
        let out = ipctl(&["keygen", "--out", key.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let script = dir.path().join("nginx");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let token = dir.path().join("do-token");
    std::fs::write(&token, "dop_v1_test\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    std::fs::write(
        units.join("tandem-resource-agent.service"),
        format!(
            "[Service]\nExecStart=/usr/bin/tandem-resource-agent\nLoadCredential=do-token:{}\n",
            token.display()
        ),
    )
    .unwrap();
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(&cfg, config(dir.path())).unwrap();
    Setup {
        cfg,
        key,
        units,
        dir,
    }
}

#[test]
fn valid_config_prints_a_summary_and_exits_0() {
    let s = setup(true);
    let out = s.check(&["--node", "primary"]);
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
        "/nginx [timeout 20s",
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
    let bad = config(s.dir.path())
        .replace("quorum: two_node\n", "")
        .replace("104.236.6.22:694", "104.236.6.22");
    std::fs::write(&s.cfg, bad).unwrap();
    let out = s.check(&[]);
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
    let out = s.check(&["--node", "tertiary"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error:"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("(primary, secondary)"));
    // Without --node the host name is tried; this test host is neither primary nor secondary
    // unless someone named it so, in which case there is nothing to warn about.
    let out = s.check(&[]);
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
    let out = s.check(&["--node", "primary"]);
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
    let out = s.check(&["--node", "primary"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("auth.key_file: key file is readable by group or others (mode 0644)"),
        "{stderr}"
    );
    assert!(!stderr.contains("0123456789abcdef"), "{stderr}");

    std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&s.key, "short").unwrap();
    let out = s.check(&["--node", "primary"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("key is too short (5 bytes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn absent_fencing_token_file_is_a_warning() {
    let s = setup(true);
    let cfg = config(s.dir.path())
        + "fencing:\n  provider: digitalocean\n  token_file: /nonexistent/tandem-test/fence-token\n";
    std::fs::write(&s.cfg, cfg).unwrap();
    let out = s.check(&["--node", "primary"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "warning: /nonexistent/tandem-test/fence-token: fencing: token_file does not exist \
             on this machine (it is read by tandem-resource-agent only, which will fail to power \
             a dead peer off, and so take nothing over from one without it)"
        ),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("fencing  digitalocean: a peer declared dead is powered off"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn absent_absolute_token_file_is_a_warning() {
    let s = setup(true);
    let cfg = config(s.dir.path()).replace(
        "token_file: do-token",
        "token_file: /nonexistent/tandem-test/do-token",
    );
    std::fs::write(&s.cfg, cfg).unwrap();
    let out = s.check(&["--node", "primary"]);
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

#[test]
fn a_token_pasted_as_token_file_is_an_error_and_never_echoed() {
    let s = setup(true);
    let token = format!("dop_v1_{}", "7c1e".repeat(16));
    s.write_config(
        &config(s.dir.path()).replace("token_file: do-token", &format!("token_file: {token}")),
    );
    let out = s.check(&["--node", "primary"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "reserved-ip.token_file: holds what looks like a token or key itself (not shown here), not a file name"
        ),
        "{stderr}"
    );
    assert!(
        !stdout.contains(&token) && !stderr.contains(&token) && !stderr.contains("7c1e7c1e"),
        "the token was echoed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn timings_outside_sane_bounds_fail_with_the_reason() {
    let s = setup(true);
    let with = |timing: &str| {
        s.write_config(&config(s.dir.path()).replace(
            "quorum: two_node\n",
            &format!("quorum: two_node\ntiming: {timing}\n"),
        ));
        let out = s.check(&["--node", "primary"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{timing}: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    };
    let e = with("{ interval: 1us, warn_after: 2us, dead_after: 3us }");
    assert!(
        e.contains("timing.interval: \"1us\" is shorter than 10ms: a faster heartbeat is lost in timer granularity"),
        "{e}"
    );
    let e = with("{ dead_after: 1h }");
    assert!(
        e.contains("timing.dead_after: \"1h\" is longer than 5m: a failover that waits longer is no longer high availability"),
        "{e}"
    );
    let e = with("{ init_dead: 100y }");
    assert!(
        e.contains("timing.init_dead: \"100y\" is longer than 10m"),
        "{e}"
    );
}

#[test]
fn a_missing_lsb_script_is_an_error_for_this_node_and_a_warning_otherwise() {
    let s = setup(true);
    s.write_config(&config(s.dir.path()).replace(
        &format!("lsb: {}/nginx", s.dir.path().display()),
        "lsb: tandem-test-no-such-init-script",
    ));
    let out = s.check(&["--node", "primary"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: /etc/init.d/tandem-test-no-such-init-script: resources `floatip`: the lsb agent's script does not exist on this machine"
        ),
        "{stderr}"
    );
    let out = s.check(&[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: /etc/init.d/tandem-test-no-such-init-script: resources `floatip`: the lsb agent's script does not exist")
            && stderr.contains("(an error with --node;"),
        "{stderr}"
    );
    // present but not executable
    let script = s.dir.path().join("nginx");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.write_config(&config(s.dir.path()));
    let out = s.check(&["--node", "primary"]);
    assert!(
        text(&out.stderr).contains("the lsb agent's script is not executable"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_relative_token_file_is_checked_against_the_agents_unit() {
    let s = setup(true);
    let unit = s.units.join("tandem-resource-agent.service");
    // the unit loads no credential of that name: the agent would find no token
    s.write_config(&config(s.dir.path()).replace("token_file: do-token", "token_file: hc-token"));
    let out = s.check(&["--node", "primary"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "token_file `hc-token` is a credential name: tandem-resource-agent reads $CREDENTIALS_DIRECTORY/hc-token, \
             which systemd fills from LoadCredential= in tandem-resource-agent.service; {} loads only do-token, \
             so the agent would find no token: add `LoadCredential=hc-token:/etc/tandem/hc-token`",
            unit.display()
        )),
        "{stderr}"
    );
    // a drop-in adds it, from a file that does not exist yet
    let dropin = s.units.join("tandem-resource-agent.service.d");
    std::fs::create_dir(&dropin).unwrap();
    let source = s.dir.path().join("hc-token");
    std::fs::write(
        dropin.join("hetzner.conf"),
        format!("[Service]\nLoadCredential=hc-token:{}\n", source.display()),
    )
    .unwrap();
    let out = s.check(&["--node", "primary"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: {}: does not exist, and systemd refuses to start tandem-resource-agent.service without it",
            source.display()
        )),
        "{stderr}"
    );
    std::fs::write(&source, "hetzner-test-token\n").unwrap();
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = s.check(&["--node", "primary"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
    // without the unit installed, it says what the name means and that it was not checked
    let out = ipctl(&[
        "check-config",
        s.cfg.to_str().unwrap(),
        "--node",
        "primary",
        "--offline",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "warning: resources `floatip`: token_file `hc-token` is a credential name: tandem-resource-agent reads $CREDENTIALS_DIRECTORY/hc-token"
        ) && text(&out.stderr).contains("that unit is not installed on this machine"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_key_the_units_sandbox_hides_is_reported() {
    let s = setup(true);
    std::fs::write(
        s.units.join("tandem-membership.service"),
        "[Service]\nExecStart=/usr/bin/tandem-membership\nPrivateTmp=yes\n",
    )
    .unwrap();
    let out = s.check(&["--node", "primary"]);
    let stderr = text(&out.stderr);
    // the test's files live in a temporary directory: under /tmp unless TMPDIR says otherwise
    if s.key.starts_with("/tmp") {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "error: {}: under /tmp, which the daemon cannot see (PrivateTmp=yes in",
                s.key.display()
            )),
            "{stderr}"
        );
    } else {
        assert!(out.status.success(), "{stderr}");
    }
}

#[test]
fn import_placeholders_and_huge_numbers_are_plain_errors() {
    let s = setup(true);
    s.write_config(
        &config(s.dir.path())
            .replace("104.236.6.22:694", "192.0.2.2:694")
            .replace(
                "{ tcp: \"10.17.0.1:53\" }",
                "{ tcp: \"10.17.0.1:53\", fall: 99999999999999999999999 }",
            ),
    );
    let out = s.check(&["--node", "primary"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // a number no key can hold stops the YAML reader: reported alone, in the file's terms
    assert!(
        stderr
            .contains("health[0].fall: 99999999999999999999999 is too large a number for any key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("u128") && !stderr.contains("YAML value"),
        "{stderr}"
    );
    s.write_config(&config(s.dir.path()).replace("104.236.6.22:694", "192.0.2.2:694"));
    let stderr = text(&s.check(&["--node", "primary"]).stderr);
    assert!(
        stderr.contains("nodes[1].addresses[0]: 192.0.2.2 is a placeholder: a documentation address (RFC 5737) that `ipctl import-heartbeat` writes"),
        "{stderr}"
    );
}

#[test]
fn an_exec_agents_missing_absolute_program_is_an_error_for_this_node() {
    let s = setup(true);
    s.write_config(&config(s.dir.path()).replace(
        &format!("lsb: {}/nginx", s.dir.path().display()),
        "exec: { start: \"/nonexistent/tandem-test/Filesystem /dev/sda1 start\", stop: \"/nonexistent/tandem-test/Filesystem /dev/sda1 stop\", monitor: \"ip -o addr show\" }",
    ));
    let out = s.check(&["--node", "primary"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr
            .matches("error: /nonexistent/tandem-test/Filesystem: resources `floatip`: the exec agent's program does not exist on this machine")
            .count(),
        1,
        "once for start and stop:\n{stderr}"
    );
    // a command by name is left to $PATH
    assert!(!stderr.contains(": ip:"), "{stderr}");
    let out = s.check(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `config(dir)` with `n` more reserved IPs (half IPv4, half IPv6), each its own group on
/// the same token, monitored every `monitor`.
fn with_many_ips(dir: &Path, n: usize, monitor: &str) -> String {
    let mut y = config(dir);
    for i in 0..n {
        let ip = match i % 2 {
            0 => format!("45.55.97.{}", i + 1),
            _ => format!("\"2604:a880:400:d1::{:x}\"", i + 1),
        };
        y.push_str(&format!(
            "  - name: ip{i}\n    agents:\n      - reserved-ip: {{ provider: digitalocean, ip: {ip}, \
             token_file: do-token, monitor_interval: {monitor} }}\n"
        ));
    }
    y
}

#[test]
fn many_reserved_ips_on_one_token_warn_past_half_the_budget_and_name_the_interval() {
    let s = setup(true);
    let budget = |stderr: &str| {
        stderr
            .lines()
            .filter(|l| l.contains("requests an hour"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // One IP at the defaults: 600 requests an hour, 12 %.
    let out = s.check(&["--node", "primary"]);
    assert!(
        budget(&text(&out.stderr)).is_empty(),
        "{}",
        text(&out.stderr)
    );
    // Twenty (the one above and 19 more) every 10 s: far past DigitalOcean's 5,000 an hour.
    s.write_config(&with_many_ips(s.dir.path(), 19, "10s"));
    let out = s.check(&["--node", "primary"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "a warning, not an error: {stderr}");
    let warned = budget(&stderr);
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(
        warned[0].starts_with("warning: 20 reserved IP(s) on token_file `do-token` (digitalocean)")
            && warned[0].contains("(250 a minute, 5000 an hour)")
            && warned[0]
                .contains("raise monitor_interval of these reserved-ip agents to at least 58s"),
        "{stderr}"
    );
    // Monitored every two minutes (the first IP still every 10 s): within the half, quiet.
    s.write_config(&with_many_ips(s.dir.path(), 19, "120s"));
    let out = s.check(&["--node", "primary"]);
    assert!(
        budget(&text(&out.stderr)).is_empty(),
        "{}",
        text(&out.stderr)
    );
}

/// `config(dir)` with `n` more groups of one reserved IP each, named with 24 characters.
fn with_long_group_names(dir: &Path, n: usize) -> String {
    let mut y = config(dir);
    for i in 0..n {
        y.push_str(&format!(
            "  - name: reserved-ip-group-{i:06}\n    agents:\n      - reserved-ip: {{ provider: \
             digitalocean, ip: 45.55.97.{}, token_file: do-token, monitor_interval: 300s }}\n",
            i + 1
        ));
    }
    y
}

/// The agent refuses a configuration whose state announcement could pass membership's
/// 900-byte payload; check-config says so first, and how many groups would fit.
#[test]
fn more_groups_than_an_announcement_carries_is_an_error_naming_what_fits() {
    let s = setup(true);
    // Twenty groups of 24-character names (and `floatip`): the per-group form carries them.
    s.write_config(&with_long_group_names(s.dir.path(), 20));
    let out = s.check(&["--node", "primary"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("would refuse"),
        "{}",
        text(&out.stderr)
    );
    // Forty do not: an error on either node, with or without --node.
    s.write_config(&with_long_group_names(s.dir.path(), 40));
    for args in [&["--node", "primary"][..], &[][..]] {
        let out = s.check(args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains("would refuse to start"))
            .unwrap_or_else(|| panic!("no announcement error: {stderr}"));
        assert!(
            line.starts_with("error: resources: tandem-resource-agent on ")
                && line.contains("more than membership carries (900)")
                && line.contains("groups with names of 24 characters fit, or these 41 groups")
                && line.contains("use fewer groups or shorter group or node names"),
            "{line}"
        );
    }
}
