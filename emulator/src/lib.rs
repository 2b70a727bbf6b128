//! Tandem's provider emulator and local cluster launcher: what `ipctl demo` runs, and what the
//! test kit (`tandem-tests`) builds its end-to-end suites on.
//!
//! [`cluster`] launches a cluster on one machine: this emulator as the provider and the real
//! daemons per node. The emulator itself, a DigitalOcean-compatible API, is this module:
//! [`Emulator::start`] binds everything on port 0 of `listen` (default `127.0.0.1`) and returns
//! the bound addresses:
//! - the API (`/v2/...` as DigitalOcean, `/hetzner/v1/...` as Hetzner Cloud, `/vultr/v2/...`
//!   as Vultr, all on the same reserved IPs and servers; `/_admin/...` for tests: state,
//!   faults, tokens),
//! - one metadata service per droplet (`/metadata/v1/id`, ...),
//! - one HTTP front per reserved IP, forwarding GETs to the holder's web server.
//!
//! Admin routes (no auth, no faults), for tests and the demo:
//! - `GET /_admin/state`: holders, locks, actions, request count, current faults
//! - `POST /_admin/faults` with a [`Faults`] JSON object (it replaces the current set; `{}`
//!   clears): `latency_ms`, `error_rate` + `error_status`, `rate_limit_burst` +
//!   `rate_limit_reset_secs` (+ `rate_limit_retry_after_secs`; `rate_limit_bare`: no
//!   headers at all), `hang_next`, `drop_next`,
//!   `outage_secs` (connections closed without an answer), `error_actions`, `failing_ips`
//!   (every request naming one of these IPs gets `error_status`, until cleared),
//!   `error_next` (the next N requests get `error_status`), `fail_after_detach` (sets
//!   `error_next` once a Vultr detach succeeded)
//! - `POST /_admin/tokens {"token", "scopes"?}` adds a token; `POST /_admin/tokens/revoke
//!   {"token"}` revokes one at run time
//! - `POST /_admin/holder {"ip", "holder"}` moves an IP at once, as the control panel would
//!
//! DigitalOcean's rate limits (250 requests a minute, 5,000 an hour, per token) are enforced
//! on every API request, with its headers (`ratelimit.rs`).
//!
//! The audit log (JSON lines) has one `request` line per API request (with a POST's JSON body
//! as `body`), `action` lines, and a
//! `holder` line per change of holder (`from`/`to` droplet or null), each with `mono_ms`
//! (monotonic, since start) and `time` (wall clock, RFC 3339).
//!
//! Behaviour follows DigitalOcean's public OpenAPI description (reserved IPs, floating-IP
//! aliases, actions, droplets, error bodies, rate-limit headers); see `digitalocean.rs`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod cluster;
pub mod config;
pub mod digitalocean;
pub mod hetzner;
pub mod power;
pub mod ratelimit;
pub mod server;
pub mod sidecars;
pub mod state;
pub mod testkit;
pub mod vultr;

pub use config::{DropletConfig, EmulatorConfig, RateLimitConfig, ReservedIpConfig, TokenConfig};
pub use state::{Faults, World};

/// Where everything listens; printed as one JSON line by the binary.
#[derive(Debug, Clone, Serialize)]
pub struct Addresses {
    /// Base URL of the DigitalOcean API (`api_url`).
    pub api: String,
    /// Base URL of the Hetzner Cloud routes (`api_url` for provider hetzner).
    pub hetzner: String,
    /// Base URL of the Vultr routes (`api_url` for provider vultr).
    pub vultr: String,
    /// Base URL of the admin routes.
    pub admin: String,
    /// Metadata base URL (`metadata_url`) per droplet id.
    pub metadata: BTreeMap<u64, String>,
    /// HTTP front base URL per reserved IP.
    pub fronts: BTreeMap<IpAddr, String>,
    pub audit_log: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot bind {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running emulator. Dropping it stops every listener.
pub struct Emulator {
    pub addresses: Addresses,
    pub world: World,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(ip: IpAddr, what: String) -> Result<(TcpListener, SocketAddr), StartError> {
    let l = TcpListener::bind((ip, 0))
        .await
        .map_err(|source| StartError::Bind {
            what: what.clone(),
            source,
        })?;
    let a = l
        .local_addr()
        .map_err(|source| StartError::Bind { what, source })?;
    Ok((l, a))
}

impl Emulator {
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, StartError> {
        config.validate()?;
        let start = tokio::time::Instant::now();
        let audit = state::Audit::open(config.audit_log.as_deref(), start).map_err(|source| {
            StartError::Audit {
                path: config.audit_log.clone().unwrap_or_default(),
                source,
            }
        })?;
        let world = World::new(&config, audit);
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let (api_l, api_a) = bind(config.listen, "the API listener".into()).await?;
        let svc = Arc::new(server::ApiService {
            world: world.clone(),
            api: digitalocean::router(world.clone())
                .merge(hetzner::router(world.clone()))
                .merge(vultr::router(world.clone()))
                .merge(power::router(world.clone())),
            admin: sidecars::admin_router(world.clone()),
        });
        tasks.push(tokio::spawn(server::serve_api(api_l, svc, rx.clone())));

        let mut metadata = BTreeMap::new();
        for d in &config.droplets {
            let (l, a) = bind(
                config.listen,
                format!("the metadata listener of droplet {}", d.id),
            )
            .await?;
            tasks.push(serve_router(
                l,
                sidecars::metadata_router(world.clone(), d.id),
                rx.clone(),
            ));
            metadata.insert(d.id, format!("http://{a}"));
        }
        let mut fronts = BTreeMap::new();
        for r in &config.reserved_ips {
            let (l, a) = bind(config.listen, format!("the front of {}", r.ip)).await?;
            tasks.push(serve_router(
                l,
                sidecars::front_router(world.clone(), r.ip),
                rx.clone(),
            ));
            fronts.insert(r.ip, format!("http://{a}"));
        }
        let addresses = Addresses {
            api: format!("http://{api_a}"),
            hetzner: format!("http://{api_a}/hetzner"),
            vultr: format!("http://{api_a}/vultr"),
            admin: format!("http://{api_a}/_admin"),
            metadata,
            fronts,
            audit_log: config.audit_log.clone(),
        };
        world.audit(serde_json::json!({"event": "started", "addresses": addresses}));
        tracing::info!(api = %addresses.api, "emulator started");
        Ok(Emulator {
            addresses,
            world,
            shutdown,
            tasks,
        })
    }

    /// Stops every listener and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    mut rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let r = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.changed().await;
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "listener failed");
        }
    })
}
