//! The tutorial's web server on each droplet: answers every GET with
//! `Droplet: NAME, IP Address: ADDRESS`. It can be taken down and up again with its droplet
//! (a dead server answers nothing useful; here it answers 503 so the front reports it).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running web server; stops when dropped.
pub struct WebServer {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    _stop: watch::Sender<bool>,
}

impl WebServer {
    pub async fn start(name: &str, public_ip: &str) -> std::io::Result<WebServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let page = format!("Droplet: {name}, IP Address: {public_ip}\n");
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let app = Router::new().fallback(move || {
            let page = page.clone();
            let up = flag.load(Ordering::Relaxed);
            async move {
                if up {
                    (StatusCode::OK, page)
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "droplet down\n".to_owned())
                }
            }
        });
        let (stop, mut rx) = watch::channel(false);
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "web server failed");
            }
        });
        Ok(WebServer {
            addr,
            up,
            _stop: stop,
        })
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}
