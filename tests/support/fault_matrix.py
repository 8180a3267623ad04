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


def _injected_world(case: Case, world_factory: Callable[[], Any], clock: Any) -> tuple[Any, FaultInjector]:
    from reflex_core.aws_clients import AwsClients
    from simulator.aws_world import moto_clients

    world = world_factory()
    case.setup(world, clock)
    injector = FaultInjector(clock)
    base = moto_clients(max_attempts=3)
    world.clients = AwsClients(injector.wrap_factory(base._factory))
    world.observer_clients = AwsClients(base._factory)  # the test's own reads: never counted, never faulted
    world.runtime(clock, case.reaction)
    return world, injector


def _observe(case: Case, world: Any) -> Any:
    injected = world.clients
    world.clients = world.observer_clients
    try:
        return case.observe(world)
    finally:
        world.clients = injected


def _deliver(case: Case, world: Any, event: dict[str, Any], result: CellResult) -> None:
    handler = case.handler()
    try:
        handler(event, ShortContext())
    except SimulatedCrash:
        result.errors.append("crash")
    except Exception as err:  # noqa: BLE001 - Lambda retries an invocation that raised
        result.errors.append(type(err).__name__)
    time.sleep(0.005)  # Powertools' in-progress expiry is on the real clock
    result.states.append(_observe(case, world))


def clean_calls(case: Case, world_factory: Callable[[], Any], clock_factory: Callable[[], Any]) -> list[str]:
    clock = clock_factory()
    with mock_aws():
        world, injector = _injected_world(case, world_factory, clock)
        injector.reset_calls()
        case.handler()(case.deliveries(world)[0], ShortContext())
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
        injector.clear()
        # Lambda's asynchronous retries of a failed invocation (about 1 and 2 minutes later), then the other
        # delivery paths of the same transition.
        for delay, event in ((70, events[0]), (130, events[0]), *((5, e) for e in events[1:])):
            clock.advance(delay)
            world.runtime(clock, case.reaction)
            _deliver(case, world, event, result)
        rt = world.runtime(clock, case.reaction)
        result.executed = sum(1 for r in world.audit_records()
                              if r["outcome"] == "executed" and r["target"] == case.target_key)
        item = rt.clients.dynamodb.get_item(TableName=world.settings.state_table,
                                            Key={"pk": {"S": f"lock#{case.target_key}"}}).get("Item")
        result.lock = {"lease_until": float(item["lease_until"]["N"]), "now": clock.now().timestamp()} if item else None
        result.final = _observe(case, world)
    return result
