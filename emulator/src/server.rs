//! The API listener: a hyper accept loop (not `axum::serve`) so a fault can close a connection
//! without any answer. In front of the provider routes it applies, in order: injected faults,
//! the rate limit, bearer-token authentication and scopes; it adds the rate-limit headers and
//! writes one audit line per request.
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::digitalocean;
use super::ratelimit::RateInfo;
use super::state::{FaultVerdict, World, unix_secs};

/// Which provider's API a path belongs to (they differ in error bodies and scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    DigitalOcean,
    Hetzner,
    Vultr,
}

impl Api {
    pub fn of_path(path: &str) -> Api {
        if path.starts_with("/hetzner/") {
            Api::Hetzner
        } else if path.starts_with("/vultr/") {
            Api::Vultr
        } else {
            Api::DigitalOcean
        }
    }
}

/// An error body in the shape of the provider's API.
pub fn api_error(api: Api, status: StatusCode, code: &str, message: &str) -> Response {
    match api {
        Api::DigitalOcean => digitalocean::error(status, code, message),
        // Hetzner Cloud: {"error": {"code": "...", "message": "...", "details": {}}}
        Api::Hetzner => (
            status,
            axum::Json(json!({"error": {"code": code, "message": message, "details": {}}})),
        )
            .into_response(),
        // Vultr: {"error": "...", "status": 401}
        Api::Vultr => (
            status,
            axum::Json(json!({"error": message, "status": status.as_u16()})),
        )
            .into_response(),
    }
}

/// Returned by the service to make hyper close the connection without an answer.
#[derive(Debug)]
struct Dropped;

/// Largest request body read (the API's bodies are a few dozen bytes).
const MAX_BODY: usize = 64 * 1024;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

pub struct ApiService {
    pub world: World,
    pub api: Router,
    pub admin: Router,
}

pub async fn serve_api(
    listener: TcpListener,
    svc: Arc<ApiService>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let svc = svc.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let svc = svc.clone();
                async move { svc.handle(req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = conn_shutdown.changed() => {}
            }
        });
    }
}

impl ApiService {
    async fn handle(&self, req: Request<Incoming>) -> Result<Response, Dropped> {
        let req = req.map(Body::new);
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        if path.starts_with("/_admin") {
            return Ok(unwrap_infallible(self.admin.clone().oneshot(req).await));
        }
        // A POST's JSON body goes into the audit log (tests check what clients send against
        // the provider's description); bodies hold ids and action types, never a token.
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
            return Err(Dropped);
        };
        let sent = (method == http::Method::POST)
            .then(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .flatten();
        let req = Request::from_parts(parts, Body::from(bytes));
        let api = Api::of_path(&path);
        let (verdict, latency) = self.world.fault_verdict(&path);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match verdict {
            FaultVerdict::Drop => {
                self.audit_request(&method, &path, sent.as_ref(), None, "dropped");
                return Err(Dropped);
            }
            FaultVerdict::Hang => {
                self.audit_request(&method, &path, sent.as_ref(), None, "hung");
                // Held open until the client gives up or the emulator shuts down.
                std::future::pending::<()>().await;
            }
            _ => {}
        }
        let rate = self.world.take_rate(bearer(&req).unwrap_or_default());
        let mut resp = match verdict {
            FaultVerdict::Status(s) => {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                api_error(
                    api,
                    status,
                    "server_error",
                    "Unexpected server-side error (injected)",
                )
            }
            FaultVerdict::RateLimited {
                reset_secs,
                retry_after_secs,
                bare,
            } => {
                let mut r = too_many(api);
                if !bare {
                    set_rate_headers(
                        &mut r,
                        RateInfo {
                            remaining: 0,
                            reset: unix_secs(std::time::SystemTime::now()) + reset_secs,
                            retry_after: retry_after_secs,
                            ..rate
                        },
                    );
                }
                self.audit_request(
                    &method,
                    &path,
                    sent.as_ref(),
                    Some(r.status()),
                    "rate_limit_burst",
                );
                return Ok(r);
            }
            _ if rate.exceeded => too_many(api),
            _ => match self.refusal(api, &req) {
                Some(r) => r,
                None => unwrap_infallible(self.api.clone().oneshot(req).await),
            },
        };
        set_rate_headers(&mut resp, rate);
        self.audit_request(&method, &path, sent.as_ref(), Some(resp.status()), "");
        Ok(resp)
    }

    /// The 401/403 answer for a request whose token is missing, unknown, revoked or lacks the
    /// scope; `None` when it may proceed.
    fn refusal(&self, api: Api, req: &Request<Body>) -> Option<Response> {
        let token = bearer(req);
        let unauthorized = || match api {
            Api::DigitalOcean => api_error(
                api,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unable to authenticate you",
            ),
            Api::Hetzner => api_error(
                api,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unable to authenticate",
            ),
            Api::Vultr => api_error(
                api,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Invalid API token.",
            ),
        };
        let Some(token) = token else {
            return Some(unauthorized());
        };
        let scopes = {
            let g = self.world.lock();
            match g.tokens.get(token) {
                Some(t) if !t.revoked => t.scopes.clone(),
                _ => return Some(unauthorized()),
            }
        };
        let scopes = scopes?;
        let needed = match api {
            Api::DigitalOcean => digitalocean::required_scope(req.method(), req.uri().path()),
            // Hetzner and Vultr tokens are read-only or read-write: writes need "write".
            Api::Hetzner | Api::Vultr => (req.method() != http::Method::GET).then_some("write"),
        };
        match needed {
            Some(scope) if !scopes.iter().any(|s| s == scope) => Some(api_error(
                api,
                StatusCode::FORBIDDEN,
                "forbidden",
                "You are not authorized to perform this operation",
            )),
            _ => None,
        }
    }

    fn audit_request(
        &self,
        method: &http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        status: Option<StatusCode>,
        fault: &str,
    ) {
        self.world.audit(json!({
            "event": "request", "method": method.as_str(), "path": path,
            "body": body,
            "status": status.map(|s| s.as_u16()),
            "fault": if fault.is_empty() { None } else { Some(fault) },
        }));
    }
}

fn too_many(api: Api) -> Response {
    api_error(
        api,
        StatusCode::TOO_MANY_REQUESTS,
        if api == Api::Hetzner {
            "rate_limit_exceeded"
        } else {
            "too_many_requests"
        },
        "API rate limit exceeded.",
    )
}

fn set_rate_headers(resp: &mut Response, rate: RateInfo) {
    let h = resp.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(rate.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(rate.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(rate.reset));
    if let Some(s) = rate.retry_after {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(s));
    }
}

/// The bearer token of a request.
fn bearer(req: &Request<Body>) -> Option<&str> {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn unwrap_infallible(r: Result<Response, Infallible>) -> Response {
    match r {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
