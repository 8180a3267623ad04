"""Lambda entry point of the CDN batcher (handler: cdn_batcher.handler.lambda_handler).

Triggered by each distribution's coalescing queue (SQS event source, batching window = `coalesce_window_s`,
ReportBatchItemFailures): one CloudFront invalidation per distribution per batch, and the tracking of each
invalidation until it is Completed.
"""

from __future__ import annotations

import gc

# Importing builds modules and pydantic models and makes no garbage worth collecting: collections during
# import are wasted cold-start time (docs/benchmarks.md, "Cold start").
gc.disable()

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from cdn_batcher.batch_entry import CdnBatchEntry
from cdn_batcher.cdn_batch_reaction import CdnBatchReaction
from reflex_core.observability import lambda_entry
from reflex_core.pipeline import Pipeline

ENTRY = CdnBatchEntry(Pipeline(CdnBatchReaction()))
# Everything built so far lives as long as the process: keep it out of every later collection.
gc.freeze()
gc.enable()


@lambda_entry
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return ENTRY.handle(event, context)
