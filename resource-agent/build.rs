//! Links the daemon as a position-dependent executable (`-no-pie`). Its code is still compiled
//! position-independent; only the final link changes. A PIE's ~13-18 thousand relative
//! relocations made ld.so read a 300-420 KiB relocation table at start-up and write into every
//! page of .data.rel.ro, which then stayed resident: about 1.3 MiB of one node's two daemons
//! together. Linked at a fixed address, those pages stay clean and are only read when used.
fn main() {
    println!("cargo::rustc-link-arg-bins=-no-pie");
}
