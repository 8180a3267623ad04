"""The inventory of a distribution: every path its origin bucket serves, from an S3 listing (cached briefly).

The planner needs it to know what a wildcard would purge besides the changed objects. A bucket larger than
`inventory_max_objects` is not listed to the end: the planner then gets no inventory and uses exact paths
(and only the wildcards the config allows without one), which is safe, only less economical.
"""

from __future__ import annotations

import threading
from typing import Any

from reflex_core.invalidation_config import CdnOrigin
from reflex_core.observability import logger


class OriginInventory:
    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, list[str] | None]] = {}
        self._lock = threading.Lock()

    def paths(self, s3: Any, origin: CdnOrigin, now: float) -> list[str] | None:
        with self._lock:
            hit = self._cache.get(origin.bucket)
            if hit is not None and now - hit[0] < origin.inventory_cache_s:
                return hit[1]
        listed = self._list(s3, origin)
        with self._lock:
            self._cache[origin.bucket] = (now, listed)
        return listed

    @staticmethod
    def _list(s3: Any, origin: CdnOrigin) -> list[str] | None:
        out: list[str] = []
        objects = 0
        kwargs: dict[str, Any] = {"Bucket": origin.bucket, "MaxKeys": 1000}
        while True:
            page = s3.list_objects_v2(**kwargs)
            for obj in page.get("Contents", []) or []:
                objects += 1
                if objects > origin.inventory_max_objects:
                    logger.warning("origin bucket larger than inventory_max_objects; planning without inventory",
                                   extra={"bucket": origin.bucket, "limit": origin.inventory_max_objects})
                    return None
                out.extend(origin.paths_for(obj["Key"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return out
            kwargs["ContinuationToken"] = token
