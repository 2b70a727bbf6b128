//! `ipctl keygen`: a new random cluster key, written so that no one else can ever read it.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the key to this file (mode 0600) instead of printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long, requires = "out")]
    pub force: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let key = tandem_config::keys::generate_key();
    match &args.out {
        None => println!("{key}"),
        Some(path) => {
            write_private(path, format!("{key}\n").as_bytes(), args.force)?;
            eprintln!(
                "wrote a new cluster key to {} (mode 0600); copy it to every node",
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `content` to a file created with mode 0600 from the start (never chmod after, which
/// leaves a window where the key is readable). Refuses to replace a file unless `force`; then
/// the new file is written beside it and renamed over it, so the old one's mode never applies.
pub fn write_private(path: &Path, content: &[u8], force: bool) -> anyhow::Result<()> {
    let exists = path.symlink_metadata().is_ok();
    if exists && !force {
        bail!(
            "{} already exists; pass --force to replace it (every node must then get the new key)",
            path.display()
        );
    }
    let target = if exists {
        let name = path
            .file_name()
            .with_context(|| format!("{} is not a file name", path.display()))?;
        let mut tmp = name.to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        path.with_file_name(tmp)
    } else {
        path.to_owned()
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let written = file.write_all(content).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&target);
        return Err(e).with_context(|| format!("cannot write {}", target.display()));
    }
    if target != path {
        std::fs::rename(&target, path).with_context(|| {
            let _ = std::fs::remove_file(&target);
            format!("cannot replace {}", path.display())
        })?;
    }
    Ok(())
}
