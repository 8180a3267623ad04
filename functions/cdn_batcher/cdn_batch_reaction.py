"""The CDN batcher reaction: the paths queued for one distribution during a batching window become one
CloudFront invalidation, planned and sent under the core's guardrails (kill switch, lock per distribution,
rate limit with circuit breaker, dry-run, audit).

* plan (under the distribution's lock): read what is in flight, list the origin (inventory) when configured,
  and plan with `invalidator.cdn_path_planner`: exact paths and wildcards covering every changed object,
  within the in-flight room left, the batch size and the over-invalidation budget. Nothing fits now:
  `skipped:in-flight-limit`, and the messages come back later.
* execute: one `CreateInvalidation` (retried on TooManyInvalidationsInProgress and throttling). What the
  plan could not fit in this request goes back to the queue; a tracking message follows the invalidation
  until it is Completed (see invalidation_tracker.py).
* audit: the paths requested (count, sample, who asked), the plan (billed paths, wildcards, objects
  over-invalidated, estimated cost) and what was sent (invalidation id, paths).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cdn_batcher.cloudfront_invalidations import (
    MAX_PATHS_IN_FLIGHT,
    BilledPaths,
    create_isolating,
    estimate_cost,
    in_flight,
)
from cdn_batcher.origin_inventory import OriginInventory
from invalidator.cdn_messages import CdnTrackMessage, PathsError, paths_messages, send_bodies, validate_cdn_paths
from invalidator.cdn_path_planner import CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT, plan_invalidation
from invalidator.invalidation_metrics import publish
from invalidator.invalidation_runtime import current_invalidation_runtime
from reflex_core.actions import Action, Intent, Skip
from reflex_core.invalidation_config import CdnConfig, InvalidationStageConfig
from reflex_core.observability import logger
from reflex_core.pipeline import GuardSettings
from reflex_core.runtime import Runtime
from reflex_core.state_store import AlarmMemory
from reflex_core.triggers import Trigger, TriggerError

BATCH_KIND = "cdn-paths"
SAMPLE = 20


class BatchBody(BaseModel):
    """The paths of every message of one distribution in the batch, merged by the entry (batch_entry.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cdn: str = Field(min_length=1, max_length=64)
    paths: list[str] = Field(default_factory=list)
    wildcards: list[str] = Field(default_factory=list)
    requests: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class BatchRequest:
    cdn: str
    paths: tuple[str, ...]
    wildcards: tuple[str, ...]
    requests: tuple[str, ...]
    message_ids: tuple[str, ...]


class CdnBatchReaction:
    # CloudFront deduplicates by CallerReference: a retry that cannot tell whether it landed sends it again.
    idempotent_execute = True
    name = "cdn_batcher"
    config_model = InvalidationStageConfig

    def __init__(self) -> None:
        self._inventory = OriginInventory()
        self._payload: dict[str, tuple[list[str], list[str], list[str]]] = {}
        self._results: dict[str, dict[str, Any]] = {}
        self._intents: dict[str, Intent] = {}

    # ------------------------------------------------------------------ validation
    def validate(self, trigger: Trigger, rt: Runtime[InvalidationStageConfig]) -> BatchRequest:
        if trigger.kind != "queue" or trigger.queue is None:
            raise TriggerError(["<root>: the CDN batcher consumes its coalescing queue only; send paths to the "
                                "invalidator (command invalidate_paths)"])
        if trigger.queue.kind != BATCH_KIND:
            raise TriggerError([f"reflex_queue.kind: unknown message kind {trigger.queue.kind!r} (paths, track)"])
        try:
            body = BatchBody.model_validate(trigger.queue.body)
        except ValidationError as err:
            raise TriggerError([f"reflex_queue.body.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                for e in err.errors()]) from None
        cdn = rt.config.invalidation.cdn_entry(body.cdn)
        if cdn is None:
            raise TriggerError([f"reflex_queue.body.cdn: no cdn entry named {body.cdn!r}"])
        try:
            paths, wildcards = validate_cdn_paths(cdn, body.paths, body.wildcards, prefix="reflex_queue.body.",
                                                  per_request_limit=False)
        except PathsError as err:
            raise TriggerError(err.errors) from None
        ids = tuple(sorted(m.rsplit("#", 1)[0] for m in trigger.queue.message_ids))
        return BatchRequest(cdn=cdn.name, paths=tuple(paths), wildcards=tuple(wildcards),
                            requests=tuple(dict.fromkeys(body.requests)), message_ids=ids)

    def alarm_policies(self, trigger: Trigger, rt: Runtime[InvalidationStageConfig]) -> list[str]:
        return []

    # ------------------------------------------------------------------ intents
    def intents(self, trigger: Trigger, request: BatchRequest, rt: Runtime[InvalidationStageConfig],
                previous: AlarmMemory | None) -> list[Intent | Skip]:
        self._payload.clear()
        self._results.clear()
        self._intents.clear()
        why = f"{len(request.message_ids)} queued message(s) from {len(request.requests)} request(s)"
        intent = Intent(policy=f"cdn:{request.cdn}", target_key=f"cdn/{request.cdn}", target={"cdn": request.cdn},
                       operation="create_invalidation", reason=why,
                       params={"cdn": request.cdn, "paths": list(request.paths), "wildcards": list(request.wildcards),
                               "requests": list(request.requests), "message_ids": list(request.message_ids)})
        self._intents[intent.target_key] = intent
        return [intent]

    @staticmethod
    def intent_scope(trigger: Trigger, intent: Intent) -> str:
        """The queued messages a batch handles, without their receive count: SQS redelivering the same batch (after
        a failure that followed CreateInvalidation) completes the first intent (same audit record), instead of
        planning a new one that CloudFront answers with the same invalidation."""
        return "cdn-batch:" + ",".join(intent.params["message_ids"])

    def allowed_targets(self, rt: Runtime[InvalidationStageConfig]) -> set[str]:
        return {f"cdn/{c.name}" for c in rt.config.invalidation.cdn}

    def guard_settings(self, intent: Intent, rt: Runtime[InvalidationStageConfig]) -> GuardSettings:
        cdn = self._cdn(intent.params["cdn"], rt)
        return GuardSettings(out_cooldown_s=0, in_cooldown_s=0,
                             max_actions_per_hour=cdn.rate_limit.max_actions_per_hour,
                             circuit_open_for_s=cdn.rate_limit.open_for_s, dry_run=rt.config.dry_run or cdn.dry_run)

    @staticmethod
    def _cdn(name: str, rt: Runtime[InvalidationStageConfig]) -> CdnConfig:
        cdn = rt.config.invalidation.cdn_entry(name)
        if cdn is None:
            raise LookupError(f"no cdn entry {name!r} in the config")
        return cdn

    # ------------------------------------------------------------------ plan
    def plan(self, intent: Intent, rt: Runtime[InvalidationStageConfig]) -> Action | Skip:
        runtime = current_invalidation_runtime()
        cdn = self._cdn(intent.params["cdn"], rt)
        distribution = runtime.distribution_id(cdn)
        paths: list[str] = intent.params["paths"]
        wildcards: list[str] = intent.params["wildcards"]
        flight = in_flight(rt.clients.cloudfront, distribution)
        room_paths = min(cdn.max_paths_per_batch, MAX_PATHS_IN_FLIGHT - flight.paths)
        wildcard_limit = min(cdn.max_wildcards, CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT)
        room_wildcards = max(0, wildcard_limit - flight.wildcards)
        before = {"distribution_id": distribution, "in_flight": flight.as_audit(),
                  "requested": {"messages": len(intent.params["message_ids"]), "paths": len(paths),
                                "wildcards": len(wildcards), "paths_sample": paths[:SAMPLE],
                                "requested_wildcards": wildcards[:SAMPLE], "by": intent.params["requests"][:10]}}
        if room_paths <= 0 or (not paths and room_wildcards == 0):
            return Skip(reason="in-flight-limit", policy=intent.policy, target_key=intent.target_key, before=before,
                        detail=f"{flight.invalidations} invalidation(s) in progress hold {flight.paths} paths and "
                               f"{flight.wildcards} wildcards; the paths wait in the queue")
        now = rt.clock.now()
        billed_before = BilledPaths(rt.clients.dynamodb, rt.settings.state_table).this_month(now)
        requested_now, wildcards_later = wildcards[:room_wildcards], wildcards[room_wildcards:]
        if paths:
            inventory = None
            if cdn.origin is not None and cdn.origin.inventory:
                inventory = self._inventory.paths(rt.clients.s3, cdn.origin, now.timestamp())
            plan = plan_invalidation(paths, inventory=inventory,
                                     config=cdn.planner_config(max_paths_per_batch=room_paths),
                                     wildcards_in_flight=min(flight.wildcards, wildcard_limit),
                                     requested_wildcards=requested_now, paths_billed_this_month=billed_before)
            now_items, later = list(plan.batches[0]), [p for batch in plan.batches[1:] for p in batch]
            intended = plan.as_audit()
        else:
            now_items, later = requested_now[:room_paths], requested_now[room_paths:]
            intended = {"changed_objects": 0, "billed_paths": len(now_items), "wildcards": now_items,
                        "estimated_cost_usd": str(estimate_cost(len(now_items), billed_before))}
        later_paths = [p for p in later if not p.endswith("*")]
        later_wildcards = [p for p in later if p.endswith("*")] + wildcards_later
        # CloudFront deduplicates a request by its CallerReference: the same messages and paths (a retry after a
        # lost response) return the invalidation already made; new messages always make a new one.
        reference = hashlib.sha256("\n".join([distribution, *intent.params["message_ids"], "", *now_items])
                                   .encode()).hexdigest()[:40]
        self._payload[intent.target_key] = (now_items, later_paths, later_wildcards)
        intended = intended | {"distribution_id": distribution, "send_now": len(now_items),
                               "estimated_cost_usd": str(estimate_cost(len(now_items), billed_before)),
                               "deferred": len(later_paths) + len(later_wildcards)}
        return Action(policy=intent.policy, target_key=intent.target_key, target=intent.target,
                      operation=intent.operation, reason=intent.reason, before=before, intended=intended,
                      params={"cdn": cdn.name, "distribution_id": distribution, "caller_reference": reference,
                              "requested_paths": len(paths) + len(wildcards)})

    # ------------------------------------------------------------------ execute
    def execute(self, action: Action, rt: Runtime[InvalidationStageConfig]) -> None:
        runtime = current_invalidation_runtime()
        cdn = self._cdn(action.params["cdn"], rt)
        distribution = action.params["distribution_id"]
        if action.target_key not in self._payload:
            self._replan(action, rt)
        now_items, later_paths, later_wildcards = self._payload.pop(action.target_key)
        made, refused, error = create_isolating(rt.clients.cloudfront, distribution, now_items,
                                                action.params["caller_reference"], sleep=runtime.sleep)
        now = rt.clock.now()
        queue_url = runtime.cdn_queue_url(cdn.name)
        if refused:
            self._park_refused(cdn.name, distribution, refused, error, action, rt)
        if later_paths or later_wildcards:
            send_bodies(rt.clients.sqs, queue_url, paths_messages(
                cdn.name, later_paths, later_wildcards, requested_by="cdn_batcher: beyond this request's room",
                request=action.params["caller_reference"]))
        sent = len(now_items) - len(refused)
        tracks = [CdnTrackMessage(cdn=cdn.name, distribution_id=distribution, invalidation_id=inv["Id"],
                                  created_at=now.timestamp(), not_before=now.timestamp() + cdn.tracking.poll_s,
                                  path_count=len(inv.get("InvalidationBatch", {}).get("Paths", {}).get("Items", [])
                                                 or []) or sent).model_dump_json() for inv in made]
        if tracks:
            send_bodies(rt.clients.sqs, queue_url, tracks, delay_s=runtime.delay(cdn.tracking.poll_s))
        BilledPaths(rt.clients.dynamodb, rt.settings.state_table).add(now, sent)
        stage = rt.settings.stage
        publish("CdnPathsRequested", action.params["requested_paths"], MetricUnit.Count, stage=stage, cdn=cdn.name)
        publish("CdnPathsSent", sent, MetricUnit.Count, stage=stage, cdn=cdn.name)
        result: dict[str, Any] = {
            "invalidation_id": made[0]["Id"] if made else None, "status": made[0].get("Status") if made else None,
            "paths_sent": sent, "paths_sample": [p for p in now_items if p not in set(refused)][:SAMPLE],
            "deferred_to_queue": len(later_paths) + len(later_wildcards),
            "tracking": f"checked every {cdn.tracking.poll_s}s until Completed"}
        if len(made) > 1:
            result["invalidation_ids"] = [inv["Id"] for inv in made][:SAMPLE]
        if refused:
            publish("CdnPathsRefused", len(refused), MetricUnit.Count, stage=stage, cdn=cdn.name)
            result |= {"refused_paths": len(refused), "refused_sample": [p[:200] for p in refused[:SAMPLE]],
                       "refused_reason": error, "refused_parked": "dead-letter queue"}
        self._results[action.target_key] = result

    @staticmethod
    def _park_refused(cdn: str, distribution: str, refused: list[str], error: str, action: Action,
                      rt: Runtime[InvalidationStageConfig]) -> None:
        """Paths CloudFront refused, isolated from their batch: parked with the reason (the DLQ), and logged."""
        logger.warning("CloudFront refused paths; the rest of the batch was sent", extra={
            "cdn": cdn, "refused": refused[:SAMPLE], "count": len(refused), "error": error})
        if not rt.settings.dead_letter_queue_url:
            return
        for start in range(0, len(refused), 500):
            rt.clients.sqs.send_message(QueueUrl=rt.settings.dead_letter_queue_url, MessageBody=json.dumps({
                "reason": "cdn-path-refused", "cdn": cdn, "distribution_id": distribution, "error": error,
                "paths": refused[start:start + 500], "request": action.params["caller_reference"]}))

    def _replan(self, action: Action, rt: Runtime[InvalidationStageConfig]) -> None:
        """Completing an interrupted attempt (the same messages redelivered): the paths it decided were handed to
        execute() in memory, so plan them again from the same messages. The same split gives the same
        CallerReference, which CloudFront answers with the invalidation already made. Another split (what is in
        flight changed meanwhile, the lost attempt's own invalidation included) is sent under its own reference:
        at worst the paths are invalidated twice (billed twice, never left stale); the audit record names the
        reference actually sent."""
        intent = self._intents.get(action.target_key)
        fresh = self.plan(intent, rt) if intent is not None else None
        if not isinstance(fresh, Action):
            self._payload.pop(action.target_key, None)
            raise RuntimeError(f"{action.target_key}: the interrupted attempt's batch cannot be planned again "
                               f"({getattr(fresh, 'detail', 'no request')}); the messages are retried, then kept in "
                               "the queue's dead-letter queue")
        if fresh.params["caller_reference"] != action.params["caller_reference"]:
            logger.warning("re-planned batch differs from the interrupted attempt's; sent under its own reference",
                           extra={"was": action.params["caller_reference"], "now": fresh.params["caller_reference"]})
            action.params.update(fresh.params)

    def after_executed(self, action: Action, rt: Runtime[InvalidationStageConfig]) -> None:
        return None

    def verify(self, action: Action, rt: Runtime[InvalidationStageConfig]) -> dict[str, Any]:
        result = self._results.pop(action.target_key, {})
        if "invalidation_id" in result:
            found = rt.clients.cloudfront.get_invalidation(DistributionId=action.params["distribution_id"],
                                                           Id=result["invalidation_id"])["Invalidation"]
            result["status"] = found.get("Status")
        return result
