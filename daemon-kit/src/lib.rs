//! Daemon plumbing shared by `tandem-membership` and `tandem-resource-agent`, in one place
//! so the two daemons start, log, report errors, talk to systemd and stop the same way.
//!
//! - [`generation`]: the incarnation counter, persisted durably (fsync'd) across restarts;
//! - [`notify`]: sd_notify (READY, STOPPING) and the watchdog, pinged from a daemon's loop;
//! - [`signals`]: SIGTERM / SIGINT as a shutdown future;
//! - [`log`]: tracing to stderr, `RUST_LOG` filter, colours only on a terminal;
//! - [`report`]: an error chain as one plain line, each cause once; `main`'s exit status;
//! - [`cli`]: the man page and the single-threaded runtime;
//! - [`metrics`]: the Prometheus endpoint (`GET /metrics`, loopback only);
//! - [`timer`]: a deadline timer on a timerfd for the daemons' loops.
#![forbid(unsafe_code)]

pub mod cli;
pub mod generation;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod signals;
pub mod timer;
