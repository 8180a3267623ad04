"""Tagged cache writes: the helper the *application* uses so that Reflex can invalidate by tag.

Invalidating "everything about product 42" by pattern means scanning the whole keyspace. With tags,
the application records, next to each cache entry, the tags it depends on; invalidating a tag then
costs time in proportion to the keys carrying it, not to the size of the database.

Example::

    import redis
    from invalidator.cache_tags import TaggedCache

    cache = TaggedCache(redis.Redis(host="cache.internal", ssl=True), namespace="shop")
    cache.set("page:/products/42", html, tags=["product:42", "category:7"], ttl_s=3600)
    cache.get("page:/products/42")            # -> html, until it expires or is invalidated
    cache.keys_for_tag("product:42")          # -> {b"page:/products/42"}

    # Later, when product 42 changes, a ContentChanged event with tags ["product:42"] makes Reflex's
    # invalidator (configured with tag_namespace "shop") unlink every key of that tag.

How it is stored (see docs/cache_tags.md):

* the entry itself under its own key, unchanged (`page:/products/42`), with a TTL of `ttl_s` minus a
  random jitter of up to `jitter * ttl_s`, so entries written together do not all expire together;
* one Redis set per tag, named `tag:{<namespace>:<tag>}`, whose members are the names of the keys
  carrying the tag. The set's expiry is pushed out to at least the longest member TTL plus a grace
  period (`EXPIRE ... NX` then `EXPIRE ... GT`, Redis 7 or Valkey), so a set never disappears before
  the entries it indexes. Members whose key has already expired stay in the set until it expires;
  invalidation tolerates them (they count as matched, not removed).

Ordering: the tag membership is written *before* the value. A failure between the two leaves a
harmless stale member, never a cached value that its tag cannot reach. On a standalone server both
writes go in one MULTI/EXEC. In cluster mode the braces in `tag:{shop:product:42}` are a hash tag:
the set lives in the slot of `shop:product:42`, usually on another node than the entry, so no
transaction can span them. The helper then sends the tag writes first and the value second (two
round trips), and the invalidator routes each member key to its own node when it deletes.

This module depends only on redis-py; the application can vendor it as it is.
"""

from __future__ import annotations

import builtins
import random
from collections.abc import Iterable, Sequence
from typing import Any

DEFAULT_NAMESPACE = "cache"
# Extra lifetime of a tag set beyond its longest member, so a member written at the last moment is
# still reachable through the set for its whole life.
TAG_SET_GRACE_S = 60
MAX_TAG_LENGTH = 256
MAX_TAGS_PER_ENTRY = 64
_FORBIDDEN_IN_NAMES = frozenset("{}")


class CacheTagError(ValueError):
    """A tag, namespace or TTL that cannot be used; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def validate_name(value: object, field: str) -> str:
    """A tag or namespace: a non-empty string without whitespace, control characters or braces."""
    if not isinstance(value, str):
        raise CacheTagError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise CacheTagError(field, "must not be empty")
    if len(value) > MAX_TAG_LENGTH:
        raise CacheTagError(field, f"is longer than {MAX_TAG_LENGTH} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise CacheTagError(field, "must not contain whitespace or control characters")
    if _FORBIDDEN_IN_NAMES.intersection(value):
        # Braces would change which part of the set's name Redis Cluster hashes.
        raise CacheTagError(field, "must not contain '{' or '}'")
    return value


def tag_set_key(namespace: str, tag: str) -> str:
    """Name of the set holding the keys that carry `tag`: `tag:{<namespace>:<tag>}`.

    The braces make the whole `<namespace>:<tag>` the cluster hash tag, so the set and the temporary
    name the invalidator renames it to (`tag:{...}:purging:<id>`) share a slot.
    """
    validate_name(namespace, "namespace")
    validate_name(tag, "tag")
    return f"tag:{{{namespace}:{tag}}}"


def jittered_ttl(ttl_s: int, jitter: float, rng: random.Random | None = None) -> int:
    """A TTL in [ttl_s * (1 - jitter), ttl_s]: `ttl_s` stays the upper bound of an entry's life."""
    if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or ttl_s < 1:
        raise CacheTagError("ttl_s", "must be a positive whole number of seconds")
    if not 0 <= jitter < 1:
        raise CacheTagError("jitter", "must be in [0, 1)")
    if jitter == 0:
        return ttl_s
    low = max(1, int(ttl_s * (1 - jitter)))
    return (rng or random).randint(low, ttl_s)


def _is_cluster(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


class TaggedCache:
    """Cache writes that keep tag sets, so a tag can be invalidated without scanning the keyspace.

    `client` is a `redis.Redis` or a `redis.cluster.RedisCluster`; `namespace` scopes the tag sets
    and must match the invalidator's `tag_namespace`. Keys are stored under the names given.
    """

    def __init__(self, client: Any, namespace: str = DEFAULT_NAMESPACE, *, rng: random.Random | None = None,
                 tag_set_grace_s: int = TAG_SET_GRACE_S) -> None:
        self._client = client
        self.namespace = validate_name(namespace, "namespace")
        self._rng = rng
        self._grace = tag_set_grace_s
        self._cluster = _is_cluster(client)

    def tag_key(self, tag: str) -> str:
        return tag_set_key(self.namespace, tag)

    def set(self, key: str, value: Any, *, tags: Sequence[str], ttl_s: int, jitter: float = 0.1) -> int:
        """Store `value` under `key` with a jittered TTL and record the key in each tag's set.

        Returns the TTL applied, in seconds.
        """
        if not isinstance(key, str | bytes) or not key:
            raise CacheTagError("key", "must be a non-empty string")
        if isinstance(tags, str | bytes):
            raise CacheTagError("tags", "must be a list of tags, not a single string")
        unique_tags = list(dict.fromkeys(tags))
        if len(unique_tags) > MAX_TAGS_PER_ENTRY:
            raise CacheTagError("tags", f"at most {MAX_TAGS_PER_ENTRY} tags per entry")
        set_keys = [tag_set_key(self.namespace, t) for t in unique_tags]
        ttl = jittered_ttl(ttl_s, jitter, self._rng)
        # The set outlives the longest possible member TTL (ttl_s is the upper bound of the jitter).
        set_ttl = ttl_s + self._grace

        if self._cluster:
            if set_keys:
                pipe = self._client.pipeline(transaction=False)
                self._queue_tag_writes(pipe, key, set_keys, set_ttl)
                pipe.execute()
            self._client.set(key, value, ex=ttl)
        else:
            pipe = self._client.pipeline(transaction=True)
            self._queue_tag_writes(pipe, key, set_keys, set_ttl)
            pipe.set(key, value, ex=ttl)
            pipe.execute()
        return ttl

    @staticmethod
    def _queue_tag_writes(pipe: Any, key: str, set_keys: Iterable[str], set_ttl: int) -> None:
        for set_key in set_keys:
            pipe.sadd(set_key, key)
            # NX gives a fresh set its first expiry; GT only ever pushes an existing one out.
            pipe.expire(set_key, set_ttl, nx=True)
            pipe.expire(set_key, set_ttl, gt=True)

    def get(self, key: str) -> Any:
        return self._client.get(key)

    def keys_for_tag(self, tag: str, *, count: int = 1000) -> builtins.set[Any]:
        """The key names recorded under `tag` (read with SSCAN; may include keys that have expired)."""
        return set(self._client.sscan_iter(tag_set_key(self.namespace, tag), count=count))
