"""A stateful ElastiCache for the resharder (moto has no ModifyReplicationGroupShardConfiguration).

Each call is answered from a small model of the replication groups, and goes through a real botocore client
wrapped in botocore's `Stubber`: the request is checked against the ElastiCache service model (parameter names,
types, required members) and so is the response we hand back, which follows AWS's documented shapes
(DescribeReplicationGroups `ReplicationGroups[].NodeGroups[].Slots`, `PendingModifiedValues.Resharding`; the
error codes of the API reference: `ReplicationGroupNotFoundFault`, `InvalidReplicationGroupState` while the
group is `modifying`, `InvalidParameterCombination` when scaling in names no node group to remove).

`finish(group_id)` completes an online resharding the way ElastiCache does: the new count of node groups with the
16,384 slots spread evenly, status `available`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import botocore.session
from botocore.stub import Stubber
from botocore.validate import validate_parameters

TOTAL_SLOTS = 16384
ACCOUNT = "123456789012"
REGION = "us-east-1"


def even_slots(count: int) -> list[str]:
    """Contiguous, even ranges of the 16,384 slots over `count` node groups (what resharding ends with)."""
    bounds = [round(i * TOTAL_SLOTS / count) for i in range(count + 1)]
    return [f"{bounds[i]}-{bounds[i + 1] - 1}" for i in range(count)]


@dataclass
class Group:
    group_id: str
    node_groups: dict[str, str]  # node group id -> Slots string
    status: str = "available"
    cluster_enabled: bool = True
    pending: dict[str, Any] | None = None  # {"count": n, "remove": [...]} while resharding
    progress: float = 0.0


@dataclass
class ElastiCacheStub:
    groups: dict[str, Group] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        session = botocore.session.get_session()
        self.client = session.create_client("elasticache", region_name=REGION, aws_access_key_id="testing",
                                            aws_secret_access_key="testing")
        self.stubber = Stubber(self.client)
        self.stubber.activate()

    # ------------------------------------------------------------------ setup
    def add_group(self, group_id: str, shards: int, *, status: str = "available", slots: list[str] | None = None,
                  cluster_enabled: bool = True) -> Group:
        ids = [f"{i + 1:04d}" for i in range(shards)]
        group = Group(group_id, dict(zip(ids, slots or even_slots(shards), strict=True)), status=status,
                      cluster_enabled=cluster_enabled)
        if status == "modifying":
            group.pending, group.progress = {"count": shards + 1, "remove": []}, 42.0
        self.groups[group_id] = group
        return group

    def finish(self, group_id: str) -> None:
        group = self.groups[group_id]
        assert group.pending is not None, "no resharding in progress"
        kept = [ng for ng in sorted(group.node_groups) if ng not in group.pending["remove"]]
        while len(kept) < group.pending["count"]:
            kept.append(f"{max(int(i) for i in [*kept, *group.node_groups]) + 1:04d}")
        group.node_groups = dict(zip(kept, even_slots(len(kept)), strict=True))
        group.status, group.pending, group.progress = "available", None, 0.0

    # ------------------------------------------------------------------ the API, as the resharder calls it
    def _checked(self, operation: str, params: dict[str, Any]) -> None:
        """The request against the service model first (a bad request never reaches the model of the groups)."""
        validate_parameters(params, self.client.meta.service_model.operation_model(operation).input_shape)
        self.calls.append((operation, params))

    def describe_replication_groups(self, **params: Any) -> Any:
        self._checked("DescribeReplicationGroups", params)
        group = self.groups.get(params.get("ReplicationGroupId", ""))
        if group is None:
            self.stubber.add_client_error("describe_replication_groups", "ReplicationGroupNotFoundFault",
                                          f"Replication group {params.get('ReplicationGroupId')} not found.", 404,
                                          expected_params=params)
        else:
            self.stubber.add_response("describe_replication_groups", {"ReplicationGroups": [self._shape(group)]},
                                      expected_params=params)
        return self.client.describe_replication_groups(**params)

    def modify_replication_group_shard_configuration(self, **params: Any) -> Any:
        self._checked("ModifyReplicationGroupShardConfiguration", params)
        op = "modify_replication_group_shard_configuration"
        group = self.groups.get(params.get("ReplicationGroupId", ""))
        count = params.get("NodeGroupCount", 0)
        remove = list(params.get("NodeGroupsToRemove", []))
        error: tuple[str, str, int] | None = None
        if group is None:
            error = ("ReplicationGroupNotFoundFault", "Replication group not found.", 404)
        elif group.status != "available":
            error = ("InvalidReplicationGroupState",
                     f"Replication group must be in available state to modify, but is in {group.status} state.", 400)
        elif count < len(group.node_groups) and len(remove) != len(group.node_groups) - count:
            error = ("InvalidParameterCombination",
                     "NodeGroupsToRemove or NodeGroupsToRetain is required when decreasing the node group count.",
                     400)
        elif any(ng not in group.node_groups for ng in remove):
            error = ("InvalidParameterValue", "NodeGroupsToRemove names an unknown node group.", 400)
        if error is not None:
            self.stubber.add_client_error(op, error[0], error[1], error[2], expected_params=params)
            return self.client.modify_replication_group_shard_configuration(**params)
        assert group is not None
        group.status, group.pending, group.progress = "modifying", {"count": count, "remove": remove}, 0.0
        self.stubber.add_response(op, {"ReplicationGroup": self._shape(group)}, expected_params=params)
        return self.client.modify_replication_group_shard_configuration(**params)

    @property
    def modifications(self) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == "ModifyReplicationGroupShardConfiguration"]

    # ------------------------------------------------------------------ documented response shape
    def _shape(self, group: Group) -> dict[str, Any]:
        members = [f"{group.group_id}-{ng}-{n:03d}" for ng in sorted(group.node_groups) for n in (1, 2)]
        shape: dict[str, Any] = {
            "ReplicationGroupId": group.group_id,
            "Description": f"{group.group_id} (cluster mode enabled)",
            "Status": group.status,
            "PendingModifiedValues": {},
            "MemberClusters": members,
            "NodeGroups": [
                {
                    "NodeGroupId": ng,
                    "Status": "available" if group.status == "available" else "modifying",
                    "Slots": slots,
                    "NodeGroupMembers": [
                        {"CacheClusterId": f"{group.group_id}-{ng}-{n:03d}", "CacheNodeId": "0001",
                         "PreferredAvailabilityZone": f"{REGION}{'ab'[n - 1]}"}
                        for n in (1, 2)
                    ],
                }
                for ng, slots in sorted(group.node_groups.items())
            ],
            "AutomaticFailover": "enabled",
            "MultiAZ": "enabled",
            "ClusterEnabled": group.cluster_enabled,
            "CacheNodeType": "cache.r7g.large",
            "TransitEncryptionEnabled": True,
            "AtRestEncryptionEnabled": True,
            "ARN": f"arn:aws:elasticache:{REGION}:{ACCOUNT}:replicationgroup:{group.group_id}",
            "Engine": "valkey",
        }
        if group.cluster_enabled:
            shape["ConfigurationEndpoint"] = {
                "Address": f"clustercfg.{group.group_id}.abc123.use1.cache.amazonaws.com", "Port": 6379}
        if group.pending is not None:
            shape["PendingModifiedValues"] = {"Resharding": {"SlotMigration": {"ProgressPercentage": group.progress}}}
        return shape
