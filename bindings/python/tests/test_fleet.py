"""Python and Rust processes on one real redis-server, one load per key
across all of them; an invalidation from Python evicts a Rust process's copy."""

import json
import pathlib
import selectors
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent


class Proc:
    """A fleet process driven line by line over stdin/stdout, with a deadline."""

    def __init__(self, argv):
        self.argv = argv
        self.p = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.p.stdout, selectors.EVENT_READ)

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def read(self, seconds=20.0):
        if not self.sel.select(timeout=seconds):
            raise AssertionError(f"{self.argv[0]}: no answer within {seconds} s")
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError(f"{self.argv[0]} exited: {self.p.stderr.read()}")
        return line.strip()

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(timeout=10)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()


@pytest.fixture
def fleet(redis_url, rust_worker):
    procs = []

    def start_python(**extra):
        argv = [sys.executable, str(HERE / "fleet_worker.py"), "--url", redis_url]
        for k, v in extra.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        procs.append(Proc(argv))
        return procs[-1]

    def start_rust(*extra):
        procs.append(Proc([rust_worker, "--url", redis_url, *extra]))
        return procs[-1]

    yield start_python, start_rust
    for p in procs:
        p.close()


def test_four_python_processes_and_a_rust_worker_make_one_load_per_key(fleet):
    start_python, start_rust = fleet
    pythons = [start_python(callers=16, loader_ms=200) for _ in range(4)]
    rust = start_rust("--callers", "16", "--loader-ms", "200")
    for p in [*pythons, rust]:
        assert p.read() == "ready"

    # price:1 all at once; price:2 the Python processes first (one of them
    # holds the lease, the Rust worker waits on it); price:3 the Rust worker first.
    for key, first, then in [
        ("price:1", [*pythons, rust], []),
        ("price:2", pythons, [rust]),
        ("price:3", [rust], pythons),
    ]:
        for p in first:
            p.send(f"go {key}")
        if then:
            time.sleep(0.15)
        for p in then:
            p.send(f"go {key}")
        py_rounds = [json.loads(p.read()) for p in pythons]
        rust_round = json.loads(rust.read())
        loads = sum(r["loads"] for r in py_rounds) + rust_round["local_loads"]
        values = set(rust_round["values"]).union(*(r["values"] for r in py_rounds))
        assert [r["errors"] for r in py_rounds] == [[]] * 4 and rust_round["errors"] == 0
        assert loads == 1, f"{key}: {loads} loads across the fleet ({py_rounds}, {rust_round})"
        assert len(values) == 1, f"{key}: the processes saw different values: {values}"
        print(f"{key}: 5 processes x 16 callers, {loads} load, value {values.pop()}")
        if key == "price:2":
            assert rust_round["local_loads"] == 0 and rust_round["l2_hits"] >= 1


def test_invalidate_from_python_evicts_the_rust_copy(fleet):
    start_python, start_rust = fleet
    py = start_python(callers=1, loader_ms=10)
    rust = start_rust("--callers", "4", "--loader-ms", "10")
    assert py.read() == "ready" and rust.read() == "ready"

    rust.send("go cfg")
    first = json.loads(rust.read())
    assert first["local_loads"] == 1
    rust.send("go cfg")
    assert json.loads(rust.read())["served"] == {"Hit": 4}  # the Rust process holds a copy

    py.send("invalidate cfg")
    assert json.loads(py.read()) == {"invalidated": "cfg"}
    # The change notice travels by pub/sub; within 2 s the copy is gone and
    # the Rust process loads again (a kept copy would answer Hit forever).
    deadline = time.monotonic() + 2.0
    while True:
        rust.send("go cfg")
        r = json.loads(rust.read())
        if r["local_loads"] == 1:
            break
        assert r["served"] == {"Hit": 4}
        assert time.monotonic() < deadline, "the Rust process kept its copy after the invalidation"
        time.sleep(0.02)


def test_rust_value_reaches_python_and_python_value_reaches_rust(fleet):
    start_python, start_rust = fleet
    py = start_python(callers=2, loader_ms=10, value="from-python")
    rust = start_rust("--callers", "2", "--loader-ms", "10", "--value", "from-rust")
    assert py.read() == "ready" and rust.read() == "ready"

    rust.send("go a")
    assert json.loads(rust.read())["values"] == ["from-rust"]
    py.send("go a")
    r = json.loads(py.read())
    assert (r["loads"], r["values"]) == (0, ["from-rust"])

    py.send("go b")
    assert json.loads(py.read())["values"] == ["from-python"]
    rust.send("go b")
    r = json.loads(rust.read())
    assert (r["local_loads"], r["values"], r["l2_hits"]) == (0, ["from-python"], 1)
