"""Restore drills: AWS Backup restore testing plans and selections for every drilled resource it covers, the drills
function (its DLQ, kill switch, health alarms), the EventBridge rule on those plans' restore jobs reaching
COMPLETED or FAILED, the hourly `check_drills` schedule, IAM for what the function reads and reports, and the
alarms on the drills' own metrics (objective missed, validation failed, copy not isolated, no successful drill
for too long, copy left over).

On-demand drills (console `start_drill`): the drill state machine `reflex-<stage>-drill`, whose tasks are the
drills function (definition: drills.drill_workflow.drill_definition), and what its steps need beyond reading:
StartRestoreJob on the vault's recovery points with the AWS Backup role passed to AWS Backup only, ElastiCache's
own restore, and deletions, all limited to copies whose names start with the drill prefix.

Pure mappings (`restore_testing_plan_props`, `restore_metadata_overrides`, `drill_rule_pattern`) are tested
without synthesizing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_backup as backup
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from constructs import Construct

from drills.drill_workflow import drill_definition
from reflex_constructs.alarm_triggers import pinned_pattern
from reflex_constructs.nag_acknowledgements import acknowledge_wildcard_statements
from reflex_constructs.promotion_workflow import PromotionWorkflow, PromotionWorkflowProps
from reflex_constructs.reaction_function import (
    METRICS_NAMESPACE,
    ReactionFunction,
    ReactionFunctionProps,
    StageResources,
)
from reflex_constructs.reaction_schedules import ReactionSchedules, ReactionSchedulesProps, ScheduleGroup, ScheduleSpec
from reflex_constructs.recovery_backup import RecoveryBackup, resource_arn
from reflex_core.recovery_config import BACKUP_RESOURCE_TYPE, ProtectedResource, Recovery, max_backup_gap_s

REACTION = "drills"
RESTORE_ROLE_ENV = "REFLEX_RESTORE_ROLE_ARN"  # drills.on_demand_reaction.RESTORE_ROLE_ENV


def drill_machine_name(stage: str) -> str:
    return f"reflex-{stage}-drill"
# Restore jobs have no resource type in IAM: these two actions take Resource "*".
RECOVERY_UNSCOPED_ACTIONS = frozenset({"backup:DescribeRestoreJob", "backup:PutRestoreValidationResult"})


def restore_metadata_overrides(resource: ProtectedResource) -> dict[str, str]:
    """Where restore testing puts the copy: the drill network, never production's (keys as AWS documents them)."""
    iso = resource.isolation
    if resource.kind in ("aurora-cluster", "rds-instance"):
        overrides = {"dbsubnetgroupname": iso.subnet_group or "",
                     "vpcsecuritygroupids": json.dumps(iso.security_group_ids)}
        return {k: v for k, v in overrides.items() if v and v != "[]"}
    return {}


def restore_testing_plan_props(resource: ProtectedResource, vault_arn: str) -> dict[str, Any]:
    drill = resource.drill
    assert drill is not None
    continuous = resource.backup.pitr and resource.kind in ("aurora-cluster", "rds-instance", "s3-bucket")
    return {
        "restore_testing_plan_name": f"reflex_{resource.name.replace('-', '_')}",
        "schedule_expression": f"cron({drill.cron})",
        "start_window_hours": drill.start_window_hours,
        "recovery_point_selection": backup.CfnRestoreTestingPlan.RestoreTestingRecoveryPointSelectionProperty(
            algorithm="LATEST_WITHIN_WINDOW" if drill.recovery_point == "latest" else "RANDOM_WITHIN_WINDOW",
            include_vaults=[vault_arn],
            recovery_point_types=["CONTINUOUS", "SNAPSHOT"] if continuous else ["SNAPSHOT"],
            selection_window_days=drill.lookback_days),
    }


def drill_rule_pattern(plan_arns: list[str]) -> dict[str, Any]:
    return {"source": ["aws.backup"], "detail-type": ["Restore Job State Change"],
            "detail": {"status": ["COMPLETED", "FAILED"], "restoreTestingPlanArn": plan_arns}}


@dataclass(frozen=True)
class RecoveryDrillsProps:
    shared: StageResources
    recovery: Recovery
    schedule_group: ScheduleGroup
    backups: RecoveryBackup


class RecoveryDrills(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: RecoveryDrillsProps) -> None:
        super().__init__(scope, construct_id)
        stage = self._stage = props.shared.stage
        recovery = props.recovery
        stack = Stack.of(self)
        on_demand = [r for r in recovery.resources if r.drill is not None]
        self.machine_arn = stack.format_arn(service="states", resource="stateMachine",
                                            resource_name=drill_machine_name(stage),
                                            arn_format=ArnFormat.COLON_RESOURCE_NAME) if on_demand else ""
        self.function = ReactionFunction(self, "Function", ReactionFunctionProps(
            reaction=REACTION, shared=props.shared, timeout_s=300, workflow_arn=self.machine_arn,
            description=f"Reflex drills ({stage}): validates restore testing copies, on-demand drills, RTO/RPO"))
        self.workflow: PromotionWorkflow | None = None
        if on_demand:
            # The on-demand drill workflow: its tasks are this function (one Standard machine per stage).
            self.workflow = PromotionWorkflow(self, "Workflow", PromotionWorkflowProps(
                stage=stage, function_arn=self.function.function.function_arn,
                notifications=props.shared.notifications, name=drill_machine_name(stage),
                definition=drill_definition(self.function.function.function_arn),
                comment="Reflex on-demand restore drill",
                failed_description="An on-demand drill did not pass (not approved, restore or validation failed, "
                                   "or its copy could not be deleted); see the audit trail and "
                                   "docs/runbooks/drills.md."))
            self.function.function.add_environment(RESTORE_ROLE_ENV, props.backups.role.role_arn)
        drilled = [r for r in recovery.resources if r.drill is not None and r.restore_testing]
        self.plans: dict[str, backup.CfnRestoreTestingPlan] = {}
        for res in drilled:
            plan = backup.CfnRestoreTestingPlan(self, f"Plan-{res.name}",
                                                **restore_testing_plan_props(res, props.backups.vault_arn))
            assert res.drill is not None
            selection = backup.CfnRestoreTestingSelection(
                self, f"Selection-{res.name}",
                iam_role_arn=props.backups.role.role_arn,
                protected_resource_type=BACKUP_RESOURCE_TYPE[res.kind],
                restore_testing_plan_name=plan.restore_testing_plan_name,
                restore_testing_selection_name=f"reflex_{res.name.replace('-', '_')}",
                protected_resource_arns=[resource_arn(Stack.of(self), res)],
                restore_metadata_overrides=restore_metadata_overrides(res) or None,
                validation_window_hours=res.drill.validation_window_hours)
            selection.add_dependency(plan)
            self.plans[res.name] = plan
        if self.plans:
            self.rule = events.Rule(self, "RestoreJobs", description=f"Reflex {stage}: restore testing jobs",
                                    event_pattern=pinned_pattern(self, drill_rule_pattern(
                                        [p.attr_restore_testing_plan_arn for p in self.plans.values()])),
                                    targets=[self.function.event_target()])
        self.schedules = ReactionSchedules(self, "Schedules", ReactionSchedulesProps(
            target=self.function, group=props.schedule_group, schedules=[ScheduleSpec(
                name="check", operation="check_drills", expression="rate(1 hour)", max_event_age_s=3600,
                description="Hourly: age of the last successful drill per resource, leftover drill copies")]))
        self._permissions(recovery)
        if on_demand:
            self._on_demand_permissions(recovery, on_demand, props.backups)
        self.alarms = self._alarms(stage, recovery, props.shared)

    def _permissions(self, recovery: Recovery) -> None:
        stack = Stack.of(self)
        rds_arns: list[str] = []
        for res in recovery.resources:
            if res.kind in ("aurora-cluster", "rds-instance"):
                rds_arns.append(resource_arn(stack, res))
        statements = [
            iam.PolicyStatement(sid="RestoreJobs", actions=sorted(RECOVERY_UNSCOPED_ACTIONS), resources=["*"]),
        ]
        if rds_arns:
            # The copies restore testing makes have names AWS chooses: the cluster and db wildcards cover them.
            copies = [stack.format_arn(service="rds", resource="cluster", resource_name="*",
                                       arn_format=ArnFormat.COLON_RESOURCE_NAME),
                      stack.format_arn(service="rds", resource="db", resource_name="*",
                                       arn_format=ArnFormat.COLON_RESOURCE_NAME)]
            statements += [
                iam.PolicyStatement(sid="DescribeDatabases", actions=["rds:DescribeDBClusters",
                                                                      "rds:DescribeDBInstances"], resources=copies),
                iam.PolicyStatement(sid="DataApi", actions=["rds-data:ExecuteStatement"], resources=copies),
            ]
            secrets = sorted({r.secret_arn for r in recovery.resources if r.secret_arn})
            if secrets:
                statements.append(iam.PolicyStatement(sid="CheckSecrets", actions=["secretsmanager:GetSecretValue"],
                                                      resources=secrets))
        tables = [r for r in recovery.resources if r.kind == "dynamodb-table"]
        if tables:
            statements.append(iam.PolicyStatement(sid="CountItems", actions=["dynamodb:Scan", "dynamodb:DescribeTable"],
                                                  resources=[stack.format_arn(service="dynamodb", resource="table",
                                                                              resource_name="*")]))
        buckets = [r for r in recovery.resources if r.kind == "s3-bucket"]
        if buckets:
            statements.append(iam.PolicyStatement(sid="CountObjects", actions=["s3:ListBucket"],
                                                  resources=[f"arn:{stack.partition}:s3:::*"]))
        if any(r.kind == "elasticache" for r in recovery.resources):
            statements.append(iam.PolicyStatement(
                sid="DescribeCaches", actions=["elasticache:DescribeReplicationGroups"],
                resources=[stack.format_arn(service="elasticache", resource="replicationgroup", resource_name="*",
                                            arn_format=ArnFormat.COLON_RESOURCE_NAME)]))
        policy = iam.Policy(self, "Policy", statements=statements, roles=[self.function.role])
        acknowledge_wildcard_statements(policy, statements, {
            "RestoreJobs": "backup:DescribeRestoreJob and PutRestoreValidationResult take a restore job id, which "
                           "has no resource type in IAM: Resource '*' is the only form.",
            "DescribeDatabases": "Restore testing names each copy itself (awsbackup-restore-test-...): the drill "
                                 "reads the copy's and production's placement, read-only.",
            "DataApi": "The validation queries run on copies whose names AWS Backup chooses; the statements are "
                       "read-only SELECTs (refused otherwise at synth time).",
            "CountItems": "A DynamoDB restore creates a table named by the restore: the drill counts its items "
                          "and production's, read-only.",
            "CountObjects": "An S3 restore targets a bucket named by the restore: the drill lists it, read-only.",
            "DescribeCaches": "A cache drill's copy has a name chosen per drill: describe only, to find leftovers.",
        })

    def _on_demand_permissions(self, recovery: Recovery, drilled: list[ProtectedResource],
                               backups: RecoveryBackup) -> None:
        """What the drill workflow's steps do: start the workflow and answer its approval wait; start restores
        from the vault's recovery points; ElastiCache's own restore; delete copies (drill-prefixed names only)."""
        stack = Stack.of(self)
        def prefixes(*kinds: str) -> list[str]:
            """The drill prefixes of the drilled resources of these kinds (each copy is named with its own)."""
            return sorted({r.isolation.name_prefix for r in drilled if r.kind in kinds})

        def arns(service: str, resource: str, kinds: tuple[str, ...],
                 sep: ArnFormat = ArnFormat.COLON_RESOURCE_NAME) -> list[str]:
            return [stack.format_arn(service=service, resource=resource, resource_name=f"{p}*", arn_format=sep)
                    for p in prefixes(*kinds)]

        statements = [
            iam.PolicyStatement(sid="StartDrills", actions=["states:StartExecution"], resources=[self.machine_arn]),
            iam.PolicyStatement(sid="AnswerDrillApprovals", actions=["states:SendTaskFailure",
                                                                     "states:SendTaskSuccess"],
                                resources=[self.machine_arn]),
            # Is the drill in flight still running (a stopped or dead one no longer blocks the next)?
            iam.PolicyStatement(sid="ReadDrillExecutions", actions=["states:DescribeExecution"],
                                resources=[stack.format_arn(service="states", resource="execution",
                                                            resource_name=f"{drill_machine_name(self._stage)}:*",
                                                            arn_format=ArnFormat.COLON_RESOURCE_NAME)]),
        ]
        backed_up = [r for r in drilled if r.restore_testing]
        if backed_up:
            points = [stack.format_arn(service="backup", resource="recovery-point", resource_name="*",
                                       arn_format=ArnFormat.COLON_RESOURCE_NAME)]
            if any(r.kind in ("aurora-cluster", "rds-instance") for r in backed_up):
                # AWS Backup's recovery points of RDS and Aurora are snapshots named awsbackup:job-...
                points += [stack.format_arn(service="rds", resource="cluster-snapshot", resource_name="awsbackup:*",
                                            arn_format=ArnFormat.COLON_RESOURCE_NAME),
                           stack.format_arn(service="rds", resource="snapshot", resource_name="awsbackup:*",
                                            arn_format=ArnFormat.COLON_RESOURCE_NAME)]
            statements += [
                iam.PolicyStatement(sid="ReadRecoveryPoints", actions=[
                    "backup:DescribeRecoveryPoint", "backup:GetRecoveryPointRestoreMetadata",
                    "backup:ListRecoveryPointsByBackupVault"], resources=[backups.vault_arn]),
                iam.PolicyStatement(sid="StartDrillRestores", actions=["backup:StartRestoreJob"], resources=points),
                # The restore runs as AWS Backup's role, passed to AWS Backup only.
                iam.PolicyStatement(sid="PassRestoreRole", actions=["iam:PassRole"],
                                    resources=[backups.role.role_arn],
                                    conditions={"StringEquals": {"iam:PassedToService": "backup.amazonaws.com"}}),
            ]
        kinds = {r.kind for r in drilled}
        if kinds & {"aurora-cluster", "rds-instance"}:
            statements += [
                iam.PolicyStatement(sid="DeleteDrillClusters", actions=["rds:DeleteDBCluster"],
                                    resources=arns("rds", "cluster", ("aurora-cluster",))),
                iam.PolicyStatement(sid="DeleteDrillInstances", actions=["rds:DeleteDBInstance"],
                                    resources=arns("rds", "db", ("aurora-cluster", "rds-instance"))),
            ]
        if "dynamodb-table" in kinds:
            statements.append(iam.PolicyStatement(sid="DeleteDrillTables", actions=["dynamodb:DeleteTable"],
                                                  resources=arns("dynamodb", "table", ("dynamodb-table",),
                                                                 ArnFormat.SLASH_RESOURCE_NAME)))
        if "s3-bucket" in kinds:
            buckets = [f"arn:{stack.partition}:s3:::{p}*" for p in prefixes("s3-bucket")]
            statements += [
                iam.PolicyStatement(sid="EmptyDrillBuckets", actions=["s3:ListBucketVersions"], resources=buckets),
                iam.PolicyStatement(sid="DeleteDrillBuckets", actions=["s3:DeleteBucket"], resources=buckets),
                iam.PolicyStatement(sid="DeleteDrillObjects", actions=["s3:DeleteObject", "s3:DeleteObjectVersion"],
                                    resources=[f"{b}/*" for b in buckets]),
            ]
        caches = [r for r in drilled if r.kind == "elasticache"]
        if caches:
            snapshot_arns = [stack.format_arn(service="elasticache", resource="snapshot", resource_name="*",
                                              arn_format=ArnFormat.COLON_RESOURCE_NAME)]
            subnet_groups = sorted({r.isolation.subnet_group for r in caches if r.isolation.subnet_group})
            statements += [
                iam.PolicyStatement(sid="ReadCacheSnapshots", actions=["elasticache:DescribeCacheClusters",
                                                                       "elasticache:DescribeSnapshots"],
                                    resources=[*snapshot_arns, stack.format_arn(
                                        service="elasticache", resource="cluster", resource_name="*",
                                        arn_format=ArnFormat.COLON_RESOURCE_NAME)]),
                # Creating a group from a snapshot names the group, its clusters, the snapshot, the drill's subnet
                # group and a parameter group: the group and clusters are drill-prefixed.
                iam.PolicyStatement(sid="RestoreDrillCaches", actions=["elasticache:AddTagsToResource",
                                                                       "elasticache:CreateReplicationGroup"],
                                    resources=arns("elasticache", "replicationgroup", ("elasticache",))
                                    + arns("elasticache", "cluster", ("elasticache",))
                                    + snapshot_arns + [stack.format_arn(
                                        service="elasticache", resource="subnetgroup", resource_name=g,
                                        arn_format=ArnFormat.COLON_RESOURCE_NAME) for g in subnet_groups]
                                    + [stack.format_arn(service="elasticache", resource="parametergroup",
                                                        resource_name="*", arn_format=ArnFormat.COLON_RESOURCE_NAME)]),
                iam.PolicyStatement(sid="DeleteDrillCaches", actions=["elasticache:DeleteReplicationGroup"],
                                    resources=arns("elasticache", "replicationgroup", ("elasticache",))
                                    + arns("elasticache", "cluster", ("elasticache",))),
            ]
        policy = iam.Policy(self, "OnDemandPolicy", statements=statements, roles=[self.function.role])
        acknowledge_wildcard_statements(policy, statements, {
            "ReadDrillExecutions": "Executions of the drill machine only, named after each drill (read-only: "
                                   "whether the drill in flight still runs).",
            "StartDrillRestores": "StartRestoreJob takes the recovery point the operator or the latest-point lookup "
                                  "names; recovery point ids are AWS Backup's, so the vault's points are matched by "
                                  "id wildcard (the copy's name and network are checked before the call).",
            "DeleteDrillClusters": "Drill copies only: the names start with the drill prefix (never production's "
                                   "identifier, refused at synth time and before every deletion).",
            "DeleteDrillInstances": "Drill copies only: the instances of a drill's copy, named with the drill prefix.",
            "DeleteDrillTables": "Drill copies only: tables whose names start with the drill prefix.",
            "EmptyDrillBuckets": "Drill copies only: buckets whose names start with the drill prefix.",
            "DeleteDrillBuckets": "Drill copies only: buckets whose names start with the drill prefix.",
            "DeleteDrillObjects": "Objects of drill-copy buckets only (their names start with the drill prefix).",
            "ReadCacheSnapshots": "Read-only: the latest snapshot of the protected cache and the member clusters of "
                                  "the drill's copy (isolation check); snapshot names are ElastiCache's.",
            "RestoreDrillCaches": "The new group and its clusters are drill-prefixed; the snapshot (automatic, named "
                                  "by ElastiCache) and the default parameter group are only read by the restore.",
            "DeleteDrillCaches": "Drill copies only: replication groups whose ids start with the drill prefix.",
        })

    def _alarms(self, stage: str, recovery: Recovery, shared: StageResources) -> list[cloudwatch.Alarm]:
        action = cloudwatch_actions.SnsAction(shared.notifications.topic)
        alarms = []
        for res in recovery.resources:
            if res.drill is None:
                continue
            max_age_h = res.drill.max_age_hours or 2 * max_backup_gap_s(res.drill.cron) / 3600
            specs = [
                ("ObjectiveMissed", "DrillObjectiveMissed", "Maximum", 0, Duration.hours(1),
                 cloudwatch.TreatMissingData.NOT_BREACHING, f"A drill of {res.name} missed its RTO or RPO."),
                ("Failed", "DrillFailed", "Maximum", 0, Duration.hours(1),
                 cloudwatch.TreatMissingData.NOT_BREACHING, f"A drill of {res.name} failed (restore or validation)."),
                ("NotIsolated", "DrillIsolationViolation", "Maximum", 0, Duration.hours(1),
                 cloudwatch.TreatMissingData.NOT_BREACHING,
                 f"A restored copy of {res.name} shared production's network or name."),
                ("Overdue", "LastSuccessfulDrillAgeHours", "Maximum", max_age_h, Duration.hours(1),
                 cloudwatch.TreatMissingData.BREACHING,
                 f"No successful drill of {res.name} for over {max_age_h:.0f} h (or none yet)."),
                ("Leftover", "LeftoverDrillCopies", "Maximum", 0, Duration.hours(1),
                 cloudwatch.TreatMissingData.NOT_BREACHING,
                 f"A drill copy of {res.name} outlived its validation window; delete it (docs/runbooks/drills.md)."),
            ]
            for suffix, metric_name, statistic, threshold, period, missing, description in specs:
                metric = cloudwatch.Metric(namespace=METRICS_NAMESPACE, metric_name=metric_name,
                                           dimensions_map={"stage": stage, "resource": res.name,
                                                           "service": REACTION},
                                           statistic=statistic, period=period)
                alarm = metric.create_alarm(
                    self, f"{suffix}-{res.name}", alarm_name=f"reflex-{stage}-drill-{res.name}-{suffix.lower()}",
                    alarm_description=description, threshold=threshold, evaluation_periods=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    treat_missing_data=missing)
                alarm.add_alarm_action(action)
                alarms.append(alarm)
        return alarms


def _pattern_kwargs(pattern: dict[str, Any]) -> dict[str, Any]:
    return {"source": pattern["source"], "detail_type": pattern["detail-type"], "detail": pattern["detail"]}

