//! What the core hands the shell: view changes, datagrams, delivered messages, counters.
use std::net::SocketAddr;
use std::time::Duration;

use super::detector::DeadReason;
use super::quorum::Quorum;
use super::stream::MAX_UNACKED;
use super::{Time, wire};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    NodeUp {
        node: usize,
        generation: u64,
        new_incarnation: bool,
        previous_generation: u64,
    },
    NodeLate {
        node: usize,
        silent_for: Duration,
    },
    NodeDead {
        node: usize,
        generation: u64,
        reason: DeadReason,
        silent_for: Duration,
    },
    LinkUp {
        node: usize,
        link: usize,
    },
    LinkDown {
        node: usize,
        link: usize,
    },
    QuorumChanged(Quorum),
    /// A message on a retained topic was sent or received ([`super::notice`]); the view
    /// is unchanged.
    Notice(super::notice::Notice),
}

/// A change of the view. `seq` increases by exactly one per event, from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    /// The view id after this event.
    pub view_id: u64,
    /// When it happened (core time).
    pub at: Time,
    pub kind: EventKind,
}

/// A datagram to send from local socket `link` to `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub link: usize,
    pub dest: SocketAddr,
    pub bytes: Vec<u8>,
}

/// A cluster message delivered in order to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub from: usize,
    pub from_generation: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub broadcast: bool,
    pub seq: u64,
    /// On a retained topic: kept as a notice, so not lost when no subscriber takes it.
    pub retained: bool,
}

/// Why a message was not queued. Nothing was queued for anyone when this is returned.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("no node named {0:?} in the configuration")]
    UnknownNode(String),
    #[error("a message is never delivered to its sender")]
    ToSelf,
    #[error("node {0:?} is not alive")]
    NotAlive(String),
    #[error("topic must be 1..={max} bytes, got {0}", max = wire::MAX_TOPIC)]
    Topic(usize),
    #[error("payload must be at most {max} bytes, got {0}", max = wire::MAX_PAYLOAD)]
    Payload(usize),
    #[error("{0:?} already has {max} unacknowledged messages", max = MAX_UNACKED)]
    QueueFull(String),
    #[error("the node is leaving the cluster")]
    Stopped,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_retransmitted: u64,
    pub messages_dropped: u64,
    /// Times this node found itself stalled (see [`STALL_INTERVALS`](super::STALL_INTERVALS)).
    pub stalls: u64,
    /// Messages on retained topics kept (sent or received).
    pub notices: u64,
}
