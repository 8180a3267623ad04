"""Fixtures for the invalidator's console test events (events/invalidator/): the dev world of the harness plus the
invalidation resources of config/dev.yaml, with every cache answered by a throw-away Redis server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.redis_cluster import RedisServer, redis_binaries_available


@pytest.fixture(scope="module")
def invalidation_redis() -> Iterator[RedisServer]:
    if not redis_binaries_available():
        pytest.skip("redis-server not installed")
    with RedisServer() as server:
        yield server


@pytest.fixture
def invalidator_invoke(world: Any, clock: Any, invalidation_redis: RedisServer) -> Iterator[Callable[..., Any]]:
    import redis

    from invalidator.invalidation_runtime import install_invalidation_runtime
    from simulator.invalidation_world import create_invalidation_world, local_redis_factory
    from tests.conftest import FakeLambdaContext

    redis.Redis(host="127.0.0.1", port=invalidation_redis.port).flushdb()  # our own throw-away server
    env = create_invalidation_world(world, clock, redis_factory=local_redis_factory(port=invalidation_redis.port))

    def invoke(event: Any, context: Any = None) -> Any:
        return env.invoke("invalidator", event, context or FakeLambdaContext())

    yield invoke
    install_invalidation_runtime(None)
