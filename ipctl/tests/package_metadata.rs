//! The Debian package's inputs, checked without building it (deploy/test-deb.sh builds and
//! installs the real package): every asset in `[package.metadata.deb]` exists or is generated
//! by `ipctl man` / `ipctl completions`, every binary, user, group and directory the units
//! reference is shipped or created, nothing lands in /etc, and the maintainer scripts parse.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ipctl_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo() -> PathBuf {
    ipctl_dir().parent().unwrap().to_owned()
}

/// (source, destination) of every asset line `["src", "dest", "mode"],` of the deb metadata.
fn assets() -> Vec<(String, String)> {
    let manifest = std::fs::read_to_string(ipctl_dir().join("Cargo.toml")).unwrap();
    let section = manifest
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("ipctl/Cargo.toml has [package.metadata.deb]");
    let list = section
        .split("assets = [")
        .nth(1)
        .expect("the deb metadata lists assets");
    let list = &list[..list.find("\n]").expect("assets list is closed")];
    list.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("[\""))
        .map(|l| {
            let fields: Vec<&str> = l.split('"').collect();
            // ["src", "dest", "mode"], -> fields 1, 3, 5
            assert!(fields.len() >= 6, "malformed asset line: {l}");
            (fields[1].to_owned(), fields[3].to_owned())
        })
        .collect()
}

fn dest_of(src: &str) -> String {
    assets()
        .into_iter()
        .find(|(s, _)| s == src)
        .unwrap_or_else(|| panic!("no asset for {src}"))
        .1
}

fn unit_values(key: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for unit in std::fs::read_dir(repo().join("deploy/systemd")).unwrap() {
        let path = unit.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if let Some(v) = line.strip_prefix(&format!("{key}=")) {
                out.push((name.clone(), v.to_owned()));
            }
        }
    }
    out
}

#[test]
fn every_repository_asset_exists_and_nothing_goes_to_etc() {
    let assets = assets();
    assert!(assets.len() >= 10, "{assets:?}");
    for (src, dest) in &assets {
        assert!(
            !dest.starts_with("etc/") && !dest.starts_with("/etc/"),
            "{src} would be installed under /etc ({dest}): ship examples under usr/share/doc"
        );
        if let Some(rel) = src.strip_prefix("../") {
            assert!(repo().join(rel).is_file(), "asset {src} does not exist");
        } else {
            assert!(
                src.starts_with("target/release/"),
                "{src}: only repository files (../) and build outputs (target/release/) are assets"
            );
        }
    }
    assert_eq!(
        dest_of("../deploy/cluster.yaml"),
        "usr/share/doc/tandem/examples/cluster.yaml"
    );
}

#[test]
fn every_unit_binary_is_shipped_in_usr_bin() {
    let shipped: BTreeSet<String> = assets()
        .into_iter()
        .filter(|(_, d)| d == "usr/bin/")
        .filter_map(|(s, _)| s.strip_prefix("target/release/").map(str::to_owned))
        .collect();
    let execs: Vec<_> = ["ExecStart", "ExecStartPre"]
        .iter()
        .flat_map(|k| unit_values(k))
        .collect();
    assert!(execs.len() >= 4, "{execs:?}");
    for (unit, cmd) in execs {
        let bin = cmd.split_whitespace().next().unwrap();
        let name = bin
            .strip_prefix("/usr/bin/")
            .unwrap_or_else(|| panic!("{unit}: {bin} is not in /usr/bin"));
        assert!(
            shipped.contains(name),
            "{unit}: {bin} is not in the package"
        );
    }
    for unit in std::fs::read_dir(repo().join("deploy/systemd")).unwrap() {
        let name = unit.unwrap().file_name().to_string_lossy().into_owned();
        assert_eq!(
            dest_of(&format!("../deploy/systemd/{name}")),
            "lib/systemd/system/"
        );
    }
}

#[test]
fn units_users_groups_and_directories_are_created_by_the_package() {
    let sysusers = std::fs::read_to_string(repo().join("deploy/sysusers.d/tandem.conf")).unwrap();
    let declared = |kind: &str, name: &str| {
        sysusers.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 2 && f[0] == kind && f[1] == name
        })
    };
    for (unit, user) in unit_values("User") {
        assert!(
            declared("u", &user),
            "{unit}: user {user} not in sysusers.d"
        );
    }
    for key in ["Group", "SupplementaryGroups"] {
        for (unit, groups) in unit_values(key) {
            for g in groups.split_whitespace() {
                // `u NAME -` also creates the group NAME.
                assert!(
                    declared("g", g) || declared("u", g),
                    "{unit}: group {g} not in sysusers.d"
                );
            }
        }
    }
    let tmpfiles = std::fs::read_to_string(repo().join("deploy/tmpfiles.d/tandem.conf")).unwrap();
    for (unit, dirs) in unit_values("ReadWritePaths") {
        for d in dirs.split_whitespace() {
            assert!(
                tmpfiles
                    .lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(d)),
                "{unit}: ReadWritePaths {d} is not created by tmpfiles.d"
            );
        }
    }
    assert_eq!(
        dest_of("../deploy/sysusers.d/tandem.conf"),
        "usr/lib/sysusers.d/tandem.conf"
    );
    assert_eq!(
        dest_of("../deploy/tmpfiles.d/tandem.conf"),
        "usr/lib/tmpfiles.d/tandem.conf"
    );
}

#[test]
fn maintainer_scripts_parse_and_are_executable() {
    use std::os::unix::fs::PermissionsExt;
    for name in ["postinst", "prerm", "postrm"] {
        let path = repo().join("deploy/debian").join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is not executable");
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        // Installing into another root must never touch the running system.
        assert!(text.contains("DPKG_ROOT"), "{name} ignores DPKG_ROOT");
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ipctl"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn man_writes_one_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["man", "--out", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pages: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for cmd in [
        "",
        "-status",
        "-watch",
        "-standby",
        "-online",
        "-takeover",
        "-release",
        "-assign",
        "-check-config",
        "-keygen",
        "-import-heartbeat",
        "-man",
        "-completions",
    ] {
        assert!(
            pages.contains(&format!("ipctl{cmd}.1")),
            "ipctl{cmd}.1 missing: {pages:?}"
        );
    }
    assert!(!pages.contains("ipctl-help.1"));
    let status = std::fs::read_to_string(dir.path().join("ipctl-status.1")).unwrap();
    assert!(
        status.starts_with(".ie") || status.contains(".TH"),
        "{status}"
    );
    assert!(
        status.contains("ipctl status"),
        "usage names the full command: {status}"
    );
    assert!(
        status.contains("run\\-dir"),
        "global options are documented: {status}"
    );
    assert_man_page(Path::new(&dir.path().join("ipctl.1")));
}

fn assert_man_page(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(".TH ipctl 1"), "{text}");
    for sub in ["status", "takeover", "standby"] {
        assert!(text.contains(sub), "ipctl.1 lists {sub}");
    }
}

#[test]
fn completions_are_generated_for_the_packaged_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        // the script calls the installed ipctl back for every completion (names included)
        assert!(
            script.contains(&format!("COMPLETE=\"{shell}\""))
                || script.contains(&format!("COMPLETE={shell} ")),
            "{shell} completion does not call ipctl back:\n{script}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ipctl.bash");
    std::fs::write(&file, run(&["completions", "bash"]).stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = run(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
