//! OCF resource agents as shipped by the `resource-agents` package:
//! `$OCF_ROOT/resource.d/PROVIDER/TYPE start|stop|monitor` with `OCF_RESKEY_*` parameters.
//!
//! Exit codes (OCF Resource Agent API 1.0 / Pacemaker "OCF return codes"): 0 success,
//! 1 generic error, 2 invalid arguments, 3 unimplemented, 4 insufficient privileges,
//! 5 not installed, 6 not configured, 7 not running, 8 running as promoted, 9 failed promoted.
use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::future::BoxFuture;
use tandem_config::{ActionSettings, OcfAgent};

use super::process::{self, CommandSpec};
use super::{Action, Agent, AgentError, Kind, RunState};

/// OCF_SUCCESS.
pub const OCF_SUCCESS: i32 = 0;
/// OCF_NOT_RUNNING.
pub const OCF_NOT_RUNNING: i32 = 7;
/// OCF_RUNNING_PROMOTED (formerly OCF_RUNNING_MASTER).
pub const OCF_RUNNING_PROMOTED: i32 = 8;

pub fn ocf_exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "generic error",
        2 => "invalid arguments",
        3 => "unimplemented",
        4 => "insufficient privileges",
        5 => "not installed",
        6 => "not configured",
        7 => "not running",
        8 => "running as promoted",
        9 => "failed as promoted",
        _ => "unknown exit code",
    }
}

#[derive(Debug, Clone)]
pub struct Ocf {
    provider: String,
    kind: String,
    ocf_root: PathBuf,
    instance: String,
    params: BTreeMap<String, String>,
    settings: ActionSettings,
}

/// A provider or type name may not leave `resource.d`.
fn safe_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// Parameter names become environment variable names.
fn safe_param(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Ocf {
    /// `instance` names this agent in the cluster (OCF_RESOURCE_INSTANCE).
    pub fn new(cfg: &OcfAgent, instance: &str) -> Self {
        Ocf {
            provider: cfg.provider.clone(),
            kind: cfg.kind.clone(),
            ocf_root: cfg.ocf_root.clone(),
            instance: instance.to_owned(),
            params: cfg.params.clone(),
            settings: cfg.settings,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.ocf_root
            .join("resource.d")
            .join(&self.provider)
            .join(&self.kind)
    }

    fn spec(&self, action: Action) -> Result<CommandSpec, AgentError> {
        if !safe_component(&self.provider) || !safe_component(&self.kind) {
            return Err(AgentError::Unusable {
                action,
                reason: format!("invalid agent name {:?}:{:?}", self.provider, self.kind),
            });
        }
        if let Some(bad) = self.params.keys().find(|k| !safe_param(k)) {
            return Err(AgentError::Unusable {
                action,
                reason: format!("invalid parameter name {bad:?} (letters, digits and '_' only)"),
            });
        }
        let path = self.path();
        if !path.is_file() {
            return Err(AgentError::Unusable {
                action,
                reason: format!(
                    "{} does not exist (is the resource-agents package installed?)",
                    path.display()
                ),
            });
        }
        let mut env: BTreeMap<String, String> = self
            .params
            .iter()
            .map(|(k, v)| (format!("OCF_RESKEY_{k}"), v.clone()))
            .collect();
        env.insert("OCF_ROOT".into(), self.ocf_root.display().to_string());
        env.insert("OCF_RA_VERSION_MAJOR".into(), "1".into());
        env.insert("OCF_RA_VERSION_MINOR".into(), "0".into());
        env.insert("OCF_RESOURCE_INSTANCE".into(), self.instance.clone());
        env.insert("OCF_RESOURCE_TYPE".into(), self.kind.clone());
        env.insert("OCF_RESOURCE_PROVIDER".into(), self.provider.clone());
        env.insert(
            "OCF_RESKEY_CRM_meta_timeout".into(),
            self.settings.timeout.as_millis().to_string(),
        );
        Ok(CommandSpec {
            program: path,
            args: vec![action.to_string()],
            env,
        })
    }

    async fn run(&self, action: Action) -> Result<process::Exit, AgentError> {
        let spec = self.spec(action)?;
        process::run(&spec, self.settings.timeout)
            .await
            .map_err(|e| AgentError::from_run(action, e))
    }

    fn failure(action: Action, exit: process::Exit) -> AgentError {
        let reason = match exit.code {
            Some(code) => format!("exit {code} ({})", ocf_exit_meaning(code)),
            None => format!("killed by signal {}", exit.signal.unwrap_or(0)),
        };
        match exit.code {
            // Retrying cannot fix a missing program, bad arguments or configuration.
            Some(2 | 3 | 5 | 6) => AgentError::Unusable {
                action,
                reason: format!("{reason}: {}", exit.output),
            },
            _ => AgentError::Failed {
                action,
                reason,
                detail: exit.output,
            },
        }
    }
}

impl Agent for Ocf {
    fn name(&self) -> String {
        format!("ocf {}:{}", self.provider, self.kind)
    }

    fn kind(&self) -> Kind {
        Kind::Ocf
    }

    fn settings(&self) -> &ActionSettings {
        &self.settings
    }

    fn start(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move {
            let exit = self.run(Action::Start).await?;
            match exit.code {
                Some(OCF_SUCCESS) => Ok(()),
                _ => Err(Self::failure(Action::Start, exit)),
            }
        })
    }

    fn stop(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move {
            let exit = self.run(Action::Stop).await?;
            match exit.code {
                // "not running" after a stop is what was asked for.
                Some(OCF_SUCCESS | OCF_NOT_RUNNING) => Ok(()),
                _ => Err(Self::failure(Action::Stop, exit)),
            }
        })
    }

    fn monitor(&self) -> BoxFuture<'_, Result<RunState, AgentError>> {
        Box::pin(async move {
            let exit = self.run(Action::Monitor).await?;
            match exit.code {
                Some(OCF_SUCCESS | OCF_RUNNING_PROMOTED) => Ok(RunState::Running),
                Some(OCF_NOT_RUNNING) => Ok(RunState::Stopped { detail: None }),
                _ => Err(Self::failure(Action::Monitor, exit)),
            }
        })
    }
}
