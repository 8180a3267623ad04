"""Durable guardrail state in one DynamoDB table (partition key `pk`, TTL attribute `expires_at`).

Item kinds, by `pk` prefix:
  lock#<target>          lease-based lock (conditional write; expires if its holder dies)
  cooldown#<target>      time of the last action per direction
  rate#<target>          times of recent actions, and the circuit breaker's open-until
  alarm#<name>           last known state of an alarm (never overwritten by an older event)
  policyalarms#<policy>  names of the alarms seen for a policy
  prewarm#<target>       the active pre-warm floor and when it ends
Everything except locks and alarm memory is read and written under the target's lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

_DAY = 86400


def _is_conditional_failure(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


@dataclass
class AlarmMemory:
    name: str
    state: str
    changed_at: float
    breach: float | None = None


@dataclass
class RateWindow:
    actions: list[float] = field(default_factory=list)
    circuit_open_until: float = 0.0


@dataclass
class PrewarmWindow:
    name: str
    floor: int
    until: float
    original_min: int | None = None


class StateStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    # ------------------------------------------------------------------ generic
    def _get(self, pk: str) -> dict[str, Any] | None:
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
        if not item:
            return None
        return json.loads(item["doc"]["S"]) if "doc" in item else {}

    def _put(self, pk: str, doc: dict[str, Any], expires_at: float) -> None:
        self._db.put_item(TableName=self._table, Item={
            "pk": {"S": pk}, "doc": {"S": json.dumps(doc, sort_keys=True)}, "expires_at": {"N": str(int(expires_at))},
        })

    def _delete(self, pk: str) -> None:
        self._db.delete_item(TableName=self._table, Key={"pk": {"S": pk}})

    # ------------------------------------------------------------------ lock
    def acquire_lock(self, key: str, owner: str, now: datetime, lease_s: int) -> bool:
        ts = now.timestamp()
        try:
            self._db.put_item(
                TableName=self._table,
                Item={"pk": {"S": f"lock#{key}"}, "owner": {"S": owner},
                      "lease_until": {"N": f"{ts + lease_s:.3f}"}, "expires_at": {"N": str(int(ts + lease_s + _DAY))}},
                ConditionExpression="attribute_not_exists(pk) OR lease_until < :now",
                ExpressionAttributeValues={":now": {"N": f"{ts:.3f}"}},
            )
        except ClientError as err:
            if _is_conditional_failure(err):
                return False
            raise
        return True

    def release_lock(self, key: str, owner: str) -> None:
        try:
            self._db.delete_item(
                TableName=self._table, Key={"pk": {"S": f"lock#{key}"}},
                ConditionExpression="#o = :owner", ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as err:
            if not _is_conditional_failure(err):  # lease expired and someone else holds it: leave theirs
                raise

    # ------------------------------------------------------------------ cooldown
    def last_actions(self, key: str) -> dict[str, float]:
        return self._get(f"cooldown#{key}") or {}

    def record_action_time(self, key: str, direction: str, now: datetime) -> None:
        doc = self.last_actions(key)
        doc[direction] = now.timestamp()
        self._put(f"cooldown#{key}", doc, now.timestamp() + 30 * _DAY)

    # ------------------------------------------------------------------ rate limit / circuit breaker
    def rate_window(self, key: str) -> RateWindow:
        doc = self._get(f"rate#{key}") or {}
        return RateWindow(actions=list(doc.get("actions", [])), circuit_open_until=float(doc.get("open_until", 0)))

    def save_rate_window(self, key: str, window: RateWindow, now: datetime) -> None:
        self._put(f"rate#{key}", {"actions": window.actions, "open_until": window.circuit_open_until},
                  max(now.timestamp(), window.circuit_open_until) + 2 * _DAY)

    # ------------------------------------------------------------------ alarm memory
    def remember_alarm(self, memory: AlarmMemory, policies: list[str], now: datetime) -> AlarmMemory | None:
        """Store the alarm's state unless a newer one is stored; return what was stored before.

        Conditional on `changed_at`, so an older event delivered late never overwrites a newer state.
        Raises `StaleAlarmEvent` when the stored state is newer.
        """
        pk = f"alarm#{memory.name}"
        previous = self._get(pk)
        doc = {"state": memory.state, "changed_at": memory.changed_at, "breach": memory.breach}
        try:
            self._db.put_item(
                TableName=self._table,
                Item={"pk": {"S": pk}, "doc": {"S": json.dumps(doc)}, "changed_at": {"N": f"{memory.changed_at:.3f}"},
                      "expires_at": {"N": str(int(now.timestamp() + 30 * _DAY))}},
                ConditionExpression="attribute_not_exists(pk) OR changed_at <= :t",
                ExpressionAttributeValues={":t": {"N": f"{memory.changed_at:.3f}"}},
            )
        except ClientError as err:
            if _is_conditional_failure(err):
                raise StaleAlarmEvent(memory.name) from None
            raise
        for policy in policies:
            self._db.update_item(
                TableName=self._table, Key={"pk": {"S": f"policyalarms#{policy}"}},
                UpdateExpression="ADD alarm_names :n SET expires_at = :e",
                ExpressionAttributeValues={":n": {"SS": [memory.name]},
                                           ":e": {"N": str(int(now.timestamp() + 30 * _DAY))}},
            )
        if previous is None:
            return None
        return AlarmMemory(name=memory.name, state=previous["state"], changed_at=float(previous["changed_at"]),
                           breach=previous.get("breach"))

    def alarms_for_policy(self, policy: str) -> list[AlarmMemory]:
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"policyalarms#{policy}"}},
                                 ConsistentRead=True).get("Item")
        names = sorted(item["alarm_names"]["SS"]) if item and "alarm_names" in item else []
        out = []
        for name in names:
            doc = self._get(f"alarm#{name}")
            if doc is not None:
                out.append(AlarmMemory(name=name, state=doc["state"], changed_at=float(doc["changed_at"]),
                                       breach=doc.get("breach")))
        return out

    # ------------------------------------------------------------------ pre-warm
    def prewarm(self, key: str) -> PrewarmWindow | None:
        doc = self._get(f"prewarm#{key}")
        return PrewarmWindow(**doc) if doc else None

    def save_prewarm(self, key: str, window: PrewarmWindow) -> None:
        self._put(f"prewarm#{key}", window.__dict__, window.until + 7 * _DAY)

    def clear_prewarm(self, key: str) -> None:
        self._delete(f"prewarm#{key}")


class StaleAlarmEvent(Exception):
    """A newer state of this alarm is already recorded; the event is out of order."""
