#!/usr/bin/env bash
# Builds the Debian package "tandem": the three release binaries, ipctl's man pages and shell
# completions (generated from its clap definition), then `cargo deb`. Needs cargo-deb
# (`cargo install cargo-deb --locked`) and dpkg-dev (dpkg-shlibdeps, for the library depends).
# Honours CARGO_TARGET_DIR. Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -p ipctl -p tandem-membership -p tandem-resource-agent --bins

# cargo-deb takes these through the `target/release/generated/...` assets in ipctl/Cargo.toml.
gen="$target/release/generated"
rm -rf "$gen"
mkdir -p "$gen/completions"
ipctl="$target/release/ipctl"
"$ipctl" man --out "$gen/man"
# Debian policy: man pages are gzipped; -n keeps the name and time out, so builds reproduce.
gzip -9n "$gen"/man/*.1
"$ipctl" completions bash >"$gen/completions/ipctl.bash"
"$ipctl" completions zsh >"$gen/completions/_ipctl"
"$ipctl" completions fish >"$gen/completions/ipctl.fish"

mkdir -p "$target/debian"
cargo deb -p ipctl --no-build --output "$target/debian/" >&2
ls -t "$target"/debian/tandem_*.deb | head -n 1
