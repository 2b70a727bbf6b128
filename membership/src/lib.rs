//! Tandem membership: the sans-IO protocol core and the daemon shell around it.
#![forbid(unsafe_code)]
