"""Messages on a distribution's coalescing queue, and the validation both their producer and consumer apply.

* `paths`: CDN paths (and requested wildcards) to invalidate, sent by the invalidator; the batcher merges every
  message of its batching window into one `CreateInvalidation` per distribution.
* `track`: an invalidation in progress, checked again after `not_before` (the message is delayed until then);
  the batcher publishes how long it took to complete.

Validation errors name the field (`paths[3]: must start with '/'`); nothing is queued or sent then.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from invalidator.cdn_path_planner import CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT, PlanInputError, plan_invalidation
from reflex_core.invalidation_config import CdnConfig, encode_cdn_path

PATHS_PER_MESSAGE = 500  # ~50 KB at most: well within SQS's 256 KB
SQS_BATCH = 10
_BAD_WILDCARD_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")


class PathsError(ValueError):
    """CDN paths that cannot be invalidated; `errors` are `field: problem` strings."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class CdnPathsMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["paths"] = "paths"
    cdn: str = Field(min_length=1, max_length=64)
    paths: list[str] = Field(default_factory=list)
    wildcards: list[str] = Field(default_factory=list)
    requested_by: str = Field(default="", max_length=300)
    request: str = Field(default="", max_length=300)


class CdnTrackMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["track"] = "track"
    cdn: str = Field(min_length=1, max_length=64)
    distribution_id: str = Field(min_length=1, max_length=64)
    invalidation_id: str = Field(min_length=1, max_length=128)
    created_at: float
    not_before: float
    polls: int = Field(default=0, ge=0)
    path_count: int = Field(default=0, ge=0)


def validate_cdn_paths(cdn: CdnConfig, paths: Sequence[Any], wildcards: Sequence[Any], *,
                       prefix: str = "", per_request_limit: bool = True) -> tuple[list[str], list[str]]:
    """Check paths and requested wildcards against the distribution's rules; return them deduplicated.

    `per_request_limit`: refuse more than `max_paths_per_request` (off for a batch merged from many requests).
    """
    if not isinstance(paths, list | tuple) or any(not isinstance(p, str) for p in paths):
        raise PathsError([f"{prefix}paths: must be a list of strings"])
    if not isinstance(wildcards, list | tuple) or any(not isinstance(w, str) for w in wildcards):
        raise PathsError([f"{prefix}wildcards: must be a list of strings"])
    total = len(set(paths)) + len(set(wildcards))
    if total == 0:
        raise PathsError([f"{prefix}paths: must not be empty"])
    if per_request_limit and total > cdn.max_paths_per_request:
        raise PathsError([f"{prefix}paths: {total} paths, more than the {cdn.max_paths_per_request} allowed per "
                          f"request for cdn {cdn.name!r}"])
    errors: list[str] = []
    for name, items in (("paths", paths), ("wildcards", wildcards)):
        for i, item in enumerate(items):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                errors.append(f"{prefix}{name}[{i}]: is not valid Unicode (a lone surrogate); a path must be "
                              "encodable as UTF-8")
    if errors:
        raise PathsError(errors)
    for i, w in enumerate(wildcards):
        if not w.startswith("/") or not w.endswith("*") or "*" in w[:-1] or _BAD_WILDCARD_CHAR.search(w):
            errors.append(f"{prefix}wildcards[{i}]: a wildcard path starts with '/', ends with its only '*' and "
                          "has no whitespace")
    if per_request_limit and len(set(wildcards)) > min(cdn.max_wildcards, CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT):
        errors.append(f"{prefix}wildcards: {len(set(wildcards))} wildcards, more than the "
                      f"{cdn.max_wildcards} allowed for cdn {cdn.name!r}")
    if errors:
        raise PathsError(errors)
    # CloudFront refuses unsafe and non-ASCII characters unless URL-encoded: encode them as the S3-key mapping
    # does (after the checks above, so whitespace and control characters are still refused, not encoded).
    encoded = [encode_cdn_path(p) for p in paths]
    encoded_wildcards = [encode_cdn_path(w, wildcard=True) for w in wildcards]
    if paths:
        try:
            # The planner's own validation (without an inventory planning is trivial): one rule everywhere.
            plan_invalidation(list(paths), config=cdn.planner_config())
            plan_invalidation(encoded, config=cdn.planner_config())  # the encoded length counts
        except PlanInputError as err:
            raise PathsError([f"{prefix}{err}"]) from None
    return list(dict.fromkeys(encoded)), list(dict.fromkeys(encoded_wildcards))


def paths_messages(cdn: str, paths: Sequence[str], wildcards: Sequence[str], *, requested_by: str,
                   request: str) -> list[str]:
    """JSON bodies of at most PATHS_PER_MESSAGE items each (wildcards travel in the first)."""
    bodies = []
    chunks = [list(paths[i:i + PATHS_PER_MESSAGE]) for i in range(0, len(paths), PATHS_PER_MESSAGE)] or [[]]
    for i, chunk in enumerate(chunks):
        message = CdnPathsMessage(cdn=cdn, paths=chunk, wildcards=list(wildcards) if i == 0 else [],
                                  requested_by=requested_by[:300], request=request[:300])
        bodies.append(message.model_dump_json())
    return bodies


def send_bodies(sqs: Any, queue_url: str, bodies: Sequence[str], *, delay_s: int = 0) -> int:
    """Send every body (batches of ten); raise if SQS refuses any, so nothing is silently dropped."""
    sent = 0
    for start in range(0, len(bodies), SQS_BATCH):
        chunk = bodies[start:start + SQS_BATCH]
        entries = [{"Id": str(i), "MessageBody": body, **({"DelaySeconds": delay_s} if delay_s else {})}
                   for i, body in enumerate(chunk)]
        resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        failed = resp.get("Failed", [])
        if failed:
            codes = ", ".join(sorted({str(f.get("Code")) for f in failed}))
            raise RuntimeError(f"SQS refused {len(failed)} of {len(chunk)} messages ({codes})")
        sent += len(chunk)
    return sent


def parse_body(text: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the message body is not a JSON object")
    return data
