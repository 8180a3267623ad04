"""Durable guardrail state in one DynamoDB table (partition key `pk`, TTL attribute `expires_at`).

Item kinds, by `pk` prefix:
  lock#<target>          lease-based lock (conditional write; expires if its holder dies)
  cooldown#<target>      time of the last action per direction
  rate#<target>          times of recent actions, and the circuit breaker's open-until
  alarm#<name>           last known state of an alarm (never overwritten by an older event)
  policyalarms#<policy>  names of the alarms seen for a policy
  prewarm#<target>       the active pre-warm floor and when it ends
  promotion#<pair>       the pair's live colour and its current (or last) promotion; never expires,
                         written conditionally on its version (optimistic concurrency)
  freeze#scale-in#<policy>  promotions holding a scale-in freeze on a scaling policy, each until a time
Everything except locks, alarm memory, promotion records and freezes is read and written under the
target's lock.
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
class Promotion:
    """One promotion of a pair: traffic moving from `from_colour` to `to_colour`."""

    id: str
    from_colour: str
    to_colour: str
    status: str
    started_at: float
    updated_at: float
    execution_arn: str = ""
    step: int = -1  # index of the last schedule step whose weights were written
    weights: dict[str, int] = field(default_factory=dict)
    paused: bool = False
    approval_token: str | None = None
    resume_token: str | None = None
    approved_by: str | None = None  # a `promote` given before the gate was reached
    retention_until: float | None = None
    preflight_healthy: int | None = None
    release: str | None = None  # what was deployed (from the GreenReady event), for the audit and notices
    reason: str = ""
    # What each colour runs as far as Reflex knows ({"blue": "v6", "green": "v7"}), carried from promotion to
    # promotion: a replayed GreenReady for a release already live is refused (issue 8 #4).
    releases: dict[str, str] = field(default_factory=dict)


@dataclass
class PromotionRecord:
    """The durable state of a pair. `live` is the colour serving traffic, recorded when a promotion
    finalizes or rolls back, never inferred from the weights."""

    pair: str
    live: str = "blue"
    version: int = 0
    promotion: Promotion | None = None


class PromotionConflict(Exception):
    """The promotion record changed since it was read (another invocation wrote it)."""


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

    def take_lock(self, key: str, owner: str, now: datetime, lease_s: int) -> None:
        """Take the lock whoever holds it (for safety actions only; the holder's release then leaves ours)."""
        ts = now.timestamp()
        self._db.put_item(TableName=self._table, Item={
            "pk": {"S": f"lock#{key}"}, "owner": {"S": owner},
            "lease_until": {"N": f"{ts + lease_s:.3f}"}, "expires_at": {"N": str(int(ts + lease_s + _DAY))}})

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

    # ------------------------------------------------------------------ promotion record
    def promotion_record(self, pair: str) -> PromotionRecord:
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"promotion#{pair}"}},
                                 ConsistentRead=True).get("Item")
        if not item:
            return PromotionRecord(pair=pair)
        doc = json.loads(item["doc"]["S"])
        promotion = Promotion(**doc["promotion"]) if doc.get("promotion") else None
        return PromotionRecord(pair=pair, live=doc["live"], version=int(item["version"]["N"]), promotion=promotion)

    def save_promotion_record(self, record: PromotionRecord) -> PromotionRecord:
        """Write the record if nobody wrote it since it was read (same `version`); raise `PromotionConflict`
        otherwise. Returns the record with its new version. No TTL: the live colour is never forgotten."""
        doc = {"live": record.live, "promotion": record.promotion.__dict__ if record.promotion else None}
        new_version = record.version + 1
        try:
            self._db.put_item(
                TableName=self._table,
                Item={"pk": {"S": f"promotion#{record.pair}"}, "doc": {"S": json.dumps(doc, sort_keys=True)},
                      "version": {"N": str(new_version)}},
                ConditionExpression="attribute_not_exists(pk) OR version = :v",
                ExpressionAttributeValues={":v": {"N": str(record.version)}},
            )
        except ClientError as err:
            if _is_conditional_failure(err):
                raise PromotionConflict(record.pair) from None
            raise
        return PromotionRecord(pair=record.pair, live=record.live, version=new_version, promotion=record.promotion)

    # ------------------------------------------------------------------ scale-in freeze
    def place_scale_in_freeze(self, policy: str, holder: str, until: float) -> None:
        """Freeze scale-in of a scaling policy for `holder` until `until` (a safety expiry: a holder that
        dies does not freeze the policy forever). Several holders may freeze the same policy."""
        self._db.update_item(
            TableName=self._table, Key={"pk": {"S": f"freeze#scale-in#{policy}"}},
            UpdateExpression="SET holders = if_not_exists(holders, :empty)",
            ExpressionAttributeValues={":empty": {"M": {}}},
        )
        self._db.update_item(
            TableName=self._table, Key={"pk": {"S": f"freeze#scale-in#{policy}"}},
            UpdateExpression="SET holders.#h = :until, expires_at = :e",
            ExpressionAttributeNames={"#h": holder},
            ExpressionAttributeValues={":until": {"N": f"{until:.3f}"}, ":e": {"N": str(int(until + _DAY))}},
        )

    def release_scale_in_freeze(self, policy: str, holder: str) -> None:
        if holder not in self.scale_in_freezes(policy):
            return  # released already (a retried step): nothing to do
        self._db.update_item(
            TableName=self._table, Key={"pk": {"S": f"freeze#scale-in#{policy}"}},
            UpdateExpression="REMOVE holders.#h", ExpressionAttributeNames={"#h": holder},
        )

    def scale_in_freezes(self, policy: str) -> dict[str, float]:
        """Every holder of a freeze on the policy and until when (expired ones included)."""
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"freeze#scale-in#{policy}"}},
                                 ConsistentRead=True).get("Item")
        holders = item.get("holders", {}).get("M", {}) if item else {}
        return {name: float(value["N"]) for name, value in holders.items()}

    def active_scale_in_freeze(self, policy: str, now: datetime) -> tuple[str, float] | None:
        """(holder, until) of the freeze that lasts longest, if any is active now."""
        active = [(until, holder) for holder, until in self.scale_in_freezes(policy).items()
                  if until > now.timestamp()]
        if not active:
            return None
        until, holder = max(active)
        return holder, until


class StaleAlarmEvent(Exception):
    """A newer state of this alarm is already recorded; the event is out of order."""
