//! The cluster configuration shared by every Tandem binary.
//!
//! One YAML file, identical on every node (see "Configuration" in DESIGN.md). It is read in
//! two steps: a raw serde shape that rejects unknown keys, then a validated, typed
//! [`ClusterConfig`] built while collecting *every* error, each naming file, line, column and
//! key path and saying what would be valid.
//!
//! [`load`] and [`parse`] check the file's structure only; secret files are read by
//! [`keys::load_keys`] (the membership daemon) and the providers (the resource agent), each by
//! the one process allowed to read them.
#![forbid(unsafe_code)]

mod error;
pub mod keys;
mod limits;
mod locate;
mod raw;
pub mod secret;
mod summary;
mod types;
mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors, ErrorKind};
pub use secret::{
    REDACTED, Secret, SecretError, credential_path, looks_like_credential, read_secret_file, redact,
};
pub use types::*;
pub use validate::AGENT_KINDS;

/// Reads and validates a cluster configuration file. Does not read key or token files.
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        kind: if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::FileMissing
        } else {
            ErrorKind::Syntax
        },
        file: path.to_owned(),
        line: None,
        column: None,
        path: String::new(),
        message: format!("cannot read: {e}"),
        expected: None,
    })?;
    parse(&text, path)
}

/// Validates configuration text; `source` names it in error messages.
pub fn parse(text: &str, source: &Path) -> Result<ClusterConfig, ConfigErrors> {
    validate::parse(text, source)
}

/// This host's name as `uname -n` prints it: the default local node name.
pub fn default_node_name() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl ClusterConfig {
    /// The local node, by name (`--node`, else [`default_node_name`]). The error lists the
    /// configured names.
    pub fn local_node(&self, name: &str) -> Result<&NodeConfig, ConfigErrors> {
        self.node(name).ok_or_else(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            ConfigError {
                kind: ErrorKind::Inconsistent,
                file: self.source.clone(),
                line: None,
                column: None,
                path: "nodes".into(),
                message: format!("this node, {name:?}, is not in the node list"),
                expected: Some(format!(
                    "--node with one of the configured names ({}), or a host name equal to one",
                    names.join(", ")
                )),
            }
            .into()
        })
    }
}

/// A duration as the configuration writes it (`100ms`, `1s`, `1m 30s`).
pub fn format_duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}
