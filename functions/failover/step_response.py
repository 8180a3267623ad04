"""What a failover workflow task returns to Step Functions, from the pipeline's result (pure: no AWS calls).

The answer to a `reflex_step` is the workflow's next state: its input, updated by the step's decision
(`intended.workflow`), with a `verdict` the Choice states route on. A guardrail that refuses *for now* (kill
switch, lock, breaker, a duplicate still running) raises `StepDeferred`, which the workflow retries later; a
payload that does not validate raises `StepRejected`. Every other trigger gets the pipeline's result unchanged.
"""

from __future__ import annotations

from typing import Any

from failover import workflow_definition as wf
from reflex_core.step_results import StepDeferred, StepRejected, step_decision

__all__ = ["StepDeferred", "StepRejected", "workflow_response"]  # the errors, re-exported for the tests

DEFERRING = frozenset({"kill-switch", "locked", "duplicate-in-progress"})
VERDICT_OF_SKIP = {
    "precheck-refused": wf.REFUSED,
    # The act step's rate limit or cooldown (another promotion of this global database just happened): refused,
    # not deferred: an approval is for the situation it was given in.
    "cooldown": wf.REFUSED,
    "circuit-open": wf.REFUSED,
    "circuit-open-tripped": wf.REFUSED,
    "promotion-in-progress": wf.WAIT,
    "promotion-stuck": wf.STUCK,
    "verify-failed": wf.STUCK,
    # The Route 53 step found the writer is not the run's target any more: nothing swapped, abandoned (paged).
    "writer-moved": wf.STUCK,
    "already-done": wf.CONTINUE,
    "already-promoted": wf.CONTINUE,
    "already-routed": wf.CONTINUE,
    "no-route53": wf.CONTINUE,
    "not-approved": wf.CONTINUE,
    # The run ended meanwhile (rejected, closed): the workflow abandons it (recorded, paged).
    "run-closed": wf.STUCK,
}


def workflow_response(event: Any, result: dict[str, Any]) -> dict[str, Any]:
    found = step_decision(event, result)
    if found is None:
        return result
    step, decision, head, reason = found
    state = dict(step.get("input") or {})
    state.pop("verdict", None)
    if head in ("executed", "dry-run"):
        state.update((decision.get("intended") or {}).get("workflow", {"verdict": wf.CONTINUE}))
        return state
    if head == "skipped" and reason in DEFERRING:
        raise StepDeferred(f"{reason}: {decision.get('detail', '')}"[:1000])
    if head == "skipped" and reason in VERDICT_OF_SKIP:
        state.update(verdict=VERDICT_OF_SKIP[reason], reason=str(decision.get("detail") or reason)[:1000])
        return state
    if head == "skipped":
        state.update(verdict=wf.STUCK, reason=str(decision.get("detail") or reason)[:1000])
        return state
    raise StepDeferred(f"unexpected outcome {decision['outcome']}")
