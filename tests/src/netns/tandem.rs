//! Tandem daemons inside the hosts of a [`Net`]: `tandem-membership` on every host (one
//! address per link, port 694 in each namespace), optionally `tandem-resource-agent` with an
//! `exec` resource that records the time it was started (for failover measurements).
//!
//! The Unix sockets live in a temp dir on the shared filesystem, so the test process reaches
//! every daemon's gRPC socket whatever its network namespace.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tandem_proto::membership::v1 as pb;
use tandem_proto::membership::v1::membership_client::MembershipClient;

use super::{Net, NetnsError};
use crate::cluster::Binaries;

/// The heartbeat port inside every namespace (Heartbeat's 694; namespaces keep it private).
pub const PORT: u16 = 694;

/// Heartbeat timing written into the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    pub warn_after: Duration,
    pub dead_after: Duration,
    pub init_dead: Duration,
}

impl Timing {
    /// The documented defaults (DESIGN.md).
    pub const DEFAULT: Timing = Timing {
        interval: Duration::from_millis(100),
        warn_after: Duration::from_millis(500),
        dead_after: Duration::from_secs(1),
        init_dead: Duration::from_secs(10),
    };
    /// A fast setting for benchmarks: 30 ms beats, dead after 300 ms.
    pub const FAST: Timing = Timing {
        interval: Duration::from_millis(30),
        warn_after: Duration::from_millis(150),
        dead_after: Duration::from_millis(300),
        init_dead: Duration::from_secs(5),
    };
}

#[derive(Debug, thiserror::Error)]
pub enum TandemError {
    #[error(transparent)]
    Net(#[from] NetnsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{node}: {what}\n--- log ---\n{log}")]
    Daemon {
        node: String,
        what: String,
        log: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TandemError {
    let what = what.into();
    move |source| TandemError::Io { what, source }
}

/// A Tandem cluster on a [`Net`].
pub struct TandemNet {
    pub net: Net,
    pub names: Vec<String>,
    dir: tempfile::TempDir,
    bins: Binaries,
    membership: Vec<Option<u32>>,
    agent: Vec<Option<u32>>,
    with_agent: bool,
}

impl TandemNet {
    /// Writes the configuration: node `i` is `names[i]` on host `i`; `witness` names a
    /// witness node; with `resource`, an `exec` group preferring `names[0]` whose start
    /// appends a wall-clock timestamp to [`TandemNet::takeovers_file`], monitored every second.
    pub fn new(
        net: Net,
        bins: Binaries,
        names: &[&str],
        timing: Timing,
        witness: Option<usize>,
        resource: bool,
    ) -> Result<TandemNet, TandemError> {
        let monitor = Some(Duration::from_secs(1));
        TandemNet::with_monitor_interval(net, bins, names, timing, witness, resource, monitor)
    }

    /// As [`TandemNet::new`], with the resource's `monitor_interval` given; `None` leaves the
    /// key out, so the documented default (10 s) applies (for measurements at the defaults).
    pub fn with_monitor_interval(
        net: Net,
        bins: Binaries,
        names: &[&str],
        timing: Timing,
        witness: Option<usize>,
        resource: bool,
        monitor_interval: Option<Duration>,
    ) -> Result<TandemNet, TandemError> {
        let dir = tempfile::Builder::new()
            .prefix("tandem-netns-")
            .tempdir()
            .map_err(io("temp dir"))?;
        let key_file = dir.path().join("authkey");
        let key: String = (0..32)
            .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
            .collect();
        std::fs::write(&key_file, key).map_err(io("write key"))?;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod key"))?;
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let mut base = format!(
            "cluster: netns\nauth:\n  key_file: {}\ntiming:\n  interval: {}\n  warn_after: {}\n  \
             dead_after: {}\n  init_dead: {}\nquorum: {}\nnodes:\n",
            key_file.display(),
            ms(timing.interval),
            ms(timing.warn_after),
            ms(timing.dead_after),
            ms(timing.init_dead),
            if names.len() == 2 {
                "two_node"
            } else {
                "majority"
            }
        );
        for (i, n) in names.iter().enumerate() {
            let addrs: Vec<String> = net
                .host(i)?
                .addrs
                .iter()
                .map(|a| format!("\"{a}:{PORT}\""))
                .collect();
            base.push_str(&format!(
                "  - name: {n}\n    addresses: [{}]\n",
                addrs.join(", ")
            ));
            if witness == Some(i) {
                base.push_str("    role: witness\n");
            }
        }
        // One file per node: identical but for the paths the exec resource writes, because
        // the agent runs its commands with a clean environment.
        for n in names {
            let mut y = base.clone();
            if resource {
                let state = dir.path().join(format!("{n}.running"));
                let log = dir.path().join(format!("{n}.takeovers"));
                y.push_str(&format!(
                    "resources:\n  - name: svc\n    prefer: {}\n    failback: auto\n    agents:\n      \
                     - exec:\n          start: \"date +%s.%N >> {log} && touch {state}\"\n          \
                     stop: \"rm -f {state}\"\n          monitor: \"test -f {state} || exit 7\"\n",
                    names[0],
                    log = log.display(),
                    state = state.display(),
                ));
                if let Some(m) = monitor_interval {
                    y.push_str(&format!("          monitor_interval: {}\n", ms(m)));
                }
            }
            std::fs::write(dir.path().join(format!("{n}.yaml")), y).map_err(io("write config"))?;
        }
        Ok(TandemNet {
            net,
            names: names.iter().map(|s| s.to_string()).collect(),
            dir,
            bins,
            membership: vec![None; names.len()],
            agent: vec![None; names.len()],
            with_agent: resource,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn run_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("run-{}", self.names[i]))
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.run_dir(i).join("membership.sock")
    }

    fn log_path(&self, i: usize, daemon: &str) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.{daemon}.log", self.names[i]))
    }

    pub fn log(&self, i: usize) -> String {
        let mut s = std::fs::read_to_string(self.log_path(i, "membership")).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.log_path(i, "agent")).unwrap_or_default());
        s
    }

    /// Where node `i`'s resource appends a timestamp (seconds since the epoch) per start.
    pub fn takeovers_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.takeovers", self.names[i]))
    }

    /// Start times recorded by node `i`'s resource.
    pub fn takeovers(&self, i: usize) -> Vec<SystemTime> {
        std::fs::read_to_string(self.takeovers_file(i))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<f64>().ok())
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s))
            .collect()
    }

    /// Whether node `i`'s resource is running now (its state file exists).
    pub fn running(&self, i: usize) -> bool {
        self.dir
            .path()
            .join(format!("{}.running", self.names[i]))
            .exists()
    }

    fn spawn(&mut self, i: usize, daemon: &str) -> Result<u32, TandemError> {
        let bin = if daemon == "membership" {
            self.bins.membership.clone()
        } else {
            self.bins.agent.clone()
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i, daemon))
            .map_err(io("open log"))?;
        let mut cmd = self.net.host(i)?.command(bin);
        cmd.arg("--config")
            .arg(self.dir.path().join(format!("{}.yaml", self.names[i])))
            .args(["--node", &self.names[i]])
            .arg("--run-dir")
            .arg(self.run_dir(i))
            .arg("--state-dir")
            .arg(self.dir.path().join(format!("state-{}", self.names[i])))
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log);
        Ok(self.net.spawn(cmd)?)
    }

    /// Starts node `i` (membership, then the agent when configured) and waits for its
    /// membership socket.
    pub async fn start(&mut self, i: usize) -> Result<(), TandemError> {
        self.membership[i] = Some(self.spawn(i, "membership")?);
        self.client(i).await?;
        if self.with_agent {
            self.agent[i] = Some(self.spawn(i, "agent")?);
        }
        Ok(())
    }

    pub async fn start_all(&mut self) -> Result<(), TandemError> {
        for i in 0..self.names.len() {
            self.start(i).await?;
        }
        Ok(())
    }

    /// Pids of node `i`'s running daemons.
    pub fn pids(&self, i: usize) -> Vec<u32> {
        [self.membership[i], self.agent[i]]
            .into_iter()
            .flatten()
            .collect()
    }

    /// SIGKILLs every daemon of node `i` (a crash); returns the time of the kill.
    pub fn crash(&mut self, i: usize) -> SystemTime {
        let at = SystemTime::now();
        for pid in [self.agent[i].take(), self.membership[i].take()]
            .into_iter()
            .flatten()
        {
            self.net.kill9(pid);
        }
        // The dead agent cannot remove its state file; the resource is gone with the node.
        let _ = std::fs::remove_file(self.dir.path().join(format!("{}.running", self.names[i])));
        at
    }

    /// A client of node `i`'s membership socket, waiting (bounded) for it to appear.
    pub async fn client(
        &self,
        i: usize,
    ) -> Result<MembershipClient<tonic::transport::Channel>, TandemError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(ch) = tandem_proto::uds::connect(&self.socket(i)).await {
                return Ok(MembershipClient::new(ch));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TandemError::Daemon {
                    node: self.names[i].clone(),
                    what: "never served membership.sock".into(),
                    log: self.log(i),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn status(&self, i: usize) -> Result<pb::StatusResponse, TandemError> {
        let mut c = self.client(i).await?;
        c.status(pb::StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|e| TandemError::Daemon {
                node: self.names[i].clone(),
                what: format!("Status: {e}"),
                log: self.log(i),
            })
    }

    /// Polls node `i`'s Status until `pred` holds, for at most `limit`.
    pub async fn wait_status(
        &self,
        i: usize,
        limit: Duration,
        what: &str,
        pred: impl Fn(&pb::StatusResponse) -> bool,
    ) -> Result<pb::StatusResponse, TandemError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let s = self.status(i).await?;
            if pred(&s) {
                return Ok(s);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TandemError::Daemon {
                    node: self.names[i].clone(),
                    what: format!("not {what} within {limit:?}: {:?}", s.view),
                    log: self.log(i),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Node `name` as seen in a Status reply.
pub fn node<'a>(s: &'a pb::StatusResponse, name: &str) -> Option<&'a pb::Node> {
    s.view.as_ref()?.nodes.iter().find(|n| n.name == name)
}

/// Whether `name` has state `state` in a Status reply.
pub fn node_is(s: &pb::StatusResponse, name: &str, state: pb::NodeState) -> bool {
    node(s, name).is_some_and(|n| n.state == state as i32)
}

/// Whether a Status reply says quorate.
pub fn quorate(s: &pb::StatusResponse) -> bool {
    s.view
        .as_ref()
        .and_then(|v| v.quorum.as_ref())
        .is_some_and(|q| q.quorate)
}

/// Sum of the rejection counters.
pub fn rejected(s: &pb::StatusResponse) -> u64 {
    s.rejected.values().sum()
}
