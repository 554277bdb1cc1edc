"""rediss:// against a TLS-only redis-server with a CA made by the test
(openssl): redis_ca= trusts it; without it (the web PKI roots) or with
another CA, Cache() raises ValueError naming the URL."""

import shutil
import subprocess
import threading
import time

import pytest

from conftest import free_port, wait_port
from herdguard import Cache


def make_ca(directory, name):
    """A CA (ca.pem) in `directory` and a server certificate it signed for
    127.0.0.1 (server.pem, server.key)."""
    d = directory / name
    d.mkdir()

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return d


@pytest.fixture
def tls_redis(tmp_path):
    """A TLS-only redis-server: (rediss:// URL, its CA file, another CA file)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("the tests need redis-server (Debian: apt-get install redis-server)")
    ca = make_ca(tmp_path, "test-ca")
    other = make_ca(tmp_path, "other-ca")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(ca / "server.pem"), "--tls-key-file", str(ca / "server.key"),
         "--tls-ca-cert-file", str(ca / "ca.pem"), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield f"rediss://127.0.0.1:{port}/", str(ca / "ca.pem"), str(other / "ca.pem")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_two_caches_over_tls_with_redis_ca_load_once(tls_redis):
    url, ca, _ = tls_redis
    caches = [Cache(redis=url, redis_ca=ca, prefix="tls") for _ in range(2)]
    calls = []

    def loader():
        calls.append(1)
        time.sleep(0.2)
        return b"v"

    results = []
    threads = [
        threading.Thread(target=lambda c=c: results.append(c.get_or_load("k", loader)))
        for c in caches
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert results == [b"v"] * 20
    assert len(calls) == 1


def test_an_untrusted_certificate_is_a_value_error_naming_the_url(tls_redis):
    url, _, other = tls_redis
    for kwargs in ({}, {"redis_ca": other}):
        with pytest.raises(ValueError, match="TLS to Redis at " + url):
            Cache(redis=url, **kwargs)


def test_redis_ca_needs_redis():
    with pytest.raises(ValueError, match="redis_ca"):
        Cache(redis_ca="/nonexistent/ca.pem")
