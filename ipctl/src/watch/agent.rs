//! The resource agent's part of `ipctl watch`: its snapshot and events (`Agent/Watch`) as
//! lines of the same schema as membership's (`tandem.ipctl.watch/v1`, `"source": "agent"`).
use std::fmt::Write as _;

use serde::Serialize;
use tandem_proto::agent::v1 as av1;

use super::SCHEMA;
use crate::render::{clean, human_ms};
use crate::status::{
    AgentReport, action_result, agent_report, group_state, non_empty, opt_ms, rfc3339,
};

#[derive(Debug, Serialize)]
pub struct AgentSnapshotLine {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub source: &'static str,
    /// The seq of the last event already reflected in this snapshot.
    pub snapshot_seq: u64,
    pub cluster: String,
    pub node: String,
    /// Exactly as `ipctl status --json` shows `.agent`.
    #[serde(flatten)]
    pub agent: AgentReport,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentEventLine {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub source: &'static str,
    /// Numbers the events of one agent process: +1 each, from 1 after every restart.
    pub seq: u64,
    /// The agent's incarnation; increases on every start of the agent.
    pub incarnation: u64,
    pub at: Option<String>,
    /// The node whose agent saw the event.
    pub node: String,
    /// "group_starting", "group_running", "group_stopping", "group_stopped",
    /// "group_failed", "group_restarting", "group_moved", "fence_started", "fence_done",
    /// "fence_failed", "fence_abandoned", or "other" (a kind this ipctl does not know).
    pub event: String,
    #[serde(flatten)]
    pub group: Option<GroupEventReport>,
    #[serde(flatten)]
    pub fence: Option<FenceEventReport>,
}

/// A fence of a peer by this node (`fencing:`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FenceEventReport {
    /// The peer powered off.
    pub target: String,
    /// Why it is fenced.
    pub reason: Option<String>,
    /// 1 for the first attempt of this death.
    pub attempt: u32,
    /// e.g. "digitalocean power_off".
    pub provider_call: Option<String>,
    /// done, failed: how long the provider call took.
    pub duration_ms: Option<f64>,
    /// From the peer's death to this event.
    pub since_death_ms: Option<f64>,
    /// done: what the provider did.
    pub detail: Option<String>,
    /// failed: why; abandoned: why it is not needed.
    pub error: Option<String>,
    /// failed: until the next attempt.
    pub retry_in_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupEventReport {
    pub group: String,
    /// "failover", "handover", "operator", "monitor", "health", "initial", "retry" or
    /// "other".
    pub cause: &'static str,
    /// The group's state on this node after the event (as in status).
    pub state: &'static str,
    /// The node that held the group before (starting, running, moved), if known.
    pub from: Option<String>,
    /// The node the group goes to (stopping) or went to (moved), if known.
    pub to: Option<String>,
    pub reason: Option<String>,
    /// running, stopped, failed: since the start or stop began; restarting: the delay.
    pub took_ms: Option<f64>,
    /// The agents' actions behind the event, in order.
    pub actions: Vec<ActionLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionLine {
    pub agent: String,
    /// "start", "stop" or "monitor".
    pub action: String,
    /// The provider call, e.g. "digitalocean assign"; null for local agents.
    pub provider_call: Option<String>,
    /// "ok", "failed", "timeout" or "other".
    pub result: &'static str,
    pub duration_ms: Option<f64>,
    pub message: Option<String>,
}

pub fn snapshot_line(s: &av1::StatusResponse, snapshot_seq: u64) -> AgentSnapshotLine {
    AgentSnapshotLine {
        schema: SCHEMA,
        kind: "snapshot",
        source: "agent",
        snapshot_seq,
        cluster: s.cluster.clone(),
        node: s.node.clone(),
        agent: agent_report(s),
    }
}

fn change(v: i32) -> &'static str {
    match av1::GroupChange::try_from(v) {
        Ok(av1::GroupChange::Starting) => "starting",
        Ok(av1::GroupChange::Running) => "running",
        Ok(av1::GroupChange::Stopping) => "stopping",
        Ok(av1::GroupChange::Stopped) => "stopped",
        Ok(av1::GroupChange::Failed) => "failed",
        Ok(av1::GroupChange::Restarting) => "restarting",
        Ok(av1::GroupChange::Moved) => "moved",
        _ => "other",
    }
}

fn cause(v: i32) -> &'static str {
    match av1::EventCause::try_from(v) {
        Ok(av1::EventCause::Failover) => "failover",
        Ok(av1::EventCause::Handover) => "handover",
        Ok(av1::EventCause::Operator) => "operator",
        Ok(av1::EventCause::Monitor) => "monitor",
        Ok(av1::EventCause::Health) => "health",
        Ok(av1::EventCause::Initial) => "initial",
        Ok(av1::EventCause::Retry) => "retry",
        _ => "other",
    }
}

fn fence_change(v: i32) -> Option<&'static str> {
    match av1::FenceChange::try_from(v) {
        Ok(av1::FenceChange::Started) => Some("started"),
        Ok(av1::FenceChange::Done) => Some("done"),
        Ok(av1::FenceChange::Failed) => Some("failed"),
        Ok(av1::FenceChange::Abandoned) => Some("abandoned"),
        _ => None,
    }
}

fn fence_report(f: &av1::FenceEvent) -> FenceEventReport {
    FenceEventReport {
        target: f.node.clone(),
        reason: non_empty(f.reason.clone()),
        attempt: f.attempt,
        provider_call: non_empty(f.provider_call.clone()),
        duration_ms: opt_ms(f.took.as_ref()),
        since_death_ms: opt_ms(f.since_death.as_ref()),
        detail: non_empty(f.detail.clone()),
        error: non_empty(f.error.clone()),
        retry_in_ms: opt_ms(f.retry_in.as_ref()),
    }
}

pub fn event_line(e: &av1::Event) -> AgentEventLine {
    let mut fence = None;
    let (event, group) = match &e.kind {
        Some(av1::event::Kind::Group(g)) => {
            let change = change(g.change);
            let peer = non_empty(g.peer.clone());
            let (from, to) = match change {
                "moved" => (peer, non_empty(g.node.clone())),
                "stopping" => (None, peer),
                _ => (peer, None),
            };
            let report = GroupEventReport {
                group: g.group.clone(),
                cause: cause(g.cause),
                state: group_state(g.state),
                from,
                to,
                reason: non_empty(g.reason.clone()),
                took_ms: opt_ms(g.took.as_ref()),
                actions: g
                    .actions
                    .iter()
                    .map(|a| ActionLine {
                        agent: a.agent.clone(),
                        action: a.action.clone(),
                        provider_call: non_empty(a.provider_call.clone()),
                        result: action_result(a.result),
                        duration_ms: opt_ms(a.duration.as_ref()),
                        message: non_empty(a.message.clone()),
                    })
                    .collect(),
            };
            (format!("group_{change}"), Some(report))
        }
        Some(av1::event::Kind::Fence(f)) => match fence_change(f.change) {
            Some(change) => {
                fence = Some(fence_report(f));
                (format!("fence_{change}"), None)
            }
            None => ("other".to_owned(), None),
        },
        None => ("other".to_owned(), None),
    };
    AgentEventLine {
        schema: SCHEMA,
        kind: "event",
        source: "agent",
        seq: e.seq,
        incarnation: e.incarnation,
        at: e.at.as_ref().map(rfc3339),
        node: e.node.clone(),
        event,
        group,
        fence,
    }
}

pub fn snapshot_text(s: &AgentSnapshotLine) -> String {
    let groups: Vec<String> = s
        .agent
        .groups
        .iter()
        .map(|g| {
            let holder = g
                .holder
                .as_deref()
                .map_or("held by nobody".to_owned(), |h| {
                    format!("held by {}", clean(h))
                });
            format!("{} {} here, {holder}", clean(&g.name), g.state)
        })
        .collect();
    format!(
        "resource agent on {} (events after #{}):\n  groups: {}\n",
        clean(&s.node),
        s.snapshot_seq,
        if groups.is_empty() {
            "none".to_owned()
        } else {
            groups.join("; ")
        }
    )
}

fn ms(v: Option<f64>) -> String {
    v.map_or("?".to_owned(), human_ms)
}

fn action_text(a: &ActionLine) -> String {
    let mut t = format!("{} {}", clean(&a.agent), a.action);
    if let Some(c) = &a.provider_call {
        let _ = write!(t, " ({})", clean(c));
    }
    let _ = write!(t, " {} in {}", a.result, ms(a.duration_ms));
    if let Some(m) = &a.message {
        let _ = write!(t, ": {}", clean(m));
    }
    t
}

fn group_text(g: &GroupEventReport, change: &str) -> String {
    let mut t = format!("group {} {}", clean(&g.group), change.to_uppercase());
    match (change, &g.to) {
        ("moved", Some(to)) => {
            let _ = write!(t, " to {}", clean(to));
        }
        ("moved", None) => {}
        _ => t.push_str(" here"),
    }
    let _ = write!(t, " ({}", g.cause);
    if let Some(from) = &g.from {
        let _ = write!(t, ", from {}", clean(from));
    }
    if let (Some(to), false) = (&g.to, change == "moved") {
        let _ = write!(t, ", to {}", clean(to));
    }
    t.push(')');
    if let Some(took) = g.took_ms {
        let word = if change == "restarting" {
            "after"
        } else {
            "in"
        };
        let _ = write!(t, " {word} {}", human_ms(took));
    }
    if let Some(r) = &g.reason {
        let _ = write!(t, ": {}", clean(r));
    }
    for a in &g.actions {
        let _ = write!(t, "; {}", action_text(a));
    }
    t
}

/// e.g. "fence of secondary DONE (attempt 1, digitalocean power_off in 1.2s), 1.7s after
/// its death: droplet 3 powered off (action 7)".
fn fence_text(f: &FenceEventReport, change: &str) -> String {
    let mut t = format!(
        "fence of {} {} (attempt {}",
        clean(&f.target),
        change.to_uppercase(),
        f.attempt
    );
    if let Some(c) = &f.provider_call {
        let _ = write!(t, ", {}", clean(c));
    }
    if let Some(d) = f.duration_ms {
        let _ = write!(t, " in {}", human_ms(d));
    }
    t.push(')');
    if let Some(d) = f.since_death_ms {
        let _ = write!(t, ", {} after its death", human_ms(d));
    }
    let said = match change {
        "started" => f.reason.as_ref(),
        "done" => f.detail.as_ref(),
        _ => f.error.as_ref(),
    };
    if let Some(s) = said {
        let _ = write!(t, ": {}", clean(s));
    }
    if let Some(r) = f.retry_in_ms {
        let _ = write!(
            t,
            "; retried in {}, the peer's groups are not taken until it is off",
            human_ms(r)
        );
    }
    t
}

pub fn event_text(e: &AgentEventLine) -> String {
    let at = e.at.as_deref().unwrap_or("-");
    let what = match (&e.group, &e.fence) {
        (Some(g), _) => group_text(g, e.event.strip_prefix("group_").unwrap_or(&e.event)),
        (None, Some(f)) => fence_text(f, e.event.strip_prefix("fence_").unwrap_or(&e.event)),
        (None, None) => "an event this ipctl does not know (upgrade ipctl)".to_owned(),
    };
    format!("{at} agent #{}: {what}", e.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running_event() -> av1::Event {
        av1::Event {
            seq: 7,
            at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            incarnation: 3,
            node: "primary".into(),
            kind: Some(av1::event::Kind::Group(av1::GroupEvent {
                group: "floatip".into(),
                change: av1::GroupChange::Running as i32,
                cause: av1::EventCause::Failover as i32,
                node: "primary".into(),
                peer: "secondary".into(),
                state: av1::GroupState::Running as i32,
                reason: String::new(),
                took: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 400_000_000,
                }),
                actions: vec![av1::AgentAction {
                    agent: "reserved-ip 127.0.0.8".into(),
                    action: "start".into(),
                    provider_call: "digitalocean assign".into(),
                    result: av1::ActionResult::Ok as i32,
                    duration: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 380_000_000,
                    }),
                    message: String::new(),
                }],
            })),
        }
    }

    #[test]
    fn a_group_event_reads_as_a_line_and_as_json() {
        let line = event_line(&running_event());
        assert_eq!(
            event_text(&line),
            "2023-11-14T22:13:20Z agent #7: group floatip RUNNING here (failover, from \
             secondary) in 1.4s; reserved-ip 127.0.0.8 start (digitalocean assign) ok in 1.4s"
        );
        let v = serde_json::to_value(&line).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["source"], "agent");
        assert_eq!(v["event"], "group_running");
        assert_eq!(v["cause"], "failover");
        assert_eq!(v["from"], "secondary");
        assert_eq!(v["took_ms"], 1400.0);
        assert_eq!(v["actions"][0]["provider_call"], "digitalocean assign");
        assert_eq!(v["actions"][0]["duration_ms"], 1380.0);
    }

    #[test]
    fn a_move_names_both_nodes_and_an_unknown_kind_is_other() {
        let mut e = running_event();
        if let Some(av1::event::Kind::Group(g)) = &mut e.kind {
            g.change = av1::GroupChange::Moved as i32;
            g.cause = av1::EventCause::Operator as i32;
            g.node = "secondary".into();
            g.peer = "primary".into();
            g.took = None;
            g.actions.clear();
        }
        let line = event_line(&e);
        assert_eq!(
            event_text(&line),
            "2023-11-14T22:13:20Z agent #7: group floatip MOVED to secondary (operator, from primary)"
        );
        e.kind = None;
        let v = serde_json::to_value(event_line(&e)).unwrap();
        assert_eq!(v["event"], "other");
    }

    #[test]
    fn a_fence_reads_as_a_line_and_as_json() {
        let d = |ms: u64| {
            Some(tandem_proto::time::duration(
                std::time::Duration::from_millis(ms),
            ))
        };
        let mut e = running_event();
        e.kind = Some(av1::event::Kind::Fence(av1::FenceEvent {
            node: "secondary".into(),
            change: av1::FenceChange::Failed as i32,
            reason: "declared dead: silent on every link".into(),
            attempt: 2,
            provider_call: "digitalocean power_off".into(),
            took: d(300),
            since_death: d(1700),
            detail: String::new(),
            error: "digitalocean: the API token was rejected (401 unauthorized)".into(),
            retry_in: d(2000),
        }));
        let line = event_line(&e);
        assert_eq!(
            event_text(&line),
            "2023-11-14T22:13:20Z agent #7: fence of secondary FAILED (attempt 2, digitalocean \
             power_off in 300ms), 1.7s after its death: digitalocean: the API token was rejected \
             (401 unauthorized); retried in 2.0s, the peer's groups are not taken until it is off"
        );
        let v = serde_json::to_value(&line).unwrap();
        assert_eq!(v["event"], "fence_failed");
        assert_eq!(v["node"], "primary", "whose agent saw it");
        assert_eq!(v["target"], "secondary");
        assert_eq!(v["provider_call"], "digitalocean power_off");
        assert_eq!(v["duration_ms"], 300.0);
        assert_eq!(v["since_death_ms"], 1700.0);
        assert_eq!(v["retry_in_ms"], 2000.0);
        assert!(v["detail"].is_null() && v.get("group").is_none(), "{v}");
    }
}
