//! Benchmarks of real `tandem-membership` daemons on loopback. Prints numbers; not a test.
//!
//! ```text
//! cargo build --release -p tandem-membership --bins --examples
//! target/release/examples/bench [detect|idle|idle2|idle32|messages|all]
//! ```
//!
//! - detect: SIGKILL of one node of two at the default timing (interval 100ms, dead_after
//!   1s), time until the survivor's Watch stream reports it dead; SIGTERM (clean leave)
//!   likewise; Watch event latency (event timestamp to receipt).
//! - idle: CPU, RSS and wake-ups of an idle daemon in a 2-node (idle2) and a 32-node
//!   (idle32) cluster; with BENCH_HOLD set the cluster is kept 30 s more for `strace -c -p`.
//! - messages: Send/Subscribe round trip (a -> b -> a) p50/p99 and one-way throughput.
//!
//! Each run takes well under two minutes.
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rand::Rng;
use tandem_proto::membership::v1 as pb;
use tandem_proto::membership::v1::membership_client::MembershipClient;
use tokio::time::{Instant, sleep, timeout};

type Client = MembershipClient<tonic::transport::Channel>;

struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    names: Vec<String>,
    children: Vec<Option<Child>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_loopback() -> anyhow::Result<SocketAddr> {
    Ok(tandem_tests::cluster::free_loopback()?)
}

impl Cluster {
    fn new(n: usize) -> anyhow::Result<Cluster> {
        let exe = std::env::current_exe()?;
        // target/<profile>/examples/bench -> target/<profile>/tandem-membership
        let bin = exe
            .parent()
            .and_then(|p| p.parent())
            .context("no profile dir")?
            .join("tandem-membership");
        if !bin.exists() {
            bail!("{} missing: build it with --bins", bin.display());
        }
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("authkey");
        let secret: String = (0..32)
            .map(|_| rand::rng().random_range(b'a'..=b'z') as char)
            .collect();
        std::fs::write(&key, secret)?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let mut yaml = format!(
            "cluster: bench\nauth:\n  key_file: {}\nquorum: {}\nnodes:\n",
            key.display(),
            if n == 2 { "two_node" } else { "majority" }
        );
        for name in &names {
            yaml.push_str(&format!(
                "  - name: {name}\n    addresses: [\"{}\"]\n",
                free_loopback()?
            ));
        }
        std::fs::write(dir.path().join("cluster.yaml"), yaml)?;
        Ok(Cluster {
            dir,
            bin,
            children: names.iter().map(|_| None).collect(),
            names,
        })
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("run-{i}/membership.sock"))
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.path().join("cluster.yaml"))
            .args(["--node", &self.names[i]])
            .arg("--run-dir")
            .arg(self.dir.path().join(format!("run-{i}")))
            .arg("--state-dir")
            .arg(self.dir.path().join(format!("state-{i}")))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children[i] = Some(child);
        Ok(())
    }

    fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().map_or(0, |c| c.id())
    }

    fn signal(&mut self, i: usize, sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid(i) as i32), sig)?;
        if let Some(mut c) = self.children[i].take() {
            c.wait()?;
        }
        Ok(())
    }

    async fn client(&self, i: usize) -> anyhow::Result<Client> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(ch) = tandem_proto::uds::connect(&self.socket(i)).await {
                return Ok(MembershipClient::new(ch));
            }
            if Instant::now() > deadline {
                bail!("node {i} never served its socket");
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_all_up(&self, i: usize) -> anyhow::Result<()> {
        let mut c = self.client(i).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = c.status(pb::StatusRequest {}).await?.into_inner();
            let v = s.view.context("view")?;
            if v.nodes.iter().all(|n| n.state == pb::NodeState::Up as i32) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "not all up: {:?}",
                    v.nodes.iter().map(|n| n.state).collect::<Vec<_>>()
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name}: n={} min={:.1?} p50={:.1?} p90={:.1?} p99={:.1?} max={:.1?}",
        v.len(),
        percentile(&v, 0.0),
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
        percentile(&v, 1.0)
    );
}

async fn next_event(
    s: &mut tonic::Streaming<pb::WatchResponse>,
    mut want: impl FnMut(&pb::event::Kind) -> bool,
) -> anyhow::Result<(pb::Event, SystemTime)> {
    loop {
        let m = timeout(Duration::from_secs(15), s.message())
            .await
            .context("no event in 15s")??
            .context("stream ended")?;
        if let Some(pb::watch_response::Kind::Event(e)) = m.kind
            && e.kind.as_ref().is_some_and(&mut want)
        {
            return Ok((e, SystemTime::now()));
        }
    }
}

async fn detect() -> anyhow::Result<()> {
    let mut c = Cluster::new(2)?;
    c.start(0)?;
    c.start(1)?;
    c.wait_all_up(0).await?;
    let mut w = c
        .client(0)
        .await?
        .watch(pb::WatchRequest {})
        .await?
        .into_inner();
    w.message().await?;
    let (mut kill, mut left, mut watch) = (Vec::new(), Vec::new(), Vec::new());
    for trial in 0..20 {
        // A random phase relative to the heartbeat schedule.
        sleep(Duration::from_millis(
            300 + rand::rng().random_range(0..100),
        ))
        .await;
        let clean = trial % 4 == 3;
        let t0 = Instant::now();
        c.signal(
            1,
            if clean {
                nix::sys::signal::Signal::SIGTERM
            } else {
                nix::sys::signal::Signal::SIGKILL
            },
        )?;
        let (e, got) = next_event(&mut w, |k| matches!(k, pb::event::Kind::NodeDead(_))).await?;
        let took = t0.elapsed();
        if clean {
            left.push(took)
        } else {
            kill.push(took)
        }
        if let Some(at) = e.at {
            watch.push(
                got.duration_since(tandem_proto::time::from_timestamp(&at))
                    .unwrap_or_default(),
            );
        }
        c.start(1)?;
        let (e, got) = next_event(&mut w, |k| matches!(k, pb::event::Kind::NodeUp(_))).await?;
        if let Some(at) = e.at {
            watch.push(
                got.duration_since(tandem_proto::time::from_timestamp(&at))
                    .unwrap_or_default(),
            );
        }
    }
    summary(
        "detection after SIGKILL (dead_after 1s, interval 100ms)",
        kill,
    );
    summary("detection after SIGTERM (leaving datagram)", left);
    summary("Watch event latency (event time to client receipt)", watch);
    Ok(())
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// Context switches of every thread of `pid` (voluntary + involuntary): how often it woke.
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

async fn idle(n: usize, secs: u64) -> anyhow::Result<()> {
    let mut c = Cluster::new(n)?;
    for i in 0..n {
        c.start(i)?;
    }
    c.wait_all_up(0).await?;
    sleep(Duration::from_secs(1)).await;
    let pids: Vec<u32> = (0..n).map(|i| c.pid(i)).collect();
    let before: Vec<u64> = pids
        .iter()
        .map(|&p| cpu_ticks(p))
        .collect::<Result<_, _>>()?;
    let wakes_before: u64 = pids.iter().map(|&p| switches(p)).sum();
    let t0 = Instant::now();
    sleep(Duration::from_secs(secs)).await;
    let wall = t0.elapsed().as_secs_f64();
    let wakes =
        (pids.iter().map(|&p| switches(p)).sum::<u64>() - wakes_before) as f64 / wall / n as f64;
    let after: Vec<u64> = pids
        .iter()
        .map(|&p| cpu_ticks(p))
        .collect::<Result<_, _>>()?;
    let hz = clock_ticks();
    let cpu: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 / hz / wall * 100.0)
        .collect();
    let rss: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect::<Result<_, _>>()?;
    let mean_cpu = cpu.iter().sum::<f64>() / n as f64;
    let max_rss = rss.iter().max().copied().unwrap_or(0);
    println!(
        "idle {n}-node cluster over {secs}s: CPU per daemon mean {mean_cpu:.2}% (max {:.2}%) of one core, RSS max {:.1} MiB, {wakes:.0} wake-ups/s per daemon",
        cpu.iter().cloned().fold(0.0, f64::max),
        max_rss as f64 / 1024.0
    );
    if std::env::var_os("BENCH_HOLD").is_some() {
        // For a look from outside (strace -c -p PID): keep the cluster running.
        println!("holding; pids {pids:?}");
        sleep(Duration::from_secs(30)).await;
    }
    Ok(())
}

async fn messages() -> anyhow::Result<()> {
    let mut c = Cluster::new(2)?;
    c.start(0)?;
    c.start(1)?;
    c.wait_all_up(0).await?;
    c.wait_all_up(1).await?;
    let (mut a, mut b) = (c.client(0).await?, c.client(1).await?);
    let mut pings = b
        .subscribe(pb::SubscribeRequest {
            topics: vec!["ping".into()],
        })
        .await?
        .into_inner();
    let mut pongs = a
        .subscribe(pb::SubscribeRequest {
            topics: vec!["pong".into()],
        })
        .await?
        .into_inner();
    sleep(Duration::from_millis(200)).await;
    // Round trips: a sends ping to b; this program, subscribed on b, answers through b.
    let mut rtts = Vec::new();
    for i in 0..1000u32 {
        let t0 = Instant::now();
        a.send(pb::SendRequest {
            to: "n1".into(),
            topic: "ping".into(),
            payload: i.to_be_bytes().to_vec(),
        })
        .await?;
        let m = timeout(Duration::from_secs(5), pings.message())
            .await??
            .context("ended")?;
        b.send(pb::SendRequest {
            to: "n0".into(),
            topic: "pong".into(),
            payload: m.payload,
        })
        .await?;
        timeout(Duration::from_secs(5), pongs.message())
            .await??
            .context("ended")?;
        rtts.push(t0.elapsed());
    }
    summary("message round trip a->b->a through Send/Subscribe", rtts);
    // Throughput: one sender, back-to-back Send calls, 200-byte payloads.
    let total = 10_000u32;
    let receiver = tokio::spawn(async move {
        let mut got = 0u32;
        while got < total {
            match timeout(Duration::from_secs(10), pings.message()).await {
                Ok(Ok(Some(_))) => got += 1,
                _ => break,
            }
        }
        (got, Instant::now())
    });
    let t0 = Instant::now();
    let mut full = 0u32;
    for i in 0..total {
        let mut payload = vec![0u8; 200];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        loop {
            match a
                .send(pb::SendRequest {
                    to: "n1".into(),
                    topic: "ping".into(),
                    payload: payload.clone(),
                })
                .await
            {
                Ok(_) => break,
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    full += 1;
                    sleep(Duration::from_millis(1)).await;
                }
                Err(s) => bail!("send: {s}"),
            }
        }
    }
    let (got, done) = receiver.await?;
    let secs = done.duration_since(t0).as_secs_f64();
    println!(
        "message throughput a->b: {got}/{total} delivered in {secs:.2}s = {:.0} msg/s ({full} RESOURCE_EXHAUSTED retries)",
        got as f64 / secs
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if matches!(what.as_str(), "detect" | "all") {
        detect().await?;
    }
    if matches!(what.as_str(), "idle" | "idle2" | "all") {
        idle(2, 10).await?;
    }
    if matches!(what.as_str(), "idle" | "idle32" | "all") {
        idle(32, 10).await?;
    }
    if matches!(what.as_str(), "messages" | "all") {
        messages().await?;
    }
    Ok(())
}
