//! Side-by-side benchmark of Tandem, keepalived and Heartbeat as two-node clusters in
//! network namespaces (see `tandem_tests::netns`), with the same links, the same kill
//! (SIGKILL of every process of the primary) and the same resource: a script that appends a
//! wall-clock timestamp to a file when the node takes the resource over.
//!
//! Run as root: `tandem-bench` (about 15 minutes) or `tandem-bench --quick`.
//! keepalived and Heartbeat are not installed by this program; it says how when missing.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::Parser;
use tandem_tests::cluster::Binaries;
use tandem_tests::netns::Net;
use tandem_tests::netns::tandem::{TandemNet, Timing};
use tandem_tests::procstat::{self, CpuMeter};

#[derive(Debug, Parser)]
#[command(about = "Failover benchmark: Tandem vs keepalived vs Heartbeat in network namespaces")]
struct Args {
    /// Failover/failback runs per system and timing.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds of 20% random loss per system and timing (false failovers).
    #[arg(long, default_value_t = 60)]
    loss_secs: u64,
    /// Window of the idle measurement (CPU, wake-ups), seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    idle_secs: u64,
    /// Short run: 2 runs, 15 s of loss.
    #[arg(long)]
    quick: bool,
    /// Systems to measure (default: every one installed).
    #[arg(long, value_delimiter = ',', value_parser = ["tandem", "keepalived", "heartbeat"])]
    only: Vec<String>,
    /// Directory holding tandem-membership and tandem-resource-agent (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Tandem's fast row as INTERVAL/DEAD_AFTER (e.g. `20ms/200ms`; default 10ms/100ms), to
    /// try other timings; warn_after is half of dead_after.
    #[arg(long, value_parser = parse_fast)]
    tandem_fast: Option<Timing>,
}

fn parse_fast(s: &str) -> Result<Timing, String> {
    let (i, d) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected INTERVAL/DEAD_AFTER, e.g. 20ms/200ms"))?;
    let parse = |x: &str| humantime::parse_duration(x.trim()).map_err(|e| format!("{x:?}: {e}"));
    let (interval, dead_after) = (parse(i)?, parse(d)?);
    if interval.is_zero() || dead_after <= interval {
        return Err(format!(
            "{s:?}: dead_after must be longer than a non-zero interval"
        ));
    }
    Ok(Timing {
        interval,
        warn_after: dead_after / 2,
        dead_after,
        init_dead: TANDEM_FAST.init_dead,
    })
}

/// The fast Tandem timing of this run (`--tandem-fast`, else [`TANDEM_FAST`]).
static FAST: std::sync::OnceLock<Timing> = std::sync::OnceLock::new();

fn tandem_fast() -> Timing {
    *FAST.get_or_init(|| TANDEM_FAST)
}

/// Tandem's fast row: the fastest timing measured here with zero false failovers under 20%
/// loss (10ms/100ms: 0 in 60 s and 0 in 120 s; 20ms/200ms: 0 in 60 s twice). Ten beats per
/// dead window, as at the defaults (all ten lost: odds 0.2^10), and membership does not
/// count its own scheduling stalls as peer silence. Failover is about `dead_after` minus
/// half a beat plus a few milliseconds of the agent.
const TANDEM_FAST: Timing = Timing {
    interval: Duration::from_millis(10),
    warn_after: Duration::from_millis(50),
    dead_after: Duration::from_millis(100),
    init_dead: Duration::from_secs(5),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Tandem,
    Keepalived,
    Heartbeat,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tandem => "Tandem",
            Kind::Keepalived => "keepalived",
            Kind::Heartbeat => "Heartbeat",
        }
    }

    /// The timing in words, as configured below.
    fn timing(self, fast: bool) -> String {
        match (self, fast) {
            (Kind::Tandem, false) => "default 100ms/1s".into(),
            (Kind::Tandem, true) => {
                let t = tandem_fast();
                format!(
                    "fast {}ms/{}ms",
                    t.interval.as_millis(),
                    t.dead_after.as_millis()
                )
            }
            (Kind::Keepalived, false) => "default advert 1s".into(),
            (Kind::Keepalived, true) => "fast advert 0.1s".into(),
            (Kind::Heartbeat, false) => "sample 2s/30s".into(),
            (Kind::Heartbeat, true) => "fast 100ms/1s".into(),
        }
    }

    /// Everything configured for the row, so a reader can tell like from like.
    fn settings(self, fast: bool) -> String {
        match (self, fast) {
            (Kind::Tandem, _) => {
                let t = if fast { tandem_fast() } else { Timing::DEFAULT };
                let ms = |d: Duration| d.as_millis();
                format!(
                    "interval {}ms, warn_after {}ms, dead_after {}ms, init_dead {}ms{}; \
                     quorum two_node; one exec resource with `monitor_interval` and `timeout` \
                     unset (documented defaults 10s, 20s); readiness probe and RUST_LOG at the \
                     daemons' defaults (60s, info)",
                    ms(t.interval),
                    ms(t.warn_after),
                    ms(t.dead_after),
                    ms(t.init_dead),
                    if fast {
                        ""
                    } else {
                        " (the documented defaults)"
                    },
                )
            }
            (Kind::Keepalived, false) => {
                "VRRPv2, advert_int 1, unicast, priority 150/100 with preemption, \
                 notify scripts, -D --vrrp"
                    .into()
            }
            (Kind::Keepalived, true) => {
                "VRRPv3, advert_int 0.1, unicast, priority 150/100 with preemption, \
                 notify scripts, -D --vrrp"
                    .into()
            }
            (Kind::Heartbeat, false) => "keepalive 2, warntime 10, deadtime 30, initdead 60, \
                 ucast, crm no, auto_failback on, use_logd no"
                .into(),
            (Kind::Heartbeat, true) => "keepalive 100ms, warntime 500ms, deadtime 1, initdead 2, \
                 ucast, crm no, auto_failback on, use_logd no"
                .into(),
        }
    }

    /// How long a silent peer takes to be declared dead (bounds for the waits below).
    fn dead(self, fast: bool) -> Duration {
        match (self, fast) {
            (Kind::Tandem, false) => Duration::from_secs(1),
            (Kind::Tandem, true) => tandem_fast().dead_after,
            (Kind::Keepalived, false) => Duration::from_millis(3700),
            (Kind::Keepalived, true) => Duration::from_millis(400),
            (Kind::Heartbeat, false) => Duration::from_secs(30),
            (Kind::Heartbeat, true) => Duration::from_secs(1),
        }
    }
}

const HEARTBEAT: &str = "/usr/libexec/heartbeat/heartbeat";
const HEARTBEAT_OLD: &str = "/usr/lib/heartbeat/heartbeat";

fn heartbeat_binary() -> Option<&'static str> {
    [HEARTBEAT, HEARTBEAT_OLD, "/usr/sbin/heartbeat"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
}

fn keepalived_binary() -> Option<PathBuf> {
    ["/usr/sbin/keepalived", "/usr/local/sbin/keepalived"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A resource script shared by keepalived and Heartbeat: `start` records the time.
fn resource_script(node_dir: &Path) -> String {
    let d = node_dir.display();
    format!(
        "#!/bin/sh\n# Written by tandem-bench: the benchmark's resource.\ncase \"$1\" in\n  \
         start) date +%s.%N >> {d}/takeovers; touch {d}/running ;;\n  \
         stop) rm -f {d}/running ;;\n  \
         status) if [ -f {d}/running ]; then echo running; else echo stopped; fi ;;\nesac\nexit 0\n"
    )
}

fn write_exec(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// keepalived or Heartbeat: each node runs in its own pid, mount and UTS namespace inside its
/// network namespace, so a crash is one SIGKILL of that pid namespace's init.
struct Foreign {
    kind: Kind,
    fast: bool,
    net: Net,
    dir: tempfile::TempDir,
    /// `unshare` processes (parents of each node's pid-namespace init).
    launchers: [Option<u32>; 2],
}

impl Foreign {
    fn new(kind: Kind, fast: bool) -> anyhow::Result<Foreign> {
        let net = Net::new(2, 1)?;
        let dir = tempfile::Builder::new().prefix("tandem-bench-").tempdir()?;
        let f = Foreign {
            kind,
            fast,
            net,
            dir,
            launchers: [None, None],
        };
        for i in 0..2 {
            let nd = f.node_dir(i);
            std::fs::create_dir_all(&nd)?;
            write_exec(&nd.join("res"), &resource_script(&nd), 0o755)?;
            match kind {
                Kind::Keepalived => f.keepalived_config(i)?,
                Kind::Heartbeat => f.heartbeat_config(i)?,
                Kind::Tandem => bail!("Tandem runs through TandemNet"),
            }
        }
        Ok(f)
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}"))
    }

    fn keepalived_config(&self, i: usize) -> anyhow::Result<()> {
        let nd = self.node_dir(i);
        let me = self.net.hosts[i].addrs[0];
        let peer = self.net.hosts[1 - i].addrs[0];
        let res = nd.join("res");
        let conf = format!(
            "# Written by tandem-bench.\nglobal_defs {{\n  router_id ka{i}\n  script_user root\n{}}}\n\
             vrrp_instance bench {{\n  state {}\n  interface l0\n  virtual_router_id 51\n  \
             priority {}\n  advert_int {}\n  unicast_src_ip {me}\n  unicast_peer {{\n    {peer}\n  }}\n  \
             virtual_ipaddress {{\n    10.77.0.100/24\n  }}\n  notify_master \"{r} start\"\n  \
             notify_backup \"{r} stop\"\n  notify_fault \"{r} stop\"\n  notify_stop \"{r} stop\"\n}}\n",
            // Sub-second adverts exist only in VRRPv3.
            if self.fast { "  vrrp_version 3\n" } else { "" },
            if i == 0 { "MASTER" } else { "BACKUP" },
            if i == 0 { 150 } else { 100 },
            if self.fast { "0.1" } else { "1" },
            r = res.display()
        );
        std::fs::write(nd.join("keepalived.conf"), conf)?;
        Ok(())
    }

    fn heartbeat_config(&self, i: usize) -> anyhow::Result<()> {
        let nd = self.node_dir(i);
        // Private copies of what Heartbeat expects in /etc/ha.d, /var/lib/heartbeat and
        // /run/heartbeat, bind-mounted over them inside the node's mount namespace.
        for (from, to) in [
            ("/etc/ha.d", "ha.d"),
            ("/var/lib/heartbeat", "lib"),
            ("/run/heartbeat", "run/heartbeat"),
        ] {
            std::fs::create_dir_all(nd.join(to).parent().unwrap_or(&nd))?;
            let st = std::process::Command::new("cp")
                .args(["-a", from])
                .arg(nd.join(to))
                .status()?;
            if !st.success() {
                bail!("cp -a {from} failed");
            }
        }
        let peer = self.net.hosts[1 - i].addrs[0];
        let (keepalive, deadtime, warntime, initdead) = if self.fast {
            ("100ms", "1", "500ms", "2")
        } else {
            // The sample ha.cf's values, but initdead 60 instead of 120 to keep the run short.
            ("2", "30", "10", "60")
        };
        let cf = format!(
            "# Written by tandem-bench.\nlogfile {}/ha-log\nuse_logd no\nkeepalive {keepalive}\n\
             deadtime {deadtime}\nwarntime {warntime}\ninitdead {initdead}\nudpport 694\n\
             ucast l0 {peer}\nauto_failback on\nnode hb0\nnode hb1\ncrm no\n",
            nd.display()
        );
        std::fs::write(nd.join("ha.d/ha.cf"), cf)?;
        write_exec(
            &nd.join("ha.d/authkeys"),
            &format!(
                "auth 1\n1 sha1 {}\n",
                (0..24)
                    .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
                    .collect::<String>()
            ),
            0o600,
        )?;
        // The key must be the same on both nodes: copy node 0's.
        if i == 1 {
            std::fs::copy(
                self.node_dir(0).join("ha.d/authkeys"),
                nd.join("ha.d/authkeys"),
            )?;
        }
        std::fs::write(nd.join("ha.d/haresources"), "hb0 benchres\n")?;
        write_exec(
            &nd.join("ha.d/resource.d/benchres"),
            &resource_script(&nd),
            0o755,
        )?;
        Ok(())
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let nd = self.node_dir(i);
        let script = match self.kind {
            Kind::Keepalived => format!(
                // keepalived is pid 1 of its namespace, so a pid file left by the killed
                // instance (also pid 1) would read as "already running".
                "rm -f {d}/keepalived.pid {d}/vrrp.pid && \
                 exec {} -n -l -D --vrrp -f {d}/keepalived.conf -p {d}/keepalived.pid -r {d}/vrrp.pid",
                keepalived_binary().context("keepalived missing")?.display(),
                d = nd.display()
            ),
            Kind::Heartbeat => format!(
                "hostname hb{i} && mount --bind {d}/ha.d /etc/ha.d && \
                 mount --bind {d}/lib /var/lib/heartbeat && mount -t tmpfs tmpfs /run && \
                 mkdir /run/heartbeat && mount --bind {d}/run/heartbeat /run/heartbeat && \
                 {hb} && exec sleep 1000000",
                hb = heartbeat_binary().context("heartbeat missing")?,
                d = nd.display()
            ),
            Kind::Tandem => bail!("Tandem runs through TandemNet"),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(nd.join("launch.log"))?;
        let mut cmd = self.net.hosts[i].command("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--uts",
            "--mount",
            "--kill-child",
            "sh",
            "-c",
            &script,
        ])
        .stdout(log.try_clone()?)
        .stderr(log);
        self.launchers[i] = Some(self.net.spawn(cmd)?);
        Ok(())
    }

    /// The pid-namespace init of node `i` (child of its `unshare`).
    fn init(&self, i: usize) -> Option<u32> {
        let l = self.launchers[i]?;
        std::fs::read_to_string(format!("/proc/{l}/task/{l}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Every process of the system in node `i`'s pid namespace: all of them for keepalived
    /// (its init is keepalived itself), all but the init for Heartbeat (there the init is the
    /// `sleep` that keeps the namespace alive once Heartbeat has daemonized).
    fn pids(&self, i: usize) -> Vec<u32> {
        let Some(init) = self.init(i) else {
            return Vec::new();
        };
        let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if (self.kind != Kind::Heartbeat || pid != init)
                && std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                    .ok()
                    .as_ref()
                    == Some(&ns)
            {
                out.push(pid);
            }
        }
        out
    }

    fn crash(&mut self, i: usize) -> SystemTime {
        let at = SystemTime::now();
        // SIGKILL of a pid namespace's init kills every process in it at once.
        if let Some(init) = self.init(i) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(l) = self.launchers[i].take() {
            self.net.kill9(l);
        }
        // The resource died with the node.
        let _ = std::fs::remove_file(self.node_dir(i).join("running"));
        at
    }
}

enum Cluster {
    Tandem(TandemNet),
    Foreign(Foreign),
}

impl Cluster {
    async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        match self {
            Cluster::Tandem(t) => Ok(t.start(i).await?),
            Cluster::Foreign(f) => f.start(i),
        }
    }

    fn crash(&mut self, i: usize) -> SystemTime {
        match self {
            Cluster::Tandem(t) => t.crash(i),
            Cluster::Foreign(f) => f.crash(i),
        }
    }

    fn net(&self) -> &Net {
        match self {
            Cluster::Tandem(t) => &t.net,
            Cluster::Foreign(f) => &f.net,
        }
    }

    fn takeovers(&self, i: usize) -> Vec<SystemTime> {
        match self {
            Cluster::Tandem(t) => t.takeovers(i),
            Cluster::Foreign(f) => std::fs::read_to_string(f.node_dir(i).join("takeovers"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<f64>().ok())
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s))
                .collect(),
        }
    }

    fn holding(&self, i: usize) -> bool {
        match self {
            Cluster::Tandem(t) => t.running(i),
            Cluster::Foreign(f) => f.node_dir(i).join("running").exists(),
        }
    }

    fn pids(&self, i: usize) -> Vec<u32> {
        match self {
            Cluster::Tandem(t) => t.pids(i),
            Cluster::Foreign(f) => f.pids(i),
        }
    }

    /// The end of node `i`'s logs, for notes about failures.
    fn log_tail(&self, i: usize) -> String {
        let text = match self {
            Cluster::Tandem(t) => t.log(i),
            Cluster::Foreign(f) => {
                let mut s =
                    std::fs::read_to_string(f.node_dir(i).join("launch.log")).unwrap_or_default();
                s.push_str(
                    &std::fs::read_to_string(f.node_dir(i).join("ha-log")).unwrap_or_default(),
                );
                s
            }
        };
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n    ")
    }
}

/// Polls `f` every 10 ms for at most `limit`.
async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Idle footprint of one node.
#[derive(Debug, Default, Clone)]
struct Idle {
    /// Percent of one core, all processes and threads of the node.
    cpu: f64,
    wakeups: f64,
    rss_mib: f64,
    /// The processes counted, as `ps` names them.
    processes: Vec<String>,
}

/// How often the idle measurement reads the counters: a thread that exits takes its
/// counters along, so at most this much of its time is lost.
const IDLE_SAMPLE: Duration = Duration::from_secs(1);

/// CPU and wake-ups from `/proc/PID/task/*/schedstat` of every process of each node, both
/// nodes over the same `window` (processes appearing in it are counted too), then RSS.
async fn idle_usage(c: &Cluster, window: Duration) -> anyhow::Result<Vec<Idle>> {
    let mut meters: Vec<CpuMeter> = (0..2).map(|_| CpuMeter::new()).collect();
    let sample = |meters: &mut Vec<CpuMeter>| -> anyhow::Result<()> {
        for (i, m) in meters.iter_mut().enumerate() {
            let pids = c.pids(i);
            if pids.is_empty() {
                bail!("idle measurement: node {i} has no processes");
            }
            m.sample(&pids)
                .with_context(|| format!("scheduler statistics of node {i}"))?;
        }
        Ok(())
    };
    sample(&mut meters)?;
    let t0 = tokio::time::Instant::now();
    let end = t0 + window;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep_until((tokio::time::Instant::now() + IDLE_SAMPLE).min(end)).await;
        sample(&mut meters)?;
    }
    let wall = t0.elapsed();
    let mut out = Vec::new();
    for (i, m) in meters.iter().enumerate() {
        let u = m.usage(wall);
        let now = c.pids(i);
        let rss: u64 = now
            .iter()
            .filter_map(|&p| procstat::memory(p).ok())
            .map(|m| m.rss)
            .sum();
        out.push(Idle {
            cpu: u.cpu_percent,
            wakeups: u.wakeups_per_sec,
            rss_mib: rss as f64 / 1024.0,
            processes: now.iter().map(|&p| procstat::command(p)).collect(),
        });
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct Row {
    failover: Vec<Duration>,
    failback: Vec<Duration>,
    false_failovers: Option<usize>,
    loss_secs: u64,
    both_held_in_partition: Option<bool>,
    unheld_after_heal: Option<Duration>,
    idle: Vec<Idle>,
    notes: Vec<String>,
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn stats(v: &[Duration]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut s = v.to_vec();
    s.sort();
    format!(
        "{}/{}/{}",
        secs(s[0]),
        secs(s[s.len() / 2]),
        secs(s[s.len() - 1])
    )
}

async fn build(kind: Kind, fast: bool, bins: &Binaries) -> anyhow::Result<Cluster> {
    Ok(match kind {
        Kind::Tandem => {
            let net = Net::new(2, 1)?;
            // The resource's monitor at its documented default, as every other setting but
            // the timing the row is about.
            Cluster::Tandem(TandemNet::with_monitor_interval(
                net,
                bins.clone(),
                &["primary", "secondary"],
                if fast { tandem_fast() } else { Timing::DEFAULT },
                None,
                true,
                None,
            )?)
        }
        k => Cluster::Foreign(Foreign::new(k, fast)?),
    })
}

/// Everything measured for one system at one timing.
async fn measure(
    kind: Kind,
    fast: bool,
    bins: &Binaries,
    runs: usize,
    loss_secs: u64,
    idle_secs: u64,
) -> anyhow::Result<Row> {
    let mut row = Row {
        loss_secs,
        ..Row::default()
    };
    let dead = kind.dead(fast);
    // Bounds: a start can take Heartbeat's initdead; a takeover a few dead times.
    let start_limit = Duration::from_secs(90);
    let move_limit = dead * 4 + Duration::from_secs(15);

    let mut c = build(kind, fast, bins).await?;
    c.start(0).await?;
    c.start(1).await?;
    if !wait_until(start_limit, || c.holding(0) && !c.holding(1)).await {
        bail!(
            "{} ({}): the primary never held the resource alone",
            kind.name(),
            kind.timing(fast)
        );
    }
    // Let start-up work (first probes, allocations) settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    row.idle = idle_usage(&c, Duration::from_secs(idle_secs)).await?;

    for run in 0..runs {
        let before = c.takeovers(1).len();
        let killed = c.crash(0);
        if !wait_until(move_limit, || c.takeovers(1).len() > before).await {
            row.notes
                .push(format!("run {run}: no takeover within {move_limit:?}"));
            break;
        }
        if let Some(t) = c.takeovers(1).last() {
            row.failover
                .push(t.duration_since(killed).unwrap_or_default());
        }
        let before0 = c.takeovers(0).len();
        let restarted = SystemTime::now();
        c.start(0).await?;
        if !wait_until(start_limit, || {
            c.takeovers(0).len() > before0 && c.holding(0) && !c.holding(1)
        })
        .await
        {
            row.notes.push(format!(
                "run {run}: no failback within {start_limit:?}; primary log:\n    {}",
                c.log_tail(0)
            ));
            break;
        }
        if let Some(t) = c.takeovers(0).last() {
            row.failback
                .push(t.duration_since(restarted).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // A full partition of the primary for three dead times, then heal.
    if c.holding(0) {
        c.net().partition(0)?;
        let mut both = false;
        let end = tokio::time::Instant::now() + dead * 3 + Duration::from_secs(2);
        while tokio::time::Instant::now() < end {
            both |= c.holding(0) && c.holding(1);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        row.both_held_in_partition = Some(both);
        c.net().heal()?;
        // Time with no holder in the window after the heal.
        let window = dead * 3 + Duration::from_secs(10);
        let end = tokio::time::Instant::now() + window;
        let mut unheld = Duration::ZERO;
        let step = Duration::from_millis(10);
        while tokio::time::Instant::now() < end {
            if !c.holding(0) && !c.holding(1) {
                unheld += step;
            }
            tokio::time::sleep(step).await;
        }
        row.unheld_after_heal = Some(unheld);
        // Settle back to the primary (failback) before the loss run.
        wait_until(start_limit, || c.holding(0) && !c.holding(1)).await;
    }

    if loss_secs > 0 && c.holding(0) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = c.takeovers(1).len();
        c.net().random_loss(20)?;
        tokio::time::sleep(Duration::from_secs(loss_secs)).await;
        c.net().heal()?;
        row.false_failovers = Some(c.takeovers(1).len() - before);
    }
    Ok(row)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(t) = args.tandem_fast {
        let _ = FAST.set(t);
    }
    if args.quick {
        args.runs = args.runs.min(2);
        args.loss_secs = args.loss_secs.min(15);
    }
    if let Some(why) = tandem_tests::netns::unavailable() {
        bail!("cannot create network namespaces: {why}");
    }
    if let Err(why) = procstat::available() {
        bail!("no per-thread scheduler statistics for the idle measurement: {why}");
    }
    let bins = Binaries::given_or_beside_this(
        args.bin_dir.as_deref(),
        "cargo build -p tandem-membership -p tandem-resource-agent --bins",
    )?;
    let mut kinds = vec![Kind::Tandem];
    if keepalived_binary().is_some() {
        kinds.push(Kind::Keepalived);
    } else {
        eprintln!("keepalived not found: apt-get install -y keepalived");
    }
    if heartbeat_binary().is_some() {
        kinds.push(Kind::Heartbeat);
    } else {
        eprintln!("heartbeat not found: apt-get install -y heartbeat");
    }
    if !args.only.is_empty() {
        kinds.retain(|k| args.only.iter().any(|o| o.eq_ignore_ascii_case(k.name())));
    }
    let mut rows = BTreeMap::new();
    for &kind in &kinds {
        for fast in [false, true] {
            eprintln!("measuring {} ({})", kind.name(), kind.timing(fast));
            let row =
                match measure(kind, fast, &bins, args.runs, args.loss_secs, args.idle_secs).await {
                    Ok(r) => r,
                    Err(e) => Row {
                        notes: vec![format!("failed: {e:#}")],
                        ..Row::default()
                    },
                };
            rows.insert((kind, fast), row);
        }
    }
    print!("{}", table(&rows, args.runs, args.idle_secs));
    Ok(())
}

fn table(rows: &BTreeMap<(Kind, bool), Row>, runs: usize, idle_secs: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| system | timing | failover s min/med/max (n={runs}) | failback s min/med/max | false failovers (20% loss) | both held in partition | unheld after heal s | idle CPU % per node ({idle_secs} s) | idle wake-ups/s per node | RSS MiB per node |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    let per_node = |r: &Row, f: &dyn Fn(&Idle) -> String| {
        if r.idle.is_empty() {
            return "-".to_owned();
        }
        r.idle.iter().map(f).collect::<Vec<_>>().join(" / ")
    };
    for ((kind, fast), r) in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            kind.timing(*fast),
            stats(&r.failover),
            stats(&r.failback),
            r.false_failovers
                .map(|n| format!("{n} in {} s", r.loss_secs))
                .unwrap_or_else(|| "-".into()),
            r.both_held_in_partition
                .map(|b| if b { "yes" } else { "no" }.to_owned())
                .unwrap_or_else(|| "-".into()),
            r.unheld_after_heal.map(secs).unwrap_or_else(|| "-".into()),
            per_node(r, &|i| format!("{:.3}", i.cpu)),
            per_node(r, &|i| format!("{:.1}", i.wakeups)),
            per_node(r, &|i| format!("{:.1}", i.rss_mib)),
        );
    }
    let _ = writeln!(
        out,
        "\nIdle: CPU time and wake-ups (timeslices) of every thread of every process of a \
         node, from /proc/PID/task/*/schedstat, both nodes over the same {idle_secs} s window."
    );
    for ((kind, fast), r) in rows {
        let _ = writeln!(
            out,
            "settings: {} ({}): {}",
            kind.name(),
            kind.timing(*fast),
            kind.settings(*fast)
        );
        for (i, idle) in r.idle.iter().enumerate() {
            let _ = writeln!(
                out,
                "  node {i} idle processes ({}): {}",
                idle.processes.len(),
                idle.processes.join("; ")
            );
        }
    }
    for ((kind, fast), r) in rows {
        for n in &r.notes {
            let _ = writeln!(out, "note: {} ({}): {n}", kind.name(), kind.timing(*fast));
        }
    }
    out
}
