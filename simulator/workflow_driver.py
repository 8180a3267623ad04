"""A small, honest local Step Functions for Reflex's workflows, driven by the virtual clock.

moto can execute a state machine definition, but without Docker it cannot run a Lambda task's code, and
its Wait states sleep in real time. This driver interprets the *deployed* definition (the same document
the CDK construct synthesizes) in-process:

* Task states call the real handler for `arn:aws:states:::lambda:invoke` (output `{"Payload": ...}`) and
  `...lambda:invoke.waitForTaskToken` (the handler gets `$$.Task.Token`; the state waits for
  `send_task_success` / `send_task_failure`, or fails with `States.Timeout` after `TimeoutSeconds(Path)`).
  The function name must be the one the definition names. A raised exception is the Lambda function
  error named after its class, as Step Functions reports it.
* Retry (ErrorEquals, IntervalSeconds, MaxAttempts, BackoffRate; `States.ALL`, `States.TaskFailed`) and
  Catch (with ResultPath) as specified; a retry keeps `$$.State.EnteredTime` and counts `RetryCount`.
* Wait (Seconds, SecondsPath, Timestamp, TimestampPath) waits on the virtual clock.
* Choice (StringEquals, NumericEquals, NumericEqualsPath, NumericGreaterThanEquals(Path), BooleanEquals,
  IsPresent, And, Or, Not), Pass (Result, ResultPath, Parameters), Succeed, Fail.
* InputPath, Parameters (`.$` keys, `$$` context paths), ResultSelector, ResultPath, OutputPath.

Anything else in a definition raises `UnsupportedDefinition`, so a test can never pass on a feature the
driver silently ignores. The driver also answers the boto3 calls the promoter makes on its
`stepfunctions` client (start_execution, stop_execution, describe_execution, send_task_success,
send_task_failure), with the errors Step Functions returns.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from reflex_core.clock import VirtualClock, iso

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
LAMBDA_CALLBACK = "arn:aws:states:::lambda:invoke.waitForTaskToken"
MAX_TRANSITIONS_AT_ONCE = 10_000


class UnsupportedDefinition(ValueError):
    """The definition uses something this driver does not interpret."""


class _StateError(Exception):
    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


def _client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


# --------------------------------------------------------------------------- JSONPath (the subset ASL uses)


_MISSING = object()


def _get(path: str, data: Any, context: dict[str, Any]) -> Any:
    root = context if path.startswith("$$") else data
    rest = path[2:] if path.startswith("$$") else path[1:]
    if not path.startswith("$"):
        raise UnsupportedDefinition(f"not a path: {path!r}")
    node = root
    for part in [p for p in rest.split(".") if p]:
        if "[" in part:
            raise UnsupportedDefinition(f"array paths are not supported: {path!r}")
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _require(path: str, data: Any, context: dict[str, Any]) -> Any:
    value = _get(path, data, context)
    if value is _MISSING:
        raise _StateError("States.Runtime", f"the path {path!r} matches nothing in the state input")
    return value


def _set(path: str | None, data: Any, value: Any) -> Any:
    if path is None:  # ResultPath: null keeps the input
        return data
    if path == "$":
        return value
    parts = [p for p in path[2:].split(".") if p]
    out = copy.deepcopy(data) if isinstance(data, dict) else {}
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _parameters(template: Any, data: Any, context: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                if not isinstance(value, str) or value.startswith("States."):
                    raise UnsupportedDefinition(f"intrinsic functions are not supported: {value!r}")
                out[key[:-2]] = copy.deepcopy(_require(value, data, context))
            else:
                out[key] = _parameters(value, data, context)
        return out
    if isinstance(template, list):
        return [_parameters(v, data, context) for v in template]
    return template


# --------------------------------------------------------------------------- Choice rules

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "StringEquals": lambda a, b: isinstance(a, str) and a == b,
    "NumericEquals": lambda a, b: isinstance(a, int | float) and not isinstance(a, bool) and a == b,
    "NumericGreaterThanEquals": lambda a, b: isinstance(a, int | float) and not isinstance(a, bool) and a >= b,
    "NumericLessThan": lambda a, b: isinstance(a, int | float) and not isinstance(a, bool) and a < b,
    "BooleanEquals": lambda a, b: isinstance(a, bool) and a == b,
}


def _rule(rule: dict[str, Any], data: Any, context: dict[str, Any]) -> bool:
    if "And" in rule:
        return all(_rule(r, data, context) for r in rule["And"])
    if "Or" in rule:
        return any(_rule(r, data, context) for r in rule["Or"])
    if "Not" in rule:
        return not _rule(rule["Not"], data, context)
    variable = _get(rule["Variable"], data, context)
    for op, compare in _COMPARISONS.items():
        if op in rule:
            return variable is not _MISSING and compare(variable, rule[op])
        if op + "Path" in rule:
            other = _get(rule[op + "Path"], data, context)
            return variable is not _MISSING and other is not _MISSING and compare(variable, other)
    if "IsPresent" in rule:
        return (variable is not _MISSING) == bool(rule["IsPresent"])
    known = {"Variable", "Next"}
    raise UnsupportedDefinition(f"choice rule not supported: {sorted(set(rule) - known)}")


def _matches(error: str, names: list[str]) -> bool:
    if "States.ALL" in names or error in names:
        return True
    return "States.TaskFailed" in names and error != "States.Timeout"


# --------------------------------------------------------------------------- executions


@dataclass
class HistoryEvent:
    at: datetime
    execution: str
    state: str
    kind: str  # entered, succeeded, failed, retry, caught, waiting, callback, timeout, stopped, ended
    detail: str = ""


@dataclass
class Execution:
    arn: str
    name: str
    input: dict[str, Any]
    started: datetime
    status: str = "RUNNING"
    state: str = ""
    data: Any = None
    entered_at: datetime | None = None
    retry_count: int = 0
    attempts: dict[int, int] = field(default_factory=dict)  # retrier index -> attempts so far
    due: datetime | None = None  # when the current state runs (again), or times out while waiting
    waiting_token: str | None = None
    token_outcome: tuple[str, Any] | None = None  # ("success", output) | ("failure", (error, cause))
    output: Any = None
    error: str | None = None
    cause: str | None = None
    stopped: bool = False


class LocalWorkflows:
    """In-memory Step Functions for one state machine definition, on a virtual clock."""

    def __init__(self, definition: dict[str, Any], state_machine_arn: str, function_arn: str,
                 invoke: Callable[[dict[str, Any]], Any], clock: VirtualClock) -> None:
        self.definition = definition
        self.state_machine_arn = state_machine_arn
        self.function_arn = function_arn
        self._invoke = invoke
        self.clock = clock
        self.executions: dict[str, Execution] = {}
        self.history: list[HistoryEvent] = []
        self._tokens: dict[str, str] = {}  # token -> execution arn
        self.on_task: Callable[[Execution, str, dict[str, Any]], None] | None = None
        self._check_definition()

    # ------------------------------------------------------------------ boto3-compatible client surface
    def start_execution(self, stateMachineArn: str, name: str, input: str = "{}") -> dict[str, Any]:
        if stateMachineArn != self.state_machine_arn:
            raise _client_error("StateMachineDoesNotExist", f"State Machine Does Not Exist: '{stateMachineArn}'",
                                "StartExecution")
        head, _, machine = stateMachineArn.rpartition(":stateMachine:")
        arn = f"{head}:execution:{machine}:{name}"
        existing = self.executions.get(arn)
        if existing is not None:
            if existing.status == "RUNNING" and json.loads(input) == existing.input:
                return {"executionArn": arn, "startDate": existing.started}
            raise _client_error("ExecutionAlreadyExists", f"Execution Already Exists: '{arn}'", "StartExecution")
        now = self.clock.now()
        execution = Execution(arn=arn, name=name, input=json.loads(input), started=now,
                              state=self.definition["StartAt"], data=json.loads(input), due=now, entered_at=now)
        self.executions[arn] = execution
        self._event(execution, execution.state, "started", f"input {input}")
        return {"executionArn": arn, "startDate": now}

    def stop_execution(self, executionArn: str, error: str = "", cause: str = "") -> dict[str, Any]:
        execution = self._execution(executionArn, "StopExecution")
        if execution.status == "RUNNING":
            execution.status, execution.error, execution.cause, execution.stopped = "ABORTED", error, cause, True
            execution.due = None
            self._event(execution, execution.state, "stopped", f"{error}: {cause}")
        return {"stopDate": self.clock.now()}

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        execution = self._execution(executionArn, "DescribeExecution")
        out: dict[str, Any] = {"executionArn": execution.arn, "stateMachineArn": self.state_machine_arn,
                               "name": execution.name, "status": execution.status,
                               "startDate": execution.started, "input": json.dumps(execution.input)}
        if execution.output is not None:
            out["output"] = json.dumps(execution.output)
        if execution.error:
            out["error"], out["cause"] = execution.error, execution.cause or ""
        return out

    def send_task_success(self, taskToken: str, output: str) -> dict[str, Any]:
        self._resolve(taskToken, ("success", json.loads(output)), "SendTaskSuccess")
        return {}

    def send_task_failure(self, taskToken: str, error: str = "", cause: str = "") -> dict[str, Any]:
        self._resolve(taskToken, ("failure", (error, cause)), "SendTaskFailure")
        return {}

    # ------------------------------------------------------------------ driving
    def next_due(self) -> datetime | None:
        dues = [e.due for e in self.executions.values() if e.status == "RUNNING" and e.due is not None]
        return min(dues) if dues else None

    def run_due(self) -> int:
        """Run every state due now (without moving the clock). Returns how many states ran."""
        ran = 0
        while True:
            if ran > MAX_TRANSITIONS_AT_ONCE:
                raise RuntimeError(f"more than {MAX_TRANSITIONS_AT_ONCE} state transitions at one instant: a loop "
                                   "that never waits")
            now = self.clock.now()
            ready = sorted((e for e in self.executions.values()
                            if e.status == "RUNNING" and e.due is not None and e.due <= now),
                           key=lambda e: (e.due, e.arn))
            if not ready:
                return ran
            self._step(ready[0])
            ran += 1

    def run_until(self, when: datetime) -> int:
        """Move the virtual clock forward to `when`, running each state at the time it is due."""
        ran = self.run_due()
        while True:
            due = self.next_due()
            if due is None or due > when:
                break
            if due > self.clock.now():
                self.clock.set(due)
            ran += self.run_due()
        if when > self.clock.now():
            self.clock.set(when)
        return ran

    def run_until_idle(self, limit: timedelta = timedelta(days=8)) -> int:
        """Run until every execution has ended or waits for a callback (moving the clock as needed)."""
        deadline = self.clock.now() + limit
        ran = self.run_due()
        while True:
            pending = [e for e in self.executions.values()
                       if e.status == "RUNNING" and e.due is not None and e.waiting_token is None]
            if not pending:
                return ran
            due = min(e.due for e in pending if e.due is not None)
            if due > deadline:
                raise RuntimeError("workflow still running after the time limit")
            if due > self.clock.now():
                self.clock.set(due)
            ran += self.run_due()

    def execution(self, name_or_arn: str) -> Execution:
        for e in self.executions.values():
            if name_or_arn in (e.arn, e.name):
                return e
        raise KeyError(name_or_arn)

    # ------------------------------------------------------------------ interpreter
    def _check_definition(self) -> None:
        known = {"Task", "Wait", "Choice", "Pass", "Succeed", "Fail"}
        for name, state in self.definition["States"].items():
            if state["Type"] not in known:
                raise UnsupportedDefinition(f"{name}: state type {state['Type']} is not supported")
            if state["Type"] == "Task" and state["Resource"] not in (LAMBDA_INVOKE, LAMBDA_CALLBACK):
                raise UnsupportedDefinition(f"{name}: resource {state['Resource']} is not supported")

    def _execution(self, arn: str, operation: str) -> Execution:
        execution = self.executions.get(arn)
        if execution is None:
            raise _client_error("ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'", operation)
        return execution

    def _resolve(self, token: str, outcome: tuple[str, Any], operation: str) -> None:
        arn = self._tokens.get(token)
        execution = self.executions.get(arn) if arn else None
        if execution is None:
            raise _client_error("InvalidToken", "Invalid Token", operation)
        if execution.status != "RUNNING" or execution.waiting_token != token or execution.token_outcome:
            raise _client_error("TaskTimedOut", "Task Timed Out", operation)
        execution.token_outcome = outcome
        execution.due = self.clock.now()
        self._event(execution, execution.state, "callback", outcome[0])

    def _context(self, execution: Execution, token: str | None = None) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "Execution": {"Id": execution.arn, "Name": execution.name, "StartTime": iso(execution.started),
                          "Input": execution.input},
            "StateMachine": {"Id": self.state_machine_arn},
            "State": {"Name": execution.state, "EnteredTime": iso(execution.entered_at or execution.started),
                      "RetryCount": execution.retry_count},
        }
        if token is not None:
            ctx["Task"] = {"Token": token}
        return ctx

    def _event(self, execution: Execution, state: str, kind: str, detail: str = "") -> None:
        self.history.append(HistoryEvent(self.clock.now(), execution.name, state, kind, detail))

    def _enter(self, execution: Execution, state: str, data: Any) -> None:
        execution.state, execution.data = state, data
        execution.entered_at = self.clock.now()
        execution.retry_count, execution.attempts = 0, {}
        execution.waiting_token, execution.token_outcome = None, None
        execution.due = self.clock.now()
        self._event(execution, state, "entered")

    def _end(self, execution: Execution, status: str, output: Any = None, error: str | None = None,
             cause: str | None = None) -> None:
        execution.status, execution.output, execution.error, execution.cause = status, output, error, cause
        execution.due = None
        self._event(execution, execution.state, "ended", status + (f" {error}: {cause}" if error else ""))

    def _step(self, execution: Execution) -> None:
        state = self.definition["States"][execution.state]
        kind = state["Type"]
        data = execution.data
        if kind == "Task":
            self._task(execution, state)
            return
        try:
            effective = _require(state["InputPath"], data, {}) if state.get("InputPath") else data
            if kind == "Choice":
                ctx = self._context(execution)
                for rule in state["Choices"]:
                    if _rule(rule, effective, ctx):
                        self._enter(execution, rule["Next"], data)
                        return
                if "Default" not in state:
                    raise _StateError("States.NoChoiceMatched", f"no choice matched in {execution.state}")
                self._enter(execution, state["Default"], data)
            elif kind == "Wait":
                self._wait(execution, state, effective)
            elif kind == "Pass":
                result = state.get("Result", effective)
                if "Parameters" in state:
                    result = _parameters(state["Parameters"], effective, self._context(execution))
                out = _set(state.get("ResultPath", "$"), data, result)
                self._next(execution, state, out)
            elif kind == "Succeed":
                self._end(execution, "SUCCEEDED", output=effective)
            elif kind == "Fail":
                self._end(execution, "FAILED", error=state.get("Error"), cause=state.get("Cause"))
        except _StateError as err:
            self._end(execution, "FAILED", error=err.error, cause=err.cause)

    def _wait(self, execution: Execution, state: dict[str, Any], data: Any) -> None:
        if execution.due is not None and execution.due > execution.entered_at:  # type: ignore[operator]
            self._next(execution, state, execution.data)  # the wait is over
            return
        ctx = self._context(execution)
        if "Seconds" in state:
            until = self.clock.now() + timedelta(seconds=float(state["Seconds"]))
        elif "SecondsPath" in state:
            seconds = _require(state["SecondsPath"], data, ctx)
            if not isinstance(seconds, int | float) or seconds < 0:
                raise _StateError("States.Runtime", f"SecondsPath gave {seconds!r}")
            until = self.clock.now() + timedelta(seconds=float(seconds))
        elif "Timestamp" in state or "TimestampPath" in state:
            text = state.get("Timestamp") or _require(state["TimestampPath"], data, ctx)
            until = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        else:
            raise UnsupportedDefinition(f"{execution.state}: a Wait needs Seconds(Path) or Timestamp(Path)")
        if until <= self.clock.now():
            self._next(execution, state, execution.data)
            return
        execution.due = until
        self._event(execution, execution.state, "waiting", f"until {iso(until)}")

    def _next(self, execution: Execution, state: dict[str, Any], data: Any) -> None:
        if state.get("OutputPath"):
            data = _require(state["OutputPath"], data, {})
        if state.get("End"):
            self._end(execution, "SUCCEEDED", output=data)
        else:
            self._enter(execution, state["Next"], data)

    def _task(self, execution: Execution, state: dict[str, Any]) -> None:
        callback = state["Resource"] == LAMBDA_CALLBACK
        try:
            if callback and execution.waiting_token is not None:
                self._callback_due(execution, state)
                return
            effective = _require(state["InputPath"], execution.data, {}) if state.get("InputPath") else execution.data
            token = f"token-{uuid.uuid4()}" if callback else None
            params = _parameters(state.get("Parameters", {}), effective, self._context(execution, token))
            if params.get("FunctionName") != self.function_arn:
                raise UnsupportedDefinition(f"{execution.state}: invokes {params.get('FunctionName')!r}, not "
                                            f"{self.function_arn}")
            if self.on_task is not None:
                self.on_task(execution, execution.state, params["Payload"])
            if token is not None:
                # Registered before the call: the function may complete its own token while it runs.
                self._tokens[token] = execution.arn
                execution.waiting_token, execution.token_outcome = token, None
            try:
                payload = self._invoke(copy.deepcopy(params["Payload"]))
            except Exception as err:  # noqa: BLE001 - a function error, named after its class
                execution.waiting_token = None
                # `error_type` lets a test model errors that are not exception classes (Runtime.ExitError).
                name = str(getattr(err, "error_type", type(err).__name__))
                raise _StateError(name, json.dumps({"errorMessage": str(err)[:2000], "errorType": name})) from None
            if execution.status != "RUNNING":
                return  # stopped while its task ran: the result is discarded, as Step Functions does
            if token is None:
                result = {"Payload": payload, "StatusCode": 200, "ExecutedVersion": "$LATEST"}
                self._task_result(execution, state, result)
                return
            timeout = state.get("TimeoutSeconds")
            if "TimeoutSecondsPath" in state:
                timeout = _require(state["TimeoutSecondsPath"], effective, self._context(execution))
            if execution.token_outcome is None:
                execution.due = (self.clock.now() + timedelta(seconds=float(timeout))) if timeout else None
                self._event(execution, execution.state, "waiting", "for its task token" + (
                    f" until {iso(execution.due)}" if execution.due else ""))
            else:
                self._callback_due(execution, state)
        except _StateError as err:
            self._error(execution, state, err)

    def _callback_due(self, execution: Execution, state: dict[str, Any]) -> None:
        outcome = execution.token_outcome
        execution.waiting_token = None
        if outcome is None:  # the timeout came first
            self._event(execution, execution.state, "timeout")
            self._error(execution, state, _StateError("States.Timeout", "the task token was not returned in time"))
            return
        execution.token_outcome = None
        if outcome[0] == "success":
            self._task_result(execution, state, outcome[1])
        else:
            error, cause = outcome[1]
            self._error(execution, state, _StateError(error or "States.TaskFailed", cause))

    def _task_result(self, execution: Execution, state: dict[str, Any], result: Any) -> None:
        try:
            if "ResultSelector" in state:
                result = _parameters(state["ResultSelector"], result, self._context(execution))
            out = _set(state.get("ResultPath", "$"), execution.data, result)
            self._event(execution, execution.state, "succeeded")
            self._next(execution, state, out)
        except _StateError as err:
            self._end(execution, "FAILED", error=err.error, cause=err.cause)

    def _error(self, execution: Execution, state: dict[str, Any], err: _StateError) -> None:
        for index, retrier in enumerate(state.get("Retry", [])):
            if not _matches(err.error, retrier["ErrorEquals"]):
                continue
            attempts = execution.attempts.get(index, 0)
            if attempts < int(retrier.get("MaxAttempts", 3)):
                delay = float(retrier.get("IntervalSeconds", 1)) * float(retrier.get("BackoffRate", 2.0)) ** attempts
                execution.attempts[index] = attempts + 1
                execution.retry_count += 1
                execution.due = self.clock.now() + timedelta(seconds=delay)
                self._event(execution, execution.state, "retry", f"{err.error} (attempt {attempts + 1}, in {delay:g}s)")
                return
            break  # the first matching retrier is exhausted: go to Catch
        for catcher in state.get("Catch", []):
            if _matches(err.error, catcher["ErrorEquals"]):
                self._event(execution, execution.state, "caught", f"{err.error}: {err.cause[:200]}")
                out = _set(catcher.get("ResultPath", "$"), execution.data, {"Error": err.error, "Cause": err.cause})
                self._enter(execution, catcher["Next"], out)
                return
        self._event(execution, execution.state, "failed", f"{err.error}: {err.cause[:200]}")
        self._end(execution, "FAILED", error=err.error, cause=err.cause)
