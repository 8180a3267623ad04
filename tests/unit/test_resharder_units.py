"""The resharder's pure parts: slot arithmetic, shard-count steps, which shards go, and the `resharding` config."""

from __future__ import annotations

import pytest

from reflex_core.config import ConfigError, parse_config
from reflex_core.resharding_config import ShardBounds
from resharder.replication_groups import NodeGroupState, ReplicationGroupState, parse_replication_group, slot_count
from resharder.shard_sizing import add_target, groups_to_remove, remove_target

BASE = {"stage": "qa", "notify": {"topic_name": "reflex-qa"}}


@pytest.mark.parametrize(("slots", "count"), [
    ("0-5461", 5462), ("0-100,5462-8000", 101 + 2539), ("7", 1), ("", 0), (None, 0), ("0-16383", 16384),
])
def test_slot_count(slots, count):
    assert slot_count(slots) == count


def _state(*slots: int) -> ReplicationGroupState:
    return ReplicationGroupState("g", "available", True,
                                 tuple(NodeGroupState(f"{i + 1:04d}", s, "available") for i, s in enumerate(slots)))


def test_slots_balanced_within_the_tolerance_of_the_even_share():
    assert _state(5461, 5462, 5461).slots_balanced(0.05)
    assert not _state(10000, 3000, 3384).slots_balanced(0.05)
    assert _state(5700, 5300, 5384).slots_balanced(0.05)  # even 5461: within 273
    assert not _state(5800, 5200, 5384).slots_balanced(0.05)


def test_described_group_parses_slots_and_progress():
    group = parse_replication_group({
        "ReplicationGroupId": "sessions", "Status": "modifying", "ClusterEnabled": True,
        "PendingModifiedValues": {"Resharding": {"SlotMigration": {"ProgressPercentage": 37.5}}},
        "NodeGroups": [{"NodeGroupId": "0002", "Slots": "8192-16383", "Status": "modifying"},
                       {"NodeGroupId": "0001", "Slots": "0-8191", "Status": "modifying"}],
    })
    assert [g.node_group_id for g in group.node_groups] == ["0001", "0002"]
    assert group.resharding and group.resharding_progress == 37.5
    assert group.as_dict(0.05) == {"node_group_count": 2, "status": "modifying", "slots_balanced": True}


def test_steps_stay_within_bounds_and_max_step():
    bounds = ShardBounds(min=2, max=6, max_step=2)
    assert add_target(3, 1, bounds) == 4
    assert add_target(3, 5, bounds) == 5  # max_step
    assert add_target(6, 1, bounds) == 6  # at max
    assert remove_target(3, 1, bounds) == 2
    assert remove_target(2, 1, bounds) == 2  # at min
    assert remove_target(6, 4, bounds) == 4


def test_the_shards_holding_the_fewest_slots_go_first_the_newest_among_equals():
    groups = _state(4096, 2905, 5287, 4096).node_groups
    assert groups_to_remove(groups, 3) == ["0002"]
    assert groups_to_remove(groups, 2) == ["0002", "0004"]
    assert groups_to_remove(_state(4096, 4096, 4096, 4096).node_groups, 3) == ["0004"]
    assert groups_to_remove(groups, 4) == []


def _policy(**extra):
    return {"name": "sessions", "replication_group": "sessions", "bounds": {"min": 2, "max": 8}} | extra


def test_config_section_validates_and_defaults():
    config = parse_config(BASE | {"resharding": [_policy(add_shards={"alarms": {"names": ["m"]}})]}, "qa.yaml")
    (policy,) = config.resharding
    assert policy.key == "elasticache-rg/sessions" and policy.alarm_scope == "resharding:sessions"
    assert policy.remove_shards is None and policy.rate_limit.max_actions_per_hour == 4
    assert policy.add_shards is not None and policy.add_shards.cooldown_s == 1800


@pytest.mark.parametrize(("policies", "field"), [
    ([_policy(replication_group="9starts-with-digit")], "resharding.0.replication_group"),
    ([_policy(replication_group="ends-")], "resharding.0.replication_group"),
    ([_policy(replication_group="a--b")], "resharding.0.replication_group"),
    ([_policy(bounds={"min": 5, "max": 2})], "resharding.0.bounds"),
    ([_policy(bounds={"min": 1, "max": 501})], "resharding.0.bounds.max"),
    ([_policy(add_shards={"alarms": {}})], "resharding.0.add_shards.alarms"),
    ([_policy(remove_shards={"when_ok_for_s": 60})], "resharding.0.remove_shards.when_ok_for_s"),
    ([_policy(), _policy(replication_group="other")], "names must be unique"),
    ([_policy(), _policy(name="other")], "one resharding policy"),
    ([_policy(on_events=[{"source": "reflex.qa", "detail_type": "X"}])], "would loop"),
    ([_policy(shards=3)], "resharding.0.shards"),
])
def test_config_errors_name_the_file_and_field(policies, field):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE | {"resharding": policies}, "qa.yaml")
    assert "qa.yaml" in str(err.value) and field in str(err.value)
