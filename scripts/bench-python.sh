#!/usr/bin/env bash
# herdguard for Python against dogpile.cache and redis-py, in one run: builds
# the release wheel into its own virtualenv (target/pyenv-bench, with the
# peers from PyPI), starts a redis-server on a free loopback port, and prints
# ratios (bindings/python/bench/bench.py). Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

venv=target/pyenv-bench
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" dogpile.cache redis
rm -rf target/wheels/release
"$venv/bin/maturin" build --quiet --release --locked -m bindings/python/Cargo.toml -o target/wheels/release
"$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps target/wheels/release/herdguard-*.whl

port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true' EXIT
wait_port "$port"
"$venv/bin/python" bindings/python/bench/bench.py "redis://127.0.0.1:$port/"
