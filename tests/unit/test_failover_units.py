"""Pure parts of the failover reaction: the workflow's answer to each step outcome, the run's life."""

from __future__ import annotations

import pytest

from failover import workflow_definition as wf
from failover.failover_runs import FailoverRun
from failover.step_response import StepDeferred, StepRejected, workflow_response

STATE = {"run_id": "fo-x", "failover": "orders-global", "mode": "switchover", "approval_timeout_s": 900}


def answer(outcome: str, **decision):
    event = {"reflex_step": {"step": "act", "input": dict(STATE, verdict="old")}}
    return workflow_response(event, {"status": "ok", "decisions": [{"outcome": outcome, **decision}]})


def test_executed_steps_continue_with_the_state_they_were_given():
    out = answer("executed", intended={"workflow": {"verdict": wf.CONTINUE}})
    assert out == STATE | {"verdict": wf.CONTINUE}


@pytest.mark.parametrize("reason", ["kill-switch", "locked", "duplicate-in-progress"])
def test_refusals_that_may_pass_are_retried_by_the_workflow(reason):
    with pytest.raises(StepDeferred, match=reason):
        answer(f"skipped:{reason}", detail="later")


@pytest.mark.parametrize(("reason", "verdict"), [
    ("precheck-refused", wf.REFUSED), ("cooldown", wf.REFUSED), ("circuit-open", wf.REFUSED),
    ("promotion-in-progress", wf.WAIT), ("promotion-stuck", wf.STUCK), ("already-done", wf.CONTINUE),
    ("run-closed", wf.STUCK), ("target-changed", wf.STUCK),
])
def test_each_skip_routes_the_workflow(reason, verdict):
    assert answer(f"skipped:{reason}", detail="d")["verdict"] == verdict


def test_a_rejected_step_payload_fails_the_task_and_console_results_pass_through():
    with pytest.raises(StepRejected):
        workflow_response({"reflex_step": {}}, {"status": "rejected", "errors": ["reflex_step.input.mode: bad"]})
    result = {"status": "ok", "decisions": []}
    assert workflow_response({"command": "plan_failover"}, result) is result


def test_a_run_that_never_acted_expires_after_its_gate_and_one_that_acted_never_does():
    run = FailoverRun(run_id="r", failover="f", mode="switchover", source_arn="a", target_arn="b",
                      status="awaiting-approval", requested_by="alice", reason="r", created_at=0.0,
                      approval_deadline=900.0)
    assert run.in_flight(1000.0) and not run.in_flight(900.0 + 3601)
    promoting = FailoverRun(**{**run.__dict__, "status": "promoting"})
    assert promoting.in_flight(10**9)
    assert run.public()["approval_token"] is None
