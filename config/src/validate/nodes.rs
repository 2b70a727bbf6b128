//! The `nodes:` list (names, addresses, roles) and the `quorum:` policy that depends on it.
use std::collections::HashMap;
use std::net::SocketAddr;

use serde_yaml::Value;

use super::{Ctx, fencing, suggest};
use crate::error::ErrorKind;
use crate::limits;
use crate::locate::KeyPath;
use crate::raw::{RawNode, Text};
use crate::types::{NodeConfig, QuorumPolicy, Role};

pub(crate) fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => Err(format!("{s:?} has port 0, which cannot be reached")),
        Ok(a) => limits::placeholder(a.ip()).map_or(Ok(a), Err),
        Err(_) => Err(format!("{s:?} is not ip:port")),
    }
}

const ADDR_EXAMPLE: &str = "e.g. \"10.17.0.28:694\"";

pub(super) fn nodes(cx: &mut Ctx<'_>, path: &KeyPath, v: Option<&[Value]>) -> Vec<NodeConfig> {
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

pub(super) fn quorum(
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
