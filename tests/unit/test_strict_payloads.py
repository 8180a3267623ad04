"""Issue 8 #7: console and event payloads of the scaler and the promoter use strict types: a boolean is not
a number, a numeric string is not a number, a string is not a boolean. The error names the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from promoter.promotion_commands import GreenReadyDetail, PromotionCommand
from reflex_core.triggers import TriggerError
from scaler.scaling_reaction import _validate_command

BASE = {"command": "set_capacity", "policy": "api", "desired": 6, "reason": "strict types", "operator": "alice"}


@pytest.mark.parametrize(("field", "value"), [("desired", True), ("desired", "40"), ("desired", 6.0),
                                              ("dry_run", "no"), ("dry_run", 0), ("operator", 7)])
def test_a_scaler_command_refuses_a_value_of_the_wrong_type_and_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(TriggerError) as err:
        _validate_command(BASE | {field: value}, "", require_operator=True)
    assert any(e.startswith(f"{field}:") for e in err.value.errors), err.value.errors


def test_an_event_detail_is_as_strict_and_named_under_detail() -> None:
    with pytest.raises(TriggerError) as err:
        _validate_command(BASE | {"desired": "40"}, "detail.", require_operator=False)
    assert err.value.errors[0].startswith("detail.desired:")


def test_well_typed_commands_still_validate() -> None:
    cmd = _validate_command(BASE | {"dry_run": True}, "", require_operator=True)
    assert cmd.desired == 6 and cmd.dry_run is True


@pytest.mark.parametrize(("field", "value"), [("dry_run", "no"), ("dry_run", 1), ("reason", 12345)])
def test_a_promoter_command_is_strict(field: str, value: Any) -> None:
    data = {"command": "rollback", "pair": "web", "reason": "strict types", "operator": "bob", field: value}
    with pytest.raises(ValidationError) as err:
        PromotionCommand.model_validate(data)
    assert field in str(err.value)


def test_green_ready_is_strict() -> None:
    with pytest.raises(ValidationError) as err:
        GreenReadyDetail.model_validate({"pair": "web", "release": 7})
    assert "release" in str(err.value)
    assert GreenReadyDetail.model_validate({"pair": "web", "release": "v7", "colour": "green"}).colour == "green"
