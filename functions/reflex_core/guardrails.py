"""The guardrails every action passes, whatever triggered it (see docs/architecture.md).

Order in the pipeline: allowlist -> kill switch -> circuit breaker -> cooldown -> lock ->
(plan against fresh state) -> bounds (in the reaction's planner) -> dry-run -> execute.
The pure checks here take plain values so each one is tested on its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reflex_core.clock import Clock, iso
from reflex_core.state_store import RateWindow

HOUR = 3600.0


@dataclass(frozen=True)
class KillSwitchState:
    engaged: bool
    reason: str


class KillSwitch:
    """A global and a per-reaction switch in SSM Parameter Store, read at run time and cached briefly.

    `<prefix>/global` and `<prefix>/<reaction>`; the value `on` engages the switch (stops every
    action). A missing parameter means off. A value other than on/off, or an unreadable store,
    is treated according to `on_error` ("closed" = engaged, the safe default).
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
            if self._cached and now - self._cached[0] < self._cache_s:
                return self._cached[1]
        state = self._read()
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
                return KillSwitchState(True, f"kill switch unreadable ({type(err).__name__}); failing closed")
            return KillSwitchState(False, f"kill switch unreadable ({type(err).__name__}); failing open")
        for param in resp.get("Parameters", []):
            value = str(param.get("Value", "")).strip().lower()
            scope = param["Name"].rsplit("/", 1)[-1]
            if value == "on":
                return KillSwitchState(True, f"kill switch '{scope}' is on")
            if value != "off" and self._fail_closed:
                return KillSwitchState(True, f"kill switch '{scope}' has unexpected value {value!r}; failing closed")
        return KillSwitchState(False, "off")


def cooldown_block(direction: str | None, last: dict[str, float], now: datetime,
                   out_cooldown_s: int, in_cooldown_s: int) -> str | None:
    """Why the cooldown blocks this direction, or None.

    Scale-out waits only for the previous scale-out: it may cut a scale-in cooldown short.
    Scale-in waits for both, so it never follows a scale-out before its cooldown has passed.
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
        since = ts - last.get(prev, float("-inf"))
        if since < in_cooldown_s:
            return f"scale-in cooldown: {since:.0f}s since last scale-{prev} < {in_cooldown_s}s"
    return None


def circuit_check(window: RateWindow, now: datetime, max_per_hour: int) -> tuple[str | None, bool]:
    """(reason to block or None, whether this check trips the breaker now)."""
    ts = now.timestamp()
    if window.circuit_open_until > ts:
        until = datetime.fromtimestamp(window.circuit_open_until, tz=UTC)
        return f"circuit open until {iso(until)} (rate limit tripped earlier)", False
    recent = [t for t in window.actions if ts - t < HOUR]
    if len(recent) >= max_per_hour:
        return f"rate limit: {len(recent)} actions in the last hour >= {max_per_hour}; circuit opened", True
    return None, False


def record_in_window(window: RateWindow, now: datetime) -> RateWindow:
    ts = now.timestamp()
    return RateWindow(actions=[t for t in window.actions if ts - t < HOUR] + [ts],
                      circuit_open_until=window.circuit_open_until)
