"""The move workflow (Amazon States Language): one Standard execution per move, named after the move.

    Advance ─done─> Done (Succeed)     ─rolled_back─> RolledBack (Fail)
       │ ─wait_s > 0─> Wait (SecondsPath $.wait_s) ─> Advance
       └────────────────────────────────────────────> Advance

Each Advance invokes the shard function with `{"reflex_step": {"step": "advance", "input": {set, move_id}}}`:
one mover step through the pipeline (kill switch, lock of the set, audit), answering the workflow's next
state {set, move_id, phase, wait_s, done}. A step refused for now (kill switch, lock) raises StepDeferred
and is retried with backoff; a crash is retried (the mover's steps are idempotent and resumable).
"""

from __future__ import annotations

from typing import Any

from reflex_core.step_results import StepDeferred, StepRejected, step_decision

ADVANCE = "advance"
STEPS = (ADVANCE,)
STEP_DEFERRED = "StepDeferred"
STEP_REJECTED = "StepRejected"

_LAMBDA_TRANSIENT = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                     "Lambda.TooManyRequestsException", "Lambda.Unknown"]


def move_definition(function_arn: str) -> dict[str, Any]:
    return {
        "Comment": "Reflex shard move: advance the mover one idempotent step at a time until done or rolled back",
        "StartAt": "Advance",
        "States": {
            "Advance": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": function_arn, "Payload": {"reflex_step": {
                    "step": ADVANCE, "execution.$": "$$.Execution.Id", "state.$": "$$.State.Name",
                    "entered_at.$": "$$.State.EnteredTime", "retry.$": "$$.State.RetryCount", "input.$": "$"}}},
                "OutputPath": "$.Payload",
                "Retry": [
                    {"ErrorEquals": _LAMBDA_TRANSIENT, "IntervalSeconds": 2, "MaxAttempts": 6, "BackoffRate": 2.0},
                    {"ErrorEquals": [STEP_DEFERRED], "IntervalSeconds": 5, "MaxAttempts": 12, "BackoffRate": 2.0},
                    {"ErrorEquals": ["States.TaskFailed", "States.Timeout"], "IntervalSeconds": 10,
                     "MaxAttempts": 10, "BackoffRate": 2.0},
                ],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Stuck"}],
                "TimeoutSeconds": 900,
                "Next": "AfterAdvance",
            },
            "AfterAdvance": {"Type": "Choice", "Choices": [
                {"Variable": "$.phase", "StringEquals": "done", "Next": "Done"},
                {"Variable": "$.phase", "StringEquals": "rolled_back", "Next": "RolledBack"},
                {"Variable": "$.wait_s", "NumericGreaterThanEquals": 1, "Next": "Wait"},
            ], "Default": "Advance"},
            "Wait": {"Type": "Wait", "SecondsPath": "$.wait_s", "Next": "Advance"},
            "Done": {"Type": "Succeed"},
            "RolledBack": {"Type": "Fail", "Error": "Reflex.MoveRolledBack",
                           "Cause": "the move was rolled back (abort, verification mismatch or catch-up timeout); "
                                    "see the audit trail"},
            "Stuck": {"Type": "Fail", "Error": "Reflex.MoveStuck",
                      "Cause": "a mover step kept failing; the move is resumable: `status`, then `abort` or a new "
                               "execution named after the move"},
        },
    }


def step_response(event: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The workflow's next state from the pipeline's result (other triggers get the result unchanged)."""
    found = step_decision(event, result)
    if found is None:
        return result
    reflex_step, decision, head, reason = found
    state = dict(reflex_step.get("input") or {})
    if head == "executed":
        step = (decision.get("after") or {}).get("step") or (decision.get("intended") or {}).get("step") or {}
        state.update(phase=step.get("phase"), wait_s=int(-(-float(step.get("wait_s") or 0) // 1)),
                     done=bool(step.get("done")))
        return state
    if head == "skipped" and reason == "move-finished":
        state.update(phase=(decision.get("before") or {}).get("phase", "done"), wait_s=0, done=True)
        return state
    if head == "skipped" and reason == "no-move":
        raise StepRejected(str(decision.get("detail", "no such move")))
    raise StepDeferred(f"{decision['outcome']}: {decision.get('detail', '')}"[:1000])
