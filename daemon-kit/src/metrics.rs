//! The daemons' Prometheus endpoint: `GET /metrics`, rendered afresh for every scrape.
//!
//! hyper (through axum) does the HTTP; every response asks the client to close the
//! connection, so an idle daemon keeps no scraper connections open between scrapes.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use tokio::net::TcpListener;

/// Prometheus' text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the page; `None` while the daemon is shutting down (answered with 503).
pub type RenderFn = Arc<dyn Fn() -> BoxFuture<'static, Option<String>> + Send + Sync>;

/// Why the endpoint could not be bound. `setting` names the configuration key.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "{setting} {addr}: only loopback addresses are served (the metrics reveal the cluster's topology)"
    )]
    NotLoopback { setting: String, addr: SocketAddr },
    #[error("{setting} {addr}: cannot bind: {source}")]
    Bind {
        setting: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the endpoint of configuration key `setting` at `addr` (loopback only, like the
/// configuration checks), before the daemon starts anything, so a taken port fails the
/// start-up rather than a scrape; logs the URL.
pub async fn bind(setting: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    if !addr.ip().is_loopback() {
        return Err(BindError::NotLoopback {
            setting: setting.to_owned(),
            addr,
        });
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError::Bind {
            setting: setting.to_owned(),
            addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(address = %bound, "metrics served at http://{bound}/metrics");
    Ok(listener)
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    render: RenderFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(render);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn scrape(State(render): State<RenderFn>) -> Response {
    let close = (header::CONNECTION, "close");
    match render().await {
        Some(page) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, CONTENT_TYPE), close],
            page,
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, [close], "shutting down\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        crate::cli::runtime().unwrap()
    }

    #[test]
    fn only_loopback_is_bound_and_a_taken_port_is_named() {
        rt().block_on(async {
            let e = bind("agent.metrics", "0.0.0.0:0".parse().unwrap())
                .await
                .unwrap_err();
            assert!(matches!(e, BindError::NotLoopback { .. }), "{e}");
            assert!(
                e.to_string().starts_with("agent.metrics 0.0.0.0:0: "),
                "{e}"
            );
            let first = bind("m", "127.0.0.1:0".parse().unwrap()).await.unwrap();
            let taken = first.local_addr().unwrap();
            let e = bind("m", taken).await.unwrap_err();
            assert!(matches!(e, BindError::Bind { .. }), "{e}");
        });
    }
}
