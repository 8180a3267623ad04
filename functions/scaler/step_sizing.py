"""Pure capacity arithmetic: how big a step, within which bounds. No I/O."""

from __future__ import annotations

import math

from reflex_core.scaling_config import Bounds, StepAdjustment

# A breach is computed in binary floating point ((0.3 - 0.2) / 0.2 == 0.4999999999999999): one that lands on a
# step boundary to within this relative tolerance reaches that step.
BOUNDARY_TOLERANCE = 1e-9


def step_percent(steps: list[StepAdjustment], breach: float | None) -> float:
    """The add_percent of the highest step the breach reaches; the first step when unknown (composite alarms)."""
    chosen = steps[0]
    if breach is not None:
        for step in steps:
            if breach >= step.breach_from - BOUNDARY_TOLERANCE * max(1.0, abs(step.breach_from)):
                chosen = step
    return chosen.add_percent


def scale_out_target(current: int, breach: float | None, steps: list[StepAdjustment], bounds: Bounds,
                     ceiling: int | None = None) -> int:
    """Add a percentage of current capacity (at least 1, at most max_step), never above the max."""
    pct = step_percent(steps, breach)
    delta = max(1, math.ceil(max(current, 1) * pct / 100.0))
    delta = min(delta, bounds.max_step)
    top = bounds.max if ceiling is None else min(bounds.max, ceiling)
    return max(current, min(current + delta, top))


def scale_in_target(current: int, step: int, bounds: Bounds, floor: int) -> int:
    """One step down (at most max_step), never below the effective floor."""
    step = min(step, bounds.max_step)
    return min(current, max(current - step, floor))


def counted_change(current: int, new: int, bounds: Bounds) -> int:
    """How much of a move from `current` to `new` counts against max_step: only the part within the bounds.

    A target that drifted outside its bounds (55 with max 40) can be brought back inside in one step; a move
    beyond the nearest bound counts from that bound."""
    inside = min(max(current, bounds.min), bounds.max)
    return abs(new - inside)
