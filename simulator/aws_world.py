"""A moto-backed AWS account holding what a deployed Reflex stack and its web stack would have.

Used by the simulator and by the tests: the Reflex tables (same keys as the CDK constructs),
the kill-switch parameters, the notification topic and DLQ, and one resource per scaling target
in the config (ECS service, Auto Scaling group, Aurora cluster registered with Application Auto Scaling).
Each promotion pair gets its load balancer, listener and target groups (or hosted zone and weighted
records), healthy targets and its guard alarms (see `promotion_world.py`); moto names resources itself, so
the world's config carries the pair's ARNs as moto created them. Call inside an active `moto.mock_aws()`.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))

from reflex_core.aws_clients import AwsClients  # noqa: E402
from reflex_core.clock import Clock  # noqa: E402
from reflex_core.config import (  # noqa: E402
    AuroraReplicasTarget,
    AutoScalingGroupTarget,
    EcsServiceTarget,
    ReflexConfig,
    StageConfig,
)
from reflex_core.runtime import Runtime, build_runtime, install_runtime  # noqa: E402
from reflex_core.settings import RuntimeSettings  # noqa: E402

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


_SESSION: Any = None


def _shared_session() -> Any:
    """One boto3 session per process: it caches botocore's service models, the slow part of a client."""
    global _SESSION
    if _SESSION is None:
        import boto3

        _SESSION = boto3.session.Session(region_name=REGION, aws_access_key_id="testing",
                                         aws_secret_access_key="testing")
    return _SESSION


def moto_clients(max_attempts: int = 3, overrides: dict[str, Any] | None = None,
                 injector: Any = None) -> AwsClients:
    """moto-backed clients; a service named in `overrides` (also when added later, e.g. the local workflow
    driver as `stepfunctions`) is answered by that object instead. With `injector` (simulator.faults.
    FaultInjector), every client carries it."""
    from botocore.config import Config

    config = Config(region_name=REGION, retries={"mode": "standard", "total_max_attempts": max_attempts})
    session = _shared_session()
    def client(name: str) -> Any:
        service, _, region = name.partition("@")  # `<service>@<region>`: another region's client
        made = session.client(service, config=config, region_name=region or REGION)
        return injector.attach(made) if injector is not None else made

    if overrides is None:
        return AwsClients(client)
    swapped = overrides

    def make(service: str) -> Any:
        return _Switchable(service, client(service), swapped)

    return AwsClients(make)


class _Switchable:
    """A client that defers to an override for its service when one is set."""

    def __init__(self, service: str, real: Any, overrides: dict[str, Any]) -> None:
        self._service, self._real, self._overrides = service, real, overrides

    def __getattr__(self, name: str) -> Any:
        return getattr(self._overrides.get(self._service, self._real), name)


@dataclass
class World:
    config: ReflexConfig
    clients: AwsClients
    settings: RuntimeSettings
    overrides: dict[str, Any] = field(default_factory=dict)
    pairs: dict[str, Any] = field(default_factory=dict)  # pair name -> promotion_world.PairResources
    _runtimes: dict[str, Runtime] = field(default_factory=dict)

    def runtime(self, clock: Clock | None = None, reaction: str = "scaler") -> Runtime:
        """The runtime `reaction`'s function would build: its config is that function's view of the stage
        config (the sections it validates in Lambda), so a reaction reading another's section fails here too."""
        settings = self.settings.model_copy(update={"reaction": reaction})
        rt = build_runtime(settings, config=function_view(self.config, reaction), clients=self.clients, clock=clock)
        install_runtime(rt)
        self._runtimes[reaction] = rt
        return rt

    def activate(self, reaction: str, clock: Clock | None = None) -> Runtime:
        """Install the runtime of `reaction` (built once, then reused like a warm Lambda container)."""
        rt = self._runtimes.get(reaction)
        if rt is None or (clock is not None and rt.clock is not clock):
            return self.runtime(clock, reaction)
        install_runtime(rt)
        return rt

    def set_kill_switch(self, scope: str, on: bool) -> None:
        self.clients.ssm.put_parameter(Name=f"{self.settings.kill_switch_prefix}/{scope}",
                                       Value="on" if on else "off", Type="String", Overwrite=True)

    def set_kill_switch_value(self, scope: str, value: str | None) -> None:
        """Any raw value (`on`, `off`, `hard-stop`, an invalid one), or None to delete the parameter."""
        name = f"{self.settings.kill_switch_prefix}/{scope}"
        if value is None:
            with contextlib.suppress(self.clients.ssm.exceptions.ParameterNotFound):
                self.clients.ssm.delete_parameter(Name=name)
            return
        self.clients.ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)

    def invalidate_kill_switch_caches(self) -> None:
        """Every warm function sees the switch at once (as fresh containers would)."""
        for rt in self._runtimes.values():
            rt.kill_switch.invalidate()

    def set_alarm_state(self, name: str, state: str, at: datetime | None = None) -> None:
        """What CloudWatch reports for the alarm from now on (see `set_alarm_state`)."""
        set_alarm_state(self.clients, name, state, at)

    def audit_records(self) -> list[dict[str, Any]]:
        import json

        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.settings.audit_table}
        while True:
            page = self.clients.dynamodb.scan(**kwargs)
            items.extend(json.loads(i["record"]["S"]) for i in page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(items, key=lambda r: (r["at"], r["id"]))

    def dlq_messages(self) -> list[str]:
        resp = self.clients.sqs.receive_message(QueueUrl=self.settings.dead_letter_queue_url,
                                                MaxNumberOfMessages=10)
        return [m["Body"] for m in resp.get("Messages", [])]


def set_alarm_state(clients: AwsClients, name: str, state: str, at: datetime | None = None) -> None:
    """What CloudWatch reports for the alarm from now on (DescribeAlarms); the event is sent separately.

    Creates the alarm when it does not exist yet. moto stamps the change with the machine's time; `at`
    (the virtual clock's time of the transition) replaces it, so "OK for long enough" is measured on the
    scenario's clock, as CloudWatch's StateUpdatedTimestamp would be."""
    from botocore.exceptions import ClientError

    cloudwatch = clients.cloudwatch
    try:
        cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="set by the simulation")
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("ResourceNotFound", "ResourceNotFoundException"):
            raise
        cloudwatch.put_metric_alarm(AlarmName=name, MetricName=name, Namespace="Simulated", Statistic="Average",
                                    Period=60, EvaluationPeriods=1, Threshold=1.0,
                                    ComparisonOperator="GreaterThanThreshold")
        cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="set by the simulation")
    if at is not None:
        backdate_alarm(name, at)


def delete_alarm(clients: AwsClients, name: str) -> None:
    clients.cloudwatch.delete_alarms(AlarmNames=[name])


def backdate_alarm(name: str, at: datetime) -> None:
    """Set the alarm's StateUpdatedTimestamp in moto's CloudWatch to `at` (moto has no API for it)."""
    from moto.cloudwatch.models import cloudwatch_backends

    alarm = cloudwatch_backends[ACCOUNT][REGION].alarms.get(name)
    if alarm is not None:
        alarm.state_updated_timestamp = at.astimezone(UTC).replace(tzinfo=None)


def function_view(config: ReflexConfig, reaction: str) -> StageConfig:
    """The config a deployed `reaction` function validates: the common part and its own sections."""
    from cdn_batcher.cdn_batch_reaction import CdnBatchReaction

    from advisor.advisor_reaction import AdvisorReaction
    from drills.drill_reaction import DrillReaction
    from failover.failover_reaction import FailoverReaction
    from invalidator.invalidation_reaction import InvalidationReaction
    from promoter.promotion_reaction import PromotionReaction
    from reflex_core.invalidation_config import InvalidationStageConfig
    from resharder.resharding_reaction import ReshardingReaction
    from scaler.scaling_reaction import ScalingReaction
    from shards.shard_reaction import ShardReaction

    models: dict[str, type[StageConfig]] = {
        r.name: r.config_model
        for r in (ScalingReaction, PromotionReaction, InvalidationReaction, CdnBatchReaction, ShardReaction,
                  ReshardingReaction, DrillReaction, FailoverReaction)
    }
    models[AdvisorReaction.name] = AdvisorReaction.config_model
    models.setdefault("cache_health", InvalidationStageConfig)  # a collector, not a pipeline reaction
    model = models.get(reaction)
    if model is None:
        raise ValueError(f"unknown reaction {reaction!r}; known: {', '.join(sorted(models))}")
    # A projection of a config validated already (tests adjust some values to what moto hands out, e.g. its
    # hosted zone ids, which AWS's patterns refuse); load_stage_config is the path that validates in Lambda.
    fields = set(model.model_fields)
    return model.model_construct(_fields_set=config.model_fields_set & fields,
                                 **{name: getattr(config, name) for name in fields})


def create_world(config: ReflexConfig, capacity: dict[str, int] | None = None, *,
                 clients: AwsClients | None = None, injector: Any = None) -> World:
    """Create Reflex's own resources and one resource per configured target (desired from `capacity`)."""
    overrides: dict[str, Any] = {}
    clients = clients or moto_clients(overrides=overrides, injector=injector)
    stage = config.stage
    ddb = clients.dynamodb
    names = {"audit": f"reflex-{stage}-audit", "state": f"reflex-{stage}-state",
             "idem": f"reflex-{stage}-idempotency"}
    ddb.create_table(TableName=names["audit"], BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                {"AttributeName": "sk", "KeyType": "RANGE"}])
    ddb.create_table(TableName=names["state"], BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    ddb.create_table(TableName=names["idem"], BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    topic_arn = clients.sns.create_topic(Name=config.notify.topic_name)["TopicArn"]
    dlq_url = clients.sqs.create_queue(QueueName=f"reflex-{stage}-dlq")["QueueUrl"]
    prefix = f"/reflex/{stage}/kill-switch"
    for scope in ("global", "scaler", "promoter", "shards"):
        clients.ssm.put_parameter(Name=f"{prefix}/{scope}", Value="off", Type="String", Overwrite=True)

    capacity = capacity or {}
    for policy in config.scaling:
        desired = capacity.get(policy.name, policy.bounds.min)
        _create_target(clients, policy.target, desired, policy.bounds.max)

    from simulator.promotion_world import create_pairs, workflow_arn

    config, pairs = create_pairs(clients, config)
    settings = RuntimeSettings(stage=stage, reaction="scaler", audit_table=names["audit"],
                               state_table=names["state"], idempotency_table=names["idem"],
                               notify_topic_arn=topic_arn, event_bus_name="default",
                               kill_switch_prefix=prefix, dead_letter_queue_url=dlq_url,
                               workflow_arn=workflow_arn(stage) if config.promotions else "")
    return World(config=config, clients=clients, settings=settings, overrides=overrides, pairs=pairs)


def _create_target(clients: AwsClients, target: Any, desired: int, maximum: int) -> None:
    if isinstance(target, EcsServiceTarget):
        clients.ecs.create_cluster(clusterName=target.cluster)
        clients.ecs.create_service(cluster=target.cluster, serviceName=target.service, desiredCount=desired)
    elif isinstance(target, AutoScalingGroupTarget):
        template = f"{target.name}-lt"
        clients.ec2.create_launch_template(LaunchTemplateName=template,
                                           LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"})
        clients.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=target.name, LaunchTemplate={"LaunchTemplateName": template},
            MinSize=0, MaxSize=maximum, DesiredCapacity=desired, AvailabilityZones=[f"{REGION}a"])
    elif isinstance(target, AuroraReplicasTarget):
        clients.rds.create_db_cluster(DBClusterIdentifier=target.cluster, Engine="aurora-postgresql",
                                      MasterUsername="reflex", MasterUserPassword="not-a-secret-1")
        clients.rds.create_db_instance(DBInstanceIdentifier=f"{target.cluster}-writer",
                                       DBClusterIdentifier=target.cluster, Engine="aurora-postgresql",
                                       DBInstanceClass="db.r6g.large")
        clients.application_autoscaling.register_scalable_target(
            ServiceNamespace="rds", ResourceId=f"cluster:{target.cluster}",
            ScalableDimension="rds:cluster:ReadReplicaCount", MinCapacity=desired, MaxCapacity=maximum)
