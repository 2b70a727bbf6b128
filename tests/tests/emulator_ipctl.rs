//! `ipctl assign` end to end: the real binary against the emulator.
//!
//! ipctl lives in another package, so `CARGO_BIN_EXE_ipctl` does not exist here: the test
//! builds it into the same target directory first (`cluster::ipctl_for_tests`).
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use tandem_tests::emulator::Emulator;
use tandem_tests::emulator::testkit::{
    self, IP, IPV6, PRIMARY, SECONDARY, TOKEN, fixture, ip, ipv6,
};

fn ipctl() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| tandem_tests::cluster::ipctl_for_tests().expect("ipctl builds"))
}

async fn run(args: &[&str], token: Option<&str>) -> Output {
    run_with(args, token.map(|t| ("DO_TOKEN", t))).await
}

/// ipctl with `args` and, if given, one token variable set (`DO_TOKEN` never inherited).
async fn run_with(args: &[&str], var: Option<(&str, &str)>) -> Output {
    let mut cmd = tokio::process::Command::new(ipctl());
    cmd.args(args).env_remove("DO_TOKEN").kill_on_drop(true);
    if let Some((name, value)) = var {
        cmd.env(name, value);
    }
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("ipctl finished in time")
        .expect("ipctl ran")
}

/// `ipctl assign IP` to the secondary droplet, with the full-access token.
async fn assign_to_secondary(api: &str) -> Output {
    let droplet = SECONDARY.to_string();
    let args = ["assign", IP, "--api-url", api, "--droplet", &droplet];
    run(&args, Some(TOKEN)).await
}

/// Asserts that ipctl moved `ip` from the primary to the secondary; returns its stderr.
fn moved_to_secondary(o: &Output, ip: &str) -> String {
    let (out, err) = text(o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains(&format!(
            "{ip} is now held by droplet {SECONDARY} (was droplet {PRIMARY})"
        )),
        "{out}"
    );
    err
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn ipctl_assign_moves_the_ip_and_reports_progress_and_result() {
    let emu = Emulator::start(fixture(Duration::from_millis(300)))
        .await
        .unwrap();
    let api = emu.addresses.api.clone();
    let meta = emu.addresses.metadata[&SECONDARY].clone();
    let o = run(
        &["assign", IP, "--api-url", &api, "--metadata-url", &meta],
        Some(TOKEN),
    )
    .await;
    let err = moved_to_secondary(&o, IP);
    // Not a terminal: plain progress lines.
    assert!(
        err.contains("accepted") && err.contains("in progress"),
        "{err}"
    );
    assert!(
        !err.contains('\r'),
        "no redraw when stderr is not a terminal"
    );
    assert_eq!(
        err.matches("in progress").count(),
        1,
        "repeats are not printed: {err}"
    );
    assert_eq!(emu.holder(ip()), Some(SECONDARY));

    let o = assign_to_secondary(&api).await;
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("already held"), "{out}");
    assert_eq!(emu.action_count(), 1);
}

#[tokio::test]
async fn ipctl_assign_fails_clearly_without_leaking_the_token() {
    let emu = Emulator::start(fixture(Duration::ZERO)).await.unwrap();
    let api = emu.addresses.api.clone();
    let bad = "dop_v1_wrong_token_for_ipctl_test_0000";
    let o = run(
        &["assign", IP, "--api-url", &api, "--droplet", "1002"],
        Some(bad),
    )
    .await;
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("401"), "{err}");
    assert!(!out.contains(bad) && !err.contains(bad));

    let o = run(
        &["assign", IP, "--api-url", &api, "--droplet", "4242"],
        Some(TOKEN),
    )
    .await;
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("422") && err.contains("4242"), "{err}");

    let o = run(
        &["assign", IP, "--api-url", &api, "--droplet", "1002"],
        None,
    )
    .await;
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("DO_TOKEN"), "{err}");

    // A token file others can read is refused.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    std::fs::write(&f, TOKEN).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fs = f.to_str().unwrap();
    let args = [
        "assign",
        IP,
        "--api-url",
        &api,
        "--droplet",
        "1002",
        "--token-file",
        fs,
    ];
    let o = run(&args, None).await;
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains(TOKEN));
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = run(&args, None).await;
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(emu.holder(ip()), Some(SECONDARY));
}

#[tokio::test]
async fn ipctl_assign_redraws_one_line_on_a_terminal() {
    // util-linux `script` gives ipctl a pseudo-terminal; skip where it is missing.
    tandem_tests::skip_unless!(tandem_tests::require::tools(&["script"]));
    let emu = Emulator::start(fixture(Duration::from_millis(300)))
        .await
        .unwrap();
    let shell_quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let cmd = [
        ipctl().to_str().unwrap(),
        "assign",
        IP,
        "--api-url",
        &emu.addresses.api,
        "--droplet",
        &SECONDARY.to_string(),
    ]
    .iter()
    .map(|a| shell_quote(a))
    .collect::<Vec<_>>()
    .join(" ");
    let o = tokio::process::Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("DO_TOKEN", TOKEN)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let o = tokio::time::timeout(Duration::from_secs(60), o)
        .await
        .expect("in time")
        .expect("script ran");
    let (out, _) = text(&o);
    assert!(o.status.success(), "{out}");
    // Carriage return + erase-line: the progress line is redrawn in place, then cleared.
    assert!(out.contains("\r\x1b[K"), "{out:?}");
    assert!(out.contains("is now held by droplet"), "{out}");
    assert_eq!(emu.holder(ip()), Some(SECONDARY));
}

/// Issue 14 item 3: two 429s with `Retry-After: 1` and a `ratelimit-reset` a minute away. The
/// Retry-After is the instruction: the assign waits about a second each time, not the minute
/// until the reset (it used to hold for 60 s and then fail).
#[tokio::test]
async fn ipctl_assign_follows_retry_after_not_a_distant_ratelimit_reset() {
    let emu = Emulator::start(fixture(Duration::from_millis(100)))
        .await
        .unwrap();
    emu.set_faults(serde_json::json!({
        "rate_limit_burst": 2, "rate_limit_reset_secs": 60, "rate_limit_retry_after_secs": 1
    }))
    .await;
    let api = emu.addresses.api.clone();
    // Built first (on the first call): the clock measures the assign alone.
    ipctl();
    let started = tokio::time::Instant::now();
    let o = assign_to_secondary(&api).await;
    let took = started.elapsed();
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert!(err.contains("rate limited; waiting 1."), "{err}");
    assert_eq!(emu.holder(ip()), Some(SECONDARY));
    // Two waits of 1.1-1.2 s, the action and ipctl's start; never the minute.
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// Issue 14 item 1: `ipctl assign` takes an IPv6. A DigitalOcean reserved IPv6 moves through
/// `/v2/reserved_ipv6/{ip}` (its action polled at `/v2/actions/{id}`); a Hetzner floating IPv6
/// is named by any address of its /64. The IPv4 stays where it was.
#[tokio::test]
async fn ipctl_assign_moves_a_reserved_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = testkit::with_ipv6(fixture(Duration::from_millis(100)));
    cfg.audit_log = Some(dir.path().join("audit.jsonl"));
    let emu = Emulator::start(cfg).await.unwrap();
    let api = emu.addresses.api.clone();
    let droplet = SECONDARY.to_string();
    let o = run(
        &["assign", IPV6, "--api-url", &api, "--droplet", &droplet],
        Some(TOKEN),
    )
    .await;
    moved_to_secondary(&o, IPV6);
    assert_eq!(emu.holder(ipv6()), Some(SECONDARY));
    assert_eq!(emu.holder(ip()), Some(PRIMARY), "the IPv4 stays");
    let paths = testkit::audit_requests(&dir.path().join("audit.jsonl"));
    assert!(
        paths.contains(&format!("POST /v2/reserved_ipv6/{IPV6}/actions")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.starts_with("GET /v2/actions/")),
        "{paths:?}"
    );

    // Hetzner: another address of the same /64, token from HCLOUD_TOKEN.
    let hetzner = emu.addresses.hetzner.clone();
    let primary = PRIMARY.to_string();
    let args = [
        "assign",
        "2001:db8:0:1::1",
        "--provider",
        "hetzner",
        "--api-url",
        &hetzner,
        "--droplet",
        &primary,
    ];
    let o = run_with(&args, Some(("HCLOUD_TOKEN", TOKEN))).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    assert_eq!(emu.holder(ipv6()), Some(PRIMARY));
}

/// A dual-stack cluster file for `check-config --node secondary` against the emulator: the key
/// and the token as absolute files in `dir`, the secondary's droplet given by `droplet_ids`.
fn dual_stack_config(dir: &std::path::Path, api: &str, secondary: &str, token: &str) -> PathBuf {
    let key = dir.join("authkey");
    if !key.exists() {
        std::fs::write(&key, "k".repeat(64)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let token_file = dir.join("do-token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.join("cluster.yaml");
    let agent = |ip: &str| {
        format!(
            "      - reserved-ip:\n          provider: digitalocean\n          ip: \"{ip}\"\n          \
             token_file: {}\n          api_url: {api}\n          \
             droplet_ids: {{ primary: {PRIMARY}, secondary: {secondary} }}\n",
            token_file.display()
        )
    };
    std::fs::write(
        &cfg,
        format!(
            "cluster: web\nauth:\n  key_file: {}\nquorum: two_node\nnodes:\n  - name: primary\n    \
             addresses: [\"127.0.0.1:694\"]\n  - name: secondary\n    addresses: [\"127.0.0.2:694\"]\n\
             resources:\n  - name: floatip\n    prefer: primary\n    agents:\n{}{}",
            key.display(),
            agent(IP),
            agent(IPV6)
        ),
    )
    .unwrap();
    cfg
}

/// Issue 14 item 4: `ipctl check-config --node` asks the provider (reads only) and says what
/// is wrong, one line each with what to do: a droplet without IPv6 given a reserved IPv6, a
/// droplet id that does not exist, a token without `actions:read` (which an IPv6's moves
/// need). A good setup says what the provider answered. The token is never printed.
#[tokio::test]
async fn check_config_node_asks_the_provider_and_says_what_is_wrong() {
    let mut cfg = testkit::with_ipv6(fixture(Duration::ZERO));
    cfg.droplets[2].ipv6 = false;
    cfg.droplets[2].region = "nyc3".into();
    let no_ipv6 = cfg.droplets[2].id.to_string();
    let scoped = "dop_v1_emulator_no_actions_read_0123456789abcdef";
    cfg.tokens.push(tandem_tests::emulator::TokenConfig {
        token: scoped.into(),
        scopes: Some(vec![
            "reserved_ip:read".into(),
            "reserved_ip:update".into(),
            "droplet:read".into(),
        ]),
    });
    let emu = Emulator::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api = emu.addresses.api.clone();
    let check = |droplet: &str, token: &'static str| {
        let file = dual_stack_config(dir.path(), &api, droplet, token);
        let file = file.to_str().unwrap().to_owned();
        async move {
            let o = run(&["check-config", &file, "--node", "secondary"], None).await;
            let (out, err) = text(&o);
            assert!(!out.contains(token) && !err.contains(token), "token shown");
            (o.status.success(), out, err)
        }
    };

    let (ok, out, err) = check(&SECONDARY.to_string(), TOKEN).await;
    assert!(ok, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains(&format!(
            "provider  resources `floatip`: reserved-ip {IPV6}: the provider answers: this node is droplet {SECONDARY} in nyc3, the IP is held by droplet {PRIMARY}"
        )),
        "{out}"
    );

    let (ok, _, err) = check(&no_ipv6, TOKEN).await;
    assert!(!ok);
    let line = format!(
        "error: resources `floatip`: reserved-ip {IPV6}: digitalocean: droplet {no_ipv6} has no IPv6, so the reserved IPv6 {IPV6} cannot be assigned to it; enable IPv6 on it"
    );
    assert!(err.contains(&line), "{err}");
    assert_eq!(err.matches("error: ").count(), 1, "only the IPv6: {err}");

    let (ok, _, err) = check("4242", TOKEN).await;
    assert!(!ok);
    assert!(
        err.contains(
            "droplet 4242 does not exist (404 not found); fix its id in the configuration"
        ),
        "{err}"
    );

    let (ok, _, err) = check(&SECONDARY.to_string(), scoped).await;
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "reserved-ip {IPV6}: digitalocean: the API token lacks the `actions:read` scope"
        )),
        "{err}"
    );
    assert_eq!(
        err.matches("error: ").count(),
        1,
        "the IPv4 needs no actions:read: {err}"
    );
    assert_eq!(emu.action_count(), 0, "a check moves nothing");
}
