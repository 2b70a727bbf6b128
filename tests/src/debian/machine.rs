//! One booted Debian machine: systemd as PID 1 of its own namespaces, set up as
//! `systemd-nspawn` sets up a container.
//!
//! What a machine gets before systemd starts, and why (each was found missing the hard way):
//! - **Shared mount propagation on its root.** systemd makes `/` shared itself only on bare
//!   metal; in a container (`container=` set) it leaves that to the container manager, as
//!   nspawn does it. `unshare` makes every mount private. systemd sets up a service's
//!   credentials (`LoadCredential=`) in a helper process with a mount namespace of its own:
//!   it mounts a ramfs there and moves it onto `/run/credentials/UNIT`, which reaches PID 1
//!   and the service only through propagation. Without it the service finds the empty,
//!   root-only directory underneath: `Permission denied` on its credentials.
//! - **A cgroup of its own, as a cgroup namespace, with cgroup2 mounted.** Without it,
//!   systemd on a host with cgroup v1 hierarchies falls back to the hybrid layout and two
//!   machines share (and fight over) the same `name=systemd` hierarchy root.
//! - **A `/dev` of its own** (tmpfs with null, zero, full, random, urandom, tty and a new
//!   devpts instance), not the host's devtmpfs: on the host's, systemd starts `getty`s on the
//!   host's consoles. No `/dev/console`, so no console getty either.
//! - **A boot id of its own, new at every boot** (bound over `/proc/sys/kernel/random/boot_id`,
//!   as nspawn does): the kernel's is the host's, so without it every boot of a machine has
//!   the same id and `journalctl -b -1` finds no previous boot.
//! - An overlay root: the shared base is the lower layer, the machine writes only to its
//!   own upper directory, which survives a poweroff, so the machine boots again with what
//!   it had (installed packages, configuration, state).
//!
//! Every mount lives in the machine's mount namespace and goes away with it. The machine's
//! processes are killed through its PID 1 (the kernel then kills the whole PID namespace).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;
use tokio::time::Instant;

use super::DebianError;
use crate::netns::Host;

/// Prefix of every cgroup and machine directory this kit creates (`tdm-<pid>-<name>`).
const PREFIX: &str = "tdm-";

/// The boot sequence, in two stages of one script: `host` joins the machine's cgroup and
/// enters its namespaces; `machine` (PID 1 of the new PID namespace, before it becomes
/// systemd) mounts what the machine needs and executes systemd. Arguments: stage, base,
/// machine directory, network namespace, cgroup directory; the script itself is in
/// `$TDM_BOOT` for the second stage.
const BOOT: &str = r#"
stage=$1 base=$2 dir=$3 netns=$4 cgroup=$5
case $stage in
host)
    # `unshare --cgroup` makes the cgroup this process is in the root of the machine's.
    echo $$ >"$cgroup/cgroup.procs"
    exec nsenter --net="/var/run/netns/$netns" \
        unshare --pid --fork --kill-child --mount --uts --ipc --cgroup -- \
        sh -euc "$TDM_BOOT" tdm-boot machine "$base" "$dir" "$netns" "$cgroup"
    ;;
machine)
    r=$dir/root
    mount -t overlay overlay -o "lowerdir=$base,upperdir=$dir/upper,workdir=$dir/work" "$r"
    mount -t proc proc "$r/proc"
    cat /proc/sys/kernel/random/uuid >"$dir/boot_id"
    mount --bind "$dir/boot_id" "$r/proc/sys/kernel/random/boot_id"
    mount -t sysfs sysfs "$r/sys"
    mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup"
    mount -t tmpfs -o mode=0755,nosuid tmpfs "$r/dev"
    for node in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
        set -- $node
        mknod -m 0666 "$r/dev/$1" c "$2" "$3"
    done
    mkdir "$r/dev/pts"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$r/dev/pts"
    ln -s pts/ptmx "$r/dev/ptmx"
    # The machine's root becomes the root of its mount namespace (pivot_root, as a real boot's
    # switch_root and nspawn do, not chroot: the kernel refuses user namespaces, and so
    # PrivateUsers=, to a chrooted process); the host's tree is detached.
    cd "$r"
    pivot_root . .
    umount -l .
    # What a real boot has and `unshare --mount` takes away: `/` shared. This is the fix for
    # `Permission denied` on $CREDENTIALS_DIRECTORY of a User= service with LoadCredential=
    # (systemd 252): systemd mounts the credentials' ramfs in a helper's mount namespace
    # and moves it onto /run/credentials/UNIT; with private propagation it never reaches
    # the service, which sees the root-only directory underneath. systemd shares `/` itself
    # only when not in a container; in one (container= set), nspawn does it, so we do.
    mount --make-rshared /
    exec /usr/bin/env -i container=tandem-test /lib/systemd/systemd
    ;;
esac
"#;

/// An image builder's view of a machine that is off: its root (the overlay) in a mount
/// namespace of its own, entered with `chroot`, with nothing mounted inside (no /proc, no
/// /sys, no /run), as `debootstrap`-style builders install packages. Arguments: base,
/// machine directory, script.
const CHROOT: &str = r#"
r=$2/root
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$r"
exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /bin/sh -c "$3"
"#;

/// What a command inside sees as its environment: a root login's, nothing of the test's.
const LOGIN_ENV: [&str; 4] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "TERM=dumb",
];

/// Longest a command inside may run before `timeout` ends it.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// The mount point of the cgroup2 hierarchy, from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (mount, fs) = l.split_once(" - ")?;
        (fs.split_whitespace().next() == Some("cgroup2"))
            .then(|| mount.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// A machine: its files, and its systemd while it runs.
pub struct Machine {
    pub name: String,
    dir: PathBuf,
    base: PathBuf,
    netns: String,
    cgroup: PathBuf,
    running: Option<Running>,
}

struct Running {
    /// `sh` → `nsenter` → `unshare` (one process); its child is the machine's PID 1.
    child: Child,
    init: u32,
}

impl Machine {
    /// A machine named `name` (its host name) in `parent` (`parent/tdm-<pid>-<name>`), to
    /// boot from `base` in `host`'s network namespace. Nothing runs yet.
    pub fn create(
        parent: &Path,
        base: &Path,
        name: &str,
        host: &Host,
    ) -> Result<Machine, DebianError> {
        let cg_root = cgroup2_root()
            .ok_or_else(|| DebianError::Unavailable("no cgroup2 hierarchy".into()))?;
        remove_leftovers(&cg_root, parent);
        let id = format!("{PREFIX}{}-{name}", std::process::id());
        let dir = parent.join(&id);
        for sub in ["upper/etc", "work", "root"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| DebianError::io(&p, e))?;
        }
        // What a cloud image is given at its first boot: its name, and a machine id of
        // its own (the base's is empty).
        write(&dir.join("upper/etc/hostname"), &format!("{name}\n"))?;
        let machine_id: String = (0..32)
            .map(|_| char::from_digit(rand::random_range(0..16u32), 16).unwrap_or('0'))
            .collect();
        write(
            &dir.join("upper/etc/machine-id"),
            &format!("{machine_id}\n"),
        )?;
        Ok(Machine {
            name: name.to_owned(),
            dir,
            base: base.to_owned(),
            netns: host.ns.clone(),
            cgroup: cg_root.join(id),
            running: None,
        })
    }

    /// The machine's own files (its overlay upper layer) while it is off.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// Runs `script` in the machine's root with `chroot` while it is off, as an image
    /// builder does (see [`CHROOT`]); any exit status.
    pub fn chroot(&self, script: &str) -> Result<Output, DebianError> {
        if self.running.is_some() {
            return Err(DebianError::Machine(format!("{} is running", self.name)));
        }
        Command::new("unshare")
            .args(["--mount", "--", "sh", "-euc", CHROOT, "tdm-chroot"])
            .arg(&self.base)
            .arg(&self.dir)
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| DebianError::io(format!("chroot into {}", self.name), e))
    }

    /// Boots the machine and waits until `systemctl is-system-running` says `running`.
    /// Returns the time that took. A `degraded` boot is an error that lists the failed units.
    pub fn boot(&mut self) -> Result<Duration, DebianError> {
        let started = Instant::now();
        self.start()?;
        self.wait_running()?;
        Ok(started.elapsed())
    }

    /// Starts the machine's systemd and returns once it runs (not booted yet: see
    /// [`Machine::wait_running`]). The machine dies with the thread that calls this (its
    /// boot runs under `setpriv --pdeathsig KILL`): a test runner killed mid-test leaves no
    /// machine behind.
    pub fn start(&mut self) -> Result<(), DebianError> {
        if self.running.is_some() {
            return Err(DebianError::Machine(format!(
                "{} is already running",
                self.name
            )));
        }
        remove_cgroup_tree(&self.cgroup);
        std::fs::create_dir_all(&self.cgroup).map_err(|e| DebianError::io(&self.cgroup, e))?;
        let console = self.console();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console)
            .map_err(|e| DebianError::io(&console, e))?;
        let log2 = log.try_clone().map_err(|e| DebianError::io(&console, e))?;
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--pdeathsig",
            "KILL",
            "sh",
            "-euc",
            BOOT,
            "tdm-boot",
            "host",
        ])
        .arg(&self.base)
        .arg(&self.dir)
        .arg(&self.netns)
        .arg(&self.cgroup)
        .env("TDM_BOOT", BOOT)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
        let mut child = cmd
            .spawn()
            .map_err(|e| DebianError::io("setpriv (the machine's boot)", e))?;
        match wait_init(&mut child) {
            Ok(init) => {
                self.running = Some(Running { child, init });
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(DebianError::Machine(format!(
                    "{}: {e}; console: {}",
                    self.name,
                    std::fs::read_to_string(&console).unwrap_or_default().trim()
                )))
            }
        }
    }

    fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// Waits until the started machine's `systemctl is-system-running` says `running`; a
    /// `degraded` boot is an error that lists the failed units.
    pub fn wait_running(&self) -> Result<(), DebianError> {
        // systemctl cannot wait for a manager that is not listening yet.
        let private = self.path("/run/systemd/private")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !private.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let state = self.run("systemctl is-system-running --wait")?;
        let state_text = String::from_utf8_lossy(&state.stdout).trim().to_owned();
        if state_text == "running" {
            return Ok(());
        }
        let failed = self.run("systemctl --failed --no-legend --plain")?;
        Err(DebianError::Machine(format!(
            "{} booted {state_text:?}, not \"running\" ({}); failed units: {}; console: {}",
            self.name,
            String::from_utf8_lossy(&state.stderr).trim(),
            String::from_utf8_lossy(&failed.stdout).trim(),
            std::fs::read_to_string(self.console())
                .unwrap_or_default()
                .trim()
        )))
    }

    /// PID 1 of the machine, as the host sees it, while it runs.
    pub fn init_pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.init)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// `path` inside the running machine, reachable from the host (through PID 1's root).
    pub fn path(&self, path: &str) -> Result<PathBuf, DebianError> {
        let init = self.require_running()?;
        Ok(PathBuf::from(format!("/proc/{init}/root")).join(path.trim_start_matches('/')))
    }

    fn require_running(&self) -> Result<u32, DebianError> {
        self.init_pid()
            .ok_or_else(|| DebianError::Machine(format!("{} is not running", self.name)))
    }

    /// A command that runs `script` with `/bin/sh` inside the machine, as root, with a root
    /// login's environment, ended after two minutes at most.
    pub fn command(&self, script: &str) -> Result<Command, DebianError> {
        let init = self.require_running()?;
        let mut c = Command::new("nsenter");
        c.args([
            "-t",
            &init.to_string(),
            "-a",
            "-r",
            "-w",
            "--",
            "/usr/bin/env",
            "-i",
        ])
        .args(LOGIN_ENV)
        .args(["timeout", "--kill-after=5s"])
        .arg(format!("{}s", COMMAND_LIMIT.as_secs()))
        .args(["/bin/sh", "-c", script])
        .stdin(Stdio::null());
        Ok(c)
    }

    /// Runs `script` inside; any exit status.
    pub fn run(&self, script: &str) -> Result<Output, DebianError> {
        self.command(script)?
            .output()
            .map_err(|e| DebianError::io(format!("nsenter into {}", self.name), e))
    }

    /// Runs `script` inside; its stdout, or an error with its stderr if it failed.
    pub fn ok(&self, script: &str) -> Result<String, DebianError> {
        let out = self.run(script)?;
        checked(&self.name, script, out)
    }

    /// Runs `script` inside with `input` on its stdin; its stdout, or an error.
    pub fn ok_with_input(&self, script: &str, input: &[u8]) -> Result<String, DebianError> {
        use std::io::Write as _;
        let mut child = self
            .command(script)?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| DebianError::io(format!("nsenter into {}", self.name), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .map_err(|e| DebianError::io(format!("stdin of {script}"), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| DebianError::io(format!("nsenter into {}", self.name), e))?;
        checked(&self.name, script, out)
    }

    /// What `systemctl show UNIT` says inside, by property (empty if it cannot run).
    pub fn show(&self, unit: &str) -> std::collections::HashMap<String, String> {
        self.ok(&format!("systemctl show {unit}"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Runs `poweroff` inside, as an operator would, and waits (up to `limit`) for the
    /// machine's PID 1 to end. Returns the time from the command to the end.
    pub fn poweroff(&mut self, limit: Duration) -> Result<Duration, DebianError> {
        self.require_running()?;
        let started = Instant::now();
        // The command returns once the shutdown is queued; its connection may be cut by the
        // shutdown itself, so its status says nothing.
        let _ = self.run("poweroff");
        let status = self.wait_down(limit)?;
        let took = started.elapsed();
        self.running = None;
        // A PID namespace's init that calls reboot(2) to power off is ended by SIGINT.
        if status.code().is_some_and(|c| c != 0 && c != 128 + 2) {
            return Err(DebianError::Machine(format!(
                "{}: PID 1 ended with {status} after poweroff",
                self.name
            )));
        }
        Ok(took)
    }

    fn wait_down(&mut self, limit: Duration) -> Result<ExitStatus, DebianError> {
        let name = self.name.clone();
        let running = self
            .running
            .as_mut()
            .ok_or_else(|| DebianError::Machine(format!("{name} is not running")))?;
        let deadline = Instant::now() + limit;
        loop {
            match running.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    return Err(DebianError::Machine(format!(
                        "{name} still running {} s after poweroff",
                        limit.as_secs()
                    )));
                }
                Err(e) => return Err(DebianError::io(format!("waiting for {name}"), e)),
            }
        }
    }

    /// Kills every process of the machine (SIGKILL to its PID 1 ends its PID namespace) and
    /// removes its cgroup. Its files stay.
    pub fn kill(&mut self) {
        if let Some(mut r) = self.running.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(r.init as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        remove_cgroup_tree(&self.cgroup);
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) -> Result<(), DebianError> {
    std::fs::write(path, text).map_err(|e| DebianError::io(path, e))
}

fn checked(machine: &str, script: &str, out: Output) -> Result<String, DebianError> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(DebianError::Command {
        cmd: format!("{script} (in {machine}, {})", out.status),
        stderr: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    })
}

/// The pid of the child of `child` once it has become systemd (10 s at most).
fn wait_init(child: &mut Child) -> Result<u32, String> {
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the boot ended with {status} before systemd started"
            ));
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for c in children.split_whitespace() {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            if comm.trim() == "systemd" {
                return c.parse().map_err(|_| format!("bad pid {c}"));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("systemd did not start within 10 s".into())
}

/// Removes a cgroup and its descendants, deepest first (only empty cgroups can go; a
/// cgroup whose last process just died may be busy for a moment).
fn remove_cgroup_tree(cgroup: &Path) {
    fn dirs(p: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs(&e.path(), out);
                }
            }
        }
        out.push(p.to_owned());
    }
    if !cgroup.exists() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut all = Vec::new();
        dirs(cgroup, &mut all);
        let busy = all
            .iter()
            .any(|d| std::fs::remove_dir(d).is_err() && d.exists());
        if !busy || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills what is left of machines of test runs that are gone (`tdm-<pid>-...` cgroups whose
/// pid does not run) and removes their cgroups and directories in `parent`.
fn remove_leftovers(cg_root: &Path, parent: &Path) {
    let dead = |name: &str| {
        name.strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    for (dir, is_cgroup) in [(cg_root, true), (parent, false)] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !dead(&name) {
                continue;
            }
            if is_cgroup {
                kill_cgroup(&e.path());
                remove_cgroup_tree(&e.path());
            } else {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// SIGKILLs every process in a cgroup tree.
fn kill_cgroup(cgroup: &Path) {
    if std::fs::write(cgroup.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    // Kernels before 5.14 have no cgroup.kill: kill each listed process.
    let mut stack = vec![cgroup.to_owned()];
    while let Some(d) = stack.pop() {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
}
