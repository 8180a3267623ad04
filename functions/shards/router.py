"""The router applications import to find a key's shard: `Router(...).route(key) -> shard name`.

    from shards.router import Router, BucketMoved, is_fence_error

    router = Router.from_dynamodb(table="reflex-prod-state", set_name="orders")
    while True:
        try:
            shard = router.route(tenant_id)          # cached map; re-read every `ttl_s`
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
wrong shard; it gets that error, refreshes and retries. Hence:

* a failed re-read (DynamoDB throttling, an outage) does not stop routing: the router keeps its last map,
  logs and counts the failure (`reload_failures`, `last_reload_error`) and tries again after `reload_retry_s`;
  only a router that never loaded a map raises the loader's error (and `refused()` raises it, the write
  having been refused and the map not re-readable);
* the map only moves forward: a read answering an older version than the one held (a lagging read, or a
  reload racing another) is ignored;
* after a `BucketMoved`, the map is re-read once the wait it asked for is over (one re-read for all the
  callers, not at the next TTL); while the re-read map still shows the bucket fenced, the wait doubles up
  to `max_retry_after_s` (at most `ttl_s`).

Keys: `bucket_of` (shards.buckets) raises TypeError/ValueError for a key it cannot place the way the SQL
bucket function does (None, bool, bytes, a non-integral float for an integer key, ...): a caller's bug is
not written to an arbitrary shard.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shards.buckets import bucket_of
from shards.shard_map import ShardMap, ShardMapStore

FENCE_SQLSTATE = "RX409"

log = logging.getLogger("reflex.shards.router")


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
    """Routes keys on a cached shard map (see the module docstring).

    * `ttl_s`: the map is re-read when it is older than this.
    * `retry_after_s`: the first wait a `BucketMoved` asks for; the router re-reads the map once that wait
      is over (not only at the TTL). While the map read again still shows the bucket fenced (a long
      `block_writes` copy), the wait doubles, up to `max_retry_after_s` (at most `ttl_s`): a fleet of routers
      polls DynamoDB a bounded number of times per second however long the fence lasts.
    * `reload_retry_s`: after a failed re-read (DynamoDB throttling, an outage) the router keeps routing on
      its last map (the shards' fences refuse any write it misroutes) and tries again after this long
      (at most `ttl_s`). Failures are logged and counted (`reload_failures`, `last_reload_error`). Only a
      router that never loaded a map raises the loader's error.
    * A map older than the one held (a lagging read) is ignored: the version only moves forward.
    """

    def __init__(self, loader: Callable[[], ShardMap], *, ttl_s: float = 5.0, retry_after_s: float = 0.05,
                 clock: Callable[[], float] = time.monotonic, max_retry_after_s: float = 1.0,
                 reload_retry_s: float = 1.0) -> None:
        self._loader = loader
        self._ttl = ttl_s
        self._retry_after = retry_after_s
        self._max_retry_after = max(retry_after_s, min(max_retry_after_s, ttl_s))
        self._reload_retry = min(reload_retry_s, ttl_s)
        self._clock = clock
        self._map: ShardMap | None = None
        self._loaded_at = 0.0
        self._next_load_at = 0.0
        self._moved_wait = retry_after_s  # the wait the next BucketMoved asks for (grows while a fence lasts)
        self._moved_refresh_pending = False
        self._lock = threading.Lock()  # the fields above
        self._load_lock = threading.Lock()  # one loader call at a time
        self.loads = 0
        self.reload_failures = 0
        self.stale_loads = 0  # loads that answered an older version than the one held (ignored)
        self.last_reload_error: BaseException | None = None

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

    @property
    def map_age_s(self) -> float | None:
        """Seconds since the map held was last (re-)read successfully; None before the first load."""
        with self._lock:
            return None if self._map is None else self._clock() - self._loaded_at

    def current(self) -> ShardMap:
        """The map to route on: the cached one, re-read when it is due (TTL, or a retry after BucketMoved).
        A failed re-read keeps the cached map; with no map at all, the loader's error is raised."""
        with self._lock:
            held = self._map
            if held is not None and self._clock() < self._next_load_at:
                return held
        if held is not None:
            if not self._load_lock.acquire(blocking=False):
                return held  # another thread is re-reading it: route on the last map meanwhile
        else:
            self._load_lock.acquire()
        try:
            with self._lock:
                if self._map is not None and self._clock() < self._next_load_at:
                    return self._map  # loaded by another thread while we waited
            return self._load(keep_on_failure=True)
        finally:
            self._load_lock.release()

    def refresh(self) -> ShardMap:
        """Re-read the map now. A failure raises the loader's error but keeps the cached map for later calls."""
        with self._load_lock:
            return self._load(keep_on_failure=False)

    def _load(self, *, keep_on_failure: bool) -> ShardMap:
        """Call the loader (the caller holds `_load_lock`) and keep the newest map seen."""
        try:
            loaded = self._loader()
        except Exception as err:
            now = self._clock()
            with self._lock:
                self.reload_failures += 1
                self.last_reload_error = err
                held = self._map
                if held is None:
                    raise
                self._next_load_at = now + self._reload_retry
                self._moved_refresh_pending = False
            log.warning("shard map reload failed (%s: %s); routing on version %s of set %s, retrying in %.2fs",
                        type(err).__name__, err, held.version, held.set_name, self._reload_retry)
            if keep_on_failure:
                return held
            raise
        now = self._clock()
        with self._lock:
            self.loads += 1
            held = self._map
            forced = self._moved_refresh_pending
            self._moved_refresh_pending = False
            if held is not None and loaded.version < held.version:
                self.stale_loads += 1
                log.warning("shard map reload answered version %s of set %s, older than the version %s held: "
                            "kept the newer one", loaded.version, loaded.set_name, held.version)
                loaded = held
            if held is not None and loaded.version == held.version:
                if forced:  # re-read after a BucketMoved and nothing changed: the fence lasts, back off
                    self._moved_wait = min(self._moved_wait * 2, self._max_retry_after)
            else:
                self._moved_wait = self._retry_after
            self._map = loaded
            self._loaded_at = now
            self._next_load_at = now + self._ttl
            return loaded

    def locate(self, key: str | int) -> Route:
        m = self.current()
        bucket = bucket_of(key, m.buckets, "integer" if m.key_type == "integer" else "text")
        state = m.states.get(bucket)
        if state is not None and state.state == "fenced":
            raise BucketMoved(bucket, state.source, state.target, self._after_moved(m))
        return Route(shard=m.owners[bucket], bucket=bucket, version=m.version)

    def _after_moved(self, m: ShardMap) -> float:
        """A key's bucket is fenced in map `m`: schedule a re-read when the caller's wait is over (one for all
        callers, not one each), so the retry sees the switch instead of the cached fence until the TTL."""
        now = self._clock()
        with self._lock:
            if self._map is not m:
                return self._retry_after  # the map changed meanwhile: retry soon on the new one
            if not self._moved_refresh_pending:
                self._moved_refresh_pending = True
                self._next_load_at = min(self._next_load_at, now + self._moved_wait)
            # at least the base wait: while another thread's re-read is in flight, callers do not spin
            return max(self._next_load_at - now, self._retry_after)

    def route(self, key: str | int) -> str:
        return self.locate(key).shard

    def refused(self, err: BaseException) -> bool:
        """True (and the map refreshed) when `err` is a shard's fence refusing a stale route: retry.
        If the map cannot be re-read, the loader's error is raised (the cached map is kept for other keys)."""
        if is_fence_error(err):
            self.refresh()
            return True
        return False
