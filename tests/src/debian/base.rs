//! The Debian base root every machine boots from: made once with `debootstrap` from the
//! mirror the host's apt already uses, then kept as a read-only lower layer (each machine
//! writes only to its own overlay upper directory, so the base is never changed and can be
//! cached between runs).
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

use super::DebianError;

/// Where apt gets Debian's packages on this host, and the host's release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// e.g. `http://deb.debian.org/debian`
    pub url: String,
    /// e.g. `bookworm`
    pub suite: String,
}

/// The codename of a Debian host from `/etc/os-release` (`ID=debian`, `VERSION_CODENAME=`).
pub fn debian_codename(os_release: &str) -> Option<String> {
    let field = |key: &str| {
        os_release.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_owned())
        })
    };
    (field("ID").as_deref() == Some("debian"))
        .then(|| field("VERSION_CODENAME"))
        .flatten()
        .filter(|c| !c.is_empty())
}

/// The first `deb` source for `suite` with component `main`, in one-line format
/// (`deb [options] URI SUITE COMPONENT...`).
pub fn one_line_source(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default().trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        // `[arch=amd64 signed-by=...]` options come before the URI.
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        (words.next() == Some(suite) && words.any(|w| w == "main")).then(|| uri.to_owned())
    })
}

/// The first `Types: deb` stanza of a deb822 `.sources` file that has `suite` and `main`.
pub fn deb822_source(text: &str, suite: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |key: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(key)
                    .then(|| v.trim().to_owned())
            })
        };
        let has = |key: &str, word: &str| {
            field(key).is_some_and(|v| v.split_whitespace().any(|w| w == word))
        };
        if !has("Types", "deb") || !has("Suites", suite) || !has("Components", "main") {
            return None;
        }
        if field("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            return None;
        }
        field("URIs")?.split_whitespace().next().map(str::to_owned)
    })
}

/// The Debian mirror the host's apt is configured with, for the host's own release.
pub fn host_mirror() -> Result<Mirror, String> {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let suite = debian_codename(&os)
        .ok_or("the host is not Debian (no ID=debian and VERSION_CODENAME in /etc/os-release)")?;
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let found = match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => deb822_source(&text, &suite),
            Some("list") => one_line_source(&text, &suite),
            _ => None,
        };
        if let Some(url) = found {
            return Ok(Mirror {
                url: url.trim_end_matches('/').to_owned(),
                suite,
            });
        }
    }
    Err(format!(
        "no `deb` source for {suite} main in /etc/apt/sources.list*"
    ))
}

/// Whether the mirror's host answers on its port (a TCP connect, 5 s at most).
pub fn reachable(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url}: not a URL"))?;
    let default_port = if scheme == "https" { 443 } else { 80 };
    let authority = rest.split('/').next().unwrap_or_default();
    let target = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    let mut last = format!("{authority} has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    Err(last)
}

/// A base root ready to boot.
#[derive(Debug, Clone)]
pub struct BaseRoot {
    pub path: PathBuf,
    /// How long `debootstrap` took, when this call made it (None: taken from the cache).
    pub built_in: Option<Duration>,
}

/// The cached base root for `packages` under `cache_dir`, made with `debootstrap
/// --variant=minbase` when it is not there yet. The root is made under a temporary name and
/// renamed when complete, so an interrupted run leaves no half-made root behind as a cache.
pub fn ensure_base(
    cache_dir: &Path,
    mirror: &Mirror,
    packages: &[&str],
) -> Result<BaseRoot, DebianError> {
    let name = format!("debian-{}-{}", mirror.suite, packages.join("+"));
    let path = cache_dir.join(&name);
    if path.join("lib/systemd/systemd").exists() {
        return Ok(BaseRoot {
            path,
            built_in: None,
        });
    }
    std::fs::create_dir_all(cache_dir).map_err(|e| DebianError::io(cache_dir, e))?;
    remove_unfinished(cache_dir);
    let tmp = cache_dir.join(format!("{name}.tmp-{}", std::process::id()));
    let started = Instant::now();
    let out = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", packages.join(",")))
        .arg(&mirror.suite)
        .arg(&tmp)
        .arg(&mirror.url)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DebianError::io("debootstrap", e))?;
    if !out.status.success() {
        let log =
            std::fs::read_to_string(tmp.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&tmp);
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        return Err(DebianError::Command {
            cmd: format!(
                "debootstrap --variant=minbase {} {}",
                mirror.suite, mirror.url
            ),
            stderr: format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ),
        });
    }
    let built_in = started.elapsed();
    prepare_base(&tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| DebianError::io(&path, e))?;
    Ok(BaseRoot {
        path,
        built_in: Some(built_in),
    })
}

/// Makes a fresh debootstrap root a base that many machines share: no host name and an
/// empty machine id (each machine gets its own, as a cloud image is given its own at first
/// boot), and no downloaded packages kept.
fn prepare_base(root: &Path) -> Result<(), DebianError> {
    let archives = root.join("var/cache/apt/archives");
    if let Ok(dir) = std::fs::read_dir(&archives) {
        for e in dir.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_file(root.join("etc/hostname"));
    let id = root.join("etc/machine-id");
    std::fs::write(&id, "").map_err(|e| DebianError::io(&id, e))?;
    Ok(())
}

/// Removes `*.tmp-<pid>` roots whose debootstrap run is gone.
fn remove_unfinished(cache_dir: &Path) {
    let Ok(dir) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .rsplit_once(".tmp-")
            .and_then(|(_, p)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codename_is_read_only_from_debian() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n";
        assert_eq!(debian_codename(debian).as_deref(), Some("bookworm"));
        let ubuntu = "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n";
        assert_eq!(debian_codename(ubuntu), None);
        assert_eq!(
            debian_codename("ID=debian\n"),
            None,
            "testing/sid without a codename"
        );
    }

    #[test]
    fn one_line_sources_give_the_first_main_uri_of_the_suite() {
        let text = "# comment\n\
                    deb-src http://src.example/debian bookworm main\n\
                    deb http://deb.example/debian bookworm-updates main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://deb.example/debian bookworm contrib main\n\
                    deb http://other.example/debian bookworm main\n";
        assert_eq!(
            one_line_source(text, "bookworm").as_deref(),
            Some("http://deb.example/debian")
        );
        assert_eq!(one_line_source(text, "trixie"), None);
        assert_eq!(
            one_line_source("deb http://x/debian bookworm contrib\n", "bookworm"),
            None,
            "no main component"
        );
    }

    #[test]
    fn deb822_sources_give_the_stanza_with_the_suite_and_main() {
        let text = "Types: deb\n\
                    URIs: http://security.example/debian-security\n\
                    Suites: bookworm-security\n\
                    Components: main\n\
                    \n\
                    Types: deb deb-src\n\
                    # a comment line\n\
                    URIs: http://deb.example/debian http://mirror2.example/debian\n\
                    Suites: bookworm bookworm-updates\n\
                    Components: main contrib\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        assert_eq!(
            deb822_source(text, "bookworm").as_deref(),
            Some("http://deb.example/debian")
        );
        let disabled =
            "Types: deb\nURIs: http://x/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n";
        assert_eq!(deb822_source(disabled, "bookworm"), None);
    }
}
