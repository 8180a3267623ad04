"""What the invalidation functions need beyond the core runtime, built once per process and injectable.

* `InvalidationSettings`: what only the deployed stack knows (queue URLs, the endpoint and secret of a cache
  the stack created, the id of a distribution it created), from one JSON environment variable
  `REFLEX_INVALIDATION` set by the CDK constructs.
* `InvalidationRuntime`: the Redis client of each cache (built lazily, cached, secrets from Secrets Manager
  through the core's clients), the time budget of the current invocation, and the delays of queued messages.
  Tests and the simulator install one with `install_invalidation_runtime` (a local Redis, no SQS delays).
* `invocation(context)`: the Lambda context's deadline for the current invocation, and what the reaction tells
  its entry point (a failure that must not be retried).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from invalidator.redis_connection import RedisConnectionSettings, SecretScrubber, build_redis_client
from invalidator.redis_invalidation import RedisInvalidator
from reflex_core.invalidation_config import MANAGED, CacheConfig, CdnConfig, InvalidationStageConfig
from reflex_core.observability import logger
from reflex_core.runtime import Runtime

ENV_NAME = "REFLEX_INVALIDATION"
# Work stops this long before the Lambda deadline, leaving time to checkpoint, queue the rest and audit.
DEADLINE_RESERVE_S = 8.0
MAX_SQS_DELAY_S = 900


class ManagedEndpoint(BaseModel):
    """A replication group the stack created: where it listens and which secret holds its AUTH token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    secret_id: str = Field(min_length=1)
    cluster: bool = False


class InvalidationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    continuation_queue_url: str = ""
    cdn_queue_urls: dict[str, str] = Field(default_factory=dict)
    managed_caches: dict[str, ManagedEndpoint] = Field(default_factory=dict)
    managed_distributions: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> InvalidationSettings:
        env = os.environ if environ is None else environ
        raw = env.get(ENV_NAME, "")
        if not raw:
            return cls()
        try:
            return cls.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as err:
            raise RuntimeError(f"{ENV_NAME} is not valid: {str(err)[:300]}") from None

    def to_env(self) -> dict[str, str]:
        return {ENV_NAME: self.model_dump_json()}


RedisFactory = Callable[[CacheConfig, RedisConnectionSettings, Runtime[InvalidationStageConfig]], Any]
# One per process: every token a credential provider fetches is registered with it, and it sits on the log handler.
_SCRUBBER = SecretScrubber()


class InvalidationRuntime:
    def __init__(self, settings: InvalidationSettings, *, redis_factory: RedisFactory | None = None,
                 queue_delays: bool = True, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._factory = redis_factory
        self.queue_delays = queue_delays
        self.sleep = sleep
        self.monotonic = monotonic
        self.scrubber = _SCRUBBER
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._install_scrubber()

    def _install_scrubber(self) -> None:
        # Defence in depth: the providers register every token they fetch; no log line can then carry one.
        handler = getattr(logger, "registered_handler", None)
        if handler is not None and self.scrubber not in handler.filters:
            handler.addFilter(self.scrubber)

    # ------------------------------------------------------------------ caches
    def connection(self, cache: CacheConfig) -> RedisConnectionSettings:
        if cache.redis is not None:
            # The cache health collector only reads INFO: it connects as the cache's read-only RBAC user if any.
            return cache.redis.for_health_collector() if os.environ.get("REFLEX_REACTION") == "cache_health" \
                else cache.redis
        endpoint = self.settings.managed_caches.get(cache.name)
        if endpoint is None:
            raise LookupError(f"cache {cache.name!r} is created by the stack but its endpoint is not in "
                              f"{ENV_NAME}")
        return RedisConnectionSettings(host=endpoint.host, port=endpoint.port, cluster=endpoint.cluster, tls=True,
                                       auth="secret", secret_id=endpoint.secret_id,
                                       client_name="reflex-invalidator")

    def redis(self, cache: CacheConfig, rt: Runtime[InvalidationStageConfig]) -> Any:
        with self._lock:
            client = self._clients.get(cache.name)
            if client is None:
                settings = self.connection(cache)
                if self._factory is not None:
                    client = self._factory(cache, settings, rt)
                else:
                    client = build_redis_client(settings, secrets_client=rt.clients.secretsmanager,
                                                region=os.environ.get("AWS_REGION"), scrubber=self.scrubber)
                self._clients[cache.name] = client
            return client

    def invalidator(self, cache: CacheConfig, rt: Runtime[InvalidationStageConfig]) -> RedisInvalidator:
        return RedisInvalidator(self.redis(cache, rt), tag_namespace=cache.tag_namespace,
                                scan_count=cache.scan.count, batch_size=cache.scan.batch_size,
                                pause_s=cache.scan.pause_ms / 1000.0, strategy=cache.scan.strategy,
                                sleep=self.sleep)

    def forget_client(self, cache_name: str) -> None:
        """Drop a cached client (after a failure: the next attempt reconnects, and re-reads a rotated secret)."""
        with self._lock:
            client = self._clients.pop(cache_name, None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    # ------------------------------------------------------------------ CDN
    def distribution_id(self, cdn: CdnConfig) -> str:
        if cdn.distribution_id != MANAGED:
            return cdn.distribution_id
        found = self.settings.managed_distributions.get(cdn.name)
        if not found:
            raise LookupError(f"distribution {cdn.name!r} is created by the stack but its id is not in {ENV_NAME}")
        return found

    def cdn_queue_url(self, name: str) -> str:
        url = self.settings.cdn_queue_urls.get(name)
        if not url:
            raise LookupError(f"no coalescing queue for cdn {name!r} in {ENV_NAME}")
        return url

    def delay(self, seconds: float) -> int:
        """The SQS DelaySeconds to use (none in the simulator and tests, where a virtual clock decides)."""
        return max(0, min(MAX_SQS_DELAY_S, int(seconds))) if self.queue_delays else 0

    # ------------------------------------------------------------------ time
    def time_budget(self, configured_s: float) -> float:
        """Seconds of work this invocation may still do: the configured budget, less if the deadline is near."""
        state = _INVOCATION.get()
        if state is None or state.deadline is None:
            return configured_s
        left = state.deadline - self.monotonic() - DEADLINE_RESERVE_S
        return max(0.0, min(configured_s, left))


_current: InvalidationRuntime | None = None
_current_lock = threading.Lock()


def install_invalidation_runtime(runtime: InvalidationRuntime | None) -> None:
    global _current
    with _current_lock:
        _current = runtime


def current_invalidation_runtime() -> InvalidationRuntime:
    global _current
    with _current_lock:
        if _current is None:
            _current = InvalidationRuntime(InvalidationSettings.from_env())
        return _current


# --------------------------------------------------------------------------- the current invocation


@dataclass
class InvocationState:
    deadline: float | None = None
    # Set by the reaction when it audited a failure that a retry cannot fix (retries exhausted): the entry
    # then answers instead of raising, so neither Lambda nor SQS runs it again.
    final_failures: list[str] = field(default_factory=list)


_INVOCATION: contextvars.ContextVar[InvocationState | None] = contextvars.ContextVar("reflex_invocation",
                                                                                    default=None)


@contextlib.contextmanager
def invocation(context: Any, monotonic: Callable[[], float] = time.monotonic) -> Iterator[InvocationState]:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    deadline = monotonic() + remaining() / 1000.0 if callable(remaining) else None
    state = InvocationState(deadline=deadline)
    token = _INVOCATION.set(state)
    try:
        yield state
    finally:
        _INVOCATION.reset(token)


def mark_final_failure(what: str) -> None:
    state = _INVOCATION.get()
    if state is not None:
        state.final_failures.append(what)
