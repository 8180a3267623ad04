"""EMF metrics of the drills (namespace `Reflex`, dimensions stage + resource): the alarms of the recovery
construct watch DrillObjectiveMissed, DrillFailed, DrillIsolationViolation, LastSuccessfulDrillAgeHours and
LeftoverDrillCopies."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import single_metric

from reflex_core.observability import NAMESPACE


def publish(name: str, value: float, unit: Any, *, stage: str, resource: str) -> None:
    """One metric line, flushed at once."""
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE,
                       default_dimensions={"stage": stage}) as metric:
        metric.add_dimension(name="resource", value=resource[:250])
