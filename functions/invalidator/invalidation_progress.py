"""The run in progress on one invalidation target, kept in the state table between invocations.

Item `invalidation#<target>` (same table and TTL attribute as `reflex_core.state_store`): run id, how many
runs it has done, the retry attempt, the checkpoint to resume from, and a lease. It is what makes

* a second identical request while a run is in progress (also in the gap between two invocations of a long
  scan: the core's lock is only held within one invocation) coalesced into a follow-up run: it sets `pending`
  on the running one (`skipped:coalesced`), and the running one, when it ends, finds the marker and starts a
  fresh run from the beginning, which started after the request and so covers it. Only one run per target
  exists at a time (its creation is conditional), so nothing is scanned twice in parallel and nothing dropped;
* each continuation act exactly once: a continuation message names the run and its sequence number
  (`runs`), and is `skipped:superseded` unless it is the next step of the current run;
* a retry resume from the last checkpoint written, not from the one its message carried.

A run whose lease passed (its function died and nothing continued it) no longer blocks a new request.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import ClientError

_DAY = 86400
KEYS_CHUNK_BYTES = 300_000


@dataclass
class RunProgress:
    run_id: str
    started_at: float
    updated_at: float
    lease_until: float
    runs: int = 0
    attempt: int = 0
    matched: int = 0
    removed: int = 0
    checkpoint: dict[str, Any] | None = None
    requested_by: str = ""
    keys_ref: str | None = None  # a key-list run: where its keys are stored (`ProgressStore.put_keys`)
    # A follow-up run whose first message could not be queued: no message will ever carry it out, so the next
    # trigger of its target (the failed invocation's retry, a redelivered message, a new request) adopts it.
    orphaned: bool = False

    def describe(self) -> str:
        return (f"run {self.run_id[:8]} ({self.runs} run(s), {self.removed} removed so far"
                + (f", retry {self.attempt}" if self.attempt else "") + ")")


@dataclass
class Pending:
    """Requests that arrived while a run was in progress: a follow-up run covers them."""

    requested_by: str
    since: float
    count: int = 1


class ProgressStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    @staticmethod
    def _pk(target_key: str) -> dict[str, str]:
        return {"S": f"invalidation#{target_key}"}

    def get(self, target_key: str) -> RunProgress | None:
        item = self._db.get_item(TableName=self._table, Key={"pk": self._pk(target_key)},
                                 ConsistentRead=True).get("Item")
        if not item or "doc" not in item:
            return None
        return RunProgress(**json.loads(item["doc"]["S"]))

    @staticmethod
    def _doc(progress: RunProgress) -> dict[str, Any]:
        return {"S": json.dumps(asdict(progress), sort_keys=True)}

    def _item(self, target_key: str, progress: RunProgress) -> dict[str, Any]:
        return {"pk": self._pk(target_key), "doc": self._doc(progress), "run_id": {"S": progress.run_id},
                "lease_until": {"N": repr(progress.lease_until)},
                "expires_at": {"N": str(int(progress.lease_until + 7 * _DAY))}}

    def create(self, target_key: str, progress: RunProgress, now: float) -> bool:
        """Start a run, unless another one is in progress (live lease): False then (coalesce into it).
        A pending marker left by an ended run is consumed: this run starts after the request that set it."""
        try:
            self._db.put_item(TableName=self._table, Item=self._item(target_key, progress),
                              ConditionExpression="attribute_not_exists(pk) OR attribute_not_exists(lease_until) "
                                                  "OR lease_until < :now",
                              ExpressionAttributeValues={":now": {"N": repr(now)}})
        except ClientError as err:
            if _conditional(err):
                return False
            raise
        return True

    def save(self, target_key: str, progress: RunProgress) -> bool:
        """Record the run's progress (keeps a pending marker); False if the run was replaced or forgotten."""
        try:
            self._db.update_item(
                TableName=self._table, Key={"pk": self._pk(target_key)},
                UpdateExpression="SET doc = :d, lease_until = :l, expires_at = :e",
                ConditionExpression="run_id = :r",
                ExpressionAttributeValues={":d": self._doc(progress), ":l": {"N": repr(progress.lease_until)},
                                           ":e": {"N": str(int(progress.lease_until + 7 * _DAY))},
                                           ":r": {"S": progress.run_id}})
        except ClientError as err:
            if _conditional(err):
                return False
            raise
        return True

    def mark_pending(self, target_key: str, run_id: str, requested_by: str, now: float) -> bool:
        """Ask run `run_id` for a follow-up run when it ends; False if it is no longer the run in progress."""
        try:
            self._db.update_item(
                TableName=self._table, Key={"pk": self._pk(target_key)},
                UpdateExpression="SET pending_by = :b, pending_since = if_not_exists(pending_since, :t) "
                                 "ADD pending_count :one",
                ConditionExpression="run_id = :r",
                ExpressionAttributeValues={":b": {"S": requested_by[:300] or "?"}, ":t": {"N": repr(now)},
                                           ":one": {"N": "1"}, ":r": {"S": run_id}})
        except ClientError as err:
            if _conditional(err):
                return False
            raise
        return True

    def finish(self, target_key: str, run_id: str) -> Pending | None:
        """Forget the ended run `run_id`; if requests are pending on it, keep it and return them (the caller
        starts the follow-up run with `replace`)."""
        try:
            self._db.delete_item(TableName=self._table, Key={"pk": self._pk(target_key)},
                                 ConditionExpression="run_id = :r AND attribute_not_exists(pending_count)",
                                 ExpressionAttributeValues={":r": {"S": run_id}})
            return None
        except ClientError as err:
            if not _conditional(err):
                raise
        item = self._db.get_item(TableName=self._table, Key={"pk": self._pk(target_key)},
                                 ConsistentRead=True).get("Item")
        if not item or item.get("run_id", {}).get("S") != run_id or "pending_count" not in item:
            return None  # replaced by another run meanwhile
        return Pending(requested_by=item.get("pending_by", {}).get("S", ""),
                       since=float(item.get("pending_since", {}).get("N", "0")),
                       count=int(item["pending_count"]["N"]))

    def replace(self, target_key: str, ended_run_id: str, follow_up: RunProgress) -> bool:
        """Start the follow-up of `ended_run_id` (its pending marker is consumed)."""
        try:
            self._db.put_item(TableName=self._table, Item=self._item(target_key, follow_up),
                              ConditionExpression="run_id = :r",
                              ExpressionAttributeValues={":r": {"S": ended_run_id}})
        except ClientError as err:
            if _conditional(err):
                return False
            raise
        return True

    # ------------------------------------------------------------------ key lists by reference
    def put_keys(self, ref: str, keys: list[str], expires_at: float) -> int:
        """Store a key list in items of at most KEYS_CHUNK_BYTES (DynamoDB's item limit is 400 KB); a
        continuation carries only `ref`, so it fits SQS's 256 KB whatever the list's size."""
        chunks: list[list[str]] = [[]]
        size = 0
        for key in keys:
            cost = len(json.dumps(key).encode()) + 2
            if chunks[-1] and size + cost > KEYS_CHUNK_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append(key)
            size += cost
        for i, chunk in enumerate(chunks):
            self._db.put_item(TableName=self._table, Item={
                "pk": {"S": f"invalidation-keys#{ref}#{i}"}, "doc": {"S": json.dumps(chunk)},
                "chunks": {"N": str(len(chunks))}, "expires_at": {"N": str(int(expires_at))}})
        return len(chunks)

    def get_keys(self, ref: str) -> list[str]:
        keys: list[str] = []
        i, total = 0, 1
        while i < total:
            item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"invalidation-keys#{ref}#{i}"}},
                                     ConsistentRead=True).get("Item")
            if not item:
                raise LookupError(f"the key list {ref} is gone (chunk {i}); it expires 7 days after its run")
            total = int(item["chunks"]["N"])
            keys += json.loads(item["doc"]["S"])
            i += 1
        return keys

    def clear(self, target_key: str, run_id: str) -> None:
        """Forget the run, unless another run replaced it meanwhile."""
        try:
            self._db.delete_item(TableName=self._table, Key={"pk": self._pk(target_key)},
                                 ConditionExpression="run_id = :r",
                                 ExpressionAttributeValues={":r": {"S": run_id}})
        except ClientError as err:
            if not _conditional(err):
                raise


def _conditional(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
