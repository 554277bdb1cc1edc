#!/usr/bin/env bash
# The cost of the change feed's plain PUBLISH on a Redis Cluster against sharded
# pub/sub (SPUBLISH), on a local 6-node cluster (3 primaries, 3 replicas) on
# 127.0.0.1: messages per second from one client (redis-benchmark, pipelined)
# and the cluster-bus messages and bytes each one costs (cluster_stats_messages_*_sent;
# bytes_sent of every cluster-bus socket, from `ss -ti`, less the bus's idle gossip
# over the same time).
# A subscriber listens on another primary (PUBLISH) and on the shard (SPUBLISH).
# Every server it starts is stopped at the end. Takes about 15 s.
set -euo pipefail

BASE=${BASE:-21900}
N=${N:-200000}
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

ports=()
for i in 0 1 2 3 4 5; do
    port=$((BASE + i))
    ports+=("$port")
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        --dir "$dir/$port" >/dev/null 2>&1 &
    pids+=("$!")
done
for port in "${ports[@]}"; do
    for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") \
    --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 1 200); do
    replicas=$(redis-cli -p "${ports[1]}" cluster nodes | grep -c slave || true)
    [ "$replicas" = 3 ] && redis-cli -p "${ports[1]}" cluster info | grep -q cluster_state:ok && break
    sleep 0.1
done

# A shard channel owned by the first node, and a subscriber elsewhere.
first=${ports[0]}
shard_channel=""
for t in a b c d e f g h i j k l m n o p; do
    c="hg:{$t}:changes"
    slot=$(redis-cli -p "$first" cluster keyslot "$c")
    if redis-cli -p "$first" cluster nodes | grep myself | grep -qE "(^| )0-5460( |$)" \
        && [ "$slot" -le 5460 ]; then
        shard_channel=$c
        break
    fi
done
if [ -z "$shard_channel" ]; then
    echo "the first node does not own slots 0-5460; rerun" >&2
    exit 1
fi
other_primary=$(redis-cli -p "$first" cluster nodes | awk '/master/ && !/myself/ {split($2, a, "[:@]"); print a[2]; exit}')
timeout 60 redis-cli -p "$other_primary" subscribe hg:changes >/dev/null &
pids+=("$!")
timeout 60 redis-cli -p "$first" ssubscribe "$shard_channel" >/dev/null &
pids+=("$!")
sleep 0.3

sent() { redis-cli -p "$first" cluster info | tr -d '\r' | awk -F: -v k="$1" '$1 == k {print $2}'; }
# Bytes every node has sent on the cluster bus (each node's bus port is its port + 10000).
bus_filter=""
for port in "${ports[@]}"; do
    bus_filter="$bus_filter${bus_filter:+ or }sport = :$((port + 10000))"
    bus_filter="$bus_filter or dport = :$((port + 10000))"
done
bus_bytes() {
    ss -tiH state established "( $bus_filter )" \
        | grep -o 'bytes_sent:[0-9]*' | awk -F: '{s += $2} END {print s + 0}'
}
idle_before=$(bus_bytes); t0=$(date +%s.%N)
sleep 3
idle_rate=$(awk -v b="$idle_before" -v a="$(bus_bytes)" -v t0="$t0" -v t1="$(date +%s.%N)" \
    'BEGIN {print (a - b) / (t1 - t0)}')
echo "idle cluster bus: $(printf '%.0f' "$idle_rate") bytes/s (gossip, all nodes)"
msg="w 1732000000000001 user:42"
for cmd in PUBLISH SPUBLISH; do
    if [ "$cmd" = PUBLISH ]; then channel=hg:changes; stat=cluster_stats_messages_publish_sent
    else channel=$shard_channel; stat=cluster_stats_messages_publishshard_sent; fi
    before=$(sent "$stat"); before=${before:-0}
    bus0=$(bus_bytes); t0=$(date +%s.%N)
    rate=$(redis-benchmark -p "$first" -n "$N" -P 16 -c 4 -q "$cmd" "$channel" "$msg" \
        | tr '\r' '\n' | grep 'requests per second' | tail -1)
    after=$(sent "$stat")
    bus=$(awk -v b="$bus0" -v a="$(bus_bytes)" -v t0="$t0" -v t1="$(date +%s.%N)" -v idle="$idle_rate" -v n="$N" \
        'BEGIN {printf "%.0f", (a - b - idle * (t1 - t0)) / n}')
    echo "$cmd: $rate; cluster-bus messages per message: $(( (after - before) / N )), bus bytes per message: $bus"
done
