"""Console commands (promote, pause, resume, abort, rollback), the approval gate and its timeout, the
scale-in freeze the scaler respects, and the preflight's refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from reflex_core.promotion_config import AllAtOnce
from reflex_core.runtime import install_runtime
from tests.conftest import FakeLambdaContext
from tests.support import events as ev
from tests.support.promotion import PromotionBench, bench, with_pair


@pytest.fixture
def make(dev_config, clock) -> Iterator[Any]:
    with mock_aws():
        yield lambda **changes: bench(with_pair(dev_config, **changes), clock)
    install_runtime(None)


def outcome(response: dict[str, Any]) -> str:
    (decision,) = response["decisions"]
    return str(decision["outcome"])


def canary(b: PromotionBench) -> None:
    b.green_ready()
    b.run(1)


# --------------------------------------------------------------------------- promote and the gate


def test_promote_at_the_gate_sends_the_task_token(make) -> None:
    b = make()
    canary(b)
    b.run()
    token = b.record().promotion.approval_token
    assert token and b.execution().waiting_token == token
    assert outcome(b.console("promote", operator="alice", reason="dashboards clean")) == "executed"
    assert b.record().promotion.approved_by == "alice" and b.record().promotion.approval_token is None
    b.run(1)
    assert b.weights() == {"blue": 0, "green": 100}
    # The token never enters the audit trail.
    assert not [r for r in b.world.audit_records() if token in str(r)]


def test_promote_before_the_gate_approves_it_in_advance(make) -> None:
    b = make()
    canary(b)
    assert outcome(b.console("promote", operator="bob")) == "executed"
    b.run(300)  # bake, check: the gate opens at once
    assert b.weights() == {"blue": 0, "green": 100}
    assert outcome(b.console("promote")) == "skipped:gate-passed"


def test_approval_timeout_rolls_back(make) -> None:
    b = make()
    canary(b)
    b.run()
    b.run(3600)
    assert b.weights() == {"blue": 100, "green": 0}
    assert b.execution().error == "Reflex.RolledBack"
    assert b.record().promotion.reason.startswith("nobody approved the last step in time (")
    assert outcome(b.console("promote")) == "skipped:no-promotion"


def test_promote_without_a_gate_or_a_promotion(make) -> None:
    b = make(approval=None)
    assert outcome(b.console("promote")) == "skipped:no-promotion"
    canary(b)
    assert outcome(b.console("promote")) == "skipped:no-approval-gate"


# --------------------------------------------------------------------------- pause and resume


def test_pause_holds_the_weights_until_resume(make) -> None:
    b = make(approval=None)
    canary(b)
    assert outcome(b.console("pause", reason="investigating a log spike")) == "executed"
    assert outcome(b.console("pause")) == "skipped:already-paused"
    b.run(3 * 3600)
    assert b.weights() == {"blue": 90, "green": 10}
    assert b.record().promotion.status == "held" and b.record().promotion.resume_token
    assert outcome(b.console("resume", reason="false alarm")) == "executed"
    b.run(1)  # check again, then on
    assert b.weights() == {"blue": 0, "green": 100}
    assert outcome(b.console("resume")) == "skipped:not-paused"


def test_resume_before_the_hold_began(make) -> None:
    b = make(approval=None)
    canary(b)
    b.console("pause")
    b.console("resume")  # during the bake: the workflow never holds
    b.run(301)
    assert b.weights() == {"blue": 0, "green": 100}


def test_a_pause_longer_than_max_pause_rolls_back(make) -> None:
    b = make(approval=None, max_pause_s=600)
    canary(b)
    b.console("pause")
    b.run(300 + 601)
    assert b.weights() == {"blue": 100, "green": 0}
    assert b.record().promotion.reason.startswith("paused longer than max_pause_s (workflow error States.Timeout")


def test_weights_changed_by_hand_pause_the_promotion(make) -> None:
    b = make(approval=None)
    canary(b)
    from promoter.traffic_switch import PairTraffic

    PairTraffic(b.world.clients, b.world.config.promotions[0]).switch.write({"blue": 50, "green": 50})
    b.run(301)
    record = b.record()
    assert record.promotion.status == "held" and "changed outside Reflex" in record.promotion.reason
    assert b.weights() == {"blue": 50, "green": 50}  # Reflex does not fight the operator


# --------------------------------------------------------------------------- abort and rollback


def test_abort_returns_traffic_and_stops_the_workflow(make) -> None:
    b = make()
    canary(b)
    response = b.console("abort", operator="carol", reason="wrong build")
    assert outcome(response) == "executed"
    assert b.weights() == {"blue": 100, "green": 0}
    record = b.record()
    assert record.promotion.status == "aborted" and record.live == "blue"
    assert b.execution().status == "ABORTED" and b.execution().error == "Reflex.Aborted"
    assert outcome(b.console("abort")) == "skipped:already-rolled-back"


def test_rollback_within_the_retention_window_is_one_call(make) -> None:
    b = make()
    canary(b)
    b.run()
    b.console("promote")
    b.run(121)
    assert b.record().promotion.status == "finalized"
    assert outcome(b.console("abort")) == "skipped:finalized"
    assert outcome(b.console("rollback", reason="errors after finalize")) == "executed"
    assert b.weights() == {"blue": 100, "green": 0} and b.record().live == "blue"
    assert b.execution().status == "ABORTED"


def test_rollback_after_the_retention_window_is_refused(make) -> None:
    b = make(schedule=AllAtOnce(kind="all-at-once"), approval=None, bake_s=0, retention_s=60)
    b.green_ready()
    b.run()
    assert b.record().promotion.status == "completed"
    assert outcome(b.console("rollback")) == "skipped:no-promotion"
    assert b.weights() == {"blue": 0, "green": 100}


def test_retention_ended_but_cleanup_not_run_yet(make) -> None:
    b = make(schedule=AllAtOnce(kind="all-at-once"), approval=None, bake_s=0, retention_s=60)
    b.green_ready()
    b.run(1)
    b.clock.advance(61)  # the retention is over; the workflow's cleanup has not run
    assert outcome(b.console("rollback")) == "skipped:retention-ended"


def test_dry_run_rollback_changes_nothing(make) -> None:
    b = make()
    canary(b)
    response = b.console("rollback", dry_run=True)
    (decision,) = response["decisions"]
    assert decision["outcome"] == "dry-run" and decision["intended"]["weights"] == {"blue": 100, "green": 0}
    assert b.weights() == {"blue": 90, "green": 10}


def test_commands_need_an_operator_and_a_known_pair(make) -> None:
    b = make()
    assert b.invoke({"command": "pause", "pair": "web", "reason": "why not"})["errors"] == [
        "operator: Field required"]
    response = b.console("abort", pair="checkout")
    assert response["status"] == "rejected" and "pair: no promotion pair named 'checkout'" in response["errors"][0]


# --------------------------------------------------------------------------- the scale-in freeze


def test_scaler_respects_the_freeze_while_blue_may_still_take_traffic_back(make) -> None:
    from scaler.handler import lambda_handler as scaler

    b = make()

    def scale_in() -> str:
        b.world.activate("scaler", b.clock)
        response = scaler(ev.console("scale_in", "api"), FakeLambdaContext())
        return str(response["decisions"][0]["outcome"])

    canary(b)
    result = scale_in()
    assert result == "skipped:frozen"
    (record,) = [r for r in b.world.audit_records() if r["outcome"] == "skipped:frozen"]
    assert "frozen by promotion web" in record["detail"]
    b.run()
    b.console("promote")
    b.run(121)  # finalized: blue is retained, still frozen
    assert scale_in() == "skipped:frozen"
    b.run()  # retention over: cleanup releases the freeze
    assert scale_in() == "executed"


def test_rollback_releases_the_freeze(make) -> None:
    b = make()
    canary(b)
    store = b.world.activate("promoter", b.clock).store
    assert "web" in store.scale_in_freezes("api")
    b.console("abort")
    assert "web" not in store.scale_in_freezes("api")


# --------------------------------------------------------------------------- preflight


def refused(b: PromotionBench, weights: dict[str, int] | None = None) -> str:
    b.green_ready()
    b.run()
    (execution,) = b.driver.executions.values()
    assert execution.error == "Reflex.PreflightRefused"
    assert b.weights() == (weights or {"blue": 100, "green": 0})
    assert "web" not in b.world.activate("promoter", b.clock).store.scale_in_freezes("api")
    (decision,) = [r for r in b.audit() if r["operation"] == "preflight"]
    assert decision["outcome"] == "skipped:preflight-refused"
    return str(decision["detail"])


def test_preflight_refuses_too_few_healthy_green_targets(make) -> None:
    b = make()
    b.healthy("green", 1)
    assert refused(b) == "green has 1 healthy targets, needs 2"


def test_preflight_refuses_a_guard_alarm_not_ok(make) -> None:
    b = make()
    b.set_alarm("web-5xx-rate-high", "ALARM")
    assert refused(b) == "guard alarm web-5xx-rate-high is ALARM"


def test_preflight_refuses_a_missing_guard_alarm(make) -> None:
    b = make()
    b.world.clients.cloudwatch.delete_alarms(AlarmNames=["web-5xx-rate-high"])
    assert refused(b) == "guard alarm web-5xx-rate-high does not exist"


def test_preflight_refuses_a_split_it_did_not_make(make) -> None:
    b = make()
    from promoter.traffic_switch import PairTraffic

    PairTraffic(b.world.clients, b.world.config.promotions[0]).switch.write({"blue": 80, "green": 20})
    assert "traffic is blue 80 / green 20; a promotion starts from 100 % blue" in refused(b, {"blue": 80, "green": 20})


def test_preflight_refuses_when_blue_could_not_take_traffic_back(make) -> None:
    b = make()
    b.healthy("blue", 0)
    assert refused(b) == "blue has no healthy target: there would be nothing to roll back to"


def test_only_one_promotion_of_a_pair_in_flight(make) -> None:
    b = make()
    canary(b)
    assert outcome(b.green_ready(release="v3")) == "skipped:promotion-in-flight"
    assert len(b.driver.executions) == 1


def test_two_green_ready_events_racing_start_one_promotion(make) -> None:
    b = make()
    b.green_ready(release="v2")
    b.green_ready(release="v3")  # before the first preflight claimed the pair
    b.run()
    winner = b.record().promotion
    ended = {e.name: e for e in b.driver.executions.values()}
    assert len(ended) == 2 and ended.pop(winner.id).error is None
    (loser,) = ended.values()
    assert loser.error == "Reflex.PreflightRefused"


def test_green_ready_for_the_live_colour_is_refused(make) -> None:
    b = make()
    assert outcome(b.green_ready(colour="blue")) == "skipped:colour-is-live"


def test_dry_run_pair_runs_the_preflight_only(make) -> None:
    b = make(dry_run=True)
    b.green_ready()
    b.run()
    (execution,) = b.driver.executions.values()
    assert execution.status == "SUCCEEDED" and execution.state == "DryRun"
    (decision,) = [r for r in b.audit() if r["operation"] == "preflight"]
    assert decision["outcome"] == "dry-run"
    assert [s["weight"] for s in decision["action"]["intended"]["steps"]] == [10, 100]
    assert b.weights() == {"blue": 100, "green": 0}
