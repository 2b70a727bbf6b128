//! The agents against real programs: LSB scripts written to a temp dir, the real
//! `ocf:heartbeat:Dummy` from the resource-agents package, `sh -c` commands; time limits
//! that kill a whole process group; the group runner's ordering.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tandem_config::{ActionSettings, ExecAgent, LsbAgent, OcfAgent, Provider};
use tandem_resource_agent::agents::exec::Exec;
use tandem_resource_agent::agents::group::AgentState;
use tandem_resource_agent::agents::lsb::Lsb;
use tandem_resource_agent::agents::ocf::Ocf;
use tandem_resource_agent::agents::reserved_ip::ReservedIp;
use tandem_resource_agent::agents::{Action, Agent, AgentError, GroupRunner, Kind, RunState};
use tandem_resource_agent::provider::{
    AssignOutcome, Holder, ProviderError, Readiness, ReleaseOutcome, ReservedIpProvider, ServerId,
};

fn settings(timeout_ms: u64) -> ActionSettings {
    ActionSettings {
        timeout: Duration::from_millis(timeout_ms),
        monitor_interval: Duration::from_secs(1),
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// An init script keeping its state in a file, like a real service would with a pid file.
fn lsb_service(dir: &Path) -> PathBuf {
    let state = dir.join("running");
    script(
        dir,
        "svc",
        &format!(
            r#"case "$1" in
  start) touch {s}; echo started ;;
  stop) rm -f {s}; echo stopped ;;
  status) [ -e {s} ] && exit 0; [ -e {s}.pid ] && exit 1; exit 3 ;;
  *) exit 2 ;;
esac"#,
            s = state.display()
        ),
    )
}

#[tokio::test]
async fn lsb_script_starts_reports_status_and_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = lsb_service(dir.path());
    let lsb = Lsb::new(&LsbAgent {
        script: path.display().to_string(),
        settings: settings(5000),
    });
    assert_eq!(lsb.monitor().await, Ok(RunState::Stopped { detail: None }));
    lsb.start().await.expect("start");
    assert_eq!(lsb.monitor().await, Ok(RunState::Running));
    lsb.stop().await.expect("stop");
    assert_eq!(lsb.monitor().await, Ok(RunState::Stopped { detail: None }));
    // Status 1: dead but a pid file is left.
    std::fs::write(dir.path().join("running.pid"), "1").expect("pid file");
    match lsb.monitor().await {
        Ok(RunState::Stopped { detail: Some(d) }) => assert!(d.contains("pid file"), "{d}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn lsb_exit_codes_are_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = script(dir.path(), "broken", r#"echo "no binary" >&2; exit 5"#);
    let lsb = Lsb::new(&LsbAgent {
        script: path.display().to_string(),
        settings: settings(5000),
    });
    let e = lsb.start().await.expect_err("must fail");
    let msg = e.to_string();
    assert!(
        msg.contains("exit 5") && msg.contains("not installed") && msg.contains("no binary"),
        "{msg}"
    );
    // status 4 = unknown: an error, not a guess.
    assert!(lsb.monitor().await.is_err());
    let missing = Lsb::new(&LsbAgent {
        script: dir.path().join("nope").display().to_string(),
        settings: settings(500),
    });
    assert!(matches!(
        missing.start().await,
        Err(AgentError::Unusable { .. })
    ));
}

#[test]
fn lsb_names_without_a_slash_live_in_etc_init_d() {
    let lsb = Lsb::new(&LsbAgent {
        script: "nginx".into(),
        settings: settings(500),
    });
    assert_eq!(lsb.name(), "lsb /etc/init.d/nginx");
}

fn pid_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for its reaper is dead too.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_gone(pid: i32) -> bool {
    for _ in 0..100 {
        if pid_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_hanging_action_times_out_and_its_whole_process_group_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("child.pid");
    let path = script(
        dir.path(),
        "hang",
        &format!(
            "sleep 1000 >/dev/null 2>&1 &\necho $! > {}\necho hanging\nsleep 1000",
            pidfile.display()
        ),
    );
    let lsb = Lsb::new(&LsbAgent {
        script: path.display().to_string(),
        settings: settings(300),
    });
    let t0 = tokio::time::Instant::now();
    let e = lsb.start().await.expect_err("must time out");
    assert!(e.is_timeout(), "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    assert!(e.to_string().contains("hanging"), "{e}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("number");
    assert!(
        wait_gone(pid).await,
        "background child {pid} survived the timeout"
    );
}

#[tokio::test]
async fn a_daemon_keeping_the_output_open_does_not_hold_the_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("daemon.pid");
    // The "daemon" inherits stdout and stderr and outlives the script.
    let path = script(
        dir.path(),
        "daemon",
        &format!("sleep 30 &\necho $! > {}\nexit 0", pidfile.display()),
    );
    let exec = Exec::new(&ExecAgent {
        start: path.display().to_string(),
        stop: "true".into(),
        monitor: None,
        settings: settings(10_000),
    });
    let t0 = tokio::time::Instant::now();
    exec.start().await.expect("start");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("number");
    // A successful start leaves what it started running; this test started it, so it ends it.
    assert!(!pid_gone(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
}

#[tokio::test]
async fn exec_monitor_codes_map_to_states() {
    let mk = |monitor: Option<&str>| {
        Exec::new(&ExecAgent {
            start: "true".into(),
            stop: "exit 1".into(),
            monitor: monitor.map(Into::into),
            settings: settings(5000),
        })
    };
    assert_eq!(mk(Some("exit 0")).monitor().await, Ok(RunState::Running));
    assert_eq!(
        mk(Some("exit 7")).monitor().await,
        Ok(RunState::Stopped { detail: None })
    );
    assert_eq!(
        mk(Some("exit 3")).monitor().await,
        Ok(RunState::Stopped { detail: None })
    );
    assert!(mk(Some("echo broken; exit 1")).monitor().await.is_err());
    assert_eq!(mk(None).monitor().await, Ok(RunState::Unknown));
    assert!(mk(None).start().await.is_ok());
    assert!(mk(None).stop().await.is_err());
}

#[tokio::test]
async fn agents_do_not_inherit_the_daemon_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("env");
    // HOME is set for any test process; the agent must not see it.
    let exec = Exec::new(&ExecAgent {
        start: format!("env > {}", out.display()),
        stop: "true".into(),
        monitor: None,
        settings: settings(5000),
    });
    exec.start().await.expect("start");
    let env = std::fs::read_to_string(&out).expect("env");
    assert!(env.contains("PATH=") && !env.contains("HOME="), "{env}");
}

fn dummy(state: &Path, root: &str) -> Ocf {
    let mut params = BTreeMap::new();
    params.insert("state".to_owned(), state.display().to_string());
    Ocf::new(
        &OcfAgent {
            provider: "heartbeat".into(),
            kind: "Dummy".into(),
            params,
            ocf_root: PathBuf::from(root),
            settings: settings(20_000),
        },
        "floatip-1",
    )
}

#[tokio::test]
async fn real_ocf_dummy_agent_starts_monitors_and_stops() {
    tandem_tests::skip_unless!(tandem_tests::require::ocf_dummy());
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("dummy.state");
    let ocf = dummy(&state, "/usr/lib/ocf");
    assert_eq!(ocf.name(), "ocf heartbeat:Dummy");
    assert_eq!(ocf.monitor().await, Ok(RunState::Stopped { detail: None }));
    ocf.start().await.expect("start");
    assert!(
        state.exists(),
        "Dummy keeps its state in the OCF_RESKEY_state file"
    );
    assert_eq!(ocf.monitor().await, Ok(RunState::Running));
    ocf.stop().await.expect("stop");
    assert!(!state.exists());
    assert_eq!(ocf.monitor().await, Ok(RunState::Stopped { detail: None }));
    // Stopping a stopped resource succeeds.
    ocf.stop().await.expect("stop again");
}

#[tokio::test]
async fn ocf_agent_missing_or_escaping_resource_d_is_unusable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ocf = dummy(&dir.path().join("s"), &dir.path().display().to_string());
    match ocf.start().await {
        Err(AgentError::Unusable { reason, .. }) => {
            assert!(reason.contains("resource-agents"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
    let evil = Ocf::new(
        &OcfAgent {
            provider: "..".into(),
            kind: "Dummy".into(),
            params: BTreeMap::new(),
            ocf_root: "/usr/lib/ocf".into(),
            settings: settings(500),
        },
        "x",
    );
    assert!(matches!(
        evil.start().await,
        Err(AgentError::Unusable { .. })
    ));
}

#[tokio::test]
async fn ocf_environment_follows_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = dir.path().join("resource.d/acme");
    std::fs::create_dir_all(&agent_dir).expect("mkdir");
    let out = dir.path().join("env");
    script(
        &agent_dir,
        "Probe",
        &format!("env | grep ^OCF_ | sort > {}\nexit 0", out.display()),
    );
    let mut params = BTreeMap::new();
    params.insert("ip".to_owned(), "192.0.2.1".to_owned());
    let ocf = Ocf::new(
        &OcfAgent {
            provider: "acme".into(),
            kind: "Probe".into(),
            params,
            ocf_root: dir.path().to_owned(),
            settings: settings(5000),
        },
        "web-0",
    );
    ocf.start().await.expect("start");
    let env = std::fs::read_to_string(&out).expect("env");
    for want in [
        format!("OCF_ROOT={}", dir.path().display()),
        "OCF_RESKEY_ip=192.0.2.1".to_owned(),
        "OCF_RESOURCE_INSTANCE=web-0".to_owned(),
        "OCF_RESOURCE_TYPE=Probe".to_owned(),
        "OCF_RA_VERSION_MAJOR=1".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want} in {env}");
    }
}

fn logging_exec(log: &Path, name: &str, fail_start: bool) -> Box<dyn Agent> {
    let l = log.display();
    Box::new(Exec::new(&ExecAgent {
        start: if fail_start {
            format!("echo start-{name} >> {l}; exit 1")
        } else {
            format!("echo start-{name} >> {l}")
        },
        stop: format!("echo stop-{name} >> {l}"),
        monitor: Some(format!("grep -q start-{name} {l} || exit 7")),
        settings: settings(5000),
    }))
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn group_starts_in_order_and_stops_in_reverse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let g = GroupRunner::new(
        "web",
        vec![
            logging_exec(&log, "a", false),
            logging_exec(&log, "b", false),
            logging_exec(&log, "c", false),
        ],
    );
    assert!(!g.probe().await);
    g.start().await.expect("start");
    g.monitor().await.expect("monitor");
    assert!(g.probe().await);
    g.stop().await.expect("stop");
    assert_eq!(
        log_lines(&log),
        [
            "start-a", "start-b", "start-c", "stop-c", "stop-b", "stop-a"
        ]
    );
    assert!(g.records().iter().all(|r| r.state == AgentState::Stopped));
}

#[tokio::test]
async fn a_failed_start_stops_what_had_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let g = GroupRunner::new(
        "web",
        vec![
            logging_exec(&log, "a", false),
            logging_exec(&log, "b", true),
            logging_exec(&log, "c", false),
        ],
    );
    let e = g.start().await.expect_err("b fails");
    assert!(e.clean);
    assert!(e.agent.contains("start-b"), "{}", e.agent);
    assert_eq!(log_lines(&log), ["start-a", "start-b", "stop-b", "stop-a"]);
    let recs = g.records();
    assert_eq!(recs[1].failures, 1);
    assert!(
        recs[1]
            .last_action
            .as_ref()
            .is_some_and(|a| a.action.to_string() == "stop")
    );
}

#[tokio::test]
async fn a_monitor_names_the_agent_that_is_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let g = GroupRunner::new(
        "web",
        vec![
            logging_exec(&log, "a", false),
            logging_exec(&log, "b", false),
        ],
    );
    g.start().await.expect("start");
    std::fs::write(&log, "start-a\n").expect("rewrite");
    let e = g.monitor().await.expect_err("b is gone");
    assert!(
        e.agent.contains("start-b") && e.reason.contains("not running"),
        "{e}"
    );
    assert_eq!(g.records()[1].state, AgentState::Stopped);
}

/// A reserved IP's agent for the group runner's ordering: its start appends to the log
/// shared with [`logging_exec`], then waits at `together` (a barrier as large as the run:
/// started one after another, the first would wait forever), then fails or succeeds. Its
/// stop, like a real reserved IP's, posts nothing.
#[derive(Debug)]
struct FakeIp {
    name: String,
    log: PathBuf,
    together: Arc<tokio::sync::Barrier>,
    fail: bool,
    settings: ActionSettings,
}

impl FakeIp {
    fn boxed(
        log: &Path,
        name: &str,
        together: &Arc<tokio::sync::Barrier>,
        fail: bool,
    ) -> Box<dyn Agent> {
        Box::new(FakeIp {
            name: format!("reserved-ip {name}"),
            log: log.to_owned(),
            together: together.clone(),
            fail,
            settings: settings(5000),
        })
    }

    fn append(&self, what: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        writeln!(f, "{what}-{}", self.name).expect("write");
    }
}

impl Agent for FakeIp {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> Kind {
        Kind::ReservedIp
    }
    fn settings(&self) -> &ActionSettings {
        &self.settings
    }
    fn provider_call(&self, action: Action) -> Option<String> {
        (action != Action::Stop).then(|| "digitalocean assign".to_owned())
    }
    fn start(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move {
            self.append("start");
            self.together.wait().await;
            if self.fail {
                return Err(AgentError::Failed {
                    action: Action::Start,
                    reason: "503 service_unavailable".into(),
                    detail: String::new(),
                });
            }
            Ok(())
        })
    }
    fn stop(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(async move {
            self.append("stop");
            Ok(())
        })
    }
    fn monitor(&self) -> BoxFuture<'_, Result<RunState, AgentError>> {
        Box::pin(async { Ok(RunState::Running) })
    }
}

/// The run of reserved IPs must start at once: started in turn, the barrier never opens.
async fn start_within(
    g: &GroupRunner,
) -> Result<(), tandem_resource_agent::agents::group::StartError> {
    tokio::time::timeout(Duration::from_secs(10), g.start())
        .await
        .expect("the reserved IPs of a run did not start together")
}

#[tokio::test]
async fn consecutive_reserved_ips_start_together_between_the_agents_around_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let run = Arc::new(tokio::sync::Barrier::new(3));
    let g = GroupRunner::new(
        "web",
        vec![
            logging_exec(&log, "a", false),
            FakeIp::boxed(&log, "ip1", &run, false),
            FakeIp::boxed(&log, "ip2", &run, false),
            FakeIp::boxed(&log, "ip3", &run, false),
            logging_exec(&log, "b", false),
        ],
    );
    start_within(&g).await.expect("start");
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], "start-a");
    let mut ips = lines[1..4].to_vec();
    ips.sort();
    assert_eq!(
        ips,
        [
            "start-reserved-ip ip1",
            "start-reserved-ip ip2",
            "start-reserved-ip ip3"
        ]
    );
    assert_eq!(lines[4], "start-b");
    assert!(g.records().iter().all(|r| r.state == AgentState::Running));
}

/// The failing IPv4 listed first no longer keeps the IPv6 from being tried: it moves, and
/// the error and the records say which moved and which did not.
#[tokio::test]
async fn every_ip_of_a_run_is_tried_when_the_first_fails_and_what_moved_is_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let run = Arc::new(tokio::sync::Barrier::new(2));
    let g = GroupRunner::new(
        "web",
        vec![
            FakeIp::boxed(&log, "v4", &run, true),
            FakeIp::boxed(&log, "v6", &run, false),
        ],
    );
    let e = start_within(&g).await.expect_err("the IPv4 fails");
    assert_eq!(e.agent, "reserved-ip v4");
    assert!(e.also.is_empty() && e.clean);
    assert_eq!(e.moved, ["reserved-ip v6"]);
    let text = e.to_string();
    assert!(
        text.contains(
            "half moved: reserved-ip v6 moved here and stays here (a reserved IP is not moved \
             back), reserved-ip v4 did not move"
        ),
        "{text}"
    );
    let recs = g.records();
    assert_eq!(recs[0].state, AgentState::Failed);
    assert!(
        recs[0]
            .detail
            .starts_with("did not move: start failed: 503"),
        "{}",
        recs[0].detail
    );
    assert_eq!(recs[1].state, AgentState::Running);
    assert_eq!(
        recs[1].detail,
        "moved here, and stays: the group's start failed at reserved-ip v4"
    );
    // Both were tried, then both stopped in reverse (a reserved IP's stop moves nothing).
    let lines = log_lines(&log);
    let (starts, stops) = lines.split_at(2);
    let mut starts = starts.to_vec();
    starts.sort();
    assert_eq!(starts, ["start-reserved-ip v4", "start-reserved-ip v6"]);
    assert_eq!(stops, ["stop-reserved-ip v6", "stop-reserved-ip v4"]);
    // The journal the group's events are made of has both starts, each with its outcome.
    let starts: Vec<(String, bool)> = g
        .take_actions()
        .into_iter()
        .filter(|a| a.action == "start")
        .map(|a| (a.agent, a.ok))
        .collect();
    assert_eq!(starts.len(), 2);
    assert!(starts.contains(&("reserved-ip v4".into(), false)));
    assert!(starts.contains(&("reserved-ip v6".into(), true)));
}

#[tokio::test]
async fn a_failed_run_stops_what_came_before_and_starts_nothing_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let run = Arc::new(tokio::sync::Barrier::new(3));
    let g = GroupRunner::new(
        "web",
        vec![
            logging_exec(&log, "a", false),
            FakeIp::boxed(&log, "ip1", &run, true),
            FakeIp::boxed(&log, "ip2", &run, false),
            FakeIp::boxed(&log, "ip3", &run, true),
            logging_exec(&log, "b", false),
        ],
    );
    let e = start_within(&g).await.expect_err("two IPs fail");
    assert_eq!(e.agent, "reserved-ip ip1");
    let also: Vec<&str> = e.also.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(also, ["reserved-ip ip3"]);
    assert_eq!(e.moved, ["reserved-ip ip2"]);
    let text = e.to_string();
    assert!(
        text.contains("; reserved-ip ip3: start failed: 503")
            && text.contains("reserved-ip ip1, reserved-ip ip3 did not move"),
        "{text}"
    );
    let lines = log_lines(&log);
    assert_eq!(lines[0], "start-a");
    assert_eq!(
        lines[4..],
        [
            "stop-reserved-ip ip3",
            "stop-reserved-ip ip2",
            "stop-reserved-ip ip1",
            "stop-a"
        ]
    );
    assert!(!lines.contains(&"start-b".to_owned()), "{lines:?}");
    let recs = g.records();
    assert_eq!(
        recs[2].detail,
        "moved here, and stays: the group's start failed at reserved-ip ip1, reserved-ip ip3"
    );
    assert!(
        recs[3].detail.starts_with("did not move: "),
        "{}",
        recs[3].detail
    );
    assert_eq!(recs[4].state, AgentState::Unknown, "b never started");
}

/// A scriptable provider: the external API behind the trait, recording what it was asked.
#[derive(Debug)]
struct ScriptedProvider {
    holder: Mutex<Option<u64>>,
    me: u64,
    calls: Arc<Mutex<Vec<&'static str>>>,
    fail_assign: bool,
    /// (IP region, server region) answered by probe; `None`: probe fails.
    regions: Option<(&'static str, &'static str)>,
}

impl ReservedIpProvider for ScriptedProvider {
    fn provider(&self) -> Provider {
        Provider::DigitalOcean
    }
    fn ip(&self) -> IpAddr {
        "127.0.0.42".parse().expect("ip")
    }
    fn server_id(&self) -> BoxFuture<'_, Result<ServerId, ProviderError>> {
        Box::pin(async move { Ok(ServerId::Numeric(self.me)) })
    }
    fn holder(&self) -> BoxFuture<'_, Result<Holder, ProviderError>> {
        Box::pin(async move {
            self.calls.lock().expect("lock").push("holder");
            let h = *self.holder.lock().expect("lock");
            Ok(Holder {
                server: h.map(ServerId::Numeric),
                server_name: h.map(|n| format!("node-{n}")),
                ours: h == Some(self.me),
                locked: false,
            })
        })
    }
    fn assign(&self) -> BoxFuture<'_, Result<AssignOutcome, ProviderError>> {
        Box::pin(async move {
            self.calls.lock().expect("lock").push("assign");
            if self.fail_assign {
                return Err(ProviderError::Unauthorized {
                    provider: "digitalocean",
                    what: "assign".into(),
                });
            }
            let previous = self
                .holder
                .lock()
                .expect("lock")
                .replace(self.me)
                .map(ServerId::Numeric);
            Ok(AssignOutcome {
                already_held: previous == Some(ServerId::Numeric(self.me)),
                previous,
                action_id: Some("1".into()),
                elapsed: Duration::ZERO,
                api_calls: 1,
                errored_actions: 0,
            })
        })
    }
    fn release(&self) -> BoxFuture<'_, Result<ReleaseOutcome, ProviderError>> {
        Box::pin(async move {
            self.calls.lock().expect("lock").push("release");
            *self.holder.lock().expect("lock") = None;
            Ok(ReleaseOutcome {
                not_held: false,
                action_id: Some("2".into()),
                elapsed: Duration::ZERO,
            })
        })
    }
    fn probe(&self) -> BoxFuture<'_, Result<Readiness, ProviderError>> {
        Box::pin(async move {
            let Some((ip, server)) = self.regions else {
                return Err(ProviderError::Unauthorized {
                    provider: "digitalocean",
                    what: "probe".into(),
                });
            };
            Ok(Readiness {
                server_id: ServerId::Numeric(self.me),
                ip: self.ip(),
                region: Some(ip.into()),
                server_region: Some(server.into()),
                holder: Holder {
                    server: None,
                    server_name: None,
                    ours: false,
                    locked: false,
                },
            })
        })
    }
}

fn reserved(unassign: bool, fail_assign: bool) -> (ReservedIp, Arc<Mutex<Vec<&'static str>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let p = ScriptedProvider {
        holder: Mutex::new(Some(7)),
        me: 3,
        calls: calls.clone(),
        fail_assign,
        regions: None,
    };
    (
        ReservedIp::new(Box::new(p), unassign, settings(5000)),
        calls,
    )
}

#[tokio::test]
async fn reserved_ip_start_assigns_monitor_checks_and_stop_leaves_the_ip() {
    let (agent, calls) = reserved(false, false);
    assert_eq!(agent.name(), "reserved-ip 127.0.0.42");
    // Held by another server: lost to it, not merely stopped (a restart would take it away).
    assert_eq!(
        agent.monitor().await,
        Ok(RunState::HeldElsewhere {
            holder: "droplet 7 (node-7)".into()
        })
    );
    agent.start().await.expect("start");
    // Ours: status says which droplet holds it, by id and by the provider's name.
    let here = Ok(RunState::RunningAs {
        detail: "held by droplet 3 (node-3)".into(),
    });
    assert_eq!(agent.monitor().await, here);
    agent.stop().await.expect("stop");
    // Stopping does not unassign: the next holder's assign moves it atomically.
    assert_eq!(agent.monitor().await, here);
    assert_eq!(
        *calls.lock().expect("lock"),
        ["holder", "assign", "holder", "holder"]
    );

    let (agent, calls) = reserved(true, false);
    agent.start().await.expect("start");
    agent.stop().await.expect("stop");
    assert_eq!(*calls.lock().expect("lock"), ["assign", "release"]);
}

#[tokio::test]
async fn reserved_ip_token_rejection_is_unusable_not_retried() {
    let (agent, _) = reserved(false, true);
    match agent.start().await {
        Err(AgentError::Unusable { reason, .. }) => assert!(reason.contains("401"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn readiness_names_what_would_stop_a_takeover() {
    let mk = |regions| {
        let p = ScriptedProvider {
            holder: Mutex::new(None),
            me: 3,
            calls: Arc::default(),
            fail_assign: false,
            regions,
        };
        Box::new(ReservedIp::new(Box::new(p), false, settings(5000))) as Box<dyn Agent>
    };
    let ok = GroupRunner::new("ip", vec![mk(Some(("nyc1", "nyc1")))]);
    assert_eq!(ok.readiness().await, Some(vec![]));
    let wrong_region = GroupRunner::new("ip", vec![mk(Some(("nyc1", "ams3")))]);
    let p = wrong_region
        .readiness()
        .await
        .expect("reserved-ip can tell");
    assert!(
        p.len() == 1 && p[0].contains("nyc1") && p[0].contains("ams3"),
        "{p:?}"
    );
    let bad_token = GroupRunner::new("ip", vec![mk(None)]);
    let p = bad_token.readiness().await.expect("reserved-ip can tell");
    assert!(
        p[0].starts_with("reserved-ip 127.0.0.42: ") && p[0].contains("401"),
        "{p:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let exec_only = GroupRunner::new(
        "web",
        vec![logging_exec(&dir.path().join("log"), "a", false)],
    );
    assert_eq!(exec_only.readiness().await, None);
}

#[tokio::test]
async fn a_reserved_ip_found_on_another_server_is_a_loss_not_a_failure() {
    let (agent, _calls) = reserved(true, false);
    let g = GroupRunner::new("ip", vec![Box::new(agent)]);
    let f = g.monitor_one(0).await.expect_err("held by droplet 7");
    assert_eq!(f.lost_to.as_deref(), Some("droplet 7 (node-7)"));
    assert_eq!(g.records()[0].failures, 0, "a loss is not a local failure");
    assert_eq!(g.records()[0].detail, "held by droplet 7 (node-7)");
    g.start().await.expect("start");
    g.monitor_one(0).await.expect("ours now");
    let rec = &g.records()[0];
    assert_eq!(rec.detail, "held by droplet 3 (node-3)");
    assert_eq!(
        rec.last_action.as_ref().map(|a| a.message.as_str()),
        Some("")
    );
    // unassign_on_stop: nobody holds it afterwards, which is a plain failure again.
    g.stop().await.expect("stop");
    let f = g.monitor_one(0).await.expect_err("unassigned");
    assert_eq!(f.lost_to, None);
    assert_eq!(g.records()[0].failures, 1);
}

/// The start-up probe of a group found partly running (the holder rebooted: its droplet
/// still holds the IP, the services behind it are down) starts, in order, what it found
/// stopped; "not running" counts as no failure anywhere.
#[tokio::test]
async fn probe_completes_a_partly_running_group_without_counting_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    std::fs::write(&log, "start-a\n").expect("a already runs");
    let g = GroupRunner::new(
        "web",
        vec![
            logging_exec(&log, "a", false),
            logging_exec(&log, "b", false),
            logging_exec(&log, "c", false),
        ],
    );
    assert!(g.probe().await, "a partly running group counts as running");
    assert_eq!(log_lines(&log), ["start-a", "start-b", "start-c"]);
    let recs = g.records();
    assert!(
        recs.iter().all(|r| r.state == AgentState::Running),
        "{recs:?}"
    );
    assert!(recs.iter().all(|r| r.failures == 0), "{recs:?}");
    g.monitor().await.expect("every agent runs now");
}

/// Everything "not running" at start-up (a standby, a fresh boot): a stopped group, nothing
/// started, no agent failed.
#[tokio::test]
async fn probe_of_a_stopped_group_reports_stopped_not_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let lsb = lsb_service(dir.path());
    let state = dir.path().join("dummy.state");
    let mut agents = vec![
        logging_exec(&log, "a", false),
        Box::new(Lsb::new(&LsbAgent {
            script: lsb.display().to_string(),
            settings: settings(5000),
        })) as Box<dyn Agent>,
    ];
    match tandem_tests::require::ocf_dummy() {
        Ok(()) => agents.push(Box::new(dummy(&state, "/usr/lib/ocf"))),
        Err(why) => tandem_tests::require::skip(&format!("the OCF part only: {why}")),
    }
    let g = GroupRunner::new("web", agents);
    assert!(!g.probe().await);
    assert!(log_lines(&log).is_empty(), "nothing was started");
    let recs = g.records();
    for r in &recs {
        assert_eq!(r.state, AgentState::Stopped, "{r:?}");
        assert_eq!(r.failures, 0, "{r:?}");
        assert!(r.last_action.as_ref().is_some_and(|a| a.ok), "{r:?}");
    }
    // And it starts normally afterwards.
    g.start().await.expect("start");
    g.monitor().await.expect("running");
}

/// Completing a partly running group whose missing agent fails to start stops the group
/// (as a failed start does) and reports it not running.
#[tokio::test]
async fn probe_completion_that_fails_stops_the_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    std::fs::write(&log, "start-a\n").expect("a already runs");
    let g = GroupRunner::new(
        "web",
        vec![
            logging_exec(&log, "a", false),
            logging_exec(&log, "b", true),
        ],
    );
    assert!(!g.probe().await);
    assert_eq!(log_lines(&log), ["start-a", "start-b", "stop-b", "stop-a"]);
    assert_eq!(g.records()[1].failures, 1);
}

/// A group whose reserved IP is on another server is not completed here: starting the
/// rest would serve without the address, and the loss is for placement to handle.
#[tokio::test]
async fn probe_starts_nothing_when_the_ip_is_held_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    std::fs::write(&log, "start-a\n").expect("a already runs");
    let (ip, calls) = reserved(false, false);
    let g = GroupRunner::new(
        "web",
        vec![
            Box::new(ip),
            logging_exec(&log, "a", false),
            logging_exec(&log, "b", false),
        ],
    );
    assert!(g.probe().await, "a runs here: kept until placement decides");
    assert_eq!(log_lines(&log), ["start-a"], "b was not started");
    assert_eq!(*calls.lock().expect("lock"), ["holder"], "no assign");
}

/// Nor when the reserved IP is assigned to nobody: the probe makes no provider call that
/// membership has not asked for.
#[tokio::test]
async fn probe_assigns_nothing_when_the_ip_is_unassigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    std::fs::write(&log, "start-a\n").expect("a already runs");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let p = ScriptedProvider {
        holder: Mutex::new(None),
        me: 3,
        calls: calls.clone(),
        fail_assign: false,
        regions: None,
    };
    let g = GroupRunner::new(
        "web",
        vec![
            Box::new(ReservedIp::new(Box::new(p), false, settings(5000))),
            logging_exec(&log, "a", false),
            logging_exec(&log, "b", false),
        ],
    );
    assert!(g.probe().await);
    assert_eq!(log_lines(&log), ["start-a"], "b was not started");
    assert_eq!(*calls.lock().expect("lock"), ["holder"], "no assign");
}
