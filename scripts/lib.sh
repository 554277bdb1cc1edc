# Shell helpers the benchmark scripts share (sourced, not run).

# Exits 2, naming the first missing one, unless every tool after $1 is on
# PATH; $1: the Debian packages that provide them.
require_tools() {
    local packages=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$(basename "$0" .sh): $tool is not installed (Debian: apt-get install $packages)" >&2; exit 2; }
    done
}

# The head of a benchmark's nginx.conf, up to the inside of its http block:
# $1 worker_processes, $2 worker_connections, $3 its folder (pid, error log
# and temp paths under it). The caller writes the rest and closes the block.
nginx_conf_head() {
    cat <<CONF
worker_processes $1;
daemon off;
user root;
pid $3/nginx.pid;
error_log $3/error.log;
events { worker_connections $2; }
http {
    access_log off;
    client_body_temp_path $3/tmp/body;
    proxy_temp_path $3/tmp/proxy;
    fastcgi_temp_path $3/tmp/fastcgi;
    uwsgi_temp_path $3/tmp/uwsgi;
    scgi_temp_path $3/tmp/scgi;
CONF
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A private redis-server on a free loopback port, without persistence, its
# files under $WORK; stopped by `cleanup` (bench_workdir first). Sets
# REDIS_PORT and exports HERDGUARD_BENCH_REDIS_URL, which the Rust benches
# run against.
start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    redis-cli -p "$REDIS_PORT" ping >/dev/null ||
        { echo "redis-server did not start on port $REDIS_PORT" >&2; cat "$WORK/redis.log" >&2; exit 1; }
    export HERDGUARD_BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
}

# Waits (up to 10 s) until something listens on 127.0.0.1:$1, or exits 1.
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "$(basename "$0"): nothing listening on port $1" >&2; exit 1
}

# A scratch folder $WORK (/tmp/herdguard-$1.XXXXXX) and the list $PIDS of the
# processes a benchmark starts; on exit every one is stopped and the folder removed.
bench_workdir() {
    WORK="$(mktemp -d "/tmp/herdguard-$1.XXXXXX")"
    PIDS=()
    trap cleanup EXIT
}
# A/B benchmarks: builds this tree's release examples and the `serve` example of
# commit $1 (from `git archive`, in its own target dir: $HG_AB_TARGET, else one
# under $WORK, removed on exit); sets BASE_BIN to the latter.
ab_build() {
    echo "building this tree and $1 (release)..." >&2
    cargo build --release --quiet -p herdguard-proxy --examples
    mkdir "$WORK/base"
    git archive "$1" | tar -x -C "$WORK/base"
    local target="${HG_AB_TARGET:-$WORK/target}"
    (cd "$WORK/base" && CARGO_TARGET_DIR="$target" cargo build --release --quiet -p herdguard-proxy --example serve)
    BASE_BIN="$target/release/examples/serve"
}

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}

# Instructions per hit of the `serve` binary $1 under callgrind, one serving
# thread, in front of the origin on port $2, listening on $3 (admin $4), with
# $5 dashboards open: prints "requests instructions_per_request". A count the
# machine's noise does not move (wrk's rounds on 2 shared cores swing ±25 %).
# The profile stays in $WORK/cg.$5.$3.1 (callgrind_annotate reads it).
# HIT_LOAD=h2: HTTP/2 hits instead (see callgrind_wrk).
callgrind_per_hit() {
    local bin=$1 origin=$2 port=$3 admin=$4 viewers=$5
    callgrind_wrk "$WORK/cg.$viewers.$port" "$port" "$admin" "$viewers" "$bin" --threads 1 \
        --listen "127.0.0.1:$port" --origin "http://127.0.0.1:$origin" --admin "127.0.0.1:$admin"
}

# The load whose instructions are counted, on /hot of port $1: prints the
# 2xx answers. HIT_LOAD=wrk (default): 10 s of `wrk -t1 -c8`, HTTP/1.1
# keep-alive. HIT_LOAD=h2: 20,000 requests of `h2load -c8 -m8` (h2c, 64
# streams in flight; a fixed count, so every run does the same work).
hit_load() {
    case "${HIT_LOAD:-wrk}" in
        wrk) wrk -t1 -c8 -d10s "http://127.0.0.1:$1/hot" | awk '/requests in/ {print $1}' ;;
        h2) h2load -n 20000 -c8 -m8 "http://127.0.0.1:$1/hot" 2>/dev/null | awk '/^status codes:/ {print $3}' ;;
        *) echo "HIT_LOAD is wrk or h2, not ${HIT_LOAD}" >&2; exit 2 ;;
    esac
}

# Runs the rest of the line (a server on port $2) under callgrind, output $1,
# with $4 followers of /events on port $3 (none: pass an empty $3 and 0), and
# counts the instructions of `hit_load` on /hot once it answers (and once the
# load has warmed it up): prints "requests instructions_per_request".
callgrind_wrk() {
    local out=$1 port=$2 admin=$3 viewers=$4
    shift 4
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" 2>"$out.log" &
    local vg=$!
    wait_port "$port"
    if [ -n "$admin" ]; then wait_port "$admin"; fi
    local curl=(curl -fsS -o /dev/null)
    if [ "${HIT_LOAD:-wrk}" = h2 ]; then curl+=(--http2-prior-knowledge); fi
    "${curl[@]}" "http://127.0.0.1:$port/hot"; "${curl[@]}" "http://127.0.0.1:$port/hot"
    if [ "${HIT_LOAD:-wrk}" = h2 ]; then h2load -n 200 -c8 -m8 "http://127.0.0.1:$port/hot" >/dev/null 2>&1; fi
    callgrind_control -z "$vg" >/dev/null 2>&1
    local watchers=()
    for _ in $(seq 1 "$viewers"); do curl -sN "http://127.0.0.1:$admin/events" >/dev/null 2>&1 & watchers+=($!); done
    local n; n=$(hit_load "$port")
    callgrind_control -d "$vg" >/dev/null 2>&1
    sleep 1
    if [ "${#watchers[@]}" -gt 0 ]; then kill "${watchers[@]}" 2>/dev/null || true; fi
    kill "$vg" 2>/dev/null || true; wait "$vg" 2>/dev/null || true
    local ir; ir=$(awk '/^(summary|totals):/ {v=$2} END {print v}' "$out".1)
    awk -v n="$n" -v ir="$ir" 'BEGIN { printf "%d %.0f\n", n, ir / n }'
}

# Alternating rounds against the base build and this one: `$1 PORT` prints
# requests per second; each round prints both and their ratio.
ab_rounds() { # $1 rps function, $2 rounds, $3 base port, $4 this build's port
    local round b n
    printf '%-6s %12s %12s %8s\n' round "base rps" "this rps" ratio
    for round in $(seq 1 "$2"); do
        b=$("$1" "$3"); n=$("$1" "$4")
        printf '%-6s %12s %12s %7sx\n' "$round" "$b" "$n" "$(awk -v n="$n" -v b="$b" 'BEGIN { printf "%.2f", n / b }')"
    done
}
