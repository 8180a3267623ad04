"""TaggedCache against the shared standalone Redis (own key prefix and tag namespace, cleaned up)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from invalidator.cache_tags import TAG_SET_GRACE_S, CacheTagError, TaggedCache
from tests.support.redis_cluster import recording_connection_class

PORT = int(os.environ.get("REFLEX_REDIS_PORT", "6379"))


def _up() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=PORT, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


pytestmark = [pytest.mark.redis, pytest.mark.skipif(not _up(), reason=f"no Redis on 127.0.0.1:{PORT}")]


@pytest.fixture
def env() -> Iterator[tuple[redis.Redis, list, str, str]]:
    token = uuid.uuid4().hex[:10]
    log: list = []
    pool = redis.ConnectionPool(host="127.0.0.1", port=PORT, connection_class=recording_connection_class(log))
    client = redis.Redis(connection_pool=pool)
    yield client, log, f"ct-{token}:", f"ns{token}"
    for pattern in (f"ct-{token}:*", f"tag:{{ns{token}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.unlink(*keys)
    client.close()


def test_set_writes_the_value_with_a_jittered_ttl_and_indexes_it_under_each_tag(env):
    client, _, prefix, ns = env
    cache = TaggedCache(client, ns)
    applied = cache.set(f"{prefix}page:1", "<html>", tags=["product:42", "category:7"], ttl_s=3600, jitter=0.1)
    assert 3240 <= applied <= 3600
    assert cache.get(f"{prefix}page:1") == b"<html>"
    assert 3230 <= client.ttl(f"{prefix}page:1") <= 3600
    for tag in ("product:42", "category:7"):
        assert cache.keys_for_tag(tag) == {f"{prefix}page:1".encode()}
        # The set outlives the longest possible member TTL, plus a grace period.
        assert 3600 < client.ttl(cache.tag_key(tag)) <= 3600 + TAG_SET_GRACE_S


def test_a_tag_set_expiry_only_ever_moves_out(env):
    client, _, prefix, ns = env
    cache = TaggedCache(client, ns)
    cache.set(f"{prefix}long", "v", tags=["t"], ttl_s=7200)
    cache.set(f"{prefix}short", "v", tags=["t"], ttl_s=60)
    assert client.ttl(cache.tag_key("t")) > 7200
    cache.set(f"{prefix}longer", "v", tags=["t"], ttl_s=10_000)
    assert client.ttl(cache.tag_key("t")) > 10_000
    assert len(cache.keys_for_tag("t")) == 3


def test_standalone_writes_are_one_transaction_with_the_tags_first(env):
    client, log, prefix, ns = env
    TaggedCache(client, ns).set(f"{prefix}k", "v", tags=["a", "b", "a"], ttl_s=60)
    names = [str(c[0], "utf-8") if isinstance(c[0], bytes) else str(c[0]) for c in log]
    names = [n.upper() for n in names if n.upper() not in {"CLIENT", "HELLO", "PING"}]
    assert names[0] == "MULTI" and names[-1] == "EXEC"
    assert names.index("SET") > max(i for i, n in enumerate(names) if n == "SADD")
    assert names.count("SADD") == 2  # a tag given twice is recorded once


def test_entry_without_tags_is_a_plain_set_with_ttl(env):
    client, _, prefix, ns = env
    TaggedCache(client, ns).set(f"{prefix}plain", "v", tags=[], ttl_s=30, jitter=0)
    assert client.ttl(f"{prefix}plain") == 30


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"tags": "product:42"}, "tags"),
    ({"tags": ["ok", "not ok"]}, "tag"),
    ({"tags": [f"t{i}" for i in range(65)]}, "tags"),
    ({"tags": ["ok"], "ttl_s": 0}, "ttl_s"),
])
def test_bad_writes_are_refused_before_anything_is_sent(env, kwargs, field):
    client, log, prefix, ns = env
    options = {"ttl_s": 60} | kwargs
    log.clear()
    with pytest.raises(CacheTagError) as err:
        TaggedCache(client, ns).set(f"{prefix}k", "v", **options)
    assert err.value.field == field
    assert log == []
