//! The tutorial's setting, as Debian machines: two droplets (`primary`, `secondary`) with
//! nginx serving "Droplet: NAME, IP Address: ADDRESS", and "the cloud" outside them: the
//! DigitalOcean emulator (API, each droplet's metadata service, the reserved IP's HTTP front)
//! and the machine the tutorial's curl loop runs on.
//!
//! Three network namespaces on two links (a [`Net`] of 3 hosts): the droplets are hosts 0 and
//! 1, the outside is host 2. Link 0 is the droplets' public network, link 1 their private
//! one, as the tutorial's droplets have both. Each droplet's default route goes to the
//! outside, and `169.254.169.254:80` (the metadata service every droplet asks for its own id)
//! is translated in that droplet's namespace to its own metadata listener of the emulator,
//! so the configuration needs no `metadata_url` or `droplet_ids`, as on real droplets.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::time::Instant;

use super::{DebianError, Machine};
use crate::cluster::probe::{ProbeReport, Sample};
use crate::netns::Net;

/// The droplets, by name, in the order of their hosts.
pub const NAMES: [&str; 2] = ["primary", "secondary"];
/// Their droplet ids (the tutorial's example ids).
pub const DROPLET_IDS: [u64; 2] = [3164444, 3164445];
/// The reserved IP of the tutorial's example configuration.
pub const RESERVED_IP: &str = "45.55.96.8";
/// The droplets' region.
const REGION: &str = "nyc3";
/// The outside's host index in the net.
const OUTSIDE: usize = 2;
/// Limit of one curl request of the loop; longer counts as no service.
const CURL_TIMEOUT: &str = "1";

/// The droplets, the outside and the emulator.
pub struct Droplets {
    /// `primary` then `secondary`. Declared before `net`: fields drop in order, so the
    /// machines are killed before their namespaces go.
    pub machines: Vec<Machine>,
    pub net: Net,
    /// The emulator's addresses (its `--ready-file`): `api`, `metadata`, `fronts`, ...
    pub addresses: Value,
    pub audit_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Droplets {
    /// Makes the net, starts the emulator (accepting `token`, the reserved IP held by the
    /// primary as after the tutorial's first assign) and creates both machines from `base`
    /// (not booted).
    pub fn create(
        base: &Path,
        machines_dir: &Path,
        emulator: &Path,
        token: &str,
    ) -> Result<Droplets, DebianError> {
        let mut net = Net::new(3, 2).map_err(|e| DebianError::Machine(e.to_string()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("tdm-{}-droplets-", std::process::id()))
            .tempdir_in(machines_dir)
            .map_err(|e| DebianError::io(machines_dir, e))?;
        let outside = net.hosts[OUTSIDE].addrs[0];
        let audit_log = dir.path().join("emulator-audit.jsonl");
        let ready = dir.path().join("emulator.json");
        let config = dir.path().join("emulator.yaml");
        let droplets: Vec<Value> = (0..2)
            .map(|i| {
                let public = net.hosts[i].addrs[0];
                serde_json::json!({
                    "id": DROPLET_IDS[i], "name": NAMES[i], "region": REGION,
                    "web": format!("{public}:80"), "public_ipv4": public.to_string(),
                })
            })
            .collect();
        let emu = serde_json::json!({
            "droplets": droplets,
            "reserved_ips": [{"ip": RESERVED_IP, "region": REGION, "holder": DROPLET_IDS[0]}],
            "tokens": [{"token": token}],
            "audit_log": audit_log,
            "listen": outside.to_string(),
        });
        // JSON is YAML; the file keeps the token out of `ps`.
        std::fs::write(&config, emu.to_string()).map_err(|e| DebianError::io(&config, e))?;
        // It dies with the calling thread, as the machines do.
        let mut cmd = net.hosts[OUTSIDE].command("setpriv");
        cmd.args(["--pdeathsig", "KILL"])
            .arg(emulator)
            .arg("--config")
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&dir.path().join("emulator.log"))?);
        net.spawn(cmd)
            .map_err(|e| DebianError::Machine(e.to_string()))?;
        let addresses = wait_ready(&ready)?;

        let mut machines = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let host = &net.hosts[i];
            let m = Machine::create(machines_dir, base, name, host)?;
            // The tutorial's page, as its cloud-init user data writes it.
            let html = m.upper().join("var/www/html");
            std::fs::create_dir_all(&html).map_err(|e| DebianError::io(&html, e))?;
            let page = format!("Droplet: {name}, IP Address: {}\n", host.addrs[0]);
            std::fs::write(html.join("index.html"), page).map_err(|e| DebianError::io(&html, e))?;
            let metadata = addresses["metadata"][DROPLET_IDS[i].to_string()]
                .as_str()
                .and_then(|u| u.strip_prefix("http://"))
                .ok_or_else(|| DebianError::Machine(format!("no metadata address: {addresses}")))?
                .to_owned();
            route_to_outside(&net, i, outside, &metadata)?;
            machines.push(m);
        }
        Ok(Droplets {
            machines,
            net,
            addresses,
            audit_log,
            _dir: dir,
        })
    }

    /// Boots every machine, at the same time; the time until all were running. The
    /// machines are started from the calling thread (they die with it: see
    /// [`Machine::start`]) and waited for in parallel.
    pub fn boot_all(&mut self) -> Result<Duration, DebianError> {
        let started = Instant::now();
        for m in &mut self.machines {
            m.start()?;
        }
        std::thread::scope(|s| {
            let waits: Vec<_> = self
                .machines
                .iter()
                .map(|m| s.spawn(move || m.wait_running()))
                .collect();
            for w in waits {
                w.join()
                    .unwrap_or_else(|_| Err(DebianError::Machine("boot thread panicked".into())))?;
            }
            Ok(started.elapsed())
        })
    }

    /// Runs `f` on every machine at once; results in machine order.
    pub fn on_each<T: Send>(&self, f: impl Fn(&Machine) -> T + Sync) -> Vec<T> {
        std::thread::scope(|s| {
            let runs: Vec<_> = self.machines.iter().map(|m| s.spawn(|| f(m))).collect();
            runs.into_iter()
                .map(|r| r.join().expect("machine thread"))
                .collect()
        })
    }

    pub fn machine(&self, name: &str) -> &Machine {
        &self.machines[index(name)]
    }

    pub fn machine_mut(&mut self, name: &str) -> &mut Machine {
        &mut self.machines[index(name)]
    }

    /// The DigitalOcean API's base URL (`api_url`).
    pub fn api_url(&self) -> String {
        self.addresses["api"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// `host:port` of the API listener, for a TCP health check of "the outside".
    pub fn api_authority(&self) -> String {
        self.api_url().trim_start_matches("http://").to_owned()
    }

    /// The reserved IP's HTTP front: what `curl http://RESERVED_IP` reaches.
    pub fn front_url(&self) -> String {
        self.addresses["fronts"][RESERVED_IP]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A droplet's public address.
    pub fn public_address(&self, name: &str) -> Ipv4Addr {
        self.net.hosts[index(name)].addrs[0]
    }

    /// A droplet's private address.
    pub fn private_address(&self, name: &str) -> Ipv4Addr {
        self.net.hosts[index(name)].addrs[1]
    }

    /// Every line of the emulator's audit log so far.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The droplet holding the reserved IP, by the audit log's last `holder` line (the
    /// configured holder when none).
    pub fn holder(&self) -> Option<&'static str> {
        let last = self
            .audit()
            .into_iter()
            .rev()
            .find(|e| e["event"] == "holder")
            .map_or(Some(DROPLET_IDS[0]), |e| e["to"].as_u64());
        last.and_then(|id| DROPLET_IDS.iter().position(|d| *d == id))
            .map(|i| NAMES[i])
    }

    /// Time from `since` to the first change of holder to `name` after it (audit log).
    pub fn moved_after(&self, since: SystemTime, name: &str) -> Option<Duration> {
        let id = DROPLET_IDS[index(name)];
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == "holder" && e["to"].as_u64() == Some(id))
            .filter_map(|e| humantime::parse_rfc3339(e["time"].as_str()?).ok())
            .find(|at| *at >= since)
            .and_then(|at| at.duration_since(since).ok())
    }

    /// Waits (up to `limit`) until `name` holds the reserved IP; the time it took.
    pub fn wait_holder(&self, name: &str, limit: Duration) -> Result<Duration, DebianError> {
        let started = Instant::now();
        while self.holder() != Some(name) {
            if started.elapsed() > limit {
                return Err(DebianError::Machine(format!(
                    "{name} did not get {RESERVED_IP} within {} s (holder: {:?})",
                    limit.as_secs(),
                    self.holder()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(started.elapsed())
    }

    /// Starts the tutorial's loop, `while true; do curl http://RESERVED_IP; sleep ...; done`,
    /// on the outside machine, with the stock curl.
    pub fn curl_loop(&self, period: Duration) -> CurlLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let ns = self.net.hosts[OUTSIDE].ns.clone();
        let url = self.front_url();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                samples.push(curl_once(&ns, &url, at));
                std::thread::sleep(period.saturating_sub(at.elapsed()));
            }
            samples
        });
        CurlLoop {
            stop,
            thread: Some(thread),
        }
    }
}

/// A running curl loop; dropped (a test failed before [`CurlLoop::stop`]), it stops too.
pub struct CurlLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Sample>>>,
}

impl CurlLoop {
    /// Stops the loop; what it saw.
    pub fn stop(mut self) -> ProbeReport {
        ProbeReport::from_samples(self.end())
    }

    fn end(&mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for CurlLoop {
    fn drop(&mut self) {
        self.end();
    }
}

fn curl_once(ns: &str, url: &str, at: Instant) -> Sample {
    let wall = SystemTime::now();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-m", CURL_TIMEOUT])
        .args(["-w", "\n%{http_code}", url])
        .stdin(Stdio::null())
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = code.trim().parse::<u16>().ok().filter(|c| *c != 0);
    Sample {
        at,
        wall,
        status,
        body: body.trim().to_owned(),
    }
}

fn log_file(path: &Path) -> Result<std::fs::File, DebianError> {
    std::fs::File::create(path).map_err(|e| DebianError::io(path, e))
}

fn index(name: &str) -> usize {
    NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no droplet {name}"))
}

/// The emulator's addresses once its ready file is there (20 s at most).
fn wait_ready(ready: &Path) -> Result<Value, DebianError> {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(ready)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return Ok(v);
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(DebianError::Machine(
                "the emulator did not write its ready file within 20 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Droplet `i`'s default route goes to the outside, and its metadata requests
/// (`169.254.169.254:80`) to its own metadata listener `metadata` (`ip:port`).
fn route_to_outside(
    net: &Net,
    i: usize,
    outside: Ipv4Addr,
    metadata: &str,
) -> Result<(), DebianError> {
    let ns = &net.hosts[i].ns;
    let out = Command::new("ip")
        .args([
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &outside.to_string(),
        ])
        .output()
        .map_err(|e| DebianError::io("ip route", e))?;
    if !out.status.success() {
        return Err(DebianError::Command {
            cmd: format!("ip -n {ns} route add default via {outside}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    net.nft(
        i,
        &format!(
            "add table ip tdmmetadata\n\
             add chain ip tdmmetadata output {{ type nat hook output priority -100; }}\n\
             add rule ip tdmmetadata output ip daddr 169.254.169.254 tcp dport 80 dnat to {metadata}\n"
        ),
    )
    .map_err(|e| DebianError::Machine(e.to_string()))
}
