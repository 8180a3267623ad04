"""The shard map item's `states`: the per-bucket form (what routers released before the range form read) while it
is small, the range form for claims of thousands of buckets; both read back the same."""

from __future__ import annotations

import json

from shards.shard_map import PER_BUCKET_STATES_LIMIT, BucketState, ShardMap


def _map(moving: range) -> ShardMap:
    owners = ["a"] * 16384
    states = {b: BucketState("copying", "m1", "a", "b") for b in moving}
    return ShardMap(set_name="orders", buckets=len(owners), key_type="text", owners=owners, version=3,
                    states=states)


def test_a_small_claim_keeps_the_per_bucket_form_older_routers_read() -> None:
    item = _map(range(0, 64)).to_item()
    states = json.loads(item["states"]["S"])
    assert isinstance(states, dict) and states["63"] == {"state": "copying", "move_id": "m1", "source": "a",
                                                         "target": "b"}
    assert ShardMap.from_item(item).states == _map(range(0, 64)).states


def test_a_large_claim_takes_the_range_form_and_reads_back_the_same() -> None:
    big = _map(range(0, 8192))
    item = big.to_item()
    assert len(json.dumps({str(b): 1 for b in range(8192)})) < PER_BUCKET_STATES_LIMIT < len(
        json.dumps({str(b): {"state": "copying", "move_id": "m1", "source": "a", "target": "b"} for b in range(8192)}))
    states = json.loads(item["states"]["S"])
    assert states == [{"state": "copying", "move_id": "m1", "source": "a", "target": "b", "buckets": "0-8191"}]
    assert ShardMap.from_item(item).states == big.states


def test_a_move_record_with_fields_from_a_newer_release_still_loads() -> None:
    from shards.shard_map import MoveRecord

    record = {"pk": {"S": "shardmove#orders#m1"}, "body": {"S": json.dumps({
        "set_name": "orders", "id": "m1", "buckets": [1, 2], "source": "a", "target": "b", "mode": "online",
        "phase": "copying", "a_field_of_a_later_release": True})}}
    move = MoveRecord.from_item(record)
    assert move.id == "m1" and move.phase == "copying"
