//! The HTTP layer every provider shares: one warm `reqwest` client, bearer auth with the
//! header marked sensitive, per-request timeouts, and the retry loop (transient failures with
//! backon's capped jittered backoff; 429 for its Retry-After, else until the rate-limit reset)
//! bounded by a deadline, every request paced by the token's budget (`budget.rs`).
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::BackoffBuilder;
use reqwest::header::AUTHORIZATION;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tandem_config::{Provider, Secret};
use tokio::time::Instant;

use tokio::sync::OnceCell;

use super::budget::{self, Class};
use super::stats;
use super::{Options, Progress, ProviderError, ServerId};

/// The wait after the `attempt`-th (1-based) errored action.
fn errored_action_wait(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    ERRORED_ACTION_FIRST_WAIT
        .saturating_mul(1 << doublings)
        .min(ERRORED_ACTION_MAX_WAIT)
}

/// Longest wait accepted for a rate-limit reset; past it the reset value is treated as bogus.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(120);
/// Extra wait after a 429's reset so the first request after it lands in the new window.
const RATE_LIMIT_SLACK: Duration = Duration::from_millis(100);
/// First wait after an action ended `errored`; it doubles per errored action up to
/// [`ERRORED_ACTION_MAX_WAIT`]. Short, because the IP is usually unheld meanwhile, yet long
/// enough that a provider failing every action is not hammered.
const ERRORED_ACTION_FIRST_WAIT: Duration = Duration::from_millis(500);
const ERRORED_ACTION_MAX_WAIT: Duration = Duration::from_secs(4);

/// The metadata service every provider runs on the link-local address.
const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";

/// Where a provider's metadata service names this server: a plain-text answer at `path`, or
/// the string field `json_key` of a JSON answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetadataId {
    pub path: &'static str,
    pub json_key: Option<&'static str>,
}

/// One answer the provider logic has to interpret (everything but transient failures).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The provider's error code and message, in whichever shape the provider uses.
    pub fn error_parts(&self) -> (String, String) {
        let b = &self.body;
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(e) = b.get("error").filter(|e| e.is_object()) {
            (s(e.get("code")), s(e.get("message")))
        } else if let Some(m) = b.get("error").and_then(Value::as_str) {
            (self.status.as_str().to_owned(), m.to_owned())
        } else {
            (s(b.get("id")), s(b.get("message")))
        }
    }

    /// Turns a non-success reply into the matching error, the same way for every provider:
    /// 401 and 403 (naming the scope `forbidden_scope` the token lacks) and 404 (naming
    /// `missing`) are fatal, other 4xx a refusal, anything else unexpected, which may have
    /// changed state when the call was `mutating`.
    pub fn refusal(
        &self,
        provider: &'static str,
        what: &str,
        forbidden_scope: &'static str,
        missing: impl FnOnce() -> String,
        mutating: bool,
    ) -> ProviderError {
        let (code, message) = self.error_parts();
        let what = what.to_owned();
        match self.status {
            StatusCode::UNAUTHORIZED => ProviderError::Unauthorized { provider, what },
            StatusCode::FORBIDDEN => ProviderError::Forbidden {
                provider,
                scope: forbidden_scope,
                what,
            },
            StatusCode::NOT_FOUND => ProviderError::NotFound {
                provider,
                what: missing(),
            },
            s if s.is_client_error() => ProviderError::Refused {
                provider,
                what,
                status: s.as_u16(),
                code,
                message,
            },
            s => ProviderError::Unexpected {
                provider,
                what,
                status: s.as_u16(),
                detail: message,
                state_may_have_changed: mutating,
            },
        }
    }
}

pub(crate) struct Api {
    pub kind: Provider,
    /// `kind`'s name, for errors and logs.
    pub provider: &'static str,
    client: reqwest::Client,
    base: String,
    auth: super::token::Auth,
    opts: Options,
    calls: AtomicU64,
    /// This machine's server id: configured, or asked once from the metadata service.
    server: OnceCell<ServerId>,
    /// The token's request budget, shared with its other clients in this process.
    pub budget: Arc<budget::Shared>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("provider", &self.provider)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(
        kind: Provider,
        default_base: &str,
        token: &Secret,
        opts: Options,
    ) -> Result<Api, ProviderError> {
        let provider = kind.name();
        let noun = kind.server_noun();
        let server = OnceCell::new();
        match opts.server_id.clone() {
            Some(ServerId::Text(t)) if kind.numeric_server_ids() => {
                return Err(ProviderError::Config(format!(
                    "{provider}: {noun} ids are numbers, not {t:?}"
                )));
            }
            Some(ServerId::Numeric(n)) if !kind.numeric_server_ids() => {
                return Err(ProviderError::Config(format!(
                    "{provider}: {noun} ids are UUIDs, not {n}; leave droplet_id unset so the \
                     metadata service names the {noun}"
                )));
            }
            Some(id) => {
                let _ = server.set(id);
            }
            None => {}
        }
        let auth = super::token::Auth::new(provider, token, opts.token_file.clone())?;
        let client = reqwest::Client::builder()
            .connect_timeout(opts.request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("tandem/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                ProviderError::Config(format!("{provider}: cannot build the HTTP client: {e}"))
            })?;
        let base = opts
            .api_url
            .clone()
            .unwrap_or_else(|| default_base.to_owned())
            .trim_end_matches('/')
            .to_owned();
        // A token re-read later keeps this budget: the limits are the account's anyway.
        let budget = budget::shared(kind, &base, token.expose());
        Ok(Api {
            kind,
            provider,
            client,
            base,
            auth,
            opts,
            calls: AtomicU64::new(0),
            server,
            budget,
        })
    }

    pub fn opts(&self) -> &Options {
        &self.opts
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The next wait of a polling loop: the schedule's, stretched by the token's budget.
    pub fn poll_wait(&self, scheduled: Option<Duration>) -> Duration {
        self.budget
            .poll_wait(scheduled.unwrap_or(self.opts.poll.max))
    }

    pub fn progress(&self, p: Progress) {
        if let Some(f) = &self.opts.progress {
            f(&p);
        }
    }

    pub fn deadline(&self) -> Instant {
        Instant::now() + self.opts.deadline
    }

    pub fn gave_up(
        &self,
        what: &str,
        started: Instant,
        last: String,
        state_may_have_changed: bool,
    ) -> ProviderError {
        ProviderError::GaveUp {
            provider: self.provider,
            what: what.to_owned(),
            elapsed: started.elapsed(),
            last,
            state_may_have_changed,
        }
    }

    /// Waits until the token's budget admits one more request of the current class
    /// ([`budget::current`]). A routine request that would wait more than half of what is
    /// left of its call goes within the limits of a move instead: it is never failed for
    /// the budget's sake.
    async fn pace(
        &self,
        what: &str,
        started: Instant,
        deadline: Instant,
        changed: bool,
    ) -> Result<(), ProviderError> {
        let class = budget::current();
        let mut w = self.budget.wait(class);
        if class == Class::Routine && w > deadline.saturating_duration_since(Instant::now()) / 2 {
            w = self.budget.wait(Class::Move);
        }
        if w.is_zero() {
            return Ok(());
        }
        tracing::debug!(provider = self.provider, what, wait = ?w, ?class, "pacing within the request budget");
        self.sleep_within(
            w,
            deadline,
            what,
            started,
            "the token's request budget is spent",
            changed,
        )
        .await
    }

    /// Sleeps `d`, or fails when that would pass the deadline.
    pub async fn sleep_within(
        &self,
        d: Duration,
        deadline: Instant,
        what: &str,
        started: Instant,
        last: &str,
        changed: bool,
    ) -> Result<(), ProviderError> {
        if Instant::now() + d >= deadline {
            return Err(self.gave_up(what, started, last.to_owned(), changed));
        }
        tokio::time::sleep(d).await;
        Ok(())
    }

    /// After the `attempt`-th (1-based) errored action of one call: logs it, waits the
    /// errored-action backoff (0.5s, 1s, 2s, 4s, 4s ...) and returns, so the caller re-reads
    /// the holder (the action may have half-happened) before posting again. When that wait
    /// would pass `deadline` the call ends with [`ProviderError::ActionErrored`] instead.
    pub async fn after_errored_action(
        &self,
        what: &str,
        action_id: String,
        attempt: u32,
        deadline: Instant,
    ) -> Result<(), ProviderError> {
        let wait = errored_action_wait(attempt);
        if Instant::now() + wait >= deadline {
            tracing::warn!(
                provider = self.provider,
                what,
                action_id,
                attempt,
                "action ended with an error and the time budget is spent; giving up"
            );
            return Err(ProviderError::ActionErrored {
                provider: self.provider,
                action_id,
                attempts: attempt,
            });
        }
        tracing::warn!(provider = self.provider, what, action_id, attempt, wait = ?wait,
            "action ended with an error; re-reading the holder before posting again");
        self.progress(Progress::Retrying {
            reason: format!("action {action_id} ended with an error (attempt {attempt})"),
            wait,
        });
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Sends one API request, retrying transient failures until `deadline`, and returns the
    /// first non-transient answer. `mutating` says whether a lost answer may have changed state.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
        mutating: bool,
        deadline: Instant,
    ) -> Result<Reply, ProviderError> {
        let started = Instant::now();
        let url = format!("{}{}", self.base, path);
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.opts.retry_min)
            .with_max_delay(self.opts.retry_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        // A request whose answer was lost may have been applied.
        let mut maybe_applied = false;
        loop {
            self.pace(what, started, deadline, maybe_applied).await?;
            let now = Instant::now();
            if now >= deadline {
                return Err(self.gave_up(what, started, "deadline reached".into(), maybe_applied));
            }
            let timeout = self.opts.request_timeout.min(deadline - now);
            let mut req = self
                .client
                .request(method.clone(), &url)
                .header(AUTHORIZATION, self.auth.header())
                .timeout(timeout);
            if let Some(b) = body {
                req = req.json(b);
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.budget.sent();
            let failure = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let reset = header_u64(&resp, "ratelimit-reset");
                    let retry_after = header_u64(&resp, "retry-after");
                    // A 429 with Retry-After is the burst limit: its own wait says when,
                    // and its headers say nothing new about the hour.
                    if status != StatusCode::TOO_MANY_REQUESTS || retry_after.is_none() {
                        self.budget.observed(
                            header_u64(&resp, "ratelimit-remaining"),
                            reset.map(until_epoch),
                        );
                    }
                    // The token's hourly limit, on every answer of the providers that send it.
                    if advertises_hourly_limit(self.kind)
                        && let Some(v) = resp.headers().get("ratelimit-limit")
                    {
                        self.budget
                            .advertised(v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()));
                    }
                    let text = resp.text().await;
                    match text {
                        Ok(_) if status == StatusCode::TOO_MANY_REQUESTS => {
                            stats::rate_limited(self.kind);
                            let wait = rate_limit_wait(retry_after, reset);
                            tracing::warn!(provider = self.provider, what, wait = ?wait, "rate limited");
                            self.progress(Progress::RateLimited { wait });
                            self.sleep_within(
                                wait,
                                deadline,
                                what,
                                started,
                                "rate limited past the deadline (429)",
                                maybe_applied,
                            )
                            .await?;
                            stats::rate_limit_waited(self.kind, wait);
                            continue;
                        }
                        Ok(text) if status.is_server_error() => {
                            maybe_applied |= mutating;
                            format!("{status} from the API: {}", snippet(&text))
                        }
                        Ok(text) => {
                            let body = if text.trim().is_empty() {
                                Value::Null
                            } else {
                                serde_json::from_str(&text).unwrap_or(Value::String(snippet(&text)))
                            };
                            return Ok(Reply { status, body });
                        }
                        Err(e) => {
                            maybe_applied |= mutating;
                            format!("reading the answer failed: {}", describe(&e))
                        }
                    }
                }
                Err(e) => {
                    // A connect failure means the request never left; anything later may
                    // have reached the provider.
                    maybe_applied |= mutating && !e.is_connect();
                    describe(&e)
                }
            };
            let wait = backoff.next().unwrap_or(self.opts.retry_max);
            tracing::debug!(provider = self.provider, what, error = %failure, wait = ?wait, "transient failure, retrying");
            self.progress(Progress::Retrying {
                reason: failure.clone(),
                wait,
            });
            self.sleep_within(wait, deadline, what, started, &failure, maybe_applied)
                .await?;
        }
    }

    /// A GET whose one good answer is 200: its body, or the reply for the caller to turn into
    /// its refusal.
    pub async fn get(
        &self,
        path: &str,
        what: &str,
        deadline: Instant,
    ) -> Result<Result<Value, Reply>, ProviderError> {
        let r = self
            .call(Method::GET, path, None, what, false, deadline)
            .await?;
        Ok(if r.status == StatusCode::OK {
            Ok(r.body)
        } else {
            Err(r)
        })
    }

    /// The configured server id, if any (no request).
    pub fn known_server_id(&self) -> Option<&ServerId> {
        self.server.get()
    }

    /// This machine's server id: configured, else read once from the metadata service at
    /// `source`.
    pub async fn server_id(
        &self,
        source: MetadataId,
        deadline: Instant,
    ) -> Result<ServerId, ProviderError> {
        self.server
            .get_or_try_init(|| async {
                let base = self
                    .opts
                    .metadata_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_METADATA_URL.to_owned());
                let text = self.metadata(&base, source.path, deadline).await?;
                let bad = |reason: String| ProviderError::Metadata {
                    url: format!("{base}{}", source.path),
                    reason,
                };
                let noun = self.kind.server_noun();
                let id = match source.json_key {
                    None => text.clone(),
                    Some(key) => {
                        let v: Value = serde_json::from_str(&text)
                            .map_err(|e| bad(format!("not JSON: {e}")))?;
                        v.get(key)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    }
                };
                if id.is_empty() {
                    return Err(bad(format!("no {noun} id in the answer")));
                }
                if !self.kind.numeric_server_ids() {
                    return Ok(ServerId::Text(id));
                }
                id.parse().map(ServerId::Numeric).map_err(|_| {
                    let shown: String = id.chars().take(40).collect();
                    bad(format!("not a {noun} id: {shown:?}"))
                })
            })
            .await
            .cloned()
    }

    /// A plain-text GET on the metadata service (no token: it is a link-local service).
    pub async fn metadata(
        &self,
        base: &str,
        path: &str,
        deadline: Instant,
    ) -> Result<String, ProviderError> {
        let url = format!("{}{}", base.trim_end_matches('/'), path);
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.opts.retry_min)
            .with_max_delay(self.opts.retry_max)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let timeout = self
                .opts
                .request_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            self.calls.fetch_add(1, Ordering::Relaxed);
            let reason = match self.client.get(&url).timeout(timeout).send().await {
                Ok(r) if r.status().is_success() => match r.text().await {
                    Ok(t) => return Ok(t.trim().to_owned()),
                    Err(e) => describe(&e),
                },
                Ok(r) if r.status().is_client_error() => {
                    return Err(ProviderError::Metadata {
                        url,
                        reason: format!("answered {}", r.status()),
                    });
                }
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => describe(&e),
            };
            let wait = backoff.next().unwrap_or(self.opts.retry_max);
            if Instant::now() + wait >= deadline {
                return Err(ProviderError::Metadata { url, reason });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// `body[key]`, or an error saying the answer to `what` lacks it.
pub(crate) fn field<'a>(
    provider: &'static str,
    what: &str,
    body: &'a Value,
    key: &str,
) -> Result<&'a Value, ProviderError> {
    body.get(key).ok_or_else(|| ProviderError::Unexpected {
        provider,
        what: what.to_owned(),
        status: 200,
        detail: format!("no {key} in the answer"),
        state_may_have_changed: false,
    })
}

/// The text at JSON `pointer`, if there is some.
pub(crate) fn text_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Whether the provider's `ratelimit-limit` header is the token's hourly limit: DigitalOcean
/// (its OpenAPI description) and Hetzner (`RateLimit-Limit`, requests per hour) document it;
/// Vultr documents no such header, so whatever comes is not read.
fn advertises_hourly_limit(p: Provider) -> bool {
    matches!(p, Provider::DigitalOcean | Provider::Hetzner)
}

fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// From now until Unix time `epoch_secs` (zero when past).
fn until_epoch(epoch_secs: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(epoch_secs).saturating_sub(now)
}

/// How long to wait after a 429. `Retry-After` (seconds) is the provider's instruction and
/// wins: DigitalOcean sends it with its burst (per-minute) limit, while its `ratelimit-reset`
/// is when the oldest request of the *hour* expires, often most of an hour away. Without
/// Retry-After, the reset (Unix seconds: DigitalOcean, Hetzner); without either, one second.
fn rate_limit_wait(retry_after: Option<u64>, reset: Option<u64>) -> Duration {
    let wait = match (retry_after, reset) {
        (Some(s), _) => Duration::from_secs(s),
        (None, Some(r)) => until_epoch(r),
        (None, None) => Duration::from_secs(1),
    };
    let jitter = Duration::from_millis(rand::random_range(0..100));
    wait.min(MAX_RATE_LIMIT_WAIT) + RATE_LIMIT_SLACK + jitter
}

/// A transport error in words, without the URL's query or anything else from the request.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "broken answer"
    } else {
        "request failed"
    };
    // The source chain says "connection reset", "connection refused", ...
    let mut detail = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// The first bytes of an error body, for messages.
fn snippet(text: &str) -> String {
    let t = text.trim();
    let mut end = t.len().min(200);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    t[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    }

    #[test]
    fn retry_after_wins_over_a_distant_reset() {
        // DigitalOcean's burst limit: Retry-After 1, the hour's oldest request expires later.
        let w = rate_limit_wait(Some(1), Some(now_secs() + 60));
        assert!(
            w >= Duration::from_millis(1100) && w < Duration::from_millis(1200),
            "{w:?}"
        );
        // Without Retry-After the reset counts, capped.
        let w = rate_limit_wait(None, Some(now_secs() + 3000));
        assert!(w >= MAX_RATE_LIMIT_WAIT, "{w:?}");
        assert!(
            w < MAX_RATE_LIMIT_WAIT + Duration::from_millis(200),
            "{w:?}"
        );
        let w = rate_limit_wait(None, None);
        assert!(
            w >= Duration::from_millis(1100) && w < Duration::from_millis(1200),
            "{w:?}"
        );
    }
}
