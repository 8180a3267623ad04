"""On-demand drills for the tests: the dev config with a production-like approval on orders-db and an ElastiCache
resource, the drill workflow run by the local driver (the deployed definition), AWS Backup's on-demand restore
and ElastiCache through Stubber with AWS's documented shapes (moto has neither StartRestoreJob's behaviour nor
ElastiCache snapshot times or member clusters), and an RDS client that fails deletions on demand."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from simulator.drill_world import ACCOUNT, DRILL_SG, PROD_SG, REGION, cluster_arn

ROOT = Path(__file__).resolve().parents[2]
MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:reflex-dev-drill"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:reflex-dev-drills"
RESTORE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/reflex-dev-backup-restore"
VAULT = "reflex-dev-dr"
CACHE_SG = "sg-0c0c0c0c0c0c0c0c1"
CACHE_PROD_SG = "sg-0b0b0b0b0b0b0b0b1"

SESSIONS = {
    "name": "sessions", "kind": "elasticache", "identifier": "sessions",
    "objectives": {"rto_s": 3600, "rpo_s": 86400},
    "backup": {"cron": "0 2 * * ? *", "retention_days": 7},
    "drill": {"cron": "0 7 ? * WED *", "approval": False},
    "isolation": {"subnet_group": "drills-cache", "security_group_ids": [CACHE_SG],
                  "production_subnet_group": "sessions-prod", "production_security_group_ids": [CACHE_PROD_SG]},
}


def drills_config(*, approval: bool = True, timeout_s: int = 600) -> Any:
    """dev.yaml with orders-db's on-demand drills behind an approval and the `sessions` cache drilled."""
    from reflex_core.config import parse_config, read_config_data

    raw = copy.deepcopy(read_config_data(ROOT / "config" / "dev.yaml"))
    orders = raw["recovery"]["resources"][0]
    orders["drill"].update(approval=approval, approval_timeout_s=timeout_s, restore_timeout_s=3600,
                           poll_interval_s=60, cooldown_s=1800)
    raw["recovery"]["resources"].append(copy.deepcopy(SESSIONS))
    return parse_config(raw, "dev.yaml (on-demand drills)")


def recovery_point(resource_arn: str, at: datetime, n: int = 1) -> dict[str, Any]:
    return {"RecoveryPointArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster-snapshot:awsbackup:job-{n:04d}",
            "BackupVaultName": VAULT, "BackupVaultArn": f"arn:aws:backup:{REGION}:{ACCOUNT}:backup-vault:{VAULT}",
            "ResourceArn": resource_arn, "ResourceType": "Aurora", "Status": "COMPLETED", "CreationDate": at}


class OnDemandBackup:
    """The AWS Backup calls of an on-demand Aurora drill, on the drills' BackupStub client (in call order)."""

    def __init__(self, stub: Stubber) -> None:
        self.stub = stub

    def start(self, copy_id: str, points: list[dict[str, Any]], job_id: str = "od-job-1") -> dict[str, Any]:
        """ListRecoveryPointsByBackupVault -> GetRecoveryPointRestoreMetadata -> StartRestoreJob; the overrides
        StartRestoreJob must carry are the expected parameters (the drill network, the drill's name)."""
        self.stub.add_response("list_recovery_points_by_backup_vault", {"RecoveryPoints": points},
                               {"BackupVaultName": VAULT, "ByResourceArn": cluster_arn("orders")})
        latest = max(points, key=lambda p: p["CreationDate"])
        inferred = {"DBClusterIdentifier": "orders", "Engine": "aurora-postgresql", "Port": "5432",
                    "DBSubnetGroupName": "orders-prod", "VpcSecurityGroupIds": f'["{PROD_SG}"]',
                    "AvailabilityZones": '["us-east-1a","us-east-1b"]'}
        self.stub.add_response("get_recovery_point_restore_metadata",
                               {"BackupVaultArn": latest["BackupVaultArn"], "RecoveryPointArn":
                                latest["RecoveryPointArn"], "RestoreMetadata": inferred, "ResourceType": "Aurora"},
                               {"BackupVaultName": VAULT, "RecoveryPointArn": latest["RecoveryPointArn"]})
        metadata = inferred | {"DBClusterIdentifier": copy_id, "DBSubnetGroupName": "drills-isolated",
                               "VpcSecurityGroupIds": f'["{DRILL_SG}"]'}
        self.stub.add_response("start_restore_job", {"RestoreJobId": job_id},
                               {"RecoveryPointArn": latest["RecoveryPointArn"], "Metadata": metadata,
                                "IamRoleArn": RESTORE_ROLE, "IdempotencyToken": ANY, "ResourceType": "Aurora",
                                "CopySourceTagsToRestoredResource": False})
        return latest

    def status(self, job_id: str, status: str, *, started: datetime, point: dict[str, Any] | None = None,
               created: str | None = None, took_s: float = 0, message: str | None = None) -> None:
        job: dict[str, Any] = {"AccountId": ACCOUNT, "RestoreJobId": job_id, "Status": status,
                               "CreationDate": started, "ResourceType": "Aurora",
                               "SourceResourceArn": cluster_arn("orders")}
        if point is not None:
            job["RecoveryPointArn"] = point["RecoveryPointArn"]
            job["RecoveryPointCreationDate"] = point["CreationDate"]
        if created:
            job["CreatedResourceArn"] = created
        if status == "COMPLETED":
            job["CompletionDate"] = started + timedelta(seconds=took_s)
        if message:
            job["StatusMessage"] = message
        self.stub.add_response("describe_restore_job", job, {"RestoreJobId": job_id})


class CacheStub:
    """ElastiCache through Stubber: the production group `sessions`, its snapshots, the drill's copy."""

    def __init__(self, session: Any) -> None:
        self.client = session.client("elasticache", region_name=REGION)
        self.stub = Stubber(self.client)
        self.stub.activate()

    @staticmethod
    def group(group_id: str, status: str = "available") -> dict[str, Any]:
        return {"ReplicationGroupId": group_id, "Status": status, "MemberClusters": [f"{group_id}-001"],
                "ARN": f"arn:aws:elasticache:{REGION}:{ACCOUNT}:replicationgroup:{group_id}",
                "NodeGroups": [{"NodeGroupId": "0001", "Status": status, "PrimaryEndpoint": {
                    "Address": f"{group_id}.abc123.ng.0001.use1.cache.amazonaws.com", "Port": 6379}}]}

    def describe(self, group_id: str, status: str = "available") -> None:
        self.stub.add_response("describe_replication_groups", {"ReplicationGroups": [self.group(group_id, status)]},
                               {"ReplicationGroupId": group_id})

    def missing(self, group_id: str) -> None:
        self.stub.add_client_error("describe_replication_groups", "ReplicationGroupNotFoundFault",
                                   f"Replication group {group_id} not found.", 404,
                                   expected_params={"ReplicationGroupId": group_id})

    def snapshots(self, taken: list[datetime]) -> None:
        snaps = [{"SnapshotName": f"sessions-{t:%Y%m%d%H%M}", "ReplicationGroupId": "sessions",
                  "SnapshotStatus": "available", "SnapshotSource": "automated", "CacheNodeType": "cache.t4g.small",
                  "Engine": "redis", "EngineVersion": "7.1", "NumNodeGroups": 1,
                  "ARN": f"arn:aws:elasticache:{REGION}:{ACCOUNT}:snapshot:sessions-{t:%Y%m%d%H%M}",
                  "NodeSnapshots": [{"CacheClusterId": "sessions-001", "SnapshotCreateTime": t}]} for t in taken]
        self.stub.add_response("describe_snapshots", {"Snapshots": snaps}, {"ReplicationGroupId": "sessions"})

    def create(self, copy_id: str, snapshot_name: str) -> None:
        self.stub.add_response("create_replication_group", {"ReplicationGroup": self.group(copy_id, "creating")}, {
            "ReplicationGroupId": copy_id, "ReplicationGroupDescription": ANY, "SnapshotName": snapshot_name,
            "CacheSubnetGroupName": "drills-cache", "SecurityGroupIds": [CACHE_SG], "Tags": ANY,
            "CacheNodeType": "cache.t4g.small", "Engine": "redis", "EngineVersion": "7.1"})

    def placement(self, group_id: str, subnet_group: str, sgs: list[str]) -> None:
        self.describe(group_id)
        self.stub.add_response("describe_cache_clusters", {"CacheClusters": [{
            "CacheClusterId": f"{group_id}-001", "CacheClusterStatus": "available",
            "CacheSubnetGroupName": subnet_group, "ReplicationGroupId": group_id,
            "SecurityGroups": [{"SecurityGroupId": sg, "Status": "active"} for sg in sgs]}]},
            {"CacheClusterId": f"{group_id}-001"})

    def delete(self, copy_id: str) -> None:
        self.stub.add_response("delete_replication_group", {"ReplicationGroup": self.group(copy_id, "deleting")},
                               {"ReplicationGroupId": copy_id, "RetainPrimaryCluster": False})


class FlakyRds:
    """The moto RDS client, except that the next `failures` DeleteDBCluster calls fail as AWS may."""

    def __init__(self, real: Any, failures: int) -> None:
        self._real, self.failures, self.deletes = real, failures, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def delete_db_cluster(self, **kwargs: Any) -> Any:
        self.deletes += 1
        if self.failures > 0:
            self.failures -= 1
            raise ClientError({"Error": {"Code": "InvalidDBClusterStateFault",
                                         "Message": "DB cluster is not in an available state"}}, "DeleteDBCluster")
        return self._real.delete_db_cluster(**kwargs)
