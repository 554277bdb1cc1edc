#!/usr/bin/env bash
# The sidecar hit's cost in instructions (callgrind: the machine's noise does
# not move it): `serve` on one thread in front of the bench origin, 10 s of
# `wrk -t1 -c8` on one cached URL, instructions divided by hits; the same for
# examples/hit-floor (hyper and Tokio answering the same answer from a kept
# field map, and nothing else: the part no change to herdguard removes); then
# the profile's top entries per hit, inclusive and exclusive. TOP=N sets how
# many (default 15). Everything listens on loopback and is stopped on exit.
# Usage: scripts/bench-hit-cost.sh [h1|h2]: h2 counts HTTP/2 hits instead
# (h2c, 20,000 requests of `h2load -c8 -m8`), against hit-floor --h2 (the
# `h2` crate and Tokio answering alone).
set -euo pipefail
cd "$(dirname "$0")/.."

TOP="${TOP:-15}"
MODE="${1:-h1}"
. scripts/lib.sh
require_tools "wrk valgrind" wrk valgrind callgrind_control callgrind_annotate
case "$MODE" in
    h1) FLOOR_ARGS=(); FLOOR_NAME="floor: hyper + Tokio, same answer (hit-floor)" ;;
    h2) require_tools nghttp2-client h2load; export HIT_LOAD=h2
        FLOOR_ARGS=(--h2); FLOOR_NAME="floor: h2 + Tokio, same answer (hit-floor --h2)" ;;
    *) echo "usage: scripts/bench-hit-cost.sh [h1|h2]" >&2; exit 2 ;;
esac
bench_workdir hit-cost

echo "building (release)..." >&2
cargo build --release --quiet -p herdguard-proxy --examples
ORIGIN_PORT=$(free_port); PORT=$(free_port); ADMIN_PORT=$(free_port); FLOOR_PORT=$(free_port)
target/release/examples/bench-origin --port "$ORIGIN_PORT" --delay-ms 200 2>/dev/null & PIDS+=($!)
wait_port "$ORIGIN_PORT"

read -r N IR < <(callgrind_per_hit target/release/examples/serve "$ORIGIN_PORT" "$PORT" "$ADMIN_PORT" 0)
read -r FN FIR < <(callgrind_wrk "$WORK/floor" "$FLOOR_PORT" "" 0 target/release/examples/hit-floor --port "$FLOOR_PORT" "${FLOOR_ARGS[@]}")
printf '%-48s %10s %10s\n' "" requests "instr/hit"
printf '%-48s %10s %10s\n' "herdguard serve (one thread, $MODE)" "$N" "$IR"
printf '%-48s %10s %10s\n' "$FLOOR_NAME" "$FN" "$FIR"

# Inclusive: callgrind_annotate's lines (with the release profile's LTO most
# of a hit is inlined into hyper's connection future, so few frames remain) ("  12,345 (1.2%)  file:function [object]"),
# per hit, below the runtime's frames (those over 90 % of the whole).
inclusive() { # $1 profile, $2 requests
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
        awk -v n="$2" '/^ *[0-9,]+ / { c = $1; gsub(",", "", c); if (!total) total = c; if (c > 0.9 * total) next;
                line = $0; sub(/^ *[0-9,]+ +(\( *[0-9.]+%\) +)?/, "", line); sub(/ \[[^]]*\]$/, "", line);
                sub(/^[^:]*:/, "", line); if (c / n >= 1 && !seen[line]++) printf "%8.0f  %s\n", c / n, substr(line, 1, 150) }' |
        grep -v -E 'PROGRAM TOTALS|libc_start|lang_start|rust_begin_short_backtrace|below main|  (main|serve::main|0x[0-9a-f]+|run_blocking)$' |
        awk -v top="$TOP" 'NR <= top'
}
# Exclusive, per function, from the profile itself (cost lines outside calls).
exclusive() { # $1 profile, $2 requests
    awk -v n="$2" '
        function named(s,   id) {
            if (match(s, /^\([0-9]+\) /)) { id = substr(s, 1, RLENGTH - 1); names[id] = substr(s, RLENGTH + 1); return names[id] }
            if (s ~ /^\([0-9]+\)$/) return names[s]
            return s
        }
        /^fn=/ { fn = named(substr($0, 4)); next }
        /^cfn=/ { named(substr($0, 5)); next }
        /^calls=/ { call = 1; next }
        /^[0-9+*-]/ { if (call) { call = 0; next } cost[fn] += $2 }
        END { for (f in cost) printf "%8.0f  %s\n", cost[f] / n, substr(f, 1, 150) }' "$1" |
        sort -rn | awk -v top="$TOP" 'NR <= top'
}
echo; echo "top $TOP, inclusive (instructions per hit):"; inclusive "$WORK/cg.0.$PORT.1" "$N"
echo; echo "top $TOP, exclusive (instructions per hit):"; exclusive "$WORK/cg.0.$PORT.1" "$N"
