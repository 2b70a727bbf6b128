//! Tandem resource agent: its sans-IO core (handover, placement, restart policy), the daemon
//! around it, and the agents it runs.
#![forbid(unsafe_code)]

pub mod agents;
pub mod alarm;
pub mod core;
pub mod daemon;
pub mod health;
pub mod metrics;
pub mod provider;
