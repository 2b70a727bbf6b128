//! The `resources:` list: each group's name, preferred node and failback; its agents are
//! checked in `agents`.
use std::collections::HashMap;

use serde_yaml::Value;

use super::Ctx;
use super::agents::agent;
use crate::locate::KeyPath;
use crate::raw::RawGroup;
use crate::types::{Failback, NodeConfig, ResourceGroup, Role};

pub(super) fn resources(
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
