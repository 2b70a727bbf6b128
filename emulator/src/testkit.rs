//! Small helpers for tests that drive the emulator (fixtures, faults, waiting on state).
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use super::{DropletConfig, Emulator, EmulatorConfig, ReservedIpConfig, TokenConfig};

pub mod openapi;

/// Says that the running test skips (all of it or a part) and why, on the process's stderr.
/// Not through `eprintln!`: libtest shows what a passing test printed only with
/// `--nocapture`, and a plain `cargo test` must still say what it did not test. Here, in the
/// one crate every suite links (tandem-tests re-exports it as `require::skip`).
pub fn skip(why: &str) {
    use std::io::Write;
    // libtest runs each test on a thread named after it.
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

/// The executable `program` on `PATH`, if any, found as `execvp` (and `ip netns exec`) would
/// find it: a test that needs an optional program looks it up here and skips when it is
/// absent, and then runs what it found.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A full-access token of the standard fixture.
pub const TOKEN: &str = "dop_v1_emulator_full_access_0123456789abcdef";
/// A token with read scopes only.
pub const READ_ONLY_TOKEN: &str = "dop_v1_emulator_read_only_0123456789abcdef";
/// The fixture's reserved IP (loopback: tests never name a real address).
pub const IP: &str = "127.0.0.100";
pub const PRIMARY: u64 = 1001;
pub const SECONDARY: u64 = 1002;
/// A droplet in another region than the IP.
pub const FARAWAY: u64 = 1003;

pub fn ip() -> IpAddr {
    IP.parse().expect("fixture IP")
}

/// A reserved IPv6 (a documentation address), added to a fixture by [`with_ipv6`]. At Hetzner
/// and Vultr it shows as its /64, `2001:db8:0:1::/64`.
pub const IPV6: &str = "2001:db8:0:1::100";

pub fn ipv6() -> IpAddr {
    IPV6.parse().expect("fixture IPv6")
}

/// `cfg` with the reserved IPv6 [`IPV6`] too, in nyc3, held by the primary (dual stack).
pub fn with_ipv6(mut cfg: EmulatorConfig) -> EmulatorConfig {
    cfg.reserved_ips.push(ReservedIpConfig {
        ip: ipv6(),
        region: "nyc3".into(),
        holder: Some(PRIMARY),
    });
    cfg
}

/// Two droplets in nyc3 (primary holds the IP), one in sfo3, both tokens.
pub fn fixture(action_delay: Duration) -> EmulatorConfig {
    let droplet = |id, name: &str, region: &str| DropletConfig {
        id,
        name: name.into(),
        region: region.into(),
        web: None,
        public_ipv4: None,
        ipv6: true,
    };
    EmulatorConfig {
        droplets: vec![
            droplet(PRIMARY, "primary", "nyc3"),
            droplet(SECONDARY, "secondary", "nyc3"),
            droplet(FARAWAY, "faraway", "sfo3"),
        ],
        reserved_ips: vec![ReservedIpConfig {
            ip: ip(),
            region: "nyc3".into(),
            holder: Some(PRIMARY),
        }],
        tokens: vec![
            TokenConfig {
                token: TOKEN.into(),
                scopes: None,
            },
            TokenConfig {
                token: READ_ONLY_TOKEN.into(),
                scopes: Some(vec![
                    "reserved_ip:read".into(),
                    "droplet:read".into(),
                    "actions:read".into(),
                ]),
            },
        ],
        action_delay,
        ..EmulatorConfig::default()
    }
}

impl Emulator {
    /// Replaces the injected faults (`{}` clears them).
    pub async fn set_faults(&self, faults: Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/faults", self.addresses.admin))
            .json(&faults)
            .send()
            .await
            .expect("admin reachable");
        assert!(r.status().is_success(), "faults refused: {}", r.status());
    }

    /// Revokes a token at run time.
    pub async fn revoke(&self, token: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/tokens/revoke", self.addresses.admin))
            .json(&serde_json::json!({"token": token}))
            .send()
            .await
            .expect("admin reachable");
        assert!(r.status().is_success(), "revoke refused: {}", r.status());
    }

    /// The holder of `ip` now.
    pub fn holder(&self, ip: IpAddr) -> Option<u64> {
        self.world.lock().ips.get(&ip).and_then(|r| r.holder)
    }

    /// Actions still in progress, on any IP.
    pub fn running_actions(&self) -> usize {
        self.world
            .lock()
            .actions
            .values()
            .filter(|a| a.status == super::state::ActionStatus::InProgress)
            .count()
    }

    pub fn action_count(&self) -> usize {
        self.world.lock().actions.len()
    }

    /// Waits (bounded) until no action is in progress.
    pub async fn settle(&self, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        while self.running_actions() > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Reads the audit log as JSON values.
pub fn read_audit(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The audit log's API requests, each as `METHOD /path`, in order.
pub fn audit_requests(path: &std::path::Path) -> Vec<String> {
    read_audit(path)
        .into_iter()
        .filter(|l| l["event"] == "request")
        .map(|l| {
            format!(
                "{} {}",
                l["method"].as_str().unwrap_or(""),
                l["path"].as_str().unwrap_or("")
            )
        })
        .collect()
}
