//! The protocol loop: a thin tokio shell that owns the sans-IO [`Core`] and the UDP sockets.
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
//! (enlarged to [`RECV_BUFFER`](super::RECV_BUFFER)) is the only inbox; what it drops under a flood is read back
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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tandem_daemon_kit::notify::Watchdog;
use tandem_daemon_kit::timer::Timer;
use tandem_proto::membership::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tracing::{info, warn};

use super::convert::Report;
use super::{Command, ShellCounters, event_log};
use crate::core::{Core, Delivery, Time};

/// Datagrams read per wakeup before the loop looks at its timers and commands again; also
/// the most read before an expired deadline fires (datagrams that arrived before the timer
/// ran, e.g. while the process was frozen, may prove a peer alive). Bounded so a flood
/// cannot delay detection, heartbeats or the watchdog.
const RECV_BATCH: usize = 64;
/// Events kept for Status (`recent_events`): enough for "what just happened" at a glance,
/// bounded so a flapping link cannot grow memory.
pub(super) const RECENT_EVENTS: usize = 32;

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

pub(super) struct Shell {
    pub(super) core: Core,
    pub(super) clock: Clock,
    pub(super) sockets: Vec<std::net::UdpSocket>,
    /// Readiness of `sockets`, disarmed while coalescing so the wait costs no wakeups.
    pub(super) poller: crate::udp::Poller,
    /// The earlier of the core's next deadline and the watchdog's next ping. Timerfds, not
    /// tokio sleeps: one wake-up per deadline (see [`tandem_daemon_kit::timer`]).
    pub(super) timer: Timer,
    /// Set while coalescing: when to read what arrived meanwhile.
    pub(super) coalesce_timer: Timer,
    /// Receive buffers, reused for every datagram.
    pub(super) batch: crate::udp::Batch,
    /// Datagrams of one flush, grouped by socket before sending.
    pub(super) outbox: Vec<crate::core::Transmit>,
    /// Per socket, the kernel's cumulative count of datagrams dropped for a full queue.
    pub(super) kernel_drops: Vec<u32>,
    pub(super) bound: Vec<SocketAddr>,
    pub(super) counters: Arc<ShellCounters>,
    pub(super) events: broadcast::Sender<Arc<pb::Event>>,
    /// The last [`RECENT_EVENTS`] events, for Status.
    pub(super) recent: std::collections::VecDeque<pb::Event>,
    pub(super) event_counts: crate::metrics::EventCounters,
    pub(super) messages: broadcast::Sender<Arc<pb::ClusterMessage>>,
    pub(super) subscribers: Arc<Mutex<HashMap<u64, Vec<String>>>>,
}

/// Core time for the protocol loop: monotonic since `epoch`, never going back for the core.
pub(super) struct Clock {
    epoch: Instant,
    /// The latest time given to the core: time never goes back for it.
    last_now: std::cell::Cell<Time>,
}

impl Clock {
    pub(super) fn new(epoch: Instant) -> Clock {
        Clock {
            epoch,
            last_now: std::cell::Cell::new(Duration::ZERO),
        }
    }

    pub(super) fn now(&self) -> Time {
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

    /// Wall-clock time of core time `t`, relative to now, so a wall-clock step since
    /// start does not shift it (for display only; ordering is by seq).
    pub(super) fn wall(&self, t: Time) -> SystemTime {
        SystemTime::now() - self.now().saturating_sub(t)
    }

    fn instant(&self, t: Time) -> Instant {
        self.epoch + t
    }
}

impl Shell {
    fn report(&self) -> Report<'_> {
        Report {
            core: &self.core,
            bound: &self.bound,
            counters: &self.counters,
            recent: &self.recent,
            clock: &self.clock,
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        // Pinged from this loop: a stuck loop stops it.
        let mut watchdog = Watchdog::from_env();
        let mut commands_open = true;
        self.core.handle_timeout(self.clock.now());
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
            let wake = match (due, watchdog.due()) {
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
                    watchdog.ping_if_due(now);
                    if due.is_some_and(|d| now >= d) {
                        let read = self.receive(RECV_BATCH);
                        if read >= RECV_BATCH {
                            // Some may be left, unannounced: read on below.
                            datagrams = Some(read);
                        }
                        let now = self.clock.now();
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
        let now = self.clock.now();
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
        self.core.next_deadline().map(|d| self.clock.instant(d))
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
                            let now = self.clock.now();
                            let at = self.clock.arrival(now, wall_now, r.arrived);
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
        let now = self.clock.now();
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
                let _ = reply.send(self.report().status(now));
            }
            Command::Watch { reply } => {
                // Subscribing and taking the snapshot in one step of the loop: the first
                // event the stream gets is exactly snapshot_seq + 1.
                let rx = self.events.subscribe();
                let snapshot = pb::WatchResponse {
                    kind: Some(pb::watch_response::Kind::Snapshot(self.report().view(now))),
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
            event_log::log_event(self.core.nodes(), &e);
            let pe = self.report().event(&e);
            self.event_counts.record(&pe);
            // Notices have their own ring (Status `notices`): a burst of them must not push
            // the view's changes out of `recent_events`.
            if !matches!(e.kind, crate::core::EventKind::Notice(_)) {
                if self.recent.len() == RECENT_EVENTS {
                    self.recent.pop_front();
                }
                self.recent.push_back(pe.clone());
            }
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
            // A notice is kept by the core: not lost, not counted as dropped.
            if !d.retained {
                self.counters.no_subscriber.fetch_add(1, Ordering::Relaxed);
            }
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
}
