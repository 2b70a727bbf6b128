//! `ipctl man --out DIR` and `ipctl completions SHELL`, generated from ipctl's own clap
//! definition so they can never drift from the binary. The daemons' pages are not generated
//! here: their command lines live in their own crates.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write ipctl.1 and one page per subcommand (ipctl-status.1, ...) into.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Writes the pages and returns their file names, ipctl.1 first.
pub fn write_pages(dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = crate::Cli::command();
    // Propagates the global options (--config, --run-dir) and the version into subcommands.
    cmd.build();
    let mut written = Vec::new();
    let mut page = |name: String, cmd: clap::Command| -> anyhow::Result<()> {
        let file = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.name(name.clone()))
            .render(&mut buf)
            .with_context(|| format!("cannot render the page for {name}"))?;
        std::fs::write(&file, buf).with_context(|| format!("cannot write {}", file.display()))?;
        written.push(format!("{name}.1"));
        Ok(())
    };
    page("ipctl".to_owned(), cmd.clone())?;
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        // The usage line should read `ipctl status ...`, not `status ...`.
        let bin = format!("ipctl {}", sub.get_name());
        page(
            format!("ipctl-{}", sub.get_name()),
            sub.clone().bin_name(bin),
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
    let mut cmd = crate::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "ipctl", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
