//! The emulator's configuration: a small YAML file or the same built in code by tests.
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// ```yaml
/// droplets:
///   - { id: 1001, name: primary, region: nyc3, web: "127.0.0.1:8081" }
///   - { id: 1002, name: secondary, region: nyc3, ipv6: false }
/// reserved_ips:
///   - { ip: 127.0.0.100, region: nyc3, holder: 1001 }
///   - { ip: "2001:db8:0:1::100", region: nyc3, holder: 1001 }
/// tokens:
///   - { token: "full-access-token" }
///   - { token: "read-only-token", scopes: ["reserved_ip:read", "droplet:read", "actions:read"] }
/// action_delay: 200ms
/// action_jitter: 0s
/// rate_limit: { per_minute: 250, per_hour: 5000 }
/// audit_log: /tmp/emulator-audit.jsonl
/// listen: 127.0.0.1
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorConfig {
    #[serde(default)]
    pub droplets: Vec<DropletConfig>,
    #[serde(default)]
    pub reserved_ips: Vec<ReservedIpConfig>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Time from an accepted action (201 in-progress) to its completion. Default 200ms.
    #[serde(default = "default_action_delay", with = "humantime_serde")]
    pub action_delay: Duration,
    /// A random extra delay, uniform in `0..action_jitter`, added per action (real actions
    /// vary; a fixed delay makes poll timing look better or worse than it is).
    #[serde(default, with = "humantime_serde")]
    pub action_jitter: Duration,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// JSON-lines file of every request and every change of holder.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// The address every listener binds (each on a port of its own). Default loopback; an
    /// address in a network namespace serves machines that reach it over a veth.
    #[serde(default = "default_listen")]
    pub listen: IpAddr,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            droplets: Vec::new(),
            reserved_ips: Vec::new(),
            tokens: Vec::new(),
            action_delay: default_action_delay(),
            action_jitter: Duration::ZERO,
            rate_limit: RateLimitConfig::default(),
            audit_log: None,
            listen: default_listen(),
        }
    }
}

fn default_listen() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_action_delay() -> Duration {
    Duration::from_millis(200)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropletConfig {
    pub id: u64,
    pub name: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// `host:port` of this droplet's web server, for the HTTP front.
    #[serde(default)]
    pub web: Option<String>,
    /// Shown by the metadata service; default a loopback address.
    #[serde(default)]
    pub public_ipv4: Option<String>,
    /// The droplet has IPv6 enabled (default yes): it shows a public IPv6 in its networks
    /// (Hetzner `public_net.ipv6`, Vultr `v6_main_ip`), and only such a droplet can be given a
    /// DigitalOcean reserved IPv6 (422 otherwise, as DigitalOcean documents; Hetzner and Vultr
    /// document no such rule, so the emulator has none for them).
    #[serde(default = "yes")]
    pub ipv6: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservedIpConfig {
    pub ip: IpAddr,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub holder: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    /// DigitalOcean custom-scope names (`reserved_ip:update`, ...); absent = full access.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// DigitalOcean's limits, per token: 250 requests in any minute, 5,000 in any hour (see
/// `ratelimit.rs`). The windows are settable so tests need not wait a real minute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub per_minute: u32,
    pub per_hour: u32,
    #[serde(with = "humantime_serde")]
    pub minute: Duration,
    #[serde(with = "humantime_serde")]
    pub hour: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_minute: 250,
            per_hour: 5000,
            minute: Duration::from_secs(60),
            hour: Duration::from_secs(3600),
        }
    }
}

fn default_region() -> String {
    "nyc3".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl EmulatorConfig {
    pub fn from_yaml_file(path: &std::path::Path) -> Result<EmulatorConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let cfg: EmulatorConfig = serde_yaml::from_str(&text).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks cross references, collecting every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut ids = BTreeSet::new();
        for d in &self.droplets {
            if !ids.insert(d.id) {
                errors.push(format!("droplets: id {} appears twice", d.id));
            }
        }
        let mut ips = BTreeSet::new();
        for r in &self.reserved_ips {
            if !ips.insert(r.ip) {
                errors.push(format!("reserved_ips: {} appears twice", r.ip));
            }
            if let Some(h) = r.holder
                && !ids.contains(&h)
            {
                errors.push(format!(
                    "reserved_ips: {} is held by droplet {h}, which is not in droplets",
                    r.ip
                ));
            }
        }
        let r = &self.rate_limit;
        if r.per_minute == 0 || r.per_hour == 0 || r.minute.is_zero() || r.hour < r.minute {
            errors.push(
                "rate_limit: per_minute, per_hour and minute must be positive, hour at least a minute"
                    .into(),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors.join("; ")))
        }
    }
}
