"""What the shard reaction accepts, as typed models: console commands, the ShardAdded event's detail and
the move workflow's state. A payload that does not validate is rejected with the field named."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from reflex_core.config_base import format_validation_error
from reflex_core.sharding_config import ShardingStageConfig, ShardSet
from reflex_core.triggers import TriggerError

COMMAND_NAMES = ("plan", "rebalance", "drain", "add_shard", "move", "pause", "resume", "abort", "status")
PLANNING = frozenset({"plan", "rebalance", "drain", "add_shard"})
ADVANCE = "advance"
# The commands each optional field means something to: any other command carrying it is rejected, naming it
# (a field silently ignored is an operator's intent silently dropped).
FIELD_COMMANDS: dict[str, frozenset[str]] = {
    "shard": frozenset({"drain", "add_shard"}),
    "buckets": frozenset({"move"}),
    "target": frozenset({"move"}),
    "move_id": frozenset({"move", "pause", "resume", "abort"}),
    "mode": frozenset({"move"} | PLANNING),
}
_BUCKET_ITEM = re.compile(r"(\d{1,12})(?:-(\d{1,12}))?")


def bucket_span(item: Any) -> tuple[int, int]:
    """One item of a console bucket list as (first, last): a non-negative int or a string "b" / "a-b" with
    a <= b. Raises ValueError saying what is wrong; nothing is expanded (bounds are checked on the span)."""
    if isinstance(item, bool) or not isinstance(item, int | str):
        raise ValueError(f"{item!r} is not a bucket number or a range \"a-b\"")
    if isinstance(item, int):
        if item < 0:
            raise ValueError(f"{item} is negative")
        return item, item
    m = _BUCKET_ITEM.fullmatch(item.strip())
    if not m:
        raise ValueError(f"{item!r} is not a bucket number or a range \"a-b\"")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if hi < lo:
        raise ValueError(f"{item!r}: the range ends ({hi}) before it starts ({lo})")
    return lo, hi


class ShardCommand(BaseModel):
    """A console command on one shard set.

    plan: the rebalance plan, printed, nothing moved (a dry run by definition); rebalance: plan and start the
    moves; drain: move every bucket off `shard`; add_shard: `shard` (configured, accepting) takes its share;
    move: move the named `buckets` to `target`; pause/resume/abort: one move (`move_id`) or every move of the
    set; status: the map and the moves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: Literal["plan", "rebalance", "drain", "add_shard", "move", "pause", "resume", "abort", "status"]
    set: str = Field(min_length=1, max_length=40)
    shard: str | None = Field(default=None, min_length=1, max_length=40, description="drain, add_shard")
    buckets: list[StrictInt | StrictStr] | None = Field(
        default=None, min_length=1, max_length=65536,
        description='move: bucket numbers or ranges ("0-15", first <= last); no booleans or floats')
    target: str | None = Field(default=None, min_length=1, max_length=40, description="move")
    move_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$",
                                description="pause/resume/abort: the move; move: the new move's id")
    mode: Literal["online", "block_writes"] | None = Field(
        default=None, description="move, plan, rebalance, drain, add_shard: the moves' mode (default: transfer)")
    reason: str = Field(min_length=3, max_length=500)
    operator: str = Field(min_length=1, max_length=128)
    dry_run: StrictBool = False  # true or false only: "no", 0, "false", 1 are refused, not read as booleans
    request_id: str | None = Field(default=None, min_length=1, max_length=128)

    def bucket_numbers(self) -> list[int]:
        """The named buckets, sorted, each once (validate_command has checked every item and its bounds)."""
        out: set[int] = set()
        for item in self.buckets or []:
            lo, hi = bucket_span(item)
            out.update(range(lo, hi + 1))
        return sorted(out)


class ShardAddedDetail(BaseModel):
    """`detail` of the ShardAdded event: a configured shard is ready to take its share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    set: str = Field(min_length=1, max_length=40)
    shard: str = Field(min_length=1, max_length=40)


class MoveState(BaseModel):
    """The move workflow's state (`reflex_step.input`), set by the reaction when it starts the execution."""

    model_config = ConfigDict(extra="allow", frozen=True)

    set: str = Field(min_length=1, max_length=40)
    move_id: str = Field(min_length=1, max_length=64)


def _known_set(name: str, config: ShardingStageConfig, field: str) -> ShardSet:
    sets = config.sharding.sets if config.sharding else []
    found = next((s for s in sets if s.name == name), None)
    if found is None:
        known = ", ".join(s.name for s in sets) or "none"
        raise TriggerError([f"{field}: no shard set {name!r} (configured: {known})"])
    return found


def _known_shard(sset: ShardSet, name: str, field: str) -> None:
    if sset.shard(name) is None:
        raise TriggerError([f"{field}: no shard {name!r} in set {sset.name} "
                            f"(configured: {', '.join(s.name for s in sset.shards)})"])


def validate_command(data: Any, config: ShardingStageConfig) -> ShardCommand:
    if not isinstance(data, dict):
        raise TriggerError(["<root>: expected a JSON object with a 'command'"])
    command = data.get("command")
    if command not in COMMAND_NAMES:
        raise TriggerError([f"command: unknown command {command!r}; expected one of {', '.join(COMMAND_NAMES)}"])
    try:
        cmd = ShardCommand.model_validate(data)
    except ValidationError as err:
        raise TriggerError(format_validation_error(err)) from None
    sset = _known_set(cmd.set, config, "set")
    if cmd.command in ("drain", "add_shard"):
        if cmd.shard is None:
            raise TriggerError([f"shard: required for {cmd.command}"])
        _known_shard(sset, cmd.shard, "shard")
        if cmd.command == "drain" and not [s for s in sset.shards if s.name != cmd.shard and s.accepting]:
            raise TriggerError([f"shard: {cmd.shard} is the last shard of set {sset.name} that accepts buckets; "
                                "there is nowhere to drain it to"])
        shard = sset.shard(cmd.shard)
        if cmd.command == "add_shard" and shard is not None and not shard.accepting:
            raise TriggerError([f"shard: {cmd.shard} does not accept buckets (accepting: false)"])
    for name, commands in FIELD_COMMANDS.items():
        if getattr(cmd, name) is not None and cmd.command not in commands:
            raise TriggerError([f"{name}: only for {', '.join(sorted(commands))}, not {cmd.command}"])
    if cmd.command == "move":
        if cmd.target is None:
            raise TriggerError(["target: required for move"])
        if not cmd.buckets:
            raise TriggerError(["buckets: required for move"])
        _known_shard(sset, cmd.target, "target")
        errors = _bucket_errors(cmd.buckets, sset.buckets)
        if errors:
            raise TriggerError(errors)
    return cmd


def _bucket_errors(items: list[Any], count: int) -> list[str]:
    """`buckets.<i>: ...` for each malformed item, `buckets: outside ...` for items past the set's buckets (at
    most 10 named), checked on each item's span: a range is never expanded to be checked."""
    errors: list[str] = []
    outside: list[Any] = []
    for i, item in enumerate(items):
        try:
            _, hi = bucket_span(item)
        except ValueError as err:
            errors.append(f"buckets.{i}: {err}")
            continue
        if hi >= count:
            outside.append(item)
    if outside:
        errors.append(f"buckets: outside 0-{count - 1}: {outside[:10]}")
    return errors[:10]


def validate_shard_added(detail: dict[str, Any], config: ShardingStageConfig) -> ShardAddedDetail:
    try:
        added = ShardAddedDetail.model_validate(detail)
    except ValidationError as err:
        raise TriggerError(format_validation_error(err, "detail.")) from None
    sset = _known_set(added.set, config, "detail.set")
    _known_shard(sset, added.shard, "detail.shard")
    shard = sset.shard(added.shard)
    if shard is not None and not shard.accepting:  # as the console's add_shard: it must take nothing
        raise TriggerError([f"detail.shard: {added.shard} does not accept buckets (accepting: false)"])
    return added


def validate_move_state(data: dict[str, Any], config: ShardingStageConfig) -> MoveState:
    try:
        state = MoveState.model_validate(data)
    except ValidationError as err:
        raise TriggerError(format_validation_error(err, "reflex_step.input.")) from None
    _known_set(state.set, config, "reflex_step.input.set")
    return state
