//! Fencing in a launched cluster: each member gets its own fencing token, the YAML a
//! `fencing:` section, and the emulator's power hook SIGKILLs the daemons of a node whose
//! droplet is powered off, as cutting the power would.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::World;

/// The `fencing:` settings of a launched cluster.
#[derive(Debug, Clone, Copy)]
pub struct FenceSpec {
    /// `fencing.delay`: the non-preferred side's wait.
    pub delay: Duration,
    /// `fencing.timeout`: the limit of one power-off call.
    pub timeout: Duration,
}

impl Default for FenceSpec {
    fn default() -> Self {
        FenceSpec {
            delay: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The PIDs of each droplet's daemons, as the launcher started them (children not reaped
/// yet, so a PID cannot have been reused).
#[derive(Debug, Clone, Default)]
pub(super) struct Pids(Arc<Mutex<BTreeMap<u64, Vec<u32>>>>);

impl Pids {
    pub(super) fn set(&self, droplet: u64, pids: Vec<u32>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(droplet, pids);
    }

    /// Makes a completed power-off of a droplet SIGKILL its daemons.
    pub(super) fn install(&self, world: &World) {
        let pids = self.clone();
        world.set_power_hook(Arc::new(move |droplet, on| {
            if on {
                return;
            }
            let list = pids
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&droplet)
                .cloned()
                .unwrap_or_default();
            for pid in list {
                if let Ok(p) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            tracing::info!(droplet, "powered off: the node's daemons were killed");
        }));
    }
}

/// The `fencing:` section of the launched cluster's YAML.
pub(super) fn yaml(f: &FenceSpec, api: &str) -> String {
    format!(
        "fencing:\n  provider: digitalocean\n  token_file: fence-token\n  api_url: {api}\n  \
         delay: {}ms\n  timeout: {}ms\n",
        f.delay.as_millis(),
        f.timeout.as_millis()
    )
}

impl super::Cluster {
    /// Notes node `i`'s daemons for the power hook.
    pub(super) fn note_pids(&self, i: usize) {
        let n = &self.nodes[i];
        if let Some(droplet) = n.droplet {
            let pids = [&n.membership, &n.agent]
                .into_iter()
                .flatten()
                .map(std::process::Child::id)
                .collect();
            self.pids.set(droplet, pids);
        }
    }

    /// Before a boot: reaps the daemons a power-off killed, and powers the droplet on.
    pub(super) fn power_on(&mut self, i: usize) {
        self.kill9(i, super::Daemon::Agent);
        self.kill9(i, super::Daemon::Membership);
        if let Some(d) = self.nodes[i].droplet
            && self
                .emulator
                .world
                .lock()
                .droplets
                .get(&d)
                .is_some_and(|d| d.off)
        {
            self.emulator.world.set_powered(d, true);
        }
    }

    /// The emulator's power lines (`event: power`) in order: each power action as it starts
    /// (`in-progress`) and ends (`completed`, `errored`), and the launcher's power-ons.
    pub fn power_events(&self) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["event"] == "power")
            .collect()
    }

    /// Writes a `mark` line into the audit log and returns its `mono_ms`: the emulator's
    /// clock at a test's own event (a freeze, a cut), to measure against its other lines.
    pub fn mark(&self, what: &str) -> f64 {
        self.emulator
            .world
            .audit(serde_json::json!({"event": "mark", "what": what}));
        self.audit()
            .iter()
            .rev()
            .find(|e| e["event"] == "mark" && e["what"] == what)
            .and_then(|e| e["mono_ms"].as_f64())
            .unwrap_or_default()
    }

    /// Completed power-offs, as (droplet id, `mono_ms`).
    pub fn power_offs(&self) -> Vec<(u64, f64)> {
        self.power_events()
            .iter()
            .filter(|e| e["type"] == "power_off" && e["status"] == "completed")
            .filter_map(|e| Some((e["droplet_id"].as_u64()?, e["mono_ms"].as_f64()?)))
            .collect()
    }

    /// Whether a daemon of node `i` has exited (killed by a power-off, say).
    pub fn exited(&mut self, i: usize, d: super::Daemon) -> bool {
        match self.nodes[i].slot(d) {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// Revokes (or restores) node `i`'s fencing token at the emulator: its power-offs then
    /// answer 401.
    pub fn revoke_fence_token(&self, i: usize, revoked: bool) {
        if let Some(t) = &self.nodes[i].fence_token
            && let Some(tok) = self.emulator.world.lock().tokens.get_mut(t)
        {
            tok.revoked = revoked;
        }
    }
}
