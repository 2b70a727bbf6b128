//! Finding the daemon binaries a cluster runs (and, for tests, building them).
use std::path::{Path, PathBuf};
use std::process::Command;

use super::LaunchError;

/// Builds `what` (cargo's package and target arguments) with the same cargo into the target
/// directory of the running test executable (`<target>/<profile>/deps/<test>`; a no-op when
/// up to date; `$CARGO` is set by `cargo test`) and returns `<target>/<profile>`.
fn cargo_build_for_tests(what: &[&str]) -> Result<PathBuf, LaunchError> {
    let exe = std::env::current_exe().map_err(|e| LaunchError::Binaries(e.to_string()))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| LaunchError::Binaries("test binary outside <target>/<profile>/deps".into()))?
        .to_owned();
    let target = profile_dir
        .parent()
        .ok_or_else(|| LaunchError::Binaries("no target dir".into()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet"])
        .args(what)
        .arg("--target-dir")
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .map_err(|e| LaunchError::Binaries(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(LaunchError::Binaries(format!(
            "cargo build {} failed",
            what.join(" ")
        )));
    }
    Ok(profile_dir)
}

/// For tests: binary `bin` of package `package` (another package's binary has no
/// `CARGO_BIN_EXE_*`), built as [`Binaries::for_tests`] builds the daemons.
fn bin_for_tests(package: &str, bin: &str) -> Result<PathBuf, String> {
    let path = cargo_build_for_tests(&["-p", package, "--bin", bin])
        .map_err(|e| e.to_string())?
        .join(bin);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} missing after the build", path.display()))
    }
}

/// For tests: the `ipctl` binary.
pub fn ipctl_for_tests() -> Result<PathBuf, LaunchError> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| bin_for_tests("ipctl", "ipctl"));
    built.clone().map_err(LaunchError::Binaries)
}

/// For tests: the `tandem-emulator` binary (a process of its own, e.g. in a network namespace).
pub fn emulator_for_tests() -> Result<PathBuf, LaunchError> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| bin_for_tests("tandem-emulator", "tandem-emulator"));
    built.clone().map_err(LaunchError::Binaries)
}

/// The daemon binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub membership: PathBuf,
    pub agent: PathBuf,
}

impl Binaries {
    /// For tests: `<target>/<profile>/` of the running test executable, built first with the
    /// same cargo (a no-op when up to date; `$CARGO` is set by `cargo test`).
    pub fn for_tests() -> Result<Binaries, LaunchError> {
        // Once per test process: the tests of one file share the build.
        static BUILT: std::sync::OnceLock<Result<Binaries, String>> = std::sync::OnceLock::new();
        BUILT
            .get_or_init(|| Binaries::build_for_tests().map_err(|e| e.to_string()))
            .clone()
            .map_err(LaunchError::Binaries)
    }

    fn build_for_tests() -> Result<Binaries, LaunchError> {
        let what = [
            "-p",
            "tandem-membership",
            "-p",
            "tandem-resource-agent",
            "--bins",
        ];
        let profile_dir = cargo_build_for_tests(&what)?;
        Binaries::in_dir(&profile_dir, &format!("cargo build {}", what.join(" ")))
    }

    /// For the benchmark and soak tools: the binaries in `dir` when given (made absolute, as
    /// each node's daemons run in the node's own directory), else next to the running
    /// executable (an example's `examples/` directory counts as its profile directory).
    pub fn given_or_beside_this(
        dir: Option<&Path>,
        build_hint: &str,
    ) -> Result<Binaries, LaunchError> {
        let dir = match dir {
            Some(d) => std::fs::canonicalize(d)
                .map_err(|e| LaunchError::Binaries(format!("{}: {e}", d.display())))?,
            None => {
                let exe =
                    std::env::current_exe().map_err(|e| LaunchError::Binaries(e.to_string()))?;
                let parent = exe
                    .parent()
                    .ok_or_else(|| LaunchError::Binaries("no directory of this binary".into()))?;
                match parent.file_name() {
                    Some(n) if n == "examples" => parent.parent().unwrap_or(parent),
                    _ => parent,
                }
                .to_owned()
            }
        };
        Binaries::in_dir(&dir, build_hint)
    }

    /// The binaries in `dir`; `build_hint` is the command that builds them, named when one
    /// is missing.
    pub fn in_dir(dir: &Path, build_hint: &str) -> Result<Binaries, LaunchError> {
        let b = Binaries {
            membership: dir.join("tandem-membership"),
            agent: dir.join("tandem-resource-agent"),
        };
        for p in [&b.membership, &b.agent] {
            if !p.is_file() {
                return Err(LaunchError::Binaries(format!(
                    "{} is missing; build it with `{build_hint}`",
                    p.display()
                )));
            }
        }
        Ok(b)
    }
}
