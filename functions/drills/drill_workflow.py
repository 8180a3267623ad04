"""The on-demand drill workflow (Amazon States Language), one Standard state machine per stage.

The CDK construct deploys exactly `drill_definition(<drills function ARN>)`; the tests run the same document
with the local workflow driver (simulator/workflow_driver.py). Every task is the drills function itself
(`reflex_step`), so each step goes through the pipeline's guardrails and is audited like any action.

    NeedsApproval ─yes─> AwaitApproval (callback: console `approve_drill`; `reject_drill` or the timeout
        │                      │            ─> NotApproved / Rejected ─> Record: no restore was started)
        ▼                      ▼
    StartRestore ─refused─> Record            (isolation refused the restore's metadata: nothing started)
        │
    WaitForRestore (poll_interval_s) ─> PollRestore ─running─> WaitForRestore
        │                                  │ ─failed / timed out─> Teardown
        ▼                                  ▼
    Validate ─────────────────────────> Teardown ─(fails: retried once)─> RecordLeftover ─> Record
                                           └──────────────────────────────────────────────> Record
    Record ─passed─> Passed (Succeed)      any other outcome ─> DrillFailed (Fail)

Every error caught after StartRestore leads to Teardown, and every path ends in Record: a drill result is
always recorded, and the copy is deleted or, when its deletion failed twice, in the ledger as a leftover
(the hourly `check_drills` alarms on it). Only the steps before a restore starts can leave nothing to tear down.
"""

from __future__ import annotations

from typing import Any

# Steps (the `reflex_step.step` of each task's payload).
AWAIT_APPROVAL = "await_approval"
START_RESTORE = "start_restore"
POLL_RESTORE = "poll_restore"
VALIDATE = "validate"
TEARDOWN = "teardown"
RECORD_LEFTOVER = "record_leftover"
RECORD_RESULT = "record_result"
STEPS = (AWAIT_APPROVAL, START_RESTORE, POLL_RESTORE, VALIDATE, TEARDOWN, RECORD_LEFTOVER, RECORD_RESULT)
CALLBACK_STEPS = frozenset({AWAIT_APPROVAL})

# Verdicts a step returns in `$.verdict`.
STARTED = "started"
REFUSED = "refused"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
ENDED = "ended"  # a retried step found the drill past its restore: on to Teardown / Record

# Outcomes a drill ends with (`$.outcome`, recorded by the last step).
PASSED = "passed"
NOT_APPROVED = "not-approved"
REJECTED = "rejected"

STEP_DEFERRED = "StepDeferred"
REJECTED_ERROR = "Reflex.DrillRejected"

_LAMBDA_TRANSIENT = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                     "Lambda.TooManyRequestsException", "Lambda.Unknown"]


def _payload(step: str, callback: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"step": step, "execution.$": "$$.Execution.Id", "state.$": "$$.State.Name",
                            "entered_at.$": "$$.State.EnteredTime", "retry.$": "$$.State.RetryCount",
                            "input.$": "$"}
    if callback:
        body["task_token.$"] = "$$.Task.Token"
    return {"reflex_step": body}


def _retry(failed_attempts: int) -> list[dict[str, Any]]:
    return [
        {"ErrorEquals": _LAMBDA_TRANSIENT, "IntervalSeconds": 2, "MaxAttempts": 6, "BackoffRate": 2.0},
        # A guardrail refused the step for now (the resource's lock, a hard-stop kill switch): about 40 min in all.
        {"ErrorEquals": [STEP_DEFERRED], "IntervalSeconds": 5, "MaxAttempts": 9, "BackoffRate": 2.0},
        # The step's AWS call failed after its own retries (audited as failed:<code>).
        {"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 30, "MaxAttempts": failed_attempts,
         "BackoffRate": 2.0},
    ]


def _task(function_arn: str, step: str, next_state: str, *, catch_to: str | None, failed_attempts: int = 2,
          comment: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {
        "Type": "Task", "Comment": comment,
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function_arn, "Payload": _payload(step, False)},
        "TimeoutSeconds": 900,
        "Retry": _retry(failed_attempts),
        "OutputPath": "$.Payload",  # the step returns the workflow's new state
        "Next": next_state,
    }
    if catch_to:
        state["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": catch_to}]
    return state


def _verdicts(routes: dict[str, str], default: str) -> dict[str, Any]:
    return {"Type": "Choice",
            "Choices": [{"Variable": "$.verdict", "StringEquals": v, "Next": n} for v, n in routes.items()],
            "Default": default}


def _outcome(value: str, next_state: str = "Record") -> dict[str, Any]:
    return {"Type": "Pass", "Result": value, "ResultPath": "$.outcome", "Next": next_state}


def drill_definition(function_arn: str) -> dict[str, Any]:
    return {
        "Comment": "Reflex on-demand restore drill: approval, restore, validation, teardown, result",
        "StartAt": "NeedsApproval",
        "States": {
            "NeedsApproval": {"Type": "Choice",
                              "Choices": [{"Variable": "$.approval", "BooleanEquals": True, "Next": "AwaitApproval"}],
                              "Default": "StartRestore"},
            "AwaitApproval": {
                "Type": "Task", "Comment": "Wait for a console `approve_drill` (or `reject_drill`)",
                "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {"FunctionName": function_arn, "Payload": _payload(AWAIT_APPROVAL, True)},
                "TimeoutSecondsPath": "$.approval_timeout_s",
                # Not States.TaskFailed: a rejection (Reflex.DrillRejected) must not wait again.
                "Retry": _retry(0)[:2],
                "ResultPath": "$.callback",  # who approved; the workflow state stays
                "Catch": [
                    {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": "NotApproved"},
                    {"ErrorEquals": [REJECTED_ERROR], "ResultPath": "$.error", "Next": "Rejected"},
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "NotApproved"},
                ],
                "Next": "StartRestore",
            },
            # No approval, no drill: nothing was restored, the result says why.
            "NotApproved": _outcome(NOT_APPROVED),
            "Rejected": _outcome(REJECTED),
            "StartRestore": _task(function_arn, START_RESTORE, "AfterStart", catch_to="Teardown",
                                  comment="Recovery point, isolated restore metadata, StartRestoreJob (or the "
                                          "service's own restore for kinds restore testing does not cover)"),
            "AfterStart": _verdicts({REFUSED: "Record"}, "WaitForRestore"),
            "WaitForRestore": {"Type": "Wait", "SecondsPath": "$.poll_interval_s", "Next": "PollRestore"},
            "PollRestore": _task(function_arn, POLL_RESTORE, "AfterPoll", catch_to="Teardown",
                                 comment="The restore's status; past restore_timeout_s it fails the drill"),
            "AfterPoll": _verdicts({RUNNING: "WaitForRestore", COMPLETED: "Validate"}, "Teardown"),
            "Validate": _task(function_arn, VALIDATE, "Teardown", catch_to="Teardown",
                              comment="Isolation, checks, RTO/RPO against the objectives, metrics"),
            # A failed deletion is tried once more, then the copy goes into the ledger as a leftover.
            "Teardown": _task(function_arn, TEARDOWN, "Record", catch_to="RecordLeftover", failed_attempts=1,
                              comment="Delete the restored copy (AWS Backup does not delete on-demand restores)"),
            "RecordLeftover": _task(function_arn, RECORD_LEFTOVER, "Record", catch_to="Record",
                                    comment="The copy could not be deleted: the leftover check alarms on it"),
            "Record": _task(function_arn, RECORD_RESULT, "AfterRecord", catch_to="RecordFailed", failed_attempts=4,
                            comment="The drill's result in the ledger and the audit trail; DrillPassed/Failed"),
            "AfterRecord": {"Type": "Choice",
                            "Choices": [{"Variable": "$.outcome", "StringEquals": PASSED, "Next": "Passed"}],
                            "Default": "DrillFailed"},
            "Passed": {"Type": "Succeed"},
            "DrillFailed": {"Type": "Fail", "Error": "Reflex.DrillFailed",
                            "Cause": "the drill did not pass (not approved, restore or validation failed); see the "
                                     "audit trail and the drill's result"},
            "RecordFailed": {"Type": "Fail", "Error": "Reflex.DrillNotRecorded",
                             "Cause": "the drill's result could not be recorded after retries"},
        },
    }
