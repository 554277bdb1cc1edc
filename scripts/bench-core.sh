#!/usr/bin/env bash
# The core engine's benchmarks, side by side in one run (same machine load):
#   1. hit path, 2 threads: herdguard get_or_load vs moka get_with vs quick_cache get
#   2. cold coalescing, 100 / 1,000 / 10,000 callers on one key, 50 ms loader:
#      loader completion -> last waiter's return, p50/p99 over 100 rounds, herdguard
#      vs moka vs the harness floor (a plain tokio watch channel, no cache).
#   3. the same window's instructions per waiter under callgrind (when valgrind is
#      installed), 100 and 1,000 callers: the figure no machine load moves.
# Prints ratios as well as rates: on a shared 2-core machine the ratios are what
# carry over. Takes a few minutes once built.
set -euo pipefail
cd "$(dirname "$0")/.."

build=$(cargo bench -p herdguard --locked --bench hit_path --bench coalescing --no-run --message-format=json 2>/dev/null)
coalescing=$(grep -o '"executable":"[^"]*coalescing[^"]*"' <<<"$build" | cut -d'"' -f4 | head -1)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench -p herdguard --locked --bench hit_path --bench coalescing 2>/dev/null | tee "$out"

if command -v valgrind >/dev/null && [ -x "$coalescing" ]; then
    declare -A per_waiter
    for callers in 100 1000; do
        line="coalescing instructions per waiter, $callers callers, loader's return to last return (callgrind):"
        for who in herdguard moka floor; do
            total=$(COALESCING_WINDOW=$who COALESCING_CALLERS=$callers \
                valgrind --tool=callgrind --toggle-collect='*wake_window*' \
                --callgrind-out-file=/dev/null "$coalescing" 2>&1 | awk '/Collected/ {print $NF}')
            per_waiter[$who]=$((total / callers))
            line+=" $who ${per_waiter[$who]} |"
        done
        line+=$(awk -v h="${per_waiter[herdguard]}" -v m="${per_waiter[moka]}" -v f="${per_waiter[floor]}" \
            'BEGIN { printf " herdguard/moka %.2fx, herdguard/floor %.2fx", h / m, h / f }')
        echo "$line" | tee -a "$out"
    done
fi

echo
echo "== summary =="
grep -E '^(hit path|coalescing|warning)' "$out"
