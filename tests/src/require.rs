//! What a test needs beyond Rust, checked up front in one place, so a machine without it
//! skips the test with the reason printed instead of failing halfway (e.g. `ip netns exec
//! tcpdump` starts fine, and only the missing capture file would tell).
//!
//! Each check returns `Err(reason)` with what to install; [`skip_unless!`](crate::skip_unless)
//! reports `skipped: <test>: <reason>` with [`skip`] and returns from the test.
use std::path::Path;
use std::process::{Command, Stdio};

/// The OCF Dummy agent of the resource-agents package.
pub const OCF_DUMMY: &str = "/usr/lib/ocf/resource.d/heartbeat/Dummy";

/// Where each optional program comes from, for the skip message.
const PACKAGES: &[(&str, &str)] = &[
    ("tcpdump", "apt-get install -y tcpdump"),
    ("nft", "apt-get install -y nftables"),
    ("ip", "apt-get install -y iproute2"),
    ("setpriv", "apt-get install -y util-linux"),
    ("script", "apt-get install -y bsdutils"),
    ("python3", "apt-get install -y python3"),
    ("dpkg-deb", "apt-get install -y dpkg"),
    ("cargo-deb", "cargo install cargo-deb"),
    ("dpkg-shlibdeps", "apt-get install -y dpkg-dev"),
    ("debootstrap", "apt-get install -y debootstrap"),
    ("unshare", "apt-get install -y util-linux"),
    ("nsenter", "apt-get install -y util-linux"),
    ("keepalived", "apt-get install -y keepalived"),
    ("heartbeat", "apt-get install -y heartbeat"),
];

/// The first of `programs` not found on `PATH` (as `execvp` would look, which is also how
/// `ip netns exec` finds them), with how to install it.
pub fn tools(programs: &[&str]) -> Result<(), String> {
    for p in programs {
        if find_program(p).is_none() {
            let how = PACKAGES
                .iter()
                .find(|(name, _)| name == p)
                .map_or("install it", |(_, how)| how);
            return Err(format!("`{p}` not found on PATH ({how})"));
        }
    }
    Ok(())
}

/// Root (network namespaces, nftables, acting as another user).
pub fn root() -> Result<(), String> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err("not root".into())
    }
}

/// Network namespaces with nftables: root, `ip` and `nft`.
pub fn netns() -> Result<(), String> {
    root()?;
    tools(&["ip", "nft"])
}

/// The OCF Dummy agent ([`OCF_DUMMY`]).
pub fn ocf_dummy() -> Result<(), String> {
    file(Path::new(OCF_DUMMY), "apt-get install -y resource-agents")
}

/// A file the test reads or runs.
pub fn file(path: &Path, how: &str) -> Result<(), String> {
    if path.exists() {
        Ok(())
    } else {
        Err(format!("{} is absent ({how})", path.display()))
    }
}

/// python3 that can import every one of `modules` (e.g. `grpc`, `grpc_tools`).
pub fn python(modules: &[&str]) -> Result<(), String> {
    tools(&["python3"])?;
    let imports = format!("import {}", modules.join(", "));
    let ok = Command::new("python3")
        .args(["-c", &imports])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        let packages: Vec<&str> = modules
            .iter()
            .map(|m| match *m {
                "grpc" => "grpcio",
                "grpc_tools" => "grpcio-tools",
                "grpc_reflection" => "grpcio-reflection",
                other => other,
            })
            .collect();
        Err(format!(
            "python3 cannot `{imports}` (python3 -m pip install {})",
            packages.join(" ")
        ))
    }
}

pub use tandem_emulator::testkit::{find_program, skip};

/// Returns from the test, saying why, unless every check passes.
///
/// ```ignore
/// skip_unless!(require::netns(), require::tools(&["tcpdump"]));
/// ```
#[macro_export]
macro_rules! skip_unless {
    ($($check:expr),+ $(,)?) => {
        $(
            if let Err(why) = $check {
                $crate::require::skip(&why);
                return;
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let e = tools(&["tcpdump-that-does-not-exist"]).unwrap_err();
        assert!(e.contains("tcpdump-that-does-not-exist"), "{e}");
        assert!(find_program("sh").is_some(), "sh is on every PATH");
        assert!(tools(&["sh"]).is_ok());
        assert!(python(&["a_module_that_does_not_exist"]).is_err());
    }
}
