"""Read and change the capacity of each kind of scaling target (all AWS calls of the scaler live here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from reflex_core.aws_clients import AwsClients
from reflex_core.scaling_config import AuroraReplicasTarget, AutoScalingGroupTarget, EcsServiceTarget, ScalingPolicy


class TargetNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Capacity:
    desired: int
    running: int
    # The platform's own floor/ceiling where it has one (ASG MinSize/MaxSize, AAS Min/MaxCapacity).
    floor: int | None = None
    ceiling: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class CapacityTarget(Protocol):
    supports_floor: bool

    def read(self) -> Capacity: ...
    def set_desired(self, desired: int) -> None: ...
    def set_floor(self, floor: int) -> None: ...


class EcsService:
    supports_floor = False

    def __init__(self, clients: AwsClients, target: EcsServiceTarget) -> None:
        self._ecs = clients.ecs
        self._t = target

    def read(self) -> Capacity:
        resp = self._ecs.describe_services(cluster=self._t.cluster, services=[self._t.service])
        services = [s for s in resp.get("services", []) if s.get("status") != "INACTIVE"]
        if not services:
            raise TargetNotFound(f"ECS service {self._t.cluster}/{self._t.service} not found")
        svc = services[0]
        return Capacity(desired=int(svc["desiredCount"]), running=int(svc.get("runningCount", 0)))

    def set_desired(self, desired: int) -> None:
        self._ecs.update_service(cluster=self._t.cluster, service=self._t.service, desiredCount=desired)

    def set_floor(self, floor: int) -> None:
        raise NotImplementedError("ECS services have no platform floor; Reflex holds the pre-warm floor itself")


class AutoScalingGroup:
    supports_floor = True

    def __init__(self, clients: AwsClients, target: AutoScalingGroupTarget) -> None:
        self._asg = clients.autoscaling
        self._t = target

    def read(self) -> Capacity:
        groups = self._asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self._t.name])["AutoScalingGroups"]
        if not groups:
            raise TargetNotFound(f"Auto Scaling group {self._t.name} not found")
        g = groups[0]
        in_service = sum(1 for i in g.get("Instances", []) if i.get("LifecycleState") == "InService")
        return Capacity(desired=int(g["DesiredCapacity"]), running=in_service,
                        floor=int(g["MinSize"]), ceiling=int(g["MaxSize"]))

    def set_desired(self, desired: int) -> None:
        # HonorCooldown=False: Reflex applies its own cooldowns, per direction.
        self._asg.set_desired_capacity(AutoScalingGroupName=self._t.name, DesiredCapacity=desired, HonorCooldown=False)

    def set_floor(self, floor: int) -> None:
        self._asg.update_auto_scaling_group(AutoScalingGroupName=self._t.name, MinSize=floor)


class AuroraReplicas:
    """Aurora readers through Application Auto Scaling: Reflex moves the scalable target's
    MinCapacity and Application Auto Scaling adds (or allows removing) the replicas."""

    supports_floor = False
    DIMENSION = "rds:cluster:ReadReplicaCount"

    def __init__(self, clients: AwsClients, target: AuroraReplicasTarget) -> None:
        self._aas = clients.application_autoscaling
        self._rds = clients.rds
        self._t = target

    @property
    def _resource_id(self) -> str:
        return f"cluster:{self._t.cluster}"

    def _scalable_target(self) -> dict[str, Any]:
        resp = self._aas.describe_scalable_targets(ServiceNamespace="rds", ResourceIds=[self._resource_id],
                                                   ScalableDimension=self.DIMENSION)
        targets = resp.get("ScalableTargets", [])
        if not targets:
            raise TargetNotFound(f"Aurora cluster {self._t.cluster} is not registered with Application Auto "
                                 f"Scaling ({self.DIMENSION})")
        return dict(targets[0])

    def read(self) -> Capacity:
        st = self._scalable_target()
        clusters = self._rds.describe_db_clusters(DBClusterIdentifier=self._t.cluster)["DBClusters"]
        readers = sum(1 for m in clusters[0].get("DBClusterMembers", []) if not m.get("IsClusterWriter"))
        return Capacity(desired=int(st["MinCapacity"]), running=readers, ceiling=int(st["MaxCapacity"]))

    def set_desired(self, desired: int) -> None:
        # MaxCapacity is whoever set it's ceiling: Reflex never raises it (the planner caps at it). Registering
        # again with MinCapacity alone keeps it; a ceiling lowered since the plan makes AWS refuse, not exceed.
        self._aas.register_scalable_target(
            ServiceNamespace="rds", ResourceId=self._resource_id, ScalableDimension=self.DIMENSION,
            MinCapacity=desired,
        )

    def set_floor(self, floor: int) -> None:
        raise NotImplementedError("the Aurora floor is the desired count itself")


def capacity_target(clients: AwsClients, policy: ScalingPolicy) -> CapacityTarget:
    t = policy.target
    if isinstance(t, EcsServiceTarget):
        return EcsService(clients, t)
    if isinstance(t, AutoScalingGroupTarget):
        return AutoScalingGroup(clients, t)
    return AuroraReplicas(clients, t)
