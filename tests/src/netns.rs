//! Network-namespace test hosts with nftables fault injection.
//!
//! A [`Net`] is N hosts (each its own network namespace) joined by K links. Every link is a
//! separate layer-2 network: one Linux bridge per link inside a private "switch" namespace,
//! and one veth pair per (host, link) with the host end named `l<k>` inside the host.
//! Host `i` has address `10.77.<k>.<i+1>/24` on link `k`. These addresses exist only inside
//! namespaces this kit created, so nothing ever leaves the machine and parallel nets cannot
//! collide (each has its own namespaces).
//!
//! Faults are nftables rules in a table `inet tdmfault` inside a host namespace, matching only
//! the `l*` interfaces (loopback and Unix sockets keep working, so gRPC clients still reach
//! the daemons):
//! - [`Net::cut_link`]: drop both directions on one interface of one host;
//! - [`Net::partition`]: drop both directions on every link of one host;
//! - [`Net::random_loss`]: `numgen random mod 100 < p drop` on *input* of every host, so each
//!   datagram crosses exactly one such filter and every direction loses `p`%;
//! - [`Net::inbound_loss`]: the same on one host only (asymmetric loss);
//! - [`Net::heal`]: flush all fault rules.
//!
//! Names are `tdm-<pid>-<n>-...`; at creation, namespaces with the `tdm-` prefix whose pid is
//! no longer running are deleted (leftovers from a killed test run). Everything created is
//! removed on drop, after killing the processes started with [`Net::spawn`].
pub mod pcap;
pub mod tandem;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cluster::{Cluster, Network, NetworkFactory};

/// Prefix of every namespace this kit creates; the leftover cleanup touches nothing else.
pub const PREFIX: &str = "tdm-";

/// First octets of every link subnet: `10.77.<link>.0/24`.
const SUBNET: [u8; 2] = [10, 77];

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Namespaces cannot be made here (not root, no `ip`/`nft`); tests skip with this text.
    #[error("network namespaces unavailable: {0}")]
    Unavailable(String),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cannot run `{cmd}`: {source}")]
    Io { cmd: String, source: std::io::Error },
    #[error("no host {0} (the net has {1})")]
    NoHost(usize, usize),
    #[error("no link {0} (the net has {1})")]
    NoLink(usize, usize),
}

/// One namespace host.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name (for `ip netns exec`).
    pub ns: String,
    /// Address on each link, by link index.
    pub addrs: Vec<Ipv4Addr>,
}

impl Host {
    /// A command that runs `program` inside this host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// A UDP socket bound to `addr` inside this namespace. A helper thread enters the
    /// namespace (setns changes only the calling thread) and binds; the socket stays in the
    /// namespace it was created in, whichever thread uses it later.
    pub fn udp_socket(&self, addr: SocketAddr) -> std::io::Result<UdpSocket> {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let f = std::fs::File::open(&path)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                UdpSocket::bind(addr)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
        })
    }
}

/// N hosts fully meshed over K links.
pub struct Net {
    pub hosts: Vec<Host>,
    links: usize,
    switch: String,
    children: Vec<Child>,
}

fn run(cmd: &mut Command) -> Result<String, NetnsError> {
    let text = format!("{cmd:?}").replace('"', "");
    let out = cmd.stdin(Stdio::null()).output().map_err(io_error(&text))?;
    checked(text, out)
}

/// What `cmd` failed to do, as an error naming the command.
fn io_error(cmd: &str) -> impl FnOnce(std::io::Error) -> NetnsError {
    let cmd = cmd.to_owned();
    move |source| NetnsError::Io { cmd, source }
}

/// A finished command's stdout, or its stderr as the error when it failed.
fn checked(cmd: String, out: std::process::Output) -> Result<String, NetnsError> {
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, NetnsError> {
    run(Command::new("ip").args(args))
}

/// Why namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    crate::require::netns().err()
}

/// Deletes `tdm-<pid>-...` namespaces whose creating process is gone.
pub fn remove_leftovers() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Net {
    /// Creates `hosts` namespaces joined by `links` separate networks.
    pub fn new(hosts: usize, links: usize) -> Result<Net, NetnsError> {
        if let Some(why) = unavailable() {
            return Err(NetnsError::Unavailable(why));
        }
        if links > 9 || hosts > 200 {
            return Err(NetnsError::Unavailable(format!(
                "{hosts} hosts x {links} links is more than this kit addresses"
            )));
        }
        remove_leftovers();
        let base = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT_NET.fetch_add(1, Ordering::Relaxed)
        );
        // Constructed before the first namespace exists so Drop cleans up a partial build.
        let mut net = Net {
            hosts: Vec::new(),
            links,
            switch: format!("{base}-sw"),
            children: Vec::new(),
        };
        ip(&["netns", "add", &net.switch]).map_err(|e| match e {
            NetnsError::Command { stderr, .. } => NetnsError::Unavailable(stderr),
            other => other,
        })?;
        let sw = net.switch.clone();
        for k in 0..links {
            let br = format!("br{k}");
            ip(&["-n", &sw, "link", "add", &br, "type", "bridge"])?;
            ip(&["-n", &sw, "link", "set", &br, "up"])?;
        }
        for i in 0..hosts {
            let ns = format!("{base}-h{i}");
            ip(&["netns", "add", &ns])?;
            let mut host = Host {
                ns: ns.clone(),
                addrs: Vec::new(),
            };
            net.hosts.push(host.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            for k in 0..links {
                let outer = format!("h{i}l{k}");
                let inner = format!("l{k}");
                ip(&[
                    "-n", &sw, "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                    "netns", &ns,
                ])?;
                ip(&[
                    "-n",
                    &sw,
                    "link",
                    "set",
                    &outer,
                    "master",
                    &format!("br{k}"),
                ])?;
                ip(&["-n", &sw, "link", "set", &outer, "up"])?;
                let addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], k as u8, i as u8 + 1);
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    &inner,
                ])?;
                ip(&["-n", &ns, "link", "set", &inner, "up"])?;
                host.addrs.push(addr);
            }
            net.hosts[i] = host;
            // The fault table exists from the start; faults only add rules to it.
            net.nft(
                i,
                "add table inet tdmfault\n\
                 add chain inet tdmfault input { type filter hook input priority 0; policy accept; }\n\
                 add chain inet tdmfault output { type filter hook output priority 0; policy accept; }\n",
            )?;
        }
        Ok(net)
    }

    pub fn links(&self) -> usize {
        self.links
    }

    pub fn host(&self, i: usize) -> Result<&Host, NetnsError> {
        self.hosts
            .get(i)
            .ok_or(NetnsError::NoHost(i, self.hosts.len()))
    }

    /// Starts `cmd` (built with [`Host::command`]) and keeps it to be killed on drop.
    /// `ip netns exec` execs the program, so the returned pid is the program's own.
    pub fn spawn(&mut self, mut cmd: Command) -> Result<u32, NetnsError> {
        let child = cmd.spawn().map_err(io_error(&format!("{cmd:?}")))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// SIGKILLs and reaps a process started with [`Net::spawn`]; false if it is not ours.
    pub fn kill9(&mut self, pid: u32) -> bool {
        let Some(pos) = self.children.iter().position(|c| c.id() == pid) else {
            return false;
        };
        let mut c = self.children.swap_remove(pos);
        let _ = c.kill();
        let _ = c.wait();
        true
    }

    /// Runs an nftables script inside host `i`.
    pub fn nft(&self, i: usize, script: &str) -> Result<(), NetnsError> {
        use std::io::Write as _;
        let host = self.host(i)?;
        let mut cmd = host.command("nft");
        cmd.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let text = format!("nft in {}: {}", host.ns, script.trim());
        let mut child = cmd.spawn().map_err(io_error(&text))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(io_error(&text))?;
        }
        let out = child.wait_with_output().map_err(io_error(&text))?;
        checked(text, out).map(drop)
    }

    fn check_link(&self, k: usize) -> Result<(), NetnsError> {
        if k >= self.links {
            return Err(NetnsError::NoLink(k, self.links));
        }
        Ok(())
    }

    /// Drops everything on link `k` of host `i`, both directions.
    pub fn cut_link(&self, i: usize, k: usize) -> Result<(), NetnsError> {
        self.check_link(k)?;
        self.nft(
            i,
            &format!(
                "add rule inet tdmfault input iifname \"l{k}\" drop\n\
                 add rule inet tdmfault output oifname \"l{k}\" drop\n"
            ),
        )
    }

    /// Drops everything on every link of host `i`, both directions.
    pub fn partition(&self, i: usize) -> Result<(), NetnsError> {
        self.nft(
            i,
            "add rule inet tdmfault input iifname \"l*\" drop\n\
             add rule inet tdmfault output oifname \"l*\" drop\n",
        )
    }

    /// Drops `percent`% of what host `i` receives on its links (inbound only).
    pub fn inbound_loss(&self, i: usize, percent: u8) -> Result<(), NetnsError> {
        // numgen's range is 0..=99, so "< 100" does not parse: total loss is a plain drop.
        let matcher = match percent {
            0 => return Ok(()),
            p if p >= 100 => String::new(),
            p => format!("numgen random mod 100 < {p} "),
        };
        self.nft(
            i,
            &format!("add rule inet tdmfault input iifname \"l*\" {matcher}drop\n"),
        )
    }

    /// `percent`% random loss in every direction of every link.
    pub fn random_loss(&self, percent: u8) -> Result<(), NetnsError> {
        for i in 0..self.hosts.len() {
            self.inbound_loss(i, percent)?;
        }
        Ok(())
    }

    /// Removes every fault on host `i`.
    pub fn heal_host(&self, i: usize) -> Result<(), NetnsError> {
        self.nft(
            i,
            "flush chain inet tdmfault input\nflush chain inet tdmfault output\n",
        )
    }

    /// Removes every fault everywhere.
    pub fn heal(&self) -> Result<(), NetnsError> {
        for i in 0..self.hosts.len() {
            self.heal_host(i)?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Only the processes this net started, then its own namespaces; deleting a
        // namespace destroys its veth ends and bridges.
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

/// The launcher runs each membership daemon in its host's namespace, on the host's addresses.
impl Network for Net {
    fn addresses(&self, i: usize) -> Vec<IpAddr> {
        self.hosts
            .get(i)
            .map(|h| h.addrs.iter().map(|a| IpAddr::V4(*a)).collect())
            .unwrap_or_default()
    }

    fn command(&self, i: usize, program: &Path) -> Command {
        match self.hosts.get(i) {
            Some(h) => h.command(program),
            // No such host: a command that fails at once with the launcher's error.
            None => Command::new(format!("no-netns-host-{i}")),
        }
    }

    fn partition(&self, i: usize) -> Result<(), String> {
        Net::partition(self, i).map_err(|e| e.to_string())
    }

    fn heal(&self) -> Result<(), String> {
        Net::heal(self).map_err(|e| e.to_string())
    }
}

/// A [`Spec::network`](crate::cluster::Spec::network) that puts each node's membership daemon
/// in a host of a new [`Net`] (one per launch).
pub fn namespaces() -> NetworkFactory {
    NetworkFactory(Arc::new(|hosts, links| {
        let net = Net::new(hosts, links).map_err(|e| e.to_string())?;
        Ok(Box::new(net) as Box<dyn Network>)
    }))
}

/// The [`Net`] of a cluster launched with [`namespaces`], for faults beyond a partition.
pub fn of(c: &Cluster) -> Option<&Net> {
    let net: &dyn std::any::Any = c.net.as_deref()?;
    net.downcast_ref()
}

/// Skips a test (prints why) when namespaces cannot be made; fails it on any other error.
pub fn net_or_skip(hosts: usize, links: usize) -> Option<Net> {
    match Net::new(hosts, links) {
        Ok(n) => Some(n),
        Err(NetnsError::Unavailable(why)) => {
            crate::require::skip(&why);
            None
        }
        Err(e) => panic!("cannot build the test net: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A socket of host `i` on link `k`, on a port the kernel picks.
    fn sock(net: &Net, i: usize, k: usize) -> UdpSocket {
        let s = net.hosts[i]
            .udp_socket(SocketAddr::from((net.hosts[i].addrs[k], 0)))
            .expect("bind in namespace");
        s.set_read_timeout(Some(Duration::from_millis(150)))
            .expect("timeout");
        s
    }

    /// How many of `n` datagrams from `from` reach `to` (`to` drains after each send).
    fn delivered(from: &UdpSocket, to: &UdpSocket, n: usize) -> usize {
        let dst = to.local_addr().expect("addr");
        let mut got = 0;
        let mut buf = [0u8; 64];
        for seq in 0..n {
            // An output drop rule makes send fail with EPERM: that datagram is lost.
            if from.send_to(&(seq as u32).to_be_bytes(), dst).is_err() {
                continue;
            }
            if let Ok((len, _)) = to.recv_from(&mut buf) {
                assert_eq!(&buf[..len], &(seq as u32).to_be_bytes(), "wrong datagram");
                got += 1;
            }
        }
        got
    }

    #[test]
    fn cut_link_drops_only_that_link_and_heal_restores_it() {
        let Some(net) = net_or_skip(2, 2) else { return };
        let (a0, a1, b0, b1) = (
            sock(&net, 0, 0),
            sock(&net, 0, 1),
            sock(&net, 1, 0),
            sock(&net, 1, 1),
        );
        assert_eq!(delivered(&a0, &b0, 5), 5);
        assert_eq!(delivered(&a1, &b1, 5), 5);
        net.cut_link(1, 0).expect("cut");
        assert_eq!(delivered(&a0, &b0, 5), 0, "link 0 cut");
        assert_eq!(delivered(&b0, &a0, 5), 0, "link 0 cut both ways");
        assert_eq!(delivered(&a1, &b1, 5), 5, "link 1 untouched");
        net.heal().expect("heal");
        assert_eq!(delivered(&a0, &b0, 5), 5);
    }

    #[test]
    fn partition_isolates_a_host_on_every_link_and_inbound_loss_is_one_way() {
        let Some(net) = net_or_skip(3, 2) else { return };
        let a: Vec<_> = (0..2).map(|k| sock(&net, 0, k)).collect();
        let b: Vec<_> = (0..2).map(|k| sock(&net, 1, k)).collect();
        let c: Vec<_> = (0..2).map(|k| sock(&net, 2, k)).collect();
        net.partition(0).expect("partition");
        for k in 0..2 {
            assert_eq!(delivered(&a[k], &b[k], 3), 0);
            assert_eq!(delivered(&c[k], &a[k], 3), 0);
            assert_eq!(delivered(&b[k], &c[k], 3), 3, "the others still talk");
        }
        net.heal_host(0).expect("heal");
        net.inbound_loss(1, 100).expect("asymmetric");
        assert_eq!(delivered(&a[0], &b[0], 3), 0, "into host 1: dropped");
        assert_eq!(delivered(&b[0], &a[0], 3), 3, "out of host 1: delivered");
    }

    #[test]
    fn random_loss_drops_about_that_share() {
        let Some(net) = net_or_skip(2, 1) else { return };
        let (a, b) = (sock(&net, 0, 0), sock(&net, 1, 0));
        b.set_read_timeout(Some(Duration::from_millis(30)))
            .expect("timeout");
        net.random_loss(20).expect("loss");
        let got = delivered(&a, &b, 400);
        // Binomial(400, 0.8): mean 320, sd 8; 280..=360 is five sd either side.
        assert!(
            (280..=360).contains(&got),
            "{got} of 400 delivered at 20% loss"
        );
    }

    #[test]
    fn drop_removes_the_namespaces() {
        let Some(net) = net_or_skip(2, 1) else { return };
        let names: Vec<String> = net
            .hosts
            .iter()
            .map(|h| h.ns.clone())
            .chain([net.switch.clone()])
            .collect();
        drop(net);
        let list = ip(&["netns", "list"]).expect("list");
        for n in names {
            assert!(
                !list
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(&n)),
                "{n} left behind"
            );
        }
    }
}
