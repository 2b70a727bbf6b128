//! The daemon: a thin shell around the handover core.
//!
//! Tasks, all talking to one driver through a bounded inbox ([`EVENT_QUEUE`]):
//! - membership: `Watch` + `Subscribe` on `<run-dir>/membership.sock`, reconnecting with
//!   backoff; while disconnected the core keeps what it holds and starts nothing, and the
//!   driver checks what runs here from `dead_after` on (`DisconnectWatch`);
//! - sender: `Send` of the core's announcements ([`SEND_QUEUE`] deep; a full queue drops,
//!   the periodic re-announcement repairs it);
//! - one worker per group: start/stop/restart actions and the monitor on its interval;
//! - health checks;
//! - the gRPC Agent service on `<run-dir>/agent.sock` (mutating calls: root, the daemon's
//!   own user, or members of `agent.admin_group`).
//!
//! The driver owns the core ([`Core`]) and the restart bookkeeping; it feeds inputs,
//! dispatches outputs and wakes at the core's deadline. Groups keep running when the daemon
//! stops: a restarted daemon probes them and carries on without moving anything.
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tandem_config::{AgentConfig, ClusterConfig, Failback};
use tandem_proto::agent::v1 as pb;
use tandem_proto::membership::v1 as mpb;
use tandem_proto::membership::v1::membership_client::MembershipClient;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{debug, error, info, warn};

use crate::agents::group::{AgentState, GroupRunner};
use crate::agents::{self, Kind};
use crate::alarm::Alarm;
use crate::core::restart::{Decision, RestartPolicy, RestartTracker};
use crate::core::{
    AgentOutcome, Command, CommandError, Config as CoreConfig, Core, Input, LocalState, MemberNode,
    MembershipView, Output, TOPIC, Time, Timers,
};
use crate::health::{self, Health};
use crate::metrics::{Metrics, StartCause};
use crate::provider::{self, ProviderError};

/// Depth of the driver's inbox. Membership events, messages and action results are small
/// and handled in microseconds; 1024 absorbs a burst (a whole snapshot's worth of events).
pub const EVENT_QUEUE: usize = 1024;
/// Depth of the outgoing message queue (membership accepts 256 unacknowledged per peer).
pub const SEND_QUEUE: usize = 256;
/// Reconnect backoff towards membership: first and largest delay (jittered).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How often groups that can tell (reserved-ip) check whether this node could take them:
/// one cheap read-only API call a minute per IP keeps a broken token or a region mismatch
/// visible long before a failover needs it.
pub const READINESS_INTERVAL: Duration = Duration::from_secs(60);
/// Overrides [`READINESS_INTERVAL`] (milliseconds) so end-to-end tests see a revoked token
/// within seconds; not meant for production, hence an undocumented variable.
pub const READINESS_INTERVAL_ENV: &str = "TANDEM_AGENT_READINESS_INTERVAL_MS";

fn readiness_interval() -> Duration {
    std::env::var(READINESS_INTERVAL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map_or(READINESS_INTERVAL, Duration::from_millis)
}
/// File names in the state dir.
const INCARNATION_FILE: &str = "agent-incarnation";
const STANDBY_FILE: &str = "standby";

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("group {group}: {source}")]
    Agent {
        group: String,
        source: ProviderError,
    },
    #[error(transparent)]
    Bind(#[from] tandem_proto::uds::BindError),
    #[error("agent socket: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Everything the daemon needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: ClusterConfig,
    pub node: String,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub timers: Timers,
    pub restart: RestartPolicy,
}

/// The next agent incarnation, persisted so that it increases across restarts (even when
/// the clock steps back).
pub fn next_incarnation(state_dir: &Path) -> Result<u64, DaemonError> {
    let path = state_dir.join(INCARNATION_FILE);
    let err = |source| DaemonError::State {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(|source| DaemonError::State {
        path: state_dir.to_owned(),
        source,
    })?;
    let previous = match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(err(e)),
    };
    // Seconds since the epoch when larger: a wiped state dir must not restart the count
    // below what the peers remember (they would ignore every announcement as old).
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let next = previous
        .checked_add(1)
        .ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "counter exhausted",
            ))
        })?
        .max(wall);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{next}\n")).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(next)
}

pub fn read_standby(state_dir: &Path) -> bool {
    state_dir.join(STANDBY_FILE).exists()
}

fn write_standby(state_dir: &Path, on: bool) -> std::io::Result<()> {
    let path = state_dir.join(STANDBY_FILE);
    if on {
        std::fs::write(path, "standby\n")
    } else {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Builds the runners of every group (reading token files): also what `--check` verifies.
pub fn build_runners(
    cfg: &ClusterConfig,
    node: &str,
) -> Result<Vec<Arc<GroupRunner>>, DaemonError> {
    build_runners_with(cfg, node, None)
}

/// [`build_runners`], with every agent and provider counted in `metrics` when given.
fn build_runners_with(
    cfg: &ClusterConfig,
    node: &str,
    metrics: Option<&Metrics>,
) -> Result<Vec<Arc<GroupRunner>>, DaemonError> {
    cfg.resources
        .iter()
        .map(|g| {
            let wrap = |p| match metrics {
                Some(m) => m.provider(p),
                None => p,
            };
            let mut agents =
                agents::from_config_with(g, node, &wrap).map_err(|source| DaemonError::Agent {
                    group: g.name.clone(),
                    source,
                })?;
            if let Some(m) = metrics {
                agents = agents.into_iter().map(|a| m.agent(&g.name, a)).collect();
            }
            Ok(Arc::new(GroupRunner::new(&g.name, agents)))
        })
        .collect()
}

#[derive(Debug)]
enum Event {
    View(MembershipView),
    Disconnected(String),
    Message {
        from: String,
        generation: u64,
        payload: Vec<u8>,
    },
    Group {
        group: usize,
        result: GroupResult,
    },
    Health(Box<Health>),
    Readiness {
        group: usize,
        problems: Vec<String>,
        at: std::time::SystemTime,
    },
    Status(oneshot::Sender<pb::StatusResponse>),
    Command(Command, oneshot::Sender<Result<String, CommandError>>),
}

#[derive(Debug)]
enum GroupResult {
    Outcome(AgentOutcome),
    MonitorFailed(String),
    /// A monitor found the resource on another server (`MonitorFailure::lost_to`).
    Lost(String),
    /// The check after a stall found every agent running.
    Verified,
    Restarted(Result<(), String>),
}

#[derive(Debug)]
enum GroupCmd {
    Start,
    Stop,
    Restart(Duration),
    /// Monitor every agent now (after this process was stalled, while membership is
    /// unreachable, or when a peer newly announces holding the group).
    Verify,
}

/// A gap between two wake-ups longer than the stall threshold means this process did not
/// run: what it believes it runs may have been taken over meanwhile. The other node can
/// take over once this one has been silent for `dead_after`, so the threshold is half of
/// that (at most 1 s, at least 40 ms).
fn stall_after(dead_after: Duration) -> Duration {
    (dead_after / 2).clamp(Duration::from_millis(40), Duration::from_secs(1))
}

/// Notices stalls of this process (SIGSTOP, a paused VM, a starved scheduler) from the gaps
/// between the driver's wake-ups.
///
/// A stall only matters while a group runs or starts here (`armed`): then the driver ticks
/// every half threshold, so an unstalled process never goes a threshold without waking.
/// Why half is enough (was a quarter): detection does not depend on the tick. A freeze
/// longer than the threshold spans a whole tick period, so that tick is overdue when the
/// process runs again: the first wake-up after the thaw (the tick itself, or any event, each
/// checked before it is handled) sees a gap of at least the freeze. The period only sets the
/// margin against false alarms: a tick may run up to half the threshold late (>= 20 ms,
/// 250 ms at the default dead_after) before it counts as a stall. With nothing running
/// here there is nothing to re-check: no tick at all, and the gap to the next wake-up (the
/// core's announcement every 2 s, any event) is no stall.
#[derive(Debug)]
struct StallWatch {
    threshold: Duration,
    last_ran: Instant,
    armed: bool,
}

impl StallWatch {
    fn new(threshold: Duration, now: Instant) -> StallWatch {
        StallWatch {
            threshold,
            last_ran: now,
            armed: false,
        }
    }

    /// Records a wake-up at `now`; returns the gap since the last one when it was a stall
    /// that matters (armed).
    fn wake(&mut self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.last_ran);
        self.last_ran = now;
        (self.armed && gap > self.threshold).then_some(gap)
    }

    /// Whether a group runs or starts here, after each wake-up's work. Arming counts from
    /// `now` (the wake-up that started the group), never from an idle gap before it.
    fn arm(&mut self, armed: bool, now: Instant) {
        if armed && !self.armed {
            self.last_ran = self.last_ran.max(now);
        }
        self.armed = armed;
    }

    /// The next tick the driver must wake for, if any.
    fn next_tick(&self) -> Option<Instant> {
        self.armed.then(|| self.last_ran + self.threshold / 2)
    }
}

/// When to check the groups running here while membership is unreachable.
///
/// A node whose membership died or is cut off from this agent stops heartbeating: after
/// `dead_after` the peers declare it dead and take its groups over, while this agent, which
/// keeps what it holds, would go on reporting them running until a monitor happened to run
/// (`monitor_interval`, 10 s by default). So the first check comes `dead_after` after the
/// disconnection (when a takeover becomes possible), the next ones after a period doubling
/// from `dead_after` up to the longest monitor interval (beyond that the monitors check as
/// often anyway): an outage of hours costs few provider calls. Only while a group runs or
/// starts here (`armed`); connected, it has no deadline at all.
#[derive(Debug)]
struct DisconnectWatch {
    first: Duration,
    max: Duration,
    /// While disconnected: the next check and the period that follows it.
    next: Option<(Instant, Duration)>,
    /// Whether the first check of this outage is still to come.
    first_pending: bool,
}

impl DisconnectWatch {
    fn new(first: Duration, max: Duration) -> DisconnectWatch {
        DisconnectWatch {
            first,
            max: max.max(first),
            next: None,
            first_pending: false,
        }
    }

    /// Membership became unreachable at `since` (a repeated report of the same outage,
    /// e.g. each failed reconnection, changes nothing).
    fn disconnected(&mut self, since: Instant) {
        if self.next.is_none() {
            self.next = Some((since + self.first, self.first));
            self.first_pending = true;
        }
    }

    /// Membership is back: no more checks.
    fn connected(&mut self) {
        self.next = None;
        self.first_pending = false;
    }

    /// The deadline the driver must wake for, if any.
    fn next_check(&self, armed: bool) -> Option<Instant> {
        self.next.filter(|_| armed).map(|(at, _)| at)
    }

    /// Whether a check is due at `now`: `Some(true)` for the first one of this outage,
    /// after which a takeover was possible, `Some(false)` for the later ones. The period
    /// counts from the check, so a late wake-up (a stall) does not bunch them up.
    fn due(&mut self, now: Instant, armed: bool) -> Option<bool> {
        let (at, period) = self.next?;
        if !armed || now < at {
            return None;
        }
        self.next = Some((now + period, period.saturating_mul(2).min(self.max)));
        Some(std::mem::take(&mut self.first_pending))
    }
}

/// The longest monitor interval of any agent: past it, re-checking during an outage adds
/// nothing the monitors do not do.
fn longest_monitor(runners: &[Arc<GroupRunner>]) -> Duration {
    runners
        .iter()
        .flat_map(|r| r.monitor_intervals())
        .max()
        .unwrap_or_default()
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(
    opts: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let cfg = Arc::new(opts.config.clone());
    if cfg.node(&opts.node).is_none() {
        return Err(DaemonError::Config(format!(
            "this node, {:?}, is not in the configuration",
            opts.node
        )));
    }
    let incarnation = next_incarnation(&opts.state_dir)?;
    let standby = read_standby(&opts.state_dir);
    let metrics = cfg.agent.metrics.map(|_| Metrics::default());
    let runners = build_runners_with(&cfg, &opts.node, metrics.as_ref())?;
    // Bound before anything starts, so a taken port fails the start-up, not a scrape.
    let metrics_listener = match cfg.agent.metrics {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                DaemonError::Config(format!("agent.metrics {addr}: cannot bind: {e}"))
            })?;
            let bound = l.local_addr().unwrap_or(addr);
            info!(address = %bound, "metrics served at http://{bound}/metrics");
            Some(l)
        }
        None => None,
    };

    let gid = match &cfg.agent.socket_group {
        Some(g) => Some(lookup_gid(g)?),
        None => None,
    };
    let sock = opts.run_dir.join(tandem_config::AGENT_SOCKET);
    let listener = tandem_proto::uds::bind(&sock, 0o660, gid).await?;

    // The real state first: what runs here already is kept, not started again.
    let probes = futures::future::join_all(runners.iter().map(|r| r.probe())).await;
    let running: Vec<String> = runners
        .iter()
        .zip(&probes)
        .filter(|(_, up)| **up)
        .map(|(r, _)| r.name().to_owned())
        .collect();
    info!(node = %opts.node, incarnation, standby, running = ?running, "resource agent starting");

    let now = Instant::now();
    let hcfg = CoreConfig::from_cluster(&cfg, &opts.node, opts.timers);
    // The core's clock starts here (`Time::ZERO`).
    let hv = Core::new(hcfg, incarnation, &running, standby, Time::ZERO)
        .map_err(|e| DaemonError::Config(e.to_string()))?;

    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let (send_tx, send_rx) = mpsc::channel(SEND_QUEUE);
    let (client_tx, client_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    let msock = opts.run_dir.join(tandem_config::MEMBERSHIP_SOCKET);
    tasks.spawn(membership_task(msock, tx.clone(), client_tx));
    tasks.spawn(sender_task(send_rx, client_rx));

    let mut cmds = Vec::new();
    for (gi, (runner, up)) in runners.iter().zip(&probes).enumerate() {
        let (ctx, crx) = mpsc::unbounded_channel();
        cmds.push(ctx);
        tasks.spawn(group_worker(gi, runner.clone(), crx, tx.clone(), *up));
        tasks.spawn(readiness_task(gi, runner.clone(), tx.clone()));
    }

    let (health_tx, mut health_rx) = watch::channel(Health::new(&cfg.health, now));
    let health_now = health_rx.borrow().clone();
    let mut stop_health = stop_rx.clone();
    tasks.spawn(health::run(cfg.health.clone(), health_tx, async move {
        let _ = stop_health.wait_for(|s| *s).await;
    }));
    let health_fwd = tx.clone();
    tasks.spawn(async move {
        while health_rx.changed().await.is_ok() {
            let h = health_rx.borrow_and_update().clone();
            if health_fwd.send(Event::Health(Box::new(h))).await.is_err() {
                return;
            }
        }
    });

    let metrics_server = match (metrics_listener, &metrics) {
        (Some(listener), Some(m)) => {
            let status_tx = tx.clone();
            let status: crate::metrics::StatusFn = Arc::new(move || {
                let status_tx = status_tx.clone();
                Box::pin(async move {
                    let (reply, rx) = oneshot::channel();
                    status_tx.send(Event::Status(reply)).await.ok()?;
                    rx.await.ok()
                })
            });
            let mut stop_metrics = stop_rx.clone();
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                status,
                m.clone(),
                async move {
                    let _ = stop_metrics.wait_for(|s| *s).await;
                },
            )))
        }
        _ => None,
    };

    let svc = AgentService {
        tx: tx.clone(),
        cfg: cfg.clone(),
        node: opts.node.clone(),
        own_uid: nix::unistd::getuid().as_raw(),
        metrics: metrics.clone(),
    };
    let routes = tonic::service::Routes::new(pb::agent_server::AgentServer::new(svc));
    let (routes, _health_reporter) =
        tandem_proto::uds::standard_routes(routes, tandem_proto::AGENT_SERVICE).await;
    let mut stop_server = stop_rx.clone();
    let server = tokio::spawn(tandem_proto::uds::serve(listener, routes, async move {
        let _ = stop_server.wait_for(|s| *s).await;
    }));

    // Not connected yet: should membership never come up, the groups probed running here
    // are checked as in any outage.
    let mut disconnect = DisconnectWatch::new(cfg.timing.dead_after, longest_monitor(&runners));
    disconnect.disconnected(now);
    let mut driver = Driver {
        cfg: cfg.clone(),
        node: opts.node.clone(),
        hv,
        epoch: now,
        runners,
        cmds,
        trackers: cfg
            .resources
            .iter()
            .map(|_| RestartTracker::new(opts.restart))
            .collect(),
        healthy: health_now.healthy(),
        health: health_now,
        send_tx,
        state_dir: opts.state_dir.clone(),
        disconnected_since: Some(now),
        sends_dropped: 0,
        reported_down: false,
        readiness: vec![None; cfg.resources.len()],
        last_holder: vec![None; cfg.resources.len()],
        stall: StallWatch::new(stall_after(cfg.timing.dead_after), now),
        disconnect,
        unverified: vec![false; cfg.resources.len()],
        metrics,
    };
    let h = driver.healthy;
    driver.hv.handle(Time::ZERO, Input::Health(h));
    driver.dispatch();

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("probed; waiting for membership"),
    ]);
    driver.run(rx, shutdown).await;
    notify(&[sd_notify::NotifyState::Stopping]);
    info!("resource agent stopping; groups keep running");
    let _ = stop_tx.send(true);
    tasks.abort_all();
    if let Some(m) = metrics_server {
        match m.await {
            Ok(Err(e)) => warn!(error = %e, "metrics server failed"),
            Err(e) => warn!(error = %e, "metrics server task ended abnormally"),
            Ok(Ok(())) => {}
        }
    }
    match server.await {
        Ok(r) => r?,
        Err(e) => warn!(error = %e, "agent socket task ended abnormally"),
    }
    let _ = std::fs::remove_file(&sock);
    Ok(())
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd there is no NOTIFY_SOCKET and this does nothing.
    if let Err(e) = sd_notify::notify(state) {
        debug!(error = %e, "sd_notify failed");
    }
}

fn lookup_gid(name: &str) -> Result<u32, DaemonError> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(DaemonError::Config(format!(
            "agent.socket_group: no group named {name:?}"
        ))),
        Err(e) => Err(DaemonError::Config(format!(
            "agent.socket_group {name:?}: {e}"
        ))),
    }
}

struct Driver {
    cfg: Arc<ClusterConfig>,
    node: String,
    hv: Core,
    /// The instant the core's clock counts from.
    epoch: Instant,
    runners: Vec<Arc<GroupRunner>>,
    cmds: Vec<mpsc::UnboundedSender<GroupCmd>>,
    trackers: Vec<RestartTracker>,
    health: Health,
    healthy: bool,
    send_tx: mpsc::Sender<(Option<String>, Vec<u8>)>,
    state_dir: PathBuf,
    disconnected_since: Option<Instant>,
    sends_dropped: u64,
    reported_down: bool,
    readiness: Vec<Option<(Vec<String>, std::time::SystemTime)>>,
    /// Per group, the last other node seen holding it (kept after that node dies), to tell
    /// a failover from a handover when the group starts here. Kept only with metrics on.
    last_holder: Vec<Option<String>>,
    metrics: Option<Metrics>,
    /// Notices a stall of this process (see `check_stall`).
    stall: StallWatch,
    /// Checks the groups running here while membership is unreachable (see
    /// `check_disconnected`).
    disconnect: DisconnectWatch,
    /// Per group: running here but not confirmed since a stall, since a takeover became
    /// possible during a membership outage, or since a peer announced holding it too (see
    /// `check_stall`, `check_disconnected`, `Output::Verify`).
    unverified: Vec<bool>,
}

impl Driver {
    async fn run(&mut self, mut rx: mpsc::Receiver<Event>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // Ping the watchdog at half its period, from the loop itself: a stuck driver stops it.
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut next_ping = Instant::now();
        // One timer for the earliest of the core's deadline, the stall tick, the check
        // while disconnected and the watchdog: one wake-up each, and none re-created per
        // iteration.
        let mut alarm = Alarm::new("driver");
        loop {
            let armed = self.runs_here();
            self.stall.arm(armed, Instant::now());
            let next = [
                Some(self.epoch + self.hv.next_deadline()),
                self.stall.next_tick(),
                self.disconnect.next_check(armed),
                watchdog.map(|_| next_ping),
            ]
            .into_iter()
            .flatten()
            .min();
            alarm.set(next);
            tokio::select! {
                () = &mut shutdown => return,
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        self.check_stall();
                        self.on_event(ev);
                    }
                    None => return,
                },
                () = alarm.wait() => {
                    self.check_stall();
                    let now = Instant::now();
                    let t = self.at(now);
                    if t >= self.hv.next_deadline() {
                        self.hv.handle(t, Input::Tick);
                    }
                    self.check_disconnected(now, armed);
                    if let Some(period) = watchdog
                        && now >= next_ping
                    {
                        notify(&[sd_notify::NotifyState::Watchdog]);
                        next_ping = now + period;
                    }
                }
            }
            self.dispatch();
        }
    }

    /// `now` on the core's clock.
    fn at(&self, now: Instant) -> Time {
        now.saturating_duration_since(self.epoch)
    }

    /// Whether a stall would matter: a group runs or starts here.
    fn runs_here(&self) -> bool {
        self.runners.iter().any(|r| {
            matches!(
                self.hv.state_of(r.name()),
                Some(LocalState::Running | LocalState::Starting)
            )
        })
    }

    /// Notices that this process was stalled. Whatever it believes it runs may have been
    /// taken over meanwhile (the other node declared this one dead): every group running
    /// here is monitored at once, and reported as starting, not running, until that check
    /// confirms it (a loss is handled like any monitor finding the group elsewhere).
    fn check_stall(&mut self) {
        let Some(gap) = self.stall.wake(Instant::now()) else {
            return;
        };
        warn!(stalled_for = ?gap, "this agent was stalled for {gap:?}; checking the groups it runs before reporting them running");
        self.verify_running(true);
    }

    /// While membership is unreachable the peers may have declared this node dead and taken
    /// its groups over (see [`DisconnectWatch`]): the groups running here are checked as
    /// after a stall. The first check of an outage (a takeover became possible just then)
    /// also reports them starting until confirmed; the later ones are plain re-checks.
    fn check_disconnected(&mut self, now: Instant, armed: bool) {
        let Some(first) = self.disconnect.due(now, armed) else {
            return;
        };
        if first {
            let since = self
                .disconnected_since
                .map(|t| now.saturating_duration_since(t));
            warn!(disconnected_for = ?since, "membership unreachable for dead_after: the peers may have taken over; checking the groups running here");
        } else {
            debug!("membership still unreachable; checking the groups running here again");
        }
        self.verify_running(first);
    }

    /// Monitors every group running here at once (`GroupCmd::Verify`); `unconfirmed`:
    /// reported starting, not running, until that check confirms it (a loss is handled
    /// like any monitor finding the group elsewhere).
    fn verify_running(&mut self, unconfirmed: bool) {
        for gi in 0..self.runners.len() {
            if self.hv.state_of(self.runners[gi].name()) == Some(LocalState::Running) {
                self.unverified[gi] |= unconfirmed;
                let _ = self.cmds[gi].send(GroupCmd::Verify);
            }
        }
    }

    /// Counts a start of group `gi` here, by cause (failover when its last holder is dead).
    fn count_start(&self, gi: usize) {
        let Some(m) = &self.metrics else { return };
        let cause = match &self.last_holder[gi] {
            None => StartCause::Initial,
            Some(h) => {
                let alive = self
                    .hv
                    .status(self.at(Instant::now()))
                    .nodes
                    .iter()
                    .any(|n| n.name == *h && n.alive);
                if alive {
                    StartCause::Handover
                } else {
                    StartCause::Failover
                }
            }
        };
        info!(group = %self.runners[gi].name(), cause = cause.as_str(), previous = ?self.last_holder[gi], "starting group here");
        m.record_start(self.runners[gi].name(), cause);
    }

    /// Remembers who holds each group (another node), after the outputs are dispatched.
    fn note_holders(&mut self) {
        if self.metrics.is_none() {
            return;
        }
        let st = self.hv.status(self.at(Instant::now()));
        for (gi, g) in st.groups.iter().enumerate() {
            match &g.holder {
                Some(h) if *h != self.node => self.last_holder[gi] = Some(h.clone()),
                // Held here: a later start here follows our own stop, not someone else's.
                Some(_) => self.last_holder[gi] = None,
                // Nobody (e.g. the holder died): keep the last one for the start to come.
                None => {}
            }
        }
    }

    fn group_idx(&self, name: &str) -> Option<usize> {
        self.runners.iter().position(|r| r.name() == name)
    }

    fn dispatch(&mut self) {
        for out in self.hv.drain_outputs() {
            match out {
                Output::Start(g) | Output::Stop(g) | Output::Verify(g)
                    if self.group_idx(&g).is_none() =>
                {
                    error!(group = %g, "the core named an unknown group");
                }
                Output::Start(g) => {
                    let gi = self.group_idx(&g).unwrap_or_default();
                    self.count_start(gi);
                    let _ = self.cmds[gi].send(GroupCmd::Start);
                }
                Output::Stop(g) => {
                    let gi = self.group_idx(&g).unwrap_or_default();
                    let _ = self.cmds[gi].send(GroupCmd::Stop);
                }
                Output::Verify(g) => {
                    // A peer announces holding a group running here: reported starting
                    // until the provider confirms it here (a loss stops it, as after a stall).
                    let gi = self.group_idx(&g).unwrap_or_default();
                    if self.hv.state_of(&g) == Some(LocalState::Running) {
                        self.unverified[gi] = true;
                        let _ = self.cmds[gi].send(GroupCmd::Verify);
                    }
                }
                Output::Send { to, payload } => {
                    if self.send_tx.try_send((to, payload)).is_err() {
                        self.sends_dropped += 1;
                        if self.sends_dropped % 100 == 1 {
                            warn!(
                                dropped = self.sends_dropped,
                                "outgoing message queue full; dropping"
                            );
                        }
                    }
                }
                Output::PersistStandby(on) => {
                    if let Err(e) = write_standby(&self.state_dir, on) {
                        error!(error = %e, standby = on, "cannot persist the standby flag; it holds until restart");
                    }
                }
            }
        }
        self.note_holders();
    }

    fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::View(v) => {
                if self.disconnected_since.take().is_some() {
                    info!("membership connected");
                    self.disconnect.connected();
                }
                self.reported_down = false;
                self.hv.handle(self.at(now), Input::View(v));
            }
            Event::Disconnected(why) => {
                if !self.reported_down {
                    // Once per outage (and at start, until the first connection).
                    warn!(reason = %why, "membership unreachable; keeping what is held, starting nothing");
                    self.reported_down = true;
                }
                let since = *self.disconnected_since.get_or_insert(now);
                self.disconnect.disconnected(since);
                self.hv.handle(self.at(now), Input::Disconnected);
            }
            Event::Message {
                from,
                generation,
                payload,
            } => {
                self.hv.handle(
                    self.at(now),
                    Input::Message {
                        from,
                        generation,
                        payload,
                    },
                );
            }
            Event::Group { group, result } => self.on_group(now, group, result),
            Event::Health(h) => {
                self.health = *h;
                let healthy = self.health.healthy();
                if healthy != self.healthy {
                    self.healthy = healthy;
                    self.hv.handle(self.at(now), Input::Health(healthy));
                }
            }
            Event::Readiness {
                group,
                problems,
                at,
            } => {
                if !problems.is_empty()
                    && self.readiness[group]
                        .as_ref()
                        .is_none_or(|(p, _)| *p != problems)
                {
                    warn!(group = %self.runners[group].name(), problems = ?problems, "this node could not take the group over");
                }
                self.readiness[group] = Some((problems, at));
            }
            Event::Status(reply) => {
                let _ = reply.send(self.status(now));
            }
            Event::Command(cmd, reply) => {
                let forgive: Vec<usize> = match &cmd {
                    Command::Online(None) => (0..self.trackers.len()).collect(),
                    Command::Online(Some(n)) if *n == self.node => {
                        (0..self.trackers.len()).collect()
                    }
                    Command::Takeover(g) => self.group_idx(g).into_iter().collect(),
                    _ => Vec::new(),
                };
                let result = self.hv.command(self.at(now), cmd);
                if result.is_ok() {
                    for gi in forgive {
                        self.trackers[gi].reset();
                        self.runners[gi].reset_failures();
                    }
                }
                let _ = reply.send(result);
            }
        }
    }

    fn on_group(&mut self, now: Instant, gi: usize, result: GroupResult) {
        let name = self.runners[gi].name().to_owned();
        // A result of the group's worker (the check a stall or an outage asked for, or any
        // later monitor, start or stop) says what runs here: no longer unconfirmed.
        let was_unconfirmed = std::mem::take(&mut self.unverified[gi]);
        match result {
            GroupResult::Verified if was_unconfirmed => {
                info!(group = %name, "group confirmed running here")
            }
            GroupResult::Verified => debug!(group = %name, "group still running here"),
            GroupResult::Outcome(outcome) => {
                if outcome == AgentOutcome::Stopped {
                    self.trackers[gi].reset();
                }
                self.hv.handle(
                    self.at(now),
                    Input::Agent {
                        group: name,
                        outcome,
                    },
                );
            }
            GroupResult::MonitorFailed(reason) => {
                if self.hv.state_of(&name) != Some(LocalState::Running) {
                    debug!(group = %name, "monitor failure of a group no longer running here ignored");
                    return;
                }
                // Another live node announcing the group means it moved: never take it back.
                let status = self.hv.status(self.at(now));
                let elsewhere = status
                    .nodes
                    .iter()
                    .find(|n| n.name != self.node && n.alive && n.holds.contains(&name))
                    .map(|n| n.name.clone());
                let (decision, reason) = match elsewhere {
                    Some(node) => (
                        Decision::GiveUp { restarts: 0 },
                        format!("{reason}; {node} holds it"),
                    ),
                    None => {
                        let t = self.at(now);
                        (self.trackers[gi].on_failure(t), reason)
                    }
                };
                match decision {
                    Decision::Restart { after, attempt } => {
                        warn!(group = %name, reason = %reason, attempt, after = ?after, "monitor failed; restarting here");
                        let _ = self.cmds[gi].send(GroupCmd::Restart(after));
                    }
                    Decision::GiveUp { restarts } => {
                        warn!(group = %name, reason = %reason, restarts, "monitor failed; releasing the group");
                        self.hv.handle(
                            self.at(now),
                            Input::MonitorGaveUp {
                                group: name,
                                reason,
                            },
                        );
                    }
                }
            }
            GroupResult::Lost(reason) => {
                // Never restarted here: a restart would move the IP back from a node that
                // took it over (e.g. while this one was frozen). The handover stops the
                // group here and placement decides where it runs.
                self.hv.handle(
                    self.at(now),
                    Input::Lost {
                        group: name,
                        reason,
                    },
                );
            }
            GroupResult::Restarted(Ok(())) => info!(group = %name, "group restarted here"),
            GroupResult::Restarted(Err(e)) => {
                if self.hv.state_of(&name) == Some(LocalState::Running) {
                    self.hv.handle(
                        self.at(now),
                        Input::MonitorGaveUp {
                            group: name,
                            reason: format!("restart failed: {e}"),
                        },
                    );
                }
            }
        }
    }

    fn status(&mut self, now: Instant) -> pb::StatusResponse {
        let t = self.at(now);
        let st = self.hv.status(t);
        let groups = st
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                let spec = &self.cfg.resources[gi];
                let agents: Vec<pb::AgentStatus> = self.runners[gi]
                    .records()
                    .into_iter()
                    .map(agent_status)
                    .collect();
                let last_action = agents
                    .iter()
                    .filter_map(|a| a.last_action.clone())
                    .max_by_key(|a| a.started_at.as_ref().map(|t| (t.seconds, t.nanos)));
                pb::GroupStatus {
                    name: g.name.clone(),
                    prefer: spec.prefer.clone().unwrap_or_default(),
                    failback: match spec.failback {
                        Failback::Auto => "auto".into(),
                        Failback::Manual => "manual".into(),
                    },
                    desired_holder: g.desired.clone().unwrap_or_default(),
                    holder: g.holder.clone().unwrap_or_default(),
                    state: if self.unverified[gi] && g.state == LocalState::Running {
                        // Not confirmed since a stall: it may have been taken over.
                        pb::GroupState::Starting as i32
                    } else {
                        group_state(g.state) as i32
                    },
                    agents,
                    restarts: self.trackers[gi].restarts(t),
                    last_action,
                    readiness: self.readiness[gi]
                        .as_ref()
                        .map(|(problems, at)| pb::Readiness {
                            ready: problems.is_empty(),
                            problems: problems.clone(),
                            checked_at: Some(tandem_proto::time::timestamp(*at)),
                        }),
                    not_candidate_reason: g.not_candidate_reason.clone().unwrap_or_default(),
                }
            })
            .collect();
        pb::StatusResponse {
            node: self.node.clone(),
            cluster: self.cfg.cluster.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            membership_connected: st.connected,
            membership_disconnected_for: self
                .disconnected_since
                .map(|t| tandem_proto::time::duration(now.duration_since(t))),
            quorate: st.quorate,
            health: self
                .health
                .checks
                .iter()
                .map(|c| pb::HealthCheck {
                    name: c.name(),
                    healthy: c.healthy == Some(true),
                    consecutive_failures: c.consecutive_failures,
                    consecutive_successes: c.consecutive_successes,
                    last_error: c.last_error.clone().unwrap_or_default(),
                    last_checked: c.last_checked.map(tandem_proto::time::timestamp),
                })
                .collect(),
            nodes: st
                .nodes
                .iter()
                .map(|n| pb::NodeFlags {
                    name: n.name.clone(),
                    standby: n.standby,
                    healthy: n.healthy,
                    holds: n.holds.clone(),
                })
                .collect(),
            groups,
        }
    }
}

fn group_state(s: LocalState) -> pb::GroupState {
    match s {
        LocalState::Stopped => pb::GroupState::Stopped,
        LocalState::Waiting => pb::GroupState::Waiting,
        LocalState::Starting => pb::GroupState::Starting,
        LocalState::Running => pb::GroupState::Running,
        LocalState::Stopping => pb::GroupState::Stopping,
        LocalState::Failed => pb::GroupState::Failed,
    }
}

fn agent_status(r: crate::agents::group::AgentRecord) -> pb::AgentStatus {
    pb::AgentStatus {
        name: r.name,
        kind: match r.kind {
            Kind::ReservedIp => pb::AgentKind::ReservedIp,
            Kind::Lsb => pb::AgentKind::Lsb,
            Kind::Ocf => pb::AgentKind::Ocf,
            Kind::Exec => pb::AgentKind::Exec,
        } as i32,
        state: match r.state {
            AgentState::Unknown => pb::AgentState::Unknown,
            AgentState::Stopped => pb::AgentState::Stopped,
            AgentState::Starting => pb::AgentState::Starting,
            AgentState::Running => pb::AgentState::Running,
            AgentState::Stopping => pb::AgentState::Stopping,
            AgentState::Failed => pb::AgentState::Failed,
        } as i32,
        last_action: r.last_action.map(|a| pb::LastAction {
            action: a.action.to_string(),
            result: if a.ok {
                pb::ActionResult::Ok
            } else if a.timed_out {
                pb::ActionResult::Timeout
            } else {
                pb::ActionResult::Failed
            } as i32,
            started_at: Some(tandem_proto::time::timestamp(a.started_at)),
            duration: Some(tandem_proto::time::duration(a.took)),
            message: a.message,
        }),
        failures: r.failures,
        detail: r.detail,
    }
}

async fn group_worker(
    gi: usize,
    runner: Arc<GroupRunner>,
    mut rx: mpsc::UnboundedReceiver<GroupCmd>,
    tx: mpsc::Sender<Event>,
    mut monitoring: bool,
) {
    // Each agent is monitored on its own period (a reserved-ip monitor is an API call; an
    // init script's status is cheap and may run more often).
    let intervals = runner.monitor_intervals();
    let schedule = |now: Instant| -> Vec<Instant> { intervals.iter().map(|d| now + *d).collect() };
    let mut due = schedule(Instant::now());
    // A command that arrived while a restart was waiting: it replaces the restart.
    let mut pending: Option<GroupCmd> = None;
    let mut alarm = Alarm::new("group monitor");
    loop {
        // Disarmed while not monitoring: a paused group costs no wake-ups.
        alarm.set(due.iter().min().copied().filter(|_| monitoring));
        let cmd = match pending.take() {
            Some(cmd) => Some(cmd),
            None => tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => Some(cmd),
                    None => return,
                },
                () = alarm.wait() => None,
            },
        };
        let had_cmd = cmd.is_some();
        let result = match cmd {
            Some(GroupCmd::Start) => Some(match runner.start().await {
                Ok(()) => {
                    monitoring = true;
                    GroupResult::Outcome(AgentOutcome::Started)
                }
                Err(e) => {
                    monitoring = false;
                    GroupResult::Outcome(AgentOutcome::StartFailed {
                        clean: e.clean,
                        reason: e.to_string(),
                    })
                }
            }),
            Some(GroupCmd::Verify) => Some(match runner.monitor().await {
                Ok(()) => {
                    monitoring = true;
                    GroupResult::Verified
                }
                Err(f) => {
                    // Paused until the driver decides, as for a failed periodic monitor.
                    monitoring = false;
                    if f.lost_to.is_some() {
                        GroupResult::Lost(f.to_string())
                    } else {
                        GroupResult::MonitorFailed(f.to_string())
                    }
                }
            }),
            Some(GroupCmd::Stop) => {
                monitoring = false;
                Some(match runner.stop().await {
                    Ok(()) => GroupResult::Outcome(AgentOutcome::Stopped),
                    Err(e) => GroupResult::Outcome(AgentOutcome::StopFailed {
                        reason: e.to_string(),
                    }),
                })
            }
            Some(GroupCmd::Restart(after)) => {
                let until = Instant::now() + after;
                let mut lost = None;
                let go = loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => break true,
                        cmd = rx.recv() => {
                            let Some(cmd) = cmd else { return };
                            if !matches!(cmd, GroupCmd::Verify) {
                                pending = Some(cmd);
                                break false;
                            }
                            // A check (a stall, an outage) while the restart waits: only a
                            // loss changes anything, as restarting would take the resource
                            // back from the server that took it over; any other failure is
                            // the one the restart is for, and must not cancel it.
                            if let Some(f) = lost_elsewhere(&runner).await {
                                lost = Some(f);
                                break false;
                            }
                        }
                    }
                };
                if let Some(f) = lost {
                    monitoring = false;
                    Some(GroupResult::Lost(f.to_string()))
                } else if go {
                    let r = match runner.stop().await {
                        Ok(()) => runner.start().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    monitoring = r.is_ok();
                    Some(GroupResult::Restarted(r))
                } else {
                    // The driver moved on (a stop); that command decides what happens.
                    None
                }
            }
            None => {
                let now = Instant::now();
                let mut failed = None;
                for i in 0..due.len() {
                    if due[i] > now {
                        continue;
                    }
                    due[i] = Instant::now() + intervals[i];
                    if let Err(f) = runner.monitor_one(i).await {
                        failed = Some(f);
                        break;
                    }
                }
                failed.map(|f| {
                    // Paused until the driver decides (restart or release).
                    monitoring = false;
                    if f.lost_to.is_some() {
                        GroupResult::Lost(f.to_string())
                    } else {
                        GroupResult::MonitorFailed(f.to_string())
                    }
                })
            }
        };
        if had_cmd {
            due = schedule(Instant::now());
        }
        if let Some(result) = result
            && tx.send(Event::Group { group: gi, result }).await.is_err()
        {
            return;
        }
    }
}

/// Monitors every agent of the group, past failures, for one that runs on another server.
async fn lost_elsewhere(runner: &GroupRunner) -> Option<crate::agents::group::MonitorFailure> {
    for i in 0..runner.monitor_intervals().len() {
        if let Err(f) = runner.monitor_one(i).await
            && f.lost_to.is_some()
        {
            return Some(f);
        }
    }
    None
}

async fn readiness_task(gi: usize, runner: Arc<GroupRunner>, tx: mpsc::Sender<Event>) {
    let mut alarm = Alarm::new("readiness");
    loop {
        // Groups whose agents cannot tell need no task.
        let Some(problems) = runner.readiness().await else {
            return;
        };
        let at = std::time::SystemTime::now();
        if tx
            .send(Event::Readiness {
                group: gi,
                problems,
                at,
            })
            .await
            .is_err()
        {
            return;
        }
        alarm.set(Some(Instant::now() + readiness_interval()));
        alarm.wait().await;
    }
}

fn member_view(v: &mpb::View, left: &BTreeSet<String>) -> MembershipView {
    MembershipView {
        quorate: v.quorum.as_ref().is_some_and(|q| q.quorate),
        nodes: v
            .nodes
            .iter()
            .map(|n| MemberNode {
                name: n.name.clone(),
                alive: matches!(
                    mpb::NodeState::try_from(n.state),
                    Ok(mpb::NodeState::Up | mpb::NodeState::Late)
                ),
                generation: n.generation,
            })
            .collect(),
        late: v
            .nodes
            .iter()
            .filter(|n| mpb::NodeState::try_from(n.state) == Ok(mpb::NodeState::Late))
            .map(|n| n.name.clone())
            .collect(),
        left: left.iter().cloned().collect(),
    }
}

/// Tracks which dead nodes left cleanly (see [`MembershipView::left`]).
fn note_left(left: &mut BTreeSet<String>, e: &mpb::Event) {
    use mpb::event::Kind as K;
    match &e.kind {
        Some(K::NodeDead(d)) => {
            if d.reason == mpb::node_dead::Reason::Left as i32 {
                left.insert(d.node.clone());
            } else {
                left.remove(&d.node);
            }
        }
        Some(K::NodeUp(u)) => {
            left.remove(&u.node);
        }
        _ => {}
    }
}

/// Folds one event into the view; `Err` on a gap in the sequence (resubscribe for a fresh
/// snapshot). Returns whether the view changed in a way the core cares about.
fn apply_event(view: &mut mpb::View, last_seq: &mut u64, e: mpb::Event) -> Result<bool, String> {
    if e.seq != *last_seq + 1 {
        return Err(format!(
            "watch event {} after {}: events were lost",
            e.seq, last_seq
        ));
    }
    *last_seq = e.seq;
    view.view_id = e.view_id;
    use mpb::event::Kind as K;
    let mut set = |name: &str, state: mpb::NodeState, generation: Option<u64>| {
        if let Some(n) = view.nodes.iter_mut().find(|n| n.name == name) {
            n.state = state as i32;
            if let Some(g) = generation {
                n.generation = g;
            }
        }
    };
    Ok(match e.kind {
        Some(K::NodeUp(u)) => {
            set(&u.node, mpb::NodeState::Up, Some(u.generation));
            true
        }
        Some(K::NodeLate(l)) => {
            set(&l.node, mpb::NodeState::Late, None);
            // The core needs to know who is late when a group is lost (a late node is
            // likely behind the partition that caused the loss).
            true
        }
        Some(K::NodeDead(d)) => {
            set(&d.node, mpb::NodeState::Dead, Some(d.generation));
            // Membership reports the quorum loss a death causes as a later event. Acting on
            // the death with the old quorum in between let a node cut off from the majority
            // start the group (and move the IP) for a moment: lose quorum here at once when
            // the votes left are too few; only membership's own event raises it again.
            if let Some(q) = view.quorum.as_mut() {
                let alive = view
                    .nodes
                    .iter()
                    .filter(|n| {
                        n.local
                            || matches!(
                                mpb::NodeState::try_from(n.state),
                                Ok(mpb::NodeState::Up | mpb::NodeState::Late)
                            )
                    })
                    .count();
                if alive < q.needed as usize {
                    q.quorate = false;
                    q.alive = alive as u32;
                }
            }
            true
        }
        Some(K::QuorumChanged(q)) => {
            view.quorum = q.quorum;
            true
        }
        Some(K::LinkUp(_) | K::LinkDown(_)) | None => false,
    })
}

async fn membership_session(
    path: &Path,
    tx: &mpsc::Sender<Event>,
    client_tx: &watch::Sender<Option<MembershipClient<Channel>>>,
) -> Result<(), String> {
    let channel = tandem_proto::uds::connect(path)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = MembershipClient::new(channel);
    let mut watch_stream = client
        .watch(mpb::WatchRequest {})
        .await
        .map_err(|s| format!("watch: {}", s.message()))?
        .into_inner();
    let mut sub = client
        .subscribe(mpb::SubscribeRequest {
            topics: vec![TOPIC.into()],
        })
        .await
        .map_err(|s| format!("subscribe: {}", s.message()))?
        .into_inner();
    client_tx.send_replace(Some(client));
    let mut view: Option<mpb::View> = None;
    // Nodes dead by a clean leave (REASON_LEFT) not up since: the View has no reason, the
    // events do. A snapshot starts it empty (a node left before we connected is just dead).
    let mut left: BTreeSet<String> = BTreeSet::new();
    let mut seq = 0;
    loop {
        tokio::select! {
            m = watch_stream.message() => {
                let resp = m.map_err(|s| format!("watch: {}", s.message()))?.ok_or("watch stream ended")?;
                let changed = match resp.kind {
                    Some(mpb::watch_response::Kind::Snapshot(v)) => {
                        seq = resp.snapshot_seq;
                        view = Some(v);
                        left.clear();
                        true
                    }
                    Some(mpb::watch_response::Kind::Event(e)) => {
                        let v = view.as_mut().ok_or("watch stream began without a snapshot")?;
                        note_left(&mut left, &e);
                        apply_event(v, &mut seq, e)?
                    }
                    None => false,
                };
                if let (true, Some(v)) = (changed, &view) {
                    tx.send(Event::View(member_view(v, &left))).await.map_err(|_| "shutting down")?;
                }
            }
            m = sub.message() => {
                let msg = m.map_err(|s| format!("subscribe: {}", s.message()))?.ok_or("subscribe stream ended")?;
                tx.send(Event::Message { from: msg.from, generation: msg.from_generation, payload: msg.payload })
                    .await
                    .map_err(|_| "shutting down")?;
            }
        }
    }
}

async fn membership_task(
    path: PathBuf,
    tx: mpsc::Sender<Event>,
    client_tx: watch::Sender<Option<MembershipClient<Channel>>>,
) {
    let mut delay = RECONNECT_MIN;
    loop {
        let started = Instant::now();
        let why = match membership_session(&path, &tx, &client_tx).await {
            Ok(()) => "session ended".to_owned(),
            Err(e) => e,
        };
        client_tx.send_replace(None);
        if tx.send(Event::Disconnected(why)).await.is_err() {
            return;
        }
        // A session that lasted resets the backoff; repeated failures grow it.
        if started.elapsed() > RECONNECT_MAX {
            delay = RECONNECT_MIN;
        }
        let jitter = rand::rng().random_range(0.5..1.0);
        tokio::time::sleep(delay.mul_f64(jitter)).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

async fn sender_task(
    mut rx: mpsc::Receiver<(Option<String>, Vec<u8>)>,
    client_rx: watch::Receiver<Option<MembershipClient<Channel>>>,
) {
    while let Some((to, payload)) = rx.recv().await {
        let client = client_rx.borrow().clone();
        // Disconnected: dropped; the core re-announces periodically and on reconnect.
        let Some(mut client) = client else { continue };
        let req = mpb::SendRequest {
            to: to.unwrap_or_default(),
            topic: TOPIC.into(),
            payload,
        };
        if let Err(s) = client.send(req).await {
            debug!(code = ?s.code(), error = %s.message(), "send to membership failed");
        }
    }
}

/// The gRPC Agent service: asks the driver, checks the caller for mutating calls.
struct AgentService {
    tx: mpsc::Sender<Event>,
    cfg: Arc<ClusterConfig>,
    node: String,
    own_uid: u32,
    metrics: Option<Metrics>,
}

impl AgentService {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let cred = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|i| i.peer_cred);
        let Some(cred) = cred else {
            return Err(Status::permission_denied(
                "cannot identify the caller (no peer credentials)",
            ));
        };
        if cred.uid() == 0 || cred.uid() == self.own_uid {
            return Ok(());
        }
        if let Some(group) = &self.cfg.agent.admin_group
            && let Ok(Some(g)) = nix::unistd::Group::from_name(group)
        {
            if cred.gid() == g.gid.as_raw() {
                return Ok(());
            }
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cred.uid()))
                .ok()
                .flatten();
            if user.is_some_and(|u| g.mem.contains(&u.name)) {
                return Ok(());
            }
        }
        let allowed = match &self.cfg.agent.admin_group {
            Some(g) => format!("root or members of group {g:?}"),
            None => "root only (no agent.admin_group configured)".to_owned(),
        };
        Err(Status::permission_denied(format!(
            "uid {} may not change the cluster: {allowed}",
            cred.uid()
        )))
    }

    async fn command(&self, cmd: Command) -> Result<String, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Command(cmd, reply))
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let result = rx.await.map_err(|_| Status::unavailable("shutting down"))?;
        result.map_err(|e| {
            let msg = e.to_string();
            match e {
                CommandError::UnknownNode(_) | CommandError::UnknownGroup(_) => {
                    Status::not_found(msg)
                }
                CommandError::NotCandidate(_)
                | CommandError::NotHeld(_)
                | CommandError::NoOtherCandidate(_) => Status::failed_precondition(msg),
                CommandError::Unreachable(_) => Status::unavailable(msg),
                CommandError::Codec(_) | CommandError::TooLarge(_) => Status::internal(msg),
            }
        })
    }
}

fn opt_node(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Status(reply))
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        Ok(Response::new(
            rx.await.map_err(|_| Status::unavailable("shutting down"))?,
        ))
    }

    async fn standby(
        &self,
        req: Request<pb::StandbyRequest>,
    ) -> Result<Response<pb::StandbyResponse>, Status> {
        self.authorize(&req)?;
        let node = opt_node(req.into_inner().node);
        let message = self.command(Command::Standby(node.clone())).await?;
        Ok(Response::new(pb::StandbyResponse {
            node: node.unwrap_or_else(|| self.node.clone()),
            message,
        }))
    }

    async fn online(
        &self,
        req: Request<pb::OnlineRequest>,
    ) -> Result<Response<pb::OnlineResponse>, Status> {
        self.authorize(&req)?;
        let node = opt_node(req.into_inner().node);
        let message = self.command(Command::Online(node.clone())).await?;
        Ok(Response::new(pb::OnlineResponse {
            node: node.unwrap_or_else(|| self.node.clone()),
            message,
        }))
    }

    async fn takeover(
        &self,
        req: Request<pb::TakeoverRequest>,
    ) -> Result<Response<pb::TakeoverResponse>, Status> {
        self.authorize(&req)?;
        let group = req.into_inner().group;
        let message = self.command(Command::Takeover(group.clone())).await?;
        Ok(Response::new(pb::TakeoverResponse { group, message }))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.authorize(&req)?;
        let group = req.into_inner().group;
        let message = self.command(Command::Release(group.clone())).await?;
        Ok(Response::new(pb::ReleaseResponse { group, message }))
    }

    async fn assign(
        &self,
        req: Request<pb::AssignRequest>,
    ) -> Result<Response<pb::AssignResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        let ip: std::net::IpAddr = req
            .ip
            .parse()
            .map_err(|_| Status::invalid_argument(format!("{:?} is not an IP address", req.ip)))?;
        let agent = self
            .cfg
            .resources
            .iter()
            .flat_map(|g| &g.agents)
            .find_map(|a| match a {
                AgentConfig::ReservedIp(r) if r.ip == ip => Some(r.clone()),
                _ => None,
            })
            .ok_or_else(|| {
                Status::not_found(format!("no reserved-ip agent is configured for {ip}"))
            })?;
        let mut agent = agent;
        if req.droplet_id != 0 {
            agent.droplet_ids.clear();
            agent.droplet_id = Some(req.droplet_id);
        }
        let mut provider = provider::from_config(&agent, &self.node)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        if let Some(m) = &self.metrics {
            provider = m.provider(provider);
        }
        let droplet_id = match provider.server_id().await {
            Ok(provider::ServerId::Numeric(n)) => n,
            Ok(provider::ServerId::Text(_)) => 0,
            Err(e) => return Err(Status::failed_precondition(e.to_string())),
        };
        info!(ip = %ip, droplet_id, "assign requested by an operator, outside placement");
        let started = Instant::now();
        let out = provider.assign().await.map_err(|e| {
            if e.is_fatal() {
                Status::failed_precondition(e.to_string())
            } else {
                Status::unavailable(e.to_string())
            }
        })?;

        Ok(Response::new(pb::AssignResponse {
            ip: ip.to_string(),
            droplet_id,
            already_assigned: out.already_held,
            took: Some(tandem_proto::time::duration(started.elapsed())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: mpb::NodeState, generation: u64) -> mpb::Node {
        mpb::Node {
            name: name.into(),
            state: state as i32,
            generation,
            ..Default::default()
        }
    }

    #[test]
    fn a_stall_is_noticed_before_the_other_node_can_take_over() {
        let ms = Duration::from_millis;
        for dead_after in [100, 200, 500, 1000, 3000].map(ms) {
            let t = stall_after(dead_after);
            // A freeze of dead_after lets the peer take over: it must count as a stall.
            assert!(t < dead_after, "dead_after {dead_after:?}: threshold {t:?}");
            let start = Instant::now();
            let mut w = StallWatch::new(t, start);
            w.arm(true, start);
            // Ticks each up to just under half the threshold late: never a stall.
            let late = t / 2 - ms(1);
            let mut now = start;
            for _ in 0..50 {
                let tick = w.next_tick().expect("armed: ticking");
                assert_eq!(tick, now + t / 2, "a tick every half threshold");
                now = tick + late;
                assert_eq!(w.wake(now), None, "a late tick is no stall");
            }
            // A freeze of dead_after beginning anywhere in a tick period: the first wake-up
            // after the thaw (the overdue tick, or any event) reports at least the freeze.
            for phase in [ms(0), t / 8, t / 4, t / 2 - ms(1)] {
                let mut w = StallWatch::new(t, now);
                w.arm(true, now);
                let frozen_at = now + phase;
                let tick = w.next_tick().expect("armed");
                assert!(
                    tick <= frozen_at + dead_after,
                    "the tick falls in the freeze"
                );
                let thaw = frozen_at + dead_after;
                let gap = w.wake(thaw).expect("a freeze of dead_after is a stall");
                assert!(gap >= dead_after, "{gap:?}");
            }
        }
        assert_eq!(stall_after(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(stall_after(ms(20)), ms(40));
    }

    #[test]
    fn an_agent_running_nothing_neither_ticks_nor_reports_a_stall() {
        let t = stall_after(Duration::from_secs(1));
        let start = Instant::now();
        let mut w = StallWatch::new(t, start);
        assert_eq!(w.next_tick(), None, "nothing runs here: no tick");
        // Idle for a long time (or frozen meanwhile): nothing to re-check.
        let later = start + Duration::from_secs(30);
        assert_eq!(w.wake(later), None);
        // A group starts at the next wake-up: ticking resumes from then, and the idle gap
        // before it is no stall.
        let start_here = later + Duration::from_secs(2);
        assert_eq!(w.wake(start_here), None);
        w.arm(true, start_here);
        assert_eq!(w.next_tick(), Some(start_here + t / 2));
        assert_eq!(w.wake(start_here + t / 2), None);
        // Running: a freeze longer than the threshold is reported.
        let thaw = start_here + t / 2 + t + Duration::from_millis(1);
        assert!(w.wake(thaw).is_some(), "a stall while running is noticed");
        // Stopped again: no tick, and the next long gap is no stall.
        w.arm(false, thaw);
        assert_eq!(w.next_tick(), None);
        assert_eq!(w.wake(thaw + Duration::from_secs(10)), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The instants at which `w` checks, waking exactly at each deadline, until `until`.
    fn checks(w: &mut DisconnectWatch, until: Instant) -> Vec<Instant> {
        let mut at = Vec::new();
        while let Some(t) = w.next_check(true).filter(|t| *t <= until) {
            assert_eq!(w.due(t - ms(1), true), None, "not before its deadline");
            assert!(w.due(t, true).is_some());
            at.push(t);
        }
        at
    }

    #[test]
    fn an_outage_is_checked_at_dead_after_then_ever_less_often() {
        let start = Instant::now();
        let s = Duration::from_secs;
        let mut w = DisconnectWatch::new(s(1), s(10));
        assert_eq!(w.next_check(true), None, "connected: no deadline");
        w.disconnected(start);
        // A repeated report (each failed reconnection) does not move the schedule.
        w.disconnected(start + ms(300));
        assert_eq!(w.next_check(true), Some(start + s(1)));
        assert_eq!(w.due(start + s(1), true), Some(true), "the first check");
        let later = checks(&mut w, start + s(60));
        let offsets: Vec<u64> = later.iter().map(|t| (*t - start).as_secs()).collect();
        // 1 s, then periods 1, 2, 4, 8, 10, 10 ... s: the later checks are not the first.
        assert_eq!(offsets, [2, 4, 8, 16, 26, 36, 46, 56]);
        let mut w2 = DisconnectWatch::new(s(1), s(10));
        w2.disconnected(start);
        let hour = checks(&mut w2, start + s(3600)).len();
        assert!(hour <= 365, "an hour's outage costs {hour} checks");
        // Reconnected: no deadline any more; a new outage starts over from dead_after.
        w.connected();
        assert_eq!(w.next_check(true), None);
        assert_eq!(w.due(start + s(3600), true), None);
        let again = start + s(100);
        w.disconnected(again);
        assert_eq!(w.next_check(true), Some(again + s(1)));
        assert_eq!(w.due(again + s(1), true), Some(true));
    }

    #[test]
    fn nothing_running_here_costs_no_wake_up_and_a_late_check_does_not_bunch_up() {
        let start = Instant::now();
        let s = Duration::from_secs;
        // Monitors more frequent than dead_after: every period is dead_after.
        let mut w = DisconnectWatch::new(s(2), ms(500));
        w.disconnected(start);
        assert_eq!(w.next_check(false), None, "nothing runs here: no deadline");
        assert_eq!(w.due(start + s(5), false), None);
        // A group runs (again) here with the first check overdue: it comes at once.
        assert_eq!(w.next_check(true), Some(start + s(2)));
        assert_eq!(w.due(start + s(5), true), Some(true));
        // The period counts from the late check, and stays dead_after.
        assert_eq!(w.next_check(true), Some(start + s(7)));
        assert_eq!(w.due(start + s(7), true), Some(false));
        assert_eq!(w.next_check(true), Some(start + s(9)));
    }

    #[test]
    fn a_clean_leave_is_remembered_until_the_node_is_up_or_dies_otherwise() {
        let dead = |reason: mpb::node_dead::Reason| mpb::Event {
            kind: Some(mpb::event::Kind::NodeDead(mpb::NodeDead {
                node: "a".into(),
                generation: 1,
                reason: reason as i32,
                silent_for: None,
            })),
            ..Default::default()
        };
        let mut left = BTreeSet::new();
        note_left(&mut left, &dead(mpb::node_dead::Reason::Silent));
        assert!(left.is_empty());
        note_left(&mut left, &dead(mpb::node_dead::Reason::Left));
        assert!(left.contains("a"));
        let up = mpb::Event {
            kind: Some(mpb::event::Kind::NodeUp(mpb::NodeUp {
                node: "a".into(),
                generation: 2,
                ..Default::default()
            })),
            ..Default::default()
        };
        note_left(&mut left, &up);
        assert!(left.is_empty(), "back up: no longer left");
        note_left(&mut left, &dead(mpb::node_dead::Reason::Left));
        note_left(&mut left, &dead(mpb::node_dead::Reason::Silent));
        assert!(left.is_empty(), "a later silent death is a death");
    }

    #[test]
    fn events_fold_into_the_view_and_gaps_are_detected() {
        let mut v = mpb::View {
            nodes: vec![
                node("a", mpb::NodeState::Up, 1),
                node("b", mpb::NodeState::Unknown, 0),
            ],
            quorum: Some(mpb::Quorum {
                quorate: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut seq = 5;
        let up = mpb::Event {
            seq: 6,
            kind: Some(mpb::event::Kind::NodeUp(mpb::NodeUp {
                node: "b".into(),
                generation: 3,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(apply_event(&mut v, &mut seq, up), Ok(true));
        let mv = member_view(&v, &BTreeSet::new());
        assert!(mv.quorate);
        assert_eq!(
            mv.nodes[1],
            MemberNode {
                name: "b".into(),
                alive: true,
                generation: 3
            }
        );
        let late = mpb::Event {
            seq: 7,
            kind: Some(mpb::event::Kind::NodeLate(mpb::NodeLate {
                node: "b".into(),
                silent_for: None,
            })),
            ..Default::default()
        };
        assert_eq!(apply_event(&mut v, &mut seq, late), Ok(true));
        assert!(
            member_view(&v, &BTreeSet::new()).nodes[1].alive,
            "late still counts as alive"
        );
        let dead = mpb::Event {
            seq: 9,
            kind: Some(mpb::event::Kind::NodeDead(mpb::NodeDead {
                node: "b".into(),
                generation: 3,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(
            apply_event(&mut v, &mut seq, dead).is_err(),
            "seq 8 is missing"
        );
    }

    /// Found by tandem-soak (seed 5, fault 3, three nodes in namespaces): the node cut off
    /// from the majority saw both peers die, and acted on the second death before
    /// membership's QuorumChanged event arrived.
    #[test]
    fn a_death_leaving_too_few_votes_loses_quorum_before_membership_says_so() {
        let node = |name: &str, local: bool| mpb::Node {
            name: name.into(),
            state: mpb::NodeState::Up as i32,
            local,
            ..Default::default()
        };
        let mut v = mpb::View {
            nodes: vec![node("a", false), node("b", true), node("w", false)],
            quorum: Some(mpb::Quorum {
                quorate: true,
                voters: 3,
                alive: 3,
                needed: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut seq = 0;
        let dead = |seq: u64, name: &str| mpb::Event {
            seq,
            kind: Some(mpb::event::Kind::NodeDead(mpb::NodeDead {
                node: name.into(),
                generation: 1,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(apply_event(&mut v, &mut seq, dead(1, "a")), Ok(true));
        assert!(
            member_view(&v, &BTreeSet::new()).quorate,
            "b and w are a majority"
        );
        assert_eq!(apply_event(&mut v, &mut seq, dead(2, "w")), Ok(true));
        assert!(
            !member_view(&v, &BTreeSet::new()).quorate,
            "b alone is no majority"
        );
        // two_node (needed 1): the survivor stays quorate.
        let mut v2 = mpb::View {
            nodes: vec![node("a", false), node("b", true)],
            quorum: Some(mpb::Quorum {
                quorate: true,
                voters: 2,
                alive: 2,
                needed: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut seq = 0;
        assert_eq!(apply_event(&mut v2, &mut seq, dead(1, "a")), Ok(true));
        assert!(member_view(&v2, &BTreeSet::new()).quorate);
    }

    #[test]
    fn incarnation_increases_across_restarts_and_standby_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = next_incarnation(dir.path()).expect("first");
        assert!(
            first > 1_700_000_000,
            "at least the wall clock in seconds: {first}"
        );
        assert!(next_incarnation(dir.path()).expect("second") > first);
        // A counter ahead of the clock (the clock stepped back) still increases.
        std::fs::write(
            dir.path().join(INCARNATION_FILE),
            format!("{}\n", u64::MAX / 2),
        )
        .expect("write");
        assert_eq!(
            next_incarnation(dir.path()).expect("third"),
            u64::MAX / 2 + 1
        );
        assert!(!read_standby(dir.path()));
        write_standby(dir.path(), true).expect("write");
        assert!(read_standby(dir.path()));
        write_standby(dir.path(), false).expect("clear");
        write_standby(dir.path(), false).expect("clear twice");
        assert!(!read_standby(dir.path()));
        std::fs::write(dir.path().join(INCARNATION_FILE), "garbage").expect("write");
        assert!(
            next_incarnation(dir.path()).is_err(),
            "a corrupt counter is reported, not reset"
        );
    }
}
