"""AWS Backup for the protected resources of `recovery:`: a vault encrypted with its own KMS key (optional vault
lock), one plan rule per resource (its cron, retention, continuous backup for PITR where AWS Backup offers it,
a copy to another region's vault) and one selection per resource naming exactly its ARN.

The config-to-infrastructure mapping is in the pure functions below (`resource_arn`, `backup_rules`), testable
without synthesizing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_backup as backup
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from reflex_constructs.nag_acknowledgements import acknowledge
from reflex_core.recovery_config import ProtectedResource, Recovery

# AWS Backup continuous backup (PITR within AWS Backup) covers RDS, Aurora and S3; DynamoDB PITR is a table
# setting (the drills' config check asks for it; the table's owner enables it).
CONTINUOUS_KINDS = frozenset({"aurora-cluster", "rds-instance", "s3-bucket"})
# Continuous backups are kept at most 35 days.
MAX_CONTINUOUS_DAYS = 35


def resource_arn(stack: Stack, resource: ProtectedResource) -> str:
    kind, ident = resource.kind, resource.identifier
    if kind == "aurora-cluster":
        return stack.format_arn(service="rds", resource="cluster", resource_name=ident,
                                arn_format=ArnFormat.COLON_RESOURCE_NAME)
    if kind == "rds-instance":
        return stack.format_arn(service="rds", resource="db", resource_name=ident,
                                arn_format=ArnFormat.COLON_RESOURCE_NAME)
    if kind == "dynamodb-table":
        return stack.format_arn(service="dynamodb", resource="table", resource_name=ident)
    if kind == "s3-bucket":
        return f"arn:{stack.partition}:s3:::{ident}"
    return stack.format_arn(service="elasticache", resource="replicationgroup", resource_name=ident,
                            arn_format=ArnFormat.COLON_RESOURCE_NAME)


def backup_rules(resource: ProtectedResource, vault_name: str, account: str, partition: str) -> dict[str, Any]:
    """The plan rule (CloudFormation shape) of one resource."""
    b = resource.backup
    continuous = b.pitr and resource.kind in CONTINUOUS_KINDS
    rule: dict[str, Any] = {
        "rule_name": f"reflex-{resource.name}",
        "target_backup_vault": vault_name,
        "schedule_expression": f"cron({b.cron})",
        "delete_after_days": min(b.retention_days, MAX_CONTINUOUS_DAYS) if continuous else b.retention_days,
        "enable_continuous_backup": continuous,
    }
    if b.copy_to is not None:
        rule["copy_to_vault_arn"] = (f"arn:{partition}:backup:{b.copy_to.region}:{account}:backup-vault:"
                                     f"{b.copy_to.vault_name}")
        rule["copy_delete_after_days"] = b.copy_to.retention_days or b.retention_days
    return rule


def _rule_property(rule: dict[str, Any]) -> backup.CfnBackupPlan.BackupRuleResourceTypeProperty:
    copies = None
    if "copy_to_vault_arn" in rule:
        copies = [backup.CfnBackupPlan.CopyActionResourceTypeProperty(
            destination_backup_vault_arn=rule["copy_to_vault_arn"],
            lifecycle=backup.CfnBackupPlan.LifecycleResourceTypeProperty(
                delete_after_days=rule["copy_delete_after_days"]))]
    return backup.CfnBackupPlan.BackupRuleResourceTypeProperty(
        rule_name=rule["rule_name"], target_backup_vault=rule["target_backup_vault"],
        schedule_expression=rule["schedule_expression"],
        lifecycle=backup.CfnBackupPlan.LifecycleResourceTypeProperty(delete_after_days=rule["delete_after_days"]),
        enable_continuous_backup=rule["enable_continuous_backup"], copy_actions=copies)


@dataclass(frozen=True)
class RecoveryBackupProps:
    stage: str
    recovery: Recovery


class RecoveryBackup(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: RecoveryBackupProps) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        recovery = props.recovery
        self.key = kms.Key(self, "VaultKey", enable_key_rotation=True,
                           description=f"Reflex {props.stage} backup vault",
                           removal_policy=RemovalPolicy.RETAIN)
        vault_props: dict[str, Any] = {}
        if recovery.vault_lock:
            # Compliance mode after 3 days: until then the lock can be removed; afterwards not even root can.
            vault_props["lock_configuration"] = backup.CfnBackupVault.LockConfigurationTypeProperty(
                min_retention_days=min(r.backup.retention_days for r in recovery.resources),
                changeable_for_days=3)
        self.vault = backup.CfnBackupVault(self, "Vault", backup_vault_name=recovery.vault_name,
                                           encryption_key_arn=self.key.key_arn, **vault_props)
        self.vault.apply_removal_policy(RemovalPolicy.RETAIN)
        self.vault_arn = self.vault.attr_backup_vault_arn
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("backup.amazonaws.com"),
                             description=f"Reflex {props.stage}: AWS Backup backs up and restores (drills)")
        policies = ["AWSBackupServiceRolePolicyForBackup", "AWSBackupServiceRolePolicyForRestores"]
        if any(r.kind == "s3-bucket" for r in recovery.resources):
            policies += ["AWSBackupServiceRolePolicyForS3Backup", "AWSBackupServiceRolePolicyForS3Restore"]
        for policy in policies:
            self.role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name(f"service-role/{policy}"))
            acknowledge(self.role, f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                                   f"{policy}]",
                        "AWS Backup's own service-role policies are what AWS documents for a backup role; the "
                        "selections limit which resources the role is used for to the configured ARNs.")
        rules = [backup_rules(r, recovery.vault_name, stack.account, stack.partition) for r in recovery.resources]
        self.plan = backup.CfnBackupPlan(self, "Plan", backup_plan=backup.CfnBackupPlan.BackupPlanResourceTypeProperty(
            backup_plan_name=f"reflex-{props.stage}-dr", backup_plan_rule=[_rule_property(r) for r in rules]))
        self.plan.add_dependency(self.vault)
        self.selections = []
        for res in recovery.resources:
            selection = backup.CfnBackupSelection(
                self, f"Selection-{res.name}", backup_plan_id=self.plan.attr_backup_plan_id,
                backup_selection=backup.CfnBackupSelection.BackupSelectionResourceTypeProperty(
                    selection_name=f"reflex-{res.name}", iam_role_arn=self.role.role_arn,
                    resources=[resource_arn(stack, res)]))
            self.selections.append(selection)
