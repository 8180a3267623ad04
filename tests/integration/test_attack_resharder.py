"""Adversarial tests of the resharder reaction and the shard router (branch atk-reshard).

Each test asserts the CORRECT behaviour and fails on the current code; its docstring names the defect.
Fixtures follow tests/integration/test_resharder.py: moto for Reflex's tables, ElastiCache through the
Stubber-checked stub of tests/support/elasticache_stub.py.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from reflex_core.triggers import TriggerError
from tests.conftest import FakeLambdaContext
from tests.support.elasticache_stub import ElastiCacheStub
from tests.support.resharder_world import (  # fixtures `stub`, `reshard`: tests/conftest.py
    GROUP,
    KEY,
    POLICY,
    alarm_event,
)
from tests.support.resharder_world import console as _console


def console(command: str, **extra: Any) -> dict[str, Any]:
    return _console(command, reason="attack run", **extra)


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
    # Since the fix the first attempt recognises its own call at once (executed); before, it raised.
    with contextlib.suppress(Exception):
        reshard(event)
    assert len(stub.modifications) == 1 and stub.groups[GROUP].status == "modifying"
    clock.advance(60)
    try:
        response = reshard(event)  # Lambda's retry of the same event
    except Exception as err:  # noqa: BLE001
        response = {"raised": repr(err)}
    outcomes = [r["outcome"] for r in world.audit_records()]
    assert "skipped:target-changed" not in outcomes, (outcomes, response)
    assert outcomes.count("executed") == 1, (outcomes, response)  # the first attempt or its retry, once
    assert len(stub.modifications) == 1


def test_after_a_lost_response_the_scale_out_cooldown_still_holds(world, reshard, stub, clock) -> None:
    """Defect (consequence of the above): because the retry closes Reflex's own landed change as
    `target-changed`, no scale-out time is recorded. When the resharding completes a few minutes later and the
    memory alarm is still in ALARM, the periodic check adds another shard at once, ignoring `cooldown_s` (1800 s)
    -- two shards added within minutes from one alarm. Expected: the second addition waits for the cooldown."""
    lose_response_after_landing(stub)
    event = alarm_event("sessions-memory-high", "ALARM", "2026-11-26T08:59:00Z")
    with contextlib.suppress(Exception):
        reshard(event)
    clock.advance(60)
    with contextlib.suppress(Exception):
        reshard(event)
    stub.finish(GROUP)  # resharding done: 4 shards, available
    clock.advance(300)
    response = reshard({"reflex_schedule": {"name": "reflex-dev-resharder-evaluate", "operation": "evaluate",
                                            "scheduled_time": "2026-11-26T09:10:00Z", "execution_id": "x"}})
    assert len(stub.modifications) == 1, (stub.modifications, response)


# --------------------------------------------------------------------------- someone else's change


def test_a_change_started_by_someone_else_between_plan_and_execute_is_not_audited_as_ours(
        world, reshard, stub, clock) -> None:
    """Defect: plan() reads the group `available`; an operator then starts their own resharding in the console
    (or another tool does); execute() re-reads, finds `modifying` and silently returns ("Our first call went
    through (or someone else's change is running): do not send another one"). The pipeline treats a normal
    return as success: the audit says `executed` for add_shards to 4 shards, which Reflex never sent, and the
    scale-out cooldown starts. Expected: the first attempt of an action that finds the group modifying without
    having sent anything is not `executed` (e.g. `skipped:busy` / superseded), and no ModifyReplicationGroup-
    ShardConfiguration was sent by Reflex."""
    original = stub.describe_replication_groups
    seen = {"n": 0}

    def describe(**params: Any) -> Any:
        seen["n"] += 1
        if seen["n"] == 2:  # after plan's read: someone else's change starts (to 5 shards)
            group = stub.groups[GROUP]
            group.status, group.pending, group.progress = "modifying", {"count": 5, "remove": []}, 0.0
        return original(**params)

    stub.describe_replication_groups = describe  # type: ignore[method-assign]
    response = reshard(console("add_shards"))
    assert stub.modifications == []  # Reflex sent nothing
    [decision] = response["decisions"]
    assert decision["outcome"] != "executed", decision
    rt = world.activate("resharder", clock)
    assert "out" not in rt.store.last_actions(KEY), rt.store.last_actions(KEY)


# --------------------------------------------------------------------------- the shard router


def _map(version: int, owners: list[str], key_type: str = "text", states: dict[int, Any] | None = None):
    from shards.shard_map import ShardMap

    return ShardMap(set_name="orders", buckets=len(owners), key_type=key_type, owners=list(owners),
                    version=version, states=dict(states or {}))


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_router_never_goes_back_to_an_older_map_version() -> None:
    """Defect: Router.current() replaces its map with whatever the loader returns, even an older version (a
    loader reading a lagging replica / regional copy, or a reload racing a refresh that finished later). A
    router that had seen version 5 (bucket 1 switched to shard-b) falls back to version 4 and routes the key
    to the old owner again (every write then refused by the fence, or blocked as `fenced` by the old states).
    Expected: the router keeps the newest version it has seen (a map only moves forward)."""
    from shards.router import Router

    maps = iter([_map(5, ["shard-a", "shard-b"]), _map(4, ["shard-a", "shard-a"])])
    clock = _Clock()
    router = Router(lambda: next(maps), ttl_s=5.0, clock=clock)
    assert router.version == 5
    clock.t = 10.0  # TTL passed: the reload answers an older version
    assert router.version == 5
    moved_key = next(k for k in (f"tenant-{i}" for i in range(100)) if _bucket(k, 2) == 1)
    assert router.route(moved_key) == "shard-b"


def _bucket(key: Any, n: int, key_type: str = "text") -> int:
    from shards.buckets import bucket_of

    return bucket_of(key, n, key_type)  # type: ignore[arg-type]


def test_router_keeps_routing_on_its_last_map_when_a_reload_fails() -> None:
    """Defect: the map is "only a hint for speed: the authority is each shard database's write fence" (router
    docstring), yet when the TTL expires and the reload fails (DynamoDB throttling / a brief outage), route()
    raises and the application cannot write at all, although a perfectly usable (fence-protected) map is in
    memory. Expected: a failed reload keeps serving the last map (and tries again later)."""
    from shards.router import Router

    calls = {"n": 0}

    def loader():
        calls["n"] += 1
        if calls["n"] > 1:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                              "GetItem")
        return _map(3, ["shard-a", "shard-b"])

    clock = _Clock()
    router = Router(loader, ttl_s=5.0, clock=clock)
    first = router.route("tenant-1")
    clock.t = 6.0
    assert router.route("tenant-1") == first


def test_router_refuses_a_none_key_instead_of_routing_the_string_None() -> None:
    """Defect: bucket_of() hashes str(key), so route(None) routes the literal text "None" to some shard, while
    the SQL bucket function gives NULL for a NULL key (the fence / row filter never place such a row). A bug in
    the caller (a missing tenant id) silently writes to an arbitrary shard. Expected: TypeError/ValueError."""
    from shards.router import Router

    router = Router(lambda: _map(1, ["shard-a", "shard-b", "shard-c", "shard-d"]))
    with pytest.raises((TypeError, ValueError)):
        router.route(None)  # type: ignore[arg-type]


def test_router_bytes_key_routes_like_the_sql_function_or_is_refused() -> None:
    """Defect: bucket_of(b"tenant-7") hashes str(b"tenant-7") == "b'tenant-7'", not the key's bytes, so the
    router and the SQL function (md5 over the text column's UTF-8 bytes) disagree for a key read as bytes (e.g.
    from Redis or a Kafka message): the router sends the write to a shard that does not own it. Expected: bytes
    are hashed as their own bytes (same bucket as the str), or refused with TypeError."""
    from shards.buckets import bucket_of

    try:
        got = bucket_of(b"tenant-7", 4096)  # type: ignore[arg-type]
    except TypeError:
        return
    assert got == bucket_of("tenant-7", 4096)


def test_router_boolean_text_key_matches_sql_text_cast() -> None:
    """Defect: for a text key, bucket_of(True) hashes "True" while the SQL expression hashes `true::text` ==
    "true" (PostgreSQL's boolean output). Expected: refused (a boolean is not a shard key) or the same bucket
    as the SQL function."""
    from shards.buckets import bucket_of

    try:
        got = bucket_of(True, 4096)
    except TypeError:
        return
    assert got == bucket_of("true", 4096)


def test_router_float_integer_key_does_not_truncate_differently_from_sql() -> None:
    """Defect: for an integer key, bucket_of(7.9) is int(7.9) % N == 7, while the SQL expression casts
    `(7.9)::bigint`, which ROUNDS to 8: the router and the fence/row filter put the same key in different
    buckets. Expected: a non-integral key is refused (TypeError/ValueError), never silently truncated."""
    from shards.buckets import bucket_of

    with pytest.raises((TypeError, ValueError)):
        bucket_of(7.9, 16, "integer")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- remembered alarm state vs CloudWatch


def _remember(world, clock, name: str, state: str, ago_s: float) -> None:
    from reflex_core.state_store import AlarmMemory

    rt = world.activate("resharder", clock)
    at = (clock.now() - timedelta(seconds=ago_s)).timestamp()
    rt.store.remember_alarm(AlarmMemory(name=name, state=state, changed_at=at), [f"resharding:{POLICY}"], clock.now())


def _evaluate(execution: str, clock) -> dict[str, Any]:
    from reflex_core.clock import iso

    return {"reflex_schedule": {"name": "reflex-dev-resharder-evaluate", "operation": "evaluate",
                                "scheduled_time": iso(clock.now()), "execution_id": execution}}


def test_periodic_removal_checks_cloudwatch_not_only_remembered_alarms(world, reshard, stub, clock) -> None:
    """Defect: the periodic check removes a shard when the alarm MEMORY says every alarm has been OK long enough,
    without asking CloudWatch. A CPU alarm matched by the policy's prefix (`sessions-engine-cpu-`) that has been
    in ALARM since before Reflex was deployed (no event will ever arrive), or a memory alarm whose ALARM event was
    lost, is invisible: the resharder removes a shard -- moving data off shards -- while the cluster is in
    ALARM. The runbook/module promise: "Removing shards is never done while an alarm of the policy is in ALARM,
    whoever asks"; the scaler fixed the same hole ("Remembered state alone never justifies an action:
    CloudWatch's actual state decides", test_scaler_correctness::test_7). Expected: no removal."""
    stub.add_group(GROUP, 4)
    _remember(world, clock, "sessions-memory-high", "OK", ago_s=7300)
    world.set_alarm_state("sessions-memory-high", "OK", clock.now() - timedelta(seconds=7300))
    world.set_alarm_state("sessions-engine-cpu-0001", "ALARM", clock.now() - timedelta(days=1))
    reshard(_evaluate("calm?", clock))
    assert stub.modifications == []


def test_console_removal_is_refused_while_cloudwatch_shows_an_alarm_of_the_policy(world, reshard, stub, clock) -> None:
    """Defect: console `remove_shards` checks only the alarm memory for ALARM. The memory alarm's ALARM event was
    lost (memory still says OK from yesterday) while CloudWatch reports it in ALARM right now: the operator's
    removal goes through during the alarm. Expected: `skipped:alarm-active`, nothing sent ("never ... while an
    alarm of the policy is in ALARM, whoever asks")."""
    stub.add_group(GROUP, 4)
    _remember(world, clock, "sessions-memory-high", "OK", ago_s=86400)
    world.set_alarm_state("sessions-memory-high", "ALARM", clock.now() - timedelta(seconds=120))
    decision = reshard(console("remove_shards"))["decisions"][0]
    assert stub.modifications == [], decision
    assert decision["outcome"] == "skipped:alarm-active", decision


def test_periodic_repeat_addition_checks_cloudwatch_not_only_remembered_alarms(world, reshard, stub, clock) -> None:
    """Defect: with `repeat_while_alarm`, the periodic check adds a shard whenever the alarm MEMORY says ALARM.
    If the OK event was lost (EventBridge delivery failure, a rejected/DLQ'd event), memory says ALARM forever
    and the resharder keeps adding a shard every cooldown (30 min) up to `bounds.max` while CloudWatch says OK.
    Expected (as the scaler does): the repeat acts only when CloudWatch confirms an alarm of the policy is in
    ALARM; here it is OK, so nothing is sent."""
    _remember(world, clock, "sessions-memory-high", "ALARM", ago_s=3600)
    world.set_alarm_state("sessions-memory-high", "OK", clock.now() - timedelta(seconds=3000))
    reshard(_evaluate("stuck-alarm", clock))
    assert stub.modifications == []


# --------------------------------------------------------------------------- describe shapes with missing fields


def _shape_without(stub: ElastiCacheStub, drop) -> None:
    original = stub._shape

    def shape(group):
        out = original(group)
        drop(out)
        return out

    stub._shape = shape  # type: ignore[method-assign]


def test_a_describe_without_node_groups_never_plans_a_count_below_the_minimum(world, reshard, stub) -> None:
    """Defect: `NodeGroups` is optional in DescribeReplicationGroups' response shape; when it is absent the parser
    reads 0 shards and add_shards plans `add_target(0, 1, bounds) == 1` -- a NodeGroupCount of 1, below
    `bounds.min` (2) and far below the group's real 3 shards: an "add" that would ask ElastiCache to shrink the
    cluster. add_target never applies the minimum. Expected: no ModifyReplicationGroupShardConfiguration is
    sent with a count below bounds.min / below the current count (the plan refuses an unreadable shard count)."""
    _shape_without(stub, lambda s: s.pop("NodeGroups"))
    reshard(console("add_shards"))
    sent = [m["NodeGroupCount"] for m in stub.modifications]
    assert all(n >= 2 for n in sent), sent


def test_missing_slot_ranges_do_not_trigger_a_rebalance(world, reshard, stub, clock) -> None:
    """Defect: `Slots` is optional per node group in the response shape. When absent, slot_count() reads 0 for
    every shard, slots_balanced() says "uneven" and the periodic check (rebalance_slots: true) sends a
    rebalancing ModifyReplicationGroupShardConfiguration -- an online slot migration of the whole cluster --
    on data it could not read (and again every time the group is available, up to the rate limit). Expected:
    unknown slot ranges are not evidence of imbalance; nothing is sent."""
    _shape_without(stub, lambda s: [ng.pop("Slots") for ng in s["NodeGroups"]])
    reshard(_evaluate("no-slots", clock))
    assert stub.modifications == []


def test_bucket_moved_retry_sees_the_switch_instead_of_waiting_for_the_ttl() -> None:
    """Defect: locate() raises BucketMoved(retry_after_s=0.05) from the CACHED map, and nothing makes the next
    call reload it: the documented loop (`except BucketMoved: time.sleep(moved.retry_after_s)`) spins on the same
    stale `fenced` state until the TTL (5 s by default) expires, although the switch (a fence of a few ms,
    recorded as `fence_ms`) finished long before. Writes to the moving bucket stall ~100x longer than the fence.
    Expected: after a BucketMoved, the retry after `retry_after_s` reads the current map (here: switched to
    shard-b) and routes."""
    from shards.router import BucketMoved, Router
    from shards.shard_map import BucketState

    key = "tenant-42"
    b = _bucket(key, 4)
    owners = ["shard-a"] * 4
    fenced = _map(7, owners, states={b: BucketState("fenced", "m1", "shard-a", "shard-b")})
    switched_owners = list(owners)
    switched_owners[b] = "shard-b"
    switched = _map(8, switched_owners, states={b: BucketState("switched", "m1", "shard-a", "shard-b")})
    maps = iter([fenced, switched, switched, switched])
    clock = _Clock()
    router = Router(lambda: next(maps), ttl_s=5.0, retry_after_s=0.05, clock=clock)
    with pytest.raises(BucketMoved) as moved:
        router.route(key)
    clock.t += moved.value.retry_after_s  # the documented wait, then retry (the switch is done by now)
    assert router.route(key) == "shard-b"


# --------------------------------------------------------------------------- completing an open removal


def test_completing_an_interrupted_removal_rechecks_that_no_alarm_is_in_alarm(world, reshard, stub, clock) -> None:
    """Defect: a removal whose first attempt ended `unknown` (the Modify call was throttled and the re-read
    throttled too) leaves its intent open. When the same command is re-sent (or the trigger retried), `_complete`
    reads the group, finds it unchanged (`not-applied`) and runs execute() directly -- without planning again, so
    the `alarm-active` check of plan() is skipped. The memory alarm went into ALARM in between: a shard is
    removed while the cluster is in ALARM ("Removing shards is never done while an alarm of the policy is in
    ALARM, whoever asks"). Expected: nothing is sent; the retry is refused as alarm-active."""
    stub.add_group(GROUP, 4)
    _remember(world, clock, "sessions-memory-high", "OK", ago_s=86400)
    real_modify = stub.modify_replication_group_shard_configuration
    real_describe = stub.describe_replication_groups
    st = {"modify_failed": False, "describes": 0}

    def throttled(op: str) -> ClientError:
        return ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, op)

    def modify(**params: Any) -> Any:
        if not st["modify_failed"]:
            st["modify_failed"] = True
            raise throttled("ModifyReplicationGroupShardConfiguration")
        return real_modify(**params)

    def describe(**params: Any) -> Any:
        st["describes"] += 1
        if st["modify_failed"] and st["describes"] == 3:  # the re-read right after the failed call
            raise throttled("DescribeReplicationGroups")
        return real_describe(**params)

    stub.modify_replication_group_shard_configuration = modify  # type: ignore[method-assign]
    stub.describe_replication_groups = describe  # type: ignore[method-assign]
    first = reshard(console("remove_shards", request_id="shrink-1"))
    assert first["decisions"][0]["outcome"] == "failed:Throttling", first
    clock.advance(120)
    _remember(world, clock, "sessions-memory-high", "ALARM", ago_s=30)  # memory climbs meanwhile
    again = reshard(console("remove_shards", request_id="shrink-1"))  # the operator re-sends the command
    assert stub.modifications == [], again["decisions"]


# --------------------------------------------------------------------------- event sources and policy scope


def test_an_event_source_configured_for_one_policy_cannot_drive_another(world, clock, stub) -> None:
    """Defect: `on_events` is per policy ("sessions" accepts app.ops/ReshardRequested), but validate() only asks
    whether ANY policy lists the event's source and detail-type, then accepts `detail.policy` naming any policy.
    A second policy "carts" that lists no event source at all is reshaped by an app.ops event addressed to it.
    Expected: an event may only drive a policy whose own `on_events` matches it (here: refused / no action on
    carts)."""
    from reflex_core.resharding_config import ReshardingPolicy
    from resharder.handler import lambda_handler

    carts = ReshardingPolicy(name="carts", replication_group="carts", bounds={"min": 2, "max": 8})
    world.config = world.config.model_copy(update={"resharding": [*world.config.resharding, carts]})
    world.runtime(clock, reaction="resharder")
    stub.add_group("carts", 3)
    event = {"version": "0", "id": "ev-carts-1", "detail-type": "ReshardRequested", "source": "app.ops",
             "account": "123456789012", "time": "2026-11-26T08:59:30Z", "region": "us-east-1", "resources": [],
             "detail": {"command": "add_shards", "policy": "carts", "reason": "not yours to ask"}}
    with contextlib.suppress(Exception):
        lambda_handler(event, FakeLambdaContext())
    assert [m for m in stub.modifications if m["ReplicationGroupId"] == "carts"] == []


def test_an_operator_can_override_the_kill_switch_level_on_as_documented(world, reshard, stub) -> None:
    """Defect: docs/architecture.md ("Kill switch levels") promises, at level `on`, "a console command with
    `"override_kill_switch": true` and an operator runs one action, audited as overridden", and the pipeline
    implements it (`Pipeline._override`). But the resharder's command models are `extra="forbid"` without that
    field, so the documented command is rejected (`rejected:validation`, "override_kill_switch: Extra inputs are
    not permitted"): an operator cannot add a shard during an incident while automation is paused. Expected: the
    command runs one add_shards, audited `executed` with the override noted."""
    world.set_kill_switch("resharder", True)
    world.activate("resharder").kill_switch.invalidate()
    response = reshard(console("add_shards", override_kill_switch=True))
    assert response["status"] == "ok", response
    [decision] = response["decisions"]
    assert decision["outcome"] == "executed", decision
    assert "overridden" in decision["detail"]
    assert len(stub.modifications) == 1


def test_a_throttled_intent_write_after_a_successful_change_is_not_recorded_as_someone_elses(
        world, reshard, stub, clock) -> None:
    """Defect (same root as the lost response, reached without any ElastiCache error): the Modify call succeeds,
    then the intent's `applied` write to DynamoDB is throttled (or Lambda times out right there). The retry finds
    the intent still `planned`, reads the group (`modifying`, old count): `unknown`, and closes it as
    `skipped:target-changed` -- "changed by someone else", paged -- although Reflex made the change; the audit
    has no `executed` record and no cooldown is recorded. (The first attempt's record even says
    "failed ... before acting:" for a change that was made.) Expected: the retry completes Reflex's own change
    (`executed`)."""
    rt = world.activate("resharder", clock)
    real = rt.store.advance_intent
    st = {"armed": True}

    def advance(pk: str, status: str, *args: Any, **kwargs: Any) -> Any:
        if st["armed"] and status == "applied":
            st["armed"] = False
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                              "UpdateItem")
        return real(pk, status, *args, **kwargs)

    rt.store.advance_intent = advance  # type: ignore[method-assign]
    event = alarm_event("sessions-memory-high", "ALARM", "2026-11-26T08:59:00Z")
    with contextlib.suppress(Exception):
        reshard(event)
    assert len(stub.modifications) == 1
    clock.advance(60)
    with contextlib.suppress(Exception):
        reshard(event)
    outcomes = [r["outcome"] for r in world.audit_records()]
    assert "executed" in outcomes and "skipped:target-changed" not in outcomes, outcomes


def test_a_removal_waits_for_the_last_additions_cooldown_as_the_runbook_says(world, clock, stub) -> None:
    """Defect: docs/runbooks/resharding.md: "cooldowns (`add_shards.cooldown_s`, default 30 min;
    `remove_shards.cooldown_s`, default 1 h; a removal also waits for the last addition's cooldown)". The guard
    measures a removal against the last addition with the REMOVAL's cooldown (cooldown_block uses in_cooldown_s
    for both), so a policy with a short removal cooldown (here 0 s; the schema allows ge=0) removes a shard
    one minute after an alarm added it -- the oscillation the addition's 30-minute cooldown is meant to
    prevent. Expected: a removal within `add_shards.cooldown_s` of the last addition is `skipped:cooldown`."""
    from resharder.handler import lambda_handler

    [policy] = world.config.resharding
    assert policy.remove_shards is not None
    quick = policy.model_copy(update={"remove_shards": policy.remove_shards.model_copy(update={"cooldown_s": 0})})
    world.config = world.config.model_copy(update={"resharding": [quick]})
    world.runtime(clock, reaction="resharder")
    first = lambda_handler(console("add_shards"), FakeLambdaContext())
    assert first["decisions"][0]["outcome"] == "executed", first
    stub.finish(GROUP)
    clock.advance(60)
    second = lambda_handler(console("remove_shards", request_id="undo"), FakeLambdaContext())
    assert second["decisions"][0]["outcome"] == "skipped:cooldown", second["decisions"]
    assert len(stub.modifications) == 1
