"""Lambda entry point of the `promoter` reaction (handler: promoter.handler.lambda_handler).

One function serves every promoter trigger: GreenReady events, guard alarms, console commands, the
reconcile schedule and the tasks of the promotion workflow (`reflex_step`), whose answer is the
workflow's next state.
"""

from __future__ import annotations

import gc

# Importing builds modules and pydantic models and makes no garbage worth collecting: collections during
# import are wasted cold-start time (docs/benchmarks.md, "Cold start").
gc.disable()

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from promoter.promotion_reaction import PromotionReaction
from promoter.step_response import workflow_response
from reflex_core.observability import lambda_entry
from reflex_core.pipeline import Pipeline

REACTION = PromotionReaction()
PIPELINE = Pipeline(REACTION)
# Everything built so far lives as long as the process: keep it out of every later collection.
gc.freeze()
gc.enable()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return workflow_response(event, PIPELINE.handle(event, context))
