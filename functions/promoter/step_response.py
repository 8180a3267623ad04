"""What a workflow task returns to Step Functions, from the pipeline's result (pure: no AWS calls).

For a `reflex_step` event the answer is the workflow's next state: the input state, updated by the step's
decision (`intended.workflow`, and `after.workflow` when the re-read changed the picture), with a
`verdict` the workflow's Choice states route on. Guardrails that refuse *for now* (kill switch, lock,
circuit breaker, a duplicate still running) raise `StepDeferred`, which the workflow retries later; a
payload that does not validate raises `StepRejected` (not retried: the workflow rolls back). Every other
trigger gets the pipeline's result unchanged.
"""

from __future__ import annotations

from typing import Any

from promoter import workflow_definition as wf
from reflex_core.step_results import StepDeferred, StepRejected, step_decision

__all__ = ["StepDeferred", "StepRejected", "workflow_response"]  # the errors, re-exported for the tests

# Guardrails that may let the same step through later.
DEFERRING = frozenset({"kill-switch", "locked", "circuit-open", "circuit-open-tripped", "duplicate-in-progress"})

# What a step's decision not to act means for the workflow.
VERDICT_OF_SKIP = {
    "preflight-refused": wf.REFUSED,
    "promotion-in-flight": wf.REFUSED,
    "colour-is-live": wf.REFUSED,
    "paused": wf.HOLD_VERDICT,
    "green-unhealthy": wf.ROLLBACK_VERDICT,
    "weights-mismatch": wf.ROLLBACK_VERDICT,
}


def workflow_response(event: Any, result: dict[str, Any]) -> dict[str, Any]:
    found = step_decision(event, result)
    if found is None:
        return result
    step, decision, head, reason = found
    state = dict(step.get("input") or {})
    if head in ("executed", "dry-run"):
        state.update((decision.get("intended") or {}).get("workflow", {}))
        state.update((decision.get("after") or {}).get("workflow", {}))
        if head == "dry-run" and step.get("step") == wf.PREFLIGHT:
            state.update(verdict=wf.DRY_RUN, reason=str(decision.get("detail", "")))
        return state
    if head == "skipped" and reason in DEFERRING:
        raise StepDeferred(f"{reason}: {decision.get('detail', '')}"[:1000])
    if head == "skipped":
        state.update(verdict=VERDICT_OF_SKIP.get(reason, wf.STOPPED), reason=str(decision.get("detail") or reason))
        return state
    # failed:<code> raised in the pipeline already (ActionFailed); anything else is a bug worth retrying.
    raise StepDeferred(f"unexpected outcome {decision['outcome']}")
