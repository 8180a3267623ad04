"""The systematic fault test of issue 13: for a reaction's invocation, every AWS call it makes, each fault.

A *case* is a world (moto account), the event an invocation receives and the change it must make once. The
matrix first runs the case clean and lists the AWS calls it makes (a botocore hook); then, for each call index
and each fault kind, runs it on a fresh world with that fault on that call, delivers what AWS would deliver next
(Lambda's two asynchronous retries about 1 and 2 minutes later, and the same transition through its other
delivery path), and checks the invariants:

* at most one change per transition, and the change that should happen has happened (the alarm still holds);
* every change has exactly one `executed` audit record;
* the target's lock ends released or with a lease that expires;
* the run's exceptions are the ones Lambda retries (never swallowed, never a crash of the retry).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from moto import mock_aws

from simulator.faults import FAULT_KINDS, FaultInjector, SimulatedCrash
from tests.conftest import FakeLambdaContext

# The kinds the matrix injects: throttles and 5xx that outlast botocore's attempts (the call fails), a lost
# response (applied, then botocore retries it) and a crash right after the call.
MATRIX_KINDS = ("throttle", "5xx", "lost-response", "crash-after")
assert set(MATRIX_KINDS) <= set(FAULT_KINDS)


class ShortContext(FakeLambdaContext):
    """A Lambda context whose invocation is about to end: Powertools' in-progress record expires at once, as it
    would when Lambda retries a timed-out invocation a minute later."""

    def get_remaining_time_in_millis(self) -> int:
        return 2


@dataclass
class Case:
    name: str
    setup: Callable[[Any, Any], None]  # (world, clock) -> None, before faults are injected
    deliveries: Callable[[Any], list[dict[str, Any]]]  # world -> the event, then its other delivery paths
    observe: Callable[[Any], Any]  # world -> the target's state
    target_key: str
    handler: Callable[[], Callable[[Any, Any], Any]]
    reaction: str = "scaler"
    # What a delivery runs (default: `handler()(event, context)`): e.g. install a reaction-specific runtime.
    invoke: Callable[[Any, dict[str, Any], Any], Any] | None = None
    # What the delivery sets off in other functions, run after each delivery with the same fault still counted
    # (e.g. the CDN batcher consuming the queue the invalidator wrote to); each callable is one invocation.
    follow_ups: Callable[[Any], list[Callable[[], Any]]] | None = None
    # After the injector is on `world.clients`: put it on clients a world keeps elsewhere (e.g. the real client
    # behind an override), and keep unfaulted copies for `observe`.
    attach: Callable[[Any, FaultInjector], None] | None = None
    # What a crash loses: Lambda starts a new process, so module state (in-memory hand-overs) is gone.
    cold_start: Callable[[], None] | None = None
    # The invariants of a cell (case, cell, clean run); None: the test's default check.
    check: Callable[[Any, Any, Any], None] | None = None
    # Facts the case's check reads at the end, through unfaulted clients (e.g. leases of runs in progress).
    facts: Callable[[Any], dict[str, Any]] | None = None
    # The Lambda context of a delivery (ShortContext: Powertools' in-progress record expires at once).
    context: Callable[[], Any] = ShortContext


@dataclass
class CellResult:
    call: int
    operation: str
    kind: str
    states: list[Any] = field(default_factory=list)
    executed: int = 0
    errors: list[str] = field(default_factory=list)
    lock: dict[str, Any] | None = None
    final: Any = None
    faulted: list[str] = field(default_factory=list)  # the operation(s) the fault actually hit
    locks: dict[str, dict[str, float]] = field(default_factory=dict)  # every held lock left: lease and now
    audit: list[dict[str, Any]] = field(default_factory=list)  # every audit record at the end
    facts: dict[str, Any] = field(default_factory=dict)
    now: float = 0.0
    clean_calls: list[str] = field(default_factory=list)  # the clean run's calls (set by the test)

    def label(self, case: Case) -> str:
        hit = ", ".join(self.faulted) or "nothing (the call was not reached)"
        return (f"[{case.name}] cell {self.kind} on call {self.call} ({self.operation}; hit {hit}): states "
                f"{self.states}, errors {self.errors}")


def _injected_world(case: Case, world_factory: Callable[[], Any], clock: Any) -> tuple[Any, FaultInjector]:
    from reflex_core.aws_clients import AwsClients
    from simulator.aws_world import _Switchable, moto_clients

    world = world_factory()
    case.setup(world, clock)
    injector = FaultInjector(clock)
    base = moto_clients(max_attempts=3)
    overrides = world.overrides  # services a local object answers (the workflow driver, CloudFront's wrapper)

    def injected(service: str) -> Any:
        return _Switchable(service, injector.attach(base._factory(service)), overrides)

    world.clients = AwsClients(injected)
    world.observer_clients = AwsClients(base._factory)  # the test's own reads: never counted, never faulted
    if case.attach is not None:
        case.attach(world, injector)
    world.runtime(clock, case.reaction)
    return world, injector


def _observe(case: Case, world: Any) -> Any:
    injected = world.clients
    world.clients = world.observer_clients
    try:
        return case.observe(world)
    finally:
        world.clients = injected


def _invoke(case: Case, world: Any, event: dict[str, Any]) -> Any:
    if case.invoke is not None:
        return case.invoke(world, event, case.context())
    return case.handler()(event, case.context())


def _run_one(step: Callable[[], Any], result: CellResult, who: str = "") -> None:
    try:
        step()
    except SimulatedCrash:
        result.errors.append(f"{who}crash")
    except Exception as err:  # noqa: BLE001 - Lambda retries an invocation that raised
        result.errors.append(f"{who}{type(err).__name__}")


def _expire_in_progress(world: Any) -> None:
    """What the passing of a dead invocation's deadline does: its in-progress idempotency record no longer
    blocks (Powertools keeps it until the deadline, on the real clock; Lambda's retry comes after it)."""
    ddb = world.observer_clients.dynamodb
    table = world.settings.idempotency_table
    for item in ddb.scan(TableName=table).get("Items", []):
        if item.get("status", {}).get("S") == "INPROGRESS":
            ddb.update_item(TableName=table, Key={"id": item["id"]}, UpdateExpression="SET in_progress_expiration = :t",
                            ExpressionAttributeValues={":t": {"N": "1"}})


def _deliver(case: Case, world: Any, event: dict[str, Any], result: CellResult) -> None:
    _expire_in_progress(world)
    _run_one(lambda: _invoke(case, world, event), result)
    for step in case.follow_ups(world) if case.follow_ups is not None else []:
        _run_one(step, result, "follow-up: ")
    if any(e.endswith("crash") for e in result.errors) and case.cold_start is not None:
        case.cold_start()
    time.sleep(0.005)  # Powertools' in-progress expiry is on the real clock
    result.states.append(_observe(case, world))


def clean_calls(case: Case, world_factory: Callable[[], Any], clock_factory: Callable[[], Any]) -> list[str]:
    clock = clock_factory()
    with mock_aws():
        world, injector = _injected_world(case, world_factory, clock)
        injector.reset_calls()
        _invoke(case, world, case.deliveries(world)[0])
        for step in case.follow_ups(world) if case.follow_ups is not None else []:
            step()
        return injector.operations()


def run_cell(case: Case, world_factory: Callable[[], Any], clock_factory: Callable[[], Any], call: int,
             operation: str, kind: str) -> CellResult:
    clock = clock_factory()
    result = CellResult(call=call, operation=operation, kind=kind)
    with mock_aws():
        world, injector = _injected_world(case, world_factory, clock)
        injector.reset_calls()
        result.states.append(_observe(case, world))
        events = case.deliveries(world)
        injector.fail("*", kind, calls=(call,), persist=kind in ("throttle", "5xx"))  # type: ignore[arg-type]
        _deliver(case, world, events[0], result)
        result.faulted = [f"{c.service}.{c.operation}" for c in injector.calls if c.fault is not None]
        injector.clear()
        # Lambda's asynchronous retries of a failed invocation (about 1 and 2 minutes later), then the other
        # delivery paths of the same transition.
        for delay, event in ((70, events[0]), (130, events[0]), *((5, e) for e in events[1:])):
            clock.advance(delay)
            world.runtime(clock, case.reaction)
            _deliver(case, world, event, result)
        world.runtime(clock, case.reaction)
        world.clients = world.observer_clients  # the checks' own reads
        result.audit = world.audit_records()
        result.executed = sum(1 for r in result.audit if r["outcome"] == "executed" and r["target"] == case.target_key)
        # The lock of every target the cell's decisions name.
        keys = dict.fromkeys([case.target_key, *(r["target"] for r in result.audit if r.get("target"))])
        for key in keys:
            item = world.clients.dynamodb.get_item(TableName=world.settings.state_table,
                                                   Key={"pk": {"S": f"lock#{key}"}}).get("Item")
            if item:
                result.locks[key] = {"lease_until": float(item["lease_until"]["N"]), "now": clock.now().timestamp()}
        result.lock = result.locks.get(case.target_key)
        result.now = clock.now().timestamp()
        result.facts = case.facts(world) if case.facts is not None else {}
        result.final = case.observe(world)
    return result
