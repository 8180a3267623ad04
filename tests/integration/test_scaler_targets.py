"""Each kind of target (ECS service, Auto Scaling group, Aurora replicas) and pre-warming, against moto."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import T0
from tests.support import events as ev
from tests.support.cloudwatch import mirroring_invoke


@pytest.fixture
def invoke(world):
    """The real scaler handler; each alarm transition sent is CloudWatch's state first (DescribeAlarms)."""
    return mirroring_invoke(world)


def asg(world) -> dict:
    return world.clients.autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=["web-workers"])["AutoScalingGroups"][0]


def aurora_min(world) -> int:
    return world.clients.application_autoscaling.describe_scalable_targets(
        ServiceNamespace="rds", ResourceIds=["cluster:reporting"])["ScalableTargets"][0]["MinCapacity"]


def test_asg_scales_out_on_prefix_matched_alarm(world, invoke):
    out = invoke(ev.eventbridge_alarm("workers-queue-depth-high", "ALARM", T0, value=300, threshold=100))
    [d] = out["decisions"]
    assert d["outcome"] == "executed" and d["policy"] == "workers"
    # breach 2.0 -> 100 % step of 2 = +2, within max_step 4
    assert asg(world)["DesiredCapacity"] == 4
    assert d["after"]["desired"] == 4 and d["after"]["floor"] == 0


def test_alarm_matched_by_tags_only(world, invoke):
    cw = world.clients.cloudwatch
    cw.put_metric_alarm(AlarmName="backlog-age", MetricName="Age", Namespace="App", Statistic="Average",
                        Period=60, EvaluationPeriods=1, Threshold=10, ComparisonOperator="GreaterThanThreshold",
                        Tags=[{"Key": "reflex:policy", "Value": "workers"}])
    out = invoke(ev.eventbridge_alarm("backlog-age", "ALARM", T0, value=11, threshold=10))
    assert [(d["policy"], d["outcome"]) for d in out["decisions"]] == [("workers", "executed")]
    assert asg(world)["DesiredCapacity"] == 3
    untagged = invoke(ev.eventbridge_alarm("other-alarm", "ALARM", T0, value=11, threshold=10))
    assert untagged["decisions"][0]["outcome"] == "skipped:no-policy"


def test_aurora_replicas_through_application_autoscaling(world, invoke):
    out = invoke(ev.alarm_action("reporting-db-reader-cpu-high", "ALARM", T0, value=95, threshold=70))
    [d] = out["decisions"]
    assert d["outcome"] == "executed" and d["before"]["desired"] == 1 and d["after"]["desired"] == 2
    assert aurora_min(world) == 2


def test_prewarm_raises_asg_floor_then_restores_it(world, invoke, clock, dev_config):
    from reflex_core.config import Prewarm, parse_config

    raw = dev_config.model_dump(mode="json")
    raw["scaling"][1]["prewarm"] = [Prewarm(name="batch", cron="0 8 ? * * *", min=6, for_minutes=30)
                                    .model_dump(mode="json")]
    world.config = parse_config(raw, "test")
    world.runtime(clock)
    out = invoke(ev.schedule("workers-batch", "prewarm", T0, policy="workers", params={"prewarm": "batch"}))
    [d] = out["decisions"]
    assert d["outcome"] == "executed" and d["intended"] == {"desired": 6, "floor": 6}
    g = asg(world)
    assert (g["MinSize"], g["DesiredCapacity"]) == (6, 6)

    # Inside the window: every alarm OK for long enough, but scale-in stops at the pre-warm floor.
    invoke(ev.eventbridge_alarm("workers-queue-depth-high", "OK", T0, previous="ALARM"))
    clock.advance(20 * 60)
    inside = invoke(ev.console("evaluate", "workers"))
    assert [x["outcome"] for x in inside["decisions"]] == ["skipped:at-min"]
    assert asg(world)["DesiredCapacity"] == 6

    # After the window the evaluator restores MinSize, then scale-in resumes one step at a time.
    clock.advance(11 * 60)
    after = invoke(ev.schedule("evaluate", "evaluate", clock.now()))
    outcomes = {(x["operation"], x["outcome"]) for x in after["decisions"] if x.get("policy") == "workers"}
    assert ("prewarm_end", "executed") in outcomes and ("scale_in", "executed") in outcomes
    g = asg(world)
    assert (g["MinSize"], g["DesiredCapacity"]) == (0, 5)
    clock.advance(60)
    blocked = invoke(ev.console("scale_in", "workers"))
    assert blocked["decisions"][0]["outcome"] == "skipped:cooldown"
    assert clock.now() - T0 < timedelta(hours=1)


def test_set_capacity_records_before_and_after(world, invoke):
    out = invoke(ev.console("set_capacity", "api", desired=8, reason="expected launch traffic"))
    [d] = out["decisions"]
    assert d["outcome"] == "executed" and d["before"]["desired"] == 4 and d["after"]["desired"] == 8
    record = next(r for r in world.audit_records() if r["outcome"] == "executed")
    assert record["who"] == "console:sre-on-call" and record["before"]["desired"] == 4
    assert record["after"]["desired"] == 8 and record["trigger"]["command"] == "set_capacity"


def test_late_prewarm_run_after_its_window_does_not_scale(world, invoke, clock):
    # api's weekday-morning pre-warm lasts 120 minutes; this run was scheduled 3 hours ago.
    clock.advance(3 * 3600)
    out = invoke(ev.schedule("api-weekday-morning", "prewarm", T0, policy="api",
                             params={"prewarm": "weekday-morning"}))
    assert [d["outcome"] for d in out["decisions"]] == ["skipped:prewarm-window-passed"]
    assert world.clients.ecs.describe_services(cluster="web", services=["api"])["services"][0]["desiredCount"] == 4


def test_reused_console_request_id_with_another_command_still_acts(world, invoke):
    # override: the second change follows the first within the scale-out cooldown.
    first = invoke(ev.console("set_capacity", "api", desired=6, request_id="change-42", override=True))
    assert first["decisions"][0]["outcome"] == "executed"
    again = invoke(ev.console("set_capacity", "api", desired=6, request_id="change-42", override=True))
    assert again.get("duplicate") is True
    other = invoke(ev.console("set_capacity", "api", desired=7, request_id="change-42", override=True))
    assert other["decisions"][0]["outcome"] == "executed" and other["decisions"][0]["after"]["desired"] == 7
