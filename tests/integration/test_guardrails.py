"""Every guardrail of the core, through the real scaler handler against moto.

Each test would fail if its guardrail were removed: it sets up a situation where the action would
otherwise run, and asserts both that capacity did not change and the specific `skipped:<reason>`
(or `dry-run`) in the response and in the audit trail. Where useful, a control step shows the same
action going through once the guardrail no longer applies.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import T0, FakeLambdaContext
from tests.support import events as ev
from tests.support.cloudwatch import mirroring_invoke
from tests.support.queues import subscribe_notices

API_KEY = "ecs-service/web/api"


@pytest.fixture
def invoke(world):
    """The real scaler handler; each alarm transition sent is CloudWatch's state first (DescribeAlarms)."""
    return mirroring_invoke(world)


# --------------------------------------------------------------------------- helpers


def api_desired(world) -> int:
    return world.clients.ecs.describe_services(cluster="web", services=["api"])["services"][0]["desiredCount"]


def set_api_desired(world, n: int) -> None:
    world.clients.ecs.update_service(cluster="web", service="api", desiredCount=n)


def workers_desired(world) -> int:
    return world.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web-workers"])[
        "AutoScalingGroups"][0]["DesiredCapacity"]


def decided(response: dict[str, Any]) -> list[str]:
    return [d["outcome"] for d in response["decisions"]]


def audited(world) -> Counter[str]:
    return Counter(r["outcome"] for r in world.audit_records())


def console(invoke, command: str, policy: str = "api", **kw: Any) -> dict[str, Any]:
    return invoke(ev.console(command, policy, **kw), FakeLambdaContext())


def alarm(invoke, name: str, state: str, at, **kw: Any) -> dict[str, Any]:
    return invoke(ev.eventbridge_alarm(name, state, at, **kw), FakeLambdaContext())


def reinstall(world, clock, **config_changes: Any) -> None:
    """Swap the stage config (same moto account) and reinstall the runtime."""
    world.config = world.config.model_copy(update=config_changes)
    world.runtime(clock)


def with_policy(world, name: str, **changes: Any) -> list[Any]:
    return [p.model_copy(update=changes) if p.name == name else p for p in world.config.scaling]


# --------------------------------------------------------------------------- kill switch


@pytest.mark.parametrize("scope", ["global", "scaler"])
def test_kill_switch_blocks_every_action(scope, world, invoke, clock):
    world.set_kill_switch(scope, True)

    by_alarm = alarm(invoke, "api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0)
    by_hand = console(invoke, "set_capacity", desired=6)

    assert decided(by_alarm) == decided(by_hand) == ["skipped:kill-switch"]
    assert f"'{scope}' is on" in by_alarm["decisions"][0]["detail"]
    assert api_desired(world) == 4
    assert audited(world) == {"skipped:kill-switch": 2}


def test_kill_switch_is_read_at_run_time(world, invoke, clock):
    # override: the operator waives the cooldown, so only the kill switch stands in the way.
    assert decided(console(invoke, "set_capacity", desired=5, override=True)) == ["executed"]
    world.set_kill_switch("global", True)
    clock.advance(world.config.guardrails.kill_switch_cache_s + 1)  # the cached value expires

    assert decided(console(invoke, "set_capacity", desired=6, override=True)) == ["skipped:kill-switch"]
    assert api_desired(world) == 5

    world.set_kill_switch("global", False)
    clock.advance(world.config.guardrails.kill_switch_cache_s + 1)
    assert decided(console(invoke, "set_capacity", desired=6, override=True)) == ["executed"]
    assert api_desired(world) == 6


def _ssm_unreadable(world) -> None:
    from botocore.exceptions import ClientError

    def deny(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}, "GetParameters")

    world.clients.ssm.meta.events.register_first("before-send.ssm.GetParameters", deny)


def test_unreadable_kill_switch_fails_closed(world, invoke):
    _ssm_unreadable(world)

    out = console(invoke, "set_capacity", desired=6)

    assert decided(out) == ["skipped:kill-switch"]
    assert "unreadable" in out["decisions"][0]["detail"]
    assert api_desired(world) == 4


def test_unexpected_kill_switch_value_fails_closed(world, invoke):
    world.clients.ssm.put_parameter(Name=f"{world.settings.kill_switch_prefix}/scaler", Value="maybe",
                                    Type="String", Overwrite=True)

    assert decided(console(invoke, "set_capacity", desired=6)) == ["skipped:kill-switch"]
    assert api_desired(world) == 4


def test_unreadable_kill_switch_can_be_configured_to_fail_open(world, invoke, clock):
    reinstall(world, clock, guardrails=world.config.guardrails.model_copy(update={"kill_switch_on_error": "open"}))
    _ssm_unreadable(world)

    assert decided(console(invoke, "set_capacity", desired=6)) == ["executed"]
    assert api_desired(world) == 6


# --------------------------------------------------------------------------- dry-run


def _assert_dry_run(world, response: dict[str, Any], before: int, intended: int) -> None:
    [d] = response["decisions"]
    assert d["outcome"] == "dry-run"
    assert d["before"]["desired"] == before and d["intended"] == {"desired": intended}
    [record] = [r for r in world.audit_records() if r["id"] == d["audit_id"]]
    assert record["dry_run"] is True
    assert record["action"]["intended"] == {"desired": intended}
    assert record["before"]["desired"] == before
    assert api_desired(world) == before


def test_global_dry_run_records_the_intended_capacity_and_changes_nothing(world, invoke, clock):
    reinstall(world, clock, dry_run=True)

    out = alarm(invoke, "api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0)

    _assert_dry_run(world, out, before=4, intended=6)
    assert decided(console(invoke, "scale_out", "workers")) == ["dry-run"]
    assert workers_desired(world) == 2


def test_policy_dry_run_applies_to_that_policy_only(world, invoke, clock):
    reinstall(world, clock, scaling=with_policy(world, "api", dry_run=True))

    _assert_dry_run(world, console(invoke, "set_capacity", desired=9), before=4, intended=9)
    assert decided(console(invoke, "scale_out", "workers")) == ["executed"]
    assert workers_desired(world) == 3


def test_console_dry_run_changes_nothing_and_starts_no_cooldown(world, invoke, clock):
    _assert_dry_run(world, console(invoke, "scale_out", dry_run=True), before=4, intended=5)
    # A dry-run is not an action: no cooldown, no rate-limit entry.
    assert decided(console(invoke, "scale_out")) == ["executed"]
    assert api_desired(world) == 5


# --------------------------------------------------------------------------- idempotency


def test_one_alarm_transition_delivered_by_every_route_acts_once(world, invoke, clock):
    name, at = "api-cpu-high", T0
    deliveries = [
        ev.eventbridge_alarm(name, "ALARM", at, value=90, threshold=80),
        ev.eventbridge_alarm(name, "ALARM", at, value=90, threshold=80),  # EventBridge redelivery (new id)
        ev.alarm_action(name, "ALARM", at, value=90, threshold=80),
        ev.sns_alarm(name, "ALARM", at, value=90, threshold=80),
    ]
    results = [invoke(e, FakeLambdaContext()) for e in deliveries]

    assert decided(results[0]) == ["executed"]
    assert all(r.get("duplicate") is True for r in results[1:])
    assert api_desired(world) == 5
    assert audited(world) == {"executed": 1, "skipped:duplicate-delivery": 3}


def test_console_request_id_makes_a_command_idempotent(world, invoke):
    first = console(invoke, "set_capacity", desired=7, request_id="chg-1")
    set_api_desired(world, 4)  # someone else changes it back meanwhile
    again = console(invoke, "set_capacity", desired=7, request_id="chg-1")

    assert decided(first) == ["executed"]
    assert again.get("duplicate") is True
    assert api_desired(world) == 4


# --------------------------------------------------------------------------- lock


def _hold_lock(world, owner: str, lease_until: float) -> None:
    world.clients.dynamodb.put_item(TableName=world.settings.state_table, Item={
        "pk": {"S": f"lock#{API_KEY}"}, "owner": {"S": owner}, "lease_until": {"N": f"{lease_until:.3f}"},
        "expires_at": {"N": str(int(lease_until + 86400))}})


def _lock_item(world) -> dict[str, Any] | None:
    return world.clients.dynamodb.get_item(TableName=world.settings.state_table,
                                           Key={"pk": {"S": f"lock#{API_KEY}"}}).get("Item")


def test_a_held_lock_blocks_the_action(world, invoke, clock):
    _hold_lock(world, "another-invocation", clock.now().timestamp() + 60)

    from reflex_core.pipeline import RetryLater

    # A held lock is a refusal that may pass: the asynchronous trigger is raised for Lambda's retry, not answered.
    with pytest.raises(RetryLater, match="skipped:locked"):
        alarm(invoke, "api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0)

    assert api_desired(world) == 4
    assert audited(world) == {"skipped:locked": 1}
    assert _lock_item(world)["owner"]["S"] == "another-invocation", "someone else's lock is left alone"


def test_an_expired_lease_is_taken_over(world, invoke, clock):
    _hold_lock(world, "a-function-that-died", clock.now().timestamp() - 1)

    out = console(invoke, "set_capacity", desired=6)

    assert decided(out) == ["executed"]
    assert api_desired(world) == 6
    assert _lock_item(world) is None, "the new holder released it"


# --------------------------------------------------------------------------- cooldown


def test_scale_out_after_scale_out_waits_for_the_cooldown(world, invoke, clock):
    assert decided(console(invoke, "scale_out")) == ["executed"]  # 4 -> 5
    clock.advance(60)  # < 120 s scale-out cooldown

    blocked = console(invoke, "scale_out")

    assert decided(blocked) == ["skipped:cooldown"]
    assert "scale-out cooldown" in blocked["decisions"][0]["detail"]
    assert api_desired(world) == 5
    clock.advance(61)
    assert decided(console(invoke, "scale_out")) == ["executed"]
    assert api_desired(world) == 7  # 5 + ceil(25 % of 5)


def test_scale_out_may_cut_a_scale_in_cooldown_short(world, invoke, clock):
    assert decided(console(invoke, "scale_in")) == ["executed"]  # 4 -> 3
    clock.advance(10)  # well inside the 300 s scale-in cooldown

    assert decided(console(invoke, "scale_out")) == ["executed"]
    assert api_desired(world) == 4


def test_scale_in_waits_after_a_recent_scale_out(world, invoke, clock):
    assert decided(console(invoke, "scale_out")) == ["executed"]  # 4 -> 5
    clock.advance(130)  # past the scale-out cooldown (120 s), inside the scale-in cooldown (300 s)

    blocked = console(invoke, "scale_in")

    assert decided(blocked) == ["skipped:cooldown"]
    assert "since last scale-out" in blocked["decisions"][0]["detail"]
    assert api_desired(world) == 5
    clock.advance(171)
    assert decided(console(invoke, "scale_in")) == ["executed"]


def test_scale_in_after_scale_in_waits_for_the_cooldown(world, invoke, clock):
    assert decided(console(invoke, "scale_in")) == ["executed"]  # 4 -> 3
    clock.advance(299)

    assert decided(console(invoke, "scale_in")) == ["skipped:cooldown"]
    assert api_desired(world) == 3


# --------------------------------------------------------------------------- bounds


def test_scale_out_stops_at_max(world, invoke, clock):
    set_api_desired(world, 38)
    out = console(invoke, "scale_out")  # 25 % of 38 = +10, capped by max_step 8, then by max 40
    assert decided(out) == ["executed"]
    assert api_desired(world) == 40

    clock.advance(121)
    at_max = console(invoke, "scale_out")
    assert decided(at_max) == ["skipped:at-max"]
    assert api_desired(world) == 40


def test_scale_out_step_is_capped_by_max_step(world, invoke, clock):
    set_api_desired(world, 20)
    out = alarm(invoke, "api-p99-latency-high", "ALARM", T0, value=3.0, threshold=1.0)  # 100 % step = +20
    assert decided(out) == ["executed"]
    assert api_desired(world) == 28  # + max_step 8


@pytest.mark.parametrize("desired, reason", [
    (41, "out-of-bounds"), (1, "out-of-bounds"), (13, "step-too-large"),
])
def test_set_capacity_outside_bounds_or_beyond_max_step_is_refused(desired, reason, world, invoke):
    out = console(invoke, "set_capacity", desired=desired)

    assert decided(out) == [f"skipped:{reason}"]
    assert api_desired(world) == 4
    assert audited(world) == {f"skipped:{reason}": 1}


def test_set_capacity_at_exactly_max_step_is_allowed(world, invoke):
    assert decided(console(invoke, "set_capacity", desired=12)) == ["executed"]  # 4 + 8
    assert api_desired(world) == 12


def test_scale_in_stops_at_min(world, invoke):
    set_api_desired(world, 2)

    assert decided(console(invoke, "scale_in")) == ["skipped:at-min"]
    assert api_desired(world) == 2


def test_scale_in_and_set_capacity_respect_an_active_prewarm_floor(world, invoke, clock):
    assert decided(console(invoke, "prewarm", prewarm="weekday-morning")) == ["executed"]
    assert api_desired(world) == 10
    clock.advance(600)  # inside the 120-minute window

    assert decided(console(invoke, "scale_in")) == ["skipped:at-min"]
    assert decided(console(invoke, "set_capacity", desired=9)) == ["skipped:below-floor"]
    assert api_desired(world) == 10


# --------------------------------------------------------------------------- rate limit / circuit breaker


def test_rate_limit_trips_the_circuit_breaker_pages_and_reopens_after_open_for_s(world, invoke, clock):
    policy = world.config.scaling_policy("api")
    limit, open_for = policy.rate_limit.max_actions_per_hour, policy.rate_limit.open_for_s
    notices = subscribe_notices(world)

    # An operator's override waives the cooldowns, never the rate limit: only it stands in the way. Each step is
    # a scale-out (the budget is per direction, and reversals would be oscillation).
    for i in range(limit):
        assert decided(console(invoke, "set_capacity", desired=5 + i, override=True)) == ["executed"]
        clock.advance(10)
    last = api_desired(world)
    notices()

    tripped = console(invoke, "set_capacity", desired=last + 1, override=True)
    assert decided(tripped) == ["skipped:circuit-open-tripped"]
    assert api_desired(world) == last
    page = [n for n in notices() if n["outcome"] == "skipped:circuit-open-tripped"]
    assert len(page) == 1 and page[0]["target"] == API_KEY, "tripping the breaker pages"
    tripped_at = clock.now()

    clock.advance(10)
    assert decided(console(invoke, "set_capacity", desired=last + 1, override=True)) == ["skipped:circuit-open"]
    # Alarms are held back too, and capacity an alarm demands refused by the breaker pages every time.
    assert decided(alarm(invoke, "api-p99-latency-high", "ALARM", clock.now(), value=2, threshold=1)) == [
        "skipped:circuit-open"]
    assert any(n["outcome"] == "skipped:circuit-open" for n in notices())
    # The scale-in direction has its own budget: the breaker for scale-out does not hold capacity up.
    assert decided(console(invoke, "set_capacity", desired=last - 1, override=True)) == ["executed"]
    clock.set(tripped_at + timedelta(seconds=open_for - 1))
    assert decided(console(invoke, "set_capacity", desired=last, override=True)) == ["skipped:circuit-open"]
    assert api_desired(world) == last - 1

    clock.set(tripped_at + timedelta(seconds=open_for + 1))
    assert decided(console(invoke, "set_capacity", desired=last, override=True)) == ["executed"]
    assert api_desired(world) == last


# --------------------------------------------------------------------------- allowlist


def test_console_payload_naming_an_unknown_policy_is_rejected(world, invoke):
    out = console(invoke, "set_capacity", policy="payments", desired=6)

    assert out["status"] == "rejected"
    assert any(e.startswith("policy:") for e in out["errors"])
    assert out["parked_in_dlq"] is False
    assert audited(world) == {"rejected:validation": 1}
    assert api_desired(world) == 4


def test_an_intent_for_a_target_not_in_the_config_is_not_allowlisted(world, clock):
    """A reaction that would happily scale a foreign service: the core's allowlist is all that stops it."""
    from reflex_core.actions import Action, Intent
    from reflex_core.pipeline import GuardSettings, Pipeline
    from scaler.scaling_reaction import ScalingReaction

    ecs = world.clients.ecs
    ecs.create_cluster(clusterName="payments")
    ecs.create_service(cluster="payments", serviceName="billing", desiredCount=1)
    foreign = {"kind": "ecs-service", "cluster": "payments", "service": "billing"}
    foreign_key = "ecs-service/payments/billing"

    def billing_desired() -> int:
        return ecs.describe_services(cluster="payments", services=["billing"])["services"][0]["desiredCount"]

    class Overreaching(ScalingReaction):
        def intents(self, trigger, request, rt, previous):
            return [Intent(policy="api", target_key=foreign_key, target=foreign, operation="set_capacity",
                           params={"desired": 9}, reason="crafted")]

        def guard_settings(self, intent, rt):
            return GuardSettings(out_cooldown_s=0, in_cooldown_s=0, max_actions_per_hour=100,
                                 circuit_open_for_s=60, dry_run=False)

        def plan(self, intent, rt):
            return Action(policy=intent.policy, target_key=intent.target_key, target=intent.target,
                          operation=intent.operation, params=intent.params,
                          before={"desired": billing_desired()}, intended={"desired": 9})

        def execute(self, action, rt):
            ecs.update_service(cluster="payments", service="billing", desiredCount=9)

        def verify(self, action, rt):
            return {"desired": billing_desired()}

    out = Pipeline(Overreaching()).handle(ev.console("set_capacity", "api", desired=6), FakeLambdaContext())

    assert decided(out) == ["skipped:not-allowlisted"]
    assert billing_desired() == 1
    assert api_desired(world) == 4
    [record] = world.audit_records()
    assert record["outcome"] == "skipped:not-allowlisted" and record["target"] == foreign_key


# --------------------------------------------------------------------------- alarm semantics


def test_alarm_after_alarm_is_a_duplicate_not_a_second_scale_out(world, invoke, clock):
    assert decided(alarm(invoke, "api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0)) == ["executed"]
    clock.advance(200)  # past the scale-out cooldown: only the alarm semantics stand in the way
    # A later ALARM of the same alarm, in a shape that carries no previous state: the alarm memory
    # (last recorded state ALARM, no OK since) says it is not a transition.
    again = alarm(invoke, "api-p99-latency-high", "ALARM", clock.now(), previous=None, value=1.6, threshold=1.0)

    assert decided(again) == ["skipped:duplicate-alarm"]
    assert api_desired(world) == 6


def test_a_new_transition_into_alarm_after_an_ok_acts_again(world, invoke, clock):
    """Control for the duplicate-alarm test: ALARM, OK, ALARM is two transitions."""
    assert decided(alarm(invoke, "api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0)) == ["executed"]
    clock.advance(100)
    alarm(invoke, "api-p99-latency-high", "OK", clock.now(), previous="ALARM")
    clock.advance(100)
    again = alarm(invoke, "api-p99-latency-high", "ALARM", clock.now(), previous="OK", value=1.6, threshold=1.0)

    assert decided(again) == ["executed"]
    assert api_desired(world) == 9  # 6 + 50 %


def test_alarm_event_saying_it_was_already_in_alarm_is_a_duplicate(world, invoke):
    out = alarm(invoke, "api-p99-latency-high", "ALARM", T0, previous="ALARM", value=1.6, threshold=1.0)

    assert decided(out) == ["skipped:duplicate-alarm"]
    assert api_desired(world) == 4


def test_an_older_event_after_a_newer_one_is_stale(world, invoke, clock):
    assert decided(alarm(invoke, "api-p99-latency-high", "OK", T0 + timedelta(seconds=60),
                         previous="ALARM")) == ["skipped:stabilizing"]

    late = alarm(invoke, "api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0)  # delivered late

    assert decided(late) == ["skipped:stale-event"]
    assert api_desired(world) == 4
    assert audited(world) == {"skipped:stabilizing": 1, "skipped:stale-event": 1}


def test_insufficient_data_never_scales_in(world, invoke, clock):
    set_api_desired(world, 6)
    t = T0
    assert decided(alarm(invoke, "api-p99-latency-high", "OK", t, previous="ALARM")) == ["skipped:stabilizing"]
    assert decided(alarm(invoke, "api-cpu-high", "INSUFFICIENT_DATA", t)) == ["skipped:insufficient-data"]

    clock.advance(3600)  # far past when_ok_for_s and every cooldown
    by_schedule = invoke(ev.schedule("evaluate", "evaluate", clock.now()), FakeLambdaContext())
    by_hand = console(invoke, "evaluate", policy="api")

    assert "executed" not in decided(by_schedule)
    assert decided(by_hand) == ["skipped:insufficient-data"]
    assert api_desired(world) == 6

    # Control: once the missing data is back and OK long enough, the same evaluation scales in.
    assert decided(alarm(invoke, "api-cpu-high", "OK", clock.now(), previous="INSUFFICIENT_DATA")) == [
        "skipped:stabilizing"]
    clock.advance(601)
    invoke(ev.schedule("evaluate", "evaluate", clock.now()), FakeLambdaContext())
    assert api_desired(world) == 5


def test_ok_alone_never_scales_in(world, invoke, clock):
    set_api_desired(world, 6)

    ok = alarm(invoke, "api-p99-latency-high", "OK", T0, previous="ALARM")
    assert decided(ok) == ["skipped:stabilizing"]
    assert api_desired(world) == 6

    clock.advance(599)  # still inside when_ok_for_s (600 s)
    invoke(ev.schedule("evaluate", "evaluate", clock.now()), FakeLambdaContext())
    assert decided(console(invoke, "evaluate", policy="api")) == ["skipped:stabilizing"]
    assert api_desired(world) == 6

    # Control: after the stabilization window, one step in.
    clock.advance(2)
    invoke(ev.schedule("evaluate", "evaluate", clock.now()), FakeLambdaContext())
    assert api_desired(world) == 5
    assert audited(world)["executed"] == 1


def test_evaluator_never_scales_in_without_recorded_alarm_data(world, invoke, clock):
    set_api_desired(world, 6)
    clock.advance(7200)

    invoke(ev.schedule("evaluate", "evaluate", clock.now()), FakeLambdaContext())
    by_hand = console(invoke, "evaluate", policy="api")

    assert decided(by_hand) == ["skipped:no-alarm-data"]
    assert api_desired(world) == 6
