"""An ElastiCache replication group's shards as the resharder sees them, and the one call that changes them.

Reads `DescribeReplicationGroups` (Status, ClusterEnabled, NodeGroups[].Slots, PendingModifiedValues.Resharding)
and writes `ModifyReplicationGroupShardConfiguration` (NodeGroupCount, ApplyImmediately, NodeGroupsToRemove).
The same call at the current NodeGroupCount rebalances the slots (ElastiCache's documented way to do it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOTAL_SLOTS = 16384


@dataclass(frozen=True)
class NodeGroupState:
    node_group_id: str
    slots: int
    status: str


@dataclass(frozen=True)
class ReplicationGroupState:
    replication_group_id: str
    status: str
    cluster_enabled: bool
    node_groups: tuple[NodeGroupState, ...]
    # Online resharding in progress (PendingModifiedValues.Resharding.SlotMigration.ProgressPercentage).
    resharding_progress: float | None = None
    # What the answer lacked to count shards or slots (`NodeGroups`, every `Slots`): "" when complete. Both are
    # optional in the API's shape; 0 shards or 0 slots read from their absence would be a guess.
    unreadable: str = ""

    @property
    def node_group_count(self) -> int:
        return len(self.node_groups)

    @property
    def resharding(self) -> bool:
        return self.resharding_progress is not None

    def slots_balanced(self, tolerance: float) -> bool:
        """Every shard holds its even share of the 16,384 slots, within `tolerance` of that share (at least 1)."""
        if not self.node_groups:
            return True
        even = TOTAL_SLOTS / len(self.node_groups)
        allowed = max(1.0, tolerance * even)
        return all(abs(group.slots - even) <= allowed for group in self.node_groups)

    def as_dict(self, tolerance: float) -> dict[str, Any]:
        """The state an action intends and verify reads back (the same keys)."""
        return {"node_group_count": self.node_group_count, "status": self.status,
                "slots_balanced": self.slots_balanced(tolerance)}

    def detail(self, tolerance: float) -> dict[str, Any]:
        """What the audit records as `before`: the intended keys plus each shard's slots and any progress."""
        out = self.as_dict(tolerance) | {"slots": {g.node_group_id: g.slots for g in self.node_groups}}
        if self.resharding_progress is not None:
            out["resharding_progress_percent"] = self.resharding_progress
        return out


def slot_count(slots: str | None) -> int:
    """Slots in an ElastiCache `Slots` string such as "0-5461" or "0-100,5462-8000" (none when absent)."""
    total = 0
    for part in (slots or "").split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        total += (int(high) if high else int(low)) - int(low) + 1
    return total


def parse_replication_group(group: dict[str, Any]) -> ReplicationGroupState:
    progress = (group.get("PendingModifiedValues", {}).get("Resharding", {})
                .get("SlotMigration", {}).get("ProgressPercentage"))
    node_groups = group.get("NodeGroups")
    unreadable = ""
    if not node_groups:
        unreadable = "the answer lists no NodeGroups"
    elif not any(ng.get("Slots") for ng in node_groups):
        unreadable = "the answer gives no node group's Slots"
    return ReplicationGroupState(
        replication_group_id=group["ReplicationGroupId"],
        status=group.get("Status", "unknown"),
        cluster_enabled=bool(group.get("ClusterEnabled", False)),
        node_groups=tuple(
            NodeGroupState(node_group_id=ng["NodeGroupId"], slots=slot_count(ng.get("Slots")),
                           status=ng.get("Status", "unknown"))
            for ng in sorted(group.get("NodeGroups", []), key=lambda ng: ng["NodeGroupId"])
        ),
        resharding_progress=float(progress) if progress is not None else None,
        unreadable=unreadable,
    )


class ReplicationGroups:
    """The ElastiCache calls of the resharder, on an injected client."""

    def __init__(self, elasticache: Any) -> None:
        self._client = elasticache

    def read(self, replication_group_id: str) -> ReplicationGroupState:
        resp = self._client.describe_replication_groups(ReplicationGroupId=replication_group_id)
        return parse_replication_group(resp["ReplicationGroups"][0])

    def modify_shards(self, replication_group_id: str, node_group_count: int,
                      node_groups_to_remove: list[str] | None = None) -> ReplicationGroupState:
        params: dict[str, Any] = {"ReplicationGroupId": replication_group_id, "NodeGroupCount": node_group_count,
                                  "ApplyImmediately": True}
        if node_groups_to_remove:
            params["NodeGroupsToRemove"] = list(node_groups_to_remove)
        resp = self._client.modify_replication_group_shard_configuration(**params)
        return parse_replication_group(resp["ReplicationGroup"])
