//! What the core is built from, and the checks that make it safe to run.
use std::collections::HashMap;
use std::net::SocketAddr;

use prost::Message as _;
use tandem_config::{QuorumPolicy, Role, Timing};

use super::wire::{self, KeyRing, msg};

/// A node as the core needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    /// One per link, in link order.
    pub addresses: Vec<SocketAddr>,
    pub role: Role,
}

/// Everything the core needs to start.
#[derive(Debug)]
pub struct Settings {
    pub cluster: String,
    /// Every configured node, in configuration order (all of them vote).
    pub nodes: Vec<NodeSpec>,
    /// Name of the node this core runs on.
    pub local: String,
    pub timing: Timing,
    pub quorum: QuorumPolicy,
    /// This daemon's generation (strictly increasing across restarts; see `generation`).
    pub generation: u64,
    pub keys: KeyRing,
}

impl Settings {
    /// Settings from the validated cluster configuration.
    pub fn from_config(
        cfg: &tandem_config::ClusterConfig,
        local: &str,
        generation: u64,
        keys: KeyRing,
    ) -> Settings {
        Settings {
            cluster: cfg.cluster.clone(),
            nodes: cfg
                .nodes
                .iter()
                .map(|n| NodeSpec {
                    name: n.name.clone(),
                    addresses: n.addresses.clone(),
                    role: n.role,
                })
                .collect(),
            local: local.to_owned(),
            timing: cfg.timing,
            quorum: cfg.quorum,
            generation,
            keys,
        }
    }

    /// Checks the settings; returns the node index by name and the local node's index.
    pub(super) fn check(&self) -> Result<(HashMap<String, usize>, usize), SettingsError> {
        let t = self.timing;
        if t.interval.is_zero()
            || t.interval >= t.warn_after
            || t.warn_after >= t.dead_after
            || t.dead_after > t.init_dead
        {
            return Err(SettingsError::BadTiming);
        }
        if self.generation == 0 {
            return Err(SettingsError::ZeroGeneration);
        }
        let mut index = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if index.insert(n.name.clone(), i).is_some() {
                return Err(SettingsError::DuplicateNode(n.name.clone()));
            }
            if n.addresses.is_empty() {
                return Err(SettingsError::NoAddresses(n.name.clone()));
            }
        }
        let me = *index
            .get(&self.local)
            .ok_or_else(|| SettingsError::UnknownLocal(self.local.clone()))?;
        let size = self.worst_datagram(me);
        if size > wire::MAX_DATAGRAM {
            return Err(SettingsError::TooLarge {
                size,
                max: wire::MAX_DATAGRAM,
            });
        }
        Ok((index, me))
    }

    /// The largest datagram these settings can produce: a full data message or a heartbeat
    /// with an echo per local link, with the longest names and the widest varints.
    fn worst_datagram(&self, me: usize) -> usize {
        let longest_peer = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me)
            .map(|(_, n)| n.name.len())
            .max()
            .unwrap_or(0);
        let header = wire::FIXED_HEADER
            + wire::TAG_LEN
            + self.cluster.len()
            + self.local.len()
            + longest_peer;
        let data = msg::Packet {
            receiver_generation: u64::MAX,
            data_base: u64::MAX,
            from_link: u32::MAX,
            data: vec![msg::Data {
                seq: u64::MAX,
                topic: "t".repeat(wire::MAX_TOPIC),
                payload: vec![0xff; wire::MAX_PAYLOAD],
                broadcast: true,
            }],
            ..Default::default()
        };
        let heartbeat = msg::Packet {
            receiver_generation: u64::MAX,
            from_link: u32::MAX,
            heartbeat: Some(msg::Heartbeat {
                hb_seq: u64::MAX,
                sent_at: u64::MAX,
                echoes: vec![
                    msg::Echo {
                        link: u32::MAX,
                        sent_at: u64::MAX,
                        held: u64::MAX,
                    };
                    self.nodes[me].addresses.len()
                ],
            }),
            ..Default::default()
        };
        header + data.encoded_len().max(heartbeat.encoded_len())
    }
}

/// Why the core cannot start with these settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("node {0:?} is not in the configuration's node list")]
    UnknownLocal(String),
    #[error("node {0:?} is listed twice")]
    DuplicateNode(String),
    #[error("node {0:?} has no addresses")]
    NoAddresses(String),
    #[error("generation must be at least 1")]
    ZeroGeneration,
    #[error("interval must be non-zero and interval < warn_after < dead_after <= init_dead")]
    BadTiming,
    #[error(
        "the cluster name, the node names and the number of links make a datagram of \
         {size} bytes, above the {max}-byte limit; use shorter names or fewer addresses"
    )]
    TooLarge { size: usize, max: usize },
}
