//! What both daemons' `main` does before its own work: the man page and the runtime.
use std::io;
use std::path::{Path, PathBuf};

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
