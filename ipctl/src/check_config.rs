//! ipctl check_config (being written).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_cli: &crate::Cli, _args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("ipctl check_config is not available in this build yet")
}
