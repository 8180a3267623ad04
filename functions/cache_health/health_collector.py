"""Reads Redis `INFO` of every configured cache and publishes what an SRE alarms on, as EMF metrics.

Per cache (dimensions `stage`, `cache`), summed over every primary in cluster mode:

| metric | from INFO | unit |
|---|---|---|
| `CacheHits`, `CacheMisses` | `keyspace_hits`, `keyspace_misses`, since the previous collection | Count |
| `CacheHitRatio` | hits / (hits + misses) over that interval (not published without traffic) | Percent |
| `CacheEvictions` | `evicted_keys` since the previous collection | Count |
| `CacheUsedMemory` | `used_memory` | Bytes |
| `CacheMemoryUsed` | `used_memory` / `maxmemory` (when a limit is set) | Percent |
| `CacheConnectedClients` | `connected_clients` | Count |
| `CacheUnreachable` | 1 when INFO could not be read | Count |

INFO counters count from the server's start: the previous reading is kept in the state table
(`cachehealth#<cache>`) and a counter lower than before (a restart, a failover) starts a new interval. The
stack's alarms on hit ratio and evictions are ordinary CloudWatch alarms: any reaction can name them.
Reading only: no guardrail applies and nothing is audited.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from invalidator.invalidation_metrics import publish
from invalidator.invalidation_runtime import current_invalidation_runtime
from reflex_core.invalidation_config import CacheConfig, InvalidationStageConfig
from reflex_core.observability import logger, metrics
from reflex_core.runtime import Runtime, current_runtime
from reflex_core.triggers import TriggerError, parse_trigger

COUNTERS = ("keyspace_hits", "keyspace_misses", "evicted_keys")
GAUGES = ("used_memory", "maxmemory", "connected_clients")


def read_info(client: Any) -> dict[str, int]:
    """INFO stats, memory and clients, summed over every primary of a cluster."""
    from redis.cluster import RedisCluster

    nodes = ([client.get_redis_connection(n) for n in client.get_primaries()] if isinstance(client, RedisCluster)
             else [client])
    total = dict.fromkeys((*COUNTERS, *GAUGES), 0)
    for node in nodes:
        info = node.info()
        for name in total:
            total[name] += int(info.get(name, 0) or 0)
    return total


class HealthCollector:
    def collect(self, event: Any, context: Any) -> dict[str, Any]:
        rt = current_runtime(InvalidationStageConfig)
        request_id = getattr(context, "aws_request_id", None) or str(uuid.uuid4())
        metrics.add_metric(name="HealthCollections", unit="Count", value=1)
        try:
            trigger = parse_trigger(event, rt.clock.now(), request_id)
            if trigger.kind == "schedule" and trigger.schedule is not None \
                    and trigger.schedule.operation != "collect":
                raise TriggerError([f"reflex_schedule.operation: unknown operation {trigger.schedule.operation!r} "
                                    "(collect)"])
            if trigger.kind not in ("schedule", "console"):
                raise TriggerError([f"<root>: the cache health collector runs on its schedule (got {trigger.kind})"])
        except TriggerError as err:
            logger.warning("rejected", extra={"errors": err.errors})
            return {"status": "rejected", "errors": err.errors}
        results = {cache.name: self._collect_one(cache, rt) for cache in rt.config.invalidation.caches}
        logger.info("cache health collected", extra={"caches": results})
        return {"status": "ok", "caches": results}

    def _collect_one(self, cache: CacheConfig, rt: Runtime[InvalidationStageConfig]) -> dict[str, Any]:
        from redis.exceptions import RedisError

        runtime = current_invalidation_runtime()
        stage = rt.settings.stage
        try:
            info = read_info(runtime.redis(cache, rt))
        except RedisError as err:
            runtime.forget_client(cache.name)
            publish("CacheUnreachable", 1, MetricUnit.Count, stage=stage, cache=cache.name)
            logger.warning("cache unreachable", extra={"cache": cache.name, "error": type(err).__name__})
            return {"error": type(err).__name__}
        previous = self._previous(cache, rt)
        self._remember(cache, info, rt)
        delta = {name: (info[name] - previous[name] if name in previous and info[name] >= previous[name]
                        else info[name]) for name in COUNTERS}
        out: dict[str, Any] = {"hits": delta["keyspace_hits"], "misses": delta["keyspace_misses"],
                               "evictions": delta["evicted_keys"], "used_memory": info["used_memory"],
                               "connected_clients": info["connected_clients"]}
        publish("CacheHits", delta["keyspace_hits"], MetricUnit.Count, stage=stage, cache=cache.name)
        publish("CacheMisses", delta["keyspace_misses"], MetricUnit.Count, stage=stage, cache=cache.name)
        lookups = delta["keyspace_hits"] + delta["keyspace_misses"]
        if lookups:
            ratio = 100.0 * delta["keyspace_hits"] / lookups
            out["hit_ratio_percent"] = round(ratio, 2)
            publish("CacheHitRatio", ratio, MetricUnit.Percent, stage=stage, cache=cache.name)
        publish("CacheEvictions", delta["evicted_keys"], MetricUnit.Count, stage=stage, cache=cache.name)
        publish("CacheUsedMemory", info["used_memory"], MetricUnit.Bytes, stage=stage, cache=cache.name)
        if info["maxmemory"]:
            used = 100.0 * info["used_memory"] / info["maxmemory"]
            out["memory_used_percent"] = round(used, 2)
            publish("CacheMemoryUsed", used, MetricUnit.Percent, stage=stage, cache=cache.name)
        publish("CacheConnectedClients", info["connected_clients"], MetricUnit.Count, stage=stage, cache=cache.name)
        return out

    @staticmethod
    def _previous(cache: CacheConfig, rt: Runtime[InvalidationStageConfig]) -> dict[str, int]:
        item = rt.clients.dynamodb.get_item(TableName=rt.settings.state_table,
                                            Key={"pk": {"S": f"cachehealth#{cache.name}"}}).get("Item")
        return json.loads(item["doc"]["S"]) if item and "doc" in item else {}

    @staticmethod
    def _remember(cache: CacheConfig, info: dict[str, int], rt: Runtime[InvalidationStageConfig]) -> None:
        doc = {name: info[name] for name in COUNTERS}
        rt.clients.dynamodb.put_item(TableName=rt.settings.state_table, Item={
            "pk": {"S": f"cachehealth#{cache.name}"}, "doc": {"S": json.dumps(doc)},
            "expires_at": {"N": str(int(rt.clock.now().timestamp()) + 7 * 86400)}})
