//! The emulator's world: droplets, reserved IPs, actions, tokens, faults, rate limit, audit log.
//!
//! One `std::sync::Mutex` guards it; it is never held across an `.await`.
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::config::{EmulatorConfig, TokenConfig};
use super::ratelimit::{RateInfo, RateLimits};

/// A server (DigitalOcean droplet, Hetzner server, Vultr instance).
#[derive(Debug, Clone)]
pub struct Droplet {
    pub id: u64,
    pub name: String,
    pub region: String,
    /// Where the HTTP front forwards while this droplet holds an IP (`host:port`).
    pub web: Option<String>,
    pub public_ipv4: String,
    /// The droplet's own public IPv6 (a documentation address), when IPv6 is enabled.
    pub public_ipv6: Option<Ipv6Addr>,
    pub created_at: SystemTime,
    /// Powered off (fenced); see `power.rs`.
    pub off: bool,
}

impl Droplet {
    /// Vultr identifies instances by UUID; the emulator derives a stable one from the id.
    pub fn vultr_id(&self) -> String {
        vultr_uuid(0x1757_0000, self.id)
    }
}

/// A reserved (floating) IP.
#[derive(Debug, Clone)]
pub struct ReservedIp {
    pub ip: IpAddr,
    pub region: String,
    pub holder: Option<u64>,
    /// The action in progress on this IP (DigitalOcean: "locked").
    pub pending: Option<u64>,
    /// Numeric id (Hetzner identifies floating IPs by number).
    pub num_id: u64,
}

impl ReservedIp {
    /// The IP as Hetzner and Vultr show it: an IPv4 alone, a floating or reserved IPv6 as
    /// the /64 it belongs to (network address and prefix length).
    pub fn network(&self) -> (IpAddr, u8) {
        match self.ip {
            IpAddr::V4(_) => (self.ip, 32),
            IpAddr::V6(v6) => (
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
                64,
            ),
        }
    }

    pub fn vultr_id(&self) -> String {
        vultr_uuid(0x0e5e_0000, self.num_id)
    }
}

fn vultr_uuid(prefix: u32, n: u64) -> String {
    format!(
        "{prefix:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (n >> 48) & 0xffff,
        (n >> 36) & 0xfff,
        (n >> 24) & 0xfff,
        n & 0xff_ffff_ffff
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Assign,
    Unassign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionStatus {
    InProgress,
    Completed,
    Errored,
}

impl ActionStatus {
    pub fn as_do_str(self) -> &'static str {
        match self {
            ActionStatus::InProgress => "in-progress",
            ActionStatus::Completed => "completed",
            ActionStatus::Errored => "errored",
        }
    }
    pub fn as_hetzner_str(self) -> &'static str {
        match self {
            ActionStatus::InProgress => "running",
            ActionStatus::Completed => "success",
            ActionStatus::Errored => "error",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Action {
    pub id: u64,
    pub kind: ActionKind,
    pub ip: IpAddr,
    pub droplet: Option<u64>,
    pub status: ActionStatus,
    pub started_at: SystemTime,
    pub completed_at: Option<SystemTime>,
    /// How long this action runs (the configured delay plus its jitter).
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct Token {
    /// `None`: every scope (a full-access token).
    pub scopes: Option<Vec<String>>,
    pub revoked: bool,
}

/// Faults injected at run time through `POST /_admin/faults`. Every field is optional in the
/// JSON; the posted object replaces the current set, so `{}` clears all faults.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API request before it is handled.
    pub latency_ms: u64,
    /// Share (0.0..=1.0) of API requests answered with `error_status`.
    pub error_rate: f64,
    /// Status used by `error_rate` (default 500).
    pub error_status: Option<u16>,
    /// The next N API requests get 429 with a `ratelimit-reset` `rate_limit_reset_secs` ahead
    /// (default 1) and, when set, `Retry-After: rate_limit_retry_after_secs`.
    pub rate_limit_burst: u32,
    pub rate_limit_reset_secs: Option<u64>,
    pub rate_limit_retry_after_secs: Option<u64>,
    /// The `rate_limit_burst` 429s carry no rate-limit header and no Retry-After: a proxy's
    /// bare refusal, which says nothing about when to ask again.
    pub rate_limit_bare: bool,
    /// The next N API requests never get an answer (the connection stays open).
    pub hang_next: u32,
    /// The next N API requests have their connection closed without an answer.
    pub drop_next: u32,
    /// For this many seconds from now every API connection is closed without an answer.
    pub outage_secs: u64,
    /// The next N actions end `errored` instead of `completed` (the holder does not change).
    pub error_actions: u32,
    /// Every API request whose path names one of these reserved IPs (DigitalOcean's paths do)
    /// is answered with `error_status` (default 500) until cleared: one address's backend
    /// failing while the others work.
    pub failing_ips: Vec<IpAddr>,
    /// The next N API requests are answered with `error_status` (default 500).
    pub error_next: u32,
    /// The next Vultr detach that succeeds sets `error_next` to this: the API fails right
    /// after a detach, before the attach that should follow it.
    pub fail_after_detach: u32,
}

/// What the fault layer decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultVerdict {
    Pass,
    Drop,
    Hang,
    Status(u16),
    RateLimited {
        reset_secs: u64,
        retry_after_secs: Option<u64>,
        /// No headers at all.
        bare: bool,
    },
}

#[derive(Debug)]
pub struct Inner {
    pub droplets: BTreeMap<u64, Droplet>,
    pub ips: BTreeMap<IpAddr, ReservedIp>,
    pub actions: BTreeMap<u64, Action>,
    pub next_action_id: u64,
    pub tokens: HashMap<String, Token>,
    pub faults: Faults,
    pub outage_until: Option<Instant>,
    pub rate: RateLimits,
    pub requests: u64,
    pub action_delay: Duration,
    pub action_jitter: Duration,
    pub power: super::power::Power,
}

pub struct Audit {
    file: Option<std::fs::File>,
    start: Instant,
}

impl Audit {
    pub fn open(path: Option<&Path>, start: Instant) -> std::io::Result<Audit> {
        let file = match path {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => None,
        };
        Ok(Audit { file, start })
    }

    /// Appends one JSON line with both clocks: `mono_ms` orders events, `time` relates them to
    /// other logs.
    pub fn record(&mut self, mut event: Value) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Value::Object(map) = &mut event {
            map.insert(
                "mono_ms".into(),
                json!(self.start.elapsed().as_secs_f64() * 1000.0),
            );
            map.insert("time".into(), json!(rfc3339_millis(SystemTime::now())));
        }
        let mut line = event.to_string();
        line.push('\n');
        // One write per line so concurrent readers never see half a line.
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "audit log write failed");
        }
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Shared handle to the world.
#[derive(Clone)]
pub struct World {
    inner: Arc<Mutex<Inner>>,
    audit: Arc<Mutex<Audit>>,
}

impl World {
    pub fn new(cfg: &EmulatorConfig, audit: Audit) -> World {
        let now = SystemTime::now();
        let droplets = cfg
            .droplets
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let public = d.public_ipv4.clone().unwrap_or_else(|| {
                    // Loopback addresses only: the emulator never names a real host.
                    format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250)
                });
                (
                    d.id,
                    Droplet {
                        id: d.id,
                        name: d.name.clone(),
                        region: d.region.clone(),
                        web: d.web.clone(),
                        public_ipv4: public,
                        public_ipv6: d
                            .ipv6
                            .then(|| Ipv6Addr::new(0x2001, 0xdb8, 0xd0, 0, 0, 0, 0, 1 + i as u16)),
                        created_at: now,
                        off: false,
                    },
                )
            })
            .collect();
        let ips = cfg
            .reserved_ips
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    r.ip,
                    ReservedIp {
                        ip: r.ip,
                        region: r.region.clone(),
                        holder: r.holder,
                        pending: None,
                        num_id: 4_700_000 + i as u64,
                    },
                )
            })
            .collect();
        let tokens = cfg
            .tokens
            .iter()
            .map(|t: &TokenConfig| {
                (
                    t.token.clone(),
                    Token {
                        scopes: t.scopes.clone(),
                        revoked: false,
                    },
                )
            })
            .collect();
        World {
            inner: Arc::new(Mutex::new(Inner {
                droplets,
                ips,
                actions: BTreeMap::new(),
                next_action_id: 2_000_000_001,
                tokens,
                faults: Faults::default(),
                outage_until: None,
                rate: RateLimits::new(cfg.rate_limit.clone()),
                requests: 0,
                action_delay: cfg.action_delay,
                action_jitter: cfg.action_jitter,
                power: Default::default(),
            })),
            audit: Arc::new(Mutex::new(audit)),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug in the emulator; keep serving what is left.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn audit(&self, event: Value) {
        self.audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(event);
    }

    /// Decides the fault for one API request to `path` (consuming one-shot counters).
    pub fn fault_verdict(&self, path: &str) -> (FaultVerdict, Duration) {
        let mut g = self.lock();
        let latency = Duration::from_millis(g.faults.latency_ms);
        if g.outage_until.is_some_and(|t| Instant::now() < t) {
            return (FaultVerdict::Drop, latency);
        }
        let f = &mut g.faults;
        let verdict = if f.drop_next > 0 {
            f.drop_next -= 1;
            FaultVerdict::Drop
        } else if f.hang_next > 0 {
            f.hang_next -= 1;
            FaultVerdict::Hang
        } else if f.rate_limit_burst > 0 {
            f.rate_limit_burst -= 1;
            FaultVerdict::RateLimited {
                reset_secs: f.rate_limit_reset_secs.unwrap_or(1),
                retry_after_secs: f.rate_limit_retry_after_secs,
                bare: f.rate_limit_bare,
            }
        } else if f.error_next > 0 {
            f.error_next -= 1;
            FaultVerdict::Status(f.error_status.unwrap_or(500))
        } else if path
            .split('/')
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .any(|ip| f.failing_ips.contains(&ip))
            || (f.error_rate > 0.0 && rand::random::<f64>() < f.error_rate)
        {
            FaultVerdict::Status(f.error_status.unwrap_or(500))
        } else {
            FaultVerdict::Pass
        };
        (verdict, latency)
    }

    /// Counts one API request of `token` against its rate limits.
    pub fn take_rate(&self, token: &str) -> RateInfo {
        let mut g = self.lock();
        g.requests += 1;
        g.rate.take(token, Instant::now(), SystemTime::now())
    }

    /// Sets the holder of `ip`, recording the change in the audit log.
    pub fn set_holder(&self, ip: IpAddr, to: Option<u64>, cause: &str, action: Option<u64>) {
        let mut g = self.lock();
        let Some(r) = g.ips.get_mut(&ip) else {
            return;
        };
        let from = std::mem::replace(&mut r.holder, to);
        // Under the lock: whoever sees the new holder finds it in the audit log too.
        self.audit_holder(ip, from, to, cause, action);
    }

    /// Sets the holder only if it is still `expect` (atomically); says whether it did.
    pub fn compare_and_set_holder(
        &self,
        ip: IpAddr,
        expect: Option<u64>,
        to: Option<u64>,
        cause: &str,
    ) -> bool {
        {
            let mut g = self.lock();
            match g.ips.get_mut(&ip) {
                Some(r) if r.holder == expect && r.pending.is_none() => r.holder = to,
                _ => return false,
            }
            // Under the lock, as in `set_holder`.
            self.audit_holder(ip, expect, to, cause, None);
        }
        true
    }

    fn audit_holder(
        &self,
        ip: IpAddr,
        from: Option<u64>,
        to: Option<u64>,
        cause: &str,
        action: Option<u64>,
    ) {
        if from != to {
            tracing::info!(%ip, ?from, ?to, cause, "holder changed");
            self.audit(json!({
                "event": "holder", "ip": ip.to_string(), "from": from, "to": to,
                "cause": cause, "action_id": action,
            }));
        }
    }

    /// Finishes an action: applies it (or marks it errored) and unlocks the IP, all under
    /// one lock so no reader sees the IP unlocked with the old holder.
    pub fn complete_action(&self, id: u64) {
        let mut g = self.lock();
        let errored = if g.faults.error_actions > 0 {
            g.faults.error_actions -= 1;
            true
        } else {
            false
        };
        let Some(a) = g.actions.get_mut(&id) else {
            return;
        };
        if a.status != ActionStatus::InProgress {
            return;
        }
        a.status = if errored {
            ActionStatus::Errored
        } else {
            ActionStatus::Completed
        };
        a.completed_at = Some(SystemTime::now());
        let (ip, kind, droplet) = (a.ip, a.kind, a.droplet);
        let (mut from, mut to) = (None, None);
        if let Some(r) = g.ips.get_mut(&ip) {
            if r.pending == Some(id) {
                r.pending = None;
            }
            from = r.holder;
            to = r.holder;
            if !errored {
                to = match kind {
                    ActionKind::Assign => droplet,
                    ActionKind::Unassign => None,
                };
                r.holder = to;
            }
        }
        // Under the lock, as in `set_holder`.
        self.audit(json!({
            "event": "action", "action_id": id, "ip": ip.to_string(), "type": kind,
            "droplet_id": droplet, "status": if errored { "errored" } else { "completed" },
        }));
        self.audit_holder(ip, from, to, "action", Some(id));
    }

    /// Starts an action on `ip` if it may start (checked under the same lock, so two
    /// concurrent requests never both start one); completes it after the configured delay
    /// (plus jitter), at once when that is zero.
    pub fn start_action(
        &self,
        ip: IpAddr,
        kind: ActionKind,
        droplet: Option<u64>,
    ) -> Result<Action, ActionRefusal> {
        self.start_action_in(ip, kind, droplet, Within::Region)
    }

    /// [`World::start_action`] where the IP's region binds as `within` says (Hetzner's
    /// floating IPs are assigned in any location).
    pub fn start_action_in(
        &self,
        ip: IpAddr,
        kind: ActionKind,
        droplet: Option<u64>,
        within: Within,
    ) -> Result<Action, ActionRefusal> {
        let (action, delay) = {
            let mut g = self.lock();
            Self::check_action(&g, ip, kind, droplet, within)?;
            let id = g.next_action_id;
            g.next_action_id += 1;
            let jitter = g.action_jitter.as_nanos() as u64;
            let delay = g.action_delay
                + Duration::from_nanos(if jitter > 0 {
                    rand::random_range(0..jitter)
                } else {
                    0
                });
            let action = Action {
                id,
                kind,
                ip,
                droplet,
                status: ActionStatus::InProgress,
                started_at: SystemTime::now(),
                completed_at: None,
                duration: delay,
            };
            g.actions.insert(id, action.clone());
            if let Some(r) = g.ips.get_mut(&ip) {
                r.pending = Some(id);
            }
            (action, delay)
        };
        self.audit(json!({
            "event": "action", "action_id": action.id, "ip": ip.to_string(), "type": kind,
            "droplet_id": droplet, "status": "in-progress",
        }));
        if delay.is_zero() {
            self.complete_action(action.id);
            return Ok(self.lock().actions[&action.id].clone());
        }
        let world = self.clone();
        let id = action.id;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            world.complete_action(id);
        });
        Ok(action)
    }

    /// Why an action on `ip` cannot start, if it cannot (DigitalOcean's wording where known).
    fn check_action(
        g: &Inner,
        ip: IpAddr,
        kind: ActionKind,
        droplet: Option<u64>,
        within: Within,
    ) -> Result<(), ActionRefusal> {
        let Some(r) = g.ips.get(&ip) else {
            return Err(ActionRefusal::UnknownIp);
        };
        if r.pending.is_some() {
            return Err(ActionRefusal::Pending);
        }
        match kind {
            ActionKind::Assign => {
                let Some(id) = droplet else {
                    return Err(ActionRefusal::Invalid("droplet_id is required".into()));
                };
                let Some(d) = g.droplets.get(&id) else {
                    return Err(ActionRefusal::UnknownDroplet(id));
                };
                if within == Within::Region && d.region != r.region {
                    return Err(ActionRefusal::Invalid(format!(
                        "Droplet {id} is in region {}, the reserved IP in {}.",
                        d.region, r.region
                    )));
                }
            }
            ActionKind::Unassign => {
                if r.holder.is_none() {
                    return Err(ActionRefusal::Invalid(
                        "The reserved IP is not assigned to a Droplet.".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A JSON summary for `GET /_admin/state`.
    pub fn snapshot(&self) -> Value {
        let g = self.lock();
        json!({
            "reserved_ips": g.ips.values().map(|r| json!({
                "ip": r.ip.to_string(), "region": r.region, "holder": r.holder,
                "locked": r.pending.is_some(), "pending_action": r.pending,
            })).collect::<Vec<_>>(),
            "actions": g.actions.values().map(|a| json!({
                "id": a.id, "ip": a.ip.to_string(), "type": a.kind, "droplet_id": a.droplet,
                "status": a.status.as_do_str(),
            })).collect::<Vec<_>>(),
            "requests": g.requests,
            "faults": g.faults,
        })
    }
}

/// Where a reserved IP may be assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Within {
    /// Only to a server in the IP's region (DigitalOcean; Vultr checks it in its own route).
    Region,
    /// Anywhere: Hetzner routes a floating IP to a server in any location, best in its home
    /// location ("Routing is optimized for this Location", Hetzner's API reference).
    Anywhere,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRefusal {
    UnknownIp,
    UnknownDroplet(u64),
    Pending,
    Invalid(String),
}
