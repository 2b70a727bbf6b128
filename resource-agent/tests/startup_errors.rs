//! What the real `tandem-resource-agent` binary prints when it cannot start: one plain line
//! per cause, each cause once, no "Caused by" list, no backtrace (even with RUST_BACKTRACE
//! set), and logs without colour codes when stderr is not a terminal.
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_tandem-resource-agent");

/// A two-node cluster whose group `floatip` holds a reserved IP, its token in `token_file`;
/// `extra` is appended (top-level sections).
fn write_config(dir: &Path, token_file: &str, extra: &str) -> std::path::PathBuf {
    let yaml = format!(
        r#"cluster: test
auth:
  key_file: {dir}/authkey
quorum: two_node
nodes:
  - name: a
    addresses: ["127.0.0.1:7001"]
  - name: b
    addresses: ["127.0.0.1:7002"]
resources:
  - name: floatip
    agents:
      - reserved-ip:
          provider: digitalocean
          ip: 203.0.113.7
          droplet_ids: {{ a: 1, b: 2 }}
          # Nothing listens there: a probe is refused at once, never leaves the machine.
          api_url: "http://127.0.0.1:9"
          metadata_url: "http://127.0.0.1:9"
          token_file: {token_file}
{extra}"#,
        dir = dir.display(),
    );
    let path = dir.join("cluster.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

fn agent(dir: &Path, cfg: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(cfg)
        .args(["--node", "a", "--run-dir"])
        .arg(dir.join("run"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .current_dir(dir);
    cmd
}

/// The one error line of a failed run, after checking what must never be there.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    for noise in ["Caused by", "backtrace", "\n    0:", "Error: ", "\x1b["] {
        assert!(!err.contains(noise), "{noise:?} in:\n{err}");
    }
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("tandem-resource-agent: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    lines[0].to_owned()
}

/// A part of `line` that occurs more than once (any run of 24 characters): repeated text.
fn repeated(line: &str) -> Option<&str> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    (0..chars.len().saturating_sub(24)).find_map(|i| {
        let start = chars[i].0;
        let end = chars.get(i + 24).map_or(line.len(), |c| c.0);
        let part = &line[start..end];
        (line.matches(part).count() > 1).then_some(part)
    })
}

#[test]
fn a_missing_token_says_where_systemd_puts_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "do-token", "");
    let out = agent(dir.path(), &cfg, &["--check"]).output().expect("run");
    let line = error_line(&out);
    for needed in [
        "floatip",
        "do-token",
        "$CREDENTIALS_DIRECTORY",
        "LoadCredential=",
    ] {
        assert!(line.contains(needed), "{needed:?} missing in: {line}");
    }
    assert_eq!(repeated(&line), None, "repeated text in: {line}");

    // Inside a unit: the credential is missing from $CREDENTIALS_DIRECTORY.
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).expect("mkdir");
    let out = agent(dir.path(), &cfg, &["--check"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .expect("run");
    let line = error_line(&out);
    assert!(line.contains("LoadCredential=do-token:"), "{line}");
    assert_eq!(repeated(&line), None, "repeated text in: {line}");

    // An absolute path that does not exist.
    let missing = dir.path().join("nowhere/do-token");
    let cfg = write_config(dir.path(), &missing.display().to_string(), "");
    let out = agent(dir.path(), &cfg, &["--check"]).output().expect("run");
    let line = error_line(&out);
    assert!(line.contains(&missing.display().to_string()), "{line}");
    assert_eq!(repeated(&line), None, "repeated text in: {line}");
}

#[test]
fn a_taken_metrics_port_is_said_once_and_logs_carry_no_colour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789").expect("write token");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("take a port");
    let addr = taken.local_addr().expect("address");
    let cfg = write_config(
        dir.path(),
        &token.display().to_string(),
        &format!("agent:\n  metrics: \"{addr}\"\n"),
    );
    let out = agent(dir.path(), &cfg, &[]).output().expect("run");
    let line = error_line(&out);
    assert!(line.contains(&format!("agent.metrics {addr}")), "{line}");
    assert_eq!(line.matches("os error 98").count(), 1, "{line}");
    assert_eq!(repeated(&line), None, "repeated text in: {line}");

    // Running, its log in a file has no escapes (the metrics line comes before the probes).
    drop(taken);
    let log_path = dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut child = agent(dir.path(), &cfg, &[])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("metrics served at") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("metrics served at"), "{text}");
    assert!(text.contains(" INFO "), "{text}");
    assert!(
        !text.contains('\x1b'),
        "ANSI escapes in a log file:\n{text:?}"
    );
}
