//! Tandem membership: the sans-IO protocol core and the daemon shell around it.
//!
//! - [`core`]: the deterministic protocol state machine (wire format, detection, quorum,
//!   messaging); no sockets, no clock.
//! - [`daemon`]: the tokio shell: UDP sockets, the protocol loop, the gRPC service.
//! - [`metrics`]: the optional Prometheus endpoint.
//! - [`udp`]: batched UDP I/O (`recvmmsg`, `sendmmsg`) for the protocol loop.
#![forbid(unsafe_code)]

pub mod core;
pub mod daemon;
pub mod metrics;
pub mod udp;
