"""One load per key for all the threads of a process, with the GIL released
while they wait (a waiter holding it would starve the loader: a hang)."""

import subprocess
import sys
import threading
import time

from herdguard import Cache


def run_threads(n, target, seconds=20.0):
    threads = [threading.Thread(target=target, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "callers still waiting: hung"


def test_100_threads_one_key_one_load():
    cache = Cache(ttl=30)
    calls = []
    gate = threading.Barrier(100)
    got = []

    def loader():
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return b"the value"

    def caller():
        gate.wait()
        got.append(cache.get_or_load("hot", loader))

    run_threads(100, caller)
    assert len(calls) == 1
    assert got == [b"the value"] * 100
    m = cache.metrics()
    assert m["loads"] == 1
    assert m["coalesced"] == 99
    # The next call is a hit: the loader is not called again.
    assert cache.get_or_load("hot", lambda: calls.append(0) or b"other") == b"the value"
    assert len(calls) == 1
    assert cache.metrics()["hits"] == 1


def test_distinct_keys_load_each():
    cache = Cache(ttl=30)
    calls = []
    for i in range(5):
        assert cache.get_or_load(f"k{i}", lambda i=i: calls.append(i) or str(i).encode()) == str(i).encode()
    assert calls == [0, 1, 2, 3, 4]


GIL_PROBE = """
import threading, time
from herdguard import Cache

cache = Cache(ttl=30)
release = threading.Event()
ticks = []

def loader():
    assert release.wait(10)  # Event.wait releases the GIL
    return b"done"

def ticker():
    for _ in range(200):
        ticks.append(1)
        time.sleep(0.001)
    release.set()

waiters = [threading.Thread(target=lambda: cache.get_or_load("slow", loader)) for _ in range(20)]
for w in waiters:
    w.start()
time.sleep(0.1)  # the waiters are waiting now
t = threading.Thread(target=ticker)
t.start()
t.join()
for w in waiters:
    w.join()
print(len(ticks), "ticks")
"""


def test_gil_released_while_waiting():
    """While 20 threads wait on a load, other Python threads (the loader's, a
    ticker) keep running. Run in a child process: a waiter holding the GIL
    would freeze its whole interpreter, this test's timeout included."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", GIL_PROBE], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the interpreter froze: a waiter holds the GIL") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "200 ticks"


def test_loader_runs_once_per_expiry():
    cache = Cache(ttl=0.2)
    calls = []
    assert cache.get_or_load("k", lambda: calls.append(1) or b"a") == b"a"
    assert cache.get_or_load("k", lambda: calls.append(1) or b"b") == b"a"
    time.sleep(0.3)
    assert cache.get_or_load("k", lambda: calls.append(1) or b"c") == b"c"
    assert len(calls) == 2
