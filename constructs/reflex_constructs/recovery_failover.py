"""Regional failover (only when `recovery.failover` is configured): the failover function (its DLQ, kill switch,
health alarms, console function URL), the failover state machine (approval gate, pre-checks, promote, Route 53,
verify; `failover.workflow_definition`), and least-privilege IAM:

* rds:SwitchoverGlobalCluster / FailoverGlobalCluster on the configured global clusters and their member clusters
  (the original primary in the stage's region, the configured secondary) only;
* rds:DescribeGlobalClusters on those global clusters; rds:DescribeDBClusters on those member clusters;
  rds:DescribeDBInstances on the instances of the two regions (instance ids are not in the config: `db:*`);
* cloudwatch:GetMetricStatistics (no resource type: Resource "*") for the replication lag;
* route53:ListResourceRecordSets on the configured hosted zones; route53:ChangeResourceRecordSets on them, only
  for the configured record names and types, only CREATE and DELETE (the atomic role swap);
  route53:GetHealthCheckStatus on health checks (their ids are read from the records: `healthcheck/*`);
* states:StartExecution and the callbacks on the failover state machine; DescribeExecution on its executions.

Pure mappings (`failover_policy_statements`) are tested without synthesizing.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from failover.workflow_definition import failover_definition
from reflex_constructs.nag_acknowledgements import acknowledge_wildcard_statements
from reflex_constructs.reaction_function import ReactionFunction, ReactionFunctionProps, StageResources
from reflex_constructs.standard_workflow import StandardWorkflowSpec, build_standard_workflow
from reflex_core.recovery_config import Failover, Recovery

REACTION = "failover"


def state_machine_name(stage: str) -> str:
    return f"reflex-{stage}-failover"


@dataclass(frozen=True)
class RecoveryFailoverProps:
    shared: StageResources
    recovery: Recovery
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR


def _record_name(target: Failover) -> str:
    """The record name as Route 53's NormalizedRecordNames condition key sees it: lower case, no trailing dot."""
    assert target.record_name is not None
    return target.record_name.lower().rstrip(".")


def _executions_of(state_machine_arn: str) -> str:
    """Every execution of the machine: `...:stateMachine:<name>` -> `...:execution:<name>:*`."""
    head, _, name = state_machine_arn.rpartition(":stateMachine:")
    return f"{head}:execution:{name}:*"


def failover_policy_statements(stack: Stack, recovery: Recovery, state_machine_arn: str) -> list[iam.PolicyStatement]:
    partition, account = stack.partition, stack.account
    global_arns = sorted({f"arn:{partition}:rds::{account}:global-cluster:{f.global_cluster}"
                          for f in recovery.failover})
    members: set[str] = set()
    regions: set[str] = {stack.region}
    for target in recovery.failover:
        resource = recovery.resource(target.resource)
        assert resource is not None
        members.add(stack.format_arn(service="rds", resource="cluster", resource_name=resource.identifier,
                                     arn_format=ArnFormat.COLON_RESOURCE_NAME))
        members.add(target.secondary_cluster_arn)
        regions.add(target.secondary_region)
    clusters = sorted(members)
    statements = [
        iam.PolicyStatement(sid="PromoteGlobalCluster",
                            actions=["rds:FailoverGlobalCluster", "rds:SwitchoverGlobalCluster"],
                            resources=[*global_arns, *clusters]),
        iam.PolicyStatement(sid="ReadGlobalCluster", actions=["rds:DescribeGlobalClusters"], resources=global_arns),
        iam.PolicyStatement(sid="ReadMemberClusters", actions=["rds:DescribeDBClusters"], resources=clusters),
        iam.PolicyStatement(sid="ReadMemberInstances", actions=["rds:DescribeDBInstances"],
                            resources=sorted(f"arn:{partition}:rds:{r}:{account}:db:*" for r in regions)),
        iam.PolicyStatement(sid="ReadReplicationLag", actions=["cloudwatch:GetMetricStatistics"], resources=["*"]),
        iam.PolicyStatement(sid="StartFailovers", actions=["states:StartExecution"], resources=[state_machine_arn]),
        iam.PolicyStatement(sid="CompleteApprovals", actions=["states:SendTaskFailure", "states:SendTaskSuccess"],
                            resources=[state_machine_arn]),
        # Did the run's workflow start, is it still running (a run whose workflow ended no longer holds the
        # global database)?
        iam.PolicyStatement(sid="ReadFailoverExecutions", actions=["states:DescribeExecution"],
                            resources=[_executions_of(state_machine_arn)]),
    ]
    with_dns = [t for t in recovery.failover if t.dns]
    if with_dns:
        zones = sorted({f"arn:{partition}:route53:::hostedzone/{t.hosted_zone_id}" for t in with_dns})
        statements.append(iam.PolicyStatement(sid="ReadFailoverRecords", actions=["route53:ListResourceRecordSets"],
                                              resources=zones))
        for target in with_dns:
            statements.append(iam.PolicyStatement(
                sid=f"SwapFailoverRecords{''.join(p.capitalize() for p in target.name.split('-'))}",
                actions=["route53:ChangeResourceRecordSets"],
                resources=[f"arn:{partition}:route53:::hostedzone/{target.hosted_zone_id}"],
                conditions={"ForAllValues:StringEquals": {
                    "route53:ChangeResourceRecordSetsNormalizedRecordNames": [_record_name(target)],
                    "route53:ChangeResourceRecordSetsRecordTypes": [target.record_type],
                    "route53:ChangeResourceRecordSetsActions": ["CREATE", "DELETE"]}}))
        statements.append(iam.PolicyStatement(sid="ReadRecordHealth", actions=["route53:GetHealthCheckStatus"],
                                              resources=[f"arn:{partition}:route53:::healthcheck/*"]))
    return statements


class RecoveryFailover(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: RecoveryFailoverProps) -> None:
        super().__init__(scope, construct_id)
        stage = props.shared.stage
        stack = Stack.of(self)
        self.state_machine_name = state_machine_name(stage)
        machine_arn = stack.format_arn(service="states", resource="stateMachine",
                                       resource_name=self.state_machine_name,
                                       arn_format=ArnFormat.COLON_RESOURCE_NAME)
        self.function = ReactionFunction(self, "Function", ReactionFunctionProps(
            reaction=REACTION, shared=props.shared, workflow_arn=machine_arn, timeout_s=120,
            description=f"Reflex failover ({stage}): Aurora Global Database switchover/failover behind approval"))
        parts = build_standard_workflow(self, StandardWorkflowSpec(
            name=self.state_machine_name, definition=failover_definition(self.function.function.function_arn),
            function_arn=self.function.function.function_arn, topic=props.shared.notifications.topic,
            comment="Reflex regional failover",
            # Not approved, refused, failed: every failover execution that does not complete deserves a notice.
            failed_description="A regional failover ended without completing (not approved, refused after "
                               "approval, or failed); see the audit trail and docs/runbooks/region-loss.md.",
            log_retention=props.log_retention, log_id="WorkflowLogs"))
        self.key = parts.key
        self.log_group_name = parts.log_group_name
        self.log_group = parts.log_group
        self.state_machine = parts.state_machine
        self.failed_alarm = parts.failed_alarm
        statements = failover_policy_statements(stack, props.recovery, machine_arn)
        policy = iam.Policy(self, "Policy", statements=statements, roles=[self.function.role])
        acknowledge_wildcard_statements(policy, statements, {
            "ReadFailoverExecutions": "Executions of the failover machine only, named after each run (read-only: "
                                      "DescribeExecution).",
            "ReadMemberInstances": "DescribeDBInstances is filtered by the member cluster (db-cluster-id); the "
                                   "instances' ids are not in the config, so the db:* of the two regions, read-only.",
            "ReadReplicationLag": "cloudwatch:GetMetricStatistics has no resource type (Service Authorization "
                                  "Reference): Resource '*' is the only form; read-only.",
            "ReadRecordHealth": "The health check ids are read from the failover records at run time (not in the "
                                "config): healthcheck/* for GetHealthCheckStatus, read-only.",
        })
