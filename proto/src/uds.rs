//! gRPC over Unix sockets, done fully: safe binding (a stale socket left by a dead process
//! is replaced, the socket of a live daemon never is), the socket's mode and group, health and
//! reflection beside every service, a relay that lets every stock gRPC client in whatever it
//! sends as `:authority` ([`relay`]), and a client connector with errors that say what to do.
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic_health::server::HealthReporter;

mod relay;

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{path}: another daemon is already serving on this socket")]
    InUse { path: PathBuf },
    #[error("{path}: exists and is not a socket; refusing to remove it")]
    NotASocket { path: PathBuf },
    #[error("{path}: cannot create the socket directory: {source}")]
    Directory { path: PathBuf, source: io::Error },
    #[error("{path}: cannot bind: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("{path}: cannot set mode or group: {source}")]
    Permissions { path: PathBuf, source: io::Error },
}

/// Why a client could not reach a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{path}: no socket (is the daemon running?)")]
    NotRunning { path: PathBuf },
    #[error("{path}: socket exists but nobody is listening (the daemon died?)")]
    Refused { path: PathBuf },
    #[error("{path}: permission denied (join the socket's group, or use sudo)")]
    PermissionDenied { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Transport {
        path: PathBuf,
        source: tonic::transport::Error,
    },
}

/// Binds a Unix socket at `path` with the given mode (e.g. 0o660) and, optionally, group id.
///
/// A socket file left by a dead process (connect is refused) is removed first; a socket on
/// which something still answers is left alone and reported as [`BindError::InUse`].
pub async fn bind(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| BindError::Directory {
            path: dir.to_owned(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path).await {
            Ok(_) => return Err(BindError::InUse { path: path.into() }),
            Err(_) => {
                tracing::info!(path = %path.display(), "removing stale socket left by a dead process");
                let _ = std::fs::remove_file(path);
            }
        },
        Ok(_) => return Err(BindError::NotASocket { path: path.into() }),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| BindError::Bind {
        path: path.into(),
        source,
    })?;
    let perm = |source| BindError::Permissions {
        path: path.into(),
        source,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(perm)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(perm)?;
    }
    Ok(listener)
}

/// Health and reflection services to add beside a daemon's own service. The reporter starts
/// with every Tandem service "serving"; daemons flip it as their state changes.
pub async fn standard_routes(routes: Routes, service_name: &str) -> (Routes, HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(service_name, tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("descriptor sets compiled into the binary are valid");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("descriptor sets compiled into the binary are valid");
    let routes = routes
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha);
    (routes, reporter)
}

/// Serves `routes` on `listener` until `shutdown` completes. Each connection goes through
/// [`relay`], so clients that send the socket path as `:authority` (Python, Java) are served
/// like those that send `localhost` (Go, Node). Handlers can read the caller's credentials
/// from `request.extensions().get::<tonic::transport::server::UdsConnectInfo>()`.
pub async fn serve(
    listener: UnixListener,
    routes: Routes,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = UnixListenerStream::new(listener).map_ok(relay::accept);
    Server::builder()
        .max_frame_size(relay::MAX_FRAME_SIZE)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Connects a gRPC channel to the socket at `path`, classifying the usual failures so that
/// tools can tell the operator what to do.
pub async fn connect(path: &Path) -> Result<Channel, ConnectError> {
    let path_buf = path.to_owned();
    // Probe once so the error says "not running" or "permission denied" rather than a
    // generic transport error.
    match UnixStream::connect(path).await {
        Ok(_) => {}
        Err(e) => {
            let path = path_buf.clone();
            return Err(match e.kind() {
                io::ErrorKind::NotFound => ConnectError::NotRunning { path },
                io::ErrorKind::ConnectionRefused => ConnectError::Refused { path },
                io::ErrorKind::PermissionDenied => ConnectError::PermissionDenied { path },
                _ => ConnectError::Io { path, source: e },
            });
        }
    }
    let p = path_buf.clone();
    // The URI is required by the HTTP/2 layer but never resolved: the connector ignores it.
    Endpoint::from_static("http://tandem.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|source| ConnectError::Transport {
            path: path_buf,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // A socket file whose listener is gone: stale.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind(&path, 0o660, None)
            .await
            .expect("stale socket replaced");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        match bind(&path, 0o660, None).await {
            Err(BindError::InUse { .. }) => {}
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(live);
    }

    #[tokio::test]
    async fn regular_file_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            bind(&path, 0o660, None).await,
            Err(BindError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[tokio::test]
    async fn connect_errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.sock");
        assert!(matches!(
            connect(&path).await,
            Err(ConnectError::NotRunning { .. })
        ));
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(matches!(
            connect(&path).await,
            Err(ConnectError::Refused { .. })
        ));
    }

    #[tokio::test]
    async fn health_and_reflection_answer_over_the_socket() {
        use tonic_health::pb::health_client::HealthClient;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let listener = bind(&path, 0o600, None).await.unwrap();
        let (routes, _reporter) = standard_routes(Routes::default(), "x.Y").await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, routes, async {
            let _ = rx.await;
        }));
        let channel = connect(&path).await.unwrap();
        let reply = HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: "x.Y".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
