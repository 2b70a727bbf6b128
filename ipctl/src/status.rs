//! `ipctl status`: the whole picture from both daemons at a glance (nodes, links, quorum,
//! resource groups, health), as text or as the stable JSON schema `tandem.ipctl.status/v1`
//! (documented in docs/IPCTL.md).
//!
//! The report is built from ipctl's own serde structs, never from the prost types, so that the
//! JSON stays the same when the .proto grows. Each daemon is asked on its own: when one is
//! down the other's part is still shown, with what to do about the missing one.
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tandem_proto::agent::v1 as av1;
use tandem_proto::membership::v1 as mv1;
use tandem_proto::time::{from_duration, from_timestamp};

use crate::control::{Daemon, Problem, connect, rpc_problem};

/// Version tag of the JSON document; bumped only for incompatible changes.
pub const SCHEMA: &str = "tandem.ipctl.status/v1";

/// How long `status` waits for a daemon's answer: a stuck daemon must not hang the tool the
/// operator reaches for when something is wrong.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit status when one daemon answered and the other did not (documented in docs/IPCTL.md).
pub const EXIT_PARTIAL: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the stable JSON document (schema tandem.ipctl.status/v1) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    pub schema: &'static str,
    /// Cluster name, from whichever daemon answered.
    pub cluster: Option<String>,
    /// This node's name, from whichever daemon answered.
    pub node: Option<String>,
    pub membership: Section<MembershipReport>,
    pub agent: Section<AgentReport>,
}

/// One daemon's part: `available` tells whether it answered; then either its data (flattened
/// into the same object) or `error`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Section<T> {
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

impl<T> Section<T> {
    fn from_result(r: Result<T, Problem>) -> Self {
        match r {
            Ok(data) => Section {
                available: true,
                error: None,
                data: Some(data),
            },
            Err(p) => Section {
                available: false,
                error: Some(p),
                data: None,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MembershipReport {
    pub version: String,
    pub generation: u64,
    pub uptime_ms: f64,
    pub view_id: u64,
    pub quorum: Option<QuorumReport>,
    pub nodes: Vec<NodeReport>,
    pub rejected: BTreeMap<String, u64>,
    pub counters: Option<CountersReport>,
    pub timing: Option<TimingReport>,
    /// The daemon's last events (at most 32), oldest first, shaped as `ipctl watch --json` lines.
    pub recent_events: Vec<crate::watch::EventLine>,
    /// The cluster's last notices this node's membership kept (at most 16), oldest first:
    /// fences by any node, told by the node that fenced.
    pub notices: Vec<crate::watch::notice::NoticeReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QuorumReport {
    /// "two_node", "majority" or "other".
    pub policy: &'static str,
    pub quorate: bool,
    pub voters: u32,
    pub alive: u32,
    pub needed: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeReport {
    pub name: String,
    /// "member", "witness" or "other".
    pub role: &'static str,
    /// "unknown" (never heard yet), "up", "late", "dead" or "other".
    pub state: &'static str,
    pub local: bool,
    pub generation: u64,
    /// RFC 3339 UTC time the node entered `state`.
    pub since: Option<String>,
    pub state_age_ms: Option<f64>,
    pub links: Vec<LinkReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkReport {
    pub index: u32,
    pub address: String,
    /// "unknown" (nothing heard yet), "up", "down" or "other".
    pub state: &'static str,
    pub last_heard_ms: Option<f64>,
    pub rtt_ms: Option<f64>,
    /// Share of heartbeats lost over the last 100 expected, 0.0..=1.0; null for a link
    /// never heard (no loss can be measured on it: it is "never heard", not "0%").
    pub loss: Option<f64>,
    pub received: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CountersReport {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub send_errors: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_retransmitted: u64,
    pub messages_dropped: u64,
    pub watch_subscribers_dropped: u64,
    /// Times membership's own loop ran more than two intervals late (frozen or starved).
    pub stalls: u64,
    /// Notices kept since start (sent by this node or received).
    pub notices: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimingReport {
    pub interval_ms: f64,
    pub warn_after_ms: f64,
    pub dead_after_ms: f64,
    pub init_dead_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentReport {
    pub version: String,
    pub membership_connected: bool,
    pub membership_disconnected_for_ms: Option<f64>,
    pub quorate: bool,
    pub health: Vec<HealthReport>,
    pub nodes: Vec<NodeFlagsReport>,
    pub groups: Vec<GroupReport>,
    /// The last fence of each peer (`fencing:` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fences: Vec<FenceReport>,
    /// The agent's last events (at most 16), oldest first, each shaped exactly as a line of
    /// `ipctl watch --json`.
    pub recent_events: Vec<crate::watch::agent::AgentEventLine>,
}

/// The last fence of one peer: powered off through the provider before its groups moved.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FenceReport {
    pub node: String,
    pub reason: String,
    /// "delayed", "fencing", "failed", "done" or "abandoned".
    pub phase: String,
    pub age_ms: Option<f64>,
    pub took_ms: Option<f64>,
    pub attempts: u32,
    pub error: Option<String>,
    pub detail: Option<String>,
    pub next_in_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthReport {
    pub name: String,
    pub healthy: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_error: Option<String>,
    pub last_checked: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeFlagsReport {
    pub name: String,
    pub standby: bool,
    pub healthy: bool,
    pub holds: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupReport {
    pub name: String,
    pub prefer: Option<String>,
    pub failback: String,
    pub desired_holder: Option<String>,
    pub holder: Option<String>,
    /// State on this node: "stopped", "waiting", "starting", "running", "stopping", "failed"
    /// or "other".
    pub state: &'static str,
    pub restarts: u32,
    pub last_action: Option<ActionReport>,
    pub ready: Option<bool>,
    pub problems: Vec<String>,
    pub readiness_checked_at: Option<String>,
    pub not_candidate_reason: Option<String>,
    /// Pins and bans of the group, each with the command that clears it.
    pub constraints: Vec<ConstraintReport>,
    /// Why this node, which should take the group, has not yet (the fence of its holder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    pub agents: Vec<AgentItemReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConstraintReport {
    /// "pin" (the group stays on `node`), "ban" (`node` does not take it) or "other".
    pub kind: &'static str,
    pub node: String,
    pub reason: String,
    /// The command that clears it.
    pub clear: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AgentItemReport {
    pub name: String,
    /// "reserved-ip", "lsb", "ocf", "exec" or "other".
    pub kind: &'static str,
    /// "unknown", "stopped", "starting", "running", "stopping", "failed" or "other".
    pub state: &'static str,
    pub failures: u32,
    pub detail: Option<String>,
    pub last_action: Option<ActionReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActionReport {
    pub action: String,
    /// "ok", "failed", "timeout", "running" or "other".
    pub result: &'static str,
    pub started_at: Option<String>,
    pub duration_ms: Option<f64>,
    pub message: Option<String>,
}

// ---------------------------------------------------------------------------------------
// From the wire types. Unknown enum values (a newer daemon) become "other", never an error.

pub fn millis(d: Duration) -> f64 {
    // Rounded to the microsecond so the JSON does not carry float noise.
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

pub(crate) fn opt_ms(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| millis(from_duration(d)))
}

pub fn rfc3339(t: &prost_types::Timestamp) -> String {
    let st = from_timestamp(t);
    if st < SystemTime::UNIX_EPOCH {
        // humantime cannot format times before 1970; a daemon never sends one on purpose.
        return "1970-01-01T00:00:00Z".to_owned();
    }
    humantime::format_rfc3339_seconds(st).to_string()
}

pub(crate) fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

pub fn quorum_policy(v: i32) -> &'static str {
    match mv1::QuorumPolicy::try_from(v) {
        Ok(mv1::QuorumPolicy::TwoNode) => "two_node",
        Ok(mv1::QuorumPolicy::Majority) => "majority",
        _ => "other",
    }
}

pub fn quorum(q: &mv1::Quorum) -> QuorumReport {
    QuorumReport {
        policy: quorum_policy(q.policy),
        quorate: q.quorate,
        voters: q.voters,
        alive: q.alive,
        needed: q.needed,
    }
}

pub fn node_state(v: i32) -> &'static str {
    match mv1::NodeState::try_from(v) {
        Ok(mv1::NodeState::Unknown) => "unknown",
        Ok(mv1::NodeState::Up) => "up",
        Ok(mv1::NodeState::Late) => "late",
        Ok(mv1::NodeState::Dead) => "dead",
        _ => "other",
    }
}

fn node_role(v: i32) -> &'static str {
    match mv1::NodeRole::try_from(v) {
        Ok(mv1::NodeRole::Member) => "member",
        Ok(mv1::NodeRole::Witness) => "witness",
        _ => "other",
    }
}

fn link_state(v: i32) -> &'static str {
    match mv1::LinkState::try_from(v) {
        Ok(mv1::LinkState::Unknown) => "unknown",
        Ok(mv1::LinkState::Up) => "up",
        Ok(mv1::LinkState::Down) => "down",
        _ => "other",
    }
}

pub fn node(n: &mv1::Node) -> NodeReport {
    NodeReport {
        name: n.name.clone(),
        role: node_role(n.role),
        state: node_state(n.state),
        local: n.local,
        generation: n.generation,
        since: n.since.as_ref().map(rfc3339),
        state_age_ms: opt_ms(n.state_age.as_ref()),
        links: n
            .links
            .iter()
            .map(|l| LinkReport {
                index: l.index,
                address: l.address.clone(),
                state: link_state(l.state),
                last_heard_ms: opt_ms(l.last_heard.as_ref()),
                rtt_ms: opt_ms(l.rtt.as_ref()),
                // A NaN or out-of-range loss from a buggy daemon must not break the JSON.
                loss: match l.last_heard {
                    None => None,
                    Some(_) if l.loss.is_finite() => Some(l.loss.clamp(0.0, 1.0)),
                    Some(_) => Some(0.0),
                },
                received: l.received,
            })
            .collect(),
    }
}

pub fn membership_report(r: &mv1::StatusResponse) -> MembershipReport {
    let view = r.view.clone().unwrap_or_default();
    MembershipReport {
        version: r.version.clone(),
        generation: r.generation,
        uptime_ms: r
            .uptime
            .as_ref()
            .map(|d| millis(from_duration(d)))
            .unwrap_or(0.0),
        view_id: view.view_id,
        quorum: view.quorum.as_ref().map(quorum),
        nodes: view.nodes.iter().map(node).collect(),
        rejected: r.rejected.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        counters: r.counters.as_ref().map(|c| CountersReport {
            datagrams_sent: c.datagrams_sent,
            datagrams_received: c.datagrams_received,
            send_errors: c.send_errors,
            messages_sent: c.messages_sent,
            messages_delivered: c.messages_delivered,
            messages_retransmitted: c.messages_retransmitted,
            messages_dropped: c.messages_dropped,
            watch_subscribers_dropped: c.watch_subscribers_dropped,
            stalls: c.stalls,
            notices: c.notices,
        }),
        timing: r.timing.as_ref().map(|t| TimingReport {
            interval_ms: opt_ms(t.interval.as_ref()).unwrap_or(0.0),
            warn_after_ms: opt_ms(t.warn_after.as_ref()).unwrap_or(0.0),
            dead_after_ms: opt_ms(t.dead_after.as_ref()).unwrap_or(0.0),
            init_dead_ms: opt_ms(t.init_dead.as_ref()).unwrap_or(0.0),
        }),
        recent_events: r
            .recent_events
            .iter()
            .map(crate::watch::event_line)
            .collect(),
        notices: r.notices.iter().map(crate::watch::notice::notice).collect(),
    }
}

pub(crate) fn group_state(v: i32) -> &'static str {
    match av1::GroupState::try_from(v) {
        Ok(av1::GroupState::Stopped) => "stopped",
        Ok(av1::GroupState::Waiting) => "waiting",
        Ok(av1::GroupState::Starting) => "starting",
        Ok(av1::GroupState::Running) => "running",
        Ok(av1::GroupState::Stopping) => "stopping",
        Ok(av1::GroupState::Failed) => "failed",
        _ => "other",
    }
}

fn constraint_kind(v: i32) -> &'static str {
    match av1::ConstraintKind::try_from(v) {
        Ok(av1::ConstraintKind::Pin) => "pin",
        Ok(av1::ConstraintKind::Ban) => "ban",
        _ => "other",
    }
}

fn agent_kind(v: i32) -> &'static str {
    match av1::AgentKind::try_from(v) {
        Ok(av1::AgentKind::ReservedIp) => "reserved-ip",
        Ok(av1::AgentKind::Lsb) => "lsb",
        Ok(av1::AgentKind::Ocf) => "ocf",
        Ok(av1::AgentKind::Exec) => "exec",
        _ => "other",
    }
}

fn agent_state(v: i32) -> &'static str {
    match av1::AgentState::try_from(v) {
        Ok(av1::AgentState::Unknown) => "unknown",
        Ok(av1::AgentState::Stopped) => "stopped",
        Ok(av1::AgentState::Starting) => "starting",
        Ok(av1::AgentState::Running) => "running",
        Ok(av1::AgentState::Stopping) => "stopping",
        Ok(av1::AgentState::Failed) => "failed",
        _ => "other",
    }
}

pub(crate) fn action_result(v: i32) -> &'static str {
    match av1::ActionResult::try_from(v) {
        Ok(av1::ActionResult::Ok) => "ok",
        Ok(av1::ActionResult::Failed) => "failed",
        Ok(av1::ActionResult::Timeout) => "timeout",
        Ok(av1::ActionResult::Running) => "running",
        _ => "other",
    }
}

fn action(a: &av1::LastAction) -> ActionReport {
    ActionReport {
        action: a.action.clone(),
        result: action_result(a.result),
        started_at: a.started_at.as_ref().map(rfc3339),
        duration_ms: opt_ms(a.duration.as_ref()),
        message: non_empty(a.message.clone()),
    }
}

pub fn agent_report(r: &av1::StatusResponse) -> AgentReport {
    AgentReport {
        version: r.version.clone(),
        membership_connected: r.membership_connected,
        membership_disconnected_for_ms: if r.membership_connected {
            None
        } else {
            opt_ms(r.membership_disconnected_for.as_ref())
        },
        quorate: r.quorate,
        health: r
            .health
            .iter()
            .map(|h| HealthReport {
                name: h.name.clone(),
                healthy: h.healthy,
                consecutive_failures: h.consecutive_failures,
                consecutive_successes: h.consecutive_successes,
                last_error: non_empty(h.last_error.clone()),
                last_checked: h.last_checked.as_ref().map(rfc3339),
            })
            .collect(),
        nodes: r
            .nodes
            .iter()
            .map(|n| NodeFlagsReport {
                name: n.name.clone(),
                standby: n.standby,
                healthy: n.healthy,
                holds: n.holds.clone(),
            })
            .collect(),
        groups: r
            .groups
            .iter()
            .map(|g| GroupReport {
                name: g.name.clone(),
                prefer: non_empty(g.prefer.clone()),
                failback: g.failback.clone(),
                desired_holder: non_empty(g.desired_holder.clone()),
                holder: non_empty(g.holder.clone()),
                state: group_state(g.state),
                restarts: g.restarts,
                last_action: g.last_action.as_ref().map(action),
                ready: g.readiness.as_ref().map(|r| r.ready),
                problems: g
                    .readiness
                    .as_ref()
                    .map(|r| r.problems.clone())
                    .unwrap_or_default(),
                readiness_checked_at: g
                    .readiness
                    .as_ref()
                    .and_then(|r| r.checked_at.as_ref())
                    .map(rfc3339),
                not_candidate_reason: non_empty(g.not_candidate_reason.clone()),
                constraints: g
                    .constraints
                    .iter()
                    .map(|c| ConstraintReport {
                        kind: constraint_kind(c.kind),
                        node: c.node.clone(),
                        reason: c.reason.clone(),
                        clear: c.clear.clone(),
                    })
                    .collect(),
                waiting_for: non_empty(g.waiting_for.clone()),
                agents: g
                    .agents
                    .iter()
                    .map(|a| AgentItemReport {
                        name: a.name.clone(),
                        kind: agent_kind(a.kind),
                        state: agent_state(a.state),
                        failures: a.failures,
                        detail: non_empty(a.detail.clone()),
                        last_action: a.last_action.as_ref().map(action),
                    })
                    .collect(),
            })
            .collect(),
        fences: r
            .fences
            .iter()
            .map(|f| FenceReport {
                node: f.node.clone(),
                reason: f.reason.clone(),
                phase: f.phase.clone(),
                age_ms: opt_ms(f.age.as_ref()),
                took_ms: opt_ms(f.took.as_ref()),
                attempts: f.attempts,
                error: non_empty(f.error.clone()),
                detail: non_empty(f.detail.clone()),
                next_in_ms: opt_ms(f.next_in.as_ref()),
            })
            .collect(),
        recent_events: r
            .recent_events
            .iter()
            .map(crate::watch::agent::event_line)
            .collect(),
    }
}

/// Assembles the report from what each daemon answered (or why it did not).
pub fn report(
    membership: Result<mv1::StatusResponse, Problem>,
    agent: Result<av1::StatusResponse, Problem>,
) -> StatusReport {
    let view = membership.as_ref().ok().and_then(|m| m.view.as_ref());
    let a = agent.as_ref().ok();
    let cluster = view
        .map(|v| v.cluster.clone())
        .or_else(|| a.map(|a| a.cluster.clone()))
        .and_then(non_empty);
    let node = view
        .map(|v| v.local_node.clone())
        .or_else(|| a.map(|a| a.node.clone()))
        .and_then(non_empty);
    StatusReport {
        schema: SCHEMA,
        cluster,
        node,
        membership: Section::from_result(membership.map(|m| membership_report(&m))),
        agent: Section::from_result(agent.map(|a| agent_report(&a))),
    }
}

async fn membership_status(run_dir: &Path) -> Result<mv1::StatusResponse, Problem> {
    let channel = connect(Daemon::Membership, run_dir).await?;
    let mut client = mv1::membership_client::MembershipClient::new(channel);
    match tokio::time::timeout(RPC_TIMEOUT, client.status(mv1::StatusRequest {})).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(rpc_problem(Daemon::Membership, &s, None)),
        Err(_) => Err(Problem::timeout(Daemon::Membership, RPC_TIMEOUT)),
    }
}

async fn agent_status(run_dir: &Path) -> Result<av1::StatusResponse, Problem> {
    let channel = connect(Daemon::Agent, run_dir).await?;
    let mut client = av1::agent_client::AgentClient::new(channel);
    match tokio::time::timeout(RPC_TIMEOUT, client.status(av1::StatusRequest {})).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(rpc_problem(Daemon::Agent, &s, None)),
        Err(_) => Err(Problem::timeout(Daemon::Agent, RPC_TIMEOUT)),
    }
}

pub fn run(cli: &crate::Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let rt = crate::control::runtime()?;
    let (m, a) = rt.block_on(async {
        tokio::join!(membership_status(&cli.run_dir), agent_status(&cli.run_dir))
    });
    let report = report(m, a);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let colour = crate::render::colour_wanted(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        print!("{}", crate::render::status_text(&report, colour));
    }
    Ok(
        match (report.membership.available, report.agent.available) {
            (true, true) => ExitCode::SUCCESS,
            (false, false) => ExitCode::FAILURE,
            _ => ExitCode::from(EXIT_PARTIAL),
        },
    )
}
