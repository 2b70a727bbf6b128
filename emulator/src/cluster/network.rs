//! Where a node's membership daemon runs: a network the caller makes for each launch (the test
//! kit's network namespaces, so tests can cut links), or plain loopback when there is none.
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

/// The nodes' networks, made by a [`NetworkFactory`] for each launch.
pub trait Network: Send + Sync + std::any::Any {
    /// Membership addresses of node `i` (in launch order: members, then the witness), one per
    /// link.
    fn addresses(&self, i: usize) -> Vec<IpAddr>;
    /// A command that runs `program` on node `i`'s network.
    fn command(&self, i: usize, program: &Path) -> Command;
    /// Cuts node `i` off the others (every membership datagram dropped both ways).
    fn partition(&self, i: usize) -> Result<(), String>;
    /// Removes every partition.
    fn heal(&self) -> Result<(), String>;
}

/// Makes the networks of one launch: `(nodes, links)` to a [`Network`].
pub type MakeNetwork = dyn Fn(usize, usize) -> Result<Box<dyn Network>, String> + Send + Sync;

/// A [`Network`] maker in a [`Spec`].
#[derive(Clone)]
pub struct NetworkFactory(pub std::sync::Arc<MakeNetwork>);

impl std::fmt::Debug for NetworkFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkFactory")
    }
}
