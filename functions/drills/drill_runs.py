"""On-demand drills (console `start_drill`, the drill workflow): each drill's record in the state table
(`drillrun:<drill id>`), the source of truth every step reads and writes. The callback token of a drill
waiting for approval lives here (never in the audit trail), like the promoter's gate token."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

# Statuses, in the order a drill normally goes through them.
REQUESTED = "requested"
AWAITING_APPROVAL = "awaiting-approval"
APPROVED = "approved"
RESTORING = "restoring"
RESTORED = "restored"
RESTORE_FAILED = "restore-failed"
REFUSED = "refused"
VALIDATED = "validated"
TORN_DOWN = "torn-down"
LEFTOVER = "leftover"
RECORDED = "recorded"


@dataclass
class DrillRun:
    drill_id: str
    resource: str
    requested_by: str
    reason: str
    requested_at: float
    copy_id: str
    approval_required: bool = False
    status: str = REQUESTED
    recovery_point_arn: str | None = None
    approval_token: str | None = None
    approved_by: str | None = None
    restore_job_id: str | None = None
    copy_arn: str | None = None
    source_arn: str | None = None
    restore_started_at: float | None = None
    restore_completed_at: float | None = None
    recovery_point_time: float | None = None
    outcome: str | None = None
    detail: str = ""
    report: dict[str, Any] | None = None
    teardown: str | None = None
    execution_arn: str | None = None

    def view(self) -> dict[str, Any]:
        """What the workflow and the audit see (no token)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("approval_token", "report") and v is not None}
        if self.report is not None:
            out["passed"] = bool(self.report.get("passed"))
        return out


class RunStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db, self._table = dynamodb, table

    @staticmethod
    def _key(drill_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"drillrun:{drill_id}"}}

    def load(self, drill_id: str) -> DrillRun | None:
        item = self._db.get_item(TableName=self._table, Key=self._key(drill_id), ConsistentRead=True).get("Item")
        if not item:
            return None
        doc = json.loads(item["doc"]["S"])
        known = {f.name for f in fields(DrillRun)}
        return DrillRun(**{k: v for k, v in doc.items() if k in known})

    def save(self, run: DrillRun, *, expect_status: str | None | bool = False) -> bool:
        """Write the run; with `expect_status` (None: the run must not exist yet) only from that status.
        Returns False when the condition did not hold (someone else moved the drill on)."""
        kwargs: dict[str, Any] = {}
        if expect_status is None:
            kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
        elif isinstance(expect_status, str):
            kwargs = {"ConditionExpression": "#s = :s", "ExpressionAttributeNames": {"#s": "status"},
                      "ExpressionAttributeValues": {":s": {"S": expect_status}}}
        item = self._key(run.drill_id) | {"doc": {"S": json.dumps(asdict(run), sort_keys=True, default=str)},
                                          "status": {"S": run.status}}
        try:
            self._db.put_item(TableName=self._table, Item=item, **kwargs)
        except self._db.exceptions.ConditionalCheckFailedException:
            return False
        return True
