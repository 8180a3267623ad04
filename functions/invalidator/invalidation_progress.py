"""The run in progress on one invalidation target, kept in the state table between invocations.

Item `invalidation#<target>` (same table and TTL attribute as `reflex_core.state_store`): run id, how many
runs it has done, the retry attempt, the checkpoint to resume from, and a lease. It is what makes

* a second identical request refused while a scan runs, also in the gap between two invocations of a long
  scan (the core's lock is only held within one invocation): `skipped:already-running`;
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

    def describe(self) -> str:
        return (f"run {self.run_id[:8]} ({self.runs} run(s), {self.removed} removed so far"
                + (f", retry {self.attempt}" if self.attempt else "") + ")")


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

    def save(self, target_key: str, progress: RunProgress) -> None:
        self._db.put_item(TableName=self._table, Item={
            "pk": self._pk(target_key), "doc": {"S": json.dumps(asdict(progress), sort_keys=True)},
            "run_id": {"S": progress.run_id},
            "expires_at": {"N": str(int(progress.lease_until + 7 * _DAY))},
        })

    def clear(self, target_key: str, run_id: str) -> None:
        """Forget the run, unless another run replaced it meanwhile."""
        try:
            self._db.delete_item(TableName=self._table, Key={"pk": self._pk(target_key)},
                                 ConditionExpression="run_id = :r",
                                 ExpressionAttributeValues={":r": {"S": run_id}})
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
