//! What a configuration's steady state costs in provider API requests, per token: the
//! monitors of every reserved IP (on the node holding its group) and the readiness checks (on
//! every node that runs agents), as the agent makes them. `ipctl check-config` compares it
//! with the provider's limits; the running agent enforces the same share ([`super::budget`]).
//!
//! Pure arithmetic on the configuration: no clock, no request.
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tandem_config::{AgentConfig, ClusterConfig, Provider, Role};

use super::budget::Limits;

/// How often groups that can tell (reserved-ip) check whether this node could take them:
/// one cheap read-only API call a minute per IP keeps a broken token or a region mismatch
/// visible long before a failover needs it.
pub const READINESS_INTERVAL: Duration = Duration::from_secs(60);

/// The share of each of the provider's windows the steady state may use: the routine share
/// of the agent's budget. The rest is a failover's (and other users' of the token).
pub const STEADY_SHARE: f64 = 0.5;

/// Requests of one monitor: the IP's read (a Hetzner or Vultr IP's id is looked up once).
pub fn monitor_requests(_provider: Provider, _ip: IpAddr) -> u32 {
    1
}

/// Requests of one readiness check: the IP and this server, and for a DigitalOcean IPv6 the
/// actions list its moves poll (checks the `actions:read` scope).
pub fn readiness_requests(provider: Provider, ip: IpAddr) -> u32 {
    2 + u32::from(provider == Provider::DigitalOcean && ip.is_ipv6())
}

/// Nodes that run agents (members; a witness runs none): each may spend the same token.
pub fn agent_nodes(cfg: &ClusterConfig) -> u32 {
    let n = cfg.nodes.iter().filter(|n| n.role == Role::Member).count();
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

/// The steady-state load on one token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLoad {
    pub provider: Provider,
    pub token_file: PathBuf,
    pub api_url: Option<String>,
    /// Reserved IPs using the token.
    pub ips: usize,
    /// Nodes that run the readiness checks.
    pub nodes: u32,
    /// Requests an hour of the monitors (the whole cluster: one holder per group).
    pub monitors_per_hour: f64,
    /// Requests an hour of the readiness checks (every node).
    pub readiness_per_hour: f64,
    pub limits: Limits,
    /// The monitor requests of one hour were the monitors once per second each
    /// (`monitors_per_hour = per_second_monitors × 3600 / interval`).
    per_second_monitors: f64,
}

impl TokenLoad {
    pub fn per_hour(&self) -> f64 {
        self.monitors_per_hour + self.readiness_per_hour
    }

    /// The steady state's share of the tighter of the provider's two windows (1.0: all).
    pub fn share(&self) -> f64 {
        let hour = self.per_hour() / f64::from(self.limits.per_hour);
        let minute = self.per_hour() / 60.0 / f64::from(self.limits.per_minute);
        hour.max(minute)
    }

    /// The requests an hour the steady state may use: [`STEADY_SHARE`] of the tighter window.
    pub fn allowed_per_hour(&self) -> f64 {
        let hour = f64::from(self.limits.per_hour);
        let minute = f64::from(self.limits.per_minute) * 60.0;
        hour.min(minute) * STEADY_SHARE
    }

    /// The smallest `monitor_interval`, the same for every IP of the token, that keeps the
    /// steady state within its share; `None` when the readiness checks alone exceed it.
    pub fn monitor_interval_needed(&self) -> Option<Duration> {
        let room = self.allowed_per_hour() - self.readiness_per_hour;
        if room <= 0.0 {
            return None;
        }
        // Whole seconds, rounded up.
        Some(Duration::from_secs(
            (self.per_second_monitors * 3600.0 / room).ceil() as u64,
        ))
    }
}

/// The readiness interval of `cfg`: [`READINESS_INTERVAL`], longer where a token's readiness
/// checks (every node, every IP) would take more than half the steady share, so that the
/// monitors keep the other half. Twenty DigitalOcean IPs on one token check every 288 s.
pub fn readiness_interval(cfg: &ClusterConfig) -> Duration {
    load(cfg, READINESS_INTERVAL)
        .iter()
        .map(|l| {
            let per_round = l.readiness_per_hour * READINESS_INTERVAL.as_secs_f64() / 3600.0;
            let secs = (per_round * 3600.0 / (l.allowed_per_hour() / 2.0)).ceil();
            READINESS_INTERVAL.max(Duration::from_secs(secs as u64))
        })
        .max()
        .unwrap_or(READINESS_INTERVAL)
}

/// The steady-state load of `cfg` on each token (provider, API URL and token file: the nodes
/// read the same file name, and the provider counts per token), readiness every
/// `readiness_interval`.
pub fn load(cfg: &ClusterConfig, readiness_interval: Duration) -> Vec<TokenLoad> {
    let nodes = agent_nodes(cfg);
    let mut loads: Vec<TokenLoad> = Vec::new();
    let ready_secs = readiness_interval.as_secs_f64().max(0.001);
    for agent in cfg.resources.iter().flat_map(|g| &g.agents) {
        let AgentConfig::ReservedIp(a) = agent else {
            continue;
        };
        let i = match loads.iter().position(|l| {
            l.provider == a.provider && l.api_url == a.api_url && l.token_file == a.token_file
        }) {
            Some(i) => i,
            None => {
                loads.push(TokenLoad {
                    provider: a.provider,
                    token_file: a.token_file.clone(),
                    api_url: a.api_url.clone(),
                    ips: 0,
                    nodes,
                    monitors_per_hour: 0.0,
                    readiness_per_hour: 0.0,
                    limits: Limits::of(a.provider),
                    per_second_monitors: 0.0,
                });
                loads.len() - 1
            }
        };
        let l = &mut loads[i];
        let per_monitor = f64::from(monitor_requests(a.provider, a.ip));
        let monitor_secs = a.settings.monitor_interval.as_secs_f64().max(0.001);
        l.ips += 1;
        l.per_second_monitors += per_monitor;
        l.monitors_per_hour += per_monitor * 3600.0 / monitor_secs;
        l.readiness_per_hour +=
            f64::from(nodes) * f64::from(readiness_requests(a.provider, a.ip)) * 3600.0
                / ready_secs;
    }
    loads
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ips: usize, monitor: &str) -> ClusterConfig {
        let mut y = String::from(
            "cluster: t\nauth: { key_file: /k }\nnodes:\n  - { name: a, addresses: [\"10.0.0.1:694\"] }\n  \
             - { name: b, addresses: [\"10.0.0.2:694\"] }\n  \
             - { name: w, addresses: [\"10.0.0.3:694\"], role: witness }\nresources:\n",
        );
        for i in 0..ips {
            let ip = if i % 2 == 0 {
                format!("203.0.113.{}", i + 1)
            } else {
                format!("2001:db8::{}", i + 1)
            };
            y.push_str(&format!(
                "  - name: g{i}\n    agents:\n      - reserved-ip:\n          provider: digitalocean\n          \
                 ip: \"{ip}\"\n          token_file: do-token\n          monitor_interval: {monitor}\n"
            ));
        }
        tandem_config::parse(&y, std::path::Path::new("t.yaml")).expect("valid")
    }

    #[test]
    fn one_ip_at_the_defaults_is_well_within_digitaloceans_budget() {
        let l = &load(&config(1, "10s"), READINESS_INTERVAL)[0];
        // 360 monitors and 2 nodes × 2 reads × 60 readiness checks an hour.
        assert_eq!((l.ips, l.nodes), (1, 2));
        assert_eq!(l.monitors_per_hour, 360.0);
        assert_eq!(l.readiness_per_hour, 240.0);
        assert!((l.share() - 0.12).abs() < 1e-9, "{}", l.share());
        assert_eq!(l.allowed_per_hour(), 2500.0);
    }

    #[test]
    fn twenty_ips_at_a_ten_second_monitor_spend_more_than_digitalocean_allows() {
        let l = &load(&config(20, "10s"), READINESS_INTERVAL)[0];
        // 7,200 monitor reads and 2 × (10 × 2 + 10 × 3) × 60 = 6,000 readiness reads an hour.
        assert_eq!(l.monitors_per_hour, 7200.0);
        assert_eq!(l.readiness_per_hour, 6000.0);
        assert!(l.share() > 2.6);
        // The readiness checks alone pass the half: no monitor interval is enough.
        assert_eq!(l.monitor_interval_needed(), None);
        // Eight IPs leave room: 8 × 3600 / (2500 − 2,400) = 288 s.
        let l = &load(&config(8, "10s"), READINESS_INTERVAL)[0];
        assert_eq!(l.readiness_per_hour, 2400.0);
        assert_eq!(l.monitor_interval_needed(), Some(Duration::from_secs(288)));
        let l = &load(&config(4, "10s"), READINESS_INTERVAL)[0];
        assert_eq!(l.monitor_interval_needed(), Some(Duration::from_secs(12)));
    }

    #[test]
    fn many_ips_check_readiness_less_often_leaving_half_the_share_to_the_monitors() {
        assert_eq!(readiness_interval(&config(1, "10s")), READINESS_INTERVAL);
        // 100 reads a round on two nodes, 1,250 an hour: every 288 s.
        let cfg = config(20, "10s");
        let every = readiness_interval(&cfg);
        assert_eq!(every, Duration::from_secs(288));
        let l = &load(&cfg, every)[0];
        assert_eq!(l.readiness_per_hour, 1250.0);
        // The monitors then need 20 × 3600 / 1250 = 57.6 s.
        assert_eq!(l.monitor_interval_needed(), Some(Duration::from_secs(58)));
        let l = &load(&config(20, "58s"), every)[0];
        assert!(l.share() <= STEADY_SHARE, "{}", l.share());
    }
}
