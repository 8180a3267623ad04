"""Console commands of the advisor function (also accepted in custom event details)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from reflex_core.triggers import TriggerError

IDENT = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$"
# The only partial-index predicates the advisor proposes (and so the only ones apply_index builds): a column
# IS [NOT] NULL, or a boolean column (NOT col). Anything else would be SQL from the console.
PARTIAL_PREDICATE = re.compile(r"^(?:[a-z_][a-z0-9_$]* IS (?:NOT )?NULL|(?:NOT )?[a-z_][a-z0-9_$]*)$")


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    reason: str = Field(min_length=3, max_length=500)
    operator: str | None = Field(default=None, min_length=1, max_length=128)
    dry_run: bool = False
    request_id: str | None = Field(default=None, min_length=1, max_length=128)


class AdviseCommand(_Command):
    command: Literal["advise"]
    database: str = Field(default="*", min_length=1)


class CancelRunawayCommand(_Command):
    """Sweep one database for runaway queries now (what a CPU or connections alarm does)."""

    command: Literal["cancel_runaway"]
    database: str = Field(min_length=1)


class ApplyIndexCommand(_Command):
    command: Literal["apply_index"]
    database: str = Field(min_length=1)
    schema_name: str = Field(default="public", alias="schema", pattern=IDENT)
    table: str = Field(pattern=IDENT)
    columns: list[Annotated[str, Field(pattern=IDENT)]] = Field(min_length=1, max_length=8)
    where: str | None = Field(default=None, max_length=200)

    @field_validator("where")
    @classmethod
    def _partial(cls, v: str | None) -> str | None:
        if v is not None and not PARTIAL_PREDICATE.match(v):
            raise ValueError("only '<column> IS NULL', '<column> IS NOT NULL', '<column>' or 'NOT <column>' "
                             "(the partial predicates the advisor proposes)")
        return v

    @field_validator("columns")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("columns must be distinct")
        return v


AdvisorCommand = Annotated[AdviseCommand | CancelRunawayCommand | ApplyIndexCommand, Field(discriminator="command")]
COMMANDS: TypeAdapter[Any] = TypeAdapter(AdvisorCommand, config=ConfigDict(defer_build=True))
COMMAND_NAMES = ("advise", "apply_index", "cancel_runaway")


def validate_command(data: Any, prefix: str, require_operator: bool) -> Any:
    if not isinstance(data, dict):
        raise TriggerError([f"{prefix or '<root>'}: expected a JSON object with a 'command'"])
    command = data.get("command")
    if command not in COMMAND_NAMES:
        raise TriggerError([f"{prefix}command: unknown command {command!r}; "
                            f"expected one of {', '.join(COMMAND_NAMES)}"])
    try:
        cmd = COMMANDS.validate_python(data)
    except ValidationError as err:
        errors = [e | {"loc": e["loc"][1:] if e["loc"][:1] == (command,) else e["loc"]} for e in err.errors()]
        raise TriggerError([f"{prefix}{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                            for e in errors]) from None
    if require_operator and not cmd.operator:
        raise TriggerError([f"{prefix}operator: required for console commands (who is acting)"])
    return cmd
