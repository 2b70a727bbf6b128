//! haresources: resource groups and their resources, mapped to Tandem agents (IPaddr, LSB and
//! OCF scripts, DigitalOcean floatip scripts).
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::{Ctx, lines, q, sh};

/// DigitalOcean's metadata service, which floatip scripts query: never the reserved IP.
const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

pub(super) struct Group {
    pub(super) name: String,
    pub(super) prefer: String,
    pub(super) agents: Vec<String>,
}

/// Resource names in haresources: `IPaddr::a.b.c.d/24/eth0`, `Name::arg1::arg2`, a bare IP
/// (Heartbeat reads it as IPaddr), or a plain script name.
pub(super) fn parse_haresources(cx: &mut Ctx<'_>, nodes: &[String]) -> Vec<Group> {
    const F: &str = "haresources";
    let Some(text) = cx.input.haresources.as_deref() else {
        cx.note(format!(
            "{}: not found: no resource groups imported (add `resources:` by hand)",
            cx.input.dir.join(F).display()
        ));
        return Vec::new();
    };
    let mut groups: Vec<Group> = Vec::new();
    for l in lines(text) {
        let prefer = l.words[0].clone();
        if !nodes.contains(&prefer) {
            cx.at(
                F,
                l.no,
                format!("{prefer:?} is not a node in ha.cf; the group is written without a preferred node"),
            );
        }
        if l.words.len() < 2 {
            cx.at(
                F,
                l.no,
                format!("{prefer}: a group without resources; ignored"),
            );
            continue;
        }
        let mut agents = Vec::new();
        for res in &l.words[1..] {
            if let Some(a) = resource(cx, l.no, res) {
                agents.push(a);
            }
        }
        if agents.is_empty() {
            cx.at(
                F,
                l.no,
                "no resource of this group could be mapped; group left out",
            );
            continue;
        }
        let first = l.words[1].as_str();
        let first_ip = match first.split_once("::") {
            Some(("IPaddr" | "IPaddr2", spec)) => spec.split('/').next(),
            Some(_) => None,
            None => first
                .split('/')
                .next()
                .filter(|ip| ip.parse::<IpAddr>().is_ok()),
        };
        let base = match first_ip {
            Some(ip) => format!("ip-{ip}"),
            None => first.split("::").next().unwrap_or("group").to_owned(),
        };
        let base: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = if base.trim_matches('-').is_empty() {
            "group".to_owned()
        } else {
            base
        };
        let mut name = base.clone();
        let mut n = 2;
        while groups.iter().any(|g| g.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        groups.push(Group {
            name,
            prefer: if nodes.contains(&prefer) {
                prefer
            } else {
                String::new()
            },
            agents,
        });
    }
    groups
}

/// One haresources resource as a YAML agent item (already indented for `agents:`).
fn resource(cx: &mut Ctx<'_>, line: usize, res: &str) -> Option<String> {
    const F: &str = "haresources";
    let mut parts = res.split("::");
    let name = parts.next().unwrap_or_default();
    let args: Vec<&str> = parts.collect();
    let bare_ip = args.is_empty()
        && name
            .split('/')
            .next()
            .is_some_and(|ip| ip.parse::<IpAddr>().is_ok());
    if matches!(name, "IPaddr" | "IPaddr2") || bare_ip {
        let spec = if bare_ip {
            name
        } else {
            args.first().copied().unwrap_or("")
        };
        return ip_alias(cx, line, res, spec);
    }
    if !args.is_empty() {
        // Heartbeat looks in ha.d/resource.d first; scripts taking `::` arguments are
        // Heartbeat's own resource scripts, so that is where a missing one is expected.
        let script = match (cx.input.script)(name) {
            Some((p, _)) => p.display().to_string(),
            None => {
                let p = cx.input.dir.join("resource.d").join(name);
                cx.at(
                    F,
                    line,
                    format!(
                        "{name}: script not found here; {} is assumed (keep it installed)",
                        p.display()
                    ),
                );
                p.display().to_string()
            }
        };
        if let Some(ocf) = ocf_equivalent(name) {
            cx.at(F, line, format!("{name}: the `resource-agents` package has an OCF agent for this ({ocf}); consider an `ocf:` agent instead"));
        }
        let call = |action: &str| {
            let mut w = vec![sh(&script)];
            w.extend(args.iter().map(|a| sh(a)));
            w.push(action.to_owned());
            w.join(" ")
        };
        cx.at(
            F,
            line,
            format!(
                "{res}: a script with arguments: mapped to an exec agent calling `{}`",
                call("start|stop|status")
            ),
        );
        return Some(format!(
            "      - exec:                          # haresources line {line}: {res}\n          start: {}\n          stop: {}\n          monitor: {}\n",
            q(&call("start")),
            q(&call("stop")),
            q(&call("status")),
        ));
    }
    let script = (cx.input.script)(name);
    let calls_assign_ip = script
        .as_ref()
        .is_some_and(|(_, t)| t.contains("assign-ip"));
    if name == "floatip" || calls_assign_ip {
        return Some(reserved_ip(cx, line, name, script));
    }
    if name.is_empty() || name.contains('/') {
        cx.at(F, line, format!("{res}: not a script name; ignored"));
        return None;
    }
    // The script Heartbeat ran (ha.d/resource.d first), by its absolute path; a bare name
    // means /etc/init.d/NAME to the lsb agent.
    let lsb = match script {
        Some((p, _)) if p != Path::new("/etc/init.d").join(name) => q(&p.display().to_string()),
        _ => name.to_owned(),
    };
    Some(format!(
        "      - lsb: {lsb}                    # haresources line {line}\n"
    ))
}

/// OCF agents (resource-agents package) doing the job of Heartbeat's R1 resource scripts.
fn ocf_equivalent(name: &str) -> Option<&'static str> {
    Some(match name {
        "Filesystem" => "ocf:heartbeat:Filesystem",
        "MailTo" => "ocf:heartbeat:MailTo",
        "drbddisk" => "ocf:linbit:drbd",
        "IPaddr" | "IPaddr2" => "ocf:heartbeat:IPaddr2",
        "apache" => "ocf:heartbeat:apache",
        _ => return None,
    })
}

/// `IPaddr::10.0.0.5/24/eth0`: a local IP alias, which a cloud does not route to a droplet
/// the way it routes a reserved IP. Kept as what it was (ip addr add/del), and said so.
fn ip_alias(cx: &mut Ctx<'_>, line: usize, res: &str, spec: &str) -> Option<String> {
    const F: &str = "haresources";
    let mut f = spec.split('/');
    let ip = f.next().unwrap_or("");
    let Ok(addr) = ip.parse::<IpAddr>() else {
        cx.at(
            F,
            line,
            format!("{res}: {ip:?} is not an IP address; ignored"),
        );
        return None;
    };
    let default_len = if addr.is_ipv4() { "32" } else { "128" };
    let prefix = f.next().filter(|s| !s.is_empty());
    let iface = f.next().filter(|s| !s.is_empty());
    if prefix.is_none() {
        cx.at(
            F,
            line,
            format!("{res}: no netmask given; /{default_len} assumed"),
        );
    }
    let iface = iface.unwrap_or_else(|| {
        cx.at(F, line, format!("{res}: no interface given; eth0 assumed"));
        "eth0"
    });
    let cidr = format!("{addr}/{}", prefix.unwrap_or(default_len));
    cx.at(
        F,
        line,
        format!(
            "{res}: a local IP alias is not a cloud reserved IP (the provider will not route it to \
             this server); mapped to an exec agent running `ip addr add/del {cidr} dev {iface}`. \
             For a DigitalOcean reserved IP use a `reserved-ip` agent instead"
        ),
    );
    let inet = if addr.is_ipv4() { "inet" } else { "inet6" };
    Some(format!(
        "      - exec:                          # haresources line {line}: {res} (local alias, not a reserved IP)\n          start: {}\n          stop: {}\n          monitor: {}\n",
        q(&format!("ip addr add {cidr} dev {}", sh(iface))),
        q(&format!("ip addr del {cidr} dev {}", sh(iface))),
        q(&format!(
            "ip -o addr show dev {} | grep -qF ' {inet} {addr}/' || exit 7",
            sh(iface)
        )),
    ))
}

/// A DigitalOcean tutorial-style `floatip` script (it calls `assign-ip IP DROPLET_ID`): the
/// built-in reserved-ip agent does the same job.
fn reserved_ip(
    cx: &mut Ctx<'_>,
    line: usize,
    name: &str,
    script: Option<(PathBuf, String)>,
) -> String {
    const F: &str = "haresources";
    let found = script.as_ref().and_then(|(_, t)| script_ip(t));
    let (ip, comment) = match found {
        Some(ip) => {
            let from = script
                .as_ref()
                .map(|(p, _)| p.display().to_string())
                .unwrap_or_default();
            (ip, format!("# from {from}"))
        }
        None => {
            let where_ = match &script {
                Some((p, _)) => format!("{} has no IP address in it", p.display()),
                None => format!("no {name} script was found"),
            };
            cx.at(
                F,
                line,
                format!(
                    "{name}: {where_}: the reserved IP is needed. Written as the documentation address \
                     192.0.2.1 with `# FILL IN`: replace it with your reserved IP before use"
                ),
            );
            (
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                "# FILL IN: your reserved IP".to_owned(),
            )
        }
    };
    let mut msg = format!(
        "{name}: mapped to the built-in reserved-ip agent (provider digitalocean): it assigns {ip} \
         through the API as the script's assign-ip did; the token goes in /etc/tandem/do-token \
         (mode 0600), handed to tandem-resource-agent as the systemd credential `do-token`"
    );
    if script
        .as_ref()
        .is_some_and(|(_, t)| t.contains("DO_TOKEN") || t.to_ascii_lowercase().contains("token"))
    {
        msg.push_str(
            ". The script holds an API token in clear text: it was not copied; move it to \
             /etc/tandem/do-token and delete the script (consider revoking the old token)",
        );
    }
    cx.at(F, line, msg);
    format!(
        "      - reserved-ip:                   # haresources line {line}: {name}\n          provider: digitalocean\n          ip: {ip}            {comment}\n          token_file: do-token          # $CREDENTIALS_DIRECTORY/do-token (LoadCredential=do-token:/etc/tandem/do-token)\n"
    )
}

/// The reserved IP a floatip script works with: the first IPv4 literal that is not the
/// metadata service, loopback or the `assign-ip` line's variables.
fn script_ip(text: &str) -> Option<IpAddr> {
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("");
        for word in code.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
            if let Ok(ip) = word.parse::<Ipv4Addr>()
                && ip != METADATA_IP
                && !ip.is_loopback()
                && !ip.is_unspecified()
            {
                return Some(IpAddr::V4(ip));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floatip_script_ip_skips_metadata_service() {
        let t = "ID=$(curl -s http://169.254.169.254/metadata/v1/id)\nIP='45.55.96.8'\n";
        assert_eq!(script_ip(t), Some("45.55.96.8".parse().unwrap()));
        assert_eq!(script_ip("# 1.2.3.4 in a comment\n"), None);
    }
}
