"""The current state of a pair's guard alarms, read with DescribeAlarms (metric and composite alarms).

Used by the preflight and the checks after each bake, and by the periodic reconcile as a backstop. The
event path (an alarm entering ALARM invokes the promoter) does not read anything: it acts at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reflex_core.aws_clients import AwsClients
from reflex_core.config_base import AlarmMatch

_TYPES = ["MetricAlarm", "CompositeAlarm"]


@dataclass(frozen=True)
class GuardReading:
    states: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # names (or prefixes + "*") that match no alarm

    @property
    def not_ok(self) -> dict[str, str]:
        return {name: state for name, state in sorted(self.states.items()) if state != "OK"}

    def problems(self) -> list[str]:
        """Why these guards do not allow going on: a missing guard is no guard, and INSUFFICIENT_DATA is
        not OK (an alarm that should stay quiet on missing data says so with TreatMissingData)."""
        out = [f"guard alarm {name} is {state}" for name, state in self.not_ok.items()]
        out += [f"guard alarm {name} does not exist" for name in self.missing]
        return out


def read_guard_alarms(clients: AwsClients, match: AlarmMatch) -> GuardReading:
    cloudwatch = clients.cloudwatch
    states: dict[str, str] = {}
    missing: list[str] = []
    names = list(match.names)
    for start in range(0, len(names), 100):  # DescribeAlarms takes at most 100 names
        for alarm in _alarms(cloudwatch, AlarmNames=names[start:start + 100]):
            states[alarm["AlarmName"]] = alarm["StateValue"]
    missing += [n for n in names if n not in states]
    for prefix in match.prefixes:
        found = _alarms(cloudwatch, AlarmNamePrefix=prefix)
        if not found:
            missing.append(prefix + "*")
        for alarm in found:
            states[alarm["AlarmName"]] = alarm["StateValue"]
    return GuardReading(states=states, missing=missing)


def _alarms(cloudwatch: object, **filters: object) -> list[dict[str, str]]:
    paginator = cloudwatch.get_paginator("describe_alarms")  # type: ignore[attr-defined]
    out: list[dict[str, str]] = []
    for page in paginator.paginate(AlarmTypes=_TYPES, **filters):
        out += page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
    return out
