"""What the failover reaction reads and changes in AWS: the Aurora Global Database (RDS), the clusters' health
(RDS, in each cluster's own region), the replication lag (CloudWatch, in the lagging cluster's region) and the
Route 53 failover record pair. Every client comes from the runtime's `AwsClients` (injectable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reflex_core.aws_clients import AwsClients
from reflex_core.recovery_config import Failover

LAG_METRIC = "AuroraGlobalDBReplicationLag"  # milliseconds, published by each secondary cluster
LAG_WINDOW_S = 300
# A global cluster status in which a switchover or failover is under way.
CHANGING = frozenset({"failing-over", "switching-over"})


def region_of(arn: str) -> str:
    return arn.split(":")[3]


def cluster_id_of(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class GlobalState:
    """One read of `describe_global_clusters`."""

    status: str
    writer: str | None
    members: tuple[str, ...]
    failover_state: dict[str, Any] | None

    def is_member(self, arn: str) -> bool:
        return arn in self.members

    def as_dict(self) -> dict[str, Any]:
        return {"global_status": self.status, "writer": self.writer, "members": list(self.members),
                "failover_state": self.failover_state}


@dataclass(frozen=True)
class ClusterHealth:
    arn: str
    status: str | None  # None: the cluster could not be found or read
    instances_available: int
    error: str = ""

    @property
    def healthy(self) -> bool:
        return self.status == "available" and self.instances_available >= 1

    def describe(self) -> str:
        if self.status is None:
            return f"{cluster_id_of(self.arn)} unreadable ({self.error or 'not found'})"
        return f"{cluster_id_of(self.arn)} {self.status}, {self.instances_available} instance(s) available"


@dataclass(frozen=True)
class Lag:
    """The maximum of `AuroraGlobalDBReplicationLag` over the window, in seconds (None: no data)."""

    max_s: float | None
    datapoints: int
    window_s: int = LAG_WINDOW_S


@dataclass(frozen=True)
class FailoverRecords:
    """The failover record pair of one name and type: by SetIdentifier, each record as Route 53 returns it."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def primary_set(self) -> str | None:
        return next((k for k, r in self.records.items() if r.get("Failover") == "PRIMARY"), None)


class GlobalDatabase:
    def __init__(self, clients: AwsClients, target: Failover) -> None:
        self._clients = clients
        self._target = target

    def _rds(self, region: str | None) -> Any:
        return self._clients.in_region("rds", region)

    # ------------------------------------------------------------------ reads
    def state(self, region: str | None = None) -> GlobalState:
        """The global cluster as RDS reports it; any region of the global database answers."""
        resp = self._rds(region).describe_global_clusters(GlobalClusterIdentifier=self._target.global_cluster)
        clusters = resp.get("GlobalClusters") or []
        if not clusters:
            raise LookupError(f"global cluster {self._target.global_cluster} not found")
        gc = clusters[0]
        members = gc.get("GlobalClusterMembers") or []
        writer = next((m["DBClusterArn"] for m in members if m.get("IsWriter")), None)
        state = gc.get("FailoverState") or None
        return GlobalState(status=str(gc.get("Status", "")), writer=writer,
                           members=tuple(m["DBClusterArn"] for m in members), failover_state=state)

    def cluster_health(self, arn: str) -> ClusterHealth:
        """Status of the cluster and how many of its instances are available, read in the cluster's region."""
        from botocore.exceptions import ClientError

        rds = self._rds(region_of(arn))
        try:
            clusters = rds.describe_db_clusters(DBClusterIdentifier=arn).get("DBClusters") or []
            if not clusters:
                return ClusterHealth(arn=arn, status=None, instances_available=0)
            members = [m["DBInstanceIdentifier"] for m in clusters[0].get("DBClusterMembers") or []]
            available = 0
            if members:
                instances = rds.describe_db_instances(
                    Filters=[{"Name": "db-cluster-id", "Values": [arn]}]).get("DBInstances") or []
                available = sum(1 for i in instances if i.get("DBInstanceStatus") == "available"
                                and i.get("DBInstanceIdentifier") in members)
            return ClusterHealth(arn=arn, status=str(clusters[0].get("Status")), instances_available=available)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code"))
            if code in ("DBClusterNotFoundFault",):
                return ClusterHealth(arn=arn, status=None, instances_available=0, error=code)
            raise
        except Exception as err:  # a region that does not answer is an unhealthy one, not a crash
            if _is_unreachable(err):
                return ClusterHealth(arn=arn, status=None, instances_available=0, error=type(err).__name__)
            raise

    def lag(self, arn: str, now: datetime) -> Lag:
        """`AuroraGlobalDBReplicationLag` of the secondary `arn` (ms, in its region), maximum per minute over the last
        five minutes; the largest of them, in seconds."""
        cloudwatch = self._clients.in_region("cloudwatch", region_of(arn))
        resp = cloudwatch.get_metric_statistics(
            Namespace="AWS/RDS", MetricName=LAG_METRIC,
            Dimensions=[{"Name": "DBClusterIdentifier", "Value": cluster_id_of(arn)}],
            StartTime=now - timedelta(seconds=LAG_WINDOW_S), EndTime=now, Period=60, Statistics=["Maximum"],
            Unit="Milliseconds")
        points = [float(p["Maximum"]) for p in resp.get("Datapoints") or [] if "Maximum" in p]
        return Lag(max_s=max(points) / 1000.0 if points else None, datapoints=len(points))

    # ------------------------------------------------------------------ acts
    def switchover(self, target_arn: str) -> None:
        """Planned: RDS waits for the target to catch up, then swaps the roles (no data loss)."""
        self._rds(region_of(target_arn)).switchover_global_cluster(
            GlobalClusterIdentifier=self._target.global_cluster, TargetDbClusterIdentifier=target_arn)

    def failover(self, target_arn: str) -> None:
        """Primary lost: promote the target now, losing what it had not replicated. Called in the target's region
        (the primary's region may not answer)."""
        self._rds(region_of(target_arn)).failover_global_cluster(
            GlobalClusterIdentifier=self._target.global_cluster, TargetDbClusterIdentifier=target_arn,
            AllowDataLoss=True)

    # ------------------------------------------------------------------ Route 53
    def records(self) -> FailoverRecords:
        t = self._target
        assert t.hosted_zone_id and t.record_name
        name = _fqdn(t.record_name)
        resp = self._clients.route53.list_resource_record_sets(
            HostedZoneId=t.hosted_zone_id, StartRecordName=name, StartRecordType=t.record_type, MaxItems="10")
        found = {str(r["SetIdentifier"]): r for r in resp.get("ResourceRecordSets") or []
                 if _fqdn(r.get("Name", "")) == name and r.get("Type") == t.record_type
                 and r.get("Failover") in ("PRIMARY", "SECONDARY") and r.get("SetIdentifier")}
        return FailoverRecords(records=found)

    def health_check_ok(self, health_check_id: str) -> tuple[bool, str]:
        """Healthy when most of Route 53's checkers report success (as Route 53 itself decides)."""
        resp = self._clients.route53.get_health_check_status(HealthCheckId=health_check_id)
        observations = resp.get("HealthCheckObservations") or []
        ok = sum(1 for o in observations
                 if str((o.get("StatusReport") or {}).get("Status", "")).startswith("Success"))
        if not observations:
            return False, f"health check {health_check_id}: no observations"
        return ok * 2 > len(observations), f"health check {health_check_id}: {ok}/{len(observations)} checkers OK"

    def make_primary(self, records: FailoverRecords, set_identifier: str) -> str:
        """One atomic batch: DELETE each record exactly as read and CREATE it with its `Failover` role swapped.
        A DELETE must match the record's current values, so a record changed since it was read fails the whole
        batch (InvalidChangeBatch) and nothing changes: the swap is conditional on what was read."""
        t = self._target
        assert t.hosted_zone_id
        changes: list[dict[str, Any]] = []
        for sid, record in sorted(records.records.items()):
            role = "PRIMARY" if sid == set_identifier else "SECONDARY"
            clean = {k: v for k, v in record.items() if k != "ResponseMetadata"}
            changes.append({"Action": "DELETE", "ResourceRecordSet": clean})
            changes.append({"Action": "CREATE", "ResourceRecordSet": clean | {"Failover": role}})
        resp = self._clients.route53.change_resource_record_sets(
            HostedZoneId=t.hosted_zone_id, ChangeBatch={
                "Comment": f"Reflex failover {t.name}: {set_identifier} becomes PRIMARY", "Changes": changes})
        return str(resp["ChangeInfo"]["Id"])


def _fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def _is_unreachable(err: Exception) -> bool:
    name = type(err).__name__
    return name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError")
