//! Runs the agents of one resource group: start in order (consecutive reserved IPs together),
//! stop in reverse, a failed start stops what already started; keeps the per-agent status the
//! Agent service reports.
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Action, Agent, AgentError, Kind, RunState};
use crate::core::ActionRecord;

/// Extra time beyond an agent's own limit before the runner gives up on it: agents enforce
/// their limits themselves; this only guards against one that does not.
const BACKSTOP: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Unknown,
    Stopped,
    Starting,
    Running,
    Stopping,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastAction {
    pub action: Action,
    pub ok: bool,
    pub timed_out: bool,
    pub started_at: SystemTime,
    pub took: Duration,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub name: String,
    pub kind: Kind,
    pub state: AgentState,
    pub last_action: Option<LastAction>,
    /// Failed actions since the last [`GroupRunner::reset_failures`].
    pub failures: u32,
    pub detail: String,
}

/// A start that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{agent}: {error}{}{}{}",
    .also.iter().map(|(a, e)| format!("; {a}: {e}")).collect::<String>(),
    if *.clean { "" } else { "; stopping what had started also failed" },
    half_moved(.moved, .agent, .also)
)]
pub struct StartError {
    /// The first agent (in group order) whose start failed, and why.
    pub agent: String,
    pub error: AgentError,
    /// The other agents whose start failed (reserved IPs starting together), in order.
    pub also: Vec<(String, AgentError)>,
    /// Everything that had started was stopped again.
    pub clean: bool,
    /// Reserved IPs this start moved here before the failure, which stay here (their stop
    /// moves nothing): the group is half moved.
    pub moved: Vec<String>,
}

/// What a failed start leaves moved, said in its message.
fn half_moved(moved: &[String], agent: &str, also: &[(String, AgentError)]) -> String {
    if moved.is_empty() {
        return String::new();
    }
    let not: Vec<&str> = std::iter::once(agent)
        .chain(also.iter().map(|(a, _)| a.as_str()))
        .collect();
    format!(
        "; half moved: {} moved here and {} here (a reserved IP is not moved back), {} did not \
         move; the group is stopped here until the next start moves the rest",
        moved.join(", "),
        if moved.len() == 1 { "stays" } else { "stay" },
        not.join(", ")
    )
}

/// A stop that failed for at least one agent (the others were still stopped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .failures.iter().map(|(a, e)| format!("{a}: {e}")).collect::<Vec<_>>().join("; "))]
pub struct StopError {
    pub failures: Vec<(String, AgentError)>,
}

/// A monitor that found an agent not running or failing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{agent}: {reason}")]
pub struct MonitorFailure {
    pub agent: String,
    pub reason: String,
    /// The resource runs on another server ([`RunState::HeldElsewhere`]): the group was
    /// lost, which a restart here must not undo.
    pub lost_to: Option<String>,
}

#[derive(Debug)]
pub struct GroupRunner {
    name: String,
    agents: Vec<Box<dyn Agent>>,
    records: Mutex<Vec<AgentRecord>>,
    /// Every action since the last [`GroupRunner::take_actions`], for the group's events.
    journal: Mutex<Vec<ActionRecord>>,
}

impl GroupRunner {
    pub fn new(name: &str, agents: Vec<Box<dyn Agent>>) -> Self {
        let records = agents
            .iter()
            .map(|a| AgentRecord {
                name: a.name(),
                kind: a.kind(),
                state: AgentState::Unknown,
                last_action: None,
                failures: 0,
                detail: String::new(),
            })
            .collect();
        GroupRunner {
            name: name.to_owned(),
            agents,
            records: Mutex::new(records),
            journal: Mutex::new(Vec::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn records(&self) -> Vec<AgentRecord> {
        self.lock().clone()
    }

    /// The actions run since the last call, in order (the worker takes them after each
    /// command or monitor round, so they never pile up).
    pub fn take_actions(&self) -> Vec<ActionRecord> {
        std::mem::take(&mut *self.journal.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn reset_failures(&self) {
        for r in self.lock().iter_mut() {
            r.failures = 0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AgentRecord>> {
        // A panic elsewhere cannot leave these records half-written; keep serving them.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, i: usize, state: AgentState) {
        self.lock()[i].state = state;
    }

    async fn act(&self, i: usize, action: Action) -> Result<RunState, AgentError> {
        let agent = &self.agents[i];
        let started_at = SystemTime::now();
        let t0 = Instant::now();
        let limit = agent.settings().timeout + BACKSTOP;
        let fut = async {
            match action {
                Action::Start => agent.start().await.map(|()| RunState::Running),
                Action::Stop => agent
                    .stop()
                    .await
                    .map(|()| RunState::Stopped { detail: None }),
                Action::Monitor => agent.monitor().await,
            }
        };
        let result = match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(AgentError::Timeout {
                action,
                after: limit,
                detail: String::new(),
            }),
        };
        let took = t0.elapsed();
        let mut records = self.lock();
        let rec = &mut records[i];
        let message = match &result {
            Ok(RunState::Stopped { detail: Some(d) }) => d.clone(),
            Ok(RunState::HeldElsewhere { holder }) => format!("held by {holder}"),
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        rec.last_action = Some(LastAction {
            action,
            ok: result.is_ok(),
            timed_out: result.as_ref().err().is_some_and(AgentError::is_timeout),
            started_at,
            took,
            message: message.clone(),
        });
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ActionRecord {
                agent: rec.name.clone(),
                action: action.to_string(),
                call: agent.provider_call(action),
                ok: result.is_ok(),
                timed_out: result.as_ref().err().is_some_and(AgentError::is_timeout),
                took,
                message: message.clone(),
            });
        rec.detail = match &result {
            Ok(RunState::RunningAs { detail }) => detail.clone(),
            _ => message,
        };
        match &result {
            Ok(RunState::Running | RunState::RunningAs { .. }) => rec.state = AgentState::Running,
            Ok(RunState::Stopped { .. } | RunState::HeldElsewhere { .. }) => {
                rec.state = AgentState::Stopped
            }
            Ok(RunState::Unknown) => {}
            Err(_) => {
                rec.failures += 1;
                rec.state = AgentState::Failed;
            }
        }
        drop(records);
        if let Err(e) = &result {
            warn!(group = %self.name, agent = %self.agents[i].name(), %action, error = %e, "agent action failed");
        }
        result
    }

    /// Starts every agent in order, except that consecutive reserved IPs start at once:
    /// they are independent provider calls, and one after another a group of 20 addresses
    /// would take 20 assignments' time to move. Every address of such a run is tried even
    /// when another fails. On a failure, stops (in reverse) everything this start started,
    /// the failed agents included, and says which addresses moved and which did not.
    pub async fn start(&self) -> Result<(), StartError> {
        let mut next = 0;
        while next < self.agents.len() {
            let end = self.run_end(next);
            for i in next..end {
                self.set_state(i, AgentState::Starting);
            }
            let results =
                futures::future::join_all((next..end).map(|i| self.act(i, Action::Start))).await;
            let failed: Vec<(usize, AgentError)> = (next..end)
                .zip(results)
                .filter_map(|(i, r)| r.err().map(|e| (i, e)))
                .collect();
            if !failed.is_empty() {
                return Err(self.roll_back(end, failed).await);
            }
            next = end;
        }
        info!(group = %self.name, "group started");
        Ok(())
    }

    /// The end (exclusive) of the run of agents starting together at `from`: the reserved
    /// IPs that follow one another there, or the single agent at `from`.
    fn run_end(&self, from: usize) -> usize {
        if self.agents[from].kind() != Kind::ReservedIp {
            return from + 1;
        }
        self.agents[from..]
            .iter()
            .position(|a| a.kind() != Kind::ReservedIp)
            .map_or(self.agents.len(), |n| from + n)
    }

    /// After the start of `failed` (in agent order, not empty): stops agents `0..end` in
    /// reverse. A reserved IP whose start succeeded and whose stop posts nothing stays here:
    /// its record and the error say it moved, the failed ones' that they did not.
    async fn roll_back(&self, end: usize, failed: Vec<(usize, AgentError)>) -> StartError {
        let is_failed = |j: usize| failed.iter().any(|(i, _)| *i == j);
        let failed_names: Vec<String> =
            failed.iter().map(|(i, _)| self.agents[*i].name()).collect();
        let mut clean = true;
        let mut moved = Vec::new();
        for j in (0..end).rev() {
            self.set_state(j, AgentState::Stopping);
            clean &= self.act(j, Action::Stop).await.is_ok();
            // A reserved IP whose stop posts nothing is still here: say so.
            let agent = &self.agents[j];
            if !is_failed(j)
                && agent.kind() == Kind::ReservedIp
                && agent.provider_call(Action::Stop).is_none()
            {
                let mut records = self.lock();
                records[j].state = AgentState::Running;
                records[j].detail = format!(
                    "moved here, and stays: the group's start failed at {}",
                    failed_names.join(", ")
                );
                moved.push(agent.name());
            }
        }
        moved.reverse();
        for (i, error) in &failed {
            if !moved.is_empty() {
                // Half moved: each agent that failed says so, beside the ones that stay.
                let mut records = self.lock();
                records[*i].state = AgentState::Failed;
                records[*i].detail = format!("did not move: {error}");
            } else if !clean {
                // Leave the failed start's record visible on the agent that caused it.
                self.set_state(*i, AgentState::Failed);
            }
        }
        let mut failed = failed.into_iter();
        let (first, error) = failed.next().expect("a failed start has a failed agent");
        StartError {
            agent: self.agents[first].name(),
            error,
            also: failed.map(|(i, e)| (self.agents[i].name(), e)).collect(),
            clean,
            moved,
        }
    }

    /// Stops every agent in reverse order; a failing stop does not keep the others running.
    pub async fn stop(&self) -> Result<(), StopError> {
        let mut failures = Vec::new();
        for i in (0..self.agents.len()).rev() {
            self.set_state(i, AgentState::Stopping);
            if let Err(e) = self.act(i, Action::Stop).await {
                failures.push((self.agents[i].name(), e));
            }
        }
        if failures.is_empty() {
            info!(group = %self.name, "group stopped");
            Ok(())
        } else {
            Err(StopError { failures })
        }
    }

    /// Monitors every agent; the first that is not running (or fails) is reported.
    pub async fn monitor(&self) -> Result<(), MonitorFailure> {
        for i in 0..self.agents.len() {
            self.monitor_one(i).await?;
        }
        Ok(())
    }

    /// Each agent's monitor period, in agent order.
    pub fn monitor_intervals(&self) -> Vec<Duration> {
        self.agents
            .iter()
            .map(|a| a.settings().monitor_interval)
            .collect()
    }

    /// How long agent `i`'s next periodic monitor should wait for its request budget.
    pub fn budget_wait(&self, i: usize) -> Duration {
        self.agents
            .get(i)
            .map_or(Duration::ZERO, |a| a.budget_wait())
    }

    /// How long the next readiness check should wait: until every agent's budget has room.
    pub fn readiness_budget_wait(&self) -> Duration {
        self.agents
            .iter()
            .map(|a| a.budget_wait())
            .max()
            .unwrap_or_default()
    }

    /// Monitors agent `i` (0-based, in start order).
    pub async fn monitor_one(&self, i: usize) -> Result<(), MonitorFailure> {
        let agent = self.agents[i].name();
        match self.act(i, Action::Monitor).await {
            Ok(RunState::Running | RunState::RunningAs { .. } | RunState::Unknown) => Ok(()),
            Ok(RunState::Stopped { detail }) => {
                self.lock()[i].failures += 1;
                let reason =
                    detail.map_or("not running".to_owned(), |d| format!("not running: {d}"));
                Err(MonitorFailure {
                    agent,
                    reason,
                    lost_to: None,
                })
            }
            Ok(RunState::HeldElsewhere { holder }) => Err(MonitorFailure {
                agent,
                reason: format!("held by {holder}"),
                lost_to: Some(holder),
            }),
            Err(e) => Err(MonitorFailure {
                agent,
                reason: e.to_string(),
                lost_to: None,
            }),
        }
    }

    /// Readiness of the group here: `None` when no agent can tell, else every problem
    /// found, each prefixed with its agent (empty = ready).
    pub async fn readiness(&self) -> Option<Vec<String>> {
        let mut any = false;
        let mut problems = Vec::new();
        for a in &self.agents {
            if let Some(p) = a.readiness().await {
                any = true;
                problems.extend(p.into_iter().map(|p| format!("{}: {p}", a.name())));
            }
        }
        any.then_some(problems)
    }

    /// Asks every agent for the real state (at startup, before acting). Returns whether any
    /// agent runs here: a partly running group counts as running, so that it is either
    /// kept or stopped cleanly.
    ///
    /// "Not running" is the normal answer on a standby or after a boot, never a failure.
    /// A group found partly running (typically after a reboot of the holder: its droplet
    /// still holds the reserved IP while the services behind it are down) is completed here
    /// by starting, in order, the agents found stopped: otherwise it would be reported
    /// running while they are not, until the first monitor counted a failure and
    /// restarted the whole group. Nothing is started when an agent finds the resource on
    /// another server or the reserved IP unassigned (no provider call before membership is
    /// known; the monitor and placement handle those), and a failed start stops the group
    /// as any failed start does.
    pub async fn probe(&self) -> bool {
        let mut found = Vec::with_capacity(self.agents.len());
        for i in 0..self.agents.len() {
            found.push(self.act(i, Action::Monitor).await);
        }
        // A probe finding things stopped is not a failure.
        self.reset_failures();
        let running = |r: &Result<RunState, AgentError>| {
            matches!(r, Ok(RunState::Running | RunState::RunningAs { .. }))
        };
        if !found.iter().any(running) {
            return false;
        }
        let elsewhere = found
            .iter()
            .any(|r| matches!(r, Ok(RunState::HeldElsewhere { .. })));
        let stopped: Vec<usize> = found
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Ok(RunState::Stopped { .. })))
            .map(|(i, _)| i)
            .collect();
        // Assigning a reserved IP before membership says who should hold it could move it
        // for nothing: an IP found unassigned is left to the monitor and placement.
        let ip_missing = stopped
            .iter()
            .any(|&i| self.agents[i].kind() == Kind::ReservedIp);
        if elsewhere || ip_missing || stopped.is_empty() {
            return true;
        }
        let names: Vec<String> = stopped.iter().map(|&i| self.agents[i].name()).collect();
        info!(group = %self.name, agents = ?names, "group partly running here; starting the agents found stopped");
        for i in stopped {
            self.set_state(i, AgentState::Starting);
            if let Err(e) = self.act(i, Action::Start).await {
                warn!(group = %self.name, agent = %self.agents[i].name(), error = %e, "completing the partly running group failed; stopping it");
                // As after any failed start: nothing half-started is left behind.
                let _ = self.stop().await;
                return false;
            }
        }
        info!(group = %self.name, "group started");
        true
    }
}
