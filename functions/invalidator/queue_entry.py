"""How the invalidation functions enter the core pipeline, directly or from an SQS batch.

A direct invocation (EventBridge, alarm action, SNS, Scheduler, console) goes to `Pipeline.handle` as it is.
An SQS batch (the event source mapping of a Reflex queue, with `ReportBatchItemFailures`) is turned into
`reflex_queue` triggers (see `reflex_core.triggers.QueueWire`), each run through the same pipeline, and the
messages that must be tried again are reported as `batchItemFailures`:

* the pipeline raised (an action failed and may succeed later, or an unexpected error);
* a decision was deferred, not refused for good: kill switch on, lock held, the same message being handled,
  circuit open, CloudFront's in-flight limit reached. The message comes back after its visibility timeout,
  and after `maxReceiveCount` deliveries it rests in the queue's dead-letter queue, replayable.

The idempotency key of a queue trigger includes each message's receive count: a message deferred once must
act when it comes back, and what protects against a duplicate delivery is the reaction's own bookkeeping (a
continuation's run and step, CloudFront's CallerReference).

A failure the reaction marks final (retries exhausted) was audited as failed and must not run again: it is
answered, not raised, and its message is not reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from invalidator.invalidation_runtime import InvocationState, invocation
from reflex_core.observability import logger
from reflex_core.pipeline import ActionFailed, Pipeline

RETRY_LATER = frozenset({"skipped:kill-switch", "skipped:locked", "skipped:duplicate-in-progress",
                         "skipped:circuit-open", "skipped:circuit-open-tripped", "skipped:in-flight-limit"})


@dataclass(frozen=True)
class QueueMessage:
    message_id: str
    receive_count: int
    queue: str
    body: dict[str, Any] | None
    raw: str

    @property
    def delivery_id(self) -> str:
        return f"{self.message_id}#{self.receive_count}"


def is_sqs_batch(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return bool(records) and isinstance(records, list) and all(
        isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)


def read_messages(event: dict[str, Any]) -> list[QueueMessage]:
    out = []
    for record in event["Records"]:
        raw = str(record.get("body", ""))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = None
        try:
            count = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
        except (TypeError, ValueError):
            count = 1
        out.append(QueueMessage(message_id=str(record.get("messageId", "")), receive_count=count,
                                queue=str(record.get("eventSourceARN", "")).rsplit(":", 1)[-1] or "queue",
                                body=body if isinstance(body, dict) else None, raw=raw))
    return out


def envelope(queue: str, kind: str, messages: list[QueueMessage], body: dict[str, Any]) -> dict[str, Any]:
    return {"reflex_queue": {"queue": queue, "kind": kind, "message_ids": [m.delivery_id for m in messages],
                             "body": body}}


def unparseable_body(message: QueueMessage) -> dict[str, Any]:
    return {"unparseable_body": message.raw[:2000]}


def deferred(result: dict[str, Any]) -> bool:
    """Whether a decision of this pipeline result asks for the message to come back later."""
    return any(d.get("outcome") in RETRY_LATER for d in result.get("decisions", []))


def run_queued(pipeline: Pipeline, event: dict[str, Any], context: Any, state: InvocationState) -> bool:
    """Run one queue trigger; True when its messages must be delivered again."""
    final_before = len(state.final_failures)
    try:
        result = pipeline.handle(event, context)
    except ActionFailed:
        if len(state.final_failures) > final_before:
            return False  # audited as failed for good: do not run it again
        logger.warning("queued work failed; it will be delivered again")
        return True
    except Exception:  # noqa: BLE001 - one message must not fail the others of the batch
        logger.exception("queued work raised; it will be delivered again")
        return True
    return deferred(result)


def batch_response(failed: list[QueueMessage]) -> dict[str, Any]:
    ids = dict.fromkeys(m.message_id for m in failed)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in ids]}


class InvalidatorEntry:
    """The invalidator's entry: direct triggers, and its continuation queue (one message per invocation)."""

    def __init__(self, pipeline: Pipeline, monotonic: Callable[[], float] | None = None) -> None:
        self.pipeline = pipeline
        self._monotonic = monotonic

    def handle(self, event: Any, context: Any) -> dict[str, Any]:
        kwargs = {"monotonic": self._monotonic} if self._monotonic else {}
        with invocation(context, **kwargs) as state:
            if is_sqs_batch(event):
                return self._batch(event, context, state)
            final_before = len(state.final_failures)
            try:
                return self.pipeline.handle(event, context)
            except ActionFailed as err:
                if len(state.final_failures) > final_before:
                    # Audited as failed with the counts reached; Lambda must not start it over.
                    return {"status": "failed", "final": True, "detail": str(err)[:2000]}
                raise

    def _batch(self, event: dict[str, Any], context: Any, state: InvocationState) -> dict[str, Any]:
        failed = []
        for message in read_messages(event):
            body = message.body if message.body is not None else unparseable_body(message)
            kind = str(body.get("kind") or "unknown")[:64]
            if run_queued(self.pipeline, envelope(message.queue, kind, [message], body), context, state):
                failed.append(message)
        return batch_response(failed)
