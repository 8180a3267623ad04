"""The queues of invalidation: the invalidator's continuation queue and one coalescing queue per distribution.

Each has its own dead-letter queue (a message that failed `max_receive_count` deliveries rests there, replayable
with a redrive), SQS-managed encryption, TLS-only access, and an alarm on the dead-letter queue's depth that
notifies the stage topic. Visibility timeouts are six times the consuming function's timeout (AWS guidance for
event source mappings), so a message is never delivered twice while it is being worked on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from reflex_constructs.notifications import Notifications


@dataclass(frozen=True)
class InvalidationQueuesProps:
    stage: str
    cdn_names: Sequence[str]
    notifications: Notifications
    consumer_timeout_s: int
    continuation: bool = True  # only caches have long scans to continue
    max_receive_count: int = 5
    retention_days: int = 4
    dlq_retention_days: int = 14


class InvalidationQueues(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: InvalidationQueuesProps) -> None:
        super().__init__(scope, construct_id)
        self._props = props
        self.continuation: sqs.Queue | None = None
        self.continuation_dlq: sqs.Queue | None = None
        if props.continuation:
            self.continuation, self.continuation_dlq = self._build_pair(
                "Continuation", f"reflex-{props.stage}-invalidation-continue",
                "Continuations of long invalidations (checkpoints) that failed every delivery")
        self.cdn: dict[str, sqs.Queue] = {}
        self.cdn_dlq: dict[str, sqs.Queue] = {}
        for name in props.cdn_names:
            queue, dlq = self._build_pair(f"Cdn-{name}", f"reflex-{props.stage}-cdn-{name}",
                                          f"CDN paths of {name} that could not be invalidated")
            self.cdn[name], self.cdn_dlq[name] = queue, dlq

    def _build_pair(self, construct_id: str, name: str, what: str) -> tuple[sqs.Queue, sqs.Queue]:
        props = self._props
        dlq = sqs.Queue(self, f"{construct_id}DeadLetterQueue", queue_name=f"{name}-dlq",
                        encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                        retention_period=Duration.days(props.dlq_retention_days))
        queue = sqs.Queue(self, f"{construct_id}Queue", queue_name=name,
                          encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                          visibility_timeout=Duration.seconds(6 * props.consumer_timeout_s),
                          retention_period=Duration.days(props.retention_days),
                          dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=props.max_receive_count,
                                                                queue=dlq))
        alarm = dlq.metric_approximate_number_of_messages_visible(
            period=Duration.minutes(5), statistic="Maximum").create_alarm(
            self, f"{construct_id}DeadLettersAlarm", alarm_name=f"{name}-dead-letters",
            alarm_description=f"{what}: they wait in {name}-dlq (redrive them once the cause is fixed).",
            threshold=0, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        alarm.add_alarm_action(cloudwatch_actions.SnsAction(props.notifications.topic))
        return queue, dlq

    @property
    def all_queues(self) -> list[sqs.Queue]:
        return [q for q in (self.continuation, *self.cdn.values()) if q is not None]
