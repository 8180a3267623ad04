"""The AWS side of an on-demand drill: find the recovery point, start an isolated restore, read its status,
delete the copy. Restore-testing kinds (Aurora, RDS, DynamoDB, S3) go through AWS Backup's StartRestoreJob
with the metadata AWS Backup infers for the recovery point (GetRecoveryPointRestoreMetadata), overridden so
the copy lands in the drill network under the drill's own name; ElastiCache, which restore testing does not
cover, through ElastiCache's own restore (CreateReplicationGroup from the latest snapshot).

Nothing here writes to the production resource: production is only read (its ARN, its snapshots). The copy's
name is fixed before the restore starts (`<isolation.name_prefix><hash>`), so a teardown can always find it,
and `delete_copy` refuses any name that is not a drill copy's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drills.restored_copies import identifier_from_arn, planned_restore_problems
from reflex_core.aws_clients import AwsClients
from reflex_core.recovery_config import BACKUP_RESOURCE_TYPE, ProtectedResource


class DrillRefused(RuntimeError):
    """The drill cannot run as asked (no recovery point, a restore that would not be isolated)."""


def copy_identifier(resource: ProtectedResource, drill_id: str) -> str:
    """The copy's name: the drill prefix and a digest of the drill id (valid for RDS, DynamoDB, S3 and ElastiCache:
    lowercase, starts with a letter, at most 40 characters)."""
    digest = hashlib.sha256(drill_id.encode()).hexdigest()
    return (resource.isolation.name_prefix + digest)[:40]  # the prefix has at most 31 characters


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def production_arn(clients: AwsClients, resource: ProtectedResource) -> str:
    """The protected resource's ARN, read from the service (read only)."""
    kind, ident = resource.kind, resource.identifier
    if kind == "aurora-cluster":
        return str(clients.rds.describe_db_clusters(DBClusterIdentifier=ident)["DBClusters"][0]["DBClusterArn"])
    if kind == "rds-instance":
        return str(clients.rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]["DBInstanceArn"])
    if kind == "dynamodb-table":
        return str(clients.dynamodb.describe_table(TableName=ident)["Table"]["TableArn"])
    if kind == "s3-bucket":
        return f"arn:aws:s3:::{ident}"
    return str(clients.elasticache.describe_replication_groups(ReplicationGroupId=ident)
               ["ReplicationGroups"][0]["ARN"])


def latest_recovery_point(clients: AwsClients, vault: str, source_arn: str) -> dict[str, Any]:
    """The newest COMPLETED recovery point of the resource in the vault."""
    points: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"BackupVaultName": vault, "ByResourceArn": source_arn}
    while True:
        page = clients.backup.list_recovery_points_by_backup_vault(**kwargs)
        points += [p for p in page.get("RecoveryPoints", []) if p.get("Status") == "COMPLETED"]
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    if not points:
        raise DrillRefused(f"recovery_point_arn: no completed recovery point of {source_arn} in vault {vault!r}")
    return max(points, key=lambda p: _ts(p.get("CreationDate")) or 0.0)


def isolated_metadata(resource: ProtectedResource, inferred: dict[str, str], copy_id: str) -> dict[str, str]:
    """The inferred restore metadata with what keeps the copy isolated: its own name, the drill network, never
    publicly accessible."""
    iso = resource.isolation
    meta = dict(inferred)
    if resource.kind in ("aurora-cluster", "rds-instance"):
        meta["DBClusterIdentifier" if resource.kind == "aurora-cluster" else "DBInstanceIdentifier"] = copy_id
        meta["DBSubnetGroupName"] = iso.subnet_group or ""
        meta["VpcSecurityGroupIds"] = json.dumps(iso.security_group_ids)
        if resource.kind == "rds-instance":
            meta["PubliclyAccessible"] = "false"
    elif resource.kind == "dynamodb-table":
        meta["targetTableName"] = copy_id
    elif resource.kind == "s3-bucket":
        meta["DestinationBucketName"] = copy_id
        meta["NewBucket"] = "true"
    return meta


@dataclass
class Started:
    restore_job_id: str
    recovery_point_arn: str
    source_arn: str
    recovery_point_time: float | None


def start_restore(clients: AwsClients, resource: ProtectedResource, *, drill_id: str, copy_id: str, vault: str,
                  role_arn: str, recovery_point_arn: str | None) -> Started:
    """Start the isolated restore; refused (nothing started) when the metadata would not be isolated."""
    source = production_arn(clients, resource)
    if resource.kind == "elasticache":
        return _start_cache_restore(clients, resource, copy_id=copy_id, drill_id=drill_id, source=source,
                                    snapshot_arn=recovery_point_arn)
    if not role_arn:
        raise DrillRefused("REFLEX_RESTORE_ROLE_ARN is not set: the drills function has no role to restore with")
    if recovery_point_arn:
        point = clients.backup.describe_recovery_point(BackupVaultName=vault, RecoveryPointArn=recovery_point_arn)
        if point.get("ResourceArn") != source:
            raise DrillRefused(f"recovery_point_arn: {recovery_point_arn} is a backup of {point.get('ResourceArn')}, "
                               f"not of {resource.name} ({source})")
        if point.get("Status") != "COMPLETED":
            raise DrillRefused(f"recovery_point_arn: {recovery_point_arn} is {point.get('Status')}, not COMPLETED")
    else:
        point = latest_recovery_point(clients, vault, source)
    arn = str(point["RecoveryPointArn"])
    inferred = clients.backup.get_recovery_point_restore_metadata(
        BackupVaultName=vault, RecoveryPointArn=arn).get("RestoreMetadata", {})
    metadata = isolated_metadata(resource, inferred, copy_id)
    problems = planned_restore_problems(resource, metadata)
    if problems:
        raise DrillRefused("the restore would not be isolated: " + "; ".join(problems))
    job = clients.backup.start_restore_job(
        RecoveryPointArn=arn, Metadata=metadata, IamRoleArn=role_arn, IdempotencyToken=drill_id[:128],
        ResourceType=BACKUP_RESOURCE_TYPE[resource.kind], CopySourceTagsToRestoredResource=False)
    return Started(restore_job_id=str(job["RestoreJobId"]), recovery_point_arn=arn, source_arn=source,
                   recovery_point_time=_ts(point.get("CreationDate")))


def _snapshot_time(snapshot: dict[str, Any]) -> float | None:
    times = [_ts(n.get("SnapshotCreateTime")) for n in snapshot.get("NodeSnapshots", [])]
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _start_cache_restore(clients: AwsClients, resource: ProtectedResource, *, copy_id: str, drill_id: str,
                         source: str, snapshot_arn: str | None) -> Started:
    ec = clients.elasticache
    snapshots = ec.describe_snapshots(ReplicationGroupId=resource.identifier).get("Snapshots", [])
    ready = [s for s in snapshots if s.get("SnapshotStatus") == "available"]
    if snapshot_arn:
        name = identifier_from_arn(snapshot_arn)
        ready = [s for s in ready if s.get("SnapshotName") == name]
        if not ready:
            raise DrillRefused(f"recovery_point_arn: no available snapshot {name!r} of {resource.identifier}")
    if not ready:
        raise DrillRefused(f"recovery_point_arn: no available snapshot of {resource.identifier}")
    snapshot = max(ready, key=lambda s: _snapshot_time(s) or 0.0)
    iso = resource.isolation
    metadata = {"ReplicationGroupId": copy_id, "SecurityGroupIds": json.dumps(iso.security_group_ids),
                "CacheSubnetGroupName": iso.subnet_group or ""}
    problems = planned_restore_problems(resource, metadata)
    if problems:
        raise DrillRefused("the restore would not be isolated: " + "; ".join(problems))
    kwargs: dict[str, Any] = {
        "ReplicationGroupId": copy_id, "ReplicationGroupDescription": f"Reflex drill {drill_id}"[:255],
        "SnapshotName": snapshot["SnapshotName"], "CacheSubnetGroupName": iso.subnet_group,
        "SecurityGroupIds": list(iso.security_group_ids),
        "Tags": [{"Key": "reflex:drill", "Value": drill_id[:256]}],
    }
    for key in ("CacheNodeType", "Engine", "EngineVersion"):
        if snapshot.get(key):
            kwargs[key] = snapshot[key]
    if int(snapshot.get("NumNodeGroups") or 1) > 1:
        kwargs["NumNodeGroups"] = int(snapshot["NumNodeGroups"])
    # A retried step: this drill's copy, under this drill's name, is already being created.
    with contextlib.suppress(ec.exceptions.ReplicationGroupAlreadyExistsFault):
        ec.create_replication_group(**kwargs)
    return Started(restore_job_id=f"elasticache:{copy_id}", recovery_point_arn=str(snapshot.get("ARN") or
                   f"snapshot:{snapshot['SnapshotName']}"), source_arn=source,
                   recovery_point_time=_snapshot_time(snapshot))


@dataclass
class RestoreStatus:
    state: str  # "running" | "completed" | "failed"
    copy_arn: str | None = None
    completed_at: float | None = None
    message: str = ""


def restore_status(clients: AwsClients, resource: ProtectedResource, restore_job_id: str, copy_id: str,
                   now: float) -> RestoreStatus:
    if resource.kind == "elasticache":
        ec = clients.elasticache
        try:
            group = ec.describe_replication_groups(ReplicationGroupId=copy_id)["ReplicationGroups"][0]
        except ec.exceptions.ReplicationGroupNotFoundFault:
            return RestoreStatus("failed", message=f"replication group {copy_id} does not exist")
        status = str(group.get("Status"))
        if status == "available":
            return RestoreStatus("completed", copy_arn=group.get("ARN"), completed_at=now)
        if status in ("creating", "modifying", "snapshotting"):
            return RestoreStatus("running")
        return RestoreStatus("failed", copy_arn=group.get("ARN"), message=f"replication group {copy_id} is {status}")
    job = clients.backup.describe_restore_job(RestoreJobId=restore_job_id)
    status = str(job.get("Status"))
    if status == "COMPLETED":
        return RestoreStatus("completed", copy_arn=job.get("CreatedResourceArn"),
                             completed_at=_ts(job.get("CompletionDate")) or now)
    if status in ("PENDING", "RUNNING", "CREATED"):
        return RestoreStatus("running")
    return RestoreStatus("failed", copy_arn=job.get("CreatedResourceArn"),
                         message=f"restore job {restore_job_id} {status}: {job.get('StatusMessage') or '?'}")


def delete_copy(clients: AwsClients, resource: ProtectedResource, copy_id: str) -> str:
    """Delete the drill's copy (and, for Aurora, its instances). Returns what was done; a copy already gone is
    fine. Refuses any name that is not a drill copy's: production is never deleted."""
    if copy_id == resource.identifier or not copy_id.startswith(resource.isolation.name_prefix):
        raise DrillRefused(f"refusing to delete {copy_id!r}: not a drill copy of {resource.name}")
    kind = resource.kind
    if kind == "aurora-cluster":
        rds = clients.rds
        try:
            cluster = rds.describe_db_clusters(DBClusterIdentifier=copy_id)["DBClusters"][0]
        except rds.exceptions.DBClusterNotFoundFault:
            return f"{copy_id} already gone"
        for member in cluster.get("DBClusterMembers", []):
            with contextlib.suppress(rds.exceptions.DBInstanceNotFoundFault):
                rds.delete_db_instance(DBInstanceIdentifier=member["DBInstanceIdentifier"], SkipFinalSnapshot=True,
                                       DeleteAutomatedBackups=True)
        rds.delete_db_cluster(DBClusterIdentifier=copy_id, SkipFinalSnapshot=True)
        return f"deleted cluster {copy_id}"
    if kind == "rds-instance":
        rds = clients.rds
        try:
            rds.delete_db_instance(DBInstanceIdentifier=copy_id, SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
        except rds.exceptions.DBInstanceNotFoundFault:
            return f"{copy_id} already gone"
        return f"deleted instance {copy_id}"
    if kind == "dynamodb-table":
        ddb = clients.dynamodb
        try:
            ddb.delete_table(TableName=copy_id)
        except ddb.exceptions.ResourceNotFoundException:
            return f"{copy_id} already gone"
        return f"deleted table {copy_id}"
    if kind == "s3-bucket":
        s3 = clients.s3
        try:
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=copy_id):
                objects = [{"Key": o["Key"], "VersionId": o["VersionId"]}
                           for o in page.get("Versions", []) + page.get("DeleteMarkers", [])]
                if objects:
                    s3.delete_objects(Bucket=copy_id, Delete={"Objects": objects, "Quiet": True})
            s3.delete_bucket(Bucket=copy_id)
        except s3.exceptions.NoSuchBucket:
            return f"{copy_id} already gone"
        return f"deleted bucket {copy_id}"
    ec = clients.elasticache
    try:
        ec.delete_replication_group(ReplicationGroupId=copy_id, RetainPrimaryCluster=False)
    except ec.exceptions.ReplicationGroupNotFoundFault:
        return f"{copy_id} already gone"
    except ec.exceptions.InvalidReplicationGroupStateFault:
        group = ec.describe_replication_groups(ReplicationGroupId=copy_id)["ReplicationGroups"][0]
        if group.get("Status") != "deleting":
            raise
    return f"deleted replication group {copy_id}"
