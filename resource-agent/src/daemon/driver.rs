//! The driver: owns the core, feeds it the events of the other tasks and executes its
//! outputs. It decides nothing: every wake-up goes to the core (a stall is noticed there),
//! and what the core returns is carried out as it is.
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tandem_config::ClusterConfig;
use tandem_daemon_kit::notify::Watchdog;
use tandem_proto::agent::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, warn};

use super::convert;
use super::state::write_standby;
use crate::agents::group::GroupRunner;
use crate::alarm::Alarm;
use crate::core::notice::NOTICE_TOPIC;
use crate::core::{
    ActionRecord, AgentOutcome, Command, CommandError, Core, Event as CoreEvent, Input, Membership,
    Output, TOPIC, Time,
};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::provider::{FenceOutcome, Fencer};

/// What a fence did, for status and the log: "droplet 3164444 powered off (action 7)".
fn describe_fence(f: &Fencer, o: &FenceOutcome) -> String {
    let noun = f.provider().server_noun();
    match (&o.action_id, o.already_off) {
        (_, true) => format!("{noun} {} was off already", o.server),
        (Some(a), _) => format!(
            "{noun} {} powered off (action {a}, {} API calls, {:.1}s)",
            o.server,
            o.api_calls,
            o.elapsed.as_secs_f64()
        ),
        (None, _) => format!(
            "{noun} {} powered off ({} API calls, {:.1}s)",
            o.server,
            o.api_calls,
            o.elapsed.as_secs_f64()
        ),
    }
}

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
        outcome: AgentOutcome,
        actions: Vec<ActionRecord>,
    },
    Health(Box<Health>),
    Readiness {
        group: usize,
        problems: Vec<String>,
        at: std::time::SystemTime,
    },
    /// The end of a power-off the core asked for ([`Output::Fence`]).
    Fenced {
        node: String,
        death: u64,
        result: Result<String, String>,
        took: Duration,
    },
    Status(oneshot::Sender<pb::StatusResponse>),
    /// A new watcher: the snapshot, its seq and the events after it.
    Watch(oneshot::Sender<(pb::WatchResponse, broadcast::Receiver<Arc<pb::Event>>)>),
    Command(Command, oneshot::Sender<Result<String, CommandError>>),
}

#[derive(Debug)]
pub(super) enum GroupCmd {
    Start,
    Stop,
    Restart(Duration),
    /// Monitor every agent now ([`Output::Verify`]).
    Verify,
}

pub(super) struct Driver {
    pub(super) cfg: Arc<ClusterConfig>,
    pub(super) node: String,
    pub(super) core: Core,
    /// The instant the core's clock counts from.
    pub(super) epoch: Instant,
    pub(super) runners: Vec<Arc<GroupRunner>>,
    pub(super) cmds: Vec<mpsc::UnboundedSender<GroupCmd>>,
    /// The health checks' details, for status (the core gets healthy or not).
    pub(super) health: Health,
    /// To membership's Send: (topic, to, payload).
    pub(super) send_tx: mpsc::Sender<(&'static str, Option<String>, Vec<u8>)>,
    pub(super) state_dir: PathBuf,
    pub(super) sends_dropped: u64,
    pub(super) readiness: Vec<Option<(Vec<String>, std::time::SystemTime)>>,
    pub(super) metrics: Option<Metrics>,
    /// Powers dead peers off (`fencing:`), with its own token.
    pub(super) fencer: Option<Arc<Fencer>>,
    /// The driver's own inbox, for the results of the fences it runs.
    pub(super) events: mpsc::Sender<Event>,
    /// The agent's events, to every `Watch` stream.
    pub(super) watchers: broadcast::Sender<Arc<pb::Event>>,
    /// The seq of the last event published.
    pub(super) event_seq: u64,
    /// The last [`RECENT_EVENTS`] events, for Status.
    pub(super) recent: std::collections::VecDeque<pb::Event>,
    pub(super) incarnation: u64,
}

/// Events kept for Status (`recent_events`): the last few moves and fences with their causes
/// and durations, for a one-shot look; `ipctl watch` follows them all.
pub(super) const RECENT_EVENTS: usize = 16;

impl Driver {
    pub(super) async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Event>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        // Pinged from the loop itself: a stuck driver stops it.
        let mut watchdog = Watchdog::from_env();
        // One timer for the earliest of the core's deadline and the watchdog: one wake-up
        // each, and none re-created per iteration.
        let mut alarm = Alarm::new("driver");
        loop {
            let next = [Some(self.epoch + self.core.next_deadline()), watchdog.due()]
                .into_iter()
                .flatten()
                .min();
            alarm.set(next);
            tokio::select! {
                () = &mut shutdown => return,
                ev = rx.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => return,
                },
                () = alarm.wait() => {
                    let now = Instant::now();
                    self.core.handle(self.at(now), Input::Tick);
                    watchdog.ping_if_due(now);
                }
            }
            self.dispatch();
        }
    }

    /// `now` on the core's clock.
    pub(super) fn at(&self, now: Instant) -> Time {
        now.saturating_duration_since(self.epoch)
    }

    fn group_idx(&self, name: &str) -> Option<usize> {
        self.runners.iter().position(|r| r.name() == name)
    }

    /// Executes what the core asked for.
    pub(super) fn dispatch(&mut self) {
        for out in self.core.drain_outputs() {
            let group = match &out {
                Output::Start { group, .. }
                | Output::Stop(group)
                | Output::Restart { group, .. }
                | Output::Verify(group)
                | Output::Forgive(group) => Some(group.clone()),
                Output::Send { .. }
                | Output::PersistStandby(_)
                | Output::Fence { .. }
                | Output::Notice(_)
                | Output::Event(_) => None,
            };
            let gi = match group.map(|g| (self.group_idx(&g), g)) {
                Some((Some(gi), _)) => gi,
                Some((None, g)) => {
                    error!(group = %g, "the core named an unknown group");
                    continue;
                }
                None => 0,
            };
            match out {
                Output::Start { group, cause } => {
                    if let Some(m) = &self.metrics {
                        m.record_start(&group, cause);
                    }
                    let _ = self.cmds[gi].send(GroupCmd::Start);
                }
                Output::Stop(_) => {
                    let _ = self.cmds[gi].send(GroupCmd::Stop);
                }
                Output::Restart { after, .. } => {
                    let _ = self.cmds[gi].send(GroupCmd::Restart(after));
                }
                Output::Verify(_) => {
                    let _ = self.cmds[gi].send(GroupCmd::Verify);
                }
                Output::Forgive(_) => self.runners[gi].reset_failures(),
                Output::Send { to, payload } => self.send(TOPIC, to, payload),
                Output::Notice(payload) => self.send(NOTICE_TOPIC, None, payload),
                Output::Fence {
                    node,
                    death,
                    reason,
                } => self.fence(node, death, reason),
                Output::Event(e) => self.publish(e),
                Output::PersistStandby(on) => {
                    if let Err(e) = write_standby(&self.state_dir, on) {
                        error!(error = %e, standby = on, "cannot persist the standby flag; it holds until restart");
                    }
                }
            }
        }
    }

    /// Queues a message for membership's Send; never waits (a full queue drops, counted).
    fn send(&mut self, topic: &'static str, to: Option<String>, payload: Vec<u8>) {
        if self.send_tx.try_send((topic, to, payload)).is_err() {
            self.sends_dropped += 1;
            if self.sends_dropped % 100 == 1 {
                warn!(
                    dropped = self.sends_dropped,
                    "outgoing message queue full; dropping"
                );
            }
        }
    }

    /// Powers `node` off in a task of its own (the driver never waits for the provider);
    /// the result comes back as [`Event::Fenced`].
    fn fence(&self, node: String, death: u64, reason: String) {
        let Some(fencer) = self.fencer.clone() else {
            error!(node = %node, "the core asked for a fence without fencing configured");
            return;
        };
        let id = self.cfg.node(&node).and_then(|n| n.provider_id.clone());
        let tx = self.events.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            tracing::info!(node = %node, reason = %reason, provider = %fencer.provider(), "fencing: powering the node off");
            let result = match fencer.power_off(&node, id.as_deref()).await {
                Ok(o) => Ok(describe_fence(&fencer, &o)),
                Err(e) => Err(e.to_string()),
            };
            let took = started.elapsed();
            let _ = tx
                .send(Event::Fenced {
                    node,
                    death,
                    result,
                    took,
                })
                .await;
        });
    }

    /// Numbers and stamps one of the core's events and sends it to every watcher.
    fn publish(&mut self, e: CoreEvent) {
        self.event_seq += 1;
        let e = convert::event(
            e,
            self.event_seq,
            std::time::SystemTime::now(),
            self.incarnation,
            &self.node,
        );
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(e.clone());
        // No watcher is no error.
        let _ = self.watchers.send(Arc::new(e));
    }

    fn on_event(&mut self, ev: Event) {
        let now = self.at(Instant::now());
        let input = match ev {
            Event::Membership(m) => Input::Membership(m),
            Event::Disconnected(why) => Input::Disconnected(why),
            Event::Message {
                from,
                generation,
                payload,
            } => Input::Message {
                from,
                generation,
                payload,
            },
            Event::Group {
                group,
                outcome,
                actions,
            } => Input::Agent {
                group: self.runners[group].name().to_owned(),
                outcome,
                actions,
            },
            Event::Health(h) => {
                self.health = *h;
                Input::Health(self.health.healthy())
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
                Input::Tick
            }
            Event::Fenced {
                node,
                death,
                result,
                took,
            } => {
                if let Some(m) = &self.metrics {
                    m.record_fence(&node, result.is_ok(), took);
                }
                Input::Fenced {
                    node,
                    death,
                    result,
                }
            }
            Event::Status(reply) => {
                // A wake-up first: a stall is noticed before the reply says "running".
                self.core.handle(now, Input::Tick);
                let _ = reply.send(self.status(now));
                return;
            }
            Event::Watch(reply) => {
                // As for status; and what that wake-up emits goes out before the snapshot,
                // so the stream's first event is exactly snapshot_seq + 1.
                self.core.handle(now, Input::Tick);
                self.dispatch();
                let rx = self.watchers.subscribe();
                let snapshot = pb::WatchResponse {
                    kind: Some(pb::watch_response::Kind::Snapshot(self.status(now))),
                    snapshot_seq: self.event_seq,
                };
                let _ = reply.send((snapshot, rx));
                return;
            }
            Event::Command(cmd, reply) => {
                let _ = reply.send(self.core.command(now, cmd));
                return;
            }
        };
        self.core.handle(now, input);
    }
}
