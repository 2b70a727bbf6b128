//! Quorum: whether the nodes this node sees alive may act for the cluster.
use tandem_config::QuorumPolicy;

/// The quorum as this node computes it from the nodes it sees alive (itself included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub policy: QuorumPolicy,
    pub quorate: bool,
    pub voters: u32,
    pub alive: u32,
    pub needed: u32,
}

impl Quorum {
    /// `alive` of `voters` nodes under `policy`. Every configured node votes (witnesses too).
    /// two_node is always quorate: each side of a two-node cluster must be able to act alone,
    /// which is why the configuration asks for it explicitly.
    pub fn compute(policy: QuorumPolicy, voters: u32, alive: u32) -> Quorum {
        let (quorate, needed) = match policy {
            QuorumPolicy::TwoNode => (true, 1),
            QuorumPolicy::Majority => {
                let needed = voters / 2 + 1;
                (alive >= needed, needed)
            }
        };
        Quorum {
            policy,
            quorate,
            voters,
            alive,
            needed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_needs_more_than_half_of_all_voters() {
        let q = |voters, alive| Quorum::compute(QuorumPolicy::Majority, voters, alive);
        assert!(q(3, 2).quorate);
        assert!(!q(3, 1).quorate);
        assert!(!q(4, 2).quorate, "half is not a majority");
        assert!(q(4, 3).quorate);
        assert_eq!(q(5, 1).needed, 3);
    }

    #[test]
    fn two_node_is_always_quorate() {
        let q = Quorum::compute(QuorumPolicy::TwoNode, 2, 1);
        assert!(q.quorate);
        assert_eq!((q.voters, q.alive, q.needed), (2, 1, 1));
    }
}
