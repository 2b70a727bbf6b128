//! Tandem's test kit.
#![forbid(unsafe_code)]
