//! Health checks of this node: tcp connect, http GET, exec. A node whose checks fail is no
//! candidate for placement.
//!
//! Each check has a sans-IO state ([`CheckState`]) fed `now` and probe results: the first
//! result decides at once (a node should not wait `rise` intervals after a restart before
//! being known), after that `fall` consecutive failures make it unhealthy and `rise`
//! consecutive successes healthy again, so one lost probe does not move resources.
use std::time::{Duration, SystemTime};

use tandem_config::{HealthCheck, HealthProbe};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::agents::process::{self, CommandSpec};

/// The state of one check.
#[derive(Debug, Clone)]
pub struct CheckState {
    pub cfg: HealthCheck,
    /// `None` until the first result.
    pub healthy: Option<bool>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_error: Option<String>,
    pub last_checked: Option<SystemTime>,
    next_due: Instant,
}

/// Display name, e.g. "tcp 10.17.0.1:53".
pub fn check_name(probe: &HealthProbe) -> String {
    match probe {
        HealthProbe::Tcp(addr) => format!("tcp {addr}"),
        HealthProbe::Http { url, .. } => format!("http {url}"),
        HealthProbe::Exec(cmd) => format!("exec {cmd}"),
    }
}

impl CheckState {
    pub fn new(cfg: HealthCheck, now: Instant) -> Self {
        CheckState {
            cfg,
            healthy: None,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_error: None,
            last_checked: None,
            next_due: now,
        }
    }

    pub fn name(&self) -> String {
        check_name(&self.cfg.probe)
    }

    pub fn due(&self) -> Instant {
        self.next_due
    }

    /// Records a probe result at `now`; returns the new verdict when it changed.
    pub fn record(
        &mut self,
        now: Instant,
        wall: SystemTime,
        result: Result<(), String>,
    ) -> Option<bool> {
        self.next_due = now + self.cfg.interval;
        self.last_checked = Some(wall);
        let before = self.healthy;
        match result {
            Ok(()) => {
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                self.consecutive_failures = 0;
                if before.is_none() || self.consecutive_successes >= self.cfg.rise.max(1) {
                    self.healthy = Some(true);
                }
            }
            Err(e) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.consecutive_successes = 0;
                self.last_error = Some(e);
                if before.is_none() || self.consecutive_failures >= self.cfg.fall.max(1) {
                    self.healthy = Some(false);
                }
            }
        }
        (self.healthy != before).then_some(self.healthy == Some(true))
    }
}

/// Every check of this node.
#[derive(Debug, Clone)]
pub struct Health {
    pub checks: Vec<CheckState>,
}

impl Health {
    pub fn new(cfgs: &[HealthCheck], now: Instant) -> Self {
        Health {
            checks: cfgs
                .iter()
                .cloned()
                .map(|c| CheckState::new(c, now))
                .collect(),
        }
    }

    /// Healthy when every check is (no checks: healthy). A check without a result yet
    /// counts as unhealthy: nothing is known.
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.healthy == Some(true))
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.checks.iter().map(CheckState::due).min()
    }

    /// Indices of the checks due at `now`.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.checks.len())
            .filter(|&i| self.checks[i].due() <= now)
            .collect()
    }
}

/// Runs one probe with its time limit.
pub async fn probe(
    p: &HealthProbe,
    timeout: Duration,
    http: &reqwest::Client,
) -> Result<(), String> {
    let limited = async {
        match p {
            HealthProbe::Tcp(addr) => tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map(drop)
                .map_err(|e| format!("connect {addr}: {e}")),
            HealthProbe::Http { url, expect } => {
                let resp = http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?;
                let status = resp.status().as_u16();
                if status == *expect {
                    Ok(())
                } else {
                    Err(format!("GET {url}: status {status}, expected {expect}"))
                }
            }
            HealthProbe::Exec(cmd) => match process::run(&CommandSpec::shell(cmd), timeout).await {
                Ok(exit) if exit.code == Some(0) => Ok(()),
                Ok(exit) => Err(match exit.code {
                    Some(c) => format!(
                        "exit {c}{}",
                        if exit.output.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", exit.output)
                        }
                    ),
                    None => format!("killed by signal {}", exit.signal.unwrap_or(0)),
                }),
                Err(e) => Err(e.to_string()),
            },
        }
    };
    match tokio::time::timeout(timeout, limited).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Runs every check on its interval until `shutdown`, publishing each change of the
/// overall verdict and every result on `tx`.
pub async fn run(
    cfgs: Vec<HealthCheck>,
    tx: tokio::sync::watch::Sender<Health>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let http = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot build the HTTP client for health checks");
            reqwest::Client::new()
        }
    };
    let mut health = Health::new(&cfgs, Instant::now());
    tokio::pin!(shutdown);
    let mut alarm = crate::alarm::Alarm::new("health checks");
    loop {
        let Some(next) = health.next_due() else {
            // No checks: always healthy; nothing to do until shutdown.
            let _ = tx.send(health);
            shutdown.await;
            return;
        };
        alarm.set(Some(next));
        tokio::select! {
            () = &mut shutdown => return,
            () = alarm.wait() => {}
        }
        let now = Instant::now();
        let due = health.due(now);
        let results = futures::future::join_all(due.iter().map(|&i| {
            probe(
                &health.checks[i].cfg.probe,
                health.checks[i].cfg.timeout,
                &http,
            )
        }))
        .await;
        let done = Instant::now();
        for (i, r) in due.into_iter().zip(results) {
            let c = &mut health.checks[i];
            if let Some(h) = c.record(done, SystemTime::now(), r) {
                let name = c.name();
                if h {
                    info!(check = %name, "health check passes");
                } else {
                    warn!(check = %name, error = c.last_error.as_deref().unwrap_or(""), "health check fails");
                }
            }
        }
        let _ = tx.send(health.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(fall: u32, rise: u32) -> HealthCheck {
        HealthCheck {
            probe: HealthProbe::Tcp("127.0.0.1:1".into()),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fall,
            rise,
        }
    }

    fn feed(c: &mut CheckState, now: &mut Instant, results: &str) -> Vec<Option<bool>> {
        results
            .chars()
            .map(|r| {
                *now += Duration::from_secs(2);
                let res = if r == '+' {
                    Ok(())
                } else {
                    Err("refused".to_owned())
                };
                c.record(*now, SystemTime::UNIX_EPOCH, res)
            })
            .collect()
    }

    #[test]
    fn first_result_decides_then_fall_and_rise_apply() {
        let mut now = Instant::now();
        let mut c = CheckState::new(cfg(3, 2), now);
        assert_eq!(c.healthy, None);
        assert_eq!(feed(&mut c, &mut now, "+"), [Some(true)]);
        // Two failures are tolerated, the third makes it unhealthy.
        assert_eq!(feed(&mut c, &mut now, "--"), [None, None]);
        assert_eq!(c.healthy, Some(true));
        assert_eq!(feed(&mut c, &mut now, "-"), [Some(false)]);
        assert_eq!(c.consecutive_failures, 3);
        assert_eq!(c.last_error.as_deref(), Some("refused"));
        // One success is not enough to come back; a failure in between starts over.
        assert_eq!(feed(&mut c, &mut now, "+-+"), [None, None, None]);
        assert_eq!(feed(&mut c, &mut now, "+"), [Some(true)]);
        assert_eq!(c.consecutive_successes, 2);
    }

    #[test]
    fn an_unhealthy_start_needs_rise_successes() {
        let mut now = Instant::now();
        let mut c = CheckState::new(cfg(3, 2), now);
        assert_eq!(feed(&mut c, &mut now, "-+"), [Some(false), None]);
        assert_eq!(feed(&mut c, &mut now, "+"), [Some(true)]);
    }

    #[test]
    fn fall_and_rise_of_one_follow_every_result() {
        let mut now = Instant::now();
        let mut c = CheckState::new(cfg(1, 1), now);
        assert_eq!(
            feed(&mut c, &mut now, "+-+-"),
            [Some(true), Some(false), Some(true), Some(false)]
        );
    }

    #[test]
    fn checks_are_due_on_their_interval() {
        let t0 = Instant::now();
        let mut h = Health::new(&[cfg(1, 1), cfg(1, 1)], t0);
        assert!(!h.healthy(), "nothing is known yet");
        assert_eq!(h.due(t0), [0, 1]);
        h.checks[0].record(t0, SystemTime::UNIX_EPOCH, Ok(()));
        assert_eq!(h.due(t0), [1]);
        assert_eq!(h.next_due(), Some(t0));
        h.checks[1].record(t0, SystemTime::UNIX_EPOCH, Ok(()));
        assert!(h.healthy());
        assert_eq!(h.next_due(), Some(t0 + Duration::from_secs(2)));
        assert!(Health::new(&[], t0).healthy());
    }
}
