"""The simulator's attack steps (issue 8): each is validated with the field named, like every step. What
they do is shown by the scenarios that use them (safety_*.yaml, run by test_scenarios.py)."""

from __future__ import annotations

from typing import Any

import pytest

from simulator.scenario import ScenarioError, parse_scenario

BASE: dict[str, Any] = {"name": "x", "start": "2026-11-26T09:00:00Z", "steps": []}


@pytest.mark.parametrize(("step", "message"), [
    ({"cloudwatch": {"alarm": "a"}}, "give either `state`"),
    ({"cloudwatch": {"alarm": "a", "state": "OK", "delete": True}}, "give either `state`"),
    ({"fault": {"operation": "ecs.UpdateService", "kind": "meteor"}}, "fault.kind"),
    ({"fault": {"operation": "*", "kind": "throttle", "count": 1, "for_s": 60}}, "at most one of count, calls, for_s"),
    ({"concurrent": [{"console": {"command": "scale_out"}}]}, "concurrent"),
    ({"concurrent": [{"console": {"command": "a"}, "redeliver": "x"}, {"redeliver": "y"}]}, "each delivery is one"),
    ({"kill_switch": {"scope": "scaler", "on": True, "value": "hard-stop"}}, "exactly one of `on`, `value`"),
    ({"kill_switch": {"scope": "Not A Scope", "on": True}}, "kill_switch.scope"),
    ({"hold_lock": {"policy": "api", "pair": "web"}}, "either `policy` or `pair`"),
    ({"capacity": {"policy": "api", "desired": -1}}, "capacity.desired"),
])
def test_attack_steps_are_validated_with_the_field_named(step: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(BASE | {"steps": [{"t": 5, **step}]}, "bad.yaml")
    assert message in str(err.value)


def test_a_future_stamp_and_a_forged_event_are_allowed() -> None:
    scenario = parse_scenario(BASE | {"steps": [
        {"t": 5, "alarm": {"name": "a", "state": "ALARM", "occurred": "1:00:00", "cloudwatch": False}},
        {"t": 6, "kill_switch": {"scope": "promoter", "value": "hard-stop"}},
        {"t": 7, "kill_switch": {"scope": "global", "delete": True}}]}, "ok.yaml")
    alarm = scenario.steps[0].alarm
    assert alarm is not None and alarm.occurred == 3600 and alarm.cloudwatch is False
    assert [s.kill_switch.raw_value for s in scenario.steps[1:] if s.kill_switch] == ["hard-stop", None]
