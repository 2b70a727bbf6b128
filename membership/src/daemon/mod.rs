//! The daemon: a thin tokio shell around the sans-IO [`Core`].
//!
//! [`run`] wires it up: the generation, the UDP sockets, the gRPC socket and the metrics
//! endpoint; then the protocol loop (`shell`) runs until shutdown. The loop owns the core;
//! gRPC handlers (`service`) reach it through a bounded command channel and stream from
//! its broadcasts. `convert` maps the core's view and events to protobuf, `event_log`
//! logs each event.
mod convert;
mod event_log;
mod service;
mod shell;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_config::ClusterConfig;
use tandem_daemon_kit::generation::{self, GenerationError};
use tandem_daemon_kit::timer::Timer;
use tandem_proto::membership::v1 as pb;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::core::wire::{KeyRing, MAX_DATAGRAM};
use crate::core::{Core, SendError, Settings};
use service::Service;
use shell::{Clock, Shell};

/// Events a Watch subscriber may fall behind before it is dropped (the proto's WATCH_BUFFER).
pub const WATCH_BUFFER: usize = 1024;
/// Messages a Subscribe stream may fall behind before it is dropped.
pub const SUBSCRIBE_BUFFER: usize = 1024;
/// Receive buffer asked of the kernel per UDP socket (SO_RCVBUFFORCE when privileged, else
/// SO_RCVBUF, which the kernel caps at net.core.rmem_max). A flood of junk then has to fill
/// megabytes before a heartbeat is dropped, while the loop rejects junk in microseconds.
pub const RECV_BUFFER: usize = 4 << 20;
/// Pending gRPC commands (Send, Status, Watch) for the protocol loop.
const COMMANDS: usize = 256;
/// The generation's file in the state directory.
pub const GENERATION_FILE: &str = "membership.generation";

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Generation(#[from] GenerationError),
    #[error("cannot start the protocol: {0}")]
    Settings(#[from] crate::core::SettingsError),
    #[error("cannot bind UDP {addr} (link {link}): {source}")]
    Udp {
        addr: SocketAddr,
        link: usize,
        source: std::io::Error,
    },
    #[error("membership.socket_group: {0}")]
    Group(String),
    #[error(transparent)]
    Socket(#[from] tandem_proto::uds::BindError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error(transparent)]
    Metrics(#[from] tandem_daemon_kit::metrics::BindError),
    #[error("cannot create the protocol loop's timer: {0}")]
    Timer(std::io::Error),
}

/// Where the daemon keeps its files.
#[derive(Debug, Clone)]
pub struct Paths {
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
}

/// Counters kept outside the core (socket and gRPC side).
#[derive(Debug, Default)]
struct ShellCounters {
    send_errors: AtomicU64,
    receive_drops: AtomicU64,
    watch_dropped: AtomicU64,
    no_subscriber: AtomicU64,
}

enum Command {
    Send {
        to: Option<String>,
        topic: String,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<String>, SendError>>,
    },
    Status {
        reply: oneshot::Sender<pb::StatusResponse>,
    },
    Watch {
        reply: oneshot::Sender<(pb::WatchResponse, broadcast::Receiver<Arc<pb::Event>>)>,
    },
}

/// Runs the daemon until `shutdown` completes, then announces the leave and returns.
/// `ready` is called once the UDP sockets and the gRPC socket are bound.
pub async fn run(
    cfg: ClusterConfig,
    local: String,
    keys: KeyRing,
    paths: Paths,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(&[SocketAddr]) + Send,
) -> Result<(), DaemonError> {
    // Persisted (fsync'd) before the first datagram: peers must never see it go back.
    let generation = generation::bump(&paths.state_dir, GENERATION_FILE)?;
    let epoch = Instant::now();
    let core = Core::new(
        Settings::from_config(&cfg, &local, generation, keys),
        Duration::ZERO,
    )?;
    let me = core.local();
    let mut sockets = Vec::new();
    for (link, addr) in cfg.nodes[me].addresses.iter().enumerate() {
        let s = UdpSocket::bind(addr)
            .await
            .map_err(|source| DaemonError::Udp {
                addr: *addr,
                link,
                source,
            })?;
        // Out of tokio's reactor (it would wake the thread per datagram): the loop watches
        // the sockets through its own one-shot epoll set (udp::Poller).
        let s = s.into_std().map_err(|source| DaemonError::Udp {
            addr: *addr,
            link,
            source,
        })?;
        for (what, error) in crate::udp::tune(&s, RECV_BUFFER) {
            warn!(link, error = %error, "{what}");
        }
        sockets.push(s);
    }
    let bound: Vec<SocketAddr> = sockets
        .iter()
        .zip(&cfg.nodes[me].addresses)
        .map(|(s, a)| s.local_addr().unwrap_or(*a))
        .collect();
    let gid = match &cfg.membership.socket_group {
        None => None,
        Some(name) => Some(group_id(name)?),
    };
    let socket_path = paths.run_dir.join(tandem_config::MEMBERSHIP_SOCKET);
    let listener = tandem_proto::uds::bind(&socket_path, 0o660, gid).await?;

    let counters = Arc::new(ShellCounters::default());
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMANDS);
    let event_counts = crate::metrics::EventCounters::default();
    let (stop_metrics_tx, stop_metrics_rx) = oneshot::channel::<()>();
    let metrics = match cfg.membership.metrics {
        None => None,
        Some(addr) => {
            let listener = tandem_daemon_kit::metrics::bind("membership.metrics", addr).await?;
            let commands = cmd_tx.clone();
            let status: crate::metrics::StatusFn = Arc::new(move || {
                let commands = commands.clone();
                Box::pin(async move {
                    let (tx, rx) = oneshot::channel();
                    commands.send(Command::Status { reply: tx }).await.ok()?;
                    rx.await.ok()
                })
            });
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                status,
                event_counts.clone(),
                async {
                    let _ = stop_metrics_rx.await;
                },
            )))
        }
    };
    // Arcs: the broadcasts allocate and touch every slot up front, and a slot holding an
    // Arc is a few words where a slot holding the message is a few hundred bytes.
    let (events_tx, _) = broadcast::channel(WATCH_BUFFER);
    let (messages_tx, _) = broadcast::channel(SUBSCRIBE_BUFFER);
    let subscribers = Arc::new(Mutex::new(HashMap::new()));
    let service = Service {
        commands: cmd_tx,
        messages: messages_tx.clone(),
        subscribers: subscribers.clone(),
        next_subscriber: AtomicU64::new(1),
        counters: counters.clone(),
    };
    let (routes, health) = tandem_proto::uds::standard_routes(
        tonic::service::Routes::new(pb::membership_server::MembershipServer::new(service)),
        tandem_proto::MEMBERSHIP_SERVICE,
    )
    .await;
    let (stop_grpc_tx, stop_grpc_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(tandem_proto::uds::serve(listener, routes, async {
        let _ = stop_grpc_rx.await;
    }));
    info!(
        node = %local,
        generation,
        udp = ?bound,
        socket = %socket_path.display(),
        "membership started"
    );
    ready(&bound);

    let shell = Shell {
        core,
        clock: Clock::new(epoch),
        kernel_drops: vec![0; sockets.len()],
        poller: crate::udp::Poller::new(&sockets).map_err(|source| DaemonError::Udp {
            addr: cfg.nodes[me].addresses[0],
            link: 0,
            source,
        })?,
        sockets,
        timer: Timer::new().map_err(DaemonError::Timer)?,
        coalesce_timer: Timer::new().map_err(DaemonError::Timer)?,
        batch: crate::udp::Batch::default(),
        outbox: Vec::new(),
        bound,
        counters,
        events: events_tx,
        recent: std::collections::VecDeque::with_capacity(shell::RECENT_EVENTS),
        event_counts,
        messages: messages_tx,
        subscribers,
    };
    shell.run(cmd_rx, shutdown).await;
    health
        .set_service_status(
            tandem_proto::MEMBERSHIP_SERVICE,
            tonic_health::ServingStatus::NotServing,
        )
        .await;
    let _ = stop_grpc_tx.send(());
    let _ = stop_metrics_tx.send(());
    if let Some(m) = metrics {
        match m.await {
            Ok(Err(e)) => warn!(error = %e, "metrics server failed"),
            Err(e) => warn!(error = %e, "metrics server task failed"),
            Ok(Ok(())) => {}
        }
    }
    match server.await {
        Ok(r) => r?,
        Err(e) => warn!(error = %e, "gRPC server task failed"),
    }
    let _ = std::fs::remove_file(&socket_path);
    info!("membership stopped");
    Ok(())
}

fn group_id(name: &str) -> Result<u32, DaemonError> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(DaemonError::Group(format!("no group named {name:?}"))),
        Err(e) => Err(DaemonError::Group(format!("{name:?}: {e}"))),
    }
}

/// Path of the membership socket in `run_dir`.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(tandem_config::MEMBERSHIP_SOCKET)
}

/// Keys from the configuration's key files, as the core wants them.
pub fn key_ring(keys: &tandem_config::keys::KeySet) -> KeyRing {
    let accepted: Vec<(u32, &[u8])> = keys
        .accepted
        .iter()
        .map(|k| (k.id, k.secret.expose()))
        .collect();
    KeyRing::new((keys.signing.id, keys.signing.secret.expose()), &accepted)
}

/// Largest datagram, for the --check summary.
pub const DATAGRAM_LIMIT: usize = MAX_DATAGRAM;
