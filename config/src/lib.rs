//! The cluster configuration shared by every Tandem binary.
//!
//! One YAML file, identical on every node (see "Configuration" in DESIGN.md). It is read in
//! two steps: a raw serde shape that rejects unknown keys, then a validated, typed
//! [`ClusterConfig`] built while collecting *every* error, each naming file, line, column and
//! key path and saying what would be valid.
#![forbid(unsafe_code)]

pub mod secret;
mod types;

pub use secret::{Secret, SecretError, credential_path, read_secret_file};
pub use types::*;
