"""The shard move state machine: Standard, one execution per move, every event logged (KMS-encrypted log group),
X-Ray on; a failed execution (a rolled-back or stuck move) notifies. The definition is
`shards.workflow_definition.move_definition(<shard function ARN>)`, the document the tests run."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from constructs import Construct

from reflex_constructs.notifications import Notifications
from reflex_constructs.standard_workflow import StandardWorkflowSpec, build_standard_workflow
from shards.workflow_definition import move_definition


def state_machine_name(stage: str) -> str:
    return f"reflex-{stage}-shard-moves"


def state_machine_arn(scope: Construct, stage: str) -> str:
    return Stack.of(scope).format_arn(service="states", resource="stateMachine",
                                      resource_name=state_machine_name(stage), arn_format=ArnFormat.COLON_RESOURCE_NAME)


@dataclass(frozen=True)
class ShardsWorkflowProps:
    stage: str
    function_arn: str
    notifications: Notifications


class ShardsWorkflow(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ShardsWorkflowProps) -> None:
        super().__init__(scope, construct_id)
        self.name = state_machine_name(props.stage)
        parts = build_standard_workflow(self, StandardWorkflowSpec(
            name=self.name, definition=move_definition(props.function_arn), function_arn=props.function_arn,
            topic=props.notifications.topic, comment="Reflex shard move",
            failed_description="A shard move ended without completing (rolled back or stuck); see the audit trail "
                               "and docs/runbooks/shards.md."))
        self.log_group = parts.log_group
        self.state_machine = parts.state_machine
        self.failed_alarm = parts.failed_alarm
