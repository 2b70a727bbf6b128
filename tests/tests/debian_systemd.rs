//! The Debian package where users run it: Debian machines booted with a real systemd as
//! PID 1 (tandem_tests::debian), the package installed the way README's tutorial says.
//!
//! Skipped, saying why, where a machine cannot be booted: not root, no `debootstrap`,
//! `unshare` or `nsenter`, no cgroup2, no Debian mirror in the host's apt sources or no
//! network to it, no cargo-deb to build the package (or set `TANDEM_DEB=path.deb`).
//! The base root is made once with debootstrap and cached in `<target>/tandem-debian/`.
use std::path::PathBuf;
use std::sync::OnceLock;
use tokio::time::Instant;

use tandem_tests::debian::{self, Machine, base};
use tandem_tests::netns::Net;

/// What the machines are made of: minbase, systemd as init, and what the tutorial's
/// droplets run (nginx serves "Droplet: NAME"; a Debian server has D-Bus, through which
/// `poweroff` asks logind).
const PACKAGES: [&str; 4] = ["systemd", "systemd-sysv", "dbus", "nginx"];

struct Setup {
    base: PathBuf,
    deb: PathBuf,
    /// Where machines keep their files (under the cache, on the same file system).
    machines: PathBuf,
}

/// The base root and the package, made once per test process; `None` (the reason printed)
/// where machines cannot be booted here.
fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Result<Setup, String>> = OnceLock::new();
    let s = SETUP.get_or_init(|| {
        debian::machines()?;
        debian::package()?;
        let mirror = base::host_mirror()?;
        base::reachable(&mirror.url).map_err(|e| format!("no network to {}: {e}", mirror.url))?;
        let cache = debian::target_dir()
            .expect("target dir")
            .join("tandem-debian");
        // The package builds (CPU) while debootstrap downloads and unpacks (network, disk).
        let started = Instant::now();
        let package = std::thread::spawn(debian::package_for_tests);
        let root = base::ensure_base(&cache, &mirror, &PACKAGES).expect("debootstrap");
        let deb = package
            .join()
            .expect("package thread")
            .expect("the package builds");
        match root.built_in {
            Some(d) => println!(
                "debootstrap of {} took {:.1} s",
                mirror.suite,
                d.as_secs_f64()
            ),
            None => println!("base root {} taken from the cache", root.path.display()),
        }
        println!(
            "base root and package ready after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let machines = cache.join("machines");
        std::fs::create_dir_all(&machines).expect("machines dir");
        Ok(Setup {
            base: root.path,
            deb,
            machines,
        })
    });
    match s {
        Ok(s) => Some(s),
        Err(why) => {
            tandem_tests::require::skip(why);
            None
        }
    }
}

/// The package's file name, as `apt install ./NAME` wants it in the current directory.
fn deb_name(s: &Setup) -> String {
    s.deb
        .file_name()
        .expect("deb file name")
        .to_string_lossy()
        .into_owned()
}

/// Image builders install packages with `dpkg -i` in a chroot where nothing is mounted:
/// the postinst must not fail there (it did: systemd-tmpfiles refuses to run without
/// /proc). The directories it could not make are made at the first boot.
#[test]
fn dpkg_in_a_chroot_without_proc_installs_and_the_first_boot_makes_the_directories() {
    let Some(s) = setup() else { return };
    let net = Net::new(1, 1).expect("net");
    let mut m = Machine::create(&s.machines, &s.base, "image", &net.hosts[0]).expect("machine");
    std::fs::create_dir_all(m.upper().join("root")).expect("root home");
    std::fs::copy(&s.deb, m.upper().join("root").join(deb_name(s))).expect("copy deb");
    let out = m
        .chroot(&format!(
            "test ! -e /proc/self && dpkg -i /root/{}",
            deb_name(s)
        ))
        .expect("chroot");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dpkg -i in a chroot without /proc: {}\n{}{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("will be created at boot"),
        "postinst says what it left for the boot: {stderr}"
    );
    let passwd = std::fs::read_to_string(m.upper().join("etc/passwd")).expect("passwd");
    for user in ["tandem:", "tandem-agent:"] {
        assert!(passwd.contains(user), "sysusers made {user} in the chroot");
    }
    let took = m.boot().expect("boot");
    println!("image machine booted in {:.1} s", took.as_secs_f64());
    let dirs = m
        .ok("stat -c '%n %a %U:%G' /run/tandem /etc/tandem /var/lib/tandem")
        .expect("stat");
    assert_eq!(
        dirs.trim(),
        "/run/tandem 1770 root:tandem\n/etc/tandem 755 root:root\n/var/lib/tandem 755 root:root",
        "the first boot made the directories of tmpfiles.d/tandem.conf"
    );
}

/// A service with `User=nobody` reads a credential passed with `LoadCredential=`: the
/// machine is set up as a real boot would be (systemd 252 in a container with private
/// mount propagation denied this: see tandem_tests::debian::machine).
#[test]
fn a_service_of_another_user_reads_its_credential() {
    let Some(s) = setup() else { return };
    let net = Net::new(1, 1).expect("net");
    let mut m =
        Machine::create(&s.machines, &s.base, "credentials", &net.hosts[0]).expect("machine");
    m.boot().expect("boot");
    let unit = "[Service]\nType=oneshot\nUser=nobody\nLoadCredential=x:/etc/hostname\n\
                ExecStart=sh -c 'cat $CREDENTIALS_DIRECTORY/x'\n";
    std::fs::write(
        m.path("/etc/systemd/system/credtest.service")
            .expect("path"),
        unit,
    )
    .expect("unit");
    m.ok("systemctl daemon-reload && systemctl start credtest.service")
        .expect("the credential unit succeeds");
    let out = m
        .ok("journalctl -b -u credtest.service -o cat _UID=65534")
        .expect("journal");
    assert_eq!(
        out.trim(),
        "credentials",
        "the service printed its credential"
    );
}
