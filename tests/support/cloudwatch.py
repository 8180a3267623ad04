"""CloudWatch's side of the alarm events a test sends: the scaler reads alarms' actual state (DescribeAlarms)
before acting on remembered state, so a test that sends a transition also makes it CloudWatch's state, as
happens in AWS (the state changes, then the event is delivered). An older transition delivered late does not
move CloudWatch's state back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.conftest import FakeLambdaContext

Invoke = Callable[..., dict[str, Any]]


def mirror_alarm_state(world: Any, event: Any, latest: dict[str, datetime]) -> None:
    from reflex_core.triggers import TriggerError, parse_trigger

    try:
        trigger = parse_trigger(event, datetime.now().astimezone())
    except TriggerError:
        return
    alarm = trigger.alarm
    if alarm is None or (alarm.name in latest and alarm.changed_at < latest[alarm.name]):
        return
    latest[alarm.name] = alarm.changed_at
    world.set_alarm_state(alarm.name, alarm.state, alarm.changed_at)


def mirroring_invoke(world: Any, handler: Callable[[Any, Any], dict[str, Any]] | None = None) -> Invoke:
    """The scaler handler (or `handler`), with each alarm transition made CloudWatch's state first."""
    if handler is None:
        from scaler.handler import lambda_handler as handler
    latest: dict[str, datetime] = {}

    def _invoke(event: Any, context: Any = None) -> dict[str, Any]:
        mirror_alarm_state(world, event, latest)
        return handler(event, context or FakeLambdaContext())

    return _invoke
