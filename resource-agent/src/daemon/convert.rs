//! The core's status, and the shell's own (agents, readiness, health), as protobuf.
use tandem_config::Failback;
use tandem_proto::agent::v1 as pb;

use super::driver::Driver;
use crate::agents::Kind;
use crate::agents::group::AgentState;
use crate::core::{
    ActionRecord, Cause, Constraint, ConstraintKind, Event, FenceChange, FenceEvent, FenceStatus,
    GroupChange, LocalState, Time,
};

impl Driver {
    pub(super) fn status(&self, now: Time) -> pb::StatusResponse {
        let st = self.core.status(now);
        let groups = st
            .groups
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                let spec = &self.cfg.resources[gi];
                let agents: Vec<pb::AgentStatus> = self.runners[gi]
                    .records()
                    .into_iter()
                    .map(agent_status)
                    .collect();
                let last_action = agents
                    .iter()
                    .filter_map(|a| a.last_action.clone())
                    .max_by_key(|a| a.started_at.as_ref().map(|t| (t.seconds, t.nanos)));
                pb::GroupStatus {
                    name: g.name.clone(),
                    prefer: spec.prefer.clone().unwrap_or_default(),
                    failback: match spec.failback {
                        Failback::Auto => "auto".into(),
                        Failback::Manual => "manual".into(),
                    },
                    desired_holder: g.desired.clone().unwrap_or_default(),
                    holder: g.holder.clone().unwrap_or_default(),
                    state: group_state(g.state) as i32,
                    agents,
                    restarts: g.restarts,
                    last_action,
                    readiness: self.readiness[gi]
                        .as_ref()
                        .map(|(problems, at)| pb::Readiness {
                            ready: problems.is_empty(),
                            problems: problems.clone(),
                            checked_at: Some(tandem_proto::time::timestamp(*at)),
                        }),
                    not_candidate_reason: g.not_candidate_reason.clone().unwrap_or_default(),
                    constraints: g.constraints.iter().map(constraint).collect(),
                    waiting_for: g.waiting_for.clone().unwrap_or_default(),
                }
            })
            .collect();
        pb::StatusResponse {
            node: self.node.clone(),
            cluster: self.cfg.cluster.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            membership_connected: st.connected,
            membership_disconnected_for: st.disconnected_for.map(tandem_proto::time::duration),
            quorate: st.quorate,
            health: self
                .health
                .checks
                .iter()
                .map(|c| pb::HealthCheck {
                    name: c.name(),
                    healthy: c.healthy == Some(true),
                    consecutive_failures: c.consecutive_failures,
                    consecutive_successes: c.consecutive_successes,
                    last_error: c.last_error.clone().unwrap_or_default(),
                    last_checked: c.last_checked.map(tandem_proto::time::timestamp),
                })
                .collect(),
            nodes: st
                .nodes
                .iter()
                .map(|n| pb::NodeFlags {
                    name: n.name.clone(),
                    standby: n.standby,
                    healthy: n.healthy,
                    holds: n.holds.clone(),
                })
                .collect(),
            groups,
            fences: st.fences.iter().map(fence).collect(),
            recent_events: self.recent.iter().cloned().collect(),
        }
    }
}

fn fence(f: &FenceStatus) -> pb::Fence {
    let d = tandem_proto::time::duration;
    pb::Fence {
        node: f.node.clone(),
        reason: f.reason.clone(),
        phase: f.phase.as_str().into(),
        age: Some(d(f.age)),
        took: Some(d(f.took)),
        attempts: f.attempts,
        error: f.error.clone().unwrap_or_default(),
        detail: f.detail.clone().unwrap_or_default(),
        next_in: f.next_in.map(d),
    }
}

/// One of the core's events, numbered and stamped by the driver.
pub(super) fn event(
    e: Event,
    seq: u64,
    at: std::time::SystemTime,
    incarnation: u64,
    node: &str,
) -> pb::Event {
    let kind = match e {
        Event::Group(g) => pb::event::Kind::Group(pb::GroupEvent {
            group: g.group,
            change: match g.change {
                GroupChange::Starting => pb::GroupChange::Starting,
                GroupChange::Running => pb::GroupChange::Running,
                GroupChange::Stopping => pb::GroupChange::Stopping,
                GroupChange::Stopped => pb::GroupChange::Stopped,
                GroupChange::Failed => pb::GroupChange::Failed,
                GroupChange::Restarting => pb::GroupChange::Restarting,
                GroupChange::Moved => pb::GroupChange::Moved,
            } as i32,
            cause: match g.cause {
                Cause::Failover => pb::EventCause::Failover,
                Cause::Handover => pb::EventCause::Handover,
                Cause::Operator => pb::EventCause::Operator,
                Cause::Monitor => pb::EventCause::Monitor,
                Cause::Health => pb::EventCause::Health,
                Cause::Initial => pb::EventCause::Initial,
                Cause::Retry => pb::EventCause::Retry,
            } as i32,
            node: g.node,
            peer: g.peer.unwrap_or_default(),
            state: group_state(g.state) as i32,
            reason: g.reason.unwrap_or_default(),
            took: g.took.map(tandem_proto::time::duration),
            actions: g.actions.into_iter().map(agent_action).collect(),
        }),
        Event::Fence(f) => pb::event::Kind::Fence(fence_event(f)),
    };
    pb::Event {
        seq,
        at: Some(tandem_proto::time::timestamp(at)),
        incarnation,
        node: node.to_owned(),
        kind: Some(kind),
    }
}

fn fence_event(f: FenceEvent) -> pb::FenceEvent {
    let d = tandem_proto::time::duration;
    pb::FenceEvent {
        node: f.node,
        change: match f.change {
            FenceChange::Started => pb::FenceChange::Started,
            FenceChange::Done => pb::FenceChange::Done,
            FenceChange::Failed => pb::FenceChange::Failed,
            FenceChange::Abandoned => pb::FenceChange::Abandoned,
        } as i32,
        reason: f.reason,
        attempt: f.attempt,
        provider_call: f.call.unwrap_or_default().to_owned(),
        took: f.took.map(d),
        since_death: Some(d(f.since_death)),
        detail: f.detail.unwrap_or_default(),
        error: f.error.unwrap_or_default(),
        retry_in: f.retry_in.map(d),
    }
}

fn action_result(ok: bool, timed_out: bool) -> pb::ActionResult {
    if ok {
        pb::ActionResult::Ok
    } else if timed_out {
        pb::ActionResult::Timeout
    } else {
        pb::ActionResult::Failed
    }
}

fn agent_action(a: ActionRecord) -> pb::AgentAction {
    pb::AgentAction {
        agent: a.agent,
        action: a.action,
        provider_call: a.call.unwrap_or_default(),
        result: action_result(a.ok, a.timed_out) as i32,
        duration: Some(tandem_proto::time::duration(a.took)),
        message: a.message,
    }
}

fn group_state(s: LocalState) -> pb::GroupState {
    match s {
        LocalState::Stopped => pb::GroupState::Stopped,
        LocalState::Waiting => pb::GroupState::Waiting,
        LocalState::Starting => pb::GroupState::Starting,
        LocalState::Running => pb::GroupState::Running,
        LocalState::Stopping => pb::GroupState::Stopping,
        LocalState::Failed => pb::GroupState::Failed,
    }
}

fn agent_status(r: crate::agents::group::AgentRecord) -> pb::AgentStatus {
    pb::AgentStatus {
        name: r.name,
        kind: match r.kind {
            Kind::ReservedIp => pb::AgentKind::ReservedIp,
            Kind::Lsb => pb::AgentKind::Lsb,
            Kind::Ocf => pb::AgentKind::Ocf,
            Kind::Exec => pb::AgentKind::Exec,
        } as i32,
        state: match r.state {
            AgentState::Unknown => pb::AgentState::Unknown,
            AgentState::Stopped => pb::AgentState::Stopped,
            AgentState::Starting => pb::AgentState::Starting,
            AgentState::Running => pb::AgentState::Running,
            AgentState::Stopping => pb::AgentState::Stopping,
            AgentState::Failed => pb::AgentState::Failed,
        } as i32,
        last_action: r.last_action.map(|a| pb::LastAction {
            action: a.action.to_string(),
            result: action_result(a.ok, a.timed_out) as i32,
            started_at: Some(tandem_proto::time::timestamp(a.started_at)),
            duration: Some(tandem_proto::time::duration(a.took)),
            message: a.message,
        }),
        failures: r.failures,
        detail: r.detail,
    }
}

fn constraint(c: &Constraint) -> pb::Constraint {
    pb::Constraint {
        kind: match c.kind {
            ConstraintKind::Pin => pb::ConstraintKind::Pin,
            ConstraintKind::Ban => pb::ConstraintKind::Ban,
        } as i32,
        node: c.node.clone(),
        reason: c.reason.clone(),
        clear: c.clear.clone(),
    }
}
