//! `ipctl watch`: follow Membership/Watch live. The snapshot is summarised first, then one
//! line per event; `--json` prints one JSON object per line (schema `tandem.ipctl.watch/v1`,
//! documented in docs/IPCTL.md).
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;
use tandem_proto::membership::v1 as mv1;
use tandem_proto::time::from_duration;
use tonic::Code;

use crate::control::{Daemon, Problem, connect, rpc_problem};
use crate::render::{clean, human_ms};
use crate::status::{NodeReport, QuorumReport, millis, node, quorum, rfc3339};

pub const SCHEMA: &str = "tandem.ipctl.watch/v1";

/// Pause before subscribing again after the daemon dropped a slow subscriber.
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per line (schema tandem.ipctl.watch/v1) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct SnapshotLine {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
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
    /// A kind this ipctl does not know (a newer daemon).
    Other,
}

pub fn snapshot_line(v: &mv1::View, snapshot_seq: u64) -> SnapshotLine {
    SnapshotLine {
        schema: SCHEMA,
        kind: "snapshot",
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
        None => EventKind::Other,
    };
    EventLine {
        schema: SCHEMA,
        kind: "event",
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
        EventKind::Other => "an event this ipctl does not know (upgrade ipctl)".to_owned(),
    };
    format!("{at} #{} view {}: {what}", e.seq, e.view_id)
}

/// How the stream ended.
enum End {
    /// Dropped for being too slow: start again from a fresh snapshot.
    Reconnect,
    Stop(Problem),
}

async fn follow(run_dir: &Path, json: bool) -> End {
    let channel = match connect(Daemon::Membership, run_dir).await {
        Ok(c) => c,
        Err(p) => return End::Stop(p),
    };
    let mut client = mv1::membership_client::MembershipClient::new(channel);
    let mut stream = match client.watch(mv1::WatchRequest {}).await {
        Ok(r) => r.into_inner(),
        Err(s) => return End::Stop(rpc_problem(Daemon::Membership, &s, None)),
    };
    let mut last_seq: Option<u64> = None;
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return End::Stop(Problem {
                    kind: "not_running",
                    message: "tandem-membership closed the stream (stopped or restarting?)"
                        .to_owned(),
                    hint: Some("systemctl status tandem-membership".to_owned()),
                });
            }
            Err(s) if s.code() == Code::ResourceExhausted => return End::Reconnect,
            Err(s) => return End::Stop(rpc_problem(Daemon::Membership, &s, None)),
        };
        match msg.kind {
            Some(mv1::watch_response::Kind::Snapshot(v)) => {
                last_seq = Some(msg.snapshot_seq);
                let line = snapshot_line(&v, msg.snapshot_seq);
                if json {
                    print_json(&line);
                } else {
                    print!("{}", snapshot_text(&line));
                }
            }
            Some(mv1::watch_response::Kind::Event(e)) => {
                if let Some(prev) = last_seq
                    && e.seq != prev + 1
                {
                    // The contract promises no gaps; say so rather than hide it.
                    eprintln!(
                        "ipctl: event numbers jumped from #{prev} to #{}; events may be missing",
                        e.seq
                    );
                }
                last_seq = Some(e.seq);
                let line = event_line(&e);
                if json {
                    print_json(&line);
                } else {
                    println!("{}", event_text(&line));
                }
            }
            None => {}
        }
    }
}

fn print_json<T: Serialize>(v: &T) {
    match serde_json::to_string(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("ipctl: cannot encode a line as JSON: {e}"),
    }
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
    fn unknown_node_state_is_other_not_an_error() {
        assert_eq!(crate::status::node_state(99), "other");
    }
}
