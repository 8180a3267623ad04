"""The drills' AWS world (simulator and tests): production and restored copies in moto (RDS, DynamoDB), AWS
Backup and the RDS Data API through botocore's Stubber with AWS's documented shapes (moto has neither restore
testing nor the Data API results a check needs)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from botocore.stub import Stubber

ACCOUNT = "123456789012"
REGION = "us-east-1"

PROD_SG = "sg-0a1b2c3d4e5f60701"
DRILL_SG = "sg-0d0d0d0d0d0d0d0d1"
PLAN_ARN = f"arn:aws:backup:{REGION}:{ACCOUNT}:restore-testing-plan:weekly_orders-1a2b3c4d"
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:reflex/dev/orders-drill-AbCdEf"


def cluster_arn(name: str) -> str:
    return f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:{name}"


def table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"


def restore_event(job_id: str, status: str, at: datetime, *, resource_type: str = "Aurora",
                  created: str | None = None) -> dict[str, Any]:
    """AWS Backup's "Restore Job State Change" event, as EventBridge delivers it."""
    detail: dict[str, Any] = {
        "restoreJobId": job_id, "backupSizeInBytes": "1073741824", "creationDate": at.isoformat(),
        "iamRoleArn": f"arn:aws:iam::{ACCOUNT}:role/service-role/AWSBackupDefaultServiceRole",
        "percentDone": 100.0, "resourceType": resource_type, "status": status,
        "restoreTestingPlanArn": PLAN_ARN,
    }
    if created:
        detail["createdResourceArn"] = created
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Restore Job State Change",
            "source": "aws.backup", "account": ACCOUNT, "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION, "resources": [], "detail": detail}


def restore_job(job_id: str, *, source: str, created: str | None, started: datetime, took_s: float,
                point_age_s: float, status: str = "COMPLETED", resource_type: str = "Aurora",
                testing: bool = True, validation: str | None = None) -> dict[str, Any]:
    """A DescribeRestoreJob response."""
    job: dict[str, Any] = {
        "AccountId": ACCOUNT, "RestoreJobId": job_id,
        "RecoveryPointArn": f"arn:aws:backup:{REGION}:{ACCOUNT}:recovery-point:{uuid.uuid4()}",
        "SourceResourceArn": source, "BackupVaultArn": f"arn:aws:backup:{REGION}:{ACCOUNT}:backup-vault:reflex-dev-dr",
        "CreationDate": started, "CompletionDate": started + timedelta(seconds=took_s), "Status": status,
        "PercentDone": "100.0", "BackupSizeInBytes": 1 << 30, "ResourceType": resource_type,
        "RecoveryPointCreationDate": started - timedelta(seconds=point_age_s),
        "IamRoleArn": f"arn:aws:iam::{ACCOUNT}:role/service-role/AWSBackupDefaultServiceRole",
    }
    if created:
        job["CreatedResourceArn"] = created
    if status == "FAILED":
        job["StatusMessage"] = "Restore failed: the DB subnet group has no subnet in the snapshot's AZ"
    if testing:
        job["CreatedBy"] = {"RestoreTestingPlanArn": PLAN_ARN}
    if validation:
        job["ValidationStatus"] = validation
    return job


class BackupStub:
    """A real boto3 backup client answered by a Stubber, in call order."""

    def __init__(self, session: Any) -> None:
        self.client = session.client("backup", region_name=REGION)
        self.stub = Stubber(self.client)
        self.stub.activate()

    def describe(self, job: dict[str, Any]) -> None:
        self.stub.add_response("describe_restore_job", dict(job), {"RestoreJobId": job["RestoreJobId"]})

    def put_result(self, job_id: str, status: str) -> None:
        from botocore.stub import ANY

        self.stub.add_response("put_restore_validation_result", {},
                               {"RestoreJobId": job_id, "ValidationStatus": status, "ValidationStatusMessage": ANY})

    def expect_validation(self, job: dict[str, Any], status: str) -> None:
        """describe (intents) -> put result (execute) -> describe (verify)."""
        self.describe(job)
        self.put_result(job["RestoreJobId"], status)
        self.describe(job | {"ValidationStatus": status})


class DataApiStub:
    """rds-data ExecuteStatement answered per (resource ARN, SQL)."""

    def __init__(self, session: Any) -> None:
        self.client = session.client("rds-data", region_name=REGION)
        self.stub = Stubber(self.client)
        self.stub.activate()

    def answer(self, arn: str, sql: str, field: dict[str, Any], database: str = "shop") -> None:
        self.stub.add_response("execute_statement", {"records": [[field]], "numberOfRecordsUpdated": 0},
                               {"resourceArn": arn, "secretArn": SECRET, "sql": sql, "database": database})


def create_rds(clients: Any) -> None:
    """Production `orders` (production SG and subnet group) and the drill network's subnet group."""
    ec2, rds = clients.ec2, clients.rds
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}")
               ["Subnet"]["SubnetId"] for i, az in ((1, "a"), (2, "b"))]
    for name in ("orders-prod", "drills-isolated"):
        rds.create_db_subnet_group(DBSubnetGroupName=name, DBSubnetGroupDescription=name, SubnetIds=subnets)
    rds.create_db_cluster(DBClusterIdentifier="orders", Engine="aurora-postgresql", MasterUsername="app",
                          MasterUserPassword="password-1", VpcSecurityGroupIds=[PROD_SG],
                          DBSubnetGroupName="orders-prod")
    rds.create_db_cluster_snapshot(DBClusterIdentifier="orders", DBClusterSnapshotIdentifier="orders-nightly")


def restore_copy(clients: Any, name: str, *, sgs: list[str] | None = None,
                 subnet_group: str = "drills-isolated") -> str:
    """What restore testing creates: a copy of `orders` from its snapshot (here in moto)."""
    return clients.rds.restore_db_cluster_from_snapshot(
        DBClusterIdentifier=name, SnapshotIdentifier="orders-nightly", Engine="aurora-postgresql",
        VpcSecurityGroupIds=sgs or [DRILL_SG], DBSubnetGroupName=subnet_group)["DBCluster"]["DBClusterArn"]


def production_state(clients: Any) -> dict[str, Any]:
    c = clients.rds.describe_db_clusters(DBClusterIdentifier="orders")["DBClusters"][0]
    return {k: c.get(k) for k in ("Status", "Endpoint", "VpcSecurityGroups", "DBSubnetGroup", "DBClusterArn")}
