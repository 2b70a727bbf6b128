//! From YAML text to a validated [`ClusterConfig`], collecting every error.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::error::{ConfigError, ConfigErrors, ErrorKind};
use crate::limits::{self, Bounds};
use crate::locate::{KeyPath, locate};
use crate::raw::*;
use crate::types::*;

mod fencing;

/// Agent kinds, in the order the documentation lists them.
pub const AGENT_KINDS: &[&str] = &["reserved-ip", "lsb", "ocf", "exec"];
const DURATION_EXAMPLE: &str = "a duration with a unit, e.g. 200ms or 2s";
/// Defaults of every agent action (types.rs documents them on `ActionSettings`).
const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(20);
/// Provider APIs poll an action until it completes; DigitalOcean's take seconds.
const DEFAULT_RESERVED_IP_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_OCF_ROOT: &str = "/usr/lib/ocf";
/// Cluster names travel in every datagram; keep them short.
const MAX_CLUSTER_NAME: usize = 64;

pub(crate) struct Ctx<'a> {
    text: &'a str,
    source: &'a Path,
    errors: Vec<ConfigError>,
    /// The node list could not be read: checks that refer to nodes would only add noise.
    nodes_unknown: bool,
}

impl<'a> Ctx<'a> {
    fn push(
        &mut self,
        kind: ErrorKind,
        path: &KeyPath,
        at_key: bool,
        message: impl Into<String>,
        expected: Option<String>,
    ) {
        let pos = locate(self.text, path, at_key);
        self.errors.push(ConfigError {
            kind,
            file: self.source.to_owned(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            path: path.to_string(),
            message: message.into(),
            expected,
        });
    }

    fn invalid(&mut self, path: &KeyPath, message: impl Into<String>, expected: impl Into<String>) {
        self.push(
            ErrorKind::Invalid,
            path,
            false,
            message,
            Some(expected.into()),
        );
    }

    fn inconsistent(
        &mut self,
        path: &KeyPath,
        message: impl Into<String>,
        expected: impl Into<String>,
    ) {
        self.push(
            ErrorKind::Inconsistent,
            path,
            false,
            message,
            Some(expected.into()),
        );
    }

    fn missing(&mut self, path: &KeyPath, expected: impl Into<String>) {
        self.push(
            ErrorKind::Missing,
            path,
            false,
            "is required but missing",
            Some(expected.into()),
        );
    }

    /// Deserializes `value` into the raw shape `T`: every unknown key is reported (with a
    /// suggestion when one is close) and dropped, so the remaining keys are still checked.
    fn raw<T: DeserializeOwned + Default>(&mut self, value: &Value, path: &KeyPath) -> Option<T> {
        let value = match value {
            Value::Null => return Some(T::default()),
            Value::Mapping(map) => {
                let allowed = fields_of::<T>();
                let mut kept = serde_yaml::Mapping::new();
                for (k, v) in map {
                    match k.as_str() {
                        Some(name) if allowed.contains(&name) => {
                            kept.insert(k.clone(), v.clone());
                        }
                        Some(name) => self.unknown_key(&path.key(name), name, allowed),
                        None => {
                            self.invalid(path, format!("key {} is not text", short(k)), "text keys")
                        }
                    }
                }
                Value::Mapping(kept)
            }
            other => other.clone(),
        };
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut full = path.clone();
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Seq { index } => full = full.index(*index),
                        serde_path_to_error::Segment::Map { key } => full = full.key(key),
                        serde_path_to_error::Segment::Enum { variant } => full = full.key(variant),
                        serde_path_to_error::Segment::Unknown => {}
                    }
                }
                let msg = e.into_inner().to_string();
                let (mut msg, mut expected) = split_expected(&msg);
                if let Some((m, x)) = plain_number(&msg, expected.as_deref()) {
                    (msg, expected) = (m, Some(x));
                }
                if expected.as_deref() == Some("a sequence") {
                    expected = Some("a list (`- item` lines, or `[a, b]`)".to_owned());
                }
                // serde names our private raw structs; say what the file should contain instead
                if expected
                    .as_deref()
                    .is_some_and(|x| x.starts_with("struct Raw"))
                {
                    expected = Some(format!(
                        "a mapping with the keys {}",
                        fields_of::<T>().join(", ")
                    ));
                }
                self.push(ErrorKind::Invalid, &full, false, msg, expected);
                None
            }
        }
    }

    /// A top-level section: `Ok(None)` when absent, `Err(())` when malformed (already reported).
    fn section<T: DeserializeOwned + Default>(
        &mut self,
        v: &Option<Value>,
        path: &KeyPath,
    ) -> Result<Option<T>, ()> {
        match v {
            None => Ok(None),
            Some(v) => self.raw::<T>(v, path).map(Some).ok_or(()),
        }
    }

    fn unknown_key(&mut self, path: &KeyPath, name: &str, allowed: &[&str]) {
        let expected = match suggest(name, allowed) {
            Some(s) => format!(
                "did you mean `{s}`? valid keys here: {}",
                allowed.join(", ")
            ),
            None => format!("one of: {}", allowed.join(", ")),
        };
        self.push(
            ErrorKind::UnknownKey,
            path,
            true,
            format!("unknown key `{name}`"),
            Some(expected),
        );
    }

    /// A duration given in the file (else `default`), within `bounds`.
    fn duration(
        &mut self,
        path: &KeyPath,
        v: &Option<Text>,
        default: Duration,
        bounds: &Bounds,
    ) -> Duration {
        let Some(Text(s)) = v else { return default };
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d.is_zero() => {
                self.invalid(path, format!("{s:?} is zero"), DURATION_EXAMPLE);
                default
            }
            Ok(d) => match bounds.check(d) {
                Some((why, expected)) => {
                    self.invalid(path, format!("{s:?} {why}"), expected);
                    default
                }
                None => d,
            },
            Err(_) => {
                self.invalid(path, format!("{s:?} is not a duration"), DURATION_EXAMPLE);
                default
            }
        }
    }

    /// A file name that must not be a secret itself: a token or key pasted where its file
    /// belongs is refused without echoing it (and would be printed by every summary).
    fn file_name(&mut self, path: &KeyPath, v: &Option<Text>, expected: &str) -> Option<String> {
        let name = self.required_text(path, v, expected)?;
        if crate::secret::looks_like_credential(&name) {
            self.invalid(
                path,
                "holds what looks like a token or key itself (not shown here), not a file name",
                format!(
                    "{expected}; put the secret in a file of mode 0600 and name that file here \
                     (revoke the secret if this file was shared)"
                ),
            );
            return None;
        }
        Some(name)
    }

    fn required_text(
        &mut self,
        path: &KeyPath,
        v: &Option<Text>,
        expected: &str,
    ) -> Option<String> {
        match v {
            None => {
                self.missing(path, expected);
                None
            }
            Some(Text(s)) if s.trim().is_empty() => {
                self.invalid(path, "is empty", expected);
                None
            }
            Some(Text(s)) => Some(s.trim().to_owned()),
        }
    }
}

/// serde messages read "invalid type: string "x", expected u32": keep the "expected" part apart.
fn split_expected(msg: &str) -> (String, Option<String>) {
    match msg.rsplit_once(", expected ") {
        Some((m, e)) => (m.to_owned(), Some(e.to_owned())),
        None => (msg.to_owned(), None),
    }
}

/// The closest valid name, when it is close enough to be a likely typo: few edits
/// (transpositions count as one, so `lbs` finds `lsb`) or a high Jaro-Winkler similarity.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| {
            let edits = strsim::damerau_levenshtein(&word, c);
            let close = (edits <= 2 && edits < c.len().div_ceil(2))
                || strsim::jaro_winkler(&word, c) >= 0.85;
            (close, edits, *c)
        })
        .filter(|(close, _, _)| *close)
        .min_by_key(|(_, edits, _)| *edits)
        .map(|(_, _, c)| c)
}

fn short(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

pub(crate) fn parse(text: &str, source: &Path) -> Result<ClusterConfig, ConfigErrors> {
    let mut cx = Ctx {
        text,
        source,
        errors: Vec::new(),
        nodes_unknown: false,
    };
    let doc: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let loc = e.location();
            let mut msg = e.to_string();
            // serde_yaml appends " at line L column C"; the position is printed in front already.
            if let Some(i) = msg.find(" at line ") {
                msg.truncate(i);
            }
            let (kind, path, message) = match plain_overflow(&msg) {
                Some((path, m)) => (ErrorKind::Invalid, path, m),
                None => (
                    ErrorKind::Syntax,
                    String::new(),
                    format!("not valid YAML: {msg}"),
                ),
            };
            return Err(ConfigError {
                kind,
                file: source.to_owned(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                path,
                message,
                expected: None,
            }
            .into());
        }
    };
    if doc.is_null() {
        return Err(ConfigError {
            kind: ErrorKind::Syntax,
            file: source.to_owned(),
            line: None,
            column: None,
            path: String::new(),
            message: "the file is empty".into(),
            expected: Some("a mapping with at least `cluster`, `auth`, `nodes`".into()),
        }
        .into());
    }
    if !doc.is_mapping() {
        cx.invalid(
            &KeyPath::root(),
            "the document is not a mapping of keys",
            "`cluster:`, `auth:`, `nodes:` ... at the top level",
        );
        return Err(cx.finish());
    }
    let root = KeyPath::root();
    let top: RawTop = match cx.raw(&doc, &root) {
        Some(t) => t,
        None => return Err(cx.finish()),
    };
    let config = build(&mut cx, top);
    if cx.errors.is_empty() {
        Ok(config)
    } else {
        Err(cx.finish())
    }
}

impl Ctx<'_> {
    fn finish(mut self) -> ConfigErrors {
        // File order; errors without a position (rare) last.
        self.errors
            .sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.column.unwrap_or(0)));
        self.errors.dedup();
        ConfigErrors(self.errors)
    }
}

fn build(cx: &mut Ctx<'_>, top: RawTop) -> ClusterConfig {
    let root = KeyPath::root();
    let cluster = match cx.section::<Text>(&top.cluster, &root.key("cluster")) {
        Ok(t) => cluster_name(cx, &root.key("cluster"), &t),
        Err(()) => String::new(),
    };
    let auth = auth(cx, &root.key("auth"), top.auth.as_ref());
    let timing = timing(cx, &root.key("timing"), top.timing.as_ref());
    let node_items = cx.section::<Vec<Value>>(&top.nodes, &root.key("nodes"));
    // Missing, empty or malformed: that is reported once; checks against it would only echo it.
    cx.nodes_unknown = !matches!(&node_items, Ok(Some(v)) if !v.is_empty());
    let nodes = match node_items {
        Ok(items) => nodes(cx, &root.key("nodes"), items.as_deref()),
        Err(()) => Vec::new(),
    };
    let quorum = match cx.section::<Text>(&top.quorum, &root.key("quorum")) {
        Ok(q) => quorum(cx, &root.key("quorum"), &q, &nodes),
        Err(()) => QuorumPolicy::Majority,
    };
    let health = cx
        .section::<Vec<Value>>(&top.health, &root.key("health"))
        .ok()
        .flatten()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, v)| health_check(cx, &root.key("health").index(i), v))
        .collect();
    let resources = match cx.section::<Vec<Value>>(&top.resources, &root.key("resources")) {
        Ok(items) => resources(cx, &root.key("resources"), items.as_deref(), &nodes),
        Err(()) => Vec::new(),
    };
    let membership = match top.membership.as_ref() {
        None => MembershipSettings::default(),
        Some(v) => {
            let p = root.key("membership");
            let raw: RawMembership = cx.raw(v, &p).unwrap_or_default();
            MembershipSettings {
                socket_group: group_name(cx, &p.key("socket_group"), &raw.socket_group),
                metrics: metrics(cx, &p.key("metrics"), &raw.metrics),
            }
        }
    };
    let agent = match top.agent.as_ref() {
        None => AgentSettings::default(),
        Some(v) => {
            let p = root.key("agent");
            let raw: RawAgentSettings = cx.raw(v, &p).unwrap_or_default();
            AgentSettings {
                socket_group: group_name(cx, &p.key("socket_group"), &raw.socket_group),
                admin_group: group_name(cx, &p.key("admin_group"), &raw.admin_group),
                metrics: metrics(cx, &p.key("metrics"), &raw.metrics),
            }
        }
    };
    let fencing = fencing::fencing(cx, &root.key("fencing"), top.fencing.as_ref(), &nodes);
    ClusterConfig {
        source: cx.source.to_owned(),
        cluster,
        auth,
        timing,
        quorum,
        nodes,
        health,
        resources,
        membership,
        agent,
        fencing,
    }
}

fn cluster_name(cx: &mut Ctx<'_>, path: &KeyPath, v: &Option<Text>) -> String {
    const EXPECTED: &str = "letters, digits and '-', e.g. `web`";
    let Some(name) = cx.required_text(path, v, EXPECTED) else {
        return String::new();
    };
    if name.len() > MAX_CLUSTER_NAME {
        cx.invalid(
            path,
            format!("{name:?} is longer than {MAX_CLUSTER_NAME} characters"),
            EXPECTED,
        );
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        cx.invalid(path, format!("{name:?} contains {c:?}"), EXPECTED);
    }
    name
}

fn auth(cx: &mut Ctx<'_>, path: &KeyPath, v: Option<&Value>) -> Auth {
    let mut auth = Auth {
        key_file: PathBuf::new(),
        accept_key_files: Vec::new(),
    };
    let Some(v) = v else {
        cx.missing(
            path,
            "`auth: { key_file: /etc/tandem/authkey }` (create it with `ipctl keygen`)",
        );
        return auth;
    };
    let Some(raw) = cx.raw::<RawAuth>(v, path) else {
        return auth;
    };
    let kp = path.key("key_file");
    if let Some(f) = cx.file_name(&kp, &raw.key_file, "a file path, e.g. /etc/tandem/authkey") {
        auth.key_file = PathBuf::from(f);
    }
    for (i, t) in raw.accept_key_files.iter().flatten().enumerate() {
        let p = path.key("accept_key_files").index(i);
        if let Some(f) = cx.file_name(&p, &Some(t.clone()), "a file path") {
            auth.accept_key_files.push(PathBuf::from(f));
        }
    }
    auth
}

fn timing(cx: &mut Ctx<'_>, path: &KeyPath, v: Option<&Value>) -> Timing {
    let d = Timing::default();
    let Some(v) = v else { return d };
    let Some(raw) = cx.raw::<RawTiming>(v, path) else {
        return d;
    };
    let mut dur = |key: &str, v: &Option<Text>, default: Duration, bounds: &Bounds| {
        cx.duration(&path.key(key), v, default, bounds)
    };
    let t = Timing {
        interval: dur("interval", &raw.interval, d.interval, &limits::INTERVAL),
        warn_after: dur(
            "warn_after",
            &raw.warn_after,
            d.warn_after,
            &limits::WARN_AFTER,
        ),
        dead_after: dur(
            "dead_after",
            &raw.dead_after,
            d.dead_after,
            &limits::DEAD_AFTER,
        ),
        init_dead: dur("init_dead", &raw.init_dead, d.init_dead, &limits::INIT_DEAD),
    };
    let show = |d: Duration| humantime::format_duration(d).to_string();
    let mark = |set: bool| if set { "" } else { " (default)" };
    if t.dead_after <= t.interval {
        cx.inconsistent(
            &path.key("dead_after"),
            format!(
                "dead_after {}{} is not longer than interval {}{}: one late heartbeat would declare a peer dead",
                show(t.dead_after),
                mark(raw.dead_after.is_some()),
                show(t.interval),
                mark(raw.interval.is_some())
            ),
            "dead_after of several intervals, e.g. 10 x interval",
        );
    } else if t.dead_after < t.interval * limits::MIN_BEATS_PER_DEAD {
        cx.inconsistent(
            &path.key("dead_after"),
            format!(
                "dead_after {}{} holds fewer than {} intervals of {}{}: two heartbeats lost or late in a row would declare a live peer dead",
                show(t.dead_after),
                mark(raw.dead_after.is_some()),
                limits::MIN_BEATS_PER_DEAD,
                show(t.interval),
                mark(raw.interval.is_some())
            ),
            "dead_after of several intervals, e.g. 10 x interval",
        );
    }
    if t.warn_after >= t.dead_after {
        cx.inconsistent(
            &path.key("warn_after"),
            format!(
                "warn_after {}{} is not shorter than dead_after {}{}: a peer would be dead before it is late",
                show(t.warn_after),
                mark(raw.warn_after.is_some()),
                show(t.dead_after),
                mark(raw.dead_after.is_some())
            ),
            "interval < warn_after < dead_after",
        );
    }
    if t.warn_after <= t.interval {
        cx.inconsistent(
            &path.key("warn_after"),
            format!(
                "warn_after {}{} is not longer than interval {}{}: every heartbeat would be reported late",
                show(t.warn_after),
                mark(raw.warn_after.is_some()),
                show(t.interval),
                mark(raw.interval.is_some())
            ),
            "interval < warn_after < dead_after",
        );
    }
    if t.init_dead < t.dead_after {
        cx.inconsistent(
            &path.key("init_dead"),
            format!(
                "init_dead {}{} is shorter than dead_after {}{}: peers just booting would get less grace than running ones",
                show(t.init_dead),
                mark(raw.init_dead.is_some()),
                show(t.dead_after),
                mark(raw.dead_after.is_some())
            ),
            "init_dead >= dead_after",
        );
    }
    t
}

pub(crate) fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => Err(format!("{s:?} has port 0, which cannot be reached")),
        Ok(a) => limits::placeholder(a.ip()).map_or(Ok(a), Err),
        Err(_) => Err(format!("{s:?} is not ip:port")),
    }
}

const ADDR_EXAMPLE: &str = "e.g. \"10.17.0.28:694\"";

fn nodes(cx: &mut Ctx<'_>, path: &KeyPath, v: Option<&[Value]>) -> Vec<NodeConfig> {
    let Some(items) = v else {
        cx.missing(path, "a list of nodes, each with `name` and `addresses`");
        return Vec::new();
    };
    if items.is_empty() {
        cx.invalid(path, "is empty", "at least one node");
    }
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut seen_addrs: HashMap<SocketAddr, String> = HashMap::new();
    for (i, v) in items.iter().enumerate() {
        let p = path.index(i);
        let Some(raw) = cx.raw::<RawNode>(v, &p) else {
            // still a voter: the quorum checks must not add a misleading second error
            out.push(NodeConfig {
                name: String::new(),
                addresses: Vec::new(),
                role: Role::Member,
                provider_id: None,
            });
            continue;
        };
        let name = node_name(cx, &p.key("name"), &raw.name);
        if let Some(name) = &name {
            if let Some(first) = names.get(name) {
                cx.inconsistent(
                    &p.key("name"),
                    format!("duplicate node name {name:?} (also nodes[{first}])"),
                    "a unique name per node",
                );
            } else {
                names.insert(name.clone(), i);
            }
        }
        let mut addresses = Vec::new();
        match &raw.addresses {
            None => cx.missing(
                &p.key("addresses"),
                "a list of ip:port, one per link, e.g. [\"10.17.0.28:694\"]",
            ),
            Some(list) if list.is_empty() => cx.invalid(
                &p.key("addresses"),
                "is empty: a node needs at least one address to be heard",
                "a list of ip:port, one per link, e.g. [\"10.17.0.28:694\"]",
            ),
            Some(list) => {
                for (j, Text(s)) in list.iter().enumerate() {
                    let ap = p.key("addresses").index(j);
                    match parse_socket_addr(s) {
                        Err(m) => cx.invalid(&ap, m, ADDR_EXAMPLE),
                        Ok(a) => {
                            let owner = name.clone().unwrap_or_else(|| format!("nodes[{i}]"));
                            if let Some(other) = seen_addrs.get(&a) {
                                cx.inconsistent(
                                    &ap,
                                    format!("duplicate address {a} (also used by {other})"),
                                    "each address used by one node only",
                                );
                            } else {
                                seen_addrs.insert(a, owner);
                            }
                            addresses.push(a);
                        }
                    }
                }
            }
        }
        let role = match raw.role.as_ref().map(|t| t.0.trim()) {
            None | Some("member") => Role::Member,
            Some("witness") => Role::Witness,
            Some(other) => {
                cx.invalid(
                    &p.key("role"),
                    format!("unknown role {other:?}"),
                    "`member` or `witness`",
                );
                Role::Member
            }
        };
        // A node whose name is wrong still counts as a voter, so the quorum checks do not add
        // a second, misleading error; its empty name never reaches a valid config.
        let provider_id = fencing::provider_id(cx, &p.key("provider_id"), &raw.provider_id);
        out.push(NodeConfig {
            name: name.unwrap_or_default(),
            addresses,
            role,
            provider_id,
        });
    }
    out
}

fn node_name(cx: &mut Ctx<'_>, path: &KeyPath, v: &Option<Text>) -> Option<String> {
    const EXPECTED: &str = "the node's host name (`uname -n`): letters, digits, '-', '_', '.'";
    let name = cx.required_text(path, v, EXPECTED)?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        cx.invalid(path, format!("{name:?} contains {c:?}"), EXPECTED);
    }
    Some(name)
}

fn quorum(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    v: &Option<Text>,
    nodes: &[NodeConfig],
) -> QuorumPolicy {
    let voters = nodes.len();
    let policy = match v.as_ref().map(|t| t.0.trim()) {
        None => None,
        Some("two_node") => Some(QuorumPolicy::TwoNode),
        Some("majority") => Some(QuorumPolicy::Majority),
        Some(other) => {
            let hint = match suggest(other, &["two_node", "majority"]) {
                Some(s) => format!("`two_node` or `majority` (did you mean `{s}`?)"),
                None => "`two_node` or `majority`".into(),
            };
            cx.invalid(path, format!("unknown quorum policy {other:?}"), hint);
            return if voters == 2 {
                QuorumPolicy::TwoNode
            } else {
                QuorumPolicy::Majority
            };
        }
    };
    if cx.nodes_unknown {
        return policy.unwrap_or(QuorumPolicy::Majority);
    }
    match (voters, policy) {
        (2, Some(QuorumPolicy::TwoNode)) => QuorumPolicy::TwoNode,
        (2, p) => {
            let why = "with exactly 2 voters a cut link looks the same as a dead peer, so a \
                       partition could let both nodes hold the resources (split brain); Tandem \
                       never allows that silently";
            let msg = match p {
                None => format!("is required with exactly 2 voting nodes: {why}"),
                _ => format!(
                    "`majority` with exactly 2 voting nodes stops every resource when either node dies: {why}"
                ),
            };
            cx.push(
                if p.is_none() { ErrorKind::Missing } else { ErrorKind::Inconsistent },
                path,
                false,
                msg,
                Some(
                    "`quorum: two_node` (both sides stay quorate; health checks decide who may hold \
                     resources) or a third node with `role: witness`"
                        .into(),
                ),
            );
            QuorumPolicy::TwoNode
        }
        (n, Some(QuorumPolicy::TwoNode)) => {
            cx.inconsistent(
                path,
                format!("`two_node` needs exactly 2 voting nodes, but {n} are configured"),
                "`majority` (the default with 3 or more voters), or exactly 2 nodes",
            );
            QuorumPolicy::Majority
        }
        (_, _) => QuorumPolicy::Majority,
    }
}

fn health_check(cx: &mut Ctx<'_>, path: &KeyPath, v: &Value) -> Option<HealthCheck> {
    const KINDS: &str =
        "one of `tcp: \"host:port\"`, `http: \"http://...\"` or `exec: \"command\"`";
    let raw = cx.raw::<RawHealth>(v, path)?;
    let given: Vec<&str> = [
        raw.tcp.as_ref().map(|_| "tcp"),
        raw.http.as_ref().map(|_| "http"),
        raw.exec.as_ref().map(|_| "exec"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let interval = cx.duration(
        &path.key("interval"),
        &raw.interval,
        Duration::from_secs(2),
        &limits::CHECKS,
    );
    let timeout = cx.duration(
        &path.key("timeout"),
        &raw.timeout,
        Duration::from_secs(1),
        &limits::CHECKS,
    );
    if timeout >= interval {
        cx.inconsistent(
            &path.key("timeout"),
            format!(
                "timeout {} is not shorter than interval {}: checks would overlap",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
            "timeout < interval",
        );
    }
    let fall = raw.fall.unwrap_or(3);
    if fall == 0 {
        cx.invalid(
            &path.key("fall"),
            "is 0",
            "consecutive failures before unhealthy, at least 1",
        );
    }
    let rise = raw.rise.unwrap_or(2);
    if rise == 0 {
        cx.invalid(
            &path.key("rise"),
            "is 0",
            "consecutive successes before healthy, at least 1",
        );
    }
    if raw.expect.is_some() && raw.http.is_none() {
        cx.invalid(
            &path.key("expect"),
            "applies to `http` checks only",
            "`expect` beside `http:`",
        );
    }
    let probe = match given.as_slice() {
        [] => {
            cx.push(
                ErrorKind::Missing,
                path,
                false,
                "has no check",
                Some(KINDS.into()),
            );
            return None;
        }
        [_, _, ..] => {
            cx.invalid(
                path,
                format!("has several checks ({})", given.join(", ")),
                format!("{KINDS}, one per list item"),
            );
            return None;
        }
        ["tcp"] => {
            let s = raw
                .tcp
                .as_ref()
                .map(|t| t.0.trim().to_owned())
                .unwrap_or_default();
            if let Err(m) = check_host_port(&s) {
                cx.invalid(&path.key("tcp"), m, "host:port, e.g. \"10.17.0.1:53\"");
                return None;
            }
            HealthProbe::Tcp(s)
        }
        ["http"] => {
            let url = raw
                .http
                .as_ref()
                .map(|t| t.0.trim().to_owned())
                .unwrap_or_default();
            if let Err(m) = check_url(&url) {
                cx.invalid(&path.key("http"), m, "e.g. \"http://127.0.0.1/health\"");
                return None;
            }
            let expect = raw.expect.unwrap_or(200);
            if !(100..=599).contains(&expect) {
                cx.invalid(
                    &path.key("expect"),
                    format!("{expect} is not an HTTP status"),
                    "100-599, e.g. 200",
                );
            }
            HealthProbe::Http { url, expect }
        }
        _ => {
            let cmd = raw
                .exec
                .as_ref()
                .map(|t| t.0.trim().to_owned())
                .unwrap_or_default();
            if cmd.is_empty() {
                cx.invalid(&path.key("exec"), "is empty", "a command; exit 0 = healthy");
                return None;
            }
            HealthProbe::Exec(cmd)
        }
    };
    Some(HealthCheck {
        probe,
        interval,
        timeout,
        fall,
        rise,
    })
}

/// `host:port` where host is an IP, `[v6]` or a name resolved at check time.
fn check_host_port(s: &str) -> Result<(), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} has no port"));
    };
    match port.parse::<u16>() {
        Ok(0) => return Err(format!("{s:?} has port 0")),
        Ok(_) => {}
        Err(_) => return Err(format!("{s:?} has no valid port")),
    }
    if let Some(v6) = host.strip_prefix('[') {
        return match v6.strip_suffix(']').map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(format!("{s:?} has an invalid IPv6 address in brackets")),
        };
    }
    if host.contains(':') {
        return Err(format!(
            "{s:?}: an IPv6 address needs brackets, e.g. \"[::1]:53\""
        ));
    }
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    {
        Ok(())
    } else {
        Err(format!("{s:?} has an invalid host name"))
    }
}

/// An http(s) URL with a host. (A full URL parser is not needed to catch what operators get wrong.)
pub(crate) fn check_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("{s:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    if host.chars().any(|c| c.is_whitespace()) {
        return Err(format!("{s:?} contains a space"));
    }
    let (h, port) = if let Some(v6) = host.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(format!("{s:?} has an unclosed '['"));
        };
        match after {
            "" => (h, None),
            p => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("{s:?} has text after ']'")),
            },
        }
    } else if host.matches(':').count() > 1 {
        return Err(format!(
            "{s:?}: an IPv6 host needs brackets, e.g. http://[::1]/"
        ));
    } else {
        match host.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    if h.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("{s:?} has an invalid port"));
    }
    Ok(())
}

fn group_name(cx: &mut Ctx<'_>, path: &KeyPath, v: &Option<Text>) -> Option<String> {
    let t = v.as_ref()?;
    let s = t.0.trim();
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == ':') {
        cx.invalid(
            path,
            format!("{s:?} is not a group name"),
            "a Unix group name, e.g. `tandem-admin`",
        );
        return None;
    }
    Some(s.to_owned())
}

fn metrics(cx: &mut Ctx<'_>, path: &KeyPath, v: &Option<Text>) -> Option<SocketAddr> {
    let t = v.as_ref()?;
    match parse_socket_addr(&t.0) {
        Err(m) => {
            cx.invalid(path, m, "a loopback ip:port, e.g. \"127.0.0.1:9464\"");
            None
        }
        Ok(a) if !a.ip().is_loopback() => {
            cx.invalid(
                path,
                format!("{a} is not a loopback address: metrics would be open to the network"),
                "a loopback ip:port, e.g. \"127.0.0.1:9464\" (put a proxy in front to publish it)",
            );
            None
        }
        Ok(a) => Some(a),
    }
}

fn resources(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    v: Option<&[Value]>,
    nodes: &[NodeConfig],
) -> Vec<ResourceGroup> {
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, v) in v.into_iter().flatten().enumerate() {
        let p = path.index(i);
        let Some(raw) = cx.raw::<RawGroup>(v, &p) else {
            continue;
        };
        let name = cx.required_text(&p.key("name"), &raw.name, "a group name, e.g. `floatip`");
        if let Some(n) = &name {
            if let Some(first) = names.get(n) {
                cx.inconsistent(
                    &p.key("name"),
                    format!("duplicate group name {n:?} (also resources[{first}])"),
                    "a unique name per resource group",
                );
            } else {
                names.insert(n.clone(), i);
            }
        }
        let prefer = raw.prefer.as_ref().map(|t| t.0.trim().to_owned());
        if let Some(pname) = &prefer
            && !cx.nodes_unknown
        {
            let member_names: Vec<&str> = nodes
                .iter()
                .filter(|n| n.role == Role::Member && !n.name.is_empty())
                .map(|n| n.name.as_str())
                .collect();
            match nodes.iter().find(|n| &n.name == pname) {
                None => cx.inconsistent(
                    &p.key("prefer"),
                    format!("names no configured node: {pname:?}"),
                    one_of_members(&member_names),
                ),
                Some(n) if n.role == Role::Witness => cx.inconsistent(
                    &p.key("prefer"),
                    format!("{pname:?} is a witness, which never holds resources"),
                    one_of_members(&member_names),
                ),
                Some(_) => {}
            }
        }
        let failback = match raw.failback.as_ref().map(|t| t.0.trim()) {
            None | Some("auto") => Failback::Auto,
            Some("manual") => Failback::Manual,
            Some(other) => {
                cx.invalid(
                    &p.key("failback"),
                    format!("unknown failback {other:?}"),
                    "`auto` or `manual`",
                );
                Failback::Auto
            }
        };
        let mut agents = Vec::new();
        match &raw.agents {
            None => cx.missing(
                &p.key("agents"),
                "a list of agents: reserved-ip, lsb, ocf or exec",
            ),
            Some(list) if list.is_empty() => cx.invalid(
                &p.key("agents"),
                "is empty: a group without agents does nothing",
                "at least one agent: reserved-ip, lsb, ocf or exec",
            ),
            Some(list) => {
                for (j, a) in list.iter().enumerate() {
                    if let Some(a) = agent(cx, &p.key("agents").index(j), a, nodes) {
                        agents.push(a);
                    }
                }
            }
        }
        if let Some(name) = name {
            out.push(ResourceGroup {
                name,
                prefer,
                failback,
                agents,
            });
        }
    }
    out
}

fn one_of_members(names: &[&str]) -> String {
    if names.is_empty() {
        "the name of a configured member node".to_owned()
    } else {
        format!("one of: {}", names.join(", "))
    }
}

fn agent(cx: &mut Ctx<'_>, path: &KeyPath, v: &Value, nodes: &[NodeConfig]) -> Option<AgentConfig> {
    let expected_kinds = format!("a mapping with one of: {}", AGENT_KINDS.join(", "));
    let Value::Mapping(map) = v else {
        cx.invalid(
            path,
            format!("{} is not an agent", short(v)),
            format!("{expected_kinds}, e.g. `- lsb: nginx`"),
        );
        return None;
    };
    let outer_fields = fields_of::<RawAgentOuter>();
    let mut kind: Option<(&str, &Value)> = None;
    let mut outer = serde_yaml::Mapping::new();
    let mut kinds_seen = Vec::new();
    for (k, val) in map {
        let Some(name) = k.as_str() else {
            cx.invalid(
                path,
                format!("key {} is not text", short(k)),
                expected_kinds.clone(),
            );
            continue;
        };
        if AGENT_KINDS.contains(&name) {
            kinds_seen.push(name);
            kind.get_or_insert((name, val));
        } else if outer_fields.contains(&name) {
            outer.insert(k.clone(), val.clone());
        } else {
            let all: Vec<&str> = AGENT_KINDS.iter().chain(outer_fields).copied().collect();
            let expected = match suggest(name, &all) {
                Some(s) => format!(
                    "did you mean `{s}`? agent kinds: {}",
                    AGENT_KINDS.join(", ")
                ),
                None => format!("an agent kind: {}", AGENT_KINDS.join(", ")),
            };
            cx.push(
                ErrorKind::UnknownKey,
                &path.key(name),
                true,
                format!("unknown agent kind `{name}`"),
                Some(expected),
            );
        }
    }
    if kinds_seen.len() > 1 {
        cx.invalid(
            path,
            format!(
                "has several agent kinds ({}) in one item",
                kinds_seen.join(", ")
            ),
            "one agent per list item",
        );
        return None;
    }
    let (kind, body) = kind?;
    let outer: RawAgentOuter = cx.raw(&Value::Mapping(outer), path).unwrap_or_default();
    let kp = path.key(kind);
    match kind {
        "reserved-ip" => reserved_ip(cx, &kp, body, &outer, nodes).map(AgentConfig::ReservedIp),
        "lsb" => {
            let raw = match body {
                Value::Mapping(_) => cx.raw::<RawLsb>(body, &kp)?,
                _ => RawLsb {
                    script: Some(cx.raw::<Text>(body, &kp)?),
                    ..RawLsb::default()
                },
            };
            let settings = settings(
                cx,
                path,
                &kp,
                &outer,
                &raw.timeout,
                &raw.monitor_interval,
                DEFAULT_ACTION_TIMEOUT,
            );
            let script_path = if body.is_mapping() {
                kp.key("script")
            } else {
                kp.clone()
            };
            let script = cx.required_text(
                &script_path,
                &raw.script,
                "an init script name in /etc/init.d, or an absolute path",
            )?;
            if script.contains('/') && !script.starts_with('/') {
                cx.invalid(
                    &script_path,
                    format!("{script:?} is a relative path"),
                    "a name in /etc/init.d, or an absolute path",
                );
                return None;
            }
            Some(AgentConfig::Lsb(LsbAgent { script, settings }))
        }
        "ocf" => {
            let raw = match body {
                Value::Mapping(_) => cx.raw::<RawOcf>(body, &kp)?,
                _ => RawOcf {
                    agent: Some(cx.raw::<Text>(body, &kp)?),
                    ..RawOcf::default()
                },
            };
            let settings = settings(
                cx,
                path,
                &kp,
                &outer,
                &raw.timeout,
                &raw.monitor_interval,
                DEFAULT_ACTION_TIMEOUT,
            );
            let ap = if body.is_mapping() {
                kp.key("agent")
            } else {
                kp.clone()
            };
            const EXPECTED: &str = "\"provider:type\", e.g. \"heartbeat:Dummy\"";
            let spec = cx.required_text(&ap, &raw.agent, EXPECTED)?;
            let ok = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            };
            let (provider, agent_kind) = match spec.split_once(':') {
                Some((p, k)) if ok(p) && ok(k) => (p.to_owned(), k.to_owned()),
                _ => {
                    cx.invalid(&ap, format!("{spec:?} is not provider:type"), EXPECTED);
                    return None;
                }
            };
            let mut params = BTreeMap::new();
            for (name, Text(value)) in raw.params.iter().flatten() {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    cx.invalid(
                        &kp.key("params").key(name),
                        format!("parameter name {name:?} cannot be an environment variable (OCF_RESKEY_{name})"),
                        "letters, digits and '_'",
                    );
                    continue;
                }
                params.insert(name.clone(), value.clone());
            }
            let ocf_root = match &raw.ocf_root {
                None => PathBuf::from(DEFAULT_OCF_ROOT),
                Some(Text(r)) if r.starts_with('/') => PathBuf::from(r),
                Some(Text(r)) => {
                    cx.invalid(
                        &kp.key("ocf_root"),
                        format!("{r:?} is not an absolute path"),
                        "e.g. /usr/lib/ocf",
                    );
                    return None;
                }
            };
            Some(AgentConfig::Ocf(OcfAgent {
                provider,
                kind: agent_kind,
                params,
                ocf_root,
                settings,
            }))
        }
        _ => {
            if !body.is_mapping() {
                cx.invalid(
                    &kp,
                    format!("{} is not a mapping", short(body)),
                    "`exec: { start: \"...\", stop: \"...\", monitor: \"...\" }`",
                );
                return None;
            }
            let raw = cx.raw::<RawExec>(body, &kp)?;
            let settings = settings(
                cx,
                path,
                &kp,
                &outer,
                &raw.timeout,
                &raw.monitor_interval,
                DEFAULT_ACTION_TIMEOUT,
            );
            let start = cx.required_text(&kp.key("start"), &raw.start, "a command run with sh -c");
            let stop = cx.required_text(&kp.key("stop"), &raw.stop, "a command run with sh -c");
            let monitor = match &raw.monitor {
                None => None,
                Some(t) => Some(cx.required_text(
                    &kp.key("monitor"),
                    &Some(t.clone()),
                    "a command; exit 0 = running, 7 or 3 = stopped",
                )?),
            };
            Some(AgentConfig::Exec(ExecAgent {
                start: start?,
                stop: stop?,
                monitor,
                settings,
            }))
        }
    }
}

/// Action settings may sit beside the kind key or inside its mapping, not both.
fn settings(
    cx: &mut Ctx<'_>,
    item: &KeyPath,
    inner: &KeyPath,
    outer: &RawAgentOuter,
    timeout: &Option<Text>,
    monitor_interval: &Option<Text>,
    default_timeout: Duration,
) -> ActionSettings {
    let mut pick = |key: &str, o: &Option<Text>, i: &Option<Text>, default: Duration| -> Duration {
        match (o, i) {
            (Some(_), Some(_)) => {
                cx.invalid(
                    &inner.key(key),
                    format!("`{key}` is given twice (beside and inside the agent)"),
                    "one of the two",
                );
                default
            }
            (Some(_), None) => cx.duration(&item.key(key), o, default, &limits::CHECKS),
            (None, _) => cx.duration(&inner.key(key), i, default, &limits::CHECKS),
        }
    };
    ActionSettings {
        timeout: pick("timeout", &outer.timeout, timeout, default_timeout),
        monitor_interval: pick(
            "monitor_interval",
            &outer.monitor_interval,
            monitor_interval,
            DEFAULT_MONITOR_INTERVAL,
        ),
    }
}

fn reserved_ip(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    body: &Value,
    outer: &RawAgentOuter,
    nodes: &[NodeConfig],
) -> Option<ReservedIpAgent> {
    if !body.is_mapping() {
        cx.invalid(
            path,
            format!("{} is not a mapping", short(body)),
            "`reserved-ip: { provider: digitalocean, ip: ..., token_file: ... }`",
        );
        return None;
    }
    let raw = cx.raw::<RawReservedIp>(body, path)?;
    let item = KeyPath(path.0[..path.0.len() - 1].to_vec());
    let settings = settings(
        cx,
        &item,
        path,
        outer,
        &raw.timeout,
        &raw.monitor_interval,
        DEFAULT_RESERVED_IP_TIMEOUT,
    );
    let provider = fencing::provider(cx, &path.key("provider"), &raw.provider);
    let ip = match cx.required_text(&path.key("ip"), &raw.ip, "the reserved IP, e.g. 45.55.96.8") {
        None => None,
        Some(s) => match s.parse::<IpAddr>() {
            Ok(ip) => match limits::placeholder(ip) {
                Some(m) => {
                    cx.invalid(&path.key("ip"), m, "your reserved IP, e.g. 45.55.96.8");
                    None
                }
                None => Some(ip),
            },
            Err(_) => {
                cx.invalid(
                    &path.key("ip"),
                    format!("{s:?} is not an IP address"),
                    "the reserved IP, e.g. 45.55.96.8",
                );
                None
            }
        },
    };
    let token_file = cx.file_name(
        &path.key("token_file"),
        &raw.token_file,
        "a file holding the API token: an absolute path, or a name in $CREDENTIALS_DIRECTORY",
    );
    let mut url = |key: &str, v: &Option<Text>| -> Option<String> {
        let Text(s) = v.as_ref()?;
        let s = s.trim().trim_end_matches('/');
        match check_url(s) {
            Ok(()) => Some(s.to_owned()),
            Err(m) => {
                cx.invalid(&path.key(key), m, "e.g. \"https://api.digitalocean.com\"");
                None
            }
        }
    };
    let api_url = url("api_url", &raw.api_url);
    let metadata_url = url("metadata_url", &raw.metadata_url);
    let droplet_ids = raw.droplet_ids.clone().unwrap_or_default();
    if raw.droplet_id.is_some() && !droplet_ids.is_empty() {
        cx.inconsistent(
            &path.key("droplet_ids"),
            "both droplet_id and droplet_ids are given",
            "droplet_ids (one id per node, for a config shared by every node) or droplet_id, not both",
        );
    }
    let known: HashSet<&str> = nodes
        .iter()
        .map(|n| n.name.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    let check_names = !cx.nodes_unknown;
    for name in droplet_ids.keys().filter(|_| check_names) {
        if !known.contains(name.as_str()) {
            let names: Vec<&str> = nodes
                .iter()
                .map(|n| n.name.as_str())
                .filter(|n| !n.is_empty())
                .collect();
            cx.push(
                ErrorKind::Inconsistent,
                &path.key("droplet_ids").key(name),
                true,
                format!("names no configured node: {name:?}"),
                Some(format!("node names: {}", names.join(", "))),
            );
        }
    }
    Some(ReservedIpAgent {
        provider: provider?,
        ip: ip?,
        token_file: PathBuf::from(token_file?),
        api_url,
        metadata_url,
        droplet_id: raw.droplet_id,
        droplet_ids,
        unassign_on_stop: raw.unassign_on_stop.unwrap_or(false),
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(
            suggest("adresses", &["name", "addresses", "role"]),
            Some("addresses")
        );
        assert_eq!(suggest("zzz", &["name", "addresses", "role"]), None);
    }

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1/").is_ok());
        assert!(check_url("https://api.digitalocean.com").is_ok());
        assert!(check_url("http://[::1]:8080/x").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http:///x").is_err());
        assert!(check_url("http://host:0/").is_err());
        assert!(check_url("http://host:http/").is_err());
    }

    #[test]
    fn host_port() {
        assert!(check_host_port("10.17.0.1:53").is_ok());
        assert!(check_host_port("gateway.internal:53").is_ok());
        assert!(check_host_port("[::1]:53").is_ok());
        assert!(check_host_port("10.17.0.1").is_err());
        assert!(check_host_port("10.17.0.1:0").is_err());
        assert!(check_host_port("::1:53").is_err());
    }
}
