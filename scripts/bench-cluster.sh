#!/usr/bin/env bash
# Redis Cluster against one Redis, in one run (crates/herdguard-redis/benches/cluster.rs;
# every server is started on free loopback ports by the benchmark and stopped at the end):
#   1. cross-process wake-up p99: 8 worker processes x 64 callers on a single
#      redis-server vs the same on a 6-node cluster (3 primaries, 3 replicas),
#      interleaved round for round; goal: cluster p99 <= 1.5x single;
#   2. L2 hit throughput (RedisRemote::get, 256 tasks; HERDGUARD_BENCH_L2_TASKS)
#      on 3 shards vs a one-shard cluster, with the CPU each process used, and
#      redis-benchmark GET on both as the servers-alone peer; goal: >= 2x.
# Ratios carry over; absolute figures on a shared 2-core machine do not. About
# a minute once built.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
require_tools "redis-server redis-tools" redis-server redis-cli redis-benchmark

cargo bench -p herdguard-redis --locked --bench cluster --no-run 2>&1 | grep -v '^\s*Compiling' || true
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench -p herdguard-redis --locked --bench cluster 2>/dev/null | tee "$out"
echo
echo "== summary =="
grep -E '^(cluster benchmark|wake-up (single|cluster|ratio) |herdguard L2|redis-benchmark)' "$out"
