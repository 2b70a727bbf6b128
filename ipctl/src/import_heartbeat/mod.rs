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

mod authkeys;
mod ha_cf;
mod haresources;

use authkeys::parse_authkeys;
use ha_cf::{addresses, parse_ha_cf, timing};
use haresources::parse_haresources;

/// Heartbeat's default UDP port (`udpport`).
const HEARTBEAT_PORT: u16 = 694;
/// Longer timings than this are certainly typos (and would overflow arithmetic).
const MAX_HB_DURATION: Duration = Duration::from_secs(24 * 3600);
/// RFC 5737 documentation addresses: valid syntax, never routed, obviously placeholders.
const PLACEHOLDER_NET: [u8; 3] = [192, 0, 2];

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
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(sh("eth0"), "eth0");
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
    }
}
