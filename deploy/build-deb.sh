#!/usr/bin/env bash
# Builds the Debian package "tandem": the three release binaries, the man pages (ipctl's and
# the daemons', generated from their clap definitions), ipctl's shell completions, then
# `cargo deb`. Needs cargo-deb (`cargo install cargo-deb --locked`) and dpkg-dev
# (dpkg-shlibdeps, for the library depends).
# Honours CARGO_TARGET_DIR. Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$PWD/target}"
# The daemons on their own: cargo unifies features across the packages of one invocation, and
# ipctl's tokio "rt-multi-thread" would link the multi-threaded scheduler (and libm) into them.
cargo build --release --locked -p tandem-membership -p tandem-resource-agent --bins
cargo build --release --locked -p ipctl --bins

# cargo-deb takes these through the `target/release/generated/...` assets in ipctl/Cargo.toml.
gen="$target/release/generated"
rm -rf "$gen"
mkdir -p "$gen/completions"
ipctl="$target/release/ipctl"
"$ipctl" man --out "$gen/man"
# Debian policy: man pages are gzipped; -n keeps the name and time out, so builds reproduce.
# The daemons' pages (section 8) come from their own clap definitions (hidden --generate-man).
"$target/release/tandem-membership" --generate-man "$gen/man"
"$target/release/tandem-resource-agent" --generate-man "$gen/man"
gzip -9n "$gen"/man/*.1 "$gen"/man/*.8
"$ipctl" completions bash >"$gen/completions/ipctl.bash"
"$ipctl" completions zsh >"$gen/completions/_ipctl"
"$ipctl" completions fish >"$gen/completions/ipctl.fish"

mkdir -p "$target/debian"
cargo deb -p ipctl --no-build --output "$target/debian/" >&2
ls -t "$target"/debian/tandem_*.deb | head -n 1
