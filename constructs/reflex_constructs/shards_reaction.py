"""The shard reaction: its function (in the VPC, reaching the shard databases only), the move workflow, and
exactly the triggers and permissions the config's `sharding` asks for.

* EventBridge rules for the hot-shard alarms (the sets' and the shards' names and prefixes; tag matchers
  take every alarm state change and the function reads the tags), alarm-action permissions, subscriptions
  to the stage's `alarm_topics`, and one rule per ShardAdded source/detail-type.
* A Scheduler schedule `balance_check` (the smallest `balance_check_every_minutes` of the sets).
* Secrets: GetSecretValue on the configured shard secrets only; IAM auth: `rds-db:connect` on the configured
  database users only; Step Functions: StartExecution on the move machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from reflex_constructs.alarm_triggers import AlarmMatcher, AlarmTriggers, AlarmTriggersProps, CustomEventMatcher
from reflex_constructs.nag_acknowledgements import acknowledge, wildcard_resource_rule
from reflex_constructs.reaction_function import ReactionFunction, ReactionFunctionProps, StageResources
from reflex_constructs.reaction_schedules import (
    ReactionSchedules,
    ReactionSchedulesProps,
    ScheduleGroup,
    ScheduleSpec,
    rate_expression,
)
from reflex_constructs.shards_network import ShardsNetwork, ShardsNetworkProps
from reflex_constructs.shards_workflow import ShardsWorkflow, ShardsWorkflowProps, state_machine_arn
from reflex_core.config import ReflexConfig
from reflex_core.sharding_config import IamConnection, SecretConnection, ShardingConfig

REACTION = "shards"


@dataclass(frozen=True)
class ShardsReactionProps:
    shared: StageResources
    config: ReflexConfig
    schedule_group: ScheduleGroup


class ShardsReaction(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ShardsReactionProps) -> None:
        super().__init__(scope, construct_id)
        config = props.config
        sharding = config.sharding
        assert sharding is not None
        machine_arn = state_machine_arn(self, config.stage)
        self.network = (ShardsNetwork(self, "Network", ShardsNetworkProps(stage=config.stage, sharding=sharding))
                        if sharding.vpc is not None else None)
        self.function = ReactionFunction(self, "Function", ReactionFunctionProps(
            reaction=REACTION, shared=props.shared, workflow_arn=machine_arn, memory_mb=1024, timeout_s=300,
            description=f"Reflex shards ({config.stage}): PostgreSQL shard rebalancing",
            vpc=self.network.vpc if self.network else None,
            vpc_subnets=self.network.subnets if self.network else None,
            security_groups=(self.network.functions_group,) if self.network else ()))
        self.workflow = ShardsWorkflow(self, "Workflow", ShardsWorkflowProps(
            stage=config.stage, function_arn=self.function.function.function_arn,
            notifications=props.shared.notifications))
        self.triggers = AlarmTriggers(self, "Triggers", AlarmTriggersProps(
            target=self.function, alarms=shard_alarm_matchers(sharding),
            alarm_topic_arns=[t.arn for t in config.alarm_topics], custom_events=shard_custom_events(sharding)))
        self.schedules = ReactionSchedules(self, "Schedules", ReactionSchedulesProps(
            target=self.function, group=props.schedule_group, schedules=shard_schedules(sharding)))
        self._grant(sharding, machine_arn)

    def _grant(self, sharding: ShardingConfig, machine_arn: str) -> None:
        role = self.function.role
        stack = Stack.of(self)
        secrets = sorted(secret_arns(self, sharding))
        if secrets:
            role.add_to_policy(iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=secrets))
        users = sorted(db_user_arns(self, sharding))
        if users:
            role.add_to_policy(iam.PolicyStatement(actions=["rds-db:connect"], resources=users))
        role.add_to_policy(iam.PolicyStatement(actions=["states:StartExecution"], resources=[machine_arn]))
        if any(m.by_tags for m in shard_alarm_matchers(sharding)):
            alarms = stack.format_arn(service="cloudwatch", resource="alarm", resource_name="*",
                                      arn_format=ArnFormat.COLON_RESOURCE_NAME)
            role.add_to_policy(iam.PolicyStatement(actions=["cloudwatch:ListTagsForResource"], resources=[alarms]))
            acknowledge(role, wildcard_resource_rule(self, alarms),
                        "Alarms matched by tag are not known by name at synth time: the function reads the tags "
                        "of the alarm that fired (read-only).")
        for arn in secrets:
            if arn.endswith("-*"):
                acknowledge(role, wildcard_resource_rule(self, arn),
                            "A secret configured by name: Secrets Manager appends six random characters to its ARN.")


def secret_arns(scope: Construct, sharding: ShardingConfig) -> set[str]:
    out: set[str] = set()
    for sset in sharding.sets:
        for shard in sset.shards:
            c = shard.connection
            if isinstance(c, SecretConnection):
                out.add(c.secret_id if c.secret_id.startswith("arn:") else Stack.of(scope).format_arn(
                    service="secretsmanager", resource="secret", resource_name=f"{c.secret_id}-*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME))
    return out


def db_user_arns(scope: Construct, sharding: ShardingConfig) -> set[str]:
    out: set[str] = set()
    for sset in sharding.sets:
        for shard in sset.shards:
            c = shard.connection
            if isinstance(c, IamConnection):
                out.add(Stack.of(scope).format_arn(service="rds-db", resource="dbuser",
                                                   resource_name=f"{c.resource_id}/{c.user}",
                                                   region=c.region or None,
                                                   arn_format=ArnFormat.COLON_RESOURCE_NAME))
    return out


def shard_alarm_matchers(sharding: ShardingConfig) -> list[AlarmMatcher]:
    out: list[AlarmMatcher] = []
    for sset in sharding.sets:
        matches = [("set-" + sset.name, sset.alarms)] + [(f"shard-{sset.name}-{s.name}", s.alarms)
                                                          for s in sset.shards]
        for name, match in matches:
            if match is None:
                continue
            out.append(AlarmMatcher(name=name, alarm_names=tuple(match.names), alarm_prefixes=tuple(match.prefixes),
                                    by_tags=bool(match.tags), tag_name_prefixes=tuple(match.tag_name_prefixes)))
    return out


def shard_custom_events(sharding: ShardingConfig) -> list[CustomEventMatcher]:
    found = {CustomEventMatcher(source=m.source, detail_type=m.detail_type): None
             for s in sharding.sets for m in s.on_events}
    return list(found)


def shard_schedules(sharding: ShardingConfig) -> list[ScheduleSpec]:
    minutes = [s.balance_check_every_minutes for s in sharding.sets if s.balance_check_every_minutes]
    if not minutes:
        return []
    every = min(minutes)
    return [ScheduleSpec(name="balance-check", operation="balance_check", expression=rate_expression(every),
                         max_event_age_s=max(60, every * 60),
                         description=f"Every {every} min: is every shard set within tolerance? (plans and starts "
                                     "moves when not; logged only when balanced)")]
