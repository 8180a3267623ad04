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

from botocore.exceptions import BotoCoreError, ClientError

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
        found.update(_describe(cloudwatch, AlarmNames=wanted[start:start + MAX_NAMES_PER_CALL]))
    return found


def _describe(cloudwatch: Any, **selector: Any) -> dict[str, AlarmReading]:
    """Every alarm DescribeAlarms returns for one selector (names, a name prefix or a state), all pages."""
    found: dict[str, AlarmReading] = {}
    kwargs: dict[str, Any] = {**selector, "AlarmTypes": _TYPES, "MaxRecords": MAX_NAMES_PER_CALL}
    while True:
        page = cloudwatch.describe_alarms(**kwargs)
        for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
            found[alarm["AlarmName"]] = AlarmReading(
                name=alarm["AlarmName"], state=str(alarm["StateValue"]), changed_at=_changed_at(alarm),
                arn=alarm.get("AlarmArn"))
        token = page.get("NextToken")
        if not token:
            return found
        kwargs["NextToken"] = token


def _changed_at(alarm: dict[str, Any]) -> float:
    """The most recent of the state timestamps CloudWatch gives (the later one is the safer for a scale-in:
    it can only make "OK for long enough" come later)."""
    stamps = [alarm.get(k) for k in ("StateUpdatedTimestamp", "StateTransitionedTimestamp")]
    times = [s.timestamp() for s in stamps if isinstance(s, datetime)]
    return max(times) if times else 0.0


def actual_alarms(cloudwatch: Any, rule: AlarmMatch, remembered: Iterable[str], tags: AlarmTagReader,
                  uncertain: list[AlarmMemory] | None = None) -> list[AlarmMemory]:
    """The policy's alarms as CloudWatch has them now, including those Reflex never saw change state (their
    transition happened before Reflex was deployed, or its event was lost):

    * the alarms remembered for the policy and those its rule names;
    * every alarm whose name starts with one of the rule's prefixes (DescribeAlarms by prefix);
    * for a rule that matches by tag: every alarm under its `tag_name_prefixes`, or, without them, every alarm
      of the account that is not OK (an unseen OK alarm changes nothing of "no decrease while one is in ALARM");
      each kept only when its current tags match.

    Deleted alarms, and alarms that no longer match the rule, drop out. With `uncertain`, an alarm whose tags
    cannot be read (ListTagsForResource throttled in an alarm storm) goes there instead of failing the whole
    read: it may or may not be the policy's, so it can block a decrease but never justifies a scale-out."""
    readings = describe_alarm_states(cloudwatch, {*remembered, *rule.names})
    for prefix in rule.prefixes:
        readings.update(_describe(cloudwatch, AlarmNamePrefix=prefix))
    if rule.tags:
        if rule.tag_name_prefixes:
            for prefix in rule.tag_name_prefixes:
                readings.update(_describe(cloudwatch, AlarmNamePrefix=prefix))
        else:
            for state in ("ALARM", "INSUFFICIENT_DATA"):
                readings.update(_describe(cloudwatch, StateValue=state))
    out = []
    for reading in sorted(readings.values(), key=lambda r: r.name):
        alarm_tags = None
        if rule.tags and not rule.matches(reading.name, None):
            try:
                alarm_tags = tags.tags(cloudwatch, reading.arn)
            except (ClientError, BotoCoreError):
                if uncertain is None:
                    raise
                uncertain.append(AlarmMemory(name=reading.name, state=reading.state, changed_at=reading.changed_at))
                continue
        if rule.matches(reading.name, alarm_tags):
            out.append(AlarmMemory(name=reading.name, state=reading.state, changed_at=reading.changed_at))
    return out
