//! The agents' messages on membership's `Send`/`Subscribe` ([`TOPIC`]): JSON in a versioned
//! envelope, at most [`MAX_PAYLOAD`] bytes. One kind does most of the work, the full and
//! idempotent [`Announce`]ment of a node's state (see the handover module).
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Config;

/// The membership topic the resource agents talk on.
pub const TOPIC: &str = "tandem.agent.v1";
/// Version of the message encoding; messages of another version are rejected and counted.
pub const MESSAGE_VERSION: u32 = 1;
/// Largest payload membership carries (membership.proto, `Send`).
pub const MAX_PAYLOAD: usize = 900;

/// One node's announcement of its own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Announce {
    /// The sender agent's incarnation (increases on every agent start).
    pub inc: u64,
    pub seq: u64,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub healthy: bool,
    #[serde(default)]
    pub holds: BTreeSet<String>,
    /// Absent when empty, like `starting`, so either full costs the same bytes.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub claims: BTreeSet<String>,
    /// Groups of `holds` whose start has not completed (a reserved IP not assigned yet):
    /// a peer running one checks it against the provider only once the start is done.
    /// Absent when empty (older agents neither send nor read it). A group is never claimed
    /// and starting at once, and the key is as long as `claims`', so the worst-case size
    /// ([`worst_case_announcement`]) is unchanged.
    #[serde(default, rename = "starts", skip_serializing_if = "BTreeSet::is_empty")]
    pub starting: BTreeSet<String>,
    /// Groups this node will not take (released by an operator, or failed here).
    #[serde(default)]
    pub avoid: BTreeSet<String>,
    /// Groups an operator moved to this node (takeover).
    #[serde(default)]
    pub pins: BTreeSet<String>,
    /// Newest (incarnation, seq) seen from each peer: the acknowledgement of claims.
    #[serde(default)]
    pub seen: BTreeMap<String, (u64, u64)>,
}

/// Messages on [`TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Message {
    State(Announce),
    /// Ask `node` to go to standby (`on`) or online.
    Standby {
        node: String,
        on: bool,
    },
    /// Ask `node` to take `group` over: a release on the group's holder, which moves it once
    /// to the next candidate (agents older than this message reject and count it).
    Takeover {
        node: String,
        group: String,
    },
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u32,
    #[serde(flatten)]
    msg: &'a Message,
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("message of {0} bytes is larger than the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("unsupported message version {0} (this agent speaks {MESSAGE_VERSION})")]
    Version(u32),
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl Message {
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let bytes = serde_json::to_vec(&EnvelopeOut {
            v: MESSAGE_VERSION,
            msg: self,
        })
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_PAYLOAD {
            return Err(CodecError::TooLarge(bytes.len()));
        }
        Ok(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, CodecError> {
        if bytes.len() > MAX_PAYLOAD {
            return Err(CodecError::TooLarge(bytes.len()));
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
        if v.v != MESSAGE_VERSION {
            return Err(CodecError::Version(v.v));
        }
        serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
    }
}

/// Size of the largest announcement this configuration can produce: every group in every
/// list but one of `claims` and `starting` (a group is never claimed and starting at
/// once), every peer in `seen` with the largest numbers.
pub fn worst_case_announcement(cfg: &Config) -> usize {
    let all: BTreeSet<String> = cfg.groups.iter().map(|g| g.name.clone()).collect();
    let size = |claims: BTreeSet<String>, starting: BTreeSet<String>| {
        let a = Announce {
            inc: u64::MAX,
            seq: u64::MAX,
            standby: true,
            healthy: true,
            holds: all.clone(),
            claims,
            starting,
            avoid: all.clone(),
            pins: all.clone(),
            seen: cfg
                .nodes
                .iter()
                .map(|(n, _)| (n.clone(), (u64::MAX, u64::MAX)))
                .collect(),
        };
        serde_json::to_vec(&EnvelopeOut {
            v: MESSAGE_VERSION,
            msg: &Message::State(a),
        })
        .map_or(usize::MAX, |b| b.len())
    };
    size(all.clone(), BTreeSet::new()).max(size(BTreeSet::new(), all.clone()))
}
