//! The validated configuration: invariants are types (Duration, SocketAddr, IpAddr, enums).
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/tandem/cluster.yaml";
/// Default directory of the daemons' Unix sockets.
pub const DEFAULT_RUN_DIR: &str = "/run/tandem";
/// Default directory of persistent state (generation counter, standby flags).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tandem";
/// Socket file names inside the run dir.
pub const MEMBERSHIP_SOCKET: &str = "membership.sock";
pub const AGENT_SOCKET: &str = "agent.sock";

/// The whole validated cluster configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The file it was read from (for messages).
    pub source: PathBuf,
    /// Cluster name: letters, digits and '-'. Datagrams of other clusters are rejected.
    pub cluster: String,
    pub auth: Auth,
    pub timing: Timing,
    pub quorum: QuorumPolicy,
    /// Every node, in configuration order (placement uses this order).
    pub nodes: Vec<NodeConfig>,
    /// Checks of the local node; failing ones make it no candidate.
    pub health: Vec<HealthCheck>,
    pub resources: Vec<ResourceGroup>,
    pub membership: MembershipSettings,
    pub agent: AgentSettings,
    /// Power a dead peer off through the provider before taking its groups; off when absent.
    pub fencing: Option<Fencing>,
}

/// Where the cluster key lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// Signs outgoing datagrams and verifies incoming ones.
    pub key_file: PathBuf,
    /// Also accepted when verifying, so keys can be rotated without downtime.
    pub accept_key_files: Vec<PathBuf>,
}

/// Heartbeat timing. Invariants: interval < warn_after < dead_after <= init_dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Heartbeat period. Default 100ms.
    pub interval: Duration,
    /// Log a heartbeat that is later than this. Default 500ms.
    pub warn_after: Duration,
    /// Silence on every link for this long => dead. Default 1s.
    pub dead_after: Duration,
    /// Grace for peers never heard since start. Default 10s.
    pub init_dead: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            interval: Duration::from_millis(100),
            warn_after: Duration::from_millis(500),
            dead_after: Duration::from_secs(1),
            init_dead: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumPolicy {
    /// Exactly two voters; always quorate; health checks decide.
    TwoNode,
    /// A strict majority of the configured voters.
    Majority,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Votes and may hold resources.
    #[default]
    Member,
    /// Votes only; never holds resources.
    Witness,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub name: String,
    /// One address per link, in link order. The local node binds to its own.
    pub addresses: Vec<SocketAddr>,
    pub role: Role,
    /// The provider's id of this node's server (droplet, server, instance), for fencing;
    /// when absent the server is looked up by the node's name. Numeric for DigitalOcean and
    /// Hetzner (checked when `fencing` names one of them), a UUID for Vultr.
    pub provider_id: Option<String>,
}

/// Optional `fencing:` section: before a node takes a group from a peer it declared dead
/// (not one that left cleanly) it powers that peer's server off through the provider and
/// waits until the provider says it is off.
#[derive(Debug, Clone, PartialEq)]
pub struct Fencing {
    pub provider: Provider,
    /// Its own API token (DigitalOcean: `droplet:update` and `droplet:read`); relative
    /// names are looked up in `$CREDENTIALS_DIRECTORY`.
    pub token_file: PathBuf,
    /// Provider API base URL (the emulator in tests and the demo).
    pub api_url: Option<String>,
    /// The non-preferred side of a split waits this long before fencing, so that of two
    /// nodes that lost each other exactly one fences (the preferred one). Default 5s.
    pub delay: Duration,
    /// Time limit of one power-off call (polling included); a failed call is retried with
    /// backoff. Default 60s.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthProbe {
    /// TCP connect to host:port (a name is resolved at check time).
    Tcp(String),
    /// HTTP GET; healthy when the status equals `expect`.
    Http { url: String, expect: u16 },
    /// A command run with `sh -c`; exit 0 = healthy.
    Exec(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub probe: HealthProbe,
    /// Default 2s.
    pub interval: Duration,
    /// Default 1s.
    pub timeout: Duration,
    /// Consecutive failures before unhealthy. Default 3.
    pub fall: u32,
    /// Consecutive successes before healthy again. Default 2.
    pub rise: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Failback {
    /// The preferred node takes the group back when it is a candidate again.
    #[default]
    Auto,
    /// The group stays where it is until an operator moves it.
    Manual,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResourceGroup {
    pub name: String,
    pub prefer: Option<String>,
    pub failback: Failback,
    /// Started in order, stopped in reverse. Never empty.
    pub agents: Vec<AgentConfig>,
}

/// Settings every agent accepts (optional keys beside the agent's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSettings {
    /// Time limit of one start/stop/monitor action. Default 20s (reserved-ip: 60s).
    pub timeout: Duration,
    /// Monitor period. Default 10s.
    pub monitor_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AgentConfig {
    ReservedIp(ReservedIpAgent),
    Lsb(LsbAgent),
    Ocf(OcfAgent),
    Exec(ExecAgent),
}

/// A reserved-IP provider. Its names and facts are here, once: the configuration parses them,
/// the agent, ipctl and the metrics print them, and `tandem_resource_agent::provider::new`
/// builds its client (the one match to extend with a new provider's module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    DigitalOcean,
    Hetzner,
    Vultr,
}

impl Provider {
    /// Every provider, in the order the documentation lists them.
    pub const ALL: [Provider; 3] = [Provider::DigitalOcean, Provider::Hetzner, Provider::Vultr];

    /// The name in `provider:`, metrics labels, logs and `ipctl assign --provider`.
    pub const fn name(self) -> &'static str {
        match self {
            Provider::DigitalOcean => "digitalocean",
            Provider::Hetzner => "hetzner",
            Provider::Vultr => "vultr",
        }
    }

    /// The provider called `name` (exactly as [`Provider::name`] spells it).
    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }

    /// What the provider calls a server.
    pub const fn server_noun(self) -> &'static str {
        match self {
            Provider::DigitalOcean => "droplet",
            Provider::Hetzner => "server",
            Provider::Vultr => "instance",
        }
    }

    /// The environment variable the provider's own tools read the API token from (`doctl`
    /// and DigitalOcean's `assign-ip` script, `hcloud`, `vultr-cli`).
    pub const fn token_env(self) -> &'static str {
        match self {
            Provider::DigitalOcean => "DO_TOKEN",
            Provider::Hetzner => "HCLOUD_TOKEN",
            Provider::Vultr => "VULTR_API_KEY",
        }
    }

    /// The API's rate limits per token, `(per minute, per hour)`, as each provider documents
    /// them: DigitalOcean 250 a minute and 5,000 an hour; Hetzner 3,600 an hour (one more each
    /// second, no minute limit); Vultr 30 a second (no hourly limit).
    pub const fn rate_limits(self) -> (u32, u32) {
        match self {
            Provider::DigitalOcean => (250, 5000),
            Provider::Hetzner => (3600, 3600),
            Provider::Vultr => (1800, u32::MAX),
        }
    }

    /// Server ids are numbers (droplets, Hetzner servers), not UUIDs (Vultr instances).
    pub const fn numeric_server_ids(self) -> bool {
        !matches!(self, Provider::Vultr)
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Provider, String> {
        Provider::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Provider::ALL.iter().map(|p| p.name()).collect();
            format!("unknown provider {s:?}; one of: {}", names.join(", "))
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReservedIpAgent {
    pub provider: Provider,
    pub ip: IpAddr,
    /// File holding the API token; relative names are looked up in `$CREDENTIALS_DIRECTORY`.
    pub token_file: PathBuf,
    /// Provider API base URL (the emulator in tests and the demo).
    pub api_url: Option<String>,
    /// Metadata service base URL.
    pub metadata_url: Option<String>,
    /// This node's server id; else asked from the metadata service.
    /// Per node: a map from node name to id is also accepted (`droplet_ids`).
    pub droplet_id: Option<u64>,
    /// Server id per node name, for configs shared by every node.
    pub droplet_ids: BTreeMap<String, u64>,
    /// Unassign the IP on stop (default false: the next holder's assign moves it atomically).
    pub unassign_on_stop: bool,
    pub settings: ActionSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LsbAgent {
    /// A name in /etc/init.d, or an absolute path.
    pub script: String,
    pub settings: ActionSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OcfAgent {
    /// "provider:type", e.g. "heartbeat:Dummy".
    pub provider: String,
    pub kind: String,
    /// Passed as OCF_RESKEY_<name>.
    pub params: BTreeMap<String, String>,
    /// Default /usr/lib/ocf.
    pub ocf_root: PathBuf,
    pub settings: ActionSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecAgent {
    pub start: String,
    pub stop: String,
    /// Exit 0 = running, 7 (OCF) or 3 (LSB) = stopped, anything else = failed.
    pub monitor: Option<String>,
    pub settings: ActionSettings,
}

/// Optional `membership:` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MembershipSettings {
    /// Group owning membership.sock (mode 0660). Default: the daemon's own group.
    pub socket_group: Option<String>,
    /// Prometheus endpoint (loopback only); off when absent.
    pub metrics: Option<SocketAddr>,
}

/// Optional `agent:` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentSettings {
    /// Group owning agent.sock (mode 0660).
    pub socket_group: Option<String>,
    /// Members of this group (and root) may call mutating RPCs.
    pub admin_group: Option<String>,
    /// Prometheus endpoint (loopback only); off when absent.
    pub metrics: Option<SocketAddr>,
}

/// Where `lsb` script names without a slash live.
pub const INIT_DIR: &str = "/etc/init.d";

impl LsbAgent {
    /// The script run: a name in [`INIT_DIR`], or the absolute path given.
    pub fn script_path(&self) -> PathBuf {
        if self.script.contains('/') {
            PathBuf::from(&self.script)
        } else {
            PathBuf::from(INIT_DIR).join(&self.script)
        }
    }
}

impl OcfAgent {
    /// The resource agent run: `OCF_ROOT/resource.d/PROVIDER/TYPE` (OCF 1.1, "Paths").
    pub fn script_path(&self) -> PathBuf {
        self.ocf_root
            .join("resource.d")
            .join(&self.provider)
            .join(&self.kind)
    }
}

impl ClusterConfig {
    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Voting nodes (members and witnesses).
    pub fn voters(&self) -> usize {
        self.nodes.len()
    }
}
