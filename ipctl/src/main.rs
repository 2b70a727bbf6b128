//! ipctl: the operator's tool for a Tandem cluster.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

mod assign;
mod check_budget;
mod check_config;
mod check_fencing;
mod check_provider;
mod cli;
mod complete;
mod control;
mod demo;
mod error;
mod import_heartbeat;
mod keygen;
mod man;
mod render;
mod status;
mod unit;
mod watch;

use cli::Command;

/// What the command line resolved to for the commands that use them: `--config` and
/// `--run-dir` given after the command, before it, from the environment, or the default.
#[derive(Debug)]
pub struct Cli {
    pub config: PathBuf,
    pub run_dir: PathBuf,
}

fn main() -> ExitCode {
    // `COMPLETE=bash ipctl -- ipctl takeover <TAB>`: the shell's completion calling back.
    complete::env().complete();
    let (cli, command) = cli::parse();
    let result = match command {
        Command::CheckConfig(ref args) => check_config::run(&cli.config, args),
        Command::Keygen(ref args) => keygen::run(args),
        Command::ImportHeartbeat(ref args) => import_heartbeat::run(args),
        Command::Assign(ref args) => assign::run(&cli, args),
        Command::Status(ref d) => status::run(&cli, &d.args),
        Command::Watch(ref d) => watch::run(&cli, &d.args),
        Command::Standby(ref d) => {
            control::run(&cli, &control::Change::Standby(d.args.node.as_deref()))
        }
        Command::Online(ref d) => {
            control::run(&cli, &control::Change::Online(d.args.node.as_deref()))
        }
        Command::Takeover(ref d) => control::run(&cli, &control::Change::Takeover(&d.args.group)),
        Command::Release(ref d) => control::run(&cli, &control::Change::Release(&d.args.group)),
        Command::Man(ref args) => man::man(args),
        Command::Completions(ref args) => man::completions(args),
        Command::Demo(ref args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ipctl: {}", error::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
