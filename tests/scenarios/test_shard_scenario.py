"""The shard rebalancing scenario end to end: throw-away PostgreSQL (wal_level=logical), the real shards
handler, the move workflow run by the local driver, a live write workload through the router."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.pg_cluster import postgres_available
from simulator.shard_scenario import is_shard_scenario, run
from tests.conftest import ROOT

SCENARIO = ROOT / "scenarios" / "shard_rebalance.yaml"
pytestmark = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries not installed")


def test_the_scenario_is_recognised_as_a_shard_scenario() -> None:
    assert is_shard_scenario(str(SCENARIO))
    assert not is_shard_scenario(str(ROOT / "scenarios" / "traffic_spike.yaml"))


def test_the_rebalance_loses_no_acknowledged_write_and_respects_the_concurrency_cap(tmp_path: Path) -> None:
    assert run(str(SCENARIO), str(tmp_path), check=True) == 0  # placement check: every acked write once
    audit = json.loads((tmp_path / "shard_rebalance.audit.json").read_text())
    outcomes = [(r["operation"], r["outcome"]) for r in audit if r.get("operation") in ("rebalance", "move", "plan")]
    assert ("rebalance", "executed") in outcomes  # the alarm's own plan moved buckets off the hot shard
    assert ("plan", "dry-run") in outcomes
    assert ("move", "skipped:move-refused") in outcomes  # orders-1 already ran a move
    assert ("move", "executed") in outcomes  # after the first move ended
    timeline = (tmp_path / "shard_rebalance.timeline.txt").read_text()
    assert "PASS" in timeline and '"moves": []' in timeline
    assert '"_aws"' not in timeline  # handler EMF lines go to the handler log
