//! The daemons' logging: tracing to stderr, filtered by `RUST_LOG`.
use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Logs to stderr (the journal, under systemd) with the filter of [`filter_from_env`].
/// Colours only when stderr is a terminal: in the journal, a file or a pipe, ANSI escapes
/// are noise that breaks grep.
pub fn init(program: &str) {
    tracing_subscriber::registry()
        .with(filter_from_env(program))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
}

/// The log filter: `RUST_LOG` (comma-separated `level` or `target=level` directives), `info`
/// when unset. tracing-subscriber's `Targets`, not `EnvFilter`: the same directives without
/// span and field filters, and no regex engine, whose ~140 KiB of code stayed resident. An
/// unparsable `RUST_LOG` is reported on stderr (logging is not up yet) and logs at info.
pub fn filter_from_env(program: &str) -> Targets {
    let default = || Targets::new().with_default(LevelFilter::INFO);
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => match directives.parse() {
            Ok(filter) => filter,
            Err(e) => {
                eprintln!("{program}: RUST_LOG={directives:?} ignored, logging at info: {e}");
                default()
            }
        },
        _ => default(),
    }
}
