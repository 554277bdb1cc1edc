#!/usr/bin/env bash
# The Redis shared tier's benchmarks, side by side in one run against one
# private redis-server on a free loopback port (stopped on exit):
#   1. wake-up: 8 worker processes x 64 callers on one cold key per round, 100 ms
#      loader; loader end -> each waiter's return, p50/p99, herdguard (per-key
#      feed: the waiters woken by Redis's invalidation push), herdguard on the
#      broadcast feed (--broadcast-feed) and the classic SET NX lock +
#      100 ms..1 s backoff polling + double check.
#   2. L2 hit throughput: RedisRemote::get and Cache (L1 of one entry) vs
#      redis-benchmark GET at the same concurrency and value size.
#   3. Durable write-behind: Cache::write_behind (shared store + Redis Stream
#      queue, a batching writer) closed loop and open loop at
#      HERDGUARD_BENCH_WRITE_RATE writes/s (default 20000; a plain XADD
#      offered alike right after it, for the machine's own tail), in
#      HERDGUARD_BENCH_ROUNDS rounds (default 3) alternating with a plain XADD
#      loop on the same client, each with the load average and the Redis CPU,
#      Redis commands (by name, per ack) and client CPU per operation; then
#      each step of an ack alone (the shared-store write; the push, its drain
#      included), the floor their CPU sets, and redis-benchmark XADD.
# Ratios carry over; absolute figures on a shared 2-core machine do not.
# About a minute once built.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
require_tools "redis-server redis-tools" redis-server redis-benchmark

cargo bench -p herdguard-redis --locked --bench wakeup --bench l2_get --bench write_behind --no-run 2>&1 | grep -v '^\s*Compiling' || true

bench_workdir bench-redis
start_redis
out="$WORK/out"
cargo bench -p herdguard-redis --locked --bench wakeup --bench l2_get --bench write_behind 2>/dev/null | tee "$out"
echo
echo "== summary =="
grep -E '^(wake-up|herdguard L2|l2 get|round|herdguard write_behind|  commands per ack|plain XADD|floor|write-behind ratio)' "$out"
