//! The resource agent's Prometheus endpoint, scraped over loopback from real daemons.
//!
//! - A failover between two nodes, each running the real membership daemon and the
//!   resource agent in process, with an `exec` group: node b's metrics count the start
//!   after a's departure as a failover, with the action's duration.
//! - A reserved-ip group whose provider API (a local HTTP server) rejects the token: the
//!   readiness probe's errors are counted by kind and the group is reported not ready.
//!
//! The configuration demands a fixed metrics address, so each test binds port 0 first,
//! closes that probe and hands the port over.
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tandem_resource_agent::core::Timers;
use tandem_resource_agent::core::restart::RestartPolicy;
use tandem_resource_agent::daemon::{self, Options};
use tokio::sync::oneshot;
use tokio::time::Instant;

fn free_udp() -> SocketAddr {
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP probe");
    probe.local_addr().expect("probe address")
}

fn free_tcp() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a TCP probe");
    probe.local_addr().expect("probe address")
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
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

/// A daemon task with its stop switch.
struct Task<E> {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), E>>,
}

impl<E: std::fmt::Debug> Task<E> {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("daemon stops")
            .expect("daemon task")
            .expect("daemon result");
    }
}

fn parse(dir: &Path, yaml: &str) -> tandem_config::ClusterConfig {
    tandem_config::parse(yaml, &dir.join("cluster.yaml")).unwrap_or_else(|e| panic!("config: {e}"))
}

fn start_membership(
    cfg: &tandem_config::ClusterConfig,
    root: &Path,
    name: &str,
) -> Task<tandem_membership::daemon::DaemonError> {
    let keys = tandem_config::keys::load_keys(&cfg.auth).expect("keys");
    let paths = tandem_membership::daemon::Paths {
        run_dir: root.join(name).join("run"),
        state_dir: root.join(name).join("mstate"),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tandem_membership::daemon::run(
        cfg.clone(),
        name.to_owned(),
        tandem_membership::daemon::key_ring(&keys),
        paths,
        async {
            let _ = stopped.await;
        },
        |_| {},
    ));
    Task { stop, task }
}

fn start_agent(
    cfg: &tandem_config::ClusterConfig,
    root: &Path,
    name: &str,
) -> Task<daemon::DaemonError> {
    let opts = Options {
        config: cfg.clone(),
        node: name.into(),
        run_dir: root.join(name).join("run"),
        state_dir: root.join(name).join("state"),
        timers: timers(),
        restart: RestartPolicy::default(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon::run(opts, async {
        let _ = stopped.await;
    }));
    Task { stop, task }
}

/// The value of the sample whose name and labels are exactly `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `pred` holds (bounded), returning that scrape.
async fn wait_for(addr: SocketAddr, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(resp) = client.get(format!("http://{addr}/metrics")).send().await {
            assert_eq!(resp.status(), reqwest::StatusCode::OK);
            let text = resp.text().await.expect("body");
            if pred(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}; last scrape:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_counted_with_the_start_duration() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path();
    write_private(&dir.join("authkey"), "0123456789abcdef0123456789abcdef");
    let marker = |node: &str| {
        dir.join(format!("{node}.web.running"))
            .display()
            .to_string()
    };
    let base = format!(
        "cluster: test\nauth:\n  key_file: {dir}/authkey\ntiming:\n  interval: 50ms\n  \
         warn_after: 200ms\n  dead_after: 500ms\n  init_dead: 3s\nquorum: two_node\nnodes:\n  \
         - name: a\n    addresses: [\"{a}\"]\n  - name: b\n    addresses: [\"{b}\"]\n",
        dir = dir.display(),
        a = free_udp(),
        b = free_udp(),
    );
    // Each node's exec agent has its own marker file, as on separate machines.
    let group = |node: &str| {
        format!(
            "resources:\n  - name: web\n    prefer: a\n    agents:\n      - exec: {{ start: \"touch {f}\", \
             stop: \"rm -f {f}\", monitor: \"test -e {f} || exit 7\", monitor_interval: 200ms }}\n",
            f = marker(node)
        )
    };
    let metrics = free_tcp();
    let cfg_a = parse(dir, &format!("{base}{}", group("a")));
    let cfg_b = parse(
        dir,
        &format!("{base}{}agent:\n  metrics: \"{metrics}\"\n", group("b")),
    );
    let ma = start_membership(&cfg_a, dir, "a");
    let mb = start_membership(&cfg_b, dir, "b");
    let aa = start_agent(&cfg_a, dir, "a");
    let ab = start_agent(&cfg_b, dir, "b");

    // web runs on a (preferred); b knows it, runs nothing and started nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Path::new(&marker("a")).exists() {
        assert!(Instant::now() < deadline, "web never started on a");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = wait_for(metrics, "b connected and quorate", |t| {
        value(t, "tandem_agent_membership_connected") == Some(1.0)
            && value(t, "tandem_agent_quorate") == Some(1.0)
    })
    .await;
    assert_eq!(
        value(&before, "tandem_agent_group_running{group=\"web\"}"),
        Some(0.0),
        "{before}"
    );
    assert!(
        !before.contains("tandem_agent_group_starts_total{"),
        "{before}"
    );

    // a goes away (its membership leaves, its agent stops): b takes web over.
    aa.stop().await;
    ma.stop().await;
    let after = wait_for(metrics, "web running on b", |t| {
        value(t, "tandem_agent_group_running{group=\"web\"}") == Some(1.0)
    })
    .await;
    assert!(Path::new(&marker("b")).exists());
    assert_eq!(
        value(
            &after,
            "tandem_agent_group_starts_total{group=\"web\",cause=\"failover\"}"
        ),
        Some(1.0),
        "{after}"
    );
    let start_count = after
        .lines()
        .find(|l| {
            l.starts_with("tandem_agent_action_duration_seconds_count{group=\"web\",")
                && l.contains("action=\"start\"")
        })
        .unwrap_or_else(|| panic!("no start duration in:\n{after}"));
    assert!(start_count.ends_with(" 1"), "{start_count}");
    // The monitor keeps running on b and is timed too.
    wait_for(metrics, "monitor durations on b", |t| {
        t.lines().any(|l| {
            l.starts_with("tandem_agent_action_duration_seconds_count{group=\"web\",")
                && l.contains("action=\"monitor\"")
        })
    })
    .await;
    assert!(
        !after.contains("tandem_agent_action_failures_total{"),
        "{after}"
    );

    ab.stop().await;
    mb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_are_counted_by_kind_and_the_group_is_not_ready() {
    use axum::http::StatusCode;
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path();
    // The provider API: every request's token is rejected, as DigitalOcean answers it.
    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the API");
    let api_addr = api.local_addr().expect("API address");
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r#"{"id":"unauthorized","message":"Unable to authenticate you"}"#,
        )
    });
    let api_task = tokio::spawn(async move { axum::serve(api, app).await });
    write_private(&dir.join("do-token"), "not-a-valid-token-0123456789");
    let metrics = free_tcp();
    let yaml = format!(
        "cluster: test\nauth:\n  key_file: {dir}/authkey\nquorum: two_node\nnodes:\n  \
         - name: a\n    addresses: [\"{a}\"]\n  - name: b\n    addresses: [\"{b}\"]\n\
         resources:\n  - name: vip\n    prefer: a\n    agents:\n      - reserved-ip:\n          \
         provider: digitalocean\n          ip: 127.0.0.9\n          token_file: {dir}/do-token\n          \
         api_url: http://{api_addr}\n          metadata_url: http://{api_addr}\n          \
         droplet_ids: {{ a: 1, b: 2 }}\n          timeout: 2s\n\
         agent:\n  metrics: \"{metrics}\"\n",
        dir = dir.display(),
        a = free_udp(),
        b = free_udp(),
    );
    let cfg = parse(dir, &yaml);
    // No membership daemon: the agent starts nothing, but checks readiness all the same.
    let agent = start_agent(&cfg, dir, "a");
    let text = wait_for(metrics, "the readiness probe's result", |t| {
        value(t, "tandem_agent_group_ready{group=\"vip\"}").is_some()
    })
    .await;
    assert_eq!(
        value(&text, "tandem_agent_group_ready{group=\"vip\"}"),
        Some(0.0),
        "{text}"
    );
    let errors = "tandem_agent_provider_errors_total{provider=\"digitalocean\",ip=\"127.0.0.9\",call=\"probe\",kind=\"unauthorized\"}";
    assert_eq!(value(&text, errors), Some(1.0), "{text}");
    assert_eq!(
        value(
            &text,
            "tandem_agent_provider_call_duration_seconds_count{provider=\"digitalocean\",ip=\"127.0.0.9\",call=\"probe\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "tandem_agent_membership_connected"),
        Some(0.0),
        "{text}"
    );
    agent.stop().await;
    // The endpoint closes with the daemon.
    assert!(
        reqwest::Client::new()
            .get(format!("http://{metrics}/metrics"))
            .send()
            .await
            .is_err(),
        "the endpoint outlived the daemon"
    );
    api_task.abort();
}
