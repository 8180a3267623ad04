"""The failover reaction's AWS world (tests, console events): an Aurora Global Database, the lag metric, the Route 53
failover record pair and the workflow's callbacks.

moto (5.x) has DescribeGlobalClusters but neither SwitchoverGlobalCluster nor FailoverGlobalCluster, so the global
database is `GlobalDatabaseFake`: one object per account holding the global cluster and its member clusters, served
through one client per region (`rds@<region>`). Every call's parameters are validated against botocore's RDS model
and its answers have the documented shapes (GlobalCluster, GlobalClusterMember, FailoverState, DBCluster,
DBInstance); faults are the documented error codes. CloudWatch (the lag) and Route 53 (records, health checks) are
moto's, in their regions. `WorkflowFake` stands in for Step Functions' StartExecution and task callbacks.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError

ACCOUNT = "123456789012"
PRIMARY_REGION = "us-east-1"  # the moto world's own region: the stage's
SECONDARY_REGION = "us-west-2"
GLOBAL_ID = "orders-global"
PRIMARY_ID = "orders"
SECONDARY_ID = "orders-replica"
RECORD = "orders-db.dev.example.com"
SECONDARY_SET = "us-west-2"
PRIMARY_SET = "us-east-1"


def arn(region: str, cluster: str) -> str:
    return f"arn:aws:rds:{region}:{ACCOUNT}:cluster:{cluster}"


PRIMARY_ARN = arn(PRIMARY_REGION, PRIMARY_ID)
SECONDARY_ARN = arn(SECONDARY_REGION, SECONDARY_ID)


def _error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                       operation)


@dataclass
class ClusterFake:
    arn: str
    status: str = "available"
    instances: dict[str, str] = field(default_factory=dict)  # instance id -> status

    @property
    def region(self) -> str:
        return self.arn.split(":")[3]


@dataclass
class GlobalDatabaseFake:
    """The global cluster `orders-global`: writer `orders` (us-east-1), secondary `orders-replica` (us-west-2)."""

    status: str = "available"
    writer: str = PRIMARY_ARN
    members: list[str] = field(default_factory=lambda: [PRIMARY_ARN, SECONDARY_ARN])
    failover_state: dict[str, Any] | None = None
    clusters: dict[str, ClusterFake] = field(default_factory=dict)
    down_regions: set[str] = field(default_factory=set)
    # operation name -> the ClientError to raise (once, then removed, unless `sticky`).
    faults: dict[str, ClientError] = field(default_factory=dict)
    sticky_faults: bool = False
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (region, operation, params)
    # Called after an accepted switchover/failover (e.g. to make a test's next step see it done at once).
    on_promotion: Callable[[GlobalDatabaseFake], None] | None = None

    def __post_init__(self) -> None:
        if not self.clusters:
            for cluster in (PRIMARY_ARN, SECONDARY_ARN):
                cid = cluster.rsplit(":", 1)[-1]
                self.clusters[cluster] = ClusterFake(arn=cluster, instances={f"{cid}-1": "available"})

    # ------------------------------------------------------------------ test controls
    def promotions(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [c for c in self.calls if c[1] in ("switchover_global_cluster", "failover_global_cluster")]

    def settle(self) -> None:
        """The switchover/failover under way finishes: the target is the writer."""
        if self.failover_state is None:
            return
        self.writer = str(self.failover_state["ToDbClusterArn"])
        self.failover_state = None
        self.status = "available"

    def snapshot(self) -> dict[str, Any]:
        """Everything a promotion would change, to assert nothing changed."""
        return {"status": self.status, "writer": self.writer, "members": list(self.members),
                "failover_state": self.failover_state,
                "clusters": {a: (c.status, dict(c.instances)) for a, c in self.clusters.items()}}

    def client(self, region: str) -> RdsFakeClient:
        return RdsFakeClient(self, region)


class RdsFakeClient:
    """An RDS client of one region over the fake global database (the operations the failover reaction calls)."""

    def __init__(self, world: GlobalDatabaseFake, region: str) -> None:
        import boto3

        self._world, self._region = world, region
        self._model = boto3.session.Session().client("rds", region_name=region).meta.service_model

    def _call(self, operation: str, params: dict[str, Any]) -> None:
        from botocore import xform_name
        from botocore.validate import validate_parameters

        names = {xform_name(n): n for n in self._model.operation_names}
        validate_parameters(params, self._model.operation_model(names[operation]).input_shape)
        w = self._world
        w.calls.append((self._region, operation, params))
        if self._region in w.down_regions:
            raise EndpointConnectionError(endpoint_url=f"https://rds.{self._region}.amazonaws.com")
        fault = w.faults.get(operation)
        if fault is not None:
            if not w.sticky_faults:
                del w.faults[operation]
            raise fault

    def _global(self, operation: str, identifier: str) -> None:
        if identifier != GLOBAL_ID:
            raise _error("GlobalClusterNotFoundFault", f"Global cluster {identifier} not found", operation)

    # ------------------------------------------------------------------ reads
    def describe_global_clusters(self, **params: Any) -> dict[str, Any]:
        self._call("describe_global_clusters", params)
        self._global("DescribeGlobalClusters", params.get("GlobalClusterIdentifier", GLOBAL_ID))
        w = self._world
        members = [{"DBClusterArn": m, "IsWriter": m == w.writer,
                    "Readers": [o for o in w.members if o != m] if m == w.writer else [],
                    "GlobalWriteForwardingStatus": "disabled"} for m in w.members]
        gc: dict[str, Any] = {
            "GlobalClusterIdentifier": GLOBAL_ID, "GlobalClusterResourceId": "cluster-0123456789abcdef",
            "GlobalClusterArn": f"arn:aws:rds::{ACCOUNT}:global-cluster:{GLOBAL_ID}", "Status": w.status,
            "Engine": "aurora-postgresql", "EngineVersion": "16.4", "StorageEncrypted": True,
            "DeletionProtection": True, "GlobalClusterMembers": members}
        if w.failover_state is not None:
            gc["FailoverState"] = dict(w.failover_state)
        return {"GlobalClusters": [gc]}

    def describe_db_clusters(self, **params: Any) -> dict[str, Any]:
        self._call("describe_db_clusters", params)
        wanted = str(params.get("DBClusterIdentifier", ""))
        cluster = next((c for a, c in self._world.clusters.items()
                        if c.region == self._region and wanted in (a, a.rsplit(":", 1)[-1])), None)
        if cluster is None:
            raise _error("DBClusterNotFoundFault", f"DBCluster {wanted} not found.", "DescribeDBClusters")
        cid = cluster.arn.rsplit(":", 1)[-1]
        return {"DBClusters": [{
            "DBClusterIdentifier": cid, "DBClusterArn": cluster.arn, "Status": cluster.status,
            "Engine": "aurora-postgresql", "MultiAZ": False, "GlobalClusterIdentifier": GLOBAL_ID,
            "DBClusterMembers": [{"DBInstanceIdentifier": i, "IsClusterWriter": cluster.arn == self._world.writer,
                                  "PromotionTier": 1} for i in cluster.instances]}]}

    def describe_db_instances(self, **params: Any) -> dict[str, Any]:
        self._call("describe_db_instances", params)
        filters = {f["Name"]: f["Values"] for f in params.get("Filters", [])}
        out = []
        for a, c in self._world.clusters.items():
            if c.region != self._region:
                continue
            wanted = filters.get("db-cluster-id")
            if wanted is not None and a not in wanted and a.rsplit(":", 1)[-1] not in wanted:
                continue
            out += [{"DBInstanceIdentifier": i, "DBInstanceStatus": s, "Engine": "aurora-postgresql",
                     "DBClusterIdentifier": a.rsplit(":", 1)[-1]} for i, s in c.instances.items()]
        return {"DBInstances": out}

    # ------------------------------------------------------------------ acts
    def _promote(self, operation: str, api: str, params: dict[str, Any], data_loss: bool) -> dict[str, Any]:
        self._call(operation, params)
        self._global(api, params["GlobalClusterIdentifier"])
        w = self._world
        target = params["TargetDbClusterIdentifier"]
        if target not in w.members:
            raise _error("DBClusterNotFoundFault", f"{target} is not a member of {GLOBAL_ID}", api)
        if w.failover_state is not None or w.status != "available":
            raise _error("InvalidGlobalClusterStateFault", f"{GLOBAL_ID} is {w.status}", api)
        if target == w.writer:
            raise _error("InvalidDBClusterStateFault", f"{target} is already the writer", api)
        w.failover_state = {"Status": "pending", "FromDbClusterArn": w.writer, "ToDbClusterArn": target,
                            "IsDataLossAllowed": data_loss}
        w.status = "failing-over" if data_loss else "switching-over"
        if w.on_promotion is not None:
            w.on_promotion(w)
        return {"GlobalCluster": self.describe_global_clusters(GlobalClusterIdentifier=GLOBAL_ID)["GlobalClusters"][0]}

    def switchover_global_cluster(self, **params: Any) -> dict[str, Any]:
        return self._promote("switchover_global_cluster", "SwitchoverGlobalCluster", params, False)

    def failover_global_cluster(self, **params: Any) -> dict[str, Any]:
        return self._promote("failover_global_cluster", "FailoverGlobalCluster", params, True)


class WorkflowFake:
    """Step Functions as the failover function calls it: StartExecution (by name, once), and the callbacks of the
    gate's task token (a token works once; a timed-out gate's token answers TaskTimedOut)."""

    def __init__(self) -> None:
        self.executions: dict[str, dict[str, Any]] = {}
        self.live_tokens: set[str] = set()
        self.callbacks: list[tuple[str, str, dict[str, Any]]] = []  # (kind, token, body)
        self._tokens = itertools.count(1)

    def start_execution(self, **params: Any) -> dict[str, Any]:
        name = params["name"]
        if name in self.executions:
            raise _error("ExecutionAlreadyExists", f"Execution Already Exists: {name}", "StartExecution")
        self.executions[name] = {"input": json.loads(params["input"]), "machine": params["stateMachineArn"]}
        head, _, machine = params["stateMachineArn"].rpartition(":stateMachine:")
        return {"executionArn": f"{head}:execution:{machine}:{name}", "startDate": datetime(2026, 1, 1)}

    def describe_execution(self, **params: Any) -> dict[str, Any]:
        name = params["executionArn"].rsplit(":", 1)[-1]
        execution = self.executions.get(name)
        if execution is None:
            raise _error("ExecutionDoesNotExist", f"Execution Does Not Exist: {params['executionArn']}",
                         "DescribeExecution")
        return {"executionArn": params["executionArn"], "name": name, "status": execution.get("status", "RUNNING"),
                "input": json.dumps(execution["input"])}

    def end(self, name: str, status: str = "FAILED") -> None:
        """The execution `name` ended (the fake does not run workflows: the test says how it ended)."""
        self.executions[name]["status"] = status

    def new_token(self) -> str:
        token = f"token-{next(self._tokens)}-" + "x" * 40
        self.live_tokens.add(token)
        return token

    def time_out(self, token: str) -> None:
        self.live_tokens.discard(token)

    def _use(self, kind: str, token: str, body: dict[str, Any], operation: str) -> dict[str, Any]:
        if token not in self.live_tokens:
            raise _error("TaskTimedOut", "Task Timed Out", operation)
        self.live_tokens.discard(token)
        self.callbacks.append((kind, token, body))
        return {}

    def send_task_success(self, **params: Any) -> dict[str, Any]:
        return self._use("success", params["taskToken"], json.loads(params["output"]), "SendTaskSuccess")

    def send_task_failure(self, **params: Any) -> dict[str, Any]:
        return self._use("failure", params["taskToken"], {"error": params.get("error"), "cause": params.get("cause")},
                         "SendTaskFailure")


@dataclass
class FailoverResources:
    db: GlobalDatabaseFake
    workflow: WorkflowFake
    hosted_zone_id: str
    health_check_id: str


def put_lag(clients: Any, lag_ms: list[float], now: datetime, cluster: str = SECONDARY_ID,
            region: str = SECONDARY_REGION) -> None:
    """Datapoints of AuroraGlobalDBReplicationLag (ms), one a minute ending a minute before `now`."""
    cloudwatch = clients.in_region("cloudwatch", region)
    data = [{"MetricName": "AuroraGlobalDBReplicationLag", "Value": v, "Unit": "Milliseconds",
             "Timestamp": now - timedelta(minutes=len(lag_ms) - i),
             "Dimensions": [{"Name": "DBClusterIdentifier", "Value": cluster}]} for i, v in enumerate(lag_ms)]
    if data:
        cloudwatch.put_metric_data(Namespace="AWS/RDS", MetricData=data)


def record_roles(clients: Any, zone: str) -> dict[str, str]:
    """SetIdentifier -> Failover role of the failover records of RECORD."""
    sets = clients.route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return {r["SetIdentifier"]: r["Failover"] for r in sets if r.get("Failover")}


def create_failover(world: Any, now: datetime, *, lag_ms: list[float] | None = None) -> FailoverResources:
    """The global database, its lag, the Route 53 failover pair (the secondary's with a health check) and the workflow
    fake in `world` (simulator.aws_world.World, inside mock_aws); the config's hosted zone id becomes moto's."""
    clients = world.clients
    db = GlobalDatabaseFake()
    workflow = WorkflowFake()
    for region in (PRIMARY_REGION, SECONDARY_REGION):
        world.overrides[f"rds@{region}"] = db.client(region)
    world.overrides["stepfunctions"] = workflow
    zone = clients.route53.create_hosted_zone(Name="dev.example.com", CallerReference=str(now.timestamp()))[
        "HostedZone"]["Id"].rsplit("/", 1)[-1]
    check = clients.route53.create_health_check(CallerReference=f"hc-{now.timestamp()}", HealthCheckConfig={
        "Type": "HTTPS", "FullyQualifiedDomainName": "orders-db-west.dev.example.com", "Port": 443,
        "ResourcePath": "/health", "RequestInterval": 30, "FailureThreshold": 3})["HealthCheck"]["Id"]
    records = [
        {"Name": RECORD, "Type": "CNAME", "SetIdentifier": PRIMARY_SET, "Failover": "PRIMARY", "TTL": 60,
         "ResourceRecords": [{"Value": "orders.cluster-abc.us-east-1.rds.amazonaws.com"}]},
        {"Name": RECORD, "Type": "CNAME", "SetIdentifier": SECONDARY_SET, "Failover": "SECONDARY", "TTL": 60,
         "HealthCheckId": check,
         "ResourceRecords": [{"Value": "orders-replica.cluster-def.us-west-2.rds.amazonaws.com"}]},
    ]
    clients.route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={
        "Changes": [{"Action": "CREATE", "ResourceRecordSet": r} for r in records]})
    put_lag(clients, lag_ms if lag_ms is not None else [800.0, 950.0, 700.0, 1200.0, 900.0], now)
    failover = [f.model_copy(update={"hosted_zone_id": zone}) if f.hosted_zone_id else f
                for f in world.config.recovery.failover]
    recovery = world.config.recovery.model_copy(update={"failover": failover})
    world.config = world.config.model_copy(update={"recovery": recovery})
    world.settings = world.settings.model_copy(update={
        "workflow_arn": f"arn:aws:states:{PRIMARY_REGION}:{ACCOUNT}:stateMachine:reflex-{world.config.stage}-failover"})
    return FailoverResources(db=db, workflow=workflow, hosted_zone_id=zone, health_check_id=check)
