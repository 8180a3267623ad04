"""events/failover/ through the real failover handler, in the failover world (simulator/failover_world.py).

The sidecar's `given` sets up the run the command finds: `awaiting-approval` (alice asked for a switchover, the
workflow's gate is open), `failed-over` (the secondary is the writer and the old primary has rejoined with a steady
lag: what a failback starts from). No console command touches the database itself (the workflow's act step does,
after the approval): every event must leave the global database exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simulator import failover_world as fw
from tests.conftest import FakeLambdaContext

GIVEN = {"awaiting-approval", "failed-over"}


def _given(world: Any, clock: Any, res: fw.FailoverResources, given: str | None) -> None:
    from failover.handler import lambda_handler

    if given == "awaiting-approval":
        lambda_handler({"command": "failover", "failover": "orders-global", "mode": "switchover",
                        "reason": "planned region move", "operator": "alice", "request_id": "given-1"},
                       FakeLambdaContext())
        [state] = [e["input"] for e in res.workflow.executions.values()]
        clock.advance(1)
        lambda_handler({"reflex_step": {
            "step": "wait_for_approval", "execution": f"arn:aws:states:us-east-1:123456789012:execution:x:"
                                                      f"{state['run_id']}",
            "state": "Approval", "entered_at": clock.now().isoformat(), "retry": 0, "input": state,
            "task_token": res.workflow.new_token()}}, FakeLambdaContext())
        clock.advance(1)
    elif given == "failed-over":
        res.db.writer = fw.SECONDARY_ARN
        fw.put_lag(world.clients, [300.0, 250.0, 400.0, 200.0], clock.now(), cluster=fw.PRIMARY_ID,
                   region=fw.PRIMARY_REGION)


def check_failover_event(path: Path, world: Any, clock: Any, expected: dict[str, Any]) -> None:
    from failover.handler import lambda_handler

    event = json.loads(path.read_text(encoding="utf-8"))
    given = expected.get("given")
    assert given is None or given in GIVEN, f"given: one of {sorted(GIVEN)}"
    try:
        res = fw.create_failover(world, clock.now())
        world.runtime(clock, reaction="failover")
        _given(world, clock, res, given)
        before = res.db.snapshot()
        seen = len(world.audit_records())
        response = lambda_handler(event, FakeLambdaContext())
        records = world.audit_records()[seen:]
        assert response["status"] == expected["status"], response
        if expected["status"] == "rejected":
            for field in expected["error_fields"]:
                assert any(field in e for e in response["errors"]), response["errors"]
            assert response["parked_in_dlq"] is expected["parked_in_dlq"]
            assert [r["outcome"] for r in records] == ["rejected:validation"]
        else:
            assert [r["outcome"] for r in records] == expected["outcomes"], records
        assert res.db.snapshot() == before and res.db.promotions() == []
    finally:
        world.overrides.clear()
