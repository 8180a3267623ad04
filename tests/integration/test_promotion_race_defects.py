"""Issue 16's defects, one named test each, each an interleaving the reviewer reproduced with the real handler
(tests/support/promotion_races.py runs the two invocations one call at a time). No reconcile runs unless the
test says so: the invocations themselves must converge."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from reflex_core.clock import VirtualClock
from reflex_core.runtime import install_runtime
from tests.conftest import T0
from tests.support.promotion import PromotionBench, bench, completed_events, with_pair
from tests.support.promotion_races import SCENARIOS, CellOutcome, Stop, run_cell

BLUE = {"blue": 100, "green": 0}
LATENCY = "web-p99-latency-high"


def scenario(name: str) -> Any:
    (found,) = [s for s in SCENARIOS if s.name == name]
    return found


@pytest.fixture
def make(dev_config) -> Iterator[Any]:
    with mock_aws():
        yield lambda **changes: bench(with_pair(dev_config, **changes), VirtualClock(T0))
    install_runtime(None)


def race(make: Any, name: str, family: str, at: Stop, back: Stop, reconcile: bool = False) -> CellOutcome:
    b = make()
    reader = completed_events(b.world)
    cell = run_cell(b, scenario(name), family, at, back, lambda: reader(), reconcile=reconcile)
    assert cell.handed_over, f"the interleaving was not reached: first {cell.first_calls}"
    return cell


def test_defect1_rollback_recorded_after_the_last_shift_wrote_and_recorded_still_wins(make) -> None:
    """The rollback writes blue 100; the shift, past its checks, writes green 100 and records its step; then the
    rollback records itself. The rollback re-reads the weights after its record and writes them back."""
    cell = race(make, "last shift (100 %)", "step-first", ("ModifyListener", 1), ("PutItem:promotion", 1))
    assert cell.record.promotion.status == "rolled-back"
    assert cell.weights == BLUE, cell.second_calls


def test_defect2_rollback_that_read_before_the_first_shift_wrote_still_writes(make) -> None:
    """The rollback read the listener (blue 100) just before the canary shift wrote 90/10: "target equals
    current", nothing written. After its record it re-reads, finds 90/10 and writes blue 100."""
    cell = race(make, "first shift (canary 10 %)", "step-first", ("ModifyListener", 1), ("PutItem:intent", 1))
    assert cell.record.promotion.status == "rolled-back"
    assert cell.weights == BLUE, (cell.first_calls, cell.second_calls)


def test_defect3_finalize_never_overwrites_a_rollback(make) -> None:
    """The rollback lands between finalize's read and its record write: the finalize is fenced (status and epoch),
    the record stays rolled back, and no DeploymentCompleted goes out for the rolled-back release."""
    cell = race(make, "finalize", "step-first", ("PutItem:promotion", 1), 0)
    record = cell.record
    assert record.promotion.status == "rolled-back" and record.live == "blue"
    assert cell.weights == BLUE
    assert cell.completed == []


def test_defect3_next_green_ready_after_a_fenced_finalize_is_not_refused(make) -> None:
    cell = race(make, "finalize", "step-first", ("PutItem:promotion", 1), 0)
    assert cell.record.live == "blue" and cell.weights == BLUE


@pytest.mark.parametrize("name", ["approval gate", "hold (paused)"])
def test_defect4_a_rollback_between_a_wait_step_read_and_write_is_not_resurrected(make, name: str) -> None:
    step = {"approval gate": "wait_for_approval", "hold (paused)": "hold"}[name]
    cell = race(make, name, "step-first", ("PutItem:promotion", 1), 0)
    p = cell.record.promotion
    assert p.status == "rolled-back", f"{step} resurrected the promotion as {p.status}"
    assert p.approval_token is None and p.resume_token is None
    assert cell.weights == BLUE


@pytest.mark.parametrize("name", ["console promote in advance", "console resume while held", "console pause",
                                  "console promote at the gate"])
def test_defect4_console_commands_never_resurrect_a_rolled_back_promotion(make, name: str) -> None:
    cell = race(make, name, "step-first", ("PutItem:promotion", 1), 0)
    p = cell.record.promotion
    assert p.status == "rolled-back" and cell.record.live == "blue"
    assert not p.paused and p.approval_token is None and p.resume_token is None and p.approved_by is None
    assert cell.weights == BLUE


def _delete_blue_record(b: PromotionBench) -> None:
    target = b.world.config.promotions[0].target
    r53 = b.world.clients.route53
    sets = r53.list_resource_record_sets(HostedZoneId=target.hosted_zone_id)["ResourceRecordSets"]
    (blue,) = [r for r in sets if r.get("SetIdentifier") == "blue"]
    r53.change_resource_record_sets(HostedZoneId=target.hosted_zone_id, ChangeBatch={
        "Changes": [{"Action": "DELETE", "ResourceRecordSet": blue}]})


def _third_target_group(b: PromotionBench) -> None:
    target = b.world.config.promotions[0].target
    elb = b.world.clients.elbv2
    (listener,) = elb.describe_listeners(ListenerArns=[target.listener_arn])["Listeners"]
    actions = listener["DefaultActions"]
    forward = next(a for a in actions if a["Type"] == "forward")
    vpc = elb.describe_target_groups(TargetGroupArns=[target.blue_target_group_arn])["TargetGroups"][0]["VpcId"]
    third = elb.create_target_group(Name="web-third", Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]
    forward["ForwardConfig"]["TargetGroups"].append({"TargetGroupArn": third["TargetGroupArn"], "Weight": 5})
    forward.pop("TargetGroupArn", None)
    elb.modify_listener(ListenerArn=target.listener_arn, DefaultActions=actions)


@pytest.mark.parametrize("breakage", ["route53-blue-record-deleted", "alb-third-target-group"])
def test_defect5_a_rollback_that_cannot_be_planned_is_audited_pages_and_is_recorded(make, breakage: str) -> None:
    from tests.integration.test_promotion_races import ROUTE53

    b = make(**({"target": ROUTE53} if breakage.startswith("route53") else {}))
    b.green_ready(release="v2")
    b.run(1)
    (_delete_blue_record if breakage.startswith("route53") else _third_target_group)(b)
    with contextlib.suppress(Exception):  # Lambda retries it; the audit trail is what is checked
        b.alarm(LATENCY, "ALARM")
    rollbacks = [r for r in b.audit() if r["operation"] == "rollback"]
    assert rollbacks, "the failed rollback left no audit record"
    assert rollbacks[-1]["outcome"].startswith("failed:"), rollbacks[-1]
    assert "page" in rollbacks[-1] or rollbacks[-1]["outcome"].startswith("failed:")
    p = b.record().promotion
    assert p.status == "rollback-failed", p.status
    assert b.execution().status == "ABORTED"
    # The reconcile does not raise on it, every few minutes, forever.
    response = b.reconcile()
    assert response["status"] == "ok", response


def test_defect6_promote_after_the_gate_timed_out_is_not_reported_executed(make) -> None:
    b = make()
    b.green_ready(release="v2")
    b.run()
    execution = b.execution()

    def timed_out(*_: Any, **__: Any) -> None:
        execution.waiting_token = None  # the gate's timeout fired a moment before the promote's callback

    original = b.driver.send_task_success

    def send(taskToken: str, output: str) -> Any:
        timed_out()
        return original(taskToken=taskToken, output=output)

    b.driver.send_task_success = send  # type: ignore[method-assign]
    response = b.console("promote")
    (decision,) = response["decisions"]
    assert decision["outcome"] == "failed:GateGone", decision
    assert "approved nothing" in decision["detail"] and "unknown" not in decision["detail"], decision
    assert b.record().promotion.status == "awaiting-approval" or b.record().promotion.status == "rolled-back"


# --------------------------------------------------------------------------- design decisions of issue 16


def _set_weights(b: PromotionBench, weights: dict[str, int]) -> None:
    """An operator moving the traffic by hand (the console of the load balancer or of Route 53)."""
    from promoter.traffic_switch import PairTraffic

    PairTraffic(b.world.clients, b.world.config.promotions[0]).switch.write(weights)


def test_close_ends_a_failed_rollback_on_the_colour_the_operator_chose(make) -> None:
    from tests.integration.test_promotion_races import ROUTE53

    b = make(target=ROUTE53)
    b.green_ready(release="v2")
    b.run(1)
    target = b.world.config.promotions[0].target
    r53 = b.world.clients.route53
    sets = r53.list_resource_record_sets(HostedZoneId=target.hosted_zone_id)["ResourceRecordSets"]
    (blue,) = [r for r in sets if r.get("SetIdentifier") == "blue"]
    _delete_blue_record(b)
    with contextlib.suppress(Exception):
        b.alarm(LATENCY, "ALARM")
    assert b.record().promotion.status == "rollback-failed"
    # By hand: blue's record back, and the operator decides green stays (blue is what broke).
    r53.change_resource_record_sets(HostedZoneId=target.hosted_zone_id, ChangeBatch={
        "Changes": [{"Action": "CREATE", "ResourceRecordSet": dict(blue, Weight=0)}]})
    response = b.console("close", live="green", reason="blue record lost; green serves")
    (decision,) = response["decisions"]
    assert decision["outcome"] == "executed", decision
    record = b.record()
    assert record.live == "green" and record.promotion.status == "closed"
    assert b.weights() == {"blue": 0, "green": 100}
    (closed,) = [r for r in b.audit() if r["operation"] == "close"]
    assert closed["who"].startswith("console") and closed["after"]["weights"] == {"blue": 0, "green": 100}
    # The reconcile keeps the operator's decision, and puts it back when the weights are moved.
    b.clock.advance(3600)
    b.reconcile()
    assert b.weights() == {"blue": 0, "green": 100}
    _set_weights(b, {"blue": 50, "green": 50})
    b.clock.advance(60)  # the reconcile's next run (runs are keyed by their scheduled time)
    b.reconcile()
    assert b.weights() == {"blue": 0, "green": 100}
    # A new promotion starts from the closed state (live green: the next one goes to blue).
    assert b.green_ready(release="v3")["decisions"][0]["outcome"] == "executed"


def test_close_needs_a_live_colour() -> None:
    from promoter.promotion_commands import PromotionCommand

    with pytest.raises(ValueError, match="live"):
        PromotionCommand.model_validate({"command": "close", "pair": "web", "reason": "done by hand",
                                         "operator": "sre"})


def test_a_green_ready_refused_during_retention_leaves_no_rollback_onto_the_unapproved_release(make) -> None:
    """Green finalized, blue retained; a new release lands on blue and its GreenReady is refused by the preflight.
    Blue now runs a release nobody approved: a guard alarm must not put 100 % onto it. The rollback target is
    gone (retention ended with the GreenReady); the alarm is audited, refused, and pages."""
    b = make(approval=None, bake_s=30)
    b.green_ready(release="v2")
    b.run(400)
    assert b.record().promotion.status == "finalized" and b.weights() == {"blue": 0, "green": 100}
    b.healthy("blue", 0)  # blue's new release is not up yet: the preflight refuses
    b.green_ready(release="v3")
    b.run(5)
    assert b.record().promotion.status == "finalized"
    assert b.record().promotion.releases.get("blue") == "v3"
    b.alarm(LATENCY, "ALARM")
    assert b.weights() == {"blue": 0, "green": 100}
    (alarm,) = [r for r in b.audit() if r["trigger"].get("kind") == "alarm" and r["target"]]
    assert alarm["outcome"] == "skipped:retention-ended" and alarm.get("page") is True, alarm


def test_a_shift_after_weights_changed_by_hand_at_the_gate_holds(make) -> None:
    b = make()
    b.green_ready(release="v2")
    b.run()
    assert b.record().promotion.status == "awaiting-approval"
    _set_weights(b, {"blue": 50, "green": 50})
    b.console("promote")
    b.run(1)
    assert b.weights() == {"blue": 50, "green": 50}, "the shift moved traffic from weights it did not write"
    p = b.record().promotion
    assert p.paused and p.step == 0, p
    (held,) = [r for r in b.audit() if r["operation"] == "shift" and r["action"]["operation"] == "shift_held"]
    assert held["outcome"] == "executed" and "changed outside Reflex" in held["detail"]


def test_defect1_the_reconcile_puts_the_rolled_back_weights_back_an_hour_later(make) -> None:
    """Whatever write comes later still (a step's delayed call, a hand change), the reconcile enforces the record."""
    b = make()
    b.green_ready(release="v2")
    b.run(1)
    b.alarm(LATENCY, "ALARM")
    assert b.record().promotion.status == "rolled-back" and b.weights() == BLUE
    _set_weights(b, {"blue": 0, "green": 100})
    b.clock.advance(3600)
    b.reconcile()
    assert b.weights() == BLUE
    repair = [r for r in b.audit() if r["trigger"].get("kind") == "schedule" and r["outcome"] == "executed"]
    assert [r["operation"] for r in repair] == ["reconcile"], repair
    assert repair[0]["before"]["weights"] == {"blue": 0, "green": 100}
    b.clock.advance(60)
    b.reconcile()  # the next run: nothing to do, not audited
    assert len([r for r in b.audit() if r["trigger"].get("kind") == "schedule"]) == 1
