//! A cluster on one machine: the emulator as the provider, and per node the real
//! `tandem-membership` and `tandem-resource-agent` binaries as separate processes.
//!
//! Used by `ipctl demo` and by the test kit's end-to-end suites (`tests/tests/e2e_*.rs`), which
//! can put each node's membership daemon on a network of its own ([`Network`]).
//! [`Cluster::start`] writes `cluster.yaml`, the cluster key (0600) and one API token per node
//! (0600, handed to the agent through `$CREDENTIALS_DIRECTORY` so each node can have its token
//! revoked on its own) into a directory, starts the emulator in process with one droplet and
//! one tutorial web server per member node, then the daemons. Each node's processes run with
//! the node's directory as working directory, so relative paths in exec commands (health
//! flags, order logs) are per node while the YAML stays identical on every node.
//!
//! Every process is started by the launcher, addressed by its PID only, and killed on drop.
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use rand::Rng;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use tandem_proto::agent::v1 as apb;
use tandem_proto::agent::v1::agent_client::AgentClient;
use tandem_proto::membership::v1 as mpb;
use tandem_proto::membership::v1::membership_client::MembershipClient;
use tokio::time::Instant;

use crate::Emulator;

mod binaries;
mod fence;
mod launch;
mod network;
pub mod probe;
mod query;
pub mod web;
mod yaml;

pub use binaries::{Binaries, emulator_for_tests, ipctl_for_tests};
pub use fence::FenceSpec;
pub use network::{MakeNetwork, Network, NetworkFactory};
pub use probe::{ProbeReport, Prober};
use query::call;
pub use query::wait_for;

/// The reserved IP of every launched cluster (loopback: only a name inside the emulator).
pub const RESERVED_IP: &str = "127.0.0.100";
/// The reserved IPv6 of a dual-stack cluster ([`Spec::ipv6`]; documentation prefix).
pub const RESERVED_IPV6: &str = "2001:db8:0:1::100";
/// Name of the resource group holding the reserved IP.
pub const GROUP: &str = "floatip";
/// Droplet ids are this plus the node's index.
pub const FIRST_DROPLET: u64 = 3_164_444;
/// How often a launch is retried when a daemon could not bind the port picked for it
/// (another process took it between the probe and the daemon's bind).
const LAUNCH_ATTEMPTS: usize = 3;
/// Limit for a node's daemons to serve their sockets after being started.
const SOCKET_WAIT: Duration = Duration::from_secs(20);
/// Limit of one gRPC call to a daemon (a SIGSTOPped daemon never answers).
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// What to launch.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Member nodes, in configured order; each gets a droplet, a web server and both daemons.
    pub members: Vec<String>,
    /// A witness node: membership only.
    pub witness: Option<String>,
    pub interval: Duration,
    pub warn_after: Duration,
    pub dead_after: Duration,
    pub init_dead: Duration,
    /// Preferred node of the group (default: the first member).
    pub prefer: Option<String>,
    /// `failback: auto` (default) or manual.
    pub failback_auto: bool,
    /// More agents of the group after the reserved IP, as YAML list items (`- lsb: /x`).
    pub extra_agents: Vec<String>,
    /// Health checks, as YAML list items (run in each node's directory).
    pub health: Vec<String>,
    /// Monitor interval of the reserved-ip agent.
    pub monitor_interval: Duration,
    /// Leave the reserved-ip agent's `timeout` and `monitor_interval` keys out of the YAML so
    /// the documented defaults apply (60 s, 10 s; [`Spec::monitor_interval`] is then unused),
    /// for measurements at the defaults. Off by default: the suites want a 1 s monitor.
    pub agent_defaults: bool,
    /// Time until an emulator action completes.
    pub action_delay: Duration,
    /// Overrides the agents' readiness probe interval (default: the daemon's, 1 minute).
    pub readiness_interval: Option<Duration>,
    /// The preferred droplet holds the IP at the start, as after the tutorial's first
    /// assign (default); else nobody does and the first holder's start assigns it.
    pub ip_held_at_start: bool,
    /// Run each node's membership daemon on a network of its own (the test kit's network
    /// namespaces) so tests can partition nodes; the agents stay outside and reach it over
    /// the Unix socket. `None` (default): every node binds a random loopback address.
    pub network: Option<NetworkFactory>,
    /// Links between the nodes' networks with [`Spec::network`] (default 1): each node gets
    /// one membership address per link, so tests can cut one link and keep the others.
    pub links: usize,
    /// Where the daemons' binaries are.
    pub binaries: Binaries,
    /// `RUST_LOG` of the daemons.
    pub log_filter: String,
    /// A `fencing:` section (the first member names its droplet with `provider_id`, the
    /// others are looked up by name); `None` (default): no fencing.
    pub fencing: Option<FenceSpec>,
    /// Dual stack: the group also holds the reserved IPv6 [`RESERVED_IPV6`], after the IPv4
    /// (default: IPv4 only).
    pub ipv6: bool,
    /// More reserved IPs, held at the start like the first (default: none), for an operator
    /// with many: in the one group after its own, or each in a group of its own.
    pub more_ips: Vec<IpAddr>,
    /// Each of [`Spec::more_ips`] in a group of its own (`floatip-2`, `floatip-3`, ...,
    /// preferring the same node) instead of all in the one group.
    pub group_per_ip: bool,
    /// Every node reads the same API token, as when one token file is copied to each
    /// (default: one token per node).
    pub shared_token: bool,
    /// With [`Spec::ipv6`]: list the IPv6's agent before the IPv4's (the order the group's
    /// records and errors name them in; consecutive reserved IPs start together).
    pub ipv6_first: bool,
    /// Both daemons serve their Prometheus endpoint on a loopback port of their own
    /// (`metrics: 127.0.0.1:0`); [`Cluster::metrics_url`] finds it in the daemon's log.
    pub metrics: bool,
    /// The emulator's rate limits per token; `per_hour` is also what its `ratelimit-limit`
    /// header advertises (default DigitalOcean's documented 250 a minute, 5,000 an hour).
    pub rate_limit: crate::RateLimitConfig,
}

impl Spec {
    /// Two members (`primary`, `secondary`) with the fast timing of the end-to-end suites.
    pub fn fast(binaries: Binaries) -> Spec {
        Spec {
            members: vec!["primary".into(), "secondary".into()],
            witness: None,
            interval: Duration::from_millis(50),
            warn_after: Duration::from_millis(250),
            dead_after: Duration::from_millis(500),
            init_dead: Duration::from_secs(3),
            prefer: None,
            failback_auto: true,
            extra_agents: Vec::new(),
            health: Vec::new(),
            monitor_interval: Duration::from_secs(1),
            agent_defaults: false,
            action_delay: Duration::from_millis(100),
            readiness_interval: None,
            ip_held_at_start: true,
            network: None,
            links: 1,
            binaries,
            log_filter: "info".into(),
            fencing: None,
            ipv6: false,
            more_ips: Vec::new(),
            group_per_ip: false,
            shared_token: false,
            ipv6_first: false,
            metrics: false,
            rate_limit: crate::RateLimitConfig::default(),
        }
    }

    /// Two members with the documented default timing (100ms / 1s), as the demo shows it.
    pub fn defaults(binaries: Binaries) -> Spec {
        Spec {
            interval: Duration::from_millis(100),
            warn_after: Duration::from_millis(500),
            dead_after: Duration::from_secs(1),
            init_dead: Duration::from_secs(10),
            action_delay: Duration::from_millis(200),
            ..Spec::fast(binaries)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Binaries(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("network: {0}")]
    Network(String),
    #[error("emulator: {0}")]
    Emulator(#[from] crate::StartError),
    #[error("{node} {daemon}: {reason}\n--- log ---\n{log}")]
    Daemon {
        node: String,
        daemon: Daemon,
        reason: String,
        log: String,
    },
}

/// A random loopback address (all of 127.0.0.0/8 reaches `lo`) with a port the kernel picked
/// for a probe socket that is closed again; a random address makes a collision with another
/// test's port unlikely, and [`Cluster::start`] retries if it happens anyway.
pub fn free_loopback() -> std::io::Result<SocketAddr> {
    let mut rng = rand::rng();
    let ip = [
        127,
        rng.random_range(1..255),
        rng.random(),
        rng.random_range(1..255),
    ];
    std::net::UdpSocket::bind(SocketAddr::from((ip, 0)))?.local_addr()
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// Which of a node's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Membership,
    Agent,
}

impl std::fmt::Display for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Daemon::Membership => "tandem-membership",
            Daemon::Agent => "tandem-resource-agent",
        })
    }
}

/// One node of the cluster.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub witness: bool,
    /// The node's directory (working directory of its processes, credentials, logs).
    pub dir: PathBuf,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub address: SocketAddr,
    /// Membership addresses, one per link (`address` is the first).
    pub addresses: Vec<SocketAddr>,
    /// Droplet id (members only).
    pub droplet: Option<u64>,
    /// The node's API token (members only).
    pub token: Option<String>,
    /// The node's fencing token (members, with [`Spec::fencing`]).
    pub fence_token: Option<String>,
    membership: Option<Child>,
    agent: Option<Child>,
    /// Starts of each daemon so far; each start gets its own log file.
    starts: [u32; 2],
}

impl Node {
    fn slot(&mut self, d: Daemon) -> &mut Option<Child> {
        match d {
            Daemon::Membership => &mut self.membership,
            Daemon::Agent => &mut self.agent,
        }
    }

    fn log_path(&self, d: Daemon, n: u32) -> PathBuf {
        self.dir.join(format!("{d}.{n}.log"))
    }
}

/// A holder change recorded by the emulator.
#[derive(Debug, Clone)]
pub struct HolderChange {
    /// The address that moved (the IPv4 or, in a dual-stack cluster, the IPv6).
    pub ip: Option<IpAddr>,
    pub at: SystemTime,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub cause: String,
}

/// A running cluster. Dropping it kills every process it started.
pub struct Cluster {
    pub spec: Spec,
    dir: Option<tempfile::TempDir>,
    pub path: PathBuf,
    pub config: PathBuf,
    pub emulator: Emulator,
    pub nodes: Vec<Node>,
    pub ip: IpAddr,
    /// The reserved IPv6 of a dual-stack cluster ([`Spec::ipv6`]).
    pub ipv6: Option<IpAddr>,
    /// Base URL of the reserved IP's HTTP front.
    pub front: String,
    pub audit_log: PathBuf,
    /// Web servers of the member nodes, in node order.
    webs: Vec<web::WebServer>,
    /// The networks of the membership daemons (with [`Spec::network`]); dropped after the
    /// processes are killed.
    pub net: Option<Box<dyn Network>>,
    /// The daemons of each droplet, for the emulator's power-off.
    pids: fence::Pids,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            for c in [n.agent.as_mut(), n.membership.as_mut()]
                .into_iter()
                .flatten()
            {
                // A stopped process still dies of SIGKILL.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Cluster {
    /// Keeps the directory after the cluster is dropped (for `--keep-running` and debugging).
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(d) = self.dir.take() {
            return d.keep();
        }
        self.path.clone()
    }

    pub fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn socket(&self, i: usize, d: Daemon) -> PathBuf {
        self.nodes[i].run_dir.join(match d {
            Daemon::Membership => "membership.sock",
            Daemon::Agent => "agent.sock",
        })
    }

    /// Starts one daemon of node `i` (again), logging to a new file.
    pub fn spawn(&mut self, i: usize, d: Daemon) -> Result<u32, LaunchError> {
        let (bin, k) = match d {
            Daemon::Membership => (self.spec.binaries.membership.clone(), 0),
            Daemon::Agent => (self.spec.binaries.agent.clone(), 1),
        };
        let config = self.config.clone();
        let filter = self.spec.log_filter.clone();
        let readiness = self.spec.readiness_interval;
        let n = &mut self.nodes[i];
        if n.slot(d).is_some() {
            return Err(LaunchError::Daemon {
                node: n.name.clone(),
                daemon: d,
                reason: "already running".into(),
                log: String::new(),
            });
        }
        n.starts[k] += 1;
        let log_path = n.log_path(d, n.starts[k]);
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("creating {}", log_path.display())))?;
        let mut cmd = match (&self.net, d) {
            (Some(net), Daemon::Membership) => net.command(i, &bin),
            _ => Command::new(&bin),
        };
        cmd.arg("--config")
            .arg(&config)
            .args(["--node", &n.name])
            .arg("--run-dir")
            .arg(&n.run_dir)
            .arg("--state-dir")
            .arg(&n.state_dir)
            .current_dir(&n.dir)
            .env("RUST_LOG", filter)
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET")
            .env("CREDENTIALS_DIRECTORY", &n.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(r) = readiness {
            cmd.env(
                "TANDEM_AGENT_READINESS_INTERVAL_MS",
                r.as_millis().to_string(),
            );
        }
        let child = cmd
            .spawn()
            .map_err(io(format!("starting {}", bin.display())))?;
        let pid = child.id();
        tracing::info!(node = %n.name, daemon = %d, pid, "started");
        *n.slot(d) = Some(child);
        self.note_pids(i);
        Ok(pid)
    }

    /// Cuts node `i` off the others (every datagram of its membership dropped both ways).
    pub fn partition(&self, i: usize) -> Result<SystemTime, LaunchError> {
        match &self.net {
            Some(net) => {
                net.partition(i).map_err(LaunchError::Network)?;
                Ok(SystemTime::now())
            }
            None => Err(LaunchError::Network("partitions need Spec::network".into())),
        }
    }

    /// Removes every partition.
    pub fn heal(&self) -> Result<SystemTime, LaunchError> {
        match &self.net {
            Some(net) => {
                net.heal().map_err(LaunchError::Network)?;
                Ok(SystemTime::now())
            }
            None => Err(LaunchError::Network("partitions need Spec::network".into())),
        }
    }

    /// Starts a daemon again and waits until it serves its socket.
    pub async fn restart(&mut self, i: usize, d: Daemon) -> Result<u32, LaunchError> {
        let pid = self.spawn(i, d)?;
        self.wait_serving(i, d).await?;
        Ok(pid)
    }

    pub fn pid(&self, i: usize, d: Daemon) -> Option<u32> {
        let n = &self.nodes[i];
        match d {
            Daemon::Membership => n.membership.as_ref(),
            Daemon::Agent => n.agent.as_ref(),
        }
        .map(Child::id)
    }

    /// SIGKILL of a daemon this cluster started (and reaps it); returns when it happened.
    pub fn kill9(&mut self, i: usize, d: Daemon) -> SystemTime {
        if let Some(mut c) = self.nodes[i].slot(d).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        SystemTime::now()
    }

    /// Stops a daemon as its service manager would (SIGTERM, so it shuts down cleanly) and
    /// reaps it; SIGKILL if it is still running after `limit`. Returns when it exited.
    pub async fn terminate(&mut self, i: usize, d: Daemon, limit: Duration) -> SystemTime {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let Some(mut c) = self.nodes[i].slot(d).take() else {
            return SystemTime::now();
        };
        if let Ok(p) = i32::try_from(c.id()) {
            let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
        }
        let deadline = Instant::now() + limit;
        while matches!(c.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                tracing::warn!(node = %self.nodes[i].name, daemon = %d, "no exit after SIGTERM; SIGKILL");
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        SystemTime::now()
    }

    /// The whole node goes down as a crashed droplet would: SIGKILL of both daemons and its
    /// web server stops answering. Returns when it happened.
    pub fn crash_node(&mut self, i: usize) -> SystemTime {
        self.set_web(i, false);
        self.kill9(i, Daemon::Agent);
        self.kill9(i, Daemon::Membership)
    }

    /// Boots a crashed (or powered-off) node again: its droplet powered on, web server,
    /// membership, agent.
    pub async fn boot_node(&mut self, i: usize) -> Result<SystemTime, LaunchError> {
        self.power_on(i);
        self.set_web(i, true);
        self.restart(i, Daemon::Membership).await?;
        self.restart(i, Daemon::Agent).await?;
        Ok(SystemTime::now())
    }

    /// Makes node `i`'s web server answer (or not).
    pub fn set_web(&self, i: usize, up: bool) {
        let k = self.nodes[..i].iter().filter(|n| !n.witness).count();
        if let Some(w) = self.webs.get(k) {
            w.set_up(up);
        }
    }

    /// SIGSTOP (`stop = true`) or SIGCONT of a daemon this cluster started.
    pub fn freeze(&mut self, i: usize, d: Daemon, stop: bool) -> SystemTime {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        if let Some(pid) = self.pid(i, d) {
            let sig = if stop {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            if let Ok(p) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(p), sig);
            }
        }
        SystemTime::now()
    }

    /// The current log of a daemon (its latest start).
    pub fn log(&self, i: usize, d: Daemon) -> String {
        let n = &self.nodes[i];
        let k = match d {
            Daemon::Membership => 0,
            Daemon::Agent => 1,
        };
        std::fs::read_to_string(n.log_path(d, n.starts[k].max(1))).unwrap_or_default()
    }

    /// The last lines of every daemon's current log, for a failure message.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for d in [Daemon::Membership, Daemon::Agent] {
                if n.witness && d == Daemon::Agent {
                    continue;
                }
                let log = self.log(i, d);
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(25)..].join("\n");
                let _ = write!(out, "\n--- {} {d} ---\n{tail}\n", n.name);
            }
        }
        out
    }

    /// Waits (bounded) until the daemon answers on its socket; fails at once if it exited.
    pub async fn wait_serving(&mut self, i: usize, d: Daemon) -> Result<(), LaunchError> {
        let deadline = Instant::now() + SOCKET_WAIT;
        let sock = self.socket(i, d);
        loop {
            let exited = self.nodes[i]
                .slot(d)
                .as_mut()
                .map(|c| c.try_wait().ok().flatten());
            match exited {
                None => {
                    return Err(self.daemon_error(i, d, "not running".into()));
                }
                Some(Some(status)) => {
                    *self.nodes[i].slot(d) = None;
                    return Err(self.daemon_error(i, d, format!("exited with {status}")));
                }
                Some(None) => {}
            }
            if let Ok(ch) = tandem_proto::uds::connect(&sock).await {
                let ok = match d {
                    Daemon::Membership => {
                        call(MembershipClient::new(ch).status(mpb::StatusRequest {}))
                            .await
                            .is_some()
                    }
                    Daemon::Agent => call(AgentClient::new(ch).status(apb::StatusRequest {}))
                        .await
                        .is_some(),
                };
                if ok {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.daemon_error(
                    i,
                    d,
                    format!("no answer on {} within {SOCKET_WAIT:?}", sock.display()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn daemon_error(&self, i: usize, d: Daemon, reason: String) -> LaunchError {
        LaunchError::Daemon {
            node: self.nodes[i].name.clone(),
            daemon: d,
            reason,
            log: self.log(i, d),
        }
    }
}
