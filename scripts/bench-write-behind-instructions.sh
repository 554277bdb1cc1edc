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

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.05
done
export HERDGUARD_BENCH_REDIS_URL="redis://127.0.0.1:$port/"

count() { # mode n -> instructions
  valgrind --tool=callgrind --callgrind-out-file="$dir/cg.$1.$2" "$bin" "$2" "$1" 2>"$dir/vg.log" >/dev/null ||
    { cat "$dir/vg.log" >&2; exit 1; }
  grep -o 'Collected : [0-9]*' "$dir/vg.log" | awk '{print $3}'
}
declare -A per
for mode in ack xadd; do
  small=$(count "$mode" 1280)
  large=$(count "$mode" 3840)
  per[$mode]=$(( (large - small) / 2560 ))
  echo "$mode: ${per[$mode]} instructions per operation (1,280: $small, 3,840: $large)"
done
echo "write-behind ack / bare XADD instructions: $(python3 -c "print(f'{${per[ack]} / ${per[xadd]}:.2f}')")x"
