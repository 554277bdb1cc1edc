# Shell helpers the benchmark scripts share (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
