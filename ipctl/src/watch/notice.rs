//! Cluster notices as ipctl shows them: membership keeps the last messages on retained topics
//! (`tandem.notice/...`) on every node, a witness included; the agents send a fence's outcome
//! there. A payload this ipctl does not know (another schema, not JSON, not UTF-8: it comes
//! from the network) is shown as bounded, cleaned text, never an error.
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use tandem_proto::membership::v1 as mv1;
use tandem_proto::time::from_timestamp;
use tandem_resource_agent::core::notice::{FenceNotice, bounded};

use crate::render::{clean, human_ms};
use crate::status::rfc3339;

/// Characters of an unknown payload shown.
const TEXT_SHOWN: usize = 200;

/// One notice (`ipctl status` `membership.notices[]`; the fields of an `ipctl watch` line
/// with `"event": "notice"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoticeReport {
    /// Numbers the notices the node's membership kept (restarts with it).
    pub id: u64,
    /// The node that sent it.
    pub from: String,
    pub from_generation: u64,
    pub topic: String,
    /// RFC 3339 UTC time this node received (or sent) it.
    pub received_at: Option<String>,
    /// "fence" (then `fence`) or "other" (then `text`).
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The outcome of one fence attempt, as the fencing node's agent told the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FenceReport {
    /// The node powered off (or not, when failed).
    pub fenced: String,
    /// The node that fenced it.
    pub by: String,
    /// "completed" or "failed".
    pub outcome: String,
    pub reason: String,
    pub attempt: u32,
    /// The provider call's duration.
    pub duration_ms: u64,
    /// From the death (as the fencing node saw it) to this outcome.
    pub since_death_ms: u64,
    /// About when it was declared dead: `received_at` less `since_death_ms`.
    pub dead_at: Option<String>,
    pub provider_call: Option<String>,
    pub detail: Option<String>,
    pub error: Option<String>,
    pub retry_in_ms: Option<u64>,
}

pub fn notice(n: &mv1::Notice) -> NoticeReport {
    let fence = FenceNotice::decode(&n.payload).map(|f| FenceReport {
        dead_at: n.received_at.as_ref().map(|t| {
            let at = from_timestamp(t)
                .checked_sub(Duration::from_millis(f.since_death_ms))
                .unwrap_or(std::time::UNIX_EPOCH);
            rfc3339(&tandem_proto::time::timestamp(at))
        }),
        fenced: f.fenced,
        by: f.by,
        outcome: f.outcome,
        reason: f.reason,
        attempt: f.attempt,
        duration_ms: f.duration_ms,
        since_death_ms: f.since_death_ms,
        provider_call: f.provider_call,
        detail: f.detail,
        error: f.error,
        retry_in_ms: f.retry_in_ms,
    });
    let text = fence
        .is_none()
        .then(|| bounded(&String::from_utf8_lossy(&n.payload), TEXT_SHOWN));
    NoticeReport {
        id: n.id,
        from: n.from.clone(),
        from_generation: n.from_generation,
        topic: n.topic.clone(),
        received_at: n.received_at.as_ref().map(rfc3339),
        kind: if fence.is_some() { "fence" } else { "other" },
        fence,
        text,
    }
}

/// One line, without the time: "primary POWERED OFF by secondary ...".
pub fn notice_text(n: &NoticeReport) -> String {
    let Some(f) = &n.fence else {
        return format!(
            "notice from {} on {}: {}",
            clean(&n.from),
            clean(&n.topic),
            clean(n.text.as_deref().unwrap_or(""))
        );
    };
    let ms = |v: u64| human_ms(v as f64);
    let call = f
        .provider_call
        .as_deref()
        .map_or(String::new(), |c| format!("{} ", clean(c)));
    let mut t = match f.outcome.as_str() {
        "completed" => format!(
            "{} POWERED OFF by {} (attempt {}, {call}{}, {} after it was declared dead)",
            clean(&f.fenced),
            clean(&f.by),
            f.attempt,
            ms(f.duration_ms),
            ms(f.since_death_ms)
        ),
        "failed" => format!(
            "fencing {} by {} FAILED (attempt {}, {call}{}, {} after it was declared dead)",
            clean(&f.fenced),
            clean(&f.by),
            f.attempt,
            ms(f.duration_ms),
            ms(f.since_death_ms)
        ),
        other => format!(
            "fence of {} by {}: {} (attempt {})",
            clean(&f.fenced),
            clean(&f.by),
            clean(other),
            f.attempt
        ),
    };
    let _ = write!(t, "; {}", clean(&f.reason));
    if let Some(d) = &f.detail {
        let _ = write!(t, "; {}", clean(d));
    }
    if let Some(e) = &f.error {
        let _ = write!(t, "; {}", clean(e));
    }
    if let Some(r) = f.retry_in_ms {
        let _ = write!(t, "; next attempt in {}", ms(r));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(payload: &[u8]) -> mv1::Notice {
        mv1::Notice {
            id: 3,
            from: "secondary".into(),
            from_generation: 7,
            topic: "tandem.notice/v1".into(),
            payload: payload.to_vec(),
            received_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_010,
                nanos: 0,
            }),
        }
    }

    #[test]
    fn a_fence_notice_reads_as_who_why_and_how_long() {
        let payload = br#"{"schema":"tandem.notice.fence/v1","fenced":"primary","by":"secondary","outcome":"completed","reason":"declared dead: silent on every link","attempt":1,"duration_ms":340,"since_death_ms":2500,"provider_call":"digitalocean power_off","detail":"droplet 3164444 powered off (action 7)"}"#;
        let n = notice(&raw(payload));
        assert_eq!(n.kind, "fence");
        let f = n.fence.as_ref().unwrap();
        assert_eq!(f.dead_at.as_deref(), Some("2023-11-14T22:13:27Z"));
        assert_eq!(
            notice_text(&n),
            "primary POWERED OFF by secondary (attempt 1, digitalocean power_off 340ms, 2.5s after it \
             was declared dead); declared dead: silent on every link; droplet 3164444 powered off (action 7)"
        );
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["fence"]["fenced"], "primary");
        assert_eq!(v["fence"]["outcome"], "completed");
        assert_eq!(v["from"], "secondary");
        assert!(v.get("text").is_none());
    }

    #[test]
    fn anything_else_is_shown_as_bounded_clean_text() {
        let mut junk = vec![0xff, b'\x1b', b'['];
        junk.extend(std::iter::repeat_n(b'a', 900));
        let n = notice(&raw(&junk));
        assert_eq!(n.kind, "other");
        assert!(n.fence.is_none());
        let text = notice_text(&n);
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.ends_with('…'));
        assert!(text.chars().count() < 300, "{}", text.len());
    }
}
