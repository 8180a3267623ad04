"""The `sharding` config section: defaults, placement, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from reflex_core.config import parse_config
from reflex_core.config_base import ConfigError

BASE: dict[str, Any] = {"stage": "test", "notify": {"topic_name": "t"}}


def _set(**over: Any) -> dict[str, Any]:
    return {"name": "orders", "buckets": 8,
            "shards": [{"name": "a", "connection": {"kind": "dsn", "dsn": "host=127.0.0.1 dbname=a"}},
                       {"name": "b", "connection": {"kind": "dsn", "dsn": "host=127.0.0.1 dbname=b"}}],
            "tables": [{"name": "orders", "key_column": "tenant_id"}]} | over


def _parse(**over: Any) -> Any:
    return parse_config(BASE | {"sharding": {"sets": [_set(**over)]}}, "test.yaml")


def test_defaults_and_initial_placement() -> None:
    s = _parse().sharding.sets[0]
    assert s.transfer == "online" and s.tolerance == 0.10 and s.key.type == "text"
    assert s.initial_assignment() == ["a"] * 4 + ["b"] * 4
    placed = _parse(placement=[{"shard": "b", "buckets": ["0-5"]}, {"shard": "a", "buckets": ["6", "7"]}])
    assert placed.sharding.sets[0].initial_assignment() == ["b"] * 6 + ["a"] * 2


@pytest.mark.parametrize(("over", "field"), [
    ({"placement": [{"shard": "zz", "buckets": ["0-7"]}]}, "placement.0.shard"),
    ({"placement": [{"shard": "a", "buckets": ["0-3"]}]}, "placement: places 4 of 8"),
    ({"placement": [{"shard": "a", "buckets": ["0-9"]}]}, "placement.0.buckets: bucket 8"),
    ({"placement": [{"shard": "a", "buckets": ["x"]}]}, "placement.0.buckets"),
    ({"transfer": "teleport"}, "sharding.sets.0.transfer"),
    ({"tables": []}, "sharding.sets.0.tables"),
    ({"tables": [{"name": "orders; drop", "key_column": "t"}]}, "sharding.sets.0.tables.0.name"),
    ({"buckets": 1}, "fewer buckets than shards"),
    ({"shards": [{"name": "a", "connection": {"kind": "dsn", "dsn": "host=x password=p"}}]},
     "sharding.sets.0.shards.0.connection.dsn.dsn"),
    ({"shards": [{"name": "a", "connection": {"kind": "secret", "secret_id": "s"}}]}, "sharding.vpc: required"),
    ({"on_events": [{"source": "reflex.test", "detail_type": "ShardAdded"}]}, "sharding.sets.0.on_events.0.source"),
])
def test_errors_name_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(**over)
    assert "test.yaml" in str(err.value)
    assert field in str(err.value)


def test_set_and_shard_names_are_unique() -> None:
    with pytest.raises(ConfigError, match="repeated: orders"):
        parse_config(BASE | {"sharding": {"sets": [_set(), _set()]}}, "test.yaml")
    with pytest.raises(ConfigError, match="repeated: a"):
        _parse(shards=[_set()["shards"][0]] * 2)
