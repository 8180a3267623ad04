"""EventBridge Scheduler schedules that invoke a reaction function with a `reflex_schedule` payload.

The payload is the `ScheduleWire` model of `reflex_core.triggers`: name, operation, optional policy and
params, and the scheduler's own `scheduled-time` / `execution-id` (substituted at delivery), which make
each run's idempotency key unique and let a late delivery know when it was due.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from reflex_constructs.reaction_function import ReactionFunction

SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
EXECUTION_ID = "<aws.scheduler.execution-id>"
_MAX_NAME = 64


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    operation: str
    expression: str  # "rate(1 minute)", "cron(0 8 ? * MON-FRI *)"
    timezone: str = "UTC"
    policy: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # A run delivered later than this is dropped to the DLQ: the next run supersedes it.
    max_event_age_s: int = 3600
    retry_attempts: int = 2
    description: str = ""

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "operation": self.operation}
        if self.policy is not None:
            body["policy"] = self.policy
        if self.params:
            body["params"] = self.params
        body["scheduled_time"] = SCHEDULED_TIME
        body["execution_id"] = EXECUTION_ID
        return {"reflex_schedule": body}


class ScheduleGroup(Construct):
    """The stage's schedule group (`reflex-<stage>`), shared by the schedules of every reaction."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: str) -> None:
        super().__init__(scope, construct_id)
        self.group_name = f"reflex-{stage}"
        self.group = scheduler.CfnScheduleGroup(self, "Group", name=self.group_name)


@dataclass(frozen=True)
class ReactionSchedulesProps:
    target: ReactionFunction
    group: ScheduleGroup
    schedules: Sequence[ScheduleSpec]


class ReactionSchedules(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ReactionSchedulesProps) -> None:
        super().__init__(scope, construct_id)
        self._props = props
        self.role = self._build_role()
        self.schedules = [self._build_schedule(spec) for spec in props.schedules]

    def _build_role(self) -> iam.Role:
        stack = Stack.of(self)
        target = self._props.target
        role = iam.Role(
            self, "InvokeRole",
            description=f"EventBridge Scheduler invokes the Reflex {target.reaction} function",
            # Only schedules of this stage's group, in this account, may use the role (confused deputy).
            assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com").with_conditions({
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnLike": {"aws:SourceArn": stack.format_arn(
                    service="scheduler", resource="schedule",
                    resource_name=f"{self._props.group.group_name}/*",
                    arn_format=ArnFormat.SLASH_RESOURCE_NAME)},
            }),
        )
        # The unqualified function ARN only (grant_invoke would add "<arn>:*" for every version).
        role.add_to_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"],
                                               resources=[target.function.function_arn]))
        target.dead_letter_queue.grant_send_messages(role)
        return role

    def _build_schedule(self, spec: ScheduleSpec) -> scheduler.CfnSchedule:
        target = self._props.target
        schedule = scheduler.CfnSchedule(
            self, f"Schedule-{spec.name}",
            name=_schedule_name(f"{target.reaction}-{spec.name}"),
            group_name=self._props.group.group_name,
            description=(spec.description or f"{target.reaction}: {spec.operation} ({spec.name})")[:512],
            schedule_expression=spec.expression,
            schedule_expression_timezone=spec.timezone,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            state="ENABLED",
            target=scheduler.CfnSchedule.TargetProperty(
                arn=target.function.function_arn,
                role_arn=self.role.role_arn,
                input=json.dumps(spec.payload(), sort_keys=True),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_retry_attempts=spec.retry_attempts,
                    maximum_event_age_in_seconds=spec.max_event_age_s,
                ),
                dead_letter_config=scheduler.CfnSchedule.DeadLetterConfigProperty(
                    arn=target.dead_letter_queue.queue_arn),
            ),
        )
        schedule.node.add_dependency(self._props.group.group)
        return schedule


def rate_expression(minutes: int) -> str:
    return f"rate({minutes} minute{'' if minutes == 1 else 's'})"


def _schedule_name(name: str) -> str:
    """Schedule names are at most 64 characters; long ones keep a readable head and a hash."""
    if len(name) <= _MAX_NAME:
        return name
    return f"{name[:_MAX_NAME - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
