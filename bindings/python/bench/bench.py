"""herdguard for Python against its peers, in one run (ratios, not times: the
machine is shared and noisy). Prints:

1. the hit path of Cache.get_or_load vs dogpile.cache's memory backend
   (region.get_or_create) and vs redis-py GET on loopback;
2. a 200-thread cold stampede: how long the callers wait, as a multiple of
   the origin's latency (herdguard in process and over Redis; dogpile's
   memory backend, and dogpile's Redis backend, whose lock waiters poll).

Usage: bench.py REDIS_URL
"""

import statistics
import sys
import threading
import time

import redis
from dogpile.cache import make_region

from herdguard import Cache

VALUE = b"x" * 100
HIT_CALLS = 200_000
ORIGIN_S = 0.2
STAMPEDE_THREADS = 200


def per_call_ns(fn, n=HIT_CALLS, rounds=5):
    """Best of `rounds` loops of `n` calls, in ns per call."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e9)
    return best


def hit_path(url):
    cache = Cache(ttl=3600)

    def loader():
        return VALUE

    cache.get_or_load("hot", loader)
    hg = per_call_ns(lambda: cache.get_or_load("hot", loader))

    region = make_region().configure("dogpile.cache.memory", expiration_time=3600)
    region.get_or_create("hot", loader)
    dp = per_call_ns(lambda: region.get_or_create("hot", loader))

    r = redis.Redis.from_url(url)
    r.set("hot", VALUE)
    rp = per_call_ns(lambda: r.get("hot"), n=HIT_CALLS // 10)

    fleet = Cache(ttl=3600, redis=url)
    fleet.get_or_load("hot", loader)
    hg_fleet = per_call_ns(lambda: fleet.get_or_load("hot", loader))

    print("hit path (one thread, 100-byte value, ns per call, best of 5):")
    print(f"  herdguard Cache.get_or_load           {hg:9.0f} ns")
    print(f"  herdguard with redis= (in-process hit) {hg_fleet:8.0f} ns")
    print(f"  dogpile.cache memory get_or_create    {dp:9.0f} ns   herdguard is {dp / hg:5.1f}x faster (goal >= 2x)")
    print(f"  redis-py GET on loopback              {rp:9.0f} ns   herdguard is {rp / hg:5.1f}x faster (goal >= 5x)")
    return dp / hg, rp / hg


def stampede(name, get):
    """200 threads call `get(key, loader)` on one cold key at once; returns
    (slowest caller's wait / origin latency, origin calls)."""
    calls = []

    def loader():
        calls.append(1)
        time.sleep(ORIGIN_S)
        return VALUE

    gate = threading.Barrier(STAMPEDE_THREADS + 1)
    waits = []

    def caller():
        gate.wait()
        start = time.perf_counter()
        got = get(f"cold-{name}", loader)
        waits.append(time.perf_counter() - start)
        assert got == VALUE

    threads = [threading.Thread(target=caller) for _ in range(STAMPEDE_THREADS)]
    for t in threads:
        t.start()
    gate.wait()
    for t in threads:
        t.join(timeout=60)
    assert len(waits) == STAMPEDE_THREADS, f"{name}: only {len(waits)} callers returned"
    return max(waits) / ORIGIN_S, statistics.median(waits) / ORIGIN_S, len(calls)


def stampedes(url):
    print(f"cold stampede ({STAMPEDE_THREADS} threads, one key, origin {ORIGIN_S * 1000:.0f} ms; wait / origin latency):")
    results = {}
    runs = [
        ("herdguard", lambda: Cache(ttl=3600).get_or_load),
        ("herdguard redis=", lambda: Cache(ttl=3600, redis=url).get_or_load),
        (
            "dogpile memory",
            lambda: make_region().configure("dogpile.cache.memory", expiration_time=3600).get_or_create,
        ),
        (
            "dogpile redis",
            lambda: make_region()
            .configure(
                "dogpile.cache.redis",
                expiration_time=3600,
                arguments={
                    "connection_pool": redis.BlockingConnectionPool.from_url(url, max_connections=256),
                    "distributed_lock": True,
                    "thread_local_lock": False,
                    "lock_timeout": 10,
                },
            )
            .get_or_create,
        ),
    ]
    for name, make in runs:
        worst, median, calls = [], [], []
        for round_ in range(3):
            w, m, c = stampede(f"{name}-{round_}", make())
            worst.append(w)
            median.append(m)
            calls.append(c)
        results[name] = statistics.median(worst)
        print(
            f"  {name:18s} slowest {statistics.median(worst):5.2f}x  median {statistics.median(median):5.2f}x"
            f"  origin calls {calls}  (median of 3 rounds)"
        )
    print(f"  herdguard's slowest caller waits {results['herdguard']:.2f}x the origin latency (goal <= 1.1x)")


if __name__ == "__main__":
    url = sys.argv[1]
    hit_path(url)
    stampedes(url)
