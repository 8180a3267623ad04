"""What Reflex remembers of each resource's drills, in the state table (`drill:<resource>` items): the last
successful drill, the restore jobs already judged (a redelivered or repeated event acts once), the copies
that AWS Backup should delete when their validation window ends (checked for leftovers), the copies an
on-demand drill failed to delete (leftovers at once), and the on-demand drill in flight, if any."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

KEEP_JOBS = 50


@dataclass
class Copy:
    job_id: str
    identifier: str
    window_ends_at: float
    # An on-demand drill's copy whose deletion failed (twice): a leftover from that moment, no grace.
    teardown_failed: bool = False


@dataclass
class DrillLedger:
    resource: str
    last_success_at: float | None = None
    last_result_at: float | None = None
    last_report: dict[str, Any] | None = None
    judged_jobs: list[str] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    # On-demand drills: the one in flight (one per resource at a time) and when the last one started (cooldown).
    active_drill: str | None = None
    last_drill_started_at: float | None = None

    def judged(self, job_id: str) -> bool:
        return job_id in self.judged_jobs


class LedgerStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db, self._table = dynamodb, table

    def load(self, resource: str) -> DrillLedger:
        item = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"drill:{resource}"}},
                                 ConsistentRead=True).get("Item")
        if not item:
            return DrillLedger(resource=resource)
        doc = json.loads(item["doc"]["S"])
        doc["copies"] = [Copy(**c) for c in doc.get("copies", [])]
        return DrillLedger(**doc)

    def save(self, ledger: DrillLedger) -> None:
        ledger.judged_jobs = ledger.judged_jobs[-KEEP_JOBS:]
        self._db.put_item(TableName=self._table, Item={
            "pk": {"S": f"drill:{ledger.resource}"}, "doc": {"S": json.dumps(asdict(ledger), sort_keys=True,
                                                                               default=str)}})
