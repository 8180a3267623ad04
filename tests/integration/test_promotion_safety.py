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


@pytest.mark.parametrize(("operation", "safety", "preempt"), [
    ("rollback", True, True), ("abort", True, True), ("reconcile", True, False), ("start", False, False),
    ("shift", False, False), ("promote", False, False), ("pause", False, False), ("resume", False, False)])
def test_only_rollbacks_are_marked_safety(make, operation: str, safety: bool, preempt: bool) -> None:
    # The reconcile is a safety action (the rollback it finds due must run at level `on`); it does not take over
    # the lock a step holds (it mostly finds nothing to do), and plans no cleanup at `on`.
    from promoter.handler import REACTION

    b = make()
    rt = b.world.activate("promoter", b.clock)
    intent = Intent(policy="web", target_key="promotion/web", target={}, operation=operation)
    settings = REACTION.guard_settings(intent, rt)
    assert settings.safety is safety
    assert settings.preempt_lock is preempt and settings.bypass_rate_limit is safety


def _record_calls(b: PromotionBench) -> list[str]:
    calls: list[str] = []
    for service in ("dynamodb", "elbv2", "cloudwatch", "ssm", "events", "sns"):  # Step Functions: the driver
        b.world.clients.get(service).meta.events.register("before-call",
                                                          lambda model, **_: calls.append(model.name))
    return calls


def _canary(b: PromotionBench) -> None:
    b.green_ready(release="v7")
    b.run(1)
    assert b.weights() == {"blue": 90, "green": 10}


def _alarm_calls(b: PromotionBench) -> tuple[list[str], dict[str, Any]]:
    """The AWS calls of the invocation a guard alarm's event makes, and its response."""
    calls = _record_calls(b)
    set_alarm_state(b.world.clients, LATENCY, "ALARM")
    calls.clear()
    out = b.invoke(ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now(), previous="OK", value=2.5, threshold=1.0))
    return calls, out


@pytest.mark.parametrize(("warm", "before_write"), [
    # The container ran the canary's shift a minute ago and read the kill switch less than 30 s ago.
    ("switch-and-record", ["DescribeListeners", "DescribeTargetHealth"]),
    # ... the kill switch's cached value expired (the pipeline reads it first).
    ("record", ["DescribeListeners", "DescribeTargetHealth", "GetParameters"]),
    # A container that never saw the pair's record: it reads it (in parallel with nothing: the switch is cached).
    ("switch", ["DescribeListeners", "DescribeTargetHealth", "GetItem"]),
])
def test_a_guard_alarm_writes_the_weights_before_any_bookkeeping(make, warm: str, before_write: list[str]) -> None:
    from promoter.handler import REACTION

    b = make()
    _canary(b)
    rt = b.world.activate("promoter", b.clock)
    b.clock.advance(60)
    if "switch" in warm:
        rt.kill_switch.state()  # a warm function has the switch cached
    if "record" not in warm:
        REACTION.fast_rollback.records.forget(rt.store)
    calls, out = _alarm_calls(b)

    write = calls.index("ModifyListener")
    assert write <= 3, calls[: write + 1]  # at most 3 AWS calls before users are safe
    assert sorted(calls[:write]) == before_write
    assert calls.count("ModifyListener") == 1, "the pipeline finds the weights in place"
    [d] = out["decisions"]
    assert d["outcome"] == "executed" and d["before"]["weights"] == {"blue": 90, "green": 10}
    assert "written first" in d["detail"]
    assert b.weights() == {"blue": 100, "green": 0}
    assert b.record().promotion.status == "rolled-back" and b.record().live == "blue"


def test_a_remembered_record_is_acted_on_only_while_it_is_young(make) -> None:
    # The final bake of config/dev.yaml's `web` is 120 s: the record is remembered for 90 s at most.
    from promoter.fast_rollback import RecordCache
    from promoter.handler import REACTION

    b = make()
    _canary(b)
    rt = b.world.activate("promoter", b.clock)
    pair = rt.config.promotion("web")
    assert RecordCache.ttl_s(pair) == 90
    assert REACTION.fast_rollback.records.usable(rt.store, pair, b.clock.now().timestamp() + 85) is not None
    b.clock.advance(90)
    rt.kill_switch.state()
    calls, out = _alarm_calls(b)
    assert "GetItem" in calls[: calls.index("ModifyListener")], "too old: read again before the write"
    assert out["decisions"][0]["outcome"] == "executed" and b.weights() == {"blue": 100, "green": 0}


def test_a_remembered_record_needs_the_weights_it_wrote_still_in_place(make) -> None:
    # Someone moved the traffic since (or the promotion moved on in another container): the record is read.
    b = make()
    _canary(b)
    b.world.clients.elbv2.modify_listener(**_listener_at(b, {"blue": 50, "green": 50}))
    rt = b.world.activate("promoter", b.clock)
    rt.kill_switch.state()
    calls, out = _alarm_calls(b)
    write = calls.index("ModifyListener")
    assert "GetItem" in calls[:write]
    assert out["decisions"][0]["before"]["weights"] == {"blue": 50, "green": 50}
    assert b.weights() == {"blue": 100, "green": 0}


def _listener_at(b: PromotionBench, weights: dict[str, int]) -> dict[str, Any]:
    target = b.world.config.promotion("web").target
    return {"ListenerArn": target.listener_arn, "DefaultActions": [{"Type": "forward", "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": target.target_group(c), "Weight": w} for c, w in weights.items()]}}]}


def test_no_record_is_remembered_past_the_last_step_or_without_a_final_bake(make, dev_config, clock) -> None:
    from promoter.handler import REACTION

    b = make()
    _canary(b)
    b.run()
    b.console("promote")
    b.run(1)
    assert b.weights() == {"blue": 0, "green": 100}  # the last step: finalizing could follow at any moment
    rt = b.world.activate("promoter", b.clock)
    pair = rt.config.promotion("web")
    assert b.record().promotion.status == "shifting"
    assert REACTION.fast_rollback.records.usable(rt.store, pair, b.clock.now().timestamp()) is None
    rt.kill_switch.state()
    calls, _ = _alarm_calls(b)
    assert "GetItem" in calls[: calls.index("ModifyListener")]
    assert b.weights() == {"blue": 100, "green": 0}

    no_bake = pair.model_copy(update={"bake_s": 0})
    from promoter.fast_rollback import RecordCache

    assert RecordCache.ttl_s(no_bake) == 0


def test_a_remembered_record_never_moves_traffic_onto_an_empty_colour(make) -> None:
    b = make()
    _canary(b)
    b.healthy("blue", 0)
    rt = b.world.activate("promoter", b.clock)
    rt.kill_switch.state()
    from promoter.handler import REACTION

    now = ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now(), previous="OK", value=2.5, threshold=1.0)
    assert REACTION.fast_rollback.records.usable(rt.store, rt.config.promotion("web"), b.clock.now().timestamp())
    assert REACTION.fast_rollback.run(now, rt) == []
    assert b.weights() == {"blue": 90, "green": 10}


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
