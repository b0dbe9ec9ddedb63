#!/usr/bin/env bash
# RUSTC_WRAPPER used by scripts/build-rust.sh for module binaries: makes a build the same bytes
# in any directory, whatever the checkout's path or CARGO_HOME.
#   --remap-path-prefix  the checkout and CARGO_HOME as fixed names (panic locations of path
#                        dependencies such as sdk/rust would otherwise carry them)
#   -C metadata          for crates inside the checkout (the module, sdk/rust): a hash of the
#                        crate's name and its path relative to the checkout. Cargo's own value
#                        hashes the absolute path of a path dependency outside the module's
#                        directory (sdk/rust), and it decides the symbol hashes and so the
#                        order of functions in the binary (measured: same size, 100k bytes
#                        differed between two checkouts). Registry crates keep cargo's value,
#                        which is the same everywhere.
#   --build-id=none      no linker build id
# These are not passed in RUSTFLAGS because cargo hashes RUSTFLAGS into every crate's
# metadata, so a flag naming the checkout's path would itself make checkouts differ.
# MODHOST_REMAP_ROOT and MODHOST_REMAP_CARGO_HOME are set by build-rust.sh.
set -euo pipefail
rustc=$1
shift
case " $* " in
  *" --crate-name "*) ;;
  # cargo's probes (rustc -vV, --print ...): as they are.
  *) exec "$rustc" "$@" ;;
esac
root=${MODHOST_REMAP_ROOT:?}
name="" src=""
prev=""
for a in "$@"; do
  [ "$prev" = "--crate-name" ] && name=$a
  case "$a" in *.rs) [ -z "$src" ] && src=$a ;; esac
  prev=$a
done
# Inside the checkout: an absolute path under it, or a path relative to the package (cwd).
rel=""
case "$src" in
  "$root"/*) rel=${src#"$root"/} ;;
  /*) ;;
  *) abs="$(pwd)/$src"; case "$abs" in "$root"/*) rel=${abs#"$root"/} ;; esac ;;
esac
args=()
prev=""
for a in "$@"; do
  if [ -n "$rel" ] && [ "$prev" = "-C" ] && [ "${a#metadata=}" != "$a" ]; then
    a="metadata=$(printf '%s\0%s' "$name" "$rel" | sha256sum | cut -c1-16)"
  fi
  args+=("$a")
  prev=$a
done
exec "$rustc" "${args[@]}" \
  "--remap-path-prefix=$root=/modhost" \
  "--remap-path-prefix=${MODHOST_REMAP_CARGO_HOME:?}=/cargo" \
  -C link-arg=-Wl,--build-id=none
