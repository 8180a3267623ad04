"""The promotion state machine: a Standard workflow (execution history kept 90 days by Step Functions),
every event logged with its data to a KMS-encrypted log group, X-Ray tracing on.

The definition is `promoter.workflow_definition.promotion_definition(<promoter function ARN>)`, the very
document the tests and the simulator run. The machine has a fixed name, `reflex-<stage>-promotion`, so
the promoter function can be given its ARN without the function depending on the machine (whose
definition depends on the function).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, CfnResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from promoter.workflow_definition import promotion_definition
from reflex_constructs.nag_acknowledgements import acknowledge, wildcard_resource_rule
from reflex_constructs.notifications import Notifications


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
        self._props = props
        self.name = props.name or state_machine_name(props.stage)
        self.log_group_name = f"/aws/vendedlogs/states/{self.name}"
        self.key = self._build_key()
        self.log_group = logs.LogGroup(self, "Logs", log_group_name=self.log_group_name, encryption_key=self.key,
                                       retention=props.log_retention, removal_policy=RemovalPolicy.DESTROY)
        self.state_machine = self._build_state_machine()
        self.failed_alarm = self._build_alarm()

    def _build_key(self) -> kms.Key:
        stack = Stack.of(self)
        key = kms.Key(self, "LogsKey", description=f"Encrypts the logs of the {self.name} state machine",
                      enable_key_rotation=True, removal_policy=RemovalPolicy.DESTROY,
                      pending_window=Duration.days(7))
        # CloudWatch Logs encrypts with the key for this log group only (encryption context condition).
        key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchLogsForThisLogGroup",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=["kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
                     "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey"],
            resources=["*"],
            conditions={"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                service="logs", resource="log-group", resource_name=self.log_group_name,
                arn_format=ArnFormat.COLON_RESOURCE_NAME)}},
        ))
        return key

    def _build_state_machine(self) -> sfn.StateMachine:
        definition = json.dumps(self._props.definition or promotion_definition(self._props.function_arn))
        machine = sfn.StateMachine(
            self, "StateMachine",
            state_machine_name=self.name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(definition),
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True,
            comment=self._props.comment,
        )
        # cfn-lint W3005: as for the functions, CDK makes the machine DependsOn its role (redundant with the
        # RoleArn GetAtt) and its default policy (needed: the machine must not run before it may invoke).
        cfn_machine = machine.node.default_child
        assert isinstance(cfn_machine, CfnResource)
        cfn_machine.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        # The definition is a string, so CDK cannot see the tasks: grant exactly the promoter function
        # (its unqualified ARN: the workflow never calls a version or alias).
        machine.add_to_role_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"],
                                                       resources=[self._props.function_arn]))
        acknowledge(machine.role, wildcard_resource_rule(self, "*"),
                    "Step Functions logging (logs:CreateLogDelivery, GetLogDelivery, UpdateLogDelivery, "
                    "DeleteLogDelivery, ListLogDeliveries, PutResourcePolicy, DescribeResourcePolicies, "
                    "DescribeLogGroups) and X-Ray tracing (xray:PutTraceSegments, PutTelemetryRecords, "
                    "GetSamplingRules, GetSamplingTargets) support no resource-level permissions.")
        return machine

    def _build_alarm(self) -> cloudwatch.Alarm:
        # A rolled-back, refused or failed promotion ends the execution as failed: worth a notice.
        metric = self.state_machine.metric_failed(period=Duration.minutes(1), statistic="Sum")
        alarm = metric.create_alarm(
            self, "FailedAlarm",
            alarm_name=f"{self.name}-failed",
            alarm_description=self._props.failed_description,
            threshold=0, comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cloudwatch_actions.SnsAction(self._props.notifications.topic))
        return alarm
