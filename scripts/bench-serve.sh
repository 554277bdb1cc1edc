#!/usr/bin/env bash
# herdguard serve vs nginx (proxy_cache + proxy_cache_lock) in front of the same origin.
#
#   1. hit throughput: wrk -t1 -c64 -d10s on one cached URL (rps, p99)
#   2. cold stampede: 100 concurrent GETs of one new URL, 200 ms origin (p50, p99)
#   3. streaming: one uncacheable 1 GiB answer through each (herdguard passes it
#      through uncached; nginx proxy_pass with proxy_buffering off), MB/s, and
#      herdguard's peak resident set over the whole run (VmHWM)
#   4. HTTP/2 hits: h2load -t1 -c8 -m8 (64 streams in flight) on the cached URL,
#      herdguard's h2c (prior knowledge) vs nginx's `listen ... http2` (rps);
#      h2load comes with Debian's nghttp2-client, installed here when root (else
#      the row is skipped)
#   5. an https:// origin (nginx terminating TLS, a throwaway CA made with
#      openssl, in front of the same origin): a cold stampede (p50) and cold
#      misses on distinct URLs (wrk -c64, rps), herdguard --origin https://
#      --origin-ca vs nginx proxy_pass https:// with proxy_ssl_trusted_certificate
#   6. the live dashboard's cost: hits with three dashboards open vs none
#      (scripts/bench-dashboard.sh, run after the rest)
#
# Everything runs on loopback, with temporary config and cache dirs under /tmp,
# and is stopped on exit. Usage: scripts/bench-serve.sh [duration, default 10s]
# STREAM_BYTES sets the streaming body size (default 1073741824 = 1 GiB).
# HG_THREADS=N runs herdguard on N serving threads (default: one per core but
# one). A second herdguard with a thread per core is measured too, as nginx runs
# a worker per core. On a 2-core box wrk takes a core of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-10s}"
STREAM_BYTES="${STREAM_BYTES:-1073741824}"
. scripts/lib.sh
bench_workdir bench-serve

require_tools "wrk nginx openssl" wrk nginx openssl
if ! command -v h2load >/dev/null && [[ $EUID -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null 2>&1 || true
fi

echo "building (release)..." >&2
cargo build --release --quiet -p herdguard-proxy --examples
BIN=target/release/examples


ORIGIN_PORT=$(free_port); HG_PORT=$(free_port); HG_CORES_PORT=$(free_port); NGINX_PORT=$(free_port)
NGINX_H2_PORT=$(free_port); TLS_ORIGIN_PORT=$(free_port); HG_TLS_ORIGIN_PORT=$(free_port); NGINX_TLS_ORIGIN_PORT=$(free_port)
CORES=$(nproc)

# A throwaway CA and a certificate it signs for the TLS origin (127.0.0.1 and localhost).
TLS="$WORK/tls"; mkdir -p "$TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=herdguard bench CA" -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$TLS/origin.key" -out "$TLS/origin.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$TLS/ext.cnf"
openssl x509 -req -in "$TLS/origin.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 2 -extfile "$TLS/ext.cnf" -out "$TLS/origin.pem" 2>/dev/null

"$BIN/bench-origin" --port "$ORIGIN_PORT" --delay-ms 200 2>"$WORK/origin.log" &
PIDS+=($!)
HG_ARGS=()
if [[ -n "${HG_THREADS:-}" ]]; then HG_ARGS+=(--threads "$HG_THREADS"); fi
"$BIN/serve" --listen "127.0.0.1:$HG_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT" "${HG_ARGS[@]}" 2>"$WORK/herdguard.log" &
HG_PID=$!
PIDS+=($HG_PID)
# The same with a serving thread per core, as nginx's `worker_processes auto`.
"$BIN/serve" --listen "127.0.0.1:$HG_CORES_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT" --threads "$CORES" 2>"$WORK/herdguard-cores.log" &
HG_CORES_PID=$!
PIDS+=($HG_CORES_PID)
# In front of the TLS origin (nginx terminating TLS below).
"$BIN/serve" --listen "127.0.0.1:$HG_TLS_ORIGIN_PORT" --origin "https://127.0.0.1:$TLS_ORIGIN_PORT" --origin-ca "$TLS/ca.pem" "${HG_ARGS[@]}" 2>"$WORK/herdguard-tls-origin.log" &
PIDS+=($!)

mkdir -p "$WORK/nginx/cache" "$WORK/nginx/tmp"
# The cached locations, served on the HTTP/1.1 and the h2c listener alike.
LOCATIONS='
        location /big/ {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_cache_valid 200 5m;
        }'
{ nginx_conf_head auto 4096 "$WORK/nginx"; cat <<CONF; } >"$WORK/nginx/nginx.conf"
    proxy_cache_path $WORK/nginx/cache keys_zone=bench:10m;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
    upstream tls_origin { server 127.0.0.1:$TLS_ORIGIN_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
$LOCATIONS
    }
    # h2c with prior knowledge (nginx 1.22: a plain listener with http2); h2load
    # does not reconnect, so no end to a connection after 1000 requests.
    server {
        listen 127.0.0.1:$NGINX_H2_PORT http2;
        keepalive_requests 100000000;
$LOCATIONS
    }
    # The TLS origin: the bench origin behind TLS (h2 and http/1.1 by ALPN), uncached.
    server {
        listen 127.0.0.1:$TLS_ORIGIN_PORT ssl http2;
        ssl_certificate $TLS/origin.pem;
        ssl_certificate_key $TLS/origin.key;
        keepalive_requests 100000;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    # nginx in front of the TLS origin, as herdguard is.
    server {
        listen 127.0.0.1:$NGINX_TLS_ORIGIN_PORT;
        location / {
            proxy_pass https://tls_origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_trusted_certificate $TLS/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_cache_valid 200 5m;
        }
    }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
PIDS+=($NGINX_PID)

for port in "$ORIGIN_PORT" "$HG_PORT" "$HG_CORES_PORT" "$NGINX_PORT" "$NGINX_H2_PORT" \
    "$TLS_ORIGIN_PORT" "$HG_TLS_ORIGIN_PORT" "$NGINX_TLS_ORIGIN_PORT"; do
    wait_port "$port"
done

# wrk's latency line: "    99%  1.23ms" -> milliseconds
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.2f", v}'; }
cpu_ticks() { # pids... -> "user system" clock ticks, summed (/proc/PID/stat fields 14, 15)
    local u=0 s=0 p a b
    for p in "$@"; do
        read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat")
        u=$((u + a)); s=$((s + b))
    done
    echo "$u $s"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
hits() { # $1 port, $2... the server's pids -> "rps p99_ms user_us_per_hit system_us_per_hit client_us_per_hit"
    local port=$1; shift
    curl -fsS -o /dev/null "http://127.0.0.1:$port/hot"; curl -fsS -o /dev/null "http://127.0.0.1:$port/hot"
    local u0 s0 u1 s1 out client
    read -r u0 s0 < <(cpu_ticks "$@")
    # wrk's own CPU (user + system seconds) too: on 2 cores the client is the
    # other half of the machine, and a server cheaper per hit than wrk per
    # request cannot go faster than wrk.
    out=$( { TIMEFORMAT='wrk-cpu %U %S'; time wrk -t1 -c64 -d"$DURATION" --latency "http://127.0.0.1:$port/hot"; } 2>&1)
    read -r u1 s1 < <(cpu_ticks "$@")
    local rps p99 n
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    client=$(echo "$out" | awk '$1=="wrk-cpu" {print $2 + $3}')
    awk -v r="$rps" -v p="$p99" -v n="$n" -v u=$(((u1 - u0) * TICK_US)) -v s=$(((s1 - s0) * TICK_US)) -v c="$client" \
        'BEGIN { printf "%s %s %.2f %.2f %.2f\n", r, p, u / n, s / n, c * 1e6 / n }'
}
stampede() { # $1 port, $2 url suffix -> "p50 p99 max ok"
    "$BIN/stampede" --url "http://127.0.0.1:$1/slow/$2" --n 100
}

echo "hit throughput (wrk -t1 -c64 -d$DURATION)..." >&2
# The CPU each server spends per hit, in user space and in the kernel (the
# loopback TCP stack: for a hit it is most of the work, and no code of ours removes it).
read -r HG_RPS HG_P99 HG_USER HG_SYS HG_WRK < <(hits "$HG_PORT" "$HG_PID")
read -r NG_RPS NG_P99 NG_USER NG_SYS NG_WRK < <(hits "$NGINX_PORT" $(pgrep -P "$NGINX_PID"))
read -r HC_RPS HC_P99 _ _ _ < <(hits "$HG_CORES_PORT" "$HG_CORES_PID")
echo "cold stampede (100 concurrent, 200 ms origin)..." >&2
read -r HG_P50 HG_SP99 HG_MAX HG_OK < <(stampede "$HG_PORT" "hg-$RANDOM")
read -r NG_P50 NG_SP99 NG_MAX NG_OK < <(stampede "$NGINX_PORT" "ng-$RANDOM")

h2_hits() { # $1 port -> 2xx answers per second (h2c, prior knowledge); /hot is cached by hits() above
    h2load -t1 -c8 -m8 -D "$DURATION" "http://127.0.0.1:$1/hot" 2>/dev/null | awk '
        /^finished in/ { t=$3; sub(/s,$/,"",t) }
        /^status codes:/ { ok=$3 }
        END { if (t > 0) printf "%.2f\n", ok / t; else print 0 }'
}
if command -v h2load >/dev/null; then
    echo "HTTP/2 hits (h2load -t1 -c8 -m8 -D $DURATION, h2c)..." >&2
    HG_H2_RPS=$(h2_hits "$HG_PORT"); NG_H2_RPS=$(h2_hits "$NGINX_H2_PORT")
else
    echo "bench-serve: h2load is not installed (Debian: nghttp2-client): no HTTP/2 row" >&2
    HG_H2_RPS=""; NG_H2_RPS=""
fi

# Cold misses through the TLS origin: every request a new URL (answered at once).
cat >"$WORK/cold.lua" <<'LUA'
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", "/cold/" .. math.random(1, 1000000000) .. "-" .. n)
end
LUA
cold_misses() { # $1 port -> "rps non-2xx-answers"
    wrk -t1 -c64 -d"$DURATION" -s "$WORK/cold.lua" "http://127.0.0.1:$1" |
        awk '/Requests\/sec/ { rps=$2 } /Non-2xx/ { bad=$NF } END { print rps, bad + 0 }'
}
echo "https origin: cold stampede and cold misses (wrk -t1 -c64 -d$DURATION, new URL each)..." >&2
read -r HT_P50 HT_SP99 _ HT_OK < <(stampede "$HG_TLS_ORIGIN_PORT" "hg-tls-$RANDOM")
read -r NT_P50 NT_SP99 _ NT_OK < <(stampede "$NGINX_TLS_ORIGIN_PORT" "ng-tls-$RANDOM")
read -r HT_RPS HT_BAD < <(cold_misses "$HG_TLS_ORIGIN_PORT")
read -r NT_RPS NT_BAD < <(cold_misses "$NGINX_TLS_ORIGIN_PORT")

stream() { # $1 port -> "MB/s bytes"
    curl -fsS -o /dev/null -w '%{speed_download} %{size_download}' "http://127.0.0.1:$1/big/$STREAM_BYTES" |
        awk '{ printf "%.1f %d\n", $1 / 1048576, $2 }'
}
echo "streaming ($STREAM_BYTES bytes, uncached)..." >&2
read -r HG_MBS HG_BYTES < <(stream "$HG_PORT")
read -r NG_MBS NG_BYTES < <(stream "$NGINX_PORT")
HG_HWM_MB=$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$HG_PID/status")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a/b; else print "n/a" }'; }
printf '\n%-34s %12s %12s %10s\n' "measure" "herdguard" "nginx" "hg/nginx"
printf '%-34s %12s %12s %10s\n' "hit throughput (rps)" "$HG_RPS" "$NG_RPS" "$(ratio "$HG_RPS" "$NG_RPS")"
printf '%-34s %12s %12s %10s\n' "hit p99 (ms)" "$HG_P99" "$NG_P99" "$(ratio "$HG_P99" "$NG_P99")"
printf '%-34s %12s %12s %10s\n' "hit CPU, user space (us/hit)" "$HG_USER" "$NG_USER" "$(ratio "$HG_USER" "$NG_USER")"
printf '%-34s %12s %12s %10s\n' "hit CPU, kernel (us/hit)" "$HG_SYS" "$NG_SYS" "$(ratio "$HG_SYS" "$NG_SYS")"
printf '%-34s %12s %12s %10s\n' "wrk's CPU (us/request)" "$HG_WRK" "$NG_WRK" "$(ratio "$HG_WRK" "$NG_WRK")"
printf '%-34s %12s %12s %10s\n' "hit rps, $CORES threads each" "$HC_RPS" "$NG_RPS" "$(ratio "$HC_RPS" "$NG_RPS")"
printf '%-34s %12s %12s %10s\n' "hit p99, $CORES threads each (ms)" "$HC_P99" "$NG_P99" "$(ratio "$HC_P99" "$NG_P99")"
printf '%-34s %12s %12s %10s\n' "stampede p50 (ms)" "$HG_P50" "$NG_P50" "$(ratio "$HG_P50" "$NG_P50")"
printf '%-34s %12s %12s %10s\n' "stampede p99 (ms)" "$HG_SP99" "$NG_SP99" "$(ratio "$HG_SP99" "$NG_SP99")"
printf '%-34s %12s %12s\n' "stampede answers 2xx (of 100)" "$HG_OK" "$NG_OK"
if [[ -n "$HG_H2_RPS" ]]; then
    printf '%-34s %12s %12s %10s\n' "HTTP/2 hit throughput (rps, h2c)" "$HG_H2_RPS" "$NG_H2_RPS" "$(ratio "$HG_H2_RPS" "$NG_H2_RPS")"
fi
printf '%-34s %12s %12s %10s\n' "https origin stampede p50 (ms)" "$HT_P50" "$NT_P50" "$(ratio "$HT_P50" "$NT_P50")"
printf '%-34s %12s %12s %10s\n' "https origin stampede p99 (ms)" "$HT_SP99" "$NT_SP99" "$(ratio "$HT_SP99" "$NT_SP99")"
printf '%-34s %12s %12s\n' "https stampede answers 2xx" "$HT_OK" "$NT_OK"
printf '%-34s %12s %12s %10s\n' "https origin cold misses (rps)" "$HT_RPS" "$NT_RPS" "$(ratio "$HT_RPS" "$NT_RPS")"
printf '%-34s %12s %12s\n' "https cold misses not 2xx" "$HT_BAD" "$NT_BAD"
printf '%-34s %12s %12s %10s\n' "streaming 1 body (MB/s)" "$HG_MBS" "$NG_MBS" "$(ratio "$HG_MBS" "$NG_MBS")"
printf '%-34s %12s %12s\n' "streaming bytes received" "$HG_BYTES" "$NG_BYTES"
printf '%-34s %12s\n' "herdguard peak RSS, whole run (MB)" "$HG_HWM_MB"
echo "herdguard serving threads: ${HG_THREADS:-the default, one per core but one ($(( CORES > 1 ? CORES - 1 : 1 )))}; nginx: worker_processes auto ($CORES)"
echo
echo "goals: hit rps >= 1.2x nginx with p99 no worse; stampede p50 <= 210 ms;"
echo "       streaming >= 0.8x nginx proxy_pass (buffering off); peak RSS < 100 MB"

echo
echo "the live dashboard's cost (scripts/bench-dashboard.sh)..." >&2
cleanup
trap - EXIT
exec scripts/bench-dashboard.sh 5s 4
