//! The `fencing:` section and each node's `provider_id`.
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use super::{Ctx, check_url, suggest};
use crate::limits::Bounds;
use crate::locate::KeyPath;
use crate::raw::{RawFencing, Text};
use crate::types::{Fencing, NodeConfig, Provider, Role};

/// The non-preferred side's wait before fencing: longer than a power-off call takes at the
/// providers (DigitalOcean's `power_off` completes in 2-4 s), so the preferred side's fence
/// lands first.
const DEFAULT_DELAY: Duration = Duration::from_secs(5);
/// Limit of one power-off call, polling included (as a reserved-IP move).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// `fencing.delay`.
const DELAY_BOUNDS: Bounds = Bounds {
    min: Duration::from_millis(100),
    too_short: "the preferred side's power-off must land within it, and one takes at least \
                a provider round trip and an action",
    max: Duration::from_secs(10 * 60),
    too_long: "the non-preferred node takes nothing over from a dead peer until it passes",
};
/// `fencing.timeout`.
const TIMEOUT_BOUNDS: Bounds = Bounds {
    min: Duration::from_secs(1),
    too_short: "a power-off is an API call and an action polled until it completes",
    max: Duration::from_secs(3600),
    too_long: "a failed call is retried only after it ends, while the group waits",
};
const TOKEN_EXPECTED: &str =
    "a file holding the API token: an absolute path, or a name in $CREDENTIALS_DIRECTORY";

/// `nodes[].provider_id`: a droplet/server id or an instance UUID, checked against the
/// provider once `fencing` is read.
pub(super) fn provider_id(cx: &mut Ctx<'_>, path: &KeyPath, v: &Option<Text>) -> Option<String> {
    let Text(s) = v.as_ref()?;
    let s = s.trim();
    if s.is_empty() {
        cx.invalid(
            path,
            "is empty",
            "the provider's id of this node's server, e.g. 3164444",
        );
        return None;
    }
    Some(s.to_owned())
}

/// A `provider:` value (reserved-ip agents and fencing); `None` after reporting why.
pub(super) fn provider(cx: &mut Ctx<'_>, path: &KeyPath, v: &Option<Text>) -> Option<Provider> {
    let names: Vec<&str> = Provider::ALL.iter().map(|p| p.name()).collect();
    let text = cx.required_text(path, v, &names.join(", "))?;
    let provider = Provider::from_name(&text);
    if provider.is_none() {
        let expected = match suggest(&text, &names) {
            Some(s) => format!("did you mean `{s}`? one of: {}", names.join(", ")),
            None => format!("one of: {}", names.join(", ")),
        };
        cx.invalid(path, format!("unknown provider {text:?}"), expected);
    }
    provider
}

pub(super) fn fencing(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    v: Option<&Value>,
    nodes: &[NodeConfig],
) -> Option<Fencing> {
    let v = v?;
    if !v.is_mapping() {
        cx.invalid(
            path,
            "is not a mapping",
            "`fencing: { provider: digitalocean, token_file: do-token, delay: 5s }`",
        );
        return None;
    }
    let raw: RawFencing = cx.raw(v, path)?;
    let provider = provider(cx, &path.key("provider"), &raw.provider);
    let token_file = cx.required_text(&path.key("token_file"), &raw.token_file, TOKEN_EXPECTED);
    let api_url = raw.api_url.as_ref().and_then(|Text(s)| {
        let s = s.trim().trim_end_matches('/');
        match check_url(s) {
            Ok(()) => Some(s.to_owned()),
            Err(m) => {
                cx.invalid(
                    &path.key("api_url"),
                    m,
                    "e.g. \"https://api.digitalocean.com\"",
                );
                None
            }
        }
    });
    let delay = cx.duration(&path.key("delay"), &raw.delay, DEFAULT_DELAY, &DELAY_BOUNDS);
    let timeout = cx.duration(
        &path.key("timeout"),
        &raw.timeout,
        DEFAULT_TIMEOUT,
        &TIMEOUT_BOUNDS,
    );
    let members = nodes.iter().filter(|n| n.role == Role::Member).count();
    if !cx.nodes_unknown && members < 2 {
        cx.inconsistent(
            path,
            format!("fencing needs two or more member nodes; {members} configured"),
            "a second member node, or no `fencing:` section",
        );
    }
    if let Some(p) = provider.filter(|p| p.numeric_server_ids()) {
        for (i, n) in nodes.iter().enumerate() {
            if let Some(id) = n
                .provider_id
                .as_deref()
                .filter(|id| id.parse::<u64>().is_err())
            {
                let noun = p.server_noun();
                cx.invalid(
                    &KeyPath::root().key("nodes").index(i).key("provider_id"),
                    format!("{id:?} is not a {p} {noun} id"),
                    format!("the {noun}'s number, e.g. 3164444"),
                );
            }
        }
    }
    Some(Fencing {
        provider: provider?,
        token_file: PathBuf::from(token_file?),
        api_url,
        delay,
        timeout,
    })
}
