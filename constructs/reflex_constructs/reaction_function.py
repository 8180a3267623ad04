"""One reaction's Lambda function, its dead-letter queue, kill switch, permissions and health alarms.

Generic: the scaler, and later the invalidator and the promoter, are each one `ReactionFunction`
(handler `<reaction>.handler.lambda_handler` in the shared `functions/` asset) plus their own triggers
and target permissions. The environment is exactly `RuntimeSettings.to_env()`, so a field added to the
runtime settings without a value here fails the synth instead of the first cold start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aws_cdk import ArnFormat, CfnResource, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from reflex_constructs.functions_asset import CONFIG_FILE_NAME
from reflex_constructs.kill_switches import KillSwitches
from reflex_constructs.nag_acknowledgements import acknowledge, wildcard_action_rule, wildcard_resource_rule
from reflex_constructs.notifications import Notifications
from reflex_constructs.operator_access import OperatorAccess
from reflex_constructs.permissions_common import (
    DECISION_DETAIL_TYPE,
    grant_audit_append,
    grant_idempotency,
    grant_put_events,
    grant_state_access,
    state_keys_for,
    vpc_network_statements,
)
from reflex_constructs.reflex_event_bus import ReflexEventBus
from reflex_constructs.tables import ReflexTables
from reflex_core.settings import RuntimeSettings

DEFAULT_EVENT_BUS = "default"
METRICS_NAMESPACE = "Reflex"


@dataclass(frozen=True)
class StageResources:
    """What every reaction of a stage shares; built once by the stack."""

    stage: str
    code: lambda_.Code
    tables: ReflexTables
    notifications: Notifications
    kill_switches: KillSwitches
    # Reserved concurrency per function (config `reserved_concurrency`), overriding each function's default.
    reserved_concurrency: Mapping[str, int] = field(default_factory=dict)
    # The bus the application's events and Reflex's own arrive on (config `event_bus`); None: the default bus.
    event_bus: ReflexEventBus | None = None
    # The operators' entry point (function URLs) and managed policies; None: no function URL is created.
    operator_access: OperatorAccess | None = None

    @property
    def own_source(self) -> str:
        return f"reflex.{self.stage}"

    @property
    def event_bus_name(self) -> str:
        return self.event_bus.event_bus_name if self.event_bus is not None else DEFAULT_EVENT_BUS


@dataclass(frozen=True)
class ReactionFunctionProps:
    reaction: str
    shared: StageResources
    description: str = ""
    memory_mb: int = 256
    timeout_s: int = 60
    log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS
    # Asynchronous invocations (EventBridge, SNS, Scheduler, alarm actions): Lambda retries twice, then
    # parks the event in the DLQ. An event older than an hour describes a situation that has moved on
    # (the evaluator re-reads alarm state every few minutes anyway).
    async_retry_attempts: int = 2
    max_event_age_s: int = 3600
    dlq_retention_days: int = 14
    # Delivery retries of EventBridge rule targets before their DLQ (schedules carry their own, SNS uses
    # its built-in retry policy for Lambda endpoints).
    target_retry_attempts: int = 3
    target_max_event_age_s: int = 3600
    # The state machine the function drives (`RuntimeSettings.workflow_arn`), e.g. the promotion workflow.
    workflow_arn: str = ""
    # Functions that reach Redis run in the VPC (the invalidator, the cache health collector): its subnets and
    # security groups. None: outside any VPC.
    vpc: ec2.IVpc | None = None
    vpc_subnets: ec2.SubnetSelection | None = None
    security_groups: tuple[ec2.ISecurityGroup, ...] = ()
    # Reserved concurrency unless the config names one for this function: Reflex is never starved by other
    # workloads of the account, nor able to run away with its concurrency.
    reserved_concurrency: int = 5
    # Events the function puts besides its own decisions ((source, detail-type) pairs), e.g. the promoter's
    # DeploymentCompleted; its PutEvents permission is limited to exactly these.
    emits: tuple[tuple[str, str], ...] = ()
    # State-table key patterns besides the reaction's own (permissions_common.STATE_KEYS).
    state_keys: tuple[str, ...] = ()
    # An IAM-authenticated function URL for console commands from verified operators (reflex_core.identity).
    console_url: bool = True


class ReactionFunction(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ReactionFunctionProps) -> None:
        super().__init__(scope, construct_id)
        self.props = props
        self.reaction = props.reaction
        shared = props.shared
        self.dead_letter_queue = self._build_dead_letter_queue()
        self.kill_switch = shared.kill_switches.add_reaction(self, props.reaction)
        self.role = self._build_role()
        self.log_group = logs.LogGroup(self, "Logs", retention=props.log_retention)
        self.function = self._build_function()
        self._grant_runtime_access()
        self.function_url: lambda_.FunctionUrl | None = None
        if props.console_url and shared.operator_access is not None:
            self.function_url = shared.operator_access.add_function(self.reaction, self.function)
        self.alarms = self._build_alarms()

    # ------------------------------------------------------------------ wiring used by trigger constructs
    def event_target(self) -> targets.LambdaFunction:
        """An EventBridge rule target for this function, with retries and the DLQ."""
        return targets.LambdaFunction(
            self.function,
            dead_letter_queue=self.dead_letter_queue,
            retry_attempts=self.props.target_retry_attempts,
            max_event_age=Duration.seconds(self.props.target_max_event_age_s),
        )

    # ------------------------------------------------------------------ builders
    def _build_dead_letter_queue(self) -> sqs.Queue:
        return sqs.Queue(
            self, "DeadLetterQueue",
            queue_name=f"reflex-{self.props.shared.stage}-{self.reaction}-dlq",
            # SQS-managed SSE: EventBridge, SNS, Scheduler and Lambda can all deliver to it without
            # a key policy per service (a customer managed key would need one for each).
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(self.props.dlq_retention_days),
        )

    def _build_role(self) -> iam.Role:
        # An explicit role instead of AWSLambdaBasicExecutionRole: logs are granted on this function's
        # own log group only.
        return iam.Role(
            self, "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Reflex {self.props.shared.stage} {self.reaction} function",
        )

    def _build_function(self) -> lambda_.Function:
        props = self.props
        shared = props.shared
        function = lambda_.Function(
            self, "Function",
            function_name=f"reflex-{shared.stage}-{props.reaction}",
            description=props.description or f"Reflex {props.reaction} reaction ({shared.stage})",
            handler=f"{props.reaction}.handler.lambda_handler",
            code=shared.code,
            runtime=lambda_.Runtime.PYTHON_3_14,
            architecture=lambda_.Architecture.ARM_64,
            memory_size=props.memory_mb,
            timeout=Duration.seconds(props.timeout_s),
            tracing=lambda_.Tracing.ACTIVE,
            role=self.role,
            log_group=self.log_group,
            environment=self._environment(),
            dead_letter_queue=self.dead_letter_queue,
            retry_attempts=props.async_retry_attempts,
            max_event_age=Duration.seconds(props.max_event_age_s),
            reserved_concurrent_executions=shared.reserved_concurrency.get(props.reaction,
                                                                           props.reserved_concurrency),
            vpc=props.vpc,
            vpc_subnets=props.vpc_subnets if props.vpc is not None else None,
            security_groups=list(props.security_groups) if props.vpc is not None else None,
        )
        # cfn-lint W3005: CDK makes every function DependsOn its role and the role's default policy (the
        # policy dependency matters: the function must not run before its permissions exist); the role
        # part is redundant with the Role GetAtt. Harmless, so ignored on this resource only.
        cfn_function = function.node.default_child
        assert isinstance(cfn_function, CfnResource)
        cfn_function.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        return function

    def _environment(self) -> dict[str, str]:
        shared = self.props.shared
        settings = RuntimeSettings(
            stage=shared.stage,
            reaction=self.reaction,
            config_file=CONFIG_FILE_NAME,
            audit_table=shared.tables.audit.table_name,
            state_table=shared.tables.state.table_name,
            idempotency_table=shared.tables.idempotency.table_name,
            notify_topic_arn=shared.notifications.topic.topic_arn,
            event_bus_name=shared.event_bus_name,
            kill_switch_prefix=shared.kill_switches.prefix,
            dead_letter_queue_url=self.dead_letter_queue.queue_url,
            workflow_arn=self.props.workflow_arn,
        )
        return {
            **settings.to_env(),
            "POWERTOOLS_SERVICE_NAME": self.reaction,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }

    def _grant_runtime_access(self) -> None:
        shared = self.props.shared
        stack = Stack.of(self)
        self.log_group.grant_write(self.role)
        tables = shared.tables
        grant_audit_append(self.role, tables.audit, self.reaction)
        grant_state_access(self.role, tables.state, state_keys_for(self.reaction, self.props.state_keys))
        grant_idempotency(self.role, tables.idempotency, f"reflex-{shared.stage}-{self.reaction}")
        shared.notifications.topic.grant_publish(self.role)
        acknowledge(self.role, wildcard_action_rule("kms:GenerateDataKey*"),
                    "Publishing to the KMS-encrypted topic needs a data key: grant_publish allows the "
                    "kms:GenerateDataKey* family on the topic's key only (Resource is that key's ARN).")
        bus_arn = (shared.event_bus.event_bus_arn if shared.event_bus is not None else stack.format_arn(
            service="events", resource="event-bus", resource_name=DEFAULT_EVENT_BUS,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME))
        grant_put_events(self.role, bus_arn, [(shared.own_source, DECISION_DETAIL_TYPE), *self.props.emits])
        # The function parks malformed asynchronous events in its DLQ itself (Lambda only parks failures).
        self.dead_letter_queue.grant_send_messages(self.role)
        shared.kill_switches.grant_read(self.role, self.kill_switch)
        if self.props.vpc is not None:
            # Instead of AWSLambdaVPCAccessExecutionRole (logs and network interfaces on "*"): the network
            # interfaces of this VPC, subnets and security groups only (permissions_common.vpc_network_statements).
            subnets = self.props.vpc_subnets.subnets if self.props.vpc_subnets is not None else None
            for statement in vpc_network_statements(
                    self, self.props.vpc.vpc_id, [s.subnet_id for s in subnets or []],
                    [g.security_group_id for g in self.props.security_groups]):
                self.role.add_to_principal_policy(statement)
            acknowledge(self.role, wildcard_resource_rule(self, stack.format_arn(
                service="ec2", resource="network-interface", resource_name="*",
                arn_format=ArnFormat.SLASH_RESOURCE_NAME)),
                        "Lambda creates the function's network interfaces with ids unknown in advance: "
                        "network-interface/* limited by the ec2:Vpc condition to the configured VPC (create also "
                        "names the subnets and security groups).")
        # X-Ray PutTraceSegments/PutTelemetryRecords (added by Tracing.ACTIVE) have no resource-level
        # permissions: the Service Authorization Reference lists no resource type for them.
        acknowledge(self.role, wildcard_resource_rule(self, "*"),
                    "xray:PutTraceSegments and xray:PutTelemetryRecords (active tracing) and, in a VPC, "
                    "ec2:DescribeNetworkInterfaces and ec2:DescribeSubnets support no resource-level permissions, "
                    "so their statements must use Resource '*' (permissions_common.RESOURCE_STAR_ALLOWLIST).")

    def _build_alarms(self) -> list[cloudwatch.Alarm]:
        stage = self.props.shared.stage
        action = cloudwatch_actions.SnsAction(self.props.shared.notifications.topic)
        name = f"reflex-{stage}-{self.reaction}"
        period = Duration.minutes(1)
        specs = [
            ("ErrorsAlarm", f"{name}-errors", self.function.metric_errors(period=period, statistic="Sum"),
             "The function failed (an action failed or the function crashed); see its logs and the DLQ."),
            ("ThrottlesAlarm", f"{name}-throttles", self.function.metric_throttles(period=period, statistic="Sum"),
             "Invocations were throttled; triggers are being delayed or dropped."),
            ("DeadLettersAlarm", f"{name}-dead-letters",
             self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                 period=Duration.minutes(5), statistic="Maximum"),
             "Events that could not be processed are waiting in the dead-letter queue."),
        ]
        alarms = []
        for construct_id, alarm_name, metric, description in specs:
            alarm = metric.create_alarm(
                self, construct_id,
                alarm_name=alarm_name,
                alarm_description=description,
                threshold=0,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(action)
            alarms.append(alarm)
        return alarms
