#!/usr/bin/env bash
# The sidecar's HTTP/2 hit path, this tree against an earlier commit: both
# `serve` examples in front of the same origin, one serving thread each,
# alternating `h2load -t1 -c8 -m8` rounds (h2c, 64 streams in flight) on one
# cached URL, then instructions per h2 hit of each under callgrind (a fixed
# number of requests; the machine's noise does not move it).
# Usage: scripts/bench-h2-ab.sh COMMIT [duration, default 5s] [rounds, default 3]
# The earlier commit is built from `git archive` under /tmp, in its own target dir
# (removed on exit; HG_AB_TARGET=DIR keeps and reuses one); everything listens on
# loopback and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_COMMIT="${1:?usage: scripts/bench-h2-ab.sh COMMIT [duration] [rounds]}"
DURATION="${2:-5s}"
ROUNDS="${3:-3}"
. scripts/lib.sh
require_tools nghttp2-client h2load
git rev-parse --verify --quiet "$BASE_COMMIT^{commit}" >/dev/null || { echo "bench-h2-ab: $BASE_COMMIT is not a commit" >&2; exit 2; }

bench_workdir h2-ab

ab_build "$BASE_COMMIT"
NEW_BIN=target/release/examples/serve

ORIGIN_PORT=$(free_port); BASE_PORT=$(free_port); NEW_PORT=$(free_port)
target/release/examples/bench-origin --port "$ORIGIN_PORT" --delay-ms 200 2>/dev/null & PIDS+=($!)
"$BASE_BIN" --listen "127.0.0.1:$BASE_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT" --threads 1 2>/dev/null & PIDS+=($!)
"$NEW_BIN" --listen "127.0.0.1:$NEW_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT" --threads 1 2>/dev/null & PIDS+=($!)
for port in "$ORIGIN_PORT" "$BASE_PORT" "$NEW_PORT"; do wait_port "$port"; done
for port in "$BASE_PORT" "$NEW_PORT"; do curl -fsS -o /dev/null "http://127.0.0.1:$port/hot"; done

# 2xx answers per second, and the count of 2xx (a round with errors shows).
rps() {
    h2load -t1 -c8 -m8 -D "$DURATION" "http://127.0.0.1:$1/hot" 2>/dev/null | awk '
        /^finished in/ { t=$3; sub(/s,$/,"",t) }
        /^status codes:/ { ok=$3 }
        END { if (t > 0) printf "%.0f\n", ok / t; else print 0 }'
}
ab_rounds rps "$ROUNDS" "$BASE_PORT" "$NEW_PORT"

# Instructions per h2 hit: each binary alone under callgrind, 20000 hits.
if command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
    kill "${PIDS[1]}" "${PIDS[2]}" 2>/dev/null || true
    wait "${PIDS[1]}" "${PIDS[2]}" 2>/dev/null || true
    export HIT_LOAD=h2
    read -r _ IB < <(callgrind_per_hit "$BASE_BIN" "$ORIGIN_PORT" "$(free_port)" "$(free_port)" 0)
    read -r _ IN < <(callgrind_per_hit "$NEW_BIN" "$ORIGIN_PORT" "$(free_port)" "$(free_port)" 0)
    printf '%-40s %12s %12s %8s\n' "instructions per h2 hit (callgrind)" "$IB" "$IN" "$(awk -v n="$IN" -v b="$IB" 'BEGIN { printf "%.3f", n / b }')x"
fi
