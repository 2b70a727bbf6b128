//! What both daemons' `main` does before its own work: the shared options, the man page,
//! logging, reading the configuration, and the runtime.
use std::io;
use std::path::{Path, PathBuf};

use tandem_config::{ClusterConfig, ConfigErrors};

/// The options both daemons take (each flattens them into its own `Args`).
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Cluster configuration file.
    #[arg(long, default_value = tandem_config::DEFAULT_CONFIG, env = "TANDEM_CONFIG")]
    pub config: PathBuf,
    /// This node's name in the configuration (default: the host name).
    #[arg(long)]
    pub node: Option<String>,
    /// Directory of the Unix sockets (membership.sock; the resource agent reads it and serves
    /// agent.sock).
    #[arg(long, default_value = tandem_config::DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// Directory of persistent state (the incarnation counter; the resource agent's standby
    /// flag).
    #[arg(long, default_value = tandem_config::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Check the configuration and the files it names (keys, tokens, the agents' scripts),
    /// print a summary and exit.
    #[arg(long)]
    pub check: bool,
    /// Write the man page into DIR and exit; used when packaging.
    #[arg(long, value_name = "DIR", hide = true)]
    pub generate_man: Option<PathBuf>,
}

/// Why a daemon could not begin.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Man(#[from] ManError),
    #[error(transparent)]
    Config(#[from] ConfigErrors),
}

/// What both daemons do first: with `--generate-man`, write `command`'s man page (with
/// `man`'s sections) and return `None`; else start logging as `program`, read the configuration and find this node in it
/// (`--node`, else the host name).
pub fn start(
    program: &str,
    command: clap::Command,
    args: &DaemonArgs,
    man: &ManSections,
) -> Result<Option<(ClusterConfig, String)>, StartError> {
    if let Some(dir) = &args.generate_man {
        write_man(command, dir, man)?;
        return Ok(None);
    }
    crate::log::init(program);
    let config = tandem_config::load(&args.config)?;
    let node = args
        .node
        .clone()
        .unwrap_or_else(tandem_config::default_node_name);
    config.local_node(&node)?;
    Ok(Some((config, node)))
}

/// Why the man page could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write the man page: {source}")]
pub struct ManError {
    path: PathBuf,
    source: io::Error,
}

/// What a page says that clap cannot know, each entry a (term, meaning) pair; an empty list
/// leaves its section out. SEE ALSO names only pages the package generates.
#[derive(Debug, Clone, Default)]
pub struct ManSections {
    pub exit: Vec<(&'static str, &'static str)>,
    pub env: Vec<(&'static str, &'static str)>,
    pub files: Vec<(&'static str, &'static str)>,
    pub examples: Vec<(&'static str, &'static str)>,
    pub see_also: &'static str,
}

impl ManSections {
    /// The sections as roff, EXIT STATUS to SEE ALSO.
    pub fn to_roff(&self) -> String {
        use clap_mangen::roff::{Roff, bold, roman};
        let mut r = Roff::new();
        let mut list = |title: &str, items: &[(&str, &str)]| {
            if items.is_empty() {
                return;
            }
            r.control("SH", [title]);
            for (term, what) in items {
                r.control("TP", []);
                r.text([bold(*term)]);
                r.text([roman(*what)]);
            }
        };
        list("EXIT STATUS", &self.exit);
        list("ENVIRONMENT", &self.env);
        list("FILES", &self.files);
        list("EXAMPLES", &self.examples);
        if !self.see_also.is_empty() {
            r.control("SH", ["SEE ALSO"]);
            r.text([roman(self.see_also)]);
        }
        r.to_roff()
    }
}

/// `command`'s page in `section`: clap's sections, then `extra` before VERSION.
pub fn render_man(
    command: clap::Command,
    section: &'static str,
    extra: &ManSections,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(command)
        .section(section)
        .render(&mut buf)?;
    let page = String::from_utf8(buf).map_err(io::Error::other)?;
    let ours = extra.to_roff();
    Ok(match page.find(".SH VERSION") {
        Some(at) => format!("{}{ours}{}", &page[..at], &page[at..]),
        None => format!("{page}{ours}"),
    }
    .into_bytes())
}

/// Writes `command`'s man page, section 8, as `dir/<name>.8`; used when packaging.
pub fn write_man(
    command: clap::Command,
    dir: &Path,
    extra: &ManSections,
) -> Result<PathBuf, ManError> {
    let path = dir.join(format!("{}.8", command.get_name()));
    let err = |source| ManError {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let page = render_man(command, "8", extra).map_err(err)?;
    std::fs::write(&path, page).map_err(err)?;
    Ok(path)
}

/// The sections both daemons' pages share; each adds its own files and examples.
pub fn daemon_sections() -> ManSections {
    ManSections {
        exit: vec![
            (
                "0",
                "stopped cleanly (SIGTERM or SIGINT), or --check found nothing wrong",
            ),
            (
                "1",
                "an error: one line on stderr names it and what to do (systemd restarts the unit, Restart=on-failure)",
            ),
            ("2", "a mistake on the command line"),
        ],
        env: vec![
            (
                "TANDEM_CONFIG",
                "the configuration file when --config is not given",
            ),
            (
                "RUST_LOG",
                "log filter: a level (info, the default) or target=level directives, comma-separated",
            ),
            (
                "NOTIFY_SOCKET, WATCHDOG_USEC",
                "set by systemd: readiness and watchdog notifications (Type=notify, WatchdogSec=)",
            ),
        ],
        files: vec![
            (
                "/etc/tandem/cluster.yaml",
                "the cluster configuration (docs: /usr/share/doc/tandem/CONFIGURATION.md)",
            ),
            (
                "/etc/tandem/authkey",
                "the cluster key (mode 0600) the configuration names",
            ),
        ],
        examples: Vec::new(),
        see_also: "ipctl(1), ipctl-status(1), ipctl-check-config(1), tandem-membership(8), \
                   tandem-resource-agent(8); /usr/share/doc/tandem/ (package tandem)",
    }
}

/// The daemons' runtime: one thread. They wait on sockets, timers and child processes and
/// never block for long; worker threads only added cross-thread wake-ups and malloc arenas
/// (measured with membership/examples/bench.rs idle and tests/examples/bench_idle.rs).
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_is_named_after_the_command_and_has_the_sections() {
        let d = tempfile::tempdir().unwrap();
        let cmd = clap::Command::new("tandem-example")
            .about("An example daemon")
            .version("1.0");
        let path = write_man(cmd, &d.path().join("man8"), &daemon_sections()).unwrap();
        assert_eq!(path, d.path().join("man8/tandem-example.8"));
        let page = std::fs::read_to_string(path).unwrap();
        assert!(page.contains(".TH tandem-example 8"), "{page}");
        let at = |s: &str| page.find(s).unwrap_or_else(|| panic!("no {s} in {page}"));
        // roff quotes a title with a space
        assert!(at(".SH \"EXIT STATUS\"") < at(".SH ENVIRONMENT"));
        assert!(at(".SH FILES") < at(".SH \"SEE ALSO\""));
        assert!(at(".SH \"SEE ALSO\"") < at(".SH VERSION"));
        assert!(
            !page.contains(".SH EXAMPLES"),
            "an empty list leaves its section out"
        );
    }
}
