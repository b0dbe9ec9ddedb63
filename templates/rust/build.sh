#!/usr/bin/env bash
# Builds __NAME__ (release mode: module.toml's entry_point is target/release/__NAME__), the way
# modhost's scripts/build-rust.sh builds its own Rust modules.
#
# Where crates come from:
#   MODHOST_CARGO_OFFLINE=1  Debian's packaged crates (/usr/share/cargo/registry), no network:
#                            CARGO_HOME=.cargo-offline, whose config.toml replaces crates.io.
#                            Needs: apt-get install librust-serde-derive-dev librust-rmp-serde-dev
#   MODHOST_CARGO_OFFLINE=0  cargo as configured for this user (crates.io).
#   unset (auto)             Debian's crates when they are installed and this user's cargo has
#                            never downloaded a crate; otherwise cargo as configured.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "build: cargo not found; install Rust (rustup)" >&2; exit 1; }
debian_has_crates() {
  local c
  for c in serde serde_derive rmp-serde rmp; do
    compgen -G "/usr/share/cargo/registry/$c-[0-9]*" >/dev/null || return 1
  done
}
case "${MODHOST_CARGO_OFFLINE:-auto}" in
  1|true|yes) offline=1 ;;
  0|false|no) offline=0 ;;
  auto) if debian_has_crates && ! compgen -G "${CARGO_HOME:-$HOME/.cargo}/registry/cache/*/*.crate" >/dev/null; then offline=1; else offline=0; fi ;;
  *) echo "build: MODHOST_CARGO_OFFLINE must be 1 or 0, not '$MODHOST_CARGO_OFFLINE'" >&2; exit 2 ;;
esac
if [ "$offline" = 1 ]; then
  export CARGO_HOME="$PWD/.cargo-offline"
  echo "build: crates from Debian (/usr/share/cargo/registry), offline"
fi
cargo build --release --quiet
echo "build: target/release/__NAME__"
