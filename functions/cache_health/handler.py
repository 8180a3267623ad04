"""Lambda entry point of the cache health collector (handler: cache_health.handler.lambda_handler).

Scheduled every `invalidation.health_every_minutes`: Redis INFO of every configured cache to EMF metrics.
"""

from __future__ import annotations

import gc

# Importing builds modules and pydantic models and makes no garbage worth collecting: collections during
# import are wasted cold-start time (docs/benchmarks.md, "Cold start").
gc.disable()

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from cache_health.health_collector import HealthCollector
from reflex_core.observability import lambda_entry

COLLECTOR = HealthCollector()
# Everything built so far lives as long as the process: keep it out of every later collection.
gc.freeze()
gc.enable()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return COLLECTOR.collect(event, context)
