"""scenarios/promotion.yaml through the simulator: weights over time, the rollback inside the alarm's own
invocation, the freeze on api's scale-in. (Its `expect:` lines are checked by test_scenarios.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest

from simulator.scenario import SimulationResult
from tests.support.scenarios import simulate


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return simulate("promotion")


def weights_over_time(result: SimulationResult) -> list[tuple[float, str]]:
    """(offset, blue/green weights) each time they change."""
    out: list[tuple[float, str]] = []
    for entry in result.entries:
        w = entry.capacity.get("web", {}).get("weights")
        text = f"{w['blue']}/{w['green']}" if w else "?"
        if not out or out[-1][1] != text:
            out.append((entry.offset_s, text))
    return out


def test_weights_over_time(result: SimulationResult) -> None:
    assert weights_over_time(result) == [
        (2.0, "100/0"),        # before anything
        (5.0, "90/10"),        # v2 canary
        (480.0, "0/100"),      # approved at 08:00: green 100 %
        (4500.0, "10/90"),     # v3 canary onto blue
        (4650.0, "0/100"),     # latency alarm: back on green
    ]


def test_the_rollback_happens_in_the_alarm_invocation(result: SimulationResult) -> None:
    (entry,) = [e for e in result.entries if e.step_id == "latency"]
    rollback = [d for d in entry.decisions if d.operation == "rollback"]
    assert [d.outcome for d in rollback] == ["executed"]
    assert entry.capacity["web"]["weights"] == {"blue": 0, "green": 100}
    # No workflow task ran between the alarm and the weights being back.
    later = [e for e in result.entries if e.origin == "workflow" and e.at >= entry.at]
    assert later == []


def test_the_first_promotion_bakes_waits_for_approval_and_retains_blue(result: SimulationResult) -> None:
    workflow = [(e.offset_s, e.label) for e in result.entries if e.origin == "workflow" and e.offset_s < 4500]
    labels = [label for _, label in workflow]
    assert labels == ["workflow preflight", "workflow shift", "workflow check after bake", "workflow approval gate",
                      "workflow shift", "workflow check after bake", "workflow finalize", "workflow cleanup"]
    times = dict((label, t) for t, label in reversed(workflow))
    assert times["workflow check after bake"] - times["workflow shift"] == 300  # the canary's bake
    assert times["workflow cleanup"] - times["workflow finalize"] == 3600  # blue retained


def test_api_cannot_scale_in_while_blue_may_take_traffic_back(result: SimulationResult) -> None:
    frozen = [e for e in result.entries for d in e.decisions if d.outcome == "skipped:frozen"]
    cleanup = next(e for e in result.entries if e.label == "workflow cleanup")
    assert frozen and all(e.at < cleanup.at for e in frozen)
    scale_ins = [r for r in result.audit if r["operation"] == "scale_in" and r["outcome"] == "executed"]
    assert scale_ins
    first = min(r["at"] for r in scale_ins)
    assert first >= (cleanup.at - timedelta(seconds=0)).strftime("%Y-%m-%dT%H:%M:%S")


def test_the_audit_tells_the_story(result: SimulationResult) -> None:
    promoter = [r for r in result.audit if r["reaction"] == "promoter"]
    assert [r["who"] for r in promoter if r["operation"] == "rollback"] == ["alarm:web-p99-latency-high"]
    assert [r["who"] for r in promoter if r["operation"] == "promote"] == ["console:alice"]
    assert all(r["outcome"] == "executed" for r in promoter)
