//! ipctl import_heartbeat (being written).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("ipctl import_heartbeat is not available in this build yet")
}
