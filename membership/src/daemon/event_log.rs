//! One log line per view change, with structured fields (the same events Watch streams).
use tracing::info;

use crate::core::{Event, EventKind, NodeSpec};

/// Logs `e`; `nodes` names the nodes it refers to.
pub(super) fn log_event(nodes: &[NodeSpec], e: &Event) {
    let seq = e.seq;
    let view = e.view_id;
    match &e.kind {
        EventKind::NodeUp {
            node,
            generation,
            new_incarnation,
            previous_generation,
        } => info!(
            seq,
            view,
            node = %nodes[*node].name,
            generation,
            new_incarnation,
            previous_generation,
            "node up"
        ),
        EventKind::NodeLate { node, silent_for } => info!(
            seq,
            view,
            node = %nodes[*node].name,
            silent_for = ?silent_for,
            "node late"
        ),
        EventKind::NodeDead {
            node,
            generation,
            reason,
            silent_for,
        } => info!(
            seq,
            view,
            node = %nodes[*node].name,
            generation,
            reason = ?reason,
            silent_for = ?silent_for,
            "node dead"
        ),
        EventKind::LinkUp { node, link } => info!(
            seq,
            node = %nodes[*node].name,
            link,
            address = %nodes[*node].addresses[*link],
            "link up"
        ),
        EventKind::LinkDown { node, link } => info!(
            seq,
            node = %nodes[*node].name,
            link,
            address = %nodes[*node].addresses[*link],
            "link down"
        ),
        EventKind::Notice(n) => info!(
            seq,
            id = n.id,
            from = %nodes[n.from].name,
            topic = %n.topic,
            bytes = n.payload.len(),
            "notice kept"
        ),
        EventKind::QuorumChanged(q) => info!(
            seq,
            view,
            quorate = q.quorate,
            alive = q.alive,
            needed = q.needed,
            voters = q.voters,
            "quorum changed"
        ),
    }
}
