"""Intents, actions and decisions: plain values that can be printed, audited and run in dry-run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Direction = Literal["out", "in"]


class Intent(BaseModel):
    """What a trigger asks of one target, before any state is read or any guardrail runs."""

    model_config = ConfigDict(frozen=True)

    policy: str
    target_key: str
    target: dict[str, Any]
    operation: str
    direction: Direction | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""
    dry_run: bool = False
    # A periodic check that finds nothing to change is logged, not audited (see docs/architecture.md).
    quiet: bool = False


class Action(BaseModel):
    """A planned change: the state read just before, and the state intended."""

    model_config = ConfigDict(frozen=True)

    policy: str
    target_key: str
    target: dict[str, Any]
    operation: str
    direction: Direction | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    before: dict[str, Any]
    intended: dict[str, Any]
    reason: str = ""
    # Carried out, and a human must hear about it now (e.g. a release finalized while its weights were being
    # changed by hand): the audit notice is a PAGE.
    page: bool = False


class Skip(BaseModel):
    """A decision not to act, with the reason recorded as `skipped:<reason>`."""

    model_config = ConfigDict(frozen=True)

    reason: str
    detail: str = ""
    policy: str | None = None
    target_key: str | None = None
    before: dict[str, Any] | None = None
    quiet: bool = False
    # A refusal that may pass (the target is busy, a read was throttled): the trigger is tried again later,
    # never answered with this skip.
    transient: bool = False
    # A refusal a human must hear about now (e.g. a guard alarm with nothing safe to roll back to).
    page: bool = False


Outcome = str  # "executed" | "dry-run" | "skipped:<reason>" | "failed:<error>" | "rejected:validation"


class Decision(BaseModel):
    """The result of one intent through the pipeline: what goes into the audit record."""

    policy: str | None = None
    target_key: str | None = None
    operation: str | None = None
    outcome: Outcome
    detail: str = ""
    action: Action | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    audit_id: str | None = None
    quiet: bool = False
    # Not final: the trigger must be tried again (Lambda's retry, the console's next call); see pipeline.
    transient: bool = False
    # Page the humans: e.g. capacity an alarm demands was refused by an open breaker.
    page: bool = False
    # The audit record's id and time when they were fixed in advance (the write-ahead intent's), so that a
    # retried attempt writes the same record instead of a second one.
    audit_at: str | None = None

    def public(self) -> dict[str, Any]:
        hidden = {"action", "quiet", "page", "audit_at"} | (set() if self.transient else {"transient"})
        return self.model_dump(mode="json", exclude_none=True, exclude=hidden) | (
            {"intended": self.action.intended, "direction": self.action.direction} if self.action else {}
        )
