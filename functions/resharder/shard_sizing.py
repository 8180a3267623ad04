"""Pure shard-count arithmetic: how many node groups after a change, and which ones to remove. No I/O."""

from __future__ import annotations

from collections.abc import Sequence

from reflex_core.resharding_config import ShardBounds
from resharder.replication_groups import NodeGroupState


def add_target(current: int, step: int, bounds: ShardBounds) -> int:
    """`step` more shards (at most max_step), never above the maximum (and never fewer than now)."""
    return max(current, min(current + min(step, bounds.max_step), bounds.max))


def remove_target(current: int, step: int, bounds: ShardBounds) -> int:
    """`step` fewer shards (at most max_step), never below the minimum (and never more than now)."""
    return min(current, max(current - min(step, bounds.max_step), bounds.min))


def groups_to_remove(node_groups: Sequence[NodeGroupState], keep: int) -> list[str]:
    """The node groups to remove to keep `keep`: those holding the fewest slots (the least data to move), the
    highest id first among equals (the most recently added)."""
    ranked = sorted(node_groups, key=lambda group: (group.slots, _descending(group.node_group_id)))
    return sorted(group.node_group_id for group in ranked[: max(0, len(node_groups) - keep)])


def _descending(text: str) -> tuple[int, ...]:
    return tuple(-ord(ch) for ch in text)
