"""Run an `events/promoter/` file through the real promoter handler, against its sidecar.

Sidecar keys beyond the scaler's: `given` (the state of the `web` pair before the event; default
`idle`) and `weights` (the pair's weights right after the event, read from the listener: the workflow is
not driven further, so the sidecar shows what the invocation itself did).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reflex_core.clock import VirtualClock
from simulator.aws_world import World
from tests.support.events import arrive_when_stamped
from tests.support.promotion import PromotionBench


def _canary(b: PromotionBench) -> None:
    b.green_ready(release="web 2.4.0")
    b.run(1)


def _awaiting_approval(b: PromotionBench) -> None:
    _canary(b)
    b.run()


def _paused(b: PromotionBench) -> None:
    _canary(b)
    b.console("pause", reason="looking at a dashboard")
    b.run(400)


def _finalized(b: PromotionBench) -> None:
    _awaiting_approval(b)
    b.console("promote")
    b.run(121)


GIVENS: dict[str, Callable[[PromotionBench], None]] = {
    "idle": lambda b: None, "canary": _canary, "awaiting-approval": _awaiting_approval, "paused": _paused,
    "finalized": _finalized,
}
SIDECAR_KEYS = {"given", "weights"}


def check_promoter_event(path: Path, world: World, clock: VirtualClock, expected: dict[str, Any]) -> None:
    b = PromotionBench(world=world, clock=clock)
    given = expected.get("given", "idle")
    assert given in GIVENS, f"unknown given {given!r} (known: {', '.join(GIVENS)})"
    GIVENS[given](b)
    seen = {r["id"] for r in world.audit_records()}
    event = json.loads(path.read_text(encoding="utf-8"))
    arrive_when_stamped(clock, event)

    response = b.invoke(event)
    records = [r for r in world.audit_records() if r["id"] not in seen]

    assert response["status"] == expected["status"], response
    if expected["status"] == "rejected":
        errors = response["errors"]
        for field in expected["error_fields"]:
            assert any(field in e for e in errors), f"no error names {field!r}: {errors}"
        assert [r["outcome"] for r in records] == ["rejected:validation"]
        assert response["parked_in_dlq"] is expected["parked_in_dlq"]
        assert len(world.dlq_messages()) == (1 if expected["parked_in_dlq"] else 0)
        return
    audited = [d["outcome"] for d in response["decisions"] if d.get("audit_id")]
    assert audited == expected["outcomes"], response["decisions"]
    assert sorted(r["outcome"] for r in records) == sorted(expected["outcomes"])
    if "weights" in expected:
        assert b.weights() == expected["weights"]
    for d in response["decisions"]:
        if d["outcome"] == "dry-run":
            assert d["intended"] != d["before"], "dry-run shows the intended change"
