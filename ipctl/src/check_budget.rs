//! `check-config`'s request budget check: the steady state of the reserved IPs (monitors on
//! the holder, readiness checks on every node) per API token, against the provider's limits.
//!
//! Past half of a limit it is a warning, not an error: the running agent keeps its polling
//! within that half anyway (it postpones monitors, leaving the rest to a failover), so the
//! cluster is safe to run; what the operator loses is monitoring as often as written. The
//! warning says which `monitor_interval` would fit.
use tandem_config::{ClusterConfig, format_duration};
use tandem_resource_agent::provider::steady::{self, STEADY_SHARE, TokenLoad};

/// One warning per token whose steady state passes [`STEADY_SHARE`] of a provider limit.
pub fn warnings(cfg: &ClusterConfig) -> Vec<String> {
    let every = steady::readiness_interval(cfg);
    steady::load(cfg, every)
        .iter()
        .filter(|l| l.share() > STEADY_SHARE)
        .map(|l| warning(l, every))
        .collect()
}

fn warning(l: &TokenLoad, readiness_every: std::time::Duration) -> String {
    let fix = match l.monitor_interval_needed() {
        Some(d) => format!(
            "raise monitor_interval of these reserved-ip agents to at least {}",
            format_duration(d)
        ),
        // Readiness alone never passes its half: only a monitor_interval over every limit.
        None => "give some of these reserved IPs another token (token_file)".to_owned(),
    };
    format!(
        "{} reserved IP(s) on token_file `{}` ({}): their monitors and readiness checks (every {} \
         on each of {} node(s)) would send about {:.0} requests an hour, {:.0}% of the token's \
         limit ({} a minute, {} an hour); past {:.0}% the agent postpones them to keep the rest \
         for a failover, so they run less often than configured; {fix}",
        l.ips,
        l.token_file.display(),
        l.provider,
        format_duration(readiness_every),
        l.nodes,
        l.per_hour(),
        l.share() * 100.0,
        l.limits.per_minute,
        l.limits.per_hour,
        STEADY_SHARE * 100.0,
    )
}
