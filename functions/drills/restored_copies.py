"""The restored copy of a protected resource in AWS: which one a restore job made, whether it is isolated from
production, the values of its checks, and whether it still exists.

Isolation (checked before any check runs against the copy, and before any on-demand restore is started):
the copy is not the production resource (name / identifier), does not share production's endpoint, security
groups or subnet group, and uses the drill network configured for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reflex_core.aws_clients import AwsClients
from reflex_core.recovery_config import ProtectedResource, ValidationCheck


def identifier_from_arn(arn: str) -> str:
    """The resource's own name in an ARN: `...:cluster:orders` -> orders, `...:table/carts` -> carts,
    `arn:aws:s3:::bucket` -> bucket, `...:replicationgroup:sessions` -> sessions."""
    tail = arn.split(":", 5)[-1]
    if "/" in tail:
        return tail.split("/", 1)[1].split("/", 1)[0]
    return tail.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class Placement:
    """Where a database copy (or production) lives: what isolation compares."""

    identifier: str
    endpoint: str | None
    security_groups: tuple[str, ...]
    subnet_group: str | None


def _rds_placement(clients: AwsClients, resource: ProtectedResource, identifier: str) -> Placement | None:
    rds = clients.rds
    try:
        if resource.kind == "aurora-cluster":
            c = rds.describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"][0]
            return Placement(identifier, c.get("Endpoint"),
                             tuple(g["VpcSecurityGroupId"] for g in c.get("VpcSecurityGroups", [])),
                             c.get("DBSubnetGroup"))
        i = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
        subnet = i.get("DBSubnetGroup") or {}
        return Placement(identifier, (i.get("Endpoint") or {}).get("Address"),
                         tuple(g["VpcSecurityGroupId"] for g in i.get("VpcSecurityGroups", [])),
                         subnet.get("DBSubnetGroupName"))
    except rds.exceptions.ClientError as err:
        if err.response["Error"]["Code"] in ("DBClusterNotFoundFault", "DBInstanceNotFound"):
            return None
        raise


def _cache_placement(clients: AwsClients, identifier: str) -> Placement | None:
    """A replication group's placement, from its member clusters (subnet group, security groups)."""
    ec = clients.elasticache
    try:
        group = ec.describe_replication_groups(ReplicationGroupId=identifier)["ReplicationGroups"][0]
    except ec.exceptions.ReplicationGroupNotFoundFault:
        return None
    sgs: set[str] = set()
    subnets: set[str] = set()
    for member in group.get("MemberClusters", []):
        cluster = ec.describe_cache_clusters(CacheClusterId=member)["CacheClusters"][0]
        sgs |= {g["SecurityGroupId"] for g in cluster.get("SecurityGroups", [])}
        if cluster.get("CacheSubnetGroupName"):
            subnets.add(cluster["CacheSubnetGroupName"])
    endpoint = (group.get("ConfigurationEndpoint") or {}).get("Address") or next(
        ((n.get("PrimaryEndpoint") or {}).get("Address") for n in group.get("NodeGroups", [])), None)
    return Placement(identifier, endpoint, tuple(sorted(sgs)), ",".join(sorted(subnets)) or None)


def isolation_problems(clients: AwsClients, resource: ProtectedResource, copy_identifier: str) -> list[str]:
    """What ties the restored copy to production (empty when it is isolated)."""
    problems: list[str] = []
    if copy_identifier == resource.identifier:
        return [f"the copy is the production resource {resource.identifier!r}"]
    if resource.kind not in ("aurora-cluster", "rds-instance", "elasticache"):
        return problems  # a table or bucket of another name has no network to share
    if resource.kind == "elasticache":
        copy, production = (_cache_placement(clients, copy_identifier),
                            _cache_placement(clients, resource.identifier))
        if copy is None:
            return [f"the copy {copy_identifier!r} does not exist"]
        return _placement_problems(resource, copy, production)
    copy = _rds_placement(clients, resource, copy_identifier)
    if copy is None:
        return [f"the copy {copy_identifier!r} does not exist"]
    return _placement_problems(resource, copy, _rds_placement(clients, resource, resource.identifier))


def _placement_problems(resource: ProtectedResource, copy: Placement, production: Placement | None) -> list[str]:
    problems: list[str] = []
    iso = resource.isolation
    production_sgs = set(iso.production_security_group_ids) | set(production.security_groups if production else ())
    shared = sorted(set(copy.security_groups) & production_sgs)
    if shared:
        problems.append(f"security groups {', '.join(shared)} are production's")
    if iso.security_group_ids and not set(copy.security_groups) <= set(iso.security_group_ids):
        problems.append(f"security groups {', '.join(sorted(copy.security_groups))} are not the drill's "
                        f"({', '.join(iso.security_group_ids)})")
    production_subnets = {s for s in (iso.production_subnet_group, production and production.subnet_group) if s}
    if copy.subnet_group in production_subnets:
        problems.append(f"subnet group {copy.subnet_group!r} is production's")
    elif iso.subnet_group and copy.subnet_group != iso.subnet_group:
        problems.append(f"subnet group {copy.subnet_group!r} is not the drill's ({iso.subnet_group!r})")
    if production and copy.endpoint and copy.endpoint == production.endpoint:
        problems.append(f"endpoint {copy.endpoint} is production's")
    return problems


def planned_restore_problems(resource: ProtectedResource, metadata: dict[str, str]) -> list[str]:
    """Before any restore call: the restore metadata must name a new copy in the drill network."""
    problems: list[str] = []
    iso = resource.isolation
    name_keys = {"aurora-cluster": "DBClusterIdentifier", "rds-instance": "DBInstanceIdentifier",
                 "dynamodb-table": "targetTableName", "s3-bucket": "DestinationBucketName",
                 "elasticache": "ReplicationGroupId"}
    name = metadata.get(name_keys[resource.kind], "")
    if not name:
        problems.append(f"{name_keys[resource.kind]}: the restore names no new copy")
    elif name == resource.identifier:
        problems.append(f"{name_keys[resource.kind]}: {name!r} is the production resource")
    elif not name.startswith(iso.name_prefix):
        problems.append(f"{name_keys[resource.kind]}: {name!r} does not start with the drill prefix "
                        f"{iso.name_prefix!r}")
    if resource.kind in ("aurora-cluster", "rds-instance", "elasticache"):
        sg_key = "SecurityGroupIds" if resource.kind == "elasticache" else "VpcSecurityGroupIds"
        subnet_key = "CacheSubnetGroupName" if resource.kind == "elasticache" else "DBSubnetGroupName"
        sgs = {s.strip() for s in metadata.get(sg_key, "").strip("[]").replace('"', "").split(",") if s.strip()}
        if not sgs:
            problems.append(f"{sg_key}: a drill's copy needs the drill's security groups")
        shared = sorted(sgs & set(iso.production_security_group_ids))
        if shared:
            problems.append(f"{sg_key}: {', '.join(shared)} are production's")
        elif not sgs <= set(iso.security_group_ids):
            problems.append(f"{sg_key}: {', '.join(sorted(sgs))} are not the drill's")
        subnet = metadata.get(subnet_key)
        if subnet != iso.subnet_group or subnet == iso.production_subnet_group:
            problems.append(f"{subnet_key}: {subnet!r} is not the drill subnet group {iso.subnet_group!r}")
    return problems


def copy_exists(clients: AwsClients, resource: ProtectedResource, identifier: str) -> bool:
    """Is the restored copy still there (a leftover once its validation window has ended)?"""
    if resource.kind in ("aurora-cluster", "rds-instance"):
        return _rds_placement(clients, resource, identifier) is not None
    if resource.kind == "dynamodb-table":
        try:
            clients.dynamodb.describe_table(TableName=identifier)
            return True
        except clients.dynamodb.exceptions.ResourceNotFoundException:
            return False
    if resource.kind == "s3-bucket":
        try:
            clients.s3.head_bucket(Bucket=identifier)
            return True
        except clients.s3.exceptions.ClientError:
            return False
    try:
        clients.elasticache.describe_replication_groups(ReplicationGroupId=identifier)
        return True
    except clients.elasticache.exceptions.ReplicationGroupNotFoundFault:
        return False


class AwsCheckSource:
    """Check values read from AWS: SQL through the RDS Data API (the function needs no network path or driver
    to the copy), DynamoDB item counts by a counting scan, S3 object counts by listing."""

    def __init__(self, clients: AwsClients, resource: ProtectedResource, copy_arn: str, production_arn: str) -> None:
        self._clients = clients
        self._resource = resource
        self._arns = {"restored": copy_arn, "production": production_arn}

    def value(self, check: ValidationCheck, where: str) -> Any:
        arn = self._arns[where]
        if check.kind == "sql":
            kwargs: dict[str, Any] = {"resourceArn": arn, "secretArn": self._resource.secret_arn, "sql": check.query}
            if check.database:
                kwargs["database"] = check.database
            records = self._clients.rds_data.execute_statement(**kwargs).get("records") or [[]]
            if not records[0]:
                raise ValueError("the query returned no value")
            cell = records[0][0]
            if cell.get("isNull"):
                return None
            return next(iter(cell.values()))
        name = identifier_from_arn(arn)
        if check.kind == "item-count":
            total, kwargs = 0, {"TableName": name, "Select": "COUNT"}
            while True:
                page = self._clients.dynamodb.scan(**kwargs)
                total += int(page["Count"])
                if "LastEvaluatedKey" not in page:
                    return total
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        total = 0
        paginator = self._clients.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name, Prefix=check.prefix):
            total += int(page.get("KeyCount", 0))
        return total

