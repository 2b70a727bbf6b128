//! Running an agent's command: its own process group, a clean environment, a time limit
//! after which the whole group is killed, and the tail of its output for error messages.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;
use tracing::{debug, warn};

/// PATH given to agents: the environment of the daemon is not passed on.
pub const AGENT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Retries of a spawn failing with ETXTBSY, and the wait between them.
const SPAWN_BUSY_RETRIES: u32 = 10;
const SPAWN_BUSY_WAIT: Duration = Duration::from_millis(20);
/// Output kept for messages (the end is what explains a failure).
const OUTPUT_TAIL: usize = 512;
/// After the main process exits, how long its output pipes may stay open: a daemon that
/// inherited them must not hold the action open until the time limit.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// One command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to a minimal environment (PATH, LANG=C).
    pub env: BTreeMap<String, String>,
}

impl CommandSpec {
    pub fn shell(command: &str) -> Self {
        CommandSpec {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), command.into()],
            env: BTreeMap::new(),
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Last bytes of stdout and stderr, lossy UTF-8, trimmed.
    pub output: String,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("timed out after {after:?}; its process group was killed{}", tail(.output))]
    Timeout { after: Duration, output: String },
}

fn tail(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(" (output: {output})")
    }
}

async fn read_tail(mut r: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return buf,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > keep {
                    buf.drain(..buf.len() - keep);
                }
            }
        }
    }
}

/// Runs `spec`, killing its whole process group when `timeout` passes.
pub async fn run(spec: &CommandSpec, timeout: Duration) -> Result<Exit, RunError> {
    let started = Instant::now();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .env("PATH", AGENT_PATH)
        .env("LANG", "C")
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills everything it started.
        .process_group(0)
        .kill_on_drop(true);
    // "Text file busy": the program is being written, or a process forked elsewhere in
    // this daemon still holds a descriptor to it for an instant. Both pass quickly.
    let mut attempts = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < SPAWN_BUSY_RETRIES => {
                attempts += 1;
                tokio::time::sleep(SPAWN_BUSY_WAIT).await;
            }
            Err(source) => {
                return Err(RunError::Spawn {
                    program: spec.program.display().to_string(),
                    source,
                });
            }
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let out = tokio::spawn(read_tail(child.stdout.take().expect("piped"), OUTPUT_TAIL));
    let err = tokio::spawn(read_tail(child.stderr.take().expect("piped"), OUTPUT_TAIL));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let status = match waited {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            warn!(program = %spec.program.display(), error = %e, "waiting for an agent command failed");
            None
        }
        Err(_) => None,
    };
    if status.is_none() {
        if let Some(pgid) = pgid {
            // The group may be gone already; that is fine.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let _ = child.wait().await;
    }
    let mut output = Vec::new();
    for task in [out, err] {
        let abort = task.abort_handle();
        match tokio::time::timeout(OUTPUT_GRACE, task).await {
            Ok(Ok(bytes)) => output.extend(bytes),
            _ => abort.abort(),
        }
    }
    if output.len() > OUTPUT_TAIL {
        output.drain(..output.len() - OUTPUT_TAIL);
    }
    let output = String::from_utf8_lossy(&output).trim().replace('\n', " | ");
    let took = started.elapsed();
    match status {
        Some(status) => {
            use std::os::unix::process::ExitStatusExt;
            debug!(program = %spec.program.display(), code = ?status.code(), ?took, "agent command finished");
            Ok(Exit {
                code: status.code(),
                signal: status.signal(),
                output,
                took,
            })
        }
        None => Err(RunError::Timeout {
            after: timeout,
            output,
        }),
    }
}
