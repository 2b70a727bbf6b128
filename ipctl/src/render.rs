//! Text rendering of `ipctl status` and `ipctl watch`, from plain data only (the report
//! structs), so that every layout is testable without a daemon.
use std::fmt::Write;

use crate::status::{
    ActionReport, AgentReport, GroupReport, LinkReport, MembershipReport, NodeFlagsReport,
    NodeReport, StatusReport,
};

/// Whether to colour: only for a terminal, and never when NO_COLOR is set to anything
/// non-empty (https://no-color.org).
pub fn colour_wanted(is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_tty && no_color.is_none_or(|v| v.is_empty())
}

#[derive(Clone, Copy)]
enum Tone {
    Good,
    Warn,
    Bad,
    Bold,
    Dim,
}

struct Paint(bool);

impl Paint {
    fn p(&self, tone: Tone, s: &str) -> String {
        if !self.0 {
            return s.to_owned();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Warn => "33",
            Tone::Bad => "31;1",
            Tone::Bold => "1",
            Tone::Dim => "2",
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    }
}

/// Daemon-supplied text is printed as-is except control characters, which could otherwise
/// rewrite the operator's terminal.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A duration given in milliseconds, short and human: 0.42ms, 450ms, 1.2s, 3m12s, 2h03m, 4d02h.
pub fn human_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "?".to_owned();
    }
    if ms < 1.0 {
        return format!("{ms:.2}ms");
    }
    if ms < 10.0 {
        return format!("{ms:.1}ms");
    }
    if ms < 1000.0 {
        return format!("{ms:.0}ms");
    }
    let s = ms / 1000.0;
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let secs = s as u64;
    if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{}d{:02}h", secs / 86_400, (secs % 86_400) / 3600)
    }
}

fn state_tone(state: &str) -> Tone {
    match state {
        "up" | "running" | "ok" => Tone::Good,
        "dead" | "failed" | "timeout" | "down" => Tone::Bad,
        _ => Tone::Warn,
    }
}

pub fn status_text(r: &StatusReport, colour: bool) -> String {
    let paint = Paint(colour);
    let mut out = String::new();
    match (&r.cluster, &r.node) {
        (None, None) => {
            let _ = writeln!(
                out,
                "{} unknown: no daemon answered",
                paint.p(Tone::Bold, "Cluster")
            );
        }
        (c, n) => {
            let _ = writeln!(
                out,
                "{} {}, seen from {}",
                paint.p(Tone::Bold, "Cluster"),
                c.as_deref().map_or("?".to_owned(), clean),
                n.as_deref().map_or("?".to_owned(), clean)
            );
        }
    }
    match (&r.membership.data, &r.membership.error) {
        (Some(m), _) => {
            let _ = writeln!(
                out,
                "  membership {} (generation {}, up {}), view {}",
                clean(&m.version),
                m.generation,
                human_ms(m.uptime_ms),
                m.view_id
            );
        }
        (None, Some(p)) => {
            let _ = writeln!(
                out,
                "  membership: {}",
                paint.p(Tone::Bad, &clean(&p.message))
            );
            if let Some(h) = &p.hint {
                let _ = writeln!(out, "    -> {}", clean(h));
            }
        }
        (None, None) => {}
    }
    match (&r.agent.data, &r.agent.error) {
        (Some(a), _) => {
            let conn = if a.membership_connected {
                "connected to membership".to_owned()
            } else {
                let lost = a
                    .membership_disconnected_for_ms
                    .map(|ms| format!(" for {}", human_ms(ms)))
                    .unwrap_or_default();
                paint.p(
                    Tone::Bad,
                    &format!(
                        "cannot reach membership{lost}: keeps what it holds, starts nothing new"
                    ),
                )
            };
            let _ = writeln!(out, "  resource agent {}, {conn}", clean(&a.version));
        }
        (None, Some(p)) => {
            let _ = writeln!(
                out,
                "  resource agent: {}",
                paint.p(Tone::Bad, &clean(&p.message))
            );
            if let Some(h) = &p.hint {
                let _ = writeln!(out, "    -> {}", clean(h));
            }
        }
        (None, None) => {}
    }
    quorum_line(&mut out, &paint, r);
    nodes(&mut out, &paint, r);
    if let Some(a) = &r.agent.data {
        health(&mut out, &paint, a);
        groups(&mut out, &paint, a);
        fences(&mut out, &paint, a);
        agent_events(&mut out, &paint, a);
    }
    if let Some(m) = &r.membership.data {
        notices(&mut out, &paint, m);
        rejected(&mut out, &paint, m);
        recent_events(&mut out, &paint, m);
    }
    out
}

/// What the cluster announced (fences by any node), from membership: shown on every node,
/// a witness too.
fn notices(out: &mut String, paint: &Paint, m: &MembershipReport) {
    if m.notices.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", paint.p(Tone::Bold, "Cluster notices"));
    for n in &m.notices {
        let at = n.received_at.as_deref().unwrap_or("-");
        let text = crate::watch::notice::notice_text(n);
        let text = match n.fence.as_ref().map(|f| f.outcome.as_str()) {
            Some("completed") => paint.p(Tone::Good, &text),
            Some("failed") => paint.p(Tone::Bad, &text),
            _ => text,
        };
        let _ = writeln!(out, "  {at} {text}");
    }
}

/// What just happened, so a one-shot look explains the state it shows.
fn recent_events(out: &mut String, paint: &Paint, m: &MembershipReport) {
    if m.recent_events.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", paint.p(Tone::Bold, "Recent events"));
    for e in &m.recent_events {
        let _ = writeln!(out, "  {}", crate::watch::event_text(e));
    }
}

/// The agent's last few events: the moves (and fences) behind the state shown, with their
/// causes and durations.
fn agent_events(out: &mut String, paint: &Paint, a: &AgentReport) {
    const SHOWN: usize = 5;
    if a.recent_events.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        paint.p(Tone::Bold, "Recent events (resource agent)")
    );
    let skip = a.recent_events.len().saturating_sub(SHOWN);
    for e in &a.recent_events[skip..] {
        let _ = writeln!(out, "  {}", crate::watch::agent::event_text(e));
    }
}

fn quorum_line(out: &mut String, paint: &Paint, r: &StatusReport) {
    if let Some(q) = r.membership.data.as_ref().and_then(|m| m.quorum.as_ref()) {
        let verdict = if q.quorate {
            paint.p(Tone::Good, "yes")
        } else {
            paint.p(Tone::Bad, "NO")
        };
        let _ = writeln!(
            out,
            "{} {verdict} (policy {}: {} of {} voters alive, {} needed){}",
            paint.p(Tone::Bold, "Quorum:"),
            q.policy,
            q.alive,
            q.voters,
            q.needed,
            if q.quorate {
                ""
            } else {
                "; this node holds no resources"
            }
        );
    } else if let Some(a) = &r.agent.data {
        let verdict = if a.quorate {
            paint.p(Tone::Good, "yes")
        } else {
            paint.p(Tone::Bad, "NO")
        };
        let _ = writeln!(
            out,
            "{} {verdict} (as the resource agent last heard)",
            paint.p(Tone::Bold, "Quorum:")
        );
    }
}

fn nodes(out: &mut String, paint: &Paint, r: &StatusReport) {
    let flags: &[NodeFlagsReport] = r.agent.data.as_ref().map_or(&[], |a| &a.nodes);
    let members: &[NodeReport] = r.membership.data.as_ref().map_or(&[], |m| &m.nodes);
    if members.is_empty() && flags.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", paint.p(Tone::Bold, "Nodes"));
    let width = members
        .iter()
        .map(|n| n.name.len() + if n.local { 8 } else { 0 })
        .chain(flags.iter().map(|f| f.name.len()))
        .max()
        .unwrap_or(0);
    for n in members {
        let name = if n.local {
            format!("{} (local)", clean(&n.name))
        } else {
            clean(&n.name)
        };
        let state = n.state.to_uppercase();
        let mut line = format!(
            "  {name:width$}  {:7}  {}",
            n.role,
            paint.p(state_tone(n.state), &format!("{state:7}"))
        );
        if n.generation > 0 {
            let _ = write!(line, "  gen {}", n.generation);
        }
        if let Some(age) = n.state_age_ms {
            let _ = write!(line, "  for {}", human_ms(age));
        }
        if let Some(since) = &n.since {
            let _ = write!(line, " (since {since})");
        }
        // The agent's word on a node it cannot hear is stale: say so, not "online, unhealthy".
        match (n.state, flags.iter().find(|f| f.name == n.name)) {
            ("dead", _) if !n.local => {
                let _ = write!(line, "  {}", paint.p(Tone::Bad, "unreachable"));
            }
            ("unknown", _) if !n.local => {
                let _ = write!(line, "  {}", paint.p(Tone::Warn, "never heard"));
            }
            (_, Some(f)) => {
                let _ = write!(line, "  {}", node_flags(paint, f));
            }
            _ => {}
        }
        let _ = writeln!(out, "{}", line.trim_end());
        for l in &n.links {
            let _ = writeln!(out, "      {}", link(paint, n.local, l));
        }
    }
    // Nodes the agent knows but membership did not report (membership down).
    for f in flags
        .iter()
        .filter(|f| !members.iter().any(|n| n.name == f.name))
    {
        let _ = writeln!(out, "  {:width$}  {}", clean(&f.name), node_flags(paint, f));
    }
}

fn node_flags(paint: &Paint, f: &NodeFlagsReport) -> String {
    let mut parts = vec![
        if f.standby {
            format!(
                "{} (`ipctl online {}` ends it)",
                paint.p(Tone::Warn, "standby"),
                clean(&f.name)
            )
        } else {
            "online".to_owned()
        },
        if f.healthy {
            "healthy".to_owned()
        } else {
            paint.p(Tone::Bad, "unhealthy")
        },
    ];
    if !f.holds.is_empty() {
        let holds: Vec<String> = f.holds.iter().map(|h| clean(h)).collect();
        parts.push(format!("holds {}", holds.join(", ")));
    }
    parts.join(", ")
}

fn link(paint: &Paint, local: bool, l: &LinkReport) -> String {
    let addr = clean(&l.address);
    if local {
        return format!("link {} {addr} (bound here)", l.index);
    }
    let mut s = format!(
        "link {} {addr}  {}",
        l.index,
        paint.p(state_tone(l.state), l.state)
    );
    let (Some(heard), Some(loss)) = (l.last_heard_ms, l.loss) else {
        // Nothing to measure a loss or a round trip on.
        let _ = write!(s, "  {}", paint.p(Tone::Warn, "never heard"));
        return s;
    };
    let _ = write!(s, "  heard {} ago", human_ms(heard));
    if let Some(rtt) = l.rtt_ms {
        let _ = write!(s, "  rtt {}", human_ms(rtt));
    }
    let tone = if loss >= 0.5 {
        Tone::Bad
    } else if loss >= 0.05 {
        Tone::Warn
    } else {
        Tone::Dim
    };
    let loss = format!("loss {:.0}%", loss * 100.0);
    let _ = write!(s, "  {}  received {}", paint.p(tone, &loss), l.received);
    s
}

fn health(out: &mut String, paint: &Paint, a: &AgentReport) {
    if a.health.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        paint.p(Tone::Bold, "Health checks (this node)")
    );
    for h in &a.health {
        let mut line = if h.healthy {
            format!("  {}    {}", paint.p(Tone::Good, "ok"), clean(&h.name))
        } else {
            format!("  {}  {}", paint.p(Tone::Bad, "FAIL"), clean(&h.name))
        };
        if h.consecutive_failures > 0 {
            let _ = write!(line, "  ({} failed in a row", h.consecutive_failures);
            if let Some(e) = &h.last_error {
                let _ = write!(line, ": {}", clean(e));
            }
            line.push(')');
        }
        let _ = writeln!(out, "{line}");
    }
}

fn action(a: &ActionReport) -> String {
    let mut s = format!("{} {}", clean(&a.action), a.result);
    if let Some(d) = a.duration_ms {
        let _ = write!(s, " in {}", human_ms(d));
    }
    if let Some(t) = &a.started_at {
        let _ = write!(s, " at {t}");
    }
    if let Some(m) = &a.message {
        let _ = write!(s, ": {}", clean(m));
    }
    s
}

fn groups(out: &mut String, paint: &Paint, a: &AgentReport) {
    if a.groups.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", paint.p(Tone::Bold, "Resource groups"));
    for g in &a.groups {
        group(out, paint, g);
    }
}

fn group(out: &mut String, paint: &Paint, g: &GroupReport) {
    let holder = g
        .holder
        .as_deref()
        .map_or_else(|| paint.p(Tone::Warn, "nobody"), clean);
    let desired = g.desired_holder.as_deref().map_or_else(
        || paint.p(Tone::Bad, "nowhere (no candidate)"),
        |n| format!("on {}", clean(n)),
    );
    let moving = if g.holder != g.desired_holder {
        paint.p(Tone::Warn, "  (moving)")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  {}: held by {holder}, should run {desired}{moving}",
        paint.p(Tone::Bold, &clean(&g.name))
    );
    let mut policy = format!("failback {}", clean(&g.failback));
    if let Some(p) = &g.prefer {
        policy = format!("prefer {}, {policy}", clean(p));
    }
    let _ = writeln!(
        out,
        "    here: {}  ({policy}{})",
        paint.p(state_tone(g.state), g.state),
        if g.restarts > 0 {
            format!(", {} restarts", g.restarts)
        } else {
            String::new()
        }
    );
    match g.ready {
        Some(true) => {
            let _ = writeln!(
                out,
                "    agents {} to take over here",
                paint.p(Tone::Good, "ready")
            );
            // Readiness reads; no provider lists a token's scopes, so a standby's write scope
            // is unknown until its first move (docs/CONFIGURATION.md).
            if g.state != "running" && g.agents.iter().any(|a| a.kind == "reserved-ip") {
                let _ = writeln!(
                    out,
                    "      (checked by reading; whether the token may move the IP shows at the \
                     first move: a 403 naming the scope, nothing moved)"
                );
            }
        }
        Some(false) => {
            let _ = writeln!(
                out,
                "    agents {} to take over here:",
                paint.p(Tone::Bad, "NOT READY")
            );
            for p in &g.problems {
                let _ = writeln!(out, "      - {}", clean(p));
            }
        }
        None => {}
    }
    if let Some(why) = &g.not_candidate_reason {
        let _ = writeln!(
            out,
            "    {} {}",
            paint.p(Tone::Warn, "not a candidate:"),
            clean(why)
        );
    }
    if let Some(why) = &g.waiting_for {
        let _ = writeln!(
            out,
            "    {} {}",
            paint.p(Tone::Warn, "waiting:"),
            clean(why)
        );
    }
    for c in &g.constraints {
        let what = match c.kind {
            "pin" => format!("pinned to {}", clean(&c.node)),
            "ban" => format!("not on {}", clean(&c.node)),
            other => format!("{other} on {}", clean(&c.node)),
        };
        let _ = writeln!(
            out,
            "    {}: {}; clear with `{}`",
            paint.p(Tone::Warn, &what),
            clean(&c.reason),
            clean(&c.clear)
        );
    }
    if let Some(a) = &g.last_action {
        let _ = writeln!(out, "    last action: {}", action(a));
    }
    for ag in &g.agents {
        let mut line = format!(
            "    - {} {}",
            paint.p(state_tone(ag.state), &format!("{:8}", ag.state)),
            clean(&ag.name)
        );
        if let Some(d) = &ag.detail {
            let _ = write!(line, "  {}", clean(d));
        }
        if ag.failures > 0 {
            let _ = write!(
                line,
                "  {}",
                paint.p(Tone::Bad, &format!("{} failures", ag.failures))
            );
        }
        let _ = writeln!(out, "{line}");
        if let Some(a) = &ag.last_action {
            let _ = writeln!(out, "        last: {}", action(a));
        }
    }
}

/// The last fence of each peer: who, why, how long, how it ended.
fn fences(out: &mut String, paint: &Paint, a: &AgentReport) {
    if a.fences.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        paint.p(Tone::Bold, "Fences (peers powered off)")
    );
    for f in &a.fences {
        let tone = match f.phase.as_str() {
            "done" => Tone::Good,
            "failed" => Tone::Bad,
            _ => Tone::Warn,
        };
        let took = f.took_ms.map(human_ms).unwrap_or_default();
        let attempts = if f.attempts == 1 {
            "1 attempt".to_owned()
        } else {
            format!("{} attempts", f.attempts)
        };
        let mut line = format!(
            "  {}: {} after {took} ({attempts}); {}",
            clean(&f.node),
            paint.p(tone, &clean(&f.phase)),
            clean(&f.reason)
        );
        if let Some(d) = &f.detail {
            let _ = write!(line, "; {}", clean(d));
        }
        if let Some(e) = &f.error {
            let _ = write!(line, "; {}", paint.p(Tone::Bad, &clean(e)));
        }
        if let Some(ms) = f.next_in_ms {
            let _ = write!(line, "; next attempt in {}", human_ms(ms));
        }
        let _ = writeln!(out, "{line}");
    }
}

fn rejected(out: &mut String, paint: &Paint, m: &MembershipReport) {
    let bad: Vec<String> = m
        .rejected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{} {n}", clean(k)))
        .collect();
    if !bad.is_empty() {
        let _ = writeln!(
            out,
            "\n{} {}",
            paint.p(Tone::Warn, "Rejected datagrams:"),
            bad.join(", ")
        );
    }
    // Only when it happened: a frozen or starved node explains late detections.
    if let Some(c) = m.counters.as_ref().filter(|c| c.stalls > 0) {
        let _ = writeln!(
            out,
            "{} {} (this node's membership loop ran more than two intervals late)",
            paint.p(Tone::Warn, "Loop stalls:"),
            c.stalls
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_and_a_group_waiting_for_one_are_shown() {
        use tandem_proto::agent::v1 as av1;
        let d = |ms: u64| prost_types::Duration {
            seconds: (ms / 1000) as i64,
            nanos: ((ms % 1000) * 1_000_000) as i32,
        };
        let a = av1::StatusResponse {
            node: "secondary".into(),
            cluster: "web".into(),
            membership_connected: true,
            quorate: true,
            groups: vec![av1::GroupStatus {
                name: "floatip".into(),
                desired_holder: "secondary".into(),
                state: av1::GroupState::Waiting as i32,
                waiting_for: "fencing primary failed: 401; retrying in 2.0s".into(),
                ..Default::default()
            }],
            fences: vec![
                av1::Fence {
                    node: "primary".into(),
                    reason: "declared dead: silent on every link".into(),
                    phase: "failed".into(),
                    took: Some(d(3500)),
                    attempts: 2,
                    error: "the API token was rejected (401 unauthorized)".into(),
                    next_in: Some(d(2000)),
                    ..Default::default()
                },
                av1::Fence {
                    node: "third".into(),
                    reason: "declared dead: silent on every link".into(),
                    phase: "done".into(),
                    took: Some(d(1200)),
                    attempts: 1,
                    detail: "droplet 3 powered off (action 7, 5 API calls, 0.2s)".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let membership_down = crate::control::Problem {
            kind: "not_running",
            message: "down".into(),
            hint: None,
        };
        let r = crate::status::report(Err(membership_down), Ok(a));
        let text = status_text(&r, false);
        assert!(
            text.contains("    waiting: fencing primary failed: 401; retrying in 2.0s"),
            "{text}"
        );
        assert!(text.contains("Fences (peers powered off)"), "{text}");
        assert!(
            text.contains(
                "  primary: failed after 3.5s (2 attempts); declared dead: silent on every link; \
                 the API token was rejected (401 unauthorized); next attempt in 2.0s"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  third: done after 1.2s (1 attempt); declared dead: silent on every link; \
                 droplet 3 powered off (action 7, 5 API calls, 0.2s)"
            ),
            "{text}"
        );
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(human_ms(0.42), "0.42ms");
        assert_eq!(human_ms(1.25), "1.2ms");
        assert_eq!(human_ms(450.0), "450ms");
        assert_eq!(human_ms(1234.0), "1.2s");
        assert_eq!(human_ms(192_000.0), "3m12s");
        assert_eq!(human_ms(7_380_000.0), "2h03m");
        assert_eq!(human_ms(3.0 * 86_400_000.0 + 7_200_000.0), "3d02h");
        assert_eq!(human_ms(f64::NAN), "?");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(clean("ok\x1b[2J\nx"), "ok?[2J?x");
    }

    #[test]
    fn colour_marks_a_dead_node_and_lost_quorum_only_when_asked() {
        use tandem_proto::membership::v1 as mv1;
        let m = mv1::StatusResponse {
            view: Some(mv1::View {
                view_id: 1,
                cluster: "web".into(),
                local_node: "a".into(),
                nodes: vec![mv1::Node {
                    name: "b".into(),
                    state: mv1::NodeState::Dead as i32,
                    ..Default::default()
                }],
                quorum: Some(mv1::Quorum {
                    policy: mv1::QuorumPolicy::Majority as i32,
                    quorate: false,
                    voters: 3,
                    alive: 1,
                    needed: 2,
                }),
            }),
            ..Default::default()
        };
        let agent_down = crate::control::Problem {
            kind: "not_running",
            message: "down".into(),
            hint: None,
        };
        let r = crate::status::report(Ok(m), Err(agent_down));
        let coloured = status_text(&r, true);
        assert!(coloured.contains("\x1b[31;1mDEAD   \x1b[0m"), "{coloured}");
        assert!(coloured.contains("\x1b[31;1mNO\x1b[0m"), "{coloured}");
        let plain = status_text(&r, false);
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(plain.contains("Cluster web, seen from a"), "{plain}");
    }

    #[test]
    fn loop_stalls_are_shown_only_when_there_were_some() {
        use tandem_proto::membership::v1 as mv1;
        let with = |stalls| {
            let m = mv1::StatusResponse {
                counters: Some(mv1::Counters {
                    stalls,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let agent_down = crate::control::Problem {
                kind: "not_running",
                message: "down".into(),
                hint: None,
            };
            status_text(&crate::status::report(Ok(m), Err(agent_down)), false)
        };
        assert!(with(3).contains("\nLoop stalls: 3 ("), "{}", with(3));
        assert!(!with(0).contains("stalls"), "{}", with(0));
    }

    #[test]
    fn nobody_answering_says_so() {
        let p = || crate::control::Problem {
            kind: "not_running",
            message: "down".into(),
            hint: None,
        };
        let r = crate::status::report(Err(p()), Err(p()));
        assert!(status_text(&r, false).starts_with("Cluster unknown: no daemon answered\n"));
    }

    #[test]
    fn paint_adds_escapes_only_when_on() {
        assert_eq!(Paint(false).p(Tone::Bad, "DEAD"), "DEAD");
        assert_eq!(Paint(true).p(Tone::Bad, "DEAD"), "\x1b[31;1mDEAD\x1b[0m");
    }
}
