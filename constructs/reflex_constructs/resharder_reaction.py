"""The resharder reaction: its function, its alarm and custom-event rules, its periodic check, and IAM scoped to the
configured replication groups.

The resharder's AWS calls (all in `functions/resharder/replication_groups.py`): elasticache:DescribeReplicationGroups
and elasticache:ModifyReplicationGroupShardConfiguration, both on the replication group's ARN
(`arn:<partition>:elasticache:<region>:<account>:replicationgroup:<id>`, the resource type the Service Authorization
Reference lists for them); plus cloudwatch:ListTagsForResource on this account's alarms when a policy matches
alarms by tag. Nothing else, and no Resource "*".
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from reflex_constructs.alarm_triggers import AlarmMatcher, AlarmTriggers, AlarmTriggersProps, CustomEventMatcher
from reflex_constructs.nag_acknowledgements import acknowledge_wildcard_statements
from reflex_constructs.permissions_common import DESCRIBE_ALARMS_REASON, describe_alarms_statements
from reflex_constructs.reaction_function import ReactionFunction, ReactionFunctionProps, StageResources
from reflex_constructs.reaction_schedules import (
    ReactionSchedules,
    ReactionSchedulesProps,
    ScheduleGroup,
    ScheduleSpec,
    rate_expression,
)
from reflex_core.config import ReflexConfig

REACTION = "resharder"
RESHARDER_ACTIONS = ("elasticache:DescribeReplicationGroups", "elasticache:ModifyReplicationGroupShardConfiguration")


@dataclass(frozen=True)
class ResharderReactionProps:
    shared: StageResources
    config: ReflexConfig
    schedule_group: ScheduleGroup


class ResharderReaction(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ResharderReactionProps) -> None:
        super().__init__(scope, construct_id)
        config = props.config
        self.function = ReactionFunction(self, "Function", ReactionFunctionProps(
            reaction=REACTION, shared=props.shared,
            description=f"Reflex resharder ({config.stage}): ElastiCache cluster-mode shards and slots"))
        self.triggers = AlarmTriggers(self, "Triggers", AlarmTriggersProps(
            target=self.function,
            alarms=resharder_alarm_matchers(config),
            alarm_topic_arns=[t.arn for t in config.alarm_topics],
            custom_events=resharder_custom_events(config),
        ))
        self.schedules = ReactionSchedules(self, "Schedules", ReactionSchedulesProps(
            target=self.function, group=props.schedule_group, schedules=resharder_schedules(config)))
        self.policy = self._build_policy(config)

    def _build_policy(self, config: ReflexConfig) -> iam.Policy:
        stack = Stack.of(self)
        statements = [iam.PolicyStatement(
            sid="ReplicationGroups",
            actions=list(RESHARDER_ACTIONS),
            resources=[stack.format_arn(service="elasticache", resource="replicationgroup",
                                        resource_name=p.replication_group, arn_format=ArnFormat.COLON_RESOURCE_NAME)
                       for p in config.resharding],
        )]
        if any(p.add_shards and p.add_shards.alarms.tags for p in config.resharding):
            statements.append(iam.PolicyStatement(
                sid="AlarmTags",
                actions=["cloudwatch:ListTagsForResource"],
                resources=[stack.format_arn(service="cloudwatch", resource="alarm", resource_name="*",
                                            arn_format=ArnFormat.COLON_RESOURCE_NAME)],
            ))
        statements += describe_alarms_statements(stack, [p.add_shards.alarms for p in config.resharding
                                                         if p.add_shards])
        policy = iam.Policy(self, "Policy", statements=statements, roles=[self.function.role])
        acknowledge_wildcard_statements(policy, statements, {
            "ReadAlarmStates": DESCRIBE_ALARMS_REASON,
            "ReplicationGroups": "never a wildcard (one ARN per configured replication group)",
            "AlarmTags": ("A resharding policy matches alarms by tag, so alarm names are unknown in advance; "
                          "read-only tag lookup limited to this account's alarms in this region."),
        })
        return policy


def resharder_alarm_matchers(config: ReflexConfig) -> list[AlarmMatcher]:
    return [
        AlarmMatcher(name=f"resharding-{p.name}", alarm_names=tuple(p.add_shards.alarms.names),
                     alarm_prefixes=tuple(p.add_shards.alarms.prefixes), by_tags=bool(p.add_shards.alarms.tags))
        for p in config.resharding if p.add_shards is not None
    ]


def resharder_custom_events(config: ReflexConfig) -> list[CustomEventMatcher]:
    matchers = {CustomEventMatcher(source=m.source, detail_type=m.detail_type): None
                for policy in config.resharding for m in policy.on_events}
    return list(matchers)


def resharder_schedules(config: ReflexConfig) -> list[ScheduleSpec]:
    minutes = max(5, config.evaluate_every_minutes)
    return [ScheduleSpec(
        name="evaluate", operation="evaluate", expression=rate_expression(minutes),
        max_event_age_s=minutes * 60,
        description=f"Every {minutes} min: add shards while in ALARM, remove when calm, rebalance uneven slots",
    )]
