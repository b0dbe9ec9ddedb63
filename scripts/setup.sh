#!/usr/bin/env bash
# One-step set-up for a fresh Debian machine: system packages (when run as root), npm
# packages, and the native modules. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# bubblewrap: the sandbox for native modules. librust-*: the crates the Rust SDK needs, from
# Debian, for machines that cannot reach crates.io.
SYSTEM_PACKAGES=(bubblewrap util-linux librust-serde-derive-dev librust-rmp-serde-dev librust-serde-json-dev)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing system packages: ${SYSTEM_PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${SYSTEM_PACKAGES[@]}" >/dev/null
else
  echo "setup: not root (or no apt-get); make sure these are installed: ${SYSTEM_PACKAGES[*]}"
fi

echo "setup: installing npm packages"
# npm install (not npm ci): it installs the locked versions too, and tolerates optional
# platform packages the registry lacks at the locked version (msgpackr-extract's darwin and
# windows builds), which npm ci refuses as an out-of-sync lock file.
npm install --no-audit --no-fund

if [ -x scripts/build-rust.sh ]; then
  if command -v cargo >/dev/null; then
    scripts/build-rust.sh "$@"
  else
    echo "setup: cargo not found; native Rust modules are not built (install Rust to run them)"
  fi
fi
echo "setup: done. Start the host with: npm start"
