"""Following each invalidation until CloudFront reports it Completed, through delayed queue messages.

After `CreateInvalidation` the batcher queues a `track` message delayed by `tracking.poll_s`. Each delivery
reads the invalidation: Completed publishes `CdnInvalidationSeconds` (creation to first seen completed, so at
most one poll interval late) and ends; still in progress queues the next check; past
`tracking.give_up_after_s` it stops with `CdnInvalidationTrackingAbandoned`. Reading, not acting: no
guardrail applies and nothing is audited (the invalidation's own decision is).
"""

from __future__ import annotations

from typing import Literal

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from cdn_batcher.cloudfront_invalidations import completed
from invalidator.cdn_messages import CdnTrackMessage, send_bodies
from invalidator.invalidation_metrics import publish
from invalidator.invalidation_runtime import current_invalidation_runtime
from reflex_core.invalidation_config import InvalidationStageConfig
from reflex_core.observability import logger
from reflex_core.runtime import Runtime

TrackOutcome = Literal["completed", "in-progress", "abandoned", "not-due", "unknown"]


class InvalidationTracker:
    def check(self, message: CdnTrackMessage, rt: Runtime[InvalidationStageConfig]) -> TrackOutcome:
        runtime = current_invalidation_runtime()
        now = rt.clock.now().timestamp()
        cdn = rt.config.invalidation.cdn_entry(message.cdn)
        if cdn is None:
            logger.warning("tracking an invalidation of a cdn entry no longer configured", extra={"cdn": message.cdn})
            return "unknown"
        queue_url = runtime.cdn_queue_url(cdn.name)
        if now < message.not_before:
            # Delivered early (clock skew, a replay): check again when it is due.
            send_bodies(rt.clients.sqs, queue_url, [message.model_dump_json()],
                        delay_s=runtime.delay(message.not_before - now))
            return "not-due"
        try:
            found = rt.clients.cloudfront.get_invalidation(DistributionId=message.distribution_id,
                                                           Id=message.invalidation_id)["Invalidation"]
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchInvalidation", "NoSuchDistribution"):
                logger.warning("tracked invalidation not found", extra={"invalidation": message.invalidation_id})
                return "unknown"
            raise
        elapsed = max(0.0, now - message.created_at)
        stage = rt.settings.stage
        if completed(str(found.get("Status", ""))):
            publish("CdnInvalidationSeconds", elapsed, MetricUnit.Seconds, stage=stage, cdn=cdn.name)
            logger.info("cdn invalidation completed", extra={
                "cdn": cdn.name, "invalidation": message.invalidation_id, "seconds": round(elapsed, 1),
                "paths": message.path_count, "polls": message.polls + 1})
            return "completed"
        if elapsed > cdn.tracking.give_up_after_s:
            publish("CdnInvalidationTrackingAbandoned", 1, MetricUnit.Count, stage=stage, cdn=cdn.name)
            logger.warning("cdn invalidation still in progress; no longer tracked", extra={
                "cdn": cdn.name, "invalidation": message.invalidation_id, "seconds": round(elapsed, 1)})
            return "abandoned"
        following = message.model_copy(update={"polls": message.polls + 1,
                                               "not_before": now + cdn.tracking.poll_s})
        send_bodies(rt.clients.sqs, queue_url, [following.model_dump_json()],
                    delay_s=runtime.delay(cdn.tracking.poll_s))
        return "in-progress"
