//! One worker per group: start, stop, restart and verify on the driver's command, and the
//! monitors on their intervals; and the readiness check of the groups that can tell.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::driver::{Event, GroupCmd};
use crate::agents::group::{GroupRunner, MonitorFailure};
use crate::alarm::Alarm;
use crate::core::AgentOutcome;
use crate::provider::stats::{self, Routine};
#[cfg(doc)]
use crate::provider::steady;

/// Overrides the readiness interval ([`steady::readiness_interval`]; milliseconds) so
/// end-to-end tests see a revoked token within seconds; not meant for production, hence an
/// undocumented variable.
pub const READINESS_INTERVAL_ENV: &str = "TANDEM_AGENT_READINESS_INTERVAL_MS";

/// The readiness interval: the environment's override, else `computed`.
pub(super) fn readiness_interval(computed: Duration) -> Duration {
    std::env::var(READINESS_INTERVAL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map_or(computed, Duration::from_millis)
}

pub(super) async fn group_worker(
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
    // The probe's actions at start-up belong to no event.
    runner.take_actions();
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
                    AgentOutcome::Started
                }
                Err(e) => {
                    monitoring = false;
                    AgentOutcome::StartFailed {
                        clean: e.clean,
                        reason: e.to_string(),
                    }
                }
            }),
            Some(GroupCmd::Verify) => Some(match runner.monitor().await {
                Ok(()) => {
                    monitoring = true;
                    AgentOutcome::Verified
                }
                Err(f) => {
                    // Paused until the core decides, as for a failed periodic monitor.
                    monitoring = false;
                    failed(&f)
                }
            }),
            Some(GroupCmd::Stop) => {
                monitoring = false;
                Some(match runner.stop().await {
                    Ok(()) => AgentOutcome::Stopped,
                    Err(e) => AgentOutcome::StopFailed {
                        reason: e.to_string(),
                    },
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
                    Some(failed(&f))
                } else if go {
                    let r = match runner.stop().await {
                        Ok(()) => runner.start().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    monitoring = r.is_ok();
                    Some(match r {
                        Ok(()) => AgentOutcome::Restarted,
                        Err(reason) => AgentOutcome::RestartFailed { reason },
                    })
                } else {
                    // The driver moved on (a stop); that command decides what happens.
                    None
                }
            }
            None => {
                let now = Instant::now();
                let mut failure = None;
                for i in 0..due.len() {
                    if due[i] > now {
                        continue;
                    }
                    // A monitor that would spend a failover's share of its token's budget
                    // is postponed, not failed: the round comes later instead.
                    let wait = runner.budget_wait(i);
                    if !wait.is_zero() {
                        postponed(gi, Routine::Monitor, wait);
                        due[i] = now + wait;
                        continue;
                    }
                    due[i] = Instant::now() + intervals[i];
                    if let Err(f) = runner.monitor_one(i).await {
                        failure = Some(f);
                        break;
                    }
                }
                failure.map(|f| {
                    // Paused until the core decides (restart or release).
                    monitoring = false;
                    failed(&f)
                })
            }
        };
        if had_cmd {
            due = schedule(Instant::now());
        }
        // Taken every round: monitors that found nothing wrong are no event.
        let actions = runner.take_actions();
        if let Some(result) = result
            && tx
                .send(Event::Group {
                    group: gi,
                    outcome: result,
                    actions,
                })
                .await
                .is_err()
        {
            return;
        }
    }
}

/// A monitor's failure as the core hears it: lost to another server, or failed.
fn failed(f: &MonitorFailure) -> AgentOutcome {
    if f.lost_to.is_some() {
        AgentOutcome::Lost {
            reason: f.to_string(),
        }
    } else {
        AgentOutcome::MonitorFailed {
            reason: f.to_string(),
        }
    }
}

/// Monitors every agent of the group, past failures, for one that runs on another server.
async fn lost_elsewhere(runner: &GroupRunner) -> Option<MonitorFailure> {
    for i in 0..runner.monitor_intervals().len() {
        if let Err(f) = runner.monitor_one(i).await
            && f.lost_to.is_some()
        {
            return Some(f);
        }
    }
    None
}

pub(super) async fn readiness_task(
    gi: usize,
    runner: Arc<GroupRunner>,
    tx: mpsc::Sender<Event>,
    every: Duration,
) {
    let mut alarm = Alarm::new("readiness");
    loop {
        let wait = runner.readiness_budget_wait();
        if !wait.is_zero() {
            postponed(gi, Routine::Readiness, wait);
            alarm.set(Some(Instant::now() + wait));
            alarm.wait().await;
            continue;
        }
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
        alarm.set(Some(Instant::now() + every));
        alarm.wait().await;
    }
}

/// Logs a periodic read postponed for the token's request budget (debug: at a tight budget it
/// happens every round; `check-config` says which intervals to raise).
fn postponed(gi: usize, what: Routine, wait: Duration) {
    stats::postponed(what);
    tracing::debug!(group = gi, what = what.as_str(), wait = ?wait, "postponed: the API token's routine share of its request budget is spent");
}
