"""A loader's exception reaches every waiter as that exception; negative
caching raises it again without calling the loader."""

import threading
import time

import pytest

from herdguard import Cache, LoadTimeout, WaitTimeout


class PaidApiDown(Exception):
    pass


def test_loader_exception_reaches_every_waiter():
    cache = Cache(ttl=30)
    calls = []
    errors = []
    gate = threading.Barrier(30)

    def loader():
        calls.append(1)
        time.sleep(0.2)
        raise PaidApiDown("503 from the paid API")

    def caller():
        gate.wait()
        try:
            cache.get_or_load("quote", loader)
        except PaidApiDown as e:
            errors.append(e)

    threads = [threading.Thread(target=caller) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(calls) == 1
    assert len(errors) == 30
    assert all(e.args == ("503 from the paid API",) for e in errors)
    assert all(e is errors[0] for e in errors)  # the loader's own exception


def test_without_negative_ttl_the_next_call_loads_again():
    cache = Cache(ttl=30)
    calls = []

    def loader():
        calls.append(1)
        raise PaidApiDown("down")

    for _ in range(3):
        with pytest.raises(PaidApiDown):
            cache.get_or_load("k", loader)
    assert len(calls) == 3


def test_negative_ttl_raises_again_without_calling():
    cache = Cache(ttl=30, negative_ttl=0.3)
    calls = []

    def loader():
        calls.append(1)
        raise PaidApiDown("down")

    for _ in range(3):
        with pytest.raises(PaidApiDown, match="down"):
            cache.get_or_load("k", loader)
    assert len(calls) == 1
    assert cache.metrics()["negative_hits"] == 2
    time.sleep(0.4)
    assert cache.get_or_load("k", lambda: b"back") == b"back"


def test_bytes_codec_refuses_other_values_as_a_loader_error():
    cache = Cache()
    with pytest.raises(TypeError, match='codec "bytes" stores bytes, got str'):
        cache.get_or_load("k", lambda: "not bytes")


def test_wait_timeout():
    cache = Cache(wait_timeout=0.1)
    with pytest.raises(WaitTimeout):
        cache.get_or_load("slow", lambda: time.sleep(0.5) or b"late")


def test_load_timeout():
    cache = Cache(load_timeout=0.1)
    with pytest.raises(LoadTimeout):
        cache.get_or_load("hung", lambda: time.sleep(0.5) or b"late")
    # The next call loads again.
    assert cache.get_or_load("hung", lambda: b"now") == b"now"
