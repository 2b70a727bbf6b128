//! The daemons' Prometheus endpoint: `GET /metrics`, rendered afresh for every scrape.
//!
//! hyper (through axum) does the HTTP; every response asks the client to close the
//! connection, so an idle daemon keeps no scraper connections open between scrapes.
use std::future::Future;
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
