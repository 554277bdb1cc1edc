#!/usr/bin/env bash
# What one change costs Redis as the fleet grows, for both change feeds in the
# same run: bytes and messages Redis sends (replies + notices) and Redis CPU
# per cold miss, per invalidation and per background refresh, with 2, 8, 32
# and 64 worker processes (`herdguard-redis-worker`) on one private
# redis-server. One process does the work; the others are idle members of the
# fleet. "broadcast" is the feed of releases before client tracking
# (`--broadcast-feed`: every change published on hg:changes, every process
# subscribed); "per key" is the default (client tracking: Redis pushes an
# invalidation only to the processes that read the key). Bytes come from
# Redis's counters (INFO stats total_net_output_bytes), replies from INFO
# commandstats, CPU from INFO cpu; notices (deliveries, pushes) are what the
# workers received (`feed` on each worker, before and after). The idle
# baseline (the feeds' pings, 10 a second a process) is measured first and
# subtracted per ping.
#
# Part 2 prices the pub/sub machinery on one core: Redis CPU per PUBLISH and per
# SPUBLISH with 0, 1, 16, 64 and 256 subscribers (redis-benchmark, pipelined;
# subscribers read and discard in one helper process), the budget the scaling
# model in docs/fleets.md divides by.
#
# Then SHARED_OPS keys every process holds: a holder's read (each process
# but the driver reads each key from Redis) and the invalidation of such a
# key, which every holder must hear of.
#
# Usage: scripts/bench-fanout.sh   (FLEETS="2 8 32 64" OPS=300 SHARED_OPS=50
#                                   PARTS="1 2 3" FEEDS="broadcast per-key")
# Every process it starts is stopped at the end. Takes about 4-6 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
require_tools "redis-server redis-tools python3" redis-server redis-cli redis-benchmark python3
bench_workdir fanout

cargo build -q -p herdguard-redis --features test-helpers --bin herdguard-redis-worker
target=${CARGO_TARGET_DIR:-target}
WORKER="$target/debug/herdguard-redis-worker"

port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=("$!")
wait_port "$port"

PARTS=${PARTS:-"1 2 3"}
if [[ " $PARTS " == *" 1 "* ]]; then
FLEETS=${FLEETS:-"2 8 32 64"} OPS=${OPS:-300} SHARED_OPS=${SHARED_OPS:-50} FEEDS=${FEEDS:-"broadcast per-key"} \
    PORT=$port WORKER=$WORKER python3 - <<'EOF'
import json, os, select, socket, subprocess, sys, time

PORT = int(os.environ["PORT"])
WORKER = os.environ["WORKER"]
OPS = int(os.environ["OPS"])
# Keys every process holds (a read each), then invalidated.
SHARED_OPS = int(os.environ["SHARED_OPS"])
FLEETS = [int(n) for n in os.environ["FLEETS"].split()]
FEEDS = os.environ["FEEDS"].split()
TTL_MS = 1500
# Commands the workers send themselves (not from inside a script): their
# replies are messages Redis sends. Script-internal calls (GET, SET, PUBLISH,
# GETRANGE, ...) are counted by commandstats too, but send nothing to the
# client. A top-level GETRANGE (a write's tracked read-back) always follows a
# CLIENT CACHING YES, as every tracked MGET does: their number is the CACHING
# calls less the MGETs (all tracked on the per-key feed).
TOP_LEVEL = ("evalsha", "eval", "script|load", "mget", "client|caching", "unsubscribe")


class Harness:
    """The benchmark's own connection, counting every byte Redis sends it, so
    that its own INFO replies can be taken out of total_net_output_bytes."""

    def __init__(self):
        self.sock = socket.create_connection(("127.0.0.1", PORT))
        self.buf = b""
        self.received = 0

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            sys.exit("redis closed the harness connection")
        self.received += len(chunk)
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            sys.exit("redis: " + rest.decode())
        if kind in b"+:":
            return rest.decode()
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode()
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        sys.exit("unexpected reply " + repr(line))

    def __call__(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._read()


redis = Harness()


def snapshot():
    """Redis's counters now: bytes out, CPU µs, and calls/usec per command;
    `harness`: what the harness had received before asking."""
    harness = redis.received
    info = redis("info", "everything")
    snap = {"calls": {}, "usec": {}, "harness": harness, "t": time.time()}
    for line in info.splitlines():
        if line.startswith("total_net_output_bytes:"):
            snap["bytes"] = int(line.split(":")[1])
        elif line.startswith("used_cpu_sys:"):
            snap["cpu"] = snap.get("cpu", 0) + float(line.split(":")[1]) * 1e6
        elif line.startswith("used_cpu_user:"):
            snap["cpu"] = snap.get("cpu", 0) + float(line.split(":")[1]) * 1e6
        elif line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            fields = dict(kv.split("=") for kv in rest.split(","))
            snap["calls"][name] = int(fields["calls"])
            snap["usec"][name] = int(fields["usec"])
    return snap


def delta(a, b):
    # The harness's own replies in the window (the first INFO's included) are
    # not the fleet's; its commands are left out of the calls the same way.
    own = b["harness"] - a["harness"]
    d = {"bytes": b["bytes"] - a["bytes"] - own, "cpu": b["cpu"] - a["cpu"], "calls": {}, "usec": {},
         "secs": b["t"] - a["t"]}
    for name in b["calls"]:
        d["calls"][name] = b["calls"][name] - a["calls"].get(name, 0)
        d["usec"][name] = b["usec"][name] - a["usec"].get(name, 0)
    return d


def numsub(channel):
    return int(redis("pubsub", "numsub", channel)[1])


class Worker:
    def __init__(self, feed):
        flags = ["--broadcast-feed"] if feed == "broadcast" else []
        self.p = subprocess.Popen(
            [WORKER, "--url", f"redis://127.0.0.1:{PORT}/", "--callers", "1",
             "--loader-ms", "0", "--ttl-ms", str(TTL_MS),
             "--stale-while-revalidate-ms", "600000", *flags],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.pending = b""

    def line(self, limit=30):
        # Own line buffer over the raw pipe: select() on a buffered reader
        # would miss lines already read into its buffer.
        deadline = time.time() + limit
        while b"\n" not in self.pending:
            left = deadline - time.time()
            ready, _, _ = select.select([self.p.stdout], [], [], max(left, 0))
            if not ready:
                sys.exit("worker silent for %ss" % limit)
            chunk = os.read(self.p.stdout.fileno(), 1 << 16)
            if not chunk:
                sys.exit("worker ended")
            self.pending += chunk
        out, self.pending = self.pending.split(b"\n", 1)
        return out.decode().strip()

    def send(self, lines):
        self.p.stdin.write("".join(l + "\n" for l in lines))
        self.p.stdin.flush()

    def feed(self):
        self.send(["feed"])
        return json.loads(self.line())

    def stop(self):
        try:
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


def notices(workers):
    return sum(w.feed()["notices"] for w in workers)


def per_op(d, ops, ping_bytes, idle_cpu_rate, delivered):
    pings = d["calls"].get("ping", 0)
    incr = d["calls"].get("incr", 0)
    # The loader's INCR count:KEY is the test harness's, not herdguard's: its
    # reply is ':1\r\n' or ':2\r\n'.
    net = d["bytes"] - pings * ping_bytes - incr * 4
    # The idle CPU (server cron and pings) goes by time; the harness's INFO
    # calls cost about their usec.
    cpu = d["cpu"] - idle_cpu_rate * d["secs"] - d["usec"].get("info", 0)
    calls = d["calls"]
    caching = calls.get("client|caching", 0)
    replies = sum(calls.get(c, 0) for c in TOP_LEVEL) + max(caching - calls.get("mget", 0), 0)
    usec = sum(d["usec"].get(c, 0) for c in TOP_LEVEL)
    return {
        "bytes": net / ops, "replies": replies / ops, "deliveries": delivered / ops,
        "publishes": calls.get("publish", 0) / ops, "usec": usec / ops, "cpu": cpu / ops,
    }


def progress(text):
    print(text, file=sys.stderr, flush=True)


def wait_writes(before, want, limit=60):
    """Until `want` more scripts (EVALSHA) have run."""
    deadline = time.time() + limit
    while time.time() < deadline:
        now = snapshot()
        if now["calls"].get("evalsha", 0) - before["calls"].get("evalsha", 0) >= want:
            return
        time.sleep(0.25)
    sys.exit("background refreshes did not all write within %ss" % limit)


rows = []
idle_rows = []
for n in FLEETS:
    for feed in FEEDS:
        redis("flushall")
        workers = [Worker(feed) for i in range(n)]
        try:
            for w in workers:
                if w.line() != "ready":
                    sys.exit("worker not ready")
            channel = "hg:changes" if feed == "broadcast" else "hg:broadcast"
            deadline = time.time() + 30
            while numsub(channel) < n:
                if time.time() > deadline:
                    sys.exit("change feeds not all subscribed")
                time.sleep(0.05)
            kinds = {w.feed()["per_key"] for w in workers}
            if kinds != {feed == "per-key"}:
                sys.exit(f"{feed}: the workers run another feed ({kinds})")
            # Idle baseline: nothing but the feeds' pings.
            time.sleep(1)
            a, t0 = snapshot(), time.time()
            time.sleep(5)
            b, t1 = snapshot(), time.time()
            idle = delta(a, b)
            pings = max(idle["calls"].get("ping", 0), 1)
            ping_bytes = idle["bytes"] / pings
            idle_cpu_rate = (idle["cpu"] - idle["usec"].get("info", 0)) / idle["secs"]
            idle_rows.append((n, feed, pings / (t1 - t0), ping_bytes, idle["bytes"] / (t1 - t0),
                              idle_cpu_rate, idle["usec"].get("ping", 0) / pings))
            others = {c: k for c, k in idle["calls"].items() if k and c not in ("ping", "info")}
            if others:
                print(f"note: idle fleet of {n} ({feed}) also sent {others}")
            progress(f"{n} processes, {feed}: idle baseline taken")
            driver = workers[0]
            keys = [f"fan-{n}-{i}" for i in range(OPS)]

            # Cold misses: MGET, lease, MGET, origin, fenced write (announced).
            heard = notices(workers)
            a = snapshot()
            driver.send([f"go {k}" for k in keys])
            for _ in keys:
                if '"Loaded"' not in driver.line():
                    sys.exit("a cold miss was not a load")
            d = delta(a, snapshot())
            miss = per_op(d, OPS, ping_bytes, idle_cpu_rate, notices(workers) - heard)

            progress(f"{n} processes, {feed}: cold misses done")
            # Background refreshes: each copy is past its TTL, inside its
            # stale-while-revalidate window: served stale, refreshed once.
            time.sleep(TTL_MS / 1000 + 0.2)
            heard = notices(workers)
            a = snapshot()
            driver.send([f"go {k}" for k in keys])
            for _ in keys:
                if '"StaleWhileRevalidate"' not in driver.line():
                    sys.exit("a stale hit did not start a refresh")
            # Each refresh runs two scripts: the lease, the write.
            wait_writes(a, 2 * OPS)
            time.sleep(0.2)
            d = delta(a, snapshot())
            refresh = per_op(d, OPS, ping_bytes, idle_cpu_rate, notices(workers) - heard)

            progress(f"{n} processes, {feed}: refreshes done")
            # Invalidations.
            heard = notices(workers)
            a = snapshot()
            driver.send([f"inv {k}" for k in keys])
            for _ in keys:
                if "invalidated" not in driver.line():
                    sys.exit("an invalidation failed")
            d = delta(a, snapshot())
            inv = per_op(d, OPS, ping_bytes, idle_cpu_rate, notices(workers) - heard)
            progress(f"{n} processes, {feed}: invalidations done")
            # Keys every process holds: the driver loads them, every other
            # process reads them from Redis (a holder's read), then the driver
            # invalidates them: a notice for each holder.
            shared = [f"held-{n}-{i}" for i in range(SHARED_OPS)]
            driver.send([f"go {k}" for k in shared])
            for _ in shared:
                if '"Loaded"' not in driver.line():
                    sys.exit("a cold miss was not a load")
            others = workers[1:]
            heard = notices(workers)
            a = snapshot()
            for w in others:
                w.send([f"go {k}" for k in shared])
            for w in others:
                for _ in shared:
                    if '"l2_hits":1' not in w.line():
                        sys.exit("a holder's read failed")
            d = delta(a, snapshot())
            hold = per_op(d, SHARED_OPS * len(others), ping_bytes, idle_cpu_rate,
                          notices(workers) - heard)
            heard = notices(workers)
            a = snapshot()
            driver.send([f"inv {k}" for k in shared])
            for _ in shared:
                if "invalidated" not in driver.line():
                    sys.exit("an invalidation failed")
            # Each holder's notice is read by its own process: wait until all are.
            deadline = time.time() + 30
            while notices(workers) - heard < n * SHARED_OPS:
                if time.time() > deadline:
                    sys.exit("not every holder heard of every invalidation")
                time.sleep(0.1)
            d = delta(a, snapshot())
            inv_all = per_op(d, SHARED_OPS, ping_bytes, idle_cpu_rate, notices(workers) - heard)
            rows += [(n, feed, "cold miss", miss), (n, feed, "refresh", refresh),
                     (n, feed, "invalidation", inv), (n, feed, "holder's read", hold),
                     (n, feed, "inv, all hold", inv_all)]
        finally:
            for w in workers:
                w.stop()

print("\nIdle fleet (subtracted below): the change feeds' pings")
print(f"{'procs':>5} {'feed':<9} {'pings/s':>8} {'B/ping':>7} {'B/s':>8} {'CPU us/s':>9} {'usec/ping':>9}")
for n, feed, rate, bpp, bps, cps, upp in idle_rows:
    print(f"{n:>5} {feed:<9} {rate:>8.0f} {bpp:>7.1f} {bps:>8.0f} {cps:>9.0f} {upp:>9.2f}")

print(f"\nPer operation, one process working, {OPS} operations on distinct keys"
      " (idle pings subtracted)")
print(f"{'procs':>5} {'feed':<9} {'operation':<14} {'bytes':>7} {'msgs':>6} {'replies':>7}"
      f" {'notices':>7} {'cmd usec':>8} {'CPU us':>7}")
for n, feed, op, r in rows:
    print(f"{n:>5} {feed:<9} {op:<14} {r['bytes']:>7.0f} {r['replies'] + r['deliveries']:>6.1f}"
          f" {r['replies']:>7.1f} {r['deliveries']:>7.1f} {r['usec']:>8.1f} {r['cpu']:>7.1f}")
first = {(feed, op): r for n, feed, op, r in rows if n == FLEETS[0]}
print(f"\nBytes per operation against {FLEETS[0]} processes, and per extra process:")
for n, feed, op, r in rows:
    if n == FLEETS[0]:
        continue
    base = first[(feed, op)]
    per_proc = (r["bytes"] - base["bytes"]) / (n - FLEETS[0])
    print(f"{n:>5} {feed:<9} {op:<14} {r['bytes'] / base['bytes']:>5.2f}x"
          f"   {per_proc:>6.1f} B/process")
EOF
fi

# Part 2: Redis CPU per published message against its subscriber count.
if [[ " $PARTS " == *" 2 "* ]]; then
python3 - "$port" "$WORK" <<'EOF'
import os, socket, subprocess, sys, time, select
port, work = int(sys.argv[1]), sys.argv[2]


def redis(*args):
    return subprocess.run(["redis-cli", "-p", str(port), *map(str, args)],
                          check=True, capture_output=True, text=True).stdout


def cpu_and_stats(cmd):
    info = redis("info", "everything")
    cpu, calls, usec = 0.0, 0, 0
    for line in info.splitlines():
        if line.startswith(("used_cpu_sys:", "used_cpu_user:")):
            cpu += float(line.split(":")[1]) * 1e6
        if line.startswith(f"cmdstat_{cmd}:"):
            f = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
            calls, usec = int(f["calls"]), int(f["usec"])
    return cpu, calls, usec


def subscribers(kind, channel, count):
    """count connections subscribed to channel, reading and discarding."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"*2\r\n${len(kind)}\r\n{kind}\r\n${len(channel)}\r\n{channel}\r\n".encode())
        socks.append(s)
    for s in socks:
        s.recv(4096)
    return socks


MSG = "w 1732000000000001 user:42"


def run(cmd, subs, pipeline):
    """Redis CPU µs and commandstats usec per message, publishing to a channel
    with `subs` subscribers."""
    channel = "hg:{bench}:changes"
    socks = subscribers("SUBSCRIBE" if cmd == "publish" else "SSUBSCRIBE", channel, subs)
    n = max(2000, min(100000 if pipeline > 1 else 30000, 1_000_000 // max(subs, 1)))
    reader = None
    if socks:
        # Drain in a child so the benchmark and the reads overlap.
        reader = os.fork()
        if reader == 0:
            deadline = time.time() + 120
            while time.time() < deadline:
                r, _, _ = select.select(socks, [], [], 1)
                for s in r:
                    if not s.recv(1 << 20):
                        os._exit(0)
            os._exit(0)
    cpu0, calls0, usec0 = cpu_and_stats(cmd)
    subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(n), "-P", str(pipeline),
                    "-c", "2", "-q", cmd.upper(), channel, MSG], check=True, capture_output=True)
    cpu1, calls1, usec1 = cpu_and_stats(cmd)
    for s in socks:
        s.close()
    if reader:
        os.kill(reader, 9)
        os.waitpid(reader, 0)
    msgs = calls1 - calls0
    time.sleep(0.3)
    return (cpu1 - cpu0) / msgs, (usec1 - usec0) / msgs


print("\nRedis CPU per published message (redis-benchmark -c 2, pipelined 16 deep or"
      " not at all;\none helper process reads every subscriber's socket)")
print(f"{'command':<9} {'subs':>5} {'CPU us/msg':>10} {'usec/call':>9} {'msgs/s/core':>11}"
      f" {'delivs/s/core':>13} | {'unpipelined: CPU us/msg':>23} {'msgs/s/core':>11}"
      f" {'delivs/s/core':>13}")
for cmd in ("publish", "spublish"):
    for subs in (0, 1, 16, 64, 256):
        cpu, usec = run(cmd, subs, 16)
        cpu1, _ = run(cmd, subs, 1)
        print(f"{cmd:<9} {subs:>5} {cpu:>10.2f} {usec:>9.2f} {1e6 / cpu:>11.0f}"
              f" {1e6 / cpu * subs:>13.0f} | {cpu1:>23.2f} {1e6 / cpu1:>11.0f}"
              f" {1e6 / cpu1 * subs:>13.0f}")
EOF
fi

# Part 3: the fleet view. Every sidecar exchanges its instance record once a
# second (`INSTANCES` in scripts.rs, read from there): each call returns up to
# 64 records, reading at most a sample of 128, so a call's cost stays flat and
# the fleet's grows with N, not N². Records of 300 bytes (a dashboard record's
# size); Redis usec and bytes per call.
script=$(awk '/^const INSTANCES: &str = r"$/ {on = 1; next} on && /^";$/ {exit} on {print}' \
    crates/herdguard-redis/src/scripts.rs)
[ -n "$script" ] || { echo "INSTANCES script not found in scripts.rs" >&2; exit 1; }
if [[ " $PARTS " == *" 3 "* ]]; then
SCRIPT=$script python3 - "$port" <<'EOF'
import os, socket, sys
port = int(sys.argv[1])
sock = socket.create_connection(("127.0.0.1", port))
received = 0


def call(*args):
    global received
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    buf = b""
    # Replies here are one bulk string or an array of bulk strings; read to the end.
    def need(n):
        nonlocal buf
        global received
        while len(buf) < n:
            chunk = sock.recv(1 << 16)
            received += len(chunk)
            buf += chunk
    def line():
        nonlocal buf
        global received
        while b"\r\n" not in buf:
            chunk = sock.recv(1 << 16)
            received += len(chunk)
            buf += chunk
        l, buf = buf.split(b"\r\n", 1)
        return l
    def read():
        nonlocal buf
        l = line()
        if l[:1] == b"$":
            n = int(l[1:])
            if n < 0:
                return None
            need(n + 2)
            d, buf = buf[:n], buf[n + 2:]
            return d
        if l[:1] == b"*":
            return [read() for _ in range(int(l[1:]))]
        if l[:1] == b"-":
            sys.exit(l.decode())
        return l[1:]
    return read()


sha = call("SCRIPT", "LOAD", os.environ["SCRIPT"]).decode()
record = "r" * 300


def stat():
    info = call("INFO", "commandstats").decode()
    for l in info.splitlines():
        if l.startswith("cmdstat_evalsha:"):
            f = dict(kv.split("=") for kv in l.split(":", 1)[1].split(","))
            return int(f["calls"]), int(f["usec"])
    return 0, 0


print("\nThe fleet view: one instance-record exchange (INSTANCES script) with N live records")
print(f"{'N':>5} {'usec/call':>9} {'bytes/call':>10} {'N calls/s: core':>16} {'bytes/s':>10}")
for n in (8, 64, 1000):
    call("DEL", "hg:instances")
    for i in range(n):
        call("EVALSHA", sha, 1, "hg:instances", f"i{i}", record, 5000, 64)
    c0, u0 = stat()
    calls = 200
    r0 = received
    for i in range(calls):
        call("EVALSHA", sha, 1, "hg:instances", f"i{i % n}", record, 5000, 64)
    r1 = received
    c1, u1 = stat()
    usec = (u1 - u0) / (c1 - c0)
    per = (r1 - r0) / calls
    print(f"{n:>5} {usec:>9.1f} {per:>10.0f} {usec * n / 1e4:>15.1f}% {per * n:>10.0f}")
EOF
fi
