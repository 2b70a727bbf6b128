//! `exec` agents: one shell command per action (`sh -c`).
//!
//! start/stop: exit 0 = done. monitor: exit 0 = running, 7 (OCF) or 3 (LSB) = stopped,
//! anything else = failed. Without a monitor command the state is unknown.

use futures::future::BoxFuture;
use tandem_config::{ActionSettings, ExecAgent};

use super::process::{self, CommandSpec};
use super::{Action, Agent, AgentError, Kind, RunState};

#[derive(Debug, Clone)]
pub struct Exec {
    start: String,
    stop: String,
    monitor: Option<String>,
    settings: ActionSettings,
}

impl Exec {
    pub fn new(cfg: &ExecAgent) -> Self {
        Exec {
            start: cfg.start.clone(),
            stop: cfg.stop.clone(),
            monitor: cfg.monitor.clone(),
            settings: cfg.settings,
        }
    }

    async fn run(&self, action: Action, command: &str) -> Result<process::Exit, AgentError> {
        process::run(&CommandSpec::shell(command), self.settings.timeout)
            .await
            .map_err(|e| AgentError::from_run(action, e))
    }

    async fn change(&self, action: Action, command: &str) -> Result<(), AgentError> {
        let exit = self.run(action, command).await?;
        match exit.code {
            Some(0) => Ok(()),
            code => Err(AgentError::Failed {
                action,
                reason: match code {
                    Some(c) => format!("exit {c}"),
                    None => format!("killed by signal {}", exit.signal.unwrap_or(0)),
                },
                detail: exit.output,
            }),
        }
    }
}

impl Agent for Exec {
    fn name(&self) -> String {
        // The start command names the agent; long commands are cut for display.
        let mut s: String = self.start.chars().take(40).collect();
        if s.len() < self.start.len() {
            s.push('…');
        }
        format!("exec {s}")
    }

    fn kind(&self) -> Kind {
        Kind::Exec
    }

    fn settings(&self) -> &ActionSettings {
        &self.settings
    }

    fn start(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(self.change(Action::Start, &self.start))
    }

    fn stop(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(self.change(Action::Stop, &self.stop))
    }

    fn monitor(&self) -> BoxFuture<'_, Result<RunState, AgentError>> {
        Box::pin(async move {
            let Some(cmd) = &self.monitor else {
                return Ok(RunState::Unknown);
            };
            let exit = self.run(Action::Monitor, cmd).await?;
            match exit.code {
                Some(0) => Ok(RunState::Running),
                Some(3 | 7) => Ok(RunState::Stopped { detail: None }),
                code => Err(AgentError::Failed {
                    action: Action::Monitor,
                    reason: match code {
                        Some(c) => format!("exit {c}"),
                        None => format!("killed by signal {}", exit.signal.unwrap_or(0)),
                    },
                    detail: exit.output,
                }),
            }
        })
    }
}
