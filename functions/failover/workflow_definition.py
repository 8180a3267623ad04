"""The failover workflow (Amazon States Language), one Standard state machine per stage.

The CDK construct deploys exactly `failover_definition(<failover function ARN>)`; the tests check the same
document. Every value a state needs (the approval timeout) comes from the workflow's input, set by the
console `failover`/`failback` command that starts it: one definition serves every configured global database.

    Approval (callback: console approve_failover; reject_failover or timeout ─> NotApproved ─> Close ─> Fail)
        │
       Act (pre-checks again, then switchover/failover) ─refused─> Refused ─> Close ─> Fail
        │
    WaitForWriter (Wait) ─> AwaitWriter ─wait─> WaitForWriter     ─stuck─> Abandon ─> Close ─> Fail
        │ promoted
      Route (Route 53: the new writer's record becomes PRIMARY) ─> Complete (verify, record) ─> Completed
    any error after its retries ─> Abandon (recorded failed, paged) ─> Close ─> Fail

Nothing before Act changes the database; Act runs once per run (its intent is scoped to the run, see
failover_reaction.py), so a retried or redelivered step never promotes twice.
"""

from __future__ import annotations

from typing import Any

APPROVAL = "wait_for_approval"
ACT = "act"
AWAIT_WRITER = "await_writer"
ROUTE = "route"
COMPLETE = "complete"
CLOSE = "close"
STEPS = (APPROVAL, ACT, AWAIT_WRITER, ROUTE, COMPLETE, CLOSE)
CALLBACK_STEPS = frozenset({APPROVAL})

# Verdicts a step returns in `$.verdict`.
CONTINUE = "continue"
WAIT = "wait"
REFUSED = "refused"
STUCK = "stuck"

STEP_DEFERRED = "StepDeferred"
STEP_REJECTED = "StepRejected"
REJECTED_ERROR = "Reflex.Rejected"
STOPPED_ERROR = "Reflex.Stopped"
POLL_S = 30

_LAMBDA_TRANSIENT = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
                     "Lambda.TooManyRequestsException", "Lambda.Unknown"]


def _payload(step: str, callback: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"step": step, "execution.$": "$$.Execution.Id", "state.$": "$$.State.Name",
                            "entered_at.$": "$$.State.EnteredTime", "retry.$": "$$.State.RetryCount", "input.$": "$"}
    if callback:
        body["task_token.$"] = "$$.Task.Token"
    return {"reflex_step": body}


def _retry(*, never: list[str] | None = None) -> list[dict[str, Any]]:
    """Retriers are matched in order, the first match decides: `never` (MaxAttempts 0) keeps those errors from the
    generic States.TaskFailed retrier (which matches every task error but States.Timeout)."""
    return [
        {"ErrorEquals": _LAMBDA_TRANSIENT, "IntervalSeconds": 2, "MaxAttempts": 6, "BackoffRate": 2.0},
        # The kill switch, the lock or the breaker refused the step for now: 3 s, 6 s, ... about 3.4 h in all, then
        # the run is abandoned (recorded failed, paged). Nothing was done while it waited.
        {"ErrorEquals": [STEP_DEFERRED], "IntervalSeconds": 3, "MaxAttempts": 12, "BackoffRate": 2.0},
        *([{"ErrorEquals": never, "MaxAttempts": 0}] if never else []),
        # An AWS call failed after its own retries (audited failed:<code>): two more tries, then Abandon.
        {"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 10, "MaxAttempts": 2, "BackoffRate": 2.0},
    ]


def _task(function_arn: str, step: str, next_state: str, *, callback: bool = False,
          catch: list[dict[str, Any]] | None = None, comment: str = "") -> dict[str, Any]:
    state: dict[str, Any] = {
        "Type": "Task", "Comment": comment,
        "Resource": "arn:aws:states:::lambda:invoke" + (".waitForTaskToken" if callback else ""),
        "Parameters": {"FunctionName": function_arn, "Payload": _payload(step, callback)},
        # A rejected gate (Reflex.Rejected) must not wait again: straight to its Catch (NotApproved).
        "Retry": _retry(never=[REJECTED_ERROR] if callback else None),
        "Catch": catch if catch is not None else [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Abandon"}],
        "Next": next_state,
    }
    if callback:
        state["ResultPath"] = "$.approval"  # who approved; the workflow state stays
        state["TimeoutSecondsPath"] = "$.approval_timeout_s"
    else:
        state["OutputPath"] = "$.Payload"
    return state


def _closing(name: str, why: str, end: str) -> dict[str, Any]:
    return {"Type": "Pass", "Result": why, "ResultPath": "$.closing", "Next": f"Close{name}"} | {"Comment": end}


def failover_definition(function_arn: str) -> dict[str, Any]:
    close_catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "CloseFailed"}]
    states: dict[str, Any] = {
        "Approval": _task(function_arn, APPROVAL, "Act", callback=True, catch=[
            {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": "NotApproved"},
            {"ErrorEquals": [REJECTED_ERROR], "ResultPath": "$.error", "Next": "NotApproved"},
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Abandon"}],
            comment="Store the callback token; wait for a console approve_failover (timeout: not approved)"),
        "Act": _task(function_arn, ACT, "AfterAct",
                     comment="Pre-checks again (lag, health may have changed), then switchover or failover"),
        "AfterAct": {"Type": "Choice", "Choices": [
            {"Variable": "$.verdict", "StringEquals": REFUSED, "Next": "Refused"},
            # The act could not tell what the database shows (someone else changed it), or its run ended: paged.
            {"Variable": "$.verdict", "StringEquals": STUCK, "Next": "Abandon"}], "Default": "WaitForWriter"},
        "WaitForWriter": {"Type": "Wait", "Seconds": POLL_S, "Next": "AwaitWriter"},
        "AwaitWriter": _task(function_arn, AWAIT_WRITER, "AfterAwait",
                             comment="Poll the global cluster until the target is its writer"),
        "AfterAwait": {"Type": "Choice", "Choices": [
            {"Variable": "$.verdict", "StringEquals": WAIT, "Next": "WaitForWriter"},
            {"Variable": "$.verdict", "StringEquals": STUCK, "Next": "Abandon"}], "Default": "Route"},
        "Route": _task(function_arn, ROUTE, "Complete",
                       comment="Route 53: the new writer's failover record becomes PRIMARY (one atomic batch)"),
        "Complete": _task(function_arn, COMPLETE, "AfterComplete", comment="Verify writer and record; record the run"),
        "AfterComplete": {"Type": "Choice", "Choices": [{"Variable": "$.verdict", "StringEquals": STUCK,
                                                          "Next": "Abandon"}], "Default": "Completed"},
        "Completed": {"Type": "Succeed"},
        "NotApproved": _closing("NotApproved", "not-approved", "nobody approved in time, or an operator rejected"),
        "Refused": _closing("Refused", "refused", "a pre-check refused after the approval"),
        "Abandon": _closing("Abandoned", "failed", "a step failed after its retries, or the new writer never came"),
        "CloseNotApproved": _task(function_arn, CLOSE, "NotApprovedEnd", catch=close_catch),
        "CloseRefused": _task(function_arn, CLOSE, "RefusedEnd", catch=close_catch),
        "CloseAbandoned": _task(function_arn, CLOSE, "AbandonedEnd", catch=close_catch),
        "NotApprovedEnd": {"Type": "Fail", "Error": "Reflex.NotApproved",
                           "Cause": "the failover was not approved in time (or rejected): nothing was done"},
        "RefusedEnd": {"Type": "Fail", "Error": "Reflex.PrecheckRefused",
                       "Cause": "a pre-check refused after the approval: nothing was done; see the audit trail"},
        "AbandonedEnd": {"Type": "Fail", "Error": "Reflex.FailoverFailed",
                         "Cause": "the failover failed or did not finish; see the audit trail and the runbook"},
        "CloseFailed": {"Type": "Fail", "Error": "Reflex.CloseFailed",
                        "Cause": "the run could not be closed; one that never acted ends by itself after its "
                                 "approval deadline; one that acted holds nothing once this execution ended: check "
                                 "the writer, then reject_failover closes it (runbook)"},
    }
    return {"Comment": "Reflex regional failover: approval gate, pre-checks, promote, Route 53, verify",
            "StartAt": "Approval", "States": states}
