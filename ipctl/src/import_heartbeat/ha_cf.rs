//! ha.cf: nodes, ucast links (the nodes' addresses), timing, auto_failback, ping nodes.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::{Ctx, dur, hb_duration, lines};

/// Heartbeat's defaults when ha.cf leaves a timing directive out (ha.cf(5)).
const HB_KEEPALIVE: Duration = Duration::from_secs(2);
const HB_DEADTIME: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct HaCf {
    pub(super) nodes: Vec<(String, usize)>,
    /// (interface, ip, line) in file order.
    ucasts: Vec<(String, IpAddr, usize)>,
    pub(super) port: Option<u16>,
    keepalive: Option<Duration>,
    warntime: Option<Duration>,
    deadtime: Option<Duration>,
    initdead: Option<Duration>,
    pub(super) failback: Option<(bool, usize)>,
    pub(super) pings: Vec<(Vec<String>, usize)>,
}

pub(super) fn parse_ha_cf(cx: &mut Ctx<'_>) -> HaCf {
    const F: &str = "ha.cf";
    let mut h = HaCf::default();
    for l in lines(&cx.input.ha_cf) {
        let d = l.words[0].as_str();
        let args = &l.words[1..];
        let timing = |slot: &mut Option<Duration>, cx: &mut Ctx<'_>| match args
            .first()
            .and_then(|a| hb_duration(a))
        {
            Some(v) if args.len() == 1 => *slot = Some(v),
            _ => cx.at(
                F,
                l.no,
                format!("{d}: {:?} is not a duration; ignored", args.join(" ")),
            ),
        };
        match d {
            "node" => {
                if args.is_empty() {
                    cx.at(F, l.no, "node: no name given; ignored");
                }
                h.nodes.extend(args.iter().map(|n| (n.clone(), l.no)));
            }
            "ucast" => match args {
                [iface, ip] => match ip.parse::<IpAddr>() {
                    Ok(ip) => h.ucasts.push((iface.clone(), ip, l.no)),
                    Err(_) => cx.at(
                        F,
                        l.no,
                        format!("ucast: {ip:?} is not an IP address (a host name cannot be mapped: Tandem needs addresses); ignored"),
                    ),
                },
                _ => cx.at(F, l.no, "ucast: expected `ucast IFACE IP`; ignored"),
            },
            "udpport" => match args.first().map(|p| p.parse::<u16>()) {
                Some(Ok(p)) if p != 0 && args.len() == 1 => h.port = Some(p),
                _ => cx.at(F, l.no, format!("udpport: {:?} is not a port; 694 used", args.join(" "))),
            },
            "keepalive" => timing(&mut h.keepalive, cx),
            "warntime" => timing(&mut h.warntime, cx),
            "deadtime" => timing(&mut h.deadtime, cx),
            "initdead" => timing(&mut h.initdead, cx),
            "auto_failback" => match args.first().map(|a| a.to_ascii_lowercase()).as_deref() {
                Some("on" | "yes" | "true" | "1" | "y") => h.failback = Some((true, l.no)),
                Some("off" | "no" | "false" | "0" | "n") => h.failback = Some((false, l.no)),
                Some("legacy") => {
                    h.failback = Some((false, l.no));
                    cx.at(F, l.no, "auto_failback legacy: mapped to `failback: manual` (Tandem has no legacy mode)");
                }
                _ => cx.at(F, l.no, format!("auto_failback: {:?} is not on/off/legacy; ignored", args.join(" "))),
            },
            "ping" => {
                if args.is_empty() {
                    cx.at(F, l.no, "ping: no host given; ignored");
                }
                for host in args {
                    h.pings.push((vec![host.clone()], l.no));
                }
            }
            "ping_group" => match args {
                [_name, hosts @ ..] if !hosts.is_empty() => h.pings.push((hosts.to_vec(), l.no)),
                _ => cx.at(F, l.no, "ping_group: expected `ping_group NAME HOST...`; ignored"),
            },
            "bcast" | "mcast" | "mcast6" => cx.at(
                F,
                l.no,
                format!(
                    "{d}: not mapped: Tandem sends unicast to every address of every node (clouds have no \
                     broadcast or multicast); give each node's addresses with ucast or --address NAME=IP"
                ),
            ),
            "serial" | "baud" => cx.at(F, l.no, format!("{d}: not mapped: Tandem has no serial links")),
            "logfile" | "debugfile" | "logfacility" | "use_logd" | "debug" => cx.at(
                F,
                l.no,
                format!("{d}: not mapped: Tandem logs to the systemd journal (see `journalctl -u tandem-membership`)"),
            ),
            "respawn" => cx.at(
                F,
                l.no,
                "respawn: not mapped: systemd restarts Tandem's daemons; run other programs as their own units",
            ),
            "crm" | "pacemaker" => cx.at(
                F,
                l.no,
                format!("{d}: not mapped: Tandem has its own resource manager; only haresources (R1) groups are imported"),
            ),
            "stonith" | "stonith_host" => cx.at(
                F,
                l.no,
                format!("{d}: not mapped: Tandem has no STONITH; quorum (a witness, or two_node with health checks) prevents split brain"),
            ),
            "watchdog" => cx.at(F, l.no, "watchdog: not mapped: systemd's WatchdogSec= supervises Tandem's daemons"),
            _ => cx.at(F, l.no, format!("{d}: not mapped: no Tandem equivalent")),
        }
    }
    h
}

/// Node addresses per link. A ucast interface is a link. Heartbeat ignores a ucast to the
/// node's own address, so a shared ha.cf lists every node (matched to nodes in order), while a
/// per-node ha.cf lists only the others (matched to the other nodes in order).
pub(super) fn addresses(
    cx: &mut Ctx<'_>,
    h: &HaCf,
    nodes: &[String],
) -> BTreeMap<String, Vec<(IpAddr, String)>> {
    let mut out: BTreeMap<String, Vec<(IpAddr, String)>> =
        nodes.iter().map(|n| (n.clone(), Vec::new())).collect();
    let mut ifaces: Vec<&str> = Vec::new();
    for (i, _, _) in &h.ucasts {
        if !ifaces.contains(&i.as_str()) {
            ifaces.push(i);
        }
    }
    let local = cx.input.local_node.clone();
    for iface in ifaces {
        let ips: Vec<(IpAddr, usize)> = h
            .ucasts
            .iter()
            .filter(|(i, _, _)| i == iface)
            .map(|(_, ip, l)| (*ip, *l))
            .collect();
        let order: Vec<&String> = if ips.len() == nodes.len() {
            nodes.iter().collect()
        } else if ips.len() + 1 == nodes.len() && nodes.contains(&local) {
            nodes.iter().filter(|n| **n != local).collect()
        } else {
            let why = if ips.len() + 1 == nodes.len() {
                format!(
                    "this ha.cf lists the other nodes only, and this node {local:?} is not one of ({}); pass --node NAME",
                    nodes.join(", ")
                )
            } else {
                format!(
                    "{} ucast address(es) for {} node(s)",
                    ips.len(),
                    nodes.len()
                )
            };
            for (ip, l) in &ips {
                cx.at(
                    "ha.cf",
                    *l,
                    format!(
                        "ucast {iface} {ip}: cannot tell which node it belongs to: {why}; ignored"
                    ),
                );
            }
            continue;
        };
        let pairs: Vec<String> = order
            .iter()
            .zip(&ips)
            .map(|(node, (ip, l))| format!("{node} = {ip} (line {l})"))
            .collect();
        cx.note(format!(
            "{}: ucast {iface}: ha.cf does not say whose address each ucast line is; paired with \
             the nodes by the order of the `node` lines: {}. Check each, or give the addresses \
             with --address NAME=IP",
            cx.input.dir.join("ha.cf").display(),
            pairs.join(", ")
        ));
        for (node, (ip, l)) in order.into_iter().zip(ips) {
            out.get_mut(node).expect("node listed").push((
                ip,
                format!("ha.cf line {l}: ucast {iface} (paired by order)"),
            ));
        }
    }
    for (node, ips) in &cx.input.extra_addresses {
        match out.get_mut(node) {
            Some(v) => v.extend(ips.iter().map(|ip| (*ip, "--address".to_owned()))),
            None => cx.note(format!(
                "--address {node}=...: {node:?} is not a node in ha.cf; ignored"
            )),
        }
    }
    let missing: Vec<String> = out
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(n, _)| n.clone())
        .collect();
    for node in missing {
        let ip = cx.placeholder();
        let hint = if node == local && !cx.input.local_node_given {
            " (this node: a node's own ha.cf does not ucast to itself)"
        } else {
            ""
        };
        cx.note(format!(
            "node {node}: no address in the files{hint}: written as the documentation address {ip} \
             with `# FILL IN`; replace it, or run again with --address {node}=IP"
        ));
        out.get_mut(&node)
            .expect("node listed")
            .push((ip, "FILL IN: this node's address".to_owned()));
    }
    out
}

/// The Heartbeat timing, made consistent: directives left out get Heartbeat's own defaults
/// (Tandem's are 20-30 times faster, and mixing the two would be invalid).
pub(super) fn timing(cx: &mut Ctx<'_>, h: &HaCf) -> Option<[Duration; 4]> {
    if h.keepalive.is_none() && h.deadtime.is_none() && h.warntime.is_none() && h.initdead.is_none()
    {
        return None;
    }
    let interval = h.keepalive.unwrap_or(HB_KEEPALIVE);
    let dead = h.deadtime.unwrap_or(HB_DEADTIME);
    let warn = h
        .warntime
        .unwrap_or_else(|| (dead / 2).max(interval + interval / 2));
    let init = h
        .initdead
        .unwrap_or((dead * 2).max(Duration::from_secs(60)));
    let valid = interval < warn && warn < dead && dead <= init;
    if !valid {
        cx.note(format!(
            "ha.cf timing keepalive {} / warntime {} / deadtime {} / initdead {} is inconsistent \
             (Tandem needs keepalive < warntime < deadtime <= initdead): Tandem's defaults are used instead",
            dur(interval),
            dur(warn),
            dur(dead),
            dur(init)
        ));
        return None;
    }
    let beats = dead.as_millis() / interval.as_millis().max(1);
    cx.note(format!(
        "ha.cf timing kept: failover after {} ({beats} beats per dead window). Tandem's default is \
         1s with 10 beats; remove the `timing:` section to use it",
        dur(dead)
    ));
    Some([interval, warn, dead, init])
}
