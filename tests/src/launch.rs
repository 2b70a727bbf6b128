//! Starting a cluster for a test and waiting until it has settled.
use std::path::Path;
use std::time::Duration;

use crate::cluster::{Cluster, Spec};

/// Starts `spec` (in `dir`, kept; else in a temporary directory) and returns once the first
/// member runs the group, the second member knows it, and `settle` has passed since the
/// start: an agent claims nothing during its first `settle` (pass the agent's
/// `Timers::default().settle`), so a fault inside it would measure the settle instead.
/// Panics, with the cluster's diagnostics, if it does not settle within `limit`.
pub async fn start_settled(
    spec: Spec,
    dir: Option<&Path>,
    settle: Duration,
    limit: Duration,
) -> Cluster {
    let started = tokio::time::Instant::now();
    let c = match dir {
        Some(d) => Cluster::start_in(spec, d).await,
        None => Cluster::start(spec).await,
    }
    .expect("cluster starts");
    assert!(
        c.wait_first_holds(limit).await,
        "cluster never settled{}",
        c.diagnostics()
    );
    tokio::time::sleep_until(started + settle).await;
    c
}
