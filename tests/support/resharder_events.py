"""Run an `events/resharder/` file through the real resharder handler, against its sidecar.

Sidecar keys beyond the scaler's: `given` (the replication group `sessions` before the event: `shards`, optional
`status` and `slots`, and `alarms`: alarm name -> state recorded for the policy and set in CloudWatch, OK
states 7,300 s old, ALARM states 30 s old) and `modified` (the one ModifyReplicationGroupShardConfiguration
request the event sends; absent: none is sent). ElastiCache is the Stubber-checked stub of
tests/support/elasticache_stub.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from reflex_core.clock import VirtualClock
from reflex_core.state_store import AlarmMemory
from simulator.aws_world import World
from tests.conftest import FakeLambdaContext
from tests.support.elasticache_stub import ElastiCacheStub

SIDECAR_KEYS = {"given", "modified"}
AGE_S = {"OK": 7300, "ALARM": 30, "INSUFFICIENT_DATA": 30}


def check_resharder_event(path: Path, world: World, clock: VirtualClock, expected: dict[str, Any]) -> None:
    from resharder.handler import lambda_handler

    given = expected.get("given", {})
    stub = ElastiCacheStub()
    stub.add_group("sessions", int(given.get("shards", 3)), status=given.get("status", "available"),
                   slots=given.get("slots"))
    world.overrides["elasticache"] = stub
    rt = world.runtime(clock, reaction="resharder")
    for name, state in given.get("alarms", {}).items():
        at = (clock.now() - timedelta(seconds=AGE_S[state])).timestamp()
        rt.store.remember_alarm(AlarmMemory(name=name, state=state, changed_at=at), ["resharding:sessions"],
                                clock.now())
        world.set_alarm_state(name, state, clock.now() - timedelta(seconds=AGE_S[state]))  # CloudWatch agrees
    event = json.loads(path.read_text(encoding="utf-8"))

    response = lambda_handler(event, FakeLambdaContext())
    records = world.audit_records()

    assert response["status"] == expected["status"], response
    if expected["status"] == "rejected":
        for field in expected["error_fields"]:
            assert any(field in e for e in response["errors"]), f"no error names {field!r}: {response['errors']}"
        assert [r["outcome"] for r in records] == ["rejected:validation"]
        assert response["parked_in_dlq"] is expected["parked_in_dlq"]
        assert stub.modifications == []
        return
    decisions = response["decisions"]
    assert [d["outcome"] for d in decisions if d.get("audit_id")] == expected["outcomes"], decisions
    assert sorted(r["outcome"] for r in records) == sorted(expected["outcomes"])
    assert stub.modifications == ([expected["modified"]] if "modified" in expected else [])
    for d in decisions:
        if d["outcome"] == "executed":
            assert set(d["after"]) == set(d["intended"]), "verify reads back the keys of intended"
        if d["outcome"] == "dry-run":
            record = next(r for r in records if r["id"] == d["audit_id"])
            assert record["dry_run"] is True
