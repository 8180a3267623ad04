"""What every Reflex state machine is made of (promotion, shard moves, drills, failover): a Standard workflow
whose tasks invoke one Reflex function (execution history kept 90 days by Step Functions), every event logged with
its data to a log group encrypted with its own KMS key, X-Ray tracing on, and an alarm that notifies when an
execution fails.

`build_standard_workflow` adds the parts to the construct it is given, under fixed ids (`LogsKey`, the log group's
id, `StateMachine`, `FailedAlarm`), so each caller's logical ids stay what they were before the parts moved here.
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
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from reflex_constructs.nag_acknowledgements import acknowledge, wildcard_resource_rule


@dataclass(frozen=True)
class StandardWorkflowSpec:
    name: str  # the machine's fixed name: functions get its ARN without depending on the machine
    definition: dict[str, Any]  # the very document the tests and the simulator run
    function_arn: str  # the one function its tasks invoke (unqualified: never a version or alias)
    topic: sns.ITopic  # where the failed alarm notifies
    comment: str
    failed_description: str
    log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS
    log_id: str = "Logs"


@dataclass(frozen=True)
class StandardWorkflowParts:
    key: kms.Key
    log_group_name: str
    log_group: logs.LogGroup
    state_machine: sfn.StateMachine
    failed_alarm: cloudwatch.Alarm


def build_standard_workflow(scope: Construct, spec: StandardWorkflowSpec) -> StandardWorkflowParts:
    stack = Stack.of(scope)
    log_group_name = f"/aws/vendedlogs/states/{spec.name}"
    key = kms.Key(scope, "LogsKey", description=f"Encrypts the logs of the {spec.name} state machine",
                  enable_key_rotation=True, removal_policy=RemovalPolicy.DESTROY, pending_window=Duration.days(7))
    # CloudWatch Logs encrypts with the key for this log group only (encryption context condition).
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
    log_group = logs.LogGroup(scope, spec.log_id, log_group_name=log_group_name, encryption_key=key,
                              retention=spec.log_retention, removal_policy=RemovalPolicy.DESTROY)
    machine = sfn.StateMachine(
        scope, "StateMachine",
        state_machine_name=spec.name,
        state_machine_type=sfn.StateMachineType.STANDARD,
        definition_body=sfn.DefinitionBody.from_string(json.dumps(spec.definition)),
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
        tracing_enabled=True,
        comment=spec.comment,
    )
    # cfn-lint W3005: as for the functions, CDK makes the machine DependsOn its role (redundant with the RoleArn
    # GetAtt) and its default policy (needed: the machine must not run before it may invoke).
    cfn_machine = machine.node.default_child
    assert isinstance(cfn_machine, CfnResource)
    cfn_machine.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
    # The definition is a string, so CDK cannot see the tasks: grant exactly the one function.
    machine.add_to_role_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[spec.function_arn]))
    acknowledge(machine.role, wildcard_resource_rule(scope, "*"),
                "Step Functions logging (logs:CreateLogDelivery, GetLogDelivery, UpdateLogDelivery, "
                "DeleteLogDelivery, ListLogDeliveries, PutResourcePolicy, DescribeResourcePolicies, "
                "DescribeLogGroups) and X-Ray tracing (xray:PutTraceSegments, PutTelemetryRecords, "
                "GetSamplingRules, GetSamplingTargets) support no resource-level permissions.")
    # A failed execution (rolled back, refused, not approved, stuck) is worth a notice.
    alarm = machine.metric_failed(period=Duration.minutes(1), statistic="Sum").create_alarm(
        scope, "FailedAlarm", alarm_name=f"{spec.name}-failed", alarm_description=spec.failed_description,
        threshold=0, comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
    alarm.add_alarm_action(cloudwatch_actions.SnsAction(spec.topic))
    return StandardWorkflowParts(key, log_group_name, log_group, machine, alarm)
