//! Health probes against real loopback servers, and the runner under paused time.
use std::time::Duration;

use tandem_config::{HealthCheck, HealthProbe};
use tandem_resource_agent::health::{self, Health};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A minimal HTTP server answering every request with `status`.
async fn http_server(status: u16) -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/"), task)
}

#[tokio::test]
async fn tcp_probe_passes_on_a_listener_and_fails_without() {
    let client = reqwest::Client::new();
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let t = Duration::from_secs(1);
    assert_eq!(
        health::probe(&HealthProbe::Tcp(addr.clone()), t, &client).await,
        Ok(())
    );
    drop(l);
    let e = health::probe(&HealthProbe::Tcp(addr.clone()), t, &client)
        .await
        .expect_err("closed");
    assert!(e.contains(&addr), "{e}");
}

#[tokio::test]
async fn http_probe_checks_the_status() {
    let client = reqwest::Client::new();
    let (url, task) = http_server(503).await;
    let t = Duration::from_secs(2);
    let e = health::probe(
        &HealthProbe::Http {
            url: url.clone(),
            expect: 200,
        },
        t,
        &client,
    )
    .await
    .expect_err("503");
    assert!(e.contains("503") && e.contains("200"), "{e}");
    assert_eq!(
        health::probe(&HealthProbe::Http { url, expect: 503 }, t, &client).await,
        Ok(())
    );
    task.abort();
}

#[tokio::test]
async fn http_probe_of_a_silent_server_times_out() {
    let client = reqwest::Client::new();
    // Accepts connections (the backlog) but never answers.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", l.local_addr().expect("addr"));
    let e = health::probe(
        &HealthProbe::Http { url, expect: 200 },
        Duration::from_millis(300),
        &client,
    )
    .await
    .expect_err("silent");
    assert!(e.contains("no answer"), "{e}");
}

#[tokio::test]
async fn exec_probe_uses_the_exit_code() {
    let client = reqwest::Client::new();
    let t = Duration::from_secs(2);
    assert_eq!(
        health::probe(&HealthProbe::Exec("exit 0".into()), t, &client).await,
        Ok(())
    );
    let e = health::probe(&HealthProbe::Exec("echo down; exit 2".into()), t, &client)
        .await
        .expect_err("exit 2");
    assert!(e.contains("exit 2") && e.contains("down"), "{e}");
}

#[tokio::test]
async fn runner_reports_a_check_going_unhealthy_after_fall_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("ok");
    std::fs::write(&flag, "").expect("flag");
    let check = HealthCheck {
        probe: HealthProbe::Exec(format!("test -e {}", flag.display())),
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        fall: 2,
        rise: 1,
    };
    let (tx, mut rx) = tokio::sync::watch::channel(Health::new(&[], tokio::time::Instant::now()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(health::run(vec![check], tx, async {
        let _ = stop_rx.await;
    }));
    let wait_for = |want: bool, rx: &mut tokio::sync::watch::Receiver<Health>| {
        let mut rx = rx.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                rx.wait_for(|h| h.healthy() == want && !h.checks.is_empty()),
            )
            .await
            .expect("in time")
            .expect("runner alive")
            .clone()
        }
    };
    wait_for(true, &mut rx).await;
    std::fs::remove_file(&flag).expect("rm");
    let h = wait_for(false, &mut rx).await;
    assert!(h.checks[0].consecutive_failures >= 2);
    std::fs::write(&flag, "").expect("flag");
    wait_for(true, &mut rx).await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic");
}
