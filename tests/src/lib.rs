//! Tandem's test kit.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod debian;
pub mod emulator;
pub mod netns;
pub mod procstat;
pub mod require;
pub mod soak;
