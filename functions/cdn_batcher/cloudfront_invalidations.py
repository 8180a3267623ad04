"""CloudFront calls of the batcher: what is in flight, creating an invalidation, and paths billed this month.

CloudFront allows, per distribution, invalidation requests for up to 3,000 individual paths in progress at
once, and up to 15 wildcard paths in progress at once; a request over those is refused with
`TooManyInvalidationsInProgress`. The batcher reads what is in flight before planning, so it rarely hits the
limit; when it does (a race with another client), `create_invalidation` waits and retries a few times, then
raises, and the batch's messages come back later (nothing is lost).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from invalidator.cdn_path_planner import DEFAULT_PRICE_PER_PATH, FREE_PATHS_PER_MONTH

MAX_PATHS_IN_FLIGHT = 3000
RETRYABLE = frozenset({"TooManyInvalidationsInProgress", "Throttling", "ThrottlingException",
                       "RequestLimitExceeded", "ServiceUnavailable"})
_MAX_CHECKED = 50


@dataclass(frozen=True)
class InFlight:
    invalidations: int
    paths: int
    wildcards: int

    def as_audit(self) -> dict[str, int]:
        return {"invalidations": self.invalidations, "paths": self.paths, "wildcards": self.wildcards}


def completed(status: str) -> bool:
    return status.replace("_", "").lower() == "completed"


def in_flight(cloudfront: Any, distribution_id: str) -> InFlight:
    """Invalidations of the distribution still in progress, with their exact and wildcard paths.

    The most recent page suffices: in-progress invalidations are the newest. Beyond `_MAX_CHECKED` of them the
    rest are assumed to hold the most they can (the limit is then certainly reached anyway).
    """
    resp = cloudfront.list_invalidations(DistributionId=distribution_id, MaxItems="100")
    items = resp.get("InvalidationList", {}).get("Items", []) or []
    running = [i for i in items if not completed(str(i.get("Status", "")))]
    paths = wildcards = 0
    for item in running[:_MAX_CHECKED]:
        detail = cloudfront.get_invalidation(DistributionId=distribution_id, Id=item["Id"])["Invalidation"]
        listed = detail.get("InvalidationBatch", {}).get("Paths", {}).get("Items", []) or []
        wildcards += sum(1 for p in listed if p.endswith("*"))
        paths += sum(1 for p in listed if not p.endswith("*"))
    if len(running) > _MAX_CHECKED:
        paths = MAX_PATHS_IN_FLIGHT
    return InFlight(invalidations=len(running), paths=paths, wildcards=wildcards)


def create_invalidation(cloudfront: Any, distribution_id: str, items: Sequence[str], caller_reference: str, *,
                        sleep: Callable[[float], None] = time.sleep, attempts: int = 4,
                        base_delay_s: float = 1.0) -> dict[str, Any]:
    """CreateInvalidation, waiting and retrying on CloudFront's in-flight limit and throttling.

    The same `caller_reference` with the same paths returns the invalidation already created (a retry after a
    lost response does not invalidate, nor bill, twice).
    """
    batch = {"Paths": {"Quantity": len(items), "Items": list(items)}, "CallerReference": caller_reference}
    for attempt in range(attempts):
        try:
            invalidation: dict[str, Any] = cloudfront.create_invalidation(
                DistributionId=distribution_id, InvalidationBatch=batch)["Invalidation"]
            return invalidation
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code")
            if code not in RETRYABLE or attempt == attempts - 1:
                raise
            sleep(base_delay_s * 2 ** attempt)
    raise AssertionError("unreachable")


# CloudFront's answer to a batch holding a path it refuses (unencoded, invalid): the whole batch fails.
REFUSED_PATHS = frozenset({"InvalidArgument"})


def create_isolating(cloudfront: Any, distribution_id: str, items: Sequence[str], caller_reference: str, *,
                     sleep: Callable[[float], None] = time.sleep) -> tuple[list[dict[str, Any]], list[str], str]:
    """`create_invalidation`, and when CloudFront refuses the batch for a path it finds invalid: bisect it, send
    every half it accepts, and isolate the paths it refuses. Returns (invalidations made, refused paths, error).
    One bad path costs about 2 log2(n) calls and never holds back the others."""
    try:
        return [create_invalidation(cloudfront, distribution_id, items, caller_reference, sleep=sleep)], [], ""
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in REFUSED_PATHS:
            raise
        error = f"{err.response['Error'].get('Code')}: {str(err.response['Error'].get('Message', ''))[:200]}"
    if len(items) == 1:
        return [], list(items), error
    mid = len(items) // 2
    made: list[dict[str, Any]] = []
    refused: list[str] = []
    for suffix, half in (("a", items[:mid]), ("b", items[mid:])):
        # CallerReference: up to 128 characters; a distinct, deterministic one per half.
        ref = caller_reference[:100] + suffix if len(caller_reference) < 100 else \
            caller_reference[:60] + hashlib.sha256((caller_reference + suffix).encode()).hexdigest()[:40]
        got, bad, why = create_isolating(cloudfront, distribution_id, half, ref, sleep=sleep)
        made += got
        refused += bad
        error = why or error
    return made, refused, error


def estimate_cost(billed: int, billed_this_month: int) -> Decimal:
    free_left = max(0, FREE_PATHS_PER_MONTH - max(0, billed_this_month))
    return (Decimal(max(0, billed - free_left)) * DEFAULT_PRICE_PER_PATH).quantize(Decimal("0.001"))


class BilledPaths:
    """Invalidation paths billed this month (the first 1,000 of an account are free): item
    `cdnpaths#<YYYY-MM>` of the state table, counted by the batcher. Paths invalidated outside Reflex are not
    seen, so the estimate can only be low, never high."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    @staticmethod
    def _pk(now: datetime) -> dict[str, str]:
        return {"S": f"cdnpaths#{now.strftime('%Y-%m')}"}

    def this_month(self, now: datetime) -> int:
        item = self._db.get_item(TableName=self._table, Key={"pk": self._pk(now)}).get("Item")
        return int(item["n"]["N"]) if item and "n" in item else 0

    def add(self, now: datetime, paths: int) -> None:
        expires = str(int(now.timestamp()) + 40 * 86400)
        with contextlib.suppress(ClientError):  # an estimate only: never fail an invalidation that was sent
            self._db.update_item(TableName=self._table, Key={"pk": self._pk(now)},
                                 UpdateExpression="ADD n :n SET expires_at = :e",
                                 ExpressionAttributeValues={":n": {"N": str(paths)}, ":e": {"N": expires}})
