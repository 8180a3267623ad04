"""The audit trail: one record per decision, skipped ones included.

Each record goes to the DynamoDB audit table (TTL, point-in-time recovery), to EventBridge as a
"Reflex Decision" event, to CloudWatch as EMF metrics (decisions by reaction, outcome and
reason), and, for executed and failed actions and tripped breakers, to the SNS topic.
A failing sink never undoes or repeats an action: the record is logged in full instead.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from reflex_core.actions import Decision
from reflex_core.clock import iso
from reflex_core.observability import NAMESPACE, logger
from reflex_core.triggers import Trigger

DECISION_DETAIL_TYPE = "Reflex Decision"


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN, Infinity) as a string: audit records are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON (never a bare NaN or Infinity)."""
    return json.dumps(json_safe(value), allow_nan=False, default=str, **kwargs)


def outcome_class(outcome: str) -> tuple[str, str]:
    """('skipped', 'cooldown') from 'skipped:cooldown'; ('executed', '') from 'executed'."""
    head, _, reason = outcome.partition(":")
    return head, reason


class AuditTrail:
    def __init__(self, *, clients: Any, stage: str, reaction: str, table: str, topic_arn: str,
                 event_bus: str, ttl_days: int, namespace: str = NAMESPACE) -> None:
        self._clients = clients
        self._stage = stage
        self._reaction = reaction
        self._table = table
        self._topic_arn = topic_arn
        self._event_bus = event_bus
        self._ttl = timedelta(days=ttl_days)
        self._namespace = namespace

    def build(self, decision: Decision, trigger: Trigger | None, *, now: datetime, correlation_id: str,
              dry_run: bool, raw_trigger: dict[str, Any] | None = None) -> dict[str, Any]:
        """The record of `decision`; with the id and time the decision fixed in advance, when it did (a retried
        attempt then writes the very same record, which the table keeps once)."""
        record_id = decision.audit_id or str(uuid.uuid4())
        record: dict[str, Any] = {
            "id": record_id,
            "at": decision.audit_at or iso(now),
            "stage": self._stage,
            "reaction": self._reaction,
            "trigger": trigger.summary() if trigger else (raw_trigger or {}),
            "who": trigger.who if trigger else "unknown",
            "policy": decision.policy,
            "target": decision.target_key,
            "operation": decision.operation,
            "action": decision.action.model_dump(mode="json") if decision.action else None,
            "before": decision.before,
            "after": decision.after,
            "outcome": decision.outcome,
            "detail": decision.detail,
            "dry_run": dry_run,
            "correlation_id": correlation_id,
        }
        if decision.page:
            record["page"] = True
        return json_safe(record)  # type: ignore[no-any-return]

    def write(self, record: dict[str, Any], now: datetime) -> bool:
        """Add the record to the trail, then publish it (event, metric, notice). False when the table write
        failed: the record is then only in the log line, and nothing is published (an action's intent stays open,
        so the retry writes the very same record and publishes it). Publication is at least once: a record found
        already in the trail is published again, because its first write may have landed with its answer lost
        (botocore's own retry then meets the condition) and nothing was published then. A lost PAGE is worse than
        a repeated one; consumers de-duplicate on the record's `id`."""
        written = self._put_item(record, now)
        if written is None:
            return False
        if not written:
            logger.info("audit record already in the trail (an answer lost, or a retry): published again",
                        extra={"audit_id": record["id"]})
        self._put_event(record)
        self._emit_metric(record)
        head, reason = outcome_class(record["outcome"])
        if head in ("executed", "failed") or reason == "circuit-open-tripped" or record.get("page"):
            self._notify(record)
        return True

    # ------------------------------------------------------------------ sinks
    def _put_item(self, record: dict[str, Any], now: datetime) -> bool | None:
        """Add the record (never overwrite one: the trail is append-only). False when it is already there, None
        when the write failed (after botocore's retries)."""
        item = {
            "pk": {"S": f"{self._reaction}#{record['target'] or '-'}"},
            "sk": {"S": f"{record['at']}#{record['id']}"},
            "id": {"S": record["id"]},
            "outcome": {"S": record["outcome"]},
            "trigger_kind": {"S": str(record["trigger"].get("kind", "invalid"))},
            "record": {"S": dumps(record, sort_keys=True)},
            "expires_at": {"N": str(int((now + self._ttl).timestamp()))},
        }
        if record["policy"]:
            item["policy"] = {"S": record["policy"]}
        try:
            self._clients.dynamodb.put_item(TableName=self._table, Item=item,
                                            ConditionExpression="attribute_not_exists(pk)")
        except Exception as err:  # noqa: BLE001 - the log line below keeps the record
            code = getattr(err, "response", {}).get("Error", {}).get("Code")
            if code == "ConditionalCheckFailedException":
                return False
            logger.exception("audit table write failed; full record follows", extra={"audit_record": record})
            return None
        return True

    def _put_event(self, record: dict[str, Any]) -> None:
        try:
            resp = self._clients.events.put_events(Entries=[{
                "Source": f"reflex.{self._stage}",
                "DetailType": DECISION_DETAIL_TYPE,
                "Detail": dumps(record),
                "EventBusName": self._event_bus,
            }])
            if resp.get("FailedEntryCount"):
                logger.warning("audit event rejected by EventBridge", extra={"audit_id": record["id"]})
        except Exception:  # noqa: BLE001
            logger.exception("audit event publish failed", extra={"audit_id": record["id"]})

    def _emit_metric(self, record: dict[str, Any]) -> None:
        head, reason = outcome_class(record["outcome"])
        with single_metric(name="Decisions", unit=MetricUnit.Count, value=1, namespace=self._namespace,
                           default_dimensions={"stage": self._stage, "reaction": self._reaction}) as metric:
            metric.add_dimension(name="outcome", value=head)
            metric.add_dimension(name="reason", value=(reason or "none")[:64])

    def _notify(self, record: dict[str, Any]) -> None:
        if not self._topic_arn:
            return
        head, reason = outcome_class(record["outcome"])
        severity = "PAGE" if reason == "circuit-open-tripped" or head == "failed" or record.get("page") else "INFO"
        subject = f"[Reflex {self._stage}] {severity} {self._reaction} {record['outcome']} {record['target'] or ''}"
        try:
            self._clients.sns.publish(
                TopicArn=self._topic_arn, Subject=subject[:99],
                Message=dumps(record, indent=2),
                MessageAttributes={"severity": {"DataType": "String", "StringValue": severity},
                                   "outcome": {"DataType": "String", "StringValue": head}},
            )
        except Exception:  # noqa: BLE001
            logger.exception("notification failed", extra={"audit_id": record["id"]})
