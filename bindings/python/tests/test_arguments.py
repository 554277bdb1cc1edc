"""Bad arguments raise ValueError naming the field."""

import pytest

from herdguard import Cache

BAD = [
    ("ttl", 0),
    ("ttl", -1),
    ("ttl", float("nan")),
    ("ttl", "sixty"),
    ("max_entries", 0),
    ("max_entries", 1.5),
    ("ttl_jitter", 1.0),
    ("ttl_jitter", -0.1),
    ("early_refresh", 0),
    ("early_refresh", float("inf")),
    ("stale_while_revalidate", -1),
    ("stale_if_error", "long"),
    ("negative_ttl", 0),
    ("wait_timeout", -0.5),
    ("load_timeout", 0),
    ("codec", "yaml"),
    ("codec", 3),
    ("redis", 42),
    ("redis", "http://127.0.0.1:1/"),
    ("redis", "redis://127.0.0.1:1/ not a url"),
]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_bad_argument_raises_value_error_naming_it(field, value):
    with pytest.raises(ValueError, match=field):
        Cache(**{field: value})


def test_prefix_without_redis_is_refused():
    with pytest.raises(ValueError, match="prefix"):
        Cache(prefix="shop")


def test_empty_prefix_is_refused(redis_url):
    with pytest.raises(ValueError, match="prefix"):
        Cache(redis=redis_url, prefix="")


def test_unknown_argument_is_a_type_error():
    with pytest.raises(TypeError):
        Cache(tll=5)


def test_good_arguments_build():
    cache = Cache(
        ttl=5,
        max_entries=100,
        ttl_jitter=0.1,
        early_refresh=1.0,
        stale_while_revalidate=1,
        stale_if_error=2.5,
        negative_ttl=1,
        wait_timeout=3,
        load_timeout=4,
        codec="pickle",
    )
    assert cache.codec == "pickle"
    assert cache.get_or_load("k", lambda: {"a": 1}) == {"a": 1}


def test_unreachable_redis_is_a_shared_store_error():
    from herdguard import SharedStoreError

    from conftest import free_port

    with pytest.raises(SharedStoreError):
        Cache(redis=f"redis://127.0.0.1:{free_port()}/")
