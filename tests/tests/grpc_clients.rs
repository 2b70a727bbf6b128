//! Stock gRPC clients with their default settings against both sockets of real daemons: the
//! Python programs of docs/QUERYING.md, run as they stand with grpcio (which sends the socket
//! path, percent-encoded, as `:authority`), through reflection and through stubs generated
//! from proto/proto with grpcio-tools. Skipped, saying why, without python3 and those modules.
//! Letting every `:authority` in lets no one else in: the sockets' mode, group and the
//! agent's check of the caller's credentials still decide (run as root, with setpriv).
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tandem_proto::agent::v1 as apb;
use tandem_tests::cluster::{Binaries, Cluster, Spec, wait_for};
use tandem_tests::{require, skip_unless};

const SETTLE: Duration = Duration::from_secs(15);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fenced blocks of `lang` in docs/QUERYING.md, in order.
fn doc_blocks(lang: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(repo().join("docs/QUERYING.md")).expect("docs/QUERYING.md");
    let open = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match current.as_mut() {
            None if line.trim_end() == open => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

fn python(script: &str, run_dir: &Path, cwd: &Path) -> Output {
    Command::new("python3")
        .args(["-c", script])
        .env("TANDEM_RUN_DIR", run_dir)
        .current_dir(cwd)
        .output()
        .expect("run python3")
}

fn stdout_of(o: &Output) -> String {
    assert!(
        o.status.success(),
        "python failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Two nodes, the group running on `primary`, as both daemons report it.
async fn settled() -> Cluster {
    let c = Cluster::start(Spec::fast(Binaries::for_tests().expect("daemon binaries")))
        .await
        .expect("cluster starts");
    let ok = wait_for(SETTLE, || async {
        let g = c.group(0).await?;
        (g.state == apb::GroupState::Running as i32 && g.holder == "primary").then_some(())
    })
    .await;
    assert!(ok.is_some(), "cluster never settled{}", c.diagnostics());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_without_options_queries_both_sockets() {
    skip_unless!(require::python(&["grpc", "grpc_tools", "grpc_reflection"]));
    let python_blocks = doc_blocks("python");
    assert_eq!(
        python_blocks.len(),
        2,
        "QUERYING.md: reflection, then stubs"
    );
    let c = settled().await;
    let run_dir = &c.nodes[0].run_dir;

    // Through reflection: one JSON line per socket.
    let out = stdout_of(&python(&python_blocks[0], run_dir, &c.path));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    let (membership, agent) = (&lines[0], &lines[1]);
    for (line, service) in [
        (membership, "tandem.membership.v1.Membership"),
        (agent, "tandem.agent.v1.Agent"),
    ] {
        let services = line["services"].as_array().expect("services");
        for s in [
            service,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(services.iter().any(|v| v == s), "{s} missing: {line}");
        }
    }
    let view = &membership["status"]["view"];
    assert_eq!(view["localNode"], "primary", "{membership}");
    let states: Vec<(&str, &str)> = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("primary", "NODE_STATE_UP"), ("secondary", "NODE_STATE_UP")]
    );
    assert_eq!(agent["status"]["node"], "primary", "{agent}");
    assert_eq!(agent["status"]["groups"][0]["holder"], "primary", "{agent}");

    // Through generated stubs: the documented protoc command, from the repository's protos.
    let stubs = tempfile::tempdir().expect("temp dir");
    let protoc = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(repo().join("proto/proto"))
        .args([
            "--python_out=.",
            "--grpc_python_out=.",
            "tandem/membership/v1/membership.proto",
            "tandem/agent/v1/agent.proto",
        ])
        .current_dir(stubs.path())
        .output()
        .expect("run grpc_tools.protoc");
    stdout_of(&protoc);
    let out = stdout_of(&python(&python_blocks[1], run_dir, stubs.path()));
    for expected in [
        "node primary NODE_STATE_UP",
        "node secondary NODE_STATE_UP",
        "quorate True",
        "snapshot of 2 nodes",
        "held by primary here: GROUP_STATE_RUNNING",
        "agent snapshot of 1 groups",
    ] {
        assert!(out.contains(expected), "{expected:?} missing:\n{out}");
    }
    // The agent on the other node, whose group runs elsewhere, answers the same way.
    let out = stdout_of(&python(
        &python_blocks[1],
        &c.nodes[1].run_dir,
        stubs.path(),
    ));
    assert!(
        out.contains("held by primary here: GROUP_STATE_STOPPED"),
        "{out}"
    );

    // The agent's event stream to a stock client: a release on the primary is seen on the
    // secondary as starting, then running, with the cause and the provider call's duration.
    let mut watcher = std::process::Command::new("python3")
        .args(["-c", AGENT_WATCH])
        .env("TANDEM_RUN_DIR", &c.nodes[1].run_dir)
        .current_dir(stubs.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    // Subscribed once it printed the snapshot line; release then.
    let mut client = c.agent(0).await.expect("primary's agent");
    let mut reader = std::io::BufReader::new(watcher.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).expect("snapshot line");
    assert!(first.starts_with("snapshot"), "{first}");
    client
        .release(apb::ReleaseRequest {
            group: tandem_tests::cluster::GROUP.into(),
        })
        .await
        .expect("release");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("events");
    let status = watcher.wait().expect("python3 ends");
    assert!(status.success(), "python watcher: {status}\n{rest}");
    assert!(
        rest.contains("GROUP_CHANGE_STARTING EVENT_CAUSE_OPERATOR"),
        "{rest}"
    );
    let running = rest
        .lines()
        .find(|l| l.starts_with("event GROUP_CHANGE_RUNNING EVENT_CAUSE_OPERATOR"))
        .unwrap_or_else(|| panic!("no running event: {rest}"));
    assert!(running.contains("digitalocean assign"), "{running}");
}

/// `ipctl` (a client like any other, through the same relay) as uid/gid 65534 with `groups`
/// as its only supplementary groups, against node 0's sockets.
fn ipctl_as_nobody(c: &Cluster, groups: &str, args: &[&str]) -> Output {
    let ipctl = tandem_tests::cluster::ipctl_for_tests().expect("ipctl builds");
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            &format!("--groups={groups}"),
            "--",
        ])
        .arg(ipctl)
        .arg("--run-dir")
        .arg(&c.nodes[0].run_dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run ipctl through setpriv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_outside_the_sockets_group_is_refused_and_a_member_may_only_read() {
    skip_unless!(require::root(), require::tools(&["setpriv"]));
    let c = settled().await;
    let node = &c.nodes[0];
    // Only the sockets' own mode and group may decide: open the directories above them.
    for dir in [&c.path, &node.dir, &node.run_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // Without a configured socket_group the sockets belong to the daemons' group (root's).
    let sockets = ["membership.sock", "agent.sock"].map(|s| node.run_dir.join(s));
    let gid = {
        use std::os::unix::fs::MetadataExt;
        let meta = sockets
            .each_ref()
            .map(|s| std::fs::metadata(s).expect("socket"));
        for m in &meta {
            assert_eq!(m.permissions().mode() & 0o777, 0o660);
        }
        assert_eq!(meta[0].gid(), meta[1].gid());
        meta[0].gid()
    };
    // Outside the group: refused at both sockets by the kernel, before any gRPC.
    let out = ipctl_as_nobody(&c, "65534", &["status", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    assert_eq!(out.status.code(), Some(1), "{report}");
    for (daemon, socket) in ["membership", "agent"].iter().zip(&sockets) {
        let error = &report[daemon]["error"];
        assert_eq!(error["kind"], "permission_denied", "{daemon}: {report}");
        let message = error["message"].as_str().expect("message");
        assert!(message.contains(&*socket.to_string_lossy()), "{message}");
    }
    // In the group: both answer; a change is still refused, by the agent's check of the
    // caller's credentials, which the relay passes on.
    let out = ipctl_as_nobody(&c, &format!("65534,{gid}"), &["status", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert!(out.status.success(), "{report}");
    assert_eq!(report["membership"]["available"], true, "{report}");
    assert_eq!(report["agent"]["available"], true, "{report}");
    let out = ipctl_as_nobody(&c, &format!("65534,{gid}"), &["standby"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("uid 65534 may not change the cluster"),
        "{err}"
    );
    let g = c.group(0).await.expect("agent status");
    assert_eq!(g.holder, "primary", "nothing changed");
}

/// Watches the agent with generated stubs, stock settings: the snapshot, then events until
/// the group runs (at most 20 s).
const AGENT_WATCH: &str = r#"
import os, grpc
from tandem.agent.v1 import agent_pb2, agent_pb2_grpc
with grpc.insecure_channel("unix:" + os.environ["TANDEM_RUN_DIR"] + "/agent.sock") as channel:
    watch = agent_pb2_grpc.AgentStub(channel).Watch(agent_pb2.WatchRequest(), timeout=20)
    print("snapshot", next(watch).snapshot_seq, flush=True)
    for m in watch:
        g = m.event.group
        calls = ", ".join(f"{a.provider_call} {a.duration.ToMilliseconds()}ms" for a in g.actions)
        print("event", agent_pb2.GroupChange.Name(g.change), agent_pb2.EventCause.Name(g.cause), calls, flush=True)
        if g.change == agent_pb2.GROUP_CHANGE_RUNNING:
            break
"#;
