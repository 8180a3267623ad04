"""What a drill workflow task returns to Step Functions, from the pipeline's result (pure: no AWS calls).

For a `reflex_step` event the answer is the workflow's next state: the input state updated with the drill's
record as the step left it (`after.workflow`, including `$.verdict` for the Choice states). A guardrail that
refuses *for now* (the lock, a hard-stop or unreadable kill switch, a duplicate still running) raises
`StepDeferred` (retried later); a payload that does not validate raises `StepRejected`. The kill switch
refusing `start_restore` refuses the drill (nothing restored); a poll that finds the restore still running
answers `running`. A step that finds the drill past it (a retry after its answer was lost) answers the drill's
record with the verdict its status dictates (carried in the skip's `before.workflow`), never its stale input.
Every other trigger gets the pipeline's result unchanged.
"""

from __future__ import annotations

from typing import Any

from drills import drill_workflow as wf
from reflex_core.step_results import StepDeferred, step_decision

DEFERRING = frozenset({"locked", "circuit-open", "circuit-open-tripped", "duplicate-in-progress"})


def workflow_response(event: Any, result: dict[str, Any]) -> dict[str, Any]:
    found = step_decision(event, result)
    if found is None:
        return result
    step, decision, head, reason = found
    state = dict(step.get("input") or {})
    if head == "executed":
        state.update((decision.get("after") or {}).get("workflow", {}))
        return state
    if head == "skipped" and reason == "restore-in-progress":
        return state | {"verdict": wf.RUNNING}
    if head == "skipped" and reason == "kill-switch" and step.get("step") == wf.START_RESTORE \
            and not decision.get("transient"):
        return state | {"verdict": wf.REFUSED, "outcome": "refused",
                        "detail": f"kill switch: {decision.get('detail', '')}"[:1000]}
    if head == "skipped" and (reason in DEFERRING or reason == "kill-switch"):
        raise StepDeferred(f"{reason}: {decision.get('detail', '')}"[:1000])
    if head == "skipped":
        # The step found the drill past it (a redelivery, a retry after the step landed): carry on from the
        # drill's record as it is (its status dictates the verdict), never from the step's stale input.
        record = (decision.get("before") or {}).get("workflow")
        if isinstance(record, dict):
            state.update(record)
        elif state.get("verdict") == wf.RUNNING:
            state["verdict"] = wf.ENDED  # no record to read: never loop back to the wait
        return state | {"skipped": f"{reason}: {decision.get('detail', '')}"[:500]}
    # failed:<code> raised in the pipeline already (ActionFailed); anything else is a bug worth retrying.
    raise StepDeferred(f"unexpected outcome {decision['outcome']}")
