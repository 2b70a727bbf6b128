//! Small in-test Membership and Agent servers on temp Unix sockets (through the same
//! tandem_proto::uds::{bind, serve} the daemons use), answering with fixed replies, so the
//! real ipctl binary can be run against them with --run-dir.
#![allow(dead_code)]

use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tandem_proto::agent::v1 as av1;
use tandem_proto::membership::v1 as mv1;
use tonic::{Request, Response, Status};

pub type Reply<T> = Result<T, Status>;

/// Answers a change call: (call name, its argument) -> the agent's message or a status.
pub type ChangeFn = dyn Fn(&str, &str) -> Reply<String> + Send + Sync;

#[derive(Clone)]
pub struct FakeMembership {
    pub status: mv1::StatusResponse,
    /// What each Watch call streams, in order of the calls (the last one repeats): items are
    /// sent in order, an `Err` ends the stream with that status, and the stream ends cleanly
    /// after the last item.
    pub watch: Vec<Vec<Reply<mv1::WatchResponse>>>,
    pub watch_calls: Arc<AtomicUsize>,
}

impl FakeMembership {
    pub fn new(status: mv1::StatusResponse, watch: Vec<Reply<mv1::WatchResponse>>) -> Self {
        Self::with_watch_rounds(status, vec![watch])
    }

    pub fn with_watch_rounds(
        status: mv1::StatusResponse,
        watch: Vec<Vec<Reply<mv1::WatchResponse>>>,
    ) -> Self {
        FakeMembership {
            status,
            watch,
            watch_calls: Arc::default(),
        }
    }
}

#[tonic::async_trait]
impl mv1::membership_server::Membership for FakeMembership {
    type WatchStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Reply<mv1::WatchResponse>> + Send + 'static>>;
    type SubscribeStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Reply<mv1::ClusterMessage>> + Send + 'static>>;

    async fn watch(&self, _: Request<mv1::WatchRequest>) -> Reply<Response<Self::WatchStream>> {
        let call = self.watch_calls.fetch_add(1, Ordering::SeqCst);
        let round = self.watch[call.min(self.watch.len() - 1)].clone();
        Ok(Response::new(Box::pin(tokio_stream::iter(round))))
    }

    async fn status(&self, _: Request<mv1::StatusRequest>) -> Reply<Response<mv1::StatusResponse>> {
        Ok(Response::new(self.status.clone()))
    }

    async fn send(&self, _: Request<mv1::SendRequest>) -> Reply<Response<mv1::SendResponse>> {
        Err(Status::unimplemented("not used by ipctl"))
    }

    async fn subscribe(
        &self,
        _: Request<mv1::SubscribeRequest>,
    ) -> Reply<Response<Self::SubscribeStream>> {
        Err(Status::unimplemented("not used by ipctl"))
    }
}

/// The agent's replies; the requests it received are recorded so tests can check what ipctl
/// asked for.
#[derive(Clone)]
pub struct FakeAgent {
    pub status: Reply<av1::StatusResponse>,
    pub change: Arc<ChangeFn>,
    pub calls: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeAgent {
    pub fn new(status: av1::StatusResponse) -> Self {
        FakeAgent {
            status: Ok(status),
            change: Arc::new(|_, _| Ok(String::new())),
            calls: Arc::default(),
        }
    }

    pub fn answering(f: impl Fn(&str, &str) -> Reply<String> + Send + Sync + 'static) -> Self {
        FakeAgent {
            status: Ok(av1::StatusResponse::default()),
            change: Arc::new(f),
            calls: Arc::default(),
        }
    }

    fn record(&self, call: &str, arg: &str) -> Reply<String> {
        self.calls
            .lock()
            .unwrap()
            .push((call.to_owned(), arg.to_owned()));
        (self.change)(call, arg)
    }
}

#[tonic::async_trait]
impl av1::agent_server::Agent for FakeAgent {
    async fn status(&self, _: Request<av1::StatusRequest>) -> Reply<Response<av1::StatusResponse>> {
        self.status.clone().map(Response::new)
    }

    async fn standby(
        &self,
        r: Request<av1::StandbyRequest>,
    ) -> Reply<Response<av1::StandbyResponse>> {
        let node = r.into_inner().node;
        let message = self.record("standby", &node)?;
        Ok(Response::new(av1::StandbyResponse {
            node: if node.is_empty() {
                "primary".into()
            } else {
                node
            },
            message,
        }))
    }

    async fn online(&self, r: Request<av1::OnlineRequest>) -> Reply<Response<av1::OnlineResponse>> {
        let node = r.into_inner().node;
        let message = self.record("online", &node)?;
        Ok(Response::new(av1::OnlineResponse {
            node: if node.is_empty() {
                "primary".into()
            } else {
                node
            },
            message,
        }))
    }

    async fn takeover(
        &self,
        r: Request<av1::TakeoverRequest>,
    ) -> Reply<Response<av1::TakeoverResponse>> {
        let group = r.into_inner().group;
        let message = self.record("takeover", &group)?;
        Ok(Response::new(av1::TakeoverResponse { group, message }))
    }

    async fn release(
        &self,
        r: Request<av1::ReleaseRequest>,
    ) -> Reply<Response<av1::ReleaseResponse>> {
        let group = r.into_inner().group;
        let message = self.record("release", &group)?;
        Ok(Response::new(av1::ReleaseResponse { group, message }))
    }

    async fn assign(&self, _: Request<av1::AssignRequest>) -> Reply<Response<av1::AssignResponse>> {
        Err(Status::unimplemented("not used by these tests"))
    }

    type WatchStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Reply<av1::WatchResponse>> + Send + 'static>>;

    // The agent's events are tested against the real daemon (tests/tests/e2e_watch.rs).
    async fn watch(&self, _: Request<av1::WatchRequest>) -> Reply<Response<Self::WatchStream>> {
        Err(Status::unimplemented("not used by these tests"))
    }
}

/// Both fake daemons (either may be absent) on sockets in a temp run dir. Dropping it stops
/// the servers and removes the directory.
pub struct Daemons {
    pub dir: tempfile::TempDir,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Daemons {
    pub fn start(membership: Option<FakeMembership>, agent: Option<FakeAgent>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut stop = Vec::new();
        if let Some(m) = membership {
            let routes =
                tonic::service::Routes::new(mv1::membership_server::MembershipServer::new(m));
            stop.push(spawn(&rt, &dir.path().join("membership.sock"), routes));
        }
        if let Some(a) = agent {
            let routes = tonic::service::Routes::new(av1::agent_server::AgentServer::new(a));
            stop.push(spawn(&rt, &dir.path().join("agent.sock"), routes));
        }
        Daemons {
            dir,
            stop,
            rt: Some(rt),
        }
    }

    pub fn run_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the real ipctl with `--run-dir` pointing at these daemons.
    pub fn ipctl(&self, args: &[&str]) -> Output {
        ipctl(self.run_dir(), args)
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for s in self.stop.drain(..) {
            let _ = s.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

fn spawn(
    rt: &tokio::runtime::Runtime,
    path: &Path,
    routes: tonic::service::Routes,
) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Bound before returning, so ipctl never races the listener.
    let listener = rt
        .block_on(tandem_proto::uds::bind(path, 0o660, None))
        .unwrap();
    rt.spawn(tandem_proto::uds::serve(listener, routes, async {
        let _ = rx.await;
    }));
    tx
}

pub fn ipctl(run_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipctl"))
        .arg("--run-dir")
        .arg(run_dir)
        .args(args)
        .env_remove("TANDEM_RUN_DIR")
        .env_remove("TANDEM_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run ipctl")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The output with the temp run dir replaced, so snapshots do not depend on it.
pub fn redact(out: &str, run_dir: &Path) -> String {
    out.replace(&run_dir.display().to_string(), "[RUN_DIR]")
}

// ---- fixtures --------------------------------------------------------------------------

pub fn dur(ms: u64) -> Option<prost_types::Duration> {
    Some(tandem_proto::time::duration(
        std::time::Duration::from_millis(ms),
    ))
}

/// A fixed wall-clock time: 2026-11-24T19:40:00Z plus `secs`.
pub fn at(secs: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: 1_795_549_200 + secs,
        nanos: 0,
    })
}

pub fn link(
    index: u32,
    address: &str,
    state: mv1::LinkState,
    heard_ms: Option<u64>,
    rtt_us: Option<u64>,
    loss: f64,
    received: u64,
) -> mv1::Link {
    mv1::Link {
        index,
        address: address.into(),
        state: state as i32,
        last_heard: heard_ms.and_then(dur),
        rtt: rtt_us.map(|us| tandem_proto::time::duration(std::time::Duration::from_micros(us))),
        loss,
        received,
    }
}

pub fn node(
    name: &str,
    role: mv1::NodeRole,
    state: mv1::NodeState,
    local: bool,
    generation: u64,
    age_s: u64,
    links: Vec<mv1::Link>,
) -> mv1::Node {
    mv1::Node {
        name: name.into(),
        role: role as i32,
        state: state as i32,
        local,
        generation,
        since: at(-(age_s as i64)),
        state_age: dur(age_s * 1000),
        links,
    }
}

pub fn membership(
    local: &str,
    view_id: u64,
    nodes: Vec<mv1::Node>,
    quorum: mv1::Quorum,
) -> mv1::StatusResponse {
    mv1::StatusResponse {
        view: Some(mv1::View {
            view_id,
            cluster: "web".into(),
            local_node: local.into(),
            nodes,
            quorum: Some(quorum),
        }),
        version: "0.1.0".into(),
        generation: 7,
        uptime: dur(7_380_000),
        rejected: [("bad_tag".to_owned(), 0), ("replay".to_owned(), 0)]
            .into_iter()
            .collect(),
        counters: Some(mv1::Counters {
            datagrams_sent: 73_800,
            datagrams_received: 73_750,
            ..Default::default()
        }),
        timing: Some(mv1::Timing {
            interval: dur(100),
            warn_after: dur(500),
            dead_after: dur(1000),
            init_dead: dur(10_000),
        }),
        recent_events: vec![],
        notices: vec![],
    }
}

/// A membership event as the daemon reports it in `recent_events`.
pub fn event(seq: u64, view_id: u64, secs: i64, kind: mv1::event::Kind) -> mv1::Event {
    mv1::Event {
        seq,
        view_id,
        at: at(secs),
        kind: Some(kind),
    }
}

pub fn quorum(
    policy: mv1::QuorumPolicy,
    quorate: bool,
    voters: u32,
    alive: u32,
    needed: u32,
) -> mv1::Quorum {
    mv1::Quorum {
        policy: policy as i32,
        quorate,
        voters,
        alive,
        needed,
    }
}

pub fn action(
    name: &str,
    result: av1::ActionResult,
    started: i64,
    took_ms: Option<u64>,
    message: &str,
) -> Option<av1::LastAction> {
    Some(av1::LastAction {
        action: name.into(),
        result: result as i32,
        started_at: at(started),
        duration: took_ms.and_then(dur),
        message: message.into(),
    })
}

pub fn agent_item(
    name: &str,
    kind: av1::AgentKind,
    state: av1::AgentState,
    failures: u32,
    detail: &str,
    last: Option<av1::LastAction>,
) -> av1::AgentStatus {
    av1::AgentStatus {
        name: name.into(),
        kind: kind as i32,
        state: state as i32,
        last_action: last,
        failures,
        detail: detail.into(),
    }
}

pub fn ready() -> Option<av1::Readiness> {
    Some(av1::Readiness {
        ready: true,
        problems: vec![],
        checked_at: at(-5),
    })
}

pub fn flags(name: &str, standby: bool, healthy: bool, holds: &[&str]) -> av1::NodeFlags {
    av1::NodeFlags {
        name: name.into(),
        standby,
        healthy,
        holds: holds.iter().map(|s| (*s).to_owned()).collect(),
    }
}

pub fn health_ok(name: &str) -> av1::HealthCheck {
    av1::HealthCheck {
        name: name.into(),
        healthy: true,
        consecutive_failures: 0,
        consecutive_successes: 40,
        last_error: String::new(),
        last_checked: at(-1),
    }
}

pub fn agent_status(
    node: &str,
    quorate: bool,
    nodes: Vec<av1::NodeFlags>,
    groups: Vec<av1::GroupStatus>,
) -> av1::StatusResponse {
    av1::StatusResponse {
        node: node.into(),
        cluster: "web".into(),
        version: "0.1.0".into(),
        membership_connected: true,
        membership_disconnected_for: None,
        quorate,
        health: vec![health_ok("tcp 127.0.0.53:53")],
        nodes,
        groups,
        fences: vec![],
        recent_events: vec![],
    }
}
