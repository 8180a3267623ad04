"""The guardrails every action passes, whatever triggered it (see docs/architecture.md).

Order in the pipeline: allowlist -> kill switch -> circuit breaker -> cooldown -> lock ->
(plan against fresh state) -> bounds (in the reaction's planner) -> dry-run -> execute.
The pure checks here take plain values so each one is tested on its own.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from reflex_core.clock import Clock, iso
from reflex_core.state_store import RateWindow

HOUR = 3600.0


KillLevel = Literal["off", "on", "hard-stop"]


@dataclass(frozen=True)
class KillSwitchState:
    """`level`: "off"; "on" stops every forward action while a rollback to the last known-good state (a safety
    action) still runs; "hard-stop" stops everything. `transient`: the state could not be read (failing closed
    means "not now", not "done": the refusal is retried, never stored as an answer)."""

    level: KillLevel
    reason: str
    transient: bool = False

    @property
    def engaged(self) -> bool:
        return self.level != "off"

    def blocks(self, *, safety: bool) -> bool:
        return self.level == "hard-stop" or (self.level == "on" and not safety)


class KillSwitch:
    """A global and a per-reaction switch in SSM Parameter Store, read at run time and cached briefly.

    `<prefix>/global` and `<prefix>/<reaction>`, each `off` (or missing), `on` or `hard-stop`; the stricter of
    the two applies. A value other than these, or an unreadable store, is treated according to `on_error`:
    "closed" (the safe default) = `on` (forward actions stop, rollbacks run), marked transient so that the
    refused trigger is retried rather than answered; "open" = off.
    """

    def __init__(self, ssm: Any, prefix: str, reaction: str, clock: Clock, cache_s: int = 30,
                 on_error: str = "closed") -> None:
        self._ssm = ssm
        self._names = [f"{prefix}/global", f"{prefix}/{reaction}"]
        self._clock = clock
        self._cache_s = cache_s
        self._fail_closed = on_error == "closed"
        self._cached: tuple[float, KillSwitchState] | None = None
        self._lock = threading.Lock()

    def state(self) -> KillSwitchState:
        now = self._clock.now().timestamp()
        with self._lock:
            if self._cached and 0 <= now - self._cached[0] < self._cache_s:
                return self._cached[1]
        state = self._read()
        if not state.transient:  # an unreadable store is asked again next time, not remembered
            with self._lock:
                self._cached = (now, state)
        return state

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def _read(self) -> KillSwitchState:
        try:
            resp = self._ssm.get_parameters(Names=self._names)
        except Exception as err:  # noqa: BLE001 - any failure to read is a reason to stop, not to crash
            if self._fail_closed:
                return KillSwitchState("on", f"kill switch unreadable ({type(err).__name__}); failing closed",
                                       transient=True)
            return KillSwitchState("off", f"kill switch unreadable ({type(err).__name__}); failing open")
        strictest = KillSwitchState("off", "off")
        rank = {"off": 0, "on": 1, "hard-stop": 2}
        for param in sorted(resp.get("Parameters", []), key=lambda p: str(p.get("Name"))):
            value = str(param.get("Value", "")).strip().lower()
            scope = str(param["Name"]).rsplit("/", 1)[-1]
            if value in ("on", "hard-stop"):
                state = KillSwitchState(value, f"kill switch '{scope}' is {value}")  # type: ignore[arg-type]
            elif value == "off":
                continue
            elif self._fail_closed:
                state = KillSwitchState("on", f"kill switch '{scope}' has unexpected value {value!r}; failing "
                                              "closed (expected off, on or hard-stop)")
            else:
                continue
            if rank[state.level] > rank[strictest.level]:
                strictest = state
        return strictest


def cooldown_block(direction: str | None, last: dict[str, float], now: datetime,
                   out_cooldown_s: int, in_cooldown_s: int, *, in_after_out_s: int | None = None) -> str | None:
    """Why the cooldown blocks this direction, or None.

    Scale-out waits only for the previous scale-out: it may cut a scale-in cooldown short.
    Scale-in waits for both, so it never follows a scale-out before its cooldown has passed: `in_cooldown_s`
    after either, or `in_after_out_s` after a scale-out when given.
    """
    if direction is None:
        return None
    ts = now.timestamp()
    if direction == "out":
        since = ts - last.get("out", float("-inf"))
        if since < out_cooldown_s:
            return f"scale-out cooldown: {since:.0f}s since last scale-out < {out_cooldown_s}s"
        return None
    for prev in ("in", "out"):
        wait = in_after_out_s if prev == "out" and in_after_out_s is not None else in_cooldown_s
        since = ts - last.get(prev, float("-inf"))
        if since < wait:
            return f"scale-in cooldown: {since:.0f}s since last scale-{prev} < {wait}s"
    return None


def _reversals(directions: list[str]) -> int:
    turns = [d for d in directions if d in ("out", "in")]
    return sum(1 for a, b in itertools.pairwise(turns) if a != b)


@dataclass(frozen=True)
class CircuitVerdict:
    reason: str | None  # why the action is refused, or None
    trips: bool = False  # this action trips a breaker now
    everything: bool = False  # the trip covers every direction (oscillation)


def circuit_check(window: RateWindow, now: datetime, max_per_hour: int, direction: str | None = None,
                  max_reversals_per_hour: int = 4) -> CircuitVerdict:
    """Whether the breaker refuses this action, and whether it trips now.

    The breaker exists to stop oscillation and runaway automation, not to hold capacity below demand, so:
    each direction has its own budget of `max_per_hour` actions (a slow recovery's scale-ins cannot use up the
    next spike's scale-outs), and the whole target trips when its actions reverse direction more than
    `max_reversals_per_hour` times within the hour (out, in, out, in... is what oscillation looks like).
    """
    ts = now.timestamp()
    d = direction or ""
    open_until = window.open_for(d)
    if open_until > ts:
        until = datetime.fromtimestamp(open_until, tz=UTC)
        scope = "every direction" if window.open_until.get("", 0.0) > ts else f"direction '{d or 'any'}'"
        return CircuitVerdict(f"circuit open for {scope} until {iso(until)} (tripped earlier)")
    recent = [(t, a) for t, a in window.actions if 0 <= ts - t < HOUR]
    same = [t for t, a in recent if a == d]
    if len(same) >= max_per_hour:
        return CircuitVerdict(f"rate limit: {len(same)} {d or 'undirected'} actions in the last hour >= "
                              f"{max_per_hour}; circuit opened for that direction", trips=True)
    if d in ("out", "in"):
        reversals = _reversals([a for _, a in recent] + [d])
        if reversals > max_reversals_per_hour:
            return CircuitVerdict(f"oscillation: {reversals} direction reversals in the last hour > "
                                  f"{max_reversals_per_hour}; circuit opened for every direction",
                                  trips=True, everything=True)
    return CircuitVerdict(None)


def trip(window: RateWindow, now: datetime, direction: str | None, open_for_s: int, everything: bool) -> RateWindow:
    scope = "" if everything else (direction or "")
    opened = dict(window.open_until)
    opened[scope] = max(opened.get(scope, 0.0), now.timestamp() + open_for_s)
    return RateWindow(actions=window.actions, open_until=opened, version=window.version)


def record_in_window(window: RateWindow, now: datetime, direction: str | None = None) -> RateWindow:
    ts = now.timestamp()
    kept = [(t, a) for t, a in window.actions if 0 <= ts - t < HOUR]
    return RateWindow(actions=[*kept, (ts, direction or "")], open_until=window.open_until, version=window.version)
