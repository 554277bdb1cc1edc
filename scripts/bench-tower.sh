#!/usr/bin/env bash
# The tower layer against its peers, in one run: the same axum app
# (crates/herdguard-tower/examples/bench-app.rs) behind herdguard's layer,
# behind axum-response-cache, and behind nothing.
#  - Hits: alternating `wrk -t1 -c64` rounds on /hot (1 KiB, cached), requests/s
#    of each and the ratios to the plain app (a noisy machine drifts; alternating
#    rounds see the same drift).
#  - Cold stampede: CLIENTS requests at once, each on its own connection, to a
#    route never asked before (a 200 ms handler): p50 / p99 latency and handler calls.
# Usage: scripts/bench-tower.sh [duration, default 5s] [rounds, default 3] [clients, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-5s}"
ROUNDS="${2:-3}"
CLIENTS="${3:-200}"
. scripts/lib.sh
require_tools "wrk curl python3" wrk curl python3

bench_workdir tower

echo "building (release)..." >&2
cargo build --release --quiet -p herdguard-tower --example bench-app --example tower-stampede
BIN=target/release/examples

MODES=(layer arc plain)
declare -A ADDR
for mode in "${MODES[@]}"; do
    "$BIN/bench-app" --mode "$mode" >"$WORK/$mode.out" 2>"$WORK/$mode.err" & PIDS+=($!)
    for _ in $(seq 1 200); do
        grep -q '^listening ' "$WORK/$mode.out" 2>/dev/null && break
        sleep 0.05
    done
    ADDR[$mode]=$(awk '/^listening / {print $2; exit}' "$WORK/$mode.out")
    [ -n "${ADDR[$mode]}" ] || { echo "bench-tower: bench-app --mode $mode did not start" >&2; cat "$WORK/$mode.err" >&2; exit 1; }
    curl -fsS -o /dev/null "http://${ADDR[$mode]}/hot"
done

rps() { wrk -t1 -c64 -d"$DURATION" "http://$1/hot" | awk '/Requests\/sec/ {print $2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "hits: requests/s on /hot (wrk -t1 -c64 -d$DURATION), herdguard = herdguard-tower, arc = axum-response-cache"
printf '%-6s %12s %12s %12s %14s %14s\n' round herdguard arc plain "herdguard/plain" "arc/plain"
for round in $(seq 1 "$ROUNDS"); do
    h=$(rps "${ADDR[layer]}"); a=$(rps "${ADDR[arc]}"); p=$(rps "${ADDR[plain]}")
    printf '%-6s %12s %12s %12s %13sx %13sx\n' "$round" "$h" "$a" "$p" "$(ratio "$h" "$p")" "$(ratio "$a" "$p")"
done

echo
echo "cold stampede: $CLIENTS requests at once to a new /cold/N (200 ms handler)"
printf '%-6s %-10s %10s %10s %9s %8s\n' round app "p50 ms" "p99 ms" failures calls
for round in $(seq 1 "$ROUNDS"); do
    for mode in "${MODES[@]}"; do
        addr=${ADDR[$mode]}
        before=$(curl -fsS "http://$addr/calls")
        read -r p50 p99 failed < <("$BIN/tower-stampede" "http://$addr/cold/$round" "$CLIENTS")
        after=$(curl -fsS "http://$addr/calls")
        name=$mode; [ "$mode" = layer ] && name=herdguard
        printf '%-6s %-10s %10s %10s %9s %8s\n' "$round" "$name" "$p50" "$p99" "$failed" "$((after - before))"
    done
done
