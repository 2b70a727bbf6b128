//! One agent of a resource group: reserved-ip, lsb, ocf or exec, and the action settings
//! every kind shares.
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use super::{Ctx, check_url, fencing, short, suggest};
use crate::error::ErrorKind;
use crate::limits;
use crate::locate::KeyPath;
use crate::raw::*;
use crate::types::*;

/// Agent kinds, in the order the documentation lists them.
pub const AGENT_KINDS: &[&str] = &["reserved-ip", "lsb", "ocf", "exec"];
/// Defaults of every agent action (types.rs documents them on `ActionSettings`).
const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(20);
/// Provider APIs poll an action until it completes; DigitalOcean's take seconds.
const DEFAULT_RESERVED_IP_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_OCF_ROOT: &str = "/usr/lib/ocf";

pub(super) fn agent(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    v: &Value,
    nodes: &[NodeConfig],
) -> Option<AgentConfig> {
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
