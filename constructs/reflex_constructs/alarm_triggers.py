"""How alarms and custom events reach a reaction function.

* EventBridge "CloudWatch Alarm State Change" rules, one per alarm matcher, narrowed to the configured
  alarm names and name prefixes. A matcher that selects alarms by tag cannot be narrowed: the event
  carries no tags (the function looks them up with `cloudwatch:ListTagsForResource`), so its rule
  receives every alarm state change of the account and region.
* Resource-based permissions so the configured alarms can invoke the function directly as their alarm
  action (principal `lambda.alarms.cloudwatch.amazonaws.com`, one statement per name or prefix).
* Subscriptions to existing SNS topics that classic alarm notifications are published to.
* One EventBridge rule per custom event (source + detail-type).

Every rule target and subscription retries, then parks the event in the function's DLQ.
Only what the props name is created.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from reflex_constructs.reaction_function import ReactionFunction

ALARM_SOURCE = "aws.cloudwatch"
ALARM_DETAIL_TYPE = "CloudWatch Alarm State Change"
ALARM_ACTION_PRINCIPAL = "lambda.alarms.cloudwatch.amazonaws.com"


@dataclass(frozen=True)
class AlarmMatcher:
    """The alarms one policy reacts to. `by_tags`: it also selects alarms by tag (see module doc)."""

    name: str
    alarm_names: tuple[str, ...] = ()
    alarm_prefixes: tuple[str, ...] = ()
    by_tags: bool = False
    # The name prefixes tag-matched alarms must have (AlarmMatch.tag_name_prefixes): the rule is then narrowed.
    tag_name_prefixes: tuple[str, ...] = ()

    @property
    def catch_all(self) -> bool:
        """The rule must receive every alarm state change (tags decide, and no name bounds them)."""
        return self.by_tags and not self.tag_name_prefixes

    def event_pattern(self) -> dict[str, Any]:
        pattern: dict[str, Any] = {"source": [ALARM_SOURCE], "detail-type": [ALARM_DETAIL_TYPE]}
        if not self.catch_all:
            prefixes = dict.fromkeys((*self.alarm_prefixes, *(self.tag_name_prefixes if self.by_tags else ())))
            pattern["detail"] = {"alarmName": [*self.alarm_names, *({"prefix": p} for p in prefixes)]}
        return pattern


@dataclass(frozen=True)
class CustomEventMatcher:
    source: str
    detail_type: str

    def event_pattern(self) -> dict[str, Any]:
        return {"source": [self.source], "detail-type": [self.detail_type]}


@dataclass(frozen=True)
class AlarmTriggersProps:
    target: ReactionFunction
    alarms: Sequence[AlarmMatcher] = ()
    alarm_topic_arns: Sequence[str] = ()
    custom_events: Sequence[CustomEventMatcher] = ()


class AlarmTriggers(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: AlarmTriggersProps) -> None:
        super().__init__(scope, construct_id)
        self._target = props.target
        self.rules: list[events.Rule] = []
        self._build_alarm_rules(props.alarms)
        self._build_alarm_action_permissions(props.alarms)
        self._build_topic_subscriptions(props.alarm_topic_arns)
        self._build_custom_event_rules(props.custom_events)

    def _build_alarm_rules(self, matchers: Sequence[AlarmMatcher]) -> None:
        built: dict[str, events.Rule] = {}
        for matcher in matchers:
            pattern = matcher.event_pattern()
            # Two tag-based matchers would produce the same catch-all rule (and invoke the function
            # twice for every alarm): identical patterns share one rule.
            key = repr(sorted(pattern.items()))
            if key in built:
                continue
            rule_id = "AnyAlarmRule" if matcher.catch_all else f"AlarmRule-{_safe_id(matcher.name)}"
            description = ("Every alarm state change: a policy matches alarms by tag, which the event lacks (narrow "
                           "it with tag_name_prefixes)" if matcher.catch_all
                           else f"Alarm state changes of the alarms policy {matcher.name} reacts to")
            built[key] = self._build_rule(rule_id, pattern, description)

    def _build_alarm_action_permissions(self, matchers: Sequence[AlarmMatcher]) -> None:
        # Alarms selected only by tag have no name to scope a permission to: they reach the function
        # through EventBridge (or SNS), not as a direct alarm action.
        stack = Stack.of(self)
        patterns = sorted({n for m in matchers for n in m.alarm_names} | {f"{p}*" for m in matchers
                                                                           for p in m.alarm_prefixes})
        for pattern in patterns:
            self._target.function.add_permission(
                f"AlarmAction-{_safe_id(pattern)}",
                principal=iam.ServicePrincipal(ALARM_ACTION_PRINCIPAL),
                action="lambda:InvokeFunction",
                source_account=stack.account,
                source_arn=stack.format_arn(service="cloudwatch", resource="alarm", resource_name=pattern,
                                            arn_format=ArnFormat.COLON_RESOURCE_NAME),
            )

    def _build_topic_subscriptions(self, topic_arns: Sequence[str]) -> None:
        for arn in topic_arns:
            topic = sns.Topic.from_topic_arn(self, f"AlarmTopic-{_safe_id(arn)}", arn)
            topic.add_subscription(subscriptions.LambdaSubscription(
                self._target.function, dead_letter_queue=self._target.dead_letter_queue))

    def _build_custom_event_rules(self, matchers: Sequence[CustomEventMatcher]) -> None:
        # The application's events arrive on the stage's dedicated bus when there is one (config event_bus).
        bus = self._target.props.shared.event_bus
        for matcher in matchers:
            if bus is not None:
                bus.allow_source(matcher.source)
            self._build_rule(f"EventRule-{_safe_id(matcher.source + '-' + matcher.detail_type)}",
                             matcher.event_pattern(),
                             f"{matcher.detail_type} events from {matcher.source}",
                             event_bus=bus.bus if bus is not None else None)

    def _build_rule(self, construct_id: str, pattern: dict[str, Any], description: str,
                    event_bus: events.IEventBus | None = None) -> events.Rule:
        rule = events.Rule(
            self, construct_id,
            description=description[:512],
            event_pattern=pinned_pattern(self, pattern),
            event_bus=event_bus,
            targets=[self._target.event_target()],
        )
        self.rules.append(rule)
        return rule


def pinned_pattern(scope: Construct, pattern: dict[str, Any]) -> events.EventPattern:
    """The rule's pattern with `account` pinned to the stack's: an event put on the bus by another account (through
    a bus policy, or a cross-account target) never triggers a reaction. Every Reflex rule is built with it."""
    return events.EventPattern(
        account=[Stack.of(scope).account],
        source=pattern["source"],
        detail_type=pattern["detail-type"],
        detail=pattern.get("detail"),
    )


def _safe_id(text: str) -> str:
    """A readable, unique construct id for an alarm name, prefix, topic ARN or event name."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:48]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
