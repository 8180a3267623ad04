"""Attacks on the scaler's issue-15 fixes by a reviewer with a fresh context: each test reproduced a defect of the
first fix (commit 337bef1) and now guards its repair.

Same fixtures and helpers as tests/integration/test_scaler_correctness.py (the real handler on moto).

A1 window end sets MinSize above MaxSize · A2 DST fall-back re-applies a window · A3 a second catch-up in one
evaluation is `already-done` · A4 at-max blames bounds.max, not the ceiling · A5 old item written over a higher
window: MinSize left raised · A8 unreadable tags of an unrelated alarm stop the repeated scale-out · A9 operator's
MinSize between two windows undone · A10 lost end bookkeeping taken for an operator's change · A11 completing an
end later drops a window it did not end · A12 back-to-back windows: scale-in below the floor in force · A13 the
new prewarm item crashes the previous release's reader (rollback). (A6/A7, kill switch and dry-run catch-up,
held up and were dropped.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import T0
from tests.integration.test_scaler_correctness import (
    asg,
    configure,
    ecs_desired,
    evaluate,
    outcomes,
    run_prewarm,
)
from tests.support import events as ev
from tests.support.cloudwatch import mirroring_invoke


@pytest.fixture
def invoke(world):
    return mirroring_invoke(world)


def window(name: str, minimum: int, minutes: int, cron: str = "0 9 ? * * *", tz: str = "UTC") -> Any:
    from reflex_core.scaling_config import Prewarm

    return Prewarm(name=name, cron=cron, timezone=tz, min=minimum, for_minutes=minutes)


def ops(out: dict[str, Any], operation: str) -> list[dict[str, Any]]:
    return [d for d in out["decisions"] if d.get("operation") == operation]


# --------------------------------------------------------------------------- A1: restore above the ceiling


def test_a1_window_end_never_sets_min_size_above_a_max_size_set_by_someone_else(world, invoke, clock):
    """Two overlapping windows on an ASG whose MaxSize (8) is below both floors: both starts are capped at 8.
    When the first ends, the restore computes max(original, floor of the remaining window) = 12 from the
    *uncapped* window floor and writes MinSize 12 > MaxSize 8 (AWS: ValidationError, every minute)."""
    configure(world, clock, "workers", prewarm=[window("early", 10, 60), window("late", 12, 120, "10 9 ? * * *")])
    world.clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName="web-workers", MaxSize=8)
    run_prewarm(invoke, "workers", "early", T0)
    assert (asg(world)["MinSize"], asg(world)["DesiredCapacity"]) == (8, 8)
    clock.advance(600)
    run_prewarm(invoke, "workers", "late", clock.now())
    clock.advance(51 * 60)  # "early" ended, "late" runs until 11:10
    out = evaluate(invoke, clock)
    [end] = ops(out, "prewarm_end")
    g = asg(world)
    assert end.get("intended", {}).get("floor") in (None, 8), end
    assert g["MinSize"] <= g["MaxSize"] == 8


# --------------------------------------------------------------------------- A2: DST fall-back, second occurrence


def test_a2_dst_fall_back_does_not_start_the_window_a_second_time(world, invoke, clock):
    """EventBridge Scheduler: "When the time shifts back in the Fall, your schedule runs only once and doesn't
    repeat its invocation." cron.latest_start walks UTC minutes and matches the repeated wall-clock 01:30 twice,
    so the evaluator's catch-up re-applies the window an hour later (01:30 EST) as if its run had been lost."""
    configure(world, clock, "api", prewarm=[window("night-batch", 10, 30, "30 1 ? * * *", "America/New_York")])
    first = datetime(2027, 11, 7, 5, 30, tzinfo=UTC)  # 01:30 EDT, the one run Scheduler makes
    clock.set(first)
    assert outcomes(run_prewarm(invoke, "api", "night-batch", first)) == [("prewarm_start", "executed")]
    clock.set(first + timedelta(minutes=31))
    assert ("prewarm_end", "executed") in outcomes(evaluate(invoke, clock), "api")
    # Application Auto Scaling (or an operator) brings the service back down after the window.
    world.clients.ecs.update_service(cluster="web", service="api", desiredCount=4)
    clock.set(first + timedelta(minutes=63))  # 01:33 EST: the repeated hour
    out = evaluate(invoke, clock)
    assert not ops(out, "prewarm_start"), ops(out, "prewarm_start")
    assert ecs_desired(world) == 4


# --------------------------------------------------------------------------- A3: two missed windows, one run


def test_a3_one_evaluation_catches_up_every_missed_window_of_a_target(world, invoke, clock):
    """Two windows of one policy missed (e.g. kill switch on at 09:00, lifted at 09:03). The evaluator emits a
    catch-up intent for each, but the pipeline keys intents by trigger + target + operation: the second
    prewarm_start of the same evaluation is `skipped:already-done` (quietly), so the higher floor is late."""
    configure(world, clock, "api", prewarm=[window("small", 6, 60), window("big", 10, 60)])
    clock.advance(3 * 60)
    out = evaluate(invoke, clock)
    starts = ops(out, "prewarm_start")
    assert [d["outcome"] for d in starts] == ["executed", "executed"], starts
    assert ecs_desired(world) == 10


# --------------------------------------------------------------------------- A4: at-max names the wrong ceiling


def test_a4_a_scale_out_refused_by_the_platform_ceiling_says_so(world, invoke, clock):
    """MaxSize 2 set outside Reflex, bounds.max 20: an alarm's scale-out is refused `at-max` with the detail
    "desired 2 is already at the maximum 20" - during an incident the audit tells the on-call the policy's own
    maximum was reached, not that someone else's MaxSize 2 is what stops it (set_capacity/pre-warm say so)."""
    world.clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName="web-workers", MaxSize=2)
    out = invoke(ev.eventbridge_alarm("workers-queue-depth-high", "ALARM", T0, value=500.0, threshold=100.0))
    [d] = [d for d in out["decisions"] if d.get("policy") == "workers"]
    assert d["outcome"].startswith("skipped:")
    assert "maximum 20" not in d["detail"] and "2" in d["detail"] and "ceiling" in d["detail"], d["detail"]


# --------------------------------------------------------------------------- A5: old-format state


def _put_old_window(world, clock, policy: str, doc: dict[str, Any]) -> None:
    key = world.config.scaling_policy(policy).target.key
    world.runtime(clock).store._put(f"prewarm#{key}", doc, doc["until"] + 86400)


def test_a5_an_old_format_item_written_over_a_higher_window_still_restores_what_reflex_set(world, invoke, clock):
    """Before the upgrade a second window overwrote the first (the very bug of issue 15): the old code raised
    MinSize to 10 for `launch`, then `lunch` (floor 6) replaced the item, keeping original_min 0; the old code
    would have restored 0 at the end. `PrewarmState.from_doc` infers set_min = 6 (the surviving window's
    floor), so the end finds MinSize 10 != 6, calls it an operator's change, and leaves 10 in place forever."""
    configure(world, clock, "workers", prewarm=[window("launch", 10, 20), window("lunch", 6, 30)])
    world.clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName="web-workers", MinSize=10,
                                                        DesiredCapacity=10)
    _put_old_window(world, clock, "workers", {"name": "lunch", "floor": 6, "until": (T0 + timedelta(minutes=30))
                                              .timestamp(), "original_min": 0})
    clock.advance(31 * 60)
    out = evaluate(invoke, clock)
    [end] = ops(out, "prewarm_end")
    assert "changed outside Reflex" not in end["detail"], end["detail"]
    assert asg(world)["MinSize"] == 0


# --------------------------------------------------------------------------- A8: alarm storm blocks scale-out


def _inject(world, clock):
    from reflex_core.aws_clients import AwsClients
    from simulator.aws_world import moto_clients
    from simulator.faults import FaultInjector

    injector = FaultInjector(clock)
    world.clients = AwsClients(injector.wrap_factory(moto_clients(max_attempts=2)._factory))
    world.runtime(clock)
    return injector


@pytest.fixture
def _no_sleep(monkeypatch):
    import types

    import botocore.endpoint

    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=lambda _s: None))


def test_a8_unreadable_tags_of_an_unrelated_alarm_stop_the_repeated_scale_out(world, clock, _no_sleep):
    """`workers` matches by prefix *and* by tag (no tag_name_prefixes), so actual_alarms now lists every ALARM
    alarm of the account and reads each one's tags. In an alarm storm ListTagsForResource is throttled: one
    unrelated alarm's unreadable tags make the whole read fail, and the evaluator refuses the repeated scale-out
    ("alarm-state-unreadable") although the policy's own prefix-matched alarm is in ALARM per CloudWatch."""
    injector = _inject(world, clock)
    invoke = mirroring_invoke(world)
    world.set_alarm_state("billing-estimated-charges-high", "ALARM", T0 - timedelta(hours=1))
    first = invoke(ev.eventbridge_alarm("workers-queue-depth-high", "ALARM", T0, value=500.0, threshold=100.0))
    assert outcomes(first, "workers") == [("scale_out", "executed")]
    before = asg(world)["DesiredCapacity"]
    injector.fail("ListTagsForResource", "throttle", persist=True)
    clock.advance(200)  # past the 180 s scale-out cooldown; still in ALARM
    out = evaluate(invoke, clock)
    assert outcomes(out, "workers") == [("scale_out", "executed")], [
        (d["outcome"], d.get("detail")) for d in out["decisions"] if d.get("policy") == "workers"]
    assert asg(world)["DesiredCapacity"] > before


# --------------------------------------------------------------------------- A9: operator's MinSize between windows


def test_a9_an_operators_min_size_set_during_one_window_survives_the_next_windows_end(world, invoke, clock):
    """`batch` raises MinSize 0 -> 6 (original 0, set_min 6). During it the on-call raises MinSize to 8 by hand.
    `report` then starts (floor 10): after_executed keeps original_min 0 because set_min was not None, though
    MinSize (8) was no longer what Reflex set. When both end MinSize is 10 == set_min, so Reflex "restores" 0:
    the on-call's 8 is silently undone (the rule is: changes made outside Reflex are left in place)."""
    configure(world, clock, "workers", prewarm=[window("batch", 6, 30), window("report", 10, 30, "10 9 ? * * *")])
    run_prewarm(invoke, "workers", "batch", T0)
    assert asg(world)["MinSize"] == 6
    clock.advance(300)
    world.clients.autoscaling.update_auto_scaling_group(AutoScalingGroupName="web-workers", MinSize=8,
                                                        DesiredCapacity=8)
    clock.advance(300)
    run_prewarm(invoke, "workers", "report", clock.now())
    assert asg(world)["MinSize"] == 10
    clock.advance(41 * 60)  # both ended
    evaluate(invoke, clock)
    assert asg(world)["MinSize"] == 8


# --------------------------------------------------------------------------- A10: lost bookkeeping of an end


def test_a10_a_window_end_whose_bookkeeping_failed_is_not_taken_for_an_operators_change(world, invoke, clock,
                                                                                        monkeypatch):
    """The end of `early` lowers MinSize 10 -> 6 (for `late`), then saving the state fails (DynamoDB throttled):
    the change is in place, set_min is still 10 in the table. Lambda's retry of that run has not arrived when the
    next minute's evaluation runs (or never does: the evaluate schedule's max event age is 60 s). That evaluation
    ends `early` again, finds MinSize 6 != set_min 10, audits it as "changed outside Reflex" and drops set_min:
    when `late` ends, MinSize stays 6 for good."""
    from reflex_core.pipeline import RetryLater
    from reflex_core.state_store import StateStore

    configure(world, clock, "workers", prewarm=[window("early", 10, 60), window("late", 6, 120, "10 9 ? * * *")])
    run_prewarm(invoke, "workers", "early", T0)
    clock.advance(600)
    run_prewarm(invoke, "workers", "late", clock.now())
    assert asg(world)["MinSize"] == 10
    clock.advance(51 * 60)  # 10:01: early ended
    real = StateStore.save_prewarm
    calls = {"n": 0}

    def flaky(self, key, state):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("ProvisionedThroughputExceededException")
        return real(self, key, state)

    monkeypatch.setattr(StateStore, "save_prewarm", flaky)
    with pytest.raises(RetryLater):
        evaluate(invoke, clock)
    assert asg(world)["MinSize"] == 6
    clock.advance(60)
    nxt = evaluate(invoke, clock)
    assert not any("changed outside Reflex" in (d.get("detail") or "") for d in nxt["decisions"]), nxt["decisions"]
    clock.advance(80 * 60)  # late ended too
    evaluate(invoke, clock)
    assert asg(world)["MinSize"] == 0


# --------------------------------------------------------------------------- A11: completion deletes by *now*


def test_a11_completing_a_window_end_later_does_not_drop_a_window_it_did_not_end(world, invoke, clock, monkeypatch):
    """after_executed(prewarm_end) deletes the windows expired *when it runs*, not the ones the action ended. The
    end of `early` (MinSize 10 -> 6 for `late`) loses its bookkeeping; Lambda's retry of that run completes it
    after `late` has ended too: both windows are deleted, the item is cleared, and nothing ever restores `late`'s
    MinSize 6 (expected: 0, what it was before Reflex raised it)."""
    from reflex_core.pipeline import RetryLater
    from reflex_core.state_store import StateStore

    configure(world, clock, "workers", prewarm=[window("early", 10, 60), window("late", 6, 62)])
    run_prewarm(invoke, "workers", "early", T0)
    run_prewarm(invoke, "workers", "late", T0)
    assert asg(world)["MinSize"] == 10
    clock.advance(61 * 60)  # 10:01: early ended, late ends at 10:02
    real = StateStore.save_prewarm
    calls = {"n": 0}

    def flaky(self, key, state):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("ProvisionedThroughputExceededException")
        return real(self, key, state)

    monkeypatch.setattr(StateStore, "save_prewarm", flaky)
    run = ev.schedule("evaluate", "evaluate", clock.now())
    with pytest.raises(RetryLater):
        invoke(run)
    assert asg(world)["MinSize"] == 6
    clock.advance(120)  # 10:03: Lambda's retry of the same run (same scheduled time)
    invoke(run)
    clock.advance(60)
    evaluate(invoke, clock)
    assert asg(world)["MinSize"] == 0


# --------------------------------------------------------------------------- A12: back-to-back windows


def test_a12_back_to_back_windows_do_not_scale_in_below_the_floor_in_force(world, invoke, clock):
    """An hourly window for 60 min keeps a floor all day. At 10:00:20 the evaluator runs before the 10:00
    scheduled run arrives: it ends the 09:00 window and, in the same evaluation, scales in below the floor the
    cron says is in force (the catch-up that knows it waits 120 s for the scheduled run)."""
    from tests.integration.test_scaler_correctness import all_ok

    configure(world, clock, "api", prewarm=[window("hourly", 10, 60, "0 * * * ? *")])
    all_ok(invoke)
    run_prewarm(invoke, "api", "hourly", T0)
    assert ecs_desired(world) == 10
    clock.advance(3600 + 20)
    out = evaluate(invoke, clock)
    assert ("scale_in", "executed") not in outcomes(out, "api"), outcomes(out, "api")
    assert ecs_desired(world) == 10


# --------------------------------------------------------------------------- A13: rollback safety of the item


def test_a13_the_prewarm_item_stays_readable_by_the_release_it_replaces(world, invoke, clock):
    """Rolling back the deploy (the usual first move in an incident) puts the previous reader back on the same
    `prewarm#<key>` item: `PrewarmWindow(**doc)` (337bef1~1 state_store.py:125-129,374-376). The new item
    ({"windows", "original_min", "set_min"}) makes it raise TypeError, and that reader runs in `plan` of every
    action on the target (scale-out included) and in every evaluation, until the item's TTL (until + 7 days)."""
    from dataclasses import dataclass

    @dataclass
    class PreviousPrewarmWindow:  # the previous release's reader, verbatim
        name: str
        floor: int
        until: float
        original_min: int | None = None

    configure(world, clock, "workers", prewarm=[window("batch", 6, 30)])
    run_prewarm(invoke, "workers", "batch", T0)
    key = world.config.scaling_policy("workers").target.key
    doc = world.runtime(clock).store._get(f"prewarm#{key}")
    PreviousPrewarmWindow(**doc)
