"""Durable guardrail state in one DynamoDB table (partition key `pk`, TTL attribute `expires_at`).

Item kinds, by `pk` prefix:
  lock#<target>          lease-based lock (conditional write; expires if its holder dies)
  cooldown#<target>      time of the last action per direction (only ever moves forward)
  rate#<target>          recent actions with their direction, the breakers' open-until (versioned writes)
  alarm#<reaction>#<name>  last known state of an alarm as this reaction saw it (never overwritten by an
                         older event); each reaction has its own, so one reaction's OK cannot make another's
                         ALARM stale
  policyalarms#<reaction>#<policy>  names of the alarms seen for a policy
  intent#<reaction>#<trigger digest>#<target>  the write-ahead record of one decided action: planned ->
                         applied -> done (docs/architecture.md, "Failure semantics")
  prewarms#<target>      the pre-warm windows (and prewarm#<target>, their one-window summary for the
                         previous release)
  promotion#<pair>       the pair's live colour and its current (or last) promotion; never expires,
                         written conditionally on its version (optimistic concurrency)
  freeze#scale-in#<policy>  promotions holding a scale-in freeze on a scaling policy, each until a time
Everything except locks, alarm memory, promotion records and freezes is read and written under the
target's lock.
"""

from __future__ import annotations

import dataclasses
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
    """Recent actions on a target as (time, direction) pairs ("" for operations without a direction), and until
    when each direction's breaker is open ("" = every direction: an oscillation trip). `version` makes the
    read-modify-write of the window conditional."""

    actions: list[tuple[float, str]] = field(default_factory=list)
    open_until: dict[str, float] = field(default_factory=dict)
    version: int = 0

    @property
    def circuit_open_until(self) -> float:
        return max(self.open_until.values(), default=0.0)

    def open_for(self, direction: str | None) -> float:
        """Until when an action in `direction` is refused by an open breaker (0 when closed)."""
        return max(self.open_until.get("", 0.0), self.open_until.get(direction or "", 0.0))


class RateWindowConflict(Exception):
    """The rate window changed since it was read."""


@dataclass
class IntentRecord:
    """The write-ahead record of one decided action (see `StateStore.begin_intent`)."""

    pk: str
    status: str  # planned | applied | done
    action: dict[str, Any]
    owner: str
    created_at: float
    audit_id: str
    audit_at: str
    outcome: str = ""
    version: int = 1


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
    # Bumped by every decision that takes the pair away from the steps in flight (a rollback, an abort, an
    # operator's `close`, a new promotion's claim): a step decided at an older epoch must not write the record
    # (docs/architecture.md, "Promotion races"). `version` changes with every write; `epoch` only then.
    epoch: int = 0
    # Why the reconcile could not put the traffic back where the record says (the known-good colour has no healthy
    # target): it paged once, and stays quiet until the colour can take traffic again or an operator `close`s.
    # A top-level key of the item: a release that does not know it ignores it (and drops it on its next write).
    blocked: str = ""
    # A fingerprint of the decision that last ended the promotion (a rollback, an abort): its own retry recognises
    # its earlier attempt, a different decision knows it came second. Top-level, like `blocked`.
    decided_by: str = ""


class PromotionConflict(Exception):
    """The promotion record changed since it was read (another invocation wrote it)."""


@dataclass
class PrewarmWindow:
    name: str
    floor: int
    until: float


@dataclass
class PrewarmState:
    """The pre-warm windows of one target, and what Reflex did to its platform floor (ASG MinSize).

    * Several windows may overlap: the floor in force is the highest of the active ones.
    * `original_min`: the platform floor before Reflex first raised it; `set_min`: the floor Reflex last set.
      At a window's end Reflex restores only what it changed: when the platform floor is no longer `set_min`,
      someone else changed it, and it is left in place (and audited as such). `set_min` None: not Reflex's.
    """

    windows: dict[str, PrewarmWindow]
    original_min: int | None = None
    set_min: int | None = None
    # Read from the one-window item of the release before overlapping windows: that release may have raised the
    # floor for a window the item no longer names (a second window overwrote the first), so what it set is only
    # known to be at least the remaining window's floor.
    legacy: bool = False

    def active(self, now: float) -> list[PrewarmWindow]:
        return sorted((w for w in self.windows.values() if w.until > now), key=lambda w: w.name)

    def expired(self, now: float) -> list[PrewarmWindow]:
        return sorted((w for w in self.windows.values() if w.until <= now), key=lambda w: w.name)

    def floor_at(self, now: float) -> int:
        return max((w.floor for w in self.active(now)), default=0)

    def to_doc(self) -> dict[str, Any]:
        return {"windows": {n: {"floor": w.floor, "until": w.until} for n, w in self.windows.items()},
                "original_min": self.original_min, "set_min": self.set_min, "legacy": self.legacy}

    def legacy_doc(self) -> dict[str, Any] | None:
        """The one-window item the previous release reads (`prewarm#<target>`), kept so that rolling back a
        deploy finds a window it understands: the highest floor, held until the last window ends."""
        if not self.windows:
            return None
        top = max(self.windows.values(), key=lambda w: (w.floor, w.until))
        return {"name": top.name, "floor": top.floor, "until": max(w.until for w in self.windows.values()),
                "original_min": self.original_min}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> PrewarmState:
        if "windows" not in doc:  # one window per target, as stored before overlapping windows
            window = PrewarmWindow(name=str(doc["name"]), floor=int(doc["floor"]), until=float(doc["until"]))
            original = doc.get("original_min")
            return cls(windows={window.name: window}, original_min=None if original is None else int(original),
                       set_min=window.floor if original is not None else None, legacy=original is not None)
        windows = {str(n): PrewarmWindow(name=str(n), floor=int(w["floor"]), until=float(w["until"]))
                   for n, w in doc["windows"].items()}
        return cls(windows=windows, original_min=_opt_int(doc.get("original_min")),
                   set_min=_opt_int(doc.get("set_min")), legacy=bool(doc.get("legacy", False)))

    def reflex_set(self, floor: int | None) -> bool:
        """Whether the platform floor `floor` is the one Reflex set (so Reflex may restore it)."""
        if self.set_min is None or floor is None:
            return False
        return floor == self.set_min or (self.legacy and floor >= self.set_min)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


class StateStore:
    def __init__(self, dynamodb: Any, table: str, reaction: str = "") -> None:
        self._db = dynamodb
        self._table = table
        self._reaction = reaction

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

    def get_doc(self, pk: str) -> dict[str, Any] | None:
        """A reaction's own small record (its key under the reaction's prefix, e.g. `resharder#...`)."""
        return self._get(pk)

    def put_doc(self, pk: str, doc: dict[str, Any], expires_at: float) -> None:
        self._put(pk, doc, expires_at)

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
                # When the first attempt landed but its answer was lost, botocore's retry fails the condition
                # against our own item: the lock is ours.
                return self.lock_owner(key) == owner
            raise
        return True

    def lock_owner(self, key: str) -> str | None:
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"lock#{key}"}},
                                 ConsistentRead=True).get("Item")
        return item["owner"]["S"] if item and "owner" in item else None

    def live_lock_owner(self, key: str, now: datetime) -> str | None:
        """The holder of the lock if its lease has not expired, else None."""
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"lock#{key}"}},
                                 ConsistentRead=True).get("Item")
        if not item or "owner" not in item or float(item.get("lease_until", {}).get("N", "0")) <= now.timestamp():
            return None
        return str(item["owner"]["S"])

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
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"cooldown#{key}"}},
                                 ConsistentRead=True).get("Item") or {}
        return {d: float(item[f"at_{d}"]["N"]) for d in ("out", "in") if f"at_{d}" in item}

    def record_action_time(self, key: str, direction: str, now: datetime) -> None:
        """Remember when the last action in `direction` happened. The time only moves forward (a late writer with
        an older time leaves the newer one), so concurrent writers cannot shorten a cooldown."""
        attr = f"at_{direction}"
        try:
            self._db.update_item(
                TableName=self._table, Key={"pk": {"S": f"cooldown#{key}"}},
                UpdateExpression="SET #a = :t, expires_at = :e",
                ConditionExpression="attribute_not_exists(#a) OR #a < :t",
                ExpressionAttributeNames={"#a": attr},
                ExpressionAttributeValues={":t": {"N": f"{now.timestamp():.3f}"},
                                           ":e": {"N": str(int(now.timestamp() + 30 * _DAY))}},
            )
        except ClientError as err:
            if not _is_conditional_failure(err):
                raise

    # ------------------------------------------------------------------ rate limit / circuit breaker
    def rate_window(self, key: str) -> RateWindow:
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"rate#{key}"}},
                                 ConsistentRead=True).get("Item")
        if not item:
            return RateWindow()
        doc = json.loads(item["doc"]["S"])
        actions = [(float(a[0]), str(a[1])) if isinstance(a, list) else (float(a), "") for a in doc.get("actions", [])]
        open_until = doc.get("open_until", {})
        if not isinstance(open_until, dict):  # written before breakers were per direction
            open_until = {"": float(open_until)}
        return RateWindow(actions=actions, open_until={k: float(v) for k, v in open_until.items()},
                          version=int(item.get("version", {}).get("N", "0")))

    def save_rate_window(self, key: str, window: RateWindow, now: datetime) -> RateWindow:
        """Write the window if nobody wrote it since it was read; raise `RateWindowConflict` otherwise."""
        doc = {"actions": [list(a) for a in window.actions], "open_until": window.open_until}
        new_version = window.version + 1
        expires = max(now.timestamp(), window.circuit_open_until) + 2 * _DAY
        try:
            self._db.put_item(
                TableName=self._table,
                Item={"pk": {"S": f"rate#{key}"}, "doc": {"S": json.dumps(doc, sort_keys=True)},
                      "version": {"N": str(new_version)}, "expires_at": {"N": str(int(expires))}},
                ConditionExpression="attribute_not_exists(pk) OR version = :v",
                ExpressionAttributeValues={":v": {"N": str(window.version)}},
            )
        except ClientError as err:
            if _is_conditional_failure(err):
                raise RateWindowConflict(key) from None
            raise
        return RateWindow(actions=window.actions, open_until=window.open_until, version=new_version)

    def update_rate_window(self, key: str, change: Any, now: datetime, attempts: int = 5) -> RateWindow:
        """Read, apply `change(window) -> window`, write conditionally; again on a concurrent write."""
        for _ in range(attempts - 1):
            try:
                return self.save_rate_window(key, change(self.rate_window(key)), now)
            except RateWindowConflict:
                continue
        return self.save_rate_window(key, change(self.rate_window(key)), now)

    # ------------------------------------------------------------------ alarm memory
    def _alarm_pk(self, name: str, reaction: str | None) -> str:
        return f"alarm#{reaction or self._reaction}#{name}"

    def remember_alarm(self, memory: AlarmMemory, policies: list[str], now: datetime,
                       reaction: str | None = None) -> AlarmMemory | None:
        """Store the alarm's state, as `reaction` saw it, unless a newer one is stored; return what was stored before.

        Conditional on `changed_at`, so an older event delivered late never overwrites a newer state.
        Raises `StaleAlarmEvent` when the stored state is newer.
        """
        pk = self._alarm_pk(memory.name, reaction)
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
                TableName=self._table, Key={"pk": {"S": f"policyalarms#{reaction or self._reaction}#{policy}"}},
                UpdateExpression="ADD alarm_names :n SET expires_at = :e",
                ExpressionAttributeValues={":n": {"SS": [memory.name]},
                                           ":e": {"N": str(int(now.timestamp() + 30 * _DAY))}},
            )
        if previous is None:
            return None
        return AlarmMemory(name=memory.name, state=previous["state"], changed_at=float(previous["changed_at"]),
                           breach=previous.get("breach"))

    def alarms_for_policy(self, policy: str, reaction: str | None = None) -> list[AlarmMemory]:
        item = self._db.get_item(TableName=self._table,
                                 Key={"pk": {"S": f"policyalarms#{reaction or self._reaction}#{policy}"}},
                                 ConsistentRead=True).get("Item")
        names = sorted(item["alarm_names"]["SS"]) if item and "alarm_names" in item else []
        out = []
        for name in names:
            doc = self._get(self._alarm_pk(name, reaction))
            if doc is not None:
                out.append(AlarmMemory(name=name, state=doc["state"], changed_at=float(doc["changed_at"]),
                                       breach=doc.get("breach")))
        return out

    # ------------------------------------------------------------------ write-ahead intents
    @staticmethod
    def _intent_record(item: dict[str, Any]) -> IntentRecord:
        return IntentRecord(pk=item["pk"]["S"], status=item["status"]["S"], action=json.loads(item["action"]["S"]),
                            owner=item["owner"]["S"], created_at=float(item["created_at"]["N"]),
                            audit_id=item["audit_id"]["S"], audit_at=item["audit_at"]["S"],
                            outcome=item.get("outcome", {}).get("S", ""), version=int(item["version"]["N"]))

    def intent(self, pk: str) -> IntentRecord | None:
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
        return self._intent_record(item) if item else None

    def begin_intent(self, record: IntentRecord, expires_at: float) -> IntentRecord | None:
        """Record a decided action before acting. Returns None when written; the existing record when another
        attempt already wrote one (then that attempt's action is completed, not planned anew)."""
        try:
            self._db.put_item(
                TableName=self._table,
                Item={"pk": {"S": record.pk}, "status": {"S": record.status},
                      "action": {"S": json.dumps(record.action, sort_keys=True)}, "owner": {"S": record.owner},
                      "created_at": {"N": f"{record.created_at:.3f}"}, "audit_id": {"S": record.audit_id},
                      "audit_at": {"S": record.audit_at}, "version": {"N": "1"},
                      "expires_at": {"N": str(int(expires_at))}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as err:
            if not _is_conditional_failure(err):
                raise
            existing = self.intent(record.pk)
            if existing is not None and existing.owner == record.owner:
                return None  # our own write landed and its answer was lost
            return existing
        return None

    def advance_intent(self, pk: str, status: str, outcome: str = "") -> None:
        """planned -> applied -> done; never backwards (a late writer cannot reopen a completed intent)."""
        order = {"planned": 1, "applied": 2, "done": 3}
        try:
            self._db.update_item(
                TableName=self._table, Key={"pk": {"S": pk}},
                UpdateExpression="SET #s = :s, #o = :o, version = :r",
                ConditionExpression="attribute_exists(pk) AND version < :r",
                ExpressionAttributeNames={"#s": "status", "#o": "outcome"},
                ExpressionAttributeValues={":s": {"S": status}, ":o": {"S": outcome},
                                           ":r": {"N": str(order[status])}},
            )
        except ClientError as err:
            if not _is_conditional_failure(err):
                raise

    def drop_intent(self, pk: str) -> None:
        """Forget a planned intent whose action certainly did not happen (the next attempt plans anew)."""
        self._delete(pk)

    # ------------------------------------------------------------------ pre-warm
    # Pre-warm windows live in `prewarms#<target>`; `prewarm#<target>` is the one-window item of the release
    # before overlapping windows, still written (a summary) so that a rolled-back release reads a window it
    # understands, and read when the new item is absent (the first run after the upgrade).
    def prewarm(self, key: str) -> PrewarmState | None:
        doc = self._get(f"prewarms#{key}")
        if doc:
            return PrewarmState.from_doc(doc)
        legacy = self._get(f"prewarm#{key}")
        return PrewarmState.from_doc(legacy) if legacy else None

    def save_prewarm(self, key: str, state: PrewarmState) -> None:
        last = max((w.until for w in state.windows.values()), default=0.0)
        self._put(f"prewarms#{key}", state.to_doc(), last + 7 * _DAY)
        legacy = state.legacy_doc()
        if legacy is not None:
            self._put(f"prewarm#{key}", legacy, last + 7 * _DAY)

    def clear_prewarm(self, key: str) -> None:
        self._delete(f"prewarms#{key}")
        self._delete(f"prewarm#{key}")

    # ------------------------------------------------------------------ promotion record
    def promotion_record(self, pair: str) -> PromotionRecord:
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"promotion#{pair}"}},
                                 ConsistentRead=True).get("Item")
        if not item:
            return PromotionRecord(pair=pair)
        doc = json.loads(item["doc"]["S"])
        known = {f.name for f in dataclasses.fields(Promotion)}
        # Fields a newer release added are ignored, so that rolling a deploy back never breaks on the record.
        promotion = (Promotion(**{k: v for k, v in doc["promotion"].items() if k in known})
                     if doc.get("promotion") else None)
        return PromotionRecord(pair=pair, live=doc["live"], version=int(item["version"]["N"]), promotion=promotion,
                               epoch=int(doc.get("epoch", 0)), blocked=str(doc.get("blocked") or ""),
                               decided_by=str(doc.get("decided_by") or ""))

    def save_promotion_record(self, record: PromotionRecord) -> PromotionRecord:
        """Write the record if nobody wrote it since it was read (same `version`); raise `PromotionConflict`
        otherwise. Returns the record with its new version. No TTL: the live colour is never forgotten."""
        doc: dict[str, Any] = {"live": record.live, "epoch": record.epoch,
                               "promotion": record.promotion.__dict__ if record.promotion else None}
        for extra in ("blocked", "decided_by"):
            if getattr(record, extra):
                doc[extra] = getattr(record, extra)
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
        return dataclasses.replace(record, version=new_version)

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
