"""Issue 13's fault matrix: each AWS call of an acting invocation x each fault kind, then Lambda's retries.

`make test` runs a sample of the cells (every fault kind on the calls around the action, and a spread of the
others); `make fault-matrix` (REFLEX_FULL_FAULT_MATRIX=1) runs every cell. docs/resilience.md summarizes it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import T0
from tests.support import events as ev
from tests.support.fault_matrix import MATRIX_KINDS, Case, clean_calls, run_cell

FULL = os.environ.get("REFLEX_FULL_FAULT_MATRIX") == "1"


def _world():
    from reflex_core.config import load_config_file
    from reflex_core.scaling_config import Prewarm
    from simulator.aws_world import create_world
    from tests.conftest import ROOT

    config = load_config_file(ROOT / "config" / "dev.yaml")
    morning = Prewarm(name="morning", cron="0 8 ? * MON-FRI *", timezone="UTC", min=10, for_minutes=60)
    scaling = [p.model_copy(update={"prewarm": [morning]}) if p.name == "workers" else p for p in config.scaling]
    return create_world(config.model_copy(update={"scaling": scaling}), {"api": 4, "workers": 2, "reporting-db": 1})


def _clock():
    from reflex_core.clock import VirtualClock

    return VirtualClock(T0 + timedelta(seconds=30))


def _scaler():
    from scaler.handler import lambda_handler

    return lambda_handler


def _api(world) -> int:
    return world.clients.ecs.describe_services(cluster="web", services=["api"])["services"][0]["desiredCount"]


def _workers(world) -> tuple[int, int]:
    g = world.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web-workers"])[
        "AutoScalingGroups"][0]
    return g["MinSize"], g["DesiredCapacity"]


ALARM_CASE = Case(
    name="scaler: api latency alarm into ALARM (breach 60 % -> +50 %)",
    setup=lambda world, clock: None,
    deliveries=lambda world: [
        ev.eventbridge_alarm("api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0),
        ev.sns_alarm("api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0),
    ],
    observe=_api,
    target_key="ecs-service/web/api",
    handler=_scaler,
)

PREWARM_CASE = Case(
    name="scaler: weekday-morning pre-warm of the workers ASG (floor 0 -> 10)",
    setup=lambda world, clock: None,
    deliveries=lambda world: [ev.schedule("workers-morning", "prewarm", T0, policy="workers",
                                          params={"prewarm": "morning"})],
    observe=_workers,
    target_key="asg/web-workers",
    handler=_scaler,
)


def _cells(case: Case, calls: list[str]) -> list[tuple[int, str, str]]:
    cells = [(i + 1, op, kind) for i, op in enumerate(calls) for kind in MATRIX_KINDS]
    if FULL:
        return cells
    acting = {i + 1 for i, op in enumerate(calls) if op.split(".")[1] in
              ("UpdateService", "UpdateAutoScalingGroup", "SetDesiredCapacity", "PutItem", "UpdateItem")}
    return [c for c in cells if c[0] in acting or c[0] % 7 == 0]


def _check(case: Case, cell, expected_final: Any) -> None:
    label = f"{case.name}: {cell.kind} on call {cell.call} ({cell.operation}); states {cell.states}, " \
            f"errors {cell.errors}"
    # At most one change per transition, and the change that should happen has happened.
    assert cell.final == expected_final, label
    # Every state on the way is the initial one, the final one, or (a two-write action interrupted between its
    # writes) a mix of the two: never a third value.
    first = cell.states[0]
    for state in cell.states:
        if isinstance(state, tuple):
            assert all(v in (a, b) for v, a, b in zip(state, first, expected_final, strict=True)), label
        else:
            assert state in (first, expected_final), label
    # Exactly one audit record of the change.
    assert cell.executed == 1, label
    # The lock ends released or expiring within a lease.
    if cell.lock is not None:
        assert cell.lock["lease_until"] <= cell.lock["now"] + 130, label


@pytest.mark.parametrize("case", [ALARM_CASE, PREWARM_CASE], ids=["alarm", "prewarm"])
def test_fault_matrix(case: Case):
    calls = clean_calls(case, _world, _clock)
    clean = run_cell(case, _world, _clock, 10_000, "none", "throttle")  # a call index never reached: clean run
    assert clean.executed == 1 and clean.errors == [], clean
    failures = []
    for call, op, kind in _cells(case, calls):
        cell = run_cell(case, _world, _clock, call, op, kind)
        try:
            _check(case, cell, clean.final)
        except AssertionError as err:
            failures.append(str(err))
    assert not failures, "\n".join(failures)
