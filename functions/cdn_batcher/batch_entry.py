"""The batcher's entry: one SQS batch (a coalescing queue's batching window) in, partial failures out.

* `paths` messages are checked one by one (a malformed one is rejected on its own: audited, parked in the
  function's DLQ, never sinking the others), then merged per distribution into one `reflex_queue` trigger
  of kind `cdn-paths`: one pipeline run, one CloudFront invalidation per distribution per batch.
* `track` messages follow invalidations in progress (invalidation_tracker.py).
* Messages whose work failed or was deferred (in-flight limit, kill switch, lock, breaker) are returned as
  `batchItemFailures`: SQS delivers them again, and no path is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from cdn_batcher.cdn_batch_reaction import BATCH_KIND
from cdn_batcher.invalidation_tracker import InvalidationTracker
from invalidator.cdn_messages import CdnPathsMessage, CdnTrackMessage, PathsError, validate_cdn_paths
from invalidator.invalidation_runtime import invocation
from invalidator.queue_entry import (
    QueueMessage,
    batch_response,
    envelope,
    is_sqs_batch,
    read_messages,
    run_queued,
    unparseable_body,
)
from reflex_core.invalidation_config import InvalidationStageConfig
from reflex_core.observability import logger, metrics
from reflex_core.pipeline import Pipeline
from reflex_core.runtime import current_runtime


class CdnBatchEntry:
    def __init__(self, pipeline: Pipeline, tracker: InvalidationTracker | None = None,
                 monotonic: Callable[[], float] | None = None) -> None:
        self.pipeline = pipeline
        self.tracker = tracker or InvalidationTracker()
        self._monotonic = monotonic

    def handle(self, event: Any, context: Any) -> dict[str, Any]:
        kwargs = {"monotonic": self._monotonic} if self._monotonic else {}
        with invocation(context, **kwargs) as state:
            if not is_sqs_batch(event):
                # Not from the queue (a console test): the pipeline rejects it with the reason, audited.
                return self.pipeline.handle(event, context)
            rt = current_runtime(InvalidationStageConfig)
            metrics.add_metric(name="QueueMessages", unit="Count", value=len(event["Records"]))
            failed: list[QueueMessage] = []
            groups: dict[str, list[tuple[QueueMessage, CdnPathsMessage]]] = {}
            for message in read_messages(event):
                body = message.body
                kind = body.get("kind") if body is not None else None
                if kind == "track" and body is not None:
                    try:
                        track = CdnTrackMessage.model_validate(body)
                    except ValidationError:
                        self._reject(message, "track", body, context, state)
                        continue
                    try:
                        self.tracker.check(track, rt)
                    except Exception:  # noqa: BLE001 - checked again when the message comes back
                        logger.exception("tracking check failed; it will be delivered again")
                        failed.append(message)
                    continue
                if kind == "paths" and body is not None:
                    try:
                        paths = CdnPathsMessage.model_validate(body)
                        cdn = rt.config.invalidation.cdn_entry(paths.cdn)
                        if cdn is None:
                            raise LookupError(paths.cdn)
                        validate_cdn_paths(cdn, paths.paths, paths.wildcards, per_request_limit=False)
                    except (ValidationError, PathsError, LookupError):
                        self._reject(message, BATCH_KIND, {"cdn": str(body.get("cdn", "")), "paths": body.get(
                            "paths", []), "wildcards": body.get("wildcards", [])}, context, state)
                        continue
                    groups.setdefault(paths.cdn, []).append((message, paths))
                    continue
                self._reject(message, str(kind or "unknown")[:64], body or unparseable_body(message), context, state)
            for name, items in groups.items():
                messages = [m for m, _ in items]
                merged = {"cdn": name,
                          "paths": list(dict.fromkeys(p for _, msg in items for p in msg.paths)),
                          "wildcards": list(dict.fromkeys(w for _, msg in items for w in msg.wildcards)),
                          "requests": list(dict.fromkeys(f"{msg.requested_by} {msg.request}".strip()
                                                         for _, msg in items))[:50]}
                if run_queued(self.pipeline, envelope(messages[0].queue, BATCH_KIND, messages, merged), context,
                              state):
                    failed.extend(messages)
            return batch_response(failed)

    def _reject(self, message: QueueMessage, kind: str, body: dict[str, Any], context: Any, state: Any) -> None:
        """A malformed message goes through the pipeline alone: rejected with the field named, audited and
        parked in the function's dead-letter queue (then deleted from the coalescing queue)."""
        run_queued(self.pipeline, envelope(message.queue, kind, [message], body), context, state)
