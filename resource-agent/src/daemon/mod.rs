//! The daemon: a thin shell around the core ([`crate::core`]), split by job.
//!
//! Tasks, all talking to one driver (`driver.rs`) through a bounded inbox ([`EVENT_QUEUE`]):
//! - membership (`membership.rs`): `Watch` + `Subscribe` on `<run-dir>/membership.sock`,
//!   reconnecting with backoff; while disconnected the core keeps what it holds and starts
//!   nothing, and the core has the groups running here checked from `dead_after` on;
//! - sender (`membership.rs`): `Send` of the core's announcements ([`SEND_QUEUE`] deep; a
//!   full queue drops, the periodic re-announcement repairs it);
//! - one worker per group (`worker.rs`): start/stop/restart actions and the monitor on its
//!   interval;
//! - health checks;
//! - the gRPC Agent service on `<run-dir>/agent.sock` (`service.rs`; mutating calls: root,
//!   the daemon's own user, or members of `agent.admin_group`), its replies built in
//!   `convert.rs`; `Watch` streams the core's events, which the driver numbers, stamps and
//!   sends to a bounded broadcast ([`WATCH_BUFFER`]); the state files in `state.rs`.
//!
//! The driver owns the core ([`Core`]), which decides everything (placement, handover,
//! restarts, stall and outage checks); it feeds inputs, executes outputs and wakes at the
//! core's deadline. Groups keep running when the daemon stops: a restarted daemon probes
//! them and carries on without moving anything.
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tandem_config::ClusterConfig;
use tandem_daemon_kit::generation;
use tandem_proto::agent::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::agents::{self, group::GroupRunner};
use crate::core::restart::RestartPolicy;
use crate::core::{Config as CoreConfig, Core, FenceConfig, Input, Time, Timers};
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::provider::{Fencer, ProviderError};

mod convert;
mod driver;
mod membership;
mod service;
mod state;
mod worker;

use driver::{Driver, Event};
use membership::{membership_task, sender_task};
use service::AgentService;
pub use state::read_standby;
use worker::{group_worker, readiness_task};

/// The incarnation counter's file in the state directory.
pub const INCARNATION_FILE: &str = "agent-incarnation";
/// Depth of the driver's inbox. Membership events, messages and action results are small
/// and handled in microseconds; 1024 absorbs a burst (a whole snapshot's worth of events).
pub const EVENT_QUEUE: usize = 1024;
/// Depth of the outgoing message queue (membership accepts 256 unacknowledged per peer).
pub const SEND_QUEUE: usize = 256;
/// Events a `Watch` subscriber may fall behind before it is dropped (as membership's).
pub const WATCH_BUFFER: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(String),
    #[error("group {group}: {source}")]
    Agent {
        group: String,
        source: ProviderError,
    },
    #[error("fencing: {0}")]
    Fencing(ProviderError),
    #[error(transparent)]
    Generation(#[from] tandem_daemon_kit::generation::GenerationError),
    #[error(transparent)]
    Bind(#[from] tandem_proto::uds::BindError),
    #[error(transparent)]
    Metrics(#[from] tandem_daemon_kit::metrics::BindError),
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
    // Every node that runs agents may spend the same API tokens (one file copied to each).
    crate::provider::budget::assume_nodes(crate::provider::steady::agent_nodes(cfg));
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

/// The fencer of `fencing:` (reading its token file), if configured: also what `--check`
/// verifies.
pub fn build_fencer(cfg: &ClusterConfig) -> Result<Option<Arc<Fencer>>, DaemonError> {
    cfg.fencing
        .as_ref()
        .map(|f| Fencer::from_config(f).map(Arc::new))
        .transpose()
        .map_err(DaemonError::Fencing)
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
    // Persisted (fsync'd) before the first announcement: peers must never see it go back.
    let incarnation = generation::bump(&opts.state_dir, INCARNATION_FILE)?;
    let standby = read_standby(&opts.state_dir);
    let metrics = cfg.agent.metrics.map(|_| Metrics::default());
    let runners = build_runners_with(&cfg, &opts.node, metrics.as_ref())?;
    let metrics_listener = match cfg.agent.metrics {
        Some(addr) => Some(tandem_daemon_kit::metrics::bind("agent.metrics", addr).await?),
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
    let core_cfg = CoreConfig::from_cluster(
        &cfg,
        &opts.node,
        opts.timers,
        opts.restart,
        longest_monitor(&runners),
    );
    // The core's clock starts here (`Time::ZERO`).
    let core = Core::new(core_cfg, incarnation, &running, standby, Time::ZERO)
        .map_err(|e| DaemonError::Config(e.to_string()))?
        .with_fencing(cfg.fencing.as_ref().map(|f| {
            FenceConfig::new(f.delay).with_call(crate::provider::fence::power_off_call(f.provider))
        }));
    let fencer = build_fencer(&cfg)?;

    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let (send_tx, send_rx) = mpsc::channel(SEND_QUEUE);
    let (client_tx, client_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    let msock = opts.run_dir.join(tandem_config::MEMBERSHIP_SOCKET);
    tasks.spawn(membership_task(msock, tx.clone(), client_tx));
    tasks.spawn(sender_task(send_rx, client_rx));

    let readiness_every =
        worker::readiness_interval(crate::provider::steady::readiness_interval(&cfg));
    let mut cmds = Vec::new();
    for (gi, (runner, up)) in runners.iter().zip(&probes).enumerate() {
        let (ctx, crx) = mpsc::unbounded_channel();
        cmds.push(ctx);
        tasks.spawn(group_worker(gi, runner.clone(), crx, tx.clone(), *up));
        tasks.spawn(readiness_task(
            gi,
            runner.clone(),
            tx.clone(),
            readiness_every,
        ));
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

    // Arcs: the broadcast touches every slot; a slot holding an Arc is one pointer.
    let (events_tx, _) = broadcast::channel(WATCH_BUFFER);
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

    let mut driver = Driver {
        cfg: cfg.clone(),
        node: opts.node.clone(),
        core,
        epoch: now,
        runners,
        cmds,
        health: health_now,
        send_tx,
        state_dir: opts.state_dir.clone(),
        sends_dropped: 0,
        readiness: vec![None; cfg.resources.len()],
        metrics,
        fencer,
        events: tx.clone(),
        watchers: events_tx,
        event_seq: 0,
        recent: std::collections::VecDeque::with_capacity(driver::RECENT_EVENTS),
        incarnation,
    };
    let healthy = driver.health.healthy();
    driver.core.handle(Time::ZERO, Input::Health(healthy));
    driver.dispatch();

    tandem_daemon_kit::notify::ready("probed; waiting for membership");
    driver.run(rx, shutdown).await;
    // Its event broadcast closes with it: open Watch streams end, so the server's graceful
    // shutdown below does not wait on them.
    drop(driver);
    tandem_daemon_kit::notify::stopping();
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
