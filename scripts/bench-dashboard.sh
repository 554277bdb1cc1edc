#!/usr/bin/env bash
# What the live dashboard costs the hit path: herdguard serve's hit throughput
# with no dashboard open vs three open (three clients following /events), in
# alternating rounds of one run, and the bytes of one update. Then the same
# under callgrind (instructions per hit over 10 s of load, counters zeroed
# after the warm-up): a count that the machine's noise does not move, where
# two cores shared by wrk and the server make the rps swing by ±25 %.
#
#   scripts/bench-dashboard.sh [round duration, default 5s] [rounds, default 4]
#
# Run by scripts/bench-serve.sh too. Loopback only; everything stops on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-5s}"
ROUNDS="${2:-4}"
. scripts/lib.sh
bench_workdir bench-dashboard
require_tools wrk wrk

cargo build --release --quiet -p herdguard-proxy --examples
BIN=target/release/examples
ORIGIN_PORT=$(free_port); HG_PORT=$(free_port); ADMIN_PORT=$(free_port)
"$BIN/bench-origin" --port "$ORIGIN_PORT" --delay-ms 200 2>"$WORK/origin.log" &
PIDS+=($!)
"$BIN/serve" --listen "127.0.0.1:$HG_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT" \
    --admin "127.0.0.1:$ADMIN_PORT" 2>"$WORK/herdguard.log" &
PIDS+=($!)
wait_port "$ORIGIN_PORT"; wait_port "$HG_PORT"; wait_port "$ADMIN_PORT"
curl -fsS -o /dev/null "http://127.0.0.1:$HG_PORT/hot"

rps() { wrk -t1 -c64 -d"$DURATION" "http://127.0.0.1:$HG_PORT/hot" | awk '/Requests\/sec/ {print $2}'; }
NONE=(); THREE=()
for round in $(seq 1 "$ROUNDS"); do
    NONE+=("$(rps)")
    VIEWERS=()
    for _ in 1 2 3; do
        curl -sN "http://127.0.0.1:$ADMIN_PORT/events" >>"$WORK/events" 2>/dev/null &
        VIEWERS+=($!)
    done
    sleep 1
    THREE+=("$(rps)")
    kill "${VIEWERS[@]}" 2>/dev/null || true
    wait "${VIEWERS[@]}" 2>/dev/null || true
    echo "round $round: none open ${NONE[-1]} rps, three open ${THREE[-1]} rps" >&2
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'; }
M_NONE=$(median "${NONE[@]}"); M_THREE=$(median "${THREE[@]}")
UPDATE_BYTES=$(awk '/^data: / {n++; b+=length($0)+2} END {if (n) printf "%.0f", b/n; else print 0}' "$WORK/events")
printf '\n%-44s %12s\n' "hit rps, no dashboard open (median of $ROUNDS)" "$M_NONE"
printf '%-44s %12s\n' "hit rps, three dashboards open (median)" "$M_THREE"
awk -v a="$M_THREE" -v b="$M_NONE" 'BEGIN { printf "%-44s %11.3fx\n", "three open / none open", a/b }'
printf '%-44s %12s\n' "bytes per update per client (mean)" "$UPDATE_BYTES"

# Instructions per hit, none open vs three open (one serving thread).
if command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
    kill "${PIDS[1]}" 2>/dev/null || true; wait "${PIDS[1]}" 2>/dev/null || true
    per_hit() { callgrind_per_hit "$BIN/serve" "$ORIGIN_PORT" "$HG_PORT" "$ADMIN_PORT" "$1"; }
    read -r N0 I0 < <(per_hit 0)
    read -r N3 I3 < <(per_hit 3)
    printf '%-44s %12s  (%s hits)\n' "instructions per hit, none open (callgrind)" "$I0" "$N0"
    printf '%-44s %12s  (%s hits)\n' "instructions per hit, three open (callgrind)" "$I3" "$N3"
    awk -v a="$I3" -v b="$I0" 'BEGIN { printf "%-44s %11.3fx\n", "three open / none open", a/b }'
fi
echo "goal: three open within 3 % of none open; <= 1 KB per update per client"
