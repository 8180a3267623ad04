"""scenarios/safety_kill_switch_promotion.yaml through the simulator: the kill switch's levels on the promoter.
At `on` forward actions (`promote`) are refused while the rollbacks to the last known-good colour (the guard
alarm's, the operator's `abort`, the periodic reconcile's) run; at `hard-stop` nothing runs, not even those.
(Its `expect:` lines are checked by test_scenarios.py; these read the audit trail it leaves.)"""

from __future__ import annotations

from typing import Any

import pytest

from simulator.scenario import SimulationResult
from tests.support.scenarios import simulate


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return simulate("safety_kill_switch_promotion")


def promoter(result: SimulationResult) -> list[dict[str, Any]]:
    return [r for r in result.audit if r["reaction"] == "promoter"]


def at_step(result: SimulationResult, step_id: str) -> list[dict[str, Any]]:
    when = next(e.at for e in result.entries if e.step_id == step_id).strftime("%Y-%m-%dT%H:%M:%S")
    return [r for r in promoter(result) if r["at"].startswith(when)]


def test_at_on_the_operator_cannot_promote_but_can_abort(result: SimulationResult) -> None:
    [promote] = at_step(result, "promote-refused")
    assert (promote["operation"], promote["outcome"], promote["who"]) == ("promote", "skipped:kill-switch",
                                                                          "console:alice")
    assert promote["detail"] == "kill switch 'promoter' is on"
    [abort] = at_step(result, "abort-runs")
    assert (abort["operation"], abort["outcome"], abort["who"]) == ("abort", "executed", "console:alice")
    assert "which lets a rollback to the last known-good state run" in abort["detail"]
    assert abort["before"]["weights"] == {"blue": 90, "green": 10}
    assert abort["after"]["weights"] == {"blue": 100, "green": 0} and abort["after"]["status"] == "aborted"


def test_at_on_the_guard_alarm_rolls_back_in_its_own_invocation(result: SimulationResult) -> None:
    [rollback] = at_step(result, "v8-alarm")
    assert (rollback["operation"], rollback["outcome"]) == ("rollback", "executed")
    assert rollback["who"] == "alarm:web-p99-latency-high"
    # Written first by the fast path (before the records), then audited with the weights it replaced.
    assert "weights written first" in rollback["detail"] and "lets a rollback" in rollback["detail"]
    assert rollback["before"]["weights"] == {"blue": 90, "green": 10}
    assert rollback["after"]["weights"] == {"blue": 100, "green": 0}
    assert rollback["after"]["status"] == "rolled-back"


def test_at_hard_stop_nothing_runs_not_even_a_rollback(result: SimulationResult) -> None:
    refused = at_step(result, "v9-alarm-refused") + at_step(result, "abort-refused")
    assert [(r["operation"], r["outcome"], r["who"]) for r in refused] == [
        ("rollback", "skipped:kill-switch", "alarm:web-p99-latency-high"),
        ("abort", "skipped:kill-switch", "console:alice")]
    assert all(r["detail"] == "kill switch 'promoter' is hard-stop" for r in refused)
    # Nothing the promoter did between hard-stop and its release changed anything.
    start = next(e.at for e in result.entries if e.step_id == "hard-stop")
    end = next(e.at for e in result.entries if e.step_id == "released")
    during = [r for r in promoter(result) if start.strftime("%Y-%m-%dT%H:%M:%S") <= r["at"][:19]
              <= end.strftime("%Y-%m-%dT%H:%M:%S")]
    assert during and all(r["outcome"] == "skipped:kill-switch" for r in during)
    entry = next(e for e in result.entries if e.step_id == "abort-refused")
    assert entry.capacity["web"]["weights"] == {"blue": 90, "green": 10}


def test_once_released_the_reconcile_rolls_back_as_a_safety_action(result: SimulationResult) -> None:
    released = next(e.at for e in result.entries if e.step_id == "released").strftime("%Y-%m-%dT%H:%M:%S")
    [reconcile] = [r for r in promoter(result) if r["operation"] == "reconcile"]
    assert reconcile["outcome"] == "executed" and reconcile["who"] == "schedule:reconcile"
    assert reconcile["at"][:19] > released
    assert "reconcile: guard alarm web-p99-latency-high in ALARM" in reconcile["detail"]
    assert reconcile["after"]["weights"] == {"blue": 100, "green": 0}


def test_every_forward_action_refused_was_refused_by_the_switch_only_while_on(result: SimulationResult) -> None:
    refused = [r for r in promoter(result) if r["outcome"] == "skipped:kill-switch"]
    assert sorted(r["operation"] for r in refused) == ["abort", "promote", "rollback"]
    assert [r["operation"] for r in promoter(result) if r["outcome"] == "executed"
            and r["operation"] in ("rollback", "abort", "reconcile")] == ["abort", "rollback", "reconcile"]
