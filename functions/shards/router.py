"""The router applications import to find a key's shard: `Router(...).route(key) -> shard name`.

    from shards.router import Router, BucketMoved, is_fence_error

    router = Router.from_dynamodb(table="reflex-prod-state", set_name="orders")
    while True:
        try:
            shard = router.route(tenant_id)          # cached map; refreshed every `ttl_s`
            with pools[shard].connection() as conn:
                conn.execute("INSERT INTO orders ...")
            break
        except BucketMoved as moved:                 # the bucket is fenced: being switched right now
            time.sleep(moved.retry_after_s)
        except psycopg.Error as err:
            if not router.refused(err):              # the shard's fence refused: our map is stale
                raise                                # (refused() already refreshed the map: just retry)

The map is only a hint for speed: the authority is each shard database's write fence (a trigger installed
by the mover), which refuses a write to a bucket the shard does not own (SQLSTATE RX409, message
"reflex: bucket ... is fenced|moved|incoming"). So a router holding a stale map can never write to the
wrong shard; it gets that error, refreshes and retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shards.buckets import bucket_of
from shards.shard_map import ShardMap, ShardMapStore

FENCE_SQLSTATE = "RX409"


class BucketMoved(Exception):
    """The key's bucket is being switched to another shard (fenced): retry after `retry_after_s`."""

    def __init__(self, bucket: int, source: str, target: str, retry_after_s: float) -> None:
        super().__init__(f"bucket {bucket} is moving from {source} to {target}; retry in {retry_after_s}s")
        self.bucket = bucket
        self.source = source
        self.target = target
        self.retry_after_s = retry_after_s


def is_fence_error(err: BaseException) -> bool:
    """A shard database refused a write because its fence says it does not own the bucket (now)."""
    return getattr(err, "sqlstate", None) == FENCE_SQLSTATE


@dataclass
class Route:
    shard: str
    bucket: int
    version: int


class Router:
    def __init__(self, loader: Callable[[], ShardMap], *, ttl_s: float = 5.0, retry_after_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._loader = loader
        self._ttl = ttl_s
        self._retry_after = retry_after_s
        self._clock = clock
        self._map: ShardMap | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_dynamodb(cls, table: str, set_name: str, client: Any = None, **kwargs: Any) -> Router:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        store = ShardMapStore(client, table)

        def load() -> ShardMap:
            found = store.load(set_name)
            if found is None:
                raise LookupError(f"no shard map for set {set_name!r} in {table}")
            return found

        return cls(load, **kwargs)

    @property
    def version(self) -> int:
        return self.current().version

    def current(self) -> ShardMap:
        with self._lock:
            if self._map is None or self._clock() - self._loaded_at >= self._ttl:
                self._map = self._loader()
                self._loaded_at = self._clock()
            return self._map

    def refresh(self) -> ShardMap:
        with self._lock:
            self._map = None
        return self.current()

    def locate(self, key: str | int) -> Route:
        m = self.current()
        bucket = bucket_of(key, m.buckets, "integer" if m.key_type == "integer" else "text")
        state = m.states.get(bucket)
        if state is not None and state.state == "fenced":
            raise BucketMoved(bucket, state.source, state.target, self._retry_after)
        return Route(shard=m.owners[bucket], bucket=bucket, version=m.version)

    def route(self, key: str | int) -> str:
        return self.locate(key).shard

    def refused(self, err: BaseException) -> bool:
        """True (and the map refreshed) when `err` is a shard's fence refusing a stale route: retry."""
        if is_fence_error(err):
            self.refresh()
            return True
        return False
