//! The driver: owns the core, feeds it the events of the other tasks and executes its outputs.
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tandem_config::ClusterConfig;
use tandem_proto::agent::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::notify;
use super::state::write_standby;
use crate::agents::group::GroupRunner;
use crate::alarm::Alarm;
use crate::core::restart::{Decision, RestartTracker};
use crate::core::watch::{DisconnectWatch, StallWatch};
use crate::core::{
    AgentOutcome, Command, CommandError, Core, Input, LocalState, Membership, Output, Time,
};
use crate::health::Health;
use crate::metrics::{Metrics, StartCause};

#[derive(Debug)]
pub(super) enum Event {
    Membership(Membership),
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
pub(super) enum GroupResult {
    Outcome(AgentOutcome),
    MonitorFailed(String),
    /// A monitor found the resource on another server (`MonitorFailure::lost_to`).
    Lost(String),
    /// The check after a stall found every agent running.
    Verified,
    Restarted(Result<(), String>),
}

#[derive(Debug)]
pub(super) enum GroupCmd {
    Start,
    Stop,
    Restart(Duration),
    /// Monitor every agent now (after this process was stalled, while membership is
    /// unreachable, or when a peer newly announces holding the group).
    Verify,
}

pub(super) struct Driver {
    pub(super) cfg: Arc<ClusterConfig>,
    pub(super) node: String,
    pub(super) hv: Core,
    /// The instant the core's clock counts from.
    pub(super) epoch: Instant,
    pub(super) runners: Vec<Arc<GroupRunner>>,
    pub(super) cmds: Vec<mpsc::UnboundedSender<GroupCmd>>,
    pub(super) trackers: Vec<RestartTracker>,
    pub(super) health: Health,
    pub(super) healthy: bool,
    pub(super) send_tx: mpsc::Sender<(Option<String>, Vec<u8>)>,
    pub(super) state_dir: PathBuf,
    pub(super) disconnected_since: Option<Instant>,
    pub(super) sends_dropped: u64,
    pub(super) reported_down: bool,
    pub(super) readiness: Vec<Option<(Vec<String>, std::time::SystemTime)>>,
    /// Per group, the last other node seen holding it (kept after that node dies), to tell
    /// a failover from a handover when the group starts here. Kept only with metrics on.
    pub(super) last_holder: Vec<Option<String>>,
    pub(super) metrics: Option<Metrics>,
    /// Notices a stall of this process (see `check_stall`).
    pub(super) stall: StallWatch,
    /// Checks the groups running here while membership is unreachable (see
    /// `check_disconnected`).
    pub(super) disconnect: DisconnectWatch,
    /// Per group: running here but not confirmed since a stall, since a takeover became
    /// possible during a membership outage, or since a peer announced holding it too (see
    /// `check_stall`, `check_disconnected`, `Output::Verify`).
    pub(super) unverified: Vec<bool>,
}

impl Driver {
    pub(super) async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Event>,
        shutdown: impl Future<Output = ()>,
    ) {
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
            let t = self.at(Instant::now());
            self.stall.arm(armed, t);
            let next = [
                Some(self.epoch + self.hv.next_deadline()),
                self.stall.next_tick().map(|t| self.epoch + t),
                self.disconnect.next_check(armed).map(|t| self.epoch + t),
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
    pub(super) fn at(&self, now: Instant) -> Time {
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
        let t = self.at(Instant::now());
        let Some(gap) = self.stall.wake(t) else {
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
        let t = self.at(now);
        let Some(first) = self.disconnect.due(t, armed) else {
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

    pub(super) fn dispatch(&mut self) {
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
            Event::Membership(m) => {
                if self.disconnected_since.take().is_some() {
                    info!("membership connected");
                    self.disconnect.connected();
                }
                self.reported_down = false;
                self.hv.handle(self.at(now), Input::Membership(m));
            }
            Event::Disconnected(why) => {
                if !self.reported_down {
                    // Once per outage (and at start, until the first connection).
                    warn!(reason = %why, "membership unreachable; keeping what is held, starting nothing");
                    self.reported_down = true;
                }
                let since = *self.disconnected_since.get_or_insert(now);
                let since = self.at(since);
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
}
