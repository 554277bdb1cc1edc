#!/usr/bin/env bash
# The test command (README): every test of the workspace, against real servers.
# Installs what a fresh machine lacks (redis-server, when root), or says in one
# line what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (Debian package) for the Redis tests..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null
  else
    echo "error: redis-server is required for the tests: install it (Debian: sudo apt-get install redis-server)" >&2
    exit 1
  fi
fi

# Unit, integration and doc tests of every crate.
cargo test --workspace --locked

# The single-flight core, model-checked over interleavings (shuttle). A cfg, not a
# feature, so it gets its own target dir.
RUSTFLAGS="--cfg herdguard_shuttle" CARGO_TARGET_DIR=target/shuttle \
  cargo test -p herdguard --lib --locked shuttle
