"""What every Reflex workflow task (promotion, shard moves, drills, failover) shares when it turns the pipeline's
result into Step Functions' answer: the two errors the state machines' Retry and Catch match by class name, and
the first decision of a `reflex_step` invocation. Pure: no AWS calls."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Collection, Sequence
from typing import Any

from reflex_core.triggers import TriggerError


class StepDeferred(RuntimeError):  # the class name is the error the Retry matches
    """A guardrail refused the step for now; the workflow retries it later."""


class StepRejected(RuntimeError):  # the class name is the error the Catch sees
    """The step's payload did not validate."""


def step_decision(event: Any, result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str, str] | None:
    """(the step, its first decision, the outcome's head, its reason) of a `reflex_step` event; None for any other
    trigger (its answer is the pipeline's result unchanged). A payload the pipeline rejected raises
    `StepRejected`; a step with no decision raises `StepDeferred`."""
    if not (isinstance(event, dict) and isinstance(event.get("reflex_step"), dict)):
        return None
    if result.get("status") == "rejected":
        raise StepRejected("; ".join(result.get("errors", []))[:1000])
    decisions = result.get("decisions") or []
    if not decisions:
        raise StepDeferred("the step produced no decision")
    decision = decisions[0]
    head, _, reason = str(decision["outcome"]).partition(":")
    return event["reflex_step"], decision, head, reason


def check_step(step: str, has_token: bool, steps: Sequence[str], callback_steps: Collection[str] = ()) -> None:
    """A `reflex_step`'s name is one of the workflow's `steps`, and it carries a callback token if and only if it
    is one of `callback_steps`; otherwise a TriggerError naming the field."""
    if step not in steps:
        raise TriggerError([f"reflex_step.step: unknown step {step!r}; expected one of {', '.join(steps)}"])
    if (step in callback_steps) != has_token:
        if not callback_steps:
            raise TriggerError(["reflex_step.task_token: this workflow's steps take no callback token"])
        raise TriggerError(["reflex_step.task_token: required for, and only for, "
                            f"{', '.join(sorted(callback_steps))}"])


class TaskTokens:
    """The callback tokens of the steps being handled, by fingerprint: an intent carries the fingerprint
    (`token_ref`), never the token, so tokens never enter the audit trail. Bounded; thread-safe (a warm container
    may run concurrent invocations' steps)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def remember(self, token: str) -> str:
        ref = hashlib.sha256(token.encode()).hexdigest()[:16]
        with self._lock:
            if len(self._tokens) >= self._capacity:
                self._tokens.clear()
            self._tokens[ref] = token
        return ref

    def of(self, action: Any) -> str:
        """The token of `action` (its `params.token_ref`)."""
        with self._lock:
            return self._tokens[str(action.params["token_ref"])]
