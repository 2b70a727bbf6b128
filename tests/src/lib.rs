//! Tandem's test kit.
#![forbid(unsafe_code)]

pub mod emulator;
