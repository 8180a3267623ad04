"""Pure arithmetic of a promotion: the steps of a schedule, weights, names. No AWS calls here.

Weights are percentages of the traffic per colour and always sum to 100.
"""

from __future__ import annotations

import hashlib
from typing import Any

from reflex_core.promotion_config import Colour, PromotionPair, other

# Statuses of a promotion (`Promotion.status` in the state table).
PREFLIGHT = "preflight"
SHIFTING = "shifting"
AWAITING_APPROVAL = "awaiting-approval"
HELD = "held"
FINALIZED = "finalized"  # traffic on the new colour; the old one kept at weight 0 for the retention window
COMPLETED = "completed"
ROLLED_BACK = "rolled-back"
ABORTED = "aborted"
SUPERSEDED = "superseded"  # a newer promotion started during this one's retention window
# A rollback was decided but could not be carried out (the pair's traffic switch is unreadable or not in a shape
# Reflex can write): the workflow is stopped, the operator finishes by hand and says so with `close`.
ROLLBACK_FAILED = "rollback-failed"
CLOSED = "closed"  # an operator's `close`: the promotion ended on the colour they chose (`live`)

IN_FLIGHT = frozenset({PREFLIGHT, SHIFTING, AWAITING_APPROVAL, HELD})
ENDED = frozenset({COMPLETED, ROLLED_BACK, ABORTED, SUPERSEDED, CLOSED})
# Ended with the traffic owned by the record: all of it on one colour, enforced by every invocation that sees it
# otherwise (the reconcile on its schedule): the promotion's `from_colour` when rolled back or aborted, `live`
# when closed.
ENFORCED = frozenset({ROLLED_BACK, ABORTED, CLOSED})

# Safety margin on a scale-in freeze: if the promoter dies, the freeze still ends by itself.
FREEZE_MARGIN_S = 3600


def weights_for(to_colour: Colour, weight: int) -> dict[str, int]:
    """`weight` % on the incoming colour, the rest on the other one."""
    if not 0 <= weight <= 100:
        raise ValueError(f"a weight is a percentage, got {weight}")
    return {to_colour: weight, other(to_colour): 100 - weight}


def all_on(colour: str) -> dict[str, int]:
    return weights_for("blue" if colour == "blue" else "green", 100)


def format_weights(weights: dict[str, int] | None) -> str:
    if not weights:
        return "?"
    return f"blue {weights.get('blue', 0)} / green {weights.get('green', 0)}"


def execution_name(pair: str, event_id: str) -> str:
    """The workflow execution of the GreenReady event `event_id`: the same event always names the same
    execution, so a redelivered event cannot start a second one (Step Functions refuses a name twice)."""
    return f"{pair}-{hashlib.sha256(event_id.encode()).hexdigest()[:20]}"


def schedule_steps(pair: PromotionPair) -> list[dict[str, int]]:
    return [{"weight": w, "bake_s": bake} for w, bake in pair.steps()]


def gate_step(pair: PromotionPair) -> int:
    """Index of the step the approval gate stands before (the last one), or -1 without a gate."""
    return len(pair.steps()) - 1 if pair.approval is not None else -1


def expected_duration_s(pair: PromotionPair) -> int:
    """An upper bound of a promotion's length without pauses (bakes, the approval wait, the retention)."""
    gate = pair.approval.timeout_s if pair.approval else 0
    return sum(bake for _, bake in pair.steps()) + gate + pair.retention_s


def workflow_plan(pair: PromotionPair) -> dict[str, Any]:
    """What the preflight hands the workflow: everything its Wait and callback states read by path."""
    return {
        "steps": schedule_steps(pair),
        "next_step": 0,
        "gate_step": gate_step(pair),
        "approval_timeout_s": pair.approval.timeout_s if pair.approval else 0,
        "max_pause_s": pair.max_pause_s,
        "retention_s": pair.retention_s,
        "bake_s": 0,
    }
