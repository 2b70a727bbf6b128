//! Optional Prometheus endpoint (`membership.metrics`, loopback only).
//!
//! Each scrape asks the protocol loop for a Status and renders it with prometheus-client,
//! so the metrics can never disagree with `Status` and the loop keeps no second set of
//! counters. The HTTP side is deliberately tiny: one GET, one response, bounded reads.
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tandem_proto::membership::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Longest request head accepted; scrapers send a few hundred bytes.
const MAX_REQUEST: usize = 8192;
/// A client that does not finish its request in this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Labels = Vec<(String, String)>;

/// Renders a Status as Prometheus text exposition.
pub fn render(s: &pb::StatusResponse) -> String {
    let mut r = Registry::with_prefix("tandem_membership");
    let gauge = |r: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        r.register(name, help, f.clone());
        f
    };
    let counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        r.register(name, help, c);
    };
    let alive = gauge(&mut r, "node_alive", "1 if the node is UP or LATE");
    let generation = gauge(
        &mut r,
        "node_generation",
        "The node's generation (0: never heard)",
    );
    let link_up = gauge(&mut r, "link_up", "1 if the link to the node is UP");
    let rtt = gauge(
        &mut r,
        "link_rtt_seconds",
        "Smoothed heartbeat round-trip time",
    );
    let loss = gauge(
        &mut r,
        "link_loss_ratio",
        "Share of the last 100 heartbeats lost",
    );
    let quorate = Gauge::<f64, AtomicU64>::default();
    r.register("quorate", "1 if this node has quorum", quorate.clone());
    if let Some(v) = &s.view {
        for n in &v.nodes {
            let l = vec![("node".to_owned(), n.name.clone())];
            let up = matches!(
                pb::NodeState::try_from(n.state),
                Ok(pb::NodeState::Up | pb::NodeState::Late)
            );
            alive.get_or_create(&l).set(if up { 1.0 } else { 0.0 });
            generation.get_or_create(&l).set(n.generation as f64);
            if n.local {
                continue;
            }
            for link in &n.links {
                let l = vec![
                    ("node".to_owned(), n.name.clone()),
                    ("link".to_owned(), link.index.to_string()),
                ];
                let is_up = link.state == pb::LinkState::Up as i32;
                link_up.get_or_create(&l).set(if is_up { 1.0 } else { 0.0 });
                if let Some(d) = &link.rtt {
                    rtt.get_or_create(&l)
                        .set(tandem_proto::time::from_duration(d).as_secs_f64());
                }
                loss.get_or_create(&l).set(link.loss);
            }
        }
        let q = v.quorum.as_ref().is_some_and(|q| q.quorate);
        quorate.set(if q { 1.0 } else { 0.0 });
    }
    let rejected = Family::<Labels, Counter<u64>>::default();
    r.register(
        "rejected",
        "Datagrams rejected, by reason",
        rejected.clone(),
    );
    for (reason, n) in &s.rejected {
        rejected
            .get_or_create(&vec![("reason".to_owned(), reason.clone())])
            .inc_by(*n);
    }
    if let Some(c) = &s.counters {
        counter(&mut r, "datagrams_sent", "Datagrams sent", c.datagrams_sent);
        counter(
            &mut r,
            "datagrams_received",
            "Datagrams received",
            c.datagrams_received,
        );
        counter(
            &mut r,
            "send_errors",
            "Datagrams the socket refused",
            c.send_errors,
        );
        counter(
            &mut r,
            "messages_sent",
            "Cluster messages queued",
            c.messages_sent,
        );
        counter(
            &mut r,
            "messages_delivered",
            "Cluster messages delivered",
            c.messages_delivered,
        );
        counter(
            &mut r,
            "messages_retransmitted",
            "Cluster messages retransmitted",
            c.messages_retransmitted,
        );
        counter(
            &mut r,
            "messages_dropped",
            "Cluster messages discarded",
            c.messages_dropped,
        );
        counter(
            &mut r,
            "watch_subscribers_dropped",
            "Watch streams dropped for being too slow",
            c.watch_subscribers_dropped,
        );
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// Serves `/metrics` (any path, in fact) on `listener`; `status` fetches a fresh Status.
pub async fn serve<F, Fut>(listener: TcpListener, status: F)
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Option<pb::StatusResponse>> + Send,
{
    loop {
        let (mut conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = status.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(512);
            let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
                    let n = conn.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let response = match status().await {
                Some(s) => {
                    let body = render(&s);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                None => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\
                         Connection: close\r\n\r\n"
                    .to_owned(),
            };
            if let Err(e) = conn.write_all(response.as_bytes()).await {
                tracing::debug!(%peer, error = %e, "metrics write failed");
            }
            let _ = conn.shutdown().await;
        });
    }
}

/// Refuses anything but a loopback address: the metrics reveal the cluster's topology.
pub fn check_address(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "membership.metrics {addr}: only loopback addresses are served"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_as_prometheus_text() {
        let s = pb::StatusResponse {
            view: Some(pb::View {
                nodes: vec![pb::Node {
                    name: "b".into(),
                    state: pb::NodeState::Up as i32,
                    generation: 7,
                    links: vec![pb::Link {
                        index: 0,
                        state: pb::LinkState::Up as i32,
                        loss: 0.25,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                quorum: Some(pb::Quorum {
                    quorate: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            rejected: [("bad_tag".to_owned(), 3)].into(),
            counters: Some(pb::Counters {
                datagrams_sent: 11,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render(&s);
        for line in [
            "tandem_membership_node_alive{node=\"b\"} 1.0",
            "tandem_membership_node_generation{node=\"b\"} 7.0",
            "tandem_membership_link_loss_ratio{node=\"b\",link=\"0\"} 0.25",
            "tandem_membership_quorate 1.0",
            "tandem_membership_rejected_total{reason=\"bad_tag\"} 3",
            "tandem_membership_datagrams_sent_total 11",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn only_loopback_is_served() {
        assert!(check_address("127.0.0.1:9100".parse().unwrap()).is_ok());
        assert!(check_address("[::1]:9100".parse().unwrap()).is_ok());
        assert!(check_address("0.0.0.0:9100".parse().unwrap()).is_err());
    }
}
