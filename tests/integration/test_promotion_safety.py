"""Issue 8 on the promoter: a replayed GreenReady for the live release is refused (#4), rollbacks are marked
`safety` for the kill-switch levels (#5), and a guard alarm's weights are written before the bookkeeping
(time to safety)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from moto import mock_aws

from reflex_core.actions import Intent
from reflex_core.runtime import install_runtime
from tests.support import events as ev
from tests.support.promotion import PromotionBench, bench, new_event_id, set_alarm_state

LATENCY = "web-p99-latency-high"


@pytest.fixture
def make(dev_config, clock) -> Iterator[Any]:
    with mock_aws():
        yield lambda: bench(dev_config, clock)
    install_runtime(None)


def finalize(b: PromotionBench, release: str) -> None:
    b.green_ready(release=release)
    b.run()
    b.console("promote")
    b.run(1)
    b.run(121)
    assert b.record().promotion.status == "finalized"


def test_a_replayed_green_ready_for_the_live_release_is_refused_and_audited(make) -> None:
    b = make()
    finalize(b, "v7")
    record = b.record()
    assert record.live == "green" and record.promotion.releases == {"green": "v7"}

    replay = b.green_ready(release="v7", event_id=new_event_id())
    [d] = replay["decisions"]
    assert d["outcome"] == "skipped:release-already-live" and "v7 is already live on green" in d["detail"]
    assert b.weights() == {"blue": 0, "green": 100}
    after = b.record()
    assert after.promotion.id == record.promotion.id and after.promotion.status == "finalized", \
        "the live release's retention window goes on"
    assert "skipped:release-already-live" in b.outcomes()

    # Control: a new release for the idle colour starts, and the record learns what each colour runs.
    assert b.green_ready(release="v8", event_id=new_event_id())["decisions"][0]["outcome"] == "executed"
    b.run(1)
    assert b.record().promotion.releases == {"green": "v7", "blue": "v8"}


@pytest.mark.parametrize(("operation", "safety"), [("rollback", True), ("abort", True), ("start", False),
                                                   ("shift", False), ("promote", False), ("reconcile", False)])
def test_only_rollbacks_are_marked_safety(make, operation: str, safety: bool) -> None:
    from promoter.handler import REACTION

    b = make()
    rt = b.world.activate("promoter", b.clock)
    intent = Intent(policy="web", target_key="promotion/web", target={}, operation=operation)
    settings = REACTION.guard_settings(intent, rt)
    assert settings.safety is safety
    assert settings.preempt_lock is safety and settings.bypass_rate_limit is safety


def _record_calls(b: PromotionBench) -> list[str]:
    calls: list[str] = []
    for service in ("dynamodb", "elbv2", "cloudwatch", "ssm", "events", "sns"):  # Step Functions: the driver
        b.world.clients.get(service).meta.events.register("before-call",
                                                          lambda model, **_: calls.append(model.name))
    return calls


def test_a_guard_alarm_writes_the_weights_before_any_bookkeeping(make) -> None:
    b = make()
    b.green_ready(release="v7")
    b.run(1)
    assert b.weights() == {"blue": 90, "green": 10}
    rt = b.world.activate("promoter", b.clock)
    rt.kill_switch.state()  # a warm function has the switch cached
    calls = _record_calls(b)
    set_alarm_state(b.world.clients, LATENCY, "ALARM")
    calls.clear()
    out = b.invoke(ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now(), previous="OK", value=2.5, threshold=1.0))

    write = calls.index("ModifyListener")
    assert write <= 3, calls[: write + 1]  # the record, then the forward action and blue's health (parallel)
    assert sorted(calls[:write]) == ["DescribeListeners", "DescribeTargetHealth", "GetItem"]
    assert calls.count("ModifyListener") == 1, "the pipeline finds the weights in place"
    [d] = out["decisions"]
    assert d["outcome"] == "executed" and d["before"]["weights"] == {"blue": 90, "green": 10}
    assert "written first" in d["detail"]
    assert b.weights() == {"blue": 100, "green": 0}
    assert b.record().promotion.status == "rolled-back" and b.record().live == "blue"


def test_the_fast_write_stands_aside_for_a_future_stamp_and_a_hard_stop(make) -> None:
    b = make()
    b.green_ready(release="v7")
    b.run(1)
    rt = b.world.activate("promoter", b.clock)
    from promoter.handler import REACTION

    future = ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now() + timedelta(hours=1), previous="OK", value=2.5,
                                  threshold=1.0)
    assert REACTION.fast_rollback.run(future, rt) == []
    b.world.set_kill_switch_value("global", "hard-stop")
    rt.kill_switch.invalidate()
    now = ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now(), previous="OK", value=2.5, threshold=1.0)
    assert REACTION.fast_rollback.run(now, rt) == []
    assert b.weights() == {"blue": 90, "green": 10}
    b.world.set_kill_switch("global", True)  # `on` stops forward actions only: the rollback runs
    rt.kill_switch.invalidate()
    [written] = REACTION.fast_rollback.run(now, rt)
    assert written.before == {"blue": 90, "green": 10} and b.weights() == {"blue": 100, "green": 0}
