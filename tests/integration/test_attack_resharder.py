"""Adversarial tests of the resharder reaction and the shard router (branch atk-reshard).

Each test asserts the CORRECT behaviour and fails on the current code; its docstring names the defect.
Fixtures follow tests/integration/test_resharder.py: moto for Reflex's tables, ElastiCache through the
Stubber-checked stub of tests/support/elasticache_stub.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from reflex_core.triggers import TriggerError
from tests.conftest import FakeLambdaContext
from tests.support.elasticache_stub import ElastiCacheStub

GROUP = "sessions"
POLICY = "sessions"
KEY = f"elasticache-rg/{GROUP}"


@pytest.fixture
def stub(world) -> ElastiCacheStub:
    stub = ElastiCacheStub()
    stub.add_group(GROUP, 3)
    world.overrides["elasticache"] = stub
    return stub


@pytest.fixture
def reshard(world, clock, stub):
    from resharder.handler import lambda_handler

    world.runtime(clock, reaction="resharder")

    def invoke(event: Any) -> dict[str, Any]:
        return lambda_handler(event, FakeLambdaContext())

    return invoke


def console(command: str, **extra: Any) -> dict[str, Any]:
    return {"command": command, "policy": POLICY, "reason": "attack run", "operator": "alice"} | extra


def alarm_event(name: str, state: str, at: str, previous: str = "OK") -> dict[str, Any]:
    return {
        "version": "0", "id": f"evt-{name}-{state}-{at}", "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch", "account": "123456789012", "time": at, "region": "us-east-1",
        "resources": [f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}"],
        "detail": {"alarmName": name,
                   "state": {"value": state, "reason": "test", "timestamp": at.replace("Z", ".000+0000")},
                   "previousState": {"value": previous, "reason": "test", "timestamp": "2026-11-26T06:00:00.000+0000"},
                   "configuration": {"description": "memory of the sessions cache above 80 %"}},
    }


def lose_response_after_landing(stub: ElastiCacheStub, code: str = "InternalFailure") -> None:
    """The next ModifyReplicationGroupShardConfiguration lands (the group starts resharding) but its answer is
    lost: the caller sees an error."""
    original = stub.modify_replication_group_shard_configuration
    state = {"armed": True}

    def modify(**params: Any) -> Any:
        result = original(**params)
        if state["armed"]:
            state["armed"] = False
            raise ClientError({"Error": {"Code": code, "Message": "response lost"}},
                              "ModifyReplicationGroupShardConfiguration")
        return result

    stub.modify_replication_group_shard_configuration = modify  # type: ignore[method-assign]


# --------------------------------------------------------------------------- lax payload types


@pytest.mark.parametrize(("field", "value"), [("count", True), ("count", "2"), ("count", 2.0),
                                              ("dry_run", "no"), ("dry_run", 0)])
def test_console_payload_types_are_strict_like_the_scaler(field: str, value: Any) -> None:
    """Defect: the resharder's `_Command` is a lax pydantic model (no `strict=True`), unlike the scaler's and the
    promoter's commands (tests/unit/test_strict_payloads.py, issue 8 #7). `"count": true` validates as 1 and
    adds a shard, `"count": "2"` as 2, `"dry_run": "no"` / `0` as a real (non-dry) run. Expected: each is
    refused with an error naming the field, as the scaler refuses them."""
    from resharder.resharding_reaction import _validate_command

    with pytest.raises(TriggerError) as err:
        _validate_command(console("add_shards") | {field: value}, "", require_operator=True)
    assert any(e.startswith(f"{field}:") for e in err.value.errors), err.value.errors


def test_a_boolean_count_adds_no_shard_through_the_handler(world, reshard, stub) -> None:
    """Defect (end to end): `{"command": "add_shards", "count": true}` is accepted as count=1 and sends a real
    ModifyReplicationGroupShardConfiguration. Expected: rejected:validation, nothing sent."""
    response = reshard(console("add_shards", count=True))
    assert response["status"] == "rejected", response
    assert stub.modifications == []


# --------------------------------------------------------------------------- a lost response


def test_a_lost_response_whose_change_landed_is_completed_by_the_retry_not_paged_as_someone_elses(
        world, reshard, stub, clock) -> None:
    """Defect: the add_shards call lands (the group starts resharding) but its answer is lost (a 5xx / timeout).
    The failed attempt reads the target: `status: modifying` with the old count matches neither `before` nor
    `intended` ({count: 4, status: available}), so the verdict is `unknown`. Lambda's retry a minute later (the
    group is still resharding, which takes minutes to hours) finds the open intent, gets `unknown` again and
    closes it as `skipped:target-changed` ("changed by someone else", paged) although the change is Reflex's
    own. The audit trail never says `executed` for a change Reflex made, and no scale-out cooldown is recorded.
    Expected: the retry recognises its own in-flight resharding (execute() even says it does: "Our first call
    went through ... do not send another one") and completes the action (executed, cooldown recorded)."""
    lose_response_after_landing(stub)
    event = alarm_event("sessions-memory-high", "ALARM", "2026-11-26T08:59:00Z")
    with pytest.raises(Exception):  # noqa: B017 - ActionFailed: Lambda retries the event
        reshard(event)
    assert len(stub.modifications) == 1 and stub.groups[GROUP].status == "modifying"
    clock.advance(60)
    try:
        response = reshard(event)  # Lambda's retry of the same event
    except Exception as err:  # noqa: BLE001
        response = {"raised": repr(err)}
    outcomes = [r["outcome"] for r in world.audit_records()]
    assert "skipped:target-changed" not in outcomes, (outcomes, response)
    assert outcomes[-1] == "executed", (outcomes, response)
    assert len(stub.modifications) == 1


def test_after_a_lost_response_the_scale_out_cooldown_still_holds(world, reshard, stub, clock) -> None:
    """Defect (consequence of the above): because the retry closes Reflex's own landed change as
    `target-changed`, no scale-out time is recorded. When the resharding completes a few minutes later and the
    memory alarm is still in ALARM, the periodic check adds another shard at once, ignoring `cooldown_s` (1800 s)
    -- two shards added within minutes from one alarm. Expected: the second addition waits for the cooldown."""
    lose_response_after_landing(stub)
    event = alarm_event("sessions-memory-high", "ALARM", "2026-11-26T08:59:00Z")
    with pytest.raises(Exception):  # noqa: B017
        reshard(event)
    clock.advance(60)
    try:
        reshard(event)
    except Exception:  # noqa: BLE001, S110
        pass
    stub.finish(GROUP)  # resharding done: 4 shards, available
    clock.advance(300)
    response = reshard({"reflex_schedule": {"name": "reflex-dev-resharder-evaluate", "operation": "evaluate",
                                            "scheduled_time": "2026-11-26T09:10:00Z", "execution_id": "x"}})
    assert len(stub.modifications) == 1, (stub.modifications, response)
