//! The cluster's `cluster.yaml`, as the launcher writes it.
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::{GROUP, Node, Spec};
use crate::Emulator;

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

pub(super) fn render_config(
    spec: &Spec,
    nodes: &[Node],
    key_file: &Path,
    prefer: &str,
    emulator: &Emulator,
    ips: &[IpAddr],
) -> String {
    let voters = nodes.len();
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Written by the Tandem cluster launcher (tests, ipctl demo)."
    );
    let _ = writeln!(y, "cluster: tandem-demo");
    let _ = writeln!(y, "auth:\n  key_file: {}", key_file.display());
    let _ = writeln!(
        y,
        "timing:\n  interval: {}\n  warn_after: {}\n  dead_after: {}\n  init_dead: {}",
        ms(spec.interval),
        ms(spec.warn_after),
        ms(spec.dead_after),
        ms(spec.init_dead)
    );
    let _ = writeln!(
        y,
        "quorum: {}",
        if voters == 2 { "two_node" } else { "majority" }
    );
    let _ = writeln!(y, "nodes:");
    for n in nodes {
        let addresses = n
            .addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(y, "  - name: {}\n    addresses: [{addresses}]", n.name);
        // The first member's droplet is named by id, the others are found by name.
        if let Some(id) = n
            .droplet
            .filter(|_| spec.fencing.is_some() && n.name == nodes[0].name)
        {
            let _ = writeln!(y, "    provider_id: {id}");
        }
        if n.witness {
            let _ = writeln!(y, "    role: witness");
        }
    }
    if !spec.health.is_empty() {
        let _ = writeln!(y, "health:");
        for h in &spec.health {
            let _ = writeln!(y, "  {h}");
        }
    }
    let metadata = nodes
        .iter()
        .find_map(|n| n.droplet)
        .and_then(|id| emulator.addresses.metadata.get(&id).cloned())
        .unwrap_or_default();
    let ids = nodes
        .iter()
        .filter_map(|n| Some(format!("{}: {}", n.name, n.droplet?)))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(y, "resources:");
    // The first group holds the first IP (and the IPv6: dual stack, one agent per address,
    // the IPv4 first; both move with the group), then the more IPs, or those each their own.
    let split = ips.len() - spec.more_ips.len();
    let mut groups = vec![(GROUP.to_owned(), ips[..split].to_vec())];
    match spec.group_per_ip {
        true => groups.extend(
            ips[split..]
                .iter()
                .enumerate()
                .map(|(i, ip)| (format!("{GROUP}-{}", i + 2), vec![*ip])),
        ),
        false => groups[0].1.extend_from_slice(&ips[split..]),
    }
    // With ipv6_first the first group lists its IPv6 before its IPv4.
    if spec.ipv6_first {
        groups[0].1.sort_by_key(|ip| ip.is_ipv4());
    }
    for (gi, (name, group_ips)) in groups.iter().enumerate() {
        let _ = writeln!(
            y,
            "  - name: {name}\n    prefer: {prefer}\n    failback: {}\n    agents:",
            if spec.failback_auto { "auto" } else { "manual" }
        );
        for ip in group_ips {
            reserved_ip(&mut y, spec, emulator, *ip, &metadata, &ids);
        }
        if gi == 0 {
            for a in &spec.extra_agents {
                let _ = writeln!(y, "      {a}");
            }
        }
    }
    if let Some(f) = &spec.fencing {
        y.push_str(&super::fence::yaml(f, &emulator.addresses.api));
    }
    // Port 0: every node shares this file, and each daemon logs the port it was given.
    let metrics = "  metrics: \"127.0.0.1:0\"\n";
    if spec.metrics {
        let _ = write!(y, "membership:\n{metrics}");
    }
    let mut agent = String::new();
    if spec.metrics {
        agent.push_str(metrics);
    }
    // Mutating RPCs (takeover, standby) need root or the admin group: allow the user who
    // launched the cluster.
    if !nix::unistd::geteuid().is_root()
        && let Ok(Some(g)) = nix::unistd::Group::from_gid(nix::unistd::getegid())
    {
        let _ = writeln!(agent, "  admin_group: {}", g.name);
    }
    if !agent.is_empty() {
        let _ = write!(y, "agent:\n{agent}");
    }
    y
}

/// One `reserved-ip` agent of `ip`, as a list item of a group's agents.
fn reserved_ip(
    y: &mut String,
    spec: &Spec,
    emulator: &Emulator,
    ip: IpAddr,
    metadata: &str,
    ids: &str,
) {
    let _ = writeln!(
        y,
        "      - reserved-ip:\n          provider: digitalocean\n          ip: {ip}\n          \
         token_file: do-token\n          api_url: {}\n          metadata_url: {metadata}\n          \
         droplet_ids: {{ {ids} }}",
        emulator.addresses.api,
    );
    if !spec.agent_defaults {
        let _ = writeln!(
            y,
            "          timeout: 10s\n          monitor_interval: {}",
            ms(spec.monitor_interval)
        );
    }
}
