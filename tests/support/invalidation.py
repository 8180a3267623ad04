"""Helpers of the invalidation tests: a small config, a moto world with the invalidation resources, events,
and keys on the shared local Redis under a prefix of their own (removed afterwards)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import redis

from reflex_core.clock import VirtualClock
from reflex_core.config import ReflexConfig, parse_config
from tests.support.events import custom_event

PORT = int(os.environ.get("REFLEX_REDIS_PORT", "6379"))
CONTENT = {"source": "app.content", "detail_type": "ContentChanged"}
DEPLOYED = {"source": "app.deploy", "detail_type": "DeploymentCompleted"}


def shared_redis_up() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=PORT, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def make_config(*, caches: list[dict[str, Any]] | None = None, cdn: list[dict[str, Any]] | None = None,
                **extra: Any) -> ReflexConfig:
    """A stage `itest` with only an `invalidation:` section (no scaling, no promotion: a fast moto world)."""
    section: dict[str, Any] = {"caches": caches or [], "cdn": cdn or [], **extra}
    return parse_config({"stage": "itest", "notify": {"topic_name": "reflex-itest"}, "invalidation": section},
                        "test config")


def cache_entry(name: str = "catalog", *, namespace: str = "shop", **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "redis": {"host": "127.0.0.1", "port": PORT, "tls": False},
                             "tag_namespace": namespace, "on_events": [CONTENT],
                             "continuation": {"time_budget_s": 30, "retry_delay_s": 0, "max_retries": 2}}
    entry.update(overrides)
    return entry


def cdn_entry(name: str = "site", **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "distribution_id": "E2EXAMPLE0TEST1", "coalesce_window_s": 30,
                             "on_events": [CONTENT],
                             "origin": {"bucket": f"{name}-origin-itest",
                                        "path_rules": [{"key_prefix": "site/", "path_prefix": "/",
                                                        "pretty_suffixes": [".html"]}]},
                             "tracking": {"poll_s": 60, "give_up_after_s": 3600}}
    entry.update(overrides)
    return entry


@contextlib.contextmanager
def invalidation_env(config: ReflexConfig, clock: VirtualClock, *, redis_factory: Any = "local",
                     propagation_s: float = 0.0, origin_objects: dict[str, list[str]] | None = None) -> Iterator[Any]:
    """`redis_factory`: "local" (every cache is the shared Redis), None (the real client built from the config:
    TLS, AUTH from Secrets Manager, ...), or a factory."""
    from moto import mock_aws

    from invalidator.invalidation_runtime import install_invalidation_runtime
    from reflex_core.runtime import install_runtime
    from simulator.aws_world import create_world
    from simulator.invalidation_world import create_invalidation_world, local_redis_factory

    try:
        with mock_aws():
            world = create_world(config)
            world.runtime(clock)
            factory = local_redis_factory(port=PORT) if redis_factory == "local" else redis_factory
            yield create_invalidation_world(world, clock, redis_factory=factory,
                                            propagation_s=propagation_s, origin_objects=origin_objects)
    finally:
        install_runtime(None)
        install_invalidation_runtime(None)


def content_changed(detail: dict[str, Any], at: datetime, **kw: Any) -> dict[str, Any]:
    return custom_event(kw.pop("source", "app.content"), kw.pop("detail_type", "ContentChanged"), detail, at)


def s3_event(detail_type: str, bucket: str, key: str, at: datetime) -> dict[str, Any]:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": "aws.s3",
            "account": "123456789012", "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {"version": "0", "bucket": {"name": bucket},
                       "object": {"key": key, "size": 5, "etag": "b1946ac92492d2347c6235b4d2611184"},
                       "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012", "reason": "PutObject"}}


def console(command: str, **kw: Any) -> dict[str, Any]:
    return {"command": command, "reason": kw.pop("reason", "test run"), "operator": kw.pop("operator", "sre"), **kw}


def outcomes(response: dict[str, Any]) -> list[str]:
    """The audited decisions of a response (a quiet one, e.g. nothing for this cache, is only logged)."""
    return [d["outcome"] for d in response.get("decisions", []) if d.get("audit_id")]


def audit_by_operation(world: Any, operation: str) -> list[dict[str, Any]]:
    return [r for r in world.world.audit_records() if r["operation"] == operation]


class KeySpace:
    """Keys of one test on the shared Redis: a unique prefix and tag namespace, deleted at the end."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.id = uuid.uuid4().hex[:10]
        self.prefix = f"reflex-inv-test:{self.id}:"
        self.namespace = f"t{self.id}"

    def key(self, name: str) -> str:
        return self.prefix + name

    def fill(self, names: list[str], value: str = "v") -> None:
        pipe = self.client.pipeline(transaction=False)
        for i, name in enumerate(names):
            pipe.set(self.key(name), value)
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()

    def count(self, pattern: str = "*") -> int:
        return len(set(self.client.scan_iter(match=self.prefix + pattern, count=1000)))

    def cleanup(self) -> None:
        for match in (self.prefix + "*", f"tag:{{{self.namespace}:*"):
            keys = list(self.client.scan_iter(match=match, count=1000))
            for i in range(0, len(keys), 500):
                self.client.unlink(*keys[i:i + 500])


