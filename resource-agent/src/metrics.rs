//! Optional Prometheus endpoint (`agent.metrics`, loopback only; the configuration refuses
//! any other address).
//!
//! Two sources: state (groups, health checks, readiness, membership) is rendered from a fresh
//! Status at each scrape, so it can never disagree with `ipctl status`; what happens between
//! scrapes (action durations and failures, provider calls, group starts by cause) is counted
//! as it happens by [`Metrics`], a cheap-to-clone handle of shared counters that wraps the
//! agents and providers ([`MeteredAgent`], [`MeteredProvider`]).
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use futures::future::BoxFuture;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tandem_proto::agent::v1 as pb;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::agents::{Action, Agent, AgentError, Kind, RunState};
use crate::core::StartCause;
use crate::provider::{
    AssignOutcome, Holder, ProviderError, Readiness, ReleaseOutcome, ReservedIpProvider, ServerId,
};

type Labels = Vec<(String, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// 10ms to ~80s: a script's status takes milliseconds, a reserved-IP move seconds, and
/// action timeouts default to a minute.
fn seconds_histogram() -> Histogram {
    // 0.01 s doubling to 81.92 s, as exponential_buckets(0.01, 2.0, 14) gives, but without its
    // powf: that call alone made the agent load libm.so (~0.3 MiB resident).
    Histogram::new((0..14).map(|i| 0.01 * f64::from(1u32 << i)))
}

/// Counters shared by the daemon, the agent wrappers and the endpoint.
#[derive(Debug, Clone)]
pub struct Metrics {
    actions: Histograms,
    action_failures: Family<Labels, Counter<u64>>,
    provider_calls: Histograms,
    provider_errors: Family<Labels, Counter<u64>>,
    group_starts: Family<Labels, Counter<u64>>,
    fences: Histograms,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            actions: Family::new_with_constructor(seconds_histogram),
            action_failures: Family::default(),
            provider_calls: Family::new_with_constructor(seconds_histogram),
            provider_errors: Family::default(),
            group_starts: Family::default(),
            fences: Family::new_with_constructor(seconds_histogram),
        }
    }
}

impl Metrics {
    /// Counts one agent action (start, stop, monitor) and its failure, if any.
    pub fn record_action(
        &self,
        group: &str,
        agent: &str,
        action: &str,
        took: std::time::Duration,
        error: Option<&AgentError>,
    ) {
        let l = labels(&[("group", group), ("agent", agent), ("action", action)]);
        self.actions.get_or_create(&l).observe(took.as_secs_f64());
        if let Some(e) = error {
            let kind = match e {
                AgentError::Timeout { .. } => "timeout",
                AgentError::Failed { .. } => "failed",
                AgentError::Unusable { .. } => "unusable",
            };
            let mut l = l;
            l.push(("kind".to_owned(), kind.to_owned()));
            self.action_failures.get_or_create(&l).inc();
        }
    }

    /// Counts one provider call and its error, if any.
    pub fn record_provider_call(
        &self,
        provider: &str,
        ip: IpAddr,
        call: &str,
        took: std::time::Duration,
        error: Option<&ProviderError>,
    ) {
        let ip = ip.to_string();
        let l = labels(&[("provider", provider), ("ip", &ip), ("call", call)]);
        self.provider_calls
            .get_or_create(&l)
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            let mut l = l;
            l.push(("kind".to_owned(), error_kind(e).to_owned()));
            self.provider_errors.get_or_create(&l).inc();
        }
    }

    /// Counts a group started here.
    pub fn record_start(&self, group: &str, cause: StartCause) {
        self.group_starts
            .get_or_create(&labels(&[("group", group), ("cause", cause.as_str())]))
            .inc();
    }

    /// Counts one fence (power-off) of `node`, by outcome.
    pub fn record_fence(&self, node: &str, ok: bool, took: std::time::Duration) {
        let outcome = if ok { "ok" } else { "failed" };
        self.fences
            .get_or_create(&labels(&[("node", node), ("outcome", outcome)]))
            .observe(took.as_secs_f64());
    }

    /// Wraps one agent of `group` so that its actions are counted.
    pub fn agent(&self, group: &str, inner: Box<dyn Agent>) -> Box<dyn Agent> {
        Box::new(MeteredAgent {
            group: group.to_owned(),
            name: inner.name(),
            inner,
            metrics: self.clone(),
        })
    }

    /// Wraps a provider so that its calls are counted.
    pub fn provider(&self, inner: Box<dyn ReservedIpProvider>) -> Box<dyn ReservedIpProvider> {
        Box::new(MeteredProvider {
            name: inner.provider().name(),
            inner,
            metrics: self.clone(),
        })
    }

    /// Renders the counters and a Status as Prometheus text exposition.
    pub fn render(&self, s: &pb::StatusResponse) -> String {
        let mut r = Registry::with_prefix("tandem_agent");
        r.register(
            "action_duration_seconds",
            "Agent action (start, stop, monitor) durations per group and agent",
            self.actions.clone(),
        );
        r.register(
            "action_failures",
            "Agent actions that failed, by kind (failed, timeout, unusable)",
            self.action_failures.clone(),
        );
        r.register(
            "provider_call_duration_seconds",
            "Reserved-IP provider calls (retries included), per IP and call",
            self.provider_calls.clone(),
        );
        r.register(
            "provider_errors",
            "Reserved-IP provider calls that failed, by kind",
            self.provider_errors.clone(),
        );
        r.register(
            "group_starts",
            "Group starts ordered on this node (retries included), by cause (failover, handover, initial)",
            self.group_starts.clone(),
        );
        r.register(
            "fence_duration_seconds",
            "Fences (power-offs of dead peers through the provider) run by this node, per peer and outcome (ok, failed)",
            self.fences.clone(),
        );
        let reloads = Family::<Labels, Counter<u64>>::default();
        let (ok, refused) = crate::provider::token::reload_counts();
        reloads
            .get_or_create(&labels(&[("outcome", "ok")]))
            .inc_by(ok);
        reloads
            .get_or_create(&labels(&[("outcome", "refused")]))
            .inc_by(refused);
        r.register(
            "token_reloads",
            "API token files that changed and were read again: used (ok) or refused (mode, length), the previous token kept",
            reloads,
        );
        let rate_limited = Family::<Labels, Counter<u64>>::default();
        let rate_limit_wait = Family::<Labels, Counter<f64, AtomicU64>>::default();
        let left_unassigned = Family::<Labels, Counter<u64>>::default();
        let header_ignored = Family::<Labels, Counter<u64>>::default();
        for (p, c) in crate::provider::stats::provider_counts() {
            let l = labels(&[("provider", p.name())]);
            rate_limited.get_or_create(&l).inc_by(c.rate_limited);
            rate_limit_wait.get_or_create(&l).inc_by(c.rate_limit_wait);
            left_unassigned.get_or_create(&l).inc_by(c.left_unassigned);
            header_ignored.get_or_create(&l).inc_by(c.header_ignored);
        }
        r.register(
            "provider_rate_limited",
            "429 (rate limited) answers from the provider's API, retries of one call included",
            rate_limited,
        );
        r.register(
            "provider_rate_limit_wait_seconds",
            "Seconds waited for 429 answers before asking again (Retry-After, else the reset)",
            rate_limit_wait,
        );
        r.register(
            "provider_rate_limit_header_ignored",
            "ratelimit-limit headers ignored as unreadable or implausible (zero, a hundred times off the documented limit)",
            header_ignored,
        );
        r.register(
            "provider_left_unassigned",
            "Reserved IPs detached from another server to attach them here (Vultr) whose attach then failed: the IP has no holder until someone attaches it",
            left_unassigned,
        );
        let postponed = Family::<Labels, Counter<u64>>::default();
        for (kind, n) in crate::provider::stats::postponed_counts() {
            postponed
                .get_or_create(&labels(&[("kind", kind.as_str())]))
                .inc_by(n);
        }
        r.register(
            "routine_postponed",
            "Periodic provider reads (monitor, readiness) postponed while the API token's routine share of its request budget is spent",
            postponed,
        );
        let in_use = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (p, l) in crate::provider::budget::limits_in_use() {
            for (window, v) in [("minute", l.per_minute), ("hour", l.per_hour)] {
                // Vultr has no hourly limit.
                if v != u32::MAX {
                    in_use
                        .get_or_create(&labels(&[("provider", p.name()), ("window", window)]))
                        .set(f64::from(v));
                }
            }
        }
        r.register(
            "provider_rate_limit",
            "The API token's request limit per window that the agent's budget keeps to: the provider's documented one, or the hourly limit its ratelimit-limit header advertises (lowest of the tokens in use)",
            in_use,
        );
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            r.register(name, help, f.clone());
            f
        };
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let single = |r: &mut Registry, name: &str, help: &str, v: f64| {
            let g = Gauge::<f64, AtomicU64>::default();
            g.set(v);
            r.register(name, help, g);
        };
        single(
            &mut r,
            "membership_connected",
            "1 while the membership daemon is reachable",
            flag(s.membership_connected),
        );
        single(
            &mut r,
            "quorate",
            "1 if this node's partition has quorum",
            flag(s.quorate),
        );
        let check_ok = gauge(
            &mut r,
            "health_check_healthy",
            "1 if the node health check passes",
        );
        let check_failures = gauge(
            &mut r,
            "health_check_consecutive_failures",
            "Consecutive failures of the node health check",
        );
        for c in &s.health {
            let l = labels(&[("check", &c.name)]);
            check_ok.get_or_create(&l).set(flag(c.healthy));
            check_failures
                .get_or_create(&l)
                .set(c.consecutive_failures as f64);
        }
        let running = gauge(&mut r, "group_running", "1 if the group runs on this node");
        let ready = gauge(
            &mut r,
            "group_ready",
            "1 if this node could take the group over (absent: the agents cannot tell)",
        );
        let restarts = gauge(
            &mut r,
            "group_restarts",
            "Local restarts of the group within the restart window",
        );
        for g in &s.groups {
            let l = labels(&[("group", &g.name)]);
            running
                .get_or_create(&l)
                .set(flag(g.state == pb::GroupState::Running as i32));
            restarts.get_or_create(&l).set(f64::from(g.restarts));
            if let Some(rd) = &g.readiness {
                ready.get_or_create(&l).set(flag(rd.ready));
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }
}

/// A short, stable name for a [`ProviderError`] variant (a label value).
pub fn error_kind(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::Unauthorized { .. } => "unauthorized",
        ProviderError::Forbidden { .. } => "forbidden",
        ProviderError::NotFound { .. } => "not_found",
        ProviderError::NoIpv6 { .. } => "no_ipv6",
        ProviderError::Refused { .. } => "refused",
        ProviderError::ActionErrored { .. } => "action_errored",
        ProviderError::GaveUp { .. } => "gave_up",
        ProviderError::Unexpected { .. } => "unexpected",
        ProviderError::LeftUnassigned { .. } => "left_unassigned",
        ProviderError::Metadata { .. } => "metadata",
        ProviderError::Token(_) => "token",
        ProviderError::Config(_) => "config",
    }
}

/// An agent whose actions are timed and counted.
#[derive(Debug)]
pub struct MeteredAgent {
    group: String,
    name: String,
    inner: Box<dyn Agent>,
    metrics: Metrics,
}

impl MeteredAgent {
    async fn timed<T>(
        &self,
        action: &str,
        f: impl Future<Output = Result<T, AgentError>>,
    ) -> Result<T, AgentError> {
        let started = Instant::now();
        let r = f.await;
        self.metrics.record_action(
            &self.group,
            &self.name,
            action,
            started.elapsed(),
            r.as_ref().err(),
        );
        r
    }
}

impl Agent for MeteredAgent {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn kind(&self) -> Kind {
        self.inner.kind()
    }
    fn settings(&self) -> &tandem_config::ActionSettings {
        self.inner.settings()
    }
    fn provider_call(&self, action: Action) -> Option<String> {
        self.inner.provider_call(action)
    }
    fn start(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(self.timed("start", self.inner.start()))
    }
    fn stop(&self) -> BoxFuture<'_, Result<(), AgentError>> {
        Box::pin(self.timed("stop", self.inner.stop()))
    }
    fn monitor(&self) -> BoxFuture<'_, Result<RunState, AgentError>> {
        Box::pin(self.timed("monitor", self.inner.monitor()))
    }
    fn readiness(&self) -> BoxFuture<'_, Option<Vec<String>>> {
        self.inner.readiness()
    }
    fn budget_wait(&self) -> std::time::Duration {
        self.inner.budget_wait()
    }
}

/// A provider whose calls are timed and whose errors are counted by kind.
#[derive(Debug)]
pub struct MeteredProvider {
    name: &'static str,
    inner: Box<dyn ReservedIpProvider>,
    metrics: Metrics,
}

impl MeteredProvider {
    async fn timed<T>(
        &self,
        call: &str,
        f: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let r = f.await;
        self.metrics.record_provider_call(
            self.name,
            self.inner.ip(),
            call,
            started.elapsed(),
            r.as_ref().err(),
        );
        r
    }
}

impl ReservedIpProvider for MeteredProvider {
    fn provider(&self) -> tandem_config::Provider {
        self.inner.provider()
    }
    fn ip(&self) -> IpAddr {
        self.inner.ip()
    }
    fn server_id(&self) -> BoxFuture<'_, Result<ServerId, ProviderError>> {
        Box::pin(self.timed("server_id", self.inner.server_id()))
    }
    fn holder(&self) -> BoxFuture<'_, Result<Holder, ProviderError>> {
        Box::pin(self.timed("holder", self.inner.holder()))
    }
    fn assign(&self) -> BoxFuture<'_, Result<AssignOutcome, ProviderError>> {
        Box::pin(self.timed("assign", self.inner.assign()))
    }
    fn release(&self) -> BoxFuture<'_, Result<ReleaseOutcome, ProviderError>> {
        Box::pin(self.timed("release", self.inner.release()))
    }
    fn probe(&self) -> BoxFuture<'_, Result<Readiness, ProviderError>> {
        Box::pin(self.timed("probe", self.inner.probe()))
    }
    fn routine_wait(&self) -> std::time::Duration {
        self.inner.routine_wait()
    }
}

/// Fetches a fresh Status from the driver; `None` while it is shutting down.
pub type StatusFn = Arc<dyn Fn() -> BoxFuture<'static, Option<pb::StatusResponse>> + Send + Sync>;

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    status: StatusFn,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let page: tandem_daemon_kit::metrics::RenderFn = Arc::new(move || {
        let (status, metrics) = (status.clone(), metrics.clone());
        Box::pin(async move { status().await.map(|s| metrics.render(&s)) })
    });
    tandem_daemon_kit::metrics::serve(listener, page, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_status_render_as_prometheus_text() {
        let m = Metrics::default();
        m.record_action(
            "web",
            "exec",
            "start",
            std::time::Duration::from_millis(30),
            None,
        );
        m.record_action(
            "web",
            "exec",
            "monitor",
            std::time::Duration::from_millis(5),
            Some(&AgentError::Timeout {
                action: crate::agents::Action::Monitor,
                after: std::time::Duration::from_secs(1),
                detail: String::new(),
            }),
        );
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        m.record_provider_call(
            "digitalocean",
            ip,
            "probe",
            std::time::Duration::from_millis(20),
            Some(&ProviderError::Unauthorized {
                provider: "digitalocean",
                what: "probe".into(),
            }),
        );
        m.record_start("web", StartCause::Failover);
        m.record_fence("primary", true, std::time::Duration::from_millis(1500));
        // Process-wide counters, which other tests of this binary may raise too.
        crate::provider::stats::postponed(crate::provider::stats::Routine::Readiness);
        let _budget = crate::provider::budget::shared(
            tandem_config::Provider::Vultr,
            "http://metrics.invalid",
            b"metrics-test-token",
        );
        let s = pb::StatusResponse {
            membership_connected: true,
            health: vec![pb::HealthCheck {
                name: "ping".into(),
                healthy: false,
                consecutive_failures: 3,
                ..Default::default()
            }],
            groups: vec![pb::GroupStatus {
                name: "web".into(),
                state: pb::GroupState::Running as i32,
                readiness: Some(pb::Readiness {
                    ready: false,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = m.render(&s);
        for line in [
            "tandem_agent_action_duration_seconds_count{group=\"web\",agent=\"exec\",action=\"start\"} 1",
            "tandem_agent_action_failures_total{group=\"web\",agent=\"exec\",action=\"monitor\",kind=\"timeout\"} 1",
            "tandem_agent_provider_call_duration_seconds_count{provider=\"digitalocean\",ip=\"127.0.0.9\",call=\"probe\"} 1",
            "tandem_agent_provider_errors_total{provider=\"digitalocean\",ip=\"127.0.0.9\",call=\"probe\",kind=\"unauthorized\"} 1",
            "tandem_agent_group_starts_total{group=\"web\",cause=\"failover\"} 1",
            "tandem_agent_fence_duration_seconds_count{node=\"primary\",outcome=\"ok\"} 1",
            "tandem_agent_membership_connected 1.0",
            "tandem_agent_quorate 0.0",
            "tandem_agent_health_check_healthy{check=\"ping\"} 0.0",
            "tandem_agent_health_check_consecutive_failures{check=\"ping\"} 3.0",
            "tandem_agent_group_running{group=\"web\"} 1.0",
            "tandem_agent_group_ready{group=\"web\"} 0.0",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        for prefix in [
            "tandem_agent_provider_rate_limited_total{provider=\"vultr\"} ",
            "tandem_agent_provider_rate_limit_wait_seconds_total{provider=\"hetzner\"} ",
            "tandem_agent_routine_postponed_total{kind=\"monitor\"} ",
            "tandem_agent_provider_rate_limit_header_ignored_total{provider=\"digitalocean\"} ",
            "tandem_agent_provider_rate_limit{provider=\"vultr\",window=\"minute\"} 1800",
        ] {
            assert!(text.contains(prefix), "{prefix} missing in:\n{text}");
        }
        let readiness = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("tandem_agent_routine_postponed_total{kind=\"readiness\"} ")
            })
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            readiness.is_some_and(|n| n >= 1),
            "{readiness:?} in:\n{text}"
        );
        assert!(
            !text.contains("tandem_agent_provider_rate_limit{provider=\"vultr\",window=\"hour\"}"),
            "Vultr has no hourly limit:\n{text}"
        );
        assert!(
            !text.contains("action_failures_total{group=\"web\",agent=\"exec\",action=\"start\""),
            "a successful start is no failure:\n{text}"
        );
    }
}
