//! The command line as an operator meets it, through the real binary: errors said once and
//! plainly.
use std::path::Path;
use std::process::{Command, Output};

fn ipctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ipctl"));
    cmd.args(args)
        .env_remove("TANDEM_CONFIG")
        .env_remove("TANDEM_RUN_DIR")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("DO_TOKEN")
        // an expected error never shows a backtrace, whatever the environment asks for
        .env("RUST_BACKTRACE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ipctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The one line ipctl printed on stderr for a failure (exit status 1).
fn one_error_line(out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line per cause:\n{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    stderr
}

#[test]
fn a_missing_token_credential_names_credentials_directory_and_load_credential() {
    let assign = [
        "assign",
        "45.55.96.8",
        "--droplet",
        "1",
        "--token-file",
        "do-token",
    ];
    let e = one_error_line(&ipctl(&assign, &[]));
    assert!(
        e.starts_with("ipctl: API token: do-token: cannot read: No such file or directory"),
        "{e}"
    );
    assert_eq!(e.matches("cannot read").count(), 1, "said twice: {e}");
    assert!(
        e.contains("a relative name is read from $CREDENTIALS_DIRECTORY, which is not set")
            && e.contains("LoadCredential=do-token:/etc/tandem/do-token"),
        "{e}"
    );

    let creds = tempfile::tempdir().unwrap();
    let dir = creds.path().to_str().unwrap();
    let e = one_error_line(&ipctl(&assign, &[("CREDENTIALS_DIRECTORY", dir)]));
    assert!(
        e.contains(&format!(
            "$CREDENTIALS_DIRECTORY ({dir}) holds no do-token: systemd puts it there from the unit's LoadCredential=do-token:/etc/tandem/do-token"
        )),
        "{e}"
    );
}

#[test]
fn a_missing_absolute_token_file_is_said_once() {
    let file = Path::new("/nonexistent/tandem-test/do-token");
    let out = ipctl(
        &[
            "assign",
            "45.55.96.8",
            "--droplet",
            "1",
            "--token-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let e = one_error_line(&out);
    assert_eq!(
        e.trim(),
        "ipctl: API token: /nonexistent/tandem-test/do-token: cannot read: No such file or directory (os error 2)"
    );
}

fn help(args: &[&str]) -> String {
    let out = ipctl(args, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn each_command_shows_only_the_options_it_uses() {
    for cmd in [
        "status", "watch", "standby", "online", "takeover", "release",
    ] {
        let h = help(&[cmd, "--help"]);
        assert!(h.contains("--run-dir"), "{cmd}: {h}");
        assert!(
            !h.contains("--config"),
            "{cmd} does not read the config: {h}"
        );
    }
    let h = help(&["check-config", "--help"]);
    assert!(h.contains("--config") && !h.contains("--run-dir"), "{h}");
    for cmd in [
        "assign",
        "keygen",
        "import-heartbeat",
        "man",
        "completions",
        "demo",
    ] {
        let h = help(&[cmd, "--help"]);
        assert!(
            !h.contains("--run-dir") && !h.contains("--config"),
            "{cmd}: {h}"
        );
    }
}

#[test]
fn an_option_given_where_it_is_not_used_is_refused_not_ignored() {
    let out = ipctl(&["--config", "/etc/nothing.yaml", "status"], &[]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains(
            "`ipctl status` does not use --config; only check-config reads the configuration"
        ),
        "{e}"
    );
    let out = ipctl(&["status", "--config", "/etc/nothing.yaml"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = ipctl(&["--run-dir", "/tmp", "keygen"], &[]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("it is used by status, watch, standby, online, takeover, release"),
        "{e}"
    );
}

#[test]
fn run_dir_is_honoured_before_or_after_the_command_and_from_the_environment() {
    let socket = |out: &Output| {
        let e = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{e}");
        e
    };
    let e = socket(&ipctl(&["standby", "--run-dir", "/nonexistent/after"], &[]));
    assert!(
        e.contains("no socket at /nonexistent/after/agent.sock"),
        "{e}"
    );
    let e = socket(&ipctl(
        &["--run-dir", "/nonexistent/before", "takeover", "g"],
        &[],
    ));
    assert!(
        e.contains("no socket at /nonexistent/before/agent.sock"),
        "{e}"
    );
    let env = [("TANDEM_RUN_DIR", "/nonexistent/env")];
    let e = socket(&ipctl(&["release", "g"], &env));
    assert!(
        e.contains("no socket at /nonexistent/env/agent.sock"),
        "{e}"
    );
    // the command line wins over the environment, after the command over before it
    let e = socket(&ipctl(
        &[
            "--run-dir",
            "/nonexistent/before",
            "online",
            "--run-dir",
            "/nonexistent/after",
        ],
        &env,
    ));
    assert!(
        e.contains("no socket at /nonexistent/after/agent.sock"),
        "{e}"
    );
    let e = socket(&ipctl(
        &["--run-dir", "/nonexistent/before", "online"],
        &env,
    ));
    assert!(
        e.contains("no socket at /nonexistent/before/agent.sock"),
        "{e}"
    );
}

#[test]
fn assign_takes_durations_and_names_each_providers_token_variable() {
    // a duration parses: the command gets as far as looking for the token
    let e = one_error_line(&ipctl(
        &["assign", "45.55.96.8", "--droplet", "1", "--timeout", "60s"],
        &[],
    ));
    assert!(
        e.contains("no API token: pass --token-file FILE or set DO_TOKEN"),
        "{e}"
    );
    let e = one_error_line(&ipctl(
        &[
            "assign",
            "45.55.96.8",
            "--provider",
            "hetzner",
            "--timeout",
            "1m30s",
        ],
        &[],
    ));
    assert!(e.contains("set HCLOUD_TOKEN"), "{e}");
    let out = ipctl(&["assign", "45.55.96.8", "--timeout", "soon"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a duration such as 30s, 2m or 1m30s"));
    let h = help(&["assign", "--help"]);
    for (provider, var) in [
        ("digitalocean", "DO_TOKEN"),
        ("hetzner", "HCLOUD_TOKEN"),
        ("vultr", "VULTR_API_KEY"),
    ] {
        assert!(
            h.lines().any(|l| l.contains(provider) && l.contains(var)),
            "{provider} and {var} on one line of:\n{h}"
        );
    }
    assert!(h.contains("[default: 60s]"), "{h}");
}

const NAMES_CONFIG: &str = r#"cluster: web
auth: { key_file: /etc/tandem/authkey }
quorum: two_node
nodes:
  - { name: alpha, addresses: ["10.0.0.1:694"] }
  - { name: beta, addresses: ["10.0.0.2:694"] }
resources:
  - name: floatip
    agents: [ { lsb: nginx } ]
  - name: db
    agents: [ { lsb: postgresql } ]
"#;

/// What bash gets when it completes `words` (the last one is being completed), running the
/// script `ipctl completions bash` prints, which calls the real ipctl back through $PATH.
fn bash_completes(words: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let bin = Path::new(env!("CARGO_BIN_EXE_ipctl")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect();
    let script = format!(
        r#"source <(ipctl completions bash) || exit 9
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
COMP_TYPE=9
_clap_complete_ipctl ipctl "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        words = quoted.join(" "),
        cword = words.len() - 1
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .env("PATH", path)
        .env_remove("TANDEM_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run bash");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn completion_offers_the_configured_groups_and_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(&cfg, NAMES_CONFIG).unwrap();
    let cfg = cfg.to_str().unwrap();
    let env = [("TANDEM_CONFIG", cfg)];
    // an empty word gets the names first (then the command's options)
    let groups = bash_completes(&["ipctl", "takeover", ""], &env);
    assert_eq!(groups[..2], ["floatip", "db"], "{groups:?}");
    assert_eq!(
        bash_completes(&["ipctl", "release", "fl"], &env),
        ["floatip"]
    );
    let nodes = bash_completes(&["ipctl", "standby", ""], &env);
    assert_eq!(nodes[..2], ["alpha", "beta"], "{nodes:?}");
    // the file on the line being completed, not the environment's
    assert_eq!(
        bash_completes(&["ipctl", "--config", cfg, "online", "b"], &[]),
        ["beta"]
    );
    assert_eq!(
        bash_completes(&["ipctl", "check-config", cfg, "--node", ""], &[]),
        ["alpha", "beta"]
    );
    // commands and options still complete
    let cmds = bash_completes(&["ipctl", "ta"], &env);
    assert_eq!(cmds, ["takeover"]);
    let opts = bash_completes(&["ipctl", "status", "--"], &env);
    assert!(
        opts.iter().any(|o| o == "--run-dir") && opts.iter().any(|o| o == "--json"),
        "{opts:?}"
    );
    assert!(!opts.iter().any(|o| o == "--config"), "{opts:?}");
    // no configuration: no names, and no error either
    let none = [("TANDEM_CONFIG", "/nonexistent/cluster.yaml")];
    let none = bash_completes(&["ipctl", "takeover", ""], &none);
    assert!(none.iter().all(|c| c.starts_with("--")), "{none:?}");
}

#[test]
fn man_pages_have_the_operator_sections_and_refer_only_to_pages_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let out = ipctl(&["man", "--out", dir.path().to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The daemons write theirs as the package build runs them.
    let daemons = tandem_emulator::cluster::Binaries::for_tests().expect("daemon binaries");
    for bin in [&daemons.membership, &daemons.agent] {
        let out = Command::new(bin)
            .arg("--generate-man")
            .arg(dir.path())
            .output()
            .expect("run the daemon");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // the daemons' pages are generated by their own binaries when the package is built
    let build = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/build-deb.sh"),
    )
    .unwrap();
    for daemon in ["tandem-membership", "tandem-resource-agent"] {
        assert!(
            build.contains(&format!("{daemon}\" --generate-man")),
            "{build}"
        );
    }
    let exists = |name: &str, section: &str| pages.contains(&format!("{name}.{section}"));
    for daemon in ["tandem-membership.8", "tandem-resource-agent.8"] {
        assert!(pages.iter().any(|p| p == daemon), "{daemon} not written");
        let roff = std::fs::read_to_string(dir.path().join(daemon)).unwrap();
        assert!(
            roff.contains(".SH ENVIRONMENT"),
            "{daemon} lacks ENVIRONMENT"
        );
    }
    let agent = std::fs::read_to_string(dir.path().join("tandem-resource-agent.8"))
        .unwrap()
        .replace("\\-", "-");
    assert!(
        agent.contains("CREDENTIALS_DIRECTORY")
            && agent.contains("systemctl restart tandem-resource-agent"),
        "{agent}"
    );
    for page in &pages {
        let roff = std::fs::read_to_string(dir.path().join(page)).unwrap();
        for section in ["EXIT STATUS", "FILES", "EXAMPLES", "SEE ALSO"] {
            assert!(
                roff.contains(&format!(".SH \"{section}\""))
                    || roff.contains(&format!(".SH {section}")),
                "{page} lacks {section}"
            );
        }
        // every name(N) reference in the page, with roff's escaped dashes undone
        let plain = roff.replace("\\-", "-");
        let mut rest = plain.as_str();
        while let Some(open) = rest.find('(') {
            let name: String = rest[..open]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
                .chars()
                .rev()
                .collect();
            let section: String = rest[open + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if !name.is_empty()
                && !section.is_empty()
                && rest[open + 1 + section.len()..].starts_with(')')
            {
                assert!(
                    exists(&name, &section),
                    "{page} refers to {name}({section}), which is not generated"
                );
            }
            rest = &rest[open + 1..];
        }
    }
    let status = std::fs::read_to_string(dir.path().join("ipctl-status.1")).unwrap();
    assert!(
        status.contains("TANDEM_RUN_DIR")
            && status.contains("only one of the two daemons answered")
    );
    let assign = std::fs::read_to_string(dir.path().join("ipctl-assign.1")).unwrap();
    for var in ["DO_TOKEN", "HCLOUD_TOKEN", "VULTR_API_KEY"] {
        assert!(assign.contains(var), "ipctl-assign.1 lacks {var}");
    }
}

#[test]
fn zsh_completes_names_on_the_first_tab_from_the_installed_file() {
    let Some(zsh) = tandem_emulator::testkit::find_program("zsh") else {
        tandem_emulator::testkit::skip("zsh is not installed (apt-get install -y zsh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fpath = dir.path().join("vendor-completions");
    std::fs::create_dir(&fpath).unwrap();
    // as the package installs it: /usr/share/zsh/vendor-completions/_ipctl
    let script = ipctl(&["completions", "zsh"], &[]);
    assert!(script.status.success());
    std::fs::write(fpath.join("_ipctl"), &script.stdout).unwrap();
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(&cfg, NAMES_CONFIG).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_ipctl")).parent().unwrap();
    // an interactive zsh on a pseudo-terminal (zsh's own zpty), one TAB after `takeover `
    let driver = format!(
        r#"zmodload zsh/zpty || exit 9
zpty -b z 'env PS1="> " TERM=dumb {zsh} -f -i'
zpty -w z 'fpath=({fpath} $fpath); autoload -Uz compinit; compinit -u -D; export PATH={bin}:$PATH TANDEM_CONFIG={cfg}'
sleep 1
zpty -n -w z $'ipctl takeover \t'
sleep 2
all=""
while zpty -r -t z chunk; do all+=$chunk; done
print -r -- "$all"
zpty -d z
"#,
        zsh = zsh.display(),
        fpath = fpath.display(),
        bin = bin.display(),
        cfg = cfg.display()
    );
    let out = Command::new(zsh)
        .args(["-f", "-c", &driver])
        .output()
        .unwrap();
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}\n{}", text(&out.stderr));
    assert!(
        screen.contains("floatip") && screen.contains(" db"),
        "the first TAB did not offer the groups:\n{screen:?}"
    );
}
