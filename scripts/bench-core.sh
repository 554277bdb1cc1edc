#!/usr/bin/env bash
# The core engine's benchmarks, side by side in one run (same machine load):
#   1. hit path, 2 threads: herdguard get_or_load vs moka get_with vs quick_cache get
#   2. cold coalescing, 100 / 1,000 / 10,000 callers on one key, 50 ms loader:
#      loader completion -> last waiter's return, p50/p99 over 20 rounds, herdguard
#      vs moka vs the harness floor (a plain tokio watch channel, no cache).
# Prints ratios as well as rates: on a shared 2-core machine the ratios are what
# carry over. Takes about a minute once built.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench -p herdguard --locked --bench hit_path --bench coalescing --no-run 2>&1 | grep -v '^\s*Compiling' || true
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench -p herdguard --locked --bench hit_path --bench coalescing 2>/dev/null | tee "$out"
echo
echo "== summary =="
grep -E '^(hit path|coalescing|warning)' "$out"
