//! Links the daemon with packed relative relocations (`-z pack-relative-relocs`, DT_RELR:
//! binutils 2.38+, glibc 2.36+). A Rust PIE carries 13-18 thousand relative relocations; as
//! classic RELA entries ld.so read a 300-420 KiB table at every start and it stayed resident.
//! Packed, the table is about 2 KiB. Measured with bench_idle (daemons built alone): one node's
//! two daemons at 10.7 MiB, against 10.6 MiB linked `-no-pie`, which would lose the
//! executable's address randomisation.
fn main() {
    println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
