//! Stop signals: SIGTERM (systemd) and SIGINT (a terminal).
use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Resolves at the first SIGTERM or SIGINT, logging which. The handlers are registered when
/// this is called, not when the future is first polled: call it before anything else in the
/// runtime, so a signal during start-up is a clean stop too.
pub fn shutdown() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}
