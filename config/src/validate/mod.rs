//! From YAML text to a validated [`ClusterConfig`], collecting every error.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::error::{ConfigError, ConfigErrors, ErrorKind};
use crate::limits::Bounds;
use crate::locate::{KeyPath, locate};
use crate::raw::*;
use crate::types::*;

mod agents;
mod fencing;
mod health;
mod nodes;
mod resources;
mod timing;

pub use agents::AGENT_KINDS;
use health::{check_url, health_check};
use nodes::{nodes, parse_socket_addr, quorum};
use resources::resources;
use timing::timing;

const DURATION_EXAMPLE: &str = "a duration with a unit, e.g. 200ms or 2s";
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
    // Port 0: the kernel picks a free port and the daemon logs it ("metrics served at"), for
    // several nodes on one host sharing one cluster.yaml (tests, the demo).
    let any_port =
        t.0.trim()
            .parse::<SocketAddr>()
            .ok()
            .filter(|a| a.port() == 0);
    match any_port.map_or_else(|| parse_socket_addr(&t.0), Ok) {
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
}
