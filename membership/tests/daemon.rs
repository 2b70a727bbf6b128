//! Real `tandem-membership` processes on loopback.
//!
//! Addresses: every node gets its own random loopback address (127.x.y.z; all of
//! 127.0.0.0/8 reaches `lo` on Linux) and a port the kernel picked for a probe socket that
//! is closed before the daemon starts. Another process could take that port in between,
//! but it would have to bind the same random address too; if it ever happens the daemon
//! exits with "cannot bind" and the test says so.
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prost::Message as _;
use rand::Rng;
use tandem_membership::core::wire::{self, Header, KeyRing, msg};
use tandem_proto::membership::v1 as pb;
use tandem_proto::membership::v1::membership_client::MembershipClient;
use tokio::time::{Instant, timeout};

const INTERVAL: Duration = Duration::from_millis(50);
const DEAD_AFTER: Duration = Duration::from_millis(500);

struct Cluster {
    dir: tempfile::TempDir,
    names: Vec<String>,
    addrs: Vec<SocketAddr>,
    key: Vec<u8>,
    children: Vec<Option<Child>>,
    metrics: Option<SocketAddr>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Only the processes this test started.
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_loopback() -> SocketAddr {
    tandem_tests::cluster::free_loopback().expect("a loopback probe")
}

impl Cluster {
    /// Writes a configuration for `names` (majority quorum, two_node for two).
    fn new(names: &[&str]) -> Cluster {
        Cluster::with_metrics(names, false)
    }

    /// Same, optionally with a Prometheus endpoint (only one node may then run).
    fn with_metrics(names: &[&str], metrics: bool) -> Cluster {
        Cluster::build(names, metrics, 1)
    }

    /// Appends raw YAML to the configuration (e.g. a `membership:` section).
    fn append_config(&self, yaml: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("cluster.yaml"))
            .expect("open config");
        f.write_all(yaml.as_bytes()).expect("append config");
    }

    /// The general form: `links` addresses per node.
    fn build(names: &[&str], metrics: bool, links: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let key: Vec<u8> = (0..32)
            .map(|_| rand::rng().random_range(b'a'..=b'z'))
            .collect();
        let key_file = dir.path().join("authkey");
        std::fs::write(&key_file, &key).expect("write key");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let addrs: Vec<SocketAddr> = names.iter().map(|_| free_loopback()).collect();
        let mut yaml = format!(
            "cluster: test\nauth:\n  key_file: {}\ntiming:\n  interval: {}ms\n  warn_after: 200ms\n  \
             dead_after: {}ms\n  init_dead: 3s\nquorum: {}\nnodes:\n",
            key_file.display(),
            INTERVAL.as_millis(),
            DEAD_AFTER.as_millis(),
            if names.len() == 2 {
                "two_node"
            } else {
                "majority"
            }
        );
        for (n, a) in names.iter().zip(&addrs) {
            let mut list = vec![format!("\"{a}\"")];
            list.extend((1..links).map(|_| format!("\"{}\"", free_loopback())));
            yaml.push_str(&format!(
                "  - name: {n}\n    addresses: [{}]\n",
                list.join(", ")
            ));
        }
        let metrics = metrics.then(|| {
            let probe = std::net::TcpListener::bind(SocketAddr::from((
                free_loopback().ip().to_canonical(),
                0,
            )))
            .expect("bind a TCP probe");
            probe.local_addr().expect("probe address")
        });
        if let Some(m) = metrics {
            yaml.push_str(&format!("membership:\n  metrics: \"{m}\"\n"));
        }
        std::fs::write(dir.path().join("cluster.yaml"), yaml).expect("write config");
        Cluster {
            dir,
            names: names.iter().map(|s| s.to_string()).collect(),
            addrs,
            key,
            children: names.iter().map(|_| None).collect(),
            metrics,
        }
    }

    fn run_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("run-{}", self.names[i]))
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.run_dir(i).join("membership.sock")
    }

    fn start(&mut self, i: usize) {
        self.start_with_env(i, &[]);
    }

    /// Starts node `i` with extra environment variables (e.g. systemd's).
    fn start_with_env(&mut self, i: usize, env: &[(&str, &std::ffi::OsStr)]) {
        let name = &self.names[i];
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_tandem-membership"))
            .arg("--config")
            .arg(self.dir.path().join("cluster.yaml"))
            .args(["--node", name])
            .arg("--run-dir")
            .arg(self.run_dir(i))
            .arg("--state-dir")
            .arg(self.dir.path().join(format!("state-{name}")))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tandem-membership");
        self.children[i] = Some(child);
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.names[i])))
            .unwrap_or_default()
    }

    async fn client(&self, i: usize) -> MembershipClient<tonic::transport::Channel> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(ch) = tandem_proto::uds::connect(&self.socket(i)).await {
                return MembershipClient::new(ch);
            }
            let log = self.log(i);
            // main prints fatal errors with this prefix before exiting.
            assert!(
                !log.contains("tandem-membership: "),
                "{} failed to start:\n{log}",
                self.names[i]
            );
            assert!(
                Instant::now() < deadline,
                "{} never served its socket",
                self.names[i]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn status(&self, i: usize) -> pb::StatusResponse {
        self.client(i)
            .await
            .status(pb::StatusRequest {})
            .await
            .expect("Status")
            .into_inner()
    }

    /// Waits (bounded) until node `i` sees every node in `up` as UP.
    async fn wait_up(&self, i: usize, up: &[usize]) -> pb::StatusResponse {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.status(i).await;
            let view = s.view.clone().expect("view");
            let all_up = up.iter().all(|&j| {
                view.nodes
                    .iter()
                    .any(|n| n.name == self.names[j] && n.state == pb::NodeState::Up as i32)
            });
            if all_up {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw {up:?} up: {view:?}",
                self.names[i]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn node<'a>(s: &'a pb::StatusResponse, name: &str) -> &'a pb::Node {
    s.view
        .as_ref()
        .expect("view")
        .nodes
        .iter()
        .find(|n| n.name == name)
        .expect("node in view")
}

/// Reads a Watch stream until an event matches, returning it (bounded wait). `last_seq`
/// is the seq of the last event seen (or the snapshot's): every event must follow it by one.
async fn next_matching(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
    last_seq: &mut u64,
    within: Duration,
    mut want: impl FnMut(&pb::event::Kind) -> bool,
) -> pb::Event {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = timeout(left, stream.message())
            .await
            .expect("no matching event in time")
            .expect("stream error")
            .expect("stream ended");
        let Some(pb::watch_response::Kind::Event(e)) = msg.kind else {
            panic!("a second snapshot on one stream");
        };
        assert_eq!(e.seq, *last_seq + 1, "event seqs must have no gaps");
        *last_seq = e.seq;
        if e.kind.as_ref().is_some_and(&mut want) {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemon_is_dead_within_dead_after_and_comes_back_with_a_new_generation() {
    let mut c = Cluster::new(&["a", "b", "c"]);
    for i in 0..3 {
        c.start(i);
    }
    c.wait_up(0, &[1, 2]).await;
    c.wait_up(1, &[0, 2]).await;
    let old_gen = node(&c.status(0).await, "c").generation;
    let mut watches = Vec::new();
    for i in 0..2 {
        let mut s = c
            .client(i)
            .await
            .watch(pb::WatchRequest {})
            .await
            .expect("Watch")
            .into_inner();
        let first = s.message().await.expect("snapshot").expect("snapshot");
        assert!(matches!(
            first.kind,
            Some(pb::watch_response::Kind::Snapshot(_))
        ));
        watches.push((s, first.snapshot_seq));
    }

    let killed = Instant::now();
    c.kill9(2);
    for (i, (stream, seq)) in watches.iter_mut().enumerate() {
        let e = next_matching(
            stream,
            seq,
            Duration::from_secs(5),
            |k| matches!(k, pb::event::Kind::NodeDead(d) if d.node == "c"),
        )
        .await;
        let took = killed.elapsed();
        let Some(pb::event::Kind::NodeDead(d)) = e.kind else {
            unreachable!()
        };
        assert_eq!(d.reason, pb::node_dead::Reason::Silent as i32);
        println!("{} saw c dead {took:?} after SIGKILL", c.names[i]);
        // The protocol's own bound, exactly: declared dead after dead_after of silence,
        // at most one interval after the last heartbeat it could have sent.
        let silent = tandem_proto::time::from_duration(&d.silent_for.unwrap());
        assert!(
            silent >= DEAD_AFTER && silent <= DEAD_AFTER + INTERVAL,
            "{silent:?}"
        );
        // End to end through the Watch stream, with 150 ms for a loaded test machine.
        assert!(
            took <= DEAD_AFTER + INTERVAL + Duration::from_millis(150),
            "{} took {took:?} to declare c dead",
            c.names[i]
        );
    }

    c.start(2);
    for (stream, seq) in watches.iter_mut() {
        let e = next_matching(
            stream,
            seq,
            Duration::from_secs(20),
            |k| matches!(k, pb::event::Kind::NodeUp(u) if u.node == "c"),
        )
        .await;
        let Some(pb::event::Kind::NodeUp(u)) = e.kind else {
            unreachable!()
        };
        assert!(u.generation > old_gen, "{} !> {old_gen}", u.generation);
        assert!(u.new_incarnation);
        assert_eq!(u.previous_generation, old_gen);
    }
    let s = c.wait_up(0, &[1, 2]).await;
    // Status keeps the recent events, in order, so a one-shot look shows what happened.
    let recent: Vec<&pb::event::Kind> = s
        .recent_events
        .iter()
        .filter_map(|e| e.kind.as_ref())
        .collect();
    let dead = recent
        .iter()
        .position(|k| matches!(k, pb::event::Kind::NodeDead(d) if d.node == "c"))
        .expect("NodeDead of c in recent_events");
    assert!(
        recent[dead..]
            .iter()
            .any(|k| matches!(k, pb::event::Kind::NodeUp(u) if u.node == "c" && u.new_incarnation)),
        "NodeUp of c after its death in recent_events: {recent:?}"
    );
    assert!(
        s.recent_events.windows(2).all(|w| w[0].seq < w[1].seq),
        "oldest first"
    );
    assert!(s.view.unwrap().quorum.unwrap().quorate);
}

/// Under systemd's watchdog the protocol loop itself pings, at half the period it is given,
/// from the same timer as the core's deadlines (heartbeats every 50 ms here): steadily, never
/// once per heartbeat, and the heartbeats go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_is_pinged_at_half_its_period_while_heartbeats_go_on() {
    // systemd's WatchdogSec=400ms: a ping every 200 ms, four heartbeats between pings.
    const PING: Duration = Duration::from_millis(200);
    const WINDOW: Duration = Duration::from_secs(2);
    let mut c = Cluster::new(&["a", "b"]);
    let path = c.dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    let usec = (PING * 2).as_micros().to_string();
    c.start_with_env(
        0,
        &[
            ("NOTIFY_SOCKET", path.as_os_str()),
            ("WATCHDOG_USEC", usec.as_ref()),
        ],
    );
    c.start(1);
    // Counts the pings in WINDOW from READY=1 (a blocking socket: read on its own thread).
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let start = Instant::now();
        let mut ready_at = None;
        let mut pings = 0u32;
        while ready_at.is_none_or(|t: Instant| t.elapsed() < WINDOW) {
            assert!(start.elapsed() < Duration::from_secs(20), "no READY=1");
            let Ok(n) = notify.recv(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.lines().any(|l| l == "READY=1") && ready_at.is_none() {
                ready_at = Some(Instant::now());
            }
            if text.lines().any(|l| l == "WATCHDOG=1") {
                assert!(ready_at.is_some(), "a watchdog ping before READY=1");
                pings += 1;
            }
        }
        pings
    });
    let pings = tokio::task::spawn_blocking(move || reader.join())
        .await
        .expect("join")
        .expect("reader thread");
    // One at the start, then one per PING: never more (a slow machine may delay some).
    let most = (WINDOW.as_millis() / PING.as_millis()) as u32 + 1;
    println!("{pings} watchdog pings in {WINDOW:?} (every {PING:?}: at most {most})");
    assert!(
        pings <= most + 1,
        "{pings} pings: more than one per {PING:?}"
    );
    assert!(pings >= most / 2, "{pings} pings: the watchdog would fire");
    c.wait_up(0, &[1]).await;
    c.wait_up(1, &[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_is_reported_as_left_at_once() {
    let mut c = Cluster::new(&["a", "b"]);
    c.start(0);
    c.start(1);
    c.wait_up(0, &[1]).await;
    let mut w = c
        .client(0)
        .await
        .watch(pb::WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut seq = w.message().await.unwrap().unwrap().snapshot_seq;
    let pid = c.children[1].as_ref().unwrap().id();
    let stopped = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let e = next_matching(
        &mut w,
        &mut seq,
        Duration::from_secs(5),
        |k| matches!(k, pb::event::Kind::NodeDead(d) if d.node == "b"),
    )
    .await;
    let took = stopped.elapsed();
    let Some(pb::event::Kind::NodeDead(d)) = e.kind else {
        unreachable!()
    };
    assert_eq!(d.reason, pb::node_dead::Reason::Left as i32);
    assert!(took < DEAD_AFTER, "LEFT took {took:?}");
    let status = c.children[1].take().unwrap().wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_are_rejected_counted_and_harmless() {
    // "t" is played by the test itself, with the real key.
    let mut c = Cluster::with_metrics(&["a", "t"], true);
    c.start(0);
    let mut client = c.client(0).await;
    let a = c.addrs[0];
    let sock = UdpSocket::bind(c.addrs[1]).expect("bind t's address");
    let id = tandem_config::keys::key_id(&c.key);
    let good = KeyRing::new((id, &c.key), &[]);
    let wrong_secret = KeyRing::new((id, b"not-the-key-not-the-key-not-the!"), &[]);
    let other_id = KeyRing::new((id ^ 1, &c.key), &[]);
    // Addressed to a's current generation, as a live peer's datagrams are.
    let a_generation = client
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .generation;
    let hb = msg::Packet {
        receiver_generation: a_generation,
        heartbeat: Some(msg::Heartbeat {
            hb_seq: 1,
            sent_at: 1,
            echoes: vec![],
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let seal = |keys: &KeyRing, cluster: &str, sender: &str, generation: u64, seq: u64| {
        wire::seal(
            keys,
            &Header {
                version: wire::VERSION,
                key_id: 0,
                generation,
                seq,
                cluster,
                sender,
                receiver: "a",
            },
            &hb,
        )
        .expect("seal")
    };
    let valid = seal(&good, "test", "t", 100, 1);
    let sends: Vec<(&str, Vec<u8>)> = vec![
        ("accepted", valid.clone()),
        ("replay", valid.clone()),
        ("bad_tag", seal(&wrong_secret, "test", "t", 100, 2)),
        ("unknown_key", seal(&other_id, "test", "t", 100, 3)),
        ("unknown_cluster", seal(&good, "other", "t", 100, 4)),
        ("unknown_sender", seal(&good, "test", "mallory", 100, 5)),
        ("old_generation", seal(&good, "test", "t", 99, 6)),
        ("oversize", vec![1u8; 1500]),
        ("bad_version", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("malformed", vec![1u8; 10]),
    ];
    for (_, bytes) in &sends {
        sock.send_to(bytes, a).expect("send");
    }
    // A burst of random bytes: each rejected, none stalls the daemon.
    let mut rng = rand::rng();
    for _ in 0..200 {
        let len = rng.random_range(0..1400);
        let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        sock.send_to(&junk, a).expect("send junk");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s = client
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let total: u64 = s.rejected.values().sum();
        if total >= 209 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "rejections not counted: {:?}",
            s.rejected
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (reason, _) in sends.iter().skip(1) {
        assert!(
            status.rejected.get(*reason).copied().unwrap_or(0) >= 1,
            "{reason} not counted: {:?}",
            status.rejected
        );
    }
    for reason in [
        "replay",
        "bad_tag",
        "unknown_key",
        "unknown_cluster",
        "unknown_sender",
    ] {
        assert_eq!(
            status.rejected[reason], 1,
            "{reason}: {:?}",
            status.rejected
        );
    }
    // The one valid datagram made t known, with its generation.
    assert_eq!(node(&status, "t").generation, 100);
    // The same counters on the Prometheus endpoint.
    let scrape = {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(c.metrics.unwrap()).expect("metrics");
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        out
    };
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    assert!(
        scrape.contains("tandem_membership_rejected_total{reason=\"bad_tag\"} 1"),
        "{scrape}"
    );
    // Still healthy and serving.
    let health = tonic_health::pb::health_client::HealthClient::new(
        tandem_proto::uds::connect(&c.socket(0)).await.unwrap(),
    )
    .check(tonic_health::pb::HealthCheckRequest {
        service: tandem_proto::MEMBERSHIP_SERVICE.into(),
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert!(
        c.children[0]
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none()
    );
    // Nothing secret in the log.
    let log = c.log(0);
    assert!(
        !log.contains(std::str::from_utf8(&c.key).unwrap()),
        "key in the log"
    );
    assert!(log.contains("rejected datagram"), "rejections are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_subscribers_in_order() {
    let mut c = Cluster::new(&["a", "b"]);
    c.start(0);
    c.start(1);
    c.wait_up(0, &[1]).await;
    c.wait_up(1, &[0]).await;
    let mut sub = c
        .client(1)
        .await
        .subscribe(pb::SubscribeRequest {
            topics: vec!["hold".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut sender = c.client(0).await;
    // Let the subscription register before the first delivery.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..50u32 {
        let r = sender
            .send(pb::SendRequest {
                to: "b".into(),
                topic: if i % 2 == 0 { "hold" } else { "other" }.into(),
                payload: i.to_be_bytes().to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.queued_for, vec!["b".to_string()]);
    }
    let mut got = Vec::new();
    while got.len() < 25 {
        let m = timeout(Duration::from_secs(5), sub.message())
            .await
            .expect("message in time")
            .unwrap()
            .unwrap();
        assert_eq!(m.from, "a");
        assert_eq!(m.topic, "hold");
        got.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
    }
    assert_eq!(got, (0..50).step_by(2).collect::<Vec<u32>>());
    let e = sender
        .send(pb::SendRequest {
            to: "b".into(),
            topic: "hold".into(),
            payload: vec![0; 901],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = sender
        .send(pb::SendRequest {
            to: "zed".into(),
            topic: "hold".into(),
            payload: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

/// A notice (retained topic) broadcast by `a` reaches `b` and `c`, which run no subscriber:
/// each daemon keeps it (the sender too), announces it on Watch and lists it in Status, and
/// it is not counted as dropped; a message on another topic is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_is_kept_by_every_node_without_a_subscriber() {
    let mut c = Cluster::new(&["a", "b", "c"]);
    for i in 0..3 {
        c.start(i);
    }
    for i in 0..3 {
        let others: Vec<usize> = (0..3).filter(|&j| j != i).collect();
        c.wait_up(i, &others).await;
    }
    let mut watch = c
        .client(2)
        .await
        .watch(pb::WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    let mut seq = first.snapshot_seq;
    let mut sender = c.client(0).await;
    // Not UTF-8 on purpose: membership never reads a notice.
    let payload = vec![0xff, b'{', 0x00, b'}'];
    let r = sender
        .send(pb::SendRequest {
            to: String::new(),
            topic: "tandem.notice/v1".into(),
            payload: payload.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.queued_for, vec!["b".to_string(), "c".to_string()]);
    sender
        .send(pb::SendRequest {
            to: String::new(),
            topic: "tandem.agent.v1".into(),
            payload: b"x".to_vec(),
        })
        .await
        .unwrap();
    let e = next_matching(&mut watch, &mut seq, Duration::from_secs(5), |k| {
        matches!(k, pb::event::Kind::Notice(_))
    })
    .await;
    let Some(pb::event::Kind::Notice(n)) = e.kind else {
        unreachable!()
    };
    assert_eq!(
        (n.id, n.from.as_str(), n.payload.as_slice()),
        (1, "a", &payload[..])
    );
    for i in 0..3 {
        let s = c.status(i).await;
        let kept: Vec<(&str, &str, &[u8])> = s
            .notices
            .iter()
            .map(|n| (n.from.as_str(), n.topic.as_str(), n.payload.as_slice()))
            .collect();
        assert_eq!(kept, [("a", "tandem.notice/v1", &payload[..])], "node {i}");
        assert!(s.notices[0].received_at.is_some());
        let counters = s.counters.unwrap();
        assert_eq!(counters.notices, 1, "node {i}");
        assert!(
            s.recent_events
                .iter()
                .all(|e| !matches!(e.kind, Some(pb::event::Kind::Notice(_)))),
            "notices have their own list"
        );
        if i > 0 {
            // Only the other topic, unsubscribed, was dropped (once delivered).
            let dropped = wait_for_dropped(&c, i).await;
            assert_eq!(dropped, 1, "node {i}");
        }
    }
}

/// `messages_dropped` of node `i` once the second message has been delivered there.
async fn wait_for_dropped(c: &Cluster, i: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = c.status(i).await.counters.unwrap();
        if s.messages_delivered >= 2 || Instant::now() > deadline {
            return s.messages_dropped;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An independent gRPC client (Python grpcio) reads Status over the Unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpc_client_reads_status() {
    tandem_tests::skip_unless!(tandem_tests::require::python(&["grpc", "grpc_tools"]));
    let mut c = Cluster::new(&["a", "b"]);
    c.start(0);
    c.start(1);
    c.wait_up(0, &[1]).await;
    let out = c.dir.path().join("py");
    std::fs::create_dir_all(&out).unwrap();
    let proto_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto");
    let protoc = Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto_root.display()))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .arg("tandem/membership/v1/membership.proto")
        .output()
        .unwrap();
    assert!(
        protoc.status.success(),
        "{}",
        String::from_utf8_lossy(&protoc.stderr)
    );
    let script = format!(
        r#"
import sys, json, grpc
sys.path.insert(0, {out:?})
from tandem.membership.v1 import membership_pb2 as pb, membership_pb2_grpc as rpc
ch = grpc.insecure_channel("unix:" + {sock:?})
s = rpc.MembershipStub(ch).Status(pb.StatusRequest(), timeout=10)
print(json.dumps({{
  "local": s.view.local_node,
  "cluster": s.view.cluster,
  "nodes": {{n.name: pb.NodeState.Name(n.state) for n in s.view.nodes}},
  "generation": s.generation,
  "quorate": s.view.quorum.quorate,
}}))
"#,
        out = out.display().to_string(),
        sock = c.socket(0).display().to_string(),
    );
    let run = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let ours = c.status(0).await;
    assert_eq!(v["local"], "a");
    assert_eq!(v["cluster"], "test");
    assert_eq!(v["nodes"]["b"], "NODE_STATE_UP");
    assert_eq!(v["generation"], ours.generation);
    assert_eq!(v["quorate"], true);
}

#[test]
fn check_validates_config_and_keys_and_prints_no_secret() {
    let c = Cluster::new(&["a", "b"]);
    let run = |node: &str| {
        Command::new(env!("CARGO_BIN_EXE_tandem-membership"))
            .arg("--config")
            .arg(c.dir.path().join("cluster.yaml"))
            .args(["--node", node, "--check"])
            .output()
            .expect("run --check")
    };
    let ok = run("a");
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.contains("keys: signing id"), "{out}");
    assert!(
        !out.contains(std::str::from_utf8(&c.key).unwrap()),
        "key printed"
    );
    let unknown = run("zed");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("zed"));
    // A key file others can read is refused, as Heartbeat refuses such an authkeys.
    let key = c.dir.path().join("authkey");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = run("a");
    let err = String::from_utf8_lossy(&open.stderr);
    assert!(!open.status.success());
    assert!(err.contains("authkey"), "{err}");
    assert!(
        !err.contains(std::str::from_utf8(&c.key).unwrap()),
        "key printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_is_tracked_with_rtt_and_loss() {
    let mut c = Cluster::build(&["a", "b"], false, 2);
    c.start(0);
    c.start(1);
    c.wait_up(0, &[1]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = c.status(0).await;
        let b = node(&s, "b");
        assert_eq!(b.links.len(), 2);
        let measured = b
            .links
            .iter()
            .all(|l| l.state == pb::LinkState::Up as i32 && l.rtt.is_some() && l.received > 3);
        if measured {
            for l in &b.links {
                assert!(l.loss < 0.5, "loopback loss {}", l.loss);
                let rtt = tandem_proto::time::from_duration(l.rtt.as_ref().unwrap());
                assert!(rtt < Duration::from_millis(200), "loopback rtt {rtt:?}");
            }
            let me = node(&s, "a");
            assert!(me.local);
            assert_eq!(me.links.len(), 2, "both local sockets bound");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "links never measured: {:?}",
            b.links
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_does_not_stall_detection() {
    let mut c = Cluster::new(&["a", "b"]);
    c.start(0);
    c.start(1);
    c.wait_up(0, &[1]).await;
    let mut w = c
        .client(0)
        .await
        .watch(pb::WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut seq = w.message().await.unwrap().unwrap().snapshot_seq;
    let target = c.addrs[0];
    let flood = std::thread::spawn(move || {
        let sock = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let junk = [0x55u8; 600];
        let mut sent = 0u64;
        // About two seconds at up to ~200k datagrams/s: 10000 per heartbeat interval.
        for _ in 0..400 {
            for _ in 0..1000 {
                if sock.send_to(&junk, target).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    });
    // The junk shares b's socket, so some of b's heartbeats may be lost with it (LATE is
    // an honest report of that); but the loop never stalls, so b is never declared dead.
    let quiet = timeout(
        Duration::from_millis(2500),
        next_matching(&mut w, &mut seq, Duration::from_secs(3), |k| {
            matches!(k, pb::event::Kind::NodeDead(_))
        }),
    )
    .await;
    let sent = flood.join().unwrap();
    assert!(
        quiet.is_err(),
        "b declared dead during the flood: {quiet:?}"
    );
    let s = c.status(0).await;
    let counted = s.rejected.get("bad_version").copied().unwrap_or(0)
        + s.rejected.get("receive_queue_full").copied().unwrap_or(0);
    // The kernel's overflow count also takes b's heartbeats lost in the flood.
    let from_b = c.status(1).await.counters.map_or(0, |k| k.datagrams_sent);
    println!("flood: {sent} datagrams sent, {counted} counted");
    assert!(counted > 0 && counted <= sent + from_b);
    c.wait_up(0, &[1]).await;
}

/// The known issue of a full socket buffer, measured: random bytes sent from a loopback
/// socket as fast as one thread can for three seconds at a's heartbeat port. a's peer must
/// never be declared dead (LATE, an honest report of heartbeats lost in the flood, is
/// counted and printed) and a must still answer Status promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unthrottled_flood_of_random_bytes_never_kills_a_live_peer() {
    const FLOOD: Duration = Duration::from_secs(3);
    let mut c = Cluster::new(&["a", "b"]);
    c.start(0);
    c.start(1);
    c.wait_up(0, &[1]).await;
    let mut w = c
        .client(0)
        .await
        .watch(pb::WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut seq = w.message().await.unwrap().unwrap().snapshot_seq;
    let target = c.addrs[0];
    let flood = std::thread::spawn(move || {
        let sock = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let mut rng = rand::rng();
        // A pool of random datagrams of random sizes (1..=1400 bytes: some oversize),
        // prepared up front so the loop below only sends.
        let pool: Vec<Vec<u8>> = (0..256)
            .map(|_| {
                let len = rng.random_range(1..=1400);
                (0..len).map(|_| rng.random()).collect()
            })
            .collect();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < FLOOD {
            for d in &pool {
                if sock.send_to(d, target).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    });
    let (mut late, mut dead) = (0u32, Vec::new());
    let until = Instant::now() + FLOOD + Duration::from_millis(500);
    while let Ok(e) = timeout(
        until.saturating_duration_since(Instant::now()),
        next_matching(&mut w, &mut seq, FLOOD * 2, |k| {
            matches!(
                k,
                pb::event::Kind::NodeLate(_) | pb::event::Kind::NodeDead(_)
            )
        }),
    )
    .await
    {
        match e.kind {
            Some(pb::event::Kind::NodeLate(_)) => late += 1,
            other => dead.push(other),
        }
    }
    let sent = flood.join().unwrap();
    let asked = Instant::now();
    let s = c.status(0).await;
    let status_took = asked.elapsed();
    let rejected: u64 = s
        .rejected
        .iter()
        .filter(|(k, _)| *k != "receive_queue_full")
        .map(|(_, n)| n)
        .sum();
    let kernel_drops = s.rejected.get("receive_queue_full").copied().unwrap_or(0);
    println!(
        "flood: {sent} random datagrams in {FLOOD:?}; a rejected {rejected}, the kernel dropped \
         {kernel_drops}; b LATE {late} times, DEAD {} times; Status answered in {status_took:?}",
        dead.len()
    );
    assert!(
        dead.is_empty(),
        "b declared dead during the flood: {dead:?}"
    );
    assert!(rejected > 0, "the junk was never read");
    // The kernel's drops include b's heartbeats lost in the flood: bounded by what b sent.
    let from_b = c.status(1).await.counters.map_or(0, |k| k.datagrams_sent);
    assert!(
        rejected + kernel_drops <= sent + from_b,
        "more counted ({rejected} + {kernel_drops}) than sent ({sent} + {from_b} from b)"
    );
    assert_eq!(
        node(&s, "b").state,
        pb::NodeState::Up as i32,
        "b is up after the flood"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_mode_0660_with_the_configured_group() {
    use std::os::unix::fs::MetadataExt;
    let mut c = Cluster::new(&["a", "b"]);
    // Root may give the socket to another group (a real change of owner); anyone else
    // can only use a group of their own.
    let other = ["daemon", "nogroup", "adm"]
        .iter()
        .find_map(|n| nix::unistd::Group::from_name(n).ok().flatten())
        .filter(|_| nix::unistd::geteuid().is_root());
    let group = match other {
        Some(g) => g,
        None => nix::unistd::Group::from_gid(nix::unistd::getgid())
            .expect("group lookup")
            .expect("the test's own group has a name"),
    };
    let gid = group.gid;
    c.append_config(&format!("membership:\n  socket_group: {}\n", group.name));
    c.start(0);
    c.client(0).await;
    let meta = std::fs::metadata(c.socket(0)).expect("socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid.as_raw());
}

/// A start-up error through the real binary: one line, each cause once, no backtrace.
#[test]
fn a_taken_port_is_one_plain_line_said_once() {
    let run = |c: &Cluster| {
        Command::new(env!("CARGO_BIN_EXE_tandem-membership"))
            .arg("--config")
            .arg(c.dir.path().join("cluster.yaml"))
            .args(["--node", "a", "--run-dir"])
            .arg(c.run_dir(0))
            .arg("--state-dir")
            .arg(c.dir.path().join("state-a"))
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1")
            .env_remove("NOTIFY_SOCKET")
            .output()
            .expect("run tandem-membership")
    };
    let error_line = |out: &std::process::Output| {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        for noise in ["Caused by", "backtrace", "\x1b["] {
            assert!(!err.contains(noise), "{noise:?} in:\n{err}");
        }
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("tandem-membership: "))
            .collect();
        assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
        lines[0].to_owned()
    };
    let c = Cluster::new(&["a", "b"]);
    let taken = UdpSocket::bind(c.addrs[0]).expect("take node a's address");
    let line = error_line(&run(&c));
    assert!(line.contains("cannot bind UDP"), "{line}");
    assert_eq!(line.matches("os error 98").count(), 1, "{line}");
    assert_eq!(line.matches("in use").count(), 1, "{line}");
    drop(taken);

    let c = Cluster::with_metrics(&["a", "b"], true);
    let metrics = c.metrics.expect("metrics address");
    let taken = std::net::TcpListener::bind(metrics).expect("take the metrics port");
    let line = error_line(&run(&c));
    assert!(
        line.contains(&format!("membership.metrics {metrics}")),
        "{line}"
    );
    assert_eq!(line.matches("os error 98").count(), 1, "{line}");
    drop(taken);
}

/// Logs written to a file (the journal, a pipe) carry no ANSI colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_a_file_carry_no_colour_codes() {
    let mut c = Cluster::new(&["a", "b"]);
    c.start(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.log(0).contains("membership started") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = c.log(0);
    c.kill9(0);
    assert!(log.contains("membership started"), "{log}");
    assert!(log.contains(" INFO "), "{log}");
    assert!(!log.contains('\x1b'), "ANSI escapes in a log file: {log:?}");
}
