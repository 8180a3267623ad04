"""The promotion state machine: a Standard workflow (execution history kept 90 days by Step Functions),
every event logged with its data to a KMS-encrypted log group, X-Ray tracing on (`standard_workflow.py`).

The definition is `promoter.workflow_definition.promotion_definition(<promoter function ARN>)`, the very
document the tests and the simulator run. The machine has a fixed name, `reflex-<stage>-promotion`, so
the promoter function can be given its ARN without the function depending on the machine (whose
definition depends on the function).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_logs as logs
from constructs import Construct

from promoter.workflow_definition import promotion_definition
from reflex_constructs.notifications import Notifications
from reflex_constructs.standard_workflow import StandardWorkflowSpec, build_standard_workflow


def state_machine_name(stage: str) -> str:
    return f"reflex-{stage}-promotion"


def state_machine_arn(scope: Construct, stage: str) -> str:
    return Stack.of(scope).format_arn(service="states", resource="stateMachine",
                                      resource_name=state_machine_name(stage), arn_format=ArnFormat.COLON_RESOURCE_NAME)


def execution_arns(scope: Construct, stage: str) -> str:
    """Every execution of the machine (StopExecution / DescribeExecution act on executions)."""
    return Stack.of(scope).format_arn(service="states", resource="execution",
                                      resource_name=f"{state_machine_name(stage)}:*",
                                      arn_format=ArnFormat.COLON_RESOURCE_NAME)


@dataclass(frozen=True)
class PromotionWorkflowProps:
    stage: str
    function_arn: str
    notifications: Notifications
    log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS
    # Another workflow of the same shape (a Standard machine whose tasks are one function, e.g. the drill
    # workflow, recovery_drills.py): its fixed name, its definition, what its failed alarm says.
    name: str | None = None
    definition: dict[str, Any] | None = None
    comment: str = "Reflex blue/green promotion"
    failed_description: str = ("A promotion ended without completing (rolled back, refused, or failed); see the "
                               "audit trail and docs/runbooks/promotion.md.")


class PromotionWorkflow(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: PromotionWorkflowProps) -> None:
        super().__init__(scope, construct_id)
        self.name = props.name or state_machine_name(props.stage)
        parts = build_standard_workflow(self, StandardWorkflowSpec(
            name=self.name, definition=props.definition or promotion_definition(props.function_arn),
            function_arn=props.function_arn, topic=props.notifications.topic, comment=props.comment,
            failed_description=props.failed_description, log_retention=props.log_retention))
        self.key = parts.key
        self.log_group_name = parts.log_group_name
        self.log_group = parts.log_group
        self.state_machine = parts.state_machine
        self.failed_alarm = parts.failed_alarm
