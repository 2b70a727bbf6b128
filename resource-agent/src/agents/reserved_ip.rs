//! The built-in `reserved-ip` agent on top of a [`ReservedIpProvider`].
//!
//! start = assign the IP here (atomic at the provider: it moves from the old holder).
//! stop = nothing, unless `unassign_on_stop`: an unassign only opens a window without a
//! holder and races the next holder's assign (DESIGN.md). monitor = the provider says the
//! IP is ours.

use futures::future::BoxFuture;
use tandem_config::ActionSettings;
use tracing::info;

use super::{Action, Agent, AgentError, Kind, RunState};
use crate::provider::{ProviderError, ReservedIpProvider, ServerId};

#[derive(Debug)]
pub struct ReservedIp {
    provider: Box<dyn ReservedIpProvider>,
    unassign_on_stop: bool,
    settings: ActionSettings,
}

impl ReservedIp {
    pub fn new(
        provider: Box<dyn ReservedIpProvider>,
        unassign_on_stop: bool,
        settings: ActionSettings,
    ) -> Self {
        ReservedIp {
            provider,
            unassign_on_stop,
            settings,
        }
    }

    fn error(&self, action: Action, e: ProviderError) -> AgentError {
        if e.is_fatal() {
            AgentError::Unusable {
                action,
                reason: e.to_string(),
            }
        } else {
            AgentError::Failed {
                action,
                reason: e.to_string(),
                detail: String::new(),
            }
        }
    }

    /// The provider has its own deadline; this one guards against it being ignored.
    async fn limit<T>(
        &self,
        action: Action,
        f: BoxFuture<'_, Result<T, ProviderError>>,
    ) -> Result<T, AgentError> {
        match tokio::time::timeout(self.settings.timeout, f).await {
            Ok(r) => r.map_err(|e| self.error(action, e)),
            Err(_) => Err(AgentError::Timeout {
                action,
                after: self.settings.timeout,
                detail: String::new(),
            }),
        }
    }
}

impl Agent for ReservedIp {
    fn name(&self) -> String {
        format!("reserved-ip {}", self.provider.ip())
    }

    fn kind(&self) -> Kind {
        Kind::ReservedIp
    }

    fn settings(&self) -> &ActionSettings {
        &self.settings
    }

    fn provider_call(&self, action: Action) -> Option<String> {
        let call = match action {
            Action::Start => "assign",
            Action::Stop if self.unassign_on_stop => "unassign",
            Action::Stop => return None,
            Action::Monitor => "holder",
        };
        Some(format!("{} {call}", self.provider.provider().name()))
    }

    fn start(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move {
            let out = self.limit(Action::Start, self.provider.assign()).await?;
            info!(
                ip = %self.provider.ip(),
                already_held = out.already_held,
                errored_actions = out.errored_actions,
                previous = ?out.previous.as_ref().map(ToString::to_string),
                took = ?out.elapsed,
                "reserved IP assigned here"
            );
            Ok(())
        })
    }

    fn stop(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move {
            if self.unassign_on_stop {
                let out = self.limit(Action::Stop, self.provider.release()).await?;
                info!(ip = %self.provider.ip(), not_held = out.not_held, "reserved IP unassigned");
            }
            Ok(())
        })
    }

    fn budget_wait(&self) -> std::time::Duration {
        self.provider.routine_wait()
    }

    fn readiness(&self) -> BoxFuture<'_, Option<Vec<String>>> {
        Box::pin(async move {
            let problems =
                match tokio::time::timeout(self.settings.timeout, self.provider.probe()).await {
                    Err(_) => vec![format!(
                        "no answer from the provider within {:?}",
                        self.settings.timeout
                    )],
                    Ok(Err(e)) => vec![e.to_string()],
                    Ok(Ok(r)) => match (&r.region, &r.server_region) {
                        // A reserved IP can only be assigned within its own region.
                        (Some(ip), Some(server)) if ip != server => {
                            vec![format!(
                                "{} is in region {ip}, this server in {server}",
                                r.ip
                            )]
                        }
                        _ => Vec::new(),
                    },
                };
            Some(problems)
        })
    }

    fn monitor(&self) -> BoxFuture<'_, Result<RunState, AgentError>> {
        Box::pin(async move {
            let holder = self.limit(Action::Monitor, self.provider.holder()).await?;
            let noun = self.provider.provider().server_noun();
            let name = |s: &ServerId| match &holder.server_name {
                Some(n) => format!("{noun} {s} ({n})"),
                None => format!("{noun} {s}"),
            };
            Ok(match (holder.ours, &holder.server) {
                (true, Some(s)) => RunState::RunningAs {
                    detail: format!("held by {}", name(s)),
                },
                (true, None) => RunState::Running,
                (false, Some(s)) => RunState::HeldElsewhere { holder: name(s) },
                (false, None) => RunState::Stopped {
                    detail: Some("not assigned to any server".to_owned()),
                },
            })
        })
    }
}
