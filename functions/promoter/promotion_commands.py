"""What the promoter accepts, as typed models: console commands, the GreenReady event's detail, and the
workflow state its steps receive. A payload that does not validate is rejected with the field named."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reflex_core.config_base import format_validation_error
from reflex_core.promotion_config import Colour, PromotionPair, PromotionStageConfig
from reflex_core.triggers import TriggerError

COMMAND_NAMES = ("promote", "pause", "resume", "abort", "rollback", "close")


class PromotionCommand(BaseModel):
    """A console command. `promote` approves the gate before the last step (or approves it in advance);
    `pause`/`resume` hold the promotion at its current weights; `abort` ends it with all traffic back on
    the colour that was live; `rollback` does the same, also after finalizing, within the retention window;
    `close` (with `live`) ends the promotion on the colour an operator chose, e.g. after finishing a rollback that
    failed by hand: all traffic on `live`, the record says so, and the reconcile keeps it so."""

    # strict: a boolean is not a string, a string is not a boolean (`"dry_run": "no"` is refused).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    command: Literal["promote", "pause", "resume", "abort", "rollback", "close"]
    pair: str = Field(min_length=1, max_length=40)
    live: Colour | None = Field(default=None, description="`close` only: the colour the promotion ends on")
    reason: str = Field(min_length=3, max_length=500)
    operator: str = Field(min_length=1, max_length=128)
    dry_run: bool = False
    request_id: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _live_with_close(self) -> PromotionCommand:
        if (self.command == "close") != (self.live is not None):
            raise ValueError("live: required for, and only for, `close` (blue or green)")
        return self


class GreenReadyDetail(BaseModel):
    """`detail` of the GreenReady event a team's pipeline sends when the idle colour runs the new release."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    pair: str | None = Field(default=None, min_length=1, max_length=40,
                             description="required when several pairs listen to the same event")
    colour: Colour | None = Field(default=None, description="the colour that is ready; default: the idle one")
    release: str | None = Field(default=None, min_length=1, max_length=128, description="what was deployed")
    metadata: dict[str, Any] = Field(default_factory=dict, description="anything the pipeline wants audited")


class WorkflowState(BaseModel):
    """The promotion workflow's state, as its tasks receive it (`reflex_step.input`). Set by the promoter
    when it starts the execution, then by each step; extra keys (errors caught by the workflow, a
    callback's output) are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    pair: str = Field(min_length=1)
    promotion_id: str = Field(min_length=1, max_length=80)
    to_colour: Colour
    release: str | None = None
    steps: list[dict[str, int]] = Field(default_factory=list)
    next_step: int = Field(default=0, ge=0)
    reason: str = ""


def _errors(err: ValidationError, prefix: str, tag: str | None = None) -> list[str]:
    return format_validation_error(err, prefix)


def validate_command(data: Any, config: PromotionStageConfig) -> PromotionCommand:
    if not isinstance(data, dict):
        raise TriggerError(["<root>: expected a JSON object with a 'command'"])
    command = data.get("command")
    if command not in COMMAND_NAMES:
        raise TriggerError([f"command: unknown command {command!r}; expected one of {', '.join(COMMAND_NAMES)}"])
    try:
        cmd = PromotionCommand.model_validate(data)
    except ValidationError as err:
        raise TriggerError(_errors(err, "")) from None
    known_pair(cmd.pair, config, "pair")
    return cmd


def known_pair(name: str, config: PromotionStageConfig, field: str) -> PromotionPair:
    pair = config.promotion(name)
    if pair is None:
        known = ", ".join(p.name for p in config.promotions) or "none"
        raise TriggerError([f"{field}: no promotion pair named {name!r} (configured: {known})"])
    return pair


def validate_green_ready(detail: dict[str, Any], pairs: list[PromotionPair]) -> tuple[PromotionPair, GreenReadyDetail]:
    """The pair a GreenReady event concerns, among the pairs listening to its source and detail-type."""
    try:
        ready = GreenReadyDetail.model_validate(detail)
    except ValidationError as err:
        raise TriggerError(_errors(err, "detail.")) from None
    if ready.pair is not None:
        match = [p for p in pairs if p.name == ready.pair]
        if not match:
            names = ", ".join(p.name for p in pairs)
            raise TriggerError([f"detail.pair: {ready.pair!r} does not listen to this event (listening: {names})"])
        return match[0], ready
    if len(pairs) > 1:
        raise TriggerError([f"detail.pair: required, several pairs listen to this event "
                            f"({', '.join(p.name for p in pairs)})"])
    return pairs[0], ready


def validate_workflow_state(data: dict[str, Any], config: PromotionStageConfig) -> WorkflowState:
    try:
        state = WorkflowState.model_validate(data)
    except ValidationError as err:
        raise TriggerError(_errors(err, "reflex_step.input.")) from None
    known_pair(state.pair, config, "reflex_step.input.pair")
    return state
