"""Issue 16: a rollback must win against every step running at the same time, and stay won.

A guard alarm's rollback (its own invocation) interleaved with each step of a promotion (shift, check, gate,
hold, finalize, cleanup, console commands) at every AWS call of both, on an ALB pair and a Route 53 pair
(tests/support/promotion_races.py). After the race the workflow goes on and the periodic reconcile runs once
(what the schedule does every `evaluate_every_minutes`); then:

* whenever a rollback was decided, 100 % of the traffic is on the last known-good colour;
* the record agrees with the traffic (live colour, status, weights);
* each invocation leaves exactly one audit record for the pair, with its true outcome;
* `DeploymentCompleted` is never published for a release rolled back before it finalized.

By default 5 named hand-overs per step on the ALB pair and 2 on the Route 53 pair run (`_sample`: 91 cells);
REFLEX_FULL_PROMOTION_RACES=1 (`make promotion-races`) runs, for both kinds and both orders, the second
invocation overtaking the first before each of its calls, and the first taking over again before each call of the
second from each named hand-over (`_grid`): about 7,000 cells, a few hours on one core;
REFLEX_PROMOTION_RACES_STRIDE=N runs every N-th cell of each group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from promoter.promotion_plan import ABORTED, ENDED, FINALIZED, IN_FLIGHT, ROLLED_BACK, all_on
from reflex_core.promotion_config import Route53PairTarget, Route53Side
from reflex_core.runtime import install_runtime
from tests.conftest import T0
from tests.support.promotion import bench, completed_events, with_pair
from tests.support.promotion_races import SCENARIOS, CellOutcome, Scenario, Stop, run_cell

FULL = os.environ.get("REFLEX_FULL_PROMOTION_RACES") == "1"
# Every N-th cell of each group of the full matrix (a different offset per group), to cover all 52 groups end to
# end in a fraction of the time: REFLEX_PROMOTION_RACES_STRIDE=10 make promotion-races.
STRIDE = max(1, int(os.environ.get("REFLEX_PROMOTION_RACES_STRIDE") or 1))
ELB = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup"
ROUTE53 = Route53PairTarget(
    kind="route53", hosted_zone_id="Z0123456789ABCDEFGHIJ", record_name="www.example.com.", record_type="A",
    blue=Route53Side(set_identifier="blue", target_group_arns=[f"{ELB}/www-blue/0123456789abcdef"]),
    green=Route53Side(set_identifier="green", target_group_arns=[f"{ELB}/www-green/fedcba9876543210"]),
)
FAMILIES = ("step-first", "alarm-first")
_LENGTHS: dict[tuple[str, str, str], tuple[int, int]] = {}


def _write(kind: str) -> str:
    return "ModifyListener" if kind == "alb" else "ChangeResourceRecordSets"


def _sample(scenario: Scenario, kind: str, every: bool = False) -> list[tuple[str, Stop, Stop]]:
    """The default cells of a scenario: the hand-overs that matter, named by call (an unreached one runs the two
    invocations one after the other). The step overtaken right before its traffic write (a shift) or its record's
    re-read (the others), the rollback then overtaken in turn right before its own record write; the step
    overtaken right before its record write; the rollback overtaken by the whole step right before its first
    traffic write (the fast path's: it read the weights, the step moves them) and right after its plan (intent)."""
    shift = scenario.step == "shift"
    step_write: Stop = (_write(kind), 1) if shift else ("GetItem:promotion", 2)
    cells: list[tuple[str, Stop, Stop]] = [
        ("step-first", step_write, 0),
        ("step-first", step_write, ("PutItem:promotion", 1)),
        ("step-first", ("PutItem:promotion", 1), 0),
        ("alarm-first", (_write(kind), 1), 0),
        ("alarm-first", ("PutItem:intent", 1), 0),
    ]
    return cells if kind == "alb" or every else cells[:2]


def _grid(n_first: int, n_second: int, named: list[Stop]) -> list[tuple[Stop, Stop]]:
    """The full matrix of a (scenario, kind, who starts): the second overtaking the first before each of its calls
    (and after its last), never handing back; and the first handing over at each named point, then taking over
    again before each call of the second. (Every pair of points would be ~1000 cells per group, ~20 min each.)"""
    cells: list[tuple[Stop, Stop]] = [(at, 0) for at in range(1, n_first + 2)]
    cells += [(at, back) for at in named for back in range(1, n_second + 1)]
    return cells


CELLS = [pytest.param(s, kind, id=f"{kind}-{s.name}") for s in SCENARIOS for kind in ("alb", "route53")]
FULL_CELLS = [pytest.param(s, kind, family, id=f"{kind}-{s.name}-{family}")
              for s in SCENARIOS for kind in ("alb", "route53") for family in FAMILIES]


@pytest.fixture
def world(dev_config) -> Iterator[Any]:
    """`make(kind)`: a fresh bench on its own moto account and clock (call inside `with mock_aws()`)."""
    from reflex_core.clock import VirtualClock

    yield lambda kind: bench(with_pair(dev_config, **({"target": ROUTE53} if kind == "route53" else {})),
                             VirtualClock(T0))
    install_runtime(None)


def check_cell(cell: CellOutcome, label: str) -> None:
    record = cell.record
    p = record.promotion
    assert p is not None, label
    rollbacks = [r for r in cell.audit if r["operation"] in ("rollback", "abort")]
    decided = [r for r in rollbacks if r["outcome"] == "executed"]
    good = all_on(p.from_colour)
    # 1. a rollback decided: 100 % on the last known-good colour, and the record says so
    if decided:
        assert cell.weights == good, f"a rollback was decided, weights end {cell.weights}: {label}"
        assert p.status in (ROLLED_BACK, ABORTED), f"a rollback was decided, record {p.status}: {label}"
    # 2. the record agrees with the traffic
    if p.status in (ROLLED_BACK, ABORTED):
        assert record.live == p.from_colour and cell.weights == good, f"{p.status}, weights {cell.weights}: {label}"
    elif p.status in (FINALIZED, "completed"):
        assert record.live == p.to_colour and cell.weights == all_on(p.to_colour), \
            f"{p.status} on {p.to_colour}, weights {cell.weights}: {label}"
    elif p.status in IN_FLIGHT:
        assert cell.weights == p.weights, f"{p.status} at {p.weights}, weights {cell.weights}: {label}"
    else:
        assert p.status in ENDED, label
    # 3. one audit record per decision, each with its true outcome
    ids = [r["id"] for r in cell.audit]
    assert len(ids) == len(set(ids)), label
    # ... one per invocation (a trigger decides once for the pair) ...
    triggers = [r["trigger"]["id"] for r in cell.audit if r["target"]]
    assert len(triggers) == len(set(triggers)), f"an invocation left two records: {label}"
    # ... and one executed rollback per transition: a second decision that found it made is skipped, not executed
    moved = [(str(r["before"].get("promotion")), str(r["after"].get("status"))) for r in decided
             if (r.get("before") or {}).get("weights") != (r.get("after") or {}).get("weights")]
    assert len(moved) == len(set(moved)), f"two rollbacks claim the same transition: {label}"
    alarm_records = [r for r in cell.audit if r["trigger"].get("kind") == "alarm" and r["target"]]
    assert len(alarm_records) == 1, f"the alarm's invocation left {[r['outcome'] for r in alarm_records]}: {label}"
    (alarm,) = alarm_records
    if alarm["outcome"] == "executed":
        assert p.status in (ROLLED_BACK, ABORTED), label
    else:
        # Refused only when there is nothing to roll back: retention over, or rolled back already.
        assert alarm["outcome"] in ("skipped:retention-ended", "skipped:already-rolled-back",
                                     "skipped:already-aborted", "skipped:already-closed", "skipped:no-promotion"), \
            f"alarm {alarm['outcome']}: {alarm['detail']}: {label}"
        if alarm["outcome"] == "skipped:retention-ended":
            assert p.status == "completed" or p.status == FINALIZED, label
    for r in cell.audit:
        if r["operation"] == "approve" and r["outcome"] == "executed":
            assert "no longer waits" not in r["detail"], f"approve audited executed though the gate was gone: {label}"
    # 4. never DeploymentCompleted for a rolled-back release: when it goes out, the record says finalized and all
    # the traffic is on the new colour (a rollback may still come later, within the retention window)
    for weights, then in cell.announced:
        q = then.promotion
        assert q is not None and q.status == FINALIZED and weights == all_on(q.to_colour), \
            f"DeploymentCompleted published with the record {q.status if q else None} and weights {weights}: {label}"
    if cell.completed and p.status in (ROLLED_BACK, ABORTED):
        assert any((r.get("before") or {}).get("status") == FINALIZED for r in decided) or cell.announced, \
            f"DeploymentCompleted published for a release rolled back before it finalized: {label}"
    assert not [e for e in cell.errors if "alarm" in e], f"the alarm's invocation raised {cell.errors}: {label}"


def _lengths(make: Any, scenario: Scenario, kind: str, family: str) -> tuple[int, int]:
    """How many calls each side makes when they run one after the other (a clean run, once per module)."""
    key = (scenario.name, kind, family)
    if key not in _LENGTHS:
        cell = race(make, scenario, kind, family, 10**6, 0)
        _LENGTHS[key] = (len(cell.first_calls), len(cell.second_calls))
    return _LENGTHS[key]


def race(make: Any, scenario: Scenario, kind: str, family: str, at: Any, back: Any) -> CellOutcome:
    with mock_aws():
        b = make(kind)
        reader = completed_events(b.world)
        return run_cell(b, scenario, family, at, back, lambda: reader())


def label_of(scenario: Scenario, kind: str, family: str, at: Any, back: Any, cell: CellOutcome) -> str:
    first = cell.first_calls
    where = f"before its call {at} ({first[at - 1]})" if isinstance(at, int) and cell.handed_over else str(at)
    return (f"[{kind} {scenario.name}: {family}, hands over {where}, back at {back}] first {first}; "
            f"second {cell.second_calls}; errors {cell.errors}")


@pytest.mark.parametrize(("scenario", "kind"), CELLS)
def test_a_rollback_wins_each_interleaving_that_matters(world, scenario: Scenario, kind: str) -> None:
    cells = _sample(scenario, kind)
    failures = []
    for family, at, back in cells:
        cell = race(world, scenario, kind, family, at, back)
        try:
            check_cell(cell, label_of(scenario, kind, family, at, back, cell))
        except AssertionError as err:
            failures.append(str(err).splitlines()[0][:1500])
    assert not failures, f"{len(failures)} of {len(cells)} cells failed:\n" + "\n".join(failures)


@pytest.mark.skipif(not FULL, reason="the full matrix: REFLEX_FULL_PROMOTION_RACES=1 (make promotion-races)")
@pytest.mark.parametrize(("scenario", "kind", "family"), FULL_CELLS)
def test_a_rollback_wins_every_interleaving(world, scenario: Scenario, kind: str, family: str) -> None:
    n_first, n_second = _lengths(world, scenario, kind, family)
    named = sorted({at for f, at, _ in _sample(scenario, kind, every=True) if f == family}, key=str)
    cells = _grid(n_first, n_second, named)
    if STRIDE > 1:
        offset = sum(map(ord, f"{scenario.name}{kind}{family}")) % STRIDE
        cells = cells[offset::STRIDE]
    failures = []
    for at, back in cells:
        cell = race(world, scenario, kind, family, at, back)
        try:
            check_cell(cell, label_of(scenario, kind, family, at, back, cell))
        except AssertionError as err:
            failures.append(str(err).splitlines()[0][:1500])
    assert not failures, f"{len(failures)} of {len(cells)} cells failed:\n" + "\n".join(failures)
