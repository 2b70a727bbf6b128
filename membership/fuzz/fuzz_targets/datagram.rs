//! Feeds arbitrary bytes to a live core, the way the UDP socket would.
//!
//! The first byte picks the mode: raw bytes (the envelope parser and every rejection
//! path), or the rest sealed with the cluster key as a datagram from a known peer (so the
//! fuzzer gets past the HMAC and exercises payload decoding, detection and messaging).
#![no_main]
use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

// The core itself, compiled into the target (it has no I/O dependencies).
#[path = "../../src/core/mod.rs"]
#[allow(dead_code)]
mod core;

use crate::core::wire::{self, Header, KeyRing};
use crate::core::{Core, NodeSpec, QuorumPolicy, Role, Settings, Timing};

const KEY: &[u8] = b"fuzz-key-fuzz-key-fuzz-key-fuzz!";

fn core() -> Core {
    let node = |name: &str, last: u8| NodeSpec {
        name: name.into(),
        addresses: vec![
            SocketAddr::from(([127, 0, 0, last], 694)),
            SocketAddr::from(([127, 0, 1, last], 694)),
        ],
        role: Role::Member,
    };
    let settings = Settings {
        cluster: "fuzz".into(),
        nodes: vec![node("a", 1), node("b", 2)],
        local: "a".into(),
        timing: Timing::default(),
        quorum: QuorumPolicy::TwoNode,
        generation: 1,
        keys: KeyRing::new((1, KEY), &[]),
    };
    Core::new(settings, Duration::ZERO).expect("valid settings")
}

fuzz_target!(|data: &[u8]| {
    let mut c = core();
    let src = SocketAddr::from(([127, 0, 0, 2], 694));
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let keys = KeyRing::new((1, KEY), &[]);
        let h = Header {
            version: wire::VERSION,
            key_id: 1,
            generation: u64::from(mode),
            seq: 1,
            cluster: "fuzz",
            sender: "b",
            receiver: "a",
        };
        match wire::seal(&keys, &h, rest) {
            Some(b) => b,
            None => return,
        }
    };
    c.handle_datagram(
        Duration::from_millis(1),
        usize::from(mode >> 7),
        src,
        &bytes,
    );
    c.handle_timeout(Duration::from_secs(2));
    while c.poll_transmit().is_some() {}
    while c.poll_event().is_some() {}
    while c.poll_delivery().is_some() {}
});
