//! The daemon: a thin tokio shell around the sans-IO [`Core`].
//!
//! One task (the protocol loop) owns the core and the UDP sockets. It waits for the first
//! of: shutdown, the core's next deadline, the watchdog tick, a command from a gRPC handler,
//! or a readable socket; feeds the core; then drains its outputs: datagrams to the sockets,
//! events to a bounded broadcast (`WATCH_BUFFER`) for Watch streams, deliveries to a bounded
//! broadcast for Subscribe streams. Subscribers that fall behind are dropped by the
//! broadcast; they never slow the loop.
//!
//! Datagrams are read by the loop itself, up to [`RECV_BATCH`] per wakeup, into one reused
//! buffer: no task hand-off and no allocation per datagram. The kernel's socket queue
//! (enlarged to [`RECV_BUFFER`]) is the only inbox; what it drops under a flood is read back
//! from the kernel (`SO_RXQ_OVFL`) and reported as `receive_queue_full`.
//!
//! In a large cluster heartbeats arrive every few milliseconds from different peers. After a
//! wakeup that brought nothing but heartbeats (and no Send or message for an interval), the
//! loop stops watching the sockets for [`coalesce_delay`] + [`COALESCE_TICK`] (≤ 6 ms) and
//! then reads what came meanwhile in one batch: about half the wakeups at 32 nodes. Timers
//! and commands are not delayed; a datagram is handled at most that late, with the kernel's
//! arrival stamp as its time, so detection, last-heard and RTT are unchanged (the stamp is
//! wall-clock: it is trusted at most [`MAX_ARRIVAL_AGE`] back and never before time already
//! given to the core).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::Stream;
use tandem_config::{ClusterConfig, QuorumPolicy, Role};
use tandem_proto::membership::v1 as pb;
use tandem_proto::time::{duration, timestamp};
use tandem_proto::timer::Timer;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::core::wire::{KeyRing, MAX_DATAGRAM};
use crate::core::{
    Core, DeadReason, Delivery, Event, EventKind, LinkState, NodeState, Quorum, SendError,
    Settings, Time,
};

/// Events a Watch subscriber may fall behind before it is dropped (the proto's WATCH_BUFFER).
pub const WATCH_BUFFER: usize = 1024;
/// Messages a Subscribe stream may fall behind before it is dropped.
pub const SUBSCRIBE_BUFFER: usize = 1024;
/// Receive buffer asked of the kernel per UDP socket (SO_RCVBUFFORCE when privileged, else
/// SO_RCVBUF, which the kernel caps at net.core.rmem_max). A flood of junk then has to fill
/// megabytes before a heartbeat is dropped, while the loop rejects junk in microseconds.
pub const RECV_BUFFER: usize = 4 << 20;
/// Datagrams read per wakeup before the loop looks at its timers and commands again; also
/// the most read before an expired deadline fires (datagrams that arrived before the timer
/// ran, e.g. while the process was frozen, may prove a peer alive). Bounded so a flood
/// cannot delay detection, heartbeats or the watchdog.
const RECV_BATCH: usize = 64;
/// Pending gRPC commands (Send, Status, Watch) for the protocol loop.
const COMMANDS: usize = 256;
/// Events kept for Status (`recent_events`): enough for "what just happened" at a glance,
/// bounded so a flapping link cannot grow memory.
const RECENT_EVENTS: usize = 32;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Generation(#[from] crate::generation::GenerationError),
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
    #[error("{0}")]
    Metrics(String),
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
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Persisted (fsync'd) before the first datagram: peers must never see it go back.
    let generation = crate::generation::bump(&paths.state_dir, wall)?;
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
            crate::metrics::check_address(addr).map_err(DaemonError::Metrics)?;
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                DaemonError::Metrics(format!("membership.metrics {addr}: cannot bind: {e}"))
            })?;
            let bound = listener.local_addr().unwrap_or(addr);
            info!(address = %bound, "metrics served at http://{bound}/metrics");
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
        epoch,
        kernel_drops: vec![0; sockets.len()],
        poller: crate::udp::Poller::new(&sockets).map_err(|source| DaemonError::Udp {
            addr: cfg.nodes[me].addresses[0],
            link: 0,
            source,
        })?,
        sockets,
        timer: Timer::new().map_err(DaemonError::Timer)?,
        coalesce_timer: Timer::new().map_err(DaemonError::Timer)?,
        last_now: std::cell::Cell::new(Duration::ZERO),
        batch: crate::udp::Batch::default(),
        outbox: Vec::new(),
        bound,
        counters,
        events: events_tx,
        recent: std::collections::VecDeque::with_capacity(RECENT_EVENTS),
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

/// The nominal wait before reading datagrams that arrived while only heartbeats flow:
/// min(5 ms, interval / 20); the loop waits [`COALESCE_TICK`] more. Bounded far below
/// dead_after, so detection never notices; the arrival time the core sees is the kernel's
/// stamp, so last-heard and RTT stay exact.
fn coalesce_delay(interval: Duration) -> Duration {
    (interval / 20).min(Duration::from_millis(5))
}

/// Added to the coalescing wait: the millisecond tokio's timer (1 ms ticks, deadlines rounded
/// up) always added while this wait was a tokio sleep. The 32-node footprint was tuned with
/// it; on an exact timer 5 ms read, and woke, about a fifth more often (bench idle32: 270-283
/// against 209-247 wake-ups/s on the same loaded machine).
const COALESCE_TICK: Duration = Duration::from_millis(1);

/// How far back a kernel arrival stamp may move a datagram's time: the stamp is wall-clock,
/// so a clock step could make it arbitrary; past this bound it is not believed.
const MAX_ARRIVAL_AGE: Duration = Duration::from_millis(20);

struct Shell {
    core: Core,
    epoch: Instant,
    sockets: Vec<std::net::UdpSocket>,
    /// Readiness of `sockets`, disarmed while coalescing so the wait costs no wakeups.
    poller: crate::udp::Poller,
    /// The earlier of the core's next deadline and the watchdog's next ping. Timerfds, not
    /// tokio sleeps: one wake-up per deadline (see [`tandem_proto::timer`]).
    timer: Timer,
    /// Set while coalescing: when to read what arrived meanwhile.
    coalesce_timer: Timer,
    /// The latest time given to the core: time never goes back for it.
    last_now: std::cell::Cell<Time>,
    /// Receive buffers, reused for every datagram.
    batch: crate::udp::Batch,
    /// Datagrams of one flush, grouped by socket before sending.
    outbox: Vec<crate::core::Transmit>,
    /// Per socket, the kernel's cumulative count of datagrams dropped for a full queue.
    kernel_drops: Vec<u32>,
    bound: Vec<SocketAddr>,
    counters: Arc<ShellCounters>,
    events: broadcast::Sender<Arc<pb::Event>>,
    /// The last [`RECENT_EVENTS`] events, for Status.
    recent: std::collections::VecDeque<pb::Event>,
    event_counts: crate::metrics::EventCounters,
    messages: broadcast::Sender<Arc<pb::ClusterMessage>>,
    subscribers: Arc<Mutex<HashMap<u64, Vec<String>>>>,
}

impl Shell {
    fn now(&self) -> Time {
        let t = self.epoch.elapsed().max(self.last_now.get());
        self.last_now.set(t);
        t
    }

    /// Core time of a datagram stamped `arrived` (wall clock) by the kernel, read at `now`
    /// (core time) and `wall_now`: at most [`MAX_ARRIVAL_AGE`] back and never before the
    /// last time the core was given.
    fn arrival(&self, now: Time, wall_now: SystemTime, arrived: Option<SystemTime>) -> Time {
        let Some(arrived) = arrived else { return now };
        // A stamp after wall_now (the clock stepped back) counts as "just now".
        let age = wall_now
            .duration_since(arrived)
            .unwrap_or(Duration::ZERO)
            .min(MAX_ARRIVAL_AGE);
        let floor = self.last_now.get();
        let t = now.saturating_sub(age).max(floor);
        self.last_now.set(t);
        t
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        // Pinged from this loop, at half the period systemd asks for: a stuck loop stops it.
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut next_ping = watchdog.map(|_| Instant::now());
        let mut commands_open = true;
        self.core.handle_timeout(self.now());
        self.flush();
        let interval = self.core.timing().interval;
        let delay = coalesce_delay(interval);
        // Waiting pays only if more heartbeats than not arrive within the delay (32 nodes:
        // 1.55 on average); with few peers it would add a wakeup per heartbeat instead.
        let peers = self.core.nodes().len().saturating_sub(1) * self.sockets.len();
        let coalesce = delay * u32::try_from(peers).unwrap_or(u32::MAX) >= interval;
        // The last Send, delivery or other datagram that was more than a heartbeat: for an
        // interval after it, messages (and their acks) are read as soon as they arrive.
        let mut last_activity: Option<Instant> = None;
        // Datagrams may be waiting unannounced (a full batch was read, or some came before a
        // re-arm): read again as soon as timers and commands have had their turn.
        let mut read_on = false;
        loop {
            let due = self.deadline();
            let wake = match (due, next_ping) {
                (Some(d), Some(p)) => Some(d.min(p)),
                (d, p) => d.or(p),
            };
            if let Err(e) = self.timer.set(wake) {
                warn!(error = %e, "setting the loop's timer failed");
            }
            // While the coalescing timer is armed the sockets are not watched: what arrives
            // until it fires is read in one batch.
            let coalescing = self.coalesce_timer.deadline().is_some();
            let mut more = false;
            // Some(read) when this wakeup was for datagrams.
            let mut datagrams = None;
            tokio::select! {
                // Timers before datagrams: a flood of junk must never delay detection,
                // heartbeats or the watchdog (it is read in bounded batches; the kernel
                // drops, and counts, what does not fit in the socket queue).
                biased;
                _ = &mut shutdown => break,
                r = self.timer.wait() => {
                    if let Err(e) = r {
                        warn!(error = %e, "waiting for the loop's timer failed");
                    }
                    // The timerfd fires at or after its deadline on the same clock as
                    // Instant: whichever of the two was due is due now.
                    let now = Instant::now();
                    if next_ping.is_some_and(|p| now >= p) {
                        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                            warn!(error = %e, "sd_notify WATCHDOG failed");
                        }
                        next_ping = Some(now + watchdog.unwrap_or(Duration::from_secs(1)));
                    }
                    if due.is_some_and(|d| now >= d) {
                        let read = self.receive(RECV_BATCH);
                        if read >= RECV_BATCH {
                            // Some may be left, unannounced: read on below.
                            datagrams = Some(read);
                        }
                        let now = self.now();
                        self.core.handle_timeout(now);
                    }
                }
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(c) => {
                        if matches!(c, Command::Send { .. }) {
                            // Acks and replies follow: do not make them wait.
                            last_activity = Some(Instant::now());
                            if self.poller.disarmed() {
                                self.stop_coalescing();
                                if self.rearm() >= RECV_BATCH {
                                    read_on = true;
                                }
                            }
                        }
                        self.command(c)
                    }
                    None => commands_open = false,
                },
                r = self.coalesce_timer.wait(), if coalescing => {
                    if let Err(e) = r {
                        warn!(error = %e, "waiting for the coalescing timer failed");
                    }
                    datagrams = Some(self.receive(RECV_BATCH));
                }
                _ = std::future::ready(()), if read_on => {
                    read_on = false;
                    datagrams = Some(self.receive(RECV_BATCH));
                }
                r = self.poller.wait(), if !coalescing && !read_on => {
                    if let Err(e) = r {
                        warn!(error = %e, "waiting for UDP readiness failed");
                    }
                    datagrams = Some(self.receive(RECV_BATCH));
                }
            }
            let busy = self.flush();
            if let Some(read) = datagrams {
                more = read >= RECV_BATCH;
                let now = Instant::now();
                if busy {
                    last_activity = Some(now);
                }
                let quiet = last_activity.is_none_or(|t| now.duration_since(t) >= interval);
                if more {
                    // Datagrams may be left and no new arrival need announce them: read
                    // on right after the yield below.
                    read_on = true;
                } else if coalesce && quiet && read > 0 && !busy {
                    // Only heartbeats (nothing to send, publish or deliver): wait a little
                    // so the next ones, from other peers, come in one read.
                    match self.coalesce_timer.set(Some(now + delay + COALESCE_TICK)) {
                        Ok(()) => {
                            if let Err(e) = self.poller.disarm(&self.sockets) {
                                warn!(error = %e, "disarming UDP readiness failed");
                            }
                        }
                        // No timer to end the wait: do not start it (keep reading at once).
                        Err(e) => warn!(error = %e, "setting the coalescing timer failed"),
                    }
                } else {
                    self.stop_coalescing();
                    if self.rearm() > 0 {
                        // Came between the last read and the re-arm: handled; look again.
                        self.flush();
                        read_on = true;
                    }
                }
            }
            if more {
                // A full batch: let the gRPC tasks run before reading on.
                tokio::task::yield_now().await;
            }
        }
        info!("shutting down: telling peers we leave");
        let now = self.now();
        self.core.leave(now);
        self.flush();
    }

    /// Ends a coalescing wait early (the sockets are re-armed by [`Self::rearm`]).
    fn stop_coalescing(&mut self) {
        if let Err(e) = self.coalesce_timer.set(None) {
            warn!(error = %e, "disarming the coalescing timer failed");
        }
    }

    /// Re-arms the sockets' readiness if disarmed, then reads what came meanwhile (an
    /// arrival before the re-arm is not reported). Returns how many were read.
    fn rearm(&mut self) -> usize {
        if !self.poller.disarmed() {
            return 0;
        }
        if let Err(e) = self.poller.rearm(&self.sockets) {
            warn!(error = %e, "re-arming UDP readiness failed");
        }
        self.receive(RECV_BATCH)
    }

    /// The core's next deadline, if it has one.
    fn deadline(&self) -> Option<Instant> {
        self.core.next_deadline().map(|d| self.epoch + d)
    }

    /// Reads and handles up to `budget` waiting datagrams; returns how many were read
    /// (`budget` or more only when a socket may have more waiting).
    fn receive(&mut self, budget: usize) -> usize {
        let mut read = 0;
        let wall_now = SystemTime::now();
        for link in 0..self.sockets.len() {
            while read < budget {
                match self.batch.recv(&self.sockets[link]) {
                    Ok(o) => {
                        read += o.count;
                        if let Some(d) = o.drops {
                            self.note_drops(link, d);
                        }
                        for i in 0..o.count {
                            let (r, bytes) = self.batch.get(i);
                            let Some(src) = r.src else { continue };
                            let now = self.now();
                            let at = self.arrival(now, wall_now, r.arrived);
                            self.core.handle_datagram(at, link, src, bytes);
                        }
                        if o.drained {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // ICMP errors surface here on Linux (e.g. a peer's port is closed);
                        // they say nothing about our own socket. Counted as a read so a
                        // repeating error cannot keep the loop here.
                        read += 1;
                        tracing::debug!(link, error = %e, "UDP receive error");
                    }
                }
            }
        }
        read
    }

    /// The kernel's drop counter of socket `link` (cumulative, wrapping at 2^32).
    fn note_drops(&mut self, link: usize, now: u32) {
        let new = now.wrapping_sub(self.kernel_drops[link]);
        if new > 0 {
            self.kernel_drops[link] = now;
            self.counters
                .receive_drops
                .fetch_add(u64::from(new), Ordering::Relaxed);
        }
    }

    fn command(&mut self, c: Command) {
        let now = self.now();
        match c {
            Command::Send {
                to,
                topic,
                payload,
                reply,
            } => {
                let r = self
                    .core
                    .send(now, to.as_deref(), &topic, &payload)
                    .map(|nodes| {
                        nodes
                            .into_iter()
                            .map(|i| self.core.nodes()[i].name.clone())
                            .collect()
                    });
                let _ = reply.send(r);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status(now));
            }
            Command::Watch { reply } => {
                // Subscribing and taking the snapshot in one step of the loop: the first
                // event the stream gets is exactly snapshot_seq + 1.
                let rx = self.events.subscribe();
                let snapshot = pb::WatchResponse {
                    kind: Some(pb::watch_response::Kind::Snapshot(self.view(now))),
                    snapshot_seq: self.core.last_seq(),
                };
                let _ = reply.send((snapshot, rx));
            }
        }
    }

    /// Sends queued datagrams and publishes queued events and deliveries; returns whether
    /// there was any.
    fn flush(&mut self) -> bool {
        self.outbox.clear();
        while let Some(t) = self.core.poll_transmit() {
            self.outbox.push(t);
        }
        let mut busy = !self.outbox.is_empty();
        // One sendmmsg per socket for the whole burst (a heartbeat round is one datagram
        // per peer). Never waits: a full socket buffer drops datagrams (counted) rather
        // than stalling detection; heartbeats are repeated every interval anyway.
        for (link, socket) in self.sockets.iter().enumerate() {
            let last = self.sockets.len() - 1;
            let batch: Vec<(&[u8], SocketAddr)> = self
                .outbox
                .iter()
                .filter(|t| t.link.min(last) == link)
                .map(|t| (t.bytes.as_slice(), t.dest))
                .collect();
            if batch.is_empty() {
                continue;
            }
            let refused = crate::udp::send_all(socket, &batch);
            self.counters
                .send_errors
                .fetch_add(refused as u64, Ordering::Relaxed);
        }
        while let Some(e) = self.core.poll_event() {
            busy = true;
            self.log_event(&e);
            let pe = self.event(&e);
            self.event_counts.record(&pe);
            if self.recent.len() == RECENT_EVENTS {
                self.recent.pop_front();
            }
            self.recent.push_back(pe.clone());
            // No receiver is fine: nobody is watching.
            let _ = self.events.send(Arc::new(pe));
        }
        while let Some(d) = self.core.poll_delivery() {
            busy = true;
            self.deliver(d);
        }
        busy
    }

    fn deliver(&mut self, d: Delivery) {
        let matched = self
            .subscribers
            .lock()
            .map(|s| {
                s.values()
                    .any(|topics| topics.is_empty() || topics.contains(&d.topic))
            })
            .unwrap_or(false);
        if !matched {
            self.counters.no_subscriber.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let _ = self.messages.send(Arc::new(pb::ClusterMessage {
            from: self.core.nodes()[d.from].name.clone(),
            from_generation: d.from_generation,
            topic: d.topic,
            payload: d.payload,
            broadcast: d.broadcast,
            seq: d.seq,
        }));
    }

    fn name(&self, i: usize) -> &str {
        &self.core.nodes()[i].name
    }

    fn log_event(&self, e: &Event) {
        let seq = e.seq;
        let view = e.view_id;
        match &e.kind {
            EventKind::NodeUp {
                node,
                generation,
                new_incarnation,
                previous_generation,
            } => info!(
                seq,
                view,
                node = %self.name(*node),
                generation,
                new_incarnation,
                previous_generation,
                "node up"
            ),
            EventKind::NodeLate { node, silent_for } => info!(
                seq,
                view,
                node = %self.name(*node),
                silent_for = ?silent_for,
                "node late"
            ),
            EventKind::NodeDead {
                node,
                generation,
                reason,
                silent_for,
            } => info!(
                seq,
                view,
                node = %self.name(*node),
                generation,
                reason = ?reason,
                silent_for = ?silent_for,
                "node dead"
            ),
            EventKind::LinkUp { node, link } => info!(
                seq,
                node = %self.name(*node),
                link,
                address = %self.core.nodes()[*node].addresses[*link],
                "link up"
            ),
            EventKind::LinkDown { node, link } => info!(
                seq,
                node = %self.name(*node),
                link,
                address = %self.core.nodes()[*node].addresses[*link],
                "link down"
            ),
            EventKind::QuorumChanged(q) => info!(
                seq,
                view,
                quorate = q.quorate,
                alive = q.alive,
                needed = q.needed,
                voters = q.voters,
                "quorum changed"
            ),
        }
    }

    /// Wall-clock time of core time `t`, relative to now, so a wall-clock step since
    /// start does not shift it (for display only; ordering is by seq).
    fn wall(&self, t: Time) -> SystemTime {
        SystemTime::now() - self.now().saturating_sub(t)
    }

    fn event(&self, e: &Event) -> pb::Event {
        use pb::event::Kind;
        let link = |node: usize, link: usize| {
            (
                self.name(node).to_owned(),
                link as u32,
                self.core.nodes()[node].addresses[link].to_string(),
            )
        };
        let kind = match &e.kind {
            EventKind::NodeUp {
                node,
                generation,
                new_incarnation,
                previous_generation,
            } => Kind::NodeUp(pb::NodeUp {
                node: self.name(*node).to_owned(),
                generation: *generation,
                new_incarnation: *new_incarnation,
                previous_generation: *previous_generation,
            }),
            EventKind::NodeLate { node, silent_for } => Kind::NodeLate(pb::NodeLate {
                node: self.name(*node).to_owned(),
                silent_for: Some(duration(*silent_for)),
            }),
            EventKind::NodeDead {
                node,
                generation,
                reason,
                silent_for,
            } => Kind::NodeDead(pb::NodeDead {
                node: self.name(*node).to_owned(),
                generation: *generation,
                reason: match reason {
                    DeadReason::Silent => pb::node_dead::Reason::Silent,
                    DeadReason::NeverHeard => pb::node_dead::Reason::NeverHeard,
                    DeadReason::Left => pb::node_dead::Reason::Left,
                } as i32,
                silent_for: Some(duration(*silent_for)),
            }),
            EventKind::LinkUp { node, link: l } => {
                let (node, link, address) = link(*node, *l);
                Kind::LinkUp(pb::LinkUp {
                    node,
                    link,
                    address,
                })
            }
            EventKind::LinkDown { node, link: l } => {
                let (node, link, address) = link(*node, *l);
                Kind::LinkDown(pb::LinkDown {
                    node,
                    link,
                    address,
                })
            }
            EventKind::QuorumChanged(q) => Kind::QuorumChanged(pb::QuorumChanged {
                quorum: Some(quorum(q)),
            }),
        };
        pb::Event {
            seq: e.seq,
            view_id: e.view_id,
            at: Some(timestamp(self.wall(e.at))),
            kind: Some(kind),
        }
    }

    fn view(&self, now: Time) -> pb::View {
        let me = self.core.local();
        let nodes = self
            .core
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let v = self.core.node_view(i, now);
                let links = if i == me {
                    self.bound
                        .iter()
                        .enumerate()
                        .map(|(k, a)| pb::Link {
                            index: k as u32,
                            address: a.to_string(),
                            state: pb::LinkState::Up as i32,
                            ..Default::default()
                        })
                        .collect()
                } else {
                    v.links
                        .iter()
                        .enumerate()
                        .map(|(k, l)| pb::Link {
                            index: k as u32,
                            address: spec.addresses[k].to_string(),
                            state: match l.state {
                                LinkState::Unknown => pb::LinkState::Unknown,
                                LinkState::Up => pb::LinkState::Up,
                                LinkState::Down => pb::LinkState::Down,
                            } as i32,
                            last_heard: l.last_heard.map(|h| duration(now.saturating_sub(h))),
                            rtt: l.rtt.map(duration),
                            loss: l.loss,
                            received: l.received,
                        })
                        .collect()
                };
                pb::Node {
                    name: spec.name.clone(),
                    role: match spec.role {
                        Role::Member => pb::NodeRole::Member,
                        Role::Witness => pb::NodeRole::Witness,
                    } as i32,
                    state: match v.state {
                        NodeState::Unknown => pb::NodeState::Unknown,
                        NodeState::Up => pb::NodeState::Up,
                        NodeState::Late => pb::NodeState::Late,
                        NodeState::Dead => pb::NodeState::Dead,
                    } as i32,
                    local: i == me,
                    generation: v.generation,
                    since: Some(timestamp(self.wall(v.since))),
                    state_age: Some(duration(now.saturating_sub(v.since))),
                    links,
                }
            })
            .collect();
        pb::View {
            view_id: self.core.view_id(),
            cluster: self.core.cluster().to_owned(),
            local_node: self.name(me).to_owned(),
            nodes,
            quorum: Some(quorum(&self.core.quorum())),
        }
    }

    fn status(&self, now: Time) -> pb::StatusResponse {
        let c = self.core.counters();
        let t = self.core.timing();
        let sc = &self.counters;
        let rejected = self
            .core
            .rejections()
            .into_iter()
            .map(|(r, n)| (r.as_str().to_owned(), n))
            .chain([(
                "receive_queue_full".to_owned(),
                sc.receive_drops.load(Ordering::Relaxed),
            )])
            .collect();
        pb::StatusResponse {
            view: Some(self.view(now)),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            generation: self.core.generation(),
            uptime: Some(duration(now)),
            rejected,
            counters: Some(pb::Counters {
                datagrams_sent: c.datagrams_sent,
                datagrams_received: c.datagrams_received,
                send_errors: sc.send_errors.load(Ordering::Relaxed),
                messages_sent: c.messages_sent,
                messages_delivered: c.messages_delivered,
                messages_retransmitted: c.messages_retransmitted,
                messages_dropped: c.messages_dropped + sc.no_subscriber.load(Ordering::Relaxed),
                watch_subscribers_dropped: sc.watch_dropped.load(Ordering::Relaxed),
                stalls: c.stalls,
            }),
            timing: Some(pb::Timing {
                interval: Some(duration(t.interval)),
                warn_after: Some(duration(t.warn_after)),
                dead_after: Some(duration(t.dead_after)),
                init_dead: Some(duration(t.init_dead)),
            }),
            recent_events: self.recent.iter().cloned().collect(),
        }
    }
}

fn quorum(q: &Quorum) -> pb::Quorum {
    pb::Quorum {
        policy: match q.policy {
            QuorumPolicy::TwoNode => pb::QuorumPolicy::TwoNode,
            QuorumPolicy::Majority => pb::QuorumPolicy::Majority,
        } as i32,
        quorate: q.quorate,
        voters: q.voters,
        alive: q.alive,
        needed: q.needed,
    }
}

/// The gRPC service: forwards to the protocol loop and streams from its broadcasts.
struct Service {
    commands: mpsc::Sender<Command>,
    messages: broadcast::Sender<Arc<pb::ClusterMessage>>,
    subscribers: Arc<Mutex<HashMap<u64, Vec<String>>>>,
    next_subscriber: AtomicU64,
    counters: Arc<ShellCounters>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl Service {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("membership is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("membership is shutting down"))
    }
}

/// Removes a Subscribe stream's topics from the registry when the stream is dropped.
struct Registration {
    id: u64,
    subscribers: Arc<Mutex<HashMap<u64, Vec<String>>>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut s) = self.subscribers.lock() {
            s.remove(&self.id);
        }
    }
}

#[tonic::async_trait]
impl pb::membership_server::Membership for Service {
    type WatchStream = BoxStream<pb::WatchResponse>;
    type SubscribeStream = BoxStream<pb::ClusterMessage>;

    async fn watch(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (snapshot, rx) = self.ask(|reply| Command::Watch { reply }).await?;
        Ok(Response::new(watch_stream(
            snapshot,
            rx,
            self.counters.clone(),
        )))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(
            self.ask(|reply| Command::Status { reply }).await?,
        ))
    }

    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let r = request.into_inner();
        let to = (!r.to.is_empty()).then_some(r.to);
        let result = self
            .ask(|reply| Command::Send {
                to,
                topic: r.topic,
                payload: r.payload,
                reply,
            })
            .await?;
        match result {
            Ok(queued_for) => Ok(Response::new(pb::SendResponse { queued_for })),
            Err(e) => Err(match e {
                SendError::Topic(_) | SendError::Payload(_) | SendError::ToSelf => {
                    Status::invalid_argument(e.to_string())
                }
                SendError::UnknownNode(_) => Status::not_found(e.to_string()),
                SendError::NotAlive(_) => Status::failed_precondition(e.to_string()),
                SendError::QueueFull(_) => Status::resource_exhausted(e.to_string()),
                SendError::Stopped => Status::unavailable(e.to_string()),
            }),
        }
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let topics = request.into_inner().topics;
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let rx = self.messages.subscribe();
        if let Ok(mut s) = self.subscribers.lock() {
            s.insert(id, topics.clone());
        }
        let registration = Registration {
            id,
            subscribers: self.subscribers.clone(),
        };
        let stream = futures::stream::unfold(Some((rx, registration)), move |state| {
            let topics = topics.clone();
            async move {
                let (mut rx, reg) = state?;
                loop {
                    match rx.recv().await {
                        Ok(m) if topics.is_empty() || topics.contains(&m.topic) => {
                            return Some((Ok(Arc::unwrap_or_clone(m)), Some((rx, reg))));
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some((
                                Err(Status::resource_exhausted("subscriber too slow")),
                                None,
                            ));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The snapshot, then every event; a subscriber that fell more than [`WATCH_BUFFER`] events
/// behind gets RESOURCE_EXHAUSTED and the stream ends (the broadcast dropped what it missed).
fn watch_stream(
    snapshot: pb::WatchResponse,
    rx: broadcast::Receiver<Arc<pb::Event>>,
    counters: Arc<ShellCounters>,
) -> BoxStream<pb::WatchResponse> {
    let events = futures::stream::unfold(Some(rx), move |rx| {
        let counters = counters.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(e) => Some((
                    Ok(pb::WatchResponse {
                        kind: Some(pb::watch_response::Kind::Event(Arc::unwrap_or_clone(e))),
                        snapshot_seq: 0,
                    }),
                    Some(rx),
                )),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    counters.watch_dropped.fetch_add(1, Ordering::Relaxed);
                    Some((
                        Err(Status::resource_exhausted("watch subscriber too slow")),
                        None,
                    ))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        }
    });
    Box::pin(futures::StreamExt::chain(
        futures::stream::once(async { Ok(snapshot) }),
        events,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn slow_watcher_is_dropped_with_resource_exhausted_and_counted() {
        let (tx, rx) = broadcast::channel(WATCH_BUFFER);
        let counters = Arc::new(ShellCounters::default());
        let snapshot = pb::WatchResponse {
            kind: Some(pb::watch_response::Kind::Snapshot(pb::View::default())),
            snapshot_seq: 0,
        };
        let mut s = watch_stream(snapshot, rx, counters.clone());
        // The publisher never waits: it runs WATCH_BUFFER + 1 events ahead.
        for seq in 1..=WATCH_BUFFER as u64 + 1 {
            tx.send(Arc::new(pb::Event {
                seq,
                ..Default::default()
            }))
            .unwrap();
        }
        assert!(s.next().await.unwrap().is_ok(), "snapshot first");
        let err = s.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(s.next().await.is_none(), "stream ends");
        assert_eq!(counters.watch_dropped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn watcher_within_the_buffer_gets_every_event_in_order() {
        let (tx, rx) = broadcast::channel(WATCH_BUFFER);
        let counters = Arc::new(ShellCounters::default());
        let mut s = watch_stream(pb::WatchResponse::default(), rx, counters.clone());
        for seq in 1..=WATCH_BUFFER as u64 {
            tx.send(Arc::new(pb::Event {
                seq,
                ..Default::default()
            }))
            .unwrap();
        }
        drop(tx);
        s.next().await.unwrap().unwrap();
        let mut seqs = Vec::new();
        while let Some(r) = s.next().await {
            match r.unwrap().kind {
                Some(pb::watch_response::Kind::Event(e)) => seqs.push(e.seq),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seqs, (1..=WATCH_BUFFER as u64).collect::<Vec<_>>());
        assert_eq!(counters.watch_dropped.load(Ordering::Relaxed), 0);
    }
}
