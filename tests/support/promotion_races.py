"""Issue 16's race harness: a guard alarm's rollback (its own Lambda invocation) interleaved with a promotion step.

Lambda runs the alarm's invocation concurrently with whatever workflow step or console command is in flight, and
a rollback takes over the pair's lock by design, so AWS allows any interleaving of the two invocations' calls. A
*cell* runs the promotion up to the step, then runs the two invocations on two threads, one at a time (`Race`):
the first runs until right before its `at`-th AWS call, then the second runs until right before its `back`-th
call (0: to its end), then the first runs to its end, then the second. The families:

* `step-first`: the step (or command) starts; the alarm's invocation overtakes it;
* `alarm-first`: the alarm's invocation starts; the step overtakes it.

A hand-over point is a call index or a named call (`("PutItem:promotion", 1)`: the first write of the promotion
record; DynamoDB item calls are named after their item kind). Calls are counted per invocation: botocore calls,
the workflow's Step Functions calls (which the local driver answers) and the fast rollback's parallel reads (run
inline here). One past the last call runs the two one after the other. The cell then lets the workflow go on,
runs the periodic reconcile once (what the schedule does every `evaluate_every_minutes`), and returns what the
checks need, with the world as it was at each `DeploymentCompleted`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tests.support import events as ev
from tests.support.promotion import SERVICES, PromotionBench

LATENCY = "web-p99-latency-high"
SFN_CALLS = ("start_execution", "stop_execution", "describe_execution", "send_task_success", "send_task_failure")


class _CountedWorkflows:
    """The local workflow driver seen through a proxy whose API calls are interleaving points too."""

    def __init__(self, driver: Any, hook: Callable[[str], None]) -> None:
        self._driver, self._hook = driver, hook

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._driver, name)
        if name not in SFN_CALLS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._hook("".join(p.title() for p in name.split("_")))
            return attr(*args, **kwargs)

        return call


# Where a side hands over: before its n-th call (0: never), or before the n-th call of an operation.
Stop = int | tuple[str, int]


def _reached(stop: Stop, calls: list[str]) -> bool:
    if isinstance(stop, int):
        return stop > 0 and len(calls) == stop
    operation, nth = stop
    return calls[-1] == operation and calls.count(operation) == nth


def _label(operation: str, params: dict[str, Any]) -> str:
    """The call as the lists show it: DynamoDB item calls name the item kind (`PutItem:promotion`)."""
    key = params.get("Key") or params.get("Item") or {}
    pk = key.get("pk", {}).get("S") if isinstance(key, dict) else None
    return f"{operation}:{pk.split('#')[0]}" if pk else operation


class _Inline:
    """An executor running each task at once on the caller's thread: the fast rollback's parallel reads are then
    calls of the alarm's invocation (the race counts calls per invocation thread)."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller, as an executor does
            future.set_exception(err)
        return future


class Race:
    """Two invocations on two threads, one running at a time, handing over at chosen AWS calls.

    `first` starts; right before its `at`-th call it stops and `second` runs; right before the second's `back`-th
    call (0: never) it stops and the first runs to its end; then the second runs to its end. A side that ends
    hands over to the other. `at` past the first's last call runs them one after the other."""

    def __init__(self, b: PromotionBench, at: Stop, back: Stop = 0) -> None:
        self.b, self.stops = b, {"first": at, "second": back}
        self.calls: dict[str, list[str]] = {"first": [], "second": []}
        self.who: dict[int, str] = {}
        self.turn = "first"
        self.done: set[str] = set()
        self.handed: dict[str, bool] = {"first": False, "second": False}
        self.cond = threading.Condition()
        self.muted = False
        self._local = threading.local()
        self.announced: list[tuple[dict[str, int], Any]] = []  # (weights, record) at each DeploymentCompleted

    def _remember(self, params: dict[str, Any], **_: Any) -> None:
        self._local.params = params

    def install(self) -> None:
        from promoter import fast_rollback

        fast_rollback._pool = _Inline()  # type: ignore[assignment]
        for service in SERVICES:
            events = self.b.world.clients.get(service).meta.events
            events.register("before-parameter-build", self._remember)
            events.register("before-call", lambda model, **_: self._before(_label(model.name, self._local.params)))
        self.b.world.overrides["stepfunctions"] = _CountedWorkflows(self.b.driver, self._before)

    @staticmethod
    def _other(side: str) -> str:
        return "second" if side == "first" else "first"

    def _before(self, operation: str) -> None:
        side = self.who.get(threading.get_ident())
        if side is None or self.muted:
            return
        if operation == "PutEvents" and any(e.get("DetailType") == "DeploymentCompleted"
                                            for e in getattr(self._local, "params", {}).get("Entries", [])):
            self.muted = True
            try:  # what the world looks like when the release is announced as done
                self.announced.append((self.b.weights(), self.b.record()))
            finally:
                self.muted = False
        self.calls[side].append(operation)
        if self.handed[side] or not _reached(self.stops[side], self.calls[side]):
            return
        self.handed[side] = True
        with self.cond:
            if self._other(side) in self.done:
                return
            self.turn = self._other(side)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.turn == side)

    def _thread(self, side: str, work: Callable[[], Any]) -> threading.Thread:
        def run() -> None:
            self.who[threading.get_ident()] = side
            with self.cond:
                self.cond.wait_for(lambda: self.turn == side)
            try:
                work()
            finally:
                with self.cond:
                    self.done.add(side)
                    self.turn = self._other(side)
                    self.cond.notify_all()

        return threading.Thread(target=run, name=f"race-{side}", daemon=True)

    def run(self, first: Callable[[], Any], second: Callable[[], Any]) -> None:
        threads = [self._thread("first", first), self._thread("second", second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive(), "a racing invocation never ended"

    @property
    def fired(self) -> bool:
        return self.handed["first"]


@dataclass
class Scenario:
    """A promotion brought to a step (`prepare`), the step itself (a workflow task or a console command)."""

    name: str
    prepare: Callable[[PromotionBench], None]
    step: str  # the workflow step raced (by the driver), or "console:<command>"
    matches: Callable[[dict[str, Any]], bool] = lambda payload: True
    after: Callable[[PromotionBench], None] = lambda b: None  # e.g. what the workflow does next


@dataclass
class CellOutcome:
    handed_over: bool  # the first invocation reached its `at`-th call (else: they ran one after the other)
    first_calls: list[str]
    second_calls: list[str]
    weights: dict[str, int]
    record: Any
    audit: list[dict[str, Any]]
    completed: list[dict[str, Any]]  # DeploymentCompleted events
    announced: list[tuple[dict[str, int], Any]] = field(default_factory=list)  # the world at each one
    alarm_response: Any = None
    step_response: Any = None
    errors: list[str] = field(default_factory=list)


def alarm_invocation(b: PromotionBench, race: Race, out: dict[str, Any]) -> Callable[[], Any]:
    def run() -> Any:
        race.muted = True
        try:
            b.set_alarm(LATENCY, "ALARM")  # CloudWatch's state changes, then it delivers the event
        finally:
            race.muted = False
        event = ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now(), value=2.5, threshold=1.0)
        try:
            out["alarm"] = b.invoke(event)
        except Exception as err:  # noqa: BLE001 - Lambda retries a failed alarm invocation; recorded
            out.setdefault("errors", []).append(f"alarm: {type(err).__name__}: {err}")
        return out.get("alarm")

    return run


def run_cell(b: PromotionBench, scenario: Scenario, family: str, at: Stop, back: Stop,
             reader: Callable[[], list[dict[str, Any]]], reconcile: bool = True) -> CellOutcome:
    """One cell on a fresh bench (inside mock_aws): prepare, race, go on, reconcile once, observe. `family`:
    `step-first` (the step starts, the alarm's invocation overtakes it before its `at`-th call) or `alarm-first`."""
    race = Race(b, at, back)
    race.install()
    out: dict[str, Any] = {}
    alarm = alarm_invocation(b, race, out)
    done = {"raced": False}

    def raced(invoke: Callable[[], Any]) -> Any:
        done["raced"] = True

        def step() -> None:
            try:
                out["step"] = invoke()
            except Exception as err:  # noqa: BLE001 - the workflow retries a failed task; recorded
                out.setdefault("errors", []).append(f"step: {type(err).__name__}: {err}")
                out["step_error"] = err

        if family == "step-first":
            race.run(step, alarm)
        else:
            race.run(alarm, step)
        if "step_error" in out:
            raise out["step_error"]
        return out.get("step")

    if scenario.step.startswith("console:"):
        scenario.prepare(b)
        command = scenario.step.split(":", 1)[1]
        raced(lambda: b.console(command))
    else:
        original = b.driver._invoke

        def invoke(payload: dict[str, Any]) -> Any:
            if (not done["raced"] and payload["reflex_step"]["step"] == scenario.step
                    and scenario.matches(payload["reflex_step"])):
                return raced(lambda: original(json.loads(json.dumps(payload))))
            return original(payload)

        b.driver._invoke = invoke
        scenario.prepare(b)
        b.driver._invoke = original
        assert done["raced"], f"{scenario.name}: the workflow never ran {scenario.step}"
    race.muted = True
    scenario.after(b)
    b.run()  # the workflow goes on (or has been stopped)
    if reconcile:
        b.reconcile()  # the periodic reconcile, once
    return CellOutcome(handed_over=race.fired, first_calls=race.calls["first"], second_calls=race.calls["second"],
                       weights=b.weights(), record=b.record(), audit=b.audit(), completed=reader(),
                       alarm_response=out.get("alarm"), step_response=out.get("step"), errors=out.get("errors", []),
                       announced=race.announced)


# --------------------------------------------------------------------------- scenarios


def _next_step(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda step: int(step["input"].get("next_step", 0)) == n


def _canary(b: PromotionBench) -> None:
    b.green_ready(release="v2")
    b.run(1)


def _at_gate(b: PromotionBench) -> None:
    b.green_ready(release="v2")
    b.run()


def _past_gate(b: PromotionBench) -> None:
    _at_gate(b)
    b.console("promote")
    b.run()


def _held(b: PromotionBench) -> None:
    _canary(b)
    b.console("pause", reason="looking at a dashboard")
    b.run()


def _to_hold(b: PromotionBench) -> None:
    _canary(b)
    b.console("pause", reason="looking at a dashboard")
    b.run()


SCENARIOS: list[Scenario] = [
    Scenario("first shift (canary 10 %)", lambda b: (b.green_ready(release="v2"), b.run(1)), "shift",
             _next_step(0)),
    Scenario("check after the canary", _at_gate, "check", _next_step(1)),
    Scenario("approval gate", _at_gate, "wait_for_approval"),
    Scenario("last shift (100 %)", _past_gate, "shift", _next_step(1)),
    Scenario("check after the last shift", _past_gate, "check", _next_step(2)),
    Scenario("finalize", _past_gate, "finalize"),
    Scenario("cleanup", _past_gate, "cleanup"),
    Scenario("hold (paused)", _to_hold, "hold"),
    Scenario("console promote at the gate", _at_gate, "console:promote"),
    Scenario("console promote in advance", _canary, "console:promote"),
    Scenario("console pause", _canary, "console:pause"),
    Scenario("console resume while held", _held, "console:resume"),
    Scenario("console abort", _canary, "console:abort"),
]
