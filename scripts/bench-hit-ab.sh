#!/usr/bin/env bash
# The sidecar's hit path, this tree against an earlier commit: both `serve`
# examples in front of the same origin, one serving thread each, alternating
# `wrk -t1 -c64` rounds on one cached URL (a noisy machine drifts; alternating
# rounds see the same drift), then instructions per hit of each under callgrind
# (when valgrind is installed), which the noise does not move. Usage: scripts/bench-hit-ab.sh COMMIT [duration, default 5s] [rounds, default 3]
# The earlier commit is built from `git archive` under /tmp, in its own target dir
# (removed on exit; HG_AB_TARGET=DIR keeps and reuses one, as a first release
# build takes minutes); everything listens on loopback and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_COMMIT="${1:?usage: scripts/bench-hit-ab.sh COMMIT [duration] [rounds]}"
DURATION="${2:-5s}"
ROUNDS="${3:-3}"
. scripts/lib.sh
require_tools wrk wrk
git rev-parse --verify --quiet "$BASE_COMMIT^{commit}" >/dev/null || { echo "bench-hit-ab: $BASE_COMMIT is not a commit" >&2; exit 2; }

bench_workdir hit-ab

ab_build "$BASE_COMMIT"

ORIGIN_PORT=$(free_port); BASE_PORT=$(free_port); NEW_PORT=$(free_port)
target/release/examples/bench-origin --port "$ORIGIN_PORT" --delay-ms 200 2>/dev/null & PIDS+=($!)
"$BASE_BIN" --listen "127.0.0.1:$BASE_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT" --threads 1 2>/dev/null & PIDS+=($!)
target/release/examples/serve --listen "127.0.0.1:$NEW_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT" --threads 1 2>/dev/null & PIDS+=($!)
for port in "$ORIGIN_PORT" "$BASE_PORT" "$NEW_PORT"; do wait_port "$port"; done
for port in "$BASE_PORT" "$NEW_PORT"; do curl -fsS -o /dev/null "http://127.0.0.1:$port/hot"; done

rps() { wrk -t1 -c64 -d"$DURATION" "http://127.0.0.1:$1/hot" | awk '/Requests\/sec/ {print $2}'; }
ab_rounds rps "$ROUNDS" "$BASE_PORT" "$NEW_PORT"
# The stable figure: instructions per hit under callgrind, each binary alone.
if command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
    kill "${PIDS[1]}" "${PIDS[2]}" 2>/dev/null || true
    wait "${PIDS[1]}" "${PIDS[2]}" 2>/dev/null || true
    ADMIN_PORT=$(free_port)
    read -r NB IB < <(callgrind_per_hit "$BASE_BIN" "$ORIGIN_PORT" "$BASE_PORT" "$ADMIN_PORT" 0)
    read -r NN IN < <(callgrind_per_hit target/release/examples/serve "$ORIGIN_PORT" "$NEW_PORT" "$ADMIN_PORT" 0)
    printf '%-40s %12s %12s %8s\n' "instructions per hit (callgrind)" "$IB" "$IN" "$(awk -v n="$IN" -v b="$IB" 'BEGIN { printf "%.3f", n / b }')x"
fi
