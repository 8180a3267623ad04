"""What the resharder's tests share: the `sessions` replication group of config/dev.yaml behind the Stubber-checked
ElastiCache stub (tests/support/elasticache_stub.py; moto has no ModifyReplicationGroupShardConfiguration), the
real handler, and the events it takes. Test modules import the fixtures `stub` and `reshard` by name."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from reflex_core.clock import iso
from tests.conftest import FakeLambdaContext
from tests.support.elasticache_stub import ElastiCacheStub

GROUP = "sessions"
POLICY = "sessions"
KEY = f"elasticache-rg/{GROUP}"


@pytest.fixture
def stub(world: Any) -> ElastiCacheStub:
    stub = ElastiCacheStub()
    stub.add_group(GROUP, 3)
    world.overrides["elasticache"] = stub
    return stub


@pytest.fixture
def reshard(world: Any, clock: Any, stub: ElastiCacheStub) -> Callable[[Any], dict[str, Any]]:
    from resharder.handler import lambda_handler

    world.runtime(clock, reaction="resharder")

    def invoke(event: Any) -> dict[str, Any]:
        return lambda_handler(event, FakeLambdaContext())

    return invoke


def console(command: str, reason: str = "test run", **extra: Any) -> dict[str, Any]:
    return {"command": command, "policy": POLICY, "reason": reason, "operator": "alice"} | extra


def alarm_event(name: str, state: str, at: str, previous: str = "OK") -> dict[str, Any]:
    """A CloudWatch "Alarm State Change" event as EventBridge delivers it."""
    return {
        "version": "0", "id": f"evt-{name}-{state}-{at}", "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch", "account": "123456789012", "time": at, "region": "us-east-1",
        "resources": [f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}"],
        "detail": {"alarmName": name,
                   "state": {"value": state, "reason": "test", "timestamp": at.replace("Z", ".000+0000")},
                   "previousState": {"value": previous, "reason": "test", "timestamp": "2026-11-26T06:00:00.000+0000"},
                   "configuration": {"description": "memory of the sessions cache above 80 %"}},
    }


def schedule(execution: str, at: datetime | None = None) -> dict[str, Any]:
    """One run of the evaluate schedule; runs are told apart by their scheduled time (the execution id is per
    delivery attempt)."""
    return {"reflex_schedule": {"name": "reflex-dev-resharder-evaluate", "operation": "evaluate",
                                "scheduled_time": iso(at) if at else "2026-11-26T09:00:00Z",
                                "execution_id": execution}}
