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

/// What both daemons do first: with `--generate-man`, write `command`'s man page and return
/// `None`; else start logging as `program`, read the configuration and find this node in it
/// (`--node`, else the host name).
pub fn start(
    program: &str,
    command: clap::Command,
    args: &DaemonArgs,
) -> Result<Option<(ClusterConfig, String)>, StartError> {
    if let Some(dir) = &args.generate_man {
        write_man(command, dir)?;
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

/// Writes `command`'s man page, section 8, as `dir/<name>.8`; used when packaging.
pub fn write_man(command: clap::Command, dir: &Path) -> Result<PathBuf, ManError> {
    let path = dir.join(format!("{}.8", command.get_name()));
    let err = |source| ManError {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .section("8")
        .render(&mut page)
        .map_err(err)?;
    std::fs::write(&path, page).map_err(err)?;
    Ok(path)
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
    fn the_man_page_is_named_after_the_command() {
        let d = tempfile::tempdir().unwrap();
        let cmd = clap::Command::new("tandem-example").about("An example daemon");
        let path = write_man(cmd, &d.path().join("man8")).unwrap();
        assert_eq!(path, d.path().join("man8/tandem-example.8"));
        let page = std::fs::read_to_string(path).unwrap();
        assert!(page.contains(".TH tandem-example 8"), "{page}");
    }
}
