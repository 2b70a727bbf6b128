//! Placement: where each resource group should run.
//!
//! A pure function, identical on every node: the same inputs give the same answer
//! everywhere, so nodes that share a view agree on the holder without talking about it.
//! (DESIGN.md, "Resource agent".) Nodes are given in configuration order; that order is
//! the final tie-break.
//!
//! Rules, per group:
//! 1. A *candidate* is a member (not a witness) that is up, online (not standby), healthy,
//!    and the local node is quorate. Without quorum there is no candidate at all.
//! 2. The preferred node wins when it is a candidate and failback is `auto`, or when the
//!    group has no holder that may keep it.
//! 3. Otherwise the current holder stays when it may keep the group: it is a candidate, or
//!    it is merely unhealthy while *no* healthy candidate exists (moving a group from one
//!    unhealthy node to nowhere helps nobody, so a node never gives a group up when no
//!    healthier candidate exists).
//! 4. Otherwise the first candidate in configuration order.
//! 5. Otherwise nobody.
use tandem_config::{Failback, Role};

/// One node as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView<'a> {
    pub name: &'a str,
    pub role: Role,
    /// Alive as far as membership (and the node's agent) are concerned.
    pub up: bool,
    /// Standby: not online, hands over what it holds.
    pub standby: bool,
    /// All of the node's health checks pass.
    pub healthy: bool,
}

/// One resource group as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupView<'a> {
    /// Preferred node name, if configured.
    pub prefer: Option<&'a str>,
    pub failback: Failback,
    /// The node that announces holding the group, if any.
    pub holder: Option<&'a str>,
}

/// Why a node is not a candidate; `None` when it is.
pub fn not_candidate_reason(node: &NodeView<'_>, quorate: bool) -> Option<&'static str> {
    if node.role == Role::Witness {
        Some("witness nodes hold no resources")
    } else if !node.up {
        Some("not up")
    } else if !quorate {
        Some("no quorum")
    } else if node.standby {
        Some("standby")
    } else if !node.healthy {
        Some("health checks failing")
    } else {
        None
    }
}

fn is_candidate(node: &NodeView<'_>, quorate: bool) -> bool {
    not_candidate_reason(node, quorate).is_none()
}

/// May hold a group if nothing better exists: everything a candidate is except healthy.
fn is_eligible(node: &NodeView<'_>, quorate: bool) -> bool {
    node.role == Role::Member && node.up && quorate && !node.standby
}

/// The index (in `nodes`) of the node that should hold `group`, or `None` for nobody.
pub fn desired_holder(
    nodes: &[NodeView<'_>],
    quorate: bool,
    group: &GroupView<'_>,
) -> Option<usize> {
    let find = |name: &str| nodes.iter().position(|n| n.name == name);
    let first_candidate = nodes.iter().position(|n| is_candidate(n, quorate));
    let holder = group.holder.and_then(find);
    let keeper = holder.filter(|&h| {
        is_candidate(&nodes[h], quorate)
            || (first_candidate.is_none() && is_eligible(&nodes[h], quorate))
    });
    let preferred = group
        .prefer
        .and_then(find)
        .filter(|&p| is_candidate(&nodes[p], quorate));
    match preferred {
        Some(p) if group.failback == Failback::Auto || keeper.is_none() => Some(p),
        _ => keeper.or(first_candidate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 8] = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"];

    /// An independent statement of the rules, written as a ranking instead of a decision
    /// chain, to check `desired_holder` against.
    fn reference(nodes: &[NodeView<'_>], quorate: bool, group: &GroupView<'_>) -> Option<usize> {
        if !quorate {
            return None;
        }
        let online_member = |n: &NodeView<'_>| n.role == Role::Member && n.up && !n.standby;
        let healthy: Vec<usize> = (0..nodes.len())
            .filter(|&i| online_member(&nodes[i]) && nodes[i].healthy)
            .collect();
        let holder = group
            .holder
            .and_then(|h| (0..nodes.len()).find(|&i| nodes[i].name == h));
        let prefer = group
            .prefer
            .and_then(|p| (0..nodes.len()).find(|&i| nodes[i].name == p));
        if healthy.is_empty() {
            // Nobody healthy: only an online holder keeps what it has.
            return holder.filter(|&h| online_member(&nodes[h]));
        }
        let holder_ok = holder.filter(|h| healthy.contains(h));
        let prefer_ok = prefer.filter(|p| healthy.contains(p));
        let ranked: Vec<Option<usize>> = match group.failback {
            Failback::Auto => vec![prefer_ok, holder_ok, healthy.first().copied()],
            Failback::Manual => vec![holder_ok, prefer_ok, healthy.first().copied()],
        };
        ranked.into_iter().flatten().next()
    }

    fn node(i: usize, bits: u32) -> NodeView<'static> {
        NodeView {
            name: NAMES[i],
            role: if bits & 1 != 0 {
                Role::Witness
            } else {
                Role::Member
            },
            up: bits & 2 != 0,
            standby: bits & 4 != 0,
            healthy: bits & 8 != 0,
        }
    }

    /// Every combination of node flags, quorum, preference, failback and holder.
    fn exhaustive(n: usize) -> usize {
        let mut checked = 0;
        let names: Vec<Option<&str>> = std::iter::once(None)
            .chain(NAMES[..n].iter().copied().map(Some))
            .collect();
        for flags in 0..(16u32.pow(n as u32)) {
            let nodes: Vec<NodeView<'_>> =
                (0..n).map(|i| node(i, (flags >> (4 * i)) & 15)).collect();
            for quorate in [false, true] {
                for &prefer in &names {
                    for failback in [Failback::Auto, Failback::Manual] {
                        for &holder in &names {
                            let g = GroupView {
                                prefer,
                                failback,
                                holder,
                            };
                            let got = desired_holder(&nodes, quorate, &g);
                            assert_eq!(
                                got,
                                reference(&nodes, quorate, &g),
                                "{nodes:?} quorate={quorate} {g:?}"
                            );
                            if let Some(h) = got {
                                assert_eq!(nodes[h].role, Role::Member, "a witness was chosen");
                                assert!(nodes[h].up && quorate && !nodes[h].standby);
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        checked
    }

    #[test]
    fn two_node_clusters_match_the_reference_in_every_combination() {
        assert_eq!(exhaustive(2), 16 * 16 * 2 * 3 * 2 * 3);
    }

    #[test]
    fn three_node_clusters_match_the_reference_in_every_combination() {
        assert_eq!(exhaustive(3), 16 * 16 * 16 * 2 * 4 * 2 * 4);
    }

    fn up(name: &'static str) -> NodeView<'static> {
        NodeView {
            name,
            role: Role::Member,
            up: true,
            standby: false,
            healthy: true,
        }
    }

    #[test]
    fn preferred_node_takes_the_group_back_with_auto_failback_only() {
        let nodes = [up("primary"), up("secondary")];
        let auto = GroupView {
            prefer: Some("primary"),
            failback: Failback::Auto,
            holder: Some("secondary"),
        };
        assert_eq!(desired_holder(&nodes, true, &auto), Some(0));
        let manual = GroupView {
            failback: Failback::Manual,
            ..auto
        };
        assert_eq!(desired_holder(&nodes, true, &manual), Some(1));
    }

    #[test]
    fn unhealthy_holder_keeps_the_group_when_nobody_is_healthier() {
        let mut nodes = [up("primary"), up("secondary")];
        nodes[0].healthy = false;
        nodes[1].healthy = false;
        let g = GroupView {
            prefer: Some("secondary"),
            failback: Failback::Auto,
            holder: Some("primary"),
        };
        assert_eq!(desired_holder(&nodes, true, &g), Some(0));
        nodes[1].healthy = true;
        assert_eq!(desired_holder(&nodes, true, &g), Some(1));
        // Nobody holds and nobody is healthy: nothing starts.
        nodes[1].healthy = false;
        let g = GroupView { holder: None, ..g };
        assert_eq!(desired_holder(&nodes, true, &g), None);
    }

    #[test]
    fn no_quorum_means_nobody_holds() {
        let nodes = [up("a"), up("b"), up("c")];
        let g = GroupView {
            prefer: None,
            failback: Failback::Auto,
            holder: Some("a"),
        };
        assert_eq!(desired_holder(&nodes, false, &g), None);
        assert_eq!(not_candidate_reason(&nodes[0], false), Some("no quorum"));
    }

    fn arb_cluster() -> impl Strategy<Value = (Vec<u32>, bool, Option<usize>, bool, Option<usize>)>
    {
        (1usize..=8).prop_flat_map(|n| {
            (
                proptest::collection::vec(0u32..16, n),
                any::<bool>(),
                proptest::option::of(0..n),
                any::<bool>(),
                proptest::option::of(0..n),
            )
        })
    }

    proptest! {
        #[test]
        fn larger_clusters_match_the_reference_and_are_stable(
            (flags, quorate, prefer, manual, holder) in arb_cluster()
        ) {
            let nodes: Vec<NodeView<'_>> = flags.iter().enumerate().map(|(i, &b)| node(i, b)).collect();
            let g = GroupView {
                prefer: prefer.map(|p| NAMES[p]),
                failback: if manual { Failback::Manual } else { Failback::Auto },
                holder: holder.map(|h| NAMES[h]),
            };
            let got = desired_holder(&nodes, quorate, &g);
            prop_assert_eq!(got, reference(&nodes, quorate, &g));
            // Once the desired node holds the group, placement leaves it there: no flapping.
            let settled = GroupView { holder: got.map(|h| NAMES[h]), ..g };
            prop_assert_eq!(desired_holder(&nodes, quorate, &settled), got);
        }
    }
}
