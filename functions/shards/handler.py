"""Lambda entry point of the `shards` reaction (handler: shards.handler.lambda_handler)."""

from __future__ import annotations

import gc

# Importing builds modules and pydantic models and makes no garbage worth collecting (docs/benchmarks.md).
gc.disable()

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from reflex_core.observability import lambda_entry
from reflex_core.pipeline import Pipeline
from shards.shard_reaction import ShardReaction
from shards.workflow_definition import step_response

PIPELINE = Pipeline(ShardReaction())
gc.freeze()
gc.enable()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return step_response(event, PIPELINE.handle(event, context))
