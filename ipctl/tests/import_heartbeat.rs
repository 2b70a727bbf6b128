//! `ipctl import-heartbeat` on realistic Heartbeat directories: the output must pass the real
//! `ipctl check-config`, keep what maps, and report everything else with file:line.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tandem_config::{AgentConfig, Failback, HealthProbe, QuorumPolicy};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .join("ha.d")
}

/// Runs ipctl as on a machine without Tandem's units installed (whatever this one has).
fn ipctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipctl"))
        .args(args)
        .env_remove("TANDEM_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("SYSTEMD_UNIT_PATH", "/nonexistent/tandem-test-units")
        .output()
        .expect("run ipctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Imported {
    yaml: String,
    stderr: String,
    config: tandem_config::ClusterConfig,
    _dir: tempfile::TempDir,
    file: PathBuf,
}

/// Runs the import and writes its output to a file: (yaml, import's stderr, file, its dir).
fn run_import(dir: &Path, extra: &[&str]) -> (String, String, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = vec!["import-heartbeat", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = ipctl(&args);
    let (yaml, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "import failed:\n{stderr}");
    let file = tmp.path().join("cluster.yaml");
    std::fs::write(&file, &yaml).unwrap();
    (yaml, stderr, file, tmp)
}

/// Runs the import, then the real `ipctl check-config` on its output, which must pass and
/// know `node`. (Without --node: the Heartbeat host's init scripts need not exist here.)
fn import(dir: &Path, extra: &[&str], node: &str) -> Imported {
    let (yaml, stderr, file, tmp) = run_import(dir, extra);
    let check = ipctl(&["check-config", file.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "check-config refused the import:\n{yaml}\n{}",
        text(&check.stderr)
    );
    let config = tandem_config::parse(&yaml, Path::new("imported.yaml")).unwrap();
    assert!(config.node(node).is_some(), "{node} not in:\n{yaml}");
    Imported {
        yaml,
        stderr,
        config,
        _dir: tmp,
        file,
    }
}

/// Runs an import that has to leave placeholders: `ipctl check-config` must refuse its output,
/// every error naming a placeholder. Returns (yaml, import's stderr, check-config's stderr).
fn import_with_placeholders(dir: &Path, extra: &[&str]) -> (String, String, String) {
    let (yaml, stderr, file, _tmp) = run_import(dir, extra);
    let check = ipctl(&["check-config", file.to_str().unwrap()]);
    let errors = text(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{yaml}\n{errors}");
    for e in errors.lines().filter(|l| l.starts_with("error: ")) {
        assert!(e.contains("is a placeholder: a documentation address (RFC 5737) that `ipctl import-heartbeat` writes"), "{e}");
    }
    (yaml, stderr, errors)
}

fn addrs(c: &tandem_config::ClusterConfig, node: &str) -> Vec<String> {
    c.node(node)
        .unwrap()
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn tutorial_shared_ha_cf_maps_completely() {
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("authkey");
    let i = import(
        &fixture("tutorial-shared"),
        &["--key-out", key.to_str().unwrap(), "--cluster", "web"],
        "primary",
    );
    let c = &i.config;
    assert_eq!(c.cluster, "web");
    assert_eq!(addrs(c, "primary"), ["104.236.6.11:694"]);
    assert_eq!(addrs(c, "secondary"), ["104.236.6.22:694"]);
    assert_eq!(c.quorum, QuorumPolicy::TwoNode);
    let secs = |s| std::time::Duration::from_secs(s);
    assert_eq!(
        (
            c.timing.interval,
            c.timing.warn_after,
            c.timing.dead_after,
            c.timing.init_dead
        ),
        (secs(2), secs(5), secs(15), secs(60))
    );
    assert_eq!(c.auth.key_file, key);
    let g = &c.resources[0];
    assert_eq!(
        (g.name.as_str(), g.prefer.as_deref(), g.failback),
        ("floatip", Some("primary"), Failback::Auto)
    );
    let AgentConfig::ReservedIp(r) = &g.agents[0] else {
        panic!("{:?}", g.agents)
    };
    assert_eq!(r.ip.to_string(), "45.55.96.8");
    assert_eq!(r.provider, tandem_config::Provider::DigitalOcean);
    assert_eq!(r.token_file, Path::new("do-token"));

    // a new key, private, not the old sha1 key
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let k = std::fs::read_to_string(&key).unwrap();
    assert_eq!(k.trim().len(), 64);
    assert!(!k.contains("4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b"));
    assert!(
        i.stderr.contains("authkeys:2: sha1: not reused"),
        "{}",
        i.stderr
    );
    // the key check passes with the new key in place; the token is the credential the
    // agent's unit loads, which this machine does not have installed
    let check = ipctl(&[
        "check-config",
        i.file.to_str().unwrap(),
        "--node",
        "primary",
    ]);
    let warnings: Vec<String> = text(&check.stderr).lines().map(str::to_owned).collect();
    assert!(check.status.success(), "{warnings:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("token_file `do-token` is a credential name"),
        "{warnings:?}"
    );

    // secrets of the old setup appear nowhere
    for secret in [
        "4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b",
        "example-token-not-a-real-one",
    ] {
        assert!(
            !i.yaml.contains(secret) && !i.stderr.contains(secret),
            "{secret} leaked"
        );
    }
    assert!(
        i.stderr
            .contains("holds an API token in clear text: it was not copied"),
        "{}",
        i.stderr
    );
    assert!(
        i.stderr
            .contains("haresources:1: floatip: mapped to the built-in reserved-ip agent"),
        "{}",
        i.stderr
    );
    assert!(!i.yaml.contains("FILL IN"), "{}", i.yaml);
}

#[test]
fn tutorial_per_node_ha_cf_matches_the_other_node_and_asks_for_our_address() {
    let (yaml, stderr, errors) =
        import_with_placeholders(&fixture("tutorial-primary"), &["--node", "primary"]);
    assert!(
        yaml.contains("- \"104.236.6.22:694\"    # ha.cf line 6: ucast eth0"),
        "{yaml}"
    );
    assert!(yaml.contains("\"192.0.2.2:694\"    # FILL IN"), "{yaml}");
    assert!(
        errors.contains("nodes[0].addresses[0]: 192.0.2.2 is a placeholder"),
        "{errors}"
    );
    assert!(
        stderr.contains("node primary: no address in the files"),
        "{stderr}"
    );
    assert!(stderr.contains("--address primary=IP"), "{stderr}");
    // without --key-out the operator is told how to make the key
    assert!(
        stderr.contains("pass --key-out FILE, or run `ipctl keygen"),
        "{stderr}"
    );

    let i = import(
        &fixture("tutorial-primary"),
        &["--node", "primary", "--address", "primary=104.236.6.11"],
        "primary",
    );
    assert_eq!(addrs(&i.config, "primary"), ["104.236.6.11:694"]);
    assert!(!i.yaml.contains("FILL IN"), "{}", i.yaml);
}

#[test]
fn per_node_ha_cf_from_an_unknown_host_reports_the_ucast() {
    let (_, stderr, _) =
        import_with_placeholders(&fixture("tutorial-primary"), &["--node", "somewhere-else"]);
    assert!(
        stderr.contains("ha.cf:6: ucast eth0 104.236.6.22: cannot tell which node it belongs to"),
        "{stderr}"
    );
    assert!(stderr.contains("pass --node NAME"), "{stderr}");
}

#[test]
fn complex_setup_maps_links_groups_and_reports_the_rest() {
    let i = import(
        &fixture("complex"),
        &["--cluster", "web", "--node", "web1"],
        "web1",
    );
    let c = &i.config;
    assert_eq!(c.nodes.len(), 3);
    assert_eq!(addrs(c, "web2"), ["10.0.0.2:6940", "192.168.50.2:6940"]);
    assert_eq!(c.quorum, QuorumPolicy::Majority);
    assert_eq!(c.timing.interval, std::time::Duration::from_millis(500));
    assert_eq!(c.timing.init_dead, std::time::Duration::from_secs(60));
    assert_eq!(
        c.health.iter().map(|h| h.probe.clone()).collect::<Vec<_>>(),
        [
            HealthProbe::Exec("ping -c1 -W1 10.0.0.254".into()),
            HealthProbe::Exec("ping -c1 -W1 8.8.8.8 || ping -c1 -W1 1.1.1.1".into()),
        ]
    );
    let names: Vec<&str> = c.resources.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        ["ip-10-0-0-100", "ip-10-0-0-101", "MailTo", "memcached"]
    );
    assert!(c.resources.iter().all(|g| g.failback == Failback::Manual));
    assert_eq!(c.resources[3].prefer, None);

    let g = &c.resources[0];
    let AgentConfig::Exec(e) = &g.agents[0] else {
        panic!()
    };
    assert_eq!(e.start, "ip addr add 10.0.0.100/24 dev eth0");
    assert_eq!(e.stop, "ip addr del 10.0.0.100/24 dev eth0");
    let AgentConfig::Lsb(l) = &g.agents[1] else {
        panic!()
    };
    assert_eq!(l.script, "apache2");
    // continuation line joined: four resources in the second group
    let g = &c.resources[1];
    assert_eq!(g.agents.len(), 4);
    let AgentConfig::Exec(e) = &g.agents[1] else {
        panic!()
    };
    assert!(
        e.start
            .ends_with("complex/ha.d/resource.d/drbddisk r0 start"),
        "{}",
        e.start
    );
    let AgentConfig::Exec(e) = &g.agents[2] else {
        panic!()
    };
    assert!(
        e.monitor
            .as_deref()
            .unwrap()
            .ends_with("resource.d/Filesystem /dev/drbd0 /srv ext4 status")
    );

    let ha = fixture("complex");
    for (file, line, what) in [
        ("ha.cf", 2, "logfacility: not mapped"),
        ("ha.cf", 3, "logfile: not mapped"),
        ("ha.cf", 12, "bcast: not mapped: Tandem sends unicast"),
        ("ha.cf", 25, "respawn: not mapped"),
        ("ha.cf", 26, "compression: not mapped: no Tandem equivalent"),
        (
            "ha.cf",
            23,
            "ping 10.0.0.254: mapped to an exec health check",
        ),
        (
            "haresources",
            2,
            "IPaddr::10.0.0.100/24/eth0: a local IP alias is not a cloud reserved IP",
        ),
        (
            "haresources",
            3,
            "IPaddr2::10.0.0.101: no netmask given; /32 assumed",
        ),
        (
            "haresources",
            3,
            "Filesystem: the `resource-agents` package has an OCF agent",
        ),
        ("haresources", 6, "\"web9\" is not a node in ha.cf"),
        ("authkeys", 3, "crc: this is no authentication at all"),
    ] {
        let want = format!("{}:{line}: {what}", ha.join(file).display());
        assert!(i.stderr.contains(&want), "{want:?} not in:\n{}", i.stderr);
    }
    assert!(!i.stderr.contains("old-md5-secret") && !i.yaml.contains("old-md5-secret"));
}

#[test]
fn floatip_without_an_ip_gets_a_documentation_address_and_a_report() {
    let d = tempfile::tempdir().unwrap();
    let ha = d.path().join("ha.d");
    std::fs::create_dir(&ha).unwrap();
    std::fs::write(
        ha.join("ha.cf"),
        "keepalive 1\ndeadtime 10\nnode a\nnode b\nucast eth1 10.17.0.28\nucast eth1 10.17.0.29\n",
    )
    .unwrap();
    std::fs::write(ha.join("haresources"), "b floatip nginx\n").unwrap();
    let (yaml, stderr, errors) = import_with_placeholders(&ha, &["--node", "a"]);
    assert!(
        yaml.contains("ip: 192.0.2.1            # FILL IN: your reserved IP"),
        "{yaml}"
    );
    assert!(
        errors.contains("reserved-ip.ip: 192.0.2.1 is a placeholder"),
        "{errors}"
    );
    assert!(
        stderr.contains(
            "haresources:1: floatip: no floatip script was found: the reserved IP is needed"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("authkeys: not found"), "{stderr}");
    // once the operator fills it in, the rest is valid: keepalive 1 / deadtime 10 without
    // warntime get a consistent warn_after
    let filled = yaml.replace("ip: 192.0.2.1", "ip: 45.55.96.8");
    let c = tandem_config::parse(&filled, Path::new("imported.yaml")).unwrap();
    let t = c.timing;
    assert!(
        t.interval < t.warn_after && t.warn_after < t.dead_after,
        "{t:?}"
    );
    assert_eq!(c.resources[0].prefer.as_deref(), Some("b"));
}

#[test]
fn a_directory_without_ha_cf_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let out = ipctl(&["import-heartbeat", d.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has no ha.cf"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn key_out_never_overwrites_an_existing_file() {
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("authkey");
    std::fs::write(&key, "keep me").unwrap();
    let out = ipctl(&[
        "import-heartbeat",
        fixture("tutorial-shared").to_str().unwrap(),
        "--key-out",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "keep me");
}

/// The Debian `heartbeat` package's own example files, with the lines an operator uncomments
/// for two nodes; the resource scripts are the package's /etc/ha.d/resource.d.
fn packaged_example(dir: &Path) -> Option<()> {
    let doc = Path::new("/usr/share/doc/heartbeat");
    let gunzip = |name: &str| -> Option<String> {
        let out = Command::new("zcat").arg(doc.join(name)).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let ha_cf = gunzip("ha.cf.gz")?;
    let haresources = gunzip("haresources.gz")?;
    let authkeys = std::fs::read_to_string(doc.join("authkeys")).ok()?;
    if !Path::new("/etc/ha.d/resource.d/Filesystem").exists() {
        return None;
    }
    let ha_cf = ["keepalive 2", "deadtime 30", "warntime 10", "initdead 120"]
        .iter()
        .fold(ha_cf, |t, d| t.replacen(&format!("#{d}"), d, 1))
        .replacen("#udpport\t694", "udpport\t694", 1)
        .replacen(
            "#ucast eth0 192.168.1.2",
            "ucast eth0 10.0.0.171\nucast eth0 10.0.0.172",
            1,
        )
        .replacen("#node\tken3", "node\tken3", 1)
        .replacen("#node\tkathy", "node\tkathy\nauto_failback on", 1);
    assert!(
        ha_cf.contains("\nnode\tkathy"),
        "the example changed:\n{ha_cf}"
    );
    let haresources = format!(
        "{haresources}ken3 10.0.0.170/24/eth0 Filesystem::/dev/sda1::/data1::ext2 apache\n"
    );
    let authkeys =
        authkeys
            .replacen("#auth 1", "auth 2", 1)
            .replacen("#2 sha1 HI!", "2 sha1 HI!", 1);
    std::fs::create_dir(dir).unwrap();
    std::fs::write(dir.join("ha.cf"), ha_cf).unwrap();
    std::fs::write(dir.join("haresources"), haresources).unwrap();
    std::fs::write(dir.join("authkeys"), authkeys).unwrap();
    std::fs::set_permissions(dir.join("authkeys"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("/etc/ha.d/resource.d", dir.join("resource.d")).unwrap();
    Some(())
}

#[test]
fn the_packaged_heartbeat_example_imports_into_a_config_that_works_on_its_node() {
    let work = tempfile::tempdir().unwrap();
    if packaged_example(&work.path().join("ha.d")).is_none() {
        tandem_emulator::testkit::skip(
            "the Debian package `heartbeat` (its examples in /usr/share/doc/heartbeat and \
             /etc/ha.d/resource.d) is not installed (apt-get install -y heartbeat)",
        );
        return;
    }
    // relative paths, from the directory an operator would be in
    let out = Command::new(env!("CARGO_BIN_EXE_ipctl"))
        .args([
            "import-heartbeat",
            "ha.d",
            "--node",
            "ken3",
            "--key-out",
            "authkey",
        ])
        .current_dir(work.path())
        .env_remove("TANDEM_CONFIG")
        .output()
        .unwrap();
    let (yaml, notes) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{notes}");
    println!("{yaml}\n{notes}");
    let config = tandem_config::parse(&yaml, Path::new("imported.yaml")).unwrap();
    let key = std::path::absolute(work.path().join("authkey")).unwrap();
    assert_eq!(config.auth.key_file, key, "{yaml}");
    assert!(key.exists(), "{notes}");
    for script in [
        "\"/etc/ha.d/resource.d/Filesystem /dev/sda1 /data1 ext2 start\"",
        "lsb: \"/etc/ha.d/resource.d/apache\"",
    ] {
        assert!(yaml.contains(script), "{script} not in:\n{yaml}");
    }
    assert!(
        !yaml.contains("\"ha.d/") && !yaml.contains(" ha.d/"),
        "a relative path:\n{yaml}"
    );
    // ha.cf never says whose address a ucast line is: the pairing is the import's guess
    assert!(
        notes.contains("ucast eth0: ha.cf does not say whose address each ucast line is; paired with the nodes by the order of the `node` lines: ken3 = 10.0.0.171 (line")
            && notes.contains("kathy = 10.0.0.172 (line"),
        "{notes}"
    );
    let file = work.path().join("cluster.yaml");
    std::fs::write(&file, &yaml).unwrap();
    for node in ["ken3", "kathy"] {
        // from another directory, as the daemons would read it
        let check = Command::new(env!("CARGO_BIN_EXE_ipctl"))
            .args(["check-config", file.to_str().unwrap(), "--node", node])
            .current_dir("/")
            .env_remove("TANDEM_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("SYSTEMD_UNIT_PATH", "/nonexistent/tandem-test-units")
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "check-config --node {node} refused the import:\n{yaml}\n{}",
            text(&check.stderr)
        );
        assert!(
            !text(&check.stderr).contains("error"),
            "{}",
            text(&check.stderr)
        );
    }
}
