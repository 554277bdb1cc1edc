#!/usr/bin/env bash
# Instructions per write-behind acknowledgement and per bare XADD on the same
# client, counted by callgrind (no machine load moves them): each run twice,
# with 1,280 and 3,840 operations, against one private redis-server on a free
# loopback port (stopped on exit); the difference over 2,560 is one
# operation's cost, setup excluded. About two minutes once built.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
require_tools "redis-server valgrind" redis-server valgrind

cargo bench -p herdguard-redis --locked --bench write_behind_instructions --no-run 2>&1 | grep -v '^\s*Compiling' || true
bin=$(cargo bench -p herdguard-redis --locked --bench write_behind_instructions --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="write_behind_instructions" and m.get("executable"): print(m["executable"])')

bench_workdir bench-wb-instructions
start_redis

count() { # mode n -> instructions
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$1.$2" "$bin" "$2" "$1" 2>"$WORK/vg.log" >/dev/null ||
    { cat "$WORK/vg.log" >&2; exit 1; }
  grep -o 'Collected : [0-9]*' "$WORK/vg.log" | awk '{print $3}'
}
declare -A per
for mode in ack xadd; do
  small=$(count "$mode" 1280)
  large=$(count "$mode" 3840)
  per[$mode]=$(( (large - small) / 2560 ))
  echo "$mode: ${per[$mode]} instructions per operation (1,280: $small, 3,840: $large)"
done
echo "write-behind ack / bare XADD instructions: $(python3 -c "print(f'{${per[ack]} / ${per[xadd]}:.2f}')")x"
