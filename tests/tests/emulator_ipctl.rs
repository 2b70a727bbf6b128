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
    self, FARAWAY, IP, IPV6, PRIMARY, SECONDARY, TOKEN, fixture, ip, ipv6,
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
    // Reads cannot show the write scope: said once, not per IP.
    let note = "provider  digitalocean: not checked: whether the token may move the IPs (`reserved_ip:update`)";
    assert_eq!(out.matches(note).count(), 1, "{out}");

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

/// A cluster file for `check-config --node secondary` with a `fencing:` section at `provider`
/// (`base` its API) when `fencing` is set, each node's `provider_id` as given, and `agents`
/// (YAML lines of the one group's agents, none when empty). The key and the token are absolute
/// files in `dir`.
fn fencing_config(
    dir: &std::path::Path,
    fencing: Option<(&str, &str)>,
    token: &str,
    ids: [Option<&str>; 2],
    agents: &str,
) -> String {
    let key = dir.join("authkey");
    std::fs::write(&key, "k".repeat(64)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let token_file = dir.join("fence-token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = |name: &str, n: u8, id: Option<&str>| {
        let id = id.map_or_else(String::new, |id| format!("\n    provider_id: \"{id}\""));
        format!("  - name: {name}\n    addresses: [\"127.0.0.{n}:694\"]{id}\n")
    };
    let resources = if agents.is_empty() {
        String::new()
    } else {
        format!("resources:\n  - name: floatip\n    prefer: primary\n    agents:\n{agents}")
    };
    let fencing = fencing.map_or_else(String::new, |(provider, base)| {
        format!(
            "fencing:\n  provider: {provider}\n  token_file: {}\n  api_url: {base}\n",
            token_file.display()
        )
    });
    let cfg = dir.join("cluster.yaml");
    std::fs::write(
        &cfg,
        format!(
            "cluster: web\nauth:\n  key_file: {}\nquorum: two_node\nnodes:\n{}{}{fencing}{resources}",
            key.display(),
            node("primary", 1, ids[0]),
            node("secondary", 2, ids[1]),
        ),
    )
    .unwrap();
    cfg.to_str().unwrap().to_owned()
}

/// `ipctl check-config FILE --node secondary` (plus `extra`): success, stdout, stderr. The
/// token is never shown.
async fn check_secondary(file: &str, token: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["check-config", file, "--node", "secondary"];
    args.extend_from_slice(extra);
    let o = run(&args, None).await;
    let (out, err) = text(&o);
    assert!(!out.contains(token) && !err.contains(token), "token shown");
    (o.status.success(), out, err)
}

/// Issue 14 items 2 and 4: `check-config --node` reads, with the `fencing:` token, the server
/// of every node a fence could power off, and says in one line each what is wrong and what to
/// do: a token refused or without `droplet:read`, a `provider_id` that does not exist, a name
/// that finds no droplet or several, a peer given this node's own droplet, a reserved-ip agent
/// naming another droplet for a node than fencing finds, a peer that is off. It says that the
/// power-off scope cannot be checked without a write. Nothing is powered off; `--offline` asks
/// nothing.
#[tokio::test]
async fn check_config_node_checks_the_fencing_token() {
    let mut cfg = fixture(Duration::ZERO);
    let reads_ips_only = "dop_v1_emulator_reserved_ip_only_0123456789abcdef";
    cfg.tokens.push(tandem_tests::emulator::TokenConfig {
        token: reads_ips_only.into(),
        scopes: Some(vec!["reserved_ip:read".into(), "reserved_ip:update".into()]),
    });
    let emu = Emulator::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api = emu.addresses.api.clone();
    let (p, s) = (PRIMARY.to_string(), SECONDARY.to_string());
    let file = |token: &str, ids: [Option<&str>; 2], agents: &str| {
        fencing_config(dir.path(), Some(("digitalocean", &api)), token, ids, agents)
    };

    // The primary found by name, the secondary by id: both readable, nothing wrong.
    let f = file(TOKEN, [None, Some(&s)], "");
    let (ok, out, err) = check_secondary(&f, TOKEN, &[]).await;
    assert!(ok, "stdout: {out}\nstderr: {err}");
    for line in [
        format!("provider  fencing: node primary is droplet {PRIMARY} (found by name, named primary, running): the fencing token can read it"),
        format!("provider  fencing: this node (secondary) is droplet {SECONDARY} (provider_id, named secondary)"),
        "provider  digitalocean: not checked: whether the token may power a peer off (`droplet:update`): digitalocean lists no token's scopes".to_owned(),
    ] {
        assert!(out.contains(&line), "{line}\n{out}");
    }
    let (ok, out, _) = check_secondary(&f, TOKEN, &["--offline"]).await;
    assert!(
        ok && !out.contains("fencing:"),
        "--offline asks nothing: {out}"
    );

    let one_error = |err: &str, line: &str| {
        assert!(err.contains(line), "{line}\n{err}");
    };
    let bad = "dop_v1_not_a_token_known_to_the_emulator_42";
    let (ok, _, err) = check_secondary(&file(bad, [None, Some(&s)], ""), bad, &[]).await;
    assert!(!ok);
    one_error(
        &err,
        "error: fencing: node primary: digitalocean: the API token was rejected (401 unauthorized) on looking up the droplet named primary; check the token",
    );

    let f = file(reads_ips_only, [Some(&p), Some(&s)], "");
    let (ok, _, err) = check_secondary(&f, reads_ips_only, &[]).await;
    assert!(!ok);
    one_error(
        &err,
        &format!(
            "error: fencing: node primary: digitalocean: the API token lacks the `droplet:read` scope (403 forbidden on reading droplet {PRIMARY} (node primary))"
        ),
    );

    let (ok, _, err) =
        check_secondary(&file(TOKEN, [Some("4242"), Some(&s)], ""), TOKEN, &[]).await;
    assert!(!ok);
    one_error(
        &err,
        "error: fencing: node primary: digitalocean: droplet 4242 does not exist (404 not found); fix its id in the configuration",
    );

    // The peer given this node's own droplet: fencing it would power this node off.
    let (ok, _, err) = check_secondary(&file(TOKEN, [Some(&s), None], ""), TOKEN, &[]).await;
    assert!(!ok);
    one_error(
        &err,
        &format!(
            "error: fencing: node primary is droplet {SECONDARY}, this node's (secondary) own: a fence of it would power this node off; give each node its own droplet in nodes[].provider_id"
        ),
    );

    // The reserved-ip agent moves the IP to another droplet than fencing would power off.
    let agent = format!(
        "      - reserved-ip:\n          provider: digitalocean\n          ip: \"{IP}\"\n          \
         token_file: {}\n          api_url: {api}\n          \
         droplet_ids: {{ primary: {FARAWAY}, secondary: {SECONDARY} }}\n",
        dir.path().join("fence-token").display()
    );
    let (ok, _, err) = check_secondary(&file(TOKEN, [None, None], &agent), TOKEN, &[]).await;
    assert!(!ok);
    one_error(
        &err,
        &format!(
            "error: fencing: node primary is droplet {PRIMARY} to the fencing token, but resources `floatip` reserved-ip {IP} gives droplet_ids: {{ primary: {FARAWAY} }}: a failover would move the IP to one droplet and power another off"
        ),
    );
    assert_eq!(err.matches("error: fencing:").count(), 1, "{err}");

    // A peer that is off now: said, not an error.
    emu.world.set_powered(PRIMARY, false);
    let (ok, _, err) = check_secondary(&file(TOKEN, [None, None], ""), TOKEN, &[]).await;
    assert!(ok, "{err}");
    one_error(
        &err,
        &format!(
            "warning: fencing: node primary is droplet {PRIMARY} (found by name, named primary), which is off now"
        ),
    );
    emu.world.set_powered(PRIMARY, true);

    // No droplet of that name, then two of it: set provider_id.
    emu.world.lock().droplets.get_mut(&PRIMARY).unwrap().name = "web-1".into();
    let (ok, _, err) = check_secondary(&file(TOKEN, [None, None], ""), TOKEN, &[]).await;
    assert!(!ok);
    one_error(
        &err,
        "error: fencing: node primary: digitalocean: no droplet is named primary; set nodes[].provider_id of primary to its droplet's id, or name the droplet primary",
    );
    for id in [PRIMARY, FARAWAY] {
        emu.world.lock().droplets.get_mut(&id).unwrap().name = "primary".into();
    }
    let (ok, _, err) = check_secondary(&file(TOKEN, [None, None], ""), TOKEN, &[]).await;
    assert!(!ok);
    one_error(
        &err,
        &format!(
            "error: fencing: node primary: digitalocean: 2 droplets are named primary ({PRIMARY}, {FARAWAY}); set nodes[].provider_id"
        ),
    );
    assert!(
        emu.world.lock().power.actions.is_empty(),
        "a check powers nothing off"
    );
}

/// The same registry at Hetzner and Vultr: servers found by name and by id through the fencing
/// token; an id that does not exist is an error. Hetzner's write permission cannot be read
/// either; Vultr's API keys have no scopes, so nothing is said of it.
#[tokio::test]
async fn check_config_node_checks_fencing_at_hetzner_and_vultr() {
    let emu = Emulator::start(fixture(Duration::ZERO)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vultr_id = |id: u64| emu.world.lock().droplets[&id].vultr_id();
    let cases = [
        (
            "hetzner",
            emu.addresses.hetzner.clone(),
            SECONDARY.to_string(),
            "4242".to_owned(),
        ),
        (
            "vultr",
            emu.addresses.vultr.clone(),
            vultr_id(SECONDARY),
            "0e5e0000-0000-4000-8000-000000004242".to_owned(),
        ),
    ];
    for (provider, base, secondary, missing) in cases {
        let noun = if provider == "vultr" {
            "instance"
        } else {
            "server"
        };
        let at = Some((provider, base.as_str()));
        let f = fencing_config(dir.path(), at, TOKEN, [None, Some(&secondary)], "");
        let (ok, out, err) = check_secondary(&f, TOKEN, &[]).await;
        assert!(ok, "{provider}: stdout: {out}\nstderr: {err}");
        let line = format!(
            "provider  fencing: this node (secondary) is {noun} {secondary} (provider_id, named secondary)"
        );
        assert!(out.contains(&line), "{line}\n{out}");
        assert!(
            out.contains(&format!("provider  fencing: node primary is {noun} ")),
            "{out}"
        );
        assert_eq!(
            out.contains("not checked: whether the token may power a peer off (`read & write`)"),
            provider == "hetzner",
            "{out}"
        );
        let f = fencing_config(dir.path(), at, TOKEN, [Some(&missing), None], "");
        let (ok, _, err) = check_secondary(&f, TOKEN, &[]).await;
        assert!(!ok);
        let line = format!(
            "error: fencing: node primary: {provider}: {noun} {missing} does not exist (404 not found)"
        );
        assert!(err.contains(&line), "{line}\n{err}");
    }
}

/// Issue 14 item 3: the IP-to-server rule each provider documents. Vultr assigns a reserved IP
/// only within its region: another region is an error. Hetzner routes a floating IP to a server
/// in any location, best in its home location: a warning, and the check passes. Both with the
/// server found through the metadata service, as on a real machine.
#[tokio::test]
async fn check_config_node_applies_each_providers_region_rule() {
    let emu = Emulator::start(fixture(Duration::ZERO)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meta = emu.addresses.metadata[&FARAWAY].clone();
    for (provider, base) in [
        ("hetzner", emu.addresses.hetzner.clone()),
        ("vultr", emu.addresses.vultr.clone()),
    ] {
        let agent = format!(
            "      - reserved-ip:\n          provider: {provider}\n          ip: \"{IP}\"\n          \
             token_file: {}\n          api_url: {base}\n          metadata_url: {meta}\n",
            dir.path().join("fence-token").display()
        );
        let f = fencing_config(dir.path(), None, TOKEN, [None, None], &agent);
        let (ok, _, err) = check_secondary(&f, TOKEN, &[]).await;
        if provider == "vultr" {
            assert!(!ok, "{err}");
            let line = format!(
                "error: resources `floatip`: reserved-ip {IP}: the IP is in region nyc3, this node's instance {} in sfo3: a reserved IP can only be assigned within its region",
                emu.world.lock().droplets[&FARAWAY].vultr_id()
            );
            assert!(err.contains(&line), "{line}\n{err}");
        } else {
            assert!(ok, "{err}");
            let line = format!(
                "warning: resources `floatip`: reserved-ip {IP}: the floating IP's home location is nyc3, this node's server {FARAWAY} is in sfo3: Hetzner assigns it there, but routes it best in nyc3"
            );
            assert!(err.contains(&line), "{line}\n{err}");
        }
    }
}
