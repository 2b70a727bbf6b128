//! The daemon end to end, in process: two resource agents, each talking gRPC over Unix
//! sockets to its own membership endpoint. The endpoints are a test harness serving the
//! Membership contract (membership.proto) and routing `Send` between the two nodes, so the
//! test controls who is up. Groups are `exec` agents writing marker files.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_proto::agent::v1 as pb;
use tandem_proto::agent::v1::agent_client::AgentClient;
use tandem_proto::membership::v1 as mpb;
use tandem_resource_agent::core::Timers;
use tandem_resource_agent::core::restart::RestartPolicy;
use tandem_resource_agent::daemon::{self, Options};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

type Subscribers =
    Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Result<mpb::ClusterMessage, Status>>>>>>;

/// One node's membership endpoint.
#[derive(Clone)]
struct Endpoint {
    name: String,
    state: Arc<Mutex<(mpb::View, u64)>>,
    events: broadcast::Sender<mpb::WatchResponse>,
    subs: Subscribers,
    names: Vec<String>,
    /// Ends every stream, as a dying membership daemon would.
    kill: broadcast::Sender<()>,
}

impl Endpoint {
    fn new(name: &str, names: &[&str], subs: Subscribers) -> Self {
        let view = mpb::View {
            view_id: 1,
            cluster: "test".into(),
            local_node: name.into(),
            nodes: names
                .iter()
                .map(|n| mpb::Node {
                    name: (*n).into(),
                    role: mpb::NodeRole::Member as i32,
                    state: mpb::NodeState::Up as i32,
                    local: *n == name,
                    generation: 1,
                    ..Default::default()
                })
                .collect(),
            quorum: Some(mpb::Quorum {
                quorate: true,
                ..Default::default()
            }),
        };
        Endpoint {
            name: name.into(),
            state: Arc::new(Mutex::new((view, 0))),
            events: broadcast::channel(64).0,
            subs,
            names: names.iter().map(|s| s.to_string()).collect(),
            kill: broadcast::channel(1).0,
        }
    }

    /// Ends every Watch and Subscribe stream of this endpoint.
    fn kill(&self) {
        let _ = self.kill.send(());
        self.subs.lock().expect("lock").remove(&self.name);
    }

    /// Publishes one event, folding it into the view for later snapshots.
    fn event(&self, kind: mpb::event::Kind) {
        let mut st = self.state.lock().expect("lock");
        st.1 += 1;
        st.0.view_id += 1;
        let (node, state, generation) = match &kind {
            mpb::event::Kind::NodeUp(u) => (u.node.clone(), mpb::NodeState::Up, u.generation),
            mpb::event::Kind::NodeDead(d) => (d.node.clone(), mpb::NodeState::Dead, d.generation),
            _ => unreachable!("the test sends only up and dead"),
        };
        if let Some(n) = st.0.nodes.iter_mut().find(|n| n.name == node) {
            n.state = state as i32;
            n.generation = generation;
        }
        let ev = mpb::Event {
            seq: st.1,
            view_id: st.0.view_id,
            at: None,
            kind: Some(kind),
        };
        let _ = self.events.send(mpb::WatchResponse {
            kind: Some(mpb::watch_response::Kind::Event(ev)),
            snapshot_seq: 0,
        });
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl mpb::membership_server::Membership for Endpoint {
    type WatchStream = BoxStream<mpb::WatchResponse>;
    type SubscribeStream = BoxStream<mpb::ClusterMessage>;

    async fn watch(
        &self,
        _r: Request<mpb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let mut events = self.events.subscribe();
        let mut kill = self.kill.subscribe();
        let (view, seq) = self.state.lock().expect("lock").clone();
        tokio::spawn(async move {
            let snap = mpb::WatchResponse {
                kind: Some(mpb::watch_response::Kind::Snapshot(view)),
                snapshot_seq: seq,
            };
            if tx.send(Ok(snap)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    ev = events.recv() => {
                        let Ok(ev) = ev else { return };
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    _ = kill.recv() => {
                        let _ = tx.send(Err(Status::unavailable("membership stopped"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        _r: Request<mpb::StatusRequest>,
    ) -> Result<Response<mpb::StatusResponse>, Status> {
        Err(Status::unimplemented("not needed by the agent"))
    }

    async fn send(
        &self,
        r: Request<mpb::SendRequest>,
    ) -> Result<Response<mpb::SendResponse>, Status> {
        let r = r.into_inner();
        let targets: Vec<String> = if r.to.is_empty() {
            self.names
                .iter()
                .filter(|n| **n != self.name)
                .cloned()
                .collect()
        } else {
            vec![r.to.clone()]
        };
        let subs = self.subs.lock().expect("lock").clone();
        for t in &targets {
            for s in subs.get(t).into_iter().flatten() {
                let _ = s.try_send(Ok(mpb::ClusterMessage {
                    from: self.name.clone(),
                    from_generation: 1,
                    topic: r.topic.clone(),
                    payload: r.payload.clone(),
                    broadcast: r.to.is_empty(),
                    seq: 0,
                }));
            }
        }
        Ok(Response::new(mpb::SendResponse {
            queued_for: targets,
        }))
    }

    async fn subscribe(
        &self,
        _r: Request<mpb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (tx, rx) = mpsc::channel(256);
        self.subs
            .lock()
            .expect("lock")
            .entry(self.name.clone())
            .or_default()
            .push(tx);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve_endpoint(ep: Endpoint, sock: &Path) -> oneshot::Sender<()> {
    let listener = tandem_proto::uds::bind(sock, 0o660, None)
        .await
        .expect("bind membership");
    let routes = tonic::service::Routes::new(mpb::membership_server::MembershipServer::new(ep));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tandem_proto::uds::serve(listener, routes, async {
        let _ = stopped.await;
    }));
    stop
}

/// The same cluster for every node, except that each node's `exec` agent writes its own
/// marker file (on real machines the same path is naturally per node).
fn config(dir: &Path, node: &str) -> tandem_config::ClusterConfig {
    config_with(dir, node, "")
}

/// `extra` is appended to the YAML (top-level sections).
fn config_with(dir: &Path, node: &str, extra: &str) -> tandem_config::ClusterConfig {
    let m = |g: &str| {
        dir.join(format!("{node}.{g}.running"))
            .display()
            .to_string()
    };
    let exec = |node: &str| {
        format!(
            "{{ start: \"touch {f}; echo start >> {f}.log\", stop: \"rm -f {f}\", monitor: \"test -e {f} || exit 7\", monitor_interval: 200ms }}",
            f = m(node)
        )
    };

    let yaml = format!(
        r#"cluster: test
auth:
  key_file: {dir}/authkey
quorum: two_node
nodes:
  - name: a
    addresses: ["127.0.0.1:7001"]
  - name: b
    addresses: ["127.0.0.1:7002"]
resources:
  - name: web
    prefer: a
    agents:
      - exec: {exec}
"#,
        dir = dir.display(),
        exec = exec("web")
    );
    let yaml = format!("{yaml}{extra}");
    std::fs::write(dir.join("cluster.yaml"), &yaml).expect("write config");
    tandem_config::parse(&yaml, &dir.join("cluster.yaml")).unwrap_or_else(|e| panic!("config: {e}"))
}

fn timers() -> Timers {
    Timers {
        announce_interval: Duration::from_millis(300),
        claim_retry: Duration::from_millis(50),
        peer_stale_after: Duration::from_secs(3),
        settle: Duration::from_millis(300),
        stop_retry: Duration::from_millis(200),
        stop_retry_max: Duration::from_secs(1),
        start_retry: Duration::from_secs(1),
        start_retry_max: Duration::from_secs(4),
    }
}

struct Node {
    run_dir: PathBuf,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
}

async fn start_node(name: &str, root: &Path) -> Node {
    start_node_with(name, root, config(root, name)).await
}

async fn start_node_with(name: &str, root: &Path, cfg: tandem_config::ClusterConfig) -> Node {
    start_node_timers(name, root, cfg, timers()).await
}

async fn start_node_timers(
    name: &str,
    root: &Path,
    cfg: tandem_config::ClusterConfig,
    timers: Timers,
) -> Node {
    let run_dir = root.join(name).join("run");
    let state_dir = root.join(name).join("state");
    let opts = Options {
        config: cfg.clone(),
        node: name.into(),
        run_dir: run_dir.clone(),
        state_dir,
        timers,
        restart: RestartPolicy {
            max_restarts: 1,
            window: Duration::from_secs(60),
            ..RestartPolicy::default()
        },
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon::run(opts, async {
        let _ = stopped.await;
    }));
    Node {
        run_dir,
        stop,
        task,
    }
}

async fn status(run_dir: &Path) -> Option<pb::StatusResponse> {
    let ch = tandem_proto::uds::connect(&run_dir.join("agent.sock"))
        .await
        .ok()?;
    AgentClient::new(ch)
        .status(pb::StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Polls `f` on a node's status until it holds, for at most `secs`.
async fn wait_status(
    run_dir: &Path,
    secs: u64,
    what: &str,
    f: impl Fn(&pb::StatusResponse) -> bool,
) -> pb::StatusResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Some(s) = status(run_dir).await {
            if f(&s) {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}; last status: {last:#?}");
}

fn group_state(s: &pb::StatusResponse) -> i32 {
    s.groups[0].state
}

const RUNNING: i32 = pb::GroupState::Running as i32;
const STOPPED: i32 = pb::GroupState::Stopped as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_place_hand_over_and_survive_a_membership_outage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let subs: Subscribers = Arc::default();
    let names = ["a", "b"];
    let ep_a = Endpoint::new("a", &names, subs.clone());
    let ep_b = Endpoint::new("b", &names, subs.clone());
    let stop_ma = serve_endpoint(ep_a.clone(), &dir.path().join("a/run/membership.sock")).await;
    let _stop_mb = serve_endpoint(ep_b.clone(), &dir.path().join("b/run/membership.sock")).await;

    let a = start_node("a", dir.path()).await;
    let b = start_node("b", dir.path()).await;
    let marker_a = dir.path().join("a.web.running");
    let marker_b = dir.path().join("b.web.running");

    // Preferred node a gets the group; b agrees and waits.
    let s = wait_status(&a.run_dir, 10, "web running on a", |s| {
        group_state(s) == RUNNING
    })
    .await;
    assert_eq!(s.groups[0].desired_holder, "a");
    assert!(s.membership_connected && s.quorate);
    assert!(marker_a.exists() && !marker_b.exists());
    let s = wait_status(&b.run_dir, 5, "b sees a holding", |s| {
        s.groups[0].holder == "a"
    })
    .await;
    assert_eq!(group_state(&s), STOPPED);
    assert_eq!(s.groups[0].agents[0].kind, pb::AgentKind::Exec as i32);

    // Standby on a over gRPC: a stops first, then b starts.
    let ch = tandem_proto::uds::connect(&a.run_dir.join("agent.sock"))
        .await
        .expect("connect");
    let mut client = AgentClient::new(ch);
    let t0 = tokio::time::Instant::now();
    client
        .standby(pb::StandbyRequest {
            node: String::new(),
        })
        .await
        .expect("standby");
    wait_status(&b.run_dir, 10, "web running on b", |s| {
        group_state(s) == RUNNING
    })
    .await;
    // A measurement for the record (polling adds up to 50 ms), not an assertion.
    eprintln!("handover on standby: {:?}", t0.elapsed());
    let s = wait_status(&a.run_dir, 5, "a stopped", |s| group_state(s) == STOPPED).await;
    assert!(!marker_a.exists() && marker_b.exists());
    assert_eq!(s.groups[0].not_candidate_reason, "standby");
    assert!(
        dir.path().join("a/state/standby").exists(),
        "standby is persisted"
    );
    // Not a candidate: takeover is refused with the reason.
    let e = client
        .takeover(pb::TakeoverRequest {
            group: "web".into(),
        })
        .await
        .expect_err("standby node");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("standby"), "{}", e.message());
    let e = client
        .release(pb::ReleaseRequest {
            group: "nope".into(),
        })
        .await
        .expect_err("unknown group");
    assert_eq!(e.code(), tonic::Code::NotFound);

    // Online again: auto failback brings it home.
    client
        .online(pb::OnlineRequest {
            node: String::new(),
        })
        .await
        .expect("online");
    wait_status(&a.run_dir, 10, "web back on a", |s| {
        group_state(s) == RUNNING
    })
    .await;
    wait_status(&b.run_dir, 5, "b stopped", |s| group_state(s) == STOPPED).await;

    // a's membership goes away: a keeps the group and says so.
    ep_a.kill();
    drop(stop_ma);
    let s = wait_status(&a.run_dir, 5, "a disconnected", |s| !s.membership_connected).await;
    assert_eq!(group_state(&s), RUNNING);
    assert!(s.membership_disconnected_for.is_some());

    // b's membership declares a dead: b takes over.
    ep_b.event(mpb::event::Kind::NodeDead(mpb::NodeDead {
        node: "a".into(),
        generation: 1,
        ..Default::default()
    }));
    let t0 = tokio::time::Instant::now();
    wait_status(&b.run_dir, 10, "b takes over from dead a", |s| {
        group_state(s) == RUNNING
    })
    .await;
    eprintln!("takeover after a death is declared: {:?}", t0.elapsed());

    for n in [a, b] {
        let _ = n.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), n.task)
            .await
            .expect("daemon stops")
            .expect("no panic")
            .expect("clean exit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_s_group_starts_at_once_not_after_a_claim_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let subs: Subscribers = Arc::default();
    let names = ["a", "b"];
    let ep_a = Endpoint::new("a", &names, subs.clone());
    let ep_b = Endpoint::new("b", &names, subs.clone());
    let stop_ma = serve_endpoint(ep_a.clone(), &dir.path().join("a/run/membership.sock")).await;
    let _stop_mb = serve_endpoint(ep_b.clone(), &dir.path().join("b/run/membership.sock")).await;
    // A claim retry far longer than the takeover may take: a start that waits for the next
    // retry (as before the holder's death was enough) fails the bound below.
    let slow_retry = Timers {
        claim_retry: Duration::from_secs(5),
        ..timers()
    };
    let a = start_node_timers("a", dir.path(), config(dir.path(), "a"), slow_retry).await;
    let b = start_node_timers("b", dir.path(), config(dir.path(), "b"), slow_retry).await;
    wait_status(&a.run_dir, 15, "web running on a", |s| {
        group_state(s) == RUNNING
    })
    .await;
    wait_status(&b.run_dir, 5, "b sees a holding", |s| {
        s.groups[0].holder == "a"
    })
    .await;
    ep_a.kill();
    drop(stop_ma);
    let marker_b = dir.path().join("b.web.running");
    ep_b.event(mpb::event::Kind::NodeDead(mpb::NodeDead {
        node: "a".into(),
        generation: 1,
        ..Default::default()
    }));
    let t0 = tokio::time::Instant::now();
    // Generous for a loaded machine, still well under the 5 s retry.
    let limit = Duration::from_secs(2);
    while !marker_b.exists() {
        assert!(
            t0.elapsed() < limit,
            "b did not start within {limit:?} of a's death"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("death event -> exec start on b: {:?}", t0.elapsed());
    for n in [a, b] {
        let _ = n.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), n.task).await;
    }
}

#[tokio::test]
async fn a_group_whose_monitor_keeps_failing_is_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let subs: Subscribers = Arc::default();
    let ep_a = Endpoint::new("a", &["a", "b"], subs.clone());
    // b is down: a is alone.
    ep_a.state.lock().expect("lock").0.nodes[1].state = mpb::NodeState::Dead as i32;
    let _stop = serve_endpoint(ep_a, &dir.path().join("a/run/membership.sock")).await;
    let a = start_node("a", dir.path()).await;
    let marker = dir.path().join("a.web.running");
    wait_status(&a.run_dir, 10, "web running on a", |s| {
        group_state(s) == RUNNING
    })
    .await;
    // The service dies behind the agent's back: one local restart is allowed...
    std::fs::remove_file(&marker).expect("rm");
    wait_status(&a.run_dir, 10, "one restart", |s| {
        s.groups[0].restarts == 1 && group_state(s) == RUNNING
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(tokio::time::Instant::now() < deadline, "never restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...the second failure in the window releases the group.
    std::fs::remove_file(&marker).expect("rm");
    let s = wait_status(&a.run_dir, 10, "released", |s| group_state(s) == STOPPED).await;
    assert!(
        s.groups[0].not_candidate_reason.contains("monitor failed"),
        "{:?}",
        s.groups[0]
    );
    let _ = a.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), a.task).await;
}

/// Cut off from membership, the agent checks what runs here every second (dead_after 1 s,
/// monitors every 200 ms). A local restart waiting meanwhile (3 s) must not be cancelled by
/// those checks (cancelled, the next monitor failure would count twice and release the
/// group): only a loss to another server may cancel it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_during_a_membership_outage_leave_a_waiting_restart_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let subs: Subscribers = Arc::default();
    let ep_a = Endpoint::new("a", &["a", "b"], subs.clone());
    ep_a.state.lock().expect("lock").0.nodes[1].state = mpb::NodeState::Dead as i32;
    let stop_ma = serve_endpoint(ep_a.clone(), &dir.path().join("a/run/membership.sock")).await;
    let cfg = config(dir.path(), "a");
    assert_eq!(cfg.timing.dead_after, Duration::from_secs(1));
    let run_dir = dir.path().join("a/run");
    let opts = Options {
        config: cfg,
        node: "a".into(),
        run_dir: run_dir.clone(),
        state_dir: dir.path().join("a/state"),
        timers: timers(),
        restart: RestartPolicy {
            max_restarts: 1,
            window: Duration::from_secs(60),
            first_delay: Duration::from_secs(3),
            ..RestartPolicy::default()
        },
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon::run(opts, async {
        let _ = stopped.await;
    }));
    let marker = dir.path().join("a.web.running");
    wait_status(&run_dir, 10, "web running on a", |s| {
        group_state(s) == RUNNING
    })
    .await;

    ep_a.kill();
    drop(stop_ma);
    wait_status(&run_dir, 5, "a disconnected", |s| !s.membership_connected).await;
    // The service dies: a restart 3 s later, with three checks of the outage in between.
    std::fs::remove_file(&marker).expect("rm");
    let failed = tokio::time::Instant::now();
    let s = wait_status(&run_dir, 5, "a restart decided", |s| {
        s.groups[0].restarts == 1
    })
    .await;
    assert_ne!(group_state(&s), STOPPED, "{:?}", s.groups[0]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(tokio::time::Instant::now() < deadline, "never restarted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed.elapsed() >= Duration::from_secs(3),
        "restarted after the delay, not by a check ({:?})",
        failed.elapsed()
    );
    // Still cut off, checked every second: it keeps running, and one restart was counted.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = status(&run_dir).await.expect("status");
    assert_eq!(group_state(&s), RUNNING, "{:?}", s.groups[0]);
    assert_eq!(s.groups[0].restarts, 1);
    assert!(!s.membership_connected);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

/// Runs this test binary's `unprivileged_client` as nobody (uid/gid 65534) against `sock`.
fn run_as_nobody(sock: &Path, expect_allowed: bool) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().expect("test binary"))
        .args(["unprivileged_client", "--exact", "--ignored", "--nocapture"])
        .env("TANDEM_TEST_AGENT_SOCK", sock)
        .env(
            "TANDEM_TEST_EXPECT_ALLOWED",
            if expect_allowed { "1" } else { "0" },
        )
        .output()
        .expect("run setpriv")
}

/// Not a test on its own: run by `mutating_calls_need_root_or_the_admin_group` as another user.
#[tokio::test]
#[ignore = "run as another user by mutating_calls_need_root_or_the_admin_group"]
async fn unprivileged_client() {
    let Some(sock) = std::env::var_os("TANDEM_TEST_AGENT_SOCK") else {
        return;
    };
    let allowed = std::env::var("TANDEM_TEST_EXPECT_ALLOWED").as_deref() == Ok("1");
    let ch = tandem_proto::uds::connect(Path::new(&sock))
        .await
        .expect("connect");
    let mut client = AgentClient::new(ch);
    client
        .status(pb::StatusRequest {})
        .await
        .expect("status is open to everyone who can connect");
    let r = client
        .release(pb::ReleaseRequest {
            group: "nope".into(),
        })
        .await;
    let code = r.expect_err("no such group either way").code();
    if allowed {
        assert_eq!(code, tonic::Code::NotFound, "an admin reaches the command");
    } else {
        assert_eq!(code, tonic::Code::PermissionDenied);
        let e = client
            .standby(pb::StandbyRequest {
                node: String::new(),
            })
            .await
            .expect_err("denied");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("65534"), "{}", e.message());
    }
}

fn open_up(paths: &[&Path], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    for p in paths {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

#[tokio::test]
async fn mutating_calls_need_root_or_the_admin_group() {
    // Acting as another user needs both.
    tandem_tests::skip_unless!(
        tandem_tests::require::root(),
        tandem_tests::require::tools(&["setpriv"])
    );
    for (admin, allowed) in [(false, false), (true, true)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = if admin {
            "agent:\n  admin_group: nogroup\n"
        } else {
            ""
        };
        let cfg = config_with(dir.path(), "a", extra);
        let ep = Endpoint::new("a", &["a", "b"], Subscribers::default());
        let _stop = serve_endpoint(ep, &dir.path().join("a/run/membership.sock")).await;
        let a = start_node_with("a", dir.path(), cfg).await;
        wait_status(&a.run_dir, 10, "agent up", |_| true).await;
        // Let nobody reach the socket: what is checked here is the daemon's own decision.
        let sock = a.run_dir.join("agent.sock");
        open_up(&[dir.path(), &dir.path().join("a"), &a.run_dir], 0o755);
        open_up(&[&sock], 0o666);
        let out = tokio::task::spawn_blocking(move || run_as_nobody(&sock, allowed))
            .await
            .expect("join");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "admin={admin}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = a.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), a.task).await;
    }
}

#[test]
fn check_mode_validates_config_and_agents_then_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path(), "a");
    let bin = env!("CARGO_BIN_EXE_tandem-resource-agent");
    let cfg = dir.path().join("cluster.yaml");
    let out = std::process::Command::new(bin)
        .args(["--check", "--node", "a", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("agents: ok"));
    let out = std::process::Command::new(bin)
        .args(["--check", "--node", "zed", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zed") && err.contains("a, b"), "{err}");
}

#[tokio::test]
async fn a_restarted_agent_keeps_what_runs_without_starting_it_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ep = Endpoint::new("a", &["a", "b"], Subscribers::default());
    ep.state.lock().expect("lock").0.nodes[1].state = mpb::NodeState::Dead as i32;
    let _stop = serve_endpoint(ep, &dir.path().join("a/run/membership.sock")).await;
    let starts = dir.path().join("a.web.running.log");
    let a = start_node("a", dir.path()).await;
    wait_status(&a.run_dir, 10, "web running on a", |s| {
        group_state(s) == RUNNING
    })
    .await;
    let _ = a.stop.send(());
    tokio::time::timeout(Duration::from_secs(5), a.task)
        .await
        .expect("stops")
        .expect("no panic")
        .expect("clean exit");
    // Stopping the daemon leaves the group running.
    assert!(dir.path().join("a.web.running").exists());
    let a = start_node("a", dir.path()).await;
    let s = wait_status(&a.run_dir, 10, "web found running", |s| {
        group_state(s) == RUNNING
    })
    .await;
    assert_eq!(s.groups[0].holder, "a");
    // Give it time to (wrongly) act, then check nothing was started a second time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        std::fs::read_to_string(&starts)
            .expect("log")
            .lines()
            .count(),
        1
    );
    let _ = a.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), a.task).await;
}
