//! The Debian package where users run it: Debian machines booted with a real systemd as
//! PID 1 (tandem_tests::debian), the package installed the way README's tutorial says.
//!
//! Skipped, saying why, where a machine cannot be booted: not root, no `debootstrap`,
//! `unshare` or `nsenter`, no cgroup2, no Debian mirror in the host's apt sources or no
//! network to it, no cargo-deb to build the package (or set `TANDEM_DEB=path.deb`).
//! The base root is made once with debootstrap and cached in `<target>/tandem-debian/`.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::time::Instant;

use tandem_tests::debian::droplets::Droplets;
use tandem_tests::debian::{self, Machine, base};
use tandem_tests::netns::Net;

/// What the machines are made of: minbase, systemd as init, and what the tutorial's
/// droplets run (nginx serves "Droplet: NAME"; a Debian server has D-Bus, through which
/// `poweroff` asks logind).
const PACKAGES: [&str; 4] = ["systemd", "systemd-sysv", "dbus", "nginx"];

struct Setup {
    base: PathBuf,
    deb: PathBuf,
    /// Where machines keep their files (under the cache, on the same file system).
    machines: PathBuf,
}

/// The base root and the package, made once per test process; `None` (the reason printed)
/// where machines cannot be booted here.
fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Result<Setup, String>> = OnceLock::new();
    let s = SETUP.get_or_init(|| {
        debian::machines()?;
        debian::package()?;
        let mirror = base::host_mirror()?;
        base::reachable(&mirror.url).map_err(|e| format!("no network to {}: {e}", mirror.url))?;
        let cache = debian::target_dir()
            .expect("target dir")
            .join("tandem-debian");
        // The package builds (CPU) while debootstrap downloads and unpacks (network, disk).
        let started = Instant::now();
        let package = std::thread::spawn(debian::package_for_tests);
        let root = base::ensure_base(&cache, &mirror, &PACKAGES).expect("debootstrap");
        let deb = package
            .join()
            .expect("package thread")
            .expect("the package builds");
        match root.built_in {
            Some(d) => println!(
                "debootstrap of {} took {:.1} s",
                mirror.suite,
                d.as_secs_f64()
            ),
            None => println!("base root {} taken from the cache", root.path.display()),
        }
        println!(
            "base root and package ready after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let machines = cache.join("machines");
        std::fs::create_dir_all(&machines).expect("machines dir");
        Ok(Setup {
            base: root.path,
            deb,
            machines,
        })
    });
    match s {
        Ok(s) => Some(s),
        Err(why) => {
            tandem_tests::require::skip(why);
            None
        }
    }
}

/// The package's file name, as `apt install ./NAME` wants it in the current directory.
fn deb_name(s: &Setup) -> String {
    s.deb
        .file_name()
        .expect("deb file name")
        .to_string_lossy()
        .into_owned()
}

/// Image builders install packages with `dpkg -i` in a chroot where nothing is mounted:
/// the postinst must not fail there (it did: systemd-tmpfiles refuses to run without
/// /proc). The directories it could not make are made at the first boot.
#[test]
fn dpkg_in_a_chroot_without_proc_installs_and_the_first_boot_makes_the_directories() {
    let Some(s) = setup() else { return };
    let net = Net::new(1, 1).expect("net");
    let mut m = Machine::create(&s.machines, &s.base, "image", &net.hosts[0]).expect("machine");
    std::fs::create_dir_all(m.upper().join("root")).expect("root home");
    std::fs::copy(&s.deb, m.upper().join("root").join(deb_name(s))).expect("copy deb");
    let out = m
        .chroot(&format!(
            "test ! -e /proc/self && dpkg -i /root/{}",
            deb_name(s)
        ))
        .expect("chroot");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dpkg -i in a chroot without /proc: {}\n{}{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("will be created at boot"),
        "postinst says what it left for the boot: {stderr}"
    );
    let passwd = std::fs::read_to_string(m.upper().join("etc/passwd")).expect("passwd");
    for user in ["tandem:", "tandem-agent:"] {
        assert!(passwd.contains(user), "sysusers made {user} in the chroot");
    }
    let took = m.boot().expect("boot");
    println!("image machine booted in {:.1} s", took.as_secs_f64());
    let dirs = m
        .ok("stat -c '%n %a %U:%G' /run/tandem /etc/tandem /var/lib/tandem")
        .expect("stat");
    assert_eq!(
        dirs.trim(),
        "/run/tandem 1770 root:tandem\n/etc/tandem 755 root:root\n/var/lib/tandem 755 root:root",
        "the first boot made the directories of tmpfiles.d/tandem.conf"
    );
}

/// A service with `User=nobody` reads a credential passed with `LoadCredential=`: the
/// machine is set up as a real boot would be (systemd 252 in a container with private
/// mount propagation denied this: see tandem_tests::debian::machine).
#[test]
fn a_service_of_another_user_reads_its_credential() {
    let Some(s) = setup() else { return };
    let net = Net::new(1, 1).expect("net");
    let mut m =
        Machine::create(&s.machines, &s.base, "credentials", &net.hosts[0]).expect("machine");
    m.boot().expect("boot");
    let unit = "[Service]\nType=oneshot\nUser=nobody\nLoadCredential=x:/etc/hostname\n\
                ExecStart=sh -c 'cat $CREDENTIALS_DIRECTORY/x'\n";
    std::fs::write(
        m.path("/etc/systemd/system/credtest.service")
            .expect("path"),
        unit,
    )
    .expect("unit");
    m.ok("systemctl daemon-reload && systemctl start credtest.service")
        .expect("the credential unit succeeds");
    // The unit is done when `systemctl start` returns, its output maybe not yet in the
    // journal (once seen empty here): ask journald to write what it has, a few times.
    let mut out = String::new();
    for _ in 0..20 {
        out = m
            .ok("journalctl --sync && journalctl -b -u credtest.service -o cat _UID=65534")
            .expect("journal");
        if !out.trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        out.trim(),
        "credentials",
        "the service printed its credential"
    );
}

/// `ipctl status --json` on a machine (None while a daemon does not answer).
fn status(m: &Machine) -> Option<Value> {
    let out = m.run("ipctl status --json").ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Whether a status shows every node up, the group held by `holder`, and this node's
/// agent connected to its membership daemon.
fn view_is(s: &Value, holder: &str) -> bool {
    let nodes = s["membership"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    nodes.len() == 2
        && nodes.iter().all(|n| n["state"] == "up")
        && s["agent"]["membership_connected"] == true
        && s["agent"]["groups"][0]["holder"] == holder
}

/// Waits (up to `limit`) until both machines' `ipctl status` show both nodes up and the
/// group held by `holder`; the time that took.
fn wait_view(d: &Droplets, holder: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let views: Vec<Option<Value>> = d.on_each(status);
        if views
            .iter()
            .all(|v| v.as_ref().is_some_and(|v| view_is(v, holder)))
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "within {limit:?} the view is not: both up, {GROUP} held by {holder}; statuses:\n{}",
            views
                .iter()
                .map(|v| v.as_ref().map_or("none".to_owned(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls `f` (every 250 ms, up to `limit`) until it holds; whether it did.
fn wait_until(limit: Duration, f: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while !f() {
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    true
}

/// README step 3's file: the package's example with this setting's addresses (the
/// droplets' public and private ones, a health check of the outside), and the emulator's
/// API URL. Every replaced text must be there: a changed example fails here, not later.
fn cluster_yaml(example: &str, d: &Droplets) -> String {
    let replacements = [
        ("104.236.6.11", d.public_address("primary").to_string()),
        ("10.17.0.28", d.private_address("primary").to_string()),
        ("104.236.6.22", d.public_address("secondary").to_string()),
        ("10.17.0.29", d.private_address("secondary").to_string()),
        ("10.17.0.1:53", d.api_authority()),
        (
            "provider: digitalocean\n",
            format!(
                "provider: digitalocean\n          api_url: {}   # the emulator\n",
                d.api_url()
            ),
        ),
    ];
    let mut text = example.to_owned();
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "the example cluster.yaml has no {from:?}"
        );
        text = text.replace(from, &to);
    }
    text
}

/// The tutorial's group.
const GROUP: &str = "floatip";

/// README's tutorial, step by step, on two Debian machines booted with systemd, with the
/// DigitalOcean emulator as the cloud; then what an operator does to a running cluster.
#[test]
fn the_readme_tutorial_on_two_debian_machines_under_systemd() {
    let Some(s) = setup() else { return };
    let started = Instant::now();
    let token = format!(
        "dop_v1_{}",
        (0..64)
            .map(|_| char::from_digit(rand::random_range(0..16u32), 16).unwrap_or('0'))
            .collect::<String>()
    );
    let emulator = tandem_tests::cluster::emulator_for_tests().expect("the emulator binary");
    let mut d = Droplets::create(&s.base, &s.machines, &emulator, &token).expect("droplets");

    // 1. Two droplets and a reserved IP (held by the primary, as after the tutorial's setup).
    let boots = d.boot_all().expect("both droplets boot");
    println!("step 1: both droplets booted in {boots:.1?}");

    // 2. apt install ./tandem_*.deb on both.
    let deb = deb_name(s);
    d.on_each(|m| {
        std::fs::copy(&s.deb, m.path(&format!("/root/{deb}")).expect("path")).expect("copy");
        m.ok("cd /root && apt install ./tandem_*.deb")
    })
    .into_iter()
    .for_each(|r| drop(r.expect("apt install ./tandem_*.deb")));
    for m in &d.machines {
        let state = m
            .run("systemctl is-enabled tandem-membership tandem-resource-agent")
            .expect("is-enabled");
        assert_eq!(
            String::from_utf8_lossy(&state.stdout).trim(),
            "disabled\ndisabled",
            "{}: the units are installed but not enabled",
            m.name
        );
    }
    println!(
        "step 2: installed ({:.1} s)",
        started.elapsed().as_secs_f64()
    );

    // 3. The same /etc/tandem/cluster.yaml on both, from the example.
    for m in &d.machines {
        m.ok("cp /usr/share/doc/tandem/examples/cluster.yaml /etc/tandem/")
            .expect("cp the example");
        let path = m.path("/etc/tandem/cluster.yaml").expect("path");
        let example = std::fs::read_to_string(&path).expect("the example");
        std::fs::write(&path, cluster_yaml(&example, &d)).expect("edit");
    }
    // 4. The cluster key, made on the primary, copied to the secondary as `scp -p` copies
    // (contents and mode), and chowned there.
    let (primary, secondary) = (d.machine("primary"), d.machine("secondary"));
    primary
        .ok("ipctl keygen --out /etc/tandem/authkey && chown tandem: /etc/tandem/authkey")
        .expect("keygen");
    let key = std::fs::read(primary.path("/etc/tandem/authkey").expect("path")).expect("key");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(secondary.path("/etc/tandem/authkey").expect("path"))
            .expect("copy the key");
        f.write_all(&key).expect("copy the key");
    }
    secondary
        .ok("chown tandem: /etc/tandem/authkey")
        .expect("chown");

    // README step 5's warning: before the token is there, check-config --node refuses.
    let early = primary
        .run("ipctl check-config --node primary")
        .expect("check-config");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&early.stdout),
        String::from_utf8_lossy(&early.stderr)
    );
    assert!(
        !early.status.success() && said.contains("/etc/tandem/do-token"),
        "check-config --node without the token: {}\n{said}",
        early.status
    );

    // 5. The API token for the agent only.
    for r in d.on_each(|m| {
        m.ok_with_input(
            "install -m 0600 /dev/stdin /etc/tandem/do-token",
            token.as_bytes(),
        )
    }) {
        r.expect("install the token");
    }

    // ... then check-config on each (before the token is there it is an error).
    for (m, out) in d
        .machines
        .iter()
        .zip(d.on_each(|m| m.run(&format!("ipctl check-config --node {}", m.name))))
    {
        let out = out.expect("check-config runs");
        println!(
            "step 5: ipctl check-config --node {}: {}\n{}{}",
            m.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "check-config on {}", m.name);
    }

    // 6. Start; ipctl status shows both nodes and the primary holding the group.
    for r in d.on_each(|m| m.ok("systemctl enable --now tandem-membership tandem-resource-agent")) {
        r.expect("systemctl enable --now");
    }
    let took = wait_view(&d, "primary", Duration::from_secs(30));
    println!("step 6: both see both nodes up and {GROUP} on the primary after {took:.1?}");
    let ready = wait_until(Duration::from_secs(30), || {
        status(d.machine("secondary")).is_some_and(|s| s["agent"]["groups"][0]["ready"] == true)
    });
    assert!(ready, "the secondary is ready to take over");
    // README step 6, as a user reads it: both nodes, the quorum policy, the holder, and
    // "ready to take over" on the secondary.
    let text = d.machines[1].ok("ipctl status").expect("ipctl status");
    println!("{text}");
    for shown in [
        "primary",
        "secondary",
        "two_node",
        "held by primary",
        "ready to take over",
    ] {
        assert!(
            text.contains(shown),
            "ipctl status shows no {shown:?}:\n{text}"
        );
    }
    check_units(&d, &token);
    check_security(&d);
    println!(
        "set up and checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 7. The curl loop from another machine while the primary powers off.
    let curl = d.curl_loop(CURL_PERIOD);
    std::thread::sleep(Duration::from_secs(1));
    let (off_at, off_wall) = (Instant::now(), SystemTime::now());
    let shutdown = d
        .machine_mut("primary")
        .poweroff(Duration::from_secs(60))
        .expect("poweroff");
    d.wait_holder("secondary", Duration::from_secs(30))
        .expect("the secondary takes the IP");
    println!(
        "step 7: primary powered off in {shutdown:.1?}; the IP on the secondary {:.1?} after `poweroff`",
        d.moved_after(off_wall, "secondary")
            .expect("move in the audit log")
    );
    let seen = status(d.machine("secondary")).expect("status on the secondary");
    assert!(
        events(&seen, "node_dead", "primary").any(|e| e["reason"] == "left"),
        "the secondary saw the primary leave cleanly: {seen}"
    );

    // 8. Failback: the primary boots again and takes the IP back.
    let back_wall = SystemTime::now();
    let booted = d
        .machine_mut("primary")
        .boot()
        .expect("the primary boots again");
    d.wait_holder("primary", Duration::from_secs(60))
        .expect("the primary takes the IP back");
    println!(
        "step 8: primary booted in {booted:.1?}; IP back on the primary {:.1?} after the boot began",
        d.moved_after(back_wall, "primary")
            .expect("move in the audit log")
    );
    wait_view(&d, "primary", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let report = curl.stop();
    check_curl_loop(&report, off_at);
    check_stop_order(d.machine("primary"));

    kill_membership_on_the_holder(&d);
    restart_the_agent_on_the_holder(&d);
    watchdog_restarts_a_frozen_membership(&d);
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}

/// Waits (up to `limit`) until `unit` is active again after a restart: `NRestarts` above
/// `restarts` and a main pid other than `old_pid`. Its new properties.
fn wait_restarted(
    m: &Machine,
    unit: &str,
    restarts: u32,
    old_pid: &str,
    limit: Duration,
) -> HashMap<String, String> {
    let started = Instant::now();
    loop {
        let p = m.show(unit);
        let n: u32 = p["NRestarts"].parse().unwrap_or(0);
        if n > restarts && p["ActiveState"] == "active" && p["MainPID"] != old_pid {
            return p;
        }
        assert!(
            started.elapsed() < limit,
            "{}: {unit} not restarted within {limit:?}: {:?}",
            m.name,
            ["ActiveState", "SubState", "Result", "NRestarts", "MainPID"]
                .map(|k| p.get(k).cloned())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Audit lines of one kind after the first `from` lines.
fn audit_since<'a>(audit: &'a [Value], from: usize, event: &str) -> Vec<&'a Value> {
    audit
        .iter()
        .skip(from)
        .filter(|e| e["event"] == event)
        .collect()
}

/// Waits for the view (both up, `holder` holds), then past `dead_after` (1 s) and checks it
/// again, so a death the peer is about to declare is not missed; the time to the first.
fn wait_settled_view(d: &Droplets, holder: &str) -> Duration {
    let took = wait_view(d, holder, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    wait_view(d, holder, Duration::ZERO);
    took
}

/// `systemctl kill -s KILL tandem-membership` on the holder: systemd restarts it
/// (Restart=on-failure) within dead_after, so the peer sees a restart, not a death, and the
/// agent keeps the IP (not BindsTo=): nothing moves.
fn kill_membership_on_the_holder(d: &Droplets) {
    let m = d.machine("primary");
    let before = m.show(MEMBERSHIP);
    let audit_from = d.audit().len();
    let at = Instant::now();
    m.ok("systemctl kill -s KILL tandem-membership")
        .expect("systemctl kill");
    wait_restarted(
        m,
        MEMBERSHIP,
        0,
        &before["MainPID"],
        Duration::from_secs(20),
    );
    let restarted = at.elapsed();
    let view = wait_settled_view(d, "primary");
    let audit = d.audit();
    let moves = audit_since(&audit, audit_from, "holder");
    println!(
        "kill -9 of membership on the holder: active again {restarted:.1?} later \
         (RestartSec=100ms), view right {view:.1?} after that; IP moves: {}",
        moves.len()
    );
    assert!(moves.is_empty(), "the IP moved: {moves:?}");
    let seen = status(d.machine("secondary")).expect("status on the secondary");
    assert!(
        events(&seen, "node_up", "primary").any(|e| e["new_incarnation"] == true),
        "the secondary saw the primary's membership restart: {seen}"
    );
    assert!(
        events(&seen, "node_dead", "primary").all(|e| e["reason"] == "left"),
        "the secondary declared the primary dead: {seen}"
    );
}

/// The membership events of `kind` about `node` in a status.
fn events<'a>(status: &'a Value, kind: &'a str, node: &'a str) -> impl Iterator<Item = &'a Value> {
    status["membership"]["recent_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |e| e["event"] == kind && e["node"] == node)
}

/// `systemctl restart tandem-resource-agent` on the holder: no IP move and no write to the
/// API. The reads the restarted agent makes (it confirms the IP it held is still its own,
/// and its first readiness check) are printed.
fn restart_the_agent_on_the_holder(d: &Droplets) {
    let m = d.machine("primary");
    let before = m.show(AGENT);
    let audit_from = d.audit().len();
    let at = Instant::now();
    m.ok("systemctl restart tandem-resource-agent")
        .expect("systemctl restart");
    let restarted = at.elapsed();
    assert_ne!(
        m.show(AGENT)["MainPID"],
        before["MainPID"],
        "a new agent runs"
    );
    let view = wait_settled_view(d, "primary");
    let audit = d.audit();
    let requests = audit_since(&audit, audit_from, "request");
    let moves = audit_since(&audit, audit_from, "holder");
    let calls: Vec<String> = requests
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap_or("?"),
                r["path"].as_str().unwrap_or("?")
            )
        })
        .collect();
    println!(
        "systemctl restart tandem-resource-agent on the holder: {restarted:.1?}, view right \
         {view:.1?} later; IP moves: {}; API calls: {calls:?}",
        moves.len()
    );
    assert!(moves.is_empty(), "the IP moved: {moves:?}");
    assert!(
        requests.iter().all(|r| r["method"] == "GET"),
        "the restarted agent wrote to the API: {calls:?}"
    );
}

/// A frozen membership daemon (SIGSTOP) stops sending WATCHDOG=1: systemd kills it after
/// WatchdogSec and starts it again; the peer saw it die and come back; the IP stays.
fn watchdog_restarts_a_frozen_membership(d: &Droplets) {
    let m = d.machine("secondary");
    let before = m.show(MEMBERSHIP);
    let audit_from = d.audit().len();
    let at = Instant::now();
    m.ok(&format!("kill -STOP {}", before["MainPID"]))
        .expect("SIGSTOP");
    wait_restarted(
        m,
        MEMBERSHIP,
        0,
        &before["MainPID"],
        Duration::from_secs(30),
    );
    let restarted = at.elapsed();
    let journal = m
        .ok("journalctl -b -o cat -u tandem-membership | grep -i 'watchdog timeout'")
        .expect("the watchdog timeout in the journal");
    let view = wait_settled_view(d, "primary");
    let audit = d.audit();
    let moves = audit_since(&audit, audit_from, "holder");
    println!(
        "SIGSTOP of membership on the secondary: {:?}; active again {restarted:.1?} after the \
         freeze, view right {view:.1?} later; IP moves: {}",
        journal.trim(),
        moves.len()
    );
    assert!(moves.is_empty(), "the IP moved: {moves:?}");
    let seen = status(d.machine("primary")).expect("status on the primary");
    assert!(
        events(&seen, "node_dead", "secondary").any(|e| e["reason"] == "silent"),
        "the primary saw the frozen secondary die: {seen}"
    );
    assert!(
        events(&seen, "node_up", "secondary").any(|e| e["new_incarnation"] == true),
        "the primary saw the secondary's membership restart: {seen}"
    );
}

/// The curl loop's period (the tutorial sleeps 1 s; finer shows the gap).
const CURL_PERIOD: Duration = Duration::from_millis(200);

/// The answers went primary, then secondary, then primary again, with no wrong answer and
/// no other gap than the failover's and the failback's.
fn check_curl_loop(report: &tandem_tests::cluster::ProbeReport, off_at: Instant) {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for s in &report.samples {
        let who = if s.ok() {
            s.body.clone()
        } else {
            "(no answer)".into()
        };
        match runs.last_mut() {
            Some((w, n)) if *w == who => *n += 1,
            _ => runs.push((who, 1)),
        }
    }
    println!(
        "curl loop, every {CURL_PERIOD:?}: {runs:?}; longest gap {:.1?}",
        report.longest_gap
    );
    let droplets: Vec<&str> = runs
        .iter()
        .filter(|(w, _)| w.starts_with("Droplet: "))
        .map(|(w, _)| w.split(',').next().unwrap_or_default())
        .collect();
    assert_eq!(
        droplets,
        ["Droplet: primary", "Droplet: secondary", "Droplet: primary"],
        "answers in order: {runs:?}"
    );
    let first_secondary = report
        .samples
        .iter()
        .find(|s| s.body.starts_with("Droplet: secondary"))
        .map(|s| s.at.duration_since(off_at));
    println!("first answer from the secondary {first_secondary:.1?} after poweroff");
}

/// On poweroff the agent stopped before membership (the units' After= order, reversed).
fn check_stop_order(m: &Machine) {
    let log = m
        .ok("journalctl -b -1 -o cat _PID=1 | grep -E '^(Stopping|Stopped) tandem-'")
        .expect("journal of the boot before");
    println!("primary's shutdown:\n{log}");
    let lines: Vec<&str> = log.lines().collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in the previous boot's journal:\n{log}"))
    };
    assert!(
        at("Stopped tandem-resource-agent") < at("Stopping tandem-membership"),
        "the agent stops before membership starts stopping"
    );
}

const MEMBERSHIP: &str = "tandem-membership.service";
const AGENT: &str = "tandem-resource-agent.service";

/// Under systemd, on both machines: both units active through Type=notify with the watchdog
/// armed, each daemon as its own user, the sockets' owners and modes as documented (group
/// tandem reads, tandem-admin also changes), and the token readable by the agent's user
/// only, as its credential, and in no log.
fn check_units(d: &Droplets, token: &str) {
    for m in &d.machines {
        for (unit, user) in [(MEMBERSHIP, "tandem"), (AGENT, "tandem-agent")] {
            let p = m.show(unit);
            let got: Vec<&str> = [
                "ActiveState",
                "SubState",
                "Type",
                "WatchdogUSec",
                "NRestarts",
            ]
            .iter()
            .map(|k| p.get(*k).map_or("?", String::as_str))
            .collect();
            assert_eq!(
                got,
                ["active", "running", "notify", "10s", "0"],
                "{}: {unit}: ActiveState SubState Type WatchdogUSec NRestarts",
                m.name
            );
            let pid = &p["MainPID"];
            let runs_as = m.ok(&format!("stat -c %U /proc/{pid}")).expect("stat");
            assert_eq!(runs_as.trim(), user, "{}: {unit} runs as", m.name);
        }
        let sockets = m
            .ok("stat -c '%n %U %G %a' /run/tandem/membership.sock /run/tandem/agent.sock")
            .expect("sockets");
        assert_eq!(
            sockets.trim(),
            "/run/tandem/membership.sock tandem tandem 660\n\
             /run/tandem/agent.sock tandem-agent tandem 660",
            "{}: socket owner, group, mode",
            m.name
        );
        // README, "Operating": reading needs the tandem group; changes need root or
        // tandem-admin (`ipctl online` of a node that is online changes nothing).
        let as_user = |user: &str, cmd: &str| {
            m.run(&format!(
                "setpriv --reuid={user} --regid={user} --init-groups {cmd}"
            ))
            .expect("setpriv")
        };
        m.ok("useradd --groups tandem alice && useradd --groups tandem,tandem-admin bob")
            .expect("useradd");
        let read = as_user("alice", "ipctl status");
        assert!(
            read.status.success(),
            "{}: group tandem reads status: {read:?}",
            m.name
        );
        let denied = as_user("alice", "ipctl online");
        assert!(
            !denied.status.success(),
            "{}: group tandem alone must not change state",
            m.name
        );
        let admin = as_user("bob", "ipctl online");
        assert!(
            admin.status.success(),
            "{}: tandem-admin changes state: {admin:?}",
            m.name
        );

        let credential = "/run/credentials/tandem-resource-agent.service/do-token";
        let agent = as_user("tandem-agent", &format!("cat {credential}"));
        assert!(
            agent.status.success() && agent.stdout == token.as_bytes(),
            "{}: the agent's user reads the token as its credential: {}",
            m.name,
            String::from_utf8_lossy(&agent.stderr)
        );
        for (user, file) in [
            ("tandem", credential),
            ("tandem", "/etc/tandem/do-token"),
            ("tandem-agent", "/etc/tandem/do-token"),
            ("alice", credential),
        ] {
            let out = as_user(user, &format!("cat {file}"));
            assert!(
                !out.status.success() && out.stdout.is_empty(),
                "{}: {user} must not read {file}",
                m.name
            );
        }
        let leaks = m
            .run(&format!("journalctl -b --no-pager | grep -c -F '{token}'"))
            .expect("journal");
        assert_eq!(
            String::from_utf8_lossy(&leaks.stdout).trim(),
            "0",
            "{}: the token appears in the journal",
            m.name
        );
    }
}

/// `systemd-analyze security` of both units, printed in full with the exposure of each as
/// systemd rates it (`1.5 OK`). Each must be "OK" or better (the aim) and no worse than what
/// the installed unit's own comment states (`rates this unit 1.5 OK`): a setting weakened
/// without saying so fails here.
fn check_security(d: &Droplets) -> Vec<(String, String)> {
    let m = &d.machines[0];
    let mut levels = Vec::new();
    for unit in [MEMBERSHIP, AGENT] {
        let out = m
            .run(&format!("systemd-analyze security --no-pager {unit}"))
            .expect("systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("systemd-analyze security {unit}:\n{text}");
        let level = text
            .lines()
            .find_map(|l| l.split_once(&format!("exposure level for {unit}: ")))
            .map(|(_, level)| level.trim().to_owned())
            .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
        println!("exposure of {unit}: {level}");
        let (measured, word) = exposure(&level).unwrap_or_else(|| panic!("exposure {level:?}"));
        assert!(
            ["OK", "SAFE", "PERFECT"].contains(&word),
            "{unit}: exposure {level}, not OK or better"
        );
        let file = m
            .path(&format!("/lib/systemd/system/{unit}"))
            .expect("path");
        let stated = std::fs::read_to_string(&file).expect("the installed unit");
        let stated = stated
            .split_once("rates this unit ")
            .and_then(|(_, rest)| exposure(rest))
            .unwrap_or_else(|| panic!("{unit} states no `rates this unit N.N LEVEL`"));
        assert!(
            measured <= stated.0,
            "{unit}: exposure {level}, worse than the unit's comment says ({} {})",
            stated.0,
            stated.1
        );
        levels.push((unit.to_owned(), level));
    }
    levels
}

/// `1.5 OK` (maybe followed by more text) as tenths and the level's word.
fn exposure(text: &str) -> Option<(u32, &str)> {
    let mut words = text.split_whitespace();
    let (whole, tenth) = words.next()?.split_once('.')?;
    let tenths = whole.parse::<u32>().ok()? * 10 + tenth.parse::<u32>().ok()?;
    let word = words
        .next()?
        .trim_matches(|c: char| !c.is_ascii_alphabetic());
    Some((tenths, word))
}
