//! Tandem's test kit: network namespaces, process statistics, the soak, and the end-to-end
//! suites, on top of the product crate `tandem-emulator` (the emulator and the cluster
//! launcher), re-exported here under the paths the suites use.
#![forbid(unsafe_code)]

pub use tandem_emulator as emulator;
pub use tandem_emulator::cluster;
pub mod burst;
pub mod debian;
pub mod ipctl;
mod launch;
pub mod metrics;
pub mod netns;
pub mod procstat;
pub mod require;
pub mod soak;

pub use launch::start_settled;
