"""The actual state of a policy's alarms, read from CloudWatch (`DescribeAlarms` by name, 100 names a call).

Remembered alarm state (the state table's alarm memory, written from events) tells the evaluator which
alarms a policy has seen and what they last said. It never justifies an action on its own: before acting on
"still in ALARM" (a repeated scale-out) or "OK for long enough" (a scale-in), and before any decrease, the
scaler reads what CloudWatch says now and lets it win. An alarm deleted in CloudWatch, or no longer matching
the policy's `scale_out.alarms` (names, prefixes, tags), drops out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reflex_core.alarm_tags import AlarmTagReader
from reflex_core.config_base import AlarmMatch
from reflex_core.state_store import AlarmMemory

MAX_NAMES_PER_CALL = 100  # DescribeAlarms accepts at most 100 AlarmNames
_TYPES = ["MetricAlarm", "CompositeAlarm"]


@dataclass(frozen=True)
class AlarmReading:
    name: str
    state: str
    changed_at: float  # when CloudWatch last updated the alarm's state
    arn: str | None = None


def describe_alarm_states(cloudwatch: Any, names: Iterable[str]) -> dict[str, AlarmReading]:
    """The alarms among `names` that exist, by name. Missing names are simply absent."""
    wanted = sorted(set(names))
    found: dict[str, AlarmReading] = {}
    for start in range(0, len(wanted), MAX_NAMES_PER_CALL):
        kwargs: dict[str, Any] = {"AlarmNames": wanted[start:start + MAX_NAMES_PER_CALL], "AlarmTypes": _TYPES,
                                  "MaxRecords": MAX_NAMES_PER_CALL}
        while True:
            page = cloudwatch.describe_alarms(**kwargs)
            for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                found[alarm["AlarmName"]] = AlarmReading(
                    name=alarm["AlarmName"], state=str(alarm["StateValue"]), changed_at=_changed_at(alarm),
                    arn=alarm.get("AlarmArn"))
            token = page.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
    return found


def _changed_at(alarm: dict[str, Any]) -> float:
    """The most recent of the state timestamps CloudWatch gives (the later one is the safer for a scale-in:
    it can only make "OK for long enough" come later)."""
    stamps = [alarm.get(k) for k in ("StateUpdatedTimestamp", "StateTransitionedTimestamp")]
    times = [s.timestamp() for s in stamps if isinstance(s, datetime)]
    return max(times) if times else 0.0


def actual_alarms(cloudwatch: Any, rule: AlarmMatch, remembered: Iterable[str], tags: AlarmTagReader) -> list[
        AlarmMemory]:
    """The policy's alarms as CloudWatch has them now: those remembered for the policy plus those its rule
    names, that exist and still match the rule (tag-matched alarms by their current tags)."""
    readings = describe_alarm_states(cloudwatch, {*remembered, *rule.names})
    out = []
    for reading in sorted(readings.values(), key=lambda r: r.name):
        alarm_tags = None
        if rule.tags and not rule.matches(reading.name, None):
            alarm_tags = tags.tags(cloudwatch, reading.arn)
        if rule.matches(reading.name, alarm_tags):
            out.append(AlarmMemory(name=reading.name, state=reading.state, changed_at=reading.changed_at))
    return out
