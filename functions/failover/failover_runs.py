"""The failover run record (state table, `failover#<name>`): the one run of a global database in flight, its
mode, who asked and who approved, the approval gate's callback token and how far it got.

Written only conditionally on the version read (`save` raises `RunConflict` when someone wrote in between), so two
requests, a retried step and a console command racing each other never both win. The token is kept here, never in
the audit trail (the audit records only that the gate was opened).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

# Statuses. In flight: the run holds the global database; nobody starts another one.
STARTED = "started"                  # the console asked; the workflow was started
AWAITING_APPROVAL = "awaiting-approval"
APPROVED = "approved"
PROMOTING = "promoting"              # the RDS call was accepted; waiting for the new writer
PROMOTED = "promoted"                # the global cluster shows the new writer
COMPLETED = "completed"              # promoted, Route 53 swapped, verified
NOT_APPROVED = "not-approved"        # the gate timed out or was rejected: nothing was done
REFUSED = "refused"                  # a pre-check after the approval refused: nothing was done
FAILED = "failed"                    # the workflow gave up (an AWS call failed, or the new writer never came)
BEFORE_ACTING = frozenset({STARTED, AWAITING_APPROVAL, APPROVED})
IN_FLIGHT = BEFORE_ACTING | {PROMOTING, PROMOTED}
ENDED = frozenset({COMPLETED, NOT_APPROVED, REFUSED, FAILED})
# A run that never reached the act step and whose gate ended this long ago is over (its workflow died).
STALE_GRACE_S = 3600


class RunConflict(RuntimeError):
    """The run record changed since it was read."""


@dataclass(frozen=True)
class FailoverRun:
    run_id: str
    failover: str
    mode: str
    source_arn: str
    target_arn: str
    status: str
    requested_by: str
    reason: str
    created_at: float
    approval_deadline: float
    accept_data_loss_s: int | None = None
    execution: str = ""
    approval_token: str | None = None
    approved_by: str | None = None
    acted_at: float | None = None
    # Set right before the act's RDS call (its write-ahead mark): from then on the call may have landed, whatever
    # its answer; the run can no longer be rejected and is never said to have done nothing.
    attempted_at: float | None = None
    updated_at: float = 0.0
    detail: str = ""

    def in_flight(self, now: float) -> bool:
        if self.status not in IN_FLIGHT:
            return False
        # A run that never acted and whose gate closed long ago is abandoned (the workflow is gone).
        return not (self.status in BEFORE_ACTING and self.attempted_at is None
                    and now > self.approval_deadline + STALE_GRACE_S)

    @property
    def not_acted(self) -> bool:
        """Nothing was (or may have been) done to the database yet: an operator's reject still cancels it."""
        return self.status in BEFORE_ACTING and self.attempted_at is None

    def public(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["approval_token"] = "<set>" if self.approval_token else None
        return doc


@dataclass(frozen=True)
class RunRecord:
    failover: str
    version: int = 0
    run: FailoverRun | None = None
    # The last run that completed: what a failback reads to know the writer moved (informative).
    last_completed: dict[str, Any] | None = None


class RunStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db, self._table = dynamodb, table

    def load(self, failover: str) -> RunRecord:
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"failover#{failover}"}},
                                 ConsistentRead=True).get("Item")
        if not item:
            return RunRecord(failover=failover)
        doc = json.loads(item["doc"]["S"])
        run = FailoverRun(**doc["run"]) if doc.get("run") else None
        return RunRecord(failover=failover, version=int(item["version"]["N"]), run=run,
                         last_completed=doc.get("last_completed"))

    def save(self, record: RunRecord) -> RunRecord:
        doc = {"run": dataclasses.asdict(record.run) if record.run else None, "last_completed": record.last_completed}
        version = record.version + 1
        try:
            self._db.put_item(
                TableName=self._table,
                Item={"pk": {"S": f"failover#{record.failover}"}, "doc": {"S": json.dumps(doc, sort_keys=True)},
                      "version": {"N": str(version)}},
                ConditionExpression="attribute_not_exists(pk) OR version = :v",
                ExpressionAttributeValues={":v": {"N": str(record.version)}})
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise RunConflict(record.failover) from None
            raise
        return dataclasses.replace(record, version=version)

    def update_run(self, failover: str, run_id: str, allowed: frozenset[str], *,
                   require: Callable[[FailoverRun], bool] | None = None, **changes: Any) -> FailoverRun | None:
        """Change run `run_id` if it is still in one of the `allowed` statuses (re-read and retried on a race).
        Returns the run as written, or None when it is not that run or not in those statuses any more, or `require`
        does not hold (fenced)."""
        for _ in range(3):
            record = self.load(failover)
            run = record.run
            if run is None or run.run_id != run_id or run.status not in allowed or (require and not require(run)):
                return None
            changed = dataclasses.replace(run, **changes)
            last = record.last_completed
            if changed.status == "completed":
                last = {"run_id": run.run_id, "mode": run.mode, "writer": run.target_arn,
                        "at": changes.get("updated_at", run.updated_at)}
            try:
                self.save(dataclasses.replace(record, run=changed, last_completed=last))
            except RunConflict:
                continue
            return changed
        raise RunConflict(failover)
