"""Codecs, insert, get, invalidate, metrics and the decorator."""

import asyncio
import threading

import pytest

from herdguard import Cache


def test_json_round_trip_gives_each_caller_its_own_object():
    cache = Cache(codec="json")
    first = cache.get_or_load("k", lambda: {"items": [1, 2]})
    first["items"].append(3)  # a caller mutating what it got...
    assert cache.get_or_load("k", lambda: {}) == {"items": [1, 2]}  # ...changes nothing


def test_pickle_round_trip():
    cache = Cache(codec="pickle")
    value = {"t": (1, 2), "s": {3}}
    assert cache.get_or_load("k", lambda: value) == value


def test_json_refuses_what_json_cannot_encode():
    cache = Cache(codec="json")
    with pytest.raises(TypeError):
        cache.get_or_load("k", lambda: object())


def test_bytes_hit_returns_the_same_object():
    cache = Cache()
    first = cache.get_or_load("k", lambda: b"x" * 100)
    assert cache.get_or_load("k", lambda: b"") is first


def test_insert_get_invalidate():
    cache = Cache(codec="json")
    assert cache.get("k") is None
    cache.insert("k", [1])
    assert cache.get("k") == [1]
    assert cache.get_or_load("k", lambda: [2]) == [1]
    cache.invalidate("k")
    assert cache.get("k") is None
    assert cache.get_or_load("k", lambda: [3]) == [3]
    m = cache.metrics()
    assert m["loads"] == 1 and m["hits"] == 1 and m["entries"] == 1


def test_cached_decorator_with_template():
    cache = Cache(codec="json")
    calls = []

    @cache.cached(key="user:{user_id}:{fields}")
    def load_user(user_id, fields="all"):
        calls.append(user_id)
        return {"id": user_id, "fields": fields}

    assert load_user(7) == {"id": 7, "fields": "all"}
    assert load_user(user_id=7) == {"id": 7, "fields": "all"}
    assert load_user(8, "name") == {"id": 8, "fields": "name"}
    assert calls == [7, 8]
    assert cache.get("user:7:all") == {"id": 7, "fields": "all"}
    assert load_user.__name__ == "load_user"


def test_cached_decorator_coalesces_threads():
    cache = Cache(codec="json")
    calls = []
    gate = threading.Barrier(20)

    @cache.cached(key=lambda n: f"sq:{n}")
    def square(n):
        calls.append(n)
        import time

        time.sleep(0.1)
        return n * n

    out = []

    def caller():
        gate.wait()
        out.append(square(9))

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert out == [81] * 20 and calls == [9]


def test_cached_decorator_async():
    cache = Cache(codec="pickle")
    calls = []

    @cache.cached(key="a:{x}")
    async def slow(x):
        calls.append(x)
        await asyncio.sleep(0.05)
        return x + 1

    async def main():
        return await asyncio.gather(*[slow(1) for _ in range(10)])

    assert asyncio.run(main()) == [2] * 10
    assert calls == [1]


def test_cached_decorator_refuses_a_bad_key():
    with pytest.raises(ValueError, match="key"):
        Cache().cached(key=3)
