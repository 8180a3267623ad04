"""Lambda entry point of the `advisor` function (handler: advisor.handler.lambda_handler)."""

from __future__ import annotations

import gc

# Importing builds modules and pydantic models and makes no garbage worth collecting (docs/benchmarks.md).
gc.disable()

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from advisor.advisor_reaction import AdvisorReaction
from reflex_core.observability import lambda_entry
from reflex_core.pipeline import Pipeline

PIPELINE = Pipeline(AdvisorReaction())
gc.freeze()
gc.enable()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return PIPELINE.handle(event, context)
