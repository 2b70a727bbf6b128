//! `ipctl watch`: follow Membership/Watch and Agent/Watch live, merged in time order. Each
//! snapshot is summarised first, then one line per event; `--json` prints one JSON object
//! per line (schema `tandem.ipctl.watch/v1`, documented in docs/IPCTL.md).
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use serde::Serialize;
use tandem_proto::agent::v1 as av1;
use tandem_proto::membership::v1 as mv1;
use tandem_proto::time::{from_duration, from_timestamp};
use tonic::Code;

pub mod agent;
pub mod notice;

use crate::control::{Daemon, Problem, connect, rpc_problem};
use crate::render::{clean, human_ms};
use crate::status::{NodeReport, QuorumReport, millis, node, quorum, rfc3339};

pub const SCHEMA: &str = "tandem.ipctl.watch/v1";

/// Pause before subscribing again after the daemon dropped a slow subscriber.
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per line (schema tandem.ipctl.watch/v1) instead of text: membership's
    /// and the resource agent's events, in time order.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct SnapshotLine {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub source: &'static str,
    /// The seq of the last event already folded into this snapshot.
    pub snapshot_seq: u64,
    pub view_id: u64,
    pub cluster: String,
    pub node: String,
    pub quorum: Option<QuorumReport>,
    pub nodes: Vec<NodeReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventLine {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// "membership" (these lines) or "agent" ([`agent::AgentEventLine`]).
    pub source: &'static str,
    pub seq: u64,
    pub view_id: u64,
    pub at: Option<String>,
    #[serde(flatten)]
    pub event: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    NodeUp {
        node: String,
        generation: u64,
        new_incarnation: bool,
        previous_generation: u64,
    },
    NodeLate {
        node: String,
        silent_for_ms: Option<f64>,
    },
    NodeDead {
        node: String,
        generation: u64,
        /// "silent", "never_heard", "left" or "other".
        reason: &'static str,
        silent_for_ms: Option<f64>,
    },
    LinkUp {
        node: String,
        link: u32,
        address: String,
    },
    LinkDown {
        node: String,
        link: u32,
        address: String,
    },
    QuorumChanged {
        quorum: Option<QuorumReport>,
    },
    /// A message on a retained topic, e.g. a fence's outcome told by the fencing node.
    Notice(Box<notice::NoticeReport>),
    /// A kind this ipctl does not know (a newer daemon).
    Other,
}

pub fn snapshot_line(v: &mv1::View, snapshot_seq: u64) -> SnapshotLine {
    SnapshotLine {
        schema: SCHEMA,
        kind: "snapshot",
        source: "membership",
        snapshot_seq,
        view_id: v.view_id,
        cluster: v.cluster.clone(),
        node: v.local_node.clone(),
        quorum: v.quorum.as_ref().map(quorum),
        nodes: v.nodes.iter().map(node).collect(),
    }
}

pub fn event_line(e: &mv1::Event) -> EventLine {
    use mv1::event::Kind;
    let ms = |d: Option<&prost_types::Duration>| d.map(|d| millis(from_duration(d)));
    let event = match &e.kind {
        Some(Kind::NodeUp(u)) => EventKind::NodeUp {
            node: u.node.clone(),
            generation: u.generation,
            new_incarnation: u.new_incarnation,
            previous_generation: u.previous_generation,
        },
        Some(Kind::NodeLate(l)) => EventKind::NodeLate {
            node: l.node.clone(),
            silent_for_ms: ms(l.silent_for.as_ref()),
        },
        Some(Kind::NodeDead(d)) => EventKind::NodeDead {
            node: d.node.clone(),
            generation: d.generation,
            reason: match mv1::node_dead::Reason::try_from(d.reason) {
                Ok(mv1::node_dead::Reason::Silent) => "silent",
                Ok(mv1::node_dead::Reason::NeverHeard) => "never_heard",
                Ok(mv1::node_dead::Reason::Left) => "left",
                _ => "other",
            },
            silent_for_ms: ms(d.silent_for.as_ref()),
        },
        Some(Kind::LinkUp(l)) => EventKind::LinkUp {
            node: l.node.clone(),
            link: l.link,
            address: l.address.clone(),
        },
        Some(Kind::LinkDown(l)) => EventKind::LinkDown {
            node: l.node.clone(),
            link: l.link,
            address: l.address.clone(),
        },
        Some(Kind::QuorumChanged(q)) => EventKind::QuorumChanged {
            quorum: q.quorum.as_ref().map(quorum),
        },
        Some(Kind::Notice(n)) => EventKind::Notice(Box::new(notice::notice(n))),
        None => EventKind::Other,
    };
    EventLine {
        schema: SCHEMA,
        kind: "event",
        source: "membership",
        seq: e.seq,
        view_id: e.view_id,
        at: e.at.as_ref().map(rfc3339),
        event,
    }
}

fn quorum_text(q: &QuorumReport) -> String {
    format!(
        "quorum {} (policy {}: {} of {} voters alive, {} needed)",
        if q.quorate { "yes" } else { "NO" },
        q.policy,
        q.alive,
        q.voters,
        q.needed
    )
}

pub fn snapshot_text(s: &SnapshotLine) -> String {
    let mut out = format!(
        "cluster {}, seen from {}, view {} (events after #{}):\n",
        clean(&s.cluster),
        clean(&s.node),
        s.view_id,
        s.snapshot_seq
    );
    let nodes: Vec<String> = s
        .nodes
        .iter()
        .map(|n| {
            let mut t = format!("{} {}", clean(&n.name), n.state);
            if n.generation > 0 {
                let _ = write!(t, " gen {}", n.generation);
            }
            if n.role == "witness" {
                t.push_str(" (witness)");
            }
            t
        })
        .collect();
    let _ = writeln!(out, "  nodes: {}", nodes.join(", "));
    if let Some(q) = &s.quorum {
        let _ = writeln!(out, "  {}", quorum_text(q));
    }
    out
}

pub fn event_text(e: &EventLine) -> String {
    let at = e.at.as_deref().unwrap_or("-");
    let what = match &e.event {
        EventKind::NodeUp {
            node,
            generation,
            new_incarnation,
            previous_generation,
        } => {
            let mut t = format!("node {} UP gen {generation}", clean(node));
            if *new_incarnation && *previous_generation > 0 {
                let _ = write!(t, " (restarted; was gen {previous_generation})");
            } else if *new_incarnation {
                t.push_str(" (new incarnation)");
            }
            t
        }
        EventKind::NodeLate {
            node,
            silent_for_ms,
        } => format!(
            "node {} LATE (silent {})",
            clean(node),
            silent_for_ms.map_or("?".to_owned(), human_ms)
        ),
        EventKind::NodeDead {
            node,
            generation,
            reason,
            silent_for_ms,
        } => {
            let why = match *reason {
                "silent" => format!(
                    "silent on every link for {}",
                    silent_for_ms.map_or("?".to_owned(), human_ms)
                ),
                "never_heard" => "never heard since start".to_owned(),
                "left" => "left cleanly".to_owned(),
                other => other.to_owned(),
            };
            format!("node {} DEAD gen {generation} ({why})", clean(node))
        }
        EventKind::LinkUp {
            node,
            link,
            address,
        } => format!("link {link} of {} ({}) up", clean(node), clean(address)),
        EventKind::LinkDown {
            node,
            link,
            address,
        } => format!("link {link} of {} ({}) DOWN", clean(node), clean(address)),
        EventKind::QuorumChanged { quorum } => match quorum {
            Some(q) => quorum_text(q),
            None => "quorum changed".to_owned(),
        },
        EventKind::Notice(n) => notice::notice_text(n),
        EventKind::Other => "an event this ipctl does not know (upgrade ipctl)".to_owned(),
    };
    format!("{at} #{} view {}: {what}", e.seq, e.view_id)
}

/// How the streams ended.
enum End {
    /// Dropped for being too slow: start again from fresh snapshots.
    Reconnect,
    Stop(Problem),
}

/// How long an event is held before it is printed, so that the two daemons' events come
/// out in the order they happened (`at`), not the order they arrived: the agent reacts to
/// membership's event within milliseconds, and its own event may overtake it on the way.
const MERGE_HOLD: Duration = Duration::from_millis(150);

/// One line waiting to be printed.
struct Pending {
    arrived: Instant,
    at: SystemTime,
    line: String,
}

/// The events of both daemons, printed in time order ([`MERGE_HOLD`]).
#[derive(Default)]
struct Merge {
    pending: Vec<Pending>,
}

impl Merge {
    fn push(&mut self, now: Instant, at: Option<&prost_types::Timestamp>, line: String) {
        self.pending.push(Pending {
            arrived: now,
            at: at.map_or_else(SystemTime::now, from_timestamp),
            line,
        });
    }

    /// When the next line is due.
    fn deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.arrived + MERGE_HOLD).min()
    }

    /// Every line held long enough, and every line that happened before one of those (held
    /// or not), oldest first; everything when `all`.
    fn due(&mut self, now: Instant, all: bool) -> Vec<String> {
        let Some(upto) = self
            .pending
            .iter()
            .filter(|p| all || p.arrived + MERGE_HOLD <= now)
            .map(|p| p.at)
            .max()
        else {
            return Vec::new();
        };
        // Stable: equal times keep their arrival order.
        self.pending.sort_by_key(|p| p.at);
        let n = self.pending.iter().take_while(|p| p.at <= upto).count();
        self.pending.drain(..n).map(|p| p.line).collect()
    }

    fn flush(&mut self, now: Instant, all: bool) {
        for line in self.due(now, all) {
            println!("{line}");
        }
    }
}

/// A daemon's Watch stream, as both daemons shape it: a snapshot, then numbered events.
struct Stream<T> {
    daemon: Daemon,
    inner: Option<tonic::Streaming<T>>,
    last_seq: Option<u64>,
}

impl<T> Stream<T> {
    fn new(daemon: Daemon, inner: Option<tonic::Streaming<T>>) -> Self {
        Stream {
            daemon,
            inner,
            last_seq: None,
        }
    }

    /// The next message; `None` while this daemon is not watched (absent at the start).
    async fn next(&mut self) -> Option<Result<T, End>> {
        let s = self.inner.as_mut()?;
        let closed = |how: &str| {
            End::Stop(Problem {
                kind: "not_running",
                message: format!("{} {how} (stopped or restarting?)", self.daemon.unit()),
                hint: Some(format!("systemctl status {}", self.daemon.unit())),
            })
        };
        Some(match s.message().await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(closed("closed the stream")),
            Err(s) if s.code() == Code::ResourceExhausted => Err(End::Reconnect),
            // The connection broke (the daemon died): h2 reports it as UNKNOWN or UNAVAILABLE.
            Err(s) if matches!(s.code(), Code::Unknown | Code::Unavailable) => {
                Err(closed("went away"))
            }
            Err(s) => Err(End::Stop(rpc_problem(self.daemon, &s, None))),
        })
    }

    fn snapshot(&mut self, seq: u64) {
        self.last_seq = Some(seq);
    }

    /// Notes an event's number; the contract promises no gaps: say so rather than hide it.
    fn event(&mut self, seq: u64) {
        if let Some(prev) = self.last_seq
            && seq != prev + 1
        {
            eprintln!(
                "ipctl: {}'s event numbers jumped from #{prev} to #{seq}; events may be missing",
                self.daemon.unit()
            );
        }
        self.last_seq = Some(seq);
    }
}

/// Opens both daemons' Watch streams. One that is not there is left out with a note (a
/// witness runs no agent); neither is an error.
async fn open(
    run_dir: &Path,
) -> Result<(Stream<mv1::WatchResponse>, Stream<av1::WatchResponse>), End> {
    let membership = async {
        let mut c = mv1::membership_client::MembershipClient::new(
            connect(Daemon::Membership, run_dir).await?,
        );
        c.watch(mv1::WatchRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| rpc_problem(Daemon::Membership, &s, None))
    };
    let agent = async {
        let mut c = av1::agent_client::AgentClient::new(connect(Daemon::Agent, run_dir).await?);
        c.watch(av1::WatchRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| rpc_problem(Daemon::Agent, &s, None))
    };
    let (m, a) = tokio::join!(membership, agent);
    let (m, a) = match (m, a) {
        (Err(p), Err(_)) => return Err(End::Stop(p)),
        (m, a) => (m, a),
    };
    let m = m
        .map_err(|p| eprintln!("ipctl: {p}\nipctl: showing the resource agent's events only"))
        .ok();
    let a = a
        .map_err(|p| eprintln!("ipctl: {p}\nipctl: showing membership's events only"))
        .ok();
    Ok((
        Stream::new(Daemon::Membership, m),
        Stream::new(Daemon::Agent, a),
    ))
}

fn render<T: Serialize>(json: bool, line: &T, text: impl FnOnce(&T) -> String) -> String {
    if json { to_json(line) } else { text(line) }
}

async fn follow(run_dir: &Path, json: bool) -> End {
    let (mut membership, mut agent) = match open(run_dir).await {
        Ok(s) => s,
        Err(end) => return end,
    };
    let mut merge = Merge::default();
    loop {
        let hold = merge.deadline();
        tokio::select! {
            Some(m) = membership.next() => {
                let msg = match m {
                    Ok(m) => m,
                    Err(end) => { merge.flush(Instant::now(), true); return end; }
                };
                match msg.kind {
                    Some(mv1::watch_response::Kind::Snapshot(v)) => {
                        membership.snapshot(msg.snapshot_seq);
                        let line = snapshot_line(&v, msg.snapshot_seq);
                        let text = render(json, &line, |l| snapshot_text(l).trim_end().to_owned());
                        println!("{text}");
                    }
                    Some(mv1::watch_response::Kind::Event(e)) => {
                        membership.event(e.seq);
                        let line = render(json, &event_line(&e), event_text);
                        merge.push(Instant::now(), e.at.as_ref(), line);
                    }
                    None => {}
                }
            }
            Some(a) = agent.next() => {
                let msg = match a {
                    Ok(m) => m,
                    Err(end) => { merge.flush(Instant::now(), true); return end; }
                };
                match msg.kind {
                    Some(av1::watch_response::Kind::Snapshot(s)) => {
                        agent.snapshot(msg.snapshot_seq);
                        let line = agent::snapshot_line(&s, msg.snapshot_seq);
                        let text =
                            render(json, &line, |l| agent::snapshot_text(l).trim_end().to_owned());
                        println!("{text}");
                    }
                    Some(av1::watch_response::Kind::Event(e)) => {
                        agent.event(e.seq);
                        let line = agent::event_line(&e);
                        merge.push(Instant::now(), e.at.as_ref(), render(json, &line, agent::event_text));
                    }
                    None => {}
                }
            }
            () = sleep_until(hold), if hold.is_some() => merge.flush(Instant::now(), false),
        }
    }
}

/// Sleeps until `t` (forever when `None`: the branch is disabled then anyway).
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| {
        // Our own types always serialize; should one not, say so on the line itself.
        format!(r#"{{"schema":"{SCHEMA}","type":"error","message":"cannot encode a line as JSON: {e}"}}"#)
    })
}

pub fn run(cli: &crate::Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let rt = crate::control::runtime()?;
    loop {
        match rt.block_on(follow(&cli.run_dir, args.json)) {
            End::Reconnect => {
                eprintln!("ipctl: fell too far behind the event stream; starting again");
                // A short pause so a daemon that keeps dropping us is not hammered.
                std::thread::sleep(RECONNECT_PAUSE);
            }
            End::Stop(p) => {
                eprintln!("ipctl: {p}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_dead_event_reads_as_a_line_and_as_json() {
        let e = mv1::Event {
            seq: 42,
            view_id: 9,
            at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            kind: Some(mv1::event::Kind::NodeDead(mv1::NodeDead {
                node: "secondary".into(),
                generation: 3,
                reason: mv1::node_dead::Reason::Silent as i32,
                silent_for: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
            })),
        };
        let line = event_line(&e);
        assert_eq!(
            event_text(&line),
            "2023-11-14T22:13:20Z #42 view 9: node secondary DEAD gen 3 (silent on every link for 1.0s)"
        );
        let v: serde_json::Value = serde_json::to_value(&line).unwrap();
        assert_eq!(v["event"], "node_dead");
        assert_eq!(v["reason"], "silent");
        assert_eq!(v["silent_for_ms"], 1000.0);
        assert_eq!(v["schema"], SCHEMA);
    }

    #[test]
    fn merged_events_come_out_in_the_order_they_happened() {
        let t0 = Instant::now();
        let at = |ms: i64| prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: (ms * 1_000_000) as i32,
        };
        let mut m = Merge::default();
        // The agent's reaction arrives before the membership event that caused it.
        m.push(t0, Some(&at(20)), "agent starting".into());
        m.push(
            t0 + Duration::from_millis(5),
            Some(&at(10)),
            "node dead".into(),
        );
        assert!(m.due(t0 + Duration::from_millis(100), false).is_empty());
        assert_eq!(m.deadline(), Some(t0 + MERGE_HOLD));
        m.push(t0 + MERGE_HOLD, Some(&at(900)), "later".into());
        assert_eq!(
            m.due(t0 + MERGE_HOLD, false),
            ["node dead", "agent starting"]
        );
        assert_eq!(m.due(t0 + MERGE_HOLD, true), ["later"]);
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn a_notice_event_is_a_line_with_its_fields_flattened() {
        let e = mv1::Event {
            seq: 43,
            view_id: 9,
            at: None,
            kind: Some(mv1::event::Kind::Notice(mv1::Notice {
                id: 1,
                from: "secondary".into(),
                topic: "tandem.notice/v1".into(),
                payload: b"hello".to_vec(),
                ..Default::default()
            })),
        };
        let line = event_line(&e);
        assert_eq!(
            event_text(&line),
            "- #43 view 9: notice from secondary on tandem.notice/v1: hello"
        );
        let v: serde_json::Value = serde_json::to_value(&line).unwrap();
        assert_eq!(v["event"], "notice");
        assert_eq!(v["source"], "membership");
        assert_eq!(v["from"], "secondary");
        assert_eq!(v["kind"], "other");
        assert_eq!(v["text"], "hello");
    }

    #[test]
    fn unknown_node_state_is_other_not_an_error() {
        assert_eq!(crate::status::node_state(99), "other");
    }
}
