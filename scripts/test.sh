#!/usr/bin/env bash
# The test command (README): every test of the workspace, against real servers.
# Installs what a fresh machine lacks (redis-server, chromium; when root), or
# says in one line what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests drive for real: redis-server (the Redis tier, the fleet) and
# Debian's chromium (the browser tests of the demo's report).
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# redis-cli (the cluster tests create their cluster with it; Debian's redis-server pulls it in).
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} (Debian packages) for the tests..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null
  else
    echo "error: the tests need ${need[*]}: install them (Debian: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

# Unit, integration and doc tests of every crate.
cargo test --workspace --locked

# The single-flight core, model-checked over interleavings (shuttle). A cfg, not a
# feature, so it gets its own target dir.
RUSTFLAGS="--cfg herdguard_shuttle" CARGO_TARGET_DIR=target/shuttle \
  cargo test -p herdguard --lib --locked shuttle
