"""The resharder through its real handler: moto for Reflex's own tables, ElastiCache through a Stubber-checked stub
(moto has no ModifyReplicationGroupShardConfiguration; see tests/support/elasticache_stub.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from reflex_core.state_store import AlarmMemory
from tests.support.elasticache_stub import even_slots
from tests.support.resharder_world import (  # fixtures `stub`, `reshard`: tests/conftest.py
    GROUP,
    POLICY,
    alarm_event,
    console,
    schedule,
)


def remember(world, clock, name: str, state: str, ago_s: float) -> None:
    rt = world.activate("resharder", clock)
    at = (clock.now() - timedelta(seconds=ago_s)).timestamp()
    rt.store.remember_alarm(AlarmMemory(name=name, state=state, changed_at=at), [f"resharding:{POLICY}"], clock.now())
    # CloudWatch agrees with what Reflex remembers (the resharder acts on CloudWatch's state, not on memory alone).
    world.set_alarm_state(name, state, clock.now() - timedelta(seconds=ago_s))


def only(response: dict[str, Any]) -> dict[str, Any]:
    assert response["status"] == "ok", response
    [decision] = response["decisions"]
    return decision


# --------------------------------------------------------------------------- adding shards


def test_memory_alarm_adds_a_shard_online_and_verify_reads_the_intended_keys(world, reshard, stub):
    decision = only(reshard(alarm_event("sessions-memory-high", "ALARM", "2026-11-26T08:59:00Z")))
    assert decision["outcome"] == "executed"
    assert stub.modifications == [{"ReplicationGroupId": GROUP, "NodeGroupCount": 4, "ApplyImmediately": True}]
    assert decision["intended"] == {"node_group_count": 4, "status": "available", "slots_balanced": True}
    # right after the call ElastiCache is resharding: same keys, status modifying, count not reached yet
    assert decision["after"] == {"node_group_count": 3, "status": "modifying", "slots_balanced": True}
    assert set(decision["after"]) == set(decision["intended"])
    assert decision["before"]["slots"] == dict(zip(["0001", "0002", "0003"], [5461, 5462, 5461], strict=True))
    [record] = world.audit_records()
    assert record["outcome"] == "executed" and record["action"]["operation"] == "add_shards"

    stub.finish(GROUP)
    status = only(reshard(console("status")))
    assert status["outcome"] == "skipped:status"
    assert status["before"]["node_group_count"] == 4 and status["before"]["status"] == "available"


def test_a_second_change_while_modifying_is_refused_not_sent(world, reshard, stub, clock):
    only(reshard(console("add_shards")))
    clock.advance(3600)  # past the cooldown: only the group's state stops the second change
    decision = only(reshard(console("add_shards", request_id="second")))
    assert decision["outcome"] == "skipped:busy"
    assert "modifying" in decision["detail"] and "resharding 0 %" in decision["detail"]
    assert len(stub.modifications) == 1


def test_elasticache_itself_refuses_a_change_while_modifying(stub):
    """What the plan protects against: the documented InvalidReplicationGroupState error."""
    stub.add_group("busy", 3, status="modifying")
    with pytest.raises(ClientError) as err:
        stub.modify_replication_group_shard_configuration(ReplicationGroupId="busy", NodeGroupCount=4,
                                                           ApplyImmediately=True)
    assert err.value.response["Error"]["Code"] == "InvalidReplicationGroupState"


def test_the_stub_checks_requests_against_the_service_model(stub):
    with pytest.raises(ParamValidationError):
        stub.modify_replication_group_shard_configuration(ReplicationGroupId=GROUP, NodeGroupCount="4",
                                                           ApplyImmediately=True)
    with pytest.raises(ParamValidationError):
        stub.modify_replication_group_shard_configuration(ReplicationGroupId=GROUP, NodeGroupCount=4)


def test_cooldown_and_bounds_limit_additions(world, reshard, stub, clock):
    only(reshard(console("add_shards", count=2)))
    assert stub.modifications[-1]["NodeGroupCount"] == 5
    stub.finish(GROUP)
    clock.advance(60)
    assert only(reshard(console("add_shards", request_id="b")))["outcome"] == "skipped:cooldown"
    clock.advance(1800)
    too_many = only(reshard(console("add_shards", count=3, request_id="c")))
    assert too_many["outcome"] == "skipped:step-too-large"
    stub.groups[GROUP].node_groups = dict(zip([f"{i:04d}" for i in range(1, 13)], even_slots(12), strict=True))
    assert only(reshard(console("add_shards", request_id="d")))["outcome"] == "skipped:at-max"
    assert len(stub.modifications) == 1


def test_dry_run_and_kill_switch_change_nothing(world, reshard, stub):
    dry = only(reshard(console("add_shards", dry_run=True)))
    assert dry["outcome"] == "dry-run" and dry["intended"]["node_group_count"] == 4
    world.set_kill_switch("resharder", True)
    world.activate("resharder").kill_switch.invalidate()  # no waiting for the 30 s cache
    killed = only(reshard(console("add_shards", request_id="k")))
    assert killed["outcome"] == "skipped:kill-switch"
    assert stub.modifications == []


# --------------------------------------------------------------------------- removing shards


def test_remove_shards_is_refused_while_an_alarm_of_the_policy_is_in_alarm(world, reshard, stub, clock):
    stub.add_group(GROUP, 4)
    remember(world, clock, "sessions-memory-high", "ALARM", ago_s=30)
    decision = only(reshard(console("remove_shards")))
    assert decision["outcome"] == "skipped:alarm-active"
    assert "sessions-memory-high" in decision["detail"]
    assert stub.modifications == []


def test_evaluator_removes_a_shard_only_once_calm_long_enough(world, reshard, stub, clock):
    stub.add_group(GROUP, 4)
    remember(world, clock, "sessions-memory-high", "OK", ago_s=3600)
    early = reshard(schedule("early"))
    assert early["status"] == "ok" and stub.modifications == [] and world.audit_records() == []
    clock.advance(3700)  # now OK for 7,300 s > when_ok_for_s 7,200
    response = reshard(schedule("calm", clock.now()))
    assert [d["outcome"] for d in response["decisions"]] == ["executed"]
    # four even shards: the most recently added one goes
    assert stub.modifications == [{"ReplicationGroupId": GROUP, "NodeGroupCount": 3, "ApplyImmediately": True,
                                   "NodeGroupsToRemove": ["0004"]}]


def test_console_removal_picks_the_shard_with_the_fewest_slots(world, reshard, stub):
    stub.add_group(GROUP, 4, slots=["0-4095", "4096-7000", "7001-12287", "12288-16383"])
    decision = only(reshard(console("remove_shards")))
    assert decision["outcome"] == "executed"
    assert stub.modifications[0]["NodeGroupsToRemove"] == ["0002"]
    stub.finish(GROUP)
    assert sorted(stub.groups[GROUP].node_groups) == ["0001", "0003", "0004"]


# --------------------------------------------------------------------------- rebalancing


def test_rebalance_sends_the_current_count_only_when_slots_are_uneven(world, reshard, stub):
    balanced = only(reshard(console("rebalance")))
    assert balanced["outcome"] == "skipped:balanced"
    stub.add_group(GROUP, 3, slots=["0-9999", "10000-12999", "13000-16383"])
    decision = only(reshard(console("rebalance", request_id="r2")))
    assert decision["outcome"] == "executed"
    assert stub.modifications == [{"ReplicationGroupId": GROUP, "NodeGroupCount": 3, "ApplyImmediately": True}]
    assert decision["before"]["slots_balanced"] is False


def test_periodic_check_rebalances_quietly_when_balanced(world, reshard, stub):
    response = reshard(schedule("quiet"))
    assert response["status"] == "ok"
    assert world.audit_records() == []  # balanced: logged, not audited
    assert stub.modifications == []


# --------------------------------------------------------------------------- retries and refusals


def test_execute_does_not_send_a_second_change_on_a_retry(world, clock, stub):
    from resharder.resharding_reaction import ReshardingReaction

    rt = world.runtime(clock, reaction="resharder")
    reaction = ReshardingReaction()
    [intent] = reaction.intents(_console_trigger(console("add_shards")), _command(console("add_shards")), rt, None)
    action = reaction.plan(intent, rt)
    reaction.execute(action, rt)
    reaction.execute(action, rt)  # a retry after a lost response: the group is modifying
    stub.finish(GROUP)
    reaction.execute(action, rt)  # long after: the count is already the intended one
    assert len(stub.modifications) == 1
    assert reaction.verify(action, rt) == action.intended


def test_not_cluster_mode_is_skipped(world, reshard, stub):
    stub.add_group(GROUP, 1, cluster_enabled=False)
    assert only(reshard(console("add_shards")))["outcome"] == "skipped:not-cluster-mode"


@pytest.mark.parametrize(("payload", "field"), [
    (console("add_shards", count="two"), "count"),
    (console("add_shards", count=0), "count"),
    (console("split"), "command"),
    (console("rebalance") | {"policy": "nope"}, "policy"),
    ({k: v for k, v in console("add_shards").items() if k != "operator"}, "operator"),
    (console("status", extra=1), "extra"),
])
def test_malformed_commands_are_rejected_naming_the_field_and_audited(world, reshard, stub, payload, field):
    response = reshard(payload)
    assert response["status"] == "rejected"
    assert any(field in error for error in response["errors"]), response["errors"]
    assert [r["outcome"] for r in world.audit_records()] == ["rejected:validation"]
    assert stub.calls == []


def _console_trigger(payload: dict[str, Any]):
    from datetime import UTC

    from reflex_core.triggers import parse_trigger

    return parse_trigger(payload, datetime(2026, 11, 26, 9, tzinfo=UTC), "req-1")


def _command(payload: dict[str, Any]):
    from resharder.resharding_reaction import _validate_command

    return _validate_command(payload, "", require_operator=True)
