"""The pure guardrail checks and the kill switch, each tested on its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from botocore.exceptions import EndpointConnectionError

from reflex_core.clock import VirtualClock
from reflex_core.guardrails import KillSwitch, circuit_check, cooldown_block, record_in_window, trip
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
        assert circuit_check(window, T0, 3, "out").reason is None
        window = record_in_window(window, T0 + timedelta(seconds=i), "out")
    verdict = circuit_check(window, T0 + timedelta(seconds=5), 3, "out")
    assert verdict.trips and not verdict.everything and "rate limit" in verdict.reason
    opened = trip(window, T0 + timedelta(seconds=5), "out", 3600, everything=False)
    verdict = circuit_check(opened, T0 + timedelta(minutes=30), 3, "out")
    assert not verdict.trips and "circuit open" in verdict.reason
    # Once open_until has passed and the hour has rolled over, the breaker closes by itself.
    assert circuit_check(opened, T0 + timedelta(minutes=61), 3, "out").reason is None


def test_each_direction_has_its_own_budget_so_a_slow_recovery_cannot_block_the_next_spike():
    """Issue 8 #6: one-task scale-ins every 300 s used up the hour's budget; the next scale-out was refused."""
    window = RateWindow()
    for i in range(12):
        window = record_in_window(window, T0 + timedelta(seconds=300 * i / 4), "in")
    now = T0 + timedelta(minutes=16)
    assert circuit_check(window, now, 12, "in").trips
    tripped = trip(window, now, "in", 3600, everything=False)
    assert circuit_check(tripped, now, 12, "out").reason is None  # the spike's scale-out still runs
    assert "circuit open" in (circuit_check(tripped, now, 12, "in").reason or "")


def test_direction_reversals_are_oscillation_and_trip_every_direction():
    window = RateWindow()
    for i, direction in enumerate(["out", "in", "out", "in", "out"]):
        window = record_in_window(window, T0 + timedelta(minutes=i), direction)
    verdict = circuit_check(window, T0 + timedelta(minutes=6), 12, "in", max_reversals_per_hour=4)
    assert verdict.trips and verdict.everything and "oscillation" in verdict.reason
    tripped = trip(window, T0 + timedelta(minutes=6), "in", 3600, everything=True)
    assert "every direction" in (circuit_check(tripped, T0 + timedelta(minutes=7), 12, "out").reason or "")


def test_rate_window_forgets_actions_older_than_an_hour():
    window = RateWindow(actions=[(T0.timestamp() - 4000, "out"), (T0.timestamp() - 3700, "out")])
    assert circuit_check(window, T0, 2, "out").reason is None
    assert record_in_window(window, T0, "out").actions == [(T0.timestamp(), "out")]


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
    ({"/k/scaler": "hard-stop"}, True),
])
def test_kill_switch_values(values, engaged):
    ks = KillSwitch(FakeSsm(values), "/k", "scaler", VirtualClock(T0))
    assert ks.state().engaged is engaged


@pytest.mark.parametrize(("values", "level", "blocks_forward", "blocks_rollback"), [
    ({"/k/global": "on"}, "on", True, False),
    ({"/k/global": "on", "/k/scaler": "hard-stop"}, "hard-stop", True, True),
    ({"/k/global": "hard-stop", "/k/scaler": "off"}, "hard-stop", True, True),
    ({"/k/global": "maybe"}, "on", True, False),
])
def test_kill_switch_levels_on_stops_forward_actions_and_hard_stop_everything(values, level, blocks_forward,
                                                                              blocks_rollback):
    state = KillSwitch(FakeSsm(values), "/k", "scaler", VirtualClock(T0)).state()
    assert state.level == level
    assert state.blocks(safety=False) is blocks_forward
    assert state.blocks(safety=True) is blocks_rollback


def test_an_unreadable_switch_is_a_transient_refusal_and_not_cached():
    """Issue 13 #6: failing closed means "not now": the refusal is retried, and the next call asks SSM again."""
    ssm = FakeSsm(fail=True)
    ks = KillSwitch(ssm, "/k", "scaler", VirtualClock(T0), cache_s=30)
    state = ks.state()
    assert state.engaged and state.transient
    ssm.fail = False
    assert not ks.state().engaged and ssm.calls == 2


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


def test_a_decrease_may_wait_longer_after_an_increase_than_after_a_decrease() -> None:
    after_out = {"out": T0.timestamp() - 100}
    assert cooldown_block("in", after_out, T0, 120, 0) is None  # in_cooldown_s alone: no wait
    assert "since last scale-out < 300s" in (cooldown_block("in", after_out, T0, 120, 0, in_after_out_s=300) or "")
    assert cooldown_block("in", {"in": T0.timestamp() - 100}, T0, 120, 0, in_after_out_s=300) is None
