"""Each trigger kind through the real scaler handler against moto."""

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


def desired(world, cluster="web", service="api") -> int:
    return world.clients.ecs.describe_services(cluster=cluster, services=[service])["services"][0]["desiredCount"]


def test_eventbridge_alarm_scales_out_by_breach(world, invoke):
    out = invoke(ev.eventbridge_alarm("api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0))
    assert out["status"] == "ok"
    [d] = out["decisions"]
    assert d["outcome"] == "executed"
    # 60 % past threshold -> the 50 % step: 4 + ceil(4 * 0.5) = 6
    assert d["before"]["desired"] == 4 and d["after"]["desired"] == 6
    assert desired(world) == 6


def test_alarm_action_and_sns_are_parsed_to_the_same_alarm(world, invoke, clock):
    out = invoke(ev.alarm_action("api-cpu-high", "ALARM", T0, value=85, threshold=80))
    assert out["decisions"][0]["outcome"] == "executed"
    # The same transition arriving through SNS is the same idempotency key: acts once.
    again = invoke(ev.sns_alarm("api-cpu-high", "ALARM", T0, value=85, threshold=80))
    assert again.get("duplicate") is True
    assert desired(world) == 5


def test_unknown_alarm_is_audited_as_skipped(world, invoke):
    out = invoke(ev.eventbridge_alarm("someone-elses-alarm", "ALARM", T0, value=2, threshold=1))
    assert [d["outcome"] for d in out["decisions"]] == ["skipped:no-policy"]
    assert desired(world) == 4
    assert any(r["outcome"] == "skipped:no-policy" for r in world.audit_records())


def test_scale_in_only_after_ok_window(world, invoke, clock):
    invoke(ev.eventbridge_alarm("api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0))
    clock.advance(300)
    ok = invoke(ev.eventbridge_alarm("api-p99-latency-high", "OK", clock.now(), previous="ALARM"))
    assert ok["decisions"][0]["outcome"] == "skipped:stabilizing"
    clock.advance(300)
    early = invoke(ev.schedule("evaluate", "evaluate", clock.now()))
    assert all(d["outcome"] != "executed" for d in early["decisions"])
    clock.advance(301)
    late = invoke(ev.schedule("evaluate", "evaluate", clock.now()))
    executed = [d for d in late["decisions"] if d["outcome"] == "executed"]
    assert [(d["before"]["desired"], d["after"]["desired"]) for d in executed] == [(6, 5)]
    assert desired(world) == 5
    assert clock.now() - T0 > timedelta(minutes=15)
