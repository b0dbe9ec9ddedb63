#!/usr/bin/env bash
# RUSTC_WRAPPER used by scripts/build-rust.sh for module binaries: adds the flags that make a
# build the same bytes in any directory, to every crate's compilation. They are not passed in
# RUSTFLAGS because cargo hashes RUSTFLAGS into each crate's metadata (symbol and type-id
# hashes), so a flag naming the checkout's path would itself make two checkouts differ.
#   --remap-path-prefix  the checkout and CARGO_HOME as fixed names (panic locations of path
#                        dependencies such as sdk/rust would otherwise carry them)
#   --build-id=none      no linker build id
# MODHOST_REMAP_ROOT and MODHOST_REMAP_CARGO_HOME are set by build-rust.sh.
set -euo pipefail
rustc=$1
shift
case " $* " in
  *" --crate-name "*)
    exec "$rustc" "$@" \
      "--remap-path-prefix=${MODHOST_REMAP_ROOT:?}=/modhost" \
      "--remap-path-prefix=${MODHOST_REMAP_CARGO_HOME:?}=/cargo" \
      -C link-arg=-Wl,--build-id=none ;;
  # cargo's probes (rustc -vV, --print ...): as they are.
  *) exec "$rustc" "$@" ;;
esac
