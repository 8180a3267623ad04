"""Lambda entry point of the `failover` reaction (handler: failover.handler.lambda_handler).

One function serves the console commands (plan_failover, failover, failback, approve_failover, reject_failover;
events/failover/) and the tasks of the failover workflow (`reflex_step`), whose answer is the workflow's next state.
"""

from __future__ import annotations

import gc

# Importing builds modules and pydantic models and makes no garbage worth collecting: collections during
# import are wasted cold-start time (docs/benchmarks.md, "Cold start").
gc.disable()

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from failover.failover_reaction import FailoverReaction
from failover.step_response import workflow_response
from reflex_core.observability import lambda_entry
from reflex_core.pipeline import Pipeline

PIPELINE = Pipeline(FailoverReaction())
# Everything built so far lives as long as the process: keep it out of every later collection.
gc.freeze()
gc.enable()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return workflow_response(event, PIPELINE.handle(event, context))
