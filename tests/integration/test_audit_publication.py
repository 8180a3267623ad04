"""The audit trail publishes every record at least once, even when its first table write landed with its answer
lost (session 4's review: botocore's own retry then met `attribute_not_exists` and the record was never published:
no event, no PAGE)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
from moto import mock_aws

from reflex_core.actions import Decision
from reflex_core.audit import AuditTrail

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class _Clients:
    """The trail's clients; DynamoDB's PutItem lands, and then botocore retries it (the answer was lost)."""

    def __init__(self, lose_first_answer: bool) -> None:
        self.dynamodb = _LosingPut(boto3.client("dynamodb", region_name="us-east-1"), lose_first_answer)
        self.sns = _Counting(boto3.client("sns", region_name="us-east-1"), "publish")
        self.events = _Counting(boto3.client("events", region_name="us-east-1"), "put_events")


class _LosingPut:
    def __init__(self, client: Any, lose: bool) -> None:
        self._client, self._lose = client, lose

    def put_item(self, **kw: Any) -> Any:
        if self._lose:
            self._lose = False
            self._client.put_item(**kw)  # lands; its answer is lost, and botocore sends it again:
        return self._client.put_item(**kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _Counting:
    def __init__(self, client: Any, method: str) -> None:
        self._client, self._method, self.calls = client, method, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name != self._method:
            return attr

        def counted(**kw: Any) -> Any:
            self.calls += 1
            return attr(**kw)
        return counted


def _trail(lose: bool) -> tuple[AuditTrail, _Clients]:
    clients = _Clients(lose)
    clients.dynamodb.create_table(
        TableName="audit", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}])
    topic = clients.sns.create_topic(Name="reflex")["TopicArn"]
    trail = AuditTrail(clients=clients, stage="dev", reaction="scaler", table="audit", topic_arn=topic,
                       event_bus="default", ttl_days=30)
    return trail, clients


def _record(trail: AuditTrail) -> dict[str, Any]:
    decision = Decision(policy="api", target_key="ecs-service/web/api", operation="scale_out",
                        outcome="failed:ThrottlingException", detail="could not scale", audit_id="a-1")
    return trail.build(decision, None, now=NOW, correlation_id="c-1", dry_run=False)


def test_a_record_whose_write_answer_was_lost_is_still_published() -> None:
    with mock_aws():
        trail, clients = _trail(lose=True)
        assert trail.write(_record(trail), NOW)
        assert clients.events.calls == 1 and clients.sns.calls == 1  # the event and the PAGE went out
        items = clients.dynamodb.scan(TableName="audit")["Items"]
        assert len(items) == 1  # the trail keeps the record once


def test_a_retried_attempt_publishes_again_at_least_once_and_the_trail_keeps_one_record() -> None:
    with mock_aws():
        trail, clients = _trail(lose=False)
        record = _record(trail)
        assert trail.write(record, NOW) and trail.write(record, NOW)
        assert clients.sns.calls == 2 and clients.events.calls == 2
        assert len(clients.dynamodb.scan(TableName="audit")["Items"]) == 1
