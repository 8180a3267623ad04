"""`override_kill_switch` is the pipeline's field: checked (a boolean) and removed before a reaction validates its
console command, so every reaction takes it (docs/architecture.md, "Kill switch levels")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reflex_core.pipeline import _without_override
from reflex_core.triggers import Trigger, TriggerError, parse_trigger

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def _console(**payload: object) -> Trigger:
    return parse_trigger({"command": "add_shards", "policy": "p", "reason": "test run", "operator": "alice",
                          **payload}, NOW, "req-1")


def test_the_reaction_sees_the_command_without_the_override() -> None:
    trigger = _console(override_kill_switch=True)
    seen = _without_override(trigger)
    assert seen.payload is not None and "override_kill_switch" not in seen.payload
    assert trigger.payload is not None and trigger.payload["override_kill_switch"] is True  # the pipeline's copy


@pytest.mark.parametrize("value", ["true", 1, None, "yes"])
def test_an_override_that_is_not_a_boolean_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(TriggerError) as err:
        _without_override(_console(override_kill_switch=value))
    assert err.value.errors[0].startswith("override_kill_switch: must be true or false")


def test_a_command_without_the_field_is_passed_as_it_is() -> None:
    trigger = _console()
    assert _without_override(trigger) is trigger
