"""Real parts for the tests: a redis-server on a free loopback port, and the
Rust fleet worker (crates/herdguard-redis, bin herdguard-redis-worker)."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {seconds} s")


@pytest.fixture
def redis_url():
    """A fresh redis-server (no persistence) for one test, stopped after it."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("the tests need redis-server (Debian: apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield f"redis://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def rust_worker():
    """The path of the Rust fleet worker, built by cargo if it is not yet
    (a no-op after the workspace's `cargo test`)."""
    given = os.environ.get("HERDGUARD_RUST_WORKER")
    if given:
        return given
    built = subprocess.run(
        [
            "cargo", "build", "--quiet", "--locked", "-p", "herdguard-redis",
            "--features", "test-helpers", "--bin", "herdguard-redis-worker",
            "--message-format=json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if built.returncode != 0:
        pytest.fail(f"building herdguard-redis-worker failed:\n{built.stderr}")
    for line in built.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            if msg["target"]["name"] == "herdguard-redis-worker":
                return msg["executable"]
    pytest.fail("cargo built no herdguard-redis-worker executable")
