"""The pure guardrail checks and the kill switch, each tested on its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from botocore.exceptions import EndpointConnectionError

from reflex_core.clock import VirtualClock
from reflex_core.guardrails import KillSwitch, circuit_check, cooldown_block, record_in_window
from reflex_core.state_store import RateWindow
from tests.conftest import T0


def test_scale_out_waits_for_previous_scale_out_only():
    last = {"out": T0.timestamp() - 60, "in": T0.timestamp() - 10}
    assert "scale-out cooldown" in cooldown_block("out", last, T0, 120, 300)
    # A recent scale-IN does not delay a scale-out: scale-out cuts a scale-in cooldown short.
    assert cooldown_block("out", {"in": T0.timestamp() - 10}, T0, 120, 300) is None
    assert cooldown_block("out", last, T0 + timedelta(seconds=61), 120, 300) is None


def test_scale_in_waits_for_both_directions():
    assert "since last scale-out" in cooldown_block("in", {"out": T0.timestamp() - 100}, T0, 120, 300)
    assert "since last scale-in" in cooldown_block("in", {"in": T0.timestamp() - 100}, T0, 120, 300)
    assert cooldown_block("in", {"out": T0.timestamp() - 301, "in": T0.timestamp() - 400}, T0, 120, 300) is None


def test_no_direction_no_cooldown():
    assert cooldown_block(None, {"out": T0.timestamp()}, T0, 120, 300) is None


def test_circuit_trips_at_the_limit_and_stays_open():
    window = RateWindow()
    for i in range(3):
        assert circuit_check(window, T0, 3) == (None, False)
        window = record_in_window(window, T0 + timedelta(seconds=i))
    reason, trips = circuit_check(window, T0 + timedelta(seconds=5), 3)
    assert trips and "rate limit" in reason
    opened = RateWindow(actions=window.actions, circuit_open_until=T0.timestamp() + 3600)
    reason, trips = circuit_check(opened, T0 + timedelta(minutes=30), 3)
    assert not trips and "circuit open" in reason
    # Once open_until has passed and the hour has rolled over, the breaker closes by itself.
    assert circuit_check(opened, T0 + timedelta(minutes=61), 3) == (None, False)


def test_rate_window_forgets_actions_older_than_an_hour():
    window = RateWindow(actions=[T0.timestamp() - 4000, T0.timestamp() - 3700])
    assert circuit_check(window, T0, 2) == (None, False)
    assert record_in_window(window, T0).actions == [T0.timestamp()]


class FakeSsm:
    def __init__(self, values: dict[str, str] | None = None, fail: bool = False) -> None:
        self.values = values or {}
        self.fail = fail
        self.calls = 0

    def get_parameters(self, Names):
        self.calls += 1
        if self.fail:
            raise EndpointConnectionError(endpoint_url="https://ssm")
        return {"Parameters": [{"Name": n, "Value": self.values[n]} for n in Names if n in self.values]}


@pytest.mark.parametrize(("values", "engaged"), [
    ({}, False),
    ({"/k/global": "off", "/k/scaler": "off"}, False),
    ({"/k/global": "on"}, True),
    ({"/k/scaler": "ON "}, True),
    ({"/k/global": "maybe"}, True),  # unexpected value fails closed
])
def test_kill_switch_values(values, engaged):
    ks = KillSwitch(FakeSsm(values), "/k", "scaler", VirtualClock(T0))
    assert ks.state().engaged is engaged


def test_kill_switch_fails_closed_when_unreadable_and_open_if_configured():
    clock = VirtualClock(T0)
    assert KillSwitch(FakeSsm(fail=True), "/k", "scaler", clock).state().engaged
    assert not KillSwitch(FakeSsm(fail=True), "/k", "scaler", clock, on_error="open").state().engaged


def test_kill_switch_is_cached_briefly():
    ssm = FakeSsm({"/k/global": "off"})
    clock = VirtualClock(T0)
    ks = KillSwitch(ssm, "/k", "scaler", clock, cache_s=30)
    ks.state()
    ssm.values["/k/global"] = "on"
    assert not ks.state().engaged and ssm.calls == 1
    clock.advance(31)
    assert ks.state().engaged and ssm.calls == 2
