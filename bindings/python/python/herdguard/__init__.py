"""herdguard: a read-through cache that makes a stampede one loader call.

The engine is herdguard's Rust crate (``herdguard::Cache``) and, with
``redis=URL``, its Redis fleet protocol (leases, fencing, a change feed): a
key's loader runs once for all concurrent callers — threads and asyncio tasks
of this process, and every process, Python or Rust, on that Redis under the
same prefix.

    from herdguard import Cache

    cache = Cache(ttl=60, redis="redis://127.0.0.1:6379/", codec="json")
    price = cache.get_or_load("price:42", lambda: paid_api.price(42))

    @cache.cached(key="user:{user_id}")
    def load_user(user_id):
        return db.fetch_user(user_id)

Codecs (``codec=``): ``"bytes"`` (default; the loader returns ``bytes``, a hit
returns the same immutable object), ``"json"`` (UTF-8 JSON; a new object per
call) or ``"pickle"`` (protocol 5; a new object per call; Python only). What
crosses Redis is the encoded bytes: processes share a key's entry when they
use one codec (a Rust ``Cache<String, String>`` or ``Cache<String, Vec<u8>>``
reads "bytes" and "json" entries).
"""

import functools
import inspect

from ._native import (
    Cache as _NativeCache,
    CircuitOpen,
    FleetLoadError,
    HerdguardError,
    LoadTimeout,
    SharedStoreError,
    WaitTimeout,
)

__all__ = [
    "Cache",
    "CircuitOpen",
    "FleetLoadError",
    "HerdguardError",
    "LoadTimeout",
    "SharedStoreError",
    "WaitTimeout",
]


class Cache(_NativeCache):
    """The engine's cache. Keyword arguments (durations in seconds):

    ttl (60), max_entries (10000), ttl_jitter (0, a fraction in [0, 1)),
    early_refresh (X-Fetch beta, off), stale_while_revalidate (0),
    stale_if_error (0), negative_ttl (off: how long a loader's exception is
    raised again without calling it), wait_timeout (off), load_timeout (30),
    redis (a redis://, rediss:// or redis+sentinel:// URL, off), prefix ("hg",
    the Redis key prefix shared with Rust processes), lease_ttl (5), codec
    ("bytes"), redis_ca (a PEM file of the CA a rediss:// server's certificate
    must chain to, instead of the web PKI roots).

    A bad argument raises ValueError naming it. Create caches after a fork
    (e.g. lazily in each web worker): the engine's threads do not survive one.
    """

    def cached(self, key):
        """Decorator: calls of the function go through ``get_or_load``.

        ``key`` is a ``str.format`` template over the function's arguments by
        name (``"user:{user_id}"``) or a callable taking the same arguments and
        returning the key. ``async def`` functions use ``aget_or_load``.
        """
        if isinstance(key, str):
            template = key

            def key_of(signature, args, kwargs):
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                return template.format(**bound.arguments)

        elif callable(key):

            def key_of(signature, args, kwargs):
                return key(*args, **kwargs)

        else:
            raise ValueError(f"key must be a str template or a callable, got {key!r}")

        def decorate(fn):
            signature = inspect.signature(fn)
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args, **kwargs):
                    k = key_of(signature, args, kwargs)
                    return await self.aget_or_load(k, lambda: fn(*args, **kwargs))

                return async_wrapper

            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                k = key_of(signature, args, kwargs)
                return self.get_or_load(k, lambda: fn(*args, **kwargs))

            return wrapper

        return decorate
