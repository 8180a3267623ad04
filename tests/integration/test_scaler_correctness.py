"""Issue 15, scaler correctness: one named test per defect, each against the real handler on moto.

1 dry-run evaluate acted · 2 an event commanded a policy that does not listen to it · 3 overlapping pre-warm windows
overwrote each other · 4 a window's end overwrote an operator's change · 5 pre-warm and set_capacity ignored a
ceiling set by someone else · 6 a pre-warm refused by a held lock was lost · 7 scale-in ignored an alarm Reflex
never saw change state · 8 a breach on a step boundary took the smaller step · 9 a Scheduler retry acted twice ·
10 the config accepted schedules AWS rejects.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import T0
from tests.support import events as ev
from tests.support.cloudwatch import mirroring_invoke

API = ["api-p99-latency-high", "api-cpu-high"]


@pytest.fixture
def invoke(world):
    return mirroring_invoke(world)


def ecs_desired(world) -> int:
    return world.clients.ecs.describe_services(cluster="web", services=["api"])["services"][0]["desiredCount"]


def asg(world) -> dict[str, Any]:
    return world.clients.autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=["web-workers"])["AutoScalingGroups"][0]


def aurora(world) -> dict[str, Any]:
    return world.clients.application_autoscaling.describe_scalable_targets(
        ServiceNamespace="rds", ResourceIds=["cluster:reporting"])["ScalableTargets"][0]


def configure(world, clock, policy: str, **update: Any) -> None:
    world.config = world.config.model_copy(update={"scaling": [
        p.model_copy(update=update) if p.name == policy else p for p in world.config.scaling]})
    world.runtime(clock)


def prewarm(name: str, minimum: int, minutes: int, cron: str = "0 9 ? * * *") -> Any:
    from reflex_core.scaling_config import Prewarm

    return Prewarm(name=name, cron=cron, timezone="UTC", min=minimum, for_minutes=minutes)


def run_prewarm(invoke, policy: str, name: str, at) -> dict[str, Any]:
    return invoke(ev.schedule(f"{policy}-{name}", "prewarm", at, policy=policy, params={"prewarm": name}))


def evaluate(invoke, clock) -> dict[str, Any]:
    return invoke(ev.schedule("evaluate", "evaluate", clock.now()))


def outcomes(out: dict[str, Any], policy: str | None = None) -> list[tuple[str, str]]:
    return [(d.get("operation"), d["outcome"]) for d in out["decisions"] if policy is None or d.get("policy") == policy]


def all_ok(invoke, names=API) -> None:
    for name in names:
        invoke(ev.eventbridge_alarm(name, "OK", T0, previous="ALARM"))


# --------------------------------------------------------------------------- 1


def test_1_evaluate_with_dry_run_changes_nothing(world, invoke, clock):
    all_ok(invoke)
    clock.advance(601)
    preview = invoke(ev.console("evaluate", "api", dry_run=True))
    assert outcomes(preview, "api") == [("scale_in", "dry-run")]
    assert ecs_desired(world) == 4
    assert all(r["outcome"] != "executed" for r in world.audit_records())
    # The same command without dry_run acts: the preview said what would happen.
    real = invoke(ev.console("evaluate", "api"))
    assert outcomes(real, "api") == [("scale_in", "executed")] and ecs_desired(world) == 3


# --------------------------------------------------------------------------- 2


def test_2_an_event_may_only_act_on_policies_that_list_it(world, invoke):
    out = invoke(ev.custom_event("app.ops", "ScaleRequested", {
        "command": "set_capacity", "policy": "workers", "desired": 6, "reason": "backlog"}, T0))
    assert asg(world)["DesiredCapacity"] == 2
    assert out["status"] == "rejected"
    assert any("detail.policy" in e and "on_events" in e for e in out["errors"])
    # `api` lists the event: the same request for api acts.
    ok = invoke(ev.custom_event("app.ops", "ScaleRequested", {
        "command": "set_capacity", "policy": "api", "desired": 6, "reason": "launch"}, T0))
    assert outcomes(ok) == [("set_capacity", "executed")] and ecs_desired(world) == 6


def test_2_an_event_evaluate_of_every_policy_reaches_only_the_listening_ones(world, invoke, clock):
    out = invoke(ev.custom_event("app.ops", "ScaleRequested", {
        "command": "evaluate", "policy": "*", "reason": "check"}, T0))
    assert {d.get("policy") for d in out["decisions"]} <= {"api", None}


# --------------------------------------------------------------------------- 3


def test_3_overlapping_windows_keep_the_highest_floor_on_a_service(world, invoke, clock):
    configure(world, clock, "api", prewarm=[prewarm("launch", 10, 120), prewarm("lunch", 6, 30, "10 9 ? * * *")])
    assert outcomes(run_prewarm(invoke, "api", "launch", T0)) == [("prewarm_start", "executed")]
    assert ecs_desired(world) == 10
    clock.advance(600)
    run_prewarm(invoke, "api", "lunch", clock.now())
    # The 6-task window does not replace the 10-task one: no scale-in below 10 while both run, nor after the
    # shorter one ends.
    blocked = invoke(ev.console("scale_in", "api", override=True))
    assert outcomes(blocked) == [("scale_in", "skipped:at-min")] and ecs_desired(world) == 10
    clock.advance(31 * 60)
    ended = evaluate(invoke, clock)
    assert ("prewarm_end", "executed") in outcomes(ended, "api")
    assert outcomes(invoke(ev.console("scale_in", "api", override=True))) == [("scale_in", "skipped:at-min")]
    clock.advance(80 * 60)  # the long window has ended too
    evaluate(invoke, clock)
    assert outcomes(invoke(ev.console("scale_in", "api", override=True))) == [("scale_in", "executed")]
    assert ecs_desired(world) == 9


def test_3_the_end_of_the_shorter_window_keeps_the_longer_ones_min_size(world, invoke, clock):
    configure(world, clock, "workers", prewarm=[prewarm("batch", 6, 120), prewarm("report", 3, 30, "10 9 ? * * *")])
    run_prewarm(invoke, "workers", "batch", T0)
    assert (asg(world)["MinSize"], asg(world)["DesiredCapacity"]) == (6, 6)
    clock.advance(600)
    run_prewarm(invoke, "workers", "report", clock.now())
    clock.advance(31 * 60)
    evaluate(invoke, clock)
    assert asg(world)["MinSize"] == 6  # the longer window still runs
    clock.advance(80 * 60)
    out = evaluate(invoke, clock)
    assert ("prewarm_end", "executed") in outcomes(out, "workers")
    assert asg(world)["MinSize"] == 0  # both ended: what it was before Reflex raised it


# --------------------------------------------------------------------------- 4


def test_4_the_end_of_a_window_leaves_an_operators_min_size_in_place(world, invoke, clock):
    configure(world, clock, "workers", prewarm=[prewarm("batch", 6, 30)])
    run_prewarm(invoke, "workers", "batch", T0)
    assert asg(world)["MinSize"] == 6
    world.clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName="web-workers", MinSize=8,
                                                        DesiredCapacity=8)
    clock.advance(31 * 60)
    out = evaluate(invoke, clock)
    [end] = [d for d in out["decisions"] if d.get("operation") == "prewarm_end"]
    assert end["outcome"] == "executed" and "changed outside Reflex, left in place" in end["detail"]
    assert asg(world)["MinSize"] == 8
    record = next(r for r in world.audit_records() if r.get("operation") == "prewarm_end")
    assert "left in place" in record["detail"]
    # The window is over and the floor is no longer Reflex's: a later evaluation does not touch it either.
    clock.advance(3600)
    evaluate(invoke, clock)
    assert asg(world)["MinSize"] == 8


# --------------------------------------------------------------------------- 5


def test_5_prewarm_respects_a_max_size_lowered_by_someone_else(world, invoke, clock):
    configure(world, clock, "workers", prewarm=[prewarm("batch", 6, 30)])
    world.clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName="web-workers", MaxSize=4)
    out = run_prewarm(invoke, "workers", "batch", T0)
    [d] = out["decisions"]
    assert d["outcome"] == "executed" and d["intended"] == {"desired": 4, "floor": 4}
    assert "capped" in d["detail"] and "ceiling 4" in d["detail"]
    g = asg(world)
    assert (g["MinSize"], g["DesiredCapacity"], g["MaxSize"]) == (4, 4, 4)


def test_5_aurora_prewarm_and_set_capacity_never_raise_max_capacity(world, invoke, clock):
    configure(world, clock, "reporting-db", prewarm=[prewarm("month-end", 2, 30)])
    aas = world.clients.application_autoscaling
    aas.register_scalable_target(ServiceNamespace="rds", ResourceId="cluster:reporting",
                                 ScalableDimension="rds:cluster:ReadReplicaCount", MinCapacity=1, MaxCapacity=1)
    out = run_prewarm(invoke, "reporting-db", "month-end", T0)
    assert "capped" in out["decisions"][0]["detail"]
    assert (aurora(world)["MinCapacity"], aurora(world)["MaxCapacity"]) == (1, 1)
    refused = invoke(ev.console("set_capacity", "reporting-db", desired=2, override=True))
    assert outcomes(refused) == [("set_capacity", "skipped:at-ceiling")]
    assert "ceiling 1" in refused["decisions"][0]["detail"]
    assert (aurora(world)["MinCapacity"], aurora(world)["MaxCapacity"]) == (1, 1)


def test_5_set_capacity_above_an_asg_max_size_is_capped_and_says_so(world, invoke):
    world.clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName="web-workers", MaxSize=3)
    out = invoke(ev.console("set_capacity", "workers", desired=5))
    [d] = out["decisions"]
    assert d["outcome"] == "executed" and d["after"]["desired"] == 3 and "capped" in d["detail"]
    assert asg(world)["MaxSize"] == 3


# --------------------------------------------------------------------------- 6


def test_6_a_prewarm_refused_by_a_held_lock_is_applied_by_the_evaluator(world, invoke, clock):
    configure(world, clock, "api", prewarm=[prewarm("launch", 10, 60)])
    key = world.config.scaling_policy("api").target.key
    world.runtime(clock).store.acquire_lock(key, "another-invocation", clock.now(), 30)
    from reflex_core.pipeline import RetryLater

    with pytest.raises(RetryLater, match="skipped:locked"):  # Lambda retries it... or its retries run out
        run_prewarm(invoke, "api", "launch", T0)
    assert ecs_desired(world) == 4
    clock.advance(60)  # the lock's lease is over; no retry of the schedule arrives
    early = evaluate(invoke, clock)  # within the grace the scheduled run and its retries have
    assert not [d for d in early["decisions"] if d.get("operation") == "prewarm_start"]
    clock.advance(90)
    caught_up = evaluate(invoke, clock)
    [start] = [d for d in caught_up["decisions"] if d.get("operation") == "prewarm_start"]
    assert start["outcome"] == "executed" and "catch-up" in start["detail"]
    assert ecs_desired(world) == 10
    # Applied once: the next evaluation sees the window in force, and a late retry of the schedule changes nothing.
    clock.advance(60)
    assert not [d for d in evaluate(invoke, clock)["decisions"] if d.get("operation") == "prewarm_start"]
    late = run_prewarm(invoke, "api", "launch", T0)
    assert outcomes(late) == [("prewarm_start", "skipped:prewarm-in-force")]
    assert sum(1 for r in world.audit_records() if r.get("operation") == "prewarm_start"
               and r["outcome"] == "executed") == 1


def test_6_the_evaluator_applies_a_window_whose_schedule_never_arrived_in_its_zone(world, invoke, clock):
    from reflex_core.scaling_config import Prewarm

    # 10:00 in Paris is 09:00 UTC on 26 November (CET): T0.
    paris = Prewarm(name="morning", cron="0 10 ? * THU *", timezone="Europe/Paris", min=7, for_minutes=45)
    configure(world, clock, "api", prewarm=[paris])
    clock.advance(5 * 60)
    out = evaluate(invoke, clock)
    assert ("prewarm_start", "executed") in outcomes(out, "api") and ecs_desired(world) == 7
    clock.advance(41 * 60)
    evaluate(invoke, clock)  # the window ended: nothing starts it again
    assert not [d for d in evaluate(invoke, clock)["decisions"] if d.get("operation") == "prewarm_start"]


# --------------------------------------------------------------------------- 7


def test_7_scale_in_waits_for_an_alarm_in_alarm_that_reflex_never_saw(world, invoke, clock):
    world.clients.autoscaling.set_desired_capacity(AutoScalingGroupName="web-workers", DesiredCapacity=5)
    invoke(ev.eventbridge_alarm("workers-queue-depth-high", "OK", T0, previous="ALARM"))
    # Matched by the policy's prefix, in ALARM since before Reflex was deployed: no event will ever arrive.
    world.set_alarm_state("workers-queue-depth-dlq", "ALARM", T0 - timedelta(days=1))
    clock.advance(1000)
    out = evaluate(invoke, clock)
    # Per CloudWatch an alarm of the policy is in ALARM: no scale-in; the policy repeats its smallest step out.
    assert outcomes(out, "workers") == [("scale_out", "executed")]
    [step] = [d for d in out["decisions"] if d.get("policy") == "workers"]
    assert "workers-queue-depth-dlq still in ALARM (per CloudWatch)" in step["detail"]
    assert asg(world)["DesiredCapacity"] == 7  # 5 + 25 %, rounded up
    clock.advance(3600)
    refused = invoke(ev.console("scale_in", "workers"))
    assert outcomes(refused) == [("scale_in", "skipped:in-alarm")]
    assert "workers-queue-depth-dlq" in refused["decisions"][0]["detail"]
    assert asg(world)["DesiredCapacity"] == 7  # 5 + 25 %, rounded up


def test_7_an_unseen_tag_matched_alarm_in_alarm_blocks_a_decrease(world, invoke, clock):
    world.clients.autoscaling.set_desired_capacity(AutoScalingGroupName="web-workers", DesiredCapacity=5)
    world.clients.cloudwatch.put_metric_alarm(
        AlarmName="backlog-age", MetricName="Age", Namespace="App", Statistic="Average", Period=60,
        EvaluationPeriods=1, Threshold=10, ComparisonOperator="GreaterThanThreshold",
        Tags=[{"Key": "reflex:policy", "Value": "workers"}])
    world.set_alarm_state("backlog-age", "ALARM", T0 - timedelta(hours=2))
    refused = invoke(ev.console("set_capacity", "workers", desired=3))
    assert outcomes(refused) == [("set_capacity", "skipped:in-alarm")]
    assert asg(world)["DesiredCapacity"] == 5


# --------------------------------------------------------------------------- 8


def test_8_a_breach_on_a_step_boundary_takes_that_step(world, invoke):
    # p99 0.3 s against 0.2 s is a 50 % breach: (0.3 - 0.2) / 0.2 == 0.4999999999999999 in binary floating point.
    out = invoke(ev.eventbridge_alarm("api-p99-latency-high", "ALARM", T0, value=0.3, threshold=0.2))
    [d] = out["decisions"]
    assert d["outcome"] == "executed" and (d["before"]["desired"], d["after"]["desired"]) == (4, 6)  # +50 %, not +25 %


def test_8_step_percent_boundaries() -> None:
    from reflex_core.scaling_config import StepAdjustment
    from scaler.step_sizing import step_percent

    steps = [StepAdjustment(breach_from=0.0, add_percent=25), StepAdjustment(breach_from=0.5, add_percent=50),
             StepAdjustment(breach_from=1.0, add_percent=100)]
    assert step_percent(steps, (0.3 - 0.2) / 0.2) == 50
    assert step_percent(steps, (0.6 - 0.3) / 0.3) == 100  # 0.9999999999999998
    assert step_percent(steps, 0.4999) == 25  # a real shortfall still takes the smaller step
    assert step_percent(steps, None) == 25


# --------------------------------------------------------------------------- 9


def test_9_a_scheduler_retry_of_the_same_run_acts_once(world, invoke, clock):
    # No cooldown on this policy: only idempotency stands between a retried delivery and a second step.
    api = world.config.scaling_policy("api")
    configure(world, clock, "api", scale_in=api.scale_in.model_copy(update={"cooldown_s": 0}))
    all_ok(invoke)
    clock.advance(601)
    first = ev.schedule("evaluate", "evaluate", clock.now())
    retry = ev.schedule("evaluate", "evaluate", clock.now())  # same scheduled time, a new execution id
    assert first["reflex_schedule"]["execution_id"] != retry["reflex_schedule"]["execution_id"]
    assert ("scale_in", "executed") in outcomes(invoke(first), "api")
    again = invoke(retry)
    assert again.get("duplicate") is True
    assert ecs_desired(world) == 3
    # The next scheduled run is a new run.
    clock.advance(60)
    assert ("scale_in", "executed") in outcomes(evaluate(invoke, clock), "api") and ecs_desired(world) == 2


# --------------------------------------------------------------------------- 10


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("timezone", "Europe/Pariss", "did you mean Europe/Paris"),
    ("timezone", "CET+1", "not an IANA time zone name"),
    ("cron", "0 8 * * MON-FRI *", "exactly one of them must be '?'"),
    ("cron", "0 8 ? * ? *", "exactly one of them must be '?'"),
    ("cron", "0 8 * *", "6 fields"),
    ("cron", "0 25 ? * MON *", "hours: 25 is outside 0-23"),
    ("cron", "0 8 ? * MON-FRIDAY *", "day-of-week"),
    ("cron", "0 8 ? * 3#1,6#3 *", "single expression"),
    ("cron", "0 8 LW * ? *", "day-of-month"),
])
def test_10_schedules_aws_would_reject_are_refused_with_the_field(dev_config, field, value, expected):
    from reflex_core.config import parse_config
    from reflex_core.config_base import ConfigError

    raw = dev_config.model_dump(mode="json")
    raw["scaling"][0]["prewarm"][0][field] = value
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "config/dev.yaml")
    text = str(err.value)
    assert f"scaling.0.prewarm.0.{field}" in text and expected in text and "config/dev.yaml" in text


@pytest.mark.parametrize("cron", ["0 8 ? * MON-FRI *", "0/15 * * * ? *", "0 18 L * ? *", "0 10 ? * 6#3 *",
                                  "0 9 15W * ? *", "0 8 ? * 6L 2027-2030", "*/5 8-17 ? JAN-MAR,DEC MON,WED *"])
def test_10_the_documented_cron_forms_are_accepted(dev_config, cron):
    from reflex_core.config import parse_config

    raw = dev_config.model_dump(mode="json")
    raw["scaling"][0]["prewarm"][0]["cron"] = cron
    assert parse_config(raw, "config/dev.yaml").scaling[0].prewarm[0].cron == cron
