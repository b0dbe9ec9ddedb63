#!/usr/bin/env bash
# Builds the Rust parts of modhost: every native module with a Cargo.toml under modules/
# (release mode, so that module.toml's entry_point target/release/<name> exists) and, with
# --test, the Rust SDK's tests (sdk/rust) and the modules' unit tests. --sdk-only builds no
# module binary but runs the same tests. --lint checks formatting (rustfmt, with the
# checkout's rustfmt.toml) and runs clippy with warnings as errors, over the SDK and every
# module crate, and builds nothing else. --bench builds only the benchmarks' Rust fixtures
# (bench/fixtures/*/Cargo.toml, release; `npm run bench` runs it when one is missing).
#
#   scripts/build-rust.sh [--test] [--sdk-only] [--lint] [--bench]
#
# Where crates come from:
#   MODHOST_CARGO_OFFLINE=1  Debian's packaged crates (/usr/share/cargo/registry), no network:
#                            CARGO_HOME=.ci/cargo-debian, whose config.toml replaces crates.io.
#                            Needs: apt-get install librust-serde-derive-dev
#                            librust-rmp-serde-dev librust-serde-json-dev librust-httparse-dev
#   MODHOST_CARGO_OFFLINE=0  cargo as configured for this user (crates.io, or the user's
#                            own CARGO_HOME and source replacement).
#   unset (auto)             Debian's crates when they are installed and this user's cargo
#                            has never downloaded a crate (none in its registry cache);
#                            otherwise cargo as configured.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RUN_TESTS=0
MODULES=1
LINT=0
BENCH=0
for arg in "$@"; do
  case "$arg" in
    --test) RUN_TESTS=1 ;;
    --sdk-only) MODULES=0; RUN_TESTS=1 ;;
    --lint) MODULES=0; LINT=1 ;;
    --bench) MODULES=0; BENCH=1 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-rust: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

if ! command -v cargo >/dev/null; then
  echo "build-rust: cargo not found; install Rust (rustup) to build native modules" >&2
  exit 1
fi

DEBIAN_REGISTRY=/usr/share/cargo/registry
NEEDED_CRATES=(serde serde_derive rmp-serde rmp serde_json httparse)
debian_has_crates() {
  local c
  for c in "${NEEDED_CRATES[@]}"; do
    compgen -G "$DEBIAN_REGISTRY/$c-[0-9]*" >/dev/null || return 1
  done
}
user_cargo_home=${CARGO_HOME:-$HOME/.cargo}
# Crates downloaded before: this user's cargo reaches a registry.
crates_io_cached() {
  compgen -G "$user_cargo_home/registry/cache/*/*.crate" >/dev/null
}

mode=${MODHOST_CARGO_OFFLINE:-auto}
case "$mode" in
  1|true|yes) offline=1; why="MODHOST_CARGO_OFFLINE=$mode" ;;
  0|false|no) offline=0; why="MODHOST_CARGO_OFFLINE=$mode" ;;
  auto)
    if debian_has_crates && ! crates_io_cached; then
      offline=1; why="auto: Debian's crates are installed and $user_cargo_home has downloaded no crates"
    else
      offline=0
      if debian_has_crates; then why="auto: $user_cargo_home has downloaded crates before"; else why="auto: Debian's crates are not installed"; fi
    fi ;;
  *) echo "build-rust: MODHOST_CARGO_OFFLINE must be 1 or 0, not '$mode'" >&2; exit 2 ;;
esac

if [ "$offline" = 1 ]; then
  if ! debian_has_crates; then
    echo "build-rust: offline build asked for, but $DEBIAN_REGISTRY lacks some of: ${NEEDED_CRATES[*]}" >&2
    echo "build-rust: install them with: apt-get install librust-serde-derive-dev librust-rmp-serde-dev librust-serde-json-dev librust-httparse-dev" >&2
    exit 1
  fi
  # Cargo also keeps its caches in CARGO_HOME; .ci/cargo-debian/.gitignore keeps them out of git.
  export CARGO_HOME="$ROOT/.ci/cargo-debian"
  echo "build-rust: crates from Debian ($DEBIAN_REGISTRY), offline; CARGO_HOME=$CARGO_HOME ($why)"
else
  echo "build-rust: crates from cargo's configured registry, CARGO_HOME=$user_cargo_home ($why); set MODHOST_CARGO_OFFLINE=1 to use Debian's crates"
fi
echo "build-rust: $(cargo --version)"

# Milliseconds since the epoch, for timings.
now_ms() { date +%s%3N; }
timed() {
  local label=$1; shift
  local t0; t0=$(now_ms)
  if "$@"; then
    echo "build-rust: $label: ok in $(( ($(now_ms) - t0) ))ms"
  else
    local rc=$?
    echo "build-rust: $label: FAILED (exit $rc) after $(( ($(now_ms) - t0) ))ms" >&2
    if [ "$offline" = 0 ]; then
      echo "build-rust: if crates.io is unreachable here, retry with MODHOST_CARGO_OFFLINE=1 (Debian's crates)" >&2
    fi
    exit "$rc"
  fi
}

if [ "$MODULES" = 1 ]; then
  shopt -s nullglob
  manifests=(modules/*/Cargo.toml)
  if [ ${#manifests[@]} = 0 ]; then
    echo "build-rust: no Rust modules under modules/"
  fi
  # Reproducible module binaries (the [binary] hash in a signed module.toml must match a
  # build of the same source anywhere): scripts/rustc-reproducible.sh adds path remaps and no
  # linker build id to every rustc call. Each module's [profile.release] adds codegen-units = 1.
  for manifest in "${manifests[@]}"; do
    dir=$(dirname "$manifest")
    # --cfg modhost_reproducible names no path (so every checkout hashes it alike) but is in
    # cargo's fingerprint, which the wrapper is not: artifacts of a plain `cargo build` (no
    # remaps) are never reused here.
    timed "build $dir (release)" env RUSTC_WRAPPER="$ROOT/scripts/rustc-reproducible.sh" \
      MODHOST_REMAP_ROOT="$ROOT" MODHOST_REMAP_CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" \
      RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--cfg modhost_reproducible_2" \
      cargo build --release --quiet --manifest-path "$manifest"
  done
fi

if [ "$BENCH" = 1 ]; then
  shopt -s nullglob
  for manifest in bench/fixtures/*/Cargo.toml; do
    timed "build $(dirname "$manifest") (release)" cargo build --release --quiet --manifest-path "$manifest"
  done
fi

if [ "$RUN_TESTS" = 1 ]; then
  timed "test sdk/rust" cargo test --quiet --manifest-path sdk/rust/Cargo.toml
  # The modules' own unit tests (e.g. modules/block-template: config checks, getblocktemplate's form).
  shopt -s nullglob
  for manifest in modules/*/Cargo.toml; do
    timed "test $(dirname "$manifest")" cargo test --quiet --manifest-path "$manifest"
  done
fi

if [ "$LINT" = 1 ]; then
  shopt -s nullglob
  crates=(sdk/rust/Cargo.toml modules/*/Cargo.toml)
  for manifest in "${crates[@]}"; do
    dir=$(dirname "$manifest")
    timed "rustfmt --check $dir" cargo fmt --manifest-path "$manifest" -- --check
    timed "clippy $dir" cargo clippy --quiet --all-targets --manifest-path "$manifest" -- -D warnings
  done
fi
