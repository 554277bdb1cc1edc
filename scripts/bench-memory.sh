#!/usr/bin/env bash
# Memory per cached object and miss throughput: herdguard serve vs Varnish
# (-s malloc), one after the other in one run, in front of the same origin.
#
# wrk streams distinct URLs (/small/<n>: nginx's 35-byte static file, max-age=600) through
# each for DURATION; every request is a miss that stores one object. Reported:
# objects stored, resident set growth over the run (VmRSS after - before, the
# Varnish cache process), bytes per object, miss rps, and the ratios.
#
# Usage: scripts/bench-memory.sh [duration, default 15s]. HG_MAX_MEMORY sets
# herdguard's budget (default 4GiB, so the run measures cost per object, not
# eviction); VARNISH_MALLOC Varnish's (default 4G).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-15s}"
HG_MAX_MEMORY="${HG_MAX_MEMORY:-4GiB}"
VARNISH_MALLOC="${VARNISH_MALLOC:-4G}"
. scripts/lib.sh
bench_workdir bench-memory

require_tools "wrk varnish nginx" wrk varnishd varnishstat nginx

echo "building (release)..." >&2
cargo build --release --quiet -p herdguard-proxy --example serve
BIN=target/release/examples

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

cat >"$WORK/distinct.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/small/" .. n)
end
LUA

ORIGIN_PORT=$(free_port); HG_PORT=$(free_port); HG_ADMIN=$(free_port); V_PORT=$(free_port)
# The origin an operator has: nginx serving a 35-byte static file with its
# default fields (Server, Date, Content-Type, Content-Length, Last-Modified,
# ETag, Accept-Ranges) and Cache-Control: max-age=600, for any /small/<n>.
mkdir -p "$WORK/origin/www" "$WORK/origin/tmp"
printf '%s' 'a 35-byte body for each small object' | head -c 35 >"$WORK/origin/www/body.txt"
{ nginx_conf_head 1 1024 "$WORK/origin"; cat <<CONF; } >"$WORK/origin/nginx.conf"
    include /etc/nginx/mime.types;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $WORK/origin/www;
        location / {
            add_header Cache-Control "max-age=600";
            try_files /body.txt =404;
        }
    }
}
CONF
nginx -c "$WORK/origin/nginx.conf" 2>"$WORK/origin.log" &
PIDS+=($!)
wait_port "$ORIGIN_PORT"
curl -sI "http://127.0.0.1:$ORIGIN_PORT/small/0" | sed 's/^/origin: /' >&2

# --- herdguard ---
"$BIN/serve" --listen "127.0.0.1:$HG_PORT" --admin "127.0.0.1:$HG_ADMIN" \
    --origin "http://127.0.0.1:$ORIGIN_PORT" --max-memory "$HG_MAX_MEMORY" --max-entries 100000000 \
    2>"$WORK/herdguard.log" &
HG_PID=$!
PIDS+=($HG_PID)
wait_port "$HG_PORT"
curl -s -o /dev/null "http://127.0.0.1:$HG_PORT/small/warm"
HG_BEFORE=$(rss_kb "$HG_PID")
wrk -t1 -c32 -d"$DURATION" -s "$WORK/distinct.lua" "http://127.0.0.1:$HG_PORT" >"$WORK/hg.wrk"
HG_AFTER=$(rss_kb "$HG_PID")
HG_OBJECTS=$(curl -s "http://127.0.0.1:$HG_ADMIN/metrics" | awk '/^herdguard_cache_entries / {print $2}')
HG_BYTES_USED=$(curl -s "http://127.0.0.1:$HG_ADMIN/metrics" | awk '/^herdguard_cache_bytes / {print $2}')
HG_RPS=$(awk '/Requests\/sec/ {print $2}' "$WORK/hg.wrk")
kill "$HG_PID"; wait "$HG_PID" 2>/dev/null || true

# --- Varnish ---
varnishd -F -n "$WORK/varnish" -a "127.0.0.1:$V_PORT" -b "127.0.0.1:$ORIGIN_PORT" \
    -s "malloc,$VARNISH_MALLOC" -p default_grace=0 -p default_keep=0 \
    >"$WORK/varnish.log" 2>&1 &
V_MGR=$!
PIDS+=($V_MGR)
wait_port "$V_PORT"
curl -s -o /dev/null "http://127.0.0.1:$V_PORT/small/warm"
V_CHILD=$(pgrep -P "$V_MGR" | head -1)
V_BEFORE=$(rss_kb "$V_CHILD")
wrk -t1 -c32 -d"$DURATION" -s "$WORK/distinct.lua" "http://127.0.0.1:$V_PORT" >"$WORK/v.wrk"
V_AFTER=$(rss_kb "$V_CHILD")
V_OBJECTS=$(varnishstat -n "$WORK/varnish" -1 -f MAIN.n_object | awk '{print $2}')
V_RPS=$(awk '/Requests\/sec/ {print $2}' "$WORK/v.wrk")

python3 - "$HG_OBJECTS" "$HG_BEFORE" "$HG_AFTER" "$HG_RPS" "$V_OBJECTS" "$V_BEFORE" "$V_AFTER" "$V_RPS" "${HG_BYTES_USED:-0}" <<'PY'
import sys
ho, hb, ha, hr, vo, vb, va, vr, used = sys.argv[1:]
ho, vo = int(float(ho)), int(float(vo))
hper = (int(ha) - int(hb)) * 1024 / max(ho, 1)
vper = (int(va) - int(vb)) * 1024 / max(vo, 1)
print(f"{'':28} {'objects':>9} {'RSS growth MB':>14} {'bytes/object':>13} {'miss rps':>10}")
print(f"{'herdguard serve':28} {ho:>9} {(int(ha)-int(hb))/1024:>14.1f} {hper:>13.0f} {float(hr):>10.0f}")
print(f"{'varnish -s malloc':28} {vo:>9} {(int(va)-int(vb))/1024:>14.1f} {vper:>13.0f} {float(vr):>10.0f}")
print(f"herdguard's own count of the bytes it holds: {float(used)/max(ho,1):.0f} per object")
print(f"ratio bytes/object herdguard/varnish: {hper/vper:.2f}  (goal: <= 1 KB an object)")
print(f"ratio miss rps herdguard/varnish:     {float(hr)/float(vr):.2f}  (goal >= 1.2)")
PY
