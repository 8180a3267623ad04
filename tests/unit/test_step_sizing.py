"""Step sizing: proportional to the breach, within max_step and bounds."""

from __future__ import annotations

import pytest

from reflex_core.config import Bounds, StepAdjustment
from scaler.step_sizing import scale_in_target, scale_out_target, step_percent

STEPS = [StepAdjustment(breach_from=0, add_percent=25), StepAdjustment(breach_from=0.5, add_percent=50),
         StepAdjustment(breach_from=1.0, add_percent=100)]


@pytest.mark.parametrize(("breach", "pct"), [(None, 25), (0.0, 25), (0.49, 25), (0.5, 50), (0.99, 50),
                                             (1.0, 100), (7.0, 100)])
def test_step_chosen_by_breach(breach, pct):
    assert step_percent(STEPS, breach) == pct


def test_bigger_breach_bigger_step():
    bounds = Bounds(min=2, max=100, max_step=50)
    assert scale_out_target(10, 0.1, STEPS, bounds) == 13
    assert scale_out_target(10, 0.6, STEPS, bounds) == 15
    assert scale_out_target(10, 2.0, STEPS, bounds) == 20


def test_max_step_and_max_bound_cap_the_step():
    assert scale_out_target(10, 2.0, STEPS, Bounds(min=2, max=100, max_step=4)) == 14
    assert scale_out_target(38, 2.0, STEPS, Bounds(min=2, max=40, max_step=8)) == 40
    assert scale_out_target(40, 2.0, STEPS, Bounds(min=2, max=40, max_step=8)) == 40
    # The platform's own ceiling (ASG MaxSize) is respected too.
    assert scale_out_target(10, 2.0, STEPS, Bounds(min=2, max=40, max_step=8), ceiling=12) == 12


def test_scale_out_from_zero_adds_at_least_one():
    assert scale_out_target(0, None, STEPS, Bounds(min=0, max=5, max_step=2)) == 1


def test_scale_in_one_step_never_below_floor():
    bounds = Bounds(min=2, max=40, max_step=8)
    assert scale_in_target(10, 1, bounds, floor=2) == 9
    assert scale_in_target(3, 2, bounds, floor=2) == 2
    assert scale_in_target(2, 1, bounds, floor=2) == 2
    assert scale_in_target(12, 1, bounds, floor=10) == 11
    assert scale_in_target(12, 20, bounds, floor=2) == 4  # max_step caps scale-in too
