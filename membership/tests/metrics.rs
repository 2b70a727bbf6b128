//! The Prometheus endpoint of two in-process membership daemons, scraped over loopback.
//!
//! The configuration demands a fixed metrics address, so the test binds port 0 first,
//! closes that probe and hands the port to the daemon.
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tandem_membership::daemon;
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

struct Node {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
}

impl Node {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("daemon stops")
            .expect("daemon task")
            .expect("daemon result");
    }
}

fn start(dir: &std::path::Path, config: &str, name: &str) -> Node {
    let cfg = tandem_config::parse(config, &dir.join("cluster.yaml")).expect("valid config");
    let keys = tandem_config::keys::load_keys(&cfg.auth).expect("keys");
    let paths = daemon::Paths {
        run_dir: dir.join(format!("run-{name}")),
        state_dir: dir.join(format!("state-{name}")),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon::run(
        cfg,
        name.to_owned(),
        daemon::key_ring(&keys),
        paths,
        async {
            let _ = rx.await;
        },
        |_| {},
    ));
    Node {
        stop: Some(tx),
        task,
    }
}

async fn scrape(client: &reqwest::Client, addr: SocketAddr) -> Option<String> {
    let resp = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?;
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let ct = resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    Some(resp.text().await.expect("body"))
}

/// The value of the sample whose name and labels are exactly `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `pred` holds (bounded), returning that scrape.
async fn wait_for(
    client: &reqwest::Client,
    addr: SocketAddr,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(t) = scrape(client, addr).await {
            if pred(&t) {
                return t;
            }
            last = t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}; last scrape:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_heartbeats_per_link_and_the_detection_of_a_peer_leaving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("authkey");
    std::fs::write(&key_file, "0123456789abcdef0123456789abcdef").expect("write key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let metrics = free_tcp();
    let config = format!(
        "cluster: test\nauth:\n  key_file: {}\ntiming:\n  interval: 50ms\n  warn_after: 200ms\n  \
         dead_after: 500ms\n  init_dead: 3s\nquorum: two_node\nnodes:\n  - name: a\n    \
         addresses: [\"{}\"]\n  - name: b\n    addresses: [\"{}\"]\n\
         membership:\n  metrics: \"{metrics}\"\n",
        key_file.display(),
        free_udp(),
        free_udp(),
    );
    // b runs without metrics: the same config, its endpoint section removed.
    let config_b = config.split("membership:").next().unwrap().to_owned();
    let a = start(dir.path(), &config, "a");
    let b = start(dir.path(), &config_b, "b");
    let client = reqwest::Client::new();

    let received = "tandem_membership_link_received_total{node=\"b\",link=\"0\"}";
    let first = wait_for(&client, metrics, "b UP with heartbeats counted", |t| {
        value(t, "tandem_membership_node_alive{node=\"b\"}") == Some(1.0)
            && value(t, received).is_some_and(|v| v > 0.0)
    })
    .await;
    let before = value(&first, received).unwrap();
    assert!(
        first.contains("tandem_membership_node_up_total{node=\"b\""),
        "{first}"
    );
    assert_eq!(
        value(
            &first,
            "tandem_membership_link_transitions_total{node=\"b\",link=\"0\",state=\"up\"}"
        ),
        Some(1.0),
        "{first}"
    );
    // Heartbeats keep arriving: the per-link count grows between scrapes.
    wait_for(&client, metrics, "more heartbeats from b", |t| {
        value(t, received).is_some_and(|v| v > before)
    })
    .await;

    // Only /metrics is served.
    let other = client
        .get(format!("http://{metrics}/other"))
        .send()
        .await
        .expect("request");
    assert_eq!(other.status(), reqwest::StatusCode::NOT_FOUND);

    // b stops cleanly: a detects it as gone (reason "left"), once.
    b.stop().await;
    let after = wait_for(&client, metrics, "b declared dead", |t| {
        value(t, "tandem_membership_node_alive{node=\"b\"}") == Some(0.0)
    })
    .await;
    assert_eq!(
        value(
            &after,
            "tandem_membership_node_dead_total{node=\"b\",reason=\"left\"}"
        ),
        Some(1.0),
        "{after}"
    );

    // Shutting a down closes the endpoint too.
    a.stop().await;
    assert!(
        client
            .get(format!("http://{metrics}/metrics"))
            .send()
            .await
            .is_err(),
        "the endpoint outlived the daemon"
    );
}
