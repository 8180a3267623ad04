"""Reading what Reflex publishes, through SQS queues on the moto account of a test world."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Reader = Callable[[], list[dict[str, Any]]]


def queue_with_arn(sqs: Any, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def drain(sqs: Any, url: str) -> Reader:
    """A function that receives and deletes every message of the queue, returning the JSON bodies."""

    def read() -> list[dict[str, Any]]:
        out = []
        while msgs := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for m in msgs:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return out

    return read


def subscribe_notices(world: Any, queue_name: str = "test-notices") -> Reader:
    """A queue subscribed to the notification topic (raw delivery); call the result to read the notices."""
    sqs = world.clients.sqs
    url, arn = queue_with_arn(sqs, queue_name)
    world.clients.sns.subscribe(TopicArn=world.settings.notify_topic_arn, Protocol="sqs", Endpoint=arn,
                                Attributes={"RawMessageDelivery": "true"})
    return drain(sqs, url)
