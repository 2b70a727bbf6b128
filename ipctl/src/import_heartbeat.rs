//! `ipctl import-heartbeat`: translate a Linux-HA Heartbeat (R1) `/etc/ha.d` — `ha.cf`,
//! `haresources`, `authkeys` — into a Tandem `cluster.yaml` on stdout.
//!
//! Everything that maps is written with a comment saying where it came from; everything that
//! does not is reported on stderr with file:line and the reason. Where the files lack a fact
//! Tandem needs (a node's own address, a reserved IP), a documentation address (RFC 5737) with
//! a `# FILL IN` comment is written and the gap is reported: the output is never a config
//! that silently does the wrong thing.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// Heartbeat's default UDP port (`udpport`).
const HEARTBEAT_PORT: u16 = 694;
/// Heartbeat's defaults when ha.cf leaves a timing directive out (ha.cf(5)).
const HB_KEEPALIVE: Duration = Duration::from_secs(2);
const HB_DEADTIME: Duration = Duration::from_secs(30);
/// Longer timings than this are certainly typos (and would overflow arithmetic).
const MAX_HB_DURATION: Duration = Duration::from_secs(24 * 3600);
/// RFC 5737 documentation addresses: valid syntax, never routed, obviously placeholders.
const PLACEHOLDER_NET: [u8; 3] = [192, 0, 2];
/// DigitalOcean's metadata service, which floatip scripts query: never the reserved IP.
const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Heartbeat configuration directory.
    #[arg(default_value = "/etc/ha.d")]
    pub dir: PathBuf,
    /// Write a new cluster key here (mode 0600) when authkeys uses sha1/md5; the old key is
    /// not reused (Tandem signs with HMAC-SHA256 under its own key).
    #[arg(long)]
    pub key_out: Option<PathBuf>,
    /// Cluster name for the new configuration.
    #[arg(long, default_value = "ha")]
    pub cluster: String,
    /// Which node these files belong to (default: the host name); needed when ha.cf lists
    /// only the other nodes' ucast addresses.
    #[arg(long)]
    pub node: Option<String>,
    /// A node's address that the files do not give, as NAME=IP (repeatable; one per link in
    /// link order).
    #[arg(long = "address", value_name = "NAME=IP")]
    pub addresses: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let read = |name: &str| -> anyhow::Result<Option<String>> {
        let p = args.dir.join(name);
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    };
    let ha_cf = read("ha.cf")?.with_context(|| {
        format!(
            "{} has no ha.cf: is this a Heartbeat directory?",
            args.dir.display()
        )
    })?;
    if args.cluster.is_empty()
        || !args
            .cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        anyhow::bail!("--cluster {:?}: use letters, digits and '-'", args.cluster);
    }
    let mut extra = BTreeMap::new();
    for spec in &args.addresses {
        let (name, ip) = spec
            .split_once('=')
            .with_context(|| format!("--address {spec:?}: expected NAME=IP"))?;
        let ip: IpAddr = ip
            .parse()
            .with_context(|| format!("--address {spec:?}: {ip:?} is not an IP address"))?;
        extra
            .entry(name.to_owned())
            .or_insert_with(Vec::new)
            .push(ip);
    }
    // The config is used by daemons whose working directory is not this shell's: every path
    // written into it is absolute.
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("cannot read {}", args.dir.display()))?;
    let key_out = args.key_out.as_deref().map(absolute).transpose()?;
    let input = Input {
        dir: dir.clone(),
        ha_cf,
        haresources: read("haresources")?,
        authkeys: read("authkeys")?,
        cluster: args.cluster.clone(),
        local_node: args
            .node
            .clone()
            .unwrap_or_else(tandem_config::default_node_name),
        local_node_given: args.node.is_some(),
        extra_addresses: extra,
        key_file: key_out.clone(),
        script: {
            let dir = dir.clone();
            Box::new(move |name| find_script(&dir, name))
        },
    };
    let out = import(&input);
    if out.needs_key
        && let Some(path) = &key_out
    {
        let key = tandem_config::keys::generate_key();
        crate::keygen::write_private(path, format!("{key}\n").as_bytes(), false)?;
        eprintln!(
            "note: wrote a new cluster key to {} (mode 0600); copy it to every node",
            path.display()
        );
    }
    for n in &out.notes {
        eprintln!("{n}");
    }
    let under_dir = out.yaml.lines().any(|l| {
        let code = l.split('#').next().unwrap_or_default();
        code.contains(&*dir.to_string_lossy())
    });
    if dir != Path::new("/etc/ha.d") && under_dir {
        eprintln!(
            "note: scripts are referenced where they are now, under {}; the nodes need them at \
             the same paths (`ipctl check-config --node NAME` on each node checks)",
            dir.display()
        );
    }
    print!("{}", out.yaml);
    Ok(ExitCode::SUCCESS)
}

/// `path` made absolute against the current directory (without resolving links: the file
/// may not exist yet).
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// The script behind a resource name, as Heartbeat looks for it: `DIR/resource.d/NAME`, then
/// the init.d next to DIR (`DIR/../init.d/NAME`), then `/etc/init.d/NAME`.
fn find_script(dir: &Path, name: &str) -> Option<(PathBuf, String)> {
    if name.contains('/') {
        return None;
    }
    let candidates = [
        dir.join("resource.d").join(name),
        dir.join("..").join("init.d").join(name),
        Path::new("/etc/init.d").join(name),
    ];
    // canonical: `DIR/../init.d/x` is written as the path it names
    candidates.into_iter().find_map(|p| {
        let text = std::fs::read_to_string(&p).ok()?;
        Some((std::fs::canonicalize(&p).unwrap_or(p), text))
    })
}

/// Finds a resource script by name: its path and text.
pub type ScriptLookup = Box<dyn Fn(&str) -> Option<(PathBuf, String)>>;

/// Everything the translation needs, so it can be tested without a file system.
pub struct Input {
    pub dir: PathBuf,
    pub ha_cf: String,
    pub haresources: Option<String>,
    pub authkeys: Option<String>,
    pub cluster: String,
    pub local_node: String,
    pub local_node_given: bool,
    pub extra_addresses: BTreeMap<String, Vec<IpAddr>>,
    pub key_file: Option<PathBuf>,
    /// Finds a resource script by name: (path, text).
    pub script: ScriptLookup,
}

pub struct Output {
    pub yaml: String,
    /// Lines for stderr: what was not mapped, and what the operator must fill in.
    pub notes: Vec<String>,
    /// authkeys had a real key (sha1/md5): a new Tandem key must be made.
    pub needs_key: bool,
}

/// One directive line: file line number (1-based), directive, arguments.
struct Line {
    no: usize,
    words: Vec<String>,
}

/// Splits a Heartbeat config file into directive lines: `#` starts a comment, a trailing
/// backslash continues a line (haresources allows it).
fn lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pending: Option<Line> = None;
    for (i, raw) in text.lines().enumerate() {
        let body = raw.split('#').next().unwrap_or("");
        let (body, continued) = match body.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (body, false),
        };
        let words: Vec<String> = body.split_whitespace().map(str::to_owned).collect();
        let line = match pending.take() {
            Some(mut l) => {
                l.words.extend(words);
                l
            }
            None => Line { no: i + 1, words },
        };
        if continued {
            pending = Some(line);
        } else if !line.words.is_empty() {
            out.push(line);
        }
    }
    out.extend(pending.filter(|l| !l.words.is_empty()));
    out
}

/// Heartbeat durations: a plain number is seconds; `ms` (and `s`) suffixes are accepted.
fn hb_duration(s: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    // try_from: a huge value in a hand-edited ha.cf must be reported, not panic
    Duration::try_from_secs_f64(v * scale)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_HB_DURATION)
}

fn dur(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// A shell word: quoted only when it needs to be.
fn sh(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

struct Ctx<'a> {
    input: &'a Input,
    notes: Vec<String>,
    placeholders: u8,
}

impl Ctx<'_> {
    fn at(&mut self, file: &str, line: usize, msg: impl AsRef<str>) {
        let p = self.input.dir.join(file);
        self.notes
            .push(format!("{}:{line}: {}", p.display(), msg.as_ref()));
    }
    fn note(&mut self, msg: impl Into<String>) {
        self.notes.push(msg.into());
    }
    fn placeholder(&mut self) -> IpAddr {
        self.placeholders += 1;
        let [a, b, c] = PLACEHOLDER_NET;
        IpAddr::V4(Ipv4Addr::new(a, b, c, self.placeholders))
    }
}

#[derive(Default)]
struct HaCf {
    nodes: Vec<(String, usize)>,
    /// (interface, ip, line) in file order.
    ucasts: Vec<(String, IpAddr, usize)>,
    port: Option<u16>,
    keepalive: Option<Duration>,
    warntime: Option<Duration>,
    deadtime: Option<Duration>,
    initdead: Option<Duration>,
    failback: Option<(bool, usize)>,
    pings: Vec<(Vec<String>, usize)>,
}

fn parse_ha_cf(cx: &mut Ctx<'_>) -> HaCf {
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

struct Group {
    name: String,
    prefer: String,
    agents: Vec<String>,
}

/// Resource names in haresources: `IPaddr::a.b.c.d/24/eth0`, `Name::arg1::arg2`, a bare IP
/// (Heartbeat reads it as IPaddr), or a plain script name.
fn parse_haresources(cx: &mut Ctx<'_>, nodes: &[String]) -> Vec<Group> {
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

/// The cluster key: sha1/md5 keys are replaced by a new key (Tandem uses HMAC-SHA256 with its
/// own key, and the old one has been in a file next to the config for years); crc is no
/// authentication at all.
fn parse_authkeys(cx: &mut Ctx<'_>) -> bool {
    const F: &str = "authkeys";
    let Some(text) = cx.input.authkeys.as_deref() else {
        cx.note(format!(
            "{}: not found: generate a cluster key with `ipctl keygen --out /etc/tandem/authkey`",
            cx.input.dir.join(F).display()
        ));
        return true;
    };
    let ls = lines(text);
    let selected = ls
        .iter()
        .find(|l| l.words[0] == "auth")
        .and_then(|l| l.words.get(1).cloned());
    let Some(selected) = selected else {
        cx.at(
            F,
            1,
            "no `auth N` line: Heartbeat would refuse this file; a new key is needed",
        );
        return true;
    };
    let Some(key_line) = ls.iter().find(|l| l.words[0] == selected) else {
        cx.at(
            F,
            1,
            format!("auth {selected}: no key numbered {selected}; a new key is needed"),
        );
        return true;
    };
    let method = key_line
        .words
        .get(1)
        .map(|m| m.to_ascii_lowercase())
        .unwrap_or_default();
    match method.as_str() {
        "crc" => cx.at(
            F,
            key_line.no,
            "crc: this is no authentication at all (anyone who can send a UDP packet could \
             speak for a node); Tandem always signs with HMAC-SHA256: a new key is needed",
        ),
        "sha1" | "md5" => cx.at(
            F,
            key_line.no,
            format!(
                "{method}: not reused: Tandem signs with HMAC-SHA256 under a new random key{}",
                if cx.input.key_file.is_some() {
                    " (written to --key-out)"
                } else {
                    "; pass --key-out FILE, or run `ipctl keygen --out /etc/tandem/authkey`"
                }
            ),
        ),
        other => cx.at(
            F,
            key_line.no,
            format!("{other:?}: unknown method; a new key is needed"),
        ),
    }
    true
}

/// Node addresses per link. A ucast interface is a link. Heartbeat ignores a ucast to the
/// node's own address, so a shared ha.cf lists every node (matched to nodes in order), while a
/// per-node ha.cf lists only the others (matched to the other nodes in order).
fn addresses(
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
fn timing(cx: &mut Ctx<'_>, h: &HaCf) -> Option<[Duration; 4]> {
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

pub fn import(input: &Input) -> Output {
    let mut cx = Ctx {
        input,
        notes: Vec::new(),
        placeholders: 1, // 192.0.2.1 is the reserved-IP placeholder; nodes start at .2
    };
    let h = parse_ha_cf(&mut cx);
    let mut nodes: Vec<String> = Vec::new();
    for (n, l) in &h.nodes {
        if nodes.contains(n) {
            cx.at("ha.cf", *l, format!("node {n}: listed twice; kept once"));
        } else {
            nodes.push(n.clone());
        }
    }
    if nodes.is_empty() {
        let local = input.local_node.clone();
        cx.note(format!(
            "ha.cf lists no `node`: only this host ({local}) is written; add the others"
        ));
        nodes.push(local);
    }
    let port = h.port.unwrap_or(HEARTBEAT_PORT);
    let addrs = addresses(&mut cx, &h, &nodes);
    let timing = timing(&mut cx, &h);
    let groups = parse_haresources(&mut cx, &nodes);
    let needs_key = parse_authkeys(&mut cx);
    let key_file = input
        .key_file
        .as_ref()
        .map_or("/etc/tandem/authkey".to_owned(), |p| {
            p.display().to_string()
        });

    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Imported from Heartbeat ({}) by `ipctl import-heartbeat`.",
        input.dir.display()
    );
    let _ = writeln!(
        y,
        "# Check it with `ipctl check-config`; see docs/CONFIGURATION.md for every key."
    );
    let _ = writeln!(y, "cluster: {}", q(&input.cluster));
    let _ = writeln!(y, "auth:");
    let _ = writeln!(
        y,
        "  key_file: {}    # a new key (ipctl keygen --out {key_file}); copy it to every node",
        q(&key_file)
    );
    if let Some([i, w, d, init]) = timing {
        let _ = writeln!(
            y,
            "timing:                               # from ha.cf keepalive / warntime / deadtime / initdead"
        );
        let _ = writeln!(y, "  interval: {}", dur(i));
        let _ = writeln!(y, "  warn_after: {}", dur(w));
        let _ = writeln!(y, "  dead_after: {}", dur(d));
        let _ = writeln!(y, "  init_dead: {}", dur(init));
    }
    if nodes.len() == 2 {
        let _ = writeln!(
            y,
            "quorum: two_node                      # Heartbeat had no quorum with two nodes either: now explicit (a witness node is safer)"
        );
    } else if nodes.len() > 2 {
        cx.note(format!(
            "{} nodes: Tandem uses majority quorum, so a node cut off with a minority releases its \
             resources (Heartbeat R1 had no quorum)",
            nodes.len()
        ));
    }
    let _ = writeln!(y, "nodes:");
    for n in &nodes {
        let _ = writeln!(y, "  - name: {}", q(n));
        let _ = writeln!(y, "    addresses:");
        for (ip, why) in &addrs[n] {
            let sa = std::net::SocketAddr::new(*ip, port);

            let _ = writeln!(y, "      - {}    # {why}", q(&sa.to_string()));
        }
    }
    if !h.pings.is_empty() {
        let _ = writeln!(
            y,
            "health:                               # from ha.cf ping / ping_group: this node is healthy while a target answers"
        );
        for (hosts, l) in &h.pings {
            let cmd: Vec<String> = hosts
                .iter()
                .map(|host| format!("ping -c1 -W1 {}", sh(host)))
                .collect();
            let _ = writeln!(y, "  - exec: {}    # ha.cf line {l}", q(&cmd.join(" || ")));
            let _ = writeln!(y, "    interval: 5s");
            let _ = writeln!(
                y,
                "    timeout: {}",
                if hosts.len() > 1 { "4s" } else { "2s" }
            );
            cx.at(
                "ha.cf",
                *l,
                format!(
                    "ping {}: mapped to an exec health check running ping (Heartbeat's ping nodes fed \
                     ipfail; in Tandem a failing check makes this node no candidate for resources)",
                    hosts.join(" ")
                ),
            );
        }
    }
    if !groups.is_empty() {
        let failback = match h.failback {
            Some((false, _)) => "manual",
            _ => "auto",
        };
        if h.failback.is_none() {
            cx.note("ha.cf has no auto_failback: `failback: auto` written (Tandem's default; Heartbeat's was legacy)".to_owned());
        }
        let _ = writeln!(y, "resources:");
        for g in &groups {
            let _ = writeln!(y, "  - name: {}", q(&g.name));
            if !g.prefer.is_empty() {
                let _ = writeln!(y, "    prefer: {}", q(&g.prefer));
            }
            let _ = writeln!(y, "    failback: {failback}");
            let _ = writeln!(y, "    agents:");
            for a in &g.agents {
                y.push_str(a);
            }
        }
    }
    Output {
        yaml: y,
        notes: cx.notes,
        needs_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_durations() {
        assert_eq!(hb_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(hb_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(hb_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(hb_duration("0"), None);
        assert_eq!(hb_duration("soon"), None);
        assert_eq!(hb_duration("1e30"), None);
        assert_eq!(hb_duration("-1"), None);
        assert_eq!(hb_duration("NaN"), None);
    }

    #[test]
    fn comments_and_continuations() {
        let l = lines("a b # c\n\n  # only\nx \\\n  y z\n");
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].no, l[0].words.join(" ")), (1, "a b".to_owned()));
        assert_eq!((l[1].no, l[1].words.join(" ")), (4, "x y z".to_owned()));
    }

    #[test]
    fn floatip_script_ip_skips_metadata_service() {
        let t = "ID=$(curl -s http://169.254.169.254/metadata/v1/id)\nIP='45.55.96.8'\n";
        assert_eq!(script_ip(t), Some("45.55.96.8".parse().unwrap()));
        assert_eq!(script_ip("# 1.2.3.4 in a comment\n"), None);
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(sh("eth0"), "eth0");
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
    }
}
