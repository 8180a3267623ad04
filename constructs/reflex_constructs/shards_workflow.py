"""The shard move state machine: Standard, one execution per move, every event logged (KMS-encrypted log group),
X-Ray on; a failed execution (a rolled-back or stuck move) notifies. The definition is
`shards.workflow_definition.move_definition(<shard function ARN>)`, the document the tests run."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import ArnFormat, CfnResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from reflex_constructs.nag_acknowledgements import acknowledge, wildcard_resource_rule
from reflex_constructs.notifications import Notifications
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
        stack = Stack.of(self)
        self.name = state_machine_name(props.stage)
        log_group_name = f"/aws/vendedlogs/states/{self.name}"
        key = kms.Key(self, "LogsKey", description=f"Encrypts the logs of the {self.name} state machine",
                      enable_key_rotation=True, removal_policy=RemovalPolicy.DESTROY, pending_window=Duration.days(7))
        key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchLogsForThisLogGroup",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=["kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
                     "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey"],
            resources=["*"],
            conditions={"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                service="logs", resource="log-group", resource_name=log_group_name,
                arn_format=ArnFormat.COLON_RESOURCE_NAME)}},
        ))
        self.log_group = logs.LogGroup(self, "Logs", log_group_name=log_group_name, encryption_key=key,
                                       retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY)
        self.state_machine = sfn.StateMachine(
            self, "StateMachine", state_machine_name=self.name, state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(json.dumps(move_definition(props.function_arn))),
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True, comment="Reflex shard move")
        cfn_machine = self.state_machine.node.default_child
        assert isinstance(cfn_machine, CfnResource)
        # cfn-lint W3005: CDK's redundant DependsOn on the role (see promotion_workflow.py).
        cfn_machine.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        self.state_machine.add_to_role_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"],
                                                                  resources=[props.function_arn]))
        acknowledge(self.state_machine.role, wildcard_resource_rule(self, "*"),
                    "Step Functions logging (logs:CreateLogDelivery, GetLogDelivery, UpdateLogDelivery, "
                    "DeleteLogDelivery, ListLogDeliveries, PutResourcePolicy, DescribeResourcePolicies, "
                    "DescribeLogGroups) and X-Ray tracing (xray:PutTraceSegments, PutTelemetryRecords, "
                    "GetSamplingRules, GetSamplingTargets) support no resource-level permissions.")
        alarm = self.state_machine.metric_failed(period=Duration.minutes(1), statistic="Sum").create_alarm(
            self, "FailedAlarm", alarm_name=f"{self.name}-failed",
            alarm_description="A shard move ended without completing (rolled back or stuck); see the audit trail "
                              "and docs/runbooks/shards.md.",
            threshold=0, comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        alarm.add_alarm_action(cloudwatch_actions.SnsAction(props.notifications.topic))
        self.failed_alarm = alarm
