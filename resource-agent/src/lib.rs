//! Tandem resource agent: placement (pure), handover, and the agents it runs.
#![forbid(unsafe_code)]

pub mod agents;
pub mod alarm;
pub mod daemon;
pub mod handover;
pub mod health;
pub mod metrics;
pub mod monitor;
pub mod placement;
pub mod provider;
