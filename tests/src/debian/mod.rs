//! Debian systems booted with a real systemd as PID 1, for testing the package where users
//! run it.
//!
//! A [`base::BaseRoot`] is made once with `debootstrap` (minbase and a few packages) and
//! cached; each [`Machine`] boots it through an overlay of its own, in a network namespace
//! of a [`crate::netns::Net`], its own PID, mount, UTS, IPC and cgroup namespaces, and a
//! cgroup of its own. `systemd-nspawn` is not needed: the machine is set up the way nspawn
//! sets up a container (see `machine.rs` for each piece and why it matters).
pub mod base;
pub mod droplets;
pub mod machine;

pub use machine::Machine;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    /// Machines cannot be booted here; tests skip with this text.
    #[error("Debian machines unavailable: {0}")]
    Unavailable(String),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Machine(String),
}

impl DebianError {
    pub fn io(what: impl AsRef<Path>, source: std::io::Error) -> DebianError {
        DebianError::Io {
            what: what.as_ref().display().to_string(),
            source,
        }
    }
}

/// Whether machines can be booted here: root, namespaces, debootstrap, unshare, nsenter,
/// and a cgroup2 hierarchy; `Err` says what is missing.
pub fn machines() -> Result<(), String> {
    crate::require::netns()?;
    crate::require::tools(&["debootstrap", "unshare", "nsenter", "setpriv"])?;
    if machine::cgroup2_root().is_none() {
        return Err("no cgroup2 hierarchy is mounted (systemd in a machine needs one)".into());
    }
    Ok(())
}

/// The cargo target directory of the running test executable (`<target>/<profile>/deps/x`).
pub fn target_dir() -> Result<PathBuf, DebianError> {
    let exe = std::env::current_exe().map_err(|e| DebianError::io("current_exe", e))?;
    exe.ancestors().nth(3).map(Path::to_owned).ok_or_else(|| {
        DebianError::Machine(format!("{}: not in <target>/<profile>/deps", exe.display()))
    })
}

/// Whether the package can be had: `$TANDEM_DEB` names one already built, or cargo-deb and
/// dpkg-dev are there to build it; `Err` says what is missing.
pub fn package() -> Result<(), String> {
    if std::env::var_os("TANDEM_DEB").is_some() {
        return Ok(());
    }
    crate::require::tools(&["cargo-deb", "dpkg-shlibdeps"])
}

/// The Debian package: `$TANDEM_DEB` when set (CI builds it once for this test and the
/// package check), else built with `deploy/build-deb.sh` into this test's target directory.
pub fn package_for_tests() -> Result<PathBuf, DebianError> {
    if let Some(p) = std::env::var_os("TANDEM_DEB") {
        return Ok(PathBuf::from(p));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| DebianError::Machine("no repository root".into()))?;
    let out = Command::new(repo.join("deploy/build-deb.sh"))
        .env("CARGO_TARGET_DIR", target_dir()?)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DebianError::io("deploy/build-deb.sh", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().unwrap_or_default().trim();
    if !out.status.success() || !path.ends_with(".deb") {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(DebianError::Command {
            cmd: "deploy/build-deb.sh".into(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(PathBuf::from(path))
}
