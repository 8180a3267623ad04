"""Lambda entry point of the `invalidator` reaction (handler: invalidator.handler.lambda_handler).

Triggers: custom events (ContentChanged, DeploymentCompleted, ...), S3 object events of origin buckets, alarms,
schedules, console payloads, and its own continuation queue (SQS, ReportBatchItemFailures).
"""

from __future__ import annotations

import gc

# Importing builds modules and pydantic models and makes no garbage worth collecting: collections during
# import are wasted cold-start time (docs/benchmarks.md, "Cold start").
gc.disable()

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from invalidator.invalidation_reaction import InvalidationReaction
from invalidator.queue_entry import InvalidatorEntry
from reflex_core.observability import lambda_entry
from reflex_core.pipeline import Pipeline

ENTRY = InvalidatorEntry(Pipeline(InvalidationReaction()))
# Everything built so far lives as long as the process: keep it out of every later collection.
gc.freeze()
gc.enable()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return ENTRY.handle(event, context)
