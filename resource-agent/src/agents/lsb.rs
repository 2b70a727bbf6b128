//! LSB init scripts: `/etc/init.d/NAME start|stop|status` (or an absolute path).
//!
//! Exit codes (LSB Core, "Init Script Actions"): start/stop 0 = success (also when already
//! in the requested state); status 0 = running, 1 = dead with a pid file, 2 = dead with a
//! lock file, 3 = not running, 4 = unknown.
use std::path::PathBuf;

use futures::future::BoxFuture;
use tandem_config::{ActionSettings, LsbAgent};

use super::process::{self, CommandSpec};
use super::{Action, Agent, AgentError, Kind, RunState};

/// Where script names without a slash are looked up.
pub const INIT_DIR: &str = "/etc/init.d";

#[derive(Debug, Clone)]
pub struct Lsb {
    script: PathBuf,
    settings: ActionSettings,
}

/// Meaning of an LSB exit code of start/stop (LSB Core, table "init script actions").
pub fn lsb_exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "generic or unspecified error",
        2 => "invalid or excess arguments",
        3 => "unimplemented feature",
        4 => "user had insufficient privilege",
        5 => "program is not installed",
        6 => "program is not configured",
        7 => "program is not running",
        _ => "unknown exit code",
    }
}

impl Lsb {
    pub fn new(cfg: &LsbAgent) -> Self {
        let script = if cfg.script.contains('/') {
            PathBuf::from(&cfg.script)
        } else {
            PathBuf::from(INIT_DIR).join(&cfg.script)
        };
        Lsb {
            script,
            settings: cfg.settings,
        }
    }

    async fn run(&self, action: Action, arg: &str) -> Result<process::Exit, AgentError> {
        if !self.script.is_file() {
            return Err(AgentError::Unusable {
                action,
                reason: format!("{} does not exist", self.script.display()),
            });
        }
        let spec = CommandSpec {
            program: self.script.clone(),
            args: vec![arg.into()],
            env: Default::default(),
        };
        process::run(&spec, self.settings.timeout)
            .await
            .map_err(|e| AgentError::from_run(action, e))
    }

    async fn change(&self, action: Action) -> Result<(), AgentError> {
        let exit = self.run(action, &action.to_string()).await?;
        match exit.code {
            Some(0) => Ok(()),
            Some(code) => Err(AgentError::Failed {
                action,
                reason: format!("exit {code} ({})", lsb_exit_meaning(code)),
                detail: exit.output,
            }),
            None => Err(AgentError::Failed {
                action,
                reason: format!("killed by signal {}", exit.signal.unwrap_or(0)),
                detail: exit.output,
            }),
        }
    }
}

impl Agent for Lsb {
    fn name(&self) -> String {
        format!("lsb {}", self.script.display())
    }

    fn kind(&self) -> Kind {
        Kind::Lsb
    }

    fn settings(&self) -> &ActionSettings {
        &self.settings
    }

    fn start(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(self.change(Action::Start))
    }

    fn stop(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(self.change(Action::Stop))
    }

    fn monitor(&self) -> BoxFuture<'_, Result<RunState, AgentError>> {
        Box::pin(async move {
            let exit = self.run(Action::Monitor, "status").await?;
            let stopped = |d: &str| {
                Ok(RunState::Stopped {
                    detail: Some(d.to_owned()),
                })
            };
            match exit.code {
                Some(0) => Ok(RunState::Running),
                Some(1) => stopped("dead, but its pid file exists"),
                Some(2) => stopped("dead, but its lock file exists"),
                Some(3) => Ok(RunState::Stopped { detail: None }),
                Some(code) => Err(AgentError::Failed {
                    action: Action::Monitor,
                    reason: format!("status exit {code} (unknown state)"),
                    detail: exit.output,
                }),
                None => Err(AgentError::Failed {
                    action: Action::Monitor,
                    reason: format!("status killed by signal {}", exit.signal.unwrap_or(0)),
                    detail: exit.output,
                }),
            }
        })
    }
}
