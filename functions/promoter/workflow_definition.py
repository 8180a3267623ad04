"""The promotion workflow (Amazon States Language), one Standard state machine per stage.

The CDK construct deploys exactly `promotion_definition(<promoter function ARN>)`; the local driver
(`simulator/workflow_driver.py`) and the moto-executed test run the same document, so what is tested is
what is deployed. Every value a state needs (bake times, approval timeout, retention) comes from the
workflow's state, set by the preflight step from the pair's config: one definition serves every pair.

    Preflight ─refused─> Refused (Fail)         ─dry-run─> DryRun (Succeed)
        │
    NextStep ─at the gate─> Approval (callback: a console `promote`; timeout ─> Rollback)
        │                        │
        ▼                        ▼
      Shift ─> Bake (Wait) ─> Check ─continue─> NextStep
        │                       │ ─done─> Finalize ─> Retention (Wait) ─> Cleanup ─> Completed (Succeed)
        │                       │ ─hold─> Hold (callback: a console `resume`; timeout ─> Rollback) ─> Check
        └──────rollback─────────┴─rollback─> Rollback ─> RolledBack (Fail)
    any error after its retries ─> Rollback; a promotion rolled back or aborted outside ─> Stopped (Fail)

Guard alarms do not wait for the Check: the promoter rolls back the moment an alarm enters ALARM and
stops the execution (see promotion_reaction.py).
"""

from __future__ import annotations

from typing import Any

# Steps (the `reflex_step.step` of each task's payload).
PREFLIGHT = "preflight"
SHIFT = "shift"
CHECK = "check"
WAIT_FOR_APPROVAL = "wait_for_approval"
HOLD = "hold"
FINALIZE = "finalize"
ROLLBACK = "rollback"
CLEANUP = "cleanup"
STEPS = (PREFLIGHT, SHIFT, CHECK, WAIT_FOR_APPROVAL, HOLD, FINALIZE, ROLLBACK, CLEANUP)
CALLBACK_STEPS = frozenset({WAIT_FOR_APPROVAL, HOLD})

# Verdicts a step returns in `$.verdict`.
CONTINUE = "continue"
HOLD_VERDICT = "hold"
ROLLBACK_VERDICT = "rollback"
DONE = "done"
REFUSED = "refused"
STOPPED = "stopped"
DRY_RUN = "dry-run"

# Errors: a step that cannot act now (kill switch, lock, breaker) raises StepDeferred and is retried.
STEP_DEFERRED = "StepDeferred"
STEP_REJECTED = "StepRejected"
STOPPED_ERROR = "Reflex.Stopped"

_LAMBDA_TRANSIENT = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                     "Lambda.TooManyRequestsException", "Lambda.Unknown"]


def _payload(step: str, callback: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "step": step,
        "execution.$": "$$.Execution.Id",
        "state.$": "$$.State.Name",
        "entered_at.$": "$$.State.EnteredTime",
        "retry.$": "$$.State.RetryCount",
        "input.$": "$",
    }
    if callback:
        body["task_token.$"] = "$$.Task.Token"
    return {"reflex_step": body}


def _retry(rollback: bool) -> list[dict[str, Any]]:
    return [
        {"ErrorEquals": _LAMBDA_TRANSIENT, "IntervalSeconds": 2, "MaxAttempts": 6, "BackoffRate": 2.0},
        # The kill switch, the lock or the circuit breaker refused the step: try again later. Start short (a
        # console command such as `promote` holds the pair's lock for milliseconds while it releases this
        # very step), then back off: 3 s, 6 s, 12 s, ... about 3.4 hours in all before the step fails.
        {"ErrorEquals": [STEP_DEFERRED], "IntervalSeconds": 3, "MaxAttempts": 12, "BackoffRate": 2.0},
        # An AWS call failed after its own retries (audited as failed:<code>): a few more tries, longer for
        # a rollback, which must not give up easily.
        {"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 5, "MaxAttempts": 8 if rollback else 3,
         "BackoffRate": 2.0},
    ]


def _task(function_arn: str, step: str, next_state: str, *, callback: bool = False,
          timeout_path: str | None = None, catch: list[dict[str, Any]] | None = None,
          comment: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {
        "Type": "Task",
        "Comment": comment,
        "Resource": "arn:aws:states:::lambda:invoke" + (".waitForTaskToken" if callback else ""),
        "Parameters": {"FunctionName": function_arn, "Payload": _payload(step, callback)},
        "Retry": _retry(step == ROLLBACK),
        "Catch": catch if catch is not None else [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Rollback"}],
        "Next": next_state,
    }
    if callback:
        # The callback's output (who approved / resumed) is kept aside; the workflow state stays.
        state["ResultPath"] = "$.callback"
        state["TimeoutSecondsPath"] = timeout_path
    else:
        state["OutputPath"] = "$.Payload"  # the step returns the workflow's new state
    return state


def _verdicts(routes: dict[str, str], default: str) -> dict[str, Any]:
    return {"Type": "Choice",
            "Choices": [{"Variable": "$.verdict", "StringEquals": v, "Next": n} for v, n in routes.items()],
            "Default": default}


def promotion_definition(function_arn: str) -> dict[str, Any]:
    callback_catch = [
        {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": "{timeout}"},
        {"ErrorEquals": [STOPPED_ERROR], "ResultPath": "$.error", "Next": "Stopped"},
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Rollback"},
    ]

    def catch_with_timeout(target: str) -> list[dict[str, Any]]:
        return [dict(c, Next=target) if c["Next"] == "{timeout}" else dict(c) for c in callback_catch]

    return {
        "Comment": "Reflex blue/green promotion: shift traffic step by step, bake, check, finalize or roll back",
        "StartAt": "Preflight",
        "States": {
            # A failed preflight also goes to Rollback: it releases whatever the preflight had claimed.
            "Preflight": _task(function_arn, PREFLIGHT, "AfterPreflight",
                               comment="Green healthy, guard alarms OK, no other promotion in flight; place the "
                                       "scale-in freeze"),
            "AfterPreflight": _verdicts({REFUSED: "Refused", DRY_RUN: "DryRun", STOPPED: "Stopped"}, "NextStep"),
            "NextStep": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.next_step", "NumericEqualsPath": "$.gate_step", "Next": "Approval"}],
                "Default": "Shift",
            },
            "Approval": _task(function_arn, WAIT_FOR_APPROVAL, "Shift", callback=True,
                              timeout_path="$.approval_timeout_s", catch=catch_with_timeout("ApprovalTimedOut"),
                              comment="Wait for a console `promote` before the last step"),
            "ApprovalTimedOut": {"Type": "Pass", "Result": "nobody approved the last step in time",
                                 "ResultPath": "$.reason", "Next": "Rollback"},
            "Shift": _task(function_arn, SHIFT, "AfterShift",
                           comment="Write both weights in one call (never onto a colour with no healthy target)"),
            "AfterShift": _verdicts({ROLLBACK_VERDICT: "Rollback", HOLD_VERDICT: "Hold", STOPPED: "Stopped"}, "Bake"),
            "Bake": {"Type": "Wait", "SecondsPath": "$.bake_s", "Next": "Check"},
            "Check": _task(function_arn, CHECK, "AfterCheck",
                           comment="Guard alarms OK and the incoming colour's healthy targets held"),
            "AfterCheck": _verdicts({ROLLBACK_VERDICT: "Rollback", HOLD_VERDICT: "Hold", STOPPED: "Stopped",
                                     DONE: "Finalize"}, "NextStep"),
            "Hold": _task(function_arn, HOLD, "Check", callback=True, timeout_path="$.max_pause_s",
                          catch=catch_with_timeout("PauseTimedOut"),
                          comment="Paused: wait for a console `resume`, then check again"),
            "PauseTimedOut": {"Type": "Pass", "Result": "paused longer than max_pause_s",
                              "ResultPath": "$.reason", "Next": "Rollback"},
            "Finalize": _task(function_arn, FINALIZE, "AfterFinalize",
                              comment="Record the new live colour, keep the old one at weight 0, emit "
                                      "DeploymentCompleted"),
            "AfterFinalize": _verdicts({ROLLBACK_VERDICT: "Rollback", HOLD_VERDICT: "Hold", STOPPED: "Stopped"},
                                       "Retention"),
            "Retention": {"Type": "Wait", "SecondsPath": "$.retention_s", "Next": "Cleanup"},
            "Cleanup": _task(function_arn, CLEANUP, "Completed", catch=[
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "CleanupFailed"}],
                comment="End of the retention window: release the scale-in freeze"),
            "Completed": {"Type": "Succeed"},
            "DryRun": {"Type": "Succeed", "Comment": "dry run: the preflight's decision shows the plan"},
            "Rollback": _task(function_arn, ROLLBACK, "RolledBack", catch=[
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "RollbackFailed"}],
                comment="All traffic back on the colour that was live; release the freeze"),
            "RolledBack": {"Type": "Fail", "Error": "Reflex.RolledBack",
                           "Cause": "the promotion was rolled back; see the audit trail for why"},
            "Refused": {"Type": "Fail", "Error": "Reflex.PreflightRefused",
                        "Cause": "the preflight refused the promotion; see the audit trail for why"},
            "Stopped": {"Type": "Fail", "Error": STOPPED_ERROR,
                        "Cause": "the promotion was rolled back or aborted outside this workflow"},
            "RollbackFailed": {"Type": "Fail", "Error": "Reflex.RollbackFailed",
                               "Cause": "the rollback step failed after its retries: traffic may still be split"},
            "CleanupFailed": {"Type": "Fail", "Error": "Reflex.CleanupFailed",
                              "Cause": "the cleanup step failed; the freeze ends by itself"},
        },
    }
