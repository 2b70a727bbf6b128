//! Cluster notices: what this agent tells every node about a fence, on membership's retained
//! topic [`NOTICE_TOPIC`] (membership keeps the last few on every node, a witness included,
//! and shows them in its Status and Watch; docs/PROTOCOL.md). JSON, versioned by `schema`,
//! bounded to membership's payload limit; `ipctl status` and `ipctl watch` read it.
use serde::{Deserialize, Serialize};

use super::codec::MAX_PAYLOAD;
use super::events::{FenceChange, FenceEvent};

/// The retained topic the agents' notices go on (membership retains `tandem.notice/...`).
pub const NOTICE_TOPIC: &str = "tandem.notice/v1";
/// The `schema` of a fence notice; another schema is a notice this version does not know.
pub const FENCE_SCHEMA: &str = "tandem.notice.fence/v1";
/// Longest free text kept (characters) in a notice: the provider's detail or error, the
/// reason. Node names are bounded by the configuration.
const MAX_TEXT: usize = 300;

/// The outcome of one fence attempt, as sent to every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceNotice {
    /// [`FENCE_SCHEMA`].
    pub schema: String,
    /// The node powered off (or that this attempt failed to power off).
    pub fenced: String,
    /// The node whose agent fenced it (the sender).
    pub by: String,
    /// "completed" or "failed".
    pub outcome: String,
    /// Why it was fenced, in words.
    pub reason: String,
    /// 1 for the first attempt of this death.
    pub attempt: u32,
    /// How long the provider call took (ms).
    pub duration_ms: u64,
    /// From the node's death (as this node saw it) to this outcome (ms).
    pub since_death_ms: u64,
    /// The provider call ("digitalocean power_off").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_call: Option<String>,
    /// Completed: what the provider did (the server, the action id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Failed: why (the provider's error, never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed: until the next attempt (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `s` cut to `max` characters (on a character boundary), marked when cut.
pub fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

impl FenceNotice {
    /// The notice of a fence event by node `by`; `None` for a change that is no attempt's
    /// outcome (started, abandoned).
    pub fn from_event(by: &str, e: &FenceEvent) -> Option<FenceNotice> {
        let outcome = match e.change {
            FenceChange::Done => "completed",
            FenceChange::Failed => "failed",
            FenceChange::Started | FenceChange::Abandoned => return None,
        };
        Some(FenceNotice {
            schema: FENCE_SCHEMA.to_owned(),
            fenced: e.node.clone(),
            by: by.to_owned(),
            outcome: outcome.to_owned(),
            // The rules every attempt ran under (core::fence): they are the rest of the why.
            reason: bounded(
                &format!(
                    "{}; {by} had quorum and no live member still heard {}",
                    e.reason, e.node
                ),
                MAX_TEXT,
            ),
            attempt: e.attempt,
            duration_ms: e.took.map_or(0, ms),
            since_death_ms: ms(e.since_death),
            provider_call: e.call.map(str::to_owned),
            detail: e.detail.as_deref().map(|d| bounded(d, MAX_TEXT)),
            error: e.error.as_deref().map(|d| bounded(d, MAX_TEXT)),
            retry_in_ms: e.retry_in.map(ms),
        })
    }

    /// The payload, within membership's limit: free text is shortened further if the node
    /// names are long.
    pub fn encode(&self) -> Vec<u8> {
        let mut n = self.clone();
        let mut max = MAX_TEXT;
        loop {
            let bytes = serde_json::to_vec(&n).unwrap_or_default();
            if bytes.len() <= MAX_PAYLOAD || max == 0 {
                return bytes;
            }
            max /= 2;
            n.reason = bounded(&self.reason, max);
            n.detail = self.detail.as_deref().map(|d| bounded(d, max));
            n.error = self.error.as_deref().map(|d| bounded(d, max));
        }
    }

    /// A fence notice from a payload; `None` if it is not one (another schema, not JSON,
    /// not UTF-8): the caller shows it raw.
    pub fn decode(payload: &[u8]) -> Option<FenceNotice> {
        let n: FenceNotice = serde_json::from_slice(payload).ok()?;
        (n.schema == FENCE_SCHEMA).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(change: FenceChange) -> FenceEvent {
        FenceEvent {
            node: "primary".into(),
            change,
            reason: "declared dead: silent on every link".into(),
            attempt: 2,
            call: Some("digitalocean power_off"),
            took: Some(Duration::from_millis(340)),
            since_death: Duration::from_millis(2_500),
            detail: (change == FenceChange::Done).then(|| "droplet 7 powered off".into()),
            error: (change == FenceChange::Failed).then(|| "HTTP 401: unauthorized".into()),
            retry_in: (change == FenceChange::Failed).then(|| Duration::from_secs(2)),
        }
    }

    #[test]
    fn an_attempt_outcome_is_a_notice_and_reads_back() {
        let done = FenceNotice::from_event("secondary", &event(FenceChange::Done)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&done.encode()).unwrap();
        assert_eq!(v["schema"], FENCE_SCHEMA);
        assert_eq!(v["fenced"], "primary");
        assert_eq!(v["by"], "secondary");
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .starts_with("declared dead: silent on every link; secondary had quorum"),
            "{v}"
        );
        assert_eq!(v["outcome"], "completed");
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["duration_ms"], 340);
        assert_eq!(v["since_death_ms"], 2500);
        assert_eq!(v["detail"], "droplet 7 powered off");
        assert!(v.get("error").is_none());
        assert_eq!(FenceNotice::decode(&done.encode()), Some(done));
        let failed = FenceNotice::from_event("secondary", &event(FenceChange::Failed)).unwrap();
        assert_eq!(failed.outcome, "failed");
        assert_eq!(failed.retry_in_ms, Some(2000));
        assert_eq!(failed.error.as_deref(), Some("HTTP 401: unauthorized"));
        assert!(FenceNotice::from_event("s", &event(FenceChange::Started)).is_none());
        assert!(FenceNotice::from_event("s", &event(FenceChange::Abandoned)).is_none());
    }

    #[test]
    fn a_notice_stays_within_the_limit_whatever_the_text() {
        let mut e = event(FenceChange::Failed);
        e.error = Some("é".repeat(5_000));
        e.reason = "\u{1F600}".repeat(5_000);
        e.node = "n".repeat(250);
        let n = FenceNotice::from_event(&"b".repeat(250), &e).unwrap();
        let bytes = n.encode();
        assert!(bytes.len() <= MAX_PAYLOAD, "{} bytes", bytes.len());
        let back = FenceNotice::decode(&bytes).unwrap();
        assert!(back.error.unwrap().ends_with('…'));
        assert_eq!(back.fenced, e.node);
    }

    #[test]
    fn anything_else_is_no_fence_notice() {
        for junk in [
            &b"\xff\xfe"[..],
            b"",
            b"{}",
            b"[1,2]",
            br#"{"schema":"tandem.notice.other/v9","fenced":"a"}"#,
        ] {
            assert_eq!(FenceNotice::decode(junk), None, "{junk:?}");
        }
    }
}
