"""What the failover function accepts, as typed models: console commands and the workflow state its steps receive.
A payload that does not validate is rejected with the field named, and nothing happens."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from failover import workflow_definition as wf
from reflex_core.config_base import format_validation_error
from reflex_core.recovery_config import RecoveryStageConfig
from reflex_core.step_results import check_step
from reflex_core.triggers import TriggerError

COMMANDS = ("plan_failover", "failover", "failback", "approve_failover", "reject_failover")
# How much data loss (seconds of writes) an operator may accept at most: a day; more is a restore, not a failover.
MAX_ACCEPTED_LOSS_S = 86400


class _Command(BaseModel):
    # strict: a boolean is not a string, a number is not a string (`"dry_run": "no"` is refused).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    failover: str = Field(min_length=1, max_length=40, description="the recovery.failover entry, by name")
    reason: str = Field(min_length=3, max_length=500)
    operator: str = Field(min_length=1, max_length=128)
    dry_run: bool = False
    request_id: str | None = Field(default=None, min_length=1, max_length=128)


class PlanFailover(_Command):
    """Read-only: the pre-checks and what `failover`/`failback` would do now."""

    command: Literal["plan_failover"]
    mode: Literal["switchover", "failover", "failback"] = "switchover"
    accept_data_loss_s: int | None = Field(default=None, ge=0, le=MAX_ACCEPTED_LOSS_S)


class StartFailover(_Command):
    """Move the writer to the secondary region: `switchover` (planned, no data loss) or `failover` (the primary is
    lost; with a lag above the RPO only with `accept_data_loss_s` >= the lag; with the lag unknown, >= the RPO)."""

    command: Literal["failover"]
    mode: Literal["switchover", "failover"]
    accept_data_loss_s: int | None = Field(default=None, ge=0, le=MAX_ACCEPTED_LOSS_S)

    @model_validator(mode="after")
    def _loss_only_for_failover(self) -> StartFailover:
        if self.accept_data_loss_s is not None and self.mode != "failover":
            raise ValueError("accept_data_loss_s: only a failover may lose data; a switchover never does")
        return self


class StartFailback(_Command):
    """A planned switchover back to the original primary, once it rejoined and its lag is steady."""

    command: Literal["failback"]


class ApproveFailover(_Command):
    """Approve the run waiting at the gate (`run_id`, when given, must be that run)."""

    command: Literal["approve_failover"]
    run_id: str | None = Field(default=None, min_length=1, max_length=80)


class RejectFailover(_Command):
    command: Literal["reject_failover"]
    run_id: str | None = Field(default=None, min_length=1, max_length=80)


FailoverCommand = PlanFailover | StartFailover | StartFailback | ApproveFailover | RejectFailover
_MODELS: dict[str, type[_Command]] = {
    "plan_failover": PlanFailover, "failover": StartFailover, "failback": StartFailback,
    "approve_failover": ApproveFailover, "reject_failover": RejectFailover,
}


class WorkflowState(BaseModel):
    """The failover workflow's state as its tasks receive it (`reflex_step.input`): set by the command that starts
    the execution; extra keys (an error caught by the workflow, the approval's output) are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    run_id: str = Field(min_length=1, max_length=80)
    failover: str = Field(min_length=1, max_length=40)
    mode: Literal["switchover", "failover", "failback"]
    approval_timeout_s: int = Field(ge=60, le=86400)
    closing: Literal["not-approved", "refused", "failed"] | None = None
    verdict: str | None = None
    reason: str | None = None


def _known_failover(name: str, config: RecoveryStageConfig) -> None:
    if config.recovery.failover_target(name) is None:
        configured = ", ".join(f.name for f in config.recovery.failover) or "none"
        raise TriggerError([f"failover: unknown failover {name!r} (configured: {configured})"])


def validate_command(payload: dict[str, Any] | None, config: RecoveryStageConfig) -> FailoverCommand:
    payload = payload or {}
    model = _MODELS.get(str(payload.get("command")))
    if model is None:
        raise TriggerError([f"command: unknown command {payload.get('command')!r}; expected one of "
                            f"{', '.join(COMMANDS)}"])
    try:
        command = model.model_validate(payload)
    except ValidationError as err:
        raise TriggerError(format_validation_error(err)) from None
    _known_failover(command.failover, config)
    return command  # type: ignore[return-value]


def validate_step(step: str, has_token: bool, state: dict[str, Any], config: RecoveryStageConfig) -> WorkflowState:
    check_step(step, has_token, wf.STEPS, wf.CALLBACK_STEPS)
    try:
        parsed = WorkflowState.model_validate(state)
    except ValidationError as err:
        raise TriggerError(format_validation_error(err, "reflex_step.input.")) from None
    if step == wf.CLOSE and parsed.closing is None:
        raise TriggerError(["reflex_step.input.closing: the close step needs why the run closes"])
    _known_failover(parsed.failover, config)
    return parsed
