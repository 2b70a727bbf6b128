//! `ipctl man --out DIR` and `ipctl completions SHELL`, generated from ipctl's own clap
//! definition so they can never drift from the binary. Each page gets the sections clap
//! cannot know (EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES) from [`sections`]. The daemons'
//! pages come from their own binaries (`--generate-man`).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write ipctl.1 and one page per command (ipctl-status.1, ...) into.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

use tandem_daemon_kit::cli::ManSections as Sections;

const EXIT_OK: (&str, &str) = ("0", "success");
const EXIT_ERR: (&str, &str) = ("1", "an error; one line on stderr says what to do");
const EXIT_USAGE: (&str, &str) = ("2", "a mistake on the command line");
const ENV_RUN_DIR: (&str, &str) = (
    "TANDEM_RUN_DIR",
    "the daemons' socket directory when --run-dir is not given",
);
const ENV_CONFIG: (&str, &str) = (
    "TANDEM_CONFIG",
    "the configuration file when --config and FILE are not given",
);
const FILE_CONFIG: (&str, &str) = (
    "/etc/tandem/cluster.yaml",
    "the cluster configuration (docs: /usr/share/doc/tandem/CONFIGURATION.md)",
);
const FILE_SOCKETS: (&str, &str) = (
    "/run/tandem/membership.sock, /run/tandem/agent.sock",
    "the daemons' sockets: group tandem may read, tandem-admin may change",
);
const FILE_DOCS: (&str, &str) = (
    "/usr/share/doc/tandem/IPCTL.md",
    "every command, its output and its JSON schema",
);

/// The sections of the page for `command` ("" for ipctl.1).
fn sections(command: &str) -> Sections {
    let mut s = Sections {
        exit: vec![EXIT_OK, EXIT_ERR, EXIT_USAGE],
        env: Vec::new(),
        files: vec![FILE_DOCS],
        examples: Vec::new(),
        see_also: "ipctl(1); the daemons: tandem-membership(8), tandem-resource-agent(8) (package tandem)",
    };
    match command {
        "" => {
            s.env = vec![
                ENV_CONFIG,
                ENV_RUN_DIR,
                (
                    "DO_TOKEN, HCLOUD_TOKEN, VULTR_API_KEY",
                    "the API token for ipctl assign, per provider",
                ),
                (
                    "COMPLETE",
                    "set by the completion script when it calls ipctl back",
                ),
            ];
            s.files.extend([FILE_CONFIG, FILE_SOCKETS]);
            s.examples = vec![
                ("ipctl status", "what the cluster looks like from this node"),
                ("ipctl takeover floatip", "move the group floatip here"),
                (
                    "ipctl check-config --node primary",
                    "check the configuration for this node",
                ),
            ];
        }
        "check-config" => {
            s.exit[1].1 = "the configuration has errors (each printed as file:line:column)";
            s.env = vec![
                ENV_CONFIG,
                (
                    "CREDENTIALS_DIRECTORY",
                    "where a relative token_file is looked for when set",
                ),
                (
                    "SYSTEMD_UNIT_PATH",
                    "where the installed units are looked for (systemd's own variable)",
                ),
            ];
            s.files.extend([
                FILE_CONFIG,
                (
                    "/etc/tandem/authkey",
                    "the cluster key the configuration names",
                ),
                (
                    "/lib/systemd/system/tandem-resource-agent.service",
                    "its LoadCredential= lines say which token files the agent gets",
                ),
            ]);
            s.examples = vec![
                ("ipctl check-config", "check /etc/tandem/cluster.yaml"),
                (
                    "ipctl check-config new.yaml --node primary",
                    "check new.yaml as it will run on primary: a missing script or token is an error",
                ),
            ];
        }
        "status" => {
            s.exit.insert(
                2,
                (
                    "3",
                    "only one of the two daemons answered; its part is printed",
                ),
            );
            s.exit[1].1 = "neither daemon answered";
            s.env = vec![ENV_RUN_DIR];
            s.files.push(FILE_SOCKETS);
            s.examples = vec![
                ("ipctl status", "nodes, links, quorum and groups"),
                (
                    "ipctl status --json | jq .agent.groups",
                    "the groups, for a script",
                ),
            ];
        }
        "watch" | "standby" | "online" | "takeover" | "release" => {
            s.env = vec![ENV_RUN_DIR];
            s.files.push(FILE_SOCKETS);
            s.examples = match command {
                "watch" => vec![("ipctl watch --json", "one JSON object per event")],
                "standby" => vec![("ipctl standby", "this node hands over what it holds")],
                "online" => vec![(
                    "ipctl online secondary",
                    "secondary back to its configured role",
                )],
                "takeover" => vec![(
                    "ipctl takeover floatip",
                    "move floatip here and pin it here",
                )],
                _ => vec![(
                    "ipctl release floatip",
                    "move floatip once to the next candidate",
                )],
            };
        }
        "assign" => {
            s.env = vec![
                (
                    "DO_TOKEN",
                    "the DigitalOcean API token when --token-file is not given",
                ),
                (
                    "HCLOUD_TOKEN",
                    "the Hetzner Cloud API token (--provider hetzner)",
                ),
                ("VULTR_API_KEY", "the Vultr API key (--provider vultr)"),
                (
                    "CREDENTIALS_DIRECTORY",
                    "where a relative --token-file is read from (systemd's LoadCredential=)",
                ),
            ];
            s.files.push((
                "/etc/tandem/do-token",
                "the token file the agent's unit loads",
            ));
            s.examples = vec![
                (
                    "DO_TOKEN=... ipctl assign 45.55.96.8",
                    "move the IP to this droplet",
                ),
                (
                    "ipctl assign 45.55.96.8 --droplet 3164444 --token-file /etc/tandem/do-token --timeout 2m",
                    "move it to another droplet, waiting up to two minutes",
                ),
            ];
        }
        "keygen" => {
            s.files
                .push(("/etc/tandem/authkey", "where the cluster key usually lives"));
            s.examples = vec![(
                "ipctl keygen --out /etc/tandem/authkey",
                "a new key, mode 0600",
            )];
        }
        "import-heartbeat" => {
            s.files.extend([
                (
                    "/etc/ha.d/ha.cf, haresources, authkeys",
                    "what is translated",
                ),
                (
                    "/etc/ha.d/resource.d, /etc/init.d",
                    "where resource scripts are looked for",
                ),
            ]);
            s.examples = vec![(
                "ipctl import-heartbeat --key-out /etc/tandem/authkey > /etc/tandem/cluster.yaml",
                "translate this node's Heartbeat setup, then run ipctl check-config --node NAME",
            )];
        }
        "man" => {
            s.examples = vec![(
                "ipctl man --out /tmp/man && man /tmp/man/ipctl.1",
                "read the pages",
            )]
        }
        "completions" => {
            s.env = vec![(
                "COMPLETE",
                "set by the script when it calls ipctl back for the names",
            )];
            s.files.push(FILE_CONFIG);
            s.examples = vec![(
                "source <(ipctl completions bash)",
                "complete commands, options, groups and nodes in this bash",
            )];
        }
        "demo" => {
            s.exit[1].1 = "the demo did not show a correct failover (problems listed)";
            s.examples = vec![
                ("ipctl demo", "the tutorial's failover, measured"),
                (
                    "ipctl demo --json --keep-running",
                    "the summary as JSON, then explore the cluster",
                ),
            ];
        }
        _ => {}
    }
    s
}

/// One page: clap's sections, then ours before VERSION.
fn render(cmd: clap::Command, section_name: &str) -> anyhow::Result<Vec<u8>> {
    Ok(tandem_daemon_kit::cli::render_man(
        cmd,
        "1",
        &sections(section_name),
    )?)
}

/// Writes the pages and returns their file names, ipctl.1 first.
pub fn write_pages(dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = crate::cli::command();
    cmd.build();
    // `ipctl help` has no page of its own: keep it out of the list of pages.
    let cmd = cmd.mut_subcommand("help", |h| h.hide(true));
    let mut written = Vec::new();
    let mut page = |name: String, cmd: clap::Command, section: &str| -> anyhow::Result<()> {
        let file = dir.join(format!("{name}.1"));
        let text = render(cmd.name(name.clone()), section)
            .with_context(|| format!("cannot render the page for {name}"))?;
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        written.push(format!("{name}.1"));
        Ok(())
    };
    page("ipctl".to_owned(), cmd.clone(), "")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // The usage line should read `ipctl status ...`, not `status ...`.
        let bin = format!("ipctl {}", sub.get_name());
        page(
            format!("ipctl-{}", sub.get_name()),
            sub.clone().bin_name(bin),
            sub.get_name(),
        )?;
    }
    Ok(written)
}

pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let pages = write_pages(&args.out)?;
    eprintln!("wrote {} pages to {}", pages.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}

pub fn completions(args: &CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    crate::complete::write_script(&args.shell.to_string(), &mut out)?;
    Ok(ExitCode::SUCCESS)
}
