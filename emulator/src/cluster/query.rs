//! Asking a running cluster: the daemons' gRPC status, the emulator's holder and audit log.
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tandem_proto::agent::v1 as apb;
use tandem_proto::agent::v1::agent_client::AgentClient;
use tandem_proto::membership::v1 as mpb;
use tandem_proto::membership::v1::membership_client::MembershipClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::{CALL_TIMEOUT, Cluster, Daemon, GROUP, HolderChange, Prober};

impl Cluster {
    /// An Agent client on node `i`'s socket.
    pub async fn agent(&self, i: usize) -> Option<AgentClient<Channel>> {
        let ch = tandem_proto::uds::connect(&self.socket(i, Daemon::Agent))
            .await
            .ok()?;
        Some(AgentClient::new(ch))
    }

    pub async fn membership(&self, i: usize) -> Option<MembershipClient<Channel>> {
        let ch = tandem_proto::uds::connect(&self.socket(i, Daemon::Membership))
            .await
            .ok()?;
        Some(MembershipClient::new(ch))
    }

    /// The agent's Status, or `None` if it does not answer within a short limit.
    pub async fn agent_status(&self, i: usize) -> Option<apb::StatusResponse> {
        let mut c = tokio::time::timeout(CALL_TIMEOUT, self.agent(i))
            .await
            .ok()??;
        call(c.status(apb::StatusRequest {})).await
    }

    pub async fn membership_status(&self, i: usize) -> Option<mpb::StatusResponse> {
        let mut c = tokio::time::timeout(CALL_TIMEOUT, self.membership(i))
            .await
            .ok()??;
        call(c.status(mpb::StatusRequest {})).await
    }

    /// The metrics endpoint of daemon `d` on node `i` (with [`super::Spec::metrics`]), as its
    /// current log says it was bound.
    pub fn metrics_url(&self, i: usize, d: Daemon) -> Option<String> {
        const SAID: &str = "metrics served at ";
        let log = self.log(i, d);
        let at = log.rfind(SAID)? + SAID.len();
        let url = log[at..]
            .split(|c: char| c.is_whitespace() || c == '"')
            .next()?;
        Some(url.to_owned())
    }

    /// One scrape of daemon `d`'s metrics on node `i`: the Prometheus text, or `None`.
    pub async fn scrape(&self, i: usize, d: Daemon) -> Option<String> {
        let url = self.metrics_url(i, d)?;
        let r = tokio::time::timeout(CALL_TIMEOUT, reqwest::get(url))
            .await
            .ok()?
            .ok()?;
        r.error_for_status().ok()?.text().await.ok()
    }

    /// The state of [`GROUP`] on node `i` as its agent reports it.
    pub async fn group(&self, i: usize) -> Option<apb::GroupStatus> {
        self.agent_status(i)
            .await?
            .groups
            .into_iter()
            .find(|g| g.name == GROUP)
    }

    /// Names of the nodes whose agent reports [`GROUP`] running (those that answer).
    pub async fn running_on(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.witness {
                continue;
            }
            if let Some(g) = self.group(i).await
                && g.state == apb::GroupState::Running as i32
            {
                out.push(n.name.clone());
            }
        }
        out
    }

    /// The node whose droplet holds the reserved IP at the emulator.
    pub fn holder(&self) -> Option<String> {
        self.holder_of(self.ip)
    }

    /// The node whose droplet holds `ip` (the IPv4 or the IPv6) at the emulator.
    pub fn holder_of(&self, ip: IpAddr) -> Option<String> {
        let id = self.emulator.holder(ip)?;
        self.nodes
            .iter()
            .find(|n| n.droplet == Some(id))
            .map(|n| n.name.clone())
    }

    pub fn node_of_droplet(&self, id: Option<u64>) -> String {
        id.and_then(|id| self.nodes.iter().find(|n| n.droplet == Some(id)))
            .map_or_else(|| "nobody".into(), |n| n.name.clone())
    }

    /// Every line of the emulator's audit log.
    pub fn audit(&self) -> Vec<Value> {
        crate::testkit::read_audit(&self.audit_log)
    }

    /// Holder changes recorded by the emulator, in order.
    pub fn holder_changes(&self) -> Vec<HolderChange> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == "holder")
            .filter_map(|e| {
                Some(HolderChange {
                    ip: e["ip"].as_str().and_then(|s| s.parse().ok()),
                    at: humantime::parse_rfc3339(e["time"].as_str()?).ok()?,
                    from: e["from"].as_u64(),
                    to: e["to"].as_u64(),
                    cause: e["cause"].as_str().unwrap_or_default().to_owned(),
                })
            })
            .collect()
    }

    /// Assign actions accepted by the emulator (each is one `POST .../actions` that started).
    pub fn assign_calls(&self) -> usize {
        self.audit()
            .iter()
            .filter(|e| {
                e["event"] == "action" && e["type"] == "assign" && e["status"] == "in-progress"
            })
            .count()
    }

    /// Time from `since` to the first holder change of the reserved IP to `to` after it.
    pub fn moved_after(&self, since: SystemTime, to: &str) -> Option<Duration> {
        self.moved_after_of(self.ip, since, to)
    }

    /// Time from `since` to the first holder change of `ip` to `to` after it.
    pub fn moved_after_of(&self, ip: IpAddr, since: SystemTime, to: &str) -> Option<Duration> {
        let id = self.nodes[self.index(to)].droplet?;
        self.holder_changes()
            .into_iter()
            .find(|h| h.ip == Some(ip) && h.at >= since && h.to == Some(id))
            .and_then(|h| h.at.duration_since(since).ok())
    }

    /// Waits (bounded) until the first member runs [`GROUP`] and the second member's agent
    /// sees it as the holder: the cluster is up and agrees. False on timeout.
    pub async fn wait_first_holds(&self, limit: Duration) -> bool {
        let first = self.nodes[0].name.clone();
        wait_for(limit, || async {
            let p = self.group(0).await?;
            let s = self.group(1).await?;
            (p.state == apb::GroupState::Running as i32 && s.holder == first).then_some(())
        })
        .await
        .is_some()
    }

    /// Starts the curl loop against the reserved IP's front.
    pub fn probe(&self, period: Duration) -> Prober {
        Prober::start(self.front.clone(), period)
    }
}

pub(super) async fn call<T>(
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(r)) => Some(r.into_inner()),
        _ => None,
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
