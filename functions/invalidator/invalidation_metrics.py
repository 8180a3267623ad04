"""EMF metrics of the invalidation functions (namespace `Reflex`, dimensions stage + what they concern)."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from reflex_core.observability import NAMESPACE


def publish(name: str, value: float, unit: MetricUnit, *, stage: str, **dimensions: str) -> None:
    """One metric line, flushed at once (a long invocation's metrics do not wait for its end)."""
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE,
                       default_dimensions={"stage": stage}) as metric:
        for key, dim in dimensions.items():
            metric.add_dimension(name=key, value=str(dim)[:250])
