#!/usr/bin/env bash
# The cold stampede across a fleet: 3 `herdguard serve` sidecars sharing one
# Redis against 3 Varnish instances, in the same run.
#
# Each round, CLIENTS concurrent GETs of one new URL (/slow/..., the origin
# answers after 200 ms), split in turn over a fleet's 3 instances, each request
# on its own connection (the stampede example), twice: with the connections
# opened before the timed window ("open") and inside it ("new", clients arriving
# cold). Fleets, each in front
# of its own origin (a counting bench-origin), so its origin calls are its own:
#
#   herdguard  3 `serve --redis` on one redis-server: one origin call per key
#              for the fleet; waiters in the other two processes wake on the
#              per-key change feed (Redis client tracking)
#   varnish    3 varnishd, default VCL (request coalescing per instance): 3 calls
#   floor      3 `serve` without Redis: each loads alone and wakes its waiters
#              in process — what a zero-cost fleet wake-up would give, on the
#              same processes and cores (3 calls)
#
# The fleets take turns within a round, in an order that alternates between
# rounds; printed: each round's p50/p99 and origin calls per fleet, then the
# medians over the rounds and the median of the per-round p99 ratios (the
# figure to quote: wall-clock on a shared machine is noisy, the ratio less so).
# The load average is printed first and last. A p99 can be no lower than the
# origin's delay: so the time beyond it (p99 minus DELAY_MS) is printed too.
#
# Usage: scripts/bench-stampede.sh [rounds, default 15]
# CLIENTS (default 150), DELAY_MS (default 200), HG_THREADS (serving threads
# per sidecar; default: serve's own, one per core but one).
# Loopback only; everything is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${1:-15}"
CLIENTS="${CLIENTS:-150}"
DELAY_MS="${DELAY_MS:-200}"
. scripts/lib.sh
bench_workdir bench-stampede

require_tools "varnish redis-server redis-tools curl" varnishd redis-server curl

echo "building (release)..." >&2
cargo build --release --quiet -p herdguard-proxy --example serve --example bench-origin --example stampede
BIN=target/release/examples

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"

HG_ARGS=()
if [[ -n "${HG_THREADS:-}" ]]; then HG_ARGS+=(--threads "$HG_THREADS"); fi

declare -A ORIGIN URLS
for fleet in herdguard varnish floor; do
    ORIGIN[$fleet]=$(free_port)
    "$BIN/bench-origin" --port "${ORIGIN[$fleet]}" --delay-ms "$DELAY_MS" 2>"$WORK/origin-$fleet.log" &
    PIDS+=($!)
    wait_port "${ORIGIN[$fleet]}"
    URLS[$fleet]=""
    for i in 1 2 3; do
        port=$(free_port)
        origin="127.0.0.1:${ORIGIN[$fleet]}"
        case $fleet in
        herdguard)
            "$BIN/serve" --listen "127.0.0.1:$port" --origin "http://$origin" \
                --redis "redis://127.0.0.1:$REDIS_PORT/" "${HG_ARGS[@]}" 2>"$WORK/hg-$i.log" &
            ;;
        floor)
            "$BIN/serve" --listen "127.0.0.1:$port" --origin "http://$origin" \
                "${HG_ARGS[@]}" 2>"$WORK/floor-$i.log" &
            ;;
        varnish)
            varnishd -F -n "$WORK/varnish-$i" -a "127.0.0.1:$port" -b "$origin" \
                -s malloc,64m >"$WORK/varnish-$i.log" 2>&1 &
            ;;
        esac
        PIDS+=($!)
        wait_port "$port"
        URLS[$fleet]+=" --url http://127.0.0.1:$port/slow/"
    done
done

calls() { curl -fsS "http://127.0.0.1:${ORIGIN[$1]}/_slow_calls"; }

# One round of fleet $1 on URL suffix $2, connections $3 (open|new):
# "p50 p99 origin_calls ok p99_by_instance".
round() {
    local fleet=$1 suffix=$2 conns=$3 before after args=()
    before=$(calls "$fleet")
    for u in ${URLS[$fleet]}; do
        if [[ $u == --url ]]; then args+=(--url); else args+=("$u$suffix"); fi
    done
    if [[ $conns == new ]]; then args+=(--new-connections); fi
    "$BIN/stampede" --n "$CLIENTS" "${args[@]}" >"$WORK/out"
    after=$(calls "$fleet")
    local p50 p99 ok by
    read -r p50 p99 _ ok <"$WORK/out"
    by=$(awk 'NR > 1 { printf "%s%s", sep, $3; sep = "/" }' "$WORK/out")
    echo "$p50 $p99 $((after - before)) $ok $by"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "cold stampede: $CLIENTS concurrent GETs of one new URL over 3 instances, ${DELAY_MS} ms origin, $ROUNDS rounds;"
echo "connections opened before the window (open) and inside it (new)"
printf '%-6s %-5s %-10s %9s %9s %6s %5s  %s\n' round conns fleet p50_ms p99_ms calls 2xx "p99 by instance"
FLEETS=(herdguard varnish floor)
for r in $(seq 1 "$ROUNDS"); do
    order=("${FLEETS[@]}")
    if (( r % 2 == 0 )); then order=(floor varnish herdguard); fi
    for conns in open new; do
        for fleet in "${order[@]}"; do
            read -r p50 p99 n ok by < <(round "$fleet" "$fleet-$conns-$r-$RANDOM" "$conns")
            printf '%-6s %-5s %-10s %9s %9s %6s %5s  %s\n' "$r" "$conns" "$fleet" "$p50" "$p99" "$n" "$ok" "$by"
            echo "$r $conns $fleet $p50 $p99 $n $ok" >>"$WORK/rounds"
            sleep 0.3
        done
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$WORK/rounds" "$CLIENTS" "$DELAY_MS" <<'PY'
import statistics, sys
clients, delay = int(sys.argv[2]), float(sys.argv[3])
by = {}
for line in open(sys.argv[1]):
    r, conns, fleet, p50, p99, n, ok = line.split()
    by.setdefault(conns, {}).setdefault(fleet, {})[int(r)] = (float(p50), float(p99), int(n), int(ok))
for conns, fleets in by.items():
    print(f"\nconnections {conns}:")
    print(f"  {'fleet':10} {'p50 median':>11} {'p99 median':>11} {'calls/round':>12} {'2xx':>10}")
    for fleet in ("herdguard", "varnish", "floor"):
        v = fleets[fleet].values()
        calls = sorted({n for _, _, n, _ in v})
        ok = sum(o for *_, o in v)
        print(f"  {fleet:10} {statistics.median(p for p, *_ in v):11.1f} "
              f"{statistics.median(p for _, p, *_ in v):11.1f} {','.join(map(str, calls)):>12} "
              f"{ok:>5}/{clients * len(v)}")
    def ratio(a, b, i):
        return statistics.median(fleets[a][r][i] / fleets[b][r][i] for r in fleets[a])
    print(f"  median per-round ratio herdguard/varnish: p99 {ratio('herdguard', 'varnish', 1):.2f}x, "
          f"p50 {ratio('herdguard', 'varnish', 0):.2f}x  (goal: p99 <= 0.90x)")
    print(f"  median per-round ratio floor/varnish:     p99 {ratio('floor', 'varnish', 1):.2f}x, "
          f"p50 {ratio('floor', 'varnish', 0):.2f}x")
    print(f"  median per-round ratio herdguard/floor:   p99 {ratio('herdguard', 'floor', 1):.2f}x, "
          f"p50 {ratio('herdguard', 'floor', 0):.2f}x")
    beyond = {f: statistics.median(p for _, p, *_ in fleets[f].values()) - delay for f in fleets}
    print(f"  p99 beyond the origin's {delay:.0f} ms (medians): herdguard {beyond['herdguard']:.1f} ms, "
          f"varnish {beyond['varnish']:.1f} ms, floor {beyond['floor']:.1f} ms")
    bad = [r for r, (_, _, n, _) in fleets["herdguard"].items() if n != 1]
    print("  herdguard: 1 origin call every round" if not bad
          else f"  herdguard: rounds with other than one origin call: {bad}")
PY
