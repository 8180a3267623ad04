"""Automatic rollback: a guard alarm entering ALARM at any stage of a promotion (or during the retention
window) puts all traffic back on the colour that was live in the invocation that receives the alarm, stops
the workflow, releases the scale-in freeze, audits and notifies. Also the rollbacks the workflow decides
itself (a failed check, an unhealthy incoming colour) and the reconcile backstop."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from moto import mock_aws

from reflex_core.promotion_config import AllAtOnce
from reflex_core.runtime import install_runtime
from tests.support.promotion import PromotionBench, bench, notices, with_pair

LATENCY = "web-p99-latency-high"
ERRORS = "web-5xx-rate-high"


@pytest.fixture
def make(dev_config, clock) -> Iterator[Any]:
    with mock_aws():
        yield lambda **changes: bench(with_pair(dev_config, **changes), clock)
    install_runtime(None)


def at_canary(b: PromotionBench) -> None:
    b.green_ready()
    b.run(1)
    assert b.weights() == {"blue": 90, "green": 10}


def at_gate(b: PromotionBench) -> None:
    at_canary(b)
    b.run()
    assert b.record().promotion.status == "awaiting-approval"


def at_final_bake(b: PromotionBench) -> None:
    at_gate(b)
    b.console("promote")
    b.run(1)
    assert b.weights() == {"blue": 0, "green": 100}


def at_retention(b: PromotionBench) -> None:
    at_final_bake(b)
    b.run(121)
    assert b.record().promotion.status == "finalized"


def while_paused(b: PromotionBench) -> None:
    at_canary(b)
    b.console("pause", reason="looking at a dashboard")
    b.run(400)
    assert b.record().promotion.status == "held"


STAGES: dict[str, Callable[[PromotionBench], None]] = {
    "canary": at_canary, "gate": at_gate, "final-bake": at_final_bake, "retention": at_retention,
    "paused": while_paused,
}


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("via", ["eventbridge", "alarm-action"])
def test_guard_alarm_rolls_back_in_the_same_invocation(make, stage: str, via: str) -> None:
    b = make()
    read_notices = notices(b.world)
    STAGES[stage](b)
    execution = b.execution()
    assert b.world.activate("promoter").store.active_scale_in_freeze("api", b.clock.now()) is not None

    response = b.alarm(LATENCY, "ALARM", via=via)

    (decision,) = response["decisions"]
    assert decision["outcome"] == "executed" and decision["operation"] == "rollback"
    # Before any workflow state runs: the invocation itself moved the traffic back.
    assert b.weights() == {"blue": 100, "green": 0}
    assert decision["after"]["weights"] == {"blue": 100, "green": 0}
    record = b.record()
    assert record.live == "blue" and record.promotion.status == "rolled-back"
    assert LATENCY in record.promotion.reason
    assert execution.status == "ABORTED" and execution.error == "Reflex.RolledBack"
    assert b.world.activate("promoter").store.active_scale_in_freeze("api", b.clock.now()) is None
    (audit,) = [r for r in b.audit() if r["operation"] == "rollback"]
    assert audit["who"] == f"alarm:{LATENCY}" and audit["outcome"] == "executed"
    assert any(n["operation"] == "rollback" and n["outcome"] == "executed" for n in read_notices())

    b.run()  # nothing of the stopped workflow runs any more
    assert b.weights() == {"blue": 100, "green": 0}


def test_rollback_needs_one_write_and_reads_nothing_it_does_not_need(make) -> None:
    b = make()
    at_canary(b)
    calls: list[str] = []
    for service in ("elbv2", "cloudwatch", "route53"):
        b.world.clients.get(service).meta.events.register("before-call", lambda model, **_: calls.append(model.name))
    b.alarm(LATENCY, "ALARM")
    # Read the forward action, check blue's health, write both weights in one call, read back.
    assert [c for c in calls if c.startswith("Modify")] == ["ModifyListener"]
    assert calls.count("DescribeAlarms") == 0


def test_alarm_ok_or_insufficient_data_does_not_roll_back(make) -> None:
    b = make()
    at_canary(b)
    assert b.alarm(LATENCY, "INSUFFICIENT_DATA")["decisions"][0]["outcome"] == "skipped:alarm-not-breaching"
    assert b.weights() == {"blue": 90, "green": 10}


def test_alarm_without_a_promotion_is_audited_and_changes_nothing(make) -> None:
    b = make()
    assert b.alarm(LATENCY, "ALARM")["decisions"][0]["outcome"] == "skipped:no-promotion"
    assert b.weights() == {"blue": 100, "green": 0}


def test_alarm_after_the_retention_window_leaves_the_new_colour_live(make) -> None:
    b = make()
    at_retention(b)
    b.run()  # retention over, cleanup
    assert b.alarm(ERRORS, "ALARM")["decisions"][0]["outcome"] == "skipped:no-promotion"
    assert b.weights() == {"blue": 0, "green": 100} and b.record().live == "green"


def test_alarm_between_start_and_preflight_refuses_the_promotion(make) -> None:
    b = make()
    b.green_ready()
    assert b.alarm(LATENCY, "ALARM")["decisions"][0]["outcome"] == "skipped:no-promotion"
    b.run()
    assert b.driver.executions and next(iter(b.driver.executions.values())).error == "Reflex.PreflightRefused"
    assert b.weights() == {"blue": 100, "green": 0}


def test_alarm_takes_over_the_lock_a_step_holds(make) -> None:
    b = make()
    at_canary(b)
    rt = b.world.activate("promoter", b.clock)
    assert rt.store.acquire_lock("promotion/web", "a-step-still-running", b.clock.now(), 120)
    (decision,) = b.alarm(LATENCY, "ALARM")["decisions"]
    assert decision["outcome"] == "executed"
    assert "took over the lock" in decision["detail"]
    assert b.weights() == {"blue": 100, "green": 0}


def test_rollback_is_never_rate_limited(make) -> None:
    b = make()
    at_canary(b)
    rt = b.world.activate("promoter", b.clock)
    from reflex_core.state_store import RateWindow

    now = b.clock.now().timestamp()
    rt.store.update_rate_window("promotion/web", lambda w: RateWindow(
        actions=[(now - 1, "")] * 500, open_until={"": now + 600}, version=w.version), b.clock.now())
    assert b.alarm(LATENCY, "ALARM")["decisions"][0]["outcome"] == "executed"
    assert b.weights() == {"blue": 100, "green": 0}


def test_kill_switch_on_still_lets_the_rollback_to_the_known_good_colour_run(make) -> None:
    # Issue 8 #5: `on` stops every forward action; getting users back to safety is not one of them.
    b = make()
    at_canary(b)
    b.world.set_kill_switch("promoter", True)
    b.world.activate("promoter", b.clock).kill_switch.invalidate()
    (decision,) = b.alarm(LATENCY, "ALARM")["decisions"]
    assert decision["outcome"] == "executed" and "lets a rollback" in decision["detail"]
    assert b.weights() == {"blue": 100, "green": 0}


def test_kill_switch_hard_stop_stops_even_the_rollback(make) -> None:
    # "hard-stop" means everything: the operator who pulled it owns the traffic split.
    b = make()
    at_canary(b)
    rt = b.world.activate("promoter", b.clock)
    rt.clients.ssm.put_parameter(Name=f"{b.world.settings.kill_switch_prefix}/promoter", Value="hard-stop",
                                 Type="String", Overwrite=True)
    rt.kill_switch.invalidate()
    assert b.alarm(LATENCY, "ALARM")["decisions"][0]["outcome"] == "skipped:kill-switch"
    assert b.weights() == {"blue": 90, "green": 10}


def test_check_sees_an_alarm_whose_event_was_lost_and_the_workflow_rolls_back(make) -> None:
    b = make()
    at_canary(b)
    b.set_alarm(ERRORS, "ALARM")  # CloudWatch knows; the event never arrives
    b.run()
    assert b.weights() == {"blue": 100, "green": 0}
    assert b.execution().error == "Reflex.RolledBack"
    check = [r for r in b.audit() if r["operation"] == "check"][-1]
    assert check["action"]["intended"]["verdict"] == "rollback" and ERRORS in check["detail"]


def test_insufficient_data_at_a_check_is_not_ok(make) -> None:
    b = make()
    at_canary(b)
    b.set_alarm(ERRORS, "INSUFFICIENT_DATA")
    b.run()
    assert b.execution().error == "Reflex.RolledBack"
    assert b.weights() == {"blue": 100, "green": 0}


def test_green_losing_targets_during_the_bake_rolls_back(make) -> None:
    b = make()
    at_canary(b)
    b.healthy("green", 1)  # min_healthy_green is 2
    b.run()
    assert b.weights() == {"blue": 100, "green": 0}
    assert "green has 1 healthy targets, needs 2" in b.record().promotion.reason


def test_never_shifts_onto_an_unhealthy_colour(make) -> None:
    b = make()
    at_gate(b)
    b.healthy("green", 0)
    b.console("promote")
    b.run()
    shifts = [r for r in b.audit() if r["operation"] == "shift"]
    assert shifts[-1]["outcome"] == "skipped:green-unhealthy"
    assert b.weights() == {"blue": 100, "green": 0}


def test_rollback_refuses_a_colour_without_healthy_targets_and_pages(make) -> None:
    b = make()
    read_notices = notices(b.world)
    at_canary(b)
    b.healthy("blue", 0)
    from reflex_core.pipeline import ActionFailed

    with pytest.raises(ActionFailed, match="UnsafeWeights"):  # raised so that Lambda retries the alarm event
        b.alarm(LATENCY, "ALARM")
    # Traffic stays where it is: 100 % onto an empty colour would be an outage.
    assert b.weights() == {"blue": 90, "green": 10}
    (failed,) = [r for r in b.audit() if r["outcome"].startswith("failed:")]
    assert failed["outcome"] == "failed:UnsafeWeights"
    assert any(n["outcome"] == "failed:UnsafeWeights" for n in read_notices())


def test_reconcile_rolls_back_when_the_alarm_event_was_lost(make) -> None:
    b = make()
    at_gate(b)  # waiting for approval: no check will run for an hour
    b.set_alarm(LATENCY, "ALARM")
    (decision,) = b.reconcile()["decisions"]
    assert decision["outcome"] == "executed" and decision["operation"] == "reconcile"
    assert b.weights() == {"blue": 100, "green": 0}
    assert b.execution().status == "ABORTED"


def test_reconcile_rollback_is_a_safety_action_at_kill_switch_on(make) -> None:
    # The reconcile's rollback is a rollback: the kill switch at `on` lets it run, `hard-stop` stops it.
    b = make()
    at_gate(b)
    b.set_alarm(LATENCY, "ALARM")  # the alarm's event was lost
    rt = b.world.activate("promoter", b.clock)
    b.world.set_kill_switch_value("promoter", "hard-stop")
    rt.kill_switch.invalidate()
    (stopped,) = b.reconcile()["decisions"]
    assert stopped["outcome"] == "skipped:kill-switch" and b.weights() == {"blue": 90, "green": 10}

    b.world.set_kill_switch("promoter", True)
    rt.kill_switch.invalidate()
    b.clock.advance(60)  # the reconcile's next scheduled run (runs are keyed by their scheduled time)
    (decision,) = b.reconcile()["decisions"]
    assert decision["outcome"] == "executed" and decision["operation"] == "reconcile"
    assert "lets a rollback" in decision["detail"]
    assert b.weights() == {"blue": 100, "green": 0}
    assert b.record().promotion.status == "rolled-back" and b.execution().status == "ABORTED"


def test_reconcile_at_kill_switch_on_plans_no_cleanup(make) -> None:
    b = make()
    at_retention(b)
    b.driver.stop_execution(b.execution().arn, "States.Runtime", "the workflow died during the retention")
    b.clock.advance(3600)  # retention over: the reconcile's cleanup is due
    rt = b.world.activate("promoter", b.clock)
    b.world.set_kill_switch("promoter", True)
    rt.kill_switch.invalidate()
    (decision,) = b.reconcile()["decisions"]
    assert decision["outcome"] == "skipped:kill-switch" and "cleanup" in decision["detail"]
    assert b.record().promotion.status == "finalized"
    b.world.set_kill_switch("promoter", False)
    rt.kill_switch.invalidate()
    b.clock.advance(60)  # the next scheduled run
    assert b.reconcile()["decisions"][0]["outcome"] == "executed"
    assert b.record().promotion.status == "completed"


def test_reconcile_rolls_back_a_promotion_whose_workflow_died(make) -> None:
    b = make()
    at_canary(b)
    b.driver.stop_execution(b.execution().arn, "States.Runtime", "someone stopped it by hand")
    assert b.weights() == {"blue": 90, "green": 10}
    assert b.reconcile()["decisions"][0]["outcome"] == "executed"
    assert b.weights() == {"blue": 100, "green": 0}
    assert "workflow ABORTED" in b.record().promotion.reason


def test_reconcile_is_quiet_when_nothing_is_wrong(make) -> None:
    b = make()
    at_canary(b)
    response = b.reconcile()
    assert [d["outcome"] for d in response["decisions"]] == ["skipped:in-progress"]
    assert not [r for r in b.audit() if r["operation"] == "reconcile"]


def test_all_at_once_rolls_back_from_100_percent(make) -> None:
    b = make(schedule=AllAtOnce(kind="all-at-once"), approval=None)
    b.green_ready()
    b.run(1)
    assert b.weights() == {"blue": 0, "green": 100}
    b.alarm(ERRORS, "ALARM")
    assert b.weights() == {"blue": 100, "green": 0}
