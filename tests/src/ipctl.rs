//! The real `ipctl` binary against a [`Cluster`]'s node, as the end-to-end suites run it:
//! one command to its end, or a `watch` whose lines are collected as they come.
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::cluster::{Cluster, ipctl_for_tests, wait_for};

/// How long a wait for a line of a watch lasts.
pub const LIMIT: Duration = Duration::from_secs(15);

/// `ipctl --run-dir <node i> ARGS` (no colour), as root (as the operator would with sudo).
pub async fn output(c: &Cluster, i: usize, args: &[&str]) -> std::process::Output {
    let bin = ipctl_for_tests().expect("ipctl builds");
    let out = tokio::process::Command::new(bin)
        .arg("--run-dir")
        .arg(&c.nodes[i].run_dir)
        .args(args)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("ipctl finished in time")
        .expect("ipctl ran")
}

/// [`output`]: whether it succeeded, and its stdout (its stderr goes to the test's).
pub async fn run(c: &Cluster, i: usize, args: &[&str]) -> (bool, String) {
    let out = output(c, i, args).await;
    if !out.status.success() {
        eprintln!(
            "ipctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A running `ipctl watch` and every line it printed so far.
pub struct Watcher {
    _child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    /// `ipctl watch` (`--json` if `json`) on node `i`.
    pub fn start(c: &Cluster, i: usize, json: bool) -> Watcher {
        let bin = ipctl_for_tests().expect("ipctl builds");
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("--run-dir")
            .arg(&c.nodes[i].run_dir)
            .arg("watch")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd.spawn().expect("ipctl watch runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(l)) = reader.next_line().await {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(l);
            }
        });
        Watcher {
            _child: child,
            lines,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn json(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits for a JSON line matching `f`; its index among the lines.
    pub async fn wait_json(&self, what: &str, f: impl Fn(&Value) -> bool) -> (usize, Value) {
        let found = wait_for(LIMIT, || async {
            self.json().into_iter().enumerate().find(|(_, v)| f(v))
        })
        .await;
        found.unwrap_or_else(|| panic!("no {what} in:\n{}", self.lines().join("\n")))
    }

    /// Waits for a line containing `what`; its index.
    pub async fn wait_text(&self, what: &str) -> usize {
        let found = wait_for(LIMIT, || async {
            self.lines().iter().position(|l| l.contains(what))
        })
        .await;
        found.unwrap_or_else(|| panic!("no {what:?} in:\n{}", self.lines().join("\n")))
    }
}
