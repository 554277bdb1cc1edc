#!/usr/bin/env bash
# The test command (README): every test of the workspace, against real servers.
# Installs what a fresh machine lacks (redis-server, chromium, openssl, python3-venv;
# when root), or says in one line what to install. What it runs, and how long
# it takes: docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests drive for real: redis-server (the Redis tier, the fleet) and
# Debian's chromium (the browser tests: the demo's report, the dashboard and the
# web demonstrator, crates/herdguard-cli/tests/live.rs).
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# redis-cli (the cluster tests create their cluster with it; Debian's redis-server pulls it in).
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# openssl (the Python TLS test makes its CA and certificates with it).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# python3 with venv (the Python package's tests run in a virtualenv).
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} (Debian packages) for the tests..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null
  else
    echo "error: the tests need ${need[*]}: install them (Debian: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"

# The Python package's tools (maturin, pytest, Flask for the integration
# example) come from PyPI into a virtualenv while Rust builds.
venv=$target/pyenv
(
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" "pytest>=7" "flask>=2"
) >"$target/pyenv.log" 2>&1 &
pyenv_pid=$!
trap 'kill "$pyenv_pid" 2>/dev/null || true' EXIT

# Unit and integration tests of every crate: with cargo-nextest, each test in
# a process of its own and several at once (.config/nextest.toml names the
# ones that must run alone or one at a time); the tests wait on servers and
# timers more than they compute, hence twice as many as there are CPUs.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --test-threads "$((2 * $(nproc)))"
  # Doc tests (nextest does not run them).
  cargo test --workspace --locked --doc
else
  echo "cargo-nextest is not installed (cargo install --locked cargo-nextest): running the tests with cargo test, one binary at a time"
  cargo test --workspace --locked
fi

# The single-flight core, model-checked over interleavings (shuttle). A cfg, not a
# feature, so it gets its own target dir.
RUSTFLAGS="--cfg herdguard_shuttle" CARGO_TARGET_DIR="$target/shuttle" \
  cargo test -p herdguard --lib --locked shuttle

# The Python package (bindings/python): the abi3 wheel built by maturin (dev
# profile: a fraction of a release build's time) and installed into the
# virtualenv, then its pytest suite, which drives real redis-servers and the
# Rust fleet worker the tests above built.
if ! wait "$pyenv_pid"; then
  cat "$target/pyenv.log" >&2
  echo "error: could not set up the virtualenv $venv (log above)" >&2
  exit 1
fi
rm -rf "$target/wheels/python"
"$venv/bin/maturin" build --quiet --locked -m bindings/python/Cargo.toml -o "$target/wheels/python"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$target"/wheels/python/herdguard-*.whl
# The worker the Rust tests built (conftest.py would otherwise build it again,
# with other features: a second build of most of the workspace).
worker=$(cd "$target" && pwd)/debug/herdguard-redis-worker
if [ -x "$worker" ]; then export HERDGUARD_RUST_WORKER="$worker"; fi
"$venv/bin/python" -m pytest -q bindings/python/tests
