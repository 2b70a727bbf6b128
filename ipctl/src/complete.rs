//! Shell completion that knows the cluster: `ipctl takeover <TAB>` offers the configured
//! groups, `ipctl standby <TAB>` and `check-config --node <TAB>` the nodes.
//!
//! The script `ipctl completions SHELL` prints (and the package installs) calls back into
//! `ipctl` with `COMPLETE=SHELL` for every completion (clap_complete's dynamic completion), so
//! the names come from the configuration as it is now: the file given with `--config` on the
//! line being completed (or check-config's FILE), else `$TANDEM_CONFIG`, else the default.
use std::ffi::OsString;
use std::path::PathBuf;

use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{CompleteEnv, Shells};

/// The variable that switches ipctl into answering its completion script.
const VAR: &str = "COMPLETE";

/// The completion entry point; `complete()` answers and exits when `$COMPLETE` is set.
pub fn env() -> CompleteEnv<'static, fn() -> clap::Command> {
    CompleteEnv::with_factory(crate::cli::command as fn() -> clap::Command)
        .var(VAR)
        // The script calls `ipctl` from $PATH, not the path it was generated with.
        .completer("ipctl")
}

/// Writes the completion script for `shell` (what `COMPLETE=SHELL ipctl` prints).
pub fn write_script(shell: &str, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let shells = Shells::builtins();
    let completer = shells
        .completer(shell)
        .ok_or_else(|| anyhow::anyhow!("no completion for the shell {shell:?}"))?;
    completer.write_registration(VAR, "ipctl", "ipctl", "ipctl", out)?;
    if shell == "zsh" {
        // Installed as the autoloaded function _ipctl (vendor-completions), the file's body
        // runs on the first TAB and only defines the completer: complete that TAB too. Sourced
        // from a shell, funcstack[1] is not _ipctl and nothing runs.
        writeln!(
            out,
            "if [[ \"${{funcstack[1]}}\" == _ipctl ]]; then _clap_dynamic_completer_ipctl \"$@\"; fi"
        )?;
    }
    Ok(())
}

/// Candidates for a node name.
pub fn node_names() -> ArgValueCandidates {
    ArgValueCandidates::new(|| names("nodes"))
}

/// Candidates for a resource group name.
pub fn group_names() -> ArgValueCandidates {
    ArgValueCandidates::new(|| names("resources"))
}

/// The `name:` of each entry of the configuration's `section`. The file is read leniently
/// (as YAML, not validated): a configuration with a mistake still has its names.
fn names(section: &str) -> Vec<CompletionCandidate> {
    let path = config_path(&std::env::args_os().collect::<Vec<_>>());
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
        return Vec::new();
    };
    doc.get(section)
        .and_then(serde_yaml::Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("name")?.as_str())
        .map(|name| CompletionCandidate::new(name.to_owned()))
        .collect()
}

/// The configuration the line being completed refers to. `args` is ipctl's own command line
/// in completion mode: `ipctl -- ipctl [WORDS...] CURRENT`.
fn config_path(args: &[OsString]) -> PathBuf {
    let words: Vec<String> = args
        .iter()
        .skip_while(|a| *a != "--")
        .skip(2) // "--" and the program name
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // the last word is the one being completed
    let done = &words[..words.len().saturating_sub(1)];
    let mut given = None;
    let mut file = None;
    let mut check_config = false;
    let mut it = done.iter().peekable();
    while let Some(w) = it.next() {
        if w == "--config" {
            given = it.next().cloned();
        } else if let Some(v) = w.strip_prefix("--config=") {
            given = Some(v.to_owned());
        } else if w == "check-config" {
            check_config = true;
        } else if w == "--node" {
            it.next();
        } else if check_config && !w.starts_with('-') && file.is_none() {
            file = Some(w.clone());
        }
    }
    file.or(given)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("TANDEM_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| tandem_config::DEFAULT_CONFIG.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(words: &[&str]) -> PathBuf {
        let mut args: Vec<OsString> = vec!["ipctl".into(), "--".into(), "ipctl".into()];
        args.extend(words.iter().map(OsString::from));
        config_path(&args)
    }

    #[test]
    fn the_line_names_the_configuration() {
        assert_eq!(
            path(&["--config", "/a.yaml", "takeover", ""]),
            PathBuf::from("/a.yaml")
        );
        assert_eq!(
            path(&["check-config", "--config=/a.yaml", "/b.yaml", "--node", "x"]),
            PathBuf::from("/b.yaml")
        );
        assert_eq!(
            path(&["check-config", "--node", "pri", "/b.yaml", ""]),
            PathBuf::from("/b.yaml")
        );
        // the word being completed is not a file name yet
        assert_ne!(path(&["check-config", "/b.ya"]), PathBuf::from("/b.ya"));
    }
}
