"""reflex_core.step_results: the step checks, the first decision of a step and the callback-token cache that the
workflow reactions (promotion, shard moves, drills, failover) share."""

from __future__ import annotations

import pytest

from reflex_core.step_results import StepDeferred, StepRejected, TaskTokens, check_step, step_decision
from reflex_core.triggers import TriggerError

STEPS = ("approve", "act", "close")


def _errors(exc: pytest.ExceptionInfo[TriggerError]) -> list[str]:
    return list(exc.value.errors)


def test_check_step_accepts_a_known_step_with_the_right_token() -> None:
    check_step("act", False, STEPS, {"approve"})
    check_step("approve", True, STEPS, {"approve"})
    check_step("act", False, STEPS)


def test_check_step_names_the_field_of_an_unknown_step() -> None:
    with pytest.raises(TriggerError) as exc:
        check_step("Act", False, STEPS, {"approve"})
    assert _errors(exc) == ["reflex_step.step: unknown step 'Act'; expected one of approve, act, close"]


@pytest.mark.parametrize(("step", "token"), [("approve", False), ("act", True)])
def test_check_step_refuses_a_token_where_none_belongs_and_its_absence_where_one_does(step: str, token: bool
                                                                                       ) -> None:
    with pytest.raises(TriggerError) as exc:
        check_step(step, token, STEPS, {"approve"})
    assert _errors(exc) == ["reflex_step.task_token: required for, and only for, approve"]


def test_check_step_refuses_any_token_in_a_workflow_without_callbacks() -> None:
    with pytest.raises(TriggerError) as exc:
        check_step("act", True, STEPS)
    assert _errors(exc) == ["reflex_step.task_token: this workflow's steps take no callback token"]


def test_step_decision_reads_the_first_decision_and_raises_what_the_retry_and_catch_match() -> None:
    event = {"reflex_step": {"step": "act"}}
    assert step_decision({"not": "a step"}, {}) is None
    read = step_decision(event, {"decisions": [{"outcome": "skipped:cooldown"}]})
    assert read is not None and read[2:] == ("skipped", "cooldown")
    with pytest.raises(StepRejected, match="bad field"):
        step_decision(event, {"status": "rejected", "errors": ["bad field"]})
    with pytest.raises(StepDeferred):
        step_decision(event, {"decisions": []})


def test_task_tokens_keep_the_token_out_of_the_intent_and_stay_bounded() -> None:
    tokens = TaskTokens(capacity=2)
    ref = tokens.remember("token-1")
    assert "token-1" not in ref

    class _Action:
        params = {"token_ref": ref}

    assert tokens.of(_Action()) == "token-1"
    tokens.remember("token-2")
    tokens.remember("token-3")  # over capacity: the cache starts again rather than growing
    with pytest.raises(KeyError):
        tokens.of(_Action())
