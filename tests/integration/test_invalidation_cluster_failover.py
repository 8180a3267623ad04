"""Issue 14, defect 1 on a Redis Cluster: a primary fails over to its replica (CLUSTER FAILOVER) while a pattern
invalidation is between two continuations. The checkpoint's cursor belongs to the old primary's server; the slots
are now served by another node, which must be scanned from 0, and the run reports complete only when every key that
matched is gone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster

from tests.conftest import T0
from tests.support.invalidation import audit_by_operation, cache_entry, content_changed, invalidation_env, make_config
from tests.support.redis_cluster import RedisClusterProcesses, redis_binaries_available

pytestmark = pytest.mark.skipif(not redis_binaries_available(), reason="redis-server / redis-cli not installed")


@pytest.fixture
def cluster() -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses(primaries=3, replicas=1) as processes:
        yield processes


def _client(cluster: RedisClusterProcesses) -> RedisCluster:
    return RedisCluster(host="127.0.0.1", port=cluster.ports[0])


def _remaining(cluster: RedisClusterProcesses, pattern: str) -> int:
    client = _client(cluster)
    try:
        return sum(len(list(client.get_redis_connection(n).scan_iter(match=pattern, count=1000)))
                   for n in client.get_primaries())
    finally:
        client.close()


def _replica_of(cluster: RedisClusterProcesses, primary_port: int) -> int:
    for server in cluster.servers:
        role = server.cli("role").split()
        if role[:1] == ["slave"] and int(role[2]) == primary_port:
            return server.port
    raise LookupError(f"no replica of {primary_port}")


def test_a_cluster_failover_between_continuations_still_removes_every_key(cluster, clock) -> None:
    client = _client(cluster)
    pipe = client.pipeline()
    for i in range(4000):
        pipe.set(f"item:{i}", "v")
        pipe.set(f"keep:{i}", "v")
    pipe.execute()
    client.close()
    config = make_config(caches=[cache_entry(
        redis={"host": "127.0.0.1", "port": 7000, "cluster": True, "tls": False},
        continuation={"time_budget_s": 0.005, "retry_delay_s": 0})])
    factory: Any = lambda *_: _client(cluster)  # noqa: E731 - a fresh client per invocation, like a cold start
    with invalidation_env(config, clock, redis_factory=factory) as env:
        first = env.invoke("invalidator", content_changed({"patterns": ["item:*"]}, T0))
        checkpoint = first["decisions"][0]["after"]["checkpoint"]
        unfinished = [name for name, cursor in checkpoint["cursors"].items() if int(cursor) != 0]
        assert unfinished, checkpoint  # a primary is mid-scan: its cursor means nothing on another server
        port = int(unfinished[0].rsplit(":", 1)[1])
        cluster.failover(_replica_of(cluster, port))
        env.run_continuations(max_rounds=2000)
        records = audit_by_operation(env, "invalidate_pattern")
    assert _remaining(cluster, "item:*") == 0
    assert _remaining(cluster, "keep:*") == 4000
    finals = [r for r in records if r["after"].get("status") == "complete"]
    assert len(finals) == 1 and finals[0]["after"]["removed"] >= 4000, [r["after"] for r in records]
