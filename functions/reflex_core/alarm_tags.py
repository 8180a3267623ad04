"""Alarm tags for policies that match alarms by tag (alarm events carry no tags).

One reader per reaction instance: tags are cached per alarm ARN for a few minutes (alarm tags
rarely change, and a tag-matched rule receives every alarm state change of the account).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from botocore.exceptions import ClientError

from reflex_core.observability import logger

# A deleted alarm, or one outside the function's IAM scope, has no tags we can match: the trigger is
# then audited as matching no policy. Anything else (after botocore's retries) is raised, so the event
# is retried and finally dead-lettered, not dropped.
UNREADABLE_TAG_ERRORS = frozenset({"ResourceNotFound", "ResourceNotFoundException", "AccessDenied",
                                   "AccessDeniedException"})


class AlarmTagReader:
    def __init__(self, cache_s: float = 300.0) -> None:
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def matches(self, rule: Any, cloudwatch: Any, alarm_name: str, arn: str | None) -> bool:
        """Whether an `AlarmMatch` rule names this alarm; its tags are read only when the name alone does
        not decide and the rule matches by tag."""
        if rule.matches(alarm_name, None):
            return True
        return bool(rule.tags) and rule.matches(alarm_name, self.tags(cloudwatch, arn))

    def tags(self, cloudwatch: Any, arn: str | None) -> dict[str, str] | None:
        if not arn:
            return None
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(arn)
            if hit and now - hit[0] < self._cache_s:
                return hit[1]
        try:
            resp = cloudwatch.list_tags_for_resource(ResourceARN=arn)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code")
            if code not in UNREADABLE_TAG_ERRORS:
                raise
            logger.warning("alarm tags unreadable; matching by name only", extra={"alarm_arn": arn, "error": code})
            return None
        tags = {t["Key"]: t["Value"] for t in resp.get("Tags", [])}
        with self._lock:
            self._cache[arn] = (now, tags)
        return tags
