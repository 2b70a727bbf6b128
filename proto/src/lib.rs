//! Tandem's gRPC contract and the one shared way to serve and reach it over Unix sockets.
//!
//! The `.proto` files under `proto/` are the only contract between the processes; this crate
//! compiles them at build time with protox (no system `protoc`) and exposes:
//! - [`membership::v1`] and [`agent::v1`]: generated messages, clients and servers;
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, served by gRPC reflection;
//! - [`uds`]: bind a socket safely (stale-socket removal, mode, group), serve routes with
//!   health and reflection, and connect a client;
//! - [`time`]: std time types to and from the protobuf well-known types;
//! - [`watch`]: the shape of both daemons' `Watch` streams (a snapshot, then the events).
//!
//! Daemon plumbing (logging, metrics, timers, systemd) lives in `tandem-daemon-kit`.
#![forbid(unsafe_code)]

pub mod membership {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("tandem.membership.v1");
    }
}

pub mod agent {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("tandem.agent.v1");
    }
}

pub mod time;
pub mod uds;
pub mod watch;

/// Encoded `FileDescriptorSet` of every Tandem proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tandem_descriptor");

/// Fully qualified service names, as health checks and reflection name them.
pub const MEMBERSHIP_SERVICE: &str = "tandem.membership.v1.Membership";
pub const AGENT_SERVICE: &str = "tandem.agent.v1.Agent";
