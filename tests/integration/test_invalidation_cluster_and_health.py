"""Against servers this module starts: the invalidator on a 3-primary Redis Cluster (every primary scanned, tags
routed by slot, continuation with per-node cursors), and the cache health collector (INFO to EMF metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from invalidator.cache_tags import TaggedCache
from simulator.invalidation_scenario import emf_metrics
from tests.conftest import T0
from tests.support.events import schedule
from tests.support.invalidation import (
    audit_by_operation,
    cache_entry,
    content_changed,
    invalidation_env,
    make_config,
    outcomes,
)
from tests.support.redis_cluster import RedisClusterProcesses, RedisServer, redis_binaries_available

pytestmark = [pytest.mark.redis,
              pytest.mark.skipif(not redis_binaries_available(), reason="redis-server/redis-cli not installed")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses(primaries=3) as processes:
        yield processes


@pytest.fixture
def cluster_client(cluster: RedisClusterProcesses) -> Iterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    yield client
    for node in client.get_primaries():
        client.get_redis_connection(node).flushdb()  # our own throw-away cluster
    client.close()


def _size(client: RedisCluster) -> int:
    return sum(client.get_redis_connection(n).dbsize() for n in client.get_primaries())


def _cluster_factory(cluster: RedisClusterProcesses) -> Any:
    return lambda *_: RedisCluster(host="127.0.0.1", port=cluster.ports[0])


def _cluster_config(**continuation: Any):
    return make_config(caches=[cache_entry(
        redis={"host": "127.0.0.1", "port": 7000, "cluster": True, "tls": False},
        continuation={"time_budget_s": 30, "retry_delay_s": 0, **continuation})])


def test_patterns_and_tags_on_every_primary_of_a_cluster(cluster, cluster_client, clock) -> None:
    pipe = cluster_client.pipeline()
    for i in range(1500):
        pipe.set(f"page:{i}", "v")
        pipe.set(f"keep:{i}", "v")
    pipe.execute()
    tagged = TaggedCache(cluster_client, namespace="shop")
    for i in range(40):
        tagged.set(f"fragment:{i}", "html", tags=["product:42"], ttl_s=600)
    with invalidation_env(_cluster_config(), clock, redis_factory=_cluster_factory(cluster)) as env:
        response = env.invoke("invalidator", content_changed({"patterns": ["page:*"], "tags": ["product:42"]}, T0))
        assert outcomes(response) == ["executed", "executed"]
        by_op = {d["operation"]: d["after"] for d in response["decisions"]}
        assert (by_op["invalidate_pattern"]["removed"], by_op["invalidate_pattern"]["nodes"]) == (1500, 3)
        assert by_op["invalidate_tag"]["removed"] == 40
    assert _size(cluster_client) == 1500  # the keep:* keys


def test_a_cluster_scan_continues_with_a_cursor_per_primary(cluster, cluster_client, clock) -> None:
    pipe = cluster_client.pipeline()
    for i in range(3000):
        pipe.set(f"item:{i}", "v")
    pipe.execute()
    config = _cluster_config(time_budget_s=0.001)
    with invalidation_env(config, clock, redis_factory=_cluster_factory(cluster)) as env:
        first = env.invoke("invalidator", content_changed({"patterns": ["item:*"]}, T0))
        checkpoint = first["decisions"][0]["after"]["checkpoint"]
        assert len(checkpoint["cursors"]) + len(checkpoint["done"]) == 3
        env.run_continuations()
        (final,) = [r for r in audit_by_operation(env, "invalidate_pattern") if r["after"]["status"] == "complete"]
        assert final["after"]["removed"] == 3000
    assert _size(cluster_client) == 0


def _collect(env) -> dict[str, Any]:
    return env.invoke("cache_health", schedule("cache-health", "collect", T0))


def test_the_collector_publishes_hit_ratio_evictions_memory_and_clients(clock, capsys) -> None:
    with RedisServer(extra_args=["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]) as server:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        config = make_config(caches=[cache_entry(redis={"host": "127.0.0.1", "port": server.port, "tls": False})])

        def factory(*_: Any) -> redis.Redis:
            return redis.Redis(host="127.0.0.1", port=server.port)

        with invalidation_env(config, clock, redis_factory=factory) as env:
            client.set("a", "1")
            _collect(env)  # the baseline: counters since the server started
            capsys.readouterr()
            for _ in range(3):
                client.get("a")  # hits
            client.get("missing")  # a miss
            for i in range(300):
                client.set(f"big:{i}", "x" * 20_000)  # well past 2 MB: keys are evicted
            response = _collect(env)
            out = capsys.readouterr().out
        assert response["status"] == "ok"
        catalog = response["caches"]["catalog"]
        assert (catalog["hits"], catalog["misses"], catalog["hit_ratio_percent"]) == (3, 1, 75.0)
        assert catalog["evictions"] > 0 and catalog["memory_used_percent"] > 50
        (ratio,) = emf_metrics(out, "CacheHitRatio")
        assert ratio["CacheHitRatio"] == [75.0] and ratio["cache"] == "catalog"
        (evictions,) = emf_metrics(out, "CacheEvictions")
        assert evictions["CacheEvictions"][0] == catalog["evictions"]
        assert emf_metrics(out, "CacheConnectedClients")[0]["CacheConnectedClients"][0] >= 1
        assert emf_metrics(out, "CacheUsedMemory")


def test_the_collector_sums_the_primaries_and_reports_an_unreachable_cache(cluster, cluster_client, clock,
                                                                           capsys) -> None:
    config = make_config(caches=[
        cache_entry("sessions", redis={"host": "127.0.0.1", "port": 7000, "cluster": True, "tls": False}),
        cache_entry("gone", redis={"host": "127.0.0.1", "port": 1, "tls": False})])

    def factory(cache: Any, *_: Any) -> Any:
        if cache.name == "gone":
            return redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        return RedisCluster(host="127.0.0.1", port=cluster.ports[0])

    with invalidation_env(config, clock, redis_factory=factory) as env:
        _collect(env)
        for i in range(30):
            cluster_client.get(f"nothing:{i}")  # misses on every primary
        capsys.readouterr()
        response = _collect(env)
        out = capsys.readouterr().out
    assert response["caches"]["sessions"]["misses"] == 30
    assert response["caches"]["gone"] == {"error": "ConnectionError"}
    (unreachable,) = emf_metrics(out, "CacheUnreachable")
    assert unreachable["cache"] == "gone"


def test_the_collector_refuses_other_operations(clock) -> None:
    with invalidation_env(make_config(caches=[cache_entry()]), clock) as env:
        response = env.invoke("cache_health", schedule("x", "invalidate", T0))
        assert response["status"] == "rejected"
        assert "reflex_schedule.operation" in response["errors"][0]
