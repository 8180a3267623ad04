"""Lambda entry point of the `resharder` reaction (handler: resharder.handler.lambda_handler)."""

from __future__ import annotations

import gc

# Importing builds modules and pydantic models and makes no garbage worth collecting: collections during
# import are wasted cold-start time (docs/benchmarks.md, "Cold start").
gc.disable()

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from reflex_core.observability import lambda_entry
from reflex_core.pipeline import Pipeline
from resharder.resharding_reaction import ReshardingReaction

PIPELINE = Pipeline(ReshardingReaction())
# Everything built so far lives as long as the process: keep it out of every later collection.
gc.freeze()
gc.enable()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return PIPELINE.handle(event, context)
