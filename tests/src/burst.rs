//! Many reserved IPs failing over at once through real daemons: the cluster's shape (one
//! group of many IPs, or a group per IP, on one token) and what the emulator's audit log
//! says about a failover (when the last IP moved, the requests and 429s).
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::cluster::{Cluster, Spec};

/// `v4` test IPv4 addresses and `v6` IPv6 addresses of the documentation prefix, beside the
/// launcher's own reserved IPs.
pub fn more_ips(v4: usize, v6: usize) -> Vec<IpAddr> {
    let v4 = (0..v4).map(|i| IpAddr::from([127, 0, 3, (i + 1) as u8]));
    let v6 = (0..v6).map(|i| IpAddr::from([0x2001, 0xdb8, 0, 3, 0, 0, 0, (i + 1) as u16]));
    v4.chain(v6).collect()
}

/// `spec` with `ips` more reserved IPs, in one group or a group each, all nodes on one token.
pub fn shape(mut spec: Spec, ips: Vec<IpAddr>, group_per_ip: bool) -> Spec {
    spec.more_ips = ips;
    spec.group_per_ip = group_per_ip;
    spec.shared_token = true;
    spec
}

/// Every reserved IP of the cluster.
pub fn all_ips(c: &Cluster) -> Vec<IpAddr> {
    std::iter::once(c.ip)
        .chain(c.ipv6)
        .chain(c.spec.more_ips.iter().copied())
        .collect()
}

/// The emulator's requests, as (wall time, refused with 429).
pub fn requests(c: &Cluster) -> Vec<(SystemTime, bool)> {
    c.audit()
        .iter()
        .filter(|l| l["event"] == "request")
        .filter_map(|l: &Value| {
            let at = humantime::parse_rfc3339(l["time"].as_str()?).ok()?;
            Some((at, l["status"] == 429))
        })
        .collect()
}

/// Requests (and of them 429s) the emulator saw in `[from, to)`.
pub fn requests_between(c: &Cluster, from: SystemTime, to: SystemTime) -> (usize, usize) {
    let r: Vec<bool> = requests(c)
        .into_iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, refused)| refused)
        .collect();
    (r.len(), r.iter().filter(|x| **x).count())
}

/// Time from `since` until the last of `ips` was moved to `to`, once all were.
pub fn last_moved(c: &Cluster, ips: &[IpAddr], since: SystemTime, to: &str) -> Option<Duration> {
    ips.iter()
        .map(|ip| c.moved_after_of(*ip, since, to))
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}
