//! Reaching the daemons, and the commands that change the cluster through the Agent service:
//! `ipctl standby|online [NODE]`, `ipctl takeover|release GROUP`.
//!
//! Every failure is turned into a [`Problem`] that says what to do: start the daemon, join a
//! group, or why the daemon refused (its own reason, verbatim).
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tandem_proto::agent::v1 as av1;
use tandem_proto::uds::ConnectError;
use tonic::Code;
use tonic::transport::Channel;

use crate::render::clean;

/// How long a change request may take. The agent answers once it has accepted the request
/// (the handover itself runs in the background), so this only guards against a stuck daemon.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Membership,
    Agent,
}

impl Daemon {
    pub fn unit(self) -> &'static str {
        match self {
            Daemon::Membership => "tandem-membership",
            Daemon::Agent => "tandem-resource-agent",
        }
    }

    pub fn socket(self, run_dir: &Path) -> PathBuf {
        run_dir.join(match self {
            Daemon::Membership => "membership.sock",
            Daemon::Agent => "agent.sock",
        })
    }
}

/// Why a daemon could not be asked, or why it said no. Serialized into `ipctl status --json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    /// "not_running", "permission_denied", "timeout", "failed_precondition", "not_found",
    /// "invalid_argument", "unavailable" or "error".
    pub kind: &'static str,
    /// What went wrong, with the daemon's own words where it gave any.
    pub message: String,
    /// What the operator can do about it.
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

const GROUP_HINT: &str = "join the tandem group (status) / tandem-admin group (changes), or use sudo \
                          (sudo usermod -aG tandem-admin $USER, then log in again)";

impl Problem {
    fn not_running(d: Daemon, why: String) -> Self {
        Problem {
            kind: "not_running",
            message: format!("{} is not running ({why})", d.unit()),
            hint: Some(format!("systemctl start {}", d.unit())),
        }
    }

    pub fn timeout(d: Daemon, after: Duration) -> Self {
        Problem {
            kind: "timeout",
            message: format!("{} did not answer within {}s", d.unit(), after.as_secs()),
            hint: Some(format!(
                "it may be stuck: journalctl -u {} ; systemctl restart {}",
                d.unit(),
                d.unit()
            )),
        }
    }

    fn from_connect(d: Daemon, e: ConnectError) -> Self {
        match e {
            ConnectError::NotRunning { path } => {
                Problem::not_running(d, format!("no socket at {}", path.display()))
            }
            ConnectError::Refused { path } => Problem::not_running(
                d,
                format!("{} exists but nobody is listening", path.display()),
            ),
            ConnectError::PermissionDenied { path } => Problem {
                kind: "permission_denied",
                message: format!("permission denied on {}", path.display()),
                hint: Some(GROUP_HINT.to_owned()),
            },
            other => Problem {
                kind: "error",
                message: format!("cannot reach {}: {other}", d.unit()),
                hint: Some(format!("journalctl -u {}", d.unit())),
            },
        }
    }
}

/// Connects to a daemon's socket under `run_dir`.
pub async fn connect(d: Daemon, run_dir: &Path) -> Result<Channel, Problem> {
    tandem_proto::uds::connect(&d.socket(run_dir))
        .await
        .map_err(|e| Problem::from_connect(d, e))
}

/// Turns a gRPC error status into a problem. For FAILED_PRECONDITION, `refused` names the
/// request and what it needs (the daemon's own reason is always shown verbatim).
pub fn rpc_problem(d: Daemon, s: &tonic::Status, refused: Option<(&str, &str)>) -> Problem {
    let said = s.message().trim();
    let said = if said.is_empty() {
        format!("{:?}", s.code())
    } else {
        clean(said)
    };
    match s.code() {
        Code::PermissionDenied => Problem {
            kind: "permission_denied",
            message: format!("{} refused: {said}", d.unit()),
            hint: Some(GROUP_HINT.to_owned()),
        },
        Code::FailedPrecondition => Problem {
            kind: "failed_precondition",
            message: match refused {
                Some((what, _)) => format!("{what} refused by {}: {said}", d.unit()),
                None => format!("{} refused: {said}", d.unit()),
            },
            hint: Some(
                refused
                    .map(|(_, needs)| needs)
                    .unwrap_or("see `ipctl status`")
                    .to_owned(),
            ),
        },
        Code::NotFound => Problem {
            kind: "not_found",
            message: format!("{}: {said}", d.unit()),
            hint: Some("see `ipctl status` for the configured nodes and groups".to_owned()),
        },
        Code::InvalidArgument => Problem {
            kind: "invalid_argument",
            message: format!("{}: {said}", d.unit()),
            hint: None,
        },
        // Either the daemon cannot do it right now (e.g. a peer is unreachable, or it is
        // shutting down) or the connection broke mid-call: both are worth a retry.
        Code::Unavailable => Problem {
            kind: "unavailable",
            message: format!("{} cannot do it now: {said}", d.unit()),
            hint: Some(format!(
                "try again in a moment; if it persists: systemctl status {}",
                d.unit()
            )),
        },
        Code::Unimplemented => Problem {
            kind: "error",
            message: format!(
                "{} does not implement this call ({said}); is it older than ipctl?",
                d.unit()
            ),
            hint: Some("upgrade the tandem package on this node".to_owned()),
        },
        code => Problem {
            kind: "error",
            message: format!("{} answered {code:?}: {said}", d.unit()),
            hint: Some(format!("journalctl -u {}", d.unit())),
        },
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The node; default: this node.
    #[arg(add = crate::complete::node_names())]
    pub node: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    /// The resource group, as named in cluster.yaml.
    #[arg(add = crate::complete::group_names())]
    pub group: String,
}

/// What to ask the agent to change.
#[derive(Debug)]
pub enum Change<'a> {
    Standby(Option<&'a str>),
    Online(Option<&'a str>),
    Takeover(&'a str),
    Release(&'a str),
}

impl Change<'_> {
    fn describe(&self) -> String {
        match self {
            Change::Standby(n) => format!("standby of {}", n.unwrap_or("this node")),
            Change::Online(n) => format!("online of {}", n.unwrap_or("this node")),
            Change::Takeover(g) => format!("takeover of {g}"),
            Change::Release(g) => format!("release of {g}"),
        }
    }

    /// What the request needs, shown when the agent refuses it as a failed precondition.
    fn needs(&self) -> &'static str {
        match self {
            Change::Takeover(_) => {
                "a takeover needs this node to be a candidate: quorum, online (not in standby), \
                 healthy health checks and a ready group; `ipctl status` shows which one is missing"
            }
            Change::Release(_) => {
                "a release needs the group to be held here and another candidate to take it; \
                 `ipctl status` shows the holder and the candidates"
            }
            Change::Standby(_) | Change::Online(_) => {
                "`ipctl status` shows the nodes and what they hold"
            }
        }
    }
}

async fn call(run_dir: &Path, change: &Change<'_>) -> Result<String, Problem> {
    let channel = connect(Daemon::Agent, run_dir).await?;
    let mut c = av1::agent_client::AgentClient::new(channel);
    let node = |n: &Option<&str>| n.unwrap_or_default().to_owned();
    let fut = async {
        Ok::<_, tonic::Status>(match change {
            Change::Standby(n) => {
                let r = c
                    .standby(av1::StandbyRequest { node: node(n) })
                    .await?
                    .into_inner();
                outcome(&r.message, || format!("{} is in standby", r.node))
            }
            Change::Online(n) => {
                let r = c
                    .online(av1::OnlineRequest { node: node(n) })
                    .await?
                    .into_inner();
                outcome(&r.message, || format!("{} is online", r.node))
            }
            Change::Takeover(g) => {
                let r = c
                    .takeover(av1::TakeoverRequest {
                        group: (*g).to_owned(),
                    })
                    .await?
                    .into_inner();
                outcome(&r.message, || format!("takeover of {} started", r.group))
            }
            Change::Release(g) => {
                let r = c
                    .release(av1::ReleaseRequest {
                        group: (*g).to_owned(),
                    })
                    .await?
                    .into_inner();
                outcome(&r.message, || format!("release of {} started", r.group))
            }
        })
    };
    match tokio::time::timeout(CHANGE_TIMEOUT, fut).await {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(s)) => {
            let what = change.describe();
            Err(rpc_problem(
                Daemon::Agent,
                &s,
                Some((&what, change.needs())),
            ))
        }
        Err(_) => Err(Problem::timeout(Daemon::Agent, CHANGE_TIMEOUT)),
    }
}

fn outcome(message: &str, default: impl FnOnce() -> String) -> String {
    if message.trim().is_empty() {
        default()
    } else {
        message.trim().to_owned()
    }
}

pub fn run(cli: &crate::Cli, change: &Change<'_>) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match rt.block_on(call(&cli.run_dir, change)) {
        Ok(text) => {
            println!("{text}");
            println!("follow it with `ipctl watch` or check with `ipctl status`");
            Ok(ExitCode::SUCCESS)
        }
        Err(p) => {
            eprintln!("ipctl: {p}");
            Ok(ExitCode::FAILURE)
        }
    }
}
