"""`await cache.aget_or_load(key, async_loader)`: one load for all tasks."""

import asyncio
import threading
import time

import pytest

from herdguard import Cache


class Boom(Exception):
    pass


def test_200_tasks_one_load():
    cache = Cache(ttl=30)
    calls = []

    async def loader():
        calls.append(1)
        await asyncio.sleep(0.2)
        return b"async value"

    async def main():
        return await asyncio.gather(*[cache.aget_or_load("k", loader) for _ in range(200)])

    got = asyncio.run(main())
    assert got == [b"async value"] * 200
    assert len(calls) == 1


def test_event_loop_keeps_running_while_waiting():
    cache = Cache(ttl=30)
    ticks = []

    async def loader():
        await asyncio.sleep(0.2)
        return b"v"

    async def ticker():
        for _ in range(10):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main():
        await asyncio.gather(cache.aget_or_load("k", loader), ticker())

    asyncio.run(main())
    assert len(ticks) == 10


def test_async_loader_exception_reaches_every_task():
    cache = Cache(ttl=30)
    calls = []

    async def loader():
        calls.append(1)
        await asyncio.sleep(0.1)
        raise Boom("async failure")

    async def main():
        return await asyncio.gather(
            *[cache.aget_or_load("k", loader) for _ in range(20)], return_exceptions=True
        )

    got = asyncio.run(main())
    assert len(calls) == 1
    assert all(isinstance(e, Boom) and e.args == ("async failure",) for e in got)


def test_threads_and_tasks_share_one_load():
    cache = Cache(ttl=30, codec="json")
    calls = []

    def sync_loader():
        calls.append("sync")
        time.sleep(0.3)
        return {"from": "sync"}

    async def async_loader():
        calls.append("async")
        return {"from": "async"}

    results = []
    t = threading.Thread(target=lambda: results.append(cache.get_or_load("k", sync_loader)))
    t.start()
    time.sleep(0.1)  # the thread's load is running

    async def main():
        return await asyncio.gather(*[cache.aget_or_load("k", async_loader) for _ in range(10)])

    results.extend(asyncio.run(main()))
    t.join(timeout=10)
    assert calls == ["sync"]
    assert results == [{"from": "sync"}] * 11


def test_aget_or_load_needs_a_running_loop():
    cache = Cache()

    async def loader():
        return b"v"

    with pytest.raises(RuntimeError):
        cache.aget_or_load("k", loader)
